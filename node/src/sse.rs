//! An incremental Server-Sent Events parser. Body chunks arrive split anywhere (mid-line, mid-UTF-8,
//! between `\r` and `\n`); the parser buffers the partial event and yields only complete ones, so no
//! event is ever lost or half-forwarded.
//!
//! Hand-written rather than taken from a crate (eventsource-stream, sse-codec): those yield owned
//! `String`s per event and decode UTF-8 up front, while the proxy forwards most events untouched as
//! `Bytes` slices of the upstream's buffer, and must keep the raw bytes of events it does not understand.
//! The format is a page of the HTML spec; the parser is fuzzed-by-split in its tests (every split point).

use bytes::{Buf, Bytes, BytesMut};

/// One complete event. `data` is the `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<Bytes>,
    pub data: Bytes,
}

impl SseEvent {
    pub fn event_name(&self) -> &[u8] {
        self.event.as_deref().unwrap_or(b"message")
    }

    /// Writes the event in canonical form (`event:` line when named, one `data:` line per line).
    pub fn write_to(&self, out: &mut BytesMut) {
        if let Some(name) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name);
            out.extend_from_slice(b"\n");
        }
        for line in self.data.split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
    }
}

/// Upper bound on one buffered event; a stream that never terminates an event is broken, not slow.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: BytesMut,
    /// How far `buffer` has been scanned for an event boundary already.
    scanned: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    EventTooLarge,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Marks the end of the input. A final `\r` may have been held back waiting for a `\n`; with no more
    /// input coming it is a complete line ending, so the last event becomes available.
    pub fn end_of_input(&mut self) {
        if self.buffer.ends_with(b"\r") {
            self.buffer.extend_from_slice(b"\n");
        }
    }

    /// True when bytes of an unfinished event are buffered (a stream ending here was cut mid-event).
    pub fn has_partial(&self) -> bool {
        self.buffer.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// The next complete event, if one is buffered. Events without data (comments, keep-alives) are skipped.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            let Some((block_end, separator_len)) = self.find_boundary() else {
                if self.buffer.len() > MAX_EVENT_BYTES {
                    return Err(SseError::EventTooLarge);
                }
                return Ok(None);
            };
            let block = self.buffer.split_to(block_end).freeze();
            self.buffer.advance(separator_len);
            self.scanned = 0;
            if let Some(event) = parse_block(block) {
                return Ok(Some(event));
            }
        }
    }

    /// Finds the end of the first event: a blank line, with any mix of `\n`, `\r\n` and `\r` line endings.
    fn find_boundary(&mut self) -> Option<(usize, usize)> {
        let bytes = &self.buffer[..];
        // Resume a little before where the last scan stopped, since a separator may straddle chunks.
        let mut index = self.scanned.saturating_sub(3);
        while let Some(offset) = memchr::memchr2(b'\n', b'\r', &bytes[index..]) {
            let line_end = index + offset;
            let after_first = match (bytes[line_end], bytes.get(line_end + 1)) {
                (b'\r', Some(b'\n')) => line_end + 2,
                (b'\r', None) => {
                    // A lone `\r` at the end may still be followed by `\n`: wait for more input.
                    self.scanned = line_end;
                    return None;
                }
                _ => line_end + 1,
            };
            match (bytes.get(after_first), bytes.get(after_first + 1)) {
                (Some(b'\n'), _) => return Some((line_end, after_first + 1 - line_end)),
                (Some(b'\r'), Some(b'\n')) => return Some((line_end, after_first + 2 - line_end)),
                (Some(b'\r'), Some(_)) => return Some((line_end, after_first + 1 - line_end)),
                (Some(b'\r'), None) | (None, _) => {
                    self.scanned = line_end;
                    return None;
                }
                _ => index = after_first,
            }
        }
        self.scanned = bytes.len();
        None
    }
}

/// Parses one event block (no trailing blank line). Returns `None` for blocks with no `data:` field.
fn parse_block(block: Bytes) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut start = 0;
    let len = block.len();
    while start < len {
        let end = memchr::memchr2(b'\n', b'\r', &block[start..]).map_or(len, |i| start + i);
        let line = block.slice(start..end);
        start = end + 1;
        if end < len && block[end] == b'\r' && block.get(end + 1) == Some(&b'\n') {
            start += 1;
        }
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(colon) => {
                let mut value = line.slice(colon + 1..);
                if value.first() == Some(&b' ') {
                    value.advance(1);
                }
                (line.slice(..colon), value)
            }
            None => (line.clone(), Bytes::new()),
        };
        match &field[..] {
            b"event" => event = Some(value),
            b"data" => match (&mut joined, &data) {
                (Some(buffer), _) => {
                    buffer.extend_from_slice(b"\n");
                    buffer.extend_from_slice(&value);
                }
                (None, Some(first)) => {
                    let mut buffer = BytesMut::from(&first[..]);
                    buffer.extend_from_slice(b"\n");
                    buffer.extend_from_slice(&value);
                    joined = Some(buffer);
                }
                (None, None) => data = Some(value),
            },
            _ => {} // `id:` and `retry:` do not matter to a proxy that re-frames events.
        }
    }
    let data = match joined {
        Some(buffer) => buffer.freeze(),
        None => data?,
    };
    Some(SseEvent { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Ok(Some(event)) = parser.next_event() {
                events.push((
                    event.event.map(|e| String::from_utf8_lossy(&e).into_owned()),
                    String::from_utf8_lossy(&event.data).into_owned(),
                ));
            }
        }
        parser.end_of_input();
        while let Ok(Some(event)) = parser.next_event() {
            events.push((
                event.event.map(|e| String::from_utf8_lossy(&e).into_owned()),
                String::from_utf8_lossy(&event.data).into_owned(),
            ));
        }
        events
    }

    #[test]
    fn parses_named_and_unnamed_events() {
        let events = collect(&[b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: [DONE]\n\n"]);
        assert_eq!(events, vec![(Some("ping".into()), "{\"type\":\"ping\"}".into()), (None, "[DONE]".into())]);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let stream: &[u8] =
            b"event: a\r\ndata: one\r\n\r\n: comment\n\ndata: two\ndata: lines\n\nevent: b\rdata: three\r\r";
        let whole = collect(&[stream]);
        assert_eq!(whole.len(), 3);
        for split in 0..stream.len() {
            assert_eq!(collect(&[&stream[..split], &stream[split..]]), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&bytewise), whole);
    }

    #[test]
    fn partial_event_is_held_back_and_reported() {
        let mut parser = SseParser::new();
        parser.push(b"data: {\"a\":");
        assert_eq!(parser.next_event(), Ok(None));
        assert!(parser.has_partial());
        parser.push(b"1}\n\n");
        assert!(matches!(parser.next_event(), Ok(Some(_))));
        assert!(!parser.has_partial());
    }

    #[test]
    fn unterminated_giant_event_is_an_error() {
        let mut parser = SseParser::new();
        parser.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert_eq!(parser.next_event(), Err(SseError::EventTooLarge));
    }
}
