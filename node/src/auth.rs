//! API-key authentication. Keys are looked up by their SHA-256 behind the [`KeyStore`] trait: today the
//! store is built from the node's config file; the Raft-replicated store implements the same trait.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{KeyConfig, KeyRecord};
use crate::error::{GatewayError, GatewayResult};

/// Who is calling: the identity budgets, limits and audit logs hang off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub org: String,
    pub team: Option<String>,
    /// Models this key may use; `None` means all.
    pub allowed_models: Option<HashSet<String>>,
}

impl Principal {
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|models| models.contains(model))
    }
}

pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

pub trait KeyStore: Send + Sync + 'static {
    fn lookup(&self, hash: &KeyHash) -> Option<Arc<Principal>>;
}

/// Keys from the `[[keys]]` section of the config file.
#[derive(Debug, Default)]
pub struct StaticKeyStore {
    keys: HashMap<KeyHash, Arc<Principal>>,
}

impl StaticKeyStore {
    pub fn from_config(keys: &[KeyConfig]) -> Self {
        let mut map = HashMap::new();
        for (index, key) in keys.iter().enumerate() {
            let hash = match (&key.key, &key.key_sha256) {
                (Some(plain), _) => hash_key(plain),
                (None, Some(hex)) => match decode_hex(hex) {
                    Some(hash) => hash,
                    None => continue, // rejected by config validation already
                },
                (None, None) => continue,
            };
            let key_id = key.name.clone().unwrap_or_else(|| format!("key-{index}"));
            map.insert(
                hash,
                Arc::new(Principal {
                    key_id,
                    org: key.org.clone(),
                    team: key.team.clone(),
                    allowed_models: key.models.as_ref().map(|models| models.iter().cloned().collect()),
                }),
            );
        }
        StaticKeyStore { keys: map }
    }
}

impl StaticKeyStore {
    /// Keys as the cluster stores them (hashes only).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a KeyRecord>) -> Self {
        let keys = records
            .into_iter()
            .filter_map(|record| {
                let hash = decode_hex(&record.key_sha256)?;
                let principal = Principal {
                    key_id: record.id.clone(),
                    org: record.org.clone(),
                    team: record.team.clone(),
                    allowed_models: record.models.as_ref().map(|models| models.iter().cloned().collect()),
                };
                Some((hash, Arc::new(principal)))
            })
            .collect();
        StaticKeyStore { keys }
    }
}

pub fn hex(hash: &KeyHash) -> String {
    use std::fmt::Write as _;
    hash.iter().fold(String::with_capacity(64), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// A new random API key: `tg-` and 32 hex digits of randomness.
pub fn generate_key() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    format!("tg-{}", hex_bytes(&bytes))
}

fn hex_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

impl KeyStore for StaticKeyStore {
    fn lookup(&self, hash: &KeyHash) -> Option<Arc<Principal>> {
        self.keys.get(hash).cloned()
    }
}

fn decode_hex(hex: &str) -> Option<KeyHash> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The presented key: `Authorization: Bearer K` (OpenAI SDKs) or `x-api-key: K` (Anthropic SDKs).
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Some(key) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
            return Some(key.trim());
        }
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

pub fn authenticate(store: &dyn KeyStore, headers: &HeaderMap) -> GatewayResult<Arc<Principal>> {
    let key = presented_key(headers).filter(|k| !k.is_empty()).ok_or_else(|| {
        GatewayError::unauthenticated("missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`")
    })?;
    store.lookup(&hash_key(key)).ok_or_else(|| GatewayError::unauthenticated("invalid API key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StaticKeyStore {
        let hashed = hash_key("tg-hashed").iter().map(|b| format!("{b:02x}")).collect::<String>();
        StaticKeyStore::from_config(&[
            KeyConfig {
                key: Some("tg-plain".into()),
                key_sha256: None,
                name: Some("ci".into()),
                org: "acme".into(),
                team: None,
                models: Some(vec!["m1".into()]),
            },
            KeyConfig {
                key: None,
                key_sha256: Some(hashed),
                name: None,
                org: "beta".into(),
                team: Some("t".into()),
                models: None,
            },
        ])
    }

    #[test]
    fn accepts_bearer_and_x_api_key() {
        let store = store();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer tg-plain"));
        let principal = authenticate(&store, &headers).map_err(|e| e.message);
        assert_eq!(principal.as_ref().map(|p| p.org.as_str()), Ok("acme"));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", http::HeaderValue::from_static("tg-hashed"));
        let principal = authenticate(&store, &headers).map_err(|e| e.message);
        assert_eq!(principal.as_ref().map(|p| p.team.clone()), Ok(Some("t".into())));
    }

    #[test]
    fn rejects_missing_and_wrong_keys() {
        let store = store();
        assert!(authenticate(&store, &HeaderMap::new()).is_err());
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", http::HeaderValue::from_static("tg-wrong"));
        assert!(authenticate(&store, &headers).is_err());
    }

    #[test]
    fn model_allowlist() {
        let principal = Principal {
            key_id: "k".into(),
            org: "o".into(),
            team: None,
            allowed_models: Some(["a".to_owned()].into()),
        };
        assert!(principal.may_use("a"));
        assert!(!principal.may_use("b"));
    }
}
