//! `jepsen run`: regions up, budgets set, concurrent clients in every region and config clients for the
//! time limit while a seeded nemesis schedule injects faults; then heal, converge, check (S1–S3, L1,
//! linearizability), write `history.jsonl` and `report.json` into a per-run directory, print the report
//! and the directory; regions down at the end whatever happened (errors and Ctrl-C included).

pub mod app_faults;
pub mod chat;
pub mod faults;
pub mod grant_kill;
pub mod interrupt;
pub mod nemesis;
pub mod registers;
pub mod report;
pub mod settle;
pub mod setup;
pub mod slow_disk;
pub mod timeline;
pub mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::checker::{self, Served};
use crate::history::{pair, History};
use crate::regions::{self, configs::Settings, layout::Layout, net, state::RegionsState};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Faults to draw from, comma-separated: partition-leader, partition-follower, cut-link, kill,
    /// kill-leader-granting, pause, flap, bridge, clock-skew, budget-lower, upstream-faults,
    /// idempotent-retry, period-rollover, slow-disk, `mixed` (all of them),
    /// or `none` (a fault-free baseline; with --hangup-share 0 the utilisation checker applies).
    #[arg(long, default_value = "mixed")]
    pub nemesis: String,
    /// Seconds of workload (faults stop before the end; heal, convergence and checks come after).
    #[arg(long, default_value_t = 60)]
    pub time_limit: u64,
    /// Seed of the schedule and the clients (default: drawn and printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Results directory; each run gets its own subdirectory.
    #[arg(long, default_value = "/tmp/tollgate-jepsen")]
    pub dir: PathBuf,
    /// State directory of the regions.
    #[arg(long, default_value = "/tmp/tollgate-regions", env = "TOLLGATE_REGIONS_DIR")]
    pub regions_dir: PathBuf,
    /// The tollgate binary (default: $CARGO_TARGET_DIR/release/tollgate, else target/release/tollgate).
    #[arg(long)]
    pub tollgate: Option<PathBuf>,
    /// Bring down regions left over by another run (or a crash) instead of refusing to start.
    #[arg(long)]
    pub force: bool,
    /// Token limit of org `acme` (default: 600 per second of time limit, so with the default clients it
    /// runs out around the middle of the run, while faults go on).
    #[arg(long)]
    pub acme_limit: Option<u64>,
    /// Token limit of org `beta` (a budget with room; the L1 probes use it).
    #[arg(long, default_value_t = 1_000_000)]
    pub beta_limit: u64,
    /// Chat clients per region.
    #[arg(long, default_value_t = 2)]
    pub clients_per_region: u64,
    /// Config (register) clients.
    #[arg(long, default_value_t = 2)]
    pub config_clients: u64,
    /// Share of streaming requests whose client hangs up part-way (the gateway bills them in full).
    #[arg(long, default_value_t = 0.2)]
    pub hangup_share: f64,
    /// Delay between streamed tokens of the mock upstreams.
    #[arg(long, default_value_t = 5)]
    pub token_delay_ms: u64,
}

fn default_tollgate() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("release").join("tollgate")
}

fn tollgate_version(binary: &Path) -> String {
    let version = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{} ({})", binary.display(), if version.is_empty() { "version unknown" } else { &version })
}

/// The WAN and Raft timing of every run (25 ms + 0–2 ms one way; Raft 250 / 750–1000 ms, the node's
/// defaults since issue 17.2 — runs recorded before it used 100 / 500–1000) and the mocks' delay between
/// streamed tokens.
const RUN_SETTINGS: Settings = Settings {
    delay_ms: 25,
    jitter_ms: 2,
    heartbeat_ms: 250,
    election_timeout_min_ms: 750,
    election_timeout_max_ms: 1000,
    token_delay_ms: 5,
};

