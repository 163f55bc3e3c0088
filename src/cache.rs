//! `ChainCache`: what keysync has learned from the beacon node.
//!
//! Owns pubkey ↔ index pairs (immutable once the chain assigned them, so
//! cached forever per chain), the last known status per index, and the
//! `withdrawable_epoch` of each in-scope validator whose exit was initiated
//! (the status schedule's exact checks, [`ChainCache::due`]). In memory;
//! the daemon's store persists the entries marked dirty. Never decides
//! scope: it only remembers.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::beacon::BeaconValidator;
use crate::domain::{Pubkey, Status, ValidatorIndex};

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

#[derive(Debug, Default)]
pub struct ChainCache {
    // Fx: the keys come from our inputs and the beacon node, so SipHash's
    // flooding resistance buys nothing, and every pass hashes every key.
    by_pubkey: FxHashMap<Pubkey, ValidatorIndex>,
    by_index: FxHashMap<ValidatorIndex, Known>,
    dirty: Vec<ValidatorIndex>,
    /// (withdrawable epoch, index) of every in-scope validator whose exit
    /// was initiated.
    exiting: BTreeSet<(u64, ValidatorIndex)>,
}

impl ChainCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Makes room for `n` more validators (one allocation, not doubling).
    pub fn reserve(&mut self, n: usize) {
        self.by_pubkey.reserve(n);
        self.by_index.reserve(n);
    }

    pub fn index_of(&self, pubkey: &Pubkey) -> Option<ValidatorIndex> {
        self.by_pubkey.get(pubkey).copied()
    }

    pub fn get(&self, index: ValidatorIndex) -> Option<&Known> {
        self.by_index.get(&index)
    }

    /// Records what the node said. Returns what changed, if anything.
    pub fn learn(&mut self, v: &BeaconValidator) -> Option<Learned> {
        let old_pubkey = match self.by_index.get(&v.index) {
            Some(k)
                if k.pubkey == v.pubkey
                    && k.status == v.status
                    && k.withdrawable_epoch == v.withdrawable_epoch =>
            {
                return None
            }
            Some(k) => (k.pubkey != v.pubkey).then_some(k.pubkey),
            None => None,
        };
        // Forget the old pubkey only if it still names this index.
        if let Some(old) = old_pubkey {
            if self.by_pubkey.get(&old) == Some(&v.index) {
                self.by_pubkey.remove(&old);
            }
        }
        let displaced = self
            .by_pubkey
            .insert(v.pubkey, v.index)
            .filter(|j| *j != v.index);
        self.put(
            v.index,
            Known {
                pubkey: v.pubkey,
                status: v.status.clone(),
                withdrawable_epoch: v.withdrawable_epoch,
            },
        );
        self.dirty.push(v.index);
        Some(Learned {
            index: v.index,
            old_pubkey,
            displaced,
        })
    }

    /// Loads an entry from the store (not marked dirty).
    pub fn restore(&mut self, index: ValidatorIndex, known: Known) {
        self.by_pubkey.insert(known.pubkey, index);
        self.put(index, known);
    }

    /// Stores `known` for `index`, keeping the exit schedule in step.
    fn put(&mut self, index: ValidatorIndex, known: Known) {
        let exiting = |k: &Known| {
            k.withdrawable_epoch
                .filter(|_| k.status.in_scope())
                .map(|e| (e, index))
        };
        if let Some(old) = self.by_index.get(&index).and_then(exiting) {
            self.exiting.remove(&old);
        }
        if let Some(new) = exiting(&known) {
            self.exiting.insert(new);
        }
        self.by_index.insert(index, known);
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

    /// In-scope validators whose exit was initiated.
    pub fn exiting(&self) -> usize {
        self.exiting.len()
    }

    /// Indices changed since the last call, for persisting.
    pub fn take_dirty(&mut self) -> Vec<ValidatorIndex> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        d
    }
}
