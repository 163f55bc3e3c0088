//! Black-box tests of the one-shot binary against the in-process simulator:
//! the stateful cases (apply then re-run, guardrail, partial failure then
//! converge, scale). Each asserts exit code, stdout bytes and the registry
//! the simulator ends with.

mod support;

use keysync_sim::{Route, SimConfig};
use support::*;

const NOOP: &str = "{\n  \"to_register\": 0,\n  \"to_assign\": [],\n  \"to_unassign\": []\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_then_rerun_is_idempotent() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [3, 1, 2])).unwrap();
    sim.seed_assignment(2, "0x1", true);
    sim.seed_assignment(9, "0x1", true);
    let env = [("KEYSYNC_PUBKEYS_FILE", p(&file))];

    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "{\n  \"to_register\": 2,\n  \"to_assign\": [\n    [\n      1,\n      \"0x1\"\n    ],\n    [\n      3,\n      \"0x1\"\n    ]\n  ],\n  \"to_unassign\": [\n    [\n      9,\n      \"0x1\"\n    ]\n  ]\n}\n"
    );
    assert_eq!(active(&sim), vec![1, 2, 3]);
    assert_eq!(
        sim.registered().get(&(1, "0x1".to_string())),
        Some(&sim.pubkey(1))
    );

    sim.reset_counts();
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, NOOP));
    assert_eq!(
        sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign),
        0
    );
    let r = keysync(&sim, &["diff"], &env).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, NOOP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrail_refuses_then_a_raised_limit_applies() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [0])).unwrap();
    for i in 20..31 {
        sim.seed_assignment(i, "0x1", true);
    }
    let env = [("KEYSYNC_PUBKEYS_FILE", p(&file))];
    let before = sim.assignments();
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("max-deletes"), "{}", r.stderr);
    assert_eq!(sim.assignments(), before, "nothing written");
    assert_eq!(
        sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign),
        0
    );

    let r = keysync(&sim, &["sync", "--apply", "--max-deletes", "11"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_failure_then_rerun_converges() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..5)).unwrap();
    sim.seed_assignment(40, "0x1", true);
    let env = [
        ("KEYSYNC_PUBKEYS_FILE", p(&file)),
        ("KEYSYNC_HTTP_ATTEMPTS", "2"),
    ];
    sim.fail_next(Route::Assign, 503, 2, None); // exactly the first run's 2 attempts
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("assign stage"), "{}", r.stderr);
    assert!(
        r.stderr.contains("registering 5"),
        "names what landed: {}",
        r.stderr
    );
    let registered = sim.registered();
    assert!(
        (0..5).all(|i| registered.contains_key(&(i, "0x1".to_string()))),
        "register landed"
    );
    assert_eq!(active(&sim), vec![40], "assign and unassign did not");

    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_win_over_beacon_and_unknown_keys_are_pending() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let pubkeys = dir.join("v.pubkeys");
    let unknown = format!("0x{}", "ab".repeat(48));
    std::fs::write(
        &pubkeys,
        format!("{}{unknown}\n", pubkeys_text(&sim, [5, 6])),
    )
    .unwrap();
    let records = dir.join("r.json");
    let other_key = sim.pubkey(11);
    std::fs::write(
        &records,
        format!(r#"[{{"validator_index": 5, "chain_id": "0x1", "validator_key": "{other_key}"}}]"#),
    )
    .unwrap();
    let env = [
        ("KEYSYNC_PUBKEYS_FILE", p(&pubkeys)),
        ("KEYSYNC_INDICES_FILE", p(&records)),
    ];
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("does not know some validators") && r.stderr.contains(&unknown),
        "{}",
        r.stderr
    );
    assert_eq!(active(&sim), vec![5, 6]);
    assert_eq!(
        sim.registered().get(&(5, "0x1".to_string())),
        Some(&other_key),
        "the record's key was registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacon_without_post_falls_back_to_get() {
    let sim = sim_with(SimConfig {
        validators: 200,
        post_validators_unsupported: Some(405),
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..150)).unwrap();
    let r = keysync(&sim, &["diff"], &[("KEYSYNC_PUBKEYS_FILE", p(&file))]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"to_register\": 150"), "{}", r.stdout);
    assert_eq!(sim.count(Route::ValidatorsPost), 1);
    assert_eq!(sim.count(Route::ValidatorsGet), 3, "150 ids in GETs of 64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_pubkeys_take_a_handful_of_requests() {
    let sim = sim_with(SimConfig {
        validators: 100_000,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..100_000)).unwrap();
    let r = keysync(
        &sim,
        &["diff"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", p(&file)),
            ("KEYSYNC_OPERATOR_ID", "42"),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("{\n  \"to_register\": 100000,"));
    let beacon = sim.count(Route::ValidatorsPost)
        + sim.count(Route::ValidatorsGet)
        + sim.count(Route::DepositContract);
    assert_eq!(sim.count(Route::ValidatorsPost), 20);
    assert!(
        beacon + sim.count(Route::List) <= 100_000 / 5_000 + 3,
        "{beacon} beacon requests"
    );
    assert_eq!(sim.count(Route::Me), 0, "operator id configured: no /me");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacon_on_another_chain_is_a_configuration_error() {
    let sim = sim_with(SimConfig {
        validators: 8,
        chain_id: 5,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let r = keysync(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&file))],
    )
    .await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("chain 5") && r.stderr.contains("0x1"),
        "{}",
        r.stderr
    );
    assert_eq!(
        sim.count(Route::ValidatorsPost),
        0,
        "never resolved against the wrong chain"
    );
    let r = keysync(
        &sim,
        &["diff"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", p(&file)),
            ("KEYSYNC_CHAIN_ID", "0x5"),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_rows_in_the_api_order_with_inactive_ones() {
    let sim = sim(8).await;
    sim.seed_assignment(3, "0x1", true);
    sim.seed_assignment(1, "0x1", false);
    let r = keysync(&sim, &["show"], &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "[\n  {\n    \"validator_index\": 1,\n    \"chain_id\": \"0x1\",\n    \"active\": false\n  },\n  {\n    \"validator_index\": 3,\n    \"chain_id\": \"0x1\",\n    \"active\": true\n  }\n]\n"
    );
}
