//! `RegistryClient`: the Optimum auth service (`/api/v1/me`) and console API
//! (list, register, assign, unassign), exactly as `remote-apis.md` describes.
//!
//! Owns the wire format of those calls and the mapping of their failures to
//! [`RegistryError`] (401/403 → rejected key). Parses leniently (unknown
//! fields ignored, both list shapes, `null` lists) and writes strictly.
//! Does not decide what to write: that is the plan's and the apply stage's job.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

use crate::domain::{decimal, Assignment, ChainId, DesiredValidator, ValidatorIndex};
use crate::http::{Failure, Http, Party};
use crate::secret::Secret;

/// Most keys sent in one register request (the console API's limit).
pub const REGISTER_CHUNK: usize = 500;

/// The smallest limit on a registry listing: room for about two million
/// rows (a row is about 60 bytes), the whole of mainnet for one operator.
const LIST_FLOOR: usize = 128 << 20;
/// Bytes allowed per row expected in a listing, above the floor.
const LIST_PER_ROW: usize = 256;

/// The most bytes a listing may take when about `expected_rows` rows are
/// expected (the desired set, or the last listing).
pub fn list_limit(expected_rows: usize) -> usize {
    LIST_FLOOR.max(expected_rows.saturating_mul(LIST_PER_ROW))
}

/// A failed call to the auth service or the console API.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 401/403: unknown, revoked or foreign key (exit code 2).
    #[error("{party} rejected the API key on {call} (HTTP {status}): {body}")]
    Rejected {
        party: Party,
        call: &'static str,
        status: u16,
        body: String,
    },
    /// No answer at all (DNS, connect, timeout, reset), after the retries:
    /// a network fault, told apart from a rejection (exit code 3, or 2 for
    /// the auth service, as documented).
    #[error("cannot reach the {party} at {host} ({call}): {failure}; check the URL, DNS and the network path")]
    Unreachable {
        party: Party,
        call: &'static str,
        host: String,
        failure: Failure,
    },
    /// Any other failure of the call (exit code 3, or 2 for the auth service).
    #[error("{party} {call} failed: {failure}")]
    Failed {
        party: Party,
        call: &'static str,
        failure: Failure,
    },
    /// A 2xx whose body is not what the contract says (exit code 3, or 2 for auth).
    #[error("{party} {call} returned an unexpected body: {detail}")]
    Malformed {
        party: Party,
        call: &'static str,
        detail: String,
    },
    /// `/me` answered for a key that is not scoped to one operator (exit code 2).
    #[error("the auth service returned no operator_id: the API key is not scoped to a single operator (a staff key?); keysync needs an operator-scoped ovi_* key, or set KEYSYNC_OPERATOR_ID")]
    NotOperatorScoped,
}

impl RegistryError {
    /// Whether this is an authentication / identity failure (exit code 2)
    /// rather than an API failure (exit code 3).
    pub fn is_auth(&self) -> bool {
        match self {
            RegistryError::Rejected { .. } | RegistryError::NotOperatorScoped => true,
            RegistryError::Failed { party, .. }
            | RegistryError::Unreachable { party, .. }
            | RegistryError::Malformed { party, .. } => *party == Party::Auth,
        }
    }
}

/// Client of the auth service and the console API. Cheap to clone.
#[derive(Clone)]
pub struct RegistryClient {
    http: Http,
    api_url: Url,
    auth_url: Url,
    /// Shared by every clone; replaced when the key file is rotated.
    key: std::sync::Arc<std::sync::RwLock<Secret>>,
    network: String,
}

#[derive(Deserialize)]
struct ListBody<'a> {
    #[serde(borrow, default)]
    validators: Option<&'a RawValue>,
    #[serde(borrow, default)]
    assignments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow)]
    validator_index: JsonIndex<'a>,
    #[serde(borrow)]
    chain_id: Cow<'a, str>,
    #[serde(default)]
    active: Option<bool>,
}

/// A non-negative JSON integer, also accepted as a quoted decimal string.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonIndex<'a> {
    Number(u64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

impl JsonIndex<'_> {
    fn value(&self) -> Option<u64> {
        match self {
            JsonIndex::Number(n) => Some(*n),
            JsonIndex::Text(s) => decimal(s),
        }
    }
}

#[derive(Deserialize)]
struct MeBody {
    #[serde(default)]
    operator_id: Option<Value>,
}

impl RegistryClient {
    pub fn new(http: Http, api_url: Url, auth_url: Url, key: Secret, network: String) -> Self {
        RegistryClient {
            http,
            api_url,
            auth_url,
            key: std::sync::Arc::new(std::sync::RwLock::new(key)),
            network,
        }
    }

