//! Domain types shared by every part of keysync: BLS pubkeys, chain ids,
//! registry assignments and the desired set.
//!
//! Owns parsing and normalisation of a pubkey (the one place that decides
//! what a valid key looks like). Does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A validator index on the beacon chain.
pub type ValidatorIndex = u64;

/// A 48-byte BLS12-381 public key. Stored as bytes (48 bytes instead of a
/// 98-byte string) because the daemon holds hundreds of thousands of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pubkey(pub [u8; 48]);

/// Why a string is not a pubkey; the caller adds where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubkeyError {
    #[error("not a BLS pubkey: want 96 hex characters (48 bytes), got {0}")]
    Length(usize),
    #[error("not a BLS pubkey: {0:?} is not a hex digit")]
    NotHex(char),
}

impl FromStr for Pubkey {
    type Err = PubkeyError;

    /// Accepts 96 hex digits with or without `0x`/`0X`, any case,
    /// surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if hex.len() != 96 {
            return Err(PubkeyError::Length(hex.chars().count()));
        }
        // Table-driven and branch-free: a daemon re-reads 100,000-line files.
        let mut out = [0u8; 48];
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
            bad |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if bad & 0xf0 != 0 {
            let c = hex.chars().find(|c| !c.is_ascii_hexdigit()).unwrap_or('?');
            return Err(PubkeyError::NotHex(c));
        }
        Ok(Pubkey(out))
    }
}

/// Hex digit values; 0xff for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl fmt::Display for Pubkey {
    /// Lowercase `0x` form, the only form keysync ever sends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 98];
        buf[0] = b'0';
        buf[1] = b'x';
        for (i, b) in self.0.iter().enumerate() {
            buf[2 + 2 * i] = HEX[(b >> 4) as usize];
            buf[3 + 2 * i] = HEX[(b & 0xf) as usize];
        }
        // The buffer holds only ASCII hex digits and "0x".
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Pubkey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Pubkey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A decimal integer in plain ASCII digits only (`+5`, `4_2`, `1.0`, `-1`
/// and non-ASCII digits are not), as quoted integers and index lists use.
pub fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The registry's chain id, compared as an exact string (`"0x1"`).
/// Cheap to clone: one allocation shared by every entry of a chain.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(Arc<str>);

impl ChainId {
    pub fn new(s: &str) -> Self {
        ChainId(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The numeric chain id, from `0x`-hex or decimal, for comparing with the
    /// beacon node's `deposit_contract.chain_id`. `None` when it is neither.
    pub fn numeric(&self) -> Option<u64> {
        parse_chain_number(self.0.trim())
    }

    /// The registry's spelling of chain `n`: `0x` and lowercase hex without
    /// leading zeros (`0x1`, `0x4268`).
    pub fn canonical(n: u64) -> ChainId {
        ChainId::new(&format!("{n:#x}"))
    }

    /// Whether this is the registry's spelling of its number.
    pub fn is_canonical(&self) -> bool {
        parse_chain_number(&self.0).is_some_and(|n| *self == ChainId::canonical(n))
    }

    /// Whether `self` and `other` are two spellings of one chain number.
    pub fn same_chain_spelled_otherwise(&self, other: &ChainId) -> bool {
        self != other && self.numeric().is_some() && self.numeric() == other.numeric()
    }
}

/// A chain number written as `0x`-hex (either case) or plain decimal, with
/// nothing around it.
fn parse_chain_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => decimal(s),
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for ChainId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The registry's key: one validator on one chain.
pub type Key = (ValidatorIndex, ChainId);

/// One row of the registry as the console API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    pub validator_index: ValidatorIndex,
    pub chain_id: ChainId,
    pub active: bool,
}

/// One validator the operator wants assigned, with what registration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredValidator {
    pub validator_index: ValidatorIndex,
    pub chain_id: ChainId,
    pub validator_key: Pubkey,
}

/// What a desired entry registers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Its own pubkey (a record's).
    Pubkey(Pubkey),
    /// The pubkey the chain cache knows for its index (a listed validator
    /// on the set's chain: the chain assigned it, so it cannot differ).
    Chain,
}

