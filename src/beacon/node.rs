//! What a beacon node says of itself, and whether its word may remove
//! anything.
//!
//! Owns the wire types of `GET /eth/v1/node/syncing`, `GET
//! /eth/v1/beacon/genesis` and `GET /eth/v1/config/spec`, the node's
//! [`ChainClock`] (the wall-clock slot), and the one rule that judges a node
//! synced ([`judge`]): not syncing, not optimistic, execution client not
//! offline, and its head within a tolerance of the wall-clock slot. A node
//! that fails the rule may still answer lookups (adds may go through), but
//! never confirms a removal. Pure apart from parsing; the requests live in
//! [`super::BeaconClient`].

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::quoted_u64;

/// How far (in slots) a node's head may trail the wall-clock slot and still
/// count as synced. Eight slots (96 s on mainnet) absorb a late block or
/// two and a slow node; a node further behind answers from a state old
/// enough to miss recent activations. Larger values accept staler answers.
pub const DEFAULT_SYNC_TOLERANCE_SLOTS: u64 = 8;

/// Mainnet's slot, used when a node's spec omits it.
const MAINNET_SLOT: Duration = Duration::from_secs(12);
/// Mainnet's values for the other spec fields keysync reads.
const MAINNET_SLOTS_PER_EPOCH: u64 = 32;
const MAINNET_MAX_SEED_LOOKAHEAD: u64 = 4;
const MAINNET_MIN_VALIDATOR_WITHDRAWABILITY_DELAY: u64 = 256;

/// A quoted (or bare) decimal integer, as a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quoted(u64);

impl<'de> Deserialize<'de> for Quoted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        quoted_u64(d).map(Quoted)
    }
}

#[derive(Deserialize)]
pub(crate) struct SyncingBody {
    data: SyncingData,
}

/// `node/syncing`'s answer. `is_optimistic` and `el_offline` are missing on
/// older nodes (missing means "not reported", not an error).
#[derive(Debug, Clone, Deserialize)]
struct SyncingData {
    head_slot: Quoted,
    #[serde(default)]
    sync_distance: Option<Quoted>,
    is_syncing: bool,
    #[serde(default)]
    is_optimistic: Option<bool>,
    #[serde(default)]
    el_offline: Option<bool>,
}

/// What a node reports of its sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStatus {
    pub head_slot: u64,
    pub sync_distance: u64,
    pub is_syncing: bool,
    pub is_optimistic: bool,
    pub el_offline: bool,
}

impl SyncingBody {
    pub(crate) fn status(&self) -> SyncStatus {
        let d = &self.data;
        SyncStatus {
            head_slot: d.head_slot.0,
            sync_distance: d.sync_distance.map_or(0, |q| q.0),
            is_syncing: d.is_syncing,
            is_optimistic: d.is_optimistic.unwrap_or(false),
            el_offline: d.el_offline.unwrap_or(false),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct GenesisBody {
    data: GenesisData,
}

#[derive(Deserialize)]
struct GenesisData {
    genesis_time: Quoted,
}

impl GenesisBody {
    pub(crate) fn genesis_time(&self) -> u64 {
        self.data.genesis_time.0
    }
}

#[derive(Deserialize)]
pub(crate) struct SpecBody {
    data: serde_json::Map<String, serde_json::Value>,
}

/// The chain rules keysync reads from a node's `config/spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// `SLOT_DURATION_MS` where the node has it, else `SECONDS_PER_SLOT`.
    pub slot: Duration,
    pub slots_per_epoch: u64,
    pub max_seed_lookahead: u64,
    pub min_validator_withdrawability_delay: u64,
    /// Fields the node left out (their mainnet values stand in).
    pub missing: Vec<&'static str>,
}

impl SpecBody {
    pub(crate) fn spec(&self) -> Spec {
        let mut missing = Vec::new();
        let mut field = |name: &'static str| -> Option<u64> {
            let v = match self.data.get(name) {
                Some(serde_json::Value::String(s)) => crate::domain::decimal(s),
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                _ => None,
            };
            if v.is_none() {
                missing.push(name);
            }
            v
        };
        let slot_ms = field("SLOT_DURATION_MS").filter(|ms| *ms > 0);
        let slot_s = field("SECONDS_PER_SLOT").filter(|s| *s > 0);
        let slot = match (slot_ms, slot_s) {
            (Some(ms), _) => Duration::from_millis(ms),
            (None, Some(s)) => Duration::from_secs(s),
            (None, None) => MAINNET_SLOT,
        };
        let slots_per_epoch = field("SLOTS_PER_EPOCH")
            .filter(|n| *n > 0)
            .unwrap_or(MAINNET_SLOTS_PER_EPOCH);
        let max_seed_lookahead = field("MAX_SEED_LOOKAHEAD").unwrap_or(MAINNET_MAX_SEED_LOOKAHEAD);
        let min_validator_withdrawability_delay = field("MIN_VALIDATOR_WITHDRAWABILITY_DELAY")
            .unwrap_or(MAINNET_MIN_VALIDATOR_WITHDRAWABILITY_DELAY);
        // Only one of the two slot fields is needed.
        if slot_ms.is_some() || slot_s.is_some() {
            missing.retain(|m| *m != "SLOT_DURATION_MS" && *m != "SECONDS_PER_SLOT");
        } else {
            missing.retain(|m| *m != "SLOT_DURATION_MS");
        }
        Spec {
            slot,
            slots_per_epoch,
            max_seed_lookahead,
            min_validator_withdrawability_delay,
            missing,
        }
    }
}

/// A node's clock (genesis, slot and epoch length) and the exit timing of
/// its chain (from its `config/spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainClock {
    /// Unix seconds.
    pub genesis_time: u64,
    pub slot: Duration,
    pub slots_per_epoch: u64,
    pub max_seed_lookahead: u64,
    pub min_validator_withdrawability_delay: u64,
}

