//! [`Live`]: the daemon's desired set, kept between passes (see the parent
//! module for the rule it keeps equal to [`super::full`]).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::{lookups, lookups_placed, Refresh};
use crate::beacon::ValidatorId;
use crate::cache::{ChainCache, Learned};
use crate::domain::{ChainId, DesiredSet, Key, Pubkey, ValidatorIndex, Want};
use crate::inputs::{Delta, Record, SourceContent};

/// From this many touched keys (and half the set), a settle rebuilds the
/// set in bulk (small in tests, so that the property test takes both ways).
const BULK: usize = if cfg!(test) { 3 } else { 4096 };

/// The daemon's desired set, kept between passes.
#[derive(Debug)]
pub struct Live {
    chain_id: ChainId,
    /// Index lines over every input (the pubkey lines are counted in the
    /// chain cache, by the inputs: [`ChainCache::lines`]).
    indices: FxHashMap<ValidatorIndex, u32>,
    /// Per record key: each distinct pubkey with its count.
    records: FxHashMap<Key, Vec<(Pubkey, u32)>>,
    desired: DesiredSet,
    /// Keys to re-evaluate, and to plan, since the last successful pass.
    touched: BTreeSet<Key>,
    /// Listed lines the cache does not know (looked up every pass).
    unresolved_pubkeys: BTreeSet<Pubkey>,
    unresolved_indices: BTreeSet<ValidatorIndex>,
    /// Listed validators the cache knows out of scope.
    excluded: BTreeSet<ValidatorIndex>,
    /// Record keys per chain (the chains whose rows keysync may unassign).
    record_chains: FxHashMap<ChainId, u32>,
}

fn bump<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, u32>, k: K, add: bool) -> u32 {
    if add {
        let n = map.entry(k).or_default();
        *n += 1;
        *n
    } else {
        match map.get_mut(&k) {
            Some(n) if *n > 1 => {
                *n -= 1;
                *n
            }
            Some(_) => {
                map.remove(&k);
                0
            }
            None => 0,
        }
    }
}

impl Live {
    pub fn new(chain_id: ChainId) -> Live {
        Live {
            indices: FxHashMap::default(),
            records: FxHashMap::default(),
            desired: DesiredSet::on(chain_id.clone()),
            chain_id,
            touched: BTreeSet::new(),
            unresolved_pubkeys: BTreeSet::new(),
            unresolved_indices: BTreeSet::new(),
            excluded: BTreeSet::new(),
            record_chains: FxHashMap::default(),
        }
    }

    /// Starts over from whole contents (every key is touched).
    pub fn rebuild(&mut self, content: &SourceContent, cache: &ChainCache) {
        let old = std::mem::take(&mut self.desired);
        *self = Live::new(self.chain_id.clone());
        self.count(content, true, cache);
        // Keys that were desired and may not be any more.
        self.touched.extend(old.iter().map(|(k, _)| k.clone()));
        self.desired = old;
    }

    /// Takes in the change of one input (its pubkey lines already counted
    /// in the cache).
    pub fn apply(&mut self, delta: &Delta, cache: &ChainCache) {
        self.count(&delta.added, true, cache);
        self.count(&delta.removed, false, cache);
    }

    /// Counts `content`'s index and record lines in (`add`) or out,
    /// touching their keys, and touches the keys of its pubkey lines.
    fn count(&mut self, content: &SourceContent, add: bool, cache: &ChainCache) {
        for pk in &content.pubkeys {
            let n = cache.lines(pk);
            match cache.index_of(pk) {
                Some(i) => {
                    self.touched.insert((i, self.chain_id.clone()));
                }
                None if n > 0 => {
                    self.unresolved_pubkeys.insert(*pk);
                }
                None => {
                    self.unresolved_pubkeys.remove(pk);
                }
            }
        }
        for i in &content.indices {
            let n = bump(&mut self.indices, *i, add);
            self.touched.insert((*i, self.chain_id.clone()));
            if cache.get(*i).is_none() {
                if n > 0 {
                    self.unresolved_indices.insert(*i);
                } else {
                    self.unresolved_indices.remove(i);
                }
            }
        }
        for r in &content.records {
            self.record(r, add);
        }
    }

