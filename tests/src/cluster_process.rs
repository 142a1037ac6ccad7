//! Real `tollgate serve` processes on loopback, configured as the README shows a node: the `[node]` section
//! is built from typed fields ([`NodeSection`]) instead of a TOML string in every test, a three-node
//! [`ProcessCluster`] starts in front of a mock upstream, and the real CLI runs against the admin listeners.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{free_port, reserve_port, tollgate_binary, wait_healthy, ChildGuard};
use crate::{config_toml, wait_for, MockUpstream};

/// Admin token of every process node.
pub const ADMIN_TOKEN: &str = "tga-process-test";
/// The secret process clusters' peers authenticate with.
pub const CLUSTER_SECRET: &str = "process-test-cluster-secret-42";

/// A `[node]` section. Unset fields are left out (the product's defaults apply).
#[derive(Clone, Debug, Default)]
pub struct NodeSection {
    pub id: Option<u64>,
    pub api: u16,
    pub admin: u16,
    pub raft: Option<u16>,
    pub gossip_listen: Option<u16>,
    /// `gossip = true/false`; `None` leaves the default (on for a node whose peers name another node).
    pub gossip: Option<bool>,
    pub gossip_seeds: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub cluster_secret: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    /// `(id, raft port)` of the initial voters.
    pub peers: Vec<(u64, u16)>,
    /// Heartbeats every 50 ms, elections within 300–600 ms, writes time out after 3 s.
    pub fast_raft: bool,
    /// More `key = value` lines, verbatim.
    pub extra: Vec<String>,
}

impl NodeSection {
    /// API and admin listeners on ports that were free a moment ago, admin token set.
    pub fn on_free_ports() -> NodeSection {
        NodeSection {
            api: free_port(),
            admin: free_port(),
            admin_token: Some(ADMIN_TOKEN.into()),
            ..NodeSection::default()
        }
    }

    pub fn render(&self) -> String {
        let mut lines = vec!["[node]".to_owned()];
        let mut line = |key: &str, value: String| lines.push(format!("{key} = {value}"));
        let quoted = |text: &str| format!("{text:?}");
        if let Some(id) = self.id {
            line("id", id.to_string());
        }
        line("listen", quoted(&format!("127.0.0.1:{}", self.api)));
        line("admin_listen", quoted(&format!("127.0.0.1:{}", self.admin)));
        if let Some(raft) = self.raft {
            line("raft_listen", quoted(&format!("127.0.0.1:{raft}")));
        }
        if let Some(gossip) = self.gossip_listen {
            line("gossip_listen", quoted(&format!("127.0.0.1:{gossip}")));
        }
        if let Some(on) = self.gossip {
            line("gossip", on.to_string());
        }
        if !self.gossip_seeds.is_empty() {
            let seeds: Vec<String> = self.gossip_seeds.iter().map(|s| quoted(s)).collect();
            line("gossip_seeds", format!("[{}]", seeds.join(", ")));
        }
        if let Some(dir) = &self.data_dir {
            line("data_dir", quoted(&dir.display().to_string()));
        }
        if let Some(token) = &self.admin_token {
            line("admin_token", quoted(token));
        }
        if let Some(secret) = &self.cluster_secret {
            line("cluster_secret", quoted(secret));
        }
        if let Some(file) = &self.cluster_secret_file {
            line("cluster_secret_file", quoted(&file.display().to_string()));
        }
        if self.fast_raft {
            line("heartbeat_ms", "50".into());
            line("election_timeout_min_ms", "300".into());
            line("election_timeout_max_ms", "600".into());
            line("write_timeout_ms", "3000".into());
        }
        if !self.peers.is_empty() {
            let peers: Vec<String> =
                self.peers.iter().map(|(id, port)| format!("{id} = \"127.0.0.1:{port}\"")).collect();
            line("peers", format!("{{ {} }}", peers.join(", ")));
        }
        lines.extend(self.extra.iter().cloned());
        lines.join("\n") + "\n"
    }

