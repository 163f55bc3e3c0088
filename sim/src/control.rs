//! The JSON control API under `/sim/…` on the main listener: the same
//! powers as the [`Sim`] handle, for the binary, demos and the
//! benchmark. Control routes are never faulted or counted.
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `GET /sim/state` | | slot, epoch, genesis_time, sync mode, stale_above, counts, assignment count, open streams, beacon_up, keymanager_up, urls |
//! | `GET /sim/registry` | | `{"assignments": [...], "registered": n}` |
//! | `GET /sim/counts` | | `{route: n}` |
//! | `GET /sim/in_flight` | | `{route: {"now": n, "max": m}}`: requests in flight now, and the most at once since the last reset |
//! | `POST /sim/reset_counts` | | zeroes the counts; the in-flight maxima restart from what is in flight now |
//! | `POST /sim/advance` | `{"slots": n}` or `{"epochs": n}` | `{"slot","epoch"}` |
//! | `POST /sim/deposit` | `{"pubkey": "0x…"\|null}` | `{"pubkey"}` |
//! | `POST /sim/exit`, `/sim/slash` | `{"index": n}` | |
//! | `POST /sim/el_exit` | `{"index": n}`: an execution-layer exit (EIP-7002): exits like `/sim/exit`, no event | `{"scheduled"}` |
//! | `POST /sim/consolidate` | `{"source": n, "target": m}`: the source exits (EIP-7251), no event | `{"scheduled"}` |
//! | `POST /sim/status` | `{"index": n, "status": "exited_unslashed"}` | |
//! | `POST /sim/reorg` | `{"depth": n}` | |
//! | `POST /sim/seed` | `{"assignments": [[i,"0x1",true],…], "registered": [[i,"0x1","0xkey"],…], "assign_range": [start,end,"0x1"]}` (each optional; range end exclusive) | `{"assignments": total}` |
//! | `POST /sim/fail` | `{"route","status","count"=1,"retry_after"?,"after"=0}` (`after`: answer that many normally first) | |
//! | `POST /sim/hold` | `{"route", "on": bool}`: while on, requests wait after their latency until released | |
//! | `POST /sim/release` | `{"route", "count"=1}`: lets that many held requests through | |
//! | `POST /sim/non_json` | `{"route","count"=1}` | |
//! | `POST /sim/latency` | `{"route": null\|"list", "ms"}` | |
//! | `POST /sim/post_unsupported` | `{"status": 405\|404\|null}` | |
//! | `POST /sim/none_known_404` | `{"on": bool}` | |
//! | `POST /sim/list_shape` | `{"shape": "validators"\|"assignments"\|"null"\|"absent"}` | |
//! | `POST /sim/streams` | `{"close": true}` and/or `{"silence": bool}` | |
//! | `POST /sim/beacon` | `{"up": bool}` | |
//! | `POST /sim/sync` | `{"mode": "synced"\|"synced_legacy"\|"syncing"\|"optimistic"\|"el_offline"\|"lagging", "distance": n (syncing), "slots": n (lagging)}` | |
//! | `POST /sim/spec_omit` | `{"fields": ["SECONDS_PER_SLOT", …]}` (`[]` restores) | |
//! | `POST /sim/stale` | `{"above": n\|null}`: validators routes forget indices ≥ n | |
//! | `GET /sim/pubkeys?start=0&count=N` | | text/plain, one pubkey a line |
//! | `GET /sim/validator/{index}` | | `{"index","pubkey","status"}` |
//! | `GET /sim/keymanager` | | `{"url","token","up","local": [pubkey…],"remote": [pubkey…],"remotekeys_404"}` |
//! | `POST /sim/keymanager/keys` | `{"local": [3, "0x…", …], "remote": [...]}` (each optional; an index is listed as the chain's pubkey for it, a string verbatim) | `{"local": n, "remote": m}` |
//! | `POST /sim/keymanager/remotekeys_404` | `{"on": bool}`: `remotekeys` answers 404 (no remote-signer support) | |
//! | `POST /sim/keymanager/up` | `{"up": bool}`: stops / restarts the keymanager listener (same port) | `{"up"}` |
//! | `POST /sim/keymanager/token` | `{"token": "…"}`: the only token accepted from now on | |
//!
//! The keymanager's routes are faulted through `/sim/fail`, `/sim/non_json`,
//! `/sim/latency`, `/sim/hold` with `"route": "keystores"` or `"remotekeys"`.
//!
//! Every POST answers `{"ok": true, …}`; a malformed body 400 `{"error","message"}`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{chain, json_response, ApiError, KeyRef, ListShape, Route, Sim, SyncMode};

