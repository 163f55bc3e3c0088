//! The watch loop: run the passes the [`Scheduler`] asks for, one at a
//! time, and report each outcome back.
//!
//! Owns *how much* of the pipeline a pass re-reads (from [`Pending`]), the
//! daemon's hold policy (deletes held — by the guardrail, an unread input
//! or an unsynced beacon node — while adds go through), the apply journal,
//! and the accounting of a failed pass (log, count, `/ready`). *When* a
//! pass runs is the [`Scheduler`]'s; whether a failure is retried or ends
//! the daemon is [`error_policy`]'s. The pipeline itself is the shared
//! [`Reconciler`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use governor::DefaultDirectRateLimiter;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tracing::Instrument;

use super::events::{PassFailed, PassSucceeded, Planned, UnassignsHeld};
use super::ops::Health;
use super::policy::{error_policy, Requeue};
use super::scheduler::{Scheduler, Timing};
use super::trigger::{Pending, Stamped};
use crate::apply::{Observer, Writer};
use crate::desired::{Counts, ExitTiming, Scan};
use crate::domain::{Key, Pubkey, ValidatorIndex};
use crate::error::{Error, EXIT_OK};
use crate::inputs::InputSet;
use crate::metrics::{HeldReason, Metrics};
use crate::plan::{Plan, RegistrySnapshot, Scope};
use crate::reconcile::{Mode, PassObserver, Policy, Reconciler, Stale, State};
use crate::settings::Settings;
use crate::store::{JournalEntry, Store};
use crate::witness::Confirmed;

pub struct Controller {
    pub rec: Reconciler,
    pub store: Store,
    /// The cache, the desired set, the registry snapshot: what the shared
    /// reconcile function works on, kept between passes.
    pub state: State,
    pub inputs: InputSet,
    /// The keymanagers' latest reads, taken by the next pass.
    pub keymanagers: super::keymanagers::Mailbox,
    /// The keymanagers' clients (sharing their tokens with the poll task's).
    pub keymanager_clients: Vec<crate::inputs::keymanager::KeymanagerClient>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub limiter: DefaultDirectRateLimiter,
    /// Our validators with a voluntary exit seen: looked up in full each
    /// epoch until the node shows the exit (then the status schedule's
    /// exact check at their withdrawable epoch takes over) or they leave.
    pub watched: BTreeSet<ValidatorIndex>,
    /// The last epoch whose share of the status scan was checked.
    pub last_scanned: Option<u64>,
    pub shutdown: watch::Receiver<bool>,
    /// (unknown, excluded) of the last pass: logged only when they change.
    pub last_counts: (usize, usize),
    /// The slot length the timers run on (shared with the stream task).
    pub slot: super::slot::SlotLength,
    /// When statuses were last refreshed.
    pub last_epoch_refresh: Option<Instant>,
    /// The last pass held removals for want of a synced beacon node.
    pub held_for_witness: bool,
    /// How many it held and why (logged loudly only when this changes).
    pub last_hold: Option<(usize, &'static str)>,
    /// Active registry rows outside the scope at the last listing (logged
    /// when this changes).
    pub last_outside: usize,
}

impl Controller {
    /// Runs until shutdown, or until a failure retrying cannot fix.
    /// Triggers arrive on `rx`; *when* a pass runs and for what is the
    /// [`Scheduler`]'s, what a failure means is [`error_policy`]'s. Returns
    /// the exit code: 0 after shutdown, else the stopping error's.
    pub async fn run(mut self, rx: UnboundedReceiver<Stamped>) -> Result<u8, Error> {
        let timing = Timing::of(&self.settings.watch, self.slot.get());
        let mut scheduler =
            Scheduler::new(timing, rx, self.shutdown.clone()).counting(self.metrics.clone());
        let code = loop {
            let Some(work) = scheduler.next().await else {
                break EXIT_OK;
            };
            let e = match self.pass(&work).await {
                Ok(()) => {
                    if self.learn_slot() {
                        scheduler.set_slot(self.slot.get());
                    }
                    scheduler.succeeded(self.held_for_witness);
                    continue;
                }
                Err(e) => e,
            };
            self.health.pass(false);
            let attempt = scheduler.failures() + 1;
            let requeue = error_policy(&e, attempt);
            self.metrics.emit(PassFailed {
                error: &e,
                attempt,
                requeue,
            });
            match requeue {
                Requeue::After(wait) => scheduler.failed(work, wait),
                Requeue::Stop { code, .. } => break code,
            }
        };
        self.close();
        Ok(code)
    }

