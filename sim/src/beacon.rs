//! The beacon node's HTTP face: `deposit_contract`, `health`, `genesis`,
//! `node/syncing`, `config/spec`, validators by GET (repeated `id=`) and
//! POST (`{"ids", "statuses"}`), and the `/eth/v1/events` SSE stream, with
//! Lodestar's byte framing (`event: x\ndata: {...}\n\n`, `: keep-alive`
//! comments) and quirks (a comma-joined `id=2,3` matches nothing).
//!
//! Owns the event fan-out ([`Streams`]); the events themselves come from
//! `chain`, the node's sync state, spec and genesis clock from `node`. The
//! validators routes hide indices at or above the stale limit
//! ([`Sim::set_stale_above`]). Every route passes through `faults` first.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{broadcast, watch};

use crate::chain::{self, Event, StatusFilter};
use crate::faults::tracked;
use crate::{json_response, Route, Sim};

/// The deposit contract address reported (mainnet's).
const DEPOSIT_CONTRACT: &str = "0x00000000219ab540356cbb839cbe05303d7705fa";
/// Ids a GET may carry before it answers 414.
const MAX_GET_IDS: usize = 64;
/// Topics a client may subscribe to. Only the chain's topics ever fire; the
/// other standard names are accepted and stay quiet.
const TOPICS: &[&str] = &[
    "head",
    "head_v2",
    "block",
    "finalized_checkpoint",
    "voluntary_exit",
    "chain_reorg",
    "attestation",
    "block_gossip",
    "contribution_and_proof",
    "light_client_finality_update",
    "light_client_optimistic_update",
    "bls_to_execution_change",
    "blob_sidecar",
    "payload_attributes",
    "proposer_slashing",
    "attester_slashing",
];

pub fn routes(sim: &Sim) -> Router<Sim> {
    let t = |route, handler| tracked(sim, route, handler);
    Router::new()
        .route(
            "/eth/v1/config/deposit_contract",
            t(Route::DepositContract, get(deposit_contract)),
        )
        .route("/eth/v1/node/health", t(Route::Health, get(health)))
        .route("/eth/v1/beacon/genesis", t(Route::Genesis, get(genesis)))
        .route("/eth/v1/node/syncing", t(Route::NodeSyncing, get(syncing)))
        .route("/eth/v1/config/spec", t(Route::Spec, get(spec)))
        .route(
            "/eth/v1/beacon/states/{state_id}/validators",
            t(Route::ValidatorsGet, get(validators_get))
                .merge(t(Route::ValidatorsPost, post(validators_post))),
        )
        .route("/eth/v1/events", t(Route::Events, get(events)))
}

/// A beacon-style error body: `{"code": 400, "message": "…"}`.
fn beacon_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"code": status.as_u16(), "message": message});
    json_response(status, body.to_string())
}

async fn deposit_contract(State(sim): State<Sim>) -> Response {
    if let Some(r) = sim.faults().gate(Route::DepositContract).await {
        return r;
    }
    json_response(
        StatusCode::OK,
        format!(
            "{{\"data\":{{\"chain_id\":\"{}\",\"address\":\"{DEPOSIT_CONTRACT}\"}}}}",
            sim.config().chain_id
        ),
    )
}

async fn health(State(sim): State<Sim>) -> Response {
    if let Some(r) = sim.faults().gate(Route::Health).await {
        return r;
    }
    StatusCode::OK.into_response()
}

async fn genesis(State(sim): State<Sim>) -> Response {
    if let Some(r) = sim.faults().gate(Route::Genesis).await {
        return r;
    }
    let (root, head) = {
        let c = sim.chain();
        (chain::to_hex(&c.genesis_validators_root()), c.slot())
    };
    json_response(
        StatusCode::OK,
        format!(
            "{{\"data\":{{\"genesis_time\":\"{}\",\"genesis_validators_root\":\"{root}\",\"genesis_fork_version\":\"0x00000000\"}}}}",
            sim.genesis_time_at(head)
        ),
    )
}

async fn syncing(State(sim): State<Sim>) -> Response {
    if let Some(r) = sim.faults().gate(Route::NodeSyncing).await {
        return r;
    }
    let slot = sim.current_slot();
    json_response(StatusCode::OK, sim.sync_mode().syncing_json(slot))
}

async fn spec(State(sim): State<Sim>) -> Response {
    if let Some(r) = sim.faults().gate(Route::Spec).await {
        return r;
    }
    json_response(StatusCode::OK, sim.spec_json())
}

