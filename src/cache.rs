//! `ChainCache`: what keysync has learned from the beacon node.
//!
//! Owns pubkey ↔ index pairs (immutable once the chain assigned them, so
//! cached forever per chain), the last known status per index, and the
//! `withdrawable_epoch` of each in-scope validator whose exit was initiated
//! (the status schedule's exact checks, [`ChainCache::due`]). In memory;
//! the daemon's store persists the entries marked dirty. Never decides
//! scope: it only remembers.
//!
//! Also the daemon's one table of pubkeys ([`Keys`]): the chain's, and
//! those the input lines name (with how many lines name each), so that
//! every structure holding a pubkey holds a 4-byte id.
//!
//! Compact at a million validators: one 24-byte slot per validator in one
//! vector (the pubkey an id in [`Keys`]), found by index through a table of
//! 4-byte slot numbers and by pubkey through its id, and a status as one
//! byte.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::beacon::BeaconValidator;
use crate::domain::{Pubkey, Status, ValidatorIndex};
use crate::keys::{KeyId, Keys};

/// What is known about one validator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub pubkey: Pubkey,
    pub status: Status,
    /// Set once its exit is initiated.
    pub withdrawable_epoch: Option<u64>,
}

/// One cache entry a beacon answer changed, with what it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    pub index: ValidatorIndex,
    /// The index's previous pubkey, when the answer changed it.
    pub old_pubkey: Option<Pubkey>,
    /// Another index the answer's pubkey was mapped to before.
    pub displaced: Option<ValidatorIndex>,
}

/// One validator, as stored.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: KeyId,
    index: ValidatorIndex,
    /// `NONE` until its exit is initiated.
    withdrawable: u64,
    status: u8,
}

const NONE: u64 = u64::MAX;
/// No slot.
const NO_SLOT: u32 = u32::MAX;

/// The most distinct unknown statuses kept by name (a node sends a fixed
/// vocabulary; a node that invents more gets them lumped together).
const MAX_OTHERS: usize = 200;

#[derive(Default)]
pub struct ChainCache {
    slots: Vec<Slot>,
    // Fx: the keys come from our inputs and the beacon node, so SipHash's
    // flooding resistance buys nothing, and every pass hashes every key.
    by_index: HashTable<u32>,
    /// Every pubkey held: the slots', and the input lines'.
    keys: Keys,
    /// Per key id: the slot its pubkey names (the last index the node
    /// reported it at), or `NO_SLOT`.
    by_key: Vec<u32>,
    /// Unknown status names; their code is `Status::ALL.len()` + position.
    others: Vec<Box<str>>,
    dirty: Vec<ValidatorIndex>,
    /// (withdrawable epoch, index) of every in-scope validator whose exit
    /// was initiated.
    exiting: BTreeSet<(u64, ValidatorIndex)>,
}

impl std::fmt::Debug for ChainCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainCache")
            .field("validators", &self.slots.len())
            .field("exiting", &self.exiting.len())
            .finish_non_exhaustive()
    }
}

/// Whether a status code is in the registry scope (as [`Status::in_scope`]).
fn in_scope(code: u8) -> bool {
    !matches!(Status::ALL.get(usize::from(code)), Some(s) if !s.in_scope())
}

fn hash<T: Hash>(v: &T) -> u64 {
    FxBuildHasher.hash_one(v)
}

