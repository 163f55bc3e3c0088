//! Safety invariant 2 against a wrong witness: a beacon node that is
//! syncing, optimistic, behind the wall clock, or whose state does not know
//! indices the registry holds never removes anything. One-shot: exit 6,
//! nothing printed or written. Daemon: removals held (metric, `/ready`),
//! adds applied, removals released at the first pass after the node is
//! synced. A second, synced node is preferred. Every test asserts the
//! registry the simulator ends with.

mod support;

use std::time::Duration;

use keysync::watch;
use keysync_sim::{Route, Sim, SimConfig, SyncMode};
use support::*;

const T: Duration = Duration::from_secs(20);
/// A lag past the tests' tolerance.
const LAG: u64 = SYNC_TOLERANCE_SLOTS + 10;

/// The registry holds 10..20 (ours) and 40, 41 (no longer in the inputs);
/// the inputs list 10..20 and 5 (new). A synced node's plan: assign 5,
/// unassign 40 and 41.
fn scenario(sim: &Sim, dir: &std::path::Path) -> std::path::PathBuf {
    sim.seed_assign_range(10, 20, "0x1", true);
    sim.seed_assignment(40, "0x1", true);
    sim.seed_assignment(41, "0x1", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(sim, (10..20).chain(std::iter::once(5)))).unwrap();
    file
}

fn before() -> Vec<u64> {
    (10..20).chain([40, 41]).collect()
}

fn converged() -> Vec<u64> {
    std::iter::once(5).chain(10..20).collect()
}

fn writes(sim: &Sim) -> u64 {
    sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign)
}

/// A node that is not a witness, in each of the four ways, and what the
/// error says of it.
#[derive(Clone, Copy)]
enum Wrong {
    Syncing,
    Optimistic,
    Lagging,
    Stale,
}

impl Wrong {
    /// Breaks `sim`'s beacon node this way. A head can only trail the wall
    /// clock once the chain is older than the lag: waits for that first.
    async fn apply(self, sim: &Sim) {
        if let Wrong::Lagging = self {
            eventually("the chain is older than the lag", T, || {
                sim.current_slot() > LAG + 5
            })
            .await;
        }
        match self {
            Wrong::Syncing => sim.set_sync(SyncMode::Syncing { distance: 500 }),
            Wrong::Optimistic => sim.set_sync(SyncMode::Optimistic),
            Wrong::Lagging => sim.set_sync(SyncMode::Lagging { slots: LAG }),
            // Says it is synced, but answers from an old state: it does not
            // know 15..20, nor 40 and 41.
            Wrong::Stale => sim.set_stale_above(Some(15)),
        }
    }

    /// Removals held: 40 and 41; a stale node also drops 15..20 from the
    /// desired set (it does not know their pubkeys), so those are held too.
    fn held(self) -> f64 {
        match self {
            Wrong::Stale => 7.0,
            _ => 2.0,
        }
    }

    fn heal(sim: &Sim) {
        sim.set_sync(SyncMode::Synced);
        sim.set_stale_above(None);
    }

    fn says(self) -> &'static str {
        match self {
            Wrong::Syncing => "is syncing",
            Wrong::Optimistic => "is optimistic",
            Wrong::Lagging => "slots behind the wall clock",
            Wrong::Stale => "does not know 7 validator indices the registry holds",
        }
    }
}

// ---- one-shot ------------------------------------------------------------

