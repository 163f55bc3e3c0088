//! A validator client's Keymanager API on its own listener
//! ([`Sim::keymanager_url`]), as Lodestar 1.5.1 answers it:
//! `GET /eth/v1/keystores` → `{"data": [{"validating_pubkey", "derivation_path": "", "readonly": false}]}`
//! and `GET /eth/v1/remotekeys` → `{"data": [{"pubkey", "url", "readonly": false}]}`,
//! both behind `Authorization: Bearer <token>` (401
//! `{"error":"missing authorization header"}` without it or with another
//! token).
//!
//! Owns the two scripted lists ([`KeymanagerState`]) and their wire format.
//! A list entry is a validator index (listed as the chain's pubkey for it)
//! or a string listed verbatim, so a test can script a malformed pubkey.
//! With [`KeymanagerState::remotekeys_404`] on, `remotekeys` answers 404
//! like a client without remote-signer support, whatever the token. Every
//! route passes through `faults` first (`keystores`, `remotekeys`).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::faults::tracked;
use crate::{json_response, Route, Sim};

/// The remote signer URL `remotekeys` reports for every key.
pub const REMOTE_SIGNER_URL: &str = "http://127.0.0.1:9000";

/// One entry of a scripted list: a validator index of the chain, or a
/// pubkey string listed as given.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum KeyRef {
    Index(u64),
    Pubkey(String),
}

impl From<u64> for KeyRef {
    fn from(i: u64) -> KeyRef {
        KeyRef::Index(i)
    }
}

impl From<String> for KeyRef {
    fn from(s: String) -> KeyRef {
        KeyRef::Pubkey(s)
    }
}

impl From<&str> for KeyRef {
    fn from(s: &str) -> KeyRef {
        KeyRef::Pubkey(s.to_string())
    }
}

impl From<&String> for KeyRef {
    fn from(s: &String) -> KeyRef {
        KeyRef::Pubkey(s.clone())
    }
}

/// What the keymanager lists and how it answers.
#[derive(Clone, Debug, Default)]
pub struct KeymanagerState {
    /// `keystores`' pubkeys, in order (already resolved from indices).
    pub local: Vec<String>,
    /// `remotekeys`' pubkeys, in order.
    pub remote: Vec<String>,
    /// `remotekeys` answers 404 (no remote-signer support).
    pub remotekeys_404: bool,
    /// The Bearer token both routes accept.
    pub token: String,
}

pub fn routes(sim: &Sim) -> Router<Sim> {
    let t = |route, handler| tracked(sim, route, handler);
    Router::new()
        .route("/eth/v1/keystores", t(Route::Keystores, get(keystores)))
        .route("/eth/v1/remotekeys", t(Route::Remotekeys, get(remotekeys)))
}

/// Whether the Bearer is the keymanager's token.
fn authorized(sim: &Sim, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    bearer == Some(sim.keymanager_token().as_str())
}

/// Lodestar's answer to a request without the token (or with another one).
fn refused() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": "missing authorization header"}).to_string(),
    )
}

async fn keystores(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    if let Some(r) = sim.faults().gate(Route::Keystores).await {
        return r;
    }
    if !authorized(&sim, &headers) {
        return refused();
    }
    let keys = sim.keymanager().local.clone();
    let data: Vec<Value> = keys
        .into_iter()
        .map(|pk| json!({"validating_pubkey": pk, "derivation_path": "", "readonly": false}))
        .collect();
    json_response(StatusCode::OK, json!({ "data": data }).to_string())
}

async fn remotekeys(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    if let Some(r) = sim.faults().gate(Route::Remotekeys).await {
        return r;
    }
    let (unsupported, keys) = {
        let km = sim.keymanager();
        (km.remotekeys_404, km.remote.clone())
    };
    if unsupported {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"message": "Route GET:/eth/v1/remotekeys not found", "error": "Not Found", "statusCode": 404}).to_string(),
        );
    }
    if !authorized(&sim, &headers) {
        return refused();
    }
    let data: Vec<Value> = keys
        .into_iter()
        .map(|pk| json!({"pubkey": pk, "url": REMOTE_SIGNER_URL, "readonly": false}))
        .collect();
    json_response(StatusCode::OK, json!({ "data": data }).to_string())
}
