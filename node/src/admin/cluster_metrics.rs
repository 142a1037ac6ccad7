//! The `/metrics` series about the control plane: Raft (term, leader, log and applied index, replication
//! lag per follower on the leader, proposals by result and their latency) and budgets (per scope: limit,
//! use and what nodes hold in the current period, as the replicated ledger has them; the allowance this node
//! holds; refusals by org and reason are counted in `Metrics`). They match what `GET /admin/v1/cluster` and `GET /admin/v1/budgets`
//! answer (the budget figures read this node's applied state, not a linearizable read).

use std::sync::atomic::Ordering;

use crate::gateway::Gateway;
use crate::metrics::{Snapshot, Value};

pub fn collect(gateway: &Gateway, snapshot: &mut Snapshot) {
    let Some(consensus) = &gateway.consensus else { return };
    let raft = consensus.raft().metrics().borrow().clone();
    snapshot.gauge("tollgate_raft_term", "The Raft term this node is in.").sample(&[], raft.current_term);
    snapshot
        .gauge("tollgate_raft_leader", "The node id this node takes for the leader (0: none known).")
        .sample(&[], raft.current_leader.unwrap_or(0));
    snapshot
        .gauge("tollgate_raft_is_leader", "1 on the leader.")
        .sample(&[], raft.current_leader == Some(consensus.id()));
    snapshot
        .gauge("tollgate_raft_last_log_index", "The index of this node's last log entry.")
        .sample(&[], raft.last_log_index.unwrap_or(0));
    snapshot
        .gauge("tollgate_raft_applied_index", "The index of the last entry this node applied.")
        .sample(&[], raft.last_applied.map_or(0, |log_id| log_id.index));
    snapshot
        .gauge("tollgate_raft_snapshot_index", "The last log index in this node's latest snapshot.")
        .sample(&[], raft.snapshot.map_or(0, |log_id| log_id.index));
    snapshot
        .gauge("tollgate_raft_members", "Voters and learners in the membership.")
        .sample(&[], raft.membership_config.membership().nodes().count());
    if let Some(replication) = &raft.replication {
        let lag = snapshot.gauge("tollgate_raft_replication_lag", "Entries each follower is behind the leader's log.");
        let last = raft.last_log_index.unwrap_or(0);
        for (peer, matched) in replication {
            let behind = last.saturating_sub(matched.map_or(0, |log_id| log_id.index));
            lag.sample(&[("peer", &peer.to_string())], behind);
        }
        let matched = |id: &u64| replication.get(id).copied().flatten().map_or(0, |log_id| log_id.index);
        let configs = raft.membership_config.membership().get_joint_config();
        snapshot
            .gauge(
                "tollgate_raft_committed_index",
                "On the leader: the highest log index a majority of the voters (of both configurations while joint) holds.",
            )
            .sample(&[], quorum_index(configs.iter().map(|voters| voters.iter().map(matched).collect())));
    }
    let proposals = consensus.proposal_stats();
    // Buckets before counts: a proposal is counted before it is bucketed, so no bucket exceeds the count.
    let buckets: Vec<(f64, u64)> = tollgate_consensus::PROPOSAL_BUCKETS_SECONDS
        .iter()
        .zip(&proposals.latency_buckets)
        .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
        .collect();
    let (applied, rejected, failed) = (
        proposals.applied.load(Ordering::Relaxed),
        proposals.rejected.load(Ordering::Relaxed),
        proposals.failed.load(Ordering::Relaxed),
    );
    snapshot
        .counter("tollgate_raft_proposals", "Writes proposed through this node, by result.")
        .sample(&[("result", "applied")], applied)
        .sample(&[("result", "rejected")], rejected)
        .sample(&[("result", "failed")], failed);
    let latency = Value::Histogram {
        sum: proposals.micros.load(Ordering::Relaxed) as f64 / 1e6,
        count: applied + rejected + failed,
        buckets,
    };
    snapshot
        .histogram("tollgate_raft_proposal_seconds", "Time the proposals through this node took until answered.")
        .sample(&[], latency);
    collect_budgets(gateway, consensus, snapshot);
}

/// The highest index held by a majority of every configuration's voters: for each, the median-from-the-top
/// of what they hold; the smallest of those.
fn quorum_index(configs: impl Iterator<Item = Vec<u64>>) -> u64 {
    configs
        .filter(|held| !held.is_empty())
        .map(|mut held| {
            held.sort_unstable_by(|a, b| b.cmp(a));
            held[held.len() / 2]
        })
        .min()
        .unwrap_or(0)
}

fn collect_budgets(gateway: &Gateway, consensus: &tollgate_consensus::ConsensusNode, snapshot: &mut Snapshot) {
    let state = consensus.current();
    let now = consensus.now_ms();
    let budgets = gateway.snapshot().budgets.clone();
    let mut ids: Vec<&String> = budgets.keys().collect();
    ids.sort();
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let spec = &budgets[id];
        let period_start = spec.period.start_ms(now);
        let account = state.config.ledger.accounts.get(id).and_then(|accounts| accounts.get(&period_start));
        let used = account.map_or(0, |a| a.used_total());
        let held = account.map_or(0, |a| a.outstanding()).saturating_sub(used);
        rows.push((id.as_str(), spec.limit_units().unwrap_or(0), used, held));
    }
    let limit = snapshot.gauge("tollgate_budget_limit", "Each budget's limit in its unit (tokens or micro-USD).");
    for (scope, value, _, _) in &rows {
        limit.sample(&[("scope", scope)], *value);
    }
    let used = snapshot.gauge("tollgate_budget_used", "Use reported to the ledger in the current period.");
    for (scope, _, value, _) in &rows {
        used.sample(&[("scope", scope)], *value);
    }
    let held =
        snapshot.gauge("tollgate_budget_held", "Granted to nodes in the current period and not yet used or returned.");
    for (scope, _, _, value) in &rows {
        held.sample(&[("scope", scope)], *value);
    }
    if let Some(budget) = &gateway.budget {
        let mut local = budget.local_allowance();
        local.sort();
        let allowance =
            snapshot.gauge("tollgate_budget_node_allowance", "Allowance this node holds unreserved, per scope.");
        for (scope, available) in local {
            allowance.sample(&[("scope", &scope)], available);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quorum_index;

    #[test]
    fn the_committed_index_is_what_a_majority_of_every_configuration_holds() {
        assert_eq!(quorum_index([vec![10, 7, 3]].into_iter()), 7);
        assert_eq!(quorum_index([vec![10, 7, 3, 2]].into_iter()), 3, "two of four is not a majority");
        assert_eq!(quorum_index([vec![9]].into_iter()), 9);
        assert_eq!(quorum_index([vec![10, 7, 3], vec![10, 2, 1]].into_iter()), 2, "joint: both must agree");
        assert_eq!(quorum_index(std::iter::empty()), 0);
    }
}
