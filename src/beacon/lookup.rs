//! Validator lookups: batched `POST …/states/head/validators`, at most
//! [`CONCURRENCY`](super::CONCURRENCY) requests in flight, falling back to
//! `GET` with ≤64 ids per request when a server does not support POST, each
//! answer bounded by the number of ids asked and parsed row by row into
//! borrowed types. Quoted integers become integers here.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Deserializer};
use tokio::sync::Semaphore;

use super::{
    display, join, quoted_u64, BeaconClient, BeaconError, BeaconValidator, Endpoint, ValidatorId,
    CONCURRENCY, GET_CHUNK, POST_CHUNK, SMALL_BODY,
};
use crate::domain::{Pubkey, Status};
use crate::http::Party;

pub(super) const POST_UNKNOWN: u8 = 0;
const POST_YES: u8 = 1;
const POST_NO: u8 = 2;

/// Bytes allowed per id asked in a validators answer (a full record is
/// about 500), above [`SMALL_BODY`].
const BYTES_PER_ID: usize = 1024;

/// The largest validators answer accepted for `ids` ids.
fn validators_limit(ids: usize) -> usize {
    SMALL_BODY.saturating_add(ids.saturating_mul(BYTES_PER_ID))
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
    #[serde(default)]
    withdrawable_epoch: Option<Quoted>,
}

/// A quoted (or bare) decimal integer, as a type (for optional fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quoted(pub u64);

impl<'de> Deserialize<'de> for Quoted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        quoted_u64(d).map(Quoted)
    }
}

/// `FAR_FUTURE_EPOCH`: "not scheduled".
const FAR_FUTURE_EPOCH: u64 = u64::MAX;

impl BeaconClient {
    /// The whole body of a validators answer for `ids` ids, bounded.
    async fn read(
        &self,
        ep: &Endpoint,
        call: &'static str,
        resp: reqwest::Response,
        ids: usize,
    ) -> Result<Vec<u8>, BeaconError> {
        self.http
            .body(resp, validators_limit(ids))
            .await
            .map_err(|failure| BeaconError::Failed {
                url: display(&ep.url),
                call,
                failure,
            })
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
        // One task per chunk, so answers are decoded on every core at once;
        // spawned lazily, at most CONCURRENCY at a time, and aborted when
        // dropped, so nothing outlives an error or a failover. Every request
        // also takes one of CONCURRENCY slots shared by the whole resolution:
        // a chunk that falls back to GET sends several at once, and without
        // the shared slots CONCURRENCY such chunks would put CONCURRENCY²
        // requests in flight.
        let statuses: Option<Arc<Vec<String>>> =
            statuses.map(|s| Arc::new(s.iter().map(|x| x.to_string()).collect()));
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let this = self.clone();
        let url = display(&self.endpoints[i].url);
        // Indices, not `chunks()`: a closure over borrowed items is
        // higher-ranked, which the spawned daemon future cannot be.
        let parts = (0..ids.len().div_ceil(POST_CHUNK)).map(move |k| {
            let this = this.clone();
            let ids = ids[k * POST_CHUNK..ids.len().min((k + 1) * POST_CHUNK)].to_vec();
            let statuses = statuses.clone();
            let url = url.clone();
            let slots = slots.clone();
            async move {
                let task = AbortOnDrop(tokio::spawn(async move {
                    let st: Option<Vec<&str>> = statuses
                        .as_ref()
                        .map(|v| v.iter().map(String::as_str).collect());
                    let r = this
                        .chunk(&this.endpoints[i], &ids, st.as_deref(), &slots)
                        .await;
                    r.map(|v| (ids.len(), v))
                }));
                task.await.unwrap_or_else(|e| {
                    Err(BeaconError::Malformed {
                        url,
                        call: "validators",
                        detail: format!("lookup task failed: {e}"),
                    })
                })
            }
        });
        let mut done = 0;
        let mut out = Vec::with_capacity(ids.len());
        bounded(
            parts,
            CONCURRENCY,
            |(n, part): (usize, Vec<BeaconValidator>)| {
                done += n;
                progress(done);
                out.extend(part);
            },
        )
        .await?;
        consistent(&out).map_err(|detail| BeaconError::Inconsistent {
            url: display(&self.endpoints[i].url),
            detail,
        })?;
        Ok(out)
    }

