//! `jepsen regions up|down|status`: three hosts (network namespaces on a bridge), one real
//! `tollgate serve` per host, and the link proxy between them (see [`layout`] for the topology).

pub mod configs;
pub mod layout;
pub mod net;
pub mod procs;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use self::configs::Settings;
use self::layout::Layout;
use self::state::{write_private, NodeRecord, RegionsState};
use crate::http;
use crate::linkproxy::control::{self, Command};

/// Marks processes as ours in their command line before we signal them.
pub const NODE_MARKER: &str = "serve --config";
const PROXY_MARKER: &str = "link-proxy --config";

/// `--dir`: where the regions keep their state (shared by `regions`, `link` and `measure`; lives here, below
/// the command line, so the subcommands' modules need not import `cli`).
#[derive(clap::Args, Debug, Clone)]
pub struct DirArg {
    /// State directory of the regions (configs, data, logs, state.json).
    #[arg(long, default_value = "/tmp/tollgate-regions", env = "TOLLGATE_REGIONS_DIR")]
    pub dir: PathBuf,
}

pub struct UpOptions {
    pub dir: PathBuf,
    pub tollgate: PathBuf,
    pub settings: Settings,
    pub env_file: Option<PathBuf>,
    pub ready_timeout: Duration,
    /// TOML appended to every node's config (more providers, models, orgs and keys; `jepsen run` routes
    /// its orgs to the harness's own mock upstreams this way).
    pub extra_config: String,
    /// Every node's `TOLLGATE_CLOCK_SKEW_MS` (0: none), kept across restarts.
    pub clock_skew_ms: i64,
    /// An `LD_PRELOAD` shim for every node (the slow-disk nemesis's), kept across restarts.
    pub slow_disk_shim: Option<PathBuf>,
}

fn layout_of(state: &RegionsState) -> Layout {
    Layout { prefix: state.namespace_prefix.clone(), bridge: state.bridge.clone(), subnet: state.subnet }
}

/// Builds the network and starts the proxy and the nodes; on any failure removes what it built.
pub async fn up(options: UpOptions) -> anyhow::Result<RegionsState> {
    net::check_privileges()?;
    let layout = Layout::default();
    let dir = &options.dir;
    if RegionsState::load(dir)?.is_some() {
        bail!(
            "regions are already up, or a previous run crashed: {} exists. Run `jepsen regions down --dir {}` first",
            state::state_path(dir).display(),
            dir.display()
        );
    }
    let leftovers = net::leftovers(&layout)?;
    if !leftovers.is_empty() {
        bail!(
            "leftovers exist ({}): regions of another --dir, or an earlier run that crashed; run `jepsen regions \
             down --dir {}` (it removes them even without a state file)",
            leftovers.join(", "),
            dir.display()
        );
    }
    let tollgate = options.tollgate.canonicalize().with_context(|| {
        format!(
            "tollgate binary {} not found: build it with `cargo build --release -p tollgate` or pass --tollgate PATH",
            options.tollgate.display()
        )
    })?;
    let mut state = prepare_files(&options, &layout, &tollgate)?;
    for record in &state.nodes {
        check_config(&tollgate, &record.config)?;
    }
    state.save()?;
    match start(&mut state, &layout, options.ready_timeout).await {
        Ok(()) => {}
        Err(err) => {
            let failures = teardown(&state, &layout);
            let cleanup = if failures.is_empty() {
                remove_runtime_files(&state.dir, &layout);
                "everything it built was removed".to_owned()
            } else {
                format!("cleanup also failed: {}", failures.join("; "))
            };
            return Err(err.context(format!("`jepsen regions up` failed; {cleanup} (logs kept in {})", dir.display())));
        }
    }
    if let Some(path) = &options.env_file {
        std::fs::write(path, env_lines(&state)).with_context(|| format!("--env-file {}", path.display()))?;
    }
    Ok(state)
}