/// The validators the operator owns now, keyed on (index, chain id).
///
/// Two parts, never both holding a key: entries with their own pubkey
/// (records; every entry of a set built with [`DesiredSet::from_in_order`]),
/// and the indices on the set's chain whose pubkey is the chain cache's
/// (the listed validators: 8 bytes an entry instead of 72, see
/// BENCHMARKS.md). A record wins over a listing for the same key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredSet {
    /// The chain of `listed`.
    chain: Option<ChainId>,
    own: BTreeMap<Key, Pubkey>,
    listed: BTreeSet<ValidatorIndex>,
}

impl DesiredSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose listed validators are on `chain`.
    pub fn on(chain: ChainId) -> Self {
        DesiredSet {
            chain: Some(chain),
            ..Default::default()
        }
    }

    /// Whether `key` is on the set's chain (may be listed).
    fn on_chain(&self, key: &Key) -> bool {
        self.chain.as_ref() == Some(&key.1)
    }

    /// Sets or clears the entry for `key`. A [`Want::Chain`] off the set's
    /// chain cannot be held: it clears the key (and debug builds stop).
    pub fn set(&mut self, key: &Key, want: Option<Want>) {
        match want {
            Some(Want::Pubkey(pk)) => {
                if self.on_chain(key) {
                    self.listed.remove(&key.0);
                }
                self.own.insert(key.clone(), pk);
            }
            Some(Want::Chain) if self.on_chain(key) => {
                self.own.remove(key);
                self.listed.insert(key.0);
            }
            Some(Want::Chain) | None => {
                debug_assert!(want.is_none(), "a listed validator off the set's chain");
                self.own.remove(key);
                if self.on_chain(key) {
                    self.listed.remove(&key.0);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.own.len() + self.listed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.listed.is_empty()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.want(key).is_some()
    }

    /// What `key` registers with, if it is desired.
    pub fn want(&self, key: &Key) -> Option<Want> {
        match self.own.get(key) {
            Some(pk) => Some(Want::Pubkey(*pk)),
            None => (self.on_chain(key) && self.listed.contains(&key.0)).then_some(Want::Chain),
        }
    }

    /// Entries in (index, chain id) order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, Want)> + '_ {
        let mut own = self.own.iter().peekable();
        let mut listed = self
            .chain
            .iter()
            .flat_map(|c| self.listed.iter().map(move |i| (*i, c.clone())))
            .peekable();
        std::iter::from_fn(move || {
            let take_own = match (own.peek(), listed.peek()) {
                (Some((k, _)), Some(l)) => *k < l,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if take_own {
                own.next().map(|(k, pk)| (k.clone(), Want::Pubkey(*pk)))
            } else {
                listed.next().map(|k| (k, Want::Chain))
            }
        })
    }
}

impl DesiredSet {
    /// Builds the set from entries in input order, a later entry winning
    /// for its key as with [`DesiredSet::set`]. Sorts once and builds the
    /// tree in bulk: several times faster than inserting 100,000 entries.
    pub fn from_in_order(entries: Vec<(Key, Pubkey)>) -> DesiredSet {
        DesiredSet {
            own: own_in_order(entries),
            ..Default::default()
        }
    }

    /// Builds the set from the listed validators on `chain` (any order,
    /// repeats allowed) and entries with their own pubkey in input order
    /// (as [`DesiredSet::from_in_order`]); an own entry wins over a listing.
    pub fn from_parts(
        chain: ChainId,
        mut listed: Vec<ValidatorIndex>,
        own: Vec<(Key, Pubkey)>,
    ) -> DesiredSet {
        let own = own_in_order(own);
        listed.sort_unstable();
        listed.dedup();
        listed.retain(|i| !own.contains_key(&(*i, chain.clone())));
        DesiredSet {
            // Sorted: built in bulk, in full nodes.
            listed: listed.into_iter().collect(),
            own,
            chain: Some(chain),
        }
    }

    /// Applies `updates` (sorted by key, each key once; `None` clears it)
    /// and rebuilds both parts in bulk, in full nodes: for changes to a
    /// large part of the set (the daemon's start), where setting entries
    /// one by one would leave every node half empty.
    pub fn merge_sorted(&mut self, updates: Vec<(Key, Option<Want>)>) {
        let old_own = std::mem::take(&mut self.own);
        let old_listed = std::mem::take(&mut self.listed);
        let mut own: Vec<(Key, Pubkey)> = Vec::with_capacity(old_own.len());
        let mut listed: Vec<ValidatorIndex> =
            Vec::with_capacity(old_listed.len().max(updates.len()));
        let mut old_own = old_own.into_iter().peekable();
        let mut old_listed = old_listed.into_iter().peekable();
        for (key, want) in updates {
            while let Some(kept) = old_own.next_if(|(k, _)| *k < key) {
                own.push(kept);
            }
            old_own.next_if(|(k, _)| *k == key);
            let on_chain = self.on_chain(&key);
            if on_chain {
                while let Some(kept) = old_listed.next_if(|i| *i < key.0) {
                    listed.push(kept);
                }
                old_listed.next_if(|i| *i == key.0);
            }
            match want {
                Some(Want::Pubkey(pk)) => own.push((key, pk)),
                Some(Want::Chain) if on_chain => listed.push(key.0),
                Some(Want::Chain) => debug_assert!(false, "a listed validator off the set's chain"),
                None => {}
            }
        }
        own.extend(old_own);
        listed.extend(old_listed);
        self.own = own.into_iter().collect();
        self.listed = listed.into_iter().collect();
    }
}

/// The entries in input order as a map, a later entry winning for its key.
fn own_in_order(mut entries: Vec<(Key, Pubkey)>) -> BTreeMap<Key, Pubkey> {
    // Stable: equal keys stay in input order, so the last one is the winner.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // In place (`later` is removed, its value kept): no second copy.
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = later.1;
        }
        same
    });
    // `collect` builds the tree in bulk from the sorted entries, in full
    // nodes (reusing the vector: no copy, and the sort finds it sorted).
    // Ascending inserts would leave every node half empty: 132 against 73
    // bytes an entry.
    entries.into_iter().collect()
}