    fn record(&mut self, r: &Record, add: bool) {
        let key = (r.validator_index, r.chain_id.clone());
        let was = self.records.contains_key(&key);
        let list = self.records.entry(key.clone()).or_default();
        match list.iter_mut().position(|(pk, _)| *pk == r.validator_key) {
            Some(at) if add => list[at].1 += 1,
            Some(at) if list[at].1 > 1 => list[at].1 -= 1,
            Some(at) => {
                list.swap_remove(at);
            }
            None if add => list.push((r.validator_key, 1)),
            None => {}
        }
        if list.is_empty() {
            self.records.remove(&key);
        }
        match (was, self.records.contains_key(&key)) {
            (false, true) => *self.record_chains.entry(key.1.clone()).or_default() += 1,
            (true, false) => {
                bump(&mut self.record_chains, key.1.clone(), false);
            }
            _ => {}
        }
        self.touched.insert(key);
    }

    /// The chains the records name.
    pub fn record_chains(&self) -> impl Iterator<Item = &ChainId> {
        self.record_chains.keys()
    }

    /// The chains whose registry rows may be unassigned: the configured one
    /// and every chain a record names.
    pub fn scope(&self) -> crate::plan::Scope {
        crate::plan::Scope::new(self.chain_id.clone(), self.record_chains.keys().cloned())
    }

    /// Takes in what a beacon answer changed in the cache.
    pub fn learned(&mut self, changes: &[Learned], cache: &ChainCache) {
        for c in changes {
            self.touched.insert((c.index, self.chain_id.clone()));
            if let Some(j) = c.displaced {
                self.touched.insert((j, self.chain_id.clone()));
            }
            self.unresolved_indices.remove(&c.index);
            if let Some(k) = cache.get(c.index) {
                self.unresolved_pubkeys.remove(&k.pubkey);
            }
            if let Some(old) = c.old_pubkey {
                if cache.lines(&old) > 0 && cache.index_of(&old).is_none() {
                    self.unresolved_pubkeys.insert(old);
                }
            }
        }
    }

    /// Re-evaluates the touched keys. `last_record` finds, in input order,
    /// the last record's pubkey for a key whose records disagree.
    pub fn settle(&mut self, cache: &ChainCache, last_record: impl Fn(&Key) -> Option<Pubkey>) {
        // Touching much of the set (the start, a rebuild): evaluate every
        // touched key, then build the set in bulk, in full nodes.
        let bulk = self.touched.len() >= BULK && self.touched.len() * 2 >= self.desired.len();
        let mut updates = Vec::with_capacity(if bulk { self.touched.len() } else { 0 });
        let touched = std::mem::take(&mut self.touched);
        for key in &touched {
            let want = self.want(key, cache, &last_record);
            if bulk {
                updates.push((key.clone(), want));
            } else {
                self.desired.set(key, want);
            }
        }
        self.touched = touched;
        if bulk {
            self.desired.merge_sorted(updates);
        }
    }

    /// What the set should hold for `key`, noting whether it is excluded.
    fn want(
        &mut self,
        key: &Key,
        cache: &ChainCache,
        last_record: &impl Fn(&Key) -> Option<Pubkey>,
    ) -> Option<Want> {
        let want = match self.records.get(key).map(Vec::as_slice) {
            Some([(pk, _)]) => Some(*pk),
            Some(_) => last_record(key),
            None => None,
        };
        let listed = key.1 == self.chain_id && self.listed(key.0, cache);
        let known = cache.get(key.0);
        if key.1 == self.chain_id {
            if listed && known.as_ref().is_some_and(|k| !k.status.in_scope()) {
                self.excluded.insert(key.0);
            } else {
                self.excluded.remove(&key.0);
            }
        }
        match want {
            Some(pk) => Some(Want::Pubkey(pk)),
            None => known
                .filter(|k| listed && k.status.in_scope())
                .map(|_| Want::Chain),
        }
    }

    /// Whether a pubkey or index line names validator `i`.
    fn listed(&self, i: ValidatorIndex, cache: &ChainCache) -> bool {
        self.indices.contains_key(&i)
            || cache
                .get(i)
                .is_some_and(|k| cache.lines(&k.pubkey) > 0 && cache.index_of(&k.pubkey) == Some(i))
    }