    fn close(&mut self) {
        if let Err(e) = self
            .store
            .save_cache(&mut self.state.cache)
            .and_then(|_| self.store.flush())
        {
            tracing::warn!(error = %e, "could not flush the state store on shutdown");
        }
        tracing::info!("keysync watch stopped");
    }

    /// Takes the node's slot length (unless `--slot-ms` overrides it);
    /// whether it changed.
    fn learn_slot(&self) -> bool {
        let clock = self.rec.beacon.as_ref().and_then(|b| b.chain_clock());
        clock.is_some_and(|c| {
            let changed = self.slot.learn(c.slot);
            if changed {
                tracing::info!(
                    slot_ms = c.slot.as_millis() as u64,
                    "slot length from the beacon node's config/spec"
                );
            }
            changed
        })
    }

    /// The epoch a status tick is for, with the scan period: the epoch of
    /// the head that ticked, else the node's wall-clock epoch; `None` while
    /// no node's clock and spec have been read (the tick then scans
    /// everything).
    fn tick(&self, head_slot: Option<u64>) -> Option<(u64, u64)> {
        let clock = self.rec.beacon.as_ref()?.chain_clock()?;
        let timing = ExitTiming::of(&clock);
        let slot = head_slot.unwrap_or_else(|| clock.slot_at(std::time::SystemTime::now()));
        Some((timing.epoch_of(slot), timing.scan_period()))
    }

    /// Forgets the validators under close watch whose exit the node now
    /// shows (the exact check at their withdrawable epoch takes over) and
    /// logs each watched or `due` one that left the registry scope.
    fn leaving(&mut self, due: &[ValidatorIndex]) {
        let cache = &self.state.cache;
        let gone = |i: &ValidatorIndex| {
            let k = cache.get(*i)?;
            (!k.status.in_scope()).then(|| k.status.as_str().to_string())
        };
        for i in due.iter().chain(self.watched.iter()) {
            if let Some(status) = gone(i) {
                tracing::info!(
                    validator_index = i,
                    status,
                    "exited validator reached withdrawal; leaving the registry"
                );
            }
        }
        self.watched.retain(|i| {
            cache
                .get(*i)
                .is_some_and(|k| k.status.in_scope() && k.withdrawable_epoch.is_none())
        });
    }

    /// One reconcile pass for the work in `p`, in a span naming its reasons.
    async fn pass(&mut self, p: &Pending) -> Result<(), Error> {
        let reasons: Vec<&str> = p.reasons.iter().copied().collect();
        let span = tracing::info_span!("reconcile", reasons = ?reasons);
        let result = self.pass_inner(p, reasons).instrument(span).await;
        // Last good inputs are saved whatever the pass's outcome.
        self.inputs.persist(&self.store);
        self.shed_store(false);
        result
    }

    /// Lets sled hand back what it holds for the pages it wrote and read
    /// (see [`Store::shed`]; `force`: whatever they come to).
    pub fn shed_store(&mut self, force: bool) {
        let started = Instant::now();
        match self.store.shed(force) {
            Ok(false) => {}
            Ok(true) => {
                crate::alloc::trim();
                tracing::debug!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "state store re-opened to release its page memory"
                );
            }
            Err(e) => {
                // /ready says so: `store_open` false.
                self.health.set_store(false);
                tracing::error!(
                    error = %e,
                    "the state store could not be re-opened; nothing more is saved and no apply starts until keysync restarts"
                )
            }
        }
    }

