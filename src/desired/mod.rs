//! The desired set: the rule, and the daemon's incremental copy of it.
//!
//! Owns what the inputs mean given what the chain cache knows. A pubkey or
//! index line yields its validator on the configured chain while the cache
//! knows it and its status is in scope; a record yields itself and wins over
//! a beacon-resolved entry for the same key (among records for one key, the
//! last in input order wins). Lines the cache does not know are *unknown*
//! (pending deposits or typos: never a reason to unassign); known lines out
//! of scope are *excluded*.
//!
//! [`full`] applies the rule to whole contents (the one-shot commands, the
//! daemon's start). [`Live`] keeps the result between daemon passes (with
//! a count per index and record line; the inputs count their pubkey lines
//! in the chain cache's table of pubkeys), and re-evaluates only the keys
//! that an input change or a beacon answer touched, so a pass costs what
//! changed rather than the size of the set. A property test holds the two
//! equal.

mod live;
mod schedule;

use std::collections::BTreeSet;

use crate::beacon::ValidatorId;
use crate::cache::{ChainCache, Learned};
use crate::domain::{ChainId, DesiredSet, Key, Pubkey, ValidatorIndex};
use crate::inputs::SourceContent;

pub use live::Live;
pub use schedule::{ExitTiming, Scan};

use rustc_hash::{FxHashMap, FxHashSet};

/// What the inputs list, as far as the witness needs to know.
pub trait Listing {
    /// Which of `candidates` (an index, with the pubkey the beacon node
    /// reports for it) a pubkey line or an index line names.
    /// `cache` holds the daemon's line counts (a cold content counts its
    /// own lines).
    fn listed(
        &self,
        candidates: &[(ValidatorIndex, Pubkey)],
        cache: &ChainCache,
    ) -> FxHashSet<ValidatorIndex>;
}

impl Listing for SourceContent {
    /// One pass over the lines with small sets of the candidates: no copy
    /// of a million-line input.
    fn listed(
        &self,
        candidates: &[(ValidatorIndex, Pubkey)],
        _: &ChainCache,
    ) -> FxHashSet<ValidatorIndex> {
        let indices: FxHashSet<ValidatorIndex> = candidates.iter().map(|(i, _)| *i).collect();
        let mut by_pubkey: FxHashMap<Pubkey, Vec<ValidatorIndex>> = FxHashMap::default();
        for (i, pk) in candidates {
            by_pubkey.entry(*pk).or_default().push(*i);
        }
        let mut out = FxHashSet::default();
        out.extend(self.indices.iter().filter(|i| indices.contains(i)));
        for pk in &self.pubkeys {
            if let Some(is) = by_pubkey.get(pk) {
                out.extend(is.iter().copied());
            }
        }
        out
    }
}

/// What a pass resolves: the desired set, kept as a cold pass needs it or
/// as the daemon keeps it between passes.
#[derive(Debug)]
pub enum Desired {
    /// A cold pass (the one-shot commands): whole contents, resolved in
    /// bulk by [`full`] (one sort and a bulk build: the cheapest way to a
    /// million keys once).
    Cold {
        content: SourceContent,
        chain_id: ChainId,
        resolved: Resolved,
    },
    /// The daemon's incremental set.
    Live(Live),
}

/// The unknown and excluded counts of a resolution, for its log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub unknown: usize,
    pub excluded: usize,
    pub sample: Vec<String>,
    /// Pubkey and index lines over every input.
    pub lines: usize,
}

impl Desired {
    pub fn cold(content: SourceContent, chain_id: ChainId) -> Desired {
        Desired::Cold {
            content,
            chain_id,
            resolved: Resolved::default(),
        }
    }

    /// What to ask the beacon node (full lookups, withdrawal-only checks).
    pub fn lookups(
        &self,
        cache: &ChainCache,
        refresh: &Refresh,
    ) -> (Vec<ValidatorId>, Vec<ValidatorId>) {
        match self {
            Desired::Cold { content, .. } if content.needs_beacon() => {
                lookups(&content.pubkeys, &content.indices, cache, refresh)
            }
            Desired::Cold { .. } => (Vec::new(), Vec::new()),
            Desired::Live(live) => live.lookups(cache, refresh),
        }
    }

    /// Takes in the change of one input (the daemon; a cold pass reads
    /// whole contents once).
    pub fn apply(&mut self, delta: &crate::inputs::Delta, cache: &ChainCache) {
        if let Desired::Live(live) = self {
            live.apply(delta, cache);
        }
    }

