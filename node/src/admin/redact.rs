//! What the admin API shows of the control state: lists and resources with every secret redacted.

use serde_json::{json, Value};
use tollgate_consensus::ControlState;

use super::resource::ResourceKind;
use crate::config::ProviderConfig;

pub(super) fn collection(state: &ControlState, kind: ResourceKind) -> Value {
    let config = &state.config;
    match kind {
        ResourceKind::Providers => json!(config.providers.values().map(redact_provider).collect::<Vec<_>>()),
        ResourceKind::Models => json!(config.models.values().collect::<Vec<_>>()),
        ResourceKind::Orgs => json!(config.orgs.values().collect::<Vec<_>>()),
        ResourceKind::Teams => json!(config.teams.values().collect::<Vec<_>>()),
        ResourceKind::Keys => json!(config.keys.values().collect::<Vec<_>>()),
        ResourceKind::Guardrails => json!(config.guardrails.values().collect::<Vec<_>>()),
    }
}

/// Secrets in a provider are never returned by the API: the API key, every extra header's value (they
/// carry keys such as `api-key`), and credentials in the metrics URL.
pub(super) fn redact_provider(provider: &ProviderConfig) -> Value {
    let mut value = json!(provider);
    if provider.api_key.is_some() {
        value["api_key"] = json!("<redacted>");
    }
    for name in provider.headers.keys() {
        value["headers"][name] = json!("<redacted>");
    }
    if let Some(url) = &provider.metrics_url {
        value["metrics_url"] = json!(redact_url_credentials(url));
    }
    value
}

/// `scheme://user:password@host/...` → `scheme://<redacted>@host/...`.
fn redact_url_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>{}", &rest[at..]),
        None => url.to_owned(),
    }
}