impl FromIterator<DesiredValidator> for DesiredSet {
    fn from_iter<I: IntoIterator<Item = DesiredValidator>>(iter: I) -> Self {
        DesiredSet::from_in_order(
            iter.into_iter()
                .map(|v| ((v.validator_index, v.chain_id), v.validator_key))
                .collect(),
        )
    }
}

/// A beacon validator status, typed once at the edge. Unknown future
/// statuses are kept as `Other` and count as owned (only `withdrawal_*`
/// leaves the registry scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    PendingInitialized,
    PendingQueued,
    ActiveOngoing,
    ActiveExiting,
    ActiveSlashed,
    ExitedUnslashed,
    ExitedSlashed,
    WithdrawalPossible,
    WithdrawalDone,
    Other(String),
}

impl Status {
    /// The Beacon API's statuses. Their order is their one-byte code in
    /// the chain cache and in the store: fixed for good (append only).
    pub const ALL: [Status; 9] = [
        Status::PendingInitialized,
        Status::PendingQueued,
        Status::ActiveOngoing,
        Status::ActiveExiting,
        Status::ActiveSlashed,
        Status::ExitedUnslashed,
        Status::ExitedSlashed,
        Status::WithdrawalPossible,
        Status::WithdrawalDone,
    ];

    /// Its code in [`Status::ALL`], if it is one of the API's.
    pub fn code(&self) -> Option<u8> {
        Status::ALL.iter().position(|s| s == self).map(|c| c as u8)
    }

    pub fn parse(s: &str) -> Status {
        match s {
            "pending_initialized" => Status::PendingInitialized,
            "pending_queued" => Status::PendingQueued,
            "active_ongoing" => Status::ActiveOngoing,
            "active_exiting" => Status::ActiveExiting,
            "active_slashed" => Status::ActiveSlashed,
            "exited_unslashed" => Status::ExitedUnslashed,
            "exited_slashed" => Status::ExitedSlashed,
            "withdrawal_possible" => Status::WithdrawalPossible,
            "withdrawal_done" => Status::WithdrawalDone,
            other => Status::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Status::PendingInitialized => "pending_initialized",
            Status::PendingQueued => "pending_queued",
            Status::ActiveOngoing => "active_ongoing",
            Status::ActiveExiting => "active_exiting",
            Status::ActiveSlashed => "active_slashed",
            Status::ExitedUnslashed => "exited_unslashed",
            Status::ExitedSlashed => "exited_slashed",
            Status::WithdrawalPossible => "withdrawal_possible",
            Status::WithdrawalDone => "withdrawal_done",
            Status::Other(s) => s,
        }
    }

