//! The route table: model name → targets (provider + upstream model), built from config into an immutable
//! snapshot that the request path reads without locks. Also the order in which targets are tried.

pub mod strategy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;

use crate::auth::{KeyStore, StaticKeyStore};
use crate::config::{
    CanaryConfig, Config, LimitsConfig, ModelConfig, OrgConfig, Price, ProviderConfig, RetryPolicy, Strategy,
};
use crate::guard::{Guardrail, GuardrailConfig};
use crate::health::{EndpointRegistry, EndpointStats};
use crate::metrics::{Metrics, TargetMetrics};
use crate::providers::{Provider, UpstreamTls};
use crate::tokens::Encoding;

pub use strategy::RequestHints;

pub struct Target {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    /// `upstream_model` as a JSON string literal, ready to splice into a rewritten body.
    pub upstream_model_json: String,
    pub weight: u32,
    pub priority: u32,
    pub metrics: Arc<TargetMetrics>,
    /// `provider/model`, the `x-tollgate-target` header value.
    pub header: HeaderValue,
    /// The names the trace spans record, shared (not copied per request).
    pub names: crate::trace_span::TargetNames,
    /// The upstream endpoint's health and load (shared by every target on the same provider).
    pub endpoint: Arc<EndpointStats>,
    /// The target's price (its own override, else the model's).
    pub price: Price,
    /// The smaller of the target's and the model's context windows.
    pub context_window: Option<u64>,
    /// Set when a canary rollback took effect on this node, before the Raft write lands.
    pub rolled_back: AtomicBool,
}

impl Target {
    /// The configured weight, 0 once rolled back.
    pub fn effective_weight(&self) -> u32 {
        if self.rolled_back.load(Ordering::Relaxed) {
            0
        } else {
            self.weight
        }
    }
}

pub struct Route {
    pub name: Arc<str>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// Prompts larger than this many bytes are refused before any token is counted.
    pub max_prompt_bytes: Option<u64>,
    pub max_messages: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    pub price: Price,
    pub encoding: Encoding,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    /// Upstream statuses that fall back besides 429/5xx (e.g. 401, 402).
    pub fallback_on: Vec<u16>,
    pub retry: Option<RetryPolicy>,
    /// The canary target's index and its SLO.
    pub canary: Option<(usize, CanaryConfig)>,
    /// How long a GPU sample counts.
    pub gpu_ttl_ms: u64,
    /// Guardrails run on every request to this route (the org's run too).
    pub guardrails: Vec<Arc<Guardrail>>,
    /// Prompt and completion text go on the trace span (`proxy/trace_content.rs`).
    pub trace_content: bool,
}

/// Default `max_tokens` sent to providers that require one when neither the caller nor the model config
/// gives it.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl Route {
    pub fn default_max_tokens(&self) -> u64 {
        self.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    /// Indexes of targets in the order to try them (see [`strategy`]): healthy endpoints first, then
    /// priority tiers (`weighted`: one tier), then the strategy's score, then a weighted random draw.
    pub fn attempt_order(&self, hints: &RequestHints<'_>) -> Vec<usize> {
        strategy::attempt_order(self, hints)
    }

    /// Whether an upstream error should move on to the next target.
    pub fn falls_back_on(&self, err: &crate::error::GatewayError) -> bool {
        err.retryable
            || matches!(err.kind, crate::error::ErrorKind::UpstreamStatus(status) if self.fallback_on.contains(&status))
    }
}

/// Everything the data plane reads per request, swapped atomically when the config changes.
#[derive(Clone)]
pub struct ControlSnapshot {
    pub routes: HashMap<String, Arc<Route>>,
    /// Budgets by scope id (cluster mode; empty when standalone).
    pub budgets: Arc<HashMap<String, tollgate_consensus::BudgetSpec>>,
    pub keys: Arc<dyn KeyStore>,
    /// Guardrails each org's keys run on every request (besides the route's), by org name.
    pub org_guardrails: Arc<HashMap<String, Vec<Arc<Guardrail>>>>,
    /// Model names, sorted, for `GET /v1/models`.
    pub model_names: Vec<String>,
    pub models_openai_json: Bytes,
}

/// The configuration a snapshot is built from, from a file or from the replicated state.
pub struct ConfigParts<'a> {
    pub providers: &'a [ProviderConfig],
    pub models: &'a [ModelConfig],
    pub orgs: &'a [OrgConfig],
    pub guardrails: &'a [GuardrailConfig],
}

