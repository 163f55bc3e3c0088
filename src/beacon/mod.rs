//! `BeaconClient`: the standard Ethereum Beacon API, typed at the boundary.
//!
//! Owns the client and its endpoints, the chain-id probe
//! (`deposit_contract`), plain failover across several beacon URLs, and the
//! wire types shared by the rooms below: validator lookups (`lookup`:
//! batched, at most [`CONCURRENCY`] requests in flight, bounded answers),
//! the per-pass vetting of every node used and the pass's [`Witness`]
//! (`vetting`), what a node says of itself and the "synced" rule
//! ([`node`]), and the SSE event stream ([`events`]). Quoted integers become
//! integers here, once. Never decides what is desired: it reports what the
//! node knows and whether the node may be believed about removals.

pub mod events;
mod lookup;
pub mod node;
mod vetting;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer};
use url::Url;

use crate::domain::{Pubkey, Status, ValidatorIndex};
use crate::http::{Failure, Http, Party, RetryPolicy, SMALL_BODY};
use node::ChainClock;
pub use node::{NotSynced, Synced, Unsynced};
use vetting::Pass;
pub use vetting::{Vetting, Witness};

/// Ids per POST request. Beacon clients handle ~10,000 well; 5,000 keeps
/// each response a few MB and lets several run in parallel.
pub const POST_CHUNK: usize = 5_000;
/// Ids per GET request: URL length limits (414/431) start above 64.
pub const GET_CHUNK: usize = 64;
/// Requests in flight at once during a resolution.
pub const CONCURRENCY: usize = 4;

/// One validator as the beacon node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconValidator {
    pub index: ValidatorIndex,
    pub pubkey: Pubkey,
    pub status: Status,
    /// The epoch it becomes withdrawable, once its exit is initiated.
    pub withdrawable_epoch: Option<u64>,
}

/// What to look a validator up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValidatorId {
    Pubkey(Pubkey),
    Index(ValidatorIndex),
}

impl ValidatorId {
    fn wire(&self) -> String {
        match self {
            ValidatorId::Pubkey(p) => p.to_string(),
            ValidatorId::Index(i) => i.to_string(),
        }
    }
}

/// A beacon node that could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BeaconError {
    #[error("beacon node {url}: {call} failed: {failure}")]
    Failed {
        url: String,
        call: &'static str,
        failure: Failure,
    },
    #[error("beacon node {url}: {call} returned an unexpected body (is this URL a beacon node?): {detail}")]
    Malformed {
        url: String,
        call: &'static str,
        detail: String,
    },
    /// The node is on another chain than configured: a configuration error.
    #[error("beacon node {url} is on chain {node} but KEYSYNC_CHAIN_ID is {configured}: pair the beacon node with its network's chain id")]
    WrongChain {
        url: String,
        node: u64,
        configured: String,
        /// Reported for several nodes, another of which failed for another
        /// reason (down, not a beacon node): once that one is back, the
        /// configuration may serve (see [`BeaconError::is_config_everywhere`]).
        others_failed: bool,
    },
    /// The node's answer contradicts itself (one pubkey at two indices, or
    /// one index with two pubkeys): it is not believed at all.
    #[error("beacon node {url} answered inconsistently: {detail}")]
    Inconsistent { url: String, detail: String },
    /// Removals were planned on the word of a node that is not synced
    /// (one-shot: exit 6, nothing written).
    #[error("{0}: nothing was written; removals wait until a synced beacon node confirms them")]
    NotSynced(NotSynced),
}

impl BeaconError {
    /// Whether the error means the configuration is wrong (exit 4) rather
    /// than the node failing (exit 6).
    pub fn is_config(&self) -> bool {
        matches!(self, BeaconError::WrongChain { .. })
    }

    /// Whether no configured node could be used because each one tried is
    /// on another chain: nothing but a configuration change helps (the
    /// daemon stops). A wrong chain reported while another node is merely
    /// down is still a configuration error for an exit code, but the
    /// daemon waits for the other node.
    pub fn is_config_everywhere(&self) -> bool {
        matches!(
            self,
            BeaconError::WrongChain {
                others_failed: false,
                ..
            }
        )
    }
}

struct Endpoint {
    url: Url,
    post: AtomicU8,
    /// Genesis, slot length and exit timing, read once (they never change
    /// for a chain).
    clock: tokio::sync::OnceCell<ChainClock>,
}