async fn one_shot_refuses_then_converges_once_synced(wrong: Wrong) {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = scenario(&sim, &dir);
    let env = [("KEYSYNC_PUBKEYS_FILE", p(&file))];
    wrong.apply(&sim).await;

    for args in [&["sync", "--apply"][..], &["diff"][..]] {
        let r = keysync(&sim, args, &env).await;
        assert_eq!(r.code, 6, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stdout, "",
            "a plan made on a wrong witness is not printed"
        );
        assert!(
            r.stderr.contains(&sim.beacon_url()) && r.stderr.contains(wrong.says()),
            "names the node and why: {}",
            r.stderr
        );
        assert!(r.stderr.contains("nothing was written"), "{}", r.stderr);
    }
    assert_eq!(active(&sim), before(), "nothing removed");
    assert_eq!(writes(&sim), 0, "nothing written, adds included");

    Wrong::heal(&sim);
    let r = keysync(&sim, &["sync", "--apply"], &env).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_syncing_node_removes_nothing_in_one_shot() {
    one_shot_refuses_then_converges_once_synced(Wrong::Syncing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_an_optimistic_node_removes_nothing_in_one_shot() {
    one_shot_refuses_then_converges_once_synced(Wrong::Optimistic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_node_behind_the_wall_clock_removes_nothing_in_one_shot() {
    one_shot_refuses_then_converges_once_synced(Wrong::Lagging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_stale_node_that_forgets_recent_indices_removes_nothing_in_one_shot() {
    one_shot_refuses_then_converges_once_synced(Wrong::Stale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_syncing_node_still_adds_when_nothing_is_removed() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [3, 4])).unwrap();
    sim.set_sync(SyncMode::Syncing { distance: 500 });
    let r = keysync(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&file))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_failover_prefers_the_synced_node_in_one_shot() {
    // The registry and a syncing node; a synced backup with the same chain.
    let sim = sim(64).await;
    let backup = sim_with(SimConfig {
        validators: 64,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = scenario(&sim, &dir);
    sim.set_sync(SyncMode::Syncing { distance: 500 });
    let urls = format!("{},{}", sim.beacon_url(), backup.beacon_url());
    let r = keysync_with_beacon(
        &sim,
        &urls,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&file))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(active(&sim), converged());
    assert_eq!(
        sim.count(Route::ValidatorsPost) + sim.count(Route::ValidatorsGet),
        0,
        "no answer taken from the syncing node"
    );
    assert!(backup.count(Route::ValidatorsPost) > 0);
}

// ---- daemon --------------------------------------------------------------

async fn ready(daemon: &watch::Daemon) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("http://{}/ready", daemon.listen))
        .await
        .expect("/ready answers");
    let code = r.status().as_u16();
    (code, r.json().await.expect("/ready is JSON"))
}

async fn daemon_holds_removals_until_synced(wrong: Wrong) {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = scenario(&sim, &dir);
    wrong.apply(&sim).await;
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    let held = || {
        daemon.metrics.get(
            "keysync_held_deletes_by_reason",
            &[("reason", "beacon_not_synced")],
        )
    };

    eventually("the add goes through", T, || active(&sim).contains(&5)).await;
    eventually("the removals are held", T, || held() == wrong.held()).await;
    let mut expected = before();
    expected.insert(0, 5);
    assert_eq!(active(&sim), expected, "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);
    assert_eq!(
        daemon.metrics.get("keysync_held_deletes", &[]),
        wrong.held()
    );
    assert_eq!(daemon.metrics.get("keysync_beacon_synced", &[]), 0.0);
    let (code, body) = ready(&daemon).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["checks"]["beacon_synced"], false, "{body}");
    let why = body["why"]["beacon_synced"].as_str().unwrap_or_default();
    assert!(
        why.contains(&sim.beacon_url()) && why.contains(wrong.says()),
        "{body}"
    );
    let text = daemon.metrics.render();
    assert!(
        text.contains(&format!(
            "keysync_held_deletes_by_reason{{reason=\"beacon_not_synced\"}} {}",
            wrong.held()
        )),
        "{text}"
    );

    Wrong::heal(&sim);
    eventually("released once synced", T, || active(&sim) == converged()).await;
    eventually("held cleared and ready again", T, || {
        held() == 0.0 && daemon.metrics.get("keysync_beacon_synced", &[]) == 1.0
    })
    .await;
    assert_eq!(
        daemon.metrics.get(
            "keysync_writes_total",
            &[
                ("kind", "unassign"),
                ("result", "ok"),
                ("reason", "not_in_inputs")
            ]
        ),
        2.0,
        "each unassign carries its reason"
    );
    eventually("/ready is green", T, || {
        daemon.health.checks().iter().all(|(_, ok)| *ok)
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_syncing_node_removes_nothing_in_the_daemon() {
    daemon_holds_removals_until_synced(Wrong::Syncing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_an_optimistic_node_removes_nothing_in_the_daemon() {
    daemon_holds_removals_until_synced(Wrong::Optimistic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_node_behind_the_wall_clock_removes_nothing_in_the_daemon() {
    daemon_holds_removals_until_synced(Wrong::Lagging).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_stale_node_that_forgets_recent_indices_removes_nothing_in_the_daemon() {
    daemon_holds_removals_until_synced(Wrong::Stale).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_failover_prefers_the_synced_node_in_the_daemon() {
    let sim = sim(64).await;
    let backup = sim_with(SimConfig {
        validators: 64,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = scenario(&sim, &dir);
    sim.set_sync(SyncMode::Optimistic);
    let mut c = watch_common(
        &sim,
        Some(format!("{},{}", sim.beacon_url(), backup.beacon_url())),
    );
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("converged through the synced backup", T, || {
        active(&sim) == converged()
    })
    .await;
    assert_eq!(
        sim.count(Route::ValidatorsPost) + sim.count(Route::ValidatorsGet),
        0,
        "no answer taken from the optimistic node"
    );
    daemon.stop().await.unwrap();
}

// ---- failover never skips the chain check --------------------------------

/// The registry's own beacon node fails every lookup; the backup is on
/// another chain, where every validator has withdrawn.
async fn failing_primary_and_a_backup_on_another_chain() -> (Sim, Sim) {
    let sim = sim(64).await;
    let other = sim_with(SimConfig {
        validators: 64,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        chain_id: 5,
        ..Default::default()
    })
    .await;
    for i in 0..64 {
        other.set_status(i, "withdrawal_done");
    }
    (sim, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_failover_never_uses_a_node_on_another_chain_in_one_shot() {
    let (sim, other) = failing_primary_and_a_backup_on_another_chain().await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(10, 15, "0x1", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 10..15)).unwrap();
    sim.fail_next(Route::ValidatorsPost, 500, 1_000, None);
    let urls = format!("{},{}", sim.beacon_url(), other.beacon_url());
    let r = keysync_with_beacon(
        &sim,
        &urls,
        &["sync", "--apply"],
        &[
            ("KEYSYNC_PUBKEYS_FILE", p(&file)),
            ("KEYSYNC_HTTP_ATTEMPTS", "2"),
        ],
    )
    .await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("is on chain 5") && r.stderr.contains(&other.beacon_url()),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    assert_eq!(
        active(&sim),
        (10..15).collect::<Vec<_>>(),
        "nothing removed"
    );
    assert_eq!(writes(&sim), 0);
    assert_eq!(
        other.count(Route::ValidatorsPost) + other.count(Route::ValidatorsGet),
        0,
        "the other chain's answers were never asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_failover_never_uses_a_node_on_another_chain_in_the_daemon() {
    let (sim, other) = failing_primary_and_a_backup_on_another_chain().await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 10..15)).unwrap();
    let mut c = watch_common(
        &sim,
        Some(format!("{},{}", sim.beacon_url(), other.beacon_url())),
    );
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned through the primary", T, || {
        active(&sim) == (10..15).collect::<Vec<_>>()
    })
    .await;
    // From now on the primary fails every lookup; epochs keep passing.
    sim.fail_next(Route::ValidatorsPost, 500, 100_000, None);
    let failed = || {
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "error")])
    };
    eventually("epoch passes fail", T, || failed() >= 2.0).await;
    assert_eq!(
        active(&sim),
        (10..15).collect::<Vec<_>>(),
        "nothing removed"
    );
    assert_eq!(sim.count(Route::Unassign), 0);
    assert_eq!(
        other.count(Route::ValidatorsPost) + other.count(Route::ValidatorsGet),
        0,
        "the other chain's answers were never asked for"
    );
    daemon.stop().await.unwrap();
}

/// Quiet passes reuse the last vetting (a quiet epoch costs only its
/// status scan), so a node that stops being synced between passes is only
/// found out when removals are at stake: its answers must still remove
/// nothing until it is synced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_a_node_that_stops_being_synced_between_passes_removes_nothing() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("ours.txt");
    std::fs::write(&file, "0\n1\n2\n3\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.index_list_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![0, 1, 2, 3]).await;
    // A few quiet epoch passes, each without asking the node of itself.
    let scanned = || daemon.metrics.get("keysync_status_scan_epoch", &[]);
    let first = scanned();
    eventually("quiet epochs", T, || scanned() >= first + 3.0).await;
    let syncing = sim.count(Route::NodeSyncing);
    let e = scanned();
    eventually("one more quiet epoch", T, || scanned() >= e + 2.0).await;
    assert_eq!(
        sim.count(Route::NodeSyncing),
        syncing,
        "a quiet epoch does not ask the node whether it is synced"
    );

    sim.set_sync(SyncMode::Syncing { distance: 500 });
    sim.set_status(2, "withdrawal_done");
    let held = || {
        daemon.metrics.get(
            "keysync_held_deletes_by_reason",
            &[("reason", "beacon_not_synced")],
        )
    };
    eventually("the removal is held", T, || held() == 1.0).await;
    assert_eq!(active(&sim), vec![0, 1, 2, 3], "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);

    sim.set_sync(SyncMode::Synced);
    eventually("released once synced", T, || active(&sim) == vec![0, 1, 3]).await;
    daemon.stop().await.unwrap();
}
