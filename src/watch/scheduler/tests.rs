//! The scheduler's decisions, under tokio's paused clock: every instant
//! below is exact, and nothing sleeps for real.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::*;
use crate::error::Error;
use crate::watch::policy::{error_policy, Requeue};
use crate::watch::trigger::{self, Triggers};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The integration tests' timing: debounce 50 ms, max wait 500 ms; a
/// 100 ms slot makes the recheck 1 s.
fn timing() -> Timing {
    Timing {
        debounce: ms(50),
        max_wait: ms(500),
        recheck: ms(1000),
    }
}

fn src(p: &str) -> Trigger {
    Trigger::Source(p.into())
}

fn reasons(p: &Pending) -> Vec<&'static str> {
    p.reasons.iter().copied().collect()
}

/// A scheduler, the senders that feed it, and the instant it started.
struct Rig {
    tx: Triggers,
    stop: watch::Sender<bool>,
    s: Scheduler,
    t0: Instant,
}

impl Rig {
    fn new() -> Self {
        let (tx, rx) = trigger::channel();
        let (stop, shutdown) = watch::channel(false);
        Rig {
            tx,
            stop,
            s: Scheduler::new(timing(), rx, shutdown),
            t0: Instant::now(),
        }
    }

    /// Milliseconds since the rig started.
    fn now(&self) -> u64 {
        (Instant::now() - self.t0).as_millis() as u64
    }

    /// Sleeps until `at` ms after the start.
    async fn until(&self, at: u64) {
        tokio::time::sleep_until(self.t0 + ms(at)).await;
    }

    /// Sends `trigger` at `at` ms after the start, from another task.
    fn send_at(&self, at: u64, trigger: Trigger) {
        let (tx, when) = (self.tx.clone(), self.t0 + ms(at));
        tokio::spawn(async move {
            tokio::time::sleep_until(when).await;
            tx.send(trigger);
        });
    }

    /// Asks for shutdown `at` ms after the start, from another task.
    fn stop_at(&self, at: u64) {
        let (stop, when) = (self.stop.clone(), self.t0 + ms(at));
        tokio::spawn(async move {
            tokio::time::sleep_until(when).await;
            let _ = stop.send(true);
        });
    }

    /// The next batch, and when it came (ms after the start).
    async fn next(&mut self) -> (Pending, u64) {
        let work = self.s.next().await.expect("a batch, not a stop");
        (work, self.now())
    }

    /// Nothing is due for `d`.
    async fn quiet_for(&mut self, d: Duration) {
        if let Ok(got) = timeout(d, self.s.next()).await {
            panic!(
                "expected nothing for {d:?}, got {got:?} at {} ms",
                self.now()
            );
        }
    }

    /// Reports a failed pass for `work` and returns the policy's wait.
    fn fail(&mut self, work: Pending) -> Duration {
        let e = Error::Store("the disk is full".into());
        let Requeue::After(wait) = error_policy(&e, self.s.failures() + 1) else {
            panic!("a store failure is retried");
        };
        self.s.failed(work, wait);
        wait
    }
}

