//! [`Keys`]: every pubkey the daemon holds, once, under a 4-byte id.
//!
//! Owns the pubkey bytes that the chain cache's slots, the input lines and
//! the inputs' last good contents refer to, and how many input lines name
//! each pubkey. At 1,000,000 validators that is one copy of 46 MiB where
//! there were three (cache, line counts, contents; see BENCHMARKS.md). An
//! id lives while a cache slot holds it or a line names it; then it is
//! freed and reused. An id never changes its pubkey while it lives, so a
//! content kept as ids reads back exactly.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::domain::Pubkey;

/// A pubkey's id in [`Keys`].
pub type KeyId = u32;

#[derive(Default)]
pub struct Keys {
    pubkeys: Vec<Pubkey>,
    // Fx: the keys come from our inputs and the beacon node (see cache.rs).
    table: HashTable<KeyId>,
    /// Per id: the chain cache slots holding it.
    held: Vec<u32>,
    /// Per id: the input lines naming it.
    lines: Vec<u32>,
    free: Vec<KeyId>,
    /// Input lines over every id.
    total_lines: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("ids", &self.pubkeys.len())
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

fn hash(pk: &Pubkey) -> u64 {
    FxBuildHasher.hash_one(pk)
}

impl Keys {
    /// Makes room for `n` more pubkeys (exactly: no doubling).
    pub fn reserve(&mut self, n: usize) {
        let n = n.saturating_sub(self.free.len());
        self.pubkeys.reserve_exact(n);
        self.held.reserve_exact(n);
        self.lines.reserve_exact(n);
        let pubkeys = &self.pubkeys;
        self.table.reserve(n, |id| hash(&pubkeys[*id as usize]));
    }

    /// The id of `pk`, if it lives.
    pub fn id(&self, pk: &Pubkey) -> Option<KeyId> {
        let pubkeys = &self.pubkeys;
        self.table
            .find(hash(pk), |id| pubkeys[*id as usize] == *pk)
            .copied()
    }

    /// The pubkey of a living id.
    pub fn pubkey(&self, id: KeyId) -> &Pubkey {
        &self.pubkeys[id as usize]
    }

    /// How many ids there can be now (living or free): the length of a
    /// table indexed by id.
    pub fn capacity(&self) -> usize {
        self.pubkeys.len()
    }

