//! HTTP transport shared by the three remote parties: one retry policy.
//!
//! Owns the decision of what is retried (network errors, 429, 5xx) and for how
//! long (exponential backoff with jitter, `Retry-After` honoured up to a cap,
//! in its seconds or HTTP-date form), the bound on every body a remote party
//! can make keysync hold ([`Http::body`]: each caller states a limit scaled to
//! what it asked for), redirects (never followed: a 3xx is a failure naming
//! where it pointed), per-request timing metrics, and the scrubbing of secrets
//! out of any text a remote party sends back. Knows nothing of payloads: each
//! client module maps a [`Failure`] to its own error type.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::metrics::{Event, Metrics, Reply, RequestLabels, RequestOutcomeLabels};
use crate::secret::{Scrubber, Secret};

/// The remote party a request goes to; named in every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Auth,
    Console,
    Beacon,
    /// A validator client's or remote signer's Keymanager API.
    Keymanager,
}

impl Party {
    pub fn label(self) -> &'static str {
        match self {
            Party::Auth => "auth",
            Party::Console => "console",
            Party::Beacon => "beacon",
            Party::Keymanager => "keymanager",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Auth => "auth service",
            Party::Console => "console API",
            Party::Beacon => "beacon node",
            Party::Keymanager => "keymanager",
        })
    }
}

/// How requests are retried. Defaults suit a cron run; the daemon requeues
/// the whole pass on failure on top of this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, first included (default 4). Larger values ride out
    /// longer outages but delay the exit code an alert keys on.
    pub attempts: u32,
    /// First backoff (default 500 ms), doubled each retry, ±25 % jitter.
    pub base_delay: Duration,
    /// Longest wait between two attempts (default 30 s), `Retry-After` included:
    /// a server asking for longer is retried after this cap.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            base_delay: Duration::from_millis(DEFAULT_BACKOFF_MS),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), given the server's
    /// `Retry-After`, if any.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.backoff().delay(retry);
        let wait = match retry_after {
            Some(ra) => ra.max(backoff),
            None => backoff,
        };
        wait.min(self.max_delay)
    }

    /// The backoff between attempts, before `Retry-After`: `base_delay`
    /// doubling up to `max_delay`, ±25 %.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay).with_jitter(0.25)
    }
}

/// A request that did not succeed, after retries where they apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with a non-2xx status.
    Status {
        status: u16,
        /// The start of the body, secrets scrubbed.
        body: String,
        retry_after: Option<Duration>,
        attempts: u32,
    },
    /// No answer: connect, timeout, reset.
    Transport { detail: String, attempts: u32 },
    /// A 3xx: redirects are never followed (a redirected console call could
    /// carry the key elsewhere; a redirected beacon call would skip the chain
    /// check). `to` is the host the redirect pointed at.
    Redirect { status: u16, to: String },
    /// The body was larger than the caller's limit for that call.
    TooLarge { limit: usize },
}

impl Failure {
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } | Failure::Redirect { status, .. } => Some(*status),
            Failure::Transport { .. } | Failure::TooLarge { .. } => None,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Status { status, .. } => *status == 429 || (500..600).contains(status),
            Failure::Transport { .. } => true,
            Failure::Redirect { .. } | Failure::TooLarge { .. } => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status {
                status,
                body,
                attempts,
                ..
            } => {
                write!(f, "HTTP {status}")?;
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                if *attempts > 1 {
                    write!(f, " (after {attempts} attempts)")?;
                }
                Ok(())
            }
            Failure::Transport { detail, attempts } => {
                write!(f, "{detail}")?;
                if *attempts > 1 {
                    write!(f, " (after {attempts} attempts)")?;
                }
                Ok(())
            }
            Failure::Redirect { status, to } => write!(
                f,
                "HTTP {status} redirect to {to} (redirects are not followed: configure the final URL)"
            ),
            Failure::TooLarge { limit } => write!(
                f,
                "the answer is larger than the {} KiB keysync accepts for this call",
                limit / 1024
            ),
        }
    }
}

/// A reqwest client plus the retry policy, metrics and secrets to scrub.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    retry: RetryPolicy,
    metrics: Option<Arc<Metrics>>,
    /// Shared by every clone: a secret added later (a rotated key) is
    /// scrubbed by all of them, and so are the ones before it.
    secrets: Arc<std::sync::RwLock<Secrets>>,
    /// The daemon's shutdown: a retry wait ends at once when it turns true
    /// (the failure is returned as it stands).
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The secrets seen so far, and their scrubber.
struct Secrets {
    all: Vec<Secret>,
    scrubber: Arc<Scrubber>,
}

