//! [`PubkeyCounts`]: how many input lines name each pubkey, kept compact.
//!
//! Owns one vector of (pubkey, count) and a table of 4-byte positions into
//! it: 62 MiB at 1,000,000 pubkeys, where a map keyed by the pubkey itself
//! takes 111 (a 48-byte key per bucket, twice as many buckets as keys).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::domain::Pubkey;

#[derive(Default)]
pub struct PubkeyCounts {
    entries: Vec<(Pubkey, u32)>,
    table: HashTable<u32>,
}

impl std::fmt::Debug for PubkeyCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubkeyCounts")
            .field("pubkeys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn hash(pk: &Pubkey) -> u64 {
    FxBuildHasher.hash_one(pk)
}

impl PubkeyCounts {
    /// Makes room for `n` more pubkeys (exactly: no doubling).
    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve_exact(n);
        let entries = &self.entries;
        self.table.reserve(n, |at| hash(&entries[*at as usize].0));
    }

    fn find(&self, pk: &Pubkey) -> Option<u32> {
        let entries = &self.entries;
        self.table
            .find(hash(pk), |at| entries[*at as usize].0 == *pk)
            .copied()
    }

    /// Lines naming `pk`.
    pub fn get(&self, pk: &Pubkey) -> u32 {
        self.find(pk).map_or(0, |at| self.entries[at as usize].1)
    }

    pub fn contains(&self, pk: &Pubkey) -> bool {
        self.find(pk).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts one line naming `pk` in (`add`) or out; returns its count.
    pub fn bump(&mut self, pk: Pubkey, add: bool) -> u32 {
        match (self.find(&pk), add) {
            (Some(at), true) => {
                let n = &mut self.entries[at as usize].1;
                *n = n.saturating_add(1);
                *n
            }
            (Some(at), false) if self.entries[at as usize].1 > 1 => {
                let n = &mut self.entries[at as usize].1;
                *n -= 1;
                *n
            }
            (Some(at), false) => {
                self.remove(at);
                0
            }
            (None, true) => {
                let at = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
                self.entries.push((pk, 1));
                let entries = &self.entries;
                self.table
                    .insert_unique(hash(&pk), at, |a| hash(&entries[*a as usize].0));
                1
            }
            (None, false) => 0,
        }
    }

    /// Drops entry `at`; the last entry moves into its place.
    fn remove(&mut self, at: u32) {
        let pk = self.entries[at as usize].0;
        if let Ok(e) = self.table.find_entry(hash(&pk), |a| *a == at) {
            e.remove();
        }
        let last = (self.entries.len() - 1) as u32;
        self.entries.swap_remove(at as usize);
        if at != last {
            let moved = self.entries[at as usize].0;
            if let Some(a) = self.table.find_mut(hash(&moved), |a| *a == last) {
                *a = at;
            }
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &Pubkey> {
        self.entries.iter().map(|(pk, _)| pk)
    }

    pub fn counts(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.iter().map(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Any sequence of lines counted in and out leaves the same counts
        /// as a plain map.
        #[test]
        fn counts_equal_a_plain_map(steps in prop::collection::vec((0u8..12, any::<bool>()), 0..200)) {
            let mut counts = PubkeyCounts::default();
            let mut model: HashMap<Pubkey, u32> = HashMap::new();
            for (k, add) in steps {
                let pk = Pubkey([k; 48]);
                let want = if add {
                    *model.entry(pk).or_default() += 1;
                    model[&pk]
                } else {
                    match model.get_mut(&pk) {
                        Some(n) if *n > 1 => { *n -= 1; *n }
                        Some(_) => { model.remove(&pk); 0 }
                        None => 0,
                    }
                };
                prop_assert_eq!(counts.bump(pk, add), want);
                for j in 0u8..12 {
                    let pk = Pubkey([j; 48]);
                    prop_assert_eq!(counts.get(&pk), model.get(&pk).copied().unwrap_or(0));
                }
            }
            let mut keys: Vec<Pubkey> = counts.keys().copied().collect();
            keys.sort();
            let mut want: Vec<Pubkey> = model.keys().copied().collect();
            want.sort();
            prop_assert_eq!(keys, want);
        }
    }
}
