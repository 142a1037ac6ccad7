//! Namespaces, veths and the bridge, through `ip` (iproute2). Every step is idempotent on teardown: a
//! missing namespace or link is not an error there, so `down` finishes whatever a crashed `up` left.

use std::process::Command;

use anyhow::{bail, Context};

use super::layout::Layout;

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip").args(args).output().context("running `ip` (install iproute2)")?;
    if !output.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `ip` exists and we are root: what building the network needs.
pub fn check_privileges() -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("jepsen regions needs root (network namespaces, veths, a bridge): run it with sudo");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        bail!("`ip` not found: install iproute2 (apt-get install iproute2)");
    }
    Ok(())
}

pub fn namespaces() -> anyhow::Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_owned).collect())
}

pub fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).is_ok()
}

/// What of this layout exists on the machine right now (namespaces, bridge, host veths).
pub fn leftovers(layout: &Layout) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let existing = namespaces()?;
    for node in layout.nodes() {
        let namespace = layout.namespace(node);
        if existing.contains(&namespace) {
            found.push(format!("namespace {namespace}"));
        }
        let veth = layout.host_veth(node);
        if link_exists(&veth) {
            found.push(format!("link {veth}"));
        }
    }
    if link_exists(&layout.bridge) {
        found.push(format!("bridge {}", layout.bridge));
    }
    Ok(found)
}

pub fn create_bridge(layout: &Layout) -> anyhow::Result<()> {
    ip(&["link", "add", &layout.bridge, "type", "bridge"])?;
    ip(&["addr", "add", &format!("{}/24", layout.bridge_ip()), "dev", &layout.bridge])?;
    ip(&["link", "set", &layout.bridge, "up"])?;
    Ok(())
}

/// One region: its namespace, a veth pair with one end on the bridge and the other as `eth0` inside.
pub fn create_region(layout: &Layout, node: u64) -> anyhow::Result<()> {
    let namespace = layout.namespace(node);
    let host = layout.host_veth(node);
    let peer = layout.peer_veth(node);
    ip(&["netns", "add", &namespace])?;
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
    ip(&["link", "set", &peer, "netns", &namespace])?;
    ip(&["link", "set", &host, "master", &layout.bridge])?;
    ip(&["link", "set", &host, "up"])?;
    ip(&["-n", &namespace, "link", "set", &peer, "name", "eth0"])?;
    ip(&["-n", &namespace, "addr", "add", &format!("{}/24", layout.node_ip(node)), "dev", "eth0"])?;
    ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
    ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Pids of every process running in a namespace.
pub fn namespace_pids(namespace: &str) -> Vec<u32> {
    ip(&["netns", "pids", namespace])
        .map(|out| out.split_whitespace().filter_map(|pid| pid.parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes the namespaces, veths and bridge of the layout; returns what could not be removed.
pub fn destroy(layout: &Layout) -> Vec<String> {
    let mut failures = Vec::new();
    let existing = namespaces().unwrap_or_default();
    for node in layout.nodes() {
        let namespace = layout.namespace(node);
        if existing.contains(&namespace) {
            if let Err(err) = ip(&["netns", "del", &namespace]) {
                failures.push(format!("{err:#}"));
            }
        }
        // Deleting the namespace destroys its veth end, and with it the pair, but asynchronously.
        let veth = layout.host_veth(node);
        if link_exists(&veth) {
            if let Err(err) = ip(&["link", "del", &veth]) {
                if link_exists(&veth) {
                    failures.push(format!("{err:#}"));
                }
            }
        }
    }
    if link_exists(&layout.bridge) {
        if let Err(err) = ip(&["link", "del", &layout.bridge]) {
            failures.push(format!("{err:#}"));
        }
    }
    failures
}
