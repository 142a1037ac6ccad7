//! Tollgate's control plane (openraft + sled): the replicated state machine for providers, models, routes,
//! keys, orgs/teams, budgets and the token-budget ledger. Not built yet — the data plane reads its control
//! state through `tollgate::routing::ControlSnapshot` and the `tollgate::auth::KeyStore` trait, which this
//! crate will feed from Raft's applied state.
