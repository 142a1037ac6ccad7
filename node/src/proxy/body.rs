//! Response bodies the API listener sends: a complete buffer, or a live stream that pulls upstream SSE
//! events, translates them, and forwards each one as soon as it is complete (no buffering of the stream).
//!
//! A stream ends in exactly one of three ways: the upstream's terminal event was translated (normal end);
//! the upstream failed — cut connection, clean end without the terminal event, malformed event, error
//! event, or silence past the idle timeout — and the caller gets one explicit error event in its own
//! shape; or the client went away, which drops this body, which drops (and so cancels) the upstream
//! request at once.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::meter::RequestMeter;
use crate::api::Protocol;
use crate::error::GatewayError;
use crate::metrics::Outcome;
use crate::providers::UpstreamBody;
use crate::sse::{SseError, SseParser};
use crate::translate::stream::StreamTranslator;

pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(Box<StreamingBody>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        ResponseBody::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(stream) => stream.poll_frame_inner(cx).map(|frame| frame.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Stream(stream) => stream.finished && stream.pending.is_none() && stream.batch.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// Largest frame built from events that were ready at once.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Most scheduler turns a frame may wait for chunks the upstream connection has already read.
const MAX_YIELDS: u32 = 64;

/// Turns without a new event after which the frame is sent. A chunk hyper's client connection task has
/// already read takes more than one turn to reach the body (the body's poll signals "want", the connection
/// task decodes and hands it over, then wakes the body).
const IDLE_TURNS: u32 = 2;

/// One step of the stream: caller bytes to send, the normal end, or a failure.
enum Step {
    Output(Bytes),
    End,
    Failed(GatewayError),
}

pub struct StreamingBody {
    upstream: Option<UpstreamBody>,
    parser: SseParser,
    translator: StreamTranslator,
    caller: Protocol,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    out: BytesMut,
    /// Output produced while priming, sent first.
    pending: Option<Bytes>,
    finished: bool,
    /// The upstream body ended; the parser has been told.
    ended_input: bool,
    meter: RequestMeter,
    /// Events translated but not yet sent: the frame being built.
    batch: Option<BytesMut>,
    /// A turn given to the scheduler before sending `batch` (see `poll_frame_inner`).
    yielding: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    yields: u32,
    /// Events arrived since the last turn given to the scheduler.
    progress: bool,
    /// Consecutive turns that brought nothing.
    idle_turns: u32,
    /// PII redaction of the caller-shaped output (guardrails with action `redact`).
    redaction: Option<super::redact_out::SseRedaction>,
    /// The completion goes on the span when the stream ends (`trace_content` routes).
    content: Option<super::trace_content::ContentCapture>,
}

impl StreamingBody {
    pub fn new(
        upstream: UpstreamBody,
        translator: StreamTranslator,
        caller: Protocol,
        idle_timeout: Duration,
        meter: RequestMeter,
    ) -> Self {
        StreamingBody {
            upstream: Some(upstream),
            parser: SseParser::new(),
            translator,
            caller,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            out: BytesMut::with_capacity(4096),
            pending: None,
            finished: false,
            ended_input: false,
            meter,
            batch: None,
            yielding: None,
            yields: 0,
            progress: false,
            idle_turns: 0,
            redaction: None,
            content: None,
        }
    }

    /// Filters the output through `redaction` (see `redact_out`).
    pub(super) fn with_redaction(mut self, redaction: Option<super::redact_out::SseRedaction>) -> Self {
        self.redaction = redaction;
        self
    }

    /// Records the assembled completion on the span when the stream ends (see `trace_content`).
    pub(super) fn with_content(mut self, content: Option<super::trace_content::ContentCapture>) -> Self {
        self.content = content;
        self
    }

    /// Reads until the first caller-visible output, so a target that fails before sending anything can be
    /// replaced by the next one transparently. On error the upstream is dropped and nothing was sent.
    pub async fn prime(&mut self) -> Result<(), GatewayError> {
        match std::future::poll_fn(|cx| self.poll_step(cx)).await {
            Step::Output(bytes) => {
                self.pending = Some(bytes);
                Ok(())
            }
            Step::End => Err(GatewayError::upstream_invalid("upstream stream ended before sending any event")),
            Step::Failed(err) => Err(err),
        }
    }

    /// The meter of a stream that failed while priming, so the attempt is still recorded.
    pub fn abandon(mut self, err: &GatewayError) {
        self.upstream = None;
        self.finished = true;
        tracing::debug!(%err, "stream failed before its first event");
        self.finish(Outcome::UpstreamError);
    }

    /// Sends every event that is ready now in one frame (one write), and each event as soon as it is
    /// ready when the upstream is slower than the client: coalescing never waits for more input.
    ///
    /// "Ready now" includes what the upstream connection has already read: hyper's client hands a body
    /// over one chunk at a time through its connection task, so a whole response that arrived in one read
    /// still shows up here chunk by chunk, each after a scheduler turn. Before sending a frame the body
    /// therefore yields to the scheduler (`yield_now`: after every task already woken, the connection task
    /// included) and sends once a turn brings nothing new. A turn costs far less than the write and the
    /// receiver wake-up it saves (17 writes per 16-event stream from the load benchmark's mock before, 2 after).
    fn poll_frame_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(bytes) = self.pending.take() {
            return Poll::Ready(Some(bytes));
        }
        if self.finished && self.batch.is_none() {
            return Poll::Ready(None);
        }
        loop {
            if let Some(yielding) = self.yielding.as_mut() {
                if yielding.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.yielding = None;
                self.yields += 1;
            }
            match self.poll_step(cx) {
                Poll::Pending => {
                    let Some(batch) = self.batch.take() else {
                        return Poll::Pending;
                    };
                    if self.yielding_made_progress() {
                        self.idle_turns = 0;
                    } else {
                        self.idle_turns += 1;
                    }
                    if self.idle_turns <= IDLE_TURNS && self.yields < MAX_YIELDS {
                        self.batch = Some(batch);
                        self.yielding = Some(Box::pin(tokio::task::yield_now()));
                        continue;
                    }
                    self.yields = 0;
                    self.idle_turns = 0;
                    return Poll::Ready(Some(batch.freeze()));
                }
                Poll::Ready(Step::Output(bytes)) => {
                    let batch = self.batch.get_or_insert_with(BytesMut::new);
                    batch.extend_from_slice(&bytes);
                    self.progress = true;
                    if self.finished || batch.len() >= COALESCE_LIMIT {
                        self.yields = 0;
                        return Poll::Ready(self.batch.take().map(BytesMut::freeze));
                    }
                }
                Poll::Ready(Step::End) => {
                    self.yields = 0;
                    return Poll::Ready(self.batch.take().map(BytesMut::freeze));
                }
                Poll::Ready(Step::Failed(err)) => {
                    tracing::warn!(%err, "upstream stream failed; ending the client stream with an error event");
                    let mut batch = self.batch.take().unwrap_or_default();
                    batch.extend_from_slice(&err.sse_event(self.caller));
                    return Poll::Ready(Some(batch.freeze()));
                }
            }
        }
    }

    /// Whether events arrived since the last turn given to the scheduler (then another turn may bring
    /// more); resets the mark.
    fn yielding_made_progress(&mut self) -> bool {
        std::mem::take(&mut self.progress)
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            // Drain complete events already buffered before reading more.
            match self.parser.next_event() {
                Ok(Some(event)) => {
                    let estimator = self.meter.estimator().clone();
                    let estimate = move |text: &str| estimator.estimate(text);
                    if let Err(err) = self.translator.on_event(&event, &mut self.out, &estimate) {
                        return Poll::Ready(self.fail(err));
                    }
                    if let Some(redaction) = &mut self.redaction {
                        let translated = self.out.split();
                        redaction.filter(&translated, &mut self.out);
                    }
                    if !self.out.is_empty() {
                        if !self.translator.facts().text.is_empty() {
                            self.meter.mark_first_token();
                        }
                        if self.translator.facts().complete {
                            self.complete();
                        }
                        return Poll::Ready(Step::Output(self.out.split().freeze()));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(SseError::EventTooLarge) => {
                    return Poll::Ready(
                        self.fail(GatewayError::upstream_invalid("upstream sent an unterminated or oversized event")),
                    );
                }
            }
            if self.translator.facts().complete {
                self.complete();
                return Poll::Ready(Step::End);
            }
            if self.ended_input {
                let detail =
                    if self.parser.has_partial() { "in the middle of an event" } else { "without its final event" };
                return Poll::Ready(
                    self.fail(GatewayError::upstream_invalid(format!("upstream stream ended {detail}"))),
                );
            }
            let Some(upstream) = self.upstream.as_mut() else {
                return Poll::Ready(Step::End);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.push(&data);
                        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(self.fail(GatewayError::upstream_invalid(format!(
                        "upstream connection failed mid-stream: {err}"
                    ))));
                }
                Poll::Ready(None) => {
                    // Let the parser release an event held back for a possible `\n`, then decide.
                    self.ended_input = true;
                    self.parser.end_of_input();
                    self.upstream = None;
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(self.fail(GatewayError::upstream_timeout(format!(
                            "upstream sent nothing for {} ms",
                            self.idle_timeout.as_millis()
                        ))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn complete(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.upstream = None;
        self.finish(Outcome::Ok);
    }

    /// Meters the stream as it stands: settled at the provider's final usage if it arrived, else as
    /// unknown (the whole reservation, or what was seen generated if more).
    fn finish(&mut self, outcome: Outcome) {
        let content = self.content.take();
        let facts = self.translator.facts();
        if let Some(content) = content {
            content.output_text(&facts.text, facts.finish_reason.as_deref());
        }
        let (final_usage, partial) = (facts.final_usage(), facts.usage);
        // The text is read only to count it when usage is unknown.
        let text = if final_usage.is_some() { String::new() } else { facts.text.clone() };
        self.meter.set_finish_reason(facts.finish_reason.clone());
        self.meter.finish_with_partial(outcome, final_usage, partial, &text);
    }

    fn fail(&mut self, err: GatewayError) -> Step {
        self.finished = true;
        self.upstream = None; // cancel the upstream request now
        self.finish(Outcome::UpstreamError);
        Step::Failed(err)
    }
}

impl Drop for StreamingBody {
    fn drop(&mut self) {
        if !self.meter.is_recorded() {
            // The client went away mid-stream. Unless the provider's final usage already passed, the upstream
            // may have generated (and will bill) up to the whole reservation: charged as unknown.
            self.finish(Outcome::Cancelled);
        }
    }
}