pub fn routes() -> Router<Sim> {
    Router::new()
        .route("/sim/state", get(state))
        .route("/sim/registry", get(registry))
        .route("/sim/counts", get(counts))
        .route("/sim/in_flight", get(in_flight))
        .route("/sim/reset_counts", post(reset_counts))
        .route("/sim/advance", post(advance))
        .route("/sim/deposit", post(deposit))
        .route("/sim/exit", post(exit))
        .route("/sim/el_exit", post(el_exit))
        .route("/sim/consolidate", post(consolidate))
        .route("/sim/slash", post(slash))
        .route("/sim/status", post(set_status))
        .route("/sim/reorg", post(reorg))
        .route("/sim/seed", post(seed))
        .route("/sim/fail", post(fail))
        .route("/sim/hold", post(hold))
        .route("/sim/release", post(release))
        .route("/sim/non_json", post(non_json))
        .route("/sim/latency", post(latency))
        .route("/sim/post_unsupported", post(post_unsupported))
        .route("/sim/none_known_404", post(none_known_404))
        .route("/sim/list_shape", post(list_shape))
        .route("/sim/streams", post(streams))
        .route("/sim/beacon", post(beacon))
        .route("/sim/sync", post(sync))
        .route("/sim/spec_omit", post(spec_omit))
        .route("/sim/stale", post(stale))
        .route("/sim/pubkeys", get(pubkeys))
        .route("/sim/validator/{index}", get(validator))
        .route("/sim/keymanager", get(keymanager))
        .route("/sim/keymanager/keys", post(keymanager_keys))
        .route(
            "/sim/keymanager/remotekeys_404",
            post(keymanager_remotekeys_404),
        )
        .route("/sim/keymanager/up", post(keymanager_up))
        .route("/sim/keymanager/token", post(keymanager_token))
}

type Answer = Result<Response, ApiError>;

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(bad)
}

fn bad(msg: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(msg)
}

fn ok(extra: Value) -> Answer {
    let mut v = json!({"ok": true});
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    Ok(json_response(StatusCode::OK, v.to_string()))
}

fn route(name: &str) -> Result<Route, ApiError> {
    name.parse().map_err(bad)
}

async fn state(State(sim): State<Sim>) -> Response {
    let (slot, epoch, spe, validators) = {
        let c = sim.chain();
        (c.slot(), c.epoch(), c.slots_per_epoch(), c.len())
    };
    let (assignments, registered) = {
        let r = sim.registry();
        (r.assignment_count(), r.registered_count())
    };
    let body = json!({
        "slot": slot, "epoch": epoch, "slots_per_epoch": spe, "validators": validators,
        "genesis_time": sim.genesis_time_at(slot), "sync": sim.sync_mode().name(),
        "stale_above": sim.stale_above(),
        "counts": sim.counts(), "assignments": assignments, "registered": registered,
        "open_streams": sim.open_streams(), "beacon_up": sim.beacon_up().await,
        "keymanager_up": sim.keymanager_up().await,
        "url": sim.url(), "beacon_url": sim.beacon_url(), "keymanager_url": sim.keymanager_url(),
    });
    json_response(StatusCode::OK, body.to_string())
}

