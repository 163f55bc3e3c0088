//! `KeymanagerClient`: the standard Keymanager API of a validator client or
//! remote signer (Lighthouse, Teku, Lodestar, Web3Signer), as an input: the
//! pubkeys it holds are validators the operator owns.
//!
//! Owns the two list calls (`GET /eth/v1/keystores`, `GET /eth/v1/remotekeys`,
//! both with `Authorization: Bearer <token>`), their parsing, and the mapping
//! of their failures to [`KeymanagerError`]. The desired pubkeys are the
//! union of both lists, deduplicated and sorted. A `remotekeys` answering
//! 404 (a client without remote-signer support) is an empty remote list
//! (the daemon refuses that from a keymanager that served the list before);
//! any other failure of either call fails the whole read — a partial list
//! is never returned, since a key left out would be unassigned.
//!
//! The token is a secret with the API key's transport rules: it is sent only
//! as the Bearer header, registered with [`Http::add_secret`] so that it is
//! scrubbed (whole, or any run of [`crate::secret::MIN_RUN`] bytes) from every
//! text a remote party sends back, and never put in an error. Errors name the
//! keymanager's URL (without any `user:pass@`, query or fragment), the call,
//! and what failed.
//!
//! Answers are read up to [`BODY_LIMIT`] (64 MiB: an entry is ~150-200 bytes,
//! so room for ~300,000 keys; a keymanager with 100,000 keys answers ~15 MB),
//! or the limit set with [`KeymanagerClient::with_body_limit`]. Parsing holds
//! the body plus a 16-byte slice per entry, never a tree of the answer.
//! [`read_one`] decides what an input makes of an answer with no key at
//! all: an error unless `--allow-empty`.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::domain::{Pubkey, PubkeyError};
use crate::http::{Failure, Http, Party};
use crate::secret::Secret;

use super::KeymanagerInput;

/// The largest answer read from either list call by default: 64 MiB.
pub const BODY_LIMIT: usize = 64 << 20;

/// The two lists a keymanager keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyList {
    /// `GET /eth/v1/keystores`: keys whose keystores the client holds
    /// (`validating_pubkey`).
    Keystores,
    /// `GET /eth/v1/remotekeys`: keys signed for by a remote signer
    /// (`pubkey`).
    Remotekeys,
}

impl KeyList {
    /// The call, as named in errors and metrics.
    pub fn call(self) -> &'static str {
        match self {
            KeyList::Keystores => "GET /eth/v1/keystores",
            KeyList::Remotekeys => "GET /eth/v1/remotekeys",
        }
    }

    /// The entry field that holds the pubkey.
    pub fn field(self) -> &'static str {
        match self {
            KeyList::Keystores => "validating_pubkey",
            KeyList::Remotekeys => "pubkey",
        }
    }

    fn segments(self) -> [&'static str; 3] {
        match self {
            KeyList::Keystores => ["eth", "v1", "keystores"],
            KeyList::Remotekeys => ["eth", "v1", "remotekeys"],
        }
    }
}

impl fmt::Display for KeyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyList::Keystores => "keystores",
            KeyList::Remotekeys => "remotekeys",
        })
    }
}

