//! The key sources operators already keep, end to end against the
//! simulator: a validator client's Keymanager API (one-shot and daemon),
//! the keystores directory, deposit data, and `--verify-pubkeys`. Each
//! asserts the exit code, stdout and the registry the simulator ends with;
//! the token never appears in anything keysync prints.

mod support;

use std::path::Path;
use std::time::Duration;

use keysync::watch;
use keysync_sim::{Route, Sim};
use support::*;

const T: Duration = Duration::from_secs(20);

/// Interop validator 0's pubkey: a valid BLS12-381 G1 point.
const INTEROP_0: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

fn token_file(dir: &Path, token: &str) -> String {
    let f = dir.join("km-token");
    std::fs::write(&f, format!("{token}\n")).unwrap();
    p(&f).to_string()
}

fn plan_of(indices: &[u64]) -> String {
    let rows: Vec<String> = indices
        .iter()
        .map(|i| format!("    [\n      {i},\n      \"0x1\"\n    ]"))
        .collect();
    format!(
        "{{\n  \"to_register\": {},\n  \"to_assign\": [\n{}\n  ],\n  \"to_unassign\": []\n}}\n",
        indices.len(),
        rows.join(",\n")
    )
}

fn writes(sim: &Sim) -> u64 {
    sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign)
}

/// The token never shows, whole or as an 8-character run of it.
fn assert_no_token(text: &str, token: &str) {
    assert!(!text.contains(token), "the token leaked: {text}");
    for run in token.as_bytes().windows(8) {
        let run = std::str::from_utf8(run).unwrap();
        assert!(
            !text.contains(run),
            "a run of the token leaked ({run}): {text}"
        );
    }
}

