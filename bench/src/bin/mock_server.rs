//! The load test's upstream: `tollgate_tests::mock_upstream::MockUpstream` (default script: answers at once,
//! no delays) as a standalone process, so it can be pinned to a core apart from the gateway under test.
//!
//! Usage: `mock_server [PORT_FILE]`. `MockUpstream::start` binds `127.0.0.1:0` (tests/ has no fixed-port
//! constructor), so the chosen port is printed as `PORT=<n>` on stdout and, when given, written to
//! `PORT_FILE` (written to a temp name and renamed, so a reader never sees a partial number).
//! Runs until killed.
//!
//! Note: the mock records every request (for test assertions) and never forgets them, so memory grows
//! with the number of requests served; `load.sh` starts a fresh mock for every scenario.

use std::io::Write;

use tollgate_tests::MockUpstream;

fn main() -> std::process::ExitCode {
    let port_file = std::env::args_os().nth(1);
    // One thread: the load script gives the mock a single core (shared with the load generator).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("mock_server: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mock = MockUpstream::start().await;
        let port = mock.addr().port();
        if let Some(path) = port_file {
            let tmp = std::path::PathBuf::from(format!("{}.tmp", path.to_string_lossy()));
            if let Err(err) = std::fs::write(&tmp, format!("{port}\n")).and_then(|()| std::fs::rename(&tmp, &path)) {
                eprintln!("mock_server: cannot write the port file {}: {err}", path.to_string_lossy());
                return std::process::ExitCode::FAILURE;
            }
        }
        println!("PORT={port}");
        let _ = std::io::stdout().flush();
        // The server runs on spawned tasks; keep `mock` alive (dropping it stops the server).
        std::future::pending::<()>().await;
        drop(mock);
        std::process::ExitCode::SUCCESS
    })
}