impl ControlSnapshot {
    /// From a node's own file (standalone mode).
    pub fn build(
        config: &Config,
        tls: &UpstreamTls,
        metrics: &Metrics,
        endpoints: &EndpointRegistry,
    ) -> anyhow::Result<ControlSnapshot> {
        let parts = ConfigParts {
            providers: &config.providers,
            models: &config.models,
            orgs: &config.orgs,
            guardrails: &config.guardrails,
        };
        let keys = Arc::new(StaticKeyStore::from_config(&config.keys));
        Self::from_parts(&config.limits, tls, &parts, keys, metrics, endpoints)
    }

    /// From the replicated control state (cluster mode).
    pub fn from_state(
        state: &tollgate_consensus::ControlState,
        limits: &LimitsConfig,
        tls: &UpstreamTls,
        metrics: &Metrics,
        endpoints: &EndpointRegistry,
    ) -> anyhow::Result<ControlSnapshot> {
        let providers: Vec<_> = state.config.providers.values().cloned().collect();
        let models: Vec<_> = state.config.models.values().cloned().collect();
        let orgs: Vec<_> = state.config.orgs.values().cloned().collect();
        let guardrails: Vec<_> = GuardrailConfig::from_replicated(state.config.guardrails.iter()).collect();
        let parts = ConfigParts { providers: &providers, models: &models, orgs: &orgs, guardrails: &guardrails };
        let keys = Arc::new(StaticKeyStore::from_records(state.config.keys.values()));
        let mut snapshot = Self::from_parts(limits, tls, &parts, keys, metrics, endpoints)?;
        snapshot.budgets = Self::budgets_from(state);
        Ok(snapshot)
    }

    pub fn budgets_from(
        state: &tollgate_consensus::ControlState,
    ) -> Arc<HashMap<String, tollgate_consensus::BudgetSpec>> {
        Arc::new(state.config.ledger.budgets.iter().map(|(id, spec)| (id.clone(), spec.clone())).collect())
    }

    pub fn from_parts(
        limits: &LimitsConfig,
        tls: &UpstreamTls,
        parts: &ConfigParts<'_>,
        keys: Arc<dyn KeyStore>,
        metrics: &Metrics,
        endpoints: &EndpointRegistry,
    ) -> anyhow::Result<ControlSnapshot> {
        let mut providers = HashMap::new();
        for provider in parts.providers {
            providers.insert(provider.name.clone(), Arc::new(Provider::from_config(provider, limits, tls)?));
        }
        endpoints
            .set_active(&parts.providers.iter().map(|p| (p.name.clone(), p.metrics_url.clone())).collect::<Vec<_>>());
        let guardrails = build_guardrails(parts.guardrails)?;
        let mut routes = HashMap::new();
        for model in parts.models {
            let targets = build_targets(model, &providers, metrics, endpoints)?;
            let route_guardrails = named_guardrails(&guardrails, &model.guardrails, &model.name)?;
            routes.insert(model.name.clone(), Arc::new(Route::new(model, targets, route_guardrails, endpoints)));
        }
        let mut org_guardrails = HashMap::new();
        for org in parts.orgs.iter().filter(|org| !org.guardrails.is_empty()) {
            org_guardrails.insert(org.name.clone(), named_guardrails(&guardrails, &org.guardrails, &org.name)?);
        }
        let mut model_names: Vec<String> = routes.keys().cloned().collect();
        model_names.sort();
        let models_openai_json = Bytes::from(models_list_openai(&model_names, |_| true).to_string());
        Ok(ControlSnapshot {
            routes,
            budgets: Arc::new(HashMap::new()),
            keys,
            org_guardrails: Arc::new(org_guardrails),
            model_names,
            models_openai_json,
        })
    }
}

/// Every guardrail with its detector built, by name.
fn build_guardrails(configs: &[GuardrailConfig]) -> anyhow::Result<HashMap<String, Arc<Guardrail>>> {
    configs
        .iter()
        .map(|config| {
            let guardrail = Guardrail::from_config(config).map_err(|err| anyhow::anyhow!("guardrails: {err}"))?;
            Ok((config.name.clone(), Arc::new(guardrail)))
        })
        .collect()
}

/// The guardrails `names` refers to (by `owner`, a model or an org).
fn named_guardrails(
    all: &HashMap<String, Arc<Guardrail>>,
    names: &[String],
    owner: &str,
) -> anyhow::Result<Vec<Arc<Guardrail>>> {
    names
        .iter()
        .map(|name| {
            all.get(name).cloned().ok_or_else(|| anyhow::anyhow!("{owner}.guardrails: unknown guardrail `{name}`"))
        })
        .collect()
}

