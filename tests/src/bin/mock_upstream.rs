//! The test mock LLM upstream as its own process, for checks written in other languages (the Python SDK
//! checks in `tests/python`): `tollgate-mock-upstream [--listen 127.0.0.1:0]` prints
//! `listening on http://ADDR` once it accepts connections, then serves until killed. Scripted through its
//! control API (`/_mock/script`, `/_mock/stats`; see `mock_upstream/control.rs`).

use std::io::Write as _;
use std::net::SocketAddr;

use tollgate_tests::mock_upstream::MockUpstream;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (None, _) => "127.0.0.1:0".to_owned(),
        (Some("--listen"), Some(addr)) => addr,
        _ => {
            eprintln!("usage: tollgate-mock-upstream [--listen HOST:PORT]");
            return std::process::ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(err) => {
            eprintln!("--listen {listen}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::start_on(addr).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("cannot listen on {addr}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening on {}", mock.base_url());
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
