//! The resolution fan-out against the simulator, measured on the server
//! side: at most `CONCURRENCY` validators requests are ever in flight at
//! once (POST batches, and GETs when a node has no POST), and an error
//! cancels the work still running or queued instead of leaving it to run.
//! The simulator counts a request in flight from the moment it reaches the
//! route until its answer is handed over, or until the client hangs up.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keysync::beacon::{BeaconClient, BeaconError, ValidatorId, CONCURRENCY, GET_CHUNK, POST_CHUNK};
use keysync::http::{Http, RetryPolicy};
use keysync_sim::{Route, Sim, SimConfig};
use support::*;
use url::Url;

const VALIDATORS: u64 = 100_000;
/// Added to every validators request, so that concurrent ones overlap.
const LATENCY_MS: u64 = 50;

fn client(sim: &Sim) -> BeaconClient {
    let http = Http::new(
        Duration::from_secs(30),
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(50),
        },
        None,
        vec![],
    )
    .unwrap();
    BeaconClient::new(http, vec![Url::parse(&sim.beacon_url()).unwrap()])
}

async fn big_sim() -> Sim {
    sim_with(SimConfig {
        validators: VALIDATORS,
        ..Default::default()
    })
    .await
}

/// Validators `0..n` by pubkey, as keysync resolves its inputs.
fn pubkeys(sim: &Sim, n: u64) -> Vec<ValidatorId> {
    (0..n)
        .map(|i| ValidatorId::Pubkey(sim.pubkey(i).parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_ids_go_in_twenty_posts_at_most_four_at_once() {
    let sim = big_sim().await;
    sim.set_latency(Some(Route::ValidatorsPost), LATENCY_MS);
    let ids = pubkeys(&sim, VALIDATORS);
    let done = AtomicUsize::new(0);
    let got = client(&sim)
        .validators(&ids, None, &|n| {
            done.fetch_max(n, Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(got.len(), VALIDATORS as usize);
    assert_eq!(done.load(Ordering::Relaxed), VALIDATORS as usize);

    let posts = sim.count(Route::ValidatorsPost);
    let max = sim.max_in_flight(Route::ValidatorsPost);
    eprintln!("{posts} POSTs, at most {max} in flight at once");
    assert_eq!(posts, VALIDATORS / POST_CHUNK as u64);
    assert!(max <= CONCURRENCY as u64, "{max} POSTs in flight at once");
    // Otherwise the bound was never put to the test.
    assert!(
        max >= 2,
        "the POSTs never overlapped (at most {max} at once)"
    );
    assert_eq!(sim.in_flight(Route::ValidatorsPost), 0);
    assert_eq!(sim.count(Route::ValidatorsGet), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_cancels_the_posts_in_flight_and_those_not_sent_yet() {
    let sim = big_sim().await;
    sim.set_latency(Some(Route::ValidatorsPost), LATENCY_MS);
    // The third answer is a 400 (not retried); two succeed before it.
    sim.fail_after(Route::ValidatorsPost, 2, 400, 1, None);
    let ids = pubkeys(&sim, VALIDATORS);
    let err = client(&sim)
        .validators(&ids, None, &|_| {})
        .await
        .unwrap_err();
    match &err {
        BeaconError::Failed { failure, .. } => assert_eq!(failure.status(), Some(400), "{err}"),
        other => panic!("expected the 400, got {other}"),
    }

    // Whatever was still running when the 400 came is gone (cut off, or
    // answered: the next test tells which with held requests).
    eventually("no POST in flight", Duration::from_secs(10), || {
        sim.in_flight(Route::ValidatorsPost) == 0
    })
    .await;
    // The first four, then one more for each of the two answers before the
    // failure; the other 14 batches were never sent.
    let limit = (CONCURRENCY + 2) as u64;
    let sent = sim.count(Route::ValidatorsPost);
    eprintln!(
        "error case: {sent} POSTs sent, at most {} in flight",
        sim.max_in_flight(Route::ValidatorsPost)
    );
    assert!(sent <= limit, "{sent} POSTs sent");
    assert!(sim.max_in_flight(Route::ValidatorsPost) <= CONCURRENCY as u64);
    // Nothing left running sends more later: watch for ten times the
    // latency (this wait can only miss a straggler, never fail a good run).
    let watch_until = Instant::now() + Duration::from_millis(10 * LATENCY_MS);
    while Instant::now() < watch_until {
        assert_eq!(
            sim.count(Route::ValidatorsPost),
            sent,
            "a POST after the error"
        );
        assert_eq!(sim.in_flight(Route::ValidatorsPost), 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The same, with nothing left to timing: the simulator holds every POST
/// until the test releases it, so the test knows exactly which are running
/// when the error comes, and a held POST can only leave by its client
/// hanging up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_error_cuts_off_the_held_posts_and_sends_no_more() {
    const POST: Route = Route::ValidatorsPost;
    let sim = big_sim().await;
    sim.hold(POST);
    let ids = pubkeys(&sim, VALIDATORS);
    let beacon = client(&sim);
    let call = tokio::spawn(async move { beacon.validators(&ids, None, &|_| {}).await });

    let wait = Duration::from_secs(10);
    // A request is in flight from the route's door, and counted a moment
    // later inside it: wait for both.
    eventually("the first POSTs held", wait, || {
        sim.in_flight(POST) == CONCURRENCY as u64 && sim.count(POST) >= CONCURRENCY as u64
    })
    .await;
    assert_eq!(
        sim.count(POST),
        CONCURRENCY as u64,
        "no more while all are held"
    );
    // Two answered: two more batches go out in their place.
    sim.release(POST, 2);
    let sent = CONCURRENCY as u64 + 2;
    eventually("two more POSTs held", wait, || {
        sim.count(POST) == sent && sim.in_flight(POST) == CONCURRENCY as u64
    })
    .await;
    // The next one answered is a 400 (not retried); three stay held.
    sim.fail_next(POST, 400, 1, None);
    sim.release(POST, 1);
    let err = call.await.unwrap().unwrap_err();
    match &err {
        BeaconError::Failed { failure, .. } => assert_eq!(failure.status(), Some(400), "{err}"),
        other => panic!("expected the 400, got {other}"),
    }
    eventually("the held POSTs cut off", wait, || sim.in_flight(POST) == 0).await;
    assert_eq!(sim.count(POST), sent);
    assert_eq!(sim.max_in_flight(POST), CONCURRENCY as u64);
    // A POST sent later would be counted and stay held: watch a while (this
    // can only miss a straggler, never fail a good run).
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        assert_eq!(
            (sim.count(POST), sim.in_flight(POST)),
            (sent, 0),
            "a POST after the error"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_post_the_get_fallback_keeps_the_same_bound() {
    // Four POST batches' worth of ids, each batch resolved by GETs of 64.
    let n = 4 * POST_CHUNK as u64;
    let sim = sim_with(SimConfig {
        validators: n,
        post_validators_unsupported: Some(405),
        ..Default::default()
    })
    .await;
    sim.set_latency(Some(Route::ValidatorsGet), 10);
    let ids = pubkeys(&sim, n);
    let got = client(&sim).validators(&ids, None, &|_| {}).await.unwrap();
    assert_eq!(got.len(), n as usize);

    let gets = sim.count(Route::ValidatorsGet);
    let max = sim.max_in_flight(Route::ValidatorsGet);
    let max_post = sim.max_in_flight(Route::ValidatorsPost);
    eprintln!("GET fallback: {gets} GETs, at most {max} in flight at once");
    assert_eq!(gets, 4 * POST_CHUNK.div_ceil(GET_CHUNK) as u64);
    assert!(max <= CONCURRENCY as u64, "{max} GETs in flight at once");
    assert!(
        max >= 2,
        "the GETs never overlapped (at most {max} at once)"
    );
    assert!(
        max_post <= CONCURRENCY as u64,
        "{max_post} POSTs in flight at once"
    );
    assert!(sim.count(Route::ValidatorsPost) <= CONCURRENCY as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_diff_of_a_hundred_thousand_pubkeys_keeps_the_bound() {
    let sim = big_sim().await;
    sim.set_latency(Some(Route::ValidatorsPost), LATENCY_MS);
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..VALIDATORS)).unwrap();
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
    assert!(
        r.stdout.starts_with("{\n  \"to_register\": 100000,"),
        "{}",
        r.stdout
    );
    let posts = sim.count(Route::ValidatorsPost);
    let max = sim.max_in_flight(Route::ValidatorsPost);
    eprintln!("keysync diff: {posts} POSTs, at most {max} in flight at once");
    assert_eq!(posts, VALIDATORS / POST_CHUNK as u64);
    assert!(max <= CONCURRENCY as u64, "{max} POSTs in flight at once");
    assert!(
        max >= 2,
        "the POSTs never overlapped (at most {max} at once)"
    );
    assert_eq!(sim.max_in_flight(Route::ValidatorsGet), 0);
}
