//! The config checks that have grown past a few lines: gossip addresses and seeds, and each model's routing
//! options (per-target overrides, fallback statuses, retries, the canary's SLO). Every message names the field.

use anyhow::bail;

use super::{CanaryTarget, Config, ModelConfig};

impl Config {
    /// Each guardrail is valid and named once; models and orgs name only guardrails that exist.
    pub(super) fn validate_guardrails(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for (index, guardrail) in self.guardrails.iter().enumerate() {
            guardrail.validate().map_err(|err| anyhow::anyhow!("guardrails[{index}]: {err}"))?;
            if !names.insert(guardrail.name.as_str()) {
                bail!("guardrails[{index}].name: duplicate guardrail name `{}`", guardrail.name);
            }
        }
        let attached = self
            .models
            .iter()
            .enumerate()
            .map(|(index, model)| (format!("models[{index}]"), &model.guardrails))
            .chain(self.orgs.iter().enumerate().map(|(index, org)| (format!("orgs[{index}]"), &org.guardrails)));
        for (at, list) in attached {
            if let Some(position) = list.iter().position(|name| !names.contains(name.as_str())) {
                bail!("{at}.guardrails[{position}]: unknown guardrail `{}`", list[position]);
            }
        }
        Ok(())
    }

    pub(super) fn validate_gossip(&self) -> anyhow::Result<()> {
        let node = &self.node;
        for (index, seed) in node.gossip.seeds.iter().enumerate() {
            let port_ok =
                seed.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                bail!("node.gossip_seeds[{index}]: `{seed}` is not a host:port address");
            }
        }
        if node.gossip.interval_ms < 10 {
            bail!("node.gossip_interval_ms: must be at least 10");
        }
        if node.gossip.cluster_id.is_empty() {
            bail!("node.gossip_cluster_id: must not be empty");
        }
        if node.health.gpu_scrape_interval_ms < 50 {
            bail!("node.gpu_scrape_interval_ms: must be at least 50");
        }
        if node.idle_spin_us > 10_000 {
            bail!("node.idle_spin_us: at most 10000 (10 ms); useful values are tens to hundreds of microseconds");
        }
        if node.health.breaker_failures == 0 {
            bail!("node.breaker_failures: must be at least 1");
        }
        // On by default only: a node that cannot tell its gossip address runs without gossip and says so.
        if node.gossip.enabled == Some(true) && node.gossip_advertise_addr().is_none() {
            bail!(
                "node.gossip_advertise: required when node.gossip_listen (`{}`) binds every interface and this \
                 node's Raft address (advertise_raft or its peers entry) is not an IP address",
                node.listen.gossip
            );
        }
        Ok(())
    }
}

/// The routing options of one model: overrides, fallback statuses, retries and the canary SLO.
pub(super) fn validate_routing(model: &ModelConfig, at: &str) -> anyhow::Result<()> {
    for (index, target) in model.targets.iter().enumerate() {
        if let Some(price) = &target.price_per_mtok {
            if price.input < 0.0 || price.output < 0.0 {
                bail!("{at}.targets[{index}].price_per_mtok: prices must not be negative");
            }
        }
        if target.context_window == Some(0) {
            bail!("{at}.targets[{index}].context_window: must be greater than 0");
        }
    }
    if model.max_prompt_bytes == Some(0) || model.context_window == Some(0) {
        bail!("{at}: context_window and max_prompt_bytes must be greater than 0 when set");
    }
    for status in &model.fallback_on {
        if !(400..=499).contains(status) {
            bail!("{at}.fallback_on: {status} is not a 4xx status (429, 5xx, timeouts and connect errors always fall back)");
        }
    }
    if let Some(retry) = &model.retry {
        if retry.max_backoff_ms < retry.backoff_ms {
            bail!("{at}.retry.max_backoff_ms: must be at least retry.backoff_ms");
        }
        if retry.attempts > 10 {
            bail!("{at}.retry.attempts: at most 10");
        }
    }
    if let Some(canary) = &model.canary {
        let index = match &canary.target {
            CanaryTarget::Index(index) => *index,
            CanaryTarget::Provider(name) => model
                .targets
                .iter()
                .position(|t| &t.provider == name)
                .ok_or_else(|| anyhow::anyhow!("{at}.canary.target: no target with provider `{name}`"))?,
        };
        if index >= model.targets.len() {
            bail!("{at}.canary.target: index {index} is out of range ({} targets)", model.targets.len());
        }
        if model.targets.len() < 2 {
            bail!("{at}.canary: a canary needs at least one stable target besides it");
        }
        if canary.max_error_rate_delta.is_nan() || canary.max_error_rate_delta < 0.0 {
            bail!("{at}.canary.max_error_rate_delta: must be 0 or more");
        }
        if canary.max_p95_latency_ratio.is_nan() || canary.max_p95_latency_ratio <= 0.0 {
            bail!("{at}.canary.max_p95_latency_ratio: must be greater than 0");
        }
        if canary.window_secs == 0 || canary.window_secs > 3600 {
            bail!("{at}.canary.window_secs: must be between 1 and 3600");
        }
    }
    Ok(())
}
