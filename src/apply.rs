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
use crate::metrics::Metrics;
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
    /// Counts `rows` written (or failed) of `stage`: with the log lines, the
    /// one place a write's outcome is reported.
    fn count(&self, stage: Stage, result: &str, rows: usize) {
        if let Some(m) = self.metrics {
            m.add(
                "keysync_writes_total",
                &[("kind", stage.label()), ("result", result)],
                rows as f64,
            );
        }
    }

    /// Counts one unassign with its reason.
    fn count_unassign(&self, result: &str, reason: Option<&Reason>) {
        if let Some(m) = self.metrics {
            m.add(
                "keysync_writes_total",
                &[
                    ("kind", Stage::Unassign.label()),
                    ("result", result),
                    ("reason", reason.map_or("not_in_inputs", Reason::label)),
                ],
                1.0,
            );
        }
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
        let fail = |stage: Stage, p: Progress, source, rows: usize| {
            if stage != Stage::Unassign {
                self.count(stage, "error", rows);
            }
            let e = ApplyError {
                stage,
                progress: p,
                source: Box::new(source),
            };
            tracing::error!(
                stage = %stage,
                registered_added = p.registered_added,
                registered_skipped = p.registered_skipped,
                assigned = p.assigned,
                unassigned = p.unassigned,
                error = %e.source,
                "apply failed part-way; what landed is listed, the next run converges from here"
            );
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
                .map_err(|e| fail(Stage::Register, p, e, chunk.len()))?;
            p.registered_added += added;
            p.registered_skipped += skipped;
            self.count(Stage::Register, "ok", chunk.len());
            observer.registered(chunk);
            tracing::info!(
                added = p.registered_added,
                skipped = p.registered_skipped,
                "registered keys"
            );
        }
        for chunk in plan.to_assign.chunks(ASSIGN_CHUNK) {
            if (self.should_stop)() {
                return stopped(p);
            }
            self.permit().await;
            self.registry
                .assign(self.operator_id, chunk)
                .await
                .map_err(|e| fail(Stage::Assign, p, e, chunk.len()))?;
            p.assigned += chunk.len() as u64;
            self.count(Stage::Assign, "ok", chunk.len());
            observer.assigned(chunk);
            tracing::info!(count = p.assigned, "assigned validators");
        }
        for (n, key) in plan.to_unassign.iter().enumerate() {
            if (self.should_stop)() {
                return stopped(p);
            }
            self.permit().await;
            let reason = reasons.get(n);
            self.registry
                .unassign(self.operator_id, key.0, &key.1)
                .await
                .map_err(|e| {
                    self.count_unassign("error", reason);
                    fail(Stage::Unassign, p, e, 1)
                })?;
            p.unassigned += 1;
            self.count_unassign("ok", reason);
            observer.unassigned(key);
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
