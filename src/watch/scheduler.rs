//! When the daemon's next pass runs, and for what.
//!
//! Owns the scheduling state machine of `keysync watch`: the triggers
//! coalesced into one [`Pending`] batch, the trailing-edge debounce capped
//! by a maximum wait (`Clock`: a file change settles on file events only,
//! chain events ride along), the split that runs a file change ahead of an
//! epoch's status check, exactly one follow-up for what arrived during a
//! pass, the wait before retrying a failed pass (cut short by a stream
//! reconnect), the recheck while removals wait for a synced beacon node,
//! and shutdown, honoured in every wait. It never runs a pass, nor knows
//! what one does or why it failed: the controller runs the batch it is
//! given and reports the outcome; how long to wait after a failure is the
//! [`super::policy`]'s answer.
//!
//! [`Scheduler::poll`] decides at a given instant without waiting;
//! [`Scheduler::next`] waits (on tokio's clock) until a batch is due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::TriggerReceived;
use super::trigger::{Pending, Stamped, Trigger};
use crate::metrics::Metrics;
use crate::settings::WatchSettings;

/// The scheduler's durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Quiet time after the last trigger (the last file event, if any).
    pub debounce: Duration,
    /// The longest a batch waits after its first trigger.
    pub max_wait: Duration,
    /// How soon to look again while removals wait for a synced beacon node.
    pub recheck: Duration,
}

impl Timing {
    pub fn of(w: &WatchSettings, slot: Duration) -> Self {
        Timing {
            debounce: w.debounce,
            max_wait: w.max_wait,
            recheck: Self::recheck(slot),
        }
    }

    /// A slot, within 1 s to 12 s.
    pub fn recheck(slot: Duration) -> Duration {
        slot.clamp(Duration::from_secs(1), Duration::from_secs(12))
    }
}

/// What the scheduler says at an instant.
#[derive(Debug)]
pub enum Decision {
    /// Run a pass for this work now.
    Run(Pending),
    /// Nothing is due before this instant (`None`: before the next
    /// trigger); take in triggers meanwhile and ask again.
    Wait(Option<Instant>),
    /// Shutdown was asked for, or no trigger can come any more and nothing
    /// is left to do: stop.
    Stop,
}

/// The daemon's scheduling state.
#[derive(Debug)]
pub struct Scheduler {
    timing: Timing,
    rx: UnboundedReceiver<Stamped>,
    shutdown: watch::Receiver<bool>,
    /// Every trigger sender is gone.
    closed: bool,
    /// The work of the batch being gathered (or of the retry waited for).
    pending: Pending,
    clock: Clock,
    /// The rest of a split batch: already debounced, runs at once.
    follow_up: bool,
    /// Backing off after a failed pass: its retry runs then (or at the next
    /// stream reconnect, if sooner).
    retry_at: Option<Instant>,
    /// Removals are held for want of a synced beacon node: look again then.
    recheck_at: Option<Instant>,
    /// Consecutive failed passes.
    failures: u32,
    /// Where every trigger taken in is counted, if anywhere.
    metrics: Option<Arc<Metrics>>,
}

impl Scheduler {
    /// Triggers arrive on `rx`; `shutdown` turning true (or its sender
    /// going away) stops it.
    pub fn new(
        timing: Timing,
        rx: UnboundedReceiver<Stamped>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Scheduler {
            timing,
            rx,
            shutdown,
            closed: false,
            pending: Pending::default(),
            clock: Clock::default(),
            follow_up: false,
            retry_at: None,
            recheck_at: None,
            failures: 0,
            metrics: None,
        }
    }

    /// The same scheduler, counting every trigger it takes in
    /// (`keysync_triggers_total{reason}`).
    /// A new slot length (the chain's, once read): held removals are
    /// looked at again a slot later.
    pub fn set_slot(&mut self, slot: Duration) {
        self.timing.recheck = Timing::recheck(slot);
    }

