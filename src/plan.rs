//! The pure core: desired set × registry snapshot → [`Plan`].
//!
//! Owns the rule for what must change. No I/O, no clocks, no logging; every
//! command (one-shot and daemon) plans through [`plan`]. Tested exhaustively,
//! with property tests for its invariants: idempotent, independent of input
//! order, never unassigns a desired validator nor a row outside its
//! [`Scope`], inactive rows handled.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{
    Assignment, ChainId, DesiredSet, DesiredValidator, Key, Pubkey, ValidatorIndex, Want,
};

/// The chains whose registry rows keysync may unassign: the configured one
/// and every chain a records file names. A row of any other chain is
/// someone else's: never unassigned, only reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    chains: BTreeSet<ChainId>,
}

impl Scope {
    pub fn new(configured: ChainId, records: impl IntoIterator<Item = ChainId>) -> Scope {
        let mut chains: BTreeSet<ChainId> = records.into_iter().collect();
        chains.insert(configured);
        Scope { chains }
    }

    pub fn contains(&self, chain: &ChainId) -> bool {
        self.chains.contains(chain)
    }
}

/// The registry as last listed (plus keysync's own writes since, in the
/// daemon): key → `active`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySnapshot {
    rows: BTreeMap<Key, bool>,
}

impl RegistrySnapshot {
    pub fn from_rows(rows: impl IntoIterator<Item = Assignment>) -> Self {
        let mut rows: Vec<(Key, bool)> = rows
            .into_iter()
            .map(|a| ((a.validator_index, a.chain_id), a.active))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Duplicate rows for one key: an active one wins.
        rows.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            kept.1 |= same && later.1;
            same
        });
        // Built in bulk, in full nodes (a row at a time leaves them half
        // empty).
        RegistrySnapshot {
            rows: rows.into_iter().collect(),
        }
    }

    /// Keys currently assigned (active rows only).
    pub fn active(&self) -> impl Iterator<Item = &Key> {
        self.rows.iter().filter(|(_, a)| **a).map(|(k, _)| k)
    }

    /// Rows listed, active or not.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn active_count(&self) -> usize {
        self.rows.values().filter(|a| **a).count()
    }

    pub fn is_active(&self, key: &Key) -> bool {
        self.rows.get(key).copied().unwrap_or(false)
    }

    /// Records a successful assign.
    pub fn mark_assigned(&mut self, key: Key) {
        self.rows.insert(key, true);
    }

    /// Records a successful unassign.
    pub fn mark_unassigned(&mut self, key: &Key) {
        self.rows.remove(key);
    }

    /// Active rows outside `scope`: how many, and up to `sample` of them.
    pub fn outside(&self, scope: &Scope, sample: usize) -> (usize, Vec<Key>) {
        let mut n = 0;
        let mut keys = Vec::new();
        for k in self.active().filter(|k| !scope.contains(&k.1)) {
            n += 1;
            if keys.len() < sample {
                keys.push(k.clone());
            }
        }
        (n, keys)
    }

    /// The distinct chain ids of the rows, in order.
    pub fn chains(&self) -> BTreeSet<ChainId> {
        let mut out = BTreeSet::new();
        let mut last: Option<&ChainId> = None;
        for (_, c) in self.rows.keys() {
            if last != Some(c) {
                out.insert(c.clone());
                last = Some(c);
            }
        }
        out
    }

    pub fn rows(&self) -> impl Iterator<Item = Assignment> + '_ {
        self.rows.iter().map(|((i, c), a)| Assignment {
            validator_index: *i,
            chain_id: c.clone(),
            active: *a,
        })
    }
}

/// What must change to make the registry equal the desired set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys to register before assigning: exactly the ones in `to_assign`
    /// (registration is idempotent server-side, so re-sending is harmless).
    pub to_register: Vec<DesiredValidator>,
    /// Sorted by (index, chain id).
    pub to_assign: Vec<Key>,
    /// Sorted by (index, chain id).
    pub to_unassign: Vec<Key>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.to_assign.is_empty() && self.to_unassign.is_empty()
    }
}

