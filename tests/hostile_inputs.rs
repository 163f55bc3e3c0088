//! Safety invariant 1 against hostile inputs: an input that cannot be read
//! as a regular file (a dangling or looping link, a subdirectory, a FIFO, a
//! device, a missing or empty drop directory, a file over the size cap), or
//! that holds only whitespace, never removes anything. One-shot: exit 4,
//! naming the file, nothing written, and promptly (a FIFO never hangs).
//! Daemon: the last good content stands, the error is counted, and `/ready`
//! names the file. Parsing a large input stays within about 3 times its
//! size. Every test asserts the registry the simulator ends with.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keysync::inputs::{self, SourceError, SourceKind};
use keysync::watch;
use keysync_sim::{Route, Sim};
use support::*;

const T: Duration = Duration::from_secs(20);
/// How long a one-shot run may take before it counts as hung.
const PROMPT: Duration = Duration::from_secs(30);

// ---- helpers -------------------------------------------------------------

fn writes(sim: &Sim) -> u64 {
    sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign)
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

fn symlink(target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// A keystore file's text for validator `i` of `sim`.
fn keystore(sim: &Sim, i: u64) -> String {
    format!(
        r#"{{"crypto":{{}},"pubkey":"{}","path":"m/12381/3600/{i}/0/0","uuid":"x","version":4}}"#,
        sim.pubkey(i).trim_start_matches("0x")
    )
}

/// Runs the one-shot binary, failing the test (instead of hanging it) if
/// it does not finish in time.
async fn oneshot(sim: &Sim, args: &[&str], env: &[(&str, &str)]) -> Run {
    tokio::time::timeout(PROMPT, keysync(sim, args, env))
        .await
        .unwrap_or_else(|_| panic!("keysync {args:?} did not finish within {PROMPT:?}"))
}

/// Asserts a refused run: exit 4, stderr naming `what`, nothing written,
/// the registry as it was.
fn refused(r: &Run, sim: &Sim, before: &[u64], what: &[&str]) {
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert_eq!(r.stdout, "", "nothing printed");
    for w in what {
        assert!(
            r.stderr.contains(w),
            "stderr should name {w:?}: {}",
            r.stderr
        );
    }
    assert_eq!(active(sim), before, "nothing removed");
    assert_eq!(writes(sim), 0, "nothing written");
}

async fn ready(daemon: &watch::Daemon) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/ready", daemon.listen))
        .await
        .expect("/ready answers");
    let code = r.status().as_u16();
    (code, r.json().await.expect("/ready is JSON"))
}