/// Runs one test; `Ok(true)` when every checker passed. Prints the run directory last.
pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    net::check_privileges().context("jepsen run builds the regions")?;
    let kinds = nemesis::parse_list(&args.nemesis)?;
    if args.time_limit < 20 {
        bail!("--time-limit {} is too short: at least 20 s (faults need calm before and after)", args.time_limit);
    }
    let regions_dir = args.regions_dir.clone();
    let layout = Layout::default();
    let leftovers = net::leftovers(&layout)?;
    if RegionsState::load(&regions_dir)?.is_some() || !leftovers.is_empty() {
        if !args.force {
            bail!(
                "regions are already up (another run, `jepsen regions up`, or a crash left them: {}); bring them \
                 down with `jepsen regions down --dir {}`, or pass --force to do it now",
                if leftovers.is_empty() { "state.json exists".to_owned() } else { leftovers.join(", ") },
                regions_dir.display()
            );
        }
        eprintln!("--force: bringing down the regions left over ({})", leftovers.join(", "));
        regions::down(&regions_dir)?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run_dir = args.dir.join(format!("{now}-{}-seed{seed}", args.nemesis.replace(',', "+")));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let tollgate = args.tollgate.clone().unwrap_or_else(default_tollgate);
    let plan = nemesis::schedule(&kinds, args.time_limit as f64, seed);
    let rollover = nemesis::rollover_at_s(&plan).map(Rollover::plan);
    // With a rollover, two periods: acme (~1,000-1,300 tokens/s of demand) should run out in both, so
    // ~700 tokens per second of the shorter one.
    let default_acme = match &rollover {
        Some(rollover) => (700.0 * rollover.at_s.min(args.time_limit as f64 - rollover.at_s)).max(3000.0) as u64,
        None => 600 * args.time_limit,
    };
    let acme_limit = args.acme_limit.unwrap_or(default_acme);
    let orgs = setup::plan_orgs(acme_limit, args.beta_limit);
    eprintln!(
        "jepsen run: nemesis {} seed {seed} time limit {} s; results in {}",
        args.nemesis,
        args.time_limit,
        run_dir.display()
    );
    let slow_disk_shim =
        kinds.contains(&nemesis::Kind::SlowDisk).then(|| slow_disk::build_shim(&run_dir)).transpose()?;
    let options = regions::UpOptions {
        dir: regions_dir.clone(),
        tollgate: tollgate.clone(),
        settings: RUN_SETTINGS,
        env_file: None,
        ready_timeout: Duration::from_secs(60),
        extra_config: setup::extra_config(&layout, &orgs),
        clock_skew_ms: rollover.as_ref().map_or(0, |r| r.skew_ms),
        slow_disk_shim,
    };
    let run = Planned { kinds: &kinds, seed, plan, rollover };
    let slot = interrupt::HistorySlot::default();
    let mut signals = interrupt::Signals::install();
    let work = async {
        let state = regions::up(options).await?;
        run_up(&args, &run, state, orgs, &run_dir, &tollgate, &slot).await
    };
    let (outcome, signal) = tokio::select! {
        outcome = work => (outcome, None),
        signal = signals.next() => (Err(anyhow::anyhow!("interrupted ({signal})")), Some(signal)),
    };
    if let Some(signal) = signal {
        eprintln!("jepsen run: {signal}: keeping the history, bringing the regions down");
        interrupt::record(&slot, signal);
    }
    let down = regions::down(&regions_dir);
    keep_logs(&regions_dir, &run_dir);
    if let Some(signal) = signal {
        let meta = interrupt::RunMeta {
            seed,
            nemesis: &args.nemesis,
            time_limit_s: args.time_limit,
            tollgate: tollgate_version(&tollgate),
        };
        return interrupt::finish(&run_dir, &slot, signal, &meta, down);
    }
    let passed = outcome?;
    down?;
    println!("{}", run_dir.display());
    Ok(passed)
}

