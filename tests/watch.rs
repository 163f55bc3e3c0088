//! End-to-end tests of `keysync watch` against the in-process simulator
//! (fast slots). Each asserts the registry state the simulator ends with.

mod support;

use std::time::Duration;

use keysync::watch;
use keysync_sim::Route;
use support::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_append_assigns_and_line_removal_unassigns() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("validators.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();

    eventually("initial 4 assigned", T, || active(&sim) == vec![0, 1, 2, 3]).await;
    // Append a line (in place).
    let mut text = pubkeys_text(&sim, 0..4);
    text.push_str(&pubkeys_text(&sim, [9]));
    std::fs::write(&file, &text).unwrap();
    eventually("appended key assigned", T, || {
        active(&sim) == vec![0, 1, 2, 3, 9]
    })
    .await;
    // Remove a line.
    std::fs::write(&file, pubkeys_text(&sim, [0, 1, 3, 9])).unwrap();
    eventually("removed key unassigned", T, || {
        active(&sim) == vec![0, 1, 3, 9]
    })
    .await;
    // Replace by rename (editors, config management).
    write_by_rename(&file, &pubkeys_text(&sim, [0, 1, 3, 9, 12]));
    eventually("renamed-in file applied", T, || {
        active(&sim) == vec![0, 1, 3, 9, 12]
    })
    .await;
    assert_eq!(daemon.stop().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_1_half_written_or_garbage_file_changes_nothing() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("validators.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..6)).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("initial 6 assigned", T, || active(&sim).len() == 6).await;

    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    // Half-written: the last line is cut mid-key.
    let full = pubkeys_text(&sim, 0..6);
    std::fs::write(&file, &full[..full.len() - 40]).unwrap();
    eventually("half-written file counted as an error", T, || {
        errors() >= 1.0
    })
    .await;
    // Garbage.
    std::fs::write(&file, "this is not a pubkey list\n{]").unwrap();
    eventually("garbage counted as an error", T, || errors() >= 2.0).await;
    // Truncated to zero bytes (truncate-then-write in progress).
    std::fs::write(&file, "").unwrap();
    // Let a full epoch of passes run over the broken file.
    let passes = daemon
        .metrics
        .get("keysync_reconciles_total", &[("result", "ok")]);
    eventually("more passes ran", T, || {
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "ok")])
            >= passes + 2.0
    })
    .await;
    assert_eq!(
        active(&sim),
        vec![0, 1, 2, 3, 4, 5],
        "a broken input never shrinks the set"
    );
    assert_eq!(sim.count(Route::Unassign), 0);
    // Fixed: applied again.
    std::fs::write(&file, pubkeys_text(&sim, 0..7)).unwrap();
    eventually("fixed file applied", T, || active(&sim).len() == 7).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_is_unassigned_at_withdrawal_and_not_before() {
    unassigned_at_withdrawal_and_not_before(|sim| sim.exit(2)).await;
}

/// An execution-layer exit (EIP-7002) and a consolidation's source (EIP-7251)
/// emit no event: the status check alone must find them, and still not
/// before withdrawal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_exits_are_unassigned_at_withdrawal_and_not_before() {
    unassigned_at_withdrawal_and_not_before(|sim| assert!(sim.el_exit(2))).await;
    unassigned_at_withdrawal_and_not_before(|sim| assert!(sim.consolidate(2, 1))).await;
}

