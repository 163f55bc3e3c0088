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

use rand::Rng;

use crate::metrics::Metrics;
use crate::secret::Secret;

/// The remote party a request goes to; named in every error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Auth,
    Console,
    Beacon,
}

impl Party {
    pub fn label(self) -> &'static str {
        match self {
            Party::Auth => "auth",
            Party::Console => "console",
            Party::Beacon => "beacon",
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Party::Auth => "auth service",
            Party::Console => "console API",
            Party::Beacon => "beacon node",
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
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based), given the server's
    /// `Retry-After`, if any.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let jitter = rand::rng().random_range(0.75..=1.25);
        let backoff = exp.mul_f64(jitter);
        let wait = match retry_after {
            Some(ra) => ra.max(backoff),
            None => backoff,
        };
        wait.min(self.max_delay)
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
    secrets: Arc<Vec<Secret>>,
}

/// Longest body excerpt kept in an error.
const BODY_EXCERPT: usize = 200;
/// Most bytes of an error answer read (for its excerpt); the rest is dropped.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The limit for small answers (identity, counts, node facts).
pub const SMALL_BODY: usize = 64 << 10;

impl Http {
    /// `timeout` bounds each attempt; `secrets` are scrubbed from any text a
    /// server sends back.
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
            secrets: Arc::new(secrets),
        })
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

    /// Removes every secret from `text`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| s.scrub(&t))
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
            let failure = match result {
                Ok(resp) if resp.status().is_success() => {
                    self.record(party, call, "ok", elapsed);
                    return Ok(resp);
                }
                Ok(resp) if resp.status().is_redirection() => {
                    let status = resp.status().as_u16();
                    self.record(party, call, &status.to_string(), elapsed);
                    Failure::Redirect {
                        status,
                        to: redirect_host(&resp),
                    }
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = retry_after(&resp, std::time::SystemTime::now());
                    let body = read_limited(resp, ERROR_BODY_LIMIT).await;
                    self.record(party, call, &status.to_string(), elapsed);
                    Failure::Status {
                        status,
                        body: self.excerpt(&String::from_utf8_lossy(&body)),
                        retry_after,
                        attempts: attempt,
                    }
                }
                Err(e) => {
                    self.record(party, call, "transport", elapsed);
                    Failure::Transport {
                        detail: self.scrub(&error_chain(&e)),
                        attempts: attempt,
                    }
                }
            };
            if !failure.retryable() || attempt >= self.retry.attempts {
                return Err(failure);
            }
            let ra = match &failure {
                Failure::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = self.retry.delay(attempt, ra);
            tracing::warn!(party = party.label(), call, attempt, wait_ms = wait.as_millis() as u64, error = %failure, "request failed, retrying");
            tokio::time::sleep(wait).await;
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

    fn record(&self, party: Party, call: &'static str, outcome: &str, seconds: f64) {
        if let Some(m) = &self.metrics {
            let l = [("party", party.label()), ("call", call)];
            m.observe("keysync_remote_request_seconds", &l, seconds);
            m.inc(
                "keysync_remote_requests_total",
                &[
                    ("party", party.label()),
                    ("call", call),
                    ("outcome", outcome),
                ],
            );
        }
    }

    /// The first [`BODY_EXCERPT`] characters of a body, on one line,
    /// scrubbed before it is cut (a secret straddling the cut is still
    /// found whole).
    pub fn excerpt(&self, body: &str) -> String {
        let one_line: String = body
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let scrubbed = self.scrub(one_line.trim());
        let mut s: String = scrubbed.chars().take(BODY_EXCERPT).collect();
        if scrubbed.chars().count() > BODY_EXCERPT {
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

fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_honours_retry_after_within_the_cap() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let d1 = p.delay(1, None);
        let d3 = p.delay(3, None);
        assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125));
        assert!(d3 >= Duration::from_millis(300) && d3 <= Duration::from_millis(500));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
        assert_eq!(p.delay(40, None), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
        let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = at - Duration::from_secs(90);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + Duration::from_secs(5)),
            Some(Duration::ZERO),
            "a date in the past: retry now"
        );
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }

    #[test]
    fn an_excerpt_never_cuts_a_secret_in_half() {
        let key = "ovi_live_0123456789abcdef0123456789abcdef";
        let http = Http::new(
            Duration::from_secs(1),
            RetryPolicy::default(),
            None,
            vec![Secret::new(key)],
        )
        .unwrap();
        for pad in 150..BODY_EXCERPT + 5 {
            let body = format!("{}{key} tail", "x".repeat(pad));
            let e = http.excerpt(&body);
            assert!(!e.contains(&key[..12]), "pad {pad}: {e}");
        }
    }
}
