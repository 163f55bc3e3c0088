//! `keysync doctor` against the simulator: the all-green case, and each
//! failing check with its exit code and the line that names the fix.
//! Nothing is ever written to the registry, and no secret is printed.

mod support;

use keysync_sim::{Route, Sim, SyncMode};
use support::*;

fn writes(sim: &Sim) -> u64 {
    sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign)
}

/// The ✘ line of `check` (its name up to the colon) and the fix line after it.
fn failed<'a>(stdout: &'a str, check: &str) -> (&'a str, &'a str) {
    let mut lines = stdout.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&format!("✘ {check}")) {
            return (l, lines.next().unwrap_or(""));
        }
    }
    panic!("no failing {check} line in:\n{stdout}");
}

struct Setup {
    _d: tempfile::TempDir,
    dir: std::path::PathBuf,
    pubkeys: String,
    token: String,
}

fn setup(sim: &Sim) -> Setup {
    let (d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(sim, [1, 2, 3])).unwrap();
    let token = dir.join("km-token");
    std::fs::write(&token, sim.keymanager_token()).unwrap();
    sim.keymanager_set_local([4u64]);
    Setup {
        pubkeys: p(&file).to_string(),
        token: p(&token).to_string(),
        dir,
        _d: d,
    }
}

async fn doctor(sim: &Sim, s: &Setup, extra: &[(&str, &str)]) -> Run {
    let data = s.dir.join("state");
    let km = sim.keymanager_url();
    let mut env = vec![
        ("KEYSYNC_PUBKEYS_FILE", s.pubkeys.as_str()),
        ("KEYSYNC_KEYMANAGER_URL", km.as_str()),
        ("KEYSYNC_KEYMANAGER_TOKEN_FILE", s.token.as_str()),
        ("KEYSYNC_DATA_DIR", p(&data)),
        ("KEYSYNC_LISTEN", "127.0.0.1:0"),
        ("KEYSYNC_HTTP_ATTEMPTS", "1"),
    ];
    env.extend_from_slice(extra);
    let r = keysync(sim, &["doctor"], &env).await;
    for secret in [sim.api_key(), sim.keymanager_token()] {
        assert!(
            !r.stdout.contains(&secret) && !r.stderr.contains(&secret),
            "a secret printed:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_green_lists_every_check_and_exits_0() {
    let sim = sim(32).await;
    sim.seed_assignment(9, "0x1", true);
    let s = setup(&sim);
    let r = doctor(&sim, &s, &[]).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let names: Vec<&str> = r
        .stdout
        .lines()
        .map(|l| {
            assert!(l.starts_with("✔ "), "{l}");
            l[4..].split(':').next().unwrap_or("")
        })
        .collect();
    let beacon = format!("beacon {}", sim.beacon_url());
    let stream = format!("event stream {}", sim.beacon_url());
    let input = format!("input {}", s.pubkeys);
    let km = format!("keymanager {}", sim.keymanager_url());
    // Names hold URLs (with a colon): compare each line's start instead.
    for (line, want) in r.stdout.lines().zip([
        "settings", "auth", "console", &beacon, &stream, &input, &km, "plan", "data dir", "listen",
    ]) {
        assert!(line[4..].starts_with(want), "{line} is not {want}");
    }
    assert_eq!(names.len(), 10, "{}", r.stdout);
    assert!(
        r.stdout.contains("✔ console: 1 rows listed, 1 active"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("✔ plan: a pass would register 4, assign 4, unassign 1;"),
        "{}",
        r.stdout
    );
    assert_eq!(writes(&sim), 0, "the doctor writes nothing");

    // One JSON object per check.
    let r = doctor(&sim, &s, &[("KEYSYNC_LOG_FORMAT", "json")]).await;
    assert_eq!(r.code, 0);
    let objs: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objs.len(), 10);
    assert!(objs.iter().all(|o| o["ok"] == true && o["fix"].is_null()));
    assert_eq!(objs[0]["check"], "settings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failing_check_exits_with_its_kind_and_names_the_fix() {
    let sim = sim(32).await;
    let s = setup(&sim);

    // Settings: a malformed value.
    let r = doctor(&sim, &s, &[("KEYSYNC_HTTP_ATTEMPTS", "0")]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (line, fix) = failed(&r.stdout, "settings");
    assert!(line.contains("KEYSYNC_HTTP_ATTEMPTS"), "{line}");
    assert!(fix.contains("→"), "{fix}");

    // Auth: the key refused.
    let r = doctor(
        &sim,
        &s,
        &[("KEYSYNC_API_KEY", "ovi_live_not_the_right_key_000")],
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "auth");
    assert!(fix.contains("API key"), "{fix}");
    assert!(
        !r.stdout.contains("ovi_live_not_the_right_key_000"),
        "{}",
        r.stdout
    );

    // Auth: the key is another operator's.
    let r = doctor(&sim, &s, &[("KEYSYNC_OPERATOR_ID", "7")]).await;
    assert_eq!(r.code, 2, "{}", r.stdout);
    let (line, fix) = failed(&r.stdout, "auth");
    assert!(
        line.contains("operator 42, not to the configured operator 7"),
        "{line}"
    );
    assert!(fix.contains("KEYSYNC_OPERATOR_ID"), "{fix}");

    // Console: the list fails.
    sim.fail_next(Route::List, 500, 1, None);
    let r = doctor(&sim, &s, &[]).await;
    assert_eq!(r.code, 3, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "console");
    assert!(fix.contains("KEYSYNC_API_URL"), "{fix}");

    // Beacon: on another chain.
    let r = doctor(&sim, &s, &[("KEYSYNC_CHAIN_ID", "0x88bb0")]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "beacon");
    assert!(fix.contains("KEYSYNC_CHAIN_ID"), "{fix}");

    // Beacon: not synced.
    sim.set_sync(SyncMode::Syncing { distance: 500 });
    let r = doctor(&sim, &s, &[]).await;
    assert_eq!(r.code, 6, "{}", r.stdout);
    let (line, fix) = failed(&r.stdout, "beacon");
    assert!(line.contains("sync"), "{line}");
    assert!(fix.contains("removals are held"), "{fix}");
    sim.set_sync(SyncMode::Synced);

    // Beacon: down.
    let r = keysync_with_beacon(
        &sim,
        "http://127.0.0.1:1",
        &["doctor"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", s.pubkeys.as_str()),
            ("KEYSYNC_HTTP_ATTEMPTS", "1"),
            ("KEYSYNC_LISTEN", "127.0.0.1:0"),
            ("KEYSYNC_DATA_DIR", p(&s.dir.join("state"))),
        ],
    )
    .await;
    assert_eq!(r.code, 6, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "beacon");
    assert!(fix.contains("reachable"), "{fix}");

    // The event stream does not open.
    sim.fail_next(Route::Events, 503, 1, None);
    let r = doctor(&sim, &s, &[]).await;
    assert_eq!(r.code, 6, "{}", r.stdout);
    let (line, fix) = failed(&r.stdout, "event stream");
    assert!(line.contains("HTTP 503"), "{line}");
    assert!(fix.contains("/eth/v1/events"), "{fix}");

    // An input that does not parse.
    let broken = s.dir.join("broken.pubkeys");
    std::fs::write(&broken, "0xabc\n").unwrap();
    let r = doctor(&sim, &s, &[("KEYSYNC_PUBKEYS_FILE", p(&broken))]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (line, _) = failed(&r.stdout, "input");
    assert!(line.contains(&format!("{}:1", broken.display())), "{line}");

    // The keymanager refuses the token.
    let wrong = s.dir.join("wrong-token");
    std::fs::write(&wrong, "km_wrong_0123456789abcdef").unwrap();
    let r = doctor(&sim, &s, &[("KEYSYNC_KEYMANAGER_TOKEN_FILE", p(&wrong))]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "keymanager");
    assert!(fix.contains("KEYSYNC_KEYMANAGER_TOKEN_FILE"), "{fix}");
    assert!(
        !r.stdout.contains("km_wrong_0123456789abcdef"),
        "{}",
        r.stdout
    );

    // The listen address is taken.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let r = doctor(&sim, &s, &[("KEYSYNC_LISTEN", addr.as_str())]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (_, fix) = failed(&r.stdout, "listen");
    assert!(fix.contains("KEYSYNC_LISTEN"), "{fix}");

    assert_eq!(writes(&sim), 0, "the doctor writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_a_running_daemon_is_named() {
    let sim = sim(32).await;
    let s = setup(&sim);
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(s.pubkeys.clone().into());
    let state = s.dir.join("state");
    let daemon = keysync::watch::start(settings(watch_args(c, &state, false, 10)))
        .await
        .unwrap();
    eventually(
        "the store is created",
        std::time::Duration::from_secs(20),
        || keysync::store::lock_file(&state).exists(),
    )
    .await;
    let r = doctor(&sim, &s, &[]).await;
    assert_eq!(r.code, 4, "{}", r.stdout);
    let (line, fix) = failed(&r.stdout, "data dir");
    assert!(line.contains("locked by another process"), "{line}");
    assert!(fix.contains("KEYSYNC_DATA_DIR"), "{fix}");

    // Beside the daemon it checks (kubectl exec): its store and address.
    let listen = daemon.listen.to_string();
    let r = doctor(&sim, &s, &[("KEYSYNC_LISTEN", listen.as_str())]).await;
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("the store is held by the keysync watch running here"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "✔ listen: {listen} is held by the keysync watch running here"
        )),
        "{}",
        r.stdout
    );
    daemon.stop().await.unwrap();
}