/// The chain cache's pubkey for an index: what a [`Want::Chain`] entry
/// registers with.
pub type PubkeyOf<'a> = &'a dyn Fn(ValidatorIndex) -> Option<Pubkey>;

/// Computes the delta that converges the registry to `desired`.
///
/// Only active rows count as present: a desired validator with an inactive
/// row is registered and assigned again; an undesired inactive row needs no
/// unassign. A row outside `scope` is never unassigned.
pub fn plan(
    desired: &DesiredSet,
    snapshot: &RegistrySnapshot,
    scope: &Scope,
    pubkey_of: PubkeyOf,
) -> Plan {
    let mut out = Plan::default();
    for (key, want) in desired.iter() {
        let active = snapshot.is_active(&key);
        decide(&mut out, &key, Some(want), active, scope, pubkey_of);
    }
    out.to_unassign = snapshot
        .active()
        .filter(|key| scope.contains(&key.1) && !desired.contains(key))
        .cloned()
        .collect();
    out
}

/// The same rule as [`plan`] over `keys` only (sorted): the daemon's plan
/// when the registry equalled the desired set everywhere else.
pub fn plan_for<'a>(
    desired: &DesiredSet,
    snapshot: &RegistrySnapshot,
    keys: impl IntoIterator<Item = &'a Key>,
    scope: &Scope,
    pubkey_of: PubkeyOf,
) -> Plan {
    let mut out = Plan::default();
    for key in keys {
        decide(
            &mut out,
            key,
            desired.want(key),
            snapshot.is_active(key),
            scope,
            pubkey_of,
        );
    }
    out
}