// ---- one-shot ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_with_only_a_keymanager_plans_the_union_of_its_lists() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([2u64, 0, 1]);
    sim.keymanager_set_remote([3u64, 1]);
    let token = token_file(&dir, &sim.keymanager_token());
    let url = sim.keymanager_url();
    let env = [
        ("KEYSYNC_KEYMANAGER_URL", url.as_str()),
        ("KEYSYNC_KEYMANAGER_TOKEN_FILE", token.as_str()),
        ("KEYSYNC_LOG", "debug"),
    ];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, plan_of(&[0, 1, 2, 3]));
    assert_no_token(&r.stderr, &sim.keymanager_token());

    // A client without remote-signer support answers 404 there: no remote keys.
    sim.keymanager_remotekeys_404(true);
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, plan_of(&[0, 1, 2]));
    assert_eq!(active(&sim), vec![0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keymanager_that_cannot_be_read_is_exit_4_naming_it_and_writes_nothing() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let real = sim.keymanager_token();
    sim.keymanager_set_local([0u64, 1]);
    sim.seed_assignment(5, "0x1", true);
    let before = sim.assignments();
    let url = sim.keymanager_url();
    let run = |token: String| {
        let (sim, url) = (&sim, url.clone());
        async move {
            let env = [
                ("KEYSYNC_KEYMANAGER_URL", url.as_str()),
                ("KEYSYNC_KEYMANAGER_TOKEN_FILE", token.as_str()),
                ("KEYSYNC_HTTP_ATTEMPTS", "2"),
                ("KEYSYNC_LOG", "debug"),
            ];
            keysync(sim, &["sync", "--apply"], &env).await
        }
    };

    // A token the keymanager refuses (401).
    let wrong = "km_wrong_token_9876543210fedcba";
    let r = run(token_file(&dir, wrong)).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(&url),
        "names the keymanager: {}",
        r.stderr
    );
    assert!(r.stderr.contains("token was refused"), "{}", r.stderr);
    assert_no_token(&r.stderr, wrong);
    assert_no_token(&r.stderr, &real);
    assert_eq!(r.stdout, "");

    // Not JSON.
    sim.non_json_next(Route::Keystores, 1);
    let r = run(token_file(&dir, &real)).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert_no_token(&r.stderr, &real);

    // Lists no key at all: a client still starting is not "no validators".
    sim.keymanager_set_local(Vec::<u64>::new());
    let r = run(token_file(&dir, &real)).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("lists no key"), "{}", r.stderr);

    // Down.
    sim.keymanager_set_local([0u64, 1]);
    sim.stop_keymanager().await;
    let r = run(token_file(&dir, &real)).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains(&url), "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot reach the keymanager"),
        "{}",
        r.stderr
    );

    assert_eq!(sim.assignments(), before, "nothing written");
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keymanager_url_over_plain_http_elsewhere_is_refused() {
    let sim = sim(8).await;
    let (_d, dir) = tmp();
    let token = token_file(&dir, &sim.keymanager_token());
    let env = [
        ("KEYSYNC_KEYMANAGER_URL", "http://validator.example:5062"),
        ("KEYSYNC_KEYMANAGER_TOKEN_FILE", token.as_str()),
    ];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("KEYSYNC_KEYMANAGER_URL"), "{}", r.stderr);
    assert!(r.stderr.contains("https"), "{}", r.stderr);
    assert_eq!(sim.count(Route::Keystores), 0);

    // A URL without its token file names what is missing.
    let env = [("KEYSYNC_KEYMANAGER_URL", "http://127.0.0.1:1")];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("KEYSYNC_KEYMANAGER_TOKEN_FILE"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keymanager_tables_in_the_config_file_add_up() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([4u64, 5]);
    let token = token_file(&dir, &sim.keymanager_token());
    let config = dir.join("keysync.toml");
    std::fs::write(
        &config,
        format!(
            "[[keymanager]]\nurl = \"{}\"\ntoken_file = \"{token}\"\n",
            sim.keymanager_url()
        ),
    )
    .unwrap();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [7])).unwrap();
    let env = [
        ("KEYSYNC_CONFIG", p(&config)),
        ("KEYSYNC_PUBKEYS_FILE", p(&file)),
    ];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, plan_of(&[4, 5, 7]));

    // The URL and its token file are a pair: a variable's URL with the
    // file's token would send that token to another keymanager.
    std::fs::write(
        &config,
        format!(
            "keymanager_url = \"{}\"\nkeymanager_token_file = \"{token}\"\n",
            sim.keymanager_url()
        ),
    )
    .unwrap();
    let env = [
        ("KEYSYNC_CONFIG", p(&config)),
        (
            "KEYSYNC_KEYMANAGER_URL",
            "https://other-validator-client:5062",
        ),
    ];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("KEYSYNC_KEYMANAGER_URL and "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("keymanager_token_file"), "{}", r.stderr);
    assert_eq!(sim.count(Route::Keystores), 1, "only the first run read it");
}

fn keystore(pubkey_hex: &str) -> String {
    format!(
        r#"{{"crypto": {{"kdf": {{"function": "scrypt"}}, "checksum": {{}}, "cipher": {{}}}}, "description": "", "pubkey": "{}", "path": "m/12381/3600/0/0/0", "uuid": "0b4e1a2c-0000-4000-8000-000000000000", "version": 4}}"#,
        pubkey_hex.trim_start_matches("0x")
    )
}

