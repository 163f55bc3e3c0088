//! Applying a [`Plan`]: register → assign → unassign, in that order.
//!
//! Owns the write order, chunking, the optional write rate limit, stopping
//! between writes on shutdown, and the running record of what landed (so a
//! failure part-way says exactly which stages and how many rows made it).
//! Each stage is idempotent server-side, so a re-run converges. Does not
//! decide what to write (the plan does) nor enforce the guardrail (the
//! caller does, before calling).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::domain::{DesiredValidator, Key};
use crate::metrics::{Event, Metrics, Outcome, UnassignReason, Write, WriteLabels};
use crate::plan::Plan;
use crate::registry::{RegistryClient, RegistryError, REGISTER_CHUNK};
use crate::witness::Reason;

/// Keys per assign request.
pub const ASSIGN_CHUNK: usize = 5_000;

/// How far an apply got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub registered_added: u64,
    pub registered_skipped: u64,
    pub assigned: u64,
    pub unassigned: u64,
}

/// The stage a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Register,
    Assign,
    Unassign,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Register => "register",
            Stage::Assign => "assign",
            Stage::Unassign => "unassign",
        }
    }
}

/// The stage a write belongs to.
fn stage_of(write: Write) -> Stage {
    match write {
        Write::Register => Stage::Register,
        Write::Assign => Stage::Assign,
        Write::Unassign(_) => Stage::Unassign,
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A write that failed, with what had landed before it.
#[derive(Debug, thiserror::Error)]
#[error("apply failed in the {stage} stage after registering {} (+{} already known), assigning {} and unassigning {}: {source}",
    progress.registered_added, progress.registered_skipped, progress.assigned, progress.unassigned)]
pub struct ApplyError {
    pub stage: Stage,
    pub progress: Progress,
    /// Boxed: an error travels up every `?` of a pass.
    #[source]
    pub source: Box<RegistryError>,
}

/// Told about every write that landed (the daemon updates its snapshot and
/// journal from these; the one-shot commands ignore them).
pub trait Observer: Send {
    fn registered(&mut self, _chunk: &[DesiredValidator]) {}
    fn assigned(&mut self, _keys: &[Key]) {}
    fn unassigned(&mut self, _key: &Key) {}
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// A limit on console API writes per second.
pub fn write_limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(n).allow_burst(n))
}

/// What an apply needs besides the plan.
pub struct Writer<'a> {
    pub registry: &'a RegistryClient,
    /// Where writes are counted (`keysync_writes_total{kind,result}`, and
    /// `reason` on unassigns), if anywhere.
    pub metrics: Option<&'a Metrics>,
    pub operator_id: &'a str,
    pub limiter: Option<&'a DefaultDirectRateLimiter>,
    /// Checked between writes: when true, the apply stops cleanly after the
    /// write in flight (returns `Ok` with `stopped = true`).
    pub should_stop: &'a (dyn Fn() -> bool + Send + Sync),
}

/// The result of an apply that did not fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub progress: Progress,
    pub stopped: bool,
}

impl Writer<'_> {
    /// Tells `event` (its log line; its metrics, where kept): with the log
    /// lines of [`crate::metrics::events`], the one place a write's outcome
    /// is reported.
    fn emit(&self, event: impl Event) {
        event.emit(self.metrics);
    }

    async fn permit(&self) {
        if let Some(l) = self.limiter {
            l.until_ready().await;
        }
    }

    /// Applies `plan` (`reasons`: one per unassign, for the counter's
    /// label); logs each committed chunk and the partial progress on
    /// failure.
    pub async fn apply(
        &self,
        plan: &Plan,
        reasons: &[Reason],
        observer: &mut dyn Observer,
    ) -> Result<Applied, ApplyError> {
        let mut p = Progress::default();
        let fail = |write: Write, p: Progress, source, rows: usize| {
            let e = ApplyError {
                stage: stage_of(write),
                progress: p,
                source: Box::new(source),
            };
            self.emit(WriteFailed {
                write,
                rows,
                progress: p,
                error: &e.source,
            });
            e
        };
        let stopped = |p| {
            Ok(Applied {
                progress: p,
                stopped: true,
            })
        };

        for chunk in plan.to_register.chunks(REGISTER_CHUNK) {
            if (self.should_stop)() {
                return stopped(p);
            }
            self.permit().await;
            let (added, skipped) = self
                .registry
                .register(chunk)
                .await
                .map_err(|e| fail(Write::Register, p, e, chunk.len()))?;
            p.registered_added += added;
            p.registered_skipped += skipped;
            observer.registered(chunk);
            self.emit(WriteLanded {
                write: Write::Register,
                rows: chunk.len(),
                progress: p,
            });
        }
        for chunk in plan.to_assign.chunks(ASSIGN_CHUNK) {
            if (self.should_stop)() {
                return stopped(p);
            }
            self.permit().await;
            self.registry
                .assign(self.operator_id, chunk)
                .await
                .map_err(|e| fail(Write::Assign, p, e, chunk.len()))?;
            p.assigned += chunk.len() as u64;
            observer.assigned(chunk);
            self.emit(WriteLanded {
                write: Write::Assign,
                rows: chunk.len(),
                progress: p,
            });
        }
        for (n, key) in plan.to_unassign.iter().enumerate() {
            if (self.should_stop)() {
                return stopped(p);
            }
            self.permit().await;
            // An unassign the plan gave no reason for is one no input lists.
            let write = Write::Unassign(
                reasons
                    .get(n)
                    .map_or(UnassignReason::NotInInputs, UnassignReason::from),
            );
            self.registry
                .unassign(self.operator_id, key.0, &key.1)
                .await
                .map_err(|e| fail(write, p, e, 1))?;
            p.unassigned += 1;
            observer.unassigned(key);
            self.emit(WriteLanded {
                write,
                rows: 1,
                progress: p,
            });
        }
        if p.unassigned > 0 {
            tracing::info!(count = p.unassigned, "unassigned validators");
        }
        Ok(Applied {
            progress: p,
            stopped: false,
        })
    }
}

// ---- events: what a write did, logged and counted together ---------------

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
                target: "keysync::apply",
                added = p.registered_added,
                skipped = p.registered_skipped,
                "registered keys"
            ),
            Write::Assign => {
                tracing::info!(target: "keysync::apply", count = p.assigned, "assigned validators")
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
    pub error: &'a dyn std::fmt::Display,
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
            target: "keysync::apply",
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
