//! The beacon node's event stream (`GET /eth/v1/events`, server-sent events).
//!
//! Owns the SSE framing (incremental, byte-exact per the HTML spec's
//! `event:`/`data:`/comment lines) and the typed [`Event`]s keysync reacts
//! to. Quoted integers become integers here. Does not decide what an event
//! means for the registry: the watch loop turns events into triggers.

use serde::Deserialize;

use crate::domain::ValidatorIndex;

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

/// One raw SSE message, or a keep-alive comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message { event: String, data: String },
    Comment,
}

/// Incremental SSE parser: feed bytes as they arrive, take frames out.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk` and returns the frames it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(f) = self.line(&line) {
                frames.push(f);
            }
        }
        self.buf.drain(..start);
        frames
    }

    fn line(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            // Dispatch.
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let event = if event.is_empty() {
                "message".to_string()
            } else {
                event
            };
            return Some(Frame::Message { event, data });
        }
        if line.starts_with(':') {
            return Some(Frame::Comment);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lodestar-1.5.1/sse-stream.txt"
        ))
        .unwrap()
    }

    fn events_of(frames: Vec<Frame>) -> Vec<Event> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Message { event, data } => Some(parse_event(&event, &data).unwrap()),
                Frame::Comment => None,
            })
            .collect()
    }

    #[test]
    fn parses_the_real_lodestar_stream_with_its_voluntary_exit() {
        let mut p = SseParser::new();
        let events = events_of(p.feed(&fixture()));
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

    #[test]
    fn framing_does_not_depend_on_chunk_boundaries() {
        let bytes = fixture();
        let whole = events_of(SseParser::new().feed(&bytes));
        for size in [1, 7, 64, 1000] {
            let mut p = SseParser::new();
            let mut got = Vec::new();
            for c in bytes.chunks(size) {
                got.extend(events_of(p.feed(c)));
            }
            assert_eq!(got, whole, "chunk size {size}");
        }
    }

    #[test]
    fn comments_crlf_multiline_data_and_head_v2() {
        let mut p = SseParser::new();
        let frames = p.feed(b": keep-alive\r\nevent: head_v2\r\ndata: {\"version\":\"x\",\r\ndata: \"data\":{\"slot\":\"9\",\"epoch_transition\":true}}\r\n\r\n");
        assert_eq!(frames[0], Frame::Comment);
        let Frame::Message { event, data } = &frames[1] else {
            panic!()
        };
        assert_eq!(
            parse_event(event, data).unwrap(),
            Event::Head {
                slot: 9,
                epoch_transition: true
            }
        );
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
}