    async fn pass_inner(&mut self, p: &Pending, reasons: Vec<&'static str>) -> Result<(), Error> {
        let started = Instant::now();

        // 1. Inputs: only what changed; the desired set takes in each change.
        if p.all_sources {
            self.inputs
                .reload_all(&self.store, &self.metrics, &mut self.state.cache);
            self.state
                .desired
                .rebuild(&self.inputs.content(&self.state.cache), &self.state.cache);
            self.state.converged = false;
        } else {
            let mut paths: Vec<std::path::PathBuf> = p.paths.iter().cloned().collect();
            if p.reread_sources {
                // The safety net behind the file watcher: every input again.
                paths.extend(self.inputs.known_paths(&self.metrics));
                paths.sort();
                paths.dedup();
            }
            for path in &paths {
                if let Some(delta) =
                    self.inputs
                        .reload(path, &self.store, &self.metrics, &mut self.state.cache)
                {
                    self.state.desired.apply(&delta, &self.state.cache);
                }
            }
        }
        if p.keymanagers {
            for (url, read) in self.keymanagers.take() {
                if let Some(delta) =
                    self.inputs
                        .take_keymanager(&url, read, &self.metrics, &mut self.state.cache)
                {
                    self.state.desired.apply(&delta, &self.state.cache);
                }
            }
        }
        if p.reread_key {
            self.reread_key().await;
        }
        // An input that cannot be read keeps its last good content; /ready
        // names it until it reads again.
        self.health.set_inputs_unreadable(self.inputs.unreadable());

        // 2. What may be stale on the chain: at an epoch boundary, this
        // epoch's share of the status scan and the validators due at their
        // withdrawable epoch; everything after a reconnect; the validators
        // under close watch.
        let mut refresh = p.refresh.clone();
        // A finalized checkpoint without an epoch refresh in the last two
        // slots (a node that does not flag epoch_transition) ticks too.
        let recent = self
            .last_epoch_refresh
            .is_some_and(|t| t.elapsed() < self.slot.get() * 2);
        if p.finalized && !refresh.epoch && !recent {
            refresh.epoch = true;
        }
        if refresh.epoch || refresh.all {
            self.last_epoch_refresh = Some(Instant::now());
        }
        let tick = if refresh.epoch || refresh.all {
            self.tick(p.head_slot)
        } else {
            None
        };
        let mut due = Vec::new();
        if let Some((epoch, period)) = tick {
            refresh.scan = Some(Scan::next(self.last_scanned, epoch, period));
            due = self.state.cache.due(epoch);
            due.retain(|i| self.state.desired.owns(*i, &self.state.cache));
            refresh.indices.extend(due.iter().copied());
        }
        for i in &p.exits {
            if self.state.desired.owns(*i, &self.state.cache) && self.watched.insert(*i) {
                tracing::info!(
                    validator_index = i,
                    "voluntary exit seen for one of ours; watching its status closely"
                );
            }
        }
        if refresh.epoch || !p.exits.is_empty() {
            refresh.indices.extend(self.watched.iter().copied());
        }
        let stale = Stale {
            check_beacon: p.check_beacon,
            refresh,
            relist: p.relist,
        };

        // 3. The pass: the one reconcile function.
        let apply = self.settings.watch.apply;
        let stop_rx = self.shutdown.clone();
        let should_stop = move || *stop_rx.borrow();
        // An input that never parsed: its validators are unknown, so nothing
        // may be unassigned until it does (invariant 1).
        let max_deletes = if self.inputs.complete() {
            self.settings.max_deletes
        } else {
            0
        };
        let mode = if apply {
            Mode::Apply {
                writer: Writer {
                    registry: &self.rec.registry,
                    metrics: Some(&self.metrics),
                    operator_id: &self.rec.operator_id,
                    limiter: Some(&self.limiter),
                    should_stop: &should_stop,
                },
                max_deletes,
                hold_excess_deletes: true,
                allow_empty: self.settings.allow_empty,
            }
        } else {
            Mode::Plan
        };
        let mut observer = Journaling {
            store: &self.store,
            metrics: &self.metrics,
            inputs: &mut self.inputs,
            journal: None,
            apply,
            reasons: &reasons,
            last_counts: &mut self.last_counts,
            last_outside: &mut self.last_outside,
        };
        let result = self
            .rec
            .reconcile(
                &mut self.state,
                &stale,
                Policy {
                    mode,
                    refuse_unconfirmed: false,
                },
                &mut observer,
            )
            .await;
        let journaled = observer.journal.is_some();
        // What the chain taught this pass is kept whatever its outcome.
        if let Err(e) = self.store.save_cache(&mut self.state.cache) {
            tracing::warn!(error = %e, "could not persist the chain cache");
        }
        self.leaving(&due);
        if p.all_sources || stale.refresh.all || tick.is_some() {
            // Millions of small allocations were freed (a whole rebuild), or
            // an epoch's pass left its lookup buffers: hand them back (see
            // `alloc::trim`; about 0.1 ms).
            crate::alloc::trim();
        }
        let outcome = result?;
        if let Some((epoch, period)) = tick {
            self.last_scanned = Some(self.last_scanned.map_or(epoch, |l| l.max(epoch)));
            self.metrics.status_scan_epoch.set(epoch as i64);
            self.metrics.status_scan_period.set(period as i64);
        }
        let cache = &self.state.cache;
        let exiting = cache
            .due(u64::MAX)
            .into_iter()
            .filter(|i| self.state.desired.owns(*i, cache))
            .count();
        self.metrics.exiting_validators.set(exiting as i64);
        if journaled {
            if let Err(e) = self.store.journal_clear() {
                tracing::warn!(error = %e, "could not clear the apply journal");
            }
        }

        // 4. Account: the witness's holds, the guardrail's, the metrics.
        let witness_held = outcome.witness_held;
        self.held_for_witness = outcome.not_synced.is_some();
        let hold = outcome
            .not_synced
            .as_ref()
            .map(|ns| (witness_held, ns.why.label()));
        if let Some(ns) = &outcome.not_synced {
            // Loud when it starts or changes; every pass repeats it quietly.
            if hold != self.last_hold {
                tracing::error!(
                    held = witness_held,
                    reason = ns.why.label(),
                    error = %ns,
                    "removals held: no synced beacon node confirmed them; adds go through; they are released at the first pass after the node is synced"
                );
            } else {
                tracing::debug!(held = witness_held, error = %ns, "removals still held");
            }
        } else if let Some((n, _)) = self.last_hold {
            tracing::info!(
                held = n,
                "the beacon node is synced again: held removals are released"
            );
        }
        self.last_hold = hold;
        self.report_witness(outcome.not_synced.as_ref());

        // An input never read wins as the reason: it is why the plan is short.
        let hold = match (self.inputs.complete(), outcome.hold()) {
            (_, None) => None,
            (false, Some(_)) => Some(HeldReason::InputNotRead),
            (true, Some(h)) => Some(HeldReason::from(h)),
        };
        self.metrics.emit(UnassignsHeld {
            held: outcome.applied.held.len(),
            hold,
            witness_held,
            max_deletes,
        });
        self.health.pass(true);
        let wrote = outcome
            .applied
            .applied
            .is_some_and(|a| a.progress.assigned + a.progress.unassigned > 0);
        self.metrics.emit(PassSucceeded {
            elapsed: started.elapsed(),
            desired: self.state.desired.set().len(),
            assigned: self.state.snapshot.as_ref().map_or(0, |s| s.active_count()),
            looked_up: outcome.looked_up,
            trigger_to_apply: p.first_at.filter(|_| wrote).map(|first| first.elapsed()),
        });
        Ok(())
    }
}

