//! One harness at a time per machine. The regions use fixed, machine-wide names (namespaces `tg-r1..3`,
//! bridge `tgbr0`, 10.77.0.0/24), so two `jepsen run`s — or a `regions up` while a run is going — would
//! tear down or reuse each other's network. `jepsen regions up|down` and `jepsen run` (hence
//! `jepsen/ci.sh`) hold an exclusive `flock(2)` on [`DEFAULT_PATH`] for as long as they work; a second
//! invocation says who holds it and waits, up to `--lock-wait` seconds (default 600, env `JEPSEN_LOCK_WAIT`), then fails with a
//! clear message. The lock is released when the process exits, whatever the way (crash and `kill -9`
//! included): the kernel drops `flock` locks with the last file descriptor, and the regions' detached
//! processes do not inherit it (Rust opens files close-on-exec).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::fs::{flock, FlockOperation};

/// The lock file (env `TOLLGATE_JEPSEN_LOCK` overrides it, for tests).
pub const DEFAULT_PATH: &str = "/run/tollgate-jepsen.lock";

/// Held for as long as it lives.
#[derive(Debug)]
pub struct HarnessLock {
    file: std::fs::File,
    pub path: PathBuf,
}

impl HarnessLock {
    /// Who holds it (what the holder wrote: pid and command line).
    pub fn holder(&self) -> String {
        read_holder(&self.path)
    }
}

pub fn lock_path() -> PathBuf {
    std::env::var_os("TOLLGATE_JEPSEN_LOCK").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

fn read_holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "unknown process".to_owned()
    } else {
        text.to_owned()
    }
}

fn describe_self(what: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("pid {} ({what}): {}", std::process::id(), args.join(" "))
}

/// Takes the machine-wide harness lock for `what` (e.g. `jepsen run`), waiting up to `wait` for
/// whoever holds it (saying so on stderr once, then every 30 s).
pub fn acquire(path: &Path, what: &str, wait: Duration) -> anyhow::Result<HarnessLock> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the harness lock {}", path.display()))?;
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break,
            Err(err) if err == rustix::io::Errno::WOULDBLOCK || err == rustix::io::Errno::INTR => {}
            Err(err) => return Err(err).with_context(|| format!("flock {}", path.display())),
        }
        let mut holder = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut holder);
        let holder = if holder.trim().is_empty() { "unknown process".to_owned() } else { holder.trim().to_owned() };
        if started.elapsed() >= wait {
            bail!(
                "another jepsen harness is running on this machine and holds {} ({holder}); gave up after {} s \
                 (--lock-wait / JEPSEN_LOCK_WAIT). Regions are machine-wide: wait for it to finish, or stop it",
                path.display(),
                wait.as_secs()
            );
        }
        if last_said.is_none_or(|said| said.elapsed() >= Duration::from_secs(30)) {
            eprintln!(
                "{what}: waiting for another jepsen harness on this machine ({holder}) — it holds {}; waiting up \
                 to {} s more (--lock-wait)",
                path.display(),
                wait.saturating_sub(started.elapsed()).as_secs()
            );
            last_said = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    file.set_len(0).with_context(|| format!("writing {}", path.display()))?;
    file.rewind()?;
    writeln!(file, "{}", describe_self(what))?;
    file.flush()?;
    if last_said.is_some() {
        eprintln!("{what}: got the harness lock after {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(HarnessLock { file, path: path.to_path_buf() })
}

impl Drop for HarnessLock {
    fn drop(&mut self) {
        // Say nobody holds it (the kernel releases the lock itself when the descriptor closes).
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gets_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("jepsen-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("harness.lock");
        let first = acquire(&path, "jepsen run", Duration::ZERO).unwrap();
        assert!(first.holder().contains(&format!("pid {}", std::process::id())), "{}", first.holder());
        // flock locks belong to the open file description: a second open in this process conflicts too.
        let started = Instant::now();
        let err = acquire(&path, "jepsen regions up", Duration::from_millis(600)).unwrap_err().to_string();
        assert!(started.elapsed() >= Duration::from_millis(600));
        assert!(err.contains("another jepsen harness") && err.contains("jepsen run"), "{err}");
        drop(first);
        let second = acquire(&path, "jepsen regions up", Duration::ZERO).unwrap();
        assert!(second.holder().contains("jepsen regions up"));
        drop(second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
