//! Background processes of the regions (the nodes and the link proxy): started detached in their own
//! process group with output to a log file, and stopped by pid — only after checking that the pid still
//! runs the program we started (pids are reused).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::process::{kill_process, Pid, Signal};

/// Starts `program args` detached (own process group, so the harness's Ctrl-C does not reach it), with
/// stdout and stderr appended to `log`. Returns its pid.
pub fn spawn_detached(program: &str, args: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<u32> {
    let out =
        File::options().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().with_context(|| format!("starting {program}"))?;
    // Not waited for: the process outlives the harness; `down` stops it by pid.
    Ok(child.id())
}

/// The command line of a live (non-zombie) process, or `None` when it is gone.
pub fn cmdline(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 3, after the parenthesised name (which may itself contain spaces or parentheses).
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X") | None) {
        return None;
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|byte| *byte == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Whether `pid` is alive and its command line contains `marker` (so we never signal a recycled pid).
pub fn is_ours(pid: u32, marker: &str) -> bool {
    cmdline(pid).is_some_and(|line| line.contains(marker))
}

fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, signal);
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process is gone (or after the kill).
pub fn stop(pid: u32, marker: &str, grace: Duration) -> bool {
    if !is_ours(pid, marker) {
        return false;
    }
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if cmdline(pid).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, Signal::KILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while cmdline(pid).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// SIGKILL without checks: for processes found inside one of our namespaces (they are ours by place).
pub fn kill(pid: u32) {
    signal(pid, Signal::KILL);
}

/// SIGSTOP (`pause`) or SIGCONT (resume) a process we started, checked by `marker` like [`stop`].
pub fn pause(pid: u32, marker: &str, paused: bool) -> bool {
    if !is_ours(pid, marker) {
        return false;
    }
    signal(pid, if paused { Signal::STOP } else { Signal::CONT });
    true
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
