//! What happens inside keysync, as typed events (Vector's internal events):
//! one value per occurrence, whose [`Event::emit`] writes its log line and
//! moves its metrics together, so logs and metrics never disagree.
//!
//! Each log line keeps the target (`keysync::apply`, …) and the fields it
//! had where it was written before, so log filters and readers see no
//! difference. An event without metrics to move (the one-shot commands
//! keep none) still logs.
//!
//! Adding an event: a struct named for what happened (past tense), holding
//! what its log line and metrics need; `record` moves the metrics, `log`
//! writes the line; the call site does `metrics.emit(E { … })` (or
//! `E { … }.emit(metrics)` where metrics may be absent).

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{
    HeldLabels, HeldReason, Metrics, Outcome, PlannedKind, PlannedLabels, ReasonLabels, Reply,
    RequestLabels, RequestOutcomeLabels, ResultLabels, TopicLabels, Write, WriteLabels,
};
use crate::apply::Progress;
use crate::error::Error;
use crate::http::Party;
use crate::plan::Plan;
use crate::watch::policy::Requeue;
use crate::watch::trigger::Trigger;

/// Where each line was logged before it moved here (its `target`).
const APPLY: &str = "keysync::apply";
const HTTP: &str = "keysync::http";
const INPUTS: &str = "keysync::inputs::last_good";
const STREAM: &str = "keysync::watch::stream";
const CONTROLLER: &str = "keysync::watch::controller";

/// Something that happened, told once.
pub trait Event: Sized {
    /// Moves this event's metrics.
    fn record(&self, metrics: &Metrics);

    /// Writes this event's log line, if it has one.
    fn log(&self) {}

    /// Both: the log line always, the metrics where they are kept.
    fn emit(self, metrics: Option<&Metrics>) {
        self.log();
        if let Some(m) = metrics {
            self.record(m);
        }
    }
}

// ---- registry writes (src/apply.rs) ----------------------------------------

/// Rows of one write landed; `progress`: everything landed so far.
pub struct WriteLanded {
    pub write: Write,
    pub rows: usize,
    pub progress: Progress,
}

impl Event for WriteLanded {
    fn record(&self, m: &Metrics) {
        m.writes
            .get_or_create(&WriteLabels::new(self.write, Outcome::Ok))
            .inc_by(self.rows as u64);
    }

    fn log(&self) {
        let p = &self.progress;
        match self.write {
            Write::Register => tracing::info!(
                target: APPLY,
                added = p.registered_added,
                skipped = p.registered_skipped,
                "registered keys"
            ),
            Write::Assign => {
                tracing::info!(target: APPLY, count = p.assigned, "assigned validators")
            }
            // One line for all of them, at the end of the apply.
            Write::Unassign(_) => {}
        }
    }
}

/// A write failed: its `rows` did not land (or may not have), `progress`
/// is what landed before it.
pub struct WriteFailed<'a> {
    pub write: Write,
    pub rows: usize,
    pub progress: Progress,
    pub error: &'a dyn Display,
}

impl Event for WriteFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.writes
            .get_or_create(&WriteLabels::new(self.write, Outcome::Error))
            .inc_by(self.rows as u64);
    }

    fn log(&self) {
        let p = &self.progress;
        tracing::error!(
            target: APPLY,
            stage = %self.write.kind().label(),
            registered_added = p.registered_added,
            registered_skipped = p.registered_skipped,
            assigned = p.assigned,
            unassigned = p.unassigned,
            error = %self.error,
            "apply failed part-way; what landed is listed, the next run converges from here"
        );
    }
}

// ---- remote requests (src/http.rs) ------------------------------------------

/// One attempt of a remote request ended, after `seconds`; `retry`: it
/// failed and is tried again.
pub struct RemoteRequest<'a> {
    pub party: Party,
    pub call: &'static str,
    pub reply: Reply,
    pub seconds: f64,
    pub retry: Option<Retrying<'a>>,
}

/// A failed attempt that will be tried again.
pub struct Retrying<'a> {
    pub attempt: u32,
    pub wait: Duration,
    pub error: &'a dyn Display,
}

impl RemoteRequest<'_> {
    fn request(&self) -> RequestLabels {
        RequestLabels {
            party: self.party.label(),
            call: self.call,
        }
    }
}