#[tokio::test(start_paused = true)]
async fn a_lone_trigger_runs_one_debounce_later() {
    let mut r = Rig::new();
    r.send_at(10, Trigger::Epoch(0));
    let (work, at) = r.next().await;
    assert_eq!(at, 60);
    assert_eq!(reasons(&work), ["epoch"]);
    assert!(work.refresh.epoch);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn the_debounce_is_trailing_edge() {
    let mut r = Rig::new();
    // Each trigger inside the window pushes the pass back.
    for at in [0, 30, 60, 90] {
        r.send_at(at, Trigger::Epoch(0));
    }
    r.send_at(110, Trigger::Finalized);
    let (work, at) = r.next().await;
    assert_eq!(at, 160, "50 ms after the last trigger");
    assert_eq!(reasons(&work), ["epoch", "finalized"]);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn constant_churn_cannot_push_a_pass_past_the_max_wait() {
    let mut r = Rig::new();
    // A trigger every 30 ms from 10 ms on, never quiet for 50 ms.
    for k in 0..60 {
        r.send_at(10 + 30 * k, Trigger::Reorg);
    }
    let (_, at) = r.next().await;
    assert_eq!(at, 510, "500 ms after the first trigger (10 ms)");
    // The next batch starts with the first trigger after that pass.
    let (_, at) = r.next().await;
    assert_eq!(at, 1020, "500 ms after 520 ms");
}

#[tokio::test(start_paused = true)]
async fn chain_events_do_not_push_a_file_change_back() {
    let mut r = Rig::new();
    r.send_at(10, src("/in/a"));
    // An epoch boundary and events every 10 ms: they ride along.
    for at in [20, 30, 40, 50, 55, 65, 75, 85] {
        r.send_at(at, Trigger::Epoch(0));
    }
    let (work, at) = r.next().await;
    assert_eq!(at, 60, "50 ms after the file event, whatever came since");
    assert_eq!(work.paths.len(), 1);
    // The chain events' own pass follows the file's at once (the split);
    // the ones after it settle on their own.
    let (rest, at) = r.next().await;
    assert_eq!(at, 60);
    assert!(rest.refresh.epoch && rest.paths.is_empty());
    let (late, at) = r.next().await;
    assert_eq!(at, 135, "50 ms after the last chain event (85 ms)");
    assert!(late.refresh.epoch && late.paths.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_file_written_again_settles_on_its_last_write() {
    let mut r = Rig::new();
    r.send_at(0, src("/in/a"));
    r.send_at(40, Trigger::Epoch(0));
    r.send_at(45, src("/in/a"));
    r.send_at(80, src("/in/b"));
    let (work, at) = r.next().await;
    assert_eq!(at, 130);
    assert_eq!(work.paths.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_file_change_runs_ahead_of_an_epochs_status_check() {
    let mut r = Rig::new();
    r.send_at(0, src("/in/a"));
    r.send_at(5, Trigger::Finalized);
    r.send_at(10, Trigger::Exit(7));
    r.send_at(15, Trigger::Epoch(0));
    let (first, at) = r.next().await;
    assert_eq!(at, 50);
    assert_eq!(first.paths.len(), 1);
    assert!(!first.refresh.epoch && !first.finalized && first.exits.is_empty());
    let (second, at) = r.next().await;
    assert_eq!(at, 50, "the check follows at once, with no debounce");
    assert!(second.paths.is_empty());
    assert!(second.refresh.epoch && second.finalized);
    assert_eq!(second.exits, [7].into());
    assert_eq!(second.first_at, first.first_at);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_rereads_everything_is_not_split() {
    let mut r = Rig::new();
    r.send_at(0, src("/in/a"));
    r.send_at(5, Trigger::Epoch(0));
    r.send_at(10, Trigger::Reconnected);
    let (work, at) = r.next().await;
    assert_eq!(at, 50);
    assert!(!work.paths.is_empty() && work.refresh.epoch && work.refresh.all);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_pass_make_exactly_one_follow_up() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Startup);
    let (work, at) = r.next().await;
    assert_eq!(at, 50);
    assert!(work.all_sources);
    // The pass takes two seconds; triggers keep coming meanwhile.
    r.tx.send(src("/in/a"));
    r.until(300).await;
    r.tx.send(Trigger::KeyFile);
    r.until(1600).await;
    r.tx.send(Trigger::Exit(3));
    r.until(2040).await;
    r.tx.send(src("/in/b"));
    r.until(2050).await;
    r.s.succeeded(false);
    // All four, in one pass, at once: the batch's first trigger is long
    // past its maximum wait.
    let (follow, at) = r.next().await;
    assert_eq!(at, 2050);
    assert_eq!(follow.paths.len(), 2);
    assert!(follow.reread_key);
    assert_eq!(follow.exits, [3].into());
    r.s.succeeded(false);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_trigger_just_before_a_pass_ends_waits_out_its_debounce() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Startup);
    r.next().await;
    r.until(180).await;
    r.tx.send(Trigger::Epoch(0));
    r.until(200).await;
    r.s.succeeded(false);
    let (work, at) = r.next().await;
    assert_eq!(
        at, 230,
        "debounced from when it happened, not from the pass's end"
    );
    assert_eq!(reasons(&work), ["epoch"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pass_is_retried_with_a_growing_backoff_reset_by_a_success() {
    let mut r = Rig::new();
    r.send_at(0, src("/in/a"));
    let (mut work, mut t) = r.next().await;
    assert_eq!(t, 50);
    assert!(!work.relist && !work.check_beacon);
    for (n, secs) in [
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 8),
        (5, 16),
        (6, 32),
        (7, 60),
        (8, 60),
    ] {
        let wait = r.fail(work);
        assert_eq!(wait, Duration::from_secs(secs), "failure {n}");
        assert_eq!(r.s.failures(), n);
        let (again, at) = r.next().await;
        assert_eq!(at, t + secs * 1000, "retry {n} after exactly the backoff");
        assert_eq!(reasons(&again), ["retry", "source"]);
        assert_eq!(again.paths.len(), 1, "nothing the pass was for is lost");
        assert!(
            again.relist && again.check_beacon,
            "a write may have landed"
        );
        (work, t) = (again, at);
    }
    drop(work);
    r.s.succeeded(false);
    assert_eq!(r.s.failures(), 0);
    // The next failure waits the base again.
    r.tx.send(Trigger::Epoch(0));
    let (work, at) = r.next().await;
    assert_eq!(at, t + 50);
    assert_eq!(r.fail(work), Duration::from_secs(1));
    let (_, retried) = r.next().await;
    assert_eq!(retried, at + 1000);
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_backoff_join_the_retry_without_ending_it() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    let (work, _) = r.next().await;
    r.fail(work);
    r.send_at(300, src("/in/a"));
    r.send_at(700, Trigger::Exit(9));
    let (retry, at) = r.next().await;
    assert_eq!(at, 1050, "the backoff is waited out");
    assert_eq!(
        reasons(&retry),
        ["epoch", "retry", "source", "voluntary_exit"]
    );
    assert!(retry.relist && retry.check_beacon && retry.refresh.epoch);
}

#[tokio::test(start_paused = true)]
async fn a_stream_reconnect_ends_a_backoff_early() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    let (mut work, _) = r.next().await;
    for _ in 0..4 {
        r.fail(work);
        work = r.next().await.0;
    }
    assert_eq!(r.fail(work), Duration::from_secs(16));
    let t = r.now();
    r.send_at(t + 100, Trigger::Epoch(0));
    r.send_at(t + 350, Trigger::Reconnected);
    let (retry, at) = r.next().await;
    assert_eq!(at, t + 350, "the beacon node is back: at once, not in 16 s");
    assert!(retry.refresh.all && retry.refresh.epoch);
    assert!(retry.reasons.contains("reconnected") && retry.reasons.contains("retry"));
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_queued_during_the_failed_pass_ends_its_backoff_at_once() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    let (work, _) = r.next().await;
    r.until(80).await;
    r.tx.send(Trigger::Reconnected);
    r.until(100).await;
    r.fail(work);
    let (retry, at) = r.next().await;
    assert_eq!(at, 100);
    assert!(retry.reasons.contains("reconnected"));
}

#[tokio::test(start_paused = true)]
async fn held_removals_are_looked_at_again_after_the_recheck_interval() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    let (_, at) = r.next().await;
    assert_eq!(at, 50);
    r.until(70).await;
    r.s.succeeded(true);
    let (recheck, at) = r.next().await;
    assert_eq!(at, 70 + 1000 + 50, "a recheck interval, then the debounce");
    assert_eq!(reasons(&recheck), ["recheck"]);
    assert!(recheck.check_beacon);
    // Still held: again.
    r.s.succeeded(true);
    let (_, at2) = r.next().await;
    assert_eq!(at2, at + 1050);
    // Released: no more rechecks.
    r.s.succeeded(false);
    r.quiet_for(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_pass_in_between_pushes_the_recheck_back_and_a_failure_keeps_it() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    r.next().await;
    r.s.succeeded(true);
    // Recheck due at 1050; a trigger at 500 runs a pass at 550 first.
    r.send_at(500, Trigger::Epoch(0));
    let (work, at) = r.next().await;
    assert_eq!(at, 550);
    // That pass fails: the recheck stays where it was, but the retry
    // (1 s later) comes first and succeeds, still held.
    r.fail(work);
    let (_, at) = r.next().await;
    assert_eq!(at, 1550);
    r.s.succeeded(true);
    let (recheck, at) = r.next().await;
    assert_eq!(at, 1550 + 1050);
    assert_eq!(reasons(&recheck), ["recheck"]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_honoured_while_debouncing() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    r.send_at(30, Trigger::Epoch(0));
    r.stop_at(40);
    assert!(r.s.next().await.is_none(), "stopped, no pass");
    assert_eq!(r.now(), 40);
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_honoured_while_backing_off() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    let (work, at) = r.next().await;
    assert_eq!(at, 50);
    r.fail(work);
    r.stop_at(300);
    assert!(r.s.next().await.is_none());
    assert_eq!(r.now(), 300, "not after the 1 s backoff");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_honoured_while_idle_waiting_for_a_recheck_and_at_once_when_already_asked() {
    let mut r = Rig::new();
    r.send_at(0, Trigger::Epoch(0));
    r.next().await;
    r.s.succeeded(true);
    r.stop_at(200);
    assert!(r.s.next().await.is_none());
    assert_eq!(r.now(), 200);
    // Asked before a batch is due: nothing more runs, even what is queued.
    r.tx.send(Trigger::Startup);
    assert!(r.s.next().await.is_none());
    assert_eq!(r.now(), 200);
}

#[tokio::test(start_paused = true)]
async fn shutdown_asked_during_a_pass_stops_before_its_follow_up() {
    let mut r = Rig::new();
    r.send_at(0, src("/in/a"));
    r.send_at(10, Trigger::Epoch(0));
    let (_, at) = r.next().await;
    assert_eq!(at, 50);
    // The split's follow-up is due at once, but the pass saw shutdown.
    let _ = r.stop.send(true);
    r.s.succeeded(false);
    assert!(r.s.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_shutdown_sender_stops_the_scheduler() {
    let (tx, rx) = trigger::channel();
    let (stop, shutdown) = watch::channel(false);
    let mut s = Scheduler::new(timing(), rx, shutdown);
    tx.send(Trigger::Epoch(0));
    drop(stop);
    assert!(s.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn without_trigger_senders_it_finishes_the_work_then_stops() {
    let (tx, rx) = trigger::channel();
    let (_stop, shutdown) = watch::channel(false);
    let mut s = Scheduler::new(timing(), rx, shutdown);
    let t0 = Instant::now();
    tx.send(Trigger::Epoch(0));
    drop(tx);
    assert!(s.next().await.is_some());
    assert_eq!(Instant::now() - t0, ms(50), "still debounced");
    s.succeeded(true);
    assert!(s.next().await.is_none());
}

#[test]
fn poll_decides_without_waiting() {
    let (tx, rx) = trigger::channel();
    let (_stop, shutdown) = watch::channel(false);
    let mut s = Scheduler::new(timing(), rx, shutdown);
    let t0 = Instant::now();
    assert!(matches!(s.poll(t0), Decision::Wait(None)));
    s.offer(Stamped {
        trigger: Trigger::Epoch(0),
        at: t0,
    });
    assert!(matches!(s.poll(t0 + ms(49)), Decision::Wait(Some(at)) if at == t0 + ms(50)));
    let Decision::Run(work) = s.poll(t0 + ms(50)) else {
        panic!("due at 50 ms");
    };
    assert_eq!(reasons(&work), ["epoch"]);
    s.failed(work, ms(1000));
    assert!(matches!(s.poll(t0 + ms(60)), Decision::Wait(Some(_))));
    drop(tx);
    assert!(
        matches!(s.poll(t0 + ms(60)), Decision::Wait(Some(_))),
        "closed but work left"
    );
}

#[test]
fn a_file_change_settles_on_file_events_only() {
    let at = |t0: Instant, n: u64| t0 + ms(n);
    let stamped = |trigger, at| Stamped { trigger, at };
    let (debounce, max_wait) = (ms(250), ms(2000));
    let t0 = Instant::now();
    let mut pending = Pending::default();
    let mut clock = Clock::default();
    assert_eq!(clock.deadline(debounce, max_wait), None);

    clock.add(&mut pending, stamped(src("/in/a"), t0));
    assert_eq!(clock.deadline(debounce, max_wait), Some(at(t0, 250)));
    // An epoch boundary meanwhile rides along; it does not push the pass back.
    clock.add(&mut pending, stamped(Trigger::Epoch(0), at(t0, 200)));
    assert_eq!(clock.deadline(debounce, max_wait), Some(at(t0, 250)));
    // The file written again: its pass waits for the writes to settle.
    clock.add(&mut pending, stamped(src("/in/a"), at(t0, 240)));
    assert_eq!(clock.deadline(debounce, max_wait), Some(at(t0, 490)));
    // ... but never longer than the maximum wait after the first trigger.
    clock.add(&mut pending, stamped(src("/in/a"), at(t0, 1900)));
    assert_eq!(clock.deadline(debounce, max_wait), Some(at(t0, 2000)));
    assert!(pending.refresh.epoch && pending.paths.len() == 1);

    // Chain events alone settle on the last of them.
    let mut clock = Clock::default();
    clock.add(&mut pending, stamped(Trigger::Epoch(0), t0));
    clock.add(&mut pending, stamped(Trigger::Finalized, at(t0, 30)));
    assert_eq!(clock.deadline(debounce, max_wait), Some(at(t0, 280)));
}

#[tokio::test(start_paused = true)]
async fn every_trigger_taken_in_is_counted_by_reason_its_own_retry_and_recheck_too() {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let r = Rig::new();
    let mut r = Rig {
        s: r.s.counting(metrics.clone()),
        ..r
    };
    let count = |reason| metrics.get("keysync_triggers_total", &[("reason", reason)]);
    r.send_at(0, Trigger::Startup);
    r.send_at(10, src("/a"));
    r.send_at(20, src("/a"));
    let (work, _) = r.next().await;
    assert_eq!((count("startup"), count("source")), (1.0, 2.0));
    // The scheduler's own: the retry of a failed pass, the recheck of held
    // removals.
    r.fail(work);
    let (_, _) = r.next().await;
    assert_eq!(count("retry"), 1.0);
    r.s.succeeded(true);
    let (work, _) = r.next().await;
    assert_eq!(reasons(&work), ["recheck"]);
    assert_eq!(count("recheck"), 1.0);
    assert_eq!(metrics.get("keysync_triggers_total", &[]), 5.0);
}
