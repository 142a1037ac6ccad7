//! The kinds of replicated resource the admin API addresses by name.

/// The replicated resources the admin API reads and writes by name (`routes` is another name for models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Providers,
    Models,
    Orgs,
    Teams,
    Keys,
    Guardrails,
}

impl ResourceKind {
    /// The path segment (`/admin/v1/{kind}`); the error says which kinds exist.
    pub fn parse(segment: &str) -> Result<ResourceKind, String> {
        match segment {
            "providers" => Ok(ResourceKind::Providers),
            "models" | "routes" => Ok(ResourceKind::Models),
            "orgs" => Ok(ResourceKind::Orgs),
            "teams" => Ok(ResourceKind::Teams),
            "keys" => Ok(ResourceKind::Keys),
            "guardrails" => Ok(ResourceKind::Guardrails),
            other => Err(format!(
                "unknown resource kind `{other}`; one of providers, models, routes, orgs, teams, keys, guardrails"
            )),
        }
    }

    /// One of it, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            ResourceKind::Providers => "provider",
            ResourceKind::Models => "model",
            ResourceKind::Orgs => "org",
            ResourceKind::Teams => "team",
            ResourceKind::Keys => "key",
            ResourceKind::Guardrails => "guardrail",
        }
    }
}
