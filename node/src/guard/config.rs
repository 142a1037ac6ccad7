//! Guardrail configuration as CONTRACT.md names it: `[[guardrails]] name, kind, action, threshold, entities`.
//!
//! Plain serde types with no behaviour beyond validation, so the replicated config can embed them as they are
//! and `tollgate guard scan --config` can read the same table from a file. Unknown fields are errors, like the
//! rest of the node's config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One `[[guardrails]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    /// Referenced by `guardrails = ["name", ...]` on a model, route or org; named in block errors.
    pub name: String,
    pub kind: GuardrailKind,
    /// Default: `block` for injection, `redact` for pii.
    #[serde(default)]
    pub action: Option<GuardrailAction>,
    /// Injection only: the score in [0, 1] at or above which a text is flagged (default 0.4).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// PII only: which entity types to look for (default: all of them).
    #[serde(default)]
    pub entities: Option<Vec<EntityKind>>,
    /// PII only: what a found entity becomes (default `label`: `[REDACTED:EMAIL]`).
    #[serde(default)]
    pub replacement: Option<Replacement>,
}

/// What a guardrail looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardrailKind {
    Injection,
    Pii,
}

/// What happens when a guardrail matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardrailAction {
    /// Refuse the request: 400 `guardrail_blocked` naming the guardrail.
    Block,
    /// Let it through, marked in metrics, traces and the access log.
    Flag,
    /// Replace the matched spans (pii only).
    Redact,
}

/// The PII and secret types the detector knows. Config names are upper snake case; a few common aliases are
/// accepted (`phone_number`, `ip`, `credit_card_number`), case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", try_from = "String")]
pub enum EntityKind {
    Email,
    Phone,
    CreditCard,
    Iban,
    IpAddress,
    /// A token with a known provider prefix (`sk-`, `ghp_`, `AKIA`, ...).
    ApiKey,
    /// A high-entropy value next to a key word (`password = ...`, `client_secret: ...`).
    Secret,
    /// A PEM private-key block.
    PrivateKey,
    Jwt,
}

/// How a found entity is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Replacement {
    /// `[REDACTED:EMAIL]`.
    #[default]
    Label,
    /// `[EMAIL:1f2e3d4c]`: the first 8 hex digits of the value's SHA-256, so equal values stay linkable.
    Hash,
    /// The same number of `*`; cards, IBANs and phone numbers keep their last four characters.
    Mask,
}

/// A configuration the detectors cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfigError(pub String);

impl EntityKind {
    pub const ALL: [EntityKind; 9] = [
        EntityKind::Email,
        EntityKind::Phone,
        EntityKind::CreditCard,
        EntityKind::Iban,
        EntityKind::IpAddress,
        EntityKind::ApiKey,
        EntityKind::Secret,
        EntityKind::PrivateKey,
        EntityKind::Jwt,
    ];

    /// The name used in config, in `[REDACTED:...]` and in `guard scan` output.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Email => "EMAIL",
            EntityKind::Phone => "PHONE",
            EntityKind::CreditCard => "CREDIT_CARD",
            EntityKind::Iban => "IBAN",
            EntityKind::IpAddress => "IP_ADDRESS",
            EntityKind::ApiKey => "API_KEY",
            EntityKind::Secret => "SECRET",
            EntityKind::PrivateKey => "PRIVATE_KEY",
            EntityKind::Jwt => "JWT",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EntityKind {
    type Err = GuardConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let upper = name.trim().to_ascii_uppercase().replace(['-', ' '], "_");
        let alias = match upper.as_str() {
            "EMAIL_ADDRESS" => "EMAIL",
            "PHONE_NUMBER" => "PHONE",
            "CREDIT_CARD_NUMBER" | "CARD" => "CREDIT_CARD",
            "IP" => "IP_ADDRESS",
            "TOKEN" => "API_KEY",
            "PEM" => "PRIVATE_KEY",
            other => other,
        };
        EntityKind::ALL.into_iter().find(|kind| kind.as_str() == alias).ok_or_else(|| {
            let known: Vec<&str> = EntityKind::ALL.iter().map(|kind| kind.as_str()).collect();
            GuardConfigError(format!("unknown entity type \"{name}\" (known: {})", known.join(", ")))
        })
    }
}

impl TryFrom<String> for EntityKind {
    type Error = GuardConfigError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl FromStr for GuardrailKind {
    type Err = GuardConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "injection" => Ok(GuardrailKind::Injection),
            "pii" => Ok(GuardrailKind::Pii),
            other => Err(GuardConfigError(format!("unknown guardrail kind \"{other}\" (known: injection, pii)"))),
        }
    }
}

impl fmt::Display for GuardrailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuardrailKind::Injection => "injection",
            GuardrailKind::Pii => "pii",
        })
    }
}

impl fmt::Display for GuardConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuardConfigError {}

impl GuardrailConfig {
    /// The replicated guardrails (name → JSON) as configs. An entry this version cannot read (from a newer
    /// one) is left out with a warning rather than failing the whole config.
    pub fn from_replicated<'a>(
        entries: impl Iterator<Item = (&'a String, &'a serde_json::Value)> + 'a,
    ) -> impl Iterator<Item = GuardrailConfig> + 'a {
        entries.filter_map(|(name, value)| match serde_json::from_value(value.clone()) {
            Ok(config) => Some(config),
            Err(err) => {
                tracing::warn!(guardrail = %name, error = %err, "a replicated guardrail this node cannot read is ignored");
                None
            }
        })
    }
}

