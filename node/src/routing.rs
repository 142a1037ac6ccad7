//! The route table: model name → targets (provider + upstream model), built from config into an immutable
//! snapshot that the request path reads without locks. Also the order in which targets are tried.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use rand::Rng;
use serde_json::json;

use crate::auth::{KeyStore, StaticKeyStore};
use crate::config::{Config, LimitsConfig, ModelConfig, Price, ProviderConfig, Strategy};
use crate::metrics::{Metrics, TargetMetrics};
use crate::providers::Provider;
use crate::tokens::Encoding;

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
}

pub struct Route {
    pub name: String,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub price: Price,
    pub encoding: Encoding,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
}

/// Default `max_tokens` sent to providers that require one when neither the caller nor the model config
/// gives it.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

impl Route {
    pub fn default_max_tokens(&self) -> u64 {
        self.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    /// Indexes of targets in the order to try them. `priority`: tiers by ascending priority, weighted
    /// random order inside a tier. `weighted`: one tier, weighted random order (A/B and canary splits).
    pub fn attempt_order(&self) -> Vec<usize> {
        let mut rng = rand::rng();
        let mut keyed: Vec<(u32, f64, usize)> = self
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                let tier = match self.strategy {
                    Strategy::Priority => target.priority,
                    Strategy::Weighted => 0,
                };
                // Efraimidis–Spirakis: sorting by u^(1/w) descending is a weighted random permutation.
                let key =
                    if target.weight == 0 { -1.0 } else { rng.random::<f64>().powf(1.0 / f64::from(target.weight)) };
                (tier, key, index)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        keyed.into_iter().map(|(_, _, index)| index).collect()
    }
}

/// Everything the data plane reads per request, swapped atomically when the config changes.
#[derive(Clone)]
pub struct ControlSnapshot {
    pub routes: HashMap<String, Arc<Route>>,
    /// Budgets by scope id (cluster mode; empty when standalone).
    pub budgets: Arc<HashMap<String, tollgate_consensus::BudgetSpec>>,
    pub keys: Arc<dyn KeyStore>,
    /// Model names, sorted, for `GET /v1/models`.
    pub model_names: Vec<String>,
    pub models_openai_json: Bytes,
}

impl ControlSnapshot {
    /// From a node's own file (standalone mode).
    pub fn build(config: &Config, metrics: &Metrics) -> anyhow::Result<ControlSnapshot> {
        Self::from_parts(
            &config.limits,
            &config.providers,
            &config.models,
            Arc::new(StaticKeyStore::from_config(&config.keys)),
            metrics,
        )
    }

    /// From the replicated control state (cluster mode).
    pub fn from_state(
        state: &tollgate_consensus::ControlState,
        limits: &LimitsConfig,
        metrics: &Metrics,
    ) -> anyhow::Result<ControlSnapshot> {
        let providers: Vec<_> = state.providers.values().cloned().collect();
        let models: Vec<_> = state.models.values().cloned().collect();
        let mut snapshot = Self::from_parts(
            limits,
            &providers,
            &models,
            Arc::new(StaticKeyStore::from_records(state.keys.values())),
            metrics,
        )?;
        snapshot.budgets = Self::budgets_from(state);
        Ok(snapshot)
    }

    pub fn budgets_from(
        state: &tollgate_consensus::ControlState,
    ) -> Arc<HashMap<String, tollgate_consensus::BudgetSpec>> {
        Arc::new(state.ledger.budgets.iter().map(|(id, spec)| (id.clone(), spec.clone())).collect())
    }

    pub fn from_parts(
        limits: &LimitsConfig,
        provider_configs: &[ProviderConfig],
        model_configs: &[ModelConfig],
        keys: Arc<dyn KeyStore>,
        metrics: &Metrics,
    ) -> anyhow::Result<ControlSnapshot> {
        let mut providers = HashMap::new();
        for provider in provider_configs {
            providers.insert(provider.name.clone(), Arc::new(Provider::from_config(provider, limits)?));
        }
        let mut routes = HashMap::new();
        for model in model_configs {
            let mut targets = Vec::new();
            for (index, target) in model.targets.iter().enumerate() {
                let provider = providers
                    .get(&target.provider)
                    .ok_or_else(|| anyhow::anyhow!("models.{}.targets[{index}]: unknown provider", model.name))?
                    .clone();
                let upstream_model = target.model.clone().unwrap_or_else(|| model.name.clone());
                let header = HeaderValue::from_str(&format!("{}/{}", provider.name, upstream_model))
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
                targets.push(Target {
                    metrics: metrics.target(&model.name, &provider.name, &upstream_model),
                    upstream_model_json: json!(upstream_model).to_string(),
                    upstream_model,
                    weight: target.weight,
                    priority: target.priority,
                    provider,
                    header,
                });
            }
            routes.insert(
                model.name.clone(),
                Arc::new(Route {
                    name: model.name.clone(),
                    context_window: model.context_window,
                    max_output_tokens: model.max_output_tokens,
                    price: model.price_per_mtok,
                    encoding: Encoding::for_model(&model.name, model.encoding.as_deref()),
                    strategy: model.strategy,
                    targets,
                }),
            );
        }
        let mut model_names: Vec<String> = routes.keys().cloned().collect();
        model_names.sort();
        let models_openai_json = Bytes::from(models_list_openai(&model_names, |_| true).to_string());
        Ok(ControlSnapshot { routes, budgets: Arc::new(HashMap::new()), keys, model_names, models_openai_json })
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
mod tests {
    use super::*;

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
        ControlSnapshot::build(&config, &Metrics::default()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[test]
    fn priority_tries_the_lowest_tier_first() {
        let snapshot = snapshot("priority");
        let route = &snapshot.routes["m"];
        for _ in 0..50 {
            assert_eq!(route.attempt_order(), vec![1, 0]);
        }
    }

    #[test]
    fn weighted_split_follows_weights() {
        let snapshot = snapshot("weighted");
        let route = &snapshot.routes["m"];
        let firsts = (0..4000).filter(|_| route.attempt_order()[0] == 0).count();
        // 90 % expected; 4,000 draws keep this within a few points.
        assert!((3400..3800).contains(&firsts), "{firsts}");
    }
}
