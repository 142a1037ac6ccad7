//! The GPU side of the mock: which engine's metric names `/metrics` speaks, and an optional queueing
//! model of a GPU server whose latency grows with its queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// Which inference engine's metric names `GET /metrics` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` and the
    /// older `vllm:gpu_cache_usage_perc`.
    #[default]
    Vllm,
    /// `sglang:num_queue_reqs`, `sglang:num_running_reqs`, `sglang:token_usage`.
    Sglang,
    /// `tgi_queue_size`, `tgi_batch_current_size` (no KV gauge).
    Tgi,
}

/// A GPU server model: `slots` requests run at once, each for `service`; the rest wait in a FIFO queue,
/// so latency grows with the queue. `/metrics` then reports the live queue, batch and KV use
/// (running / slots) instead of the values set with `set_gpu_metrics`.
#[derive(Clone, Copy, Debug)]
pub struct GpuSim {
    pub slots: usize,
    pub service: Duration,
}

#[derive(Clone)]
pub(crate) struct GpuSimState {
    pub(crate) config: GpuSim,
    pub(crate) semaphore: Arc<tokio::sync::Semaphore>,
}

/// Decrements a counter when dropped (a client that leaves mid-queue still frees its place).
struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    /// Waits for a slot and holds it for the service time, when a GpuSim is configured.
    pub(crate) async fn simulate_gpu(&self) {
        let Some(sim) = self.lock().gpu_sim.clone() else {
            return;
        };
        self.sim_waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = CountGuard(&self.sim_waiting);
        let Ok(permit) = sim.semaphore.acquire_owned().await else {
            return;
        };
        drop(waiting);
        self.sim_running.fetch_add(1, Ordering::SeqCst);
        let _running = CountGuard(&self.sim_running);
        tokio::time::sleep(sim.config.service).await;
        drop(permit);
    }

    pub(crate) fn gpu_values(&self) -> (u64, u64, f64) {
        let g = self.lock();
        match &g.gpu_sim {
            Some(sim) => {
                let running = self.sim_running.load(Ordering::SeqCst);
                let kv = running as f64 / sim.config.slots.max(1) as f64;
                (self.sim_waiting.load(Ordering::SeqCst) as u64, running as u64, kv)
            }
            None => g.gpu,
        }
    }
}