impl Event for RemoteRequest<'_> {
    fn record(&self, m: &Metrics) {
        m.remote_request_seconds
            .get_or_create(&self.request())
            .observe(self.seconds);
        m.remote_requests
            .get_or_create(&RequestOutcomeLabels {
                request: self.request(),
                outcome: self.reply,
            })
            .inc();
    }

    fn log(&self) {
        if let Some(r) = &self.retry {
            tracing::warn!(target: HTTP, party = self.party.label(), call = self.call, attempt = r.attempt, wait_ms = r.wait.as_millis() as u64, error = %r.error, "request failed, retrying");
        }
    }
}

// ---- inputs (src/inputs/last_good.rs) ---------------------------------------

/// An input file could not be read or parsed; its last good content
/// (`kept` entries) stands.
pub struct SourceFailed<'a> {
    pub path: &'a Path,
    pub error: &'a dyn Display,
    pub kept: usize,
}

impl Event for SourceFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.source_errors.inc();
    }

    fn log(&self) {
        tracing::error!(target: INPUTS, error = %self.error, path = %self.path.display(), kept = self.kept, "input file cannot be used; keeping its last good content");
    }
}

/// The drop directory could not be listed (or lists nothing); the last
/// good content of its `kept_files` stands.
pub struct DropDirFailed<'a> {
    pub error: &'a dyn Display,
    pub kept_files: usize,
}

impl Event for DropDirFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.source_errors.inc();
    }

    fn log(&self) {
        tracing::error!(target: INPUTS, error = %self.error, kept_files = self.kept_files, "the drop directory cannot be used; the last good content of its files stands");
    }
}

// ---- the event stream (src/watch/stream.rs) ---------------------------------

/// Subscribed to `url`'s event stream.
pub struct StreamConnected<'a> {
    pub url: &'a Url,
}

impl Event for StreamConnected<'_> {
    fn record(&self, m: &Metrics) {
        m.event_stream_connected.set(1);
        m.event_stream_reconnects.inc();
    }

    fn log(&self) {
        tracing::info!(target: STREAM, url = %crate::beacon::display(self.url), "event stream connected");
    }
}

/// A subscribed session ended (`reason`: its fixed label), after `lasted`.
pub struct StreamEnded<'a> {
    pub url: &'a Url,
    pub reason: &'static str,
    pub why: &'a dyn Display,
    pub lasted: Duration,
}

impl Event for StreamEnded<'_> {
    fn record(&self, m: &Metrics) {
        m.event_stream_ended
            .get_or_create(&ReasonLabels {
                reason: self.reason,
            })
            .inc();
    }

    fn log(&self) {
        tracing::warn!(target: STREAM, url = %crate::beacon::display(self.url), why = %self.why, lasted_s = self.lasted.as_secs(), "event stream ended; reconnecting");
    }
}

/// A beacon event arrived (`topic`: its fixed name, or `other`).
pub struct EventReceived {
    pub topic: &'static str,
}

impl Event for EventReceived {
    fn record(&self, m: &Metrics) {
        m.events
            .get_or_create(&TopicLabels { topic: self.topic })
            .inc();
    }
}

/// A beacon event whose data did not parse was skipped: `topic` as sent,
/// `label` the bounded name it is counted under.
pub struct EventInvalid<'a> {
    pub url: &'a Url,
    pub topic: &'a str,
    pub label: &'static str,
    pub error: &'a dyn Display,
}

impl Event for EventInvalid<'_> {
    fn record(&self, m: &Metrics) {
        m.events_invalid
            .get_or_create(&TopicLabels { topic: self.label })
            .inc();
    }

    fn log(&self) {
        tracing::warn!(target: STREAM, url = %crate::beacon::display(self.url), event = %self.topic, error = %self.error, "unparseable beacon event skipped");
    }
}

// ---- the scheduler (src/watch/scheduler.rs) ---------------------------------

/// The scheduler took in a trigger (from the channel, or its own retry
/// and recheck).
pub struct TriggerReceived<'a>(pub &'a Trigger);

impl Event for TriggerReceived<'_> {
    fn record(&self, m: &Metrics) {
        m.triggers
            .get_or_create(&ReasonLabels {
                reason: self.0.reason(),
            })
            .inc();
    }
}

// ---- reconcile passes (src/watch/controller.rs) -----------------------------