/// A failed read of a keymanager. Every variant names the keymanager's URL
/// (`url`, never with credentials) and never holds the token: every text
/// from the remote party in it is scrubbed.
#[derive(Debug, thiserror::Error)]
pub enum KeymanagerError {
    /// No answer at all (DNS, connect, timeout, reset), after the retries.
    #[error("cannot reach the keymanager at {url} ({call}): {failure}; check the URL, that the validator client runs with its keymanager API enabled, and the network path")]
    Unreachable {
        url: String,
        call: &'static str,
        failure: Failure,
    },
    /// 401/403: the token was refused.
    #[error("the keymanager at {url} rejected the request ({call}, HTTP {status}): the token was refused; check the keymanager token (the validator client's API token file){}", body_suffix(.body))]
    Rejected {
        url: String,
        call: &'static str,
        status: u16,
        /// The start of the answer, scrubbed.
        body: String,
    },
    /// Any other status (after the retries of 5xx and 429), or a redirect.
    #[error("the keymanager at {url}: {call} failed: {failure}")]
    Failed {
        url: String,
        call: &'static str,
        failure: Failure,
    },
    /// The answer is larger than the limit.
    #[error("the keymanager at {url}: {call} answered more than the {} keysync accepts for it (room for about {} keys)", size(*.limit), .limit / ENTRY_BYTES)]
    TooLarge {
        url: String,
        call: &'static str,
        limit: usize,
    },
    /// A 2xx whose body is not JSON, or not `{"data": [...]}` of entries
    /// carrying the list's pubkey field.
    #[error("the keymanager at {url}: {call} returned an unexpected body: {detail}")]
    Malformed {
        url: String,
        call: &'static str,
        /// What is wrong, with a scrubbed excerpt.
        detail: String,
    },
    /// An entry whose pubkey is not a BLS pubkey.
    #[error("the keymanager at {url}: {call}: {list} data[{index}].{}: {reason}: {value}", .list.field())]
    BadPubkey {
        url: String,
        call: &'static str,
        list: KeyList,
        /// The entry's position in the list's `data` array, from 0.
        index: usize,
        /// The value as sent, scrubbed and cut.
        value: String,
        /// Why it is not one (in the message, not as a `source()`).
        reason: PubkeyError,
    },
    /// Both lists are empty: a validator client still starting, or the
    /// wrong one, looks like this; taken as "no keys" only with
    /// `--allow-empty` (the caller decides, see [`read_all`]).
    #[error("the keymanager at {url} lists no key (a validator client still starting, or the wrong one?); if it is meant to hold none, pass --allow-empty")]
    NoKeys { url: String },
    /// `remotekeys` answered 404 where it listed keys before: a proxy
    /// routing elsewhere, or a client restarted without its remote signer
    /// looks like this; its remote keys are not taken as deleted.
    #[error("the keymanager at {url} answered 404 to GET /eth/v1/remotekeys, which it served before: its remote keys are kept until it serves that list again (check the validator client's remote signer configuration and any proxy in front of it; if the remote signer was removed on purpose, restart keysync)")]
    RemoteKeysGone { url: String },
}

/// The bytes an entry is reckoned at when telling a limit in keys.
const ENTRY_BYTES: usize = 200;

/// `limit` in bytes, KiB or MiB, whichever is whole.
fn size(limit: usize) -> String {
    match limit {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl KeymanagerError {
    /// The keymanager's URL, as named in the message.
    pub fn url(&self) -> &str {
        match self {
            KeymanagerError::Unreachable { url, .. }
            | KeymanagerError::Rejected { url, .. }
            | KeymanagerError::Failed { url, .. }
            | KeymanagerError::TooLarge { url, .. }
            | KeymanagerError::Malformed { url, .. }
            | KeymanagerError::BadPubkey { url, .. }
            | KeymanagerError::NoKeys { url }
            | KeymanagerError::RemoteKeysGone { url } => url,
        }
    }

    /// The call that failed.
    pub fn call(&self) -> &'static str {
        match self {
            KeymanagerError::Unreachable { call, .. }
            | KeymanagerError::Rejected { call, .. }
            | KeymanagerError::Failed { call, .. }
            | KeymanagerError::TooLarge { call, .. }
            | KeymanagerError::Malformed { call, .. }
            | KeymanagerError::BadPubkey { call, .. } => call,
            KeymanagerError::NoKeys { .. } => KeyList::Keystores.call(),
            KeymanagerError::RemoteKeysGone { .. } => KeyList::Remotekeys.call(),
        }
    }

    /// Whether the token was refused (401/403).
    pub fn is_rejected(&self) -> bool {
        matches!(self, KeymanagerError::Rejected { .. })
    }
}

/// A client for each configured keymanager, sharing `http` (which then
/// scrubs every token from every party's answers).
pub fn clients(http: &Http, keymanagers: &[KeymanagerInput]) -> Vec<KeymanagerClient> {
    keymanagers
        .iter()
        .map(|k| KeymanagerClient::new(http.clone(), k.url.clone(), k.token.clone()))
        .collect()
}

/// Reads one keymanager as an input: its keys, or why not. No key at all
/// is [`KeymanagerError::NoKeys`] unless `allow_empty`.
pub async fn read_one(
    client: &KeymanagerClient,
    allow_empty: bool,
) -> Result<Vec<Pubkey>, KeymanagerError> {
    read_lists(client, allow_empty).await.map(|l| l.union())
}

/// [`read_one`], keeping both lists apart (the daemon remembers whether
/// `remotekeys` is served).
pub async fn read_lists(
    client: &KeymanagerClient,
    allow_empty: bool,
) -> Result<KeyLists, KeymanagerError> {
    let lists = client.lists().await?;
    if lists.local.is_empty() && lists.remote.is_empty() && !allow_empty {
        return Err(KeymanagerError::NoKeys {
            url: client.url().to_string(),
        });
    }
    Ok(lists)
}

/// Reads every keymanager (concurrently) for a one-shot command: the
/// union of their keys, or the first failure in configuration order.
pub async fn read_all(
    clients: &[KeymanagerClient],
    allow_empty: bool,
) -> Result<Vec<Pubkey>, KeymanagerError> {
    let reads =
        futures_util::future::join_all(clients.iter().map(|c| read_one(c, allow_empty))).await;
    let mut all = Vec::new();
    for (client, read) in clients.iter().zip(reads) {
        let keys = read?;
        tracing::info!(keymanager = %client.url(), keys = keys.len(), "keymanager read");
        all.extend(keys);
    }
    Ok(all)
}

/// Both lists of one read, each deduplicated and sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLists {
    /// From `keystores`.
    pub local: Vec<Pubkey>,
    /// From `remotekeys`; empty when it answered 404.
    pub remote: Vec<Pubkey>,
    /// `false` when `remotekeys` answered 404 (no remote-signer support).
    pub remote_supported: bool,
}

