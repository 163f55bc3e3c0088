//! The watch loop's events (triggers, plans, holds, passes), each logged
//! and counted together (see [`crate::metrics::events`]).

use std::time::Duration;

use crate::error::Error;
use crate::metrics::{
    Event, HeldLabels, HeldReason, Metrics, Outcome, PlannedKind, PlannedLabels, ReasonLabels,
    ResultLabels,
};
use crate::plan::Plan;
use crate::watch::policy::Requeue;
use crate::watch::trigger::Trigger;

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
            target: "keysync::watch::controller",
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
                target: "keysync::watch::controller",
                held,
                "holding unassigns: they would empty the registry; fix the input, or pass --allow-empty if emptying is meant"
            ),
            Some(reason) => tracing::error!(
                target: "keysync::watch::controller",
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
            target: "keysync::watch::controller",
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
                tracing::error!(target: "keysync::watch::controller", error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "reconcile failed; nothing was removed because of it; retrying");
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
        for t in [Trigger::Startup, Trigger::Epoch(0), Trigger::Epoch(0)] {
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
