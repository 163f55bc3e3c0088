//! The Optimum auth service (`GET /api/v1/me`) and console API (list,
//! register, assign, unassign) over HTTP, per remote-apis.md §1–2: Bearer
//! auth (401), operator scoping (403), body validation (400), the 500-key
//! cap (413) and the 409 of an assign naming an unregistered pair.
//!
//! State semantics live in `registry`; this module only speaks HTTP.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use axum::routing::{delete, get, post};
use axum::Router;
use serde::Deserialize;

use crate::faults::tracked;
use crate::{json_response, ApiError, Route, Sim};

/// Most keys one register request may carry.
pub const MAX_KEYS_PER_REGISTER: usize = 500;

pub fn routes(sim: &Sim) -> Router<Sim> {
    let t = |route, handler| tracked(sim, route, handler);
    Router::new()
        .route("/api/v1/me", t(Route::Me, get(me)))
        .route(
            "/api/v1/operators/{op}/validators",
            t(Route::List, get(list)).merge(t(Route::Assign, post(assign))),
        )
        .route(
            "/api/v1/operators/{op}/validators/{index}",
            t(Route::Unassign, delete(unassign)),
        )
        .route(
            "/api/v1/validator-keys/batch",
            t(Route::Register, post(register)),
        )
}

/// What every console handler answers.
type Answer = Result<Response, ApiError>;

/// 401 unless the Bearer is the configured key; 403 if `op` is not ours.
fn authorize(sim: &Sim, headers: &HeaderMap, op: Option<&str>) -> Result<(), ApiError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(sim.api_key().as_str()) {
        return Err(ApiError::invalid_credential());
    }
    match op {
        Some(op) if op != sim.config().operator_id => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key may not act for that operator",
        )),
        _ => Ok(()),
    }
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::bad_request)
}

async fn me(State(sim): State<Sim>, headers: HeaderMap) -> Answer {
    if let Some(r) = sim.faults().gate(Route::Me).await {
        return Ok(r);
    }
    authorize(&sim, &headers, None)?;
    let body = if sim.config().staff_key {
        serde_json::json!({"operator_id": "", "role": "staff"})
    } else {
        serde_json::json!({"operator_id": sim.config().operator_id, "role": "operator"})
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn list(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(op): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Answer {
    if let Some(r) = sim.faults().gate(Route::List).await {
        return Ok(r);
    }
    authorize(&sim, &headers, Some(&op))?;
    let network = params
        .iter()
        .find(|(k, _)| k == "network")
        .map_or("mainnet", |(_, v)| v.as_str());
    let body = sim.registry().list_json(&op, network);
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct RegisterBody {
    keys: Vec<KeyRow>,
}

#[derive(Deserialize)]
struct KeyRow {
    validator_index: u64,
    chain_id: String,
    validator_key: String,
}

async fn register(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Answer {
    if let Some(r) = sim.faults().gate(Route::Register).await {
        return Ok(r);
    }
    authorize(&sim, &headers, None)?;
    let req: RegisterBody = parse_body(&body)?;
    if req.keys.len() > MAX_KEYS_PER_REGISTER {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_keys",
            format!("at most {MAX_KEYS_PER_REGISTER} keys per request"),
        ));
    }
    let (added, skipped) = sim.registry().register(
        req.keys
            .into_iter()
            .map(|k| ((k.validator_index, k.chain_id), k.validator_key)),
    );
    let body = serde_json::json!({"added": added, "skipped": skipped});
    Ok(json_response(StatusCode::OK, body.to_string()))
}

#[derive(Deserialize)]
struct AssignBody {
    validators: Vec<PairRow>,
}

#[derive(Deserialize)]
struct PairRow {
    validator_index: u64,
    chain_id: String,
}

async fn assign(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path(op): Path<String>,
    body: Bytes,
) -> Answer {
    if let Some(r) = sim.faults().gate(Route::Assign).await {
        return Ok(r);
    }
    authorize(&sim, &headers, Some(&op))?;
    let req: AssignBody = parse_body(&body)?;
    let pairs = req
        .validators
        .into_iter()
        .map(|p| (p.validator_index, p.chain_id))
        .collect();
    let result = sim.registry().assign(pairs);
    match result {
        Ok(n) => Ok(json_response(
            StatusCode::CREATED,
            serde_json::json!({"assigned": n}).to_string(),
        )),
        Err(missing) => {
            let missing: Vec<_> = missing
                .into_iter()
                .map(|(i, c)| serde_json::json!({"validator_index": i, "chain_id": c}))
                .collect();
            let body = serde_json::json!({
                "error": "not_registered",
                "message": "every validator must be registered before it is assigned",
                "missing": missing,
            });
            Ok(json_response(StatusCode::CONFLICT, body.to_string()))
        }
    }
}

async fn unassign(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Path((op, index)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Answer {
    if let Some(r) = sim.faults().gate(Route::Unassign).await {
        return Ok(r);
    }
    authorize(&sim, &headers, Some(&op))?;
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::bad_request("validator_index must be a decimal integer"))?;
    let (_, chain_id) = params
        .iter()
        .find(|(k, _)| k == "chain_id")
        .ok_or_else(|| ApiError::bad_request("chain_id is required"))?;
    sim.registry().unassign(index, chain_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