/// Attempts per request by default (the first included).
pub const DEFAULT_ATTEMPTS: u32 = 4;
/// The first retry's backoff by default, in ms (doubled per retry).
pub const DEFAULT_BACKOFF_MS: u64 = 500;

/// Longest body excerpt kept in an error.
const BODY_EXCERPT: usize = 200;
/// Most bytes of an error answer read (for its excerpt); the rest is dropped.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The limit for small answers (identity, counts, node facts).
pub const SMALL_BODY: usize = 64 << 10;

impl Http {
    /// `timeout` bounds each attempt; `secrets` (the API key, keymanager
    /// tokens) are scrubbed from any text a server sends back, whole or any
    /// run of [`crate::secret::MIN_RUN`] bytes of them (see [`Scrubber`]).
    /// They are prepared once here, not per response.
    pub fn new(
        timeout: Duration,
        retry: RetryPolicy,
        metrics: Option<Arc<Metrics>>,
        secrets: Vec<Secret>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .user_agent(concat!("keysync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Http {
            client,
            retry,
            metrics,
            secrets: Arc::new(std::sync::RwLock::new(Secrets {
                scrubber: Arc::new(Scrubber::new(&secrets)),
                all: secrets,
            })),
            shutdown: None,
        })
    }

    /// Adds a secret to scrub from now on (a rotated key; the old one stays
    /// scrubbed: it can still come back in an answer).
    pub fn add_secret(&self, secret: Secret) {
        let mut s = self
            .secrets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !s.all.contains(&secret) {
            s.all.push(secret);
            s.scrubber = Arc::new(Scrubber::new(&s.all));
        }
    }

    fn scrubber(&self) -> Arc<Scrubber> {
        self.secrets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .scrubber
            .clone()
    }

    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The same client with another retry policy.
    pub fn with_retry(&self, retry: RetryPolicy) -> Http {
        Http {
            retry,
            ..self.clone()
        }
    }

    /// `text` without any secret registered here (whole or any run of
    /// [`crate::secret::MIN_RUN`] bytes) and without anything shaped like a
    /// key (`ovi_…`) or a bearer token, known or not. Linear in `text`.
    /// Every text a remote party sent must pass here before it is cut,
    /// logged or put in an error.
    pub fn scrub(&self, text: &str) -> String {
        self.scrubber().scrub(text)
    }

