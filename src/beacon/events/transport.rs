//! The HTTP side of the beacon event stream, under `eventsource-client`.
//!
//! Owns two [`HttpTransport`]s: [`Reqwest`], which sends the subscription
//! over our `reqwest` client (no redirects followed, no retries, no overall
//! timeout: the stream is long-lived and the watch loop owns liveness), and
//! [`Bounded`], which wraps any transport's response body so that no line
//! and no event grows past a cap ([`MAX_LINE_BYTES`]) before the SSE parser
//! buffers it, and so that invalid UTF-8 becomes U+FFFD instead of an error
//! that would end the stream. Both scan each byte once, as it arrives: no
//! buffer is rescanned and none holds more than a few bytes of its own.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use sync_wrapper::{SyncFuture, SyncStream};

/// The longest line, and the largest event, the stream accepts: 1 MiB.
///
/// A line counts the bytes since the last line break; an event counts its
/// field lines (`event:`, `data:`, `id:`, …; not comments) since the last
/// blank line. Beacon events are a few hundred bytes (the largest, a
/// `voluntary_exit`, is under 400), so anything near this is a broken or
/// hostile server: the session ends with [`Oversize`] and the watch loop
/// reconnects. The parser's buffers therefore stay within about this size.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most characters of an offending line quoted in an error or a log.
pub const EXCERPT_CHARS: usize = 64;

/// At most [`EXCERPT_CHARS`] characters of `bytes` (lossy UTF-8), with `…`
/// when cut.
pub fn excerpt(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(HEAD_BYTES)];
    // Key and bearer shapes go before the cut, as everywhere.
    let text = crate::secret::redact_shapes(&String::from_utf8_lossy(head));
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() || head.len() < bytes.len() {
        out.push('…');
    }
    out
}

/// A line or an event over the cap: why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversize {
    /// `"line"` or `"event"`.
    pub what: &'static str,
    pub limit: usize,
    /// The start of the offending line ([`excerpt`]).
    pub starts: String,
}

impl fmt::Display for Oversize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} longer than {} bytes (line starts {:?})",
            if self.what == "line" {
                "a line"
            } else {
                "an event"
            },
            self.limit,
            self.starts
        )
    }
}

impl std::error::Error for Oversize {}

/// Sends requests with a `reqwest` client built for event streams.
#[derive(Clone)]
pub struct Reqwest {
    client: reqwest::Client,
}

impl Reqwest {
    /// A client with a 5 s connect timeout, no overall timeout and no
    /// redirects (a redirect could lead away from the node whose chain was
    /// checked).
    pub fn new() -> Result<Self, String> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("keysync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(|client| Reqwest { client })
            .map_err(|e| format!("cannot build the event stream client: {e}"))
    }
}

fn transport_error(e: reqwest::Error) -> TransportError {
    // The URL is logged by the caller, without its query.
    TransportError::new(e.without_url())
}

impl HttpTransport for Reqwest {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let client = self.client.clone();
        // reqwest's futures and body streams are Send but not Sync; they are
        // only ever polled through `Pin<&mut _>`, which SyncFuture/SyncStream
        // make Sync without a lock.
        Box::pin(SyncFuture::new(async move {
            let (parts, body) = request.into_parts();
            let mut req = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers);
            if let Some(body) = body {
                req = req.body(body);
            }
            let resp = req.send().await.map_err(transport_error)?;
            let mut out = Response::builder().status(resp.status());
            if let Some(h) = out.headers_mut() {
                *h = resp.headers().clone();
            }
            let body: ByteStream = Box::pin(SyncStream::new(
                resp.bytes_stream().map_err(transport_error),
            ));
            out.body(body).map_err(TransportError::new)
        }))
    }
}

/// Wraps a transport so that its response bodies are [`BoundedBody`]s.
#[derive(Clone)]
pub struct Bounded<T> {
    inner: T,
    limit: usize,
}

impl<T: HttpTransport> Bounded<T> {
    /// `limit` bytes per line and per event ([`MAX_LINE_BYTES`] in use).
    pub fn new(inner: T, limit: usize) -> Self {
        Bounded { inner, limit }
    }
}

impl<T: HttpTransport> HttpTransport for Bounded<T> {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let response = self.inner.request(request);
        let limit = self.limit;
        Box::pin(async move {
            let resp = response.await?;
            Ok(resp.map(|body| Box::pin(BoundedBody::new(body, limit)) as ByteStream))
        })
    }
}