    /// Whether the operator still owns a validator in this status for the
    /// registry: every status except the two `withdrawal_*` ones.
    pub fn in_scope(&self) -> bool {
        !matches!(self, Status::WithdrawalPossible | Status::WithdrawalDone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

    #[test]
    fn pubkey_normalises_prefix_and_case() {
        let a: Pubkey = PK.parse().unwrap();
        let b: Pubkey = format!("0X{}", PK.to_uppercase()).parse().unwrap();
        let c: Pubkey = format!("  0x{PK}\t").parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), format!("0x{PK}"));
    }

    #[test]
    fn pubkey_rejects_wrong_length_and_non_hex() {
        assert_eq!("0xabc".parse::<Pubkey>(), Err(PubkeyError::Length(3)));
        let bad = format!("0x{}g", &PK[..95]);
        assert_eq!(bad.parse::<Pubkey>(), Err(PubkeyError::NotHex('g')));
        // 96 bytes, but one character is two of them.
        let wide = format!("é{}", &PK[..94]);
        assert_eq!(wide.parse::<Pubkey>(), Err(PubkeyError::NotHex('é')));
    }

    proptest::proptest! {
        #[test]
        fn bulk_building_equals_inserting_in_order(entries in proptest::collection::vec((0u64..20, proptest::bool::ANY, 0u8..4), 0..60)) {
            let entries: Vec<(Key, Pubkey)> = entries
                .into_iter()
                .map(|(i, c, k)| ((i, ChainId::new(if c { "0x1" } else { "0x5" })), Pubkey([k; 48])))
                .collect();
            let mut inserted = DesiredSet::new();
            for (k, v) in &entries {
                inserted.set(k, Some(Want::Pubkey(*v)));
            }
            proptest::prop_assert_eq!(DesiredSet::from_in_order(entries), inserted);
        }

        /// Listed entries (on 0x1) and own entries (on 0x1 and 0x5), built
        /// in bulk, merged in bulk or set one by one: the same set, in key
        /// order, a record winning over a listing.
        #[test]
        fn a_bulk_merge_equals_setting_one_by_one(
            listed in proptest::collection::vec(0u64..20, 0..30),
            own in proptest::collection::vec((0u64..20, proptest::bool::ANY, 0u8..4), 0..20),
            updates in proptest::collection::btree_map((0u64..24, proptest::bool::ANY), proptest::option::of(0u8..5), 0..30),
        ) {
            let chain = ChainId::new("0x1");
            let key = |i: u64, c: bool| (i, ChainId::new(if c { "0x1" } else { "0x5" }));
            let own: Vec<(Key, Pubkey)> = own.into_iter().map(|(i, c, k)| (key(i, c), Pubkey([k; 48]))).collect();
            let mut merged = DesiredSet::from_parts(chain.clone(), listed.clone(), own.clone());
            let mut one_by_one = DesiredSet::on(chain.clone());
            for i in &listed {
                one_by_one.set(&(*i, chain.clone()), Some(Want::Chain));
            }
            for (k, pk) in &own {
                one_by_one.set(k, Some(Want::Pubkey(*pk)));
            }
            proptest::prop_assert_eq!(&merged, &one_by_one);
            // 4 is "listed" (only on 0x1; on 0x5 it clears).
            let mut updates: Vec<(Key, Option<Want>)> = updates
                .into_iter()
                .map(|((i, c), k)| (key(i, c), k.and_then(|k| match k {
                    4 if c => Some(Want::Chain),
                    4 => None,
                    k => Some(Want::Pubkey(Pubkey([k; 48]))),
                })))
                .collect();
            updates.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in &updates {
                one_by_one.set(k, *v);
            }
            merged.merge_sorted(updates);
            proptest::prop_assert_eq!(&merged, &one_by_one);
            let keys: Vec<Key> = merged.iter().map(|(k, _)| k).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            proptest::prop_assert_eq!(&keys, &sorted);
            proptest::prop_assert_eq!(keys.len(), merged.len());
            for (k, w) in merged.iter() {
                proptest::prop_assert_eq!(merged.want(&k), Some(w));
            }
        }

        #[test]
        fn pubkey_round_trips_and_takes_exactly_the_hex_digits(bytes in proptest::collection::vec(proptest::num::u8::ANY, 48), at in 0usize..96, c in proptest::char::range('!', '~')) {
            let mut b = [0u8; 48];
            b.copy_from_slice(&bytes);
            let text = Pubkey(b).to_string();
            proptest::prop_assert_eq!(text.parse::<Pubkey>(), Ok(Pubkey(b)));
            proptest::prop_assert_eq!(text.to_uppercase().replacen("0X", "0x", 1).parse::<Pubkey>(), Ok(Pubkey(b)));
            // Any one character replaced by a non-hex one (of one byte, to keep the length) is refused.
            if !c.is_ascii_hexdigit() {
                let mut t = text.into_bytes();
                t[2 + at] = c as u8;
                let t = String::from_utf8(t).unwrap_or_default();
                proptest::prop_assert_eq!(t.parse::<Pubkey>(), Err(PubkeyError::NotHex(c)));
            }
        }
    }