    pub fn counting(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts trigger `t`, taken in.
    fn received(&self, t: &Trigger) {
        if let Some(m) = &self.metrics {
            m.emit(TriggerReceived(t));
        }
    }

    /// Consecutive failed passes so far (0 after a success).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes in trigger `t`. A stream reconnect ends a backoff: the beacon
    /// node is back.
    pub fn offer(&mut self, t: Stamped) {
        self.received(&t.trigger);
        if t.trigger == Trigger::Reconnected {
            if let Some(at) = &mut self.retry_at {
                *at = (*at).min(t.at);
            }
        }
        self.clock.add(&mut self.pending, t);
    }

    /// The decision at `now`, without waiting. Triggers must be
    /// [offered](Scheduler::offer) first ([`Scheduler::next`] does both).
    pub fn poll(&mut self, now: Instant) -> Decision {
        if *self.shutdown.borrow() {
            return Decision::Stop;
        }
        if self.pending.is_empty() {
            match self.recheck_at {
                Some(at) if now >= at => {
                    self.recheck_at = None;
                    self.received(&Trigger::Recheck);
                    self.clock.add(
                        &mut self.pending,
                        Stamped {
                            trigger: Trigger::Recheck,
                            at: now,
                        },
                    );
                }
                _ if self.closed => return Decision::Stop,
                at => return Decision::Wait(at),
            }
        }
        if let Some(at) = self.retry_at {
            if now < at {
                return Decision::Wait(Some(at));
            }
            self.retry_at = None;
            self.received(&Trigger::Retry);
            self.pending.add(Trigger::Retry, now.into_std());
            // Already waited out: no debounce on top of the backoff.
            self.follow_up = true;
        }
        if !std::mem::take(&mut self.follow_up) {
            let deadline = self
                .clock
                .deadline(self.timing.debounce, self.timing.max_wait)
                .unwrap_or(now);
            if now < deadline {
                return Decision::Wait(Some(deadline));
            }
        }
        self.clock = Clock::default();
        Decision::Run(self.take_batch())
    }

    /// Waits until a batch is due and returns it; `None`: stop.
    /// Cancel-safe: dropped while waiting, it loses no trigger.
    pub async fn next(&mut self) -> Option<Pending> {
        loop {
            // What is already in the channel joins the batch before it is
            // judged due: the triggers that arrived during a pass make one
            // follow-up, not several. The rest of a split batch runs at once.
            if !self.follow_up {
                self.drain();
            }
            let until = match self.poll(Instant::now()) {
                Decision::Run(work) => return Some(work),
                Decision::Stop => return None,
                Decision::Wait(until) => until,
            };
            let timer = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                biased;
                _ = requested(&mut self.shutdown) => return None,
                t = self.rx.recv(), if !self.closed => Some(t),
                _ = timer => None,
            };
            match woke {
                Some(Some(t)) => self.offer(t),
                Some(None) => self.closed = true,
                None => {}
            }
        }
    }

    /// The pass for the last batch succeeded; `held_for_witness`: it held
    /// removals for want of a synced beacon node (look again soon).
    pub fn succeeded(&mut self, held_for_witness: bool) {
        self.failures = 0;
        self.recheck_at = held_for_witness.then(|| Instant::now() + self.timing.recheck);
    }

    /// The pass for `work` failed: everything it was for is requeued, to
    /// run again in `retry_in` (the error policy's wait).
    pub fn failed(&mut self, work: Pending, retry_in: Duration) {
        self.failures = self.failures.saturating_add(1);
        let mut again = work;
        // A failed write may have landed; a failed beacon may be back.
        again.relist = true;
        again.check_beacon = true;
        self.pending.merge(again);
        // The retry takes the rest of a split batch along.
        self.follow_up = false;
        self.retry_at = Some(Instant::now() + retry_in);
    }

    /// Every trigger already sent.
    fn drain(&mut self) {
        while !self.closed {
            match self.rx.try_recv() {
                Ok(t) => self.offer(t),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => self.closed = true,
            }
        }
    }

    /// The batch due now. A file change does not wait behind an epoch's
    /// status check: it gets its own pass first, and the check follows at
    /// once.
    fn take_batch(&mut self) -> Pending {
        let mut work = std::mem::take(&mut self.pending);
        if !work.paths.is_empty()
            && (work.refresh.epoch || work.finalized)
            && !work.refresh.all
            && !work.relist
            && !work.check_beacon
        {
            let later = Pending {
                reasons: work.reasons.clone(),
                refresh: std::mem::take(&mut work.refresh),
                finalized: std::mem::take(&mut work.finalized),
                head_slot: std::mem::take(&mut work.head_slot),
                exits: std::mem::take(&mut work.exits),
                first_at: work.first_at,
                ..Default::default()
            };
            self.pending.merge(later);
            self.follow_up = true;
        }
        work
    }
}

/// Resolves once shutdown is asked for, or can no longer be (its sender is
/// gone: nobody is left to ask, or to wait for the daemon).
pub async fn requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// When a batch of triggers is due: its first trigger, and the last one of
/// each class. A file change settles on file events only; chain events
/// arriving meanwhile ride along without pushing its pass back.
#[derive(Debug, Default)]
struct Clock {
    first: Option<Instant>,
    last_source: Option<Instant>,
    last_other: Option<Instant>,
}

impl Clock {
    fn add(&mut self, pending: &mut Pending, t: Stamped) {
        self.first = Some(self.first.map_or(t.at, |f| f.min(t.at)));
        let last = match t.trigger {
            Trigger::Source(_) => &mut self.last_source,
            _ => &mut self.last_other,
        };
        *last = Some(last.map_or(t.at, |l| l.max(t.at)));
        pending.add(t.trigger, t.at.into_std());
    }

    /// The trailing edge: `debounce` after the last file event if there is
    /// one, else after the last trigger; never later than `max_wait` after
    /// the first. `None` for an empty batch.
    fn deadline(&self, debounce: Duration, max_wait: Duration) -> Option<Instant> {
        let last = self.last_source.or(self.last_other)?;
        let first = self.first.unwrap_or(last);
        Some((last + debounce).min(first + max_wait))
    }
}

#[cfg(test)]
mod tests;
