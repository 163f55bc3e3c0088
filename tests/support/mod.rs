//! Shared harness for the daemon's end-to-end tests: an in-process
//! simulator, settings for a daemon pointed at it, and waiting for a
//! condition with a deadline (never sleeping on hope).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keysync::cli::{Command, Common, WatchArgs};
use keysync::settings::{AllFlags, Settings};
use keysync_sim::{Sim, SimConfig};

pub const SLOT_MS: u64 = 100;
pub const SLOTS_PER_EPOCH: u64 = 4;
/// Three seconds of 100 ms slots: a loaded test machine's timers never make
/// a healthy simulator look behind.
pub const SYNC_TOLERANCE_SLOTS: u64 = 30;

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(std::env::var("KEYSYNC_LOG").unwrap_or_else(|_| "keysync=info".into()))
        .try_init();
}

pub async fn sim(validators: u64) -> Sim {
    sim_with(SimConfig {
        validators,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        ..Default::default()
    })
    .await
}

pub async fn sim_with(cfg: SimConfig) -> Sim {
    init_logs();
    Sim::start(cfg).await.expect("simulator starts")
}

/// Watch settings for a daemon against `sim`, inputs in `dir`.
pub fn watch_common(sim: &Sim, beacon_url: Option<String>) -> Common {
    Common {
        api_url: Some(sim.url()),
        auth_url: Some(sim.url()),
        api_key: Some(sim.api_key()),
        beacon_url: Some(beacon_url.unwrap_or_else(|| sim.beacon_url())),
        http_backoff_ms: Some(5),
        http_attempts: Some(3),
        sync_tolerance_slots: Some(SYNC_TOLERANCE_SLOTS),
        ..Default::default()
    }
}

pub fn watch_args(common: Common, data_dir: &Path, apply: bool, max_deletes: u64) -> WatchArgs {
    WatchArgs {
        common,
        apply,
        max_deletes: Some(max_deletes),
        data_dir: Some(data_dir.to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        debounce_ms: Some(50),
        max_wait_ms: Some(500),
        resync_secs: Some(600),
        writes_per_second: Some(1000),
        slot_ms: Some(SLOT_MS),
        keymanager_poll_secs: Some(1),
    }
}

pub fn settings(args: WatchArgs) -> Settings {
    Settings::resolve(&Command::Watch(args), &AllFlags).expect("valid settings")
}

/// Polls `cond` until true, panicking with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `lines` to `path` atomically (write a temp file, rename over).
pub fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

pub fn pubkeys_text(sim: &Sim, indices: impl IntoIterator<Item = u64>) -> String {
    indices
        .into_iter()
        .map(|i| format!("{}\n", sim.pubkey(i)))
        .collect()
}

pub fn active(sim: &Sim) -> Vec<u64> {
    sim.active_assignments()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// What a `keysync` process did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `keysync` binary against `sim` (console, auth and beacon), with
/// a clean environment plus `env`.
pub async fn keysync(sim: &Sim, args: &[&str], env: &[(&str, &str)]) -> Run {
    keysync_with_beacon(sim, &sim.beacon_url(), args, env).await
}

/// [`keysync`] with another `KEYSYNC_BEACON_URL`.
pub async fn keysync_with_beacon(
    sim: &Sim,
    beacon_url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", beacon_url)
        .env("KEYSYNC_HTTP_BACKOFF_MS", "2")
        .env(
            "KEYSYNC_SYNC_TOLERANCE_SLOTS",
            SYNC_TOLERANCE_SLOTS.to_string(),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("keysync runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    (d, p)
}
