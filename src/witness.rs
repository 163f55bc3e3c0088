//! The removal witness: what must hold before a pass may unassign anything.
//!
//! Owns safety invariant 2 for removals. When the inputs have any
//! beacon-resolved line (a pubkey or an index), every planned unassign is
//! looked up on the pass's beacon node first (one batched request per 5,000
//! indices), and the pass may remove only when that node — and every node
//! whose answer the pass used — is synced ([`Witness`]) and knows every one
//! of those indices (a node whose state lacks an index the registry holds
//! answers from an old head: it is not synced). A looked-up row whose
//! pubkey or index is listed in the inputs and is in scope is desired after
//! all, whatever an earlier pubkey lookup said: it is kept. Records-only
//! inputs remove on their own word, as before.
//!
//! Also owns the [`Reason`] every remaining unassign carries. Shared by the
//! one-shot commands and the daemon; what to do with held removals (refuse
//! with exit 6, or hold and let the adds through) is theirs to decide.

use std::fmt;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::beacon::{BeaconClient, NotSynced, Unsynced, ValidatorId, Witness as Verdict};
use crate::cache::ChainCache;
use crate::cache::Learned;
use crate::desired::Listing;
use crate::domain::{ChainId, Key, Pubkey, ValidatorIndex};
use crate::plan::Plan;

/// Why a validator is unassigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Listed in the inputs, but its status is `withdrawal_*`.
    Withdrawn { epoch: Option<u64> },
    /// No input lists it (any more).
    NotInInputs,
    /// No input lists it, and keysync did not assign it: a row that appeared
    /// in the registry from elsewhere since the last listing.
    Drift,
}

impl Reason {
    /// The `reason` label on `keysync_writes_total{kind="unassign"}`.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Withdrawn { .. } => "withdrawn",
            Reason::NotInInputs => "not_in_inputs",
            Reason::Drift => "registry_drift",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Withdrawn { epoch: Some(e) } => write!(f, "withdrawn at epoch {e}"),
            Reason::Withdrawn { epoch: None } => f.write_str("withdrawn"),
            Reason::NotInInputs => f.write_str("no longer in the inputs"),
            Reason::Drift => f.write_str("registry drift (assigned outside keysync)"),
        }
    }
}

/// The `reason` label of an unassign write.
impl From<&Reason> for crate::metrics::UnassignReason {
    fn from(r: &Reason) -> Self {
        use crate::metrics::UnassignReason;
        match r {
            Reason::Withdrawn { .. } => UnassignReason::Withdrawn,
            Reason::NotInInputs => UnassignReason::NotInInputs,
            Reason::Drift => UnassignReason::RegistryDrift,
        }
    }
}

/// The witness's verdict on a plan's unassigns.
#[derive(Debug, Clone, Default)]
pub struct Confirmed {
    /// One reason per unassign left in the plan, in its order.
    pub reasons: Vec<Reason>,
    /// Unassigns taken out of the plan because no synced node confirmed
    /// them (with `not_synced` saying why).
    pub held: Vec<Key>,
    pub not_synced: Option<NotSynced>,
    /// Registry rows found listed and in scope: desired after all, taken
    /// out of the plan. The caller adds them to its desired set.
    pub kept: Vec<(Key, Pubkey)>,
}

/// How many unknown indices a stale-state error names.
const STALE_SAMPLE: usize = 5;

/// What the witness asks and of whom: the pass's beacon client (if any)
/// and the configured chain.
pub(crate) struct Witness<'a> {
    pub beacon: Option<&'a BeaconClient>,
    pub chain_id: &'a ChainId,
}

