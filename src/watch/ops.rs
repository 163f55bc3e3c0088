//! The daemon's small HTTP listener: `/health`, `/ready`, `/metrics`.
//!
//! Owns the readiness rule (store open, event stream connected, last
//! reconcile succeeded recently, no removal held for want of a synced
//! beacon node) and the shared [`Health`] flags the other components set;
//! `/ready` says why it is not. Exposes no secret and accepts no writes.

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

    pub fn last_event_age(&self) -> Option<Duration> {
        lock(&self.last_event).map(|t| t.elapsed())
    }

    /// The readiness checks, each true when fine.
    pub fn checks(&self) -> [(&'static str, bool); 4] {
        let recent = lock(&self.last_success).is_some_and(|t| t.elapsed() <= self.fresh_for);
        [
            ("store_open", self.store_open.load(Ordering::Relaxed)),
            ("event_stream_connected", self.stream_connected()),
            (
                "last_reconcile_ok",
                recent && self.last_pass_ok.load(Ordering::Relaxed),
            ),
            ("beacon_synced", lock(&self.beacon_unsynced).is_none()),
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
    if let Some(why) = s.health.beacon_unsynced() {
        body["why"] = serde_json::json!({ "beacon_synced": why });
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
        s.metrics
            .set("keysync_last_event_age_seconds", &[], age.as_secs_f64());
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
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