    /// Whether validator `i` is one of the operator's (listed, or a record
    /// on the configured chain).
    pub fn owns(&self, i: ValidatorIndex, cache: &ChainCache) -> bool {
        self.listed(i, cache) || self.records.contains_key(&(i, self.chain_id.clone()))
    }

    pub fn desired(&self) -> &DesiredSet {
        &self.desired
    }

    /// Keys changed since the last [`Live::clear_touched`].
    pub fn touched(&self) -> &BTreeSet<Key> {
        &self.touched
    }

    /// After a pass planned and applied every touched key.
    pub fn clear_touched(&mut self) {
        self.touched.clear();
    }

    /// Whether any input has a pubkey or index line (the beacon node's word
    /// decides part of the set).
    pub fn needs_beacon(&self, cache: &ChainCache) -> bool {
        cache.pubkey_lines() > 0 || !self.indices.is_empty()
    }

    /// Pubkey and index lines, over every input.
    pub fn lines(&self, cache: &ChainCache) -> usize {
        let by_pubkey = cache.pubkey_lines() as usize;
        by_pubkey + self.indices.values().map(|n| *n as usize).sum::<usize>()
    }

    /// What to ask the beacon node: the lines it has not resolved yet, the
    /// indices in `refresh`, and on `refresh.all`/`refresh.epoch` every line.
    pub fn lookups(
        &self,
        cache: &ChainCache,
        refresh: &Refresh,
    ) -> (Vec<ValidatorId>, Vec<ValidatorId>) {
        if refresh.all || refresh.epoch {
            let indices = self.indices.keys().chain(refresh.indices.iter());
            lookups_placed(cache.listed_validators(), indices, cache, refresh)
        } else {
            let indices = self.unresolved_indices.iter().chain(refresh.indices.iter());
            lookups(self.unresolved_pubkeys.iter(), indices, cache, refresh)
        }
    }

    /// The unknown and excluded counts, as [`super::full`] counts them (per line),
    /// with up to three unknown lines.
    pub fn counts(&self, cache: &ChainCache) -> (usize, usize, Vec<String>) {
        let count = |n: Option<&u32>| n.copied().unwrap_or(0) as usize;
        let unknown = self
            .unresolved_pubkeys
            .iter()
            .map(|pk| cache.lines(pk) as usize)
            .chain(
                self.unresolved_indices
                    .iter()
                    .map(|i| count(self.indices.get(i))),
            )
            .sum();
        let excluded = self
            .excluded
            .iter()
            .map(|i| {
                let by_pubkey = cache
                    .get(*i)
                    .filter(|k| cache.index_of(&k.pubkey) == Some(*i))
                    .map_or(0, |k| cache.lines(&k.pubkey) as usize);
                count(self.indices.get(i)) + by_pubkey
            })
            .sum();
        let sample = self
            .unresolved_pubkeys
            .iter()
            .map(|pk| pk.to_string())
            .chain(self.unresolved_indices.iter().map(|i| i.to_string()))
            .take(3)
            .collect();
        (unknown, excluded, sample)
    }
}

impl super::Listing for Live {
    fn listed(
        &self,
        candidates: &[(ValidatorIndex, Pubkey)],
        cache: &ChainCache,
    ) -> rustc_hash::FxHashSet<ValidatorIndex> {
        candidates
            .iter()
            .filter(|(i, pk)| self.indices.contains_key(i) || cache.lines(pk) > 0)
            .map(|(i, _)| *i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::BeaconValidator;
    use crate::desired::full;
    use crate::domain::Status;
    use proptest::prelude::*;

    fn pk(i: u64) -> Pubkey {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&i.to_be_bytes());
        b[47] = 1;
        Pubkey(b)
    }

    const CHAINS: [&str; 2] = ["0x1", "0x5"];

    /// A small universe: indices 0..8, pubkeys pk(0..10) (8 and 9 never on chain).
    fn content() -> impl Strategy<Value = SourceContent> {
        let record = (0u64..8, 0usize..2, 0u64..10).prop_map(|(i, c, k)| Record {
            validator_index: i,
            chain_id: ChainId::new(CHAINS[c]),
            validator_key: pk(k),
        });
        (
            prop::collection::vec((0u64..10).prop_map(pk), 0..8),
            prop::collection::vec(0u64..10, 0..6),
            prop::collection::vec(record, 0..4),
        )
            .prop_map(|(pubkeys, indices, records)| SourceContent {
                pubkeys,
                indices,
                records,
            })
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Replace input `n` with new content.
        Replace(usize, SourceContent),
        /// The node answers for index `i`: with pubkey pk(`k`) and in or out of scope.
        Learn(u64, u64, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3, content()).prop_map(|(n, c)| Step::Replace(n, c)),
            (0u64..8, 0u64..8, any::<bool>()).prop_map(|(i, k, s)| Step::Learn(i, k, s)),
        ]
    }