    /// Sends the request built by `build` until it gets a 2xx, a non-retryable
    /// status, or the attempts run out. 2xx responses are returned unread.
    pub async fn send(
        &self,
        party: Party,
        call: &'static str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = build(&self.client).send().await;
            let elapsed = started.elapsed().as_secs_f64();
            let (failure, reply) = match result {
                Ok(resp) if resp.status().is_success() => {
                    self.emit(RemoteRequest {
                        party,
                        call,
                        reply: Reply::Ok,
                        seconds: elapsed,
                        retry: None,
                    });
                    return Ok(resp);
                }
                Ok(resp) if resp.status().is_redirection() => {
                    let status = resp.status().as_u16();
                    let failure = Failure::Redirect {
                        status,
                        to: self.scrub(&redirect_host(&resp)),
                    };
                    (failure, Reply::Status(status))
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = retry_after(&resp, std::time::SystemTime::now());
                    let body = read_limited(resp, ERROR_BODY_LIMIT).await;
                    let failure = Failure::Status {
                        status,
                        body: self.excerpt(&String::from_utf8_lossy(&body)),
                        retry_after,
                        attempts: attempt,
                    };
                    (failure, Reply::Status(status))
                }
                Err(e) => {
                    let failure = Failure::Transport {
                        detail: self.scrub(&error_chain(&e)),
                        attempts: attempt,
                    };
                    (failure, Reply::Transport)
                }
            };
            let mut outcome = RemoteRequest {
                party,
                call,
                reply,
                seconds: elapsed,
                retry: None,
            };
            if !failure.retryable() || attempt >= self.retry.attempts {
                self.emit(outcome);
                return Err(failure);
            }
            let ra = match &failure {
                Failure::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = self.retry.delay(attempt, ra);
            outcome.retry = Some(Retrying {
                attempt,
                wait,
                error: &failure,
            });
            self.emit(outcome);
            match &self.shutdown {
                Some(rx) => {
                    let mut rx = rx.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = rx.wait_for(|stop| *stop) => return Err(failure),
                    }
                }
                None => tokio::time::sleep(wait).await,
            }
        }
    }

    /// The same client, whose retry waits end when `shutdown` turns true.
    pub fn with_shutdown(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Http {
        Http {
            shutdown: Some(shutdown),
            ..self.clone()
        }
    }

    /// The whole body of a 2xx answer, at most `limit` bytes: a larger one
    /// (by `Content-Length` or as it streams in) is a [`Failure::TooLarge`]
    /// and nothing more is read. The buffer is sized from `Content-Length`
    /// (growing one for a 2 MB answer by doubling costs copies and faults).
    pub async fn body(
        &self,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, Failure> {
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(Failure::TooLarge { limit });
        }
        let size = resp.content_length().unwrap_or(0) as usize;
        let mut buf = Vec::with_capacity(size.min(limit));
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > limit {
                        return Err(Failure::TooLarge { limit });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(buf),
                Err(e) => {
                    return Err(Failure::Transport {
                        detail: self.scrub(&error_chain(&e)),
                        attempts: 1,
                    })
                }
            }
        }
    }

    /// Tells a request's outcome (its metrics, where kept; the retry's
    /// log line).
    fn emit(&self, event: RemoteRequest<'_>) {
        event.emit(self.metrics.as_deref());
    }

    /// The first [`BODY_EXCERPT`] characters of a body, on one line,
    /// scrubbed ([`Http::scrub`]) before it is cut: a secret straddling the
    /// cut is found whole, and cutting scrubbed text cannot bring a secret
    /// back. A caller that pre-cuts `body` may cut a secret, but what is
    /// left of it is still a run of the secret (or under
    /// [`crate::secret::MIN_RUN`] bytes, which is not scrubbed anywhere).
    pub fn excerpt(&self, body: &str) -> String {
        let one_line: String = body
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let scrubbed = self.scrub(one_line.trim());
        let mut chars = scrubbed.chars();
        let mut s: String = chars.by_ref().take(BODY_EXCERPT).collect();
        if chars.next().is_some() {
            s.push('…');
        }
        s
    }
}

/// At most `limit` bytes of an answer's body (an error page, for its
/// excerpt); a transport error ends it early.
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    buf
}

/// The host a 3xx pointed at (never its path or query, which could carry
/// anything).
fn redirect_host(resp: &reqwest::Response) -> String {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match resp.url().join(location) {
        Ok(u) if !location.is_empty() => u.host_str().unwrap_or("(no host)").to_string(),
        _ => "(no Location header)".to_string(),
    }
}

/// `Retry-After` as seconds or as an HTTP-date (RFC 9110 §10.2.3), relative
/// to `now`; a date in the past means "now".
fn retry_after(resp: &reqwest::Response, now: std::time::SystemTime) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(v, now)
}

/// A `Retry-After` value, relative to `now`. Public for the fuzz tests
/// (`tests/fuzz.rs`), not an API.
#[doc(hidden)]
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `e` and its sources, joined: reqwest's top-level message alone rarely
/// says what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let m = src.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = src.source();
    }
    s
}

// ---- events: a request's outcome, logged and counted together ------------

/// One attempt of a remote request ended, after `seconds`; `retry`: it
/// failed and is tried again.
pub struct RemoteRequest<'a> {
    pub party: Party,
    pub call: &'static str,
    pub reply: Reply,
    pub seconds: f64,
    pub retry: Option<Retrying<'a>>,
}

/// A failed attempt that will be tried again.
pub struct Retrying<'a> {
    pub attempt: u32,
    pub wait: Duration,
    pub error: &'a dyn std::fmt::Display,
}

impl RemoteRequest<'_> {
    fn request(&self) -> RequestLabels {
        RequestLabels {
            party: self.party.label(),
            call: self.call,
        }
    }
}

impl Event for RemoteRequest<'_> {
    fn record(&self, m: &Metrics) {
        m.remote_request_seconds
            .get_or_create(&self.request())
            .observe(self.seconds);
        m.remote_requests
            .get_or_create(&RequestOutcomeLabels {
                request: self.request(),
                outcome: self.reply,
            })
            .inc();
    }

    fn log(&self) {
        if let Some(r) = &self.retry {
            tracing::warn!(target: "keysync::http", party = self.party.label(), call = self.call, attempt = r.attempt, wait_ms = r.wait.as_millis() as u64, error = %r.error, "request failed, retrying");
        }
    }
}

#[cfg(test)]
mod tests;