/// The default injection threshold: the one with the best F1 on the tuning split among those flagging at most
/// 1 % of its benign prompts (the sweep printed by `injection_tune`; tests/data/guard/README.md).
pub const DEFAULT_INJECTION_THRESHOLD: f32 = 0.3;

impl GuardrailConfig {
    /// The action in effect: the configured one or the kind's default.
    pub fn effective_action(&self) -> GuardrailAction {
        self.action.unwrap_or(match self.kind {
            GuardrailKind::Injection => GuardrailAction::Block,
            GuardrailKind::Pii => GuardrailAction::Redact,
        })
    }

    /// The injection threshold in effect.
    pub fn effective_threshold(&self) -> f32 {
        self.threshold.unwrap_or(DEFAULT_INJECTION_THRESHOLD)
    }

    /// The entity types in effect (all when `entities` is absent), sorted and without duplicates.
    pub fn effective_entities(&self) -> Vec<EntityKind> {
        let mut kinds = self.entities.clone().unwrap_or_else(|| EntityKind::ALL.to_vec());
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// Checks the combinations serde cannot: field names in messages are relative to this entry.
    pub fn validate(&self) -> Result<(), GuardConfigError> {
        let fail = |message: String| Err(GuardConfigError(format!("guardrail \"{}\": {message}", self.name)));
        if self.name.trim().is_empty() {
            return Err(GuardConfigError("guardrail name must not be empty".into()));
        }
        match self.kind {
            GuardrailKind::Injection => {
                if self.effective_action() == GuardrailAction::Redact {
                    return fail("action = \"redact\" needs kind = \"pii\" (an injection cannot be redacted)".into());
                }
                if self.entities.is_some() || self.replacement.is_some() {
                    return fail("entities and replacement apply to kind = \"pii\" only".into());
                }
                let threshold = self.effective_threshold();
                if !(0.0..=1.0).contains(&threshold) || threshold.is_nan() {
                    return fail(format!("threshold must be within [0, 1], got {threshold}"));
                }
            }
            GuardrailKind::Pii => {
                if self.threshold.is_some() {
                    return fail("threshold applies to kind = \"injection\" only".into());
                }
                if self.entities.as_ref().is_some_and(Vec::is_empty) {
                    return fail("entities must not be empty (leave it out for all types)".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<GuardrailConfig>, String> {
        #[derive(Deserialize)]
        struct File {
            guardrails: Vec<GuardrailConfig>,
        }
        toml::from_str::<File>(toml_text).map(|file| file.guardrails).map_err(|err| err.to_string())
    }

    #[test]
    fn parses_the_contract_shape() {
        let guardrails = parse(
            r#"
            [[guardrails]]
            name = "no-injection"
            kind = "injection"
            action = "block"
            threshold = 0.6

            [[guardrails]]
            name = "pii"
            kind = "pii"
            action = "redact"
            entities = ["email", "PHONE_NUMBER", "CREDIT_CARD"]
            replacement = "hash"
            "#,
        )
        .unwrap_or_default();
        assert_eq!(guardrails.len(), 2);
        assert_eq!(guardrails[0].effective_threshold(), 0.6);
        assert_eq!(
            guardrails[1].effective_entities(),
            vec![EntityKind::Email, EntityKind::Phone, EntityKind::CreditCard]
        );
        assert_eq!(guardrails[1].replacement, Some(Replacement::Hash));
        assert!(guardrails.iter().all(|guardrail| guardrail.validate().is_ok()));
    }

    #[test]
    fn rejects_unknown_names_and_bad_combinations() {
        assert!(parse("[[guardrails]]\nname = \"x\"\nkind = \"pii\"\nentities = [\"SSN\"]").is_err());
        assert!(parse("[[guardrails]]\nname = \"x\"\nkind = \"toxicity\"").is_err());
        assert!(parse("[[guardrails]]\nname = \"x\"\nkind = \"pii\"\ncolour = 1").is_err());
        let bad = [
            "[[guardrails]]\nname = \"x\"\nkind = \"injection\"\naction = \"redact\"",
            "[[guardrails]]\nname = \"x\"\nkind = \"injection\"\nthreshold = 1.5",
            "[[guardrails]]\nname = \"x\"\nkind = \"pii\"\nthreshold = 0.5",
            "[[guardrails]]\nname = \"x\"\nkind = \"pii\"\nentities = []",
        ];
        for text in bad {
            let parsed = parse(text).unwrap_or_default();
            assert_eq!(parsed.len(), 1, "{text}");
            assert!(parsed[0].validate().is_err(), "{text}");
        }
    }

    #[test]
    fn defaults_follow_the_kind() {
        let guardrails =
            parse("[[guardrails]]\nname = \"a\"\nkind = \"pii\"\n[[guardrails]]\nname = \"b\"\nkind = \"injection\"")
                .unwrap_or_default();
        assert_eq!(guardrails[0].effective_action(), GuardrailAction::Redact);
        assert_eq!(guardrails[0].effective_entities().len(), EntityKind::ALL.len());
        assert_eq!(guardrails[1].effective_action(), GuardrailAction::Block);
        assert_eq!(guardrails[1].effective_threshold(), DEFAULT_INJECTION_THRESHOLD);
    }
}
