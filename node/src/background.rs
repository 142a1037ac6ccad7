//! Periodic background work owned by a component: the budget sync, the usage aggregator.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Runs `tick(owner)` every `interval` for as long as `owner` is alive elsewhere. The task holds it
/// weakly, so a stopped node's state (its consensus handle, the sled lock) is not kept alive by its own
/// background work; missed ticks are delayed, not bunched.
pub fn every<T, F, Fut>(owner: &Arc<T>, interval: Duration, mut tick: F) -> tokio::task::JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(owner);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(owner) = weak.upgrade() else {
                return;
            };
            tick(owner).await;
        }
    })
}