/// A response body that fails (once, then ends) as soon as a line or an
/// event passes its limit, and that repairs invalid UTF-8.
///
/// It also starts the stream with [`PRIME`], an empty `id:` in an event of
/// its own (dispatched as nothing). eventsource-client 0.18.0 takes a
/// block of lines the SSE rules say to ignore (an unknown field, an empty
/// `event:`, a `retry:` that is not a number) as an invalid event and ends
/// the stream, unless an `id:` has been seen; after one, such a block is
/// ignored as the rules say. keysync reads no event ids and follows no
/// `Last-Event-ID` (its reconnects are its own), so the empty id changes
/// nothing else. A byte order mark the server sends first is kept first.
pub struct BoundedBody {
    inner: ByteStream,
    framing: Framing,
    utf8: Utf8Repair,
    done: bool,
    primed: bool,
}

/// What [`BoundedBody`] sends before the server's first bytes.
pub const PRIME: &[u8] = b"id:\n\n";

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl BoundedBody {
    pub fn new(inner: ByteStream, limit: usize) -> Self {
        BoundedBody {
            inner,
            framing: Framing::new(limit),
            utf8: Utf8Repair::default(),
            done: false,
            primed: false,
        }
    }

    /// The first chunk, [`PRIME`] put in front (after a BOM, if any).
    fn prime(&mut self, chunk: Bytes) -> Bytes {
        self.primed = true;
        let (bom, rest) = match chunk.strip_prefix(BOM) {
            Some(rest) => (BOM, rest),
            None => (&b""[..], &chunk[..]),
        };
        Bytes::from([bom, PRIME, rest].concat())
    }
}

impl Stream for BoundedBody {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let chunk = this.utf8.repair(chunk);
                // The server's bytes are bounded; the prime is ours (and
                // ends in a blank line, so the count starts afresh after it).
                match this.framing.scan(&chunk) {
                    // The first bytes, not the first chunk: a chunk that is
                    // only the start of a character (a byte order mark cut
                    // in two) comes out empty, and the mark must stay first.
                    Ok(()) if !this.primed && !chunk.is_empty() => {
                        Poll::Ready(Some(Ok(this.prime(chunk))))
                    }
                    Ok(()) => Poll::Ready(Some(Ok(chunk))),
                    Err(e) => {
                        this.done = true;
                        Poll::Ready(Some(Err(TransportError::new(e))))
                    }
                }
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// Line and event sizes, tracked byte by byte across chunks (the SSE line
/// breaks: CRLF, LF or CR).
#[derive(Debug)]
struct Framing {
    limit: usize,
    /// Bytes of the current line so far.
    line: usize,
    /// The current line is a comment (starts with `:`).
    comment: bool,
    /// Bytes of the current event's field lines, line breaks included.
    event: usize,
    /// The last byte was a CR: a LF right after it ends nothing.
    after_cr: bool,
    /// The start of the current line, for the error message.
    head: Vec<u8>,
}

/// Bytes of a line kept for its excerpt (UTF-8 takes up to 4 per char).
const HEAD_BYTES: usize = EXCERPT_CHARS * 4;

impl Framing {
    fn new(limit: usize) -> Self {
        Framing {
            limit,
            line: 0,
            comment: false,
            event: 0,
            after_cr: false,
            head: Vec::with_capacity(HEAD_BYTES),
        }
    }

    fn scan(&mut self, mut rest: &[u8]) -> Result<(), Oversize> {
        while let Some(&first) = rest.first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                rest = &rest[1..];
                continue;
            }
            let end = rest.iter().position(|b| *b == b'\n' || *b == b'\r');
            let text = &rest[..end.unwrap_or(rest.len())];
            if self.line == 0 {
                self.comment = text.first() == Some(&b':');
            }
            let keep = HEAD_BYTES.saturating_sub(self.head.len()).min(text.len());
            self.head.extend_from_slice(&text[..keep]);
            self.line += text.len();
            if !self.comment {
                self.event += text.len();
            }
            if !text.is_empty() {
                if self.line > self.limit {
                    return Err(self.oversize("line"));
                }
                if self.event > self.limit {
                    return Err(self.oversize("event"));
                }
            }
            let Some(end) = end else { break };
            if self.line == 0 {
                // A blank line: the event is dispatched.
                self.event = 0;
            } else if !self.comment {
                // The parser joins data lines with a line break.
                self.event += 1;
            }
            self.line = 0;
            self.comment = false;
            self.head.clear();
            self.after_cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
        }
        Ok(())
    }

    fn oversize(&self, what: &'static str) -> Oversize {
        let mut starts = excerpt(&self.head);
        if self.line > self.head.len() && !starts.ends_with('…') {
            starts.push('…');
        }
        Oversize {
            what,
            limit: self.limit,
            starts,
        }
    }
}