    fn union(inputs: &[SourceContent]) -> SourceContent {
        let mut all = SourceContent::default();
        for c in inputs {
            all.extend(c);
        }
        all
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// After any sequence of input edits and beacon answers, the
        /// incremental set, and its counts, equal the rule over whole content.
        #[test]
        fn live_equals_full(start in prop::collection::vec(content(), 3), steps in prop::collection::vec(step(), 0..12)) {
            let chain = ChainId::new("0x1");
            let mut cache = ChainCache::new();
            let mut inputs = start;
            let mut live = Live::new(chain.clone());
            // The pubkey lines are counted in the cache, as the inputs do.
            for pk in &union(&inputs).pubkeys {
                cache.count_line(pk, true);
            }
            live.rebuild(&union(&inputs), &cache);
            for s in steps {
                match s {
                    Step::Replace(n, c) => {
                        let delta = c.delta_from(&inputs[n]);
                        inputs[n] = c;
                        for pk in &delta.added.pubkeys {
                            cache.count_line(pk, true);
                        }
                        for pk in &delta.removed.pubkeys {
                            cache.count_line(pk, false);
                        }
                        live.apply(&delta, &cache);
                    }
                    Step::Learn(i, k, in_scope) => {
                        let v = BeaconValidator {
                            index: i,
                            pubkey: pk(k),
                            status: Status::parse(if in_scope { "active_ongoing" } else { "withdrawal_done" }),
                            withdrawable_epoch: None,
                        };
                        if let Some(learned) = cache.learn(&v) {
                            live.learned(&[learned], &cache);
                        }
                    }
                }
                let all = union(&inputs);
                live.settle(&cache, |key| {
                    all.records.iter().rev().find(|r| r.validator_index == key.0 && r.chain_id == key.1).map(|r| r.validator_key)
                });
                let want = full(&all, &cache, &chain);
                prop_assert_eq!(live.desired(), &want.desired);
                let (unknown, excluded, _) = live.counts(&cache);
                prop_assert_eq!((unknown, excluded), (want.unknown, want.excluded));
                // As after a successful pass: untouched keys must stay right.
                live.clear_touched();
            }
        }

        /// A delta taken from two versions rebuilds the second from the first.
        #[test]
        fn deltas_are_multiset_differences(old in content(), new in content()) {
            let d = new.delta_from(&old);
            let mut have = old.pubkeys.clone();
            for p in &d.removed.pubkeys {
                let at = have.iter().position(|x| x == p);
                prop_assert!(at.is_some());
                have.swap_remove(at.unwrap_or_default());
            }
            have.extend(d.added.pubkeys.iter().copied());
            let mut want = new.pubkeys.clone();
            have.sort();
            want.sort();
            prop_assert_eq!(have, want);
        }
    }

    #[test]
    fn an_append_is_a_delta_of_the_appended_lines() {
        let old = SourceContent {
            pubkeys: vec![pk(1), pk(2)],
            ..Default::default()
        };
        let new = SourceContent {
            pubkeys: vec![pk(1), pk(2), pk(3)],
            ..Default::default()
        };
        let d = new.delta_from(&old);
        assert_eq!(d.added.pubkeys, vec![pk(3)]);
        assert!(d.removed.is_empty());
    }
}
