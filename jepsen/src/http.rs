//! A deliberately small HTTP/1.1 client for the harness's own calls (health checks, admin API, one-shot
//! chat requests): one connection per request, `Connection: close`, chunked bodies decoded. Keeps the
//! harness free of a TLS/HTTP stack it does not need on a private bridge.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("expected JSON, got: {}", truncate(&self.body)))
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").with_context(|| format!("`{url}` is not an http:// URL"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

/// Sends one request; `bearer` becomes `Authorization: Bearer …`, `body` is sent as JSON.
pub async fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    request_with_headers(method, url, bearer, body, &[], timeout).await
}

/// [`request`] with extra headers (e.g. `Idempotency-Key`).
pub async fn request_with_headers(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<Response> {
    tokio::time::timeout(timeout, request_inner(method, url, bearer, body, headers))
        .await
        .with_context(|| format!("{method} {url}: no answer within {timeout:?}"))?
}

async fn request_inner(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let (host, path) = split_url(url)?;
    let mut stream = TcpStream::connect(host).await.with_context(|| format!("{method} {url}: connecting"))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.with_context(|| format!("{method} {url}: sending"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.with_context(|| format!("{method} {url}: reading the answer"))?;
    parse_response(&raw).with_context(|| format!("{method} {url}: malformed answer"))
}

pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let Some(split) = raw.windows(4).position(|window| window == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let head = std::str::from_utf8(&raw[..split]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line `{status_line}`"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let payload = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(key, value)| key.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(payload)? } else { payload.to_vec() };
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let Some(end) = payload.windows(2).position(|window| window == b"\r\n") else {
            bail!("truncated chunk size");
        };
        let size_text = std::str::from_utf8(&payload[..end]).context("chunk size is not UTF-8")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size `{size_text}`"))?;
        payload = &payload[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if payload.len() < size {
            bail!("truncated chunk");
        }
        body.extend_from_slice(&payload[..size]);
        payload = payload.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert!(matches!(plain, Ok(ref r) if r.status == 200 && r.body == "ok"));
        let chunked =
            parse_response(b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        assert!(matches!(chunked, Ok(ref r) if r.status == 503 && r.body == "abcde"));
        assert!(parse_response(b"garbage").is_err());
        assert!(matches!(split_url("http://10.0.0.1:9090/healthz"), Ok(("10.0.0.1:9090", "/healthz"))));
    }
}