async fn registry(State(sim): State<Sim>) -> Response {
    let (rows, registered) = {
        let r = sim.registry();
        (r.assignments(), r.registered_count())
    };
    json_response(
        StatusCode::OK,
        json!({"assignments": rows, "registered": registered}).to_string(),
    )
}

async fn counts(State(sim): State<Sim>) -> Response {
    json_response(StatusCode::OK, json!(sim.counts()).to_string())
}

async fn in_flight(State(sim): State<Sim>) -> Response {
    let body: serde_json::Map<String, Value> = sim
        .in_flight_counts()
        .into_iter()
        .map(|(route, (now, max))| (route, json!({"now": now, "max": max})))
        .collect();
    json_response(StatusCode::OK, Value::Object(body).to_string())
}

async fn reset_counts(State(sim): State<Sim>) -> Answer {
    sim.reset_counts();
    ok(json!({}))
}

/// Bounds one advance so a typo cannot spin the chain for hours.
const MAX_ADVANCE_SLOTS: u64 = 10_000_000;

#[derive(Deserialize)]
struct AdvanceReq {
    #[serde(default)]
    slots: u64,
    #[serde(default)]
    epochs: u64,
}

async fn advance(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: AdvanceReq = body(&b)?;
    let spe = sim.chain().slots_per_epoch();
    let total = req
        .epochs
        .saturating_add(1)
        .saturating_mul(spe)
        .saturating_add(req.slots);
    if total > MAX_ADVANCE_SLOTS {
        return Err(bad(format!(
            "at most {MAX_ADVANCE_SLOTS} slots per advance"
        )));
    }
    sim.advance_slots(req.slots);
    sim.advance_epochs(req.epochs);
    ok(json!({"slot": sim.current_slot(), "epoch": sim.current_epoch()}))
}

#[derive(Deserialize)]
struct DepositReq {
    #[serde(default)]
    pubkey: Option<String>,
}

async fn deposit(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: DepositReq = body(&b)?;
    let pubkey = sim.try_deposit(req.pubkey.as_deref()).map_err(bad)?;
    ok(json!({"pubkey": pubkey}))
}

#[derive(Deserialize)]
struct IndexReq {
    index: u64,
}

async fn exit(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: IndexReq = body(&b)?;
    sim.exit(req.index);
    ok(json!({}))
}

async fn el_exit(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: IndexReq = body(&b)?;
    ok(json!({"scheduled": sim.el_exit(req.index)}))
}

#[derive(Deserialize)]
struct ConsolidateReq {
    source: u64,
    target: u64,
}

async fn consolidate(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: ConsolidateReq = body(&b)?;
    ok(json!({"scheduled": sim.consolidate(req.source, req.target)}))
}

async fn slash(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: IndexReq = body(&b)?;
    sim.slash(req.index);
    ok(json!({}))
}

#[derive(Deserialize)]
struct StatusReq {
    index: u64,
    status: String,
}

async fn set_status(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: StatusReq = body(&b)?;
    sim.try_set_status(req.index, &req.status).map_err(bad)?;
    ok(json!({}))
}

#[derive(Deserialize)]
struct ReorgReq {
    #[serde(default = "one")]
    depth: u64,
}

fn one() -> u64 {
    1
}

async fn reorg(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: ReorgReq = body(&b)?;
    sim.reorg(req.depth);
    ok(json!({}))
}

#[derive(Deserialize)]
struct SeedReq {
    #[serde(default)]
    assignments: Vec<(u64, String, bool)>,
    #[serde(default)]
    registered: Vec<(u64, String, String)>,
    #[serde(default)]
    assign_range: Option<(u64, u64, String)>,
}

async fn seed(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: SeedReq = body(&b)?;
    for (index, chain_id, active) in &req.assignments {
        sim.seed_assignment(*index, chain_id, *active);
    }
    for (index, chain_id, key) in &req.registered {
        sim.seed_registered(*index, chain_id, key);
    }
    if let Some((start, end, chain_id)) = &req.assign_range {
        sim.seed_assign_range(*start, *end, chain_id, true);
    }
    ok(json!({"assignments": sim.registry().assignment_count()}))
}

