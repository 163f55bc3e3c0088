//! The beacon node's event stream (`GET /eth/v1/events`, server-sent events).
//!
//! Owns the subscription URL (every topic as its own `topics=` parameter,
//! never comma-joined), one subscription's life on top of
//! `eventsource-client` ([`Subscription`]: connect once, then complete events
//! and keep-alive comments, then why it ended; the crate's own reconnect is
//! off), and the typed [`Event`]s keysync reacts to. Quoted integers become
//! integers here. The HTTP side, with its cap on line and event size, is
//! [`transport`]. Does not decide what an event means for the registry, nor
//! when to reconnect: the watch loop does.

pub mod transport;

use eventsource_client::{self as es, Client as _};
use futures_util::StreamExt;
use launchdarkly_sdk_transport::HttpTransport;
use serde::Deserialize;
use url::Url;

use crate::domain::ValidatorIndex;
pub use transport::{excerpt, Oversize, MAX_LINE_BYTES};

/// The topics keysync subscribes to, with their wire names.
pub const TOPICS: [&str; 4] = [
    "head",
    "finalized_checkpoint",
    "voluntary_exit",
    "chain_reorg",
];

/// A parsed beacon event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Head {
        slot: u64,
        epoch_transition: bool,
    },
    FinalizedCheckpoint {
        epoch: u64,
    },
    VoluntaryExit {
        validator_index: ValidatorIndex,
        epoch: u64,
    },
    ChainReorg {
        slot: u64,
        depth: u64,
    },
    /// A topic keysync did not ask for or does not know (ignored).
    Other(String),
}

#[derive(Deserialize)]
struct HeadData {
    #[serde(deserialize_with = "super::quoted_u64")]
    slot: u64,
    #[serde(default)]
    epoch_transition: bool,
}

/// `head_v2` wraps the payload as `{"version", "data": {…}}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadAny {
    Wrapped { data: HeadData },
    Bare(HeadData),
}

#[derive(Deserialize)]
struct FinalizedData {
    #[serde(deserialize_with = "super::quoted_u64")]
    epoch: u64,
}

#[derive(Deserialize)]
struct ExitMessage {
    #[serde(deserialize_with = "super::quoted_u64")]
    epoch: u64,
    #[serde(deserialize_with = "super::quoted_u64")]
    validator_index: u64,
}

#[derive(Deserialize)]
struct ExitData {
    message: ExitMessage,
}

#[derive(Deserialize)]
struct ReorgData {
    #[serde(deserialize_with = "super::quoted_u64")]
    slot: u64,
    #[serde(default, deserialize_with = "super::quoted_u64")]
    depth: u64,
}

/// Parses one SSE message into an [`Event`]; a known topic with a body that
/// does not parse is an error (the caller logs it and carries on).
pub fn parse_event(event: &str, data: &str) -> Result<Event, serde_json::Error> {
    Ok(match event {
        "head" | "head_v2" => {
            let h = match serde_json::from_str::<HeadAny>(data)? {
                HeadAny::Wrapped { data } | HeadAny::Bare(data) => data,
            };
            Event::Head {
                slot: h.slot,
                epoch_transition: h.epoch_transition,
            }
        }
        "finalized_checkpoint" => Event::FinalizedCheckpoint {
            epoch: serde_json::from_str::<FinalizedData>(data)?.epoch,
        },
        "voluntary_exit" => {
            let m = serde_json::from_str::<ExitData>(data)?.message;
            Event::VoluntaryExit {
                validator_index: m.validator_index,
                epoch: m.epoch,
            }
        }
        "chain_reorg" => {
            let r = serde_json::from_str::<ReorgData>(data)?;
            Event::ChainReorg {
                slot: r.slot,
                depth: r.depth,
            }
        }
        other => Event::Other(other.to_string()),
    })
}

/// `base`'s `/eth/v1/events`, subscribed to [`TOPICS`] (one `topics=`
/// parameter each: some servers never answer a comma-joined list).
pub fn events_url(base: &Url) -> Url {
    let mut url = super::join(base, "eth/v1/events");
    {
        let mut q = url.query_pairs_mut();
        for t in TOPICS {
            q.append_pair("topics", t);
        }
    }
    url
}

/// What a connected subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    /// A complete event whose data did not parse: skip it and go on.
    Invalid(BadEvent),
    /// A keep-alive comment: the node is alive.
    KeepAlive,
}

