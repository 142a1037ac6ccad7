//! Links cut on purpose, for in-process fault-injection tests: every outbound RPC (Raft and cluster
//! service) to a blocked peer address fails as unreachable, as if the network dropped it. Cutting both
//! directions of a link (each side blocks the other) is a network partition.
//!
//! Only with the `fault-injection` cargo feature (the test crate enables it); product builds get an empty
//! `Faults` whose check is a constant `false`, so no test hook sits in the Raft network. The chaos harness
//! (`jepsen/`) breaks real processes from outside instead (link proxy, signals, namespaces).

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::collections::HashSet;
    use std::sync::{Arc, RwLock};

    #[derive(Clone, Default, Debug)]
    pub struct Faults(Arc<RwLock<HashSet<String>>>, Arc<std::sync::atomic::AtomicU64>);

    impl Faults {
        /// Drops (as unreachable) every AppendEntries carrying a uniform membership whose voters include
        /// `voter` (0: none): a leader then commits the joint step of adding `voter` and never the second
        /// one, as if it died in between.
        pub fn hold_uniform_membership_with(&self, voter: u64) {
            self.1.store(voter, std::sync::atomic::Ordering::SeqCst);
        }

        pub fn holds(&self, entries: &[crate::types::Entry]) -> bool {
            let voter = self.1.load(std::sync::atomic::Ordering::SeqCst);
            voter != 0
                && entries.iter().any(|entry| match &entry.payload {
                    openraft::EntryPayload::Membership(membership) => {
                        membership.get_joint_config().len() == 1 && membership.voter_ids().any(|id| id == voter)
                    }
                    _ => false,
                })
        }

        pub fn block(&self, raft_addr: &str) {
            self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(raft_addr.to_owned());
        }

        pub fn heal(&self) {
            self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        }

        pub fn is_blocked(&self, raft_addr: &str) -> bool {
            let blocked = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            !blocked.is_empty() && blocked.contains(raft_addr)
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod enabled {
    /// Without the `fault-injection` feature: nothing is ever blocked.
    #[derive(Clone, Default, Debug)]
    pub struct Faults {
        _private: (),
    }

    impl Faults {
        #[inline(always)]
        pub fn is_blocked(&self, _raft_addr: &str) -> bool {
            false
        }

        #[inline(always)]
        pub fn holds(&self, _entries: &[crate::types::Entry]) -> bool {
            false
        }
    }
}

pub use enabled::Faults;
