//! `BeaconClient`: the standard Ethereum Beacon API, typed at the boundary.
//!
//! Owns the chain-id probe (`deposit_contract`), validator resolution
//! (batched `POST …/validators`, falling back to `GET` with ≤64 ids when a
//! server does not support POST), failover across several beacon URLs, and
//! (in [`events`]) the SSE event stream. Quoted integers become integers here,
//! once. Never decides what is desired: it reports what the node knows.

pub mod events;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Deserializer};
use url::Url;

use crate::domain::{Pubkey, Status, ValidatorIndex};
use crate::http::{Failure, Http, Party, RetryPolicy};

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
#[derive(Debug, thiserror::Error)]
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
    },
}

impl BeaconError {
    /// Whether the error means the configuration is wrong (exit 4) rather
    /// than the node failing (exit 6).
    pub fn is_config(&self) -> bool {
        matches!(self, BeaconError::WrongChain { .. })
    }
}

const POST_UNKNOWN: u8 = 0;
const POST_YES: u8 = 1;
const POST_NO: u8 = 2;

struct Endpoint {
    url: Url,
    post: AtomicU8,
}

/// Client of one or more beacon nodes (failover in the order given).
#[derive(Clone)]
pub struct BeaconClient {
    http: Http,
    endpoints: Arc<Vec<Endpoint>>,
    active: Arc<AtomicUsize>,
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

#[derive(Deserialize)]
struct ValidatorsBody<'a> {
    #[serde(borrow)]
    data: Vec<ValidatorEntry<'a>>,
}

#[derive(Deserialize)]
struct ValidatorEntry<'a> {
    #[serde(deserialize_with = "quoted_u64")]
    index: u64,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    validator: ValidatorInner<'a>,
}

