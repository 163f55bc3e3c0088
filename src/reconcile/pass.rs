//! The one reconcile function: state and what is stale in, outcome out.
//!
//! [`Reconciler::reconcile`] does not know which trigger woke it: it vets
//! the beacon node, resolves what `stale` says is stale into the desired
//! set, lists the registry when asked, checks chain spellings and scope,
//! plans (only the touched keys while the registry equalled the desired
//! set), has the witness confirm every unassign, and applies under the
//! `policy`. The one-shot commands call it once on a cold [`State`] with
//! everything stale; the daemon calls it with the state it keeps and what
//! its triggers marked. What differs between them is told through the
//! [`PassObserver`] (print the plan, or log and journal it) and the
//! [`Policy`] (refuse, or hold and let the adds through).

use crate::apply::Observer;
use crate::beacon::NotSynced;
use crate::cache::ChainCache;
use crate::desired::{Counts, Desired, Refresh};
use crate::domain::{Key, Pubkey};
use crate::error::Error;
use crate::plan::{Plan, RegistrySnapshot, Scope};
use crate::witness::{self, Confirmed};

use super::{check_chains, Hold, Mode, Reconciler};

/// What a pass works on, kept between passes by the daemon.
#[derive(Debug)]
pub struct State {
    pub cache: ChainCache,
    pub desired: Desired,
    /// The registry as last listed, plus keysync's writes since.
    pub snapshot: Option<RegistrySnapshot>,
    /// The registry equalled the desired set after the last pass (every
    /// planned write landed, none held): the next plan needs only the keys
    /// touched since.
    pub converged: bool,
}

impl State {
    /// A cold state: nothing known, nothing listed.
    pub fn cold(desired: Desired) -> State {
        State {
            cache: ChainCache::new(),
            desired,
            snapshot: None,
            converged: false,
        }
    }
}

/// What the pass must re-read.
#[derive(Debug, Clone, Default)]
pub struct Stale {
    /// Pick the beacon node now, from the preferred one on (start,
    /// reconnect, resync, retry, recheck). Otherwise it is picked on first
    /// use; every node is vetted again each pass either way.
    pub check_beacon: bool,
    /// What to ask the beacon node besides the ids it does not know yet.
    pub refresh: Refresh,
    /// List the registry again.
    pub relist: bool,
}

impl Stale {
    /// Everything: a cold pass.
    pub fn everything() -> Stale {
        Stale {
            check_beacon: true,
            refresh: Refresh::all(),
            relist: true,
        }
    }
}

/// How a pass may write.
pub struct Policy<'a> {
    pub mode: Mode<'a>,
    /// Removals no synced beacon node confirmed: refuse the pass (one-shot,
    /// exit 6, nothing printed or written) or hold them and let the adds
    /// through (daemon).
    pub refuse_unconfirmed: bool,
}