    /// The key in use now.
    fn key(&self) -> Secret {
        self.key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Uses `key` from the next request on (a rotated key file); it is
    /// scrubbed from every answer, like the old one.
    pub fn set_key(&self, key: Secret) {
        self.http.add_secret(key.clone());
        *self
            .key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    fn url(base: &Url, segments: &[&str]) -> Url {
        let mut u = base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty();
            s.extend(segments);
        }
        u
    }

    /// Sends `build`'s request with the key as the Bearer (the key in use
    /// now: a rotated one from the next request on), mapping a failure to
    /// this party's error.
    async fn call(
        &self,
        party: Party,
        call: &'static str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let key = self.key();
        self.http
            .send(party, call, |c| build(c).bearer_auth(key.expose()))
            .await
            .map_err(|f| self.fail(party, call, f))
    }

    fn fail(&self, party: Party, call: &'static str, failure: Failure) -> RegistryError {
        match failure {
            Failure::Status { status, body, .. } if status == 401 || status == 403 => {
                RegistryError::Rejected {
                    party,
                    call,
                    status,
                    body,
                }
            }
            failure @ Failure::Transport { .. } => RegistryError::Unreachable {
                party,
                call,
                host: match party {
                    Party::Auth => self.auth_url.host_str(),
                    _ => self.api_url.host_str(),
                }
                .unwrap_or("(no host)")
                .to_string(),
                failure,
            },
            failure => RegistryError::Failed {
                party,
                call,
                failure,
            },
        }
    }

    async fn json(
        &self,
        party: Party,
        call: &'static str,
        resp: reqwest::Response,
    ) -> Result<serde_json::Map<String, Value>, RegistryError> {
        let bytes = self
            .http
            .body(resp, crate::http::SMALL_BODY)
            .await
            .map_err(|failure| RegistryError::Failed {
                party,
                call,
                failure,
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(RegistryError::Malformed {
                party,
                call,
                detail: format!(
                    "expected a JSON object, got {}",
                    self.http.excerpt(&other.to_string())
                ),
            }),
            Err(_) => Err(RegistryError::Malformed {
                party,
                call,
                detail: format!(
                    "not JSON: {}",
                    self.http.excerpt(&String::from_utf8_lossy(&bytes))
                ),
            }),
        }
    }

    /// `GET {auth}/api/v1/me` → the operator id the key belongs to.
    pub async fn me(&self) -> Result<String, RegistryError> {
        const CALL: &str = "GET /api/v1/me";
        let url = Self::url(&self.auth_url, &["api", "v1", "me"]);
        let resp = self.call(Party::Auth, CALL, |c| c.get(url.clone())).await?;
        let map = self.json(Party::Auth, CALL, resp).await?;
        let body: MeBody =
            serde_json::from_value(Value::Object(map)).map_err(|e| RegistryError::Malformed {
                party: Party::Auth,
                call: CALL,
                detail: e.to_string(),
            })?;
        let id = match body.operator_id {
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        if id.is_empty() {
            return Err(RegistryError::NotOperatorScoped);
        }
        Ok(id)
    }

    /// `GET /api/v1/operators/{op}/validators?network=…`: every row, active or not.
    ///
    /// Parsed row by row into borrowed types: a registry of a million rows
    /// must not become a million JSON trees.
    pub async fn list(&self, operator_id: &str) -> Result<Vec<Assignment>, RegistryError> {
        self.list_expecting(operator_id, 0).await
    }

    /// [`RegistryClient::list`] with the body limited by [`list_limit`] of
    /// `expected_rows`.
    pub async fn list_expecting(
        &self,
        operator_id: &str,
        expected_rows: usize,
    ) -> Result<Vec<Assignment>, RegistryError> {
        const CALL: &str = "GET /api/v1/operators/{op}/validators";
        let mut url = Self::url(
            &self.api_url,
            &["api", "v1", "operators", operator_id, "validators"],
        );
        url.query_pairs_mut().append_pair("network", &self.network);
        let resp = self
            .call(Party::Console, CALL, |c| c.get(url.clone()))
            .await?;
        let bytes = self
            .http
            .body(resp, list_limit(expected_rows))
            .await
            .map_err(|failure| RegistryError::Failed {
                party: Party::Console,
                call: CALL,
                failure,
            })?;
        self.parse_list(&bytes)
    }

    /// A listing's body (`{"validators"|"assignments": [...]}`, rows
    /// `{validator_index, chain_id, active}`), parsed row by row into
    /// borrowed types. Public for the fuzz tests (`tests/fuzz.rs`), not an
    /// API.
    #[doc(hidden)]
    pub fn parse_list(&self, bytes: &[u8]) -> Result<Vec<Assignment>, RegistryError> {
        const CALL: &str = "GET /api/v1/operators/{op}/validators";
        let malformed = |detail: String| RegistryError::Malformed {
            party: Party::Console,
            call: CALL,
            detail,
        };
        let body: ListBody<'_> = serde_json::from_slice(bytes).map_err(|e| {
            malformed(format!(
                "not a JSON object ({}): {}",
                self.http.excerpt(&e.to_string()),
                self.http
                    .excerpt(&String::from_utf8_lossy(&bytes[..bytes.len().min(400)]))
            ))
        })?;
        // Either name (the original tool prefers `assignments`); absent or null is an empty set.
        let list = [body.assignments, body.validators]
            .into_iter()
            .flatten()
            .find(|v| v.get() != "null");
        let rows: Vec<&RawValue> = match list {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
                malformed(format!(
                    "the validator list is not an array: {}",
                    self.http.excerpt(raw.get())
                ))
            })?,
        };
        let mut chains: Vec<ChainId> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (i, raw) in rows.iter().enumerate() {
            let row = serde_json::from_str::<Row<'_>>(raw.get())
                .ok()
                .and_then(|r| {
                    Some((
                        r.validator_index.value()?,
                        r.chain_id,
                        r.active.unwrap_or(true),
                    ))
                });
            let Some((index, chain, active)) = row else {
                return Err(malformed(format!(
                    "row {i} is not {{validator_index, chain_id, active}}: {}",
                    self.http.excerpt(raw.get())
                )));
            };
            // Share one allocation per distinct chain id.
            let chain_id = match chains.iter().find(|c| c.as_str() == chain) {
                Some(c) => c.clone(),
                None => {
                    let c = ChainId::new(&chain);
                    chains.push(c.clone());
                    c
                }
            };
            out.push(Assignment {
                validator_index: index,
                chain_id,
                active,
            });
        }
        Ok(out)
    }

    /// `POST /api/v1/validator-keys/batch` with at most [`REGISTER_CHUNK`]
    /// keys → `(added, skipped)`.
    pub async fn register(&self, keys: &[DesiredValidator]) -> Result<(u64, u64), RegistryError> {
        const CALL: &str = "POST /api/v1/validator-keys/batch";
        let url = Self::url(&self.api_url, &["api", "v1", "validator-keys", "batch"]);
        let body = serde_json::json!({
            "keys": keys.iter().map(|k| serde_json::json!({
                "validator_index": k.validator_index,
                "chain_id": k.chain_id.as_str(),
                "validator_key": k.validator_key.to_string(),
            })).collect::<Vec<_>>()
        });
        let resp = self
            .call(Party::Console, CALL, |c| c.post(url.clone()).json(&body))
            .await?;
        let map = self.json(Party::Console, CALL, resp).await?;
        let count = |name: &str| match map.get(name) {
            None | Some(Value::Null) => Some(0),
            Some(v) => json_u64(v),
        };
        match (count("added"), count("skipped")) {
            (Some(a), Some(s)) => Ok((a, s)),
            _ => Err(RegistryError::Malformed {
                party: Party::Console,
                call: CALL,
                detail: format!(
                    "added/skipped are not counts: {}",
                    self.http.excerpt(&Value::Object(map).to_string())
                ),
            }),
        }
    }

    /// `POST /api/v1/operators/{op}/validators`.
    pub async fn assign(
        &self,
        operator_id: &str,
        keys: &[(ValidatorIndex, ChainId)],
    ) -> Result<(), RegistryError> {
        const CALL: &str = "POST /api/v1/operators/{op}/validators";
        let url = Self::url(
            &self.api_url,
            &["api", "v1", "operators", operator_id, "validators"],
        );
        let body = serde_json::json!({
            "validators": keys.iter().map(|(i, c)| serde_json::json!({
                "validator_index": i, "chain_id": c.as_str()
            })).collect::<Vec<_>>()
        });
        self.call(Party::Console, CALL, |c| c.post(url.clone()).json(&body))
            .await?;
        Ok(())
    }

    /// `DELETE /api/v1/operators/{op}/validators/{index}?chain_id=…`.
    pub async fn unassign(
        &self,
        operator_id: &str,
        index: ValidatorIndex,
        chain_id: &ChainId,
    ) -> Result<(), RegistryError> {
        const CALL: &str = "DELETE /api/v1/operators/{op}/validators/{index}";
        let idx = index.to_string();
        let mut url = Self::url(
            &self.api_url,
            &["api", "v1", "operators", operator_id, "validators", &idx],
        );
        url.query_pairs_mut()
            .append_pair("chain_id", chain_id.as_str());
        self.call(Party::Console, CALL, |c| c.delete(url.clone()))
            .await?;
        Ok(())
    }
}

/// A JSON non-negative integer, also accepted as a quoted decimal string.
fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => decimal(s),
        _ => None,
    }
}