impl ChainCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Makes room for `n` more validators (one allocation, not doubling).
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve_exact(n);
        let slots = &self.slots;
        self.by_index
            .reserve(n, |s| hash(&slots[*s as usize].index));
        self.keys.reserve(n);
        self.by_key.reserve_exact(n);
    }

    fn slot_of(&self, index: ValidatorIndex) -> Option<u32> {
        let slots = &self.slots;
        self.by_index
            .find(hash(&index), |s| slots[*s as usize].index == index)
            .copied()
    }

    fn slot_by_pubkey(&self, pubkey: &Pubkey) -> Option<u32> {
        let id = self.keys.id(pubkey)?;
        self.by_key
            .get(id as usize)
            .copied()
            .filter(|s| *s != NO_SLOT)
    }

    pub fn index_of(&self, pubkey: &Pubkey) -> Option<ValidatorIndex> {
        self.slot_by_pubkey(pubkey)
            .map(|s| self.slots[s as usize].index)
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<Known> {
        let s = &self.slots[self.slot_of(index)? as usize];
        Some(Known {
            pubkey: *self.keys.pubkey(s.key),
            status: self.status(s.status),
            withdrawable_epoch: (s.withdrawable != NONE).then_some(s.withdrawable),
        })
    }

    fn status(&self, code: u8) -> Status {
        match Status::ALL.get(usize::from(code)) {
            Some(s) => s.clone(),
            None => Status::Other(
                self.others
                    .get(usize::from(code) - Status::ALL.len())
                    .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
            ),
        }
    }

    fn code(&mut self, status: &Status) -> u8 {
        if let Some(c) = status.code() {
            return c;
        }
        let name = status.as_str();
        let at = match self.others.iter().position(|o| &**o == name) {
            Some(at) => at,
            None if self.others.len() < MAX_OTHERS => {
                self.others.push(name.into());
                self.others.len() - 1
            }
            // Past the limit, the last one stands for every other.
            None => MAX_OTHERS - 1,
        };
        (Status::ALL.len() + at) as u8
    }

    /// Records what the node said. Returns what changed, if anything.
    pub fn learn(&mut self, v: &BeaconValidator) -> Option<Learned> {
        let withdrawable = v.withdrawable_epoch.unwrap_or(NONE);
        let code = self.code(&v.status);
        let old = self.slot_of(v.index).map(|s| self.slots[s as usize]);
        let old_pubkey = match old {
            Some(o) => {
                let pk = *self.keys.pubkey(o.key);
                if pk == v.pubkey && o.status == code && o.withdrawable == withdrawable {
                    return None;
                }
                (pk != v.pubkey).then_some(pk)
            }
            None => None,
        };
        let at = self.put(v.index, v.pubkey, code, withdrawable);
        let displaced = self.point(at);
        self.dirty.push(v.index);
        Some(Learned {
            index: v.index,
            old_pubkey,
            displaced,
        })
    }

    /// Loads an entry from the store (not marked dirty).
    pub fn restore(&mut self, index: ValidatorIndex, known: Known) {
        let code = self.code(&known.status);
        let at = self.put(
            index,
            known.pubkey,
            code,
            known.withdrawable_epoch.unwrap_or(NONE),
        );
        self.point(at);
    }

    /// Stores a validator in its slot (a new one if its index is new),
    /// keeping the exit schedule in step. Returns the slot.
    fn put(&mut self, index: ValidatorIndex, pubkey: Pubkey, status: u8, withdrawable: u64) -> u32 {
        let exiting = |s: &Slot| {
            (s.withdrawable != NONE && in_scope(s.status)).then_some((s.withdrawable, s.index))
        };
        let at = self.slot_of(index);
        let old = at.map(|at| self.slots[at as usize]);
        let key = match old {
            Some(o) if *self.keys.pubkey(o.key) == pubkey => o.key,
            Some(o) => {
                // Another pubkey at this index: the old one no longer
                // names it (if it did), and this slot lets it go.
                if self.by_key.get(o.key as usize) == at.as_ref() {
                    self.by_key[o.key as usize] = NO_SLOT;
                }
                let key = self.keys.hold(&pubkey);
                self.keys.release(o.key);
                key
            }
            None => self.keys.hold(&pubkey),
        };
        if self.by_key.len() < self.keys.capacity() {
            self.by_key.resize(self.keys.capacity(), NO_SLOT);
        }
        let new = Slot {
            key,
            index,
            withdrawable,
            status,
        };
        if let Some(e) = exiting(&new) {
            self.exiting.insert(e);
        }
        match (at, old) {
            (Some(at), Some(old)) => {
                if let Some(e) = exiting(&old) {
                    if exiting(&new) != Some(e) {
                        self.exiting.remove(&e);
                    }
                }
                self.slots[at as usize] = new;
                at
            }
            _ => {
                let at = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(new);
                let slots = &self.slots;
                self.by_index
                    .insert_unique(hash(&index), at, |s| hash(&slots[*s as usize].index));
                at
            }
        }
    }

    /// Points slot `at`'s pubkey at it. Returns the index it named before,
    /// if another.
    fn point(&mut self, at: u32) -> Option<ValidatorIndex> {
        let key = self.slots[at as usize].key as usize;
        let before = std::mem::replace(&mut self.by_key[key], at);
        let index = self.slots[at as usize].index;
        (before != NO_SLOT && before != at)
            .then(|| self.slots[before as usize].index)
            .filter(|b| *b != index)
    }

    /// Input lines naming `pk` (the daemon counts its inputs' lines here).
    pub fn lines(&self, pk: &Pubkey) -> u32 {
        self.keys.lines(pk)
    }

    /// Counts one input line naming `pk` in (`add`) or out; returns its
    /// count.
    pub fn count_line(&mut self, pk: &Pubkey, add: bool) -> u32 {
        self.keys.count_line(pk, add)
    }

    /// Every pubkey an input line names, with the validator it names on
    /// chain when the node has placed it (its index, and whether it is in
    /// the registry scope): one walk of the tables, no lookup.
    pub fn listed_validators(
        &self,
    ) -> impl Iterator<Item = (&Pubkey, Option<(ValidatorIndex, bool)>)> + '_ {
        self.keys.listed().map(|(id, pk)| {
            let placed = self
                .by_key
                .get(id as usize)
                .filter(|s| **s != NO_SLOT)
                .map(|s| {
                    let slot = &self.slots[*s as usize];
                    (slot.index, in_scope(slot.status))
                });
            (pk, placed)
        })
    }

    /// Input lines naming a pubkey, over every input.
    pub fn pubkey_lines(&self) -> u64 {
        self.keys.total_lines()
    }

    /// The id of a pubkey an input line names or a slot holds.
    pub fn key_id(&self, pk: &Pubkey) -> Option<KeyId> {
        self.keys.id(pk)
    }

    /// The pubkey of a living id (see [`ChainCache::key_id`]).
    pub fn pubkey(&self, id: KeyId) -> &Pubkey {
        self.keys.pubkey(id)
    }

    /// In-scope validators whose `withdrawable_epoch` is at or before
    /// `epoch`: due for their exact check (the node's answer then says
    /// whether they left).
    pub fn due(&self, epoch: u64) -> Vec<ValidatorIndex> {
        self.exiting
            .range(..=(epoch, ValidatorIndex::MAX))
            .map(|(_, i)| *i)
            .collect()
    }

    /// Indices changed since the last call, for persisting.
    pub fn take_dirty(&mut self) -> Vec<ValidatorIndex> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn pk(k: u8) -> Pubkey {
        let mut b = [0u8; 48];
        b[0] = k;
        b[47] = 1;
        Pubkey(b)
    }

    /// The cache as two plain maps: what the compact one must equal.
    #[derive(Default)]
    struct Model {
        by_pubkey: HashMap<Pubkey, ValidatorIndex>,
        by_index: HashMap<ValidatorIndex, Known>,
    }

    impl Model {
        fn learn(&mut self, v: &BeaconValidator) -> Option<Learned> {
            let known = Known {
                pubkey: v.pubkey,
                status: v.status.clone(),
                withdrawable_epoch: v.withdrawable_epoch,
            };
            let old_pubkey = match self.by_index.get(&v.index) {
                Some(k) if *k == known => return None,
                Some(k) => (k.pubkey != v.pubkey).then_some(k.pubkey),
                None => None,
            };
            if let Some(old) = old_pubkey {
                if self.by_pubkey.get(&old) == Some(&v.index) {
                    self.by_pubkey.remove(&old);
                }
            }
            let displaced = self
                .by_pubkey
                .insert(v.pubkey, v.index)
                .filter(|j| *j != v.index);
            self.by_index.insert(v.index, known);
            Some(Learned {
                index: v.index,
                old_pubkey,
                displaced,
            })
        }

        fn due(&self, epoch: u64) -> Vec<ValidatorIndex> {
            let mut d: Vec<(u64, ValidatorIndex)> = self
                .by_index
                .iter()
                .filter_map(|(i, k)| {
                    k.withdrawable_epoch
                        .filter(|e| *e <= epoch && k.status.in_scope())
                        .map(|e| (e, *i))
                })
                .collect();
            d.sort_unstable();
            d.into_iter().map(|(_, i)| i).collect()
        }
    }

    const NAMES: [&str; 5] = [
        "active_ongoing",
        "active_exiting",
        "withdrawal_possible",
        "withdrawal_done",
        "a_status_of_the_future",
    ];

    fn validator() -> impl Strategy<Value = BeaconValidator> {
        (0u64..12, 0u8..10, 0usize..5, prop::option::of(0u64..20)).prop_map(|(i, k, s, e)| {
            BeaconValidator {
                index: i,
                pubkey: pk(k),
                status: Status::parse(NAMES[s]),
                withdrawable_epoch: e,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any sequence of answers (pubkeys moving between indices, statuses
        /// and withdrawable epochs changing) leaves the compact cache equal
        /// to two plain maps, change for change.
        #[test]
        fn the_compact_cache_equals_plain_maps(
            answers in prop::collection::vec(validator(), 0..60),
            lines in prop::collection::vec(prop::option::of((0u8..10, any::<bool>())), 0..60),
        ) {
            let mut cache = ChainCache::new();
            let mut model = Model::default();
            let mut counted: HashMap<Pubkey, u32> = HashMap::new();
            // Input lines counted in and out between the answers share the
            // pubkeys' ids with the slots: neither may disturb the other.
            for (v, line) in answers.iter().zip(lines.iter().chain(std::iter::repeat(&None))) {
                prop_assert_eq!(cache.learn(v), model.learn(v));
                if let Some((k, add)) = line {
                    let n = counted.entry(pk(*k)).or_default();
                    *n = if *add { *n + 1 } else { n.saturating_sub(1) };
                    prop_assert_eq!(cache.count_line(&pk(*k), *add), *n);
                }
            }
            for k in 0..10 {
                prop_assert_eq!(cache.lines(&pk(k)), counted.get(&pk(k)).copied().unwrap_or(0));
            }
            for i in 0..12 {
                prop_assert_eq!(cache.get(i), model.by_index.get(&i).cloned());
            }
            for k in 0..10 {
                prop_assert_eq!(cache.index_of(&pk(k)), model.by_pubkey.get(&pk(k)).copied());
            }
            for e in 0..21 {
                prop_assert_eq!(cache.due(e), model.due(e));
            }
            prop_assert_eq!(cache.len(), model.by_index.len());

            // Restored from what was learned, the same answers again.
            let mut restored = ChainCache::new();
            for i in 0..12 {
                if let Some(k) = cache.get(i) {
                    restored.restore(i, k);
                }
            }
            for i in 0..12 {
                prop_assert_eq!(restored.get(i), cache.get(i));
            }
            prop_assert_eq!(restored.due(u64::MAX), cache.due(u64::MAX));
        }
    }

    #[test]
    fn unknown_statuses_keep_their_names_up_to_a_limit() {
        let mut cache = ChainCache::new();
        for i in 0..(MAX_OTHERS as u64 + 5) {
            cache.learn(&BeaconValidator {
                index: i,
                pubkey: pk((i % 200) as u8),
                status: Status::Other(format!("s{i}")),
                withdrawable_epoch: None,
            });
        }
        assert_eq!(cache.get(3).unwrap().status.as_str(), "s3");
        let last = cache.get(MAX_OTHERS as u64 + 4).unwrap().status;
        assert!(
            last.in_scope(),
            "an unknown status is never a reason to leave"
        );
    }
}
