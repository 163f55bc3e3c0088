//! A `keysync watch --apply` process killed with SIGKILL in the middle of an
//! apply, then restarted, converges with no spurious unassign (safety
//! invariant 5). Runs the real binary against the in-process simulator.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keysync_sim::Route;
use support::*;

const T: Duration = Duration::from_secs(30);

fn spawn_watch(sim: &keysync_sim::Sim, file: &std::path::Path, state: &std::path::Path) -> Child {
    spawn_watch_with(sim, file, state, &[])
}

fn spawn_watch_with(
    sim: &keysync_sim::Sim,
    file: &std::path::Path,
    state: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("watch")
        .arg("--apply")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", sim.beacon_url())
        .env("KEYSYNC_PUBKEYS_FILE", file)
        .env("KEYSYNC_DATA_DIR", state)
        .env("KEYSYNC_LISTEN", "127.0.0.1:0")
        .env("KEYSYNC_MAX_DELETES", "100")
        .env("KEYSYNC_DEBOUNCE_MS", "20")
        .env("KEYSYNC_SLOT_MS", SLOT_MS.to_string())
        .env("KEYSYNC_HTTP_BACKOFF_MS", "5")
        .env("KEYSYNC_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log_file(state))
        .spawn()
        .expect("keysync starts")
}

/// stderr of every run on `state`, appended to `<state>.log`.
fn log_file(state: &std::path::Path) -> Stdio {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.with_extension("log"))
        .expect("log file");
    Stdio::from(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_5_killed_mid_apply_restarts_and_converges_without_spurious_unassign() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    let state = dir.join("state");
    let desired: Vec<u64> = (0..10).collect();
    std::fs::write(&file, pubkeys_text(&sim, desired.clone())).unwrap();
    // Registry: 0..5 already ours, plus 20 stale rows to remove.
    for i in (0..5).chain(40..60) {
        sim.seed_assignment(i, "0x1", true);
    }
    // Slow unassigns so the kill lands mid-apply.
    sim.set_latency(Some(Route::Unassign), 100);

    let mut child = spawn_watch(&sim, &file, &state);
    let desired_always_assigned = |sim: &keysync_sim::Sim| {
        let a = active(sim);
        (0..5).all(|i| a.contains(&i))
    };
    eventually("some unassigns landed", T, || {
        assert!(
            desired_always_assigned(&sim),
            "a desired validator was unassigned"
        );
        sim.count(Route::Unassign) >= 4
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let removed_before = 60 - 40 - active(&sim).iter().filter(|i| **i >= 40).count();
    assert!(
        removed_before > 0 && removed_before < 20,
        "killed mid-apply ({removed_before} of 20 removed)"
    );

    let mut child = spawn_watch(&sim, &file, &state);
    eventually("converged after restart", T, || {
        assert!(
            desired_always_assigned(&sim),
            "a desired validator was unassigned"
        );
        active(&sim) == desired
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    // Every DELETE was for a stale row: at most 20, plus one in flight at the kill.
    assert!(
        sim.count(Route::Unassign) <= 21,
        "{} unassigns",
        sim.count(Route::Unassign)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_write_in_flight_and_exits_zero() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [0])).unwrap();
    for i in 40..50 {
        sim.seed_assignment(i, "0x1", true);
    }
    sim.set_latency(Some(Route::Unassign), 200);
    let mut child = spawn_watch(&sim, &file, &dir.join("state"));
    eventually("unassigns under way", T, || sim.count(Route::Unassign) >= 2).await;
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(0));
    // The write in flight finished: every DELETE the sim received landed.
    let landed = 10 - active(&sim).iter().filter(|i| **i >= 40).count() as u64;
    assert_eq!(landed, sim.count(Route::Unassign));
    assert!(landed < 10, "stopped before the end of the apply");
    // --log-format json: every stderr line of the daemon is one JSON object.
    let log = std::fs::read_to_string(dir.join("state.log")).unwrap();
    assert!(log.lines().count() > 3, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(!log.contains(&sim.api_key()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_when_ready() {
    let sim = sim(8).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut child = spawn_watch_with(
        &sim,
        &file,
        &dir.join("state"),
        &[("NOTIFY_SOCKET", sock_path.as_os_str())],
    );
    let mut buf = [0u8; 64];
    let n = tokio::task::spawn_blocking(move || sock.recv(&mut buf).map(|n| buf[..n].to_vec()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&n), "READY=1");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_5_a_kill_mid_apply_then_a_broken_input_keeps_the_edit() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    let state = dir.join("state");
    // Ours: 0..5 and 30. The edit drops 30 and adds 40.
    let before: Vec<u64> = (0..5).chain([30]).collect();
    let after: Vec<u64> = (0..5).chain([40]).collect();
    std::fs::write(&file, pubkeys_text(&sim, before.clone())).unwrap();
    for i in &before {
        sim.seed_assignment(*i, "0x1", true);
    }
    let mut child = spawn_watch(&sim, &file, &state);
    eventually("first pass done", T, || sim.count(Route::List) >= 1).await;
    // Unassigns take long: the kill lands after 40's assign, before 30 goes.
    sim.set_latency(Some(Route::Unassign), 3_000);
    write_by_rename(&file, &pubkeys_text(&sim, after.clone()));
    eventually("the edit's assign landed", T, || active(&sim).contains(&40)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(active(&sim).contains(&30), "killed before the unassign");

    // At restart the file is broken (a truncate-then-write cut short).
    std::fs::write(&file, "0xnot-a-pubkey\n").unwrap();
    sim.set_latency(Some(Route::Unassign), 0);
    let mut child = spawn_watch(&sim, &file, &state);
    eventually("the edit completes from the saved input", T, || {
        assert!(
            active(&sim).contains(&40),
            "the edit was undone: 40 unassigned"
        );
        active(&sim) == after
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_5_a_store_rolled_back_and_a_broken_input_remove_nothing() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    let state = dir.join("state");
    let stop = |mut child: Child| {
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap();
    };
    // v1: 0..5, converged, stopped cleanly; keep a copy of that store.
    std::fs::write(&file, pubkeys_text(&sim, 0..5)).unwrap();
    let child = spawn_watch(&sim, &file, &state);
    eventually("v1 assigned", T, || {
        active(&sim) == (0..5).collect::<Vec<_>>()
    })
    .await;
    stop(child);
    let old_copy = dir.join("state-v1");
    copy_dir(&state.join("keysync.sled"), &old_copy);
    // v2: five more lines, converged, stopped.
    std::fs::write(&file, pubkeys_text(&sim, 0..10)).unwrap();
    let child = spawn_watch(&sim, &file, &state);
    eventually("v2 assigned", T, || {
        active(&sim) == (0..10).collect::<Vec<_>>()
    })
    .await;
    stop(child);

    // The store comes back as the older copy (its generation file is the
    // newer one), and the input is broken at restart.
    std::fs::remove_dir_all(state.join("keysync.sled")).unwrap();
    copy_dir(&old_copy, &state.join("keysync.sled"));
    std::fs::write(&file, "0xnot-a-pubkey\n").unwrap();
    sim.reset_counts();
    let child = spawn_watch(&sim, &file, &state);
    eventually("a pass ran", T, || sim.count(Route::List) >= 1).await;
    let log = state.with_extension("log");
    eventually("the rollback is reported", T, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("unusable"))
    })
    .await;
    // The pass that would have removed the newer lines holds them instead;
    // then a few more epochs' passes get their chance to get it wrong.
    eventually("the removals are held", T, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("input_not_read"))
    })
    .await;
    let epoch = sim.current_epoch();
    eventually("three more epochs", T, || sim.current_epoch() >= epoch + 3).await;
    stop(child);
    assert_eq!(
        active(&sim),
        (0..10).collect::<Vec<_>>(),
        "the older stored input was not taken: nothing removed"
    );
    assert_eq!(sim.count(Route::Unassign), 0);
}