/// Writes the admin token, node configs and proxy config under `dir`; returns the state to record.
fn prepare_files(options: &UpOptions, layout: &Layout, tollgate: &Path) -> anyhow::Result<RegionsState> {
    let dir = &options.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let token = configs::random_token("tga-");
    let key = configs::random_token("tg-regions-");
    let token_file = dir.join("admin-token");
    write_private(&token_file, &token)?;
    let secret = configs::random_token("");
    write_private(&dir.join("cluster-secret"), &secret)?;
    let mut nodes = Vec::new();
    for node in layout.nodes() {
        let node_dir = dir.join(format!("n{node}"));
        // Fresh data: a state file no longer exists, so whatever is here belongs to a finished run.
        let _ = std::fs::remove_dir_all(&node_dir);
        std::fs::create_dir_all(&node_dir)?;
        let config = node_dir.join("tollgate.toml");
        let mut text = configs::node_config(layout, node, &dir, &token_file, &key, &options.settings);
        text.push_str(&options.extra_config);
        write_private(&config, &text)?;
        nodes.push(NodeRecord {
            id: node,
            namespace: layout.namespace(node),
            ip: layout.node_ip(node).to_string(),
            api_url: layout.api_url(node),
            admin_url: layout.admin_url(node),
            pid: None,
            config,
            log: node_dir.join("tollgate.log"),
        });
    }
    let control_socket = dir.join("link-proxy.sock");
    let proxy_config = dir.join("link-proxy.json");
    let proxy = configs::proxy_config(layout, &control_socket, &options.settings);
    write_private(&proxy_config, &serde_json::to_string_pretty(&proxy)?)?;
    Ok(RegionsState {
        dir: dir.clone(),
        bridge: layout.bridge.clone(),
        namespace_prefix: layout.prefix.clone(),
        subnet: layout.subnet,
        tollgate: tollgate.to_path_buf(),
        proxy_pid: None,
        proxy_config,
        control_socket,
        admin_token_file: token_file,
        key,
        nodes,
        settings: serde_json::to_value(&options.settings)?,
        clock_skew_ms: options.clock_skew_ms,
        slow_disk_shim: options.slow_disk_shim.clone(),
    })
}