fn build_targets(
    model: &ModelConfig,
    providers: &HashMap<String, Arc<Provider>>,
    metrics: &Metrics,
    endpoints: &EndpointRegistry,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (index, target) in model.targets.iter().enumerate() {
        let provider = providers
            .get(&target.provider)
            .ok_or_else(|| anyhow::anyhow!("models.{}.targets[{index}]: unknown provider", model.name))?
            .clone();
        let upstream_model = target.model.clone().unwrap_or_else(|| model.name.clone());
        let header = HeaderValue::from_str(&format!("{}/{}", provider.name, upstream_model))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let context_window = match (target.context_window, model.context_window) {
            (Some(own), Some(model)) => Some(own.min(model)),
            (own, model) => own.or(model),
        };
        targets.push(Target {
            names: crate::trace_span::TargetNames::new(&provider.name, &upstream_model, provider.server_address()),
            metrics: metrics.target(&model.name, &provider.name, &upstream_model),
            upstream_model_json: json!(upstream_model).to_string(),
            upstream_model,
            weight: target.weight,
            priority: target.priority,
            endpoint: endpoints.endpoint(&provider.name),
            price: target.price_per_mtok.unwrap_or(model.price_per_mtok),
            context_window,
            rolled_back: AtomicBool::new(false),
            provider,
            header,
        });
    }
    Ok(targets)
}

impl Route {
    fn new(
        model: &ModelConfig,
        targets: Vec<Target>,
        guardrails: Vec<Arc<Guardrail>>,
        endpoints: &EndpointRegistry,
    ) -> Route {
        Route {
            name: model.name.as_str().into(),
            context_window: model.context_window,
            max_output_tokens: model.max_output_tokens,
            max_prompt_bytes: model.max_prompt_bytes,
            max_messages: model.max_messages,
            max_prompt_tokens: model.max_prompt_tokens,
            price: model.price_per_mtok,
            encoding: Encoding::for_model(&model.name, model.encoding),
            strategy: model.strategy,
            targets,
            fallback_on: model.fallback_on.clone(),
            retry: model.retry,
            canary: model
                .canary
                .as_ref()
                .and_then(|canary| canary.target_index(&model.targets).map(|index| (index, canary.clone()))),
            gpu_ttl_ms: endpoints.gpu_ttl_ms,
            guardrails,
            trace_content: model.trace_content,
        }
    }
}

pub fn models_list_openai(names: &[String], allowed: impl Fn(&str) -> bool) -> serde_json::Value {
    let data: Vec<_> = names
        .iter()
        .filter(|name| allowed(name))
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    json!({"object": "list", "data": data})
}

pub fn models_list_anthropic(names: &[String], allowed: impl Fn(&str) -> bool) -> serde_json::Value {
    let data: Vec<_> = names
        .iter()
        .filter(|name| allowed(name))
        .map(|name| json!({"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}))
        .collect();
    let first = data.first().and_then(|m| m.get("id")).cloned();
    let last = data.last().and_then(|m| m.get("id")).cloned();
    json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
}

#[cfg(test)]
mod strategy_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn public_tls() -> UpstreamTls {
        UpstreamTls::public_roots().unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn snapshot(strategy: &str) -> ControlSnapshot {
        let text = format!(
            r#"
[[providers]]
name = "a"
kind = "mock"
[[providers]]
name = "b"
kind = "mock"
[[models]]
name = "m"
strategy = "{strategy}"
targets = [ {{ provider = "a", weight = 90, priority = 1 }}, {{ provider = "b", weight = 10, priority = 0 }} ]
"#
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e:#}"));
        ControlSnapshot::build(&config, &public_tls(), &Metrics::default(), &EndpointRegistry::default())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn priority_tries_the_lowest_tier_first() {
        let snapshot = snapshot("priority");
        let route = &snapshot.routes["m"];
        for _ in 0..50 {
            assert_eq!(route.attempt_order(&strategy_tests::hints(10, 10)), vec![1, 0]);
        }
    }

    #[test]
    fn weighted_split_follows_weights() {
        let snapshot = snapshot("weighted");
        let route = &snapshot.routes["m"];
        let firsts = (0..4000).filter(|_| route.attempt_order(&strategy_tests::hints(10, 10))[0] == 0).count();
        // 90 % expected; 4,000 draws keep this within a few points.
        assert!((3400..3800).contains(&firsts), "{firsts}");
    }
}