/// Client of one or more beacon nodes (failover in the order given).
#[derive(Clone)]
pub struct BeaconClient {
    http: Http,
    endpoints: Arc<Vec<Endpoint>>,
    active: Arc<AtomicUsize>,
    /// `None`: a plain client (no per-pass checks; every node is believed).
    vetting: Option<Arc<Vetting>>,
    pass: Arc<Mutex<Pass>>,
}

#[derive(Deserialize)]
struct DepositContract {
    data: DepositContractData,
}

#[derive(Deserialize)]
struct DepositContractData {
    #[serde(deserialize_with = "quoted_u64")]
    chain_id: u64,
}

/// A quoted (or bare) decimal integer: the Beacon API's integers become
/// integers here, once, for every beacon payload (events included).
pub(crate) fn quoted_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Q<'a> {
        N(u64),
        #[serde(borrow)]
        S(Cow<'a, str>),
    }
    match Q::deserialize(d)? {
        Q::N(n) => Ok(n),
        Q::S(s) => crate::domain::decimal(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not a decimal integer: {s:?}"))),
    }
}

impl BeaconClient {
    /// `urls` in order of preference; at least one.
    pub fn new(http: Http, urls: Vec<Url>) -> Self {
        // With several nodes, fail over quickly instead of retrying a dead one.
        let http = if urls.len() > 1 {
            let mut policy: RetryPolicy = http.retry();
            policy.attempts = policy.attempts.min(2);
            http.with_retry(policy)
        } else {
            http
        };
        BeaconClient {
            http,
            endpoints: Arc::new(
                urls.into_iter()
                    .map(|url| Endpoint {
                        url,
                        post: AtomicU8::new(lookup::POST_UNKNOWN),
                        clock: tokio::sync::OnceCell::new(),
                    })
                    .collect(),
            ),
            active: Arc::new(AtomicUsize::new(0)),
            vetting: None,
            pass: Arc::new(Mutex::new(Pass::default())),
        }
    }

    /// `GET` of `call`'s path (the part after the verb) as JSON `T`, the
    /// body at most `limit` bytes.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        ep: &Endpoint,
        call: &'static str,
        limit: usize,
    ) -> Result<T, BeaconError> {
        let path = call
            .split_once(' ')
            .map_or(call, |(_, p)| p)
            .trim_start_matches('/');
        let url = join(&ep.url, path);
        let failed = |failure| BeaconError::Failed {
            url: display(&ep.url),
            call,
            failure,
        };
        let resp = self
            .http
            .send(Party::Beacon, call, |c| c.get(url.clone()))
            .await
            .map_err(failed)?;
        let bytes = self.http.body(resp, limit).await.map_err(failed)?;
        serde_json::from_slice(&bytes).map_err(|e| BeaconError::Malformed {
            url: display(&ep.url),
            call,
            detail: format!(
                "{}: {}",
                self.http.excerpt(&e.to_string()),
                self.http
                    .excerpt(&String::from_utf8_lossy(&bytes[..bytes.len().min(400)]))
            ),
        })
    }

    /// The URL currently in use (no secret: beacon URLs carry none).
    pub fn active_url(&self) -> String {
        let i = self.active.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        self.endpoints
            .get(i)
            .map(|e| display(&e.url))
            .unwrap_or_default()
    }

    pub fn urls(&self) -> Vec<Url> {
        self.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// Prefer the first URL again on the next call (come back after failover).
    pub fn prefer_primary(&self) {
        self.active.store(0, Ordering::Relaxed);
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Runs `f` against the active endpoint, then each following one, until
    /// one succeeds. Configuration errors (wrong chain) move on too, but are
    /// reported in preference to "down" when every endpoint fails.
    async fn failover_plain<T, F, Fut>(&self, f: F) -> Result<T, BeaconError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, BeaconError>>,
    {
        let n = self.endpoints.len();
        let start = self.active.load(Ordering::Relaxed) % n.max(1);
        let mut first_err: Option<BeaconError> = None;
        for k in 0..n {
            let i = (start + k) % n;
            match f(i).await {
                Ok(v) => {
                    if i != start {
                        tracing::warn!(url = %display(&self.endpoints[i].url), "failed over to another beacon node");
                    }
                    self.active.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(error = %e, "beacon node unusable, trying the next one");
                    }
                    first_err = Some(worse(first_err, e));
                }
            }
        }
        Err(first_err.unwrap_or_else(no_url))
    }

    /// The node's execution chain id from `deposit_contract`, which also
    /// proves the URL is a beacon node. With `expected` set, an endpoint on
    /// another chain is skipped (and reported if no endpoint fits).
    pub async fn chain_id(&self, expected: Option<(u64, &str)>) -> Result<u64, BeaconError> {
        self.failover_plain(|i| async move {
            let ep = &self.endpoints[i];
            let got = self.deposit_chain_id(ep).await?;
            if let Some((want, configured)) = expected {
                if got != want {
                    return Err(BeaconError::WrongChain {
                        url: display(&ep.url),
                        node: got,
                        configured: configured.to_string(),
                        others_failed: false,
                    });
                }
            }
            Ok(got)
        })
        .await
    }

    async fn deposit_chain_id(&self, ep: &Endpoint) -> Result<u64, BeaconError> {
        let body: DepositContract = self
            .get_json(ep, "GET /eth/v1/config/deposit_contract", SMALL_BODY)
            .await?;
        Ok(body.data.chain_id)
    }
}