/// A pass planned `plan` (`apply`: it will write it; else shadow mode).
pub struct Planned<'a> {
    pub plan: &'a Plan,
    pub apply: bool,
}

impl Event for Planned<'_> {
    fn record(&self, m: &Metrics) {
        for (kind, n) in [
            (PlannedKind::Assign, self.plan.to_assign.len()),
            (PlannedKind::Unassign, self.plan.to_unassign.len()),
        ] {
            m.planned_changes
                .get_or_create(&PlannedLabels { kind })
                .set(n as i64);
        }
    }

    fn log(&self) {
        let planned = self.plan;
        if planned.is_noop() {
            return;
        }
        let sample =
            |keys: &[crate::domain::Key]| keys.iter().take(10).map(|k| k.0).collect::<Vec<_>>();
        tracing::info!(
            target: CONTROLLER,
            to_assign = planned.to_assign.len(),
            to_unassign = planned.to_unassign.len(),
            assign_sample = ?sample(&planned.to_assign),
            unassign_sample = ?sample(&planned.to_unassign),
            mode = if self.apply { "apply" } else { "shadow" },
            "plan"
        );
    }
}

/// A pass held unassigns back: `held` for `hold` (the guardrail, an empty
/// registry, an unread input), `witness_held` for want of a synced beacon
/// node (logged by the pass when that starts or changes).
pub struct UnassignsHeld {
    pub held: usize,
    pub hold: Option<HeldReason>,
    pub witness_held: usize,
    pub max_deletes: u64,
}

impl Event for UnassignsHeld {
    fn record(&self, m: &Metrics) {
        for reason in HeldReason::ALL {
            let n = match reason {
                HeldReason::BeaconNotSynced => self.witness_held,
                r if self.hold == Some(*r) => self.held,
                _ => 0,
            };
            m.held_deletes_by_reason
                .get_or_create(&HeldLabels { reason: *reason })
                .set(n as i64);
        }
        m.held_deletes.set((self.held + self.witness_held) as i64);
    }

    fn log(&self) {
        let held = self.held;
        match self.hold {
            Some(HeldReason::EmptyRegistry) => tracing::error!(
                target: CONTROLLER,
                held,
                "holding unassigns: they would empty the registry; fix the input, or pass --allow-empty if emptying is meant"
            ),
            Some(reason) => tracing::error!(
                target: CONTROLLER,
                held,
                max_deletes = self.max_deletes,
                reason = reason.label(),
                "guardrail holding unassigns; raise --max-deletes or fix the input to release them"
            ),
            None => {}
        }
    }
}

/// A pass succeeded, in `elapsed`; `trigger_to_apply`: from its first
/// trigger to its last write, when it wrote.
pub struct PassSucceeded {
    pub elapsed: Duration,
    pub desired: usize,
    pub assigned: usize,
    pub looked_up: usize,
    pub trigger_to_apply: Option<Duration>,
}

impl Event for PassSucceeded {
    fn record(&self, m: &Metrics) {
        m.desired_validators.set(self.desired as i64);
        m.assigned_validators.set(self.assigned as i64);
        m.reconciles
            .get_or_create(&ResultLabels {
                result: Outcome::Ok,
            })
            .inc();
        m.reconcile_seconds.observe(self.elapsed.as_secs_f64());
        m.last_success_timestamp_seconds.set(unix_now());
        if let Some(d) = self.trigger_to_apply {
            m.trigger_to_apply_seconds.observe(d.as_secs_f64());
        }
    }

    fn log(&self) {
        tracing::debug!(
            target: CONTROLLER,
            desired = self.desired,
            looked_up = self.looked_up,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "reconcile done"
        );
    }
}

/// A pass failed (`attempt`: consecutive failures, this one included);
/// `requeue`: the error policy's answer.
pub struct PassFailed<'a> {
    pub error: &'a Error,
    pub attempt: u32,
    pub requeue: Requeue,
}

