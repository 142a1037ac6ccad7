//! The node's shared state: the current control snapshot (swapped atomically on config change), metrics,
//! limits and the shutdown flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use tollgate_consensus::{ConsensusNode, ControlState};

use crate::budget::{BudgetConfig, BudgetManager, UsageAggregator};
use crate::config::{Config, LimitsConfig};

fn budget_config(config: &Config) -> BudgetConfig {
    BudgetConfig { nodes: config.node.peers.len().max(1) as u64, ..BudgetConfig::default() }
}
use crate::gossip::tracker::{BreakerConfig, EndpointRegistry};
use crate::gossip::Cluster;
use crate::metrics::Metrics;
use crate::routing::ControlSnapshot;

fn endpoint_registry(config: &Config) -> Arc<EndpointRegistry> {
    Arc::new(EndpointRegistry::new(
        BreakerConfig {
            failures: config.node.breaker_failures,
            cooldown: std::time::Duration::from_millis(config.node.breaker_cooldown_ms),
        },
        std::time::Duration::from_millis(config.node.gpu_scrape_interval_ms),
    ))
}

pub struct Gateway {
    snapshot: ArcSwap<ControlSnapshot>,
    /// The Raft member, in cluster mode.
    pub consensus: Option<ConsensusNode>,
    /// Budget admission against the Raft ledger, in cluster mode.
    pub budget: Option<Arc<BudgetManager>>,
    /// Usage rows for reports, in cluster mode.
    pub usage: Option<Arc<UsageAggregator>>,
    pub admin_token: Option<String>,
    /// False until the first control state is loaded (cluster mode); `/readyz` reports it.
    loaded: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Per-endpoint health and load (this node's observations and the peers' merged view).
    pub endpoints: Arc<EndpointRegistry>,
    /// Gossip, when enabled; set once at startup.
    pub gossip: std::sync::OnceLock<Cluster>,
    pub limits: LimitsConfig,
    pub node_id: u64,
    pub node_header: HeaderValue,
    shutting_down: AtomicBool,
}

impl Gateway {
    pub fn new(config: &Config) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let endpoints = endpoint_registry(config);
        let snapshot = ControlSnapshot::build(config, &metrics, &endpoints)?;
        Ok(Gateway {
            endpoints,
            gossip: std::sync::OnceLock::new(),
            snapshot: ArcSwap::from_pointee(snapshot),
            consensus: None,
            budget: None,
            usage: None,
            admin_token: config.admin_token()?,
            loaded: AtomicBool::new(true),
            metrics,
            limits: config.limits.clone(),
            node_id: config.node.id,
            node_header: HeaderValue::from(config.node.id),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// A cluster-mode gateway: routes and keys come from the replicated state, not the file.
    pub fn clustered(config: &Config, consensus: ConsensusNode) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let endpoints = endpoint_registry(config);
        let snapshot = ControlSnapshot::from_state(&ControlState::default(), &config.limits, &metrics, &endpoints)?;
        Ok(Gateway {
            endpoints,
            gossip: std::sync::OnceLock::new(),
            snapshot: ArcSwap::from_pointee(snapshot),
            budget: Some(BudgetManager::new(config.node.id, consensus.clone(), budget_config(config))),
            usage: Some(UsageAggregator::new(config.node.id, consensus.clone())),
            consensus: Some(consensus),
            admin_token: config.admin_token()?,
            loaded: AtomicBool::new(false),
            metrics,
            limits: config.limits.clone(),
            node_id: config.node.id,
            node_header: HeaderValue::from(config.node.id),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Swaps in the data plane's view of a newly applied control state.
    pub fn reload_from_state(&self, state: &ControlState) -> anyhow::Result<()> {
        let snapshot = ControlSnapshot::from_state(state, &self.limits, &self.metrics, &self.endpoints)?;
        self.snapshot.store(Arc::new(snapshot));
        if state.bootstrapped {
            self.loaded.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// The control state as of now; requests hold it for their whole life, so a swap never tears one.
    pub fn snapshot(&self) -> Arc<ControlSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces routes, providers and keys without a restart (the Raft apply path calls this).
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        config.validate()?;
        let snapshot = ControlSnapshot::build(config, &self.metrics, &self.endpoints)?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
