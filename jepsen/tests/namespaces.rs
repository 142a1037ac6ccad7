//! The regions network for real (root only): three namespaces on a bridge, and traffic from inside a
//! namespace crossing the link proxy, which must recognise the sending region by its source address.
//! Skips, saying why, when not root or `ip` is missing. Uses its own names and subnet (from the pid), so
//! it never touches regions that `jepsen regions up` is running on the same machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tollgate_jepsen::linkproxy::{LinkMode, LinkProxy, Protocol, ProxyConfig, Route};
use tollgate_jepsen::regions::{layout::Layout, net};

fn skip_reason() -> Option<String> {
    if let Err(err) = net::check_privileges() {
        return Some(format!("{err:#}"));
    }
    if std::process::Command::new("bash").arg("-c").arg("true").status().is_err() {
        return Some("bash is missing".into());
    }
    None
}

/// Removes the test network even when an assertion fails.
struct Cleanup(Layout);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let failures = net::destroy(&self.0);
        assert!(failures.is_empty() || std::thread::panicking(), "cleanup failed: {failures:?}");
    }
}

/// Sends a line from inside `namespace` to `addr` with bash's /dev/tcp and returns the answer line.
fn exchange_from_namespace(namespace: &str, addr: SocketAddr) -> String {
    let script =
        format!("exec 3<>/dev/tcp/{}/{}; echo hello >&3; read -t 5 line <&3; echo \"$line\"", addr.ip(), addr.port());
    let output =
        std::process::Command::new("ip").args(["netns", "exec", namespace, "bash", "-c", &script]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_from_a_region_crosses_the_proxy_with_delay() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let pid = std::process::id() % 10_000;
    let layout =
        Layout { prefix: format!("tj{pid}r"), bridge: format!("tj{pid}br"), subnet: [10, 78, (pid % 250) as u8] };
    assert!(net::leftovers(&layout).unwrap().is_empty(), "test network names already in use");
    let _cleanup = Cleanup(layout.clone());
    net::create_bridge(&layout).unwrap();
    for node in layout.nodes() {
        net::create_region(&layout, node).unwrap();
    }
    assert_eq!(net::leftovers(&layout).unwrap().len(), 7, "3 namespaces, 3 veths and the bridge");

    // "Node 2" is an echo server in the root namespace on the bridge address; the proxy fronts it.
    let echo = TcpListener::bind(SocketAddr::new(layout.bridge_ip(), 0)).await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    let route = Route {
        protocol: Protocol::Tcp,
        listen: SocketAddr::new(layout.bridge_ip(), 0),
        target: echo_addr,
        to: 2,
        from: None,
    };
    let sources = layout.nodes().map(|node| (layout.node_ip(node), node)).collect();
    let config = ProxyConfig { delay_ms: 100, jitter_ms: 0, sources, routes: vec![route], control: None };
    let proxy = LinkProxy::start(&config).await.unwrap();
    let proxy_addr = proxy.bound[0];

    let namespace = layout.namespace(1);
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || exchange_from_namespace(&namespace, proxy_addr)).await.unwrap();
    assert_eq!(answer, "hello");
    assert!(started.elapsed() >= Duration::from_millis(200), "no WAN delay: {:?}", started.elapsed());
    let links: Vec<_> = proxy.links.snapshot().into_iter().map(|(link, _)| link).collect();
    assert!(links.contains(&(1, 2)), "the proxy did not see region 1 as the sender: {links:?}");

    proxy.links.set_mode(3, 2, LinkMode::Drop);
    let namespace = layout.namespace(3);
    let answer = tokio::task::spawn_blocking(move || exchange_from_namespace(&namespace, proxy_addr)).await.unwrap();
    assert_eq!(answer, "", "region 3's link to 2 is dropped");
    proxy.shutdown().await;
}