#[derive(Deserialize)]
struct FailReq {
    route: String,
    status: u16,
    #[serde(default = "one_u32")]
    count: u32,
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    after: u32,
}

fn one_u32() -> u32 {
    1
}

async fn fail(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: FailReq = body(&b)?;
    if !(100..=999).contains(&req.status) {
        return Err(bad("status must be an HTTP status code"));
    }
    sim.fail_after(
        route(&req.route)?,
        req.after,
        req.status,
        req.count,
        req.retry_after,
    );
    ok(json!({}))
}

#[derive(Deserialize)]
struct HoldReq {
    route: String,
    on: bool,
}

async fn hold(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: HoldReq = body(&b)?;
    let r = route(&req.route)?;
    if req.on {
        sim.hold(r);
    } else {
        sim.unhold(r);
    }
    ok(json!({}))
}

#[derive(Deserialize)]
struct ReleaseReq {
    route: String,
    #[serde(default = "one_u32")]
    count: u32,
}

async fn release(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: ReleaseReq = body(&b)?;
    sim.release(route(&req.route)?, req.count as usize);
    ok(json!({}))
}

#[derive(Deserialize)]
struct NonJsonReq {
    route: String,
    #[serde(default = "one_u32")]
    count: u32,
}

async fn non_json(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: NonJsonReq = body(&b)?;
    sim.non_json_next(route(&req.route)?, req.count);
    ok(json!({}))
}

#[derive(Deserialize)]
struct LatencyReq {
    #[serde(default)]
    route: Option<String>,
    ms: u64,
}

async fn latency(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: LatencyReq = body(&b)?;
    let r = req.route.as_deref().map(route).transpose()?;
    sim.set_latency(r, req.ms);
    ok(json!({}))
}

#[derive(Deserialize)]
struct PostUnsupportedReq {
    #[serde(default)]
    status: Option<u16>,
}

async fn post_unsupported(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: PostUnsupportedReq = body(&b)?;
    sim.post_validators_unsupported(req.status);
    ok(json!({}))
}

#[derive(Deserialize)]
struct OnReq {
    on: bool,
}

async fn none_known_404(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: OnReq = body(&b)?;
    sim.set_none_known_404(req.on);
    ok(json!({}))
}

#[derive(Deserialize)]
struct ShapeReq {
    shape: String,
}

async fn list_shape(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: ShapeReq = body(&b)?;
    let shape: ListShape = req.shape.parse().map_err(bad)?;
    sim.set_list_shape(shape);
    ok(json!({}))
}

#[derive(Deserialize)]
struct StreamsReq {
    #[serde(default)]
    close: bool,
    #[serde(default)]
    silence: Option<bool>,
}

async fn streams(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: StreamsReq = body(&b)?;
    if let Some(on) = req.silence {
        sim.silence_streams(on);
    }
    if req.close {
        sim.close_streams();
    }
    ok(json!({"open_streams": sim.open_streams()}))
}

#[derive(Deserialize)]
struct UpReq {
    up: bool,
}

async fn beacon(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: UpReq = body(&b)?;
    if req.up {
        sim.start_beacon()
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bind_failed", e))?;
    } else {
        sim.stop_beacon().await;
    }
    ok(json!({"up": sim.beacon_up().await}))
}

#[derive(Deserialize)]
struct SyncReq {
    mode: String,
    #[serde(default)]
    distance: Option<u64>,
    #[serde(default)]
    slots: Option<u64>,
}

async fn sync(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: SyncReq = body(&b)?;
    let mode = SyncMode::parse(&req.mode, req.distance, req.slots).map_err(bad)?;
    sim.set_sync(mode);
    ok(json!({"mode": mode.name()}))
}

#[derive(Deserialize)]
struct SpecOmitReq {
    fields: Vec<String>,
}