/// At the boundary: what each org's mock had served (everything before belongs to the old period).
async fn record_boundary(shared: workers::Shared, rollover: Rollover, at_ms: f64) {
    let wait = at_ms - shared.history.elapsed_ms();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
    }
    let served: BTreeMap<String, Option<u64>> =
        shared.orgs.iter().map(|org| (org.name.clone(), shared.served(&org.name))).collect();
    shared.history.record(
        "nemesis",
        crate::history::OpType::Info,
        "period-boundary",
        json!({"served": served, "new_period_start_ms": rollover.boundary_ms, "clock_skew_ms": rollover.skew_ms}),
    );
}

fn keep_logs(regions_dir: &Path, run_dir: &Path) {
    for node in Layout::default().nodes() {
        let _ = std::fs::copy(
            regions_dir.join(format!("n{node}")).join("tollgate.log"),
            run_dir.join(format!("n{node}.log")),
        );
    }
    let _ = std::fs::copy(regions_dir.join("link-proxy.log"), run_dir.join("link-proxy.log"));
}

/// What was decided before the regions came up.
struct Planned<'a> {
    kinds: &'a [nemesis::Kind],
    seed: u64,
    plan: Vec<nemesis::Planned>,
    rollover: Option<Rollover>,
}

/// A `day` period boundary placed `at_s` seconds into the workload: every node runs with
/// `TOLLGATE_CLOCK_SKEW_MS = skew_ms`, so the nodes' clock reads `boundary_ms` (a UTC midnight) when the
/// machine's reads `boundary_ms - skew_ms`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rollover {
    pub at_s: f64,
    pub skew_ms: i64,
    /// The new period's start, in the nodes' (shifted) clock.
    pub boundary_ms: u64,
}

/// Regions up, mocks and budgets usually take well under this; the workload start waits for the rest,
/// so the boundary falls where the schedule put it.
const SETUP_ALLOWANCE_MS: u64 = 25_000;
const DAY_MS: u64 = 86_400_000;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Rollover {
    fn plan(at_s: f64) -> Rollover {
        let expected = unix_ms() + SETUP_ALLOWANCE_MS + (at_s * 1000.0) as u64;
        let boundary_ms = (expected / DAY_MS + 1) * DAY_MS;
        Rollover { at_s, skew_ms: (boundary_ms - expected) as i64, boundary_ms }
    }

    /// The machine's Unix ms at the boundary.
    fn machine_ms(&self) -> u64 {
        self.boundary_ms.saturating_add_signed(-self.skew_ms)
    }
}

