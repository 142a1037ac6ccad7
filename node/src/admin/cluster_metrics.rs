//! The `/metrics` series about the control plane: Raft (term, leader, log and applied index, replication
//! lag per follower on the leader, proposals by result and their latency) and budgets (per scope: limit,
//! use and what nodes hold in the current period, as the replicated ledger has them; the allowance this node
//! holds; refusals by org and reason). They match what `GET /admin/v1/cluster` and `GET /admin/v1/budgets`
//! answer (the budget figures read this node's applied state, not a linearizable read).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::gateway::Gateway;
use crate::metrics::escape_label;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn render(gateway: &Gateway, out: &mut String) {
    let Some(consensus) = &gateway.consensus else { return };
    let raft = consensus.raft().metrics().borrow().clone();
    header(out, "tollgate_raft_term", "gauge", "The Raft term this node is in.");
    let _ = writeln!(out, "tollgate_raft_term {}", raft.current_term);
    header(out, "tollgate_raft_leader", "gauge", "The node id this node takes for the leader (0: none known).");
    let _ = writeln!(out, "tollgate_raft_leader {}", raft.current_leader.unwrap_or(0));
    header(out, "tollgate_raft_is_leader", "gauge", "1 on the leader.");
    let _ = writeln!(out, "tollgate_raft_is_leader {}", u8::from(raft.current_leader == Some(consensus.id())));
    header(out, "tollgate_raft_last_log_index", "gauge", "The index of this node's last log entry.");
    let _ = writeln!(out, "tollgate_raft_last_log_index {}", raft.last_log_index.unwrap_or(0));
    header(out, "tollgate_raft_applied_index", "gauge", "The index of the last entry this node applied.");
    let _ = writeln!(out, "tollgate_raft_applied_index {}", raft.last_applied.map_or(0, |log_id| log_id.index));
    header(out, "tollgate_raft_members", "gauge", "Voters and learners in the membership.");
    let _ = writeln!(out, "tollgate_raft_members {}", raft.membership_config.membership().nodes().count());
    if let Some(replication) = &raft.replication {
        header(out, "tollgate_raft_replication_lag", "gauge", "Entries each follower is behind the leader's log.");
        let last = raft.last_log_index.unwrap_or(0);
        for (peer, matched) in replication {
            let lag = last.saturating_sub(matched.map_or(0, |log_id| log_id.index));
            let _ = writeln!(out, "tollgate_raft_replication_lag{{peer=\"{peer}\"}} {lag}");
        }
    }
    let proposals = consensus.proposal_stats();
    header(out, "tollgate_raft_proposals_total", "counter", "Writes proposed through this node, by result.");
    for (result, counter) in
        [("applied", &proposals.applied), ("rejected", &proposals.rejected), ("failed", &proposals.failed)]
    {
        let _ =
            writeln!(out, "tollgate_raft_proposals_total{{result=\"{result}\"}} {}", counter.load(Ordering::Relaxed));
    }
    header(out, "tollgate_raft_proposal_seconds_sum", "counter", "Time the proposals took until answered.");
    let _ =
        writeln!(out, "tollgate_raft_proposal_seconds_sum {}", proposals.micros.load(Ordering::Relaxed) as f64 / 1e6);
    render_budgets(gateway, consensus, out);
}

fn render_budgets(gateway: &Gateway, consensus: &tollgate_consensus::ConsensusNode, out: &mut String) {
    let state = consensus.current();
    let now = consensus.now_ms();
    let budgets = gateway.snapshot().budgets.clone();
    let mut ids: Vec<&String> = budgets.keys().collect();
    ids.sort();
    header(out, "tollgate_budget_limit", "gauge", "Each budget's limit in its unit (tokens or micro-USD).");
    let mut used_lines = String::new();
    let mut held_lines = String::new();
    for id in ids {
        let spec = &budgets[id];
        let period_start = spec.period.start_ms(now);
        let account = state.config.ledger.accounts.get(id).and_then(|accounts| accounts.get(&period_start));
        let used = account.map_or(0, |a| a.used_total());
        let held = account.map_or(0, |a| a.outstanding()).saturating_sub(used);
        let scope = escape_label(id);
        let _ = writeln!(out, "tollgate_budget_limit{{scope=\"{scope}\"}} {}", spec.limit_units().unwrap_or(0));
        let _ = writeln!(used_lines, "tollgate_budget_used{{scope=\"{scope}\"}} {used}");
        let _ = writeln!(held_lines, "tollgate_budget_held{{scope=\"{scope}\"}} {held}");
    }
    header(out, "tollgate_budget_used", "gauge", "Use reported to the ledger in the current period.");
    out.push_str(&used_lines);
    header(
        out,
        "tollgate_budget_held",
        "gauge",
        "Granted to nodes in the current period and not yet used or returned.",
    );
    out.push_str(&held_lines);
    if let Some(budget) = &gateway.budget {
        header(out, "tollgate_budget_node_allowance", "gauge", "Allowance this node holds unreserved, per scope.");
        let mut local = budget.local_allowance();
        local.sort();
        for (scope, available) in local {
            let _ = writeln!(out, "tollgate_budget_node_allowance{{scope=\"{}\"}} {available}", escape_label(&scope));
        }
    }
    gateway.metrics.render_budget_refusals(out);
}