impl Witness<'_> {
    /// Confirms `plan`'s unassigns (see the module docs): takes out those
    /// found desired after all, holds every one of them when the witness is
    /// not synced, and gives each that remains its reason. `beacon_resolved`:
    /// the inputs have a pubkey or index line. `drift` tells a row that
    /// appeared from elsewhere since the last listing. Lookup answers are
    /// learned into `cache`, with each change told to `on_learned`.
    pub(crate) async fn confirm_removals(
        &self,
        plan: &mut Plan,
        cache: &mut ChainCache,
        listing: &(dyn Listing + Sync),
        beacon_resolved: bool,
        drift: &(dyn Fn(&Key) -> bool + Sync),
        mut on_learned: impl FnMut(Learned),
    ) -> Result<Confirmed, crate::beacon::BeaconError> {
        let mut out = Confirmed::default();
        if plan.to_unassign.is_empty() {
            return Ok(out);
        }
        let mut listed = FxHashSet::default();
        let mut withdrawable: FxHashMap<ValidatorIndex, Option<u64>> = FxHashMap::default();
        let ours: Vec<ValidatorId> = plan
            .to_unassign
            .iter()
            .filter(|k| k.1 == *self.chain_id)
            .map(|k| ValidatorId::Index(k.0))
            .collect();
        if let (true, Some(beacon), false) = (beacon_resolved, self.beacon, ours.is_empty()) {
            let not_synced = match beacon.witness().await? {
                Verdict::NotSynced(ns) => Some(ns),
                Verdict::Synced { .. } => {
                    let answers = beacon.validators(&ours, None, &|_| {}).await?;
                    // The lookup may have failed over: ask again.
                    let witness = beacon.witness().await?;
                    let known: FxHashSet<ValidatorIndex> =
                        answers.iter().map(|v| v.index).collect();
                    let unknown: Vec<ValidatorIndex> = ours
                        .iter()
                        .filter_map(|id| match id {
                            ValidatorId::Index(i) if !known.contains(i) => Some(*i),
                            _ => None,
                        })
                        .collect();
                    cache.reserve(answers.len());
                    for v in &answers {
                        if let Some(l) = cache.learn(v) {
                            on_learned(l);
                        }
                        withdrawable.insert(v.index, v.withdrawable_epoch);
                    }
                    let candidates: Vec<(ValidatorIndex, Pubkey)> =
                        answers.iter().map(|v| (v.index, v.pubkey)).collect();
                    listed = listing.listed(&candidates, cache);
                    out.kept = answers
                        .iter()
                        .filter(|v| listed.contains(&v.index) && v.status.in_scope())
                        .map(|v| ((v.index, self.chain_id.clone()), v.pubkey))
                        .collect();
                    if !out.kept.is_empty() {
                        let kept: FxHashSet<&Key> = out.kept.iter().map(|(k, _)| k).collect();
                        plan.to_unassign.retain(|k| !kept.contains(k));
                        tracing::warn!(
                            kept = out.kept.len(),
                            sample = ?out.kept.iter().take(5).map(|(k, _)| k.0).collect::<Vec<_>>(),
                            "registry rows listed in the inputs were about to be unassigned although the beacon node has them in scope; they stay"
                        );
                    }
                    match witness {
                        Verdict::NotSynced(ns) => Some(ns),
                        Verdict::Synced { url, .. } if !unknown.is_empty() => Some(NotSynced {
                            url,
                            why: Unsynced::Stale {
                                count: unknown.len(),
                                sample: unknown.into_iter().take(STALE_SAMPLE).collect(),
                            },
                        }),
                        Verdict::Synced { .. } => None,
                    }
                }
            };
            if let Some(ns) = not_synced {
                out.held = std::mem::take(&mut plan.to_unassign);
                out.not_synced = Some(ns);
                return Ok(out);
            }
        }
        out.reasons = plan
            .to_unassign
            .iter()
            .map(|k| {
                if k.1 == *self.chain_id && listed.contains(&k.0) {
                    Reason::Withdrawn {
                        epoch: withdrawable.get(&k.0).copied().flatten(),
                    }
                } else if drift(k) {
                    Reason::Drift
                } else {
                    Reason::NotInInputs
                }
            })
            .collect();
        Ok(out)
    }
}

/// Logs each planned unassign's reason (counts per reason, and a sample).
pub fn log_reasons(plan: &Plan, reasons: &[Reason]) {
    if plan.to_unassign.is_empty() {
        return;
    }
    let mut by: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    for (k, r) in plan.to_unassign.iter().zip(reasons) {
        by.entry(r.label())
            .or_default()
            .push(format!("{} ({r})", k.0));
    }
    for (label, keys) in by {
        tracing::info!(
            reason = label,
            count = keys.len(),
            sample = ?keys.iter().take(10).collect::<Vec<_>>(),
            "unassigns planned"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_an_operator_would_say_them() {
        assert_eq!(
            Reason::Withdrawn { epoch: Some(12) }.to_string(),
            "withdrawn at epoch 12"
        );
        assert_eq!(Reason::NotInInputs.label(), "not_in_inputs");
        assert_eq!(Reason::Drift.label(), "registry_drift");
    }
}