async fn spec_omit(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: SpecOmitReq = body(&b)?;
    sim.set_spec_omit(req.fields);
    ok(json!({}))
}

#[derive(Deserialize)]
struct StaleReq {
    #[serde(default, deserialize_with = "present")]
    above: Option<Option<u64>>,
}

/// Marks a field as present (so `null` differs from absent).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

async fn stale(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: StaleReq = body(&b)?;
    let above = req
        .above
        .ok_or_else(|| bad("\"above\" is required (an index, or null)"))?;
    sim.set_stale_above(above);
    ok(json!({"above": above}))
}

/// A decimal query parameter, `Ok(None)` when absent.
fn query_u64(params: &[(String, String)], key: &str) -> Result<Option<u64>, ApiError> {
    match params.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{key} must be a decimal integer"))),
    }
}

/// Most pubkeys one `/sim/pubkeys` call lists (~1 GB of text).
const MAX_PUBKEYS: u64 = 10_000_000;

async fn pubkeys(State(sim): State<Sim>, Query(params): Query<Vec<(String, String)>>) -> Answer {
    let start = query_u64(&params, "start")?.unwrap_or(0);
    let count = query_u64(&params, "count")?;
    let chain = sim.chain();
    let count = count.unwrap_or_else(|| chain.len().saturating_sub(start));
    if count > MAX_PUBKEYS {
        return Err(bad(format!("count must be at most {MAX_PUBKEYS}")));
    }
    let mut out = String::with_capacity(count as usize * 99);
    for i in start..start.saturating_add(count) {
        out.push_str(&chain::to_hex(&chain.pubkey(i)));
        out.push('\n');
    }
    drop(chain);
    Ok(([(header::CONTENT_TYPE, "text/plain")], out).into_response())
}

async fn validator(State(sim): State<Sim>, Path(index): Path<String>) -> Answer {
    let index: u64 = index
        .parse()
        .map_err(|_| bad("index must be a decimal integer"))?;
    let body = json!({"index": index, "pubkey": sim.pubkey(index), "status": sim.status(index)});
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn keymanager(State(sim): State<Sim>) -> Response {
    let state = sim.keymanager().clone();
    let body = json!({
        "url": sim.keymanager_url(), "token": state.token, "up": sim.keymanager_up().await,
        "local": state.local, "remote": state.remote, "remotekeys_404": state.remotekeys_404,
    });
    json_response(StatusCode::OK, body.to_string())
}

#[derive(Deserialize)]
struct KeymanagerKeysReq {
    #[serde(default)]
    local: Option<Vec<KeyRef>>,
    #[serde(default)]
    remote: Option<Vec<KeyRef>>,
}

async fn keymanager_keys(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: KeymanagerKeysReq = body(&b)?;
    if let Some(local) = req.local {
        sim.keymanager_set_local(local);
    }
    if let Some(remote) = req.remote {
        sim.keymanager_set_remote(remote);
    }
    let (local, remote) = {
        let km = sim.keymanager();
        (km.local.len(), km.remote.len())
    };
    ok(json!({"local": local, "remote": remote}))
}

async fn keymanager_remotekeys_404(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: OnReq = body(&b)?;
    sim.keymanager_remotekeys_404(req.on);
    ok(json!({}))
}

async fn keymanager_up(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: UpReq = body(&b)?;
    if req.up {
        sim.start_keymanager()
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bind_failed", e))?;
    } else {
        sim.stop_keymanager().await;
    }
    ok(json!({"up": sim.keymanager_up().await}))
}

#[derive(Deserialize)]
struct TokenReq {
    token: String,
}

async fn keymanager_token(State(sim): State<Sim>, b: Bytes) -> Answer {
    let req: TokenReq = body(&b)?;
    if req.token.is_empty() {
        return Err(bad("token must not be empty"));
    }
    sim.set_keymanager_token(&req.token);
    ok(json!({}))
}