    #[test]
    fn decimal_is_plain_ascii_digits_only() {
        assert_eq!(decimal("0042"), Some(42));
        for bad in [
            "",
            "+5",
            "-1",
            "4_2",
            "1.0",
            "٣",
            " 1",
            "18446744073709551616",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chain_id_numeric_accepts_hex_and_decimal() {
        assert_eq!(ChainId::new("0x1").numeric(), Some(1));
        assert_eq!(ChainId::new("0x4268").numeric(), Some(17000));
        assert_eq!(ChainId::new("5").numeric(), Some(5));
        assert_eq!(ChainId::new("mainnet").numeric(), None);
        assert_eq!(ChainId::new("0x").numeric(), None);
        assert_eq!(ChainId::new("0x+1").numeric(), None);
        assert_eq!(ChainId::canonical(1).as_str(), "0x1");
        assert_eq!(ChainId::canonical(560_048).as_str(), "0x88bb0");
        for other in ["1", "0x01", "0X1", " 0x1"] {
            assert!(!ChainId::new(other).is_canonical(), "{other}");
            assert!(
                ChainId::new(other).same_chain_spelled_otherwise(&ChainId::new("0x1")),
                "{other}"
            );
        }
        assert!(ChainId::new("0x4268").is_canonical());
        assert!(!ChainId::new("0x1").same_chain_spelled_otherwise(&ChainId::new("0x1")));
        assert!(!ChainId::new("mainnet").same_chain_spelled_otherwise(&ChainId::new("0x1")));
    }

    #[test]
    fn only_withdrawal_statuses_leave_scope() {
        for s in [
            "pending_initialized",
            "pending_queued",
            "active_ongoing",
            "active_exiting",
            "active_slashed",
            "exited_unslashed",
            "exited_slashed",
            "some_future_status",
        ] {
            assert!(Status::parse(s).in_scope(), "{s}");
            assert_eq!(Status::parse(s).as_str(), s);
        }
        assert!(!Status::parse("withdrawal_possible").in_scope());
        assert!(!Status::parse("withdrawal_done").in_scope());
    }

    #[test]
    fn later_insert_wins_for_the_same_key() {
        let k1: Pubkey = PK.parse().unwrap();
        let mut k2 = k1;
        k2.0[0] ^= 1;
        let c = ChainId::new("0x1");
        let set: DesiredSet = [
            DesiredValidator {
                validator_index: 7,
                chain_id: c.clone(),
                validator_key: k1,
            },
            DesiredValidator {
                validator_index: 7,
                chain_id: c.clone(),
                validator_key: k2,
            },
        ]
        .into_iter()
        .collect();
        assert_eq!(set.len(), 1);
        assert_eq!(set.want(&(7, c)), Some(Want::Pubkey(k2)));
    }
}