/// An event whose data did not parse, described in a few words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    /// The event's name ([`excerpt`]).
    pub topic: String,
    /// Why its data did not parse (at most an excerpt of the data).
    pub error: String,
}

/// Why a subscription could not start, or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("closed by the server")]
    Closed,
    #[error("{0}")]
    TooLarge(Oversize),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("redirected (not followed: the chain was checked on this URL)")]
    Redirected,
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("not an event stream: {0}")]
    Protocol(String),
}

impl StreamError {
    /// A short, fixed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StreamError::Closed => "closed",
            StreamError::TooLarge(_) => "too_large",
            StreamError::Status(_) | StreamError::Redirected => "http_status",
            StreamError::Connection(_) => "connection",
            StreamError::Protocol(_) => "protocol",
        }
    }
}

/// One subscription to a node's event stream: [`connected`](Self::connected)
/// once, then [`next`](Self::next) until it fails. Never reconnects.
pub struct Subscription {
    stream: es::BoxStream<Result<es::SSE, es::Error>>,
}

impl Subscription {
    /// Prepares a subscription to `url` (see [`events_url`]) over
    /// `transport`, with lines and events capped at `limit` bytes
    /// ([`MAX_LINE_BYTES`]). Nothing is sent until [`connected`](Self::connected).
    pub fn new<T: HttpTransport>(
        url: &Url,
        transport: T,
        limit: usize,
    ) -> Result<Self, StreamError> {
        let invalid = |e: es::Error| StreamError::Protocol(excerpt(e.to_string().as_bytes()));
        let client = es::ClientBuilder::for_url(url.as_str())
            .map_err(invalid)?
            .header("Accept", "text/event-stream")
            .map_err(invalid)?
            // One attempt: the watch loop owns reconnects, failover and backoff.
            .reconnect(es::ReconnectOptions::reconnect(false).build())
            .redirect_limit(0)
            .build_with_transport(transport::Bounded::new(transport, limit));
        Ok(Subscription {
            stream: client.stream(),
        })
    }

    /// Sends the request and waits for a 2xx answer.
    pub async fn connected(&mut self) -> Result<(), StreamError> {
        match self.stream.next().await {
            Some(Ok(es::SSE::Connected(_))) => Ok(()),
            // The client always reports the connection before any event.
            Some(Ok(_)) => Err(StreamError::Protocol("an event before the answer".into())),
            Some(Err(e)) => Err(stream_error(e)),
            None => Err(StreamError::Closed),
        }
    }

    /// The next complete event or keep-alive comment; an error ends the
    /// subscription. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next(&mut self) -> Result<Item, StreamError> {
        loop {
            return match self.stream.next().await {
                Some(Ok(es::SSE::Event(ev))) => Ok(item(&ev.event_type, &ev.data)),
                Some(Ok(es::SSE::Comment(_))) => Ok(Item::KeepAlive),
                Some(Ok(es::SSE::Connected(_))) => continue,
                Some(Err(e)) => Err(stream_error(e)),
                None => Err(StreamError::Closed),
            };
        }
    }
}

fn item(topic: &str, data: &str) -> Item {
    match parse_event(topic, data) {
        Ok(e) => Item::Event(e),
        Err(e) => Item::Invalid(BadEvent {
            topic: excerpt(topic.as_bytes()),
            error: json_error(&e),
        }),
    }
}

/// serde_json's message, which can quote a whole string value, cut to an
/// excerpt (keeping where in the data it failed).
fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.chars().count() <= transport::EXCERPT_CHARS {
        return text;
    }
    format!(
        "{} (line {}, column {})",
        excerpt(text.as_bytes()),
        e.line(),
        e.column()
    )
}

/// An error and its causes, `: `-separated.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        text.push_str(": ");
        text.push_str(&c.to_string());
        next = c.source();
    }
    text
}

