//! The floor for a Rust reverse proxy on this stack: hyper's HTTP/1 server in front of hyper-util's pooled
//! client, nothing else (no auth, no parsing, no metering). `bench/load.sh` measures it as the `hyper`
//! target, so the table shows how much of Tollgate's added latency is the HTTP stack itself and how much
//! is Tollgate's own work.
//!
//! Usage: `hyper_proxy LISTEN_ADDR UPSTREAM_ORIGIN` (e.g. `127.0.0.1:18082 http://127.0.0.1:9000`).
//! `TOKIO_WORKER_THREADS=1` gives one worker, as the gateway gets in the benchmark; `RUNTIME=current`
//! runs a current-thread runtime instead.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_proxy LISTEN_ADDR UPSTREAM_ORIGIN");
        return std::process::ExitCode::FAILURE;
    };
    let runtime = if std::env::var("RUNTIME").is_ok_and(|r| r == "current") {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    };
    let result = runtime.and_then(|rt| rt.block_on(serve(listen, upstream)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hyper_proxy: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(listen: String, upstream: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let upstream: Arc<str> = upstream.trim_end_matches('/').into();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<str>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse::<Uri>() else {
        return Ok(error(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    match client.request(request).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(_) => Ok(error(StatusCode::BAD_GATEWAY)),
    }
}

fn error(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}
