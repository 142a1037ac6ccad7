//! Raft over tonic, end to end: in-process openraft nodes on the sled store, each serving
//! `tollgate.v1.Raft` on a loopback port and talking to the others through `network::Network`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{Config, ServerState, Vote};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_consensus::network::{self, Network};
use tollgate_consensus::raft_service::raft_server;
use tollgate_consensus::resources::OrgConfig;
use tollgate_consensus::store::{self, StateMachineStore};
use tollgate_consensus::types::Raft;
use tollgate_consensus::{Command, NodeId, NodeInfo, Request, Response};
use tollgate_proto::v1::RaftPayload;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

const WAIT: Duration = Duration::from_secs(15);

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "tollgate-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

struct TestNode {
    id: NodeId,
    info: NodeInfo,
    raft: Raft,
    sm: StateMachineStore,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(id: NodeId) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let (log_store, sm) = store::open(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let info = NodeInfo { raft_addr: addr.clone(), api_addr: String::new(), admin_addr: String::new() };
        let raft = Raft::new(id, config(), Network::new(), log_store, sm.clone()).await.unwrap();

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = Server::builder().add_service(raft_server(raft.clone()));
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));
        TestNode { id, info, raft, sm, stop_server: Some(stop_tx), server: Some(server), _dir: dir }
    }

    /// Stops serving (graceful: peers get GOAWAY, new connections are refused) and shuts the Raft down.
    async fn kill(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("server stops within 5 s")
                .unwrap()
                .unwrap();
        }
        self.raft.shutdown().await.unwrap();
    }

    fn has_org(&self, name: &str) -> bool {
        self.sm.current().config.orgs.contains_key(name)
    }
}

fn put_org(request_id: &str, name: &str) -> Request {
    Request {
        request_id: request_id.into(),
        actor: "test".into(),
        at_ms: 0,
        command: Command::PutOrg { org: OrgConfig::named(name) },
    }
}

