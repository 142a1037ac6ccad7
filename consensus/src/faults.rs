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
    pub struct Faults(Arc<RwLock<HashSet<String>>>);

    impl Faults {
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
    }
}

pub use enabled::Faults;
