//! Peer authentication on the Raft and cluster gRPC port: every RPC must carry a cluster secret shared by
//! the members (until mTLS replaces it). The port can change the whole control state — create keys,
//! repoint providers, add voters — so an RPC without a valid secret is refused before any service sees it.
//!
//! Several secrets may be accepted at once so the secret can be rotated without downtime: nodes sign with
//! the first and accept any (add the new one second everywhere, then make it first, then drop the old).
//! The accepted set can be replaced at run time ([`ClusterAuth::set_secrets`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::types::NodeId;

/// gRPC metadata carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-tollgate-cluster-secret";
/// gRPC metadata naming the calling node (trusted once the secret is valid; used for the audit trail).
pub const NODE_HEADER: &str = "x-tollgate-node";

/// The shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct ClusterAuth {
    node_id: NodeId,
    secrets: Arc<ArcSwap<Vec<String>>>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("ClusterAuth")
            .field("node_id", &self.node_id)
            .field("secrets", &self.secrets.load().len())
            .finish()
    }
}

impl ClusterAuth {
    /// `secrets[0]` signs outgoing RPCs; any of them is accepted. With none, every peer RPC is refused.
    pub fn new(node_id: NodeId, secrets: Vec<String>) -> Self {
        ClusterAuth { node_id, secrets: Arc::new(ArcSwap::from_pointee(secrets)) }
    }

    /// Replaces the accepted secrets (rotation without a restart).
    pub fn set_secrets(&self, secrets: Vec<String>) {
        self.secrets.store(Arc::new(secrets));
    }

    /// The accepted secrets as of now (the first signs); gossip seals its datagrams with the same set.
    pub fn secrets(&self) -> Arc<Vec<String>> {
        self.secrets.load_full()
    }

    /// Adds this node's credentials to an outgoing request.
    pub fn sign<T>(&self, mut request: Request<T>) -> Request<T> {
        let secrets = self.secrets.load();
        if let Some(Ok(value)) = secrets.first().map(|secret| MetadataValue::try_from(secret.as_str())) {
            request.metadata_mut().insert(SECRET_HEADER, value);
        }
        request.metadata_mut().insert(NODE_HEADER, MetadataValue::from(self.node_id));
        request
    }

    /// The server-side check, as a tonic interceptor: the request's secret must equal one accepted secret
    /// (compared in constant time). Refusals never echo what was sent.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get(SECRET_HEADER).map(|value| value.as_bytes()).unwrap_or_default();
        let secrets = self.secrets.load();
        let valid = !presented.is_empty()
            && secrets.iter().fold(false, |found, secret| found | constant_time_eq(secret.as_bytes(), presented));
        if valid {
            Ok(request)
        } else {
            tracing::warn!("refused a cluster RPC without a valid cluster secret");
            Err(Status::unauthenticated("a valid cluster secret is required on this port"))
        }
    }

    /// The calling node named by an authenticated request.
    pub fn caller<T>(request: &Request<T>) -> Option<NodeId> {
        request.metadata().get(NODE_HEADER)?.to_str().ok()?.parse().ok()
    }
}

/// Equality that takes the same time wherever the inputs differ (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(secret: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(secret) = secret {
            if let Ok(value) = MetadataValue::try_from(secret) {
                request.metadata_mut().insert(SECRET_HEADER, value);
            }
        }
        request
    }

    #[test]
    fn only_an_accepted_secret_passes() {
        let auth = ClusterAuth::new(1, vec!["new-secret-0123456789".into(), "old-secret-0123456789".into()]);
        assert!(auth.check(request_with(Some("new-secret-0123456789"))).is_ok());
        assert!(auth.check(request_with(Some("old-secret-0123456789"))).is_ok(), "rotation: the old one too");
        assert!(auth.check(request_with(Some("wrong-secret-012345678"))).is_err());
        assert!(auth.check(request_with(Some(""))).is_err());
        assert!(auth.check(request_with(None)).is_err());
        auth.set_secrets(vec!["new-secret-0123456789".into()]);
        assert!(auth.check(request_with(Some("old-secret-0123456789"))).is_err(), "the old one retired");
    }

    #[test]
    fn no_secrets_refuse_everything_and_signing_adds_the_first() {
        let none = ClusterAuth::new(1, Vec::new());
        assert!(none.check(request_with(Some("anything-at-all-123"))).is_err());
        let auth = ClusterAuth::new(7, vec!["first-secret-0123456".into(), "second-secret-012345".into()]);
        let signed = auth.sign(Request::new(()));
        assert_eq!(signed.metadata().get(SECRET_HEADER).and_then(|v| v.to_str().ok()), Some("first-secret-0123456"));
        assert_eq!(ClusterAuth::caller(&signed), Some(7));
        assert!(!format!("{auth:?}").contains("secret-0"), "Debug never shows a secret");
    }
}