fn check_config(tollgate: &Path, config: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(tollgate)
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .with_context(|| format!("running {} check-config", tollgate.display()))?;
    if !output.status.success() {
        bail!(
            "{} rejects the generated config {}: {}{}",
            tollgate.display(),
            config.display(),
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn start(state: &mut RegionsState, layout: &Layout, ready_timeout: Duration) -> anyhow::Result<()> {
    net::create_bridge(layout)?;
    for node in layout.nodes() {
        net::create_region(layout, node)?;
    }
    let harness = std::env::current_exe().context("locating the jepsen binary for the link proxy")?;
    let harness = harness.to_string_lossy().into_owned();
    let proxy_args = vec!["link-proxy".into(), "--config".into(), state.proxy_config.to_string_lossy().into_owned()];
    let proxy_log = state.dir.join("link-proxy.log");
    state.proxy_pid = Some(procs::spawn_detached(&harness, &proxy_args, &[], &proxy_log)?);
    state.save()?;
    wait_for_proxy(&state.control_socket, &proxy_log).await?;
    for index in 0..state.nodes.len() {
        spawn_node(state, index)?;
    }
    wait_until_ready(state, ready_timeout).await
}

/// Starts (or restarts, with its data directory) the node at `index` inside its namespace and records
/// its pid (`ip netns exec` execs the node, so the pid is the node's own).
pub fn spawn_node(state: &mut RegionsState, index: usize) -> anyhow::Result<u32> {
    spawn_node_with_env(state, index, &[])
}

/// [`spawn_node`] with extra environment variables (e.g. `TOLLGATE_CLOCK_SKEW_MS` for the clock-skew
/// nemesis; without it, the cluster's own skew [`RegionsState::clock_skew_ms`] applies).
pub fn spawn_node_with_env(state: &mut RegionsState, index: usize, extra_env: &[(&str, &str)]) -> anyhow::Result<u32> {
    let secret = std::fs::read_to_string(state.dir.join("cluster-secret")).context("reading the cluster secret")?;
    let tollgate = state.tollgate.to_string_lossy().into_owned();
    let record = state.nodes.get(index).with_context(|| format!("no node at index {index}"))?;
    let args = vec![
        "netns".into(),
        "exec".into(),
        record.namespace.clone(),
        tollgate,
        "serve".into(),
        "--config".into(),
        record.config.to_string_lossy().into_owned(),
    ];
    // The contract's peer-authentication secret, for builds that have it (ignored by those that do not).
    let mut env = vec![("TOLLGATE_CLUSTER_SECRET", secret.trim())];
    let base_skew = state.clock_skew_ms.to_string();
    if state.clock_skew_ms != 0 && !extra_env.iter().any(|(key, _)| *key == "TOLLGATE_CLOCK_SKEW_MS") {
        env.push(("TOLLGATE_CLOCK_SKEW_MS", &base_skew));
    }
    env.extend_from_slice(extra_env);
    let slow_disk = state.slow_disk_env(record.id);
    env.extend(slow_disk.iter().map(|(key, value)| (key.as_str(), value.as_str())));
    let pid = procs::spawn_detached("ip", &args, &env, &record.log)?;
    state.nodes[index].pid = Some(pid);
    state.save()?;
    Ok(pid)
}

async fn wait_for_proxy(socket: &Path, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match control::send(socket, &Command::Status).await {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                bail!("the link proxy did not start: {err:#}\n--- {}:\n{}", log.display(), procs::tail(log, 20))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every node ready (`/readyz`: control state loaded) and one leader known to all.
async fn wait_until_ready(state: &RegionsState, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let token = admin_token(state)?;
    loop {
        let report = status_report(state, &token).await;
        let ready = report.iter().all(|node| node.ready);
        let leaders: Vec<Option<u64>> = report.iter().map(|node| node.leader).collect();
        if ready && leaders.iter().all(|leader| leader.is_some() && *leader == leaders[0]) {
            return Ok(());
        }
        for (record, node) in state.nodes.iter().zip(&report) {
            if let Some(pid) = record.pid {
                if procs::cmdline(pid).is_none() {
                    bail!(
                        "region {} exited during startup\n--- {}:\n{}",
                        node.id,
                        record.log.display(),
                        procs::tail(&record.log, 30)
                    );
                }
            }
        }
        if Instant::now() > deadline {
            let mut message = format!("the regions were not ready within {timeout:?}:");
            for (record, node) in state.nodes.iter().zip(&report) {
                message.push_str(&format!(
                    "\n  region {}: ready={} leader={:?} {}\n--- {}:\n{}",
                    node.id,
                    node.ready,
                    node.leader,
                    node.error.as_deref().unwrap_or(""),
                    record.log.display(),
                    procs::tail(&record.log, 10)
                ));
            }
            bail!(message);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn admin_token(state: &RegionsState) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(&state.admin_token_file)
        .with_context(|| format!("reading the admin token {}", state.admin_token_file.display()))?;
    Ok(token.trim().to_owned())
}

/// `KEY=value` lines for clients (README, public interface: `deploy/local-regions.sh up --env-file`).
pub fn env_lines(state: &RegionsState) -> String {
    let token = admin_token(state).unwrap_or_default();
    let mut out = format!("TOLLGATE_KEY={}\nTOLLGATE_ADMIN_TOKEN={token}\n", state.key);
    for node in &state.nodes {
        out.push_str(&format!(
            "TOLLGATE_URL_{id}={}/v1\nTOLLGATE_ADMIN_URL_{id}={}\n",
            node.api_url,
            node.admin_url,
            id = node.id
        ));
    }
    if let Some(first) = state.nodes.first() {
        // Region 1 under the single-node names `tollgate dev --env-file` uses, for tools that know only those.
        out.push_str(&format!("TOLLGATE_URL={}/v1\nTOLLGATE_ADMIN_URL={}\n", first.api_url, first.admin_url));
    }
    out
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub id: u64,
    pub healthy: bool,
    pub ready: bool,
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub error: Option<String>,
}

/// One round of `/healthz`, `/readyz` and `/admin/v1/cluster` on every region (each answers for itself).
pub async fn status_report(state: &RegionsState, token: &str) -> Vec<NodeStatus> {
    let timeout = Duration::from_secs(2);
    let mut report = Vec::new();
    for node in &state.nodes {
        let mut status =
            NodeStatus { id: node.id, healthy: false, ready: false, leader: None, term: None, error: None };
        match http::request("GET", &format!("{}/healthz", node.admin_url), None, None, timeout).await {
            Ok(response) => status.healthy = response.status == 200,
            Err(err) => status.error = Some(format!("{err:#}")),
        }
        if status.healthy {
            if let Ok(response) = http::request("GET", &format!("{}/readyz", node.admin_url), None, None, timeout).await
            {
                status.ready = response.status == 200;
            }
            let url = format!("{}/admin/v1/cluster", node.admin_url);
            match http::request("GET", &url, Some(token), None, timeout).await.and_then(|r| r.json()) {
                Ok(cluster) => {
                    status.leader = cluster["leader"].as_u64();
                    status.term = cluster["term"].as_u64();
                }
                Err(err) => status.error = Some(format!("{err:#}")),
            }
        }
        report.push(status);
    }
    report
}

/// Stops every process, removes the namespaces, veths and bridge (also those found without a state
/// file), and the runtime files; logs stay for post-mortems.
pub fn down(dir: &Path) -> anyhow::Result<()> {
    net::check_privileges()?;
    let state = RegionsState::load(dir)?;
    let layout = state.as_ref().map(layout_of).unwrap_or_default();
    let mut failures = match &state {
        Some(state) => teardown(state, &layout),
        None => {
            stop_stray_proxies();
            teardown_network(&layout)
        }
    };
    remove_runtime_files(dir, &layout);
    // veth pairs die asynchronously after their namespace; give the kernel a moment before judging.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut remaining = net::leftovers(&layout)?;
    while !remaining.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        remaining = net::leftovers(&layout)?;
    }
    failures.extend(remaining.into_iter().map(|thing| format!("{thing} still exists")));
    if !failures.is_empty() {
        bail!("`jepsen regions down` could not remove everything: {}", failures.join("; "));
    }
    Ok(())
}

/// Everything but the logs and the generated configs (useful next to the logs in a post-mortem).
fn remove_runtime_files(dir: &Path, layout: &Layout) {
    let files = ["state.json", "state.json.tmp", "link-proxy.sock", "link-proxy.json", "admin-token", "cluster-secret"];
    for name in files {
        let _ = std::fs::remove_file(dir.join(name));
    }
    for node in layout.nodes() {
        let _ = std::fs::remove_dir_all(dir.join(format!("n{node}")).join("data"));
    }
}

fn teardown(state: &RegionsState, layout: &Layout) -> Vec<String> {
    for node in &state.nodes {
        if let Some(pid) = node.pid {
            procs::stop(pid, NODE_MARKER, Duration::from_secs(5));
        }
    }
    if let Some(pid) = state.proxy_pid {
        procs::stop(pid, PROXY_MARKER, Duration::from_secs(2));
    }
    stop_stray_proxies();
    teardown_network(layout)
}

/// Kills whatever still runs inside the namespaces, then removes the network.
fn teardown_network(layout: &Layout) -> Vec<String> {
    for node in layout.nodes() {
        for pid in net::namespace_pids(&layout.namespace(node)) {
            procs::kill(pid);
        }
    }
    net::destroy(layout)
}

/// Link proxies the state file does not name (the harness crashed before saving, or the regions were
/// started with another --dir): any `jepsen link-proxy --config …/link-proxy.json` process. There is one
/// regions network per machine, so such a proxy is serving addresses that `down` is removing.
fn stop_stray_proxies() {
    let marker = "/link-proxy.json";
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) {
            if pid != std::process::id() && procs::is_ours(pid, PROXY_MARKER) && procs::is_ours(pid, marker) {
                procs::stop(pid, PROXY_MARKER, Duration::from_secs(2));
            }
        }
    }
}