/// `head`, `finalized`, `justified`, `genesis`, a decimal slot or a 0x root.
/// All of them answer from the current state.
fn valid_state_id(id: &str) -> bool {
    matches!(id, "head" | "finalized" | "justified" | "genesis")
        || (!id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        || id
            .strip_prefix("0x")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn validators_get(
    State(sim): State<Sim>,
    Path(state_id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = sim.faults().gate(Route::ValidatorsGet).await {
        return r;
    }
    if !valid_state_id(&state_id) {
        return beacon_error(StatusCode::BAD_REQUEST, "Invalid state id");
    }
    let ids: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    if ids.len() > MAX_GET_IDS {
        return beacon_error(
            StatusCode::URI_TOO_LONG,
            "Too many ids in the URL; use POST",
        );
    }
    let statuses = params
        .iter()
        .filter(|(k, _)| k == "status")
        .flat_map(|(_, v)| v.split(','));
    let filter = match StatusFilter::parse(statuses) {
        Ok(f) => f,
        Err(bad) => return beacon_error(StatusCode::BAD_REQUEST, &format!("Invalid status {bad}")),
    };
    validators_response(&sim, (!ids.is_empty()).then_some(ids), filter)
}

async fn validators_post(
    State(sim): State<Sim>,
    Path(state_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.faults().gate(Route::ValidatorsPost).await {
        return r;
    }
    if let Some(status) = sim.post_unsupported_status() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::METHOD_NOT_ALLOWED);
        // Lodestar (fastify) spells its missing route like this.
        let body = serde_json::json!({
            "message": "Route POST:/eth/v1/beacon/states/{state_id}/validators not found",
            "error": status.canonical_reason().unwrap_or("Error"),
            "statusCode": status.as_u16(),
        });
        return json_response(status, body.to_string());
    }
    if !valid_state_id(&state_id) {
        return beacon_error(StatusCode::BAD_REQUEST, "Invalid state id");
    }
    let (ids, statuses) = match parse_post_body(&body) {
        Ok(parsed) => parsed,
        Err(msg) => return beacon_error(StatusCode::BAD_REQUEST, &msg),
    };
    let filter = match StatusFilter::parse(statuses.iter().map(String::as_str)) {
        Ok(f) => f,
        Err(bad) => return beacon_error(StatusCode::BAD_REQUEST, &format!("Invalid status {bad}")),
    };
    validators_response(&sim, ids, filter)
}

type PostBody = (Option<Vec<String>>, Vec<String>);

/// The POST body as sent; `statuses` is `Some(None)` for an explicit null.
#[derive(serde::Deserialize)]
struct PostRequest {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    statuses: Option<Option<Vec<String>>>,
}

/// Marks a field as present (so `null` differs from absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `{"ids": [..]?, "statuses": [..]?}`; an empty body means "all". A
/// `"statuses": null` is rejected like one real client does.
fn parse_post_body(body: &[u8]) -> Result<PostBody, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((None, Vec::new()));
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("body must be a JSON object".into());
    }
    let req: PostRequest =
        serde_json::from_slice(body).map_err(|e| format!("Invalid JSON body: {e}"))?;
    match req.statuses {
        Some(None) => Err("statuses must be an array, not null".into()),
        statuses => Ok((req.ids, statuses.flatten().unwrap_or_default())),
    }
}

/// Serialises the matching validators straight into one string.
/// `ids: None` = every validator. Indices at or above the stale limit are
/// unknown.
fn validators_response(sim: &Sim, ids: Option<Vec<String>>, filter: StatusFilter) -> Response {
    let known = sim.stale_above().unwrap_or(u64::MAX);
    let chain = sim.chain();
    sim.record_query(crate::ValidatorQuery {
        epoch: chain.epoch(),
        ids: ids.as_ref().map(Vec::len),
        filtered: !filter.is_all(),
    });
    let indices: Vec<u64> = match &ids {
        None => (0..chain.len().min(known)).collect(),
        Some(ids) => {
            let mut seen = HashSet::with_capacity(ids.len());
            ids.iter()
                .filter_map(|id| chain.resolve_id(id))
                .filter(|i| *i < known && seen.insert(*i))
                .collect()
        }
    };
    if ids.is_some() && indices.is_empty() && sim.none_known_404() {
        return beacon_error(StatusCode::NOT_FOUND, "Validators not found");
    }
    // Copy under the lock, render outside it: concurrent requests must not
    // queue behind one another's serialisation.
    let (seed, views) = chain.views(&indices, |st| filter.matches(st));
    drop(chain);
    let mut out = String::with_capacity(64 + views.len() * 480);
    out.push_str("{\"execution_optimistic\":false,\"finalized\":false,\"data\":[");
    for (n, (i, v)) in views.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        crate::chain::write_validator_json(seed, &mut out, *i, v);
    }
    out.push_str("]}");
    json_response(StatusCode::OK, out)
}

// ---- event streams ------------------------------------------------------

/// One framed SSE event.
#[derive(Clone, Debug)]
pub struct Frame {
    topic: &'static str,
    bytes: Bytes,
}

/// The fan-out to every open event stream, and its knobs.
pub struct Streams {
    tx: broadcast::Sender<Frame>,
    close: watch::Sender<u64>,
    silenced: AtomicBool,
    open: AtomicUsize,
    keepalive: Duration,
}

