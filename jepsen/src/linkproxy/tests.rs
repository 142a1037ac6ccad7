#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The link proxy on loopback (no root needed). Timing asserts are one-sided ("at least the delay"), so a
//! slow CI machine cannot make them flaky.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::control::{self, Command};
use super::*;

const LOCAL: &str = "127.0.0.1:0";

fn local() -> SocketAddr {
    LOCAL.parse().unwrap()
}

async fn tcp_echo_server() -> SocketAddr {
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn udp_echo_server() -> SocketAddr {
    let socket = UdpSocket::bind(LOCAL).await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65536];
        while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..length], from).await;
        }
    });
    addr
}

/// A proxy with one route from node 1 to node 2 in front of `target`.
async fn proxy(protocol: Protocol, target: SocketAddr, delay_ms: u64, jitter_ms: u64) -> LinkProxy {
    let route = Route { protocol, listen: local(), target, to: 2, from: Some(1) };
    let config = ProxyConfig { delay_ms, jitter_ms, sources: Default::default(), routes: vec![route], control: None };
    LinkProxy::start(&config).await.unwrap()
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Duration> {
    let started = Instant::now();
    stream.write_all(message).await?;
    let mut answer = vec![0u8; message.len()];
    stream.read_exact(&mut answer).await?;
    assert_eq!(answer, message);
    Ok(started.elapsed())
}

/// Whether the connection is dead: reading answers EOF or an error within a second.
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let _ = stream.write_all(b"x").await;
    matches!(tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn tcp_is_delayed_both_ways() {
    let proxy = proxy(Protocol::Tcp, tcp_echo_server().await, 40, 5).await;
    let mut stream = TcpStream::connect(proxy.bound[0]).await.unwrap();
    for _ in 0..3 {
        let elapsed = round_trip(&mut stream, b"ping").await.unwrap();
        assert!(elapsed >= Duration::from_millis(80), "round trip {elapsed:?} shorter than 2 × 40 ms");
    }
}

#[tokio::test]
async fn tcp_keeps_order_and_throughput_under_jitter() {
    let proxy = proxy(Protocol::Tcp, tcp_echo_server().await, 25, 20).await;
    let stream = TcpStream::connect(proxy.bound[0]).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // 4 MiB in writes of varied sizes: with per-read sleeps this would take minutes; with the timestamped
    // queue it is one delay plus copying.
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = payload.clone();
    let writer = tokio::spawn(async move {
        for (index, piece) in payload.chunks(1000 + 7919 % 3000).enumerate() {
            write.write_all(piece).await.unwrap();
            if index % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        write.shutdown().await.unwrap();
    });
    let started = Instant::now();
    let mut received = Vec::new();
    read.read_to_end(&mut received).await.unwrap();
    writer.await.unwrap();
    assert_eq!(received.len(), expected.len());
    assert!(received == expected, "bytes were reordered or altered");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(started.elapsed() < Duration::from_secs(30), "throughput collapsed: {:?}", started.elapsed());
}

#[tokio::test]
async fn tcp_cut_resets_and_refuses_then_heal_restores() {
    let proxy = proxy(Protocol::Tcp, tcp_echo_server().await, 5, 0).await;
    let mut existing = TcpStream::connect(proxy.bound[0]).await.unwrap();
    round_trip(&mut existing, b"before").await.unwrap();
    control::apply(&proxy.links, &Default::default(), &Command::Cut { a: 1, b: 2 }).unwrap();
    assert!(is_closed(&mut existing).await, "an existing connection survived the cut");
    let mut refused = TcpStream::connect(proxy.bound[0]).await.unwrap();
    assert!(is_closed(&mut refused).await, "a new connection got through a cut link");
    control::apply(&proxy.links, &Default::default(), &Command::Heal { a: None, b: None }).unwrap();
    let mut healed = TcpStream::connect(proxy.bound[0]).await.unwrap();
    round_trip(&mut healed, b"after").await.unwrap();
}

#[tokio::test]
async fn tcp_hold_delivers_only_after_heal() {
    let proxy = proxy(Protocol::Tcp, tcp_echo_server().await, 5, 0).await;
    let mut stream = TcpStream::connect(proxy.bound[0]).await.unwrap();
    round_trip(&mut stream, b"warm").await.unwrap();
    proxy.links.set_mode(1, 2, LinkMode::Hold);
    stream.write_all(b"held-1").await.unwrap();
    stream.write_all(b"held-2").await.unwrap();
    let mut answer = vec![0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut answer)).await;
    assert!(early.is_err(), "held data was delivered");
    proxy.links.heal_all();
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await.unwrap().unwrap();
    assert_eq!(&answer, b"held-1held-2");
}

#[tokio::test]
async fn drop_on_the_reverse_link_also_resets_tcp() {
    let proxy = proxy(Protocol::Tcp, tcp_echo_server().await, 5, 0).await;
    let mut stream = TcpStream::connect(proxy.bound[0]).await.unwrap();
    round_trip(&mut stream, b"warm").await.unwrap();
    proxy.links.set_mode(2, 1, LinkMode::Drop);
    assert!(is_closed(&mut stream).await);
}

async fn udp_exchange(socket: &UdpSocket, target: SocketAddr, message: &[u8], wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    socket.send_to(message, target).await.unwrap();
    let mut buffer = [0u8; 1500];
    let (length, from) = tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await.ok()?.ok()?;
    assert_eq!(from, target, "the reply must come from the address the client sent to");
    assert_eq!(&buffer[..length], message);
    Some(started.elapsed())
}

#[tokio::test]
async fn udp_is_delayed_dropped_and_held() {
    let proxy = proxy(Protocol::Udp, udp_echo_server().await, 30, 5).await;
    let client = UdpSocket::bind(LOCAL).await.unwrap();
    let target = proxy.bound[0];
    let elapsed = udp_exchange(&client, target, b"one", Duration::from_secs(5)).await.expect("no UDP echo");
    assert!(elapsed >= Duration::from_millis(60), "UDP round trip {elapsed:?} shorter than 2 × 30 ms");

    proxy.links.set_mode(1, 2, LinkMode::Drop);
    assert!(udp_exchange(&client, target, b"lost", Duration::from_millis(400)).await.is_none());
    proxy.links.heal_all();
    assert!(udp_exchange(&client, target, b"two", Duration::from_secs(5)).await.is_some());

    proxy.links.set_mode(2, 1, LinkMode::Hold);
    assert!(udp_exchange(&client, target, b"held", Duration::from_millis(300)).await.is_none());
    proxy.links.heal_all();
    let mut buffer = [0u8; 16];
    let (length, _) =
        tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer)).await.unwrap().unwrap();
    assert_eq!(&buffer[..length], b"held", "a held reply is delivered once the link heals");
}

