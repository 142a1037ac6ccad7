//! The node's shared state: the current control snapshot (swapped atomically on config change), metrics,
//! limits and the shutdown flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::config::{Config, LimitsConfig};
use crate::metrics::Metrics;
use crate::routing::ControlSnapshot;

pub struct Gateway {
    snapshot: ArcSwap<ControlSnapshot>,
    pub metrics: Arc<Metrics>,
    pub limits: LimitsConfig,
    pub node_id: u64,
    pub node_header: HeaderValue,
    shutting_down: AtomicBool,
}

impl Gateway {
    pub fn new(config: &Config) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let snapshot = ControlSnapshot::build(config, &metrics)?;
        Ok(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            limits: config.limits.clone(),
            node_id: config.node.id,
            node_header: HeaderValue::from(config.node.id),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// The control state as of now; requests hold it for their whole life, so a swap never tears one.
    pub fn snapshot(&self) -> Arc<ControlSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces routes, providers and keys without a restart (the Raft apply path calls this).
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        config.validate()?;
        let snapshot = ControlSnapshot::build(config, &self.metrics)?;
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