/// Polls `/ready` until `cond` holds of its body.
async fn ready_until(
    daemon: &watch::Daemon,
    what: &str,
    cond: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (code, body) = ready(daemon).await;
        if cond(code, &body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for /ready: {what}; last: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/ready` is 503 and says why, naming `path`.
async fn not_ready_naming(daemon: &watch::Daemon, path: &Path, says: &str) {
    let name = path.display().to_string();
    let body = ready_until(
        daemon,
        "inputs_readable false naming the file",
        |code, b| {
            code == 503
                && b["checks"]["inputs_readable"] == false
                && b["why"]["inputs_readable"]
                    .as_str()
                    .is_some_and(|w| w.contains(&name) && w.contains(says))
        },
    )
    .await;
    assert_eq!(body["ready"], false, "{body}");
}

fn passes(daemon: &watch::Daemon) -> f64 {
    daemon
        .metrics
        .get("keysync_reconciles_total", &[("result", "ok")])
}

/// Waits until two more passes have run (over whatever broke).
async fn two_more_passes(daemon: &watch::Daemon) {
    let from = passes(daemon);
    eventually("two more passes ran", T, || passes(daemon) >= from + 2.0).await;
}

fn errors(daemon: &watch::Daemon) -> f64 {
    daemon.metrics.get("keysync_source_errors_total", &[])
}

fn failing(daemon: &watch::Daemon) -> f64 {
    daemon.metrics.get("keysync_inputs_failing", &[])
}

/// A drop directory with `a.pubkeys` (validators 0 and 1) and whatever
/// `more` adds; the registry holds 0, 1 and 2 (2 is the validator of the
/// entry that cannot be read).
fn drop_dir_scenario(sim: &Sim, dir: &Path) -> PathBuf {
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(sim, [0, 1])).unwrap();
    sim.seed_assign_range(0, 3, "0x1", true);
    drop
}

// ---- one-shot: the drop directory ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_dangling_symlink_in_the_drop_directory_removes_nothing() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let drop = drop_dir_scenario(&sim, &dir);
    // The keystore of validator 2 lives on a volume that is not mounted.
    let link = drop.join("keystore-2.json");
    symlink(dir.join("unmounted/keystore-2.json"), &link);
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&link), "symbolic link", "does not exist"],
    );

    // Mounted: it reads through the link, and nothing is left to do.
    std::fs::create_dir(dir.join("unmounted")).unwrap();
    std::fs::write(dir.join("unmounted/keystore-2.json"), keystore(&sim, 2)).unwrap();
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0, 1, 2]);
    assert_eq!(sim.count(Route::Unassign), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_symlink_loop_in_the_drop_directory_removes_nothing() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let drop = drop_dir_scenario(&sim, &dir);
    let (a, b) = (drop.join("loop-a.json"), drop.join("loop-b.json"));
    symlink(&b, &a);
    symlink(&a, &b);
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&a), "symbolic link that cannot be followed"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_subdirectory_of_the_drop_directory_removes_nothing() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let drop = drop_dir_scenario(&sim, &dir);
    // Validator 2's keystore, one level down: not read, and not ignored.
    let sub = drop.join("validator_keys");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keystore-2.json"), keystore(&sim, 2)).unwrap();
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&sub), "is a directory", "subdirectories are not read"],
    );

    // Moved up, the directory renamed out of the way: read, nothing to do.
    std::fs::rename(sub.join("keystore-2.json"), drop.join("keystore-2.json")).unwrap();
    std::fs::rename(&sub, drop.join(".validator_keys")).unwrap();
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0, 1, 2]);
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_volume_layout_is_read_through_its_links() {
    // ConfigMap and Secret volumes: `name -> ..data/name`, `..data ->
    // ..2026_…` (names starting with '.', ignored as entries).
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let drop = dir.join("drop");
    let stamp = drop.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&stamp).unwrap();
    std::fs::write(stamp.join("v.pubkeys"), pubkeys_text(&sim, [4, 5])).unwrap();
    std::fs::write(stamp.join("keystore-6.json"), keystore(&sim, 6)).unwrap();
    symlink("..2026_01_01_00_00_00.000000001", &drop.join("..data"));
    symlink("..data/v.pubkeys", &drop.join("v.pubkeys"));
    symlink("..data/keystore-6.json", &drop.join("keystore-6.json"));
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_missing_or_empty_drop_directory_removes_nothing() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    let records = dir.join("r.json");
    std::fs::write(
        &records,
        format!(
            r#"[{{"validator_index": 0, "chain_id": "0x1", "validator_key": "{}"}}]"#,
            sim.pubkey(0)
        ),
    )
    .unwrap();
    let drop = dir.join("keys");
    let env = [
        ("KEYSYNC_INDICES_FILE", p(&records)),
        ("KEYSYNC_INPUT_DIR", p(&drop)),
    ];
    // Missing (not created, or its volume's mount point gone).
    let r = oneshot(&sim, &["sync", "--apply"], &env).await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&drop), "cannot list the drop directory"],
    );

    // Empty (a mount point without its volume), or only ignored names.
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join(".hidden"), pubkeys_text(&sim, [1])).unwrap();
    std::fs::write(drop.join("edit.swp"), pubkeys_text(&sim, [2])).unwrap();
    let r = oneshot(&sim, &["sync", "--apply"], &env).await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&drop), "no input file", "--allow-empty"],
    );

    // Meant: --allow-empty.
    let r = oneshot(&sim, &["sync", "--apply", "--allow-empty"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0]);
}

// ---- one-shot: files that are not regular files --------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_fifo_or_device_as_an_input_returns_promptly_with_exit_4() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    let fifo = dir.join("validators.pubkeys");
    mkfifo(&fifo);
    // A FIFO with no writer: opening it for reading would wait forever.
    let r = oneshot(&sim, &["diff"], &[("KEYSYNC_PUBKEYS_FILE", p(&fifo))]).await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&fifo), "FIFO", "not a regular file"],
    );

    // In the drop directory, next to a good file.
    let drop = drop_dir_scenario_without_seed(&sim, &dir);
    let dropped_fifo = drop.join("incoming.json");
    mkfifo(&dropped_fifo);
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INPUT_DIR", p(&drop))],
    )
    .await;
    refused(&r, &sim, &[0, 1, 2], &[p(&dropped_fifo), "FIFO"]);

    // A device that never ends.
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_INDEX_LIST_FILE", "/dev/zero")],
    )
    .await;
    refused(&r, &sim, &[0, 1, 2], &["/dev/zero", "character device"]);
}

