//! `slow-disk`: one node's storage gets slow — its fsyncs (and, a little, its writes) take hundreds of
//! milliseconds — for the window, then fast again; the node keeps running throughout.
//!
//! The mechanism is an `LD_PRELOAD` shim in C (`jepsen/shim/slowdisk.c`), compiled by the harness with `cc`
//! into the run directory when `slow-disk` is in the schedule, and preloaded into every node from its first
//! start (and every restart; `RegionsState::slow_disk_shim`). It interposes libc's
//! `fsync`, `fdatasync`, `sync_file_range`, `write`, `pwrite(64)`, `writev` and `pwritev`; a call on a
//! file under the node's data directory sleeps first while the node's control file (`DIR/nI/slow-disk`)
//! reads `SYNC_MS WRITE_MS`. So the fault is a file written and removed; the shim counts what it delayed
//! in `DIR/nI/slow-disk.stats`, the evidence that the node's storage really was slowed. tollgate is a
//! dynamically linked glibc binary whose storage (sled) makes these calls through libc, so they reach
//! the shim; a statically linked build would not be slowed, and the stats would say so (0 delayed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::json;

use super::faults::Nemesis;
use super::nemesis::Planned;
use crate::regions::state::RegionsState;

const SHIM_SOURCE: &str = include_str!("../../shim/slowdisk.c");

/// Compiles the shim into `dir/slowdisk.so` (its source next to it) and returns the library's path.
pub fn build_shim(dir: &Path) -> anyhow::Result<PathBuf> {
    let source = dir.join("slowdisk.c");
    let library = dir.join("slowdisk.so");
    std::fs::write(&source, SHIM_SOURCE).with_context(|| format!("writing {}", source.display()))?;
    let output = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .context("slow-disk needs a C compiler: running `cc` to build its LD_PRELOAD shim")?;
    if !output.status.success() {
        bail!("cc could not build the slow-disk shim:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(library)
}

/// (sync delay, write delay) in ms from the fault's choice: 100–1,000 ms per sync (up to twice the
/// election timeout's minimum), 0–10 ms per write.
pub fn delays_ms(choice: u64) -> (u64, u64) {
    (100 + (choice >> 8) % 901, (choice >> 20) % 11)
}

/// What the shim reports for node `id` ("syncs N writes M slept_ms T"), if anything was delayed.
fn stats(state: &RegionsState, id: u64) -> Option<String> {
    let path = state.slow_disk_control(id).with_extension("stats");
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}

impl Nemesis {
    /// Fast disks everywhere (heal; also after an interrupted window).
    pub(super) fn clear_slow_disks(&self) {
        for node in &self.state.nodes {
            let _ = std::fs::remove_file(self.state.slow_disk_control(node.id));
        }
    }
}

impl Nemesis {
    pub(super) async fn slow_disk(&mut self, planned: &Planned, end: Instant, errors: &mut Vec<String>) -> String {
        let want_leader = planned.choice % 2 == 0;
        let node = self.pick_node(want_leader, planned.choice / 2).await;
        let role = if want_leader { "the leader" } else { "a follower" };
        let (sync_ms, write_ms) = delays_ms(planned.choice);
        if self.state.slow_disk_shim.is_none() {
            errors.push("the nodes were started without the slow-disk shim".into());
        }
        let control = self.state.slow_disk_control(node);
        let before = stats(&self.state, node);
        self.record(
            "start",
            json!({"kind": planned.kind, "node": node, "role": role, "sync_ms": sync_ms,
            "write_ms": write_ms}),
        );
        if let Err(err) = std::fs::write(&control, format!("{sync_ms} {write_ms}\n")) {
            errors.push(format!("writing {}: {err}", control.display()));
        }
        tokio::time::sleep_until(end.into()).await;
        if let Err(err) = std::fs::remove_file(&control) {
            errors.push(format!("removing {}: {err}", control.display()));
        }
        let after = stats(&self.state, node);
        if after.is_none() || after == before {
            errors.push(format!("node {node}'s shim delayed nothing in the window (stats: {after:?})"));
        }
        self.record("slow-disk-stats", json!({"node": node, "before": before, "after": after}));
        format!(
            "slow disk on node {node} ({role}): {sync_ms} ms per sync, {write_ms} ms per write for {:.1} s; the \
             shim's totals for the node's process went from {} to {}",
            planned.duration_s,
            before.as_deref().unwrap_or("nothing delayed"),
            after.as_deref().unwrap_or("nothing delayed")
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::{Duration, Instant};

    use super::*;

    /// `dd conv=fsync` (a dynamically linked libc program, as tollgate is) under the real shim: slowed by
    /// the control file's sync delay for a file in the data directory, not slowed without the control
    /// file or outside the directory, and counted in the stats file.
    #[test]
    fn the_shim_slows_syncs_in_the_data_dir_only_while_the_control_file_says_so() {
        if std::process::Command::new("cc").arg("--version").output().is_err() {
            eprintln!("skipped: no `cc` to build the shim");
            return;
        }
        let dir = std::env::temp_dir().join(format!("jepsen-slowdisk-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let shim = build_shim(&dir).unwrap();
        let control = dir.join("control");
        let dd = |target: &Path| {
            let started = Instant::now();
            let status = std::process::Command::new("dd")
                .args(["if=/dev/zero", "bs=4096", "count=1", "conv=fsync", "status=none"])
                .arg(format!("of={}", target.display()))
                .env("LD_PRELOAD", &shim)
                .env("TOLLGATE_SLOWDISK_DIR", &data)
                .env("TOLLGATE_SLOWDISK_CONTROL", &control)
                .status()
                .unwrap();
            assert!(status.success());
            started.elapsed()
        };
        assert!(dd(&data.join("a")) < Duration::from_millis(250), "no control file: no delay");
        std::fs::write(&control, "400 0\n").unwrap();
        assert!(dd(&data.join("b")) >= Duration::from_millis(400), "a sync in the data dir waits 400 ms");
        assert!(dd(&dir.join("outside")) < Duration::from_millis(250), "outside the data dir: no delay");
        let stats = std::fs::read_to_string(dir.join("control.stats")).unwrap();
        assert_eq!(stats.trim(), "syncs 1 writes 0 slept_ms 400");
        std::fs::remove_file(&control).unwrap();
        assert!(dd(&data.join("c")) < Duration::from_millis(250), "control file removed: fast again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn delays_stay_in_their_ranges() {
        for choice in (0..2000u64).map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            let (sync_ms, write_ms) = delays_ms(choice);
            assert!((100..=1000).contains(&sync_ms) && write_ms <= 10, "{sync_ms} {write_ms}");
        }
    }
}