/// The daemon's pass observer: logs what changed, saves the inputs and
/// journals the apply before the first write, keeps the journal's progress.
struct Journaling<'a> {
    store: &'a Store,
    metrics: &'a Metrics,
    inputs: &'a mut InputSet,
    journal: Option<JournalEntry>,
    apply: bool,
    reasons: &'a [&'static str],
    /// (unknown, excluded) of the last pass: logged only when they change.
    last_counts: &'a mut (usize, usize),
    /// Rows outside the scope at the last listing: logged when it changes.
    last_outside: &'a mut usize,
}

impl Journaling<'_> {
    fn progress(&self, j: &JournalEntry) {
        if let Err(e) = self.store.journal_update(j) {
            tracing::warn!(error = %e, "could not record the apply's progress in the journal");
        }
    }
}

impl Observer for Journaling<'_> {
    fn assigned(&mut self, keys: &[Key]) {
        if let Some(mut j) = self.journal.take() {
            j.assigned += keys.len() as u64;
            self.progress(&j);
            self.journal = Some(j);
        }
    }
    fn unassigned(&mut self, _key: &Key) {
        if let Some(mut j) = self.journal.take() {
            j.unassigned += 1;
            self.progress(&j);
            self.journal = Some(j);
        }
    }
}

impl PassObserver for Journaling<'_> {
    fn resolved(&mut self, c: &Counts) {
        self.metrics.unknown_validators.set(c.unknown as i64);
        self.metrics.excluded_validators.set(c.excluded as i64);
        if (c.unknown, c.excluded) != *self.last_counts {
            *self.last_counts = (c.unknown, c.excluded);
            crate::desired::log_counts(c.unknown, c.excluded, &c.sample, c.lines);
        }
    }

    fn outside(&mut self, rows: usize, snapshot: &RegistrySnapshot, scope: &Scope) {
        if rows != *self.last_outside {
            *self.last_outside = crate::reconcile::report_outside(snapshot, scope);
        }
    }

    fn planned(&mut self, planned: &Plan, _confirmed: &Confirmed) -> Result<(), Error> {
        self.metrics.emit(Planned {
            plan: planned,
            apply: self.apply,
        });
        Ok(())
    }

    fn writing(&mut self, planned: &Plan) -> Result<(), Error> {
        // Save first: the input content this pass acts on is made durable
        // (the journal's flush) before its first write, so a kill mid-apply
        // followed by a broken input at restart keeps the edit instead of
        // undoing it. No durable save, no write.
        self.inputs.persist(self.store);
        let entry = JournalEntry {
            started_unix: unix_now(),
            reasons: self.reasons.iter().map(|s| s.to_string()).collect(),
            to_assign: planned.to_assign.len(),
            to_unassign: planned.to_unassign.len(),
            assigned: 0,
            unassigned: 0,
        };
        self.store.journal_begin(&entry).map_err(|e| {
            Error::Store(format!(
                "cannot save the inputs and the apply journal before writing, so nothing was written: {e}"
            ))
        })?;
        self.journal = Some(entry);
        Ok(())
    }

    fn last_record(&self, key: &Key) -> Option<Pubkey> {
        self.inputs.last_record(key)
    }
}