async fn run_up(
    args: &RunArgs,
    run: &Planned<'_>,
    state: RegionsState,
    orgs: Vec<setup::OrgPlan>,
    run_dir: &Path,
    tollgate: &Path,
    slot: &interrupt::HistorySlot,
) -> anyhow::Result<bool> {
    let (kinds, seed) = (run.kinds, run.seed);
    let mut plan = run.plan.clone();
    let layout = Layout::default();
    let mocks = setup::start_mocks(&layout, &orgs, Duration::from_millis(args.token_delay_ms)).await?;
    let token = regions::admin_token(&state)?;
    setup::set_budgets(&state, &token, &orgs).await?;
    if let Some(rollover) = &run.rollover {
        // Start the workload `at_s` before the boundary; if setup took longer than allowed, the boundary
        // comes earlier in the run and the period-rollover window moves with it.
        let start_ms = rollover.machine_ms().saturating_sub((rollover.at_s * 1000.0) as u64);
        let now = unix_ms();
        if start_ms > now {
            tokio::time::sleep(Duration::from_millis(start_ms - now)).await;
        } else {
            let late_s = (now - start_ms) as f64 / 1000.0;
            eprintln!("setup took {late_s:.1} s longer than allowed: the period rolls over that much earlier");
            for planned in plan.iter_mut().filter(|p| p.kind == nemesis::Kind::PeriodRollover) {
                planned.start_s = (planned.start_s - late_s).max(0.5);
            }
        }
    }
    std::fs::write(run_dir.join("schedule.json"), serde_json::to_string_pretty(&plan)?)?;
    let history = History::with_journal(Instant::now(), &run_dir.join("history.jsonl"))?;
    slot.set(history.clone());
    // The boundary in the history's time (ms since the workload started).
    let boundary_at_ms = run.rollover.as_ref().map(|rollover| {
        let ahead = rollover.machine_ms() as f64 - unix_ms() as f64;
        history.elapsed_ms() + ahead
    });
    let stop = Arc::new(AtomicBool::new(false));
    let shared = workers::Shared {
        state: Arc::new(state.clone()),
        token: Arc::new(token.clone()),
        orgs: Arc::new(orgs),
        mocks: Arc::new(mocks),
        history: history.clone(),
        stop: stop.clone(),
        hangup: args.hangup_share,
        retry: Arc::new(workers::RetryMode::default()),
        token_delay: Duration::from_millis(args.token_delay_ms),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for region in 1..=state.nodes.len() as u64 {
        for worker in 0..args.clients_per_region {
            tasks.spawn(workers::chat_client(shared.clone(), region, worker, seed ^ (region << 32) ^ worker));
        }
    }
    let next_value = Arc::new(AtomicU64::new(1));
    for worker in 0..args.config_clients {
        tasks.spawn(workers::config_client(shared.clone(), worker, seed.rotate_left(17) ^ worker, next_value.clone()));
    }
    tasks.spawn(workers::sampler(shared.clone()));
    tasks.spawn(workers::progress(shared.clone(), args.time_limit));
    if let (Some(rollover), Some(at_ms)) = (run.rollover.clone(), boundary_at_ms) {
        tokio::spawn(record_boundary(shared.clone(), rollover, at_ms));
    }

    let mut nemesis = faults::Nemesis {
        state,
        token,
        history: history.clone(),
        shared: shared.clone(),
        skewed: None,
        boundary_at_ms,
    };
    let applied = nemesis.run(&plan, history.started()).await;
    tokio::time::sleep_until((history.started() + Duration::from_secs(args.time_limit)).into()).await;
    stop.store(true, Ordering::SeqCst);
    let heal_errors = nemesis.heal_everything().await;
    let healed = Instant::now();
    eprintln!("time limit reached: healed everything; waiting for clients and for the cluster to converge");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(workers::CHAT_TIMEOUT + Duration::from_secs(5), drain).await.is_err() {
        tasks.abort_all();
    }
    let convergence = settle::converge(&shared, healed, Duration::from_secs(30)).await;
    settle::final_reads(&shared).await;
    // After a rollover the ledger shows only the new period: it must bill what was served since.
    let events_so_far = history.events();
    let ops_so_far = pair(&events_so_far);
    let since_boundary: BTreeMap<String, u64> = shared
        .orgs
        .iter()
        .filter_map(|org| {
            let boundary = checker::budget::boundary(&events_so_far, &ops_so_far, &org.name)?;
            Some((org.name.clone(), boundary.served_then + boundary.in_flight_slack))
        })
        .collect();
    let billed = settle::settle_ledger(&shared, Duration::from_secs(20), &since_boundary).await;
    if let Some(rollover) = &run.rollover {
        // The orgs' budgets are per `day`: the old period began a day before the boundary.
        settle::old_period_bills(&shared, rollover.boundary_ms.saturating_sub(DAY_MS)).await;
    }

    let served: Vec<Served> = shared
        .orgs
        .iter()
        .zip(shared.mocks.iter())
        .map(|(org, mock)| Served {
            org: org.name.clone(),
            limit: org.limit,
            input: mock.input_tokens_served(),
            output: mock.output_tokens_served(),
        })
        .collect();
    let events = history.events();
    let ops = pair(&events);
    let anomalies = report::anomalies(&ops);
    let mut checks = vec![
        checker::s1(&served, &events, &ops),
        checker::s2(&events),
        checker::s3(&served, &billed, &events, &ops),
        checker::l1(&convergence, 10.0),
        checker::linearizability(&ops, 5_000_000),
        checker::valid_requests(&anomalies),
    ];
    // A checker only where it can hold: no faults and no hang-ups (each hang-up bills a whole reservation
    // the upstream never served). Otherwise reported next to the informational figures.
    let utilisation_check = checker::budget::utilisation(&served, &ops, 0.9);
    let utilisation_is_checked = kinds.is_empty() && args.hangup_share == 0.0;
    let mut utilisation = utilisation(&served, &ops, &applied);
    // The fault-free rule (served at the first refusal) only as a figure where it is not the checker.
    utilisation["check"] =
        if utilisation_is_checked { json!(utilisation_check) } else { json!(utilisation_check.summary) };
    utilisation["checked"] = json!(utilisation_is_checked);
    if utilisation_is_checked {
        checks.push(utilisation_check);
    } else if !kinds.is_empty() {
        // Runs with faults: judged in the calm phases between them, on the ledger.
        let windows: Vec<(f64, f64)> = applied.iter().map(|fault| (fault.start_ms, fault.end_ms)).collect();
        let end_ms = args.time_limit as f64 * 1000.0;
        let calm = checker::budget::utilisation_calm(&served, &events, &ops, &windows, end_ms, 0.9);
        utilisation["calm_windows_s"] =
            json!(checker::budget::calm_windows(&windows, end_ms, checker::budget::CALM_MARGIN_MS)
                .iter()
                .map(|(from, to)| [(from / 100.0).round() / 10.0, (to / 100.0).round() / 10.0])
                .collect::<Vec<_>>());
        checks.push(calm);
    }
    history.finish_journal()?;
    let timeline_path = run_dir.join("timeline.html");
    std::fs::write(
        &timeline_path,
        timeline::html(&events, &applied, &served, &format!("{} seed {seed}", args.nemesis)),
    )
    .with_context(|| format!("writing {}", timeline_path.display()))?;
    let report = report::Report {
        seed,
        nemeses_requested: args.nemesis.clone(),
        time_limit_s: args.time_limit,
        tollgate: tollgate_version(tollgate),
        applied: &applied,
        ops: report::op_counts(&ops),
        checks: &checks,
        served: &served,
        utilisation,
        heal_errors: &heal_errors,
        anomalies,
    };
    let mut json = report.to_json();
    json["convergence"] = json!(convergence);
    json["schedule"] = json!(plan);
    json["period_rollover"] = json!(run.rollover.as_ref().map(|rollover| json!({"planned_at_s": rollover.at_s,
        "at_s": boundary_at_ms.map(|ms| (ms / 100.0).round() / 10.0), "clock_skew_ms": rollover.skew_ms,
        "new_period_start_ms": rollover.boundary_ms})));
    std::fs::write(run_dir.join("report.json"), serde_json::to_string_pretty(&json)?)?;
    print!("{}", report.terminal());
    println!("timeline: {}", timeline_path.display());
    Ok(report.passed())
}

/// Informational: the share of each budget served by the end, and for `acme` when refusals began and
/// whether a fault was active then (refusals in a fault-free phase with most of the budget unserved would
/// mean over-refusal).
fn utilisation(served: &[Served], ops: &[crate::history::Op], applied: &[faults::Applied]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for org in served {
        let Some(limit) = org.limit else { continue };
        let refusal = checker::budget::first_refusal(ops, &org.org);
        let first_refusal = refusal.map(|(at, _)| at);
        let during_fault =
            first_refusal.map(|t| applied.iter().any(|fault| fault.start_ms <= t && t <= fault.end_ms + 1000.0));
        out.insert(
            org.org.clone(),
            json!({"served": org.total(), "limit": limit,
                "share": ((org.total() as f64 / limit.max(1) as f64) * 1000.0).round() / 1000.0,
                "first_budget_refusal_s": first_refusal.map(|t| (t / 100.0).round() / 10.0),
                "served_at_first_refusal": refusal.and_then(|(_, served)| served),
                "first_refusal_during_fault": during_fault}),
        );
    }
    serde_json::Value::Object(out)
}