impl Streams {
    pub fn new(keepalive: Duration) -> Streams {
        Streams {
            tx: broadcast::channel(4096).0,
            close: watch::channel(0).0,
            silenced: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            keepalive,
        }
    }

    /// Frames and sends events to every open stream (no stream: dropped).
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for ev in events {
            let bytes = Bytes::from(format!("event: {}\ndata: {}\n\n", ev.topic, ev.data));
            let _ = self.tx.send(Frame {
                topic: ev.topic,
                bytes,
            });
        }
    }

    pub fn close_all(&self) {
        self.close.send_modify(|g| *g += 1);
    }

    pub fn set_silenced(&self, on: bool) {
        self.silenced.store(on, Ordering::Relaxed);
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts an open stream for as long as it lives.
struct OpenGuard(Sim);

impl OpenGuard {
    fn new(sim: Sim) -> OpenGuard {
        sim.streams().open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(sim)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.streams().open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct EventStream {
    guard: OpenGuard,
    rx: broadcast::Receiver<Frame>,
    close: watch::Receiver<u64>,
    topics: Vec<&'static str>,
    keepalive: tokio::time::Interval,
}

const KEEPALIVE: &[u8] = b": keep-alive\n\n";

impl EventStream {
    /// The next bytes to send, or `None` to end the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            let silenced = || self.guard.0.streams().silenced.load(Ordering::Relaxed);
            tokio::select! {
                _ = self.close.changed() => return None,
                frame = self.rx.recv() => match frame {
                    Ok(f) if self.topics.contains(&f.topic) && !silenced() => return Some(f.bytes),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.keepalive.tick() => if !silenced() {
                    return Some(Bytes::from_static(KEEPALIVE));
                },
            }
        }
    }
}

/// `topics` repeated (or comma-joined) → the known topic names, or the
/// first unknown one.
fn parse_topics(params: &[(String, String)]) -> Result<Vec<&'static str>, String> {
    let mut topics = Vec::new();
    for name in params
        .iter()
        .filter(|(k, _)| k == "topics")
        .flat_map(|(_, v)| v.split(','))
    {
        match TOPICS.iter().find(|t| **t == name) {
            Some(t) if !topics.contains(t) => topics.push(*t),
            Some(_) => {}
            None => return Err(name.to_string()),
        }
    }
    Ok(topics)
}

async fn events(State(sim): State<Sim>, Query(params): Query<Vec<(String, String)>>) -> Response {
    if let Some(r) = sim.faults().gate(Route::Events).await {
        return r;
    }
    let topics = match parse_topics(&params) {
        Ok(t) if !t.is_empty() => t,
        Ok(_) => return beacon_error(StatusCode::BAD_REQUEST, "topics is required"),
        Err(bad) => return beacon_error(StatusCode::BAD_REQUEST, &format!("Invalid topic {bad}")),
    };
    let streams = sim.streams();
    let period = streams.keepalive;
    let mut close = streams.close.subscribe();
    close.mark_unchanged();
    let state = EventStream {
        rx: streams.tx.subscribe(),
        close,
        topics,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        guard: OpenGuard::new(sim.clone()),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let bytes = st.next_frame().await?;
        Some((Ok::<_, Infallible>(bytes), st))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topics_repeated_or_comma_joined() {
        assert_eq!(
            parse_topics(&params(&[
                ("topics", "head"),
                ("topics", "voluntary_exit,head")
            ])),
            Ok(vec!["head", "voluntary_exit"])
        );
        assert_eq!(
            parse_topics(&params(&[("topics", "bogus")])),
            Err("bogus".to_string())
        );
        assert_eq!(parse_topics(&params(&[])), Ok(vec![]));
    }

    #[test]
    fn state_ids() {
        for ok in ["head", "finalized", "justified", "genesis", "123"] {
            assert!(valid_state_id(ok), "{ok}");
        }
        assert!(valid_state_id(&format!("0x{}", "ab".repeat(32))));
        for bad in ["", "latest", "-1", "0x12", "99999999999999999999999"] {
            assert!(!valid_state_id(bad), "{bad}");
        }
    }

    #[test]
    fn post_body_rules() {
        assert_eq!(parse_post_body(b""), Ok((None, vec![])));
        assert_eq!(
            parse_post_body(br#"{"ids":["1"]}"#),
            Ok((Some(vec!["1".into()]), vec![]))
        );
        assert_eq!(
            parse_post_body(br#"{"ids":["1"],"statuses":["active"]}"#),
            Ok((Some(vec!["1".into()]), vec!["active".into()]))
        );
        assert!(parse_post_body(br#"{"ids":["1"],"statuses":null}"#).is_err());
        assert!(parse_post_body(br#"{"ids":[1]}"#).is_err());
        assert!(parse_post_body(b"[").is_err());
        assert!(parse_post_body(b"[]").is_err());
    }
}