/// The error to report of two: a configuration error (wrong chain) wins
/// over "down", else the first stands. A wrong chain that wins over
/// another failure says so (`others_failed`).
fn worse(prev: Option<BeaconError>, e: BeaconError) -> BeaconError {
    let Some(prev) = prev else {
        return e;
    };
    let (mut kept, other) = if prev.is_config() || !e.is_config() {
        (prev, e)
    } else {
        (e, prev)
    };
    if let BeaconError::WrongChain { others_failed, .. } = &mut kept {
        *others_failed |= match other {
            BeaconError::WrongChain { others_failed, .. } => others_failed,
            _ => true,
        };
    }
    kept
}

fn no_url() -> BeaconError {
    BeaconError::Malformed {
        url: String::new(),
        call: "none",
        detail: "no beacon URL configured".into(),
    }
}

/// `base` + `path`, keeping any path prefix of `base` (a node behind a proxy).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    if let Ok(mut s) = u.path_segments_mut() {
        s.pop_if_empty();
        s.extend(path.split('/'));
    }
    u
}

/// A URL for logs and errors: without query or fragment.
pub(crate) fn display(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.as_str().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_a_path_prefix() {
        let u = Url::parse("http://h:1/proxy/").unwrap();
        assert_eq!(
            join(&u, "eth/v1/node/health").as_str(),
            "http://h:1/proxy/eth/v1/node/health"
        );
        let u = Url::parse("http://h:1").unwrap();
        assert_eq!(
            join(&u, "eth/v1/node/health").as_str(),
            "http://h:1/eth/v1/node/health"
        );
    }

    fn wrong(url: &str) -> BeaconError {
        BeaconError::WrongChain {
            url: url.into(),
            node: 5,
            configured: "0x1".into(),
            others_failed: false,
        }
    }

    fn down(url: &str) -> BeaconError {
        BeaconError::Failed {
            url: url.into(),
            call: "GET /eth/v1/node/syncing",
            failure: Failure::Transport {
                detail: "connection refused".into(),
                attempts: 1,
            },
        }
    }

    #[test]
    fn a_wrong_chain_is_decisive_only_when_no_node_merely_failed() {
        let all_wrong = worse(Some(wrong("a")), wrong("b"));
        assert!(all_wrong.is_config() && all_wrong.is_config_everywhere());
        assert!(
            all_wrong.to_string().contains("beacon node a "),
            "{all_wrong}"
        );
        for mixed in [
            worse(Some(down("a")), wrong("b")),
            worse(Some(wrong("a")), down("b")),
            worse(Some(worse(Some(wrong("a")), down("b"))), wrong("c")),
            worse(Some(worse(Some(down("a")), wrong("b"))), wrong("c")),
        ] {
            assert!(mixed.is_config(), "reported as the wrong chain: {mixed}");
            assert!(!mixed.is_config_everywhere(), "another node may come back");
        }
        assert!(!worse(Some(down("a")), down("b")).is_config());
        assert!(wrong("a").is_config_everywhere());
    }
}