/// Waits until some node in `nodes` reports itself leader and everyone agrees; returns its index in `nodes`.
async fn wait_for_leader(nodes: &[&TestNode], not: Option<NodeId>) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        for (i, node) in nodes.iter().enumerate() {
            let m = node.raft.metrics().borrow().clone();
            if m.state == ServerState::Leader && Some(node.id) != not {
                let agreed = nodes.iter().all(|n| n.raft.metrics().borrow().current_leader == Some(node.id));
                if agreed {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader elected within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `client_write` on `leader`, retrying while leadership is still settling.
async fn write(leader: &TestNode, request: Request) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        match leader.raft.client_write(request.clone()).await {
            Ok(resp) => {
                assert!(matches!(resp.data, Response::Applied { .. }), "unexpected response {:?}", resp.data);
                return resp.log_id.index;
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if Instant::now() < deadline => {
                tracing::info!(?f, "not leader yet, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("client_write failed: {err}"),
        }
    }
}

async fn wait_applied(node: &TestNode, index: u64, org: &str) {
    node.raft
        .wait(Some(WAIT))
        .applied_index_at_least(Some(index), format!("node {} applies {index}", node.id))
        .await
        .unwrap();
    assert!(node.has_org(org), "node {} has org {org} after applying {index}", node.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_fail_over() {
    let mut n1 = TestNode::start(1).await;
    let mut n2 = TestNode::start(2).await;
    let mut n3 = TestNode::start(3).await;

    let members: BTreeMap<NodeId, NodeInfo> =
        [(1, n1.info.clone()), (2, n2.info.clone()), (3, n3.info.clone())].into_iter().collect();
    n1.raft.initialize(members).await.unwrap();

    // First leader, first write, replicated to all three.
    let leader_id = {
        let nodes = [&n1, &n2, &n3];
        let leader = nodes[wait_for_leader(&nodes, None).await];
        let index = write(leader, put_org("req-1", "acme")).await;
        for node in nodes {
            wait_applied(node, index, "acme").await;
        }

        // Snapshot + purge on the leader, then add a learner: it can only catch up through InstallSnapshot.
        leader.raft.trigger().snapshot().await.unwrap();
        let m = leader
            .raft
            .wait(Some(WAIT))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= index), "snapshot built")
            .await
            .unwrap();
        let snapshot_log_id = m.snapshot.unwrap();
        leader.raft.trigger().purge_log(snapshot_log_id.index).await.unwrap();
        leader.raft.wait(Some(WAIT)).purged(Some(snapshot_log_id), "log purged").await.unwrap();
        leader.id
    };

    let n4 = TestNode::start(4).await;
    {
        let nodes = [&n1, &n2, &n3];
        let leader = nodes.into_iter().find(|n| n.id == leader_id).unwrap();
        leader.raft.add_learner(4, n4.info.clone(), true).await.unwrap();
    }
    let m4 = n4
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some() && m.last_applied.is_some(), "learner installed the snapshot")
        .await
        .unwrap();
    assert!(m4.snapshot.is_some(), "learner 4 caught up through a snapshot: {m4:?}");
    assert!(n4.has_org("acme"), "learner 4 has the org from the snapshot");

    // Kill the leader: server and Raft.
    let (dead, mut survivors): (Vec<&mut TestNode>, Vec<&mut TestNode>) =
        [&mut n1, &mut n2, &mut n3].into_iter().partition(|n| n.id == leader_id);
    let dead = dead.into_iter().next().unwrap();
    dead.kill().await;

    // A new leader among the two survivors; the second write reaches both of them and the learner.
    let new_leader_id = {
        let nodes: Vec<&TestNode> = survivors.iter().map(|n| &**n).collect();
        let started = Instant::now();
        let leader = nodes[wait_for_leader(&nodes, Some(leader_id)).await];
        eprintln!("new leader {} elected {:?} after killing {leader_id}", leader.id, started.elapsed());
        let index = write(leader, put_org("req-2", "globex")).await;
        for node in nodes.iter().copied().chain([&n4]) {
            wait_applied(node, index, "globex").await;
            assert!(node.has_org("acme"));
        }
        leader.id
    };
    assert_ne!(new_leader_id, leader_id);

    for node in survivors.iter_mut() {
        node.kill().await;
    }
    let mut n4 = n4;
    n4.kill().await;
}

#[tokio::test]
async fn dead_peer_is_unreachable() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let info = NodeInfo { raft_addr: format!("127.0.0.1:{port}"), ..Default::default() };
    let mut factory = Network::new();
    let mut client = factory.new_client(7, &info).await;

    let started = Instant::now();
    let err =
        client.vote(VoteRequest::new(Vote::new(1, 1), None), RPCOption::new(Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "expected Unreachable, got {err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // A second client for the same address reuses the cached channel and fails the same way.
    let mut again = factory.new_client(7, &info).await;
    let err =
        again.vote(VoteRequest::new(Vote::new(1, 1), None), RPCOption::new(Duration::from_secs(2))).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "expected Unreachable, got {err:?}");

    // A garbage address never panics: every RPC is Unreachable.
    let bad = NodeInfo { raft_addr: "not a host:port".into(), ..Default::default() };
    let mut client = factory.new_client(8, &bad).await;
    let err =
        client.vote(VoteRequest::new(Vote::new(1, 1), None), RPCOption::new(Duration::from_secs(1))).await.unwrap_err();
    assert!(matches!(err, RPCError::Unreachable(_)), "expected Unreachable, got {err:?}");
}

#[tokio::test]
async fn remote_errors_and_bad_payloads() {
    let mut node = TestNode::start(1).await;
    let mut factory = Network::new();

    // Malformed JSON is rejected with INVALID_ARGUMENT.
    let channel = factory.channel(&node.info.raft_addr).unwrap();
    let mut raw = network::raft_client(channel);
    let status = raw.vote(RaftPayload { json: b"{not json".to_vec() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A well-formed vote is answered (uninitialized node: granted or not, but an Ok response).
    let mut client = factory.new_client(1, &node.info).await;
    let resp =
        client.vote(VoteRequest::new(Vote::new(1, 2), None), RPCOption::new(Duration::from_secs(2))).await.unwrap();
    assert!(resp.vote.leader_id().term >= 1, "{resp:?}");

    // A Raft that has stopped answers with its Fatal error, which comes back as a RemoteError.
    node.raft.shutdown().await.unwrap();
    let err =
        client.vote(VoteRequest::new(Vote::new(2, 2), None), RPCOption::new(Duration::from_secs(2))).await.unwrap_err();
    match err {
        RPCError::RemoteError(remote) => {
            assert_eq!(remote.target, 1);
            assert!(matches!(remote.source, RaftError::Fatal(_)), "{:?}", remote.source);
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    node.stop_server.take().map(|s| s.send(()));
}
