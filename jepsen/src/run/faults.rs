//! Applies the nemesis schedule to the running regions: link proxy commands for partitions, signals for
//! kills and pauses, a restart on the node's own data directory after a kill.

use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;

use super::app_faults;
use super::nemesis::{flap_interval, Kind, Planned};
use super::workers::Shared;
use crate::history::{History, OpType};
use crate::http;
use crate::linkproxy::control::{self, Command};
use crate::regions::{self, procs, state::RegionsState, NODE_MARKER};

/// A fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub kind: Kind,
    pub start_ms: f64,
    pub end_ms: f64,
    pub target: String,
    /// Errors applying or undoing it (the run goes on; the report shows them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub struct Nemesis {
    pub state: RegionsState,
    pub token: String,
    pub history: History,
    /// What the clients share (mocks, the retry switch, the orgs).
    pub shared: Shared,
    /// The node currently running with a skewed clock, if any.
    pub skewed: Option<u64>,
    /// When the budget period rolls over (ms since the workload started), in period-rollover runs.
    pub boundary_at_ms: Option<f64>,
}

/// The leader most regions name (`None` when no majority answers).
pub async fn leader(state: &RegionsState, token: &str) -> Option<u64> {
    let mut votes: Vec<u64> = Vec::new();
    for node in &state.nodes {
        let url = format!("{}/admin/v1/cluster", node.admin_url);
        if let Ok(cluster) = http::request("GET", &url, Some(token), None, Duration::from_secs(1)).await {
            if let Some(leader) = cluster.json().ok().and_then(|value| value["leader"].as_u64()) {
                votes.push(leader);
            }
        }
    }
    let majority = state.nodes.len() / 2 + 1;
    votes.iter().copied().find(|candidate| votes.iter().filter(|vote| *vote == candidate).count() >= majority)
}

pub(super) fn note(errors: &mut Vec<String>, result: anyhow::Result<()>) {
    if let Err(err) = result {
        errors.push(format!("{err:#}"));
    }
}

impl Nemesis {
    pub(super) fn record(&self, f: &str, value: serde_json::Value) {
        self.history.record("nemesis", OpType::Info, f, value);
    }

    async fn link(&self, command: Command) -> anyhow::Result<()> {
        control::send(&self.state.control_socket, &command).await.map(|_| ())
    }

    /// The leader (or, when none is known, a node drawn from `choice`) if `want_leader`, else a follower.
    pub(super) async fn pick_node(&self, want_leader: bool, choice: u64) -> u64 {
        let ids: Vec<u64> = self.state.nodes.iter().map(|node| node.id).collect();
        let leader = leader(&self.state, &self.token).await;
        let candidates: Vec<u64> = match (want_leader, leader) {
            (true, Some(leader)) => vec![leader],
            (false, Some(leader)) => ids.iter().copied().filter(|id| *id != leader).collect(),
            (_, None) => ids,
        };
        candidates[(choice % candidates.len() as u64) as usize]
    }

    fn index_of(&self, node: u64) -> anyhow::Result<usize> {
        self.state.nodes.iter().position(|record| record.id == node).with_context(|| format!("no node {node}"))
    }

    fn pid_of(&self, node: u64) -> anyhow::Result<u32> {
        let index = self.index_of(node)?;
        self.state.nodes[index].pid.with_context(|| format!("node {node} has no recorded pid"))
    }

