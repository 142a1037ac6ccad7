//! Client connections on the API and admin listeners: deadlines and a cap, so idle, half-open or slow
//! connections cannot pile up (issue 12.5). hyper bounds one request's headers; this module bounds the
//! connection around it:
//! - **handshake**: the first request's headers (after protocol detection and any HTTP/2 preface) must
//!   arrive within `handshake_timeout_ms`;
//! - **idle**: with no request in flight, a connection silent both ways for `client_idle_timeout_ms` is
//!   closed (a request in flight is bounded by the upstream timeouts instead);
//! - **cap**: at most `max_connections` per listener; the next one is answered 503 and closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection's watchdog needs to know: when bytes last moved, whether a request ever arrived,
/// and how many are in flight.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    requested: AtomicBool,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A request arrived: the handshake is over; it stays in flight until the guard (held by its response
    /// body) is dropped.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    /// When the connection should be closed, as of now (`None`: not while a request is in flight).
    pub fn deadline(&self, handshake: Duration, idle: Duration) -> Option<Instant> {
        if !self.requested.load(Ordering::Relaxed) {
            return Some(self.started + handshake);
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle)
    }
}

pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that records when bytes move.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that keeps its request counted as in flight until it is finished or dropped.
pub struct Tracked<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Tracked<B> {
    pub fn new(body: B, guard: RequestGuard) -> Self {
        Tracked { body, _guard: guard }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The answer to a connection over the cap, written before closing it.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 100\r\nretry-after: 1\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"too many connections\",\"type\":\"overloaded_error\",\"code\":\"too_many_connections\"}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_follow_the_connection_state() {
        let activity = Activity::new();
        let (handshake, idle) = (Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(activity.deadline(handshake, idle), Some(activity.started + handshake), "no request yet");
        let guard = activity.begin_request();
        assert_eq!(activity.deadline(handshake, idle), None, "nothing closes a connection with a request in flight");
        drop(guard);
        let deadline = activity.deadline(handshake, idle).unwrap_or(activity.started);
        assert!(deadline >= activity.started + idle, "idle counts from the last activity");
        assert_eq!(OVER_CAPACITY.len() - OVER_CAPACITY.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) - 4, 100);
    }
}
