//! In-process clusters: N whole nodes (API, admin, Raft over real sockets, sled on disk) in one test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tollgate::{Config, Listeners, RunningNode};

use crate::delay_proxy::DelayProxy;
use crate::{config_toml, init_tracing, MockUpstream, KEY};

pub const ADMIN_TOKEN: &str = "tga-test-admin";
/// The secret test clusters' peers authenticate with.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// One member's fixed addresses (a restart reuses them) and its running node, if up.
pub struct Member {
    pub id: u64,
    pub raft_addr: SocketAddr,
    pub config: Config,
    pub node: Option<RunningNode>,
}

impl Member {
    /// The bound gossip address, while running with gossip.
    pub fn gossip_addr(&self) -> Option<String> {
        self.node.as_ref()?.gateway.gossip.get().map(|cluster| cluster.gossip_addr().to_string())
    }
}

pub struct TestCluster {
    pub mock: MockUpstream,
    pub members: Vec<Member>,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    /// The WAN links of [`start_wan`](Self::start_wan), alive as long as the cluster.
    _proxies: Vec<DelayProxy>,
}

impl TestCluster {
    /// Starts `n` voters; node 1 bootstraps the shared test config (routes to `mock`).
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, "").await
    }

    pub async fn start_with(n: usize, node_extra: &str) -> TestCluster {
        let mock = MockUpstream::start().await;
        Self::start_inner(n, node_extra, mock, "", false, |_| {}).await
    }

    /// `n` voters that also gossip (UDP on loopback), with `models_extra` appended to the shared test
    /// config (more providers and models, e.g. pointing at other mocks).
    pub async fn start_full(n: usize, node_extra: &str, mock: MockUpstream, models_extra: &str) -> TestCluster {
        Self::start_inner(n, node_extra, mock, models_extra, true, |_| {}).await
    }

    /// Like [`start_full`](Self::start_full), with `tweak` applied to every node's parsed config (e.g. its
    /// `[limits]`).
    pub async fn start_full_tweaked(
        n: usize,
        mock: MockUpstream,
        models_extra: &str,
        tweak: impl Fn(&mut Config),
    ) -> TestCluster {
        Self::start_inner(n, "", mock, models_extra, true, tweak).await
    }

    async fn start_inner(
        n: usize,
        node_extra: &str,
        mock: MockUpstream,
        models_extra: &str,
        gossip: bool,
        tweak: impl Fn(&mut Config),
    ) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raft_listeners = Vec::new();
        for _ in 0..n {
            raft_listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind raft"));
        }
        let peers: BTreeMap<u64, String> = raft_listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| (index as u64 + 1, listener.local_addr().expect("addr").to_string()))
            .collect();
        let mut members = Vec::new();
        for (index, raft) in raft_listeners.into_iter().enumerate() {
            let id = index as u64 + 1;
            let raft_addr = raft.local_addr().expect("addr");
            let mut config = member_config(&mock, models_extra, id, &peers, raft_addr, dir.path());
            config.node.raft.heartbeat_ms = 50;
            config.node.raft.election_timeout_min_ms = 300;
            config.node.raft.election_timeout_max_ms = 600;
            config.node.raft.write_timeout_ms = 2000;
            config.limits.shutdown_grace_ms = 1000;
            if !node_extra.is_empty() {
                apply_node_extra(&mut config, node_extra);
            }
            if !gossip {
                // Cluster members gossip by default; these tests run without it.
                config.node.gossip.enabled = Some(false);
            }
            if gossip {
                // Gossip on a free UDP port, joining through the nodes started before.
                config.node.gossip.enabled = Some(true);
                config.node.listen.gossip = SocketAddr::from(([127, 0, 0, 1], 0));
                config.node.gossip.interval_ms = 100;
                config.node.gossip.seeds = members.iter().filter_map(|m: &Member| m.gossip_addr()).collect();
            }
            tweak(&mut config);
            let node = start_node(config.clone(), raft).await;
            members.push(Member { id, raft_addr, config, node: Some(node) });
        }
        let cluster = TestCluster { mock, members, client: reqwest::Client::new(), _dir: dir, _proxies: Vec::new() };
        cluster.wait_ready().await;
        cluster
    }

    /// `n` voters whose Raft and cluster links cross a WAN: every peer address (`peers`, `advertise_raft`)
    /// is a [`DelayProxy`] adding `one_way` in each direction in front of the member's Raft port. The
    /// product's default Raft timing (heartbeat, elections, write timeout), no gossip. Waits until every
    /// node is ready (a linearizable read has passed on each).
    pub async fn start_wan(n: usize, one_way: Duration) -> TestCluster {
        init_tracing();
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut raft_listeners = Vec::new();
        let mut peers = BTreeMap::new();
        for index in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raft");
            let proxy = DelayProxy::start(listener.local_addr().expect("addr"), one_way).await;
            peers.insert(index as u64 + 1, proxy.addr.to_string());
            raft_listeners.push((listener, proxy));
        }
        let mut members = Vec::new();
        let mut proxies = Vec::new();
        for (index, (raft, proxy)) in raft_listeners.into_iter().enumerate() {
            let id = index as u64 + 1;
            let raft_addr = raft.local_addr().expect("addr");
            let mut config = member_config(&mock, "", id, &peers, raft_addr, dir.path());
            config.node.raft.advertise = Some(proxy.addr.to_string());
            config.node.gossip.enabled = Some(false);
            config.limits.shutdown_grace_ms = 1000;
            let node = start_node(config.clone(), raft).await;
            members.push(Member { id, raft_addr, config, node: Some(node) });
            proxies.push(proxy);
        }
        let cluster = TestCluster { mock, members, client: reqwest::Client::new(), _dir: dir, _proxies: proxies };
        cluster.wait_ready().await;
        cluster
    }

    /// Gossip addresses of the running members other than `id`.
    fn gossip_seeds_except(&self, id: u64) -> Vec<String> {
        self.members.iter().filter(|m| m.id != id).filter_map(Member::gossip_addr).collect()
    }

    pub fn node(&self, id: u64) -> &RunningNode {
        self.members[(id - 1) as usize].node.as_ref().expect("node is running")
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.members[(id - 1) as usize].config.node.data_dir.clone().expect("data dir")
    }

    pub fn running(&self) -> impl Iterator<Item = &RunningNode> {
        self.members.iter().filter_map(|m| m.node.as_ref())
    }

    /// Waits until every running node has loaded the bootstrapped control state.
    pub async fn wait_ready(&self) {
        for node in self.running() {
            let url = format!("{}/readyz", node.admin_url());
            eventually_async("node ready", || async {
                self.client.get(&url).send().await.map(|r| r.status().is_success()).unwrap_or(false)
            })
            .await;
        }
    }

    /// Starts a new node that is not an initial member (it waits to be added with the admin API).
    pub async fn start_joiner(&mut self) -> u64 {
        let id = self.members.len() as u64 + 1;
        let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind raft");
        let raft_addr = raft.local_addr().expect("addr");
        let mut config = self.members[0].config.clone();
        config.node.gossip.seeds = self.gossip_seeds_except(id);
        config.node.id = id;
        config.node.listen.raft = raft_addr;
        config.node.data_dir = Some(self._dir.path().join(format!("n{id}")));
        let node = start_node(config.clone(), raft).await;
        self.members.push(Member { id, raft_addr, config, node: Some(node) });
        id
    }

    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.members[(id - 1) as usize].node.take() {
            node.stop().await.expect("node stops");
        }
    }

    /// Restarts a stopped member with its data directory and addresses.
    pub async fn restart(&mut self, id: u64) {
        let seeds = self.gossip_seeds_except(id);
        let member = &mut self.members[(id - 1) as usize];
        assert!(member.node.is_none(), "node {id} is running");
        member.config.node.gossip.seeds = seeds;
        let raft = bind_retry(member.raft_addr).await;
        member.node = Some(start_node(member.config.clone(), raft).await);
    }

    /// Cuts every Raft/cluster link between `isolated` and the other members, both ways (fault injection in
    /// the real network layer: the RPCs fail as unreachable). The API listeners stay up.
    pub fn partition(&self, isolated: &[u64]) {
        for member in &self.members {
            let Some(node) = &member.node else { continue };
            let Some(consensus) = &node.gateway.consensus else { continue };
            for other in &self.members {
                if isolated.contains(&member.id) != isolated.contains(&other.id) {
                    consensus.faults().block(&other.raft_addr.to_string());
                }
            }
        }
    }

    /// Restores every link cut by [`partition`](Self::partition).
    pub fn heal(&self) {
        for node in self.running() {
            if let Some(consensus) = &node.gateway.consensus {
                consensus.faults().heal();
            }
        }
    }

    pub async fn leader(&self) -> Option<u64> {
        for node in self.running() {
            if let Ok(status) = self.admin_get(node, "/admin/v1/cluster").await {
                if let Some(leader) = status["leader"].as_u64() {
                    if self.members[(leader - 1) as usize].node.is_some() {
                        return Some(leader);
                    }
                }
            }
        }
        None
    }

    pub async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(leader) = self.leader().await {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_get(&self, node: &RunningNode, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", node.admin_url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    }

    /// An admin write; returns (status, body).
    pub async fn admin(
        &self,
        node: &RunningNode,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", node.admin_url())).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A chat completion through `node` with `key`; returns the status.
    pub async fn chat(&self, node: &RunningNode, model: &str, key: &str) -> u16 {
        self.client
            .post(format!("{}/v1/chat/completions", node.api_url()))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    pub async fn chat_default(&self, node: &RunningNode, model: &str) -> u16 {
        self.chat(node, model, KEY).await
    }
}

/// Member `id`'s config: the shared test config, its Raft port, data dir, admin token and cluster secret.
fn member_config(
    mock: &MockUpstream,
    models_extra: &str,
    id: u64,
    peers: &BTreeMap<u64, String>,
    raft_addr: SocketAddr,
    dir: &std::path::Path,
) -> Config {
    let mut config = Config::parse(&config_toml(mock, models_extra)).expect("test config");
    config.node.id = id;
    config.node.raft.peers = peers.clone();
    config.node.listen.raft = raft_addr;
    config.node.data_dir = Some(dir.join(format!("n{id}")));
    config.node.secrets.admin_token = Some(ADMIN_TOKEN.into());
    config.node.secrets.cluster_secret = Some(CLUSTER_SECRET.into());
    config
}

fn apply_node_extra(config: &mut Config, extra: &str) {
    let parsed: toml::Value = toml::from_str(extra).expect("node extra is TOML");
    if let Some(snapshot) = parsed.get("snapshot_after_logs").and_then(toml::Value::as_integer) {
        config.node.raft.snapshot_after_logs = snapshot as u64;
    }
}

async fn start_node(config: Config, raft: TcpListener) -> RunningNode {
    let listeners = Listeners {
        api: TcpListener::bind("127.0.0.1:0").await.expect("bind api"),
        admin: TcpListener::bind("127.0.0.1:0").await.expect("bind admin"),
        raft: None,
    };
    RunningNode::start_with(config, Some(raft), listeners).await.expect("node starts")
}

async fn bind_retry(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) => {
                assert!(Instant::now() < deadline, "rebinding {addr}: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Polls an async check until it holds (10 s bound).
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