impl KeyLists {
    /// The union of both lists, deduplicated and sorted.
    pub fn union(&self) -> Vec<Pubkey> {
        let mut all = Vec::with_capacity(self.local.len() + self.remote.len());
        all.extend_from_slice(&self.local);
        all.extend_from_slice(&self.remote);
        sort_dedup(&mut all);
        all
    }
}

fn sort_dedup(keys: &mut Vec<Pubkey>) {
    keys.sort_unstable();
    keys.dedup();
}

/// Client of one keymanager. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct KeymanagerClient {
    http: Http,
    base: Url,
    /// The URL as named in errors: no credentials, query or fragment.
    shown: String,
    token: Arc<RwLock<Secret>>,
    limit: usize,
}

impl fmt::Debug for KeymanagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeymanagerClient")
            .field("url", &self.shown)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// The top level of an answer: only `data` is read.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct KeystoreEntry<'a> {
    #[serde(borrow)]
    validating_pubkey: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RemoteEntry<'a> {
    #[serde(borrow)]
    pubkey: Cow<'a, str>,
}

/// Most bytes of a raw value kept before it is scrubbed and cut for an
/// error (an excerpt keeps 200 characters; a pre-cut secret is still a run
/// of it, see [`Http::excerpt`]).
const RAW_EXCERPT: usize = 400;

impl KeymanagerClient {
    /// A client of the keymanager at `url` (its base: `/eth/v1/…` is
    /// appended to its path). `token` is registered with `http` to be
    /// scrubbed from every answer of every party.
    pub fn new(http: Http, url: Url, token: Secret) -> Self {
        http.add_secret(token.clone());
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        let shown = http.scrub(shown.as_str().trim_end_matches('/'));
        KeymanagerClient {
            http,
            base: url,
            shown,
            token: Arc::new(RwLock::new(token)),
            limit: BODY_LIMIT,
        }
    }

    /// The same client with answers read up to `limit` bytes instead of
    /// [`BODY_LIMIT`].
    pub fn with_body_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The keymanager's URL as errors name it.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Uses `token` from the next request on (a rotated token file); it is
    /// scrubbed from every answer, like the old one.
    pub fn set_token(&self, token: Secret) {
        self.http.add_secret(token.clone());
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    fn token(&self) -> Secret {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn endpoint(&self, list: KeyList) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty();
            s.extend(list.segments());
        }
        u.set_query(None);
        u.set_fragment(None);
        u
    }

    /// The union of both lists, deduplicated and sorted.
    pub async fn pubkeys(&self) -> Result<Vec<Pubkey>, KeymanagerError> {
        Ok(self.lists().await?.union())
    }

    /// Both lists, read concurrently. Either failing fails the read (the
    /// keystores error first when both fail), except `remotekeys`
    /// answering 404, which is an empty remote list.
    pub async fn lists(&self) -> Result<KeyLists, KeymanagerError> {
        let (local, remote) = tokio::join!(
            self.list(KeyList::Keystores),
            self.list(KeyList::Remotekeys)
        );
        let local = local?.unwrap_or_default();
        let remote = remote?;
        Ok(KeyLists {
            local,
            remote_supported: remote.is_some(),
            remote: remote.unwrap_or_default(),
        })
    }

