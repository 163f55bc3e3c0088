//! `keysync watch`: the daemon. Follows the beacon node's events and the
//! input files, and applies only the delta.
//!
//! Owns start-up and shutdown: open the store, resolve the identity
//! (retrying remote failures; only configuration errors end the daemon at
//! start), start the ops listener, the event stream follower, the file
//! watcher and the resync timer, then hand triggers to the [`controller`].
//! SIGTERM/SIGINT finish the write in flight, flush the store and exit 0.

pub mod controller;
pub mod inputs;
pub mod ops;
pub mod stream;
pub mod trigger;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::settings::Settings;
use crate::store::Store;
use controller::Controller;
use inputs::InputSet;
use ops::Health;
use trigger::{Trigger, Triggers};

/// A running daemon (in-process handle, used by `run` and by tests).
pub struct Daemon {
    /// Where `/health`, `/ready` and `/metrics` answer.
    pub listen: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<u8, Error>>,
}

impl Daemon {
    /// Asks the daemon to stop (after the write in flight) and waits.
    pub async fn stop(self) -> Result<u8, Error> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .map_err(|e| Error::Runtime(format!("daemon task failed: {e}")))?
    }

    /// Whether the daemon is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Starts the daemon; returns once the store is open and the ops listener is
/// bound (the first reconcile runs in the background).
pub async fn start(settings: Settings) -> Result<Daemon, Error> {
    let metrics = Arc::new(Metrics::with_zeroes());
    let health = Arc::new(Health::new(
        (settings.watch.resync * 2).max(Duration::from_secs(300)),
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let store = Store::open(&settings.watch.data_dir, &settings.chain_id)
        .map_err(|e| Error::Store(e.to_string()))?;
    health.set_store(true);
    if let Some(j) = store.journal() {
        tracing::warn!(
            started_unix = j.started_unix,
            to_assign = j.to_assign,
            assigned = j.assigned,
            to_unassign = j.to_unassign,
            unassigned = j.unassigned,
            "the previous apply was interrupted; re-listing the registry and converging from there"
        );
    }
    let (listen, ops_task) = ops::serve(
        settings.watch.listen,
        health.clone(),
        metrics.clone(),
        shutdown_rx.clone(),
    )
    .await
    .map_err(|e| {
        Error::Config(crate::settings::ConfigError {
            origin: "--listen".into(),
            message: format!("cannot listen on {}: {e}", settings.watch.listen),
        })
    })?;
    tracing::info!(listen = %listen, data_dir = %settings.watch.data_dir.display(), apply = settings.watch.apply, "keysync watch starting");
    if !settings.watch.apply {
        tracing::warn!("shadow mode: plans are logged and exposed in /metrics, nothing is written (add --apply to write)");
    }

    let (tx, rx) = trigger::channel();
    let inputs = InputSet::restore(settings.inputs.clone(), &store);
    let watcher = watch_files(&inputs, tx.clone())?;
    let cache = store.load_cache();
    tracing::info!(cached_validators = cache.len(), "chain cache loaded");

    let task_settings = settings.clone();
    let task_metrics = metrics.clone();
    let task_health = health.clone();
    let mut task_shutdown = shutdown_rx.clone();
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        let rec = tokio::select! {
            r = connect(&task_settings, task_metrics.clone()) => r?,
            _ = task_shutdown.wait_for(|s| *s) => return Ok(0),
        };
        let mut aux = Vec::new();
        if let Some(beacon) = &rec.beacon {
            let cfg = stream::StreamConfig {
                urls: beacon.urls(),
                expected_chain: task_settings
                    .chain_id
                    .numeric()
                    .map(|n| (n, task_settings.chain_id.to_string())),
                slot: task_settings.watch.slot,
                http: beacon.http().clone(),
            };
            aux.push(tokio::spawn(stream::follow(
                cfg,
                tx.clone(),
                task_metrics.clone(),
                task_health.clone(),
                task_shutdown.clone(),
            )));
        }
        aux.push(tokio::spawn(resync_timer(
            task_settings.watch.resync,
            tx.clone(),
            task_shutdown.clone(),
        )));
        tx.send(Trigger::Startup);
        notify_systemd("READY=1");
        let controller = Controller {
            live: crate::desired::Live::new(rec.chain_id.clone()),
            rec,
            store,
            cache,
            inputs,
            limiter: crate::apply::write_limiter(task_settings.watch.writes_per_second),
            settings: task_settings,
            metrics: task_metrics,
            health: task_health,
            snapshot: None,
            converged: false,
            watched: Default::default(),
            shutdown: task_shutdown,
            failures: 0,
            last_counts: (0, 0),
            last_epoch_refresh: None,
            held_for_witness: false,
            last_hold: None,
            last_outside: 0,
        };
        let code = controller.run(rx).await;
        notify_systemd("STOPPING=1");
        for t in aux {
            t.abort();
        }
        let _ = ops_task.await;
        code
    });
    Ok(Daemon {
        listen,
        metrics,
        health,
        shutdown: shutdown_tx,
        task,
    })
}

