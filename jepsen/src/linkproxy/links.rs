//! The state of every directed link `from → to` between regions: its one-way delay, jitter and mode.
//!
//! Each link is a `watch` channel, so forwarding tasks read the current state without locking and wake up
//! the moment a command changes it (a held link is released, a dropped link resets its connections).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A node (region) id as the harness numbers them: 1, 2, 3. Id 0 stands for "outside the cluster".
pub type NodeId = u64;

/// What a link does with the traffic that crosses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// Delivered after the link's delay.
    #[default]
    Up,
    /// UDP datagrams are lost; TCP connections carrying this direction are reset and new ones refused
    /// (TCP cannot lose bytes silently, so a lossy link is a broken connection).
    Drop,
    /// Traffic is buffered and delivered, in order, once the link is healed.
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkState {
    pub mode: LinkMode,
    /// One-way delay every byte and datagram gets at least.
    pub delay_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per TCP chunk or datagram.
    pub jitter_ms: u64,
}

impl LinkState {
    pub fn up(delay_ms: u64, jitter_ms: u64) -> LinkState {
        LinkState { mode: LinkMode::Up, delay_ms, jitter_ms }
    }

    /// This chunk's one-way delay: `delay_ms` plus a uniform sample of the jitter.
    pub fn sample_delay(&self) -> Duration {
        let jitter = if self.jitter_ms == 0 { 0 } else { rand::rng().random_range(0..=self.jitter_ms) };
        Duration::from_millis(self.delay_ms + jitter)
    }

    pub fn is_broken(&self) -> bool {
        self.mode == LinkMode::Drop
    }
}

type LinkTable = BTreeMap<(NodeId, NodeId), watch::Sender<LinkState>>;

/// All directed links, created on first use with the default state.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Mutex<LinkTable>>,
    default_state: LinkState,
}

impl Links {
    pub fn new(default_delay_ms: u64, default_jitter_ms: u64) -> Links {
        Links { inner: Arc::default(), default_state: LinkState::up(default_delay_ms, default_jitter_ms) }
    }

    fn with_sender<T>(&self, from: NodeId, to: NodeId, f: impl FnOnce(&watch::Sender<LinkState>) -> T) -> T {
        let mut links = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sender = links.entry((from, to)).or_insert_with(|| watch::channel(self.default_state).0);
        f(sender)
    }

    /// A receiver following link `from → to`.
    pub fn watch(&self, from: NodeId, to: NodeId) -> watch::Receiver<LinkState> {
        self.with_sender(from, to, |sender| sender.subscribe())
    }

    pub fn get(&self, from: NodeId, to: NodeId) -> LinkState {
        self.with_sender(from, to, |sender| *sender.borrow())
    }

    pub fn update(&self, from: NodeId, to: NodeId, change: impl FnOnce(&mut LinkState)) {
        self.with_sender(from, to, |sender| {
            sender.send_modify(change);
        });
    }

    pub fn set_mode(&self, from: NodeId, to: NodeId, mode: LinkMode) {
        self.update(from, to, |state| state.mode = mode);
    }

    /// Every link that exists so far (any link that carried traffic or got a command).
    pub fn snapshot(&self) -> Vec<((NodeId, NodeId), LinkState)> {
        let links = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        links.iter().map(|(key, sender)| (*key, *sender.borrow())).collect()
    }

    /// Heals every link: all back to `Up`, held traffic released.
    pub fn heal_all(&self) {
        let links = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for sender in links.values() {
            sender.send_modify(|state| state.mode = LinkMode::Up);
        }
    }
}

/// Waits until the link lets traffic through. `Ok(())` when it is up, `Err(())` when it is (or becomes)
/// dropped: the caller discards the datagram or resets the connection. Holds wait for the next change.
pub async fn wait_passable(link: &mut watch::Receiver<LinkState>) -> Result<(), ()> {
    loop {
        let mode = link.borrow_and_update().mode;
        match mode {
            LinkMode::Up => return Ok(()),
            LinkMode::Drop => return Err(()),
            LinkMode::Hold => {
                if link.changed().await.is_err() {
                    return Err(());
                }
            }
        }
    }
}

/// Resolves once the link is dropped (never while it is up or held).
pub async fn wait_broken(mut link: watch::Receiver<LinkState>) {
    loop {
        if link.borrow_and_update().is_broken() {
            return;
        }
        if link.changed().await.is_err() {
            // The link table is gone: the proxy is shutting down. Never resolve; the task is aborted.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_adds_delay() {
        let state = LinkState::up(25, 5);
        for _ in 0..200 {
            let delay = state.sample_delay();
            assert!(delay >= Duration::from_millis(25) && delay <= Duration::from_millis(30), "{delay:?}");
        }
    }

    #[tokio::test]
    async fn hold_waits_for_heal_and_drop_fails() {
        let links = Links::new(0, 0);
        let mut link = links.watch(1, 2);
        links.set_mode(1, 2, LinkMode::Hold);
        let waiter = tokio::spawn(async move { wait_passable(&mut link).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        links.heal_all();
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        links.set_mode(1, 2, LinkMode::Drop);
        let mut link = links.watch(1, 2);
        assert_eq!(wait_passable(&mut link).await, Err(()));
        assert_eq!(links.get(2, 1).mode, LinkMode::Up, "links are directed");
    }
}