impl Controller {
    /// Takes in a changed API key file (a rotated Kubernetes Secret or
    /// systemd credential): the new key is used from the next request on.
    /// A file that cannot be used, or a key of another operator, leaves the
    /// key in use as it is, loudly.
    async fn reread_key(&mut self) {
        self.reread_tokens();
        let Some(path) = self.settings.api_key_file.clone() else {
            return;
        };
        let key = match crate::settings::reread_key_file(&path) {
            Ok(k) if k == self.settings.api_key => return,
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "the API key file changed but cannot be used; the key read before stays in use");
                return;
            }
        };
        let old = std::mem::replace(&mut self.settings.api_key, key.clone());
        self.rec.registry.set_key(key);
        if self.settings.operator_id.is_none() {
            match self.rec.registry.me().await {
                Ok(op) if op == self.rec.operator_id => {}
                Ok(op) => {
                    tracing::error!(file = %path.display(), new_operator = %op, operator = %self.rec.operator_id, "the new API key belongs to another operator; the key read before stays in use (restart keysync to switch operators)");
                    self.rec.registry.set_key(old.clone());
                    self.settings.api_key = old;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the new API key could not be checked against /api/v1/me; using it");
                }
            }
        }
        tracing::info!(file = %path.display(), "the API key file changed: the new key is used from now on");
    }

    /// Re-reads each keymanager's token file: a changed token is used from
    /// the next poll on (the clients share it with the poll task); one that
    /// cannot be used leaves the token read before in use.
    fn reread_tokens(&mut self) {
        let kms = &mut self.settings.inputs.keymanagers;
        for (km, client) in kms.iter_mut().zip(&self.keymanager_clients) {
            match crate::settings::reread_token_file(&km.token_file) {
                Ok(t) if t == km.token => {}
                Ok(t) => {
                    client.set_token(t.clone());
                    km.token = t;
                    tracing::info!(keymanager = %client.url(), file = %km.token_file.display(), "the keymanager token file changed: the new token is used from now on");
                }
                Err(e) => {
                    tracing::error!(keymanager = %client.url(), error = %e, "the keymanager token file changed but cannot be used; the token read before stays in use");
                }
            }
        }
    }

    /// Publishes what the pass learned of the beacon node's sync state:
    /// `/ready`'s `beacon_synced` check and the sync metrics. `held`: the
    /// witness's reason for holding removals, which wins over the node's
    /// own report. A pass that used no beacon node changes nothing.
    fn report_witness(&self, held: Option<&crate::beacon::NotSynced>) {
        use crate::beacon::Witness;
        let witness = match held {
            Some(ns) => Some(Witness::NotSynced(ns.clone())),
            None => self.rec.beacon.as_ref().and_then(|b| b.last_witness()),
        };
        let Some(witness) = witness else {
            return;
        };
        let (synced, lag, why) = match &witness {
            Witness::Synced { head_lag, .. } => (true, Some(*head_lag), None),
            Witness::NotSynced(ns) => (false, ns.why.lag(), Some(ns.to_string())),
        };
        self.metrics.beacon_synced.set(i64::from(synced));
        if let Some(lag) = lag {
            self.metrics
                .beacon_head_lag_slots
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        self.health.set_beacon_unsynced(why);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
