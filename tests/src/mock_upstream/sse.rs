//! Turning a list of SSE events plus a [`Script`] into a real, incrementally
//! written response body (with delays, chunk splitting, aborts, stalls, ...).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::{RespBody, Script, Shared};

/// One SSE event as it goes on the wire, and how many output tokens
/// (content pieces) it carries.
pub struct Event {
    pub bytes: Bytes,
    pub tokens: u64,
}

impl Event {
    /// OpenAI style: `data: {json}\n\n`.
    pub fn data(json: &serde_json::Value, tokens: u64) -> Event {
        Event { bytes: Bytes::from(format!("data: {json}\n\n")), tokens }
    }

    /// Anthropic style: `event: NAME\ndata: {json}\n\n`.
    pub fn named(name: &str, json: &serde_json::Value, tokens: u64) -> Event {
        Event { bytes: Bytes::from(format!("event: {name}\ndata: {json}\n\n")), tokens }
    }

    pub fn raw(s: &str) -> Event {
        Event { bytes: Bytes::from(s.to_owned()), tokens: 0 }
    }
}

enum Step {
    Sleep(Duration),
    /// bytes, output tokens completed by this chunk, input tokens to account
    Data(Bytes, u64, u64),
    Abort,
    Stall,
}

/// Increments `cancelled_streams` when dropped while still armed, i.e. when
/// the client went away before the stream was completely handed to hyper.
pub struct CancelGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl CancelGuard {
    pub fn new(shared: Arc<Shared>) -> CancelGuard {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        CancelGuard { shared, armed: true }
    }
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
        if self.armed {
            self.shared.cancelled_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Builds the step list; handles `split_chunks` by re-chunking the byte
/// stream across event boundaries (flushing before any pause so that an
/// event is never held back by a delay).
struct Planner {
    steps: VecDeque<Step>,
    split: Option<usize>,
    buf: Vec<u8>,
    /// (end offset in buf, output tokens, input tokens) of events in buf
    marks: Vec<(usize, u64, u64)>,
}

impl Planner {
    fn push(&mut self, ev: &Event, input_tokens: u64) {
        self.buf.extend_from_slice(&ev.bytes);
        self.marks.push((self.buf.len(), ev.tokens, input_tokens));
        match self.split {
            None => self.flush(),
            Some(n) => {
                while self.buf.len() >= n {
                    self.emit(n);
                }
            }
        }
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.emit(self.buf.len());
        }
    }

    fn emit(&mut self, n: usize) {
        let chunk: Vec<u8> = self.buf.drain(..n).collect();
        let (mut out, mut inp) = (0, 0);
        self.marks.retain_mut(|(end, o, i)| {
            if *end <= n {
                out += *o;
                inp += *i;
                false
            } else {
                *end -= n;
                true
            }
        });
        self.steps.push_back(Step::Data(Bytes::from(chunk), out, inp));
    }
}

/// Build the streaming body for `events` under `script`.
/// `input_tokens` is accounted to `input_tokens_served` with the first event.
pub fn stream_body(
    shared: Arc<Shared>,
    script: &Script,
    events: Vec<Event>,
    input_tokens: u64,
    guard: CancelGuard,
) -> RespBody {
    let mut p = Planner {
        steps: VecDeque::new(),
        split: script.split_chunks.map(|n| n.max(1)),
        buf: Vec::new(),
        marks: Vec::new(),
    };
    let mut input_pending = input_tokens;
    let total = events.len();
    let mut iter = events.into_iter();
    for i in 0..=total {
        if script.malformed_after_events == Some(i) {
            p.push(&Event::raw("data: {not json\n\n"), 0);
        }
        if script.abort_after_events == Some(i) {
            p.flush();
            p.steps.push_back(Step::Abort);
            break;
        }
        if script.end_early_after_events == Some(i) {
            break;
        }
        if script.stall_after_events == Some(i) {
            p.flush();
            p.steps.push_back(Step::Stall);
            break;
        }
        let Some(ev) = iter.next() else { break };
        if i > 0 {
            if let Some(d) = script.delay_between_events {
                p.flush();
                p.steps.push_back(Step::Sleep(d));
            }
        }
        p.push(&ev, std::mem::take(&mut input_pending));
    }
    p.flush();
    body_from_steps(shared, p.steps, guard)
}

/// A raw byte stream (no events) with the cancel guard, used for garbage bodies.
pub fn raw_stream_body(shared: Arc<Shared>, chunks: Vec<Bytes>, guard: CancelGuard) -> RespBody {
    let steps = chunks.into_iter().map(|b| Step::Data(b, 0, 0)).collect();
    body_from_steps(shared, steps, guard)
}

struct Run {
    steps: VecDeque<Step>,
    guard: CancelGuard,
    shared: Arc<Shared>,
}

fn body_from_steps(shared: Arc<Shared>, steps: VecDeque<Step>, guard: CancelGuard) -> RespBody {
    let run = Run { steps, guard, shared };
    let s = stream::unfold(run, |mut run| async move {
        loop {
            let Some(step) = run.steps.pop_front() else {
                run.guard.disarm();
                return None;
            };
            match step {
                Step::Sleep(d) => tokio::time::sleep(d).await,
                // Silent forever; hyper drops the body when the client leaves,
                // which drops the armed guard.
                Step::Stall => futures_util::future::pending::<()>().await,
                Step::Abort => {
                    // Let hyper flush what was written so far (it would
                    // otherwise discard its write buffer on the body error).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    run.guard.disarm();
                    run.steps.clear();
                    let err =
                        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "mock upstream: scripted abort");
                    return Some((Err(err), run));
                }
                Step::Data(bytes, out, inp) => {
                    run.shared.output_tokens.fetch_add(out, Ordering::SeqCst);
                    run.shared.input_tokens.fetch_add(inp, Ordering::SeqCst);
                    if run.steps.is_empty() {
                        run.guard.disarm();
                    }
                    return Some((Ok(Frame::data(bytes)), run));
                }
            }
        }
    });
    StreamBody::new(s).boxed_unsync()
}
