//! Where a node's secrets come from: the admin token and the cluster secrets, from the file, a file it
//! names, or the environment — each refused when empty, naming the setting.

use anyhow::Context as _;

use super::Config;

impl Config {
    /// The admin token: `node.admin_token`, else the file `node.admin_token_file`, else `TOLLGATE_ADMIN_TOKEN`.
    /// An empty or blank token from any source is an error (it would let an empty `Bearer` in).
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        let (source, token) = if let Some(token) = &self.node.secrets.admin_token {
            ("node.admin_token", token.clone())
        } else if let Some(path) = &self.node.secrets.admin_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("node.admin_token_file: reading {}", path.display()))?;
            ("node.admin_token_file", token)
        } else {
            match std::env::var("TOLLGATE_ADMIN_TOKEN") {
                Ok(token) => ("TOLLGATE_ADMIN_TOKEN", token),
                Err(_) => return Ok(None),
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            anyhow::bail!("{source}: the admin token is empty; set a token or remove the setting");
        }
        Ok(Some(token))
    }

    /// The cluster secrets (the first signs; all are accepted): `node.cluster_secret`, else the file
    /// `node.cluster_secret_file` (one per line), else `TOLLGATE_CLUSTER_SECRET` (one per line or comma).
    /// Required when `peers` is set; each at least 16 characters.
    pub fn cluster_secrets(&self) -> anyhow::Result<Vec<String>> {
        let (source, text) = if let Some(secret) = &self.node.secrets.cluster_secret {
            ("node.cluster_secret", secret.clone())
        } else if let Some(path) = &self.node.secrets.cluster_secret_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("node.cluster_secret_file: reading {}", path.display()))?;
            ("node.cluster_secret_file", text)
        } else {
            ("TOLLGATE_CLUSTER_SECRET", std::env::var("TOLLGATE_CLUSTER_SECRET").unwrap_or_default())
        };
        let secrets: Vec<String> =
            text.split(['\n', ',']).map(str::trim).filter(|secret| !secret.is_empty()).map(str::to_owned).collect();
        if secrets.is_empty() && self.is_clustered() {
            anyhow::bail!(
                "node.peers is set, so peers must authenticate: set node.cluster_secret_file (or TOLLGATE_CLUSTER_SECRET) to the same secret on every node"
            );
        }
        let min = tollgate_consensus::auth::MIN_SECRET_LEN;
        if secrets.iter().any(|secret| secret.len() < min) {
            anyhow::bail!("{source}: every cluster secret must be at least {min} characters");
        }
        Ok(secrets)
    }
}