    /// Starts over from whole contents.
    pub fn rebuild(&mut self, content: &SourceContent, cache: &ChainCache) {
        match self {
            Desired::Live(live) => live.rebuild(content, cache),
            Desired::Cold { content: c, .. } => *c = content.clone(),
        }
    }

    /// Whether validator `i` is one of the operator's (listed, or a record
    /// on the configured chain).
    pub fn owns(&self, i: ValidatorIndex, cache: &ChainCache) -> bool {
        match self {
            Desired::Live(live) => live.owns(i, cache),
            Desired::Cold { resolved, .. } => resolved.desired.iter().any(|(k, _)| k.0 == i),
        }
    }

    /// Takes in what a beacon answer changed in the cache.
    pub fn learned(&mut self, changes: &[Learned], cache: &ChainCache) {
        if let Desired::Live(live) = self {
            live.learned(changes, cache);
        }
    }

    /// Brings the set up to date with the cache. `last_record` finds, in
    /// input order, the last record's pubkey for a key whose records
    /// disagree (the daemon's inputs know it; a cold pass reads whole
    /// contents in order).
    pub fn settle(&mut self, cache: &ChainCache, last_record: &dyn Fn(&Key) -> Option<Pubkey>) {
        match self {
            Desired::Cold {
                content,
                chain_id,
                resolved,
            } => *resolved = full(content, cache, chain_id),
            Desired::Live(live) => live.settle(cache, last_record),
        }
    }

    pub fn set(&self) -> &DesiredSet {
        match self {
            Desired::Cold { resolved, .. } => &resolved.desired,
            Desired::Live(live) => live.desired(),
        }
    }

    /// Whether the beacon node's word decides part of the set.
    pub fn needs_beacon(&self, cache: &ChainCache) -> bool {
        match self {
            Desired::Cold { content, .. } => content.needs_beacon(),
            Desired::Live(live) => live.needs_beacon(cache),
        }
    }

    /// The chains the records name.
    pub fn record_chains(&self) -> BTreeSet<ChainId> {
        match self {
            Desired::Cold { content, .. } => {
                content.records.iter().map(|r| r.chain_id.clone()).collect()
            }
            Desired::Live(live) => live.record_chains().cloned().collect(),
        }
    }

    /// What the inputs list, for the removal witness.
    pub fn listing(&self) -> &(dyn Listing + Sync) {
        match self {
            Desired::Cold { content, .. } => content,
            Desired::Live(live) => live,
        }
    }

    /// The counts of the last resolution.
    pub fn counts(&self, cache: &ChainCache) -> Counts {
        match self {
            Desired::Cold {
                content, resolved, ..
            } => Counts {
                unknown: resolved.unknown,
                excluded: resolved.excluded,
                sample: resolved.unknown_sample.clone(),
                lines: content.pubkeys.len() + content.indices.len(),
            },
            Desired::Live(live) => {
                let (unknown, excluded, sample) = live.counts(cache);
                Counts {
                    unknown,
                    excluded,
                    sample,
                    lines: live.lines(cache),
                }
            }
        }
    }

    /// The keys touched since the last successful pass (the daemon's plan
    /// shortcut); `None` for a cold pass.
    pub fn touched(&self) -> Option<&BTreeSet<Key>> {
        match self {
            Desired::Cold { .. } => None,
            Desired::Live(live) => Some(live.touched()),
        }
    }

    /// After a pass planned and applied every touched key.
    pub fn clear_touched(&mut self) {
        if let Desired::Live(live) = self {
            live.clear_touched();
        }
    }

    /// Drops what a cold pass no longer needs once it has planned (at a
    /// million keys, the set and the contents are most of its memory).
    pub fn release(&mut self) {
        if let Desired::Cold {
            content, resolved, ..
        } = self
        {
            *content = SourceContent::default();
            *resolved = Resolved::default();
        }
    }
}

/// The rule over whole contents, in input order.
pub fn full(content: &SourceContent, cache: &ChainCache, chain_id: &ChainId) -> Resolved {
    let mut resolved = Resolved::default();
    let mut listed: Vec<ValidatorIndex> = Vec::with_capacity(content.len());
    let mut add =
        |index: Option<ValidatorIndex>, shown: &dyn Fn() -> String, r: &mut Resolved| match index
            .and_then(|i| cache.get(i).map(|k| (i, k)))
        {
            Some((i, k)) if k.status.in_scope() => listed.push(i),
            Some(_) => r.excluded += 1,
            None => {
                r.unknown += 1;
                if r.unknown_sample.len() < 3 {
                    r.unknown_sample.push(shown());
                }
            }
        };
    for pk in &content.pubkeys {
        add(cache.index_of(pk), &|| pk.to_string(), &mut resolved);
    }
    for i in &content.indices {
        add(Some(*i), &|| i.to_string(), &mut resolved);
    }
    // A record wins over a beacon-resolved entry.
    let records = content
        .records
        .iter()
        .map(|r| ((r.validator_index, r.chain_id.clone()), r.validator_key))
        .collect();
    resolved.desired = DesiredSet::from_parts(chain_id.clone(), listed, records);
    resolved
}

