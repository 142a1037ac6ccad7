//! Running the real `tollgate` binary as a child process.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `tollgate` binary next to the test executable, (re)built once per test process so a test never
/// runs a stale binary. (Cargo releases its build lock before running tests, so this does not deadlock.)
pub fn tollgate_binary() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/tollgate
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir").to_path_buf();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--locked", "-p", "tollgate", "--bin", "tollgate"])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the tollgate binary failed");
    });
    profile_dir.join("tollgate")
}

/// Ports handed out by [`free_port`] in this test process: never handed out twice, so two tests running
/// at once cannot pick the same port before either child process has bound it.
static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A port that was free a moment ago and that no other test in this process was given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if reserve_port(port) {
            return port;
        }
    }
}

/// Marks `port` as taken for [`free_port`] (e.g. a port derived from another, like gossip = Raft + 1);
/// false if it was already handed out.
pub fn reserve_port(port: u16) -> bool {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if handed_out.contains(&port) {
        return false;
    }
    handed_out.push(port);
    true
}

/// A child process killed on drop.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> ChildGuard {
        let child = command.stdin(Stdio::null()).spawn().expect("spawn tollgate");
        ChildGuard(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal (e.g. "TERM", "INT") with `kill`.
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("kill runs");
        assert!(status.success());
    }

    /// Waits for exit (bounded); returns the exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(child) = self.0.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.0 = None;
                    return status.code();
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "process did not exit in time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `url` answers 200.
pub async fn wait_healthy(client: &reqwest::Client, url: &str) {
    // Wide: on a loaded 2-core CI machine a debug build of a node starting next to a dozen others is slow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
