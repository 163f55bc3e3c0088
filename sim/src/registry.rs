//! The Optimum console's state: registered validator keys and the
//! operator's assignment rows, both keyed on `(validator_index, chain_id)`
//! (chain id compared as an exact string), plus the list-shape knob.
//!
//! Pure state with the console's semantics (idempotent register, atomic
//! assign, idempotent unassign); HTTP, auth and faults live in `console`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::str::FromStr;

use serde::Serialize;

/// One assignment row as the list call returns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Assignment {
    pub validator_index: u64,
    pub chain_id: String,
    pub active: bool,
}

/// How the list call names (or omits) its array of rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListShape {
    /// `"validators": [...]` (the default).
    #[default]
    Validators,
    /// `"assignments": [...]`.
    Assignments,
    /// `"validators": null` when there are no rows (an array otherwise).
    Null,
    /// No array key at all when there are no rows (an array otherwise).
    Absent,
}

impl FromStr for ListShape {
    type Err = String;
    fn from_str(s: &str) -> Result<ListShape, String> {
        match s {
            "validators" => Ok(ListShape::Validators),
            "assignments" => Ok(ListShape::Assignments),
            "null" => Ok(ListShape::Null),
            "absent" => Ok(ListShape::Absent),
            _ => Err(format!("unknown list shape {s:?}")),
        }
    }
}

pub type Pair = (u64, String);

#[derive(Default)]
pub struct Registry {
    /// Row → active.
    assignments: BTreeMap<Pair, bool>,
    /// Pair → validator_key as registered.
    registered: BTreeMap<Pair, String>,
    pub shape: ListShape,
}

impl Registry {
    /// The list call's body, rows sorted by (index, chain_id).
    pub fn list_json(&self, operator_id: &str, network: &str) -> String {
        let mut out = String::with_capacity(64 + self.assignments.len() * 64);
        let _ = write!(
            out,
            "{{\"operator_id\":{},\"network\":{}",
            json_str(operator_id),
            json_str(network)
        );
        let empty = self.assignments.is_empty();
        let key = match (self.shape, empty) {
            (ListShape::Null, true) => {
                out.push_str(",\"validators\":null}");
                return out;
            }
            (ListShape::Absent, true) => {
                out.push('}');
                return out;
            }
            (ListShape::Assignments, _) => "assignments",
            _ => "validators",
        };
        let _ = write!(out, ",\"{key}\":[");
        for (i, ((index, chain_id), active)) in self.assignments.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"validator_index\":{index},\"chain_id\":{},\"active\":{active}}}",
                json_str(chain_id)
            );
        }
        out.push_str("]}");
        out
    }

    /// Registers keys; a pair already registered counts as skipped.
    /// Returns `(added, skipped)`.
    pub fn register(&mut self, keys: impl IntoIterator<Item = (Pair, String)>) -> (u64, u64) {
        let (mut added, mut skipped) = (0, 0);
        for (pair, key) in keys {
            if let std::collections::btree_map::Entry::Vacant(e) = self.registered.entry(pair) {
                e.insert(key);
                added += 1;
            } else {
                skipped += 1;
            }
        }
        (added, skipped)
    }

    /// Assigns every pair (active = true) or, if any is not registered,
    /// nothing: `Err(missing pairs)`. Returns the number of distinct pairs.
    pub fn assign(&mut self, pairs: Vec<Pair>) -> Result<usize, Vec<Pair>> {
        let missing: Vec<Pair> = pairs
            .iter()
            .filter(|p| !self.registered.contains_key(*p))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        let distinct: BTreeSet<Pair> = pairs.into_iter().collect();
        let n = distinct.len();
        for pair in distinct {
            self.assignments.insert(pair, true);
        }
        Ok(n)
    }

    /// Removes the row if present (idempotent).
    pub fn unassign(&mut self, index: u64, chain_id: &str) {
        self.assignments.remove(&(index, chain_id.to_string()));
    }

    pub fn seed_assignment(&mut self, index: u64, chain_id: &str, active: bool) {
        self.assignments
            .insert((index, chain_id.to_string()), active);
    }

    pub fn seed_registered(&mut self, index: u64, chain_id: &str, key: String) {
        self.registered.insert((index, chain_id.to_string()), key);
    }

    pub fn assignments(&self) -> Vec<Assignment> {
        self.assignments
            .iter()
            .map(|((validator_index, chain_id), active)| Assignment {
                validator_index: *validator_index,
                chain_id: chain_id.clone(),
                active: *active,
            })
            .collect()
    }

    pub fn active_assignments(&self) -> BTreeSet<Pair> {
        self.assignments
            .iter()
            .filter(|(_, active)| **active)
            .map(|(pair, _)| pair.clone())
            .collect()
    }

    pub fn registered(&self) -> BTreeMap<Pair, String> {
        self.registered.clone()
    }

    pub fn assignment_count(&self) -> usize {
        self.assignments.len()
    }

    pub fn registered_count(&self) -> usize {
        self.registered.len()
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(i: u64) -> Pair {
        (i, "0x1".to_string())
    }

    #[test]
    fn register_is_idempotent() {
        let mut r = Registry::default();
        assert_eq!(
            r.register([(pair(1), "k".into()), (pair(2), "k".into())]),
            (2, 0)
        );
        assert_eq!(
            r.register([(pair(1), "k".into()), (pair(3), "k".into())]),
            (1, 1)
        );
        assert_eq!(r.registered_count(), 3);
    }

    #[test]
    fn assign_is_atomic_and_reactivates() {
        let mut r = Registry::default();
        r.register([(pair(1), "k".into())]);
        assert_eq!(r.assign(vec![pair(1), pair(2)]), Err(vec![pair(2)]));
        assert_eq!(r.assignment_count(), 0);
        r.seed_assignment(1, "0x1", false);
        assert_eq!(r.assign(vec![pair(1), pair(1)]), Ok(1));
        assert!(r.assignments()[0].active);
        r.unassign(1, "0x1");
        r.unassign(1, "0x1");
        assert_eq!(r.assignment_count(), 0);
    }

    #[test]
    fn list_shapes() {
        let mut r = Registry::default();
        let v = |r: &Registry| {
            serde_json::from_str::<serde_json::Value>(&r.list_json("42", "mainnet")).unwrap()
        };
        assert_eq!(v(&r)["validators"], serde_json::json!([]));
        r.shape = ListShape::Null;
        assert!(v(&r).as_object().unwrap().contains_key("validators"));
        assert!(v(&r)["validators"].is_null());
        r.shape = ListShape::Absent;
        assert!(!v(&r).as_object().unwrap().contains_key("validators"));
        r.seed_assignment(5, "0x1", true);
        r.seed_assignment(2, "0x1", false);
        assert_eq!(v(&r)["validators"][0]["validator_index"], 2);
        r.shape = ListShape::Assignments;
        let body = v(&r);
        assert_eq!(
            body["assignments"][1],
            serde_json::json!({"validator_index": 5, "chain_id": "0x1", "active": true})
        );
        assert_eq!(body["operator_id"], "42");
        assert_eq!(body["network"], "mainnet");
    }
}