    /// One list, deduplicated and sorted; `None` when `remotekeys`
    /// answered 404.
    async fn list(&self, list: KeyList) -> Result<Option<Vec<Pubkey>>, KeymanagerError> {
        let call = list.call();
        let url = self.endpoint(list);
        let resp = match self
            .http
            .send(Party::Keymanager, call, |c| {
                c.get(url.clone())
                    .bearer_auth(self.token().expose())
                    .header(reqwest::header::ACCEPT, "application/json")
            })
            .await
        {
            Ok(resp) => resp,
            Err(Failure::Status { status: 404, .. }) if list == KeyList::Remotekeys => {
                return Ok(None)
            }
            Err(failure) => return Err(self.fail(call, failure)),
        };
        let bytes = self
            .http
            .body(resp, self.limit)
            .await
            .map_err(|failure| self.fail(call, failure))?;
        self.parse(list, &bytes).map(Some)
    }

    fn fail(&self, call: &'static str, failure: Failure) -> KeymanagerError {
        let url = self.shown.clone();
        match failure {
            Failure::Status { status, body, .. } if status == 401 || status == 403 => {
                KeymanagerError::Rejected {
                    url,
                    call,
                    status,
                    body,
                }
            }
            failure @ Failure::Transport { .. } => {
                KeymanagerError::Unreachable { url, call, failure }
            }
            Failure::TooLarge { limit } => KeymanagerError::TooLarge { url, call, limit },
            failure => KeymanagerError::Failed { url, call, failure },
        }
    }

    /// Parses one list's answer (`{"data": [{<field>: "0x…", …}, …]}`,
    /// unknown fields ignored) into its pubkeys, deduplicated and sorted.
    /// Any other shape, or an entry whose pubkey does not parse, is an error
    /// naming the list and the entry's position, with scrubbed excerpts.
    /// Never panics, whatever `body` holds.
    pub fn parse(&self, list: KeyList, body: &[u8]) -> Result<Vec<Pubkey>, KeymanagerError> {
        let call = list.call();
        let malformed = |detail: String| KeymanagerError::Malformed {
            url: self.shown.clone(),
            call,
            detail,
        };
        // Objects only: serde would also take a struct from an array.
        let parsed = if is_object(body) {
            serde_json::from_slice::<Answer<'_>>(body).map_err(|e| e.to_string())
        } else {
            Err(String::new())
        };
        let answer = parsed.map_err(|e| {
            let what = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                "not a {\"data\": [...]} object"
            } else {
                "not JSON"
            };
            let why = if e.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.http.excerpt(&e))
            };
            malformed(format!(
                "{what}{why}: {}",
                self.raw_excerpt(&String::from_utf8_lossy(
                    &body[..body.len().min(RAW_EXCERPT)]
                ))
            ))
        })?;
        let Some(data) = answer.data else {
            return Err(malformed(format!(
                "no \"data\" list: {}",
                self.raw_excerpt(&String::from_utf8_lossy(
                    &body[..body.len().min(RAW_EXCERPT)]
                ))
            )));
        };
        let entries: Vec<&RawValue> = serde_json::from_str(data.get()).map_err(|_| {
            malformed(format!(
                "\"data\" is not a list: {}",
                self.raw_excerpt(data.get())
            ))
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for (index, raw) in entries.iter().enumerate() {
            let value = match list {
                _ if !is_object(raw.get().as_bytes()) => Err(()),
                KeyList::Keystores => serde_json::from_str::<KeystoreEntry<'_>>(raw.get())
                    .map(|e| e.validating_pubkey)
                    .map_err(drop),
                KeyList::Remotekeys => serde_json::from_str::<RemoteEntry<'_>>(raw.get())
                    .map(|e| e.pubkey)
                    .map_err(drop),
            };
            let Ok(value) = value else {
                return Err(malformed(format!(
                    "{list} data[{index}] is not an object with a string \"{}\": {}",
                    list.field(),
                    self.raw_excerpt(raw.get())
                )));
            };
            match value.parse::<Pubkey>() {
                Ok(pk) => out.push(pk),
                Err(reason) => {
                    return Err(KeymanagerError::BadPubkey {
                        url: self.shown.clone(),
                        call,
                        list,
                        index,
                        value: self.raw_excerpt(&value),
                        reason,
                    })
                }
            }
        }
        sort_dedup(&mut out);
        Ok(out)
    }

    /// `text` cut to [`RAW_EXCERPT`] bytes (on a character boundary), then
    /// scrubbed and cut to an excerpt.
    fn raw_excerpt(&self, text: &str) -> String {
        let mut end = text.len().min(RAW_EXCERPT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.http.excerpt(&text[..end])
    }
}

/// Whether `json` starts (after JSON whitespace) with an object.
fn is_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        == Some(&b'{')
}