/// What the beacon node must be asked this pass, besides the ids the cache
/// does not know (always looked up: pending deposits, new inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Every id in full (one-shot; the daemon at start and after a reconnect).
    pub all: bool,
    /// An epoch boundary (or a reorg): statuses may have moved. The known
    /// in-scope validators in [`Refresh::scan`] are asked for
    /// exit-initiated statuses only (small answers); without a scan, all
    /// of them are.
    pub epoch: bool,
    /// This tick's share of the rolling status scan (see [`schedule`]).
    pub scan: Option<Scan>,
    /// These indices in full (validators under close watch).
    pub indices: BTreeSet<ValidatorIndex>,
}

impl Refresh {
    pub fn all() -> Self {
        Refresh {
            all: true,
            ..Default::default()
        }
    }

    /// Merges another refresh into this one.
    pub fn merge(&mut self, other: &Refresh) {
        self.all |= other.all;
        self.epoch |= other.epoch;
        self.scan = match (self.scan, other.scan) {
            (Some(a), Some(b)) => Some(Scan {
                first: a.first.min(b.first),
                last: a.last.max(b.last),
                period: a.period.min(b.period),
            }),
            (a, b) => a.or(b),
        };
        self.indices.extend(other.indices.iter().copied());
    }
}

/// The statuses of a validator whose exit was initiated (its record then
/// carries its `withdrawable_epoch`): what a status scan asks for.
pub(crate) const EXITING: [&str; 6] = [
    "active_exiting",
    "active_slashed",
    "exited_unslashed",
    "exited_slashed",
    "withdrawal_possible",
    "withdrawal_done",
];

/// The desired set and what could not be resolved.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub desired: DesiredSet,
    /// Ids the beacon node does not know (yet): pending deposits or typos.
    pub unknown: usize,
    /// Known validators out of scope (`withdrawal_*`).
    pub excluded: usize,
    /// Ids sent to the beacon node this pass.
    pub looked_up: usize,
    /// Up to three of the unknown ids, for the warning.
    pub unknown_sample: Vec<String>,
}

impl Resolved {
    /// Logs the unknown (pending) and excluded (withdrawn) counts.
    pub fn log_counts(&self, total: usize) {
        log_counts(self.unknown, self.excluded, &self.unknown_sample, total);
    }
}

/// Logs how many input lines are unknown to the beacon node (pending) and
/// how many are out of scope (withdrawn), out of `total`.
pub fn log_counts(unknown: usize, excluded: usize, sample: &[String], total: usize) {
    if unknown > 0 {
        tracing::warn!(
            unknown,
            total,
            sample = ?sample,
            "the beacon node does not know some validators (deposits not yet processed, or typos): they are assigned once it does, and a registry row of one is never unassigned on the word of a node that does not know it"
        );
    }
    if excluded > 0 {
        tracing::info!(
            excluded,
            "validators in withdrawal_* are no longer owned and leave the desired set"
        );
    }
}

/// Splits the ids of `pubkeys` and `indices` lines to look up into (full
/// lookups, status-scan checks).
pub(crate) fn lookups<'a>(
    pubkeys: impl IntoIterator<Item = &'a Pubkey>,
    indices: impl IntoIterator<Item = &'a ValidatorIndex>,
    cache: &ChainCache,
    refresh: &Refresh,
) -> (Vec<ValidatorId>, Vec<ValidatorId>) {
    let pubkeys = pubkeys.into_iter().map(|pk| {
        let placed = cache
            .index_of(pk)
            .and_then(|i| cache.get(i).map(|k| (i, k.status.in_scope())));
        (pk, placed)
    });
    lookups_placed(pubkeys, indices, cache, refresh)
}