fn drop_dir_scenario_without_seed(sim: &Sim, dir: &Path) -> PathBuf {
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(sim, [0, 1])).unwrap();
    drop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_an_input_over_the_size_cap_is_refused_before_it_is_read() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    // Sparse: 256 MiB + 1 byte on paper, nothing on disk.
    let big = dir.join("validators.pubkeys");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(inputs::MAX_INPUT_BYTES + 1).unwrap();
    drop(f);
    let started = std::time::Instant::now();
    let r = oneshot(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&big))],
    )
    .await;
    refused(
        &r,
        &sim,
        &[0, 1, 2],
        &[p(&big), "larger than the 256 MiB limit"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused by its size, not read: {:?}",
        started.elapsed()
    );
}

#[test]
fn invariant_1_the_size_cap_admits_a_file_at_the_cap_and_refuses_one_byte_more() {
    let (_d, dir) = tmp();
    let list = dir.join("indices.txt");
    let text = "1\n2\n3\n";
    std::fs::write(&list, text).unwrap();
    let cap = text.len() as u64;
    let c = inputs::read_capped(SourceKind::IndexList, &list, cap).unwrap();
    assert_eq!(c.indices, vec![1, 2, 3]);
    std::fs::write(&list, format!("{text}4")).unwrap();
    let e = inputs::read_capped(SourceKind::IndexList, &list, cap).unwrap_err();
    assert!(matches!(e, SourceError::Read { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: cannot read: it is larger than the 6 bytes limit for this file",
            list.display()
        )
    );
}

// ---- one-shot: whitespace is not intent ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_whitespace_only_input_is_an_error_in_one_shot_unless_allow_empty() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 4, "0x1", true);
    let pubkeys = dir.join("v.pubkeys");
    std::fs::write(&pubkeys, "\n  \n\t\r\n").unwrap();
    let list = dir.join("indices.txt");
    std::fs::write(&list, "0\n").unwrap();
    let env = [
        ("KEYSYNC_PUBKEYS_FILE", p(&pubkeys)),
        ("KEYSYNC_INDEX_LIST_FILE", p(&list)),
    ];
    let r = oneshot(&sim, &["sync", "--apply"], &env).await;
    refused(
        &r,
        &sim,
        &[0, 1, 2, 3],
        &[
            p(&pubkeys),
            "no entries and no comment line",
            "--allow-empty",
        ],
    );
    // Zero bytes is no different.
    std::fs::write(&pubkeys, "").unwrap();
    let r = oneshot(&sim, &["diff"], &env).await;
    refused(&r, &sim, &[0, 1, 2, 3], &[p(&pubkeys), "no entries"]);

    // Meant: --allow-empty, and the plan goes ahead.
    std::fs::write(&pubkeys, "\n  \n").unwrap();
    let r = oneshot(&sim, &["sync", "--apply", "--allow-empty"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_only_input_is_an_intentional_empty_list() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    let pubkeys = dir.join("v.pubkeys");
    std::fs::write(&pubkeys, "# none of ours any more\n").unwrap();
    let list = dir.join("indices.txt");
    std::fs::write(&list, "0\n").unwrap();
    let env = [
        ("KEYSYNC_PUBKEYS_FILE", p(&pubkeys)),
        ("KEYSYNC_INDEX_LIST_FILE", p(&list)),
    ];
    let r = oneshot(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0]);
}

// ---- one-shot: the API key file ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_an_api_key_file_that_is_not_a_small_regular_file_is_refused() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    let list = dir.join("indices.txt");
    std::fs::write(&list, "0\n").unwrap();
    let fifo = dir.join("api-key");
    mkfifo(&fifo);
    let big = dir.join("big-key");
    std::fs::write(&big, format!("ovi_live_{}", "x".repeat(64 * 1024))).unwrap();
    let cases: [(&Path, &[&str]); 4] = [
        (&fifo, &["FIFO", "not a regular file"]),
        (&dir, &["a directory", "not a regular file"]),
        (Path::new("/dev/zero"), &["character device"]),
        (&big, &["larger than the 64 KiB limit"]),
    ];
    for (key_file, says) in cases {
        // The flag wins over the harness's KEYSYNC_API_KEY.
        let r = oneshot(
            &sim,
            &["sync", "--apply", "--api-key-file", p(key_file)],
            &[("KEYSYNC_INDEX_LIST_FILE", p(&list))],
        )
        .await;
        let mut what = vec![p(key_file), "API key file"];
        what.extend_from_slice(says);
        refused(&r, &sim, &[0, 1, 2], &what);
    }
    assert_eq!(sim.count(Route::Me), 0, "refused before any request");
}