async fn unassigned_at_withdrawal_and_not_before(exit: impl FnOnce(&keysync_sim::Sim)) {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("ours.txt");
    std::fs::write(&file, "# indices\n1\n2\n3\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.index_list_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![1, 2, 3]).await;

    exit(&sim);
    let mut seen_exiting_assigned = false;
    let deadline = std::time::Instant::now() + T;
    loop {
        let status = sim.status(2).unwrap_or_default();
        let assigned = active(&sim).contains(&2);
        if status.starts_with("active_exiting") || status.starts_with("exited") {
            assert!(assigned, "unassigned too early, at {status}");
            seen_exiting_assigned = true;
        }
        if status.starts_with("withdrawal") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "validator never reached withdrawal"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_exiting_assigned);
    eventually("unassigned after withdrawal", T, || {
        active(&sim) == vec![1, 3]
    })
    .await;
    daemon.stop().await.unwrap();
}

/// Issue #11's status schedule, end to end on a manual clock: an
/// execution-layer exit (no event) is found by the rolling scan long before
/// its validator becomes withdrawable, checked exactly at that boundary and
/// unassigned then, not before; no pass in the epochs around it re-reads
/// the whole set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_layer_exit_leaves_at_its_withdrawable_epoch_with_no_full_scan() {
    const OWNED: u64 = 64;
    let sim = sim_with(keysync_sim::SimConfig {
        validators: 80,
        slot_ms: 0,
        slots_per_epoch: 4,
        keepalive_ms: 100,
        // MAX_SEED_LOOKAHEAD 3, MIN_VALIDATOR_WITHDRAWABILITY_DELAY 16:
        // lead 20 epochs, scan period 4 (16 of the 64 per epoch).
        exit_delay_epochs: 4,
        withdrawable_delay_epochs: 16,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = dir.join("ours.txt");
    let lines: String = (0..OWNED).map(|i| format!("{i}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let mut c = watch_common(&sim, None);
    c.index_list_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    let all: Vec<u64> = (0..OWNED).collect();
    eventually("assigned", T, || active(&sim) == all).await;

    // One epoch at a time: each is scanned before the chain moves on.
    let metric = |name: &str| daemon.metrics.get(name, &[]);
    let scanned = |e: u64| metric("keysync_status_scan_epoch") >= e as f64;
    let step = || async {
        sim.advance_epochs(1);
        let e = sim.current_epoch();
        eventually(&format!("epoch {e} scanned"), T, || scanned(e)).await;
        e
    };
    step().await;
    step().await;
    assert_eq!(metric("keysync_status_scan_period_epochs"), 4.0);

    let before = sim.validator_queries().len();
    assert!(sim.el_exit(2));
    let initiated = sim.current_epoch();
    let mut seen_exiting_at = None;
    let withdrawable = loop {
        let e = step().await;
        let status = sim.status(2).unwrap_or_default();
        if status.starts_with("withdrawal") {
            break e;
        }
        assert!(
            active(&sim).contains(&2),
            "unassigned at epoch {e} while {status}"
        );
        if seen_exiting_at.is_none() && metric("keysync_exiting_validators") == 1.0 {
            seen_exiting_at = Some(e);
        }
        assert!(e < initiated + 40, "validator 2 never became withdrawable");
    };
    let seen = seen_exiting_at.expect("the scan found the exit before withdrawability");
    assert!(
        seen + 4 < withdrawable,
        "found at epoch {seen}, withdrawable at {withdrawable}: with a scan period of 4 it is found within 4 epochs of its initiation at {initiated}"
    );
    // Unassigned in the withdrawable epoch itself: the chain has not moved.
    let rest: Vec<u64> = all.iter().copied().filter(|i| *i != 2).collect();
    eventually("unassigned at its withdrawable epoch", T, || {
        active(&sim) == rest
    })
    .await;
    assert_eq!(sim.current_epoch(), withdrawable);
    assert_eq!(metric("keysync_exiting_validators"), 0.0);

    // No full-set scan in any epoch around it: each epoch asked for its
    // share (16) and, at the boundary, the one validator due and the
    // witness's confirmation of its removal.
    let queries = &sim.validator_queries()[before..];
    let mut per_epoch = std::collections::BTreeMap::<u64, usize>::new();
    for q in queries {
        let ids = q.ids.expect("never a query for every validator");
        *per_epoch.entry(q.epoch).or_default() += ids;
    }
    assert!(
        per_epoch.len() as u64 >= withdrawable - initiated,
        "{per_epoch:?}"
    );
    for (epoch, ids) in &per_epoch {
        let bound = if *epoch == withdrawable { 18 } else { 16 };
        assert!(
            *ids <= bound,
            "epoch {epoch} asked for {ids} ids: {per_epoch:?}"
        );
    }
    assert_eq!(daemon.stop().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_deposit_is_assigned_when_the_chain_knows_it() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    let new_key = sim.deposit(None);
    assert_eq!(sim.index_of(&new_key), None, "not processed yet");
    std::fs::write(&file, format!("{}{new_key}\n", pubkeys_text(&sim, [0]))).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    // The deposit may be processed before the first pass: only the known
    // one is certain to be assigned first.
    eventually("known one assigned", T, || active(&sim).contains(&0)).await;
    eventually("deposit processed by the chain", T, || {
        sim.index_of(&new_key).is_some()
    })
    .await;
    let idx = sim.index_of(&new_key).unwrap();
    eventually("deposit assigned", T, || active(&sim) == vec![0, idx]).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_loss_reconnects_and_misses_no_status_change() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("ours.txt");
    std::fs::write(&file, "1\n2\n3\n4\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.index_list_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![1, 2, 3, 4]).await;
    let reconnects = || {
        daemon
            .metrics
            .get("keysync_event_stream_reconnects_total", &[])
    };
    eventually("connected", T, || reconnects() >= 1.0).await;

    // 1. The server closes the stream.
    sim.close_streams();
    eventually("reconnect after close", T, || reconnects() >= 2.0).await;

    // 2. The stream goes silent (socket open, nothing sent); meanwhile 1 withdraws.
    sim.silence_streams(true);
    sim.set_status(1, "withdrawal_done");
    eventually("reconnect after silence", T, || reconnects() >= 3.0).await;
    sim.silence_streams(false);
    eventually("1 unassigned via the refresh after reconnect", T, || {
        active(&sim) == vec![2, 3, 4]
    })
    .await;

    // 3. The beacon node restarts; while it is down, 2 withdraws.
    sim.stop_beacon().await;
    sim.set_status(2, "withdrawal_possible");
    let before = reconnects();
    tokio::time::sleep(Duration::from_millis(300)).await; // the node stays down a while
    sim.start_beacon().await.unwrap();
    eventually("reconnect after restart", T, || reconnects() > before).await;
    eventually("2 unassigned after the restart", T, || {
        active(&sim) == vec![3, 4]
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_storms_delay_but_never_lose_writes() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..3)).unwrap();
    sim.seed_assignment(50, "0x1", true);
    sim.seed_assignment(51, "0x1", true);
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("converged", T, || active(&sim) == vec![0, 1, 2]).await;

    // A storm on every write route: 5xx, then 429 with Retry-After.
    sim.fail_next(Route::Register, 503, 4, None);
    sim.fail_next(Route::Assign, 429, 3, Some(1));
    sim.fail_next(Route::Unassign, 500, 5, None);
    std::fs::write(&file, pubkeys_text(&sim, [1, 2, 20, 21])).unwrap();
    eventually("converged through the storm", T, || {
        active(&sim) == vec![1, 2, 20, 21]
    })
    .await;
    assert!(
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "error")])
            >= 1.0,
        "the storm did fail passes"
    );
    let writes = |kind, result| {
        daemon.metrics.get(
            "keysync_writes_total",
            &[("kind", kind), ("result", result)],
        )
    };
    assert!(
        writes("register", "error") >= 1.0,
        "failed writes are counted"
    );
    // The registry changes before keysync has the response and counts it.
    eventually(
        "the 3 unassigns counted (50 and 51 at start, then 0)",
        T,
        || writes("unassign", "ok") == 3.0,
    )
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_daemon_holds_mass_deletes_until_the_limit_is_raised() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..8)).unwrap();
    let state = dir.join("state");
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c.clone(), &state, true, 3)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim).len() == 8).await;

    // 6 removed, 1 added: more deletes than --max-deletes 3.
    std::fs::write(&file, pubkeys_text(&sim, [0, 1, 30])).unwrap();
    eventually("the add goes through", T, || active(&sim).contains(&30)).await;
    eventually("held deletes raised as a metric", T, || {
        daemon.metrics.get("keysync_held_deletes", &[]) == 6.0
    })
    .await;
    assert_eq!(
        active(&sim),
        vec![0, 1, 2, 3, 4, 5, 6, 7, 30],
        "deletes held"
    );
    assert_eq!(sim.count(Route::Unassign), 0);
    assert!(daemon.metrics.render().contains("keysync_held_deletes 6"));
    daemon.stop().await.unwrap();

    // Raised: restart with --max-deletes 10.
    let daemon = watch::start(settings(watch_args(c, &state, true, 10)))
        .await
        .unwrap();
    eventually("held deletes released", T, || {
        active(&sim) == vec![0, 1, 30]
    })
    .await;
    eventually("alert cleared", T, || {
        daemon.metrics.get("keysync_held_deletes", &[]) == 0.0
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_beacon_is_used_when_the_first_is_dead() {
    let sim = sim(16).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [3, 4])).unwrap();
    let mut c = watch_common(&sim, Some(format!("{dead},{}", sim.beacon_url())));
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned through the second beacon", T, || {
        active(&sim) == vec![3, 4]
    })
    .await;
    eventually("event stream on the second beacon", T, || {
        daemon.health.stream_connected()
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_plans_but_writes_nothing() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1, 2])).unwrap();
    sim.seed_assignment(9, "0x1", true);
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), false, 10)))
        .await
        .unwrap();
    eventually("plan exposed", T, || {
        daemon
            .metrics
            .get("keysync_planned_changes", &[("kind", "assign")])
            == 2.0
    })
    .await;
    assert_eq!(
        daemon
            .metrics
            .get("keysync_planned_changes", &[("kind", "unassign")]),
        1.0
    );
    assert_eq!(
        sim.count(Route::Register) + sim.count(Route::Assign) + sim.count(Route::Unassign),
        0
    );
    assert_eq!(active(&sim), vec![9]);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_directory_files_of_every_format_are_inputs() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let drop = dir.join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.pubkeys"), pubkeys_text(&sim, [1])).unwrap();
    let mut c = watch_common(&sim, None);
    c.input_dir = Some(drop.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("pubkeys list", T, || active(&sim) == vec![1]).await;
    let pk = |i| sim.pubkey(i).trim_start_matches("0x").to_string();
    std::fs::write(
        drop.join("keystore-m_12381_3600_0_0_0-1.json"),
        format!(
            r#"{{"crypto":{{}},"pubkey":"{}","path":"m/12381/3600/0/0/0","uuid":"x","version":4}}"#,
            pk(2)
        ),
    )
    .unwrap();
    std::fs::write(
        drop.join("deposit_data-1.json"),
        format!(r#"[{{"pubkey":"{}","amount":32000000000}}]"#, pk(3)),
    )
    .unwrap();
    std::fs::write(drop.join("more.txt"), "4\n").unwrap();
    eventually("keystore, deposit data, index list", T, || {
        active(&sim) == vec![1, 2, 3, 4]
    })
    .await;
    std::fs::remove_file(drop.join("more.txt")).unwrap();
    eventually("deleted file's validator unassigned", T, || {
        active(&sim) == vec![1, 2, 3]
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_answer() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    let base = format!("http://{}", daemon.listen);
    let http = reqwest::Client::new();
    let get = |p: &str| {
        let url = format!("{base}{p}");
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(get("/health").await.status(), 200);
    eventually("assigned", T, || active(&sim) == vec![1]).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = get("/ready").await;
        if r.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {}",
            r.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = get("/metrics").await.text().await.unwrap();
    for m in [
        "keysync_desired_validators 1",
        "keysync_assigned_validators 1",
        "keysync_reconciles_total{result=\"ok\"}",
        "keysync_writes_total{kind=\"assign\",result=\"ok\"} 1",
        "keysync_event_stream_connected 1",
        "keysync_trigger_to_apply_seconds_count",
        "keysync_remote_request_seconds_bucket{party=\"console\",call=",
        "keysync_last_event_age_seconds",
    ] {
        assert!(text.contains(m), "missing {m} in\n{text}");
    }
    assert!(
        !text.contains(&sim.api_key()),
        "the key never appears in metrics"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_2_failing_beacon_never_removes_anything() {
    let sim = sim(32).await;
    let (_d, dir) = tmp();
    let file = dir.join("ours.txt");
    std::fs::write(&file, "1\n2\n3\n4\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.index_list_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![1, 2, 3, 4]).await;
    let errors = || {
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "error")])
    };

    // Strange answers: 500s, then non-JSON, on every validators call.
    sim.fail_next(Route::ValidatorsPost, 500, 1_000, None);
    sim.fail_next(Route::ValidatorsGet, 500, 1_000, None);
    std::fs::write(&file, "1\n2\n3\n4\n# touched\n").unwrap();
    eventually("passes fail while the beacon fails", T, || errors() >= 1.0).await;
    sim.fail_next(Route::ValidatorsPost, 500, 0, None);
    sim.fail_next(Route::ValidatorsGet, 500, 0, None);
    sim.non_json_next(Route::ValidatorsPost, 1_000);
    sim.non_json_next(Route::DepositContract, 1_000);
    let before = errors();
    eventually("passes fail on non-JSON answers", T, || errors() > before).await;
    // Down entirely.
    sim.non_json_next(Route::ValidatorsPost, 0);
    sim.non_json_next(Route::DepositContract, 0);
    sim.stop_beacon().await;
    let before = errors();
    std::fs::write(&file, "1\n2\n3\n4\n# touched again\n").unwrap();
    eventually("passes fail with the beacon down", T, || errors() > before).await;
    assert_eq!(active(&sim), vec![1, 2, 3, 4], "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);

    // Back: converges, still nothing removed.
    sim.start_beacon().await.unwrap();
    let ok = daemon
        .metrics
        .get("keysync_reconciles_total", &[("result", "ok")]);
    eventually("recovered", T, || {
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "ok")])
            > ok
    })
    .await;
    assert_eq!(active(&sim), vec![1, 2, 3, 4]);
    assert_eq!(sim.count(Route::Unassign), 0);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_metrics_and_logs_never_hold_the_api_key() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1, 2])).unwrap();
    let state = dir.join("state");
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &state, true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim) == vec![1, 2]).await;
    let metrics = daemon.metrics.render();
    daemon.stop().await.unwrap();
    let key = sim.api_key();
    assert!(!metrics.contains(&key));
    let mut files = 0;
    for entry in walk(&state) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "key found in {}",
            entry.display()
        );
        files += 1;
    }
    assert!(files > 0, "the store wrote files");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_drift_made_by_others_is_repaired_on_resync() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1, 2, 3])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let mut args = watch_args(c, &dir.join("state"), true, 10);
    args.resync_secs = Some(1);
    let daemon = watch::start(settings(args)).await.unwrap();
    eventually("assigned", T, || active(&sim) == vec![1, 2, 3]).await;
    // Someone else deactivates one of ours and assigns a stranger.
    sim.seed_assignment(2, "0x1", false);
    sim.seed_assignment(50, "0x1", true);
    eventually("drift repaired", T, || active(&sim) == vec![1, 2, 3]).await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_costs_no_console_request_and_one_status_check_per_epoch() {
    let sim = sim(64).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..20)).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned", T, || active(&sim).len() == 20).await;
    // Let the start-up passes settle: one full epoch with the stream up.
    let e0 = sim.current_epoch();
    eventually("an epoch passes", T, || sim.current_epoch() >= e0 + 2).await;
    sim.reset_counts();
    let start = sim.current_epoch();
    eventually("four epochs pass", T, || sim.current_epoch() >= start + 4).await;
    let epochs = sim.current_epoch() - start;
    let console: u64 = [
        Route::Me,
        Route::List,
        Route::Register,
        Route::Assign,
        Route::Unassign,
    ]
    .iter()
    .map(|r| sim.count(*r))
    .sum();
    assert_eq!(console, 0, "no console request when nothing changed");
    let beacon = sim.count(Route::ValidatorsPost) + sim.count(Route::ValidatorsGet);
    assert!(
        beacon <= epochs + 1,
        "{beacon} status requests over {epochs} epochs"
    );
    assert!(
        beacon >= epochs - 1,
        "statuses are checked every epoch ({beacon} over {epochs})"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacon_on_the_wrong_chain_is_skipped_and_the_preferred_one_comes_back() {
    // Two beacon nodes with the same validators; the registry is `sim`'s.
    let sim = sim(16).await;
    let wrong = sim_with(keysync_sim::SimConfig {
        validators: 16,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        chain_id: 5,
        ..Default::default()
    })
    .await;
    let backup = sim_with(keysync_sim::SimConfig {
        validators: 16,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        ..Default::default()
    })
    .await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [2, 5])).unwrap();

    // Preferred order: a node on the wrong chain, then the backup.
    let mut c = watch_common(
        &sim,
        Some(format!("{},{}", wrong.beacon_url(), backup.beacon_url())),
    );
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("assigned through the backup", T, || {
        active(&sim) == vec![2, 5]
    })
    .await;
    assert_eq!(
        wrong.count(Route::ValidatorsPost) + wrong.count(Route::Events),
        0,
        "never used the wrong chain"
    );
    daemon.stop().await.unwrap();

    // Preferred: `sim`'s own beacon, down at start; the backup takes over,
    // then keysync comes back to the preferred one once it is up.
    sim.stop_beacon().await;
    let mut c = watch_common(
        &sim,
        Some(format!("{},{}", sim.beacon_url(), backup.beacon_url())),
    );
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state2"), true, 10)))
        .await
        .unwrap();
    eventually("streaming from the backup", T, || {
        backup.open_streams() >= 1 && daemon.health.stream_connected()
    })
    .await;
    sim.start_beacon().await.unwrap();
    eventually("back on the preferred beacon", T, || {
        sim.open_streams() >= 1
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_zero_only_while_the_daemon_is_ready() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    let listen = daemon.listen.to_string();
    let probe = |listen: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
            .args(["probe", "--listen", &listen])
            .env_clear()
            .output()
            .await
            .expect("probe runs")
    };
    eventually("ready", T, || {
        daemon.health.checks().iter().all(|(_, ok)| *ok)
    })
    .await;
    let out = probe(listen.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not ready: the beacon node goes away, the stream with it.
    sim.stop_beacon().await;
    eventually("not ready", T, || !daemon.health.stream_connected()).await;
    let out = probe(listen.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.stop().await.unwrap();
    let out = probe(listen).await;
    assert_eq!(out.status.code(), Some(1), "nothing listening");
}

/// A simulator whose beacon node (and everything else) is on chain 5, while
/// keysync is configured for 0x1.
async fn sim_on_another_chain() -> keysync_sim::Sim {
    sim_with(keysync_sim::SimConfig {
        validators: 16,
        slot_ms: SLOT_MS,
        slots_per_epoch: SLOTS_PER_EPOCH,
        chain_id: 5,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_only_beacon_node_is_on_another_chain_exits_4_by_itself() {
    let sim = sim_on_another_chain().await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [2, 5])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    let listen = daemon.listen;
    eventually("the daemon stops by itself", T, || !daemon.is_running()).await;
    assert_eq!(
        daemon
            .metrics
            .get("keysync_reconciles_total", &[("result", "error")]),
        1.0,
        "one failed pass, not retried"
    );
    assert_eq!(daemon.stop().await.unwrap(), 4, "a configuration error");
    assert!(
        reqwest::get(format!("http://{listen}/health"))
            .await
            .is_err(),
        "the ops listener stopped with it"
    );
    assert_eq!(
        sim.count(Route::ValidatorsPost) + sim.count(Route::ValidatorsGet),
        0,
        "the other chain's answers were never asked for"
    );
    assert_eq!(sim.count(Route::Assign) + sim.count(Route::Unassign), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysync_watch_on_another_chain_exits_4_saying_why() {
    let sim = sim_on_another_chain().await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [2, 5])).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keysync"))
        .args(["watch", "--apply", "--listen", "127.0.0.1:0"])
        .args(["--debounce-ms", "50", "--slot-ms", "100"])
        .args(["--data-dir", p(&dir.join("state"))])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYSYNC_API_URL", sim.url())
        .env("KEYSYNC_AUTH_URL", sim.url())
        .env("KEYSYNC_API_KEY", sim.api_key())
        .env("KEYSYNC_BEACON_URL", sim.beacon_url())
        .env("KEYSYNC_PUBKEYS_FILE", &file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keysync watch starts");
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("keysync watch exits by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("keysync watch stops"))
        .unwrap_or_else(|| panic!("no stop line: {stderr}"));
    assert!(
        line.contains("ERROR")
            && line.contains("configuration error")
            && line.contains("is on chain 5"),
        "{line}"
    );
    assert_eq!(sim.count(Route::Assign) + sim.count(Route::Unassign), 0);
}