    /// Resolves one chunk of ids (POST, or GETs when the node has none),
    /// each request holding one of the resolution's `slots`.
    async fn chunk(
        &self,
        ep: &Endpoint,
        ids: &[ValidatorId],
        statuses: Option<&[&str]>,
        slots: &Semaphore,
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        if ep.post.load(Ordering::Relaxed) != POST_NO {
            match in_slot(slots, self.post(ep, ids, statuses)).await {
                Ok(v) => {
                    ep.post.store(POST_YES, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(PostOutcome::Error(e)) => return Err(e),
                Err(PostOutcome::NotFound) => {
                    // 404 is ambiguous: "no such route" or "none of these ids
                    // known". Ask about index 0, which every chain has.
                    if ep.post.load(Ordering::Relaxed) == POST_YES
                        || in_slot(slots, self.post(ep, &[ValidatorId::Index(0)], None))
                            .await
                            .is_ok()
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
            .map(|part| in_slot(slots, self.get(ep, part, statuses)))
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
                    .read(ep, CALL, resp, ids.len())
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
                let b = self.read(ep, CALL, resp, ids.len()).await?;
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

    /// A validators answer (`{"data": [...]}`) as [`parse_validators`]
    /// reads it for the first endpoint, then checked as a whole answer is
    /// ([`consistent`]): the parser's public face for the fuzz tests
    /// (`tests/fuzz.rs`), not an API.
    ///
    /// [`parse_validators`]: Self::parse_validators
    #[doc(hidden)]
    pub fn parse_validators_answer(
        &self,
        bytes: &[u8],
    ) -> Result<Vec<BeaconValidator>, BeaconError> {
        const CALL: &str = "POST /eth/v1/beacon/states/head/validators";
        let Some(ep) = self.endpoints.first() else {
            return Err(super::no_url());
        };
        let out = self.parse_validators(ep, CALL, bytes)?;
        consistent(&out).map_err(|detail| BeaconError::Inconsistent {
            url: display(&ep.url),
            detail,
        })?;
        Ok(out)
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
                "{}: {}",
                self.http.excerpt(&e.to_string()),
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
                    withdrawable_epoch: e
                        .validator
                        .withdrawable_epoch
                        .map(|q| q.0)
                        .filter(|e| *e != FAR_FUTURE_EPOCH),
                })
            })
            .collect()
    }
}

/// Checks that an answer maps each pubkey to one index and each index to
/// one pubkey: pairs the chain never changes. Identical repeats are fine.
/// Sorts positions, not copies: 8 bytes per answer, twice.
fn consistent(answers: &[BeaconValidator]) -> Result<(), String> {
    let mut at: Vec<usize> = (0..answers.len()).collect();
    at.sort_unstable_by_key(|&k| answers[k].index);
    for w in at.windows(2) {
        let (a, b) = (&answers[w[0]], &answers[w[1]]);
        if a.index == b.index && a.pubkey != b.pubkey {
            return Err(format!(
                "validator {} has two pubkeys, {} and {}",
                a.index, a.pubkey, b.pubkey
            ));
        }
    }
    at.sort_unstable_by_key(|&k| answers[k].pubkey);
    for w in at.windows(2) {
        let (a, b) = (&answers[w[0]], &answers[w[1]]);
        if a.pubkey == b.pubkey && a.index != b.index {
            return Err(format!(
                "pubkey {} is at two indices, {} and {}",
                a.pubkey,
                a.index.min(b.index),
                a.index.max(b.index)
            ));
        }
    }
    Ok(())
}

/// Runs `request` once one of `slots` is free, holding it until done.
async fn in_slot<T>(slots: &Semaphore, request: impl std::future::Future<Output = T>) -> T {
    // Never closed, so this always holds a permit.
    let _slot = slots.acquire().await;
    request.await
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

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Http, RetryPolicy};
    use url::Url;

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

    fn v(index: u64, key: u8) -> BeaconValidator {
        BeaconValidator {
            index,
            pubkey: Pubkey([key; 48]),
            status: Status::ActiveOngoing,
            withdrawable_epoch: None,
        }
    }

    #[test]
    fn an_answer_that_contradicts_itself_is_refused() {
        assert!(
            consistent(&[v(1, 1), v(2, 2), v(2, 2)]).is_ok(),
            "repeats are fine"
        );
        let e = consistent(&[v(3, 7), v(1, 1), v(50, 7)]).unwrap_err();
        assert!(e.contains("at two indices, 3 and 50"), "{e}");
        let e = consistent(&[v(4, 1), v(4, 2)]).unwrap_err();
        assert!(e.contains("validator 4 has two pubkeys"), "{e}");
        assert!(consistent(&[]).is_ok());
    }
}