    pub(super) async fn kill(&mut self, node: u64) -> anyhow::Result<()> {
        let pid = self.pid_of(node)?;
        if !procs::is_ours(pid, NODE_MARKER) {
            anyhow::bail!("node {node} (pid {pid}) is not running");
        }
        procs::kill(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while procs::cmdline(pid).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub(super) fn restart(&mut self, node: u64) -> anyhow::Result<u32> {
        let index = self.index_of(node)?;
        regions::spawn_node(&mut self.state, index)
    }

    /// Makes `node` the leader: waits until it is ready, then, while another node leads, isolates that
    /// one until the other two elect a leader among themselves, and heals (a coin flip each time; up to
    /// 5 tries). Returns whether `node` leads, and the nodes isolated on the way.
    async fn make_leader(&mut self, node: u64) -> (bool, Vec<u64>) {
        let admin = self.state.nodes.iter().find(|record| record.id == node).map(|record| record.admin_url.clone());
        let ready_by = Instant::now() + Duration::from_secs(15);
        while let Some(admin) = &admin {
            let ready = http::request("GET", &format!("{admin}/readyz"), None, None, Duration::from_secs(1)).await;
            if matches!(ready, Ok(response) if response.status == 200) || Instant::now() > ready_by {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut isolated = Vec::new();
        for _ in 0..5 {
            let Some(current) = leader(&self.state, &self.token).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            if current == node {
                return (true, isolated);
            }
            isolated.push(current);
            self.record("isolate-to-elect", json!({"isolate": current, "want_leader": node}));
            if let Err(err) = self.link(Command::Isolate { node: current }).await {
                tracing::warn!("isolating {current}: {err:#}");
            }
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                if leader(&self.state, &self.token).await.is_some_and(|new| new != current) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(err) = self.link(Command::Heal { a: None, b: None }).await {
                tracing::warn!("healing: {err:#}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (leader(&self.state, &self.token).await == Some(node), isolated)
    }

    /// Runs the whole schedule, then heals everything; returns what was applied.
    pub async fn run(&mut self, plan: &[Planned], started: Instant) -> Vec<Applied> {
        let mut applied = Vec::new();
        for planned in plan {
            let at = started + Duration::from_secs_f64(planned.start_s);
            tokio::time::sleep_until(at.into()).await;
            applied.push(self.apply(planned).await);
        }
        applied
    }

    async fn apply(&mut self, planned: &Planned) -> Applied {
        let start_ms = self.history.elapsed_ms();
        let window = Duration::from_secs_f64(planned.duration_s);
        let end = Instant::now() + window;
        let mut errors = Vec::new();
        let target = match planned.kind {
            Kind::PartitionLeader | Kind::PartitionFollower => {
                let node = self.pick_node(planned.kind == Kind::PartitionLeader, planned.choice).await;
                self.record("start", json!({"kind": planned.kind, "isolate": node}));
                note(&mut errors, self.link(Command::Isolate { node }).await);
                tokio::time::sleep_until(end.into()).await;
                note(&mut errors, self.link(Command::Heal { a: None, b: None }).await);
                format!("isolate region {node}")
            }
            Kind::CutLink => {
                let pairs = [(1, 2), (1, 3), (2, 3)];
                let (a, b) = pairs[(planned.choice % 3) as usize];
                self.record("start", json!({"kind": planned.kind, "cut": [a, b]}));
                note(&mut errors, self.link(Command::Cut { a, b }).await);
                tokio::time::sleep_until(end.into()).await;
                note(&mut errors, self.link(Command::Heal { a: Some(a), b: Some(b) }).await);
                format!("cut link {a}-{b}")
            }
            Kind::Kill => {
                let node = self.pick_node(planned.choice % 2 == 0, planned.choice / 2).await;
                self.record("start", json!({"kind": planned.kind, "kill": node}));
                note(&mut errors, self.kill(node).await);
                tokio::time::sleep_until(end.into()).await;
                let restarted = self.restart(node);
                let pid = restarted.as_ref().ok().copied();
                note(&mut errors, restarted.map(|_| ()));
                self.record("restart", json!({"node": node, "pid": pid}));
                format!("kill -9 node {node}, restarted after {:.1} s", planned.duration_s)
            }
            Kind::SlowDisk => self.slow_disk(planned, end, &mut errors).await,
            Kind::KillLeaderGranting => self.kill_leader_granting(planned, end, &mut errors).await,
            Kind::Pause => {
                let node = self.pick_node(planned.choice % 2 == 0, planned.choice / 2).await;
                self.record("start", json!({"kind": planned.kind, "pause": node}));
                let pid = self.pid_of(node);
                match &pid {
                    Ok(pid) if procs::pause(*pid, NODE_MARKER, true) => {}
                    Ok(pid) => errors.push(format!("node {node} (pid {pid}) is not running")),
                    Err(err) => errors.push(format!("{err:#}")),
                }
                tokio::time::sleep_until(end.into()).await;
                if let Ok(pid) = pid {
                    procs::pause(pid, NODE_MARKER, false);
                }
                format!("SIGSTOP node {node} for {:.1} s", planned.duration_s)
            }
            Kind::Flap => {
                let mut rng = StdRng::seed_from_u64(planned.choice);
                let mut flaps = Vec::new();
                self.record("start", json!({"kind": planned.kind}));
                while Instant::now() < end {
                    let node = rng.random_range(1..=3u64);
                    flaps.push(node);
                    note(&mut errors, self.link(Command::Isolate { node }).await);
                    tokio::time::sleep(flap_interval(&mut rng).min(end.saturating_duration_since(Instant::now())))
                        .await;
                    note(&mut errors, self.link(Command::Heal { a: None, b: None }).await);
                    tokio::time::sleep(flap_interval(&mut rng).min(end.saturating_duration_since(Instant::now())))
                        .await;
                }
                format!("flap: isolated regions {flaps:?} in turn")
            }
            Kind::Bridge => {
                let leader = leader(&self.state, &self.token).await;
                let (a, b) = match leader {
                    Some(leader) => {
                        let others: Vec<u64> = (1..=3u64).filter(|id| *id != leader).collect();
                        (leader, others[(planned.choice % 2) as usize])
                    }
                    None => [(1, 2), (1, 3), (2, 3)][(planned.choice % 3) as usize],
                };
                let bridge = (1..=3u64).find(|id| *id != a && *id != b).unwrap_or(3);
                self.record("start", json!({"kind": planned.kind, "cut": [a, b], "bridge": bridge, "leader": leader}));
                note(&mut errors, self.link(Command::Cut { a, b }).await);
                tokio::time::sleep_until(end.into()).await;
                note(&mut errors, self.link(Command::Heal { a: Some(a), b: Some(b) }).await);
                format!("cut link {a}-{b} (leader then: {leader:?}); region {bridge} sees both sides")
            }
            Kind::ClockSkew => {
                let skew = app_faults::skew_for(planned.choice);
                // Half the time the leader: restarted with the skew (so it is a follower for a moment),
                // then made leader again by isolating whoever leads instead.
                let want_leader = (planned.choice >> 16) % 2 == 0;
                let node = self.pick_node(want_leader, planned.choice / 4).await;
                let role = if want_leader { "the leader" } else { "a follower" };
                self.record("start", json!({"kind": planned.kind, "node": node, "skew_ms": skew, "role": role}));
                let restarted = app_faults::restart_with_skew(&mut self.state, node, Some(skew)).await;
                self.record("restart", json!({"node": node, "skew_ms": skew, "pid": restarted.as_ref().ok()}));
                note(&mut errors, restarted.map(|_| ()));
                self.skewed = Some(node);
                let mut how = String::new();
                let end = if want_leader {
                    let (leads, isolated) = self.make_leader(node).await;
                    how = if leads {
                        format!(", made leader (isolating {isolated:?} in turn)")
                    } else {
                        errors.push(format!("node {node} did not become leader (isolated {isolated:?} in turn)"));
                        format!(", but it did not become leader (isolated {isolated:?} in turn)")
                    };
                    // The window counts from when it leads.
                    Instant::now() + window
                } else {
                    end
                };
                tokio::time::sleep_until(end.into()).await;
                let led = leader(&self.state, &self.token).await == Some(node);
                let restarted = app_faults::restart_with_skew(&mut self.state, node, None).await;
                self.record("restart", json!({"node": node, "skew_ms": 0, "pid": restarted.as_ref().ok()}));
                note(&mut errors, restarted.map(|_| ()));
                self.skewed = None;
                format!(
                    "node {node} ({role}) ran with clock skew {skew} ms for {:.1} s{how}{}",
                    planned.duration_s,
                    if led { "; it led at the end of the window" } else { "; it did not lead at the end" }
                )
            }
            Kind::PeriodRollover => {
                let leader_wanted = planned.choice % 2 == 0;
                let node = self.pick_node(leader_wanted, planned.choice / 2).await;
                let role = if leader_wanted { "the leader" } else { "a follower" };
                self.record(
                    "start",
                    json!({"kind": planned.kind, "isolate": node, "role": role, "boundary_at_ms": self.boundary_at_ms}),
                );
                note(&mut errors, self.link(Command::Isolate { node }).await);
                tokio::time::sleep_until(end.into()).await;
                note(&mut errors, self.link(Command::Heal { a: None, b: None }).await);
                let inside = self.boundary_at_ms.is_some_and(|at| start_ms <= at && at <= self.history.elapsed_ms());
                let at = self.boundary_at_ms.map_or("-".to_owned(), |at| format!("{:.1} s", at / 1000.0));
                if !inside {
                    errors.push(format!("the period boundary ({at}) fell outside this window"));
                }
                format!("isolate region {node} ({role}) across the period boundary at {at}")
            }
            Kind::BudgetLower => {
                self.record("start", json!({"kind": planned.kind}));
                let lowered = app_faults::lower_budget(&self.shared, "acme", planned.choice).await;
                let target = match lowered {
                    Ok(target) => target,
                    Err(err) => {
                        errors.push(format!("{err:#}"));
                        "acme: not lowered".to_owned()
                    }
                };
                tokio::time::sleep_until(end.into()).await;
                target
            }
            Kind::UpstreamFaults => {
                self.record("start", json!({"kind": planned.kind}));
                app_faults::upstream_faults(&self.shared, planned.choice, end).await
            }
            Kind::IdempotentRetry => {
                self.record("start", json!({"kind": planned.kind}));
                app_faults::idempotent_retry(&self.shared, planned.choice, end).await
            }
        };
        let end_ms = self.history.elapsed_ms();
        self.record("stop", json!({"kind": planned.kind, "target": target, "errors": errors}));
        Applied { kind: planned.kind, start_ms, end_ms, target, errors }
    }

    /// Every link up, every paused node continued, every dead node restarted.
    pub async fn heal_everything(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(err) = self.link(Command::Heal { a: None, b: None }).await {
            errors.push(format!("{err:#}"));
        }
        app_faults::restore_upstreams(&self.shared);
        self.clear_slow_disks();
        self.shared.retry.on.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut restarted = Vec::new();
        if let Some(node) = self.skewed.take() {
            match app_faults::restart_with_skew(&mut self.state, node, None).await {
                Ok(_) => restarted.push(node),
                Err(err) => errors.push(format!("restarting node {node} without skew: {err:#}")),
            }
        }
        let ids: Vec<u64> = self.state.nodes.iter().map(|node| node.id).collect();
        for node in ids {
            match self.pid_of(node) {
                Ok(pid) if procs::is_ours(pid, NODE_MARKER) => {
                    procs::pause(pid, NODE_MARKER, false);
                }
                _ => match self.restart(node) {
                    Ok(_) => restarted.push(node),
                    Err(err) => errors.push(format!("restarting node {node}: {err:#}")),
                },
            }
        }
        self.record("heal", json!({"restarted": restarted, "errors": errors}));
        errors
    }
}