/// What a pass tells its caller as it goes (besides every landed write).
pub trait PassObserver: Observer {
    /// The desired set after resolution.
    fn resolved(&mut self, _counts: &Counts) {}
    /// A fresh listing holds active rows outside the scope (never touched).
    fn outside(&mut self, _rows: usize, _snapshot: &RegistrySnapshot, _scope: &Scope) {}
    /// The plan, with every unassign confirmed by the witness, before the
    /// guardrail and before any write (the one-shot commands print it).
    fn planned(&mut self, _plan: &Plan, _confirmed: &Confirmed) -> Result<(), Error> {
        Ok(())
    }
    /// Right before the first write (the daemon saves the inputs it acted
    /// on and journals the apply: no durable save, no write).
    fn writing(&mut self, _plan: &Plan) -> Result<(), Error> {
        Ok(())
    }
    /// For a key whose records disagree, the last record's pubkey in input
    /// order (the daemon's inputs know it).
    fn last_record(&self, _key: &Key) -> Option<Pubkey> {
        None
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub struct PassOutcome {
    /// Ids sent to the beacon node to resolve the set.
    pub looked_up: usize,
    /// The plan's size before any hold: (assigns, unassigns).
    pub planned: (usize, usize),
    /// What the write stage did (holds by the guardrail, writes).
    pub applied: super::Outcome,
    /// Unassigns held because no synced node confirmed them, and why.
    pub witness_held: usize,
    pub not_synced: Option<NotSynced>,
    /// Active rows outside the scope at this pass's listing, if it listed.
    pub outside: Option<usize>,
}

impl PassOutcome {
    /// The guardrail's hold, if any.
    pub fn hold(&self) -> Option<Hold> {
        self.applied.hold
    }
}

impl Reconciler {
    /// The one reconcile function (see the module docs).
    pub async fn reconcile<O: PassObserver>(
        &self,
        state: &mut State,
        stale: &Stale,
        policy: Policy<'_>,
        observer: &mut O,
    ) -> Result<PassOutcome, Error> {
        let mut out = PassOutcome::default();
        // 1. The beacon node: vetted again (chain, sync state) before this
        // pass uses its answers; picked at once when asked.
        if stale.check_beacon {
            if let Some(b) = &self.beacon {
                b.prefer_primary();
            }
            self.check_beacon().await?;
        } else {
            self.begin_pass();
        }

        // 2. Resolve: ask only what is stale, learn into the cache and the
        // desired set.
        let (full, epoch) = state.desired.lookups(&state.cache, &stale.refresh);
        out.looked_up = full.len() + epoch.len();
        // Only an incremental set needs to be told what changed: a cold pass
        // resolves in bulk (and at a million keys, a million changes).
        let incremental = state.desired.touched().is_some();
        let mut learned = Vec::new();
        self.fetch(&full, &epoch, &mut state.cache, |l| {
            if incremental {
                learned.push(l)
            }
        })
        .await?;
        // At a million keys the lookup lists are 50 MB: gone before the
        // registry is listed.
        drop((full, epoch));
        state.desired.learned(&learned, &state.cache);
        state
            .desired
            .settle(&state.cache, &|k| observer.last_record(k));
        observer.resolved(&state.desired.counts(&state.cache));

        // 3. The registry: listed when asked (after the beacon answers: at a
        // million keys, holding both at once costs more than it saves).
        let relisted = stale.relist || state.snapshot.is_none();
        let mut previous = None;
        if relisted {
            let expected = state
                .desired
                .set()
                .len()
                .max(state.snapshot.as_ref().map_or(0, RegistrySnapshot::len));
            let fresh = self.list(expected).await?;
            previous = state.snapshot.replace(fresh);
        }
        let mut snapshot = state.snapshot.take().unwrap_or_default();
        let result = self
            .plan_and_apply(
                state,
                &mut snapshot,
                previous,
                relisted,
                policy,
                observer,
                &mut out,
            )
            .await;
        state.snapshot = Some(snapshot);
        result.map(|()| out)
    }

    /// Steps 4 and 5 of a pass: plan, confirm, apply.
    #[allow(clippy::too_many_arguments)]
    async fn plan_and_apply<O: PassObserver>(
        &self,
        state: &mut State,
        snapshot: &mut RegistrySnapshot,
        previous: Option<RegistrySnapshot>,
        relisted: bool,
        policy: Policy<'_>,
        observer: &mut O,
        out: &mut PassOutcome,
    ) -> Result<(), Error> {
        // 4. Scope: the configured chain and those the records name; one
        // spelling each.
        let record_chains = state.desired.record_chains();
        let listed_chains = if relisted {
            snapshot.chains()
        } else {
            Default::default()
        };
        check_chains(&self.chain_id, &record_chains, &listed_chains)?;
        let scope = Scope::new(self.chain_id.clone(), record_chains);
        if relisted {
            let (n, _) = snapshot.outside(&scope, 0);
            out.outside = Some(n);
            observer.outside(n, snapshot, &scope);
        }

        // Plan: while the registry equalled the desired set after the last
        // pass, only the keys touched since can differ.
        let desired = state.desired.set();
        let cache = &state.cache;
        let pubkey_of = |i| cache.get(i).map(|k| k.pubkey);
        let mut planned = match state.desired.touched() {
            Some(touched) if state.converged && !relisted => {
                let delta = crate::plan::plan_for(desired, snapshot, touched, &scope, &pubkey_of);
                if cfg!(debug_assertions) {
                    // Every test run checks the shortcut against the full rule.
                    assert_eq!(
                        delta,
                        crate::plan::plan(desired, snapshot, &scope, &pubkey_of),
                        "delta plan"
                    );
                }
                delta
            }
            _ => crate::plan::plan(desired, snapshot, &scope, &pubkey_of),
        };
        state.converged = false;

        // The witness: no unassign on the word of a beacon node that is not
        // synced or does not know the index; rows listed and in scope stay.
        let mut late = Vec::new();
        let drift = |k: &Key| previous.as_ref().is_some_and(|p| !p.is_active(k));
        let witness = witness::Witness {
            beacon: self.beacon.as_ref(),
            chain_id: &self.chain_id,
        };
        let needs_beacon = state.desired.needs_beacon(&state.cache);
        let confirmed = witness
            .confirm_removals(
                &mut planned,
                &mut state.cache,
                state.desired.listing(),
                needs_beacon,
                &drift,
                |l| late.push(l),
            )
            .await?;
        drop(previous);
        // The incremental set takes in what the witness learned; a cold
        // pass has planned already (a second bulk build would double its
        // peak), and the plan no longer holds the rows found desired.
        if !late.is_empty() && state.desired.touched().is_some() {
            state.desired.learned(&late, &state.cache);
            state
                .desired
                .settle(&state.cache, &|k| observer.last_record(k));
        }
        // A cold pass is done with its set and contents.
        state.desired.release();
        out.witness_held = confirmed.held.len();
        if let Some(ns) = &confirmed.not_synced {
            if policy.refuse_unconfirmed {
                return Err(crate::beacon::BeaconError::NotSynced(ns.clone()).into());
            }
        }
        out.not_synced = confirmed.not_synced.clone();
        out.planned = (planned.to_assign.len(), planned.to_unassign.len());
        witness::log_reasons(&planned, &confirmed.reasons);
        observer.planned(&planned, &confirmed)?;

        // 5. Apply, under the guardrail.
        let applied = self
            .execute(
                planned,
                &confirmed.reasons,
                snapshot,
                policy.mode,
                &scope,
                observer,
            )
            .await?;
        state.desired.clear_touched();
        state.converged = applied.applied.is_some_and(|a| !a.stopped)
            && applied.held.is_empty()
            && out.witness_held == 0
            && late.is_empty();
        out.applied = applied;
        Ok(())
    }
}