// ---- daemon --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_fifo_or_directory_configured_as_input_in_the_daemon_keeps_its_last_good_content(
) {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("validators.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("initial 4 assigned", T, || active(&sim) == vec![0, 1, 2, 3]).await;
    ready_until(&daemon, "ready", |code, _| code == 200).await;

    for broken in ["fifo", "directory"] {
        let before = errors(&daemon);
        std::fs::remove_file(&file).unwrap();
        match broken {
            "fifo" => mkfifo(&file),
            _ => std::fs::create_dir(&file).unwrap(),
        }
        eventually("counted as an input error", T, || errors(&daemon) > before).await;
        eventually("one input failing", T, || failing(&daemon) == 1.0).await;
        not_ready_naming(&daemon, &file, "not a regular file").await;
        two_more_passes(&daemon).await;
        assert_eq!(active(&sim), vec![0, 1, 2, 3], "{broken}: nothing removed");
        assert_eq!(sim.count(Route::Unassign), 0);

        // Fixed: used again, ready again.
        match broken {
            "fifo" => std::fs::remove_file(&file).unwrap(),
            _ => std::fs::remove_dir(&file).unwrap(),
        }
        std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
        eventually("input used again", T, || failing(&daemon) == 0.0).await;
        ready_until(&daemon, "ready again", |code, b| {
            code == 200 && b["checks"]["inputs_readable"] == true
        })
        .await;
    }
    std::fs::write(&file, pubkeys_text(&sim, 0..3)).unwrap();
    eventually("a real edit still applies", T, || {
        active(&sim) == vec![0, 1, 2]
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_daemon_started_on_a_fifo_holds_every_removal() {
    // First start: the FIFO's validators are unknown, so nothing may go.
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 3, "0x1", true);
    let fifo = dir.join("validators.pubkeys");
    mkfifo(&fifo);
    let list = dir.join("indices.txt");
    std::fs::write(&list, "0\n5\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(fifo.clone());
    c.index_list_file = Some(list);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("the add goes through", T, || active(&sim).contains(&5)).await;
    eventually("the removals are held", T, || {
        daemon.metrics.get(
            "keysync_held_deletes_by_reason",
            &[("reason", "input_not_read")],
        ) == 2.0
    })
    .await;
    assert!(errors(&daemon) >= 1.0);
    not_ready_naming(&daemon, &fifo, "FIFO").await;
    two_more_passes(&daemon).await;
    assert_eq!(active(&sim), vec![0, 1, 2, 5], "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_whitespace_only_file_in_the_daemon_is_held_as_being_written() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("validators.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
    let list = dir.join("indices.txt");
    std::fs::write(&list, "9\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    c.index_list_file = Some(list);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("initial 5 assigned", T, || {
        active(&sim) == vec![0, 1, 2, 3, 9]
    })
    .await;

    for blank in ["\n", "  \n\t\n\r\n", ""] {
        std::fs::write(&file, blank).unwrap();
        eventually("blank file noticed", T, || failing(&daemon) == 1.0).await;
        not_ready_naming(&daemon, &file, "no entries and no comment line").await;
        two_more_passes(&daemon).await;
        assert_eq!(
            active(&sim),
            vec![0, 1, 2, 3, 9],
            "{blank:?}: nothing removed"
        );
        assert_eq!(sim.count(Route::Unassign), 0);
        assert_eq!(
            daemon.metrics.get("keysync_held_deletes", &[]),
            0.0,
            "nothing even planned: the last good content stands"
        );
        std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
        eventually("content again", T, || failing(&daemon) == 0.0).await;
    }

    // A comment line says it is meant.
    std::fs::write(&file, "# all moved to another operator\n").unwrap();
    eventually("emptied on purpose", T, || active(&sim) == vec![9]).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_dangling_link_or_subdirectory_in_the_daemons_drop_directory_removes_nothing()
{
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(&sim, [0, 1])).unwrap();
    let volume = dir.join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("keystore-2.json"), keystore(&sim, 2)).unwrap();
    let link = drop.join("keystore-2.json");
    symlink(volume.join("keystore-2.json"), &link);
    let mut c = watch_common(&sim, None);
    c.input_dir = Some(drop.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("through the link", T, || active(&sim) == vec![0, 1, 2]).await;

    // The volume goes away: the link dangles (re-made, so the directory
    // sees a change).
    std::fs::remove_file(&link).unwrap();
    symlink(dir.join("unmounted/keystore-2.json"), &link);
    eventually("one input failing", T, || failing(&daemon) == 1.0).await;
    not_ready_naming(&daemon, &link, "does not exist").await;
    two_more_passes(&daemon).await;
    assert_eq!(active(&sim), vec![0, 1, 2], "nothing removed");

    // Replaced by a directory of the same name.
    std::fs::remove_file(&link).unwrap();
    std::fs::create_dir(&link).unwrap();
    not_ready_naming(&daemon, &link, "subdirectories are not read").await;
    two_more_passes(&daemon).await;
    assert_eq!(active(&sim), vec![0, 1, 2], "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);

    // Deleted on purpose: removed.
    std::fs::remove_dir(&link).unwrap();
    eventually("deleted entry removed", T, || active(&sim) == vec![0, 1]).await;
    eventually("nothing failing", T, || failing(&daemon) == 0.0).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_a_drop_directory_that_empties_or_vanishes_keeps_its_last_good_content() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(&sim, [0, 1])).unwrap();
    std::fs::write(drop.join("b.pubkeys"), pubkeys_text(&sim, [2])).unwrap();
    let mut c = watch_common(&sim, None);
    c.input_dir = Some(drop.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![0, 1, 2]).await;

    // One file deleted while another stays: removed on purpose.
    std::fs::remove_file(drop.join("b.pubkeys")).unwrap();
    eventually("b's validator unassigned", T, || active(&sim) == vec![0, 1]).await;

    // The last one goes (a volume unmounted looks the same): held.
    std::fs::remove_file(drop.join("a.pubkeys")).unwrap();
    not_ready_naming(&daemon, &drop, "no input file").await;
    two_more_passes(&daemon).await;
    assert_eq!(active(&sim), vec![0, 1], "nothing removed");

    // Back: no change, ready.
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(&sim, [0, 1])).unwrap();
    ready_until(&daemon, "ready again", |_, b| {
        b["checks"]["inputs_readable"] == true
    })
    .await;
    // Another file instead of the held one: the held one goes now.
    std::fs::remove_file(drop.join("a.pubkeys")).unwrap();
    not_ready_naming(&daemon, &drop, "no input file").await;
    std::fs::write(drop.join("c.pubkeys"), pubkeys_text(&sim, [0, 3])).unwrap();
    eventually("c applied, a's other line removed", T, || {
        active(&sim) == vec![0, 3]
    })
    .await;
    assert_eq!(sim.count(Route::Unassign), 2, "b's 2, then a's 1");
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_the_daemon_names_an_unreadable_input_in_its_log() {
    // The binary, as deployed: started on a FIFO, it neither hangs nor stays
    // quiet; the log line names the file.
    use tokio::io::AsyncBufReadExt;
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let fifo = dir.join("validators.pubkeys");
    mkfifo(&fifo);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(["watch", "--listen", "127.0.0.1:0", "--slot-ms", "100"])
        .args(["--data-dir", p(&dir.join("state"))])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", sim.beacon_url())
        .env("KEYSYNC_PUBKEYS_FILE", &fifo)
        .env(
            "KEYSYNC_SYNC_TOLERANCE_SLOTS",
            SYNC_TOLERANCE_SLOTS.to_string(),
        )
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("keysync watch starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let name = fifo.display().to_string();
    let found = tokio::time::timeout(T, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if line.contains("ERROR") && line.contains(&name) && line.contains("FIFO") {
                return line;
            }
        }
        panic!("keysync watch ended without naming {name}");
    })
    .await
    .unwrap_or_else(|_| panic!("no log line named {name} within {T:?}"));
    assert!(found.contains("keeping its last good content"), "{found}");
    child.kill().await.unwrap();
    assert_eq!(sim.count(Route::Unassign), 0);
}

// ---- memory --------------------------------------------------------------

/// Counts the bytes allocated on threads that asked to be measured.
struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            LIVE.with(|l| {
                let now = l.get() + delta;
                l.set(now);
                PEAK.with(|p| p.set(p.get().max(now)));
            });
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged; the
// counters are plain thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a move: both buffers at once, at worst.
            note(new_size as isize);
            note(-(layout.size() as isize));
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The peak of bytes allocated (and not freed) on this thread while `f` ran.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, PEAK.with(|p| p.get()).max(0) as usize)
}

/// Reads `path` as `kind` and asserts the peak stays within `ratio` times
/// the file's size.
fn within(kind: SourceKind, path: &Path, ratio: f64) -> Result<inputs::SourceContent, SourceError> {
    let size = std::fs::metadata(path).unwrap().len() as f64;
    let (r, peak) = peak_of(|| inputs::read(kind, path));
    let x = peak as f64 / size;
    eprintln!(
        "{}: {:.1} MB, peak {:.1} MB ({x:.2}x)",
        path.display(),
        size / 1e6,
        peak as f64 / 1e6
    );
    assert!(
        x <= ratio,
        "{}: peak {peak} bytes is {x:.2}x the file",
        path.display()
    );
    r
}

#[test]
fn invariant_1_parsing_a_large_input_stays_within_3x_its_size() {
    let (_d, dir) = tmp();
    // 20 MB of `[1,1,…]`: once 17x its size as a tree of values.
    let ones = dir.join("ones.json");
    let mut text = String::with_capacity(20_000_002);
    text.push('[');
    text.push_str(&"1,".repeat(9_999_999));
    text.push_str("1]");
    std::fs::write(&ones, &text).unwrap();
    drop(text);
    let e = within(SourceKind::Detect, &ones, 3.0).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("[0]: neither a validator record nor a deposit data entry"),
        "{e}"
    );
    let e = within(SourceKind::Records, &ones, 3.0).unwrap_err();
    assert!(e.to_string().ends_with("[0]: is not an object"), "{e}");

    // A records file that parses (~130,000 rows, ~20 MB).
    let pk = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    let rows: Vec<String> = (0..130_000)
        .map(|i| {
            format!(r#"{{"validator_index": {i}, "chain_id": "0x1", "validator_key": "0x{pk}"}}"#)
        })
        .collect();
    let records = dir.join("records.json");
    std::fs::write(&records, format!("[{}]", rows.join(",\n"))).unwrap();
    drop(rows);
    let c = within(SourceKind::Records, &records, 3.0).unwrap();
    assert_eq!(c.records.len(), 130_000);

    // Deposit data (larger entries, pubkeys kept).
    let entry = format!(
        r#"{{"pubkey": "{pk}", "withdrawal_credentials": "{}", "amount": 32000000000, "signature": "{}", "deposit_message_root": "{}", "deposit_data_root": "{}", "fork_version": "00000000", "network_name": "mainnet", "deposit_cli_version": "2.7.0"}}"#,
        "00".repeat(32),
        "ab".repeat(96),
        "cd".repeat(32),
        "ef".repeat(32)
    );
    let deposit = dir.join("deposit_data.json");
    std::fs::write(&deposit, format!("[{}]", vec![entry; 20_000].join(","))).unwrap();
    let c = within(SourceKind::Detect, &deposit, 3.0).unwrap();
    assert_eq!(c.pubkeys.len(), 20_000);

    // An index list of the shortest lines: repeats kept once.
    let short = dir.join("short.txt");
    std::fs::write(&short, "1\n".repeat(5_000_000)).unwrap();
    let c = within(SourceKind::IndexList, &short, 3.0).unwrap();
    assert_eq!(c.indices, vec![1]);
    // Seven-digit indices (mainnet's), one per line.
    let long = dir.join("long.txt");
    let lines: String = (1_000_000..2_000_000u64)
        .map(|i| format!("{i}\n"))
        .collect();
    std::fs::write(&long, lines).unwrap();
    let c = within(SourceKind::IndexList, &long, 3.0).unwrap();
    assert_eq!(c.indices.len(), 1_000_000);
}
