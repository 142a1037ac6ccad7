//! A node announces its addresses and its data dir's id in the replicated state (`RegisterNode`), so
//! `status` can show every node's listeners and peers can tell a wiped data dir (see `identity`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ClusterError, ConsensusNode};
use crate::state::{Command, Request, Response};

impl ConsensusNode {
    /// Announces this node's addresses in the replicated state (so `status` can show every node's API and
    /// admin listeners), retrying until a leader accepts it. The request id is derived from the addresses,
    /// so re-announcing unchanged addresses is a no-op.
    pub(super) fn spawn_registration(&self) {
        // Weak: this task must not keep a stopped node's storage (and its sled lock) alive.
        let weak = Arc::downgrade(&self.inner);
        let id = self.id();
        let info = self.inner.config.advertise.clone();
        let data_dir = self.inner.identity.data_dir_id().to_owned();
        tokio::spawn(async move {
            // Part of the request id: a retry after a refusal is a new request, not the refused one again.
            let mut refusals = 0u32;
            loop {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let node = ConsensusNode { inner, server: Arc::new(Mutex::new(None)) };
                let current = node.current();
                if current.config.nodes.get(&id) == Some(&info) && current.config.data_dirs.get(&id) == Some(&data_dir)
                {
                    return;
                }
                let request = Request {
                    request_id: format!(
                        "register-{id}-{}-{}-{}-{data_dir}-{refusals}",
                        info.raft_addr, info.api_addr, info.admin_addr
                    ),
                    actor: format!("node-{id}"),
                    at_ms: 0,
                    command: Command::RegisterNode { id, info: info.clone(), data_dir: Some(data_dir.clone()) },
                };
                match node.write(request).await {
                    // A replaced data dir: refused until the node is removed and added back; asked again
                    // now and then so that, once it has been, it registers without a restart.
                    Ok(Response::Rejected { reason }) => {
                        tracing::error!("{reason}");
                        if let Ok(mut refusal) = node.inner.rejoin_refusal.lock() {
                            *refusal = Some(reason);
                        }
                        refusals += 1;
                        drop(node);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok(_) => {
                        if let Ok(mut refusal) = node.inner.rejoin_refusal.lock() {
                            *refusal = None;
                        }
                        return;
                    }
                    Err(ClusterError::Internal(reason)) if reason.contains("stopped") => return,
                    Err(_) => {
                        drop(node);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
    }
}