fn stream_error(e: es::Error) -> StreamError {
    match e {
        es::Error::Eof | es::Error::UnexpectedEof => StreamError::Closed,
        es::Error::UnexpectedResponse(r, _) => StreamError::Status(r.status()),
        es::Error::MaxRedirectLimitReached(_) | es::Error::MalformedLocationHeader(_) => {
            StreamError::Redirected
        }
        es::Error::TimedOut => StreamError::Connection("timed out".into()),
        es::Error::Transport(t) => match t.inner().downcast_ref::<Oversize>() {
            Some(o) => StreamError::TooLarge(o.clone()),
            None => StreamError::Connection(causes(t.inner())),
        },
        es::Error::HttpStream(e) => StreamError::Connection(causes(e.as_ref())),
        other => StreamError::Protocol(excerpt(other.to_string().as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use launchdarkly_sdk_transport::{ByteStream, Request, Response, ResponseFuture};

    use super::*;

    /// Answers every request with 200 and `chunks` as the body.
    #[derive(Clone)]
    struct Canned(Arc<Vec<Bytes>>);

    impl HttpTransport for Canned {
        fn request(&self, _: Request<Option<Bytes>>) -> ResponseFuture {
            let chunks = self.0.clone();
            Box::pin(async move {
                let body: ByteStream = Box::pin(futures_util::stream::iter(
                    chunks.iter().cloned().map(Ok).collect::<Vec<_>>(),
                ));
                Response::builder()
                    .status(200)
                    .body(body)
                    .map_err(launchdarkly_sdk_transport::TransportError::new)
            })
        }
    }

    /// Everything a subscription yields for `bytes` cut in `size`-byte
    /// chunks, and how it ended.
    async fn run(bytes: &[u8], size: usize, limit: usize) -> (Vec<Item>, StreamError) {
        let chunks = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
        let url = Url::parse("http://node.invalid/eth/v1/events").unwrap();
        let mut sub = Subscription::new(&url, Canned(Arc::new(chunks)), limit).unwrap();
        sub.connected().await.unwrap();
        let mut items = Vec::new();
        loop {
            match sub.next().await {
                Ok(i) => items.push(i),
                Err(e) => return (items, e),
            }
        }
    }

    fn events(items: &[Item]) -> Vec<Event> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lodestar-1.5.1/sse-stream.txt"
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn parses_the_real_lodestar_stream_with_its_voluntary_exit() {
        let (items, end) = run(&fixture(), 4096, MAX_LINE_BYTES).await;
        assert_eq!(end, StreamError::Closed);
        assert!(!items.iter().any(|i| matches!(i, Item::Invalid(_))));
        let events = events(&items);
        assert!(events.contains(&Event::VoluntaryExit {
            validator_index: 3,
            epoch: 1
        }));
        assert!(events.contains(&Event::Head {
            slot: 16,
            epoch_transition: true
        }));
        assert!(events.contains(&Event::Head {
            slot: 12,
            epoch_transition: false
        }));
        let heads = events
            .iter()
            .filter(|e| matches!(e, Event::Head { .. }))
            .count();
        assert!(heads > 10, "{heads}");
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Other(t) if t == "block")));
    }

    #[tokio::test]
    async fn framing_does_not_depend_on_chunk_boundaries() {
        let bytes = fixture();
        let (whole, _) = run(&bytes, bytes.len(), MAX_LINE_BYTES).await;
        assert!(whole.len() > 20);
        for size in [1, 7, 64, 1000] {
            let (got, end) = run(&bytes, size, MAX_LINE_BYTES).await;
            assert_eq!(got, whole, "chunk size {size}");
            assert_eq!(end, StreamError::Closed);
        }
    }

    #[tokio::test]
    async fn comments_crlf_multiline_data_and_head_v2() {
        let stream = b": keep-alive\r\n\r\nevent: head_v2\r\ndata: {\"version\":\"x\",\r\ndata: \"data\":{\"slot\":\"9\",\"epoch_transition\":true}}\r\n\r\n";
        for size in [1, 3, stream.len()] {
            let (items, _) = run(stream, size, MAX_LINE_BYTES).await;
            assert_eq!(
                items,
                vec![
                    Item::KeepAlive,
                    Item::Event(Event::Head {
                        slot: 9,
                        epoch_transition: true
                    })
                ],
                "chunk size {size}"
            );
        }
        let e = parse_event(
            "finalized_checkpoint",
            r#"{"block":"0x","state":"0x","epoch":"7","execution_optimistic":false}"#,
        )
        .unwrap();
        assert_eq!(e, Event::FinalizedCheckpoint { epoch: 7 });
        let e = parse_event("chain_reorg", r#"{"slot":"200","depth":"2","epoch":"6"}"#).unwrap();
        assert_eq!(
            e,
            Event::ChainReorg {
                slot: 200,
                depth: 2
            }
        );
        assert!(parse_event("head", "not json").is_err());
    }

    #[tokio::test]
    async fn a_bad_event_is_skipped_and_the_stream_goes_on() {
        let long = "9".repeat(5000);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"event: head\ndata: not json\n\n");
        bytes.extend_from_slice(
            format!("event: head\ndata: {{\"slot\":\"x{long}\"}}\n\n").as_bytes(),
        );
        // Invalid UTF-8 in the data: replaced, so only this event is bad.
        bytes.extend_from_slice(b"event: voluntary_exit\ndata: {\"message\":{\"epoch\":\"1\",\"validator_index\":\"3\xff\"}}\n\n");
        bytes.extend_from_slice(b"event: finalized_checkpoint\ndata: {\"epoch\":\"7\"}\n\n");
        let (items, end) = run(&bytes, 10, MAX_LINE_BYTES).await;
        assert_eq!(end, StreamError::Closed);
        assert_eq!(items.len(), 4, "{items:?}");
        for bad in &items[..3] {
            let Item::Invalid(b) = bad else {
                panic!("{bad:?}")
            };
            // The quoted 5000-digit value is not echoed whole.
            assert!(b.error.len() < 200, "{}", b.error);
        }
        assert_eq!(
            items[3],
            Item::Event(Event::FinalizedCheckpoint { epoch: 7 })
        );
    }

    #[tokio::test]
    async fn a_line_over_the_cap_ends_the_subscription_with_a_short_excerpt() {
        let mut bytes = b"event: head\ndata: {\"slot\":\"1\"}\n\n".to_vec();
        bytes.extend_from_slice(b"data: ");
        bytes.extend(std::iter::repeat_n(b'x', 10_000));
        bytes.extend_from_slice(b"\n\nevent: head\ndata: {\"slot\":\"2\"}\n\n");
        let (items, end) = run(&bytes, 100, 4096).await;
        assert_eq!(
            items,
            vec![Item::Event(Event::Head {
                slot: 1,
                epoch_transition: false
            })]
        );
        let StreamError::TooLarge(o) = &end else {
            panic!("{end:?}")
        };
        assert_eq!(o.what, "line");
        assert!(o.starts.starts_with("data: xxx") && o.starts.chars().count() <= 65);
        assert_eq!(end.reason(), "too_large");
        let text = end.to_string();
        assert!(
            text.contains("longer than 4096 bytes") && text.len() < 150,
            "{text}"
        );
    }

    /// A body that is one endless line, counting the bytes pulled from it.
    #[derive(Clone)]
    struct Endless(Arc<std::sync::atomic::AtomicUsize>);

    impl HttpTransport for Endless {
        fn request(&self, _: Request<Option<Bytes>>) -> ResponseFuture {
            let pulled = self.0.clone();
            Box::pin(async move {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                let body = futures_util::stream::once(async { Ok(Bytes::from_static(b"data: ")) })
                    .chain(futures_util::stream::repeat(chunk).map(move |c| {
                        pulled.fetch_add(c.len(), std::sync::atomic::Ordering::SeqCst);
                        Ok(c)
                    }));
                let body: ByteStream = Box::pin(body);
                Response::builder()
                    .status(200)
                    .body(body)
                    .map_err(launchdarkly_sdk_transport::TransportError::new)
            })
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_read_no_further_than_the_cap_and_one_chunk() {
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let url = Url::parse("http://node.invalid/eth/v1/events").unwrap();
        let mut sub = Subscription::new(&url, Endless(pulled.clone()), MAX_LINE_BYTES).unwrap();
        sub.connected().await.unwrap();
        let end = sub.next().await.unwrap_err();
        assert_eq!(end.reason(), "too_large", "{end}");
        let pulled = pulled.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            pulled > MAX_LINE_BYTES - 16 * 1024 && pulled <= MAX_LINE_BYTES + 16 * 1024,
            "{pulled}"
        );
    }

    #[test]
    fn topics_are_repeated_parameters_never_comma_joined() {
        let url = events_url(&Url::parse("http://n:5052/prefix/").unwrap());
        assert_eq!(
            url.as_str(),
            "http://n:5052/prefix/eth/v1/events?topics=head&topics=finalized_checkpoint&topics=voluntary_exit&topics=chain_reorg"
        );
    }
}