impl ChainClock {
    /// The slot the wall clock is in at `now` (0 before genesis).
    pub fn slot_at(&self, now: SystemTime) -> u64 {
        let now_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let since = now_ms.saturating_sub(u128::from(self.genesis_time) * 1000);
        let slot_ms = self.slot.as_millis().max(1);
        u64::try_from(since / slot_ms).unwrap_or(u64::MAX)
    }
}

/// Why a node may not confirm a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsynced {
    /// The node says it is syncing.
    Syncing { head_slot: u64, distance: u64 },
    /// Its head is not validated by its execution client.
    Optimistic,
    /// Its execution client is offline.
    ElOffline,
    /// It claims to be synced, but its head trails the wall clock.
    Behind {
        head_slot: u64,
        wall_slot: u64,
        lag: u64,
        tolerance: u64,
    },
    /// Its state does not know indices the registry holds: it answers from
    /// an old head.
    Stale { sample: Vec<u64>, count: usize },
    /// Its sync state or clock could not be read.
    Unknown { detail: String },
}

impl Unsynced {
    /// The metric label for this reason.
    pub fn label(&self) -> &'static str {
        match self {
            Unsynced::Syncing { .. } => "syncing",
            Unsynced::Optimistic => "optimistic",
            Unsynced::ElOffline => "el_offline",
            Unsynced::Behind { .. } => "behind",
            Unsynced::Stale { .. } => "stale_state",
            Unsynced::Unknown { .. } => "unknown",
        }
    }

    /// How many slots behind, where known.
    pub fn lag(&self) -> Option<u64> {
        match self {
            Unsynced::Syncing { distance, .. } => Some(*distance),
            Unsynced::Behind { lag, .. } => Some(*lag),
            _ => None,
        }
    }
}

impl fmt::Display for Unsynced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsynced::Syncing {
                head_slot,
                distance,
            } => write!(
                f,
                "is syncing (head slot {head_slot}, {distance} slots behind)"
            ),
            Unsynced::Optimistic => {
                f.write_str("is optimistic (its execution client has not validated its head)")
            }
            Unsynced::ElOffline => f.write_str("reports its execution client offline"),
            Unsynced::Behind {
                head_slot,
                wall_slot,
                lag,
                tolerance,
            } => write!(
                f,
                "is {lag} slots behind the wall clock (head slot {head_slot}, wall-clock slot {wall_slot}; tolerance {tolerance}, set by --sync-tolerance-slots)"
            ),
            Unsynced::Stale { sample, count } => write!(
                f,
                "does not know {count} validator indices the registry holds (e.g. {}): its state is behind",
                sample
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Unsynced::Unknown { detail } => {
                write!(f, "cannot tell whether it is synced: {detail}")
            }
        }
    }
}

/// A node that may not confirm removals, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("beacon node {url} {why}")]
pub struct NotSynced {
    pub url: String,
    pub why: Unsynced,
}

/// A synced node's head and how far it trails the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub head_slot: u64,
    pub lag: u64,
}