    /// The id of `pk`, made if new (then neither held nor named: the caller
    /// holds it or counts a line at once).
    fn intern(&mut self, pk: &Pubkey) -> KeyId {
        if let Some(id) = self.id(pk) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.pubkeys[id as usize] = *pk;
                id
            }
            None => {
                self.pubkeys.push(*pk);
                self.held.push(0);
                self.lines.push(0);
                KeyId::try_from(self.pubkeys.len() - 1).unwrap_or(KeyId::MAX)
            }
        };
        let pubkeys = &self.pubkeys;
        self.table
            .insert_unique(hash(pk), id, |id| hash(&pubkeys[*id as usize]));
        id
    }

    /// A cache slot takes `pk`: its id.
    pub fn hold(&mut self, pk: &Pubkey) -> KeyId {
        let id = self.intern(pk);
        self.held[id as usize] += 1;
        id
    }

    /// A cache slot lets `id` go.
    pub fn release(&mut self, id: KeyId) {
        let held = &mut self.held[id as usize];
        *held = held.saturating_sub(1);
        self.collect(id);
    }

    /// Counts one input line naming `pk` in (`add`) or out; returns its
    /// count.
    pub fn count_line(&mut self, pk: &Pubkey, add: bool) -> u32 {
        if add {
            let id = self.intern(pk);
            let n = &mut self.lines[id as usize];
            *n = n.saturating_add(1);
            self.total_lines += 1;
            *n
        } else {
            let Some(id) = self.id(pk) else { return 0 };
            let n = &mut self.lines[id as usize];
            if *n == 0 {
                return 0;
            }
            *n -= 1;
            let left = *n;
            self.total_lines -= 1;
            self.collect(id);
            left
        }
    }

    /// Input lines naming `pk`.
    pub fn lines(&self, pk: &Pubkey) -> u32 {
        self.id(pk).map_or(0, |id| self.lines[id as usize])
    }

    /// Input lines over every pubkey.
    pub fn total_lines(&self) -> u64 {
        self.total_lines
    }

    /// Every pubkey an input line names, with its id.
    pub fn listed(&self) -> impl Iterator<Item = (KeyId, &Pubkey)> + '_ {
        self.lines
            .iter()
            .zip(&self.pubkeys)
            .enumerate()
            .filter(|(_, (n, _))| **n > 0)
            .map(|(id, (_, pk))| (id as KeyId, pk))
    }

    /// Frees `id` once nothing holds or names it.
    fn collect(&mut self, id: KeyId) {
        let at = id as usize;
        if self.held[at] > 0 || self.lines[at] > 0 {
            return;
        }
        if let Ok(e) = self.table.find_entry(hash(&self.pubkeys[at]), |i| *i == id) {
            e.remove();
            self.free.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Step {
        Hold(u8),
        Release(u8),
        Line(u8, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..8).prop_map(Step::Hold),
            (0u8..8).prop_map(Step::Release),
            (0u8..8, any::<bool>()).prop_map(|(k, a)| Step::Line(k, a)),
        ]
    }

    proptest! {
        /// Any sequence of holds, releases and lines leaves the same
        /// counts as plain maps; an id keeps its pubkey while it lives, and
        /// ids are reused once free (never more ids than pubkeys alive at
        /// once).
        #[test]
        fn keys_equal_plain_maps(steps in prop::collection::vec(step(), 0..200)) {
            let mut keys = Keys::default();
            let mut held: HashMap<u8, (KeyId, u32)> = HashMap::new();
            let mut lines: HashMap<u8, u32> = HashMap::new();
            let pk = |k: u8| Pubkey([k; 48]);
            for s in steps {
                match s {
                    Step::Hold(k) => {
                        let id = keys.hold(&pk(k));
                        let e = held.entry(k).or_insert((id, 0));
                        e.1 += 1;
                    }
                    Step::Release(k) => {
                        if let Some(e) = held.get_mut(&k) {
                            keys.release(e.0);
                            e.1 -= 1;
                            if e.1 == 0 {
                                held.remove(&k);
                            }
                        }
                    }
                    Step::Line(k, add) => {
                        let want = match (lines.get(&k).copied().unwrap_or(0), add) {
                            (n, true) => n + 1,
                            (0, false) => 0,
                            (n, false) => n - 1,
                        };
                        if want == 0 { lines.remove(&k); } else { lines.insert(k, want); }
                        prop_assert_eq!(keys.count_line(&pk(k), add), want);
                    }
                }
                for k in 0u8..8 {
                    let alive = held.contains_key(&k) || lines.contains_key(&k);
                    prop_assert_eq!(keys.id(&pk(k)).is_some(), alive);
                    if let Some((id, _)) = held.get(&k) {
                        prop_assert_eq!(keys.id(&pk(k)), Some(*id));
                        prop_assert_eq!(keys.pubkey(*id), &pk(k));
                    }
                    prop_assert_eq!(keys.lines(&pk(k)), lines.get(&k).copied().unwrap_or(0));
                }
                prop_assert!(keys.capacity() <= 8);
                let total: u32 = lines.values().sum();
                prop_assert_eq!(keys.total_lines(), u64::from(total));
                let mut listed: Vec<Pubkey> = keys.listed().map(|(_, pk)| *pk).collect();
                listed.sort();
                let mut want: Vec<Pubkey> = lines.keys().map(|k| pk(*k)).collect();
                want.sort();
                prop_assert_eq!(listed, want);
            }
        }
    }
}
