//! `jepsen measure`: WAN figures against running regions (issue 18) —
//! - chat: one chat completion per region (the data plane works everywhere);
//! - config propagation: a write on one region, then the time until each region shows it through its
//!   admin API (linearizable read) and until a key created there works on each region's data plane
//!   (the local applied snapshot, i.e. real replication to that region);
//! - failover: cut every link of the leader's region, then the time until both other regions agree on a
//!   new leader and until a write succeeds there; heal and wait for the old leader to rejoin.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::http;
use crate::linkproxy::control::{self, Command};
use crate::measure_budget;
use crate::regions::DirArg;
use crate::regions::{self, state::RegionsState};

#[derive(Args, Debug)]
pub struct MeasureArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Rounds of the config-propagation measurement (the writing region rotates).
    #[arg(long, default_value_t = 6)]
    pub rounds: u32,
    /// Leader failovers to provoke (0 to skip).
    #[arg(long, default_value_t = 3)]
    pub failovers: u32,
    /// Only the budget latency figure: this many budgeted and unbudgeted requests per region, alternating.
    #[arg(long)]
    pub latency: Option<u32>,
    /// Only the budget share figure: clients in all three regions draw on one budget of this many tokens.
    #[arg(long)]
    pub share: Option<u64>,
    /// Clients per region of `--share`.
    #[arg(long, default_value_t = 3)]
    pub share_clients: u32,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

struct Ctx {
    state: RegionsState,
    token: String,
}

pub async fn run(args: MeasureArgs) -> anyhow::Result<()> {
    let dir = args.dir.dir.canonicalize().unwrap_or(args.dir.dir.clone());
    let state = RegionsState::load(&dir)?.with_context(|| format!("no regions are up in {}", dir.display()))?;
    let token = regions::admin_token(&state)?;
    let ctx = Ctx { state, token };
    if args.latency.is_some() || args.share.is_some() {
        let leader = leader_seen_by(&ctx, &ctx.state.nodes[0].admin_url).await;
        let mut report = json!({"settings": ctx.state.settings, "leader": leader});
        if let Some(requests) = args.latency {
            report["latency"] = measure_budget::latency(&ctx.state, &ctx.token, requests, leader).await?;
        }
        if let Some(limit) = args.share {
            report["share"] = measure_budget::share(&ctx.state, &ctx.token, limit, args.share_clients).await?;
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("{}", path.display()))?;
        }
        return Ok(());
    }
    let chat = chat_each_region(&ctx).await?;
    let mut propagation = Vec::new();
    for round in 0..args.rounds {
        propagation.push(config_round(&ctx, round).await?);
    }
    let mut failovers = Vec::new();
    for round in 0..args.failovers {
        failovers.push(failover_round(&ctx, round).await?);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let report =
        json!({"settings": ctx.state.settings, "chat": chat, "propagation": propagation, "failover": failovers});
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("{}", path.display()))?;
    }
    Ok(())
}

async fn chat_each_region(ctx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello from jepsen"}]}).to_string();
    let mut out = Vec::new();
    for node in &ctx.state.nodes {
        let url = format!("{}/v1/chat/completions", node.api_url);
        let started = Instant::now();
        let response = http::request("POST", &url, Some(&ctx.state.key), Some(&body), TIMEOUT).await?;
        let elapsed = started.elapsed();
        if response.status != 200 {
            bail!("chat on region {} answered {}: {}", node.id, response.status, response.body);
        }
        let answer = response.json()?;
        eprintln!(
            "chat region {}: 200 in {:.1} ms, served by node {}: {}",
            node.id,
            ms(elapsed),
            response.header("x-tollgate-node").unwrap_or("?"),
            answer["choices"][0]["message"]["content"].as_str().unwrap_or("?")
        );
        out.push(
            json!({"region": node.id, "status": 200, "ms": ms(elapsed), "node": response.header("x-tollgate-node")}),
        );
    }
    Ok(json!(out))
}

