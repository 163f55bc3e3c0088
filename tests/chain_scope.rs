//! One chain, one spelling, one scope (safety invariants 1 and 3 for chain
//! ids): the configured chain id is normalised to the registry's spelling;
//! a registry row or a record on another spelling of it is a configuration
//! error naming both; rows of chains that are neither configured nor in a
//! records input are never unassigned. Each test asserts the registry the
//! simulator ends with.

mod support;

use std::time::Duration;

use keysync::watch;
use keysync_sim::Route;
use support::*;

const T: Duration = Duration::from_secs(20);
const NOOP: &str = "{\n  \"to_register\": 0,\n  \"to_assign\": [],\n  \"to_unassign\": []\n}\n";

fn writes(sim: &keysync_sim::Sim) -> u64 {
    sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_configured_chain_means_the_registrys_0x1() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(1, 4, "0x1", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 1..4)).unwrap();
    for spelling in ["1", "0x01", "0X1", " 0x1 "] {
        let r = keysync(
            &sim,
            &["sync", "--apply"],
            &[
                ("KEYSYNC_PUBKEYS_FILE", p(&file)),
                ("KEYSYNC_CHAIN_ID", spelling),
            ],
        )
        .await;
        assert_eq!(
            (r.code, r.stdout.as_str()),
            (0, NOOP),
            "{spelling}: {}",
            r.stderr
        );
    }
    assert_eq!(active(&sim), vec![1, 2, 3]);
    assert_eq!(writes(&sim), 0, "nothing moved to another spelling");
    let r = keysync(
        &sim,
        &["diff"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", p(&file)),
            ("KEYSYNC_CHAIN_ID", "mainnet"),
        ],
    )
    .await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("is not a chain id"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_registry_rows_on_another_spelling_of_the_chain_stop_the_run() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(1, 4, "0x01", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 1..4)).unwrap();
    let before = sim.assignments();
    let r = keysync(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&file))],
    )
    .await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("\"0x01\"") && r.stderr.contains("\"0x1\""),
        "names both spellings: {}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    assert_eq!(sim.assignments(), before, "nothing moved");
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_records_on_another_spelling_of_a_chain_are_refused() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(1, 3, "0x1", true);
    for (chain, says) in [
        (" 0x1", "which the registry spells \"0x1\""),
        ("0x01", "which the registry spells \"0x1\""),
        ("1", "which the registry spells \"0x1\""),
        ("mainnet", "which is not a chain id"),
    ] {
        let records = dir.join("r.json");
        std::fs::write(
            &records,
            format!(
                r#"[{{"validator_index": 1, "chain_id": "0x1", "validator_key": "{}"}},
                    {{"validator_index": 2, "chain_id": "{chain}", "validator_key": "{}"}}]"#,
                sim.pubkey(1),
                sim.pubkey(2)
            ),
        )
        .unwrap();
        let r = keysync(
            &sim,
            &["sync", "--apply"],
            &[("KEYSYNC_INDICES_FILE", p(&records))],
        )
        .await;
        assert_eq!(r.code, 4, "{chain:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{chain:?}: {}", r.stderr);
    }
    assert_eq!(active(&sim), vec![1, 2]);
    assert_eq!(writes(&sim), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_rows_of_other_chains_are_never_unassigned_in_one_shot() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(1, 3, "0x1", true);
    sim.seed_assign_range(5, 8, "0x5", true);
    sim.seed_assign_range(9, 10, "0x4268", true);
    // Records name 0x5 (one of its rows), so 0x5 is in scope; 0x4268 is not.
    let records = dir.join("r.json");
    std::fs::write(
        &records,
        format!(
            r#"[{{"validator_index": 5, "chain_id": "0x5", "validator_key": "{}"}}]"#,
            sim.pubkey(5)
        ),
    )
    .unwrap();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let r = keysync(
        &sim,
        &["sync", "--apply"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", p(&file)),
            ("KEYSYNC_INDICES_FILE", p(&records)),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("leaves them alone"),
        "reported: {}",
        r.stderr
    );
    let rows = sim.active_assignments();
    let on = |c: &str| -> Vec<u64> {
        rows.iter()
            .filter(|(_, ch)| ch == c)
            .map(|(i, _)| *i)
            .collect()
    };
    assert_eq!(on("0x1"), vec![1], "2 left the inputs");
    assert_eq!(
        on("0x5"),
        vec![5],
        "6 and 7 left the records of a chain in scope"
    );
    assert_eq!(on("0x4268"), vec![9], "a chain nobody named is left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_rows_of_other_chains_are_never_unassigned_in_the_daemon() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(1, 3, "0x1", true);
    sim.seed_assign_range(9, 11, "0x4268", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("2 unassigned", T, || {
        !sim.active_assignments().contains(&(2, "0x1".to_string()))
    })
    .await;
    let ok = || {
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "ok")])
    };
    let passes = ok();
    eventually("more passes run", T, || ok() >= passes + 3.0).await;
    let rows = sim.active_assignments();
    assert!(
        rows.contains(&(9, "0x4268".to_string())) && rows.contains(&(10, "0x4268".to_string()))
    );
    assert_eq!(sim.count(Route::Unassign), 1, "only 2");
    daemon.stop().await.unwrap();
}