/// The rule for one key. A listed validator whose pubkey the chain cache
/// does not know (it always does: it was listed through it) is neither
/// registered nor unassigned.
fn decide(
    out: &mut Plan,
    key: &Key,
    want: Option<Want>,
    active: bool,
    scope: &Scope,
    pubkey_of: PubkeyOf,
) {
    let pubkey = |w: Want| match w {
        Want::Pubkey(pk) => Some(pk),
        Want::Chain => pubkey_of(key.0),
    };
    match (want, active) {
        (None, true) if !scope.contains(&key.1) => {}
        (Some(w), false) => {
            let Some(pubkey) = pubkey(w) else { return };
            out.to_register.push(DesiredValidator {
                validator_index: key.0,
                chain_id: key.1.clone(),
                validator_key: pubkey,
            });
            out.to_assign.push(key.clone());
        }
        (None, true) => out.to_unassign.push(key.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChainId;
    use proptest::prelude::*;

    fn pk(i: u64) -> Pubkey {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&i.to_be_bytes());
        b[47] = 0x80;
        Pubkey(b)
    }

    /// The chain cache of these tests: every index has pubkey `pk(i)`.
    fn pk_of(i: ValidatorIndex) -> Option<Pubkey> {
        Some(pk(i))
    }

    fn dv(i: u64, c: &str) -> DesiredValidator {
        DesiredValidator {
            validator_index: i,
            chain_id: ChainId::new(c),
            validator_key: pk(i),
        }
    }

    fn row(i: u64, c: &str, active: bool) -> Assignment {
        Assignment {
            validator_index: i,
            chain_id: ChainId::new(c),
            active,
        }
    }

    fn key(i: u64, c: &str) -> Key {
        (i, ChainId::new(c))
    }

    /// Both chains the generated rows use.
    fn scope() -> Scope {
        Scope::new(ChainId::new("0x1"), [ChainId::new("0x5")])
    }

    #[test]
    fn adds_missing_removes_extra_and_keeps_the_rest() {
        let desired: DesiredSet = [dv(1, "0x1"), dv(2, "0x1"), dv(3, "0x1")]
            .into_iter()
            .collect();
        let snap = RegistrySnapshot::from_rows([row(2, "0x1", true), row(9, "0x1", true)]);
        let p = plan(&desired, &snap, &scope(), &pk_of);
        assert_eq!(p.to_assign, vec![key(1, "0x1"), key(3, "0x1")]);
        assert_eq!(p.to_register.len(), 2);
        assert_eq!(p.to_unassign, vec![key(9, "0x1")]);
    }

    #[test]
    fn inactive_rows_are_not_current() {
        let desired: DesiredSet = [dv(1, "0x1")].into_iter().collect();
        let snap = RegistrySnapshot::from_rows([row(1, "0x1", false), row(2, "0x1", false)]);
        let p = plan(&desired, &snap, &scope(), &pk_of);
        assert_eq!(p.to_assign, vec![key(1, "0x1")]);
        assert!(
            p.to_unassign.is_empty(),
            "an inactive row needs no unassign"
        );
    }

    #[test]
    fn chain_id_is_compared_as_an_exact_string() {
        let desired: DesiredSet = [dv(1, "0x1")].into_iter().collect();
        let snap = RegistrySnapshot::from_rows([row(1, "1", true)]);
        let scope = Scope::new(ChainId::new("0x1"), [ChainId::new("1")]);
        let p = plan(&desired, &snap, &scope, &pk_of);
        assert_eq!(p.to_assign, vec![key(1, "0x1")]);
        assert_eq!(p.to_unassign, vec![key(1, "1")]);
    }

    #[test]
    fn rows_of_chains_outside_the_scope_are_never_unassigned() {
        let desired: DesiredSet = [dv(1, "0x1")].into_iter().collect();
        let snap = RegistrySnapshot::from_rows([
            row(2, "0x1", true),
            row(3, "0x5", true),
            row(4, "0x4268", true),
        ]);
        let scope = Scope::new(ChainId::new("0x1"), [ChainId::new("0x5")]);
        let p = plan(&desired, &snap, &scope, &pk_of);
        assert_eq!(p.to_unassign, vec![key(2, "0x1"), key(3, "0x5")]);
        let all = [
            key(1, "0x1"),
            key(2, "0x1"),
            key(3, "0x5"),
            key(4, "0x4268"),
        ];
        assert_eq!(plan_for(&desired, &snap, &all, &scope, &pk_of), p);
        assert_eq!(snap.outside(&scope, 5), (1, vec![key(4, "0x4268")]));
        let only_ours = Scope::new(ChainId::new("0x1"), []);
        assert_eq!(
            plan(&desired, &snap, &only_ours, &pk_of).to_unassign,
            vec![key(2, "0x1")]
        );
    }

    fn arb_desired() -> impl Strategy<Value = Vec<(u64, bool)>> {
        prop::collection::vec((0u64..40, any::<bool>()), 0..40)
    }

    fn arb_rows() -> impl Strategy<Value = Vec<(u64, bool, bool)>> {
        prop::collection::vec((0u64..40, any::<bool>(), any::<bool>()), 0..40)
    }

    fn chain(b: bool) -> &'static str {
        if b {
            "0x1"
        } else {
            "0x5"
        }
    }

    /// Entries on 0x1 with an even index are listed (their pubkey the
    /// chain cache's), every other one brings its own.
    fn build(d: &[(u64, bool)], r: &[(u64, bool, bool)]) -> (DesiredSet, RegistrySnapshot) {
        let (listed, own): (Vec<_>, Vec<_>) = d.iter().partition(|(i, c)| *c && i % 2 == 0);
        let desired = DesiredSet::from_parts(
            ChainId::new("0x1"),
            listed.iter().map(|(i, _)| *i).collect(),
            own.iter()
                .map(|(i, c)| ((*i, ChainId::new(chain(*c))), pk(*i)))
                .collect(),
        );
        let snap = RegistrySnapshot::from_rows(r.iter().map(|(i, c, a)| row(*i, chain(*c), *a)));
        (desired, snap)
    }

    /// Applies a plan to a snapshot the way the registry would.
    fn applied(snap: &RegistrySnapshot, p: &Plan) -> RegistrySnapshot {
        let mut s = snap.clone();
        for k in &p.to_assign {
            s.mark_assigned(k.clone());
        }
        for k in &p.to_unassign {
            s.mark_unassigned(k);
        }
        s
    }

    proptest! {
        #[test]
        fn applying_the_plan_converges_and_replanning_is_a_noop(d in arb_desired(), r in arb_rows()) {
            let (desired, snap) = build(&d, &r);
            let after = applied(&snap, &plan(&desired, &snap, &scope(), &pk_of));
            let active: Vec<Key> = after.active().cloned().collect();
            let want: Vec<Key> = desired.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(active, want);
            prop_assert!(plan(&desired, &after, &scope(), &pk_of).is_noop());
        }

        #[test]
        fn planning_every_key_equals_the_full_plan(d in arb_desired(), r in arb_rows()) {
            let (desired, snap) = build(&d, &r);
            let keys: std::collections::BTreeSet<Key> = desired
                .iter()
                .map(|(k, _)| k.clone())
                .chain(snap.rows().map(|a| (a.validator_index, a.chain_id)))
                .collect();
            prop_assert_eq!(plan_for(&desired, &snap, &keys, &scope(), &pk_of), plan(&desired, &snap, &scope(), &pk_of));
        }

        #[test]
        fn plan_is_independent_of_input_order(d in arb_desired(), r in arb_rows(), seed in any::<u64>()) {
            let (desired, snap) = build(&d, &r);
            let mut d2 = d.clone();
            let mut r2 = r.clone();
            // Deterministic shuffle by rotating and reversing.
            if !d2.is_empty() { let n = (seed as usize) % d2.len(); d2.rotate_left(n); d2.reverse(); }
            if !r2.is_empty() { let n = (seed as usize) % r2.len(); r2.rotate_left(n); r2.reverse(); }
            let (desired2, snap2) = build(&d2, &r2);
            prop_assert_eq!(plan(&desired, &snap, &scope(), &pk_of), plan(&desired2, &snap2, &scope(), &pk_of));
        }

        #[test]
        fn never_unassigns_outside_the_scope(d in arb_desired(), r in arb_rows()) {
            let (desired, snap) = build(&d, &r);
            let ours = Scope::new(ChainId::new("0x1"), []);
            let p = plan(&desired, &snap, &ours, &pk_of);
            for k in &p.to_unassign {
                prop_assert_eq!(k.1.as_str(), "0x1");
            }
            let keys: std::collections::BTreeSet<Key> = desired
                .iter()
                .map(|(k, _)| k.clone())
                .chain(snap.rows().map(|a| (a.validator_index, a.chain_id)))
                .collect();
            prop_assert_eq!(plan_for(&desired, &snap, &keys, &ours, &pk_of), p);
        }

        #[test]
        fn never_unassigns_a_desired_validator(d in arb_desired(), r in arb_rows()) {
            let (desired, snap) = build(&d, &r);
            let p = plan(&desired, &snap, &scope(), &pk_of);
            for k in &p.to_unassign {
                prop_assert!(!desired.contains(k));
                prop_assert!(snap.is_active(k), "only active rows are unassigned");
            }
            for k in &p.to_assign {
                prop_assert!(desired.contains(k));
                prop_assert!(!snap.is_active(k));
            }
            let reg: Vec<Key> = p.to_register.iter().map(|v| (v.validator_index, v.chain_id.clone())).collect();
            prop_assert_eq!(&reg, &p.to_assign);
            let mut sorted = p.to_assign.clone();
            sorted.sort();
            prop_assert_eq!(&sorted, &p.to_assign);
        }
    }
}