/// Resolves the identity, retrying remote failures; a rejected key ends the
/// daemon (exit 2), as does a configuration error.
async fn connect(settings: &Settings, metrics: Arc<Metrics>) -> Result<Reconciler, Error> {
    let mut failures = 0u32;
    loop {
        match Reconciler::connect(settings, Some(metrics.clone())).await {
            Ok(r) => return Ok(r),
            Err(Error::Registry(e))
                if !matches!(
                    e,
                    crate::registry::RegistryError::Rejected { .. }
                        | crate::registry::RegistryError::NotOperatorScoped
                ) =>
            {
                failures += 1;
                let wait =
                    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                tracing::error!(error = %e, retry_in_s = wait.as_secs(), "cannot resolve the operator id yet; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn resync_timer(every: Duration, tx: Triggers, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => tx.send(Trigger::Resync),
            _ = shutdown.changed() => return,
        }
    }
}

/// Watches the input files' directories; every relevant change is a trigger.
fn watch_files(
    inputs: &InputSet,
    tx: Triggers,
) -> Result<Option<notify::RecommendedWatcher>, Error> {
    let dirs = inputs.watch_dirs();
    if dirs.is_empty() {
        return Ok(None);
    }
    let filter = InputFilter::from(inputs);
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for p in ev.paths {
                    if filter.matches(&p) {
                        tx.send(Trigger::Source(p));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|e| Error::Runtime(format!("cannot start the file watcher: {e}")))?;
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive).map_err(|e| {
            Error::Config(crate::settings::ConfigError {
                origin: d.display().to_string(),
                message: format!("cannot watch this input directory: {e}"),
            })
        })?;
    }
    Ok(Some(watcher))
}

/// A copy of which paths are inputs, for the watcher's thread.
struct InputFilter {
    files: Vec<std::path::PathBuf>,
    dir: Option<std::path::PathBuf>,
}

impl InputFilter {
    fn from(inputs: &InputSet) -> Self {
        let (files, dir) = inputs.paths();
        InputFilter { files, dir }
    }

    fn matches(&self, p: &std::path::Path) -> bool {
        if self.files.iter().any(|f| f == p) {
            return true;
        }
        match (&self.dir, p.parent(), p.file_name()) {
            (Some(d), Some(parent), Some(name)) => {
                parent == d && !crate::sources::is_ignored_name(&name.to_string_lossy())
            }
            _ => false,
        }
    }
}

/// Tells systemd (Type=notify) about our state; a no-op elsewhere.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let result = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `keysync watch`: runs until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<u8, Error> {
    let daemon = start(settings).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Runtime(format!("cannot install the SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the write in flight, then stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: finishing the write in flight, then stopping"),
        _ = wait_finished(&daemon) => {}
    }
    daemon.stop().await
}

async fn wait_finished(d: &Daemon) {
    while d.is_running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
