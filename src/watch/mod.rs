//! `keysync watch`: the daemon. Follows the beacon node's events and the
//! input files, and applies only the delta.
//!
//! Owns start-up and shutdown: open the store, resolve the identity
//! (retrying what the [`policy`] retries), start the ops listener, the event
//! stream follower, the file watcher and the resync timer, then hand
//! triggers to the [`controller`]. SIGTERM/SIGINT finish the write in
//! flight, flush the store and exit 0; a failure retrying cannot fix (a
//! configuration error, a rejected key: see [`policy`]) ends the daemon by
//! itself, at start or later, with that error's exit code. Every loop and
//! every retry wait selects on the shutdown value.

pub mod controller;
mod events;
pub mod keymanagers;

pub mod ops;
pub mod policy;
pub mod scheduler;
pub mod slot;
pub mod stream;
pub mod trigger;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::watch;

use crate::error::{Error, EXIT_OK};
use crate::inputs::InputSet;
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::settings::Settings;
use crate::store::Store;
use controller::Controller;
use ops::Health;
use policy::{error_policy, Requeue};
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
    /// Returns its exit code: 0, or the code it stopped with by itself
    /// before (see [`policy`]).
    pub async fn stop(self) -> Result<u8, Error> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .map_err(|e| Error::Runtime(format!("daemon task failed: {e}")))?
    }

    /// Whether the daemon is still running (false once it stopped by
    /// itself: [`Daemon::stop`] then returns its exit code).
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

    // Off the runtime: it may wait out another process's lock (5 s at most)
    // and reads the whole store to prove it current.
    let mut store = {
        let dir = settings.watch.data_dir.clone();
        let chain = settings.chain_id.clone();
        tokio::task::spawn_blocking(move || Store::open(&dir, &chain))
            .await
            .map_err(|e| Error::Store(format!("opening the state store failed: {e}")))?
            .map_err(|e| Error::Store(e.to_string()))?
    };
    metrics
        .store_rolled_back
        .set(i64::from(store.opened().is_rolled_back()));
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
    tracing::info!(listen = %listen, data_dir = %settings.watch.data_dir.display(), apply = settings.watch.apply, store = %store.opened(), "keysync watch starting");
    if !settings.watch.apply {
        tracing::warn!("shadow mode: plans are logged and exposed in /metrics, nothing is written (add --apply to write)");
    }

    let (tx, rx) = trigger::channel();
    // The chain cache first: it holds the pubkeys the inputs' lines name.
    let mut cache = store.load_cache();
    tracing::info!(cached_validators = cache.len(), "chain cache loaded");
    // Absolute: file events name absolute paths (a relative input would
    // only ever be seen by the resync's re-read).
    let mut inputs = InputSet::restore(settings.inputs.absolute(), &store, &mut cache);
    inputs.set_allow_empty(settings.allow_empty);
    // The secrets' files: the API key's and each keymanager token's.
    let secret_files: Vec<PathBuf> = settings
        .api_key_file
        .iter()
        .chain(settings.inputs.keymanagers.iter().map(|k| &k.token_file))
        .map(|k| std::path::absolute(k).unwrap_or_else(|_| k.clone()))
        .collect();
    let watcher = watch_files(&inputs, secret_files, tx.clone())?;
    // Reading the whole store left every page of it resident in sled.
    if let Err(e) = store.shed(true) {
        return Err(Error::Store(format!(
            "re-opening the state store after loading it: {e}"
        )));
    }
    crate::alloc::trim();

    let task_settings = settings.clone();
    let task_metrics = metrics.clone();
    let task_health = health.clone();
    let task_shutdown = shutdown_rx.clone();
    // A daemon that stops by itself stops every loop and the ops listener.
    let stop_all = shutdown_tx.clone();
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        let connected = connect(&task_settings, task_metrics.clone(), task_shutdown.clone()).await;
        let rec = match connected {
            Ok(rec) => rec,
            Err(code) => {
                let _ = stop_all.send(true);
                let _ = ops_task.await;
                return Ok(code);
            }
        };
        let slot = slot::SlotLength::new(task_settings.watch.slot);
        let mut aux = Vec::new();
        if let Some(beacon) = &rec.beacon {
            let cfg = stream::StreamConfig {
                urls: beacon.urls(),
                expected_chain: task_settings
                    .chain_id
                    .numeric()
                    .map(|n| (n, task_settings.chain_id.to_string())),
                slot: slot.clone(),
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
        let mailbox = keymanagers::Mailbox::default();
        let kms = &task_settings.inputs.keymanagers;
        let km_clients = crate::inputs::keymanager::clients(&rec.http, kms);
        if !kms.is_empty() {
            aux.push(tokio::spawn(keymanagers::poll(
                km_clients.clone(),
                kms.iter().map(|k| k.url.clone()).collect(),
                task_settings.watch.keymanager_poll,
                task_settings.allow_empty,
                mailbox.clone(),
                tx.clone(),
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
            state: crate::reconcile::State {
                cache,
                desired: crate::desired::Desired::Live(crate::desired::Live::new(
                    rec.chain_id.clone(),
                )),
                snapshot: None,
                converged: false,
            },
            rec,
            store,
            inputs,
            keymanagers: mailbox,
            keymanager_clients: km_clients,
            limiter: crate::apply::write_limiter(task_settings.watch.writes_per_second),
            settings: task_settings,
            metrics: task_metrics,
            health: task_health,
            watched: Default::default(),
            shutdown: task_shutdown,
            last_counts: (0, 0),
            last_epoch_refresh: None,
            last_scanned: None,
            slot,
            held_for_witness: false,
            last_hold: None,
            last_outside: 0,
        };
        let code = controller.run(rx).await;
        notify_systemd("STOPPING=1");
        let _ = stop_all.send(true);
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

/// Resolves the identity, retrying what the error policy retries, each
/// wait cut short by shutdown. `Err`: the exit code to stop with (0 when
/// shutdown was asked for first; else the error's, logged: a rejected key
/// ends the daemon with 2).
async fn connect(
    settings: &Settings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Reconciler, u8> {
    let mut attempt = 0u32;
    let stop = shutdown.clone();
    loop {
        let result = tokio::select! {
            biased;
            _ = scheduler::requested(&mut shutdown) => return Err(EXIT_OK),
            r = Reconciler::connect_until(settings, Some(metrics.clone()), Some(stop.clone())) => r,
        };
        let e = match result {
            Ok(rec) => return Ok(rec),
            Err(e) => e,
        };
        attempt += 1;
        match error_policy(&e, attempt) {
            Requeue::After(wait) => {
                tracing::error!(error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "cannot resolve the operator id yet; retrying");
                tokio::select! {
                    biased;
                    _ = scheduler::requested(&mut shutdown) => return Err(EXIT_OK),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Requeue::Stop { code, why } => {
                policy::log_stop(&e, code, why);
                return Err(code);
            }
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

/// Watches the input files' directories, and the directory of what each
/// configured file resolves to; every relevant change is a trigger.
fn watch_files(
    inputs: &InputSet,
    secret_files: Vec<PathBuf>,
    tx: Triggers,
) -> Result<Option<notify::RecommendedWatcher>, Error> {
    let filter = InputFilter::from(inputs);
    let key = (!secret_files.is_empty()).then(|| InputFilter::of_files(secret_files));
    let mut dirs = inputs.watch_dirs();
    dirs.extend(filter.resolved_dirs());
    if let Some(k) = &key {
        dirs.extend(k.files.iter().map(|f| parent_of(f).to_path_buf()));
        dirs.extend(k.resolved_dirs());
    }
    dirs.sort();
    dirs.dedup();
    if dirs.is_empty() && inputs.keystores_dir().is_none() {
        return Ok(None);
    }
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if matches!(ev.kind, notify::EventKind::Access(_)) {
                    return;
                }
                let mut changed: Vec<PathBuf> =
                    ev.paths.iter().flat_map(|p| filter.changed(p)).collect();
                changed.sort();
                changed.dedup();
                for p in changed {
                    tx.send(Trigger::Source(p));
                }
                let key_changed = key
                    .as_ref()
                    .is_some_and(|k| ev.paths.iter().any(|p| !k.changed(p).is_empty()));
                if key_changed {
                    tx.send(Trigger::KeyFile);
                }
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|e| Error::Runtime(format!("cannot start the file watcher: {e}")))?;
    // A keystores directory not there yet (a volume mounted late) is the
    // input's problem, not the daemon's: its last good content stands and
    // /ready says so; it is re-read at every resync, and watched from the
    // next start.
    let recursive = inputs.keystores_dir().map(Path::to_path_buf).filter(|k| {
        let there = k.is_dir();
        if !there {
            tracing::warn!(dir = %k.display(), "the keystores directory is not there: it is re-read at every resync, and watched once keysync restarts with it in place");
        }
        there
    });
    for (d, mode) in dirs
        .iter()
        .map(|d| (d, RecursiveMode::NonRecursive))
        .chain(recursive.iter().map(|d| (d, RecursiveMode::Recursive)))
    {
        watcher.watch(d, mode).map_err(|e| {
            Error::Config(crate::settings::ConfigError {
                origin: d.display().to_string(),
                message: format!("cannot watch this input directory: {e}"),
            })
        })?;
    }
    Ok(Some(watcher))
}

/// Which input paths an event on a path stands for, for the watcher's
/// thread.
///
/// A configured file changes when its own entry changes, when what it
/// resolves to changes (a symlink into another directory), and — mounted
/// from a Kubernetes ConfigMap or Secret — when the kubelet swaps the
/// `..data` symlink its entry points through: the kubelet's atomic writer
/// writes a new `..<timestamp>` directory, then renames `..data_tmp` over
/// `..data`; no event ever names the file itself. Its hidden `..` entries
/// therefore stand for every input in their directory. Anything missed
/// (a bind mount replaced underneath) is caught by the resync's re-read.
struct InputFilter {
    files: Vec<PathBuf>,
    /// What each configured file resolved to at start, when it is
    /// elsewhere: (resolved path, configured path).
    resolved: Vec<(PathBuf, PathBuf)>,
    dir: Option<PathBuf>,
    /// The keystores directory: a change anywhere under it is a change of it.
    keystores: Option<PathBuf>,
}

impl InputFilter {
    fn from(inputs: &InputSet) -> Self {
        let (files, dir) = inputs.paths();
        let mut filter = InputFilter::of_files(files);
        filter.dir = dir;
        filter.keystores = inputs.keystores_dir().map(Path::to_path_buf);
        filter
    }

    /// A filter for `files` alone (no drop directory).
    fn of_files(files: Vec<PathBuf>) -> Self {
        let resolved = files
            .iter()
            .filter_map(|f| {
                let r = std::fs::canonicalize(f).ok()?;
                let plain = std::path::absolute(f).ok()?;
                (r != plain).then_some((r, f.clone()))
            })
            .collect();
        InputFilter {
            files,
            resolved,
            dir: None,
            keystores: None,
        }
    }

    /// Directories of the resolved targets (watched too).
    fn resolved_dirs(&self) -> Vec<PathBuf> {
        self.resolved
            .iter()
            .filter_map(|(r, _)| r.parent().map(Path::to_path_buf))
            .collect()
    }

    /// The input paths an event on `p` may have changed.
    fn changed(&self, p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(k) = self.keystores.as_ref().filter(|k| p.starts_with(k)) {
            // Keystores and the per-validator directories only: Lighthouse
            // writes its slashing database there on every attestation.
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let keystore_or_dir = p == k.as_path()
                || (!crate::inputs::is_ignored_name(&name)
                    && (name.ends_with(".json") || !name.contains('.')));
            if keystore_or_dir {
                out.push(k.clone());
            }
        }
        if self.files.iter().any(|f| f == p) {
            out.push(p.to_path_buf());
        }
        out.extend(
            self.resolved
                .iter()
                .filter(|(r, _)| r == p)
                .map(|(_, f)| f.clone()),
        );
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return out;
        };
        let name = name.to_string_lossy();
        if is_kubelet_entry(&name) {
            out.extend(self.files.iter().filter(|f| same_dir(f, parent)).cloned());
            if self.dir.as_deref() == Some(parent) {
                // Every entry of a mounted drop directory may have changed.
                if let Ok(list) = std::fs::read_dir(parent) {
                    out.extend(list.flatten().map(|e| e.path()).filter(|e| {
                        e.file_name()
                            .is_some_and(|n| !crate::inputs::is_ignored_name(&n.to_string_lossy()))
                    }));
                }
            }
        } else if self.dir.as_deref() == Some(parent) && !crate::inputs::is_ignored_name(&name) {
            out.push(p.to_path_buf());
        }
        out
    }
}

/// The kubelet's atomic writer's own entries: `..data`, `..data_tmp`,
/// `..<timestamp>`.
fn is_kubelet_entry(name: &str) -> bool {
    name.starts_with("..") && name.len() > 2
}

/// Whether configured file `f` sits in directory `dir`.
fn same_dir(f: &Path, dir: &Path) -> bool {
    parent_of(f) == dir
}

/// A file's directory (`.` for a bare name).
fn parent_of(f: &Path) -> &Path {
    f.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_the_keystores_dir_only_keystores_and_directories_count() {
        let f = InputFilter {
            files: vec![],
            resolved: vec![],
            dir: None,
            keystores: Some(PathBuf::from("/v")),
        };
        let hit = |p: &str| f.changed(Path::new(p)) == vec![PathBuf::from("/v")];
        assert!(hit("/v/0xab/voting-keystore.json"));
        assert!(hit("/v/keystore-m_12381_3600_0_0_0-1.json"));
        assert!(hit("/v/0xab"), "a validator's directory created or removed");
        assert!(hit("/v"));
        for quiet in [
            "/v/slashing_protection.sqlite",
            "/v/slashing_protection.sqlite-journal",
            "/v/0xab/voting-keystore.json.lock",
            "/v/.secrets",
            "/v/0xab/.voting-keystore.json.swp",
            "/v/validator_definitions.yml",
        ] {
            assert!(f.changed(Path::new(quiet)).is_empty(), "{quiet}");
        }
        assert!(f.changed(Path::new("/w/x.json")).is_empty());
    }
}