    /// A whole config file: this section, then `body` (providers, models, keys…).
    pub fn with_body(&self, body: &str) -> String {
        format!("{}\n{body}", self.render())
    }
}

/// The harness's config ([`config_toml`]: limits, providers, models, keys, then `extra`) without its
/// `[node]` section, to follow a process's own.
pub fn harness_body(mock: &MockUpstream, extra: &str) -> String {
    let base = config_toml(mock, extra);
    let (_, rest) = base.split_once("[limits]").expect("the harness config has a [limits] section");
    format!("[limits]{rest}")
}

/// `tollgate serve --config PATH` with logs at error level and stdout discarded.
pub fn spawn_serve(config: &Path) -> ChildGuard {
    spawn_serve_with(config, &[])
}

/// Like [`spawn_serve`], with environment variables.
pub fn spawn_serve_with(config: &Path, env: &[(&str, &str)]) -> ChildGuard {
    let mut command = Command::new(tollgate_binary());
    command.args(["serve", "--config"]).arg(config).env("RUST_LOG", "error").stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    ChildGuard::spawn(&mut command)
}

/// Runs the CLI against the admin listener on `admin` with the admin token: (success, stdout + stderr).
pub fn cli(admin: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new(tollgate_binary())
        .args(args)
        .args(["--admin", &format!("http://127.0.0.1:{admin}"), "--token", ADMIN_TOKEN])
        .output()
        .expect("the tollgate CLI runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// Runs the CLI with `--json`; it must succeed and print JSON.
pub fn cli_json(admin: u16, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, text) = cli(admin, &all);
    assert!(ok, "tollgate {args:?} failed: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("tollgate {args:?} printed no JSON ({e}): {text}"))
}

/// One node process: its ports, config file, and the child while it runs.
pub struct Proc {
    pub api: u16,
    pub admin: u16,
    pub raft: u16,
    pub config: PathBuf,
    pub child: Option<ChildGuard>,
}

impl Proc {
    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }
}

/// Three `tollgate serve` processes forming a Raft cluster (gossip on by default, as for any member).
pub struct ProcessCluster {
    pub procs: Vec<Proc>,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// The initial voters: `(id, raft port)`.
    peers: Vec<(u64, u16)>,
    /// Everything after `[node]` in each node's config.
    body: String,
}

impl ProcessCluster {
    /// Three nodes in front of `mock` with `extra` appended to the harness's providers and models, all
    /// ready. Each node's gossip port is its Raft port + 1, so the seeds follow from `peers`.
    pub async fn start(mock: &MockUpstream, extra: &str) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let raft_ports: Vec<u16> = (0..3).map(|_| raft_and_gossip_ports()).collect();
        let peers: Vec<(u64, u16)> = raft_ports.iter().enumerate().map(|(i, port)| (i as u64 + 1, *port)).collect();
        std::fs::write(dir.path().join("cluster-secret"), format!("{CLUSTER_SECRET}\n"))
            .expect("write the cluster secret");
        let body = harness_body(mock, extra);
        let mut cluster = ProcessCluster { procs: Vec::new(), dir, client: reqwest::Client::new(), peers, body };
        for (id, raft) in cluster.peers.clone() {
            let proc = cluster.spawn_node(id, raft);
            cluster.procs.push(proc);
        }
        for proc in &cluster.procs {
            wait_healthy(&cluster.client, &proc.admin_url("/readyz")).await;
        }
        cluster
    }

    /// Writes node `id`'s config (Raft on `raft`, gossip on `raft + 1`, the initial voters as peers) and
    /// starts it.
    fn spawn_node(&self, id: u64, raft: u16) -> Proc {
        let node = NodeSection {
            id: Some(id),
            raft: Some(raft),
            gossip_listen: Some(raft + 1),
            data_dir: Some(self.dir.path().join(format!("n{id}"))),
            cluster_secret_file: Some(self.dir.path().join("cluster-secret")),
            peers: self.peers.clone(),
            fast_raft: true,
            ..NodeSection::on_free_ports()
        };
        let config = self.dir.path().join(format!("n{id}.toml"));
        std::fs::write(&config, node.with_body(&self.body)).expect("write the node config");
        Proc { api: node.api, admin: node.admin, raft, child: Some(spawn_serve(&config)), config }
    }

    /// Starts one more node that is not an initial voter: it waits to be added (`cluster add-node`).
    /// Returns its index.
    pub async fn start_joiner(&mut self) -> usize {
        let raft = raft_and_gossip_ports();
        let proc = self.spawn_node(self.procs.len() as u64 + 1, raft);
        wait_healthy(&self.client, &proc.admin_url("/healthz")).await;
        self.procs.push(proc);
        self.procs.len() - 1
    }

    pub fn cli(&self, index: usize, args: &[&str]) -> (bool, String) {
        cli(self.procs[index].admin, args)
    }

    pub fn cli_json(&self, index: usize, args: &[&str]) -> Value {
        cli_json(self.procs[index].admin, args)
    }

    /// `GET` on node `index`'s admin listener with the token; `Null` when the answer is not JSON.
    pub async fn admin_json(&self, index: usize, path: &str) -> Value {
        admin_get(&self.client, self.procs[index].admin, path).await
    }

    /// The leader's index, as the running nodes' `tollgate status` say, if it is running.
    pub fn leader(&self) -> Option<usize> {
        self.procs.iter().filter(|p| p.child.is_some()).find_map(|proc| {
            let (ok, text) = cli(proc.admin, &["status", "--json"]);
            let leader = serde_json::from_str::<Value>(&text).ok().filter(|_| ok)?["leader"].as_u64()?;
            let index = usize::try_from(leader).ok()?.checked_sub(1)?;
            self.procs.get(index)?.child.as_ref().map(|_| index)
        })
    }

    /// Waits (15 s) for a running leader.
    pub async fn wait_leader(&self) -> usize {
        wait_for("a running leader", Duration::from_secs(15), || async { self.leader() }).await
    }

    /// `kill -9` of node `index`.
    pub fn kill9(&mut self, index: usize) {
        let child = self.procs[index].child.take().expect("the node is running");
        child.signal("KILL");
        drop(child);
    }

    /// Starts node `index` again from its config and data, and waits until it is ready.
    pub async fn restart(&mut self, index: usize) {
        self.restart_with(index, &[]).await;
    }

    /// [`restart`](Self::restart) with environment variables.
    pub async fn restart_with(&mut self, index: usize, env: &[(&str, &str)]) {
        let proc = &mut self.procs[index];
        assert!(proc.child.is_none(), "node {} is running", index + 1);
        proc.child = Some(spawn_serve_with(&proc.config, env));
        wait_healthy(&self.client, &proc.admin_url("/readyz")).await;
    }

    /// SIGTERM to node `index`, which must exit cleanly (status 0) within 10 s.
    pub async fn stop(&mut self, index: usize) {
        let proc = &mut self.procs[index];
        let mut child = proc.child.take().expect("the node is running");
        child.signal("TERM");
        assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0), "node {} exits cleanly", index + 1);
    }

    /// SIGTERM to every running process; each must exit cleanly (status 0) within 10 s.
    pub async fn stop_all(&mut self) {
        for child in self.procs.iter().filter_map(|p| p.child.as_ref()) {
            child.signal("TERM");
        }
        for proc in &mut self.procs {
            if let Some(mut child) = proc.child.take() {
                assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0), "port {} exits cleanly", proc.api);
            }
        }
    }
}

/// A free Raft port whose successor (its node's gossip port) is reserved too.
fn raft_and_gossip_ports() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && reserve_port(port + 1) {
            return port;
        }
    }
}

/// `GET` on an admin listener with the admin token; `Null` when the answer is not JSON.
pub async fn admin_get(client: &reqwest::Client, admin: u16, path: &str) -> Value {
    let response = client
        .get(format!("http://127.0.0.1:{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on admin port {admin}: {e}"));
    response.json().await.unwrap_or(Value::Null)
}