/// Replaces invalid UTF-8 with U+FFFD, holding back (at most 3 bytes of) a
/// character cut by a chunk boundary until the next chunk completes it.
#[derive(Debug, Default)]
struct Utf8Repair {
    pending: Vec<u8>,
}

impl Utf8Repair {
    fn repair(&mut self, chunk: Bytes) -> Bytes {
        if self.pending.is_empty() && std::str::from_utf8(&chunk).is_ok() {
            return chunk;
        }
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(input.len() + 8);
        let mut rest = &input[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    out.extend_from_slice(rest);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.extend_from_slice(good);
                    match e.error_len() {
                        Some(n) => {
                            out.extend_from_slice("\u{FFFD}".as_bytes());
                            rest = &bad[n..];
                        }
                        None => {
                            // A character cut at the end: wait for the rest.
                            self.pending.extend_from_slice(bad);
                            break;
                        }
                    }
                }
            }
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(limit: usize, chunks: &[&[u8]]) -> Result<(), Oversize> {
        let mut f = Framing::new(limit);
        chunks.iter().try_for_each(|c| f.scan(c))
    }

    #[test]
    fn a_line_may_reach_the_limit_but_not_pass_it() {
        let line = [b'x'; 100];
        assert!(scan_all(100, &[&line, b"\n\n"]).is_ok());
        let e = scan_all(99, &[&line[..50], &line[50..]]).unwrap_err();
        assert_eq!(e.what, "line");
        // Every line break resets the count; CRLF, LF and CR alike.
        let many = b"data: 1234567\r\n\r\ndata: 1234567\n\ndata: 1234567\r\r".repeat(100);
        assert!(scan_all(20, &[&many]).is_ok());
    }

    #[test]
    fn an_event_of_many_short_lines_is_capped_but_comments_are_not() {
        let lines = b"data: 0123456789\n".repeat(10);
        let e = scan_all(100, &[&lines]).unwrap_err();
        assert_eq!(e.what, "event");
        assert_eq!(e.starts, "data: 0123456789");
        // The same lines split by blank lines are ten small events.
        let events = b"data: 0123456789\n\n".repeat(100);
        assert!(scan_all(100, &[&events]).is_ok());
        // Keep-alive comments without blank lines are no event.
        let comments = b": keep-alive\n".repeat(100);
        assert!(scan_all(100, &[&comments]).is_ok());
        // A CRLF split across chunks is one line break, not a blank line:
        // the event goes on (2 × 17 bytes, then 7 more pass 40).
        let mut f = Framing::new(40);
        for _ in 0..2 {
            f.scan(b"data: 0123456789\r").unwrap();
            f.scan(b"\n").unwrap();
        }
        assert_eq!(f.scan(b"data: x").unwrap_err().what, "event");
    }

    #[test]
    fn the_error_quotes_a_short_excerpt_of_the_line() {
        let mut f = Framing::new(1000);
        let mut e = None;
        for _ in 0..100 {
            if let Err(x) = f.scan(&[b'y'; 64]) {
                e = Some(x);
                break;
            }
        }
        let e = e.expect("capped");
        assert_eq!(e.starts.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.starts.ends_with('…'));
        let text = e.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(text.contains("longer than 1000 bytes"), "{text}");
        assert_eq!(excerpt(b"short"), "short");
        assert_eq!(excerpt("é".repeat(100).as_bytes()).chars().count(), 65);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_cut_characters_are_rejoined() {
        let mut r = Utf8Repair::default();
        assert_eq!(&r.repair(Bytes::from_static(b"ok"))[..], b"ok");
        assert_eq!(
            &r.repair(Bytes::from_static(b"a\xffb"))[..],
            "a\u{FFFD}b".as_bytes()
        );
        let e = "é".as_bytes();
        assert_eq!(&r.repair(Bytes::copy_from_slice(&[b'x', e[0]]))[..], b"x");
        assert_eq!(
            &r.repair(Bytes::copy_from_slice(&[e[1], b'y']))[..],
            "éy".as_bytes()
        );
    }
}