#[derive(Deserialize)]
struct ValidatorInner<'a> {
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
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
                        post: AtomicU8::new(POST_UNKNOWN),
                    })
                    .collect(),
            ),
            active: Arc::new(AtomicUsize::new(0)),
        }
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
    async fn failover<T, F, Fut>(&self, f: F) -> Result<T, BeaconError>
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
                    first_err = match first_err {
                        Some(prev) if prev.is_config() || !e.is_config() => Some(prev),
                        _ => Some(e),
                    };
                }
            }
        }
        Err(first_err.unwrap_or_else(|| BeaconError::Malformed {
            url: String::new(),
            call: "none",
            detail: "no beacon URL configured".into(),
        }))
    }

    /// The node's execution chain id from `deposit_contract`, which also
    /// proves the URL is a beacon node. With `expected` set, an endpoint on
    /// another chain is skipped (and reported if no endpoint fits).
    pub async fn chain_id(&self, expected: Option<(u64, &str)>) -> Result<u64, BeaconError> {
        self.failover(|i| async move {
            let ep = &self.endpoints[i];
            let got = self.deposit_chain_id(ep).await?;
            if let Some((want, configured)) = expected {
                if got != want {
                    return Err(BeaconError::WrongChain {
                        url: display(&ep.url),
                        node: got,
                        configured: configured.to_string(),
                    });
                }
            }
            Ok(got)
        })
        .await
    }

    async fn deposit_chain_id(&self, ep: &Endpoint) -> Result<u64, BeaconError> {
        const CALL: &str = "GET /eth/v1/config/deposit_contract";
        let url = join(&ep.url, "eth/v1/config/deposit_contract");
        let resp = self
            .http
            .send(Party::Beacon, CALL, |c| c.get(url.clone()))
            .await
            .map_err(|failure| BeaconError::Failed {
                url: display(&ep.url),
                call: CALL,
                failure,
            })?;
        let bytes = self.read(ep, CALL, resp).await?;
        let body: DepositContract =
            serde_json::from_slice(&bytes).map_err(|e| BeaconError::Malformed {
                url: display(&ep.url),
                call: CALL,
                detail: format!(
                    "{e}: {}",
                    self.http.excerpt(&String::from_utf8_lossy(&bytes))
                ),
            })?;
        Ok(body.data.chain_id)
    }

    /// The whole body, in one buffer sized from `Content-Length` (growing
    /// a buffer for a 2 MB answer by doubling costs copies and page faults).
    async fn read(
        &self,
        ep: &Endpoint,
        call: &'static str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, BeaconError> {
        let failed = |e: reqwest::Error| BeaconError::Failed {
            url: display(&ep.url),
            call,
            failure: Failure::Transport {
                detail: e.to_string(),
                attempts: 1,
            },
        };
        let size = resp.content_length().unwrap_or(0).min(256 << 20) as usize;
        let mut buf = Vec::with_capacity(size);
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// Looks up `ids` at `head`. Unknown ids are left out (not an error).
    /// `statuses` filters server-side where supported (callers must still
    /// check: not every server applies it). `progress` gets the count of ids
    /// done so far.
    pub async fn validators(
        &self,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.failover(|i| self.validators_at(i, ids, statuses, progress))
            .await
    }

    async fn validators_at(
        &self,
        i: usize,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        // One task per chunk: answers are decoded on every core at once.
        let statuses: Option<Arc<Vec<String>>> =
            statuses.map(|s| Arc::new(s.iter().map(|x| x.to_string()).collect()));
        let parts: Vec<_> = ids
            .chunks(POST_CHUNK)
            .map(|c| {
                let this = self.clone();
                let ids = c.to_vec();
                let statuses = statuses.clone();
                let task = tokio::spawn(async move {
                    let st: Option<Vec<&str>> = statuses
                        .as_ref()
                        .map(|v| v.iter().map(String::as_str).collect());
                    let r = this.chunk(&this.endpoints[i], &ids, st.as_deref()).await;
                    r.map(|v| (ids.len(), v))
                });
                let url = display(&self.endpoints[i].url);
                async move {
                    task.await.unwrap_or_else(|e| {
                        Err(BeaconError::Malformed {
                            url,
                            call: "validators",
                            detail: format!("lookup task failed: {e}"),
                        })
                    })
                }
            })
            .collect();
        let mut done = 0;
        let mut out = Vec::with_capacity(ids.len());
        bounded(
            parts.into_iter(),
            CONCURRENCY,
            |(n, part): (usize, Vec<BeaconValidator>)| {
                done += n;
                progress(done);
                out.extend(part);
            },
        )
        .await?;
        Ok(out)
    }

    async fn chunk(
        &self,
        ep: &Endpoint,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        if ep.post.load(Ordering::Relaxed) != POST_NO {
            match self.post(ep, ids, statuses).await {
                Ok(v) => {
                    ep.post.store(POST_YES, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(PostOutcome::Error(e)) => return Err(e),
                Err(PostOutcome::NotFound) => {
                    // 404 is ambiguous: "no such route" or "none of these ids
                    // known". Ask about index 0, which every chain has.
                    if ep.post.load(Ordering::Relaxed) == POST_YES
                        || self.post(ep, &[ValidatorId::Index(0)], None).await.is_ok()
                    {
                        ep.post.store(POST_YES, Ordering::Relaxed);
                        return Ok(Vec::new());
                    }
                    self.post_unsupported(ep);
                }
                Err(PostOutcome::Unsupported) => self.post_unsupported(ep),
            }
        }
        let parts: Vec<_> = ids
            .chunks(GET_CHUNK)
            .map(|part| self.get(ep, part, statuses))
            .collect();
        let mut out = Vec::new();
        bounded(parts.into_iter(), CONCURRENCY, |v| out.extend(v)).await?;
        Ok(out)
    }

    fn post_unsupported(&self, ep: &Endpoint) {
        if ep.post.swap(POST_NO, Ordering::Relaxed) != POST_NO {
            tracing::warn!(url = %display(&ep.url), "beacon node does not support POST …/validators; falling back to GET with {GET_CHUNK} ids per request");
        }
    }

    async fn post(
        &self,
        ep: &Endpoint,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
    ) -> Result<Vec<BeaconValidator>, PostOutcome> {
        const CALL: &str = "POST /eth/v1/beacon/states/head/validators";
        let url = join(&ep.url, "eth/v1/beacon/states/head/validators");
        let mut body =
            serde_json::json!({ "ids": ids.iter().map(ValidatorId::wire).collect::<Vec<_>>() });
        if let Some(s) = statuses {
            // Omitted rather than null when absent: one client rejects null.
            body["statuses"] = serde_json::json!(s);
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let result = self
            .http
            .send(Party::Beacon, CALL, |c| {
                c.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone())
            })
            .await;
        match result {
            Ok(resp) => {
                let b = self
                    .read(ep, CALL, resp)
                    .await
                    .map_err(PostOutcome::Error)?;
                self.parse_validators(ep, CALL, &b)
                    .map_err(PostOutcome::Error)
            }
            Err(f) => match f.status() {
                Some(404) => Err(PostOutcome::NotFound),
                Some(405) | Some(501) => Err(PostOutcome::Unsupported),
                _ => Err(PostOutcome::Error(BeaconError::Failed {
                    url: display(&ep.url),
                    call: CALL,
                    failure: f,
                })),
            },
        }
    }

    async fn get(
        &self,
        ep: &Endpoint,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        const CALL: &str = "GET /eth/v1/beacon/states/head/validators";
        let mut url = join(&ep.url, "eth/v1/beacon/states/head/validators");
        {
            // Repeated `id=` (a comma-joined list is not understood everywhere).
            let mut q = url.query_pairs_mut();
            for id in ids {
                q.append_pair("id", &id.wire());
            }
            for s in statuses.unwrap_or_default() {
                q.append_pair("status", s);
            }
        }
        match self
            .http
            .send(Party::Beacon, CALL, |c| c.get(url.clone()))
            .await
        {
            Ok(resp) => {
                let b = self.read(ep, CALL, resp).await?;
                self.parse_validators(ep, CALL, &b)
            }
            // Some servers answer 404 when none of the ids is known.
            Err(f) if f.status() == Some(404) => Ok(Vec::new()),
            Err(failure) => Err(BeaconError::Failed {
                url: display(&ep.url),
                call: CALL,
                failure,
            }),
        }
    }

    fn parse_validators(
        &self,
        ep: &Endpoint,
        call: &'static str,
        bytes: &[u8],
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        let malformed = |detail: String| BeaconError::Malformed {
            url: display(&ep.url),
            call,
            detail,
        };
        let body: ValidatorsBody<'_> = serde_json::from_slice(bytes).map_err(|e| {
            malformed(format!(
                "{e}: {}",
                self.http
                    .excerpt(&String::from_utf8_lossy(&bytes[..bytes.len().min(400)]))
            ))
        })?;
        body.data
            .into_iter()
            .map(|e| {
                let pubkey = e
                    .validator
                    .pubkey
                    .parse::<Pubkey>()
                    .map_err(|err| malformed(format!("validator {}: {err}", e.index)))?;
                Ok(BeaconValidator {
                    index: e.index,
                    pubkey,
                    status: Status::parse(&e.status),
                })
            })
            .collect()
    }
}