/// The rule: a node is synced when it is not syncing, not optimistic, its
/// execution client is not offline, and its head is within `tolerance`
/// slots of the wall-clock slot at `now`.
pub fn judge(
    status: &SyncStatus,
    clock: &ChainClock,
    now: SystemTime,
    tolerance: u64,
) -> Result<Synced, Unsynced> {
    let wall_slot = clock.slot_at(now);
    let lag = wall_slot.saturating_sub(status.head_slot);
    if status.is_syncing {
        return Err(Unsynced::Syncing {
            head_slot: status.head_slot,
            distance: status.sync_distance.max(lag),
        });
    }
    if status.is_optimistic {
        return Err(Unsynced::Optimistic);
    }
    if status.el_offline {
        return Err(Unsynced::ElOffline);
    }
    if lag > tolerance {
        return Err(Unsynced::Behind {
            head_slot: status.head_slot,
            wall_slot,
            lag,
            tolerance,
        });
    }
    Ok(Synced {
        head_slot: status.head_slot,
        lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: &str) -> SyncStatus {
        serde_json::from_str::<SyncingBody>(json).unwrap().status()
    }

    const CLOCK: ChainClock = ChainClock {
        genesis_time: 1_000,
        slot: Duration::from_secs(12),
        slots_per_epoch: 32,
        max_seed_lookahead: 4,
        min_validator_withdrawability_delay: 256,
    };

    fn at_slot(slot: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000 + slot * 12 + 5)
    }

    #[test]
    fn the_real_lodestar_answer_without_el_offline_is_synced_at_its_slot() {
        let s = status(
            r#"{"data":{"head_slot":"0","sync_distance":"0","is_syncing":false,"is_optimistic":false}}"#,
        );
        assert_eq!(
            judge(&s, &CLOCK, at_slot(0), 8),
            Ok(Synced {
                head_slot: 0,
                lag: 0
            })
        );
        assert!(!s.el_offline);
    }

    #[test]
    fn each_way_of_being_unsynced_is_named() {
        let base = r#""head_slot":"100","sync_distance":"0""#;
        let s = status(&format!(r#"{{"data":{{{base},"is_syncing":true}}}}"#));
        assert_eq!(
            judge(&s, &CLOCK, at_slot(100), 8).unwrap_err().label(),
            "syncing"
        );
        let s = status(&format!(
            r#"{{"data":{{{base},"is_syncing":false,"is_optimistic":true}}}}"#
        ));
        assert_eq!(
            judge(&s, &CLOCK, at_slot(100), 8),
            Err(Unsynced::Optimistic)
        );
        let s = status(&format!(
            r#"{{"data":{{{base},"is_syncing":false,"el_offline":true}}}}"#
        ));
        assert_eq!(judge(&s, &CLOCK, at_slot(100), 8), Err(Unsynced::ElOffline));
        // A node that says it is synced, whose head is 20 slots old.
        let s = status(&format!(r#"{{"data":{{{base},"is_syncing":false}}}}"#));
        let e = judge(&s, &CLOCK, at_slot(120), 8).unwrap_err();
        assert_eq!(e.lag(), Some(20));
        assert!(e.to_string().contains("20 slots behind"), "{e}");
        assert!(
            judge(&s, &CLOCK, at_slot(108), 8).is_ok(),
            "within tolerance"
        );
        assert!(judge(&s, &CLOCK, at_slot(109), 8).is_err());
    }

    #[test]
    fn the_wall_clock_slot_is_zero_before_genesis() {
        assert_eq!(CLOCK.slot_at(UNIX_EPOCH + Duration::from_secs(10)), 0);
        assert_eq!(CLOCK.slot_at(at_slot(7)), 7);
        let fast = ChainClock {
            slot: Duration::from_millis(100),
            ..CLOCK
        };
        assert_eq!(
            fast.slot_at(UNIX_EPOCH + Duration::from_millis(1_000_250)),
            2
        );
    }

    #[test]
    fn a_spec_prefers_milliseconds_and_falls_back_to_mainnet_when_fields_are_missing() {
        let spec = |json: &str| serde_json::from_str::<SpecBody>(json).unwrap().spec();
        let s = spec(
            r#"{"data":{"SECONDS_PER_SLOT":"2","SLOT_DURATION_MS":"100","SLOTS_PER_EPOCH":"8","MAX_SEED_LOOKAHEAD":"4","MIN_VALIDATOR_WITHDRAWABILITY_DELAY":"1","BLOB_SCHEDULE":[]}}"#,
        );
        assert_eq!(s.slot, Duration::from_millis(100));
        assert_eq!(s.slots_per_epoch, 8);
        assert_eq!(s.min_validator_withdrawability_delay, 1);
        assert!(s.missing.is_empty(), "{:?}", s.missing);
        let s = spec(r#"{"data":{"SECONDS_PER_SLOT":"6"}}"#);
        assert_eq!(s.slot, Duration::from_secs(6));
        assert_eq!(s.min_validator_withdrawability_delay, 256);
        assert_eq!(
            s.missing,
            vec![
                "SLOTS_PER_EPOCH",
                "MAX_SEED_LOOKAHEAD",
                "MIN_VALIDATOR_WITHDRAWABILITY_DELAY"
            ]
        );
        let s = spec(r#"{"data":{}}"#);
        assert_eq!(s.slot, Duration::from_secs(12), "never \"no slot\"");
        assert!(s.missing.contains(&"SECONDS_PER_SLOT"));
    }
}
