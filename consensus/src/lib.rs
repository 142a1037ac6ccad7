//! Tollgate's control plane: the replicated state machine (providers, models, orgs, teams, keys, audit
//! trail), stored in sled and replicated with openraft over tonic.
//!
//! Split the openraft way: `state` (pure apply), `store` (sled log and state machine storage), `network`
//! (Raft RPC client and server over tonic), and `node` (the handle the gateway uses).

pub mod auth;
pub mod clock;
pub mod command;
pub mod faults;
pub mod identity;
pub mod ledger;
pub mod member;
pub mod network;
pub mod node;
pub mod raft_service;
pub mod resources;
pub mod state;
pub mod store;
pub mod tls;
pub mod trace;
pub mod types;
pub mod usage;
pub mod wire;

pub use auth::ClusterAuth;
pub use ledger::{BudgetSpec, Period, Scope};
pub use node::{
    ClusterError, ClusterStatus, ConsensusConfig, ConsensusNode, MemberStatus, ProposalStats, PROPOSAL_BUCKETS_SECONDS,
};
pub use state::{Command, ControlState, Request, Response};
pub use types::{NodeId, NodeInfo, TypeConfig};
pub use usage::{UsageKey, UsageTotals};