/// Polls `url` until it answers `status` (GET with `bearer`); the time since `started`.
async fn wait_status(url: String, bearer: String, status: u16, started: Instant) -> anyhow::Result<Duration> {
    let deadline = started + Duration::from_secs(30);
    loop {
        if let Ok(response) = http::request("GET", &url, Some(&bearer), None, TIMEOUT).await {
            if response.status == status {
                return Ok(started.elapsed());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer {status} within 30 s");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn config_round(ctx: &Ctx, round: u32) -> anyhow::Result<serde_json::Value> {
    let nodes = &ctx.state.nodes;
    let writer = &nodes[round as usize % nodes.len()];
    let suffix = crate::regions::configs::random_token("");
    // 1. An org, read back through each region's admin API.
    let org = format!("probe-{round}-{}", &suffix[..8]);
    let started = Instant::now();
    let url = format!("{}/admin/v1/orgs/{org}", writer.admin_url);
    let response = http::request("PUT", &url, Some(&ctx.token), Some("{}"), TIMEOUT).await?;
    let org_ack = started.elapsed();
    if response.status != 200 {
        bail!("PUT {url} answered {}: {}", response.status, response.body);
    }
    let polls = nodes
        .iter()
        .map(|node| wait_status(format!("{}/admin/v1/orgs/{org}", node.admin_url), ctx.token.clone(), 200, started));
    let org_visible: Vec<f64> = join_all(polls).await?.into_iter().map(ms).collect();
    // 2. A key, used on each region's data plane (which reads only its local applied state).
    let started = Instant::now();
    let body = json!({"org": "demo", "name": format!("probe-{round}-{}", &suffix[8..16])}).to_string();
    let url = format!("{}/admin/v1/keys", writer.admin_url);
    let response = http::request("POST", &url, Some(&ctx.token), Some(&body), TIMEOUT).await?;
    let key_ack = started.elapsed();
    let created = response.json()?;
    let Some(key) = created["key"].as_str() else {
        bail!("POST {url} answered {} without a key: {}", response.status, response.body);
    };
    let polls =
        nodes.iter().map(|node| wait_status(format!("{}/v1/models", node.api_url), key.to_owned(), 200, started));
    let key_usable: Vec<f64> = join_all(polls).await?.into_iter().map(ms).collect();
    eprintln!(
        "config round {round} (written on region {}): org ack {:.1} ms, visible {:?} ms; key ack {:.1} ms, usable {:?} ms",
        writer.id,
        ms(org_ack),
        org_visible,
        ms(key_ack),
        key_usable
    );
    Ok(json!({"writer": writer.id, "org_ack_ms": ms(org_ack), "org_visible_ms": org_visible,
              "key_ack_ms": ms(key_ack), "key_usable_ms": key_usable}))
}

async fn join_all<F: std::future::Future<Output = anyhow::Result<Duration>> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> anyhow::Result<Vec<Duration>> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await??);
    }
    Ok(out)
}

async fn leader_seen_by(ctx: &Ctx, admin_url: &str) -> Option<u64> {
    let url = format!("{admin_url}/admin/v1/cluster");
    let response = http::request("GET", &url, Some(&ctx.token), None, Duration::from_secs(1)).await.ok()?;
    response.json().ok()?["leader"].as_u64()
}

async fn failover_round(ctx: &Ctx, round: u32) -> anyhow::Result<serde_json::Value> {
    let nodes = &ctx.state.nodes;
    let Some(old) = leader_seen_by(ctx, &nodes[0].admin_url).await else {
        bail!("region 1 knows no leader; is the cluster healthy? (`jepsen regions status`)");
    };
    let others: Vec<_> = nodes.iter().filter(|node| node.id != old).collect();
    control::send(&ctx.state.control_socket, &Command::Isolate { node: old }).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let (elected, new_leader) = loop {
        let mut seen = Vec::new();
        for node in &others {
            seen.push(leader_seen_by(ctx, &node.admin_url).await);
        }
        if let Some(Some(first)) = seen.first() {
            if *first != old && seen.iter().all(|leader| *leader == Some(*first)) {
                break (started.elapsed(), *first);
            }
        }
        if Instant::now() > deadline {
            control::send(&ctx.state.control_socket, &Command::Heal { a: None, b: None }).await?;
            bail!("no new leader within 30 s after isolating region {old} (seen: {seen:?})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A write on the majority side: the time until the cluster takes writes again.
    let writer = others.iter().find(|node| node.id != new_leader).unwrap_or(&others[0]);
    let writable = loop {
        let url = format!("{}/admin/v1/orgs/failover-{round}", writer.admin_url);
        if let Ok(response) = http::request("PUT", &url, Some(&ctx.token), Some("{}"), TIMEOUT).await {
            if response.status == 200 {
                break started.elapsed();
            }
        }
        if Instant::now() > deadline {
            bail!("no write succeeded on region {} within 30 s of the cut", writer.id);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    control::send(&ctx.state.control_socket, &Command::Heal { a: None, b: None }).await?;
    let healed = Instant::now();
    let rejoined = loop {
        if leader_seen_by(ctx, &nodes[(old - 1) as usize].admin_url).await == Some(new_leader) {
            break healed.elapsed();
        }
        if healed.elapsed() > Duration::from_secs(30) {
            bail!("region {old} did not follow leader {new_leader} within 30 s of the heal");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "failover {round}: isolated leader {old}; {new_leader} elected after {:.0} ms, writes after {:.0} ms; \
         {old} followed {new_leader} {:.0} ms after the heal",
        ms(elected),
        ms(writable),
        ms(rejoined)
    );
    Ok(json!({"old_leader": old, "new_leader": new_leader, "elected_ms": ms(elected),
              "writable_ms": ms(writable), "rejoined_after_heal_ms": ms(rejoined)}))
}