#[tokio::test]
async fn sources_tell_the_sending_region() {
    let target = tcp_echo_server().await;
    let route = Route { protocol: Protocol::Tcp, listen: local(), target, to: 2, from: None };
    let sources = [("127.0.0.1".parse().unwrap(), 3)].into_iter().collect();
    let config = ProxyConfig { delay_ms: 0, jitter_ms: 0, sources, routes: vec![route], control: None };
    let proxy = LinkProxy::start(&config).await.unwrap();
    proxy.links.set_mode(1, 2, LinkMode::Drop);
    let mut stream = TcpStream::connect(proxy.bound[0]).await.unwrap();
    round_trip(&mut stream, b"from 3").await.unwrap();
    proxy.links.set_mode(3, 2, LinkMode::Drop);
    assert!(is_closed(&mut stream).await);
}

#[tokio::test]
async fn control_socket_takes_commands() {
    let dir = std::env::temp_dir().join(format!("tg-linkproxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    let route =
        Route { protocol: Protocol::Udp, listen: local(), target: udp_echo_server().await, to: 2, from: Some(1) };
    let config = ProxyConfig {
        delay_ms: 1,
        jitter_ms: 0,
        sources: Default::default(),
        routes: vec![route],
        control: Some(socket.clone()),
    };
    let proxy = LinkProxy::start(&config).await.unwrap();
    let reply = control::send(&socket, &Command::Cut { a: 1, b: 2 }).await.unwrap();
    assert!(reply.links.iter().any(|link| link.from == 2 && link.to == 1 && link.state.mode == LinkMode::Drop));
    assert_eq!(proxy.links.get(1, 2).mode, LinkMode::Drop);
    let refused = control::send(&socket, &Command::Isolate { node: 7 }).await;
    assert!(refused.unwrap_err().to_string().contains("unknown node 7"));
    control::send(&socket, &Command::Heal { a: Some(1), b: Some(2) }).await.unwrap();
    assert_eq!(proxy.links.get(1, 2).mode, LinkMode::Up);
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
