//! The daemon's small HTTP listener: `/health`, `/ready`, `/metrics`.
//!
//! Owns the readiness rule (store open, event stream connected, last
//! reconcile succeeded recently, no removal held for want of a synced
//! beacon node, every input readable) and the shared [`Health`] flags the
//! other components set; `/ready` says why it is not. Exposes no secret
//! and accepts no writes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Liveness facts shared by the daemon's components.
pub struct Health {
    store_open: AtomicBool,
    stream: AtomicBool,
    last_event: Mutex<Option<Instant>>,
    last_success: Mutex<Option<Instant>>,
    last_pass_ok: AtomicBool,
    /// Why the last pass held removals for want of a synced beacon node.
    beacon_unsynced: Mutex<Option<String>>,
    /// Why some input cannot be used (its last good content stands).
    inputs_unreadable: Mutex<Option<String>>,
    /// How recent the last success must be for `/ready`.
    pub fresh_for: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub fn new(fresh_for: Duration) -> Self {
        Health {
            store_open: AtomicBool::new(false),
            stream: AtomicBool::new(false),
            last_event: Mutex::new(None),
            last_success: Mutex::new(None),
            last_pass_ok: AtomicBool::new(false),
            beacon_unsynced: Mutex::new(None),
            inputs_unreadable: Mutex::new(None),
            fresh_for,
        }
    }
    pub fn set_store(&self, open: bool) {
        self.store_open.store(open, Ordering::Relaxed);
    }
    pub fn set_stream(&self, up: bool) {
        self.stream.store(up, Ordering::Relaxed);
    }
    pub fn stream_connected(&self) -> bool {
        self.stream.load(Ordering::Relaxed)
    }
    pub fn touch_event(&self) {
        *lock(&self.last_event) = Some(Instant::now());
    }
    pub fn pass(&self, ok: bool) {
        self.last_pass_ok.store(ok, Ordering::Relaxed);
        if ok {
            *lock(&self.last_success) = Some(Instant::now());
        }
    }
    /// Records whether the last pass held removals because no synced beacon
    /// node confirmed them, and why.
    pub fn set_beacon_unsynced(&self, why: Option<String>) {
        *lock(&self.beacon_unsynced) = why;
    }

    pub fn beacon_unsynced(&self) -> Option<String> {
        lock(&self.beacon_unsynced).clone()
    }

    /// Records whether some input cannot be used, and why (see
    /// `InputSet::unreadable`).
    pub fn set_inputs_unreadable(&self, why: Option<String>) {
        *lock(&self.inputs_unreadable) = why;
    }

    pub fn inputs_unreadable(&self) -> Option<String> {
        lock(&self.inputs_unreadable).clone()
    }

    pub fn last_event_age(&self) -> Option<Duration> {
        lock(&self.last_event).map(|t| t.elapsed())
    }

    /// The readiness checks, each true when fine.
    pub fn checks(&self) -> [(&'static str, bool); 5] {
        let recent = lock(&self.last_success).is_some_and(|t| t.elapsed() <= self.fresh_for);
        [
            ("store_open", self.store_open.load(Ordering::Relaxed)),
            ("event_stream_connected", self.stream_connected()),
            (
                "last_reconcile_ok",
                recent && self.last_pass_ok.load(Ordering::Relaxed),
            ),
            ("beacon_synced", lock(&self.beacon_unsynced).is_none()),
            ("inputs_readable", lock(&self.inputs_unreadable).is_none()),
        ]
    }
}

#[derive(Clone)]
struct Ops {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(s): State<Ops>) -> impl IntoResponse {
    let checks = s.health.checks();
    let ok = checks.iter().all(|(_, v)| *v);
    let mut body = serde_json::json!({
        "ready": ok,
        "checks": checks.iter().map(|(k, v)| (k.to_string(), serde_json::Value::Bool(*v))).collect::<serde_json::Map<_, _>>(),
    });
    let mut why = serde_json::Map::new();
    if let Some(w) = s.health.beacon_unsynced() {
        why.insert("beacon_synced".into(), w.into());
    }
    if let Some(w) = s.health.inputs_unreadable() {
        why.insert("inputs_readable".into(), w.into());
    }
    if !why.is_empty() {
        body["why"] = why.into();
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(s): State<Ops>) -> impl IntoResponse {
    if let Some(age) = s.health.last_event_age() {
        s.metrics.last_event_age_seconds.set(age.as_secs_f64());
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

/// The address to reach a listener bound to `addr` at: an unspecified
/// host (0.0.0.0, ::) is reached on loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// `keysync probe`: 0 when the daemon at `--listen` answers `GET /ready`
/// with 200, else 1 (Docker's healthcheck convention), saying why on
/// stderr. Plain blocking I/O with a deadline: no runtime to start.
pub fn probe(args: &crate::cli::ProbeArgs) -> u8 {
    use std::io::{Read, Write};
    let listen = args
        .listen
        .as_deref()
        .unwrap_or(crate::settings::DEFAULT_LISTEN);
    let mut addr: SocketAddr = match listen.trim().parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!(
                "keysync probe: --listen {listen:?} is not an address such as 127.0.0.1:9464"
            );
            return 1;
        }
    };
    addr = reachable(addr);
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(s, "GET /ready HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut head = Vec::new();
        s.take(4096).read_to_end(&mut head)?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => 0,
        Ok(text) => {
            let status = text.lines().next().unwrap_or("no answer");
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            eprintln!("keysync probe: {addr} is not ready: {status} {body}");
            1
        }
        Err(e) => {
            eprintln!("keysync probe: cannot reach {addr}: {e}");
            1
        }
    }
}

/// Binds `addr` (port 0 picks one) and serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health_state: Arc<Health>,
    metrics_state: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Ops {
            health: health_state,
            metrics: metrics_state,
        });
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "ops listener failed");
        }
    });
    Ok((bound, task))
}