/// Runs `futures` with at most `limit` in flight, handing each result to
/// `each` as it completes; stops at the first error.
async fn bounded<T, E, F>(
    futures: impl Iterator<Item = F>,
    limit: usize,
    mut each: impl FnMut(T),
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let mut futures = futures.peekable();
    let mut inflight = FuturesUnordered::new();
    loop {
        while inflight.len() < limit {
            match futures.next() {
                Some(f) => inflight.push(f),
                None => break,
            }
        }
        match inflight.next().await {
            Some(r) => each(r?),
            None if futures.peek().is_none() => return Ok(()),
            None => {}
        }
    }
}

enum PostOutcome {
    NotFound,
    Unsupported,
    Error(BeaconError),
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
    fn parses_the_real_lodestar_validators_response() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lodestar-1.5.1/validators-response.json"
        ))
        .unwrap();
        let http = Http::new(
            std::time::Duration::from_secs(1),
            RetryPolicy::default(),
            None,
            vec![],
        )
        .unwrap();
        let c = BeaconClient::new(http, vec![Url::parse("http://127.0.0.1:1").unwrap()]);
        let v = c.parse_validators(&c.endpoints[0], "test", &bytes).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].index, 0);
        assert_eq!(v[0].status, Status::ActiveOngoing);
        assert_eq!(
            v[0].pubkey.to_string(),
            "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c"
        );
    }

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
}