fn deposit_data(sim: &Sim, indices: &[u64], network: &str) -> String {
    let rows: Vec<String> = indices
        .iter()
        .map(|i| {
            format!(
                r#"{{"pubkey": "{}", "withdrawal_credentials": "00", "amount": 32000000000, "signature": "00", "deposit_message_root": "00", "deposit_data_root": "00", "fork_version": "00000000", "network_name": "{network}", "deposit_cli_version": "2.7.0"}}"#,
                sim.pubkey(*i).trim_start_matches("0x")
            )
        })
        .collect();
    format!("[{}]", rows.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystores_dir_and_deposit_data_are_sources() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let ks = dir.join("validators");
    // Lighthouse's layout: one directory per validator, and other files.
    for i in [1u64, 2] {
        let sub = ks.join(sim.pubkey(i));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("voting-keystore.json"), keystore(&sim.pubkey(i))).unwrap();
    }
    std::fs::write(ks.join("validator_definitions.yml"), "---\n").unwrap();
    std::fs::write(ks.join("validator_key_cache.json"), r#"{"uuid": "u"}"#).unwrap();
    let deposits = dir.join("deposit_data-1.json");
    std::fs::write(&deposits, deposit_data(&sim, &[3, 4], "mainnet")).unwrap();
    let env = [
        ("KEYSYNC_KEYSTORES_DIR", p(&ks)),
        ("KEYSYNC_DEPOSIT_DATA_FILE", p(&deposits)),
    ];
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, plan_of(&[1, 2, 3, 4]));

    // Deposit data of another network: refused, naming the file.
    let hoodi = dir.join("deposit_data-hoodi.json");
    std::fs::write(&hoodi, deposit_data(&sim, &[5], "hoodi")).unwrap();
    let list = format!("{},{}", p(&deposits), p(&hoodi));
    let env = [
        ("KEYSYNC_KEYSTORES_DIR", p(&ks)),
        ("KEYSYNC_DEPOSIT_DATA_FILE", list.as_str()),
    ];
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("deposit_data-hoodi.json[0]"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("network_name"), "{}", r.stderr);
    assert_eq!(writes(&sim), 0);

    // The same file in a drop directory: refused the same way.
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::copy(&hoodi, drop.join("deposit_data-hoodi.json")).unwrap();
    let r = keysync(&sim, &["diff"], &[("KEYSYNC_INPUT_DIR", p(&drop))]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("network_name"), "{}", r.stderr);

    // A keystores directory with no keystore is not "no validators".
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = keysync(&sim, &["diff"], &[("KEYSYNC_KEYSTORES_DIR", p(&empty))]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("no EIP-2335 keystore"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_pubkeys_names_the_line_of_a_key_off_the_curve() {
    let sim = sim(8).await;
    let (_d, dir) = tmp();
    // Same length, still hex: one digit changed.
    let typo = format!("{}d", &INTEROP_0[..INTEROP_0.len() - 1]);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, format!("# ours\n{INTEROP_0}\n\n{typo}\n")).unwrap();
    let env = [("KEYSYNC_PUBKEYS_FILE", p(&file))];
    // Off by default: the typo is only a key the chain does not know.
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = keysync(&sim, &["diff", "--verify-pubkeys"], &env).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("{}:4", file.display())),
        "names file and line: {}",
        r.stderr
    );
    assert!(r.stderr.contains("--verify-pubkeys"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
}

// ---- daemon --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_follows_the_keymanager_and_an_outage_changes_nothing() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([0u64, 1, 2]);
    // Another source keeps 20: an empty keymanager would not empty the
    // registry (that has its own guard), only drop the keymanager's keys.
    let file = dir.join("more.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [20])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    c.keymanager_url = Some(sim.keymanager_url());
    c.keymanager_token_file = Some(token_file(&dir, &sim.keymanager_token()).into());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("0-2 assigned", T, || active(&sim) == vec![0, 1, 2, 20]).await;

    // A key imported into the validator client is assigned.
    sim.keymanager_set_local([0u64, 1, 2, 3]);
    eventually("3 assigned", T, || active(&sim) == vec![0, 1, 2, 3, 20]).await;
    // A key deleted from it is unassigned.
    sim.keymanager_set_local([0u64, 1, 3]);
    eventually("2 unassigned", T, || active(&sim) == vec![0, 1, 3, 20]).await;

    // An outage: the last good list stands, counted and named by /ready.
    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    let before = errors();
    sim.stop_keymanager().await;
    eventually("the outage counted", T, || errors() >= before + 2.0).await;
    let ready = reqwest::get(format!("http://{}/ready", daemon.listen))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains(&sim.keymanager_url()), "{ready}");
    // Back, but listing nothing (a client still starting): still nothing removed.
    sim.keymanager_set_local(Vec::<u64>::new());
    sim.start_keymanager().await.unwrap();
    let seen = sim.count(Route::Keystores);
    eventually("polled again", T, || {
        sim.count(Route::Keystores) >= seen + 2
    })
    .await;
    assert_eq!(
        active(&sim),
        vec![0, 1, 3, 20],
        "an outage never shrinks the set"
    );
    assert_eq!(sim.count(Route::Unassign), 1);

    // Back with its keys: taken in again.
    sim.keymanager_set_local([0u64, 1, 3, 4]);
    eventually("4 assigned", T, || active(&sim) == vec![0, 1, 3, 4, 20]).await;

    let metrics = reqwest::get(format!("http://{}/metrics", daemon.listen))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_token(&metrics, &sim.keymanager_token());
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_takes_a_keystore_added_to_a_validator_subdirectory() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let ks = dir.join("keystores");
    let put = |i: u64| {
        let sub = ks.join(sim.pubkey(i));
        std::fs::create_dir_all(&sub).unwrap();
        write_by_rename(&sub.join("voting-keystore.json"), &keystore(&sim.pubkey(i)));
    };
    put(0);
    put(1);
    let mut c = watch_common(&sim, None);
    c.keystores_dir = Some(ks.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("0, 1 assigned", T, || active(&sim) == vec![0, 1]).await;
    put(6);
    eventually("6 assigned", T, || active(&sim) == vec![0, 1, 6]).await;
    // A keystore being written (not JSON yet): the last good content stands.
    let sub = ks.join(sim.pubkey(1));
    std::fs::write(sub.join("voting-keystore.json"), "{\"crypto\": ").unwrap();
    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    eventually("the broken keystore counted", T, || errors() >= 1.0).await;
    assert_eq!(active(&sim), vec![0, 1, 6]);
    // Removed on purpose: unassigned.
    std::fs::remove_dir_all(&sub).unwrap();
    eventually("1 unassigned", T, || active(&sim) == vec![0, 6]).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_logs_or_stores_the_keymanager_token() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([0u64, 1]);
    let token = sim.keymanager_token();
    let token_path = token_file(&dir, &token);
    let state = dir.join("state");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .arg("watch")
        .arg("--apply")
        .env_clear()
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", sim.beacon_url())
        .env("KEYSYNC_KEYMANAGER_URL", sim.keymanager_url())
        .env("KEYSYNC_KEYMANAGER_TOKEN_FILE", &token_path)
        .env("KEYSYNC_KEYMANAGER_POLL_SECS", "1")
        .env("KEYSYNC_DATA_DIR", &state)
        .env("KEYSYNC_LISTEN", "127.0.0.1:0")
        .env("KEYSYNC_LOG", "debug")
        .env("KEYSYNC_LOG_FORMAT", "json")
        .env(
            "KEYSYNC_SYNC_TOLERANCE_SLOTS",
            SYNC_TOLERANCE_SLOTS.to_string(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("0, 1 assigned", T, || active(&sim) == vec![0, 1]).await;
    let seen = sim.count(Route::Keystores);
    eventually("polled twice more", T, || {
        sim.count(Route::Keystores) >= seen + 2
    })
    .await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("keymanager"), "the logs speak of it: {logs}");
    assert_no_token(&logs, &token);
    assert_no_token(&String::from_utf8_lossy(&out.stdout), &token);
    // The store: every byte of every file under the data directory.
    let mut files = vec![state.clone()];
    let mut scanned = 0;
    while let Some(f) = files.pop() {
        if f.is_dir() {
            files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes
                    .windows(8)
                    .any(|w| token.as_bytes().windows(8).any(|t| t == w)),
                "a run of the token in {}",
                f.display()
            );
            scanned += 1;
        }
    }
    assert!(scanned > 0, "the store was written");
}

/// Inputs named relative to the working directory (as the README's
/// examples name them) are watched: an edit is taken within seconds, not
/// at the next resync (600 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_input_paths_are_watched() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    std::fs::write(dir.join("v.pubkeys"), pubkeys_text(&sim, [1])).unwrap();
    let sub = dir.join("ks").join(sim.pubkey(2));
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("voting-keystore.json"), keystore(&sim.pubkey(2))).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args([
            "watch",
            "--apply",
            "--pubkeys-file",
            "v.pubkeys",
            "--keystores-dir",
            "ks",
        ])
        .current_dir(&dir)
        .env_clear()
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", sim.beacon_url())
        .env("KEYSYNC_DATA_DIR", "state")
        .env("KEYSYNC_LISTEN", "127.0.0.1:0")
        .env("KEYSYNC_RESYNC_SECS", "600")
        .env("KEYSYNC_DEBOUNCE_MS", "50")
        .env(
            "KEYSYNC_SYNC_TOLERANCE_SLOTS",
            SYNC_TOLERANCE_SLOTS.to_string(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("1, 2 assigned", T, || active(&sim) == vec![1, 2]).await;
    write_by_rename(&dir.join("v.pubkeys"), &pubkeys_text(&sim, [1, 3]));
    eventually("the edit taken", T, || active(&sim) == vec![1, 2, 3]).await;
    let sub = dir.join("ks").join(sim.pubkey(4));
    std::fs::create_dir_all(&sub).unwrap();
    write_by_rename(&sub.join("voting-keystore.json"), &keystore(&sim.pubkey(4)));
    eventually("the new keystore taken", T, || {
        active(&sim) == vec![1, 2, 3, 4]
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// A keymanager whose `remotekeys` starts answering 404 after serving keys
/// (a proxy misroute, a client restarted without its signer) has not
/// deleted them: they stay assigned, the read counts as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_keys_are_kept_when_remotekeys_turns_404() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([0u64, 1]);
    sim.keymanager_set_remote([5u64]);
    let mut c = watch_common(&sim, None);
    c.keymanager_url = Some(sim.keymanager_url());
    c.keymanager_token_file = Some(token_file(&dir, &sim.keymanager_token()).into());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("0, 1, 5 assigned", T, || active(&sim) == vec![0, 1, 5]).await;
    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    let before = errors();
    sim.keymanager_remotekeys_404(true);
    eventually("the 404 counted as a failed read", T, || {
        errors() >= before + 2.0
    })
    .await;
    assert_eq!(active(&sim), vec![0, 1, 5]);
    assert_eq!(sim.count(Route::Unassign), 0);
    // Served again, without 5: now it is gone on purpose.
    sim.keymanager_set_remote(Vec::<u64>::new());
    sim.keymanager_remotekeys_404(false);
    eventually("5 unassigned", T, || active(&sim) == vec![0, 1]).await;
    daemon.stop().await.unwrap();
}

/// A regenerated token file (the validator client rotated its token) is
/// used from the next poll on, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_keymanager_token_file_is_used_without_a_restart() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    sim.keymanager_set_local([0u64, 1]);
    let token_path = token_file(&dir, &sim.keymanager_token());
    let mut c = watch_common(&sim, None);
    c.keymanager_url = Some(sim.keymanager_url());
    c.keymanager_token_file = Some(token_path.clone().into());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("0, 1 assigned", T, || active(&sim) == vec![0, 1]).await;
    // The client rotates its token: reads are refused until the file has it.
    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    let before = errors();
    let rotated = "km_rotated_token_fedcba9876543210";
    sim.set_keymanager_token(rotated);
    sim.keymanager_set_local([0u64, 1, 2]);
    eventually("the refusals counted", T, || errors() >= before + 1.0).await;
    assert_eq!(active(&sim), vec![0, 1]);
    write_by_rename(Path::new(&token_path), rotated);
    eventually("2 assigned with the new token", T, || {
        active(&sim) == vec![0, 1, 2]
    })
    .await;
    daemon.stop().await.unwrap();
}