/// [`lookups`] over pubkey lines already placed on chain (as
/// [`ChainCache::listed_validators`] gives them).
pub(crate) fn lookups_placed<'a>(
    pubkeys: impl IntoIterator<Item = (&'a Pubkey, Option<(ValidatorIndex, bool)>)>,
    indices: impl IntoIterator<Item = &'a ValidatorIndex>,
    cache: &ChainCache,
    refresh: &Refresh,
) -> (Vec<ValidatorId>, Vec<ValidatorId>) {
    let mut full: Vec<ValidatorId> = Vec::new();
    let mut epoch: Vec<ValidatorId> = Vec::new();
    let scan = refresh
        .scan
        .or_else(|| refresh.epoch.then(|| Scan::everything(0)));
    let mut visit = |placed: Option<(ValidatorIndex, bool)>, id: ValidatorId| match placed {
        Some((i, in_scope)) => {
            if refresh.all || refresh.indices.contains(&i) {
                full.push(ValidatorId::Index(i));
            } else if in_scope && scan.is_some_and(|s| s.covers(i)) {
                // withdrawal_* never comes back into scope: no need to ask again.
                epoch.push(ValidatorId::Index(i));
            }
        }
        None => full.push(id),
    };
    for (pk, placed) in pubkeys {
        visit(placed, ValidatorId::Pubkey(*pk));
    }
    for i in indices {
        let placed = cache.get(*i).map(|k| (*i, k.status.in_scope()));
        visit(placed, ValidatorId::Index(*i));
    }
    // In place: no second copy of a million ids to deduplicate them.
    full.sort_unstable();
    full.dedup();
    epoch.sort_unstable();
    epoch.dedup();
    (full, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::BeaconValidator;
    use crate::domain::Status;

    fn pk(i: u64) -> Pubkey {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&i.to_be_bytes());
        Pubkey(b)
    }

    fn known(cache: &mut ChainCache, i: u64, s: &str) {
        cache.learn(&BeaconValidator {
            index: i,
            pubkey: pk(i),
            status: Status::parse(s),
            withdrawable_epoch: None,
        });
    }

    #[test]
    fn a_scan_asks_only_for_its_share() {
        let mut cache = ChainCache::new();
        for i in 0..8 {
            known(&mut cache, i, "active_ongoing");
        }
        known(&mut cache, 5, "withdrawal_done");
        let content = SourceContent {
            indices: (0..8).collect(),
            ..Default::default()
        };
        let refresh = Refresh {
            epoch: true,
            scan: Some(Scan {
                first: 9,
                last: 9,
                period: 4,
            }),
            ..Default::default()
        };
        let (full, scan) = lookups(&content.pubkeys, &content.indices, &cache, &refresh);
        assert!(full.is_empty());
        assert_eq!(
            scan,
            vec![ValidatorId::Index(1)],
            "9 mod 4 = 1: 1 and 5, and 5 has left for good"
        );
    }

    #[test]
    fn lookups_ask_only_for_what_is_stale() {
        let mut cache = ChainCache::new();
        known(&mut cache, 1, "active_ongoing");
        known(&mut cache, 2, "withdrawal_done");
        known(&mut cache, 3, "exited_unslashed");
        let content = SourceContent {
            pubkeys: vec![pk(1), pk(2), pk(9)],
            indices: vec![3, 4, 1],
            records: vec![],
        };

        let (full, epoch) = lookups(&content.pubkeys, &content.indices, &cache, &Refresh::all());
        assert_eq!(
            full,
            vec![
                ValidatorId::Pubkey(pk(9)),
                ValidatorId::Index(1),
                ValidatorId::Index(2),
                ValidatorId::Index(3),
                ValidatorId::Index(4)
            ],
            "each validator once, sorted"
        );
        assert!(epoch.is_empty());

        let (full, epoch) = lookups(
            &content.pubkeys,
            &content.indices,
            &cache,
            &Refresh {
                epoch: true,
                ..Default::default()
            },
        );
        assert_eq!(
            full,
            vec![ValidatorId::Pubkey(pk(9)), ValidatorId::Index(4)]
        );
        assert_eq!(
            epoch,
            vec![ValidatorId::Index(1), ValidatorId::Index(3)],
            "withdrawal_done never moves again"
        );

        let (full, epoch) = lookups(
            &content.pubkeys,
            &content.indices,
            &cache,
            &Refresh {
                indices: [3].into(),
                ..Default::default()
            },
        );
        assert_eq!(
            full,
            vec![
                ValidatorId::Pubkey(pk(9)),
                ValidatorId::Index(3),
                ValidatorId::Index(4)
            ]
        );
        assert!(epoch.is_empty());
    }

    #[test]
    fn content_lists_candidates_by_index_line_or_by_pubkey_line() {
        let content = SourceContent {
            pubkeys: vec![pk(1), pk(2)],
            indices: vec![7],
            records: vec![],
        };
        let listed = content.listed(
            &[(1, pk(1)), (5, pk(2)), (7, pk(70)), (9, pk(9))],
            &ChainCache::new(),
        );
        let mut got: Vec<_> = listed.into_iter().collect();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![1, 5, 7],
            "a pubkey line names whatever index the node reports for it"
        );
    }
}