impl Event for PassFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.reconciles
            .get_or_create(&ResultLabels {
                result: Outcome::Error,
            })
            .inc();
    }

    fn log(&self) {
        let (e, attempt) = (self.error, self.attempt);
        match self.requeue {
            Requeue::After(wait) => {
                tracing::error!(target: CONTROLLER, error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "reconcile failed; nothing was removed because of it; retrying");
            }
            Requeue::Stop { code, why } => crate::watch::policy::log_stop(e, code, why),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::UnassignReason;

    fn progress() -> Progress {
        Progress {
            registered_added: 2,
            registered_skipped: 1,
            assigned: 3,
            unassigned: 0,
        }
    }

    #[test]
    fn a_write_counts_its_rows_under_its_kind_and_reason() {
        let m = Metrics::with_zeroes();
        m.emit(WriteLanded {
            write: Write::Assign,
            rows: 3,
            progress: progress(),
        });
        m.emit(WriteFailed {
            write: Write::Unassign(UnassignReason::RegistryDrift),
            rows: 1,
            progress: progress(),
            error: &"HTTP 503",
        });
        let text = m.render();
        assert!(
            text.contains("keysync_writes_total{kind=\"assign\",result=\"ok\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "keysync_writes_total{kind=\"unassign\",result=\"error\",reason=\"registry_drift\"} 1\n"
            ),
            "{text}"
        );
        // Without metrics (the one-shot commands), the event still logs.
        WriteLanded {
            write: Write::Register,
            rows: 1,
            progress: progress(),
        }
        .emit(None);
    }

    #[test]
    fn a_remote_request_is_timed_and_counted_by_outcome() {
        let m = Metrics::new();
        for reply in [Reply::Status(503), Reply::Transport, Reply::Ok] {
            m.emit(RemoteRequest {
                party: Party::Console,
                call: "POST assign",
                reply,
                seconds: 0.02,
                retry: None,
            });
        }
        let text = m.render();
        for line in [
            "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"503\"} 1\n",
            "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"transport\"} 1\n",
            "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"ok\"} 1\n",
            "keysync_remote_request_seconds_count{party=\"console\",call=\"POST assign\"} 3\n",
            "keysync_remote_request_seconds_bucket{party=\"console\",call=\"POST assign\",le=\"0.025\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn held_unassigns_are_counted_by_reason_and_in_all() {
        let m = Metrics::with_zeroes();
        m.emit(UnassignsHeld {
            held: 4,
            hold: Some(HeldReason::InputNotRead),
            witness_held: 2,
            max_deletes: 0,
        });
        let by = |r| m.get("keysync_held_deletes_by_reason", &[("reason", r)]);
        assert_eq!(by("input_not_read"), 4.0);
        assert_eq!(by("beacon_not_synced"), 2.0);
        assert_eq!(by("max_deletes"), 0.0);
        assert_eq!(m.get("keysync_held_deletes", &[]), 6.0);
        m.emit(UnassignsHeld {
            held: 0,
            hold: None,
            witness_held: 0,
            max_deletes: 10,
        });
        assert_eq!(m.get("keysync_held_deletes_by_reason", &[]), 0.0);
        assert_eq!(m.get("keysync_held_deletes", &[]), 0.0);
    }

    #[test]
    fn passes_and_triggers_are_counted() {
        let m = Metrics::with_zeroes();
        m.emit(PassSucceeded {
            elapsed: Duration::from_millis(30),
            desired: 5,
            assigned: 4,
            looked_up: 5,
            trigger_to_apply: Some(Duration::from_millis(80)),
        });
        let e = Error::Store("disk full".into());
        m.emit(PassFailed {
            error: &e,
            attempt: 1,
            requeue: Requeue::After(Duration::from_secs(1)),
        });
        for t in [Trigger::Startup, Trigger::Epoch, Trigger::Epoch] {
            m.emit(TriggerReceived(&t));
        }
        assert_eq!(m.get("keysync_reconciles_total", &[("result", "ok")]), 1.0);
        assert_eq!(
            m.get("keysync_reconciles_total", &[("result", "error")]),
            1.0
        );
        assert_eq!(m.get("keysync_desired_validators", &[]), 5.0);
        assert_eq!(m.get("keysync_trigger_to_apply_seconds_count", &[]), 1.0);
        assert_eq!(m.get("keysync_reconcile_seconds_count", &[]), 1.0);
        assert!(m.get("keysync_last_success_timestamp_seconds", &[]) > 1.6e9);
        assert_eq!(m.get("keysync_triggers_total", &[("reason", "epoch")]), 2.0);
        assert_eq!(m.get("keysync_triggers_total", &[]), 3.0);
    }
}
