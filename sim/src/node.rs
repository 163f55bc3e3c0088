//! What the simulated beacon node says of itself: its sync state
//! ([`SyncMode`], answered on `node/syncing`), its chain rules (the
//! `config/spec` map) and its clock ([`Clock`]: genesis time and the
//! wall-clock slot).
//!
//! Clock and genesis. Clients that must not act on stale state compare the
//! node's head with the wall-clock slot, `(now - genesis_time) / slot`. The
//! simulator keeps the two equal:
//! - clock-driven (`slot_ms > 0`): `genesis_time` is the start instant
//!   truncated to whole seconds, and the chain's slot follows the wall clock:
//!   target slot = `floor((now_ms - genesis_time * 1000) / slot_ms)`. The
//!   chain is moved to the target before the listeners serve, and at every
//!   tick (catching up when a tick was late, never going backwards).
//!   [`crate::Sim::advance_slots`] may move the chain ahead of the wall
//!   clock; the clock then waits until the wall clock catches up.
//! - manual (`slot_ms == 0`): the chain moves only when told, so genesis
//!   moves instead: `beacon/genesis` reports `now_secs - head_slot * 12`,
//!   computed at request time, and the spec says 12 s slots, which puts the
//!   head at the wall-clock slot whenever it is read.
//!
//! Pure: no I/O; callers pass the time in.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Slot length reported with the manual clock.
pub const MANUAL_SLOT_MS: u64 = 12_000;

/// What `GET /eth/v1/node/syncing` reports. All integers are rendered as
/// quoted decimal strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// `head_slot` = the chain's slot, `sync_distance` 0, every flag false.
    #[default]
    Synced,
    /// Like [`SyncMode::Synced`] but without the `is_optimistic` and
    /// `el_offline` fields (older nodes).
    SyncedLegacy,
    /// `is_syncing` true, `sync_distance` = `distance`, `head_slot` = the
    /// chain's slot − `distance` (saturating).
    Syncing { distance: u64 },
    /// `is_optimistic` true, head current.
    Optimistic,
    /// `el_offline` true, head current.
    ElOffline,
    /// Claims to be synced (`is_syncing` false, `sync_distance` 0, flags
    /// false) but `head_slot` = the chain's slot − `slots`: a node whose head
    /// is stuck behind the wall clock.
    Lagging { slots: u64 },
}

impl SyncMode {
    /// The control API's name for the mode.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Synced => "synced",
            SyncMode::SyncedLegacy => "synced_legacy",
            SyncMode::Syncing { .. } => "syncing",
            SyncMode::Optimistic => "optimistic",
            SyncMode::ElOffline => "el_offline",
            SyncMode::Lagging { .. } => "lagging",
        }
    }

    /// A mode from its control API name; `syncing` needs `distance`,
    /// `lagging` needs `slots`.
    pub fn parse(
        name: &str,
        distance: Option<u64>,
        slots: Option<u64>,
    ) -> Result<SyncMode, String> {
        Ok(match name {
            "synced" => SyncMode::Synced,
            "synced_legacy" => SyncMode::SyncedLegacy,
            "syncing" => SyncMode::Syncing {
                distance: distance.ok_or("mode syncing needs \"distance\"")?,
            },
            "optimistic" => SyncMode::Optimistic,
            "el_offline" => SyncMode::ElOffline,
            "lagging" => SyncMode::Lagging {
                slots: slots.ok_or("mode lagging needs \"slots\"")?,
            },
            other => return Err(format!("unknown sync mode {other:?}")),
        })
    }

    /// The `node/syncing` body for a chain at `slot`, fields in Lodestar's
    /// order.
    pub fn syncing_json(self, slot: u64) -> String {
        let (head, distance, syncing, optimistic, el_offline) = match self {
            SyncMode::Synced | SyncMode::SyncedLegacy => (slot, 0, false, false, false),
            SyncMode::Syncing { distance } => {
                (slot.saturating_sub(distance), distance, true, false, false)
            }
            SyncMode::Optimistic => (slot, 0, false, true, false),
            SyncMode::ElOffline => (slot, 0, false, false, true),
            SyncMode::Lagging { slots } => (slot.saturating_sub(slots), 0, false, false, false),
        };
        let flags = match self {
            SyncMode::SyncedLegacy => String::new(),
            _ => format!(",\"is_optimistic\":{optimistic},\"el_offline\":{el_offline}"),
        };
        format!(
            "{{\"data\":{{\"head_slot\":\"{head}\",\"sync_distance\":\"{distance}\",\"is_syncing\":{syncing}{flags}}}}}"
        )
    }
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The node's clock: its slot length and (clock-driven) its genesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// 0 = manual.
    slot_ms: u64,
    /// Unix seconds; fixed for a clock-driven sim, unused with the manual
    /// clock (see [`Clock::genesis_time`]).
    genesis_time: u64,
}

impl Clock {
    /// A clock started at `now_ms`: genesis is that instant truncated to
    /// whole seconds.
    pub fn new(slot_ms: u64, now_ms: u64) -> Clock {
        Clock {
            slot_ms,
            genesis_time: now_ms / 1000,
        }
    }

    /// True when slots follow the wall clock.
    pub fn is_running(&self) -> bool {
        self.slot_ms > 0
    }

    /// The slot length clients are told: `slot_ms`, or 12 s when manual.
    pub fn slot_duration_ms(&self) -> u64 {
        if self.is_running() {
            self.slot_ms
        } else {
            MANUAL_SLOT_MS
        }
    }

    /// [`Clock::slot_duration_ms`] in whole seconds, rounded up, at least 1.
    pub fn seconds_per_slot(&self) -> u64 {
        self.slot_duration_ms().div_ceil(1000).max(1)
    }

    /// The genesis time reported when the head is at `head_slot`: fixed for
    /// a running clock; `now - head_slot * 12 s` for the manual one.
    pub fn genesis_time(&self, head_slot: u64, now_ms: u64) -> u64 {
        if self.is_running() {
            self.genesis_time
        } else {
            (now_ms / 1000).saturating_sub(head_slot.saturating_mul(MANUAL_SLOT_MS / 1000))
        }
    }

    /// The wall-clock slot at `now_ms` (0 before genesis, and always 0 for
    /// the manual clock, whose slots move only when told).
    pub fn wall_slot(&self, now_ms: u64) -> u64 {
        if !self.is_running() {
            return 0;
        }
        now_ms.saturating_sub(self.genesis_time.saturating_mul(1000)) / self.slot_ms
    }

    /// Milliseconds from `now_ms` until the next slot starts (at least 1).
    pub fn until_next_slot_ms(&self, now_ms: u64) -> u64 {
        if !self.is_running() {
            return MANUAL_SLOT_MS;
        }
        let next = self.genesis_time.saturating_mul(1000).saturating_add(
            self.wall_slot(now_ms)
                .saturating_add(1)
                .saturating_mul(self.slot_ms),
        );
        next.saturating_sub(now_ms).max(1)
    }
}

/// The chain rules `config/spec` reports.
pub struct SpecParams {
    pub clock: Clock,
    pub slots_per_epoch: u64,
    /// An exit initiated in epoch e exits at e + 1 + this (the sim's
    /// `exit_delay_epochs` − 1).
    pub max_seed_lookahead: u64,
    pub withdrawable_delay_epochs: u64,
    pub chain_id: u64,
}

impl SpecParams {
    /// `{"data": {...}}`, every value a string, the fields named in `omit`
    /// left out.
    pub fn spec_json(&self, omit: &[String]) -> String {
        let fields = [
            ("CONFIG_NAME", "keysync-sim".to_string()),
            ("PRESET_BASE", "mainnet".to_string()),
            (
                "SECONDS_PER_SLOT",
                self.clock.seconds_per_slot().to_string(),
            ),
            (
                "SLOT_DURATION_MS",
                self.clock.slot_duration_ms().to_string(),
            ),
            ("SLOTS_PER_EPOCH", self.slots_per_epoch.to_string()),
            ("MAX_SEED_LOOKAHEAD", self.max_seed_lookahead.to_string()),
            (
                "MIN_VALIDATOR_WITHDRAWABILITY_DELAY",
                self.withdrawable_delay_epochs.to_string(),
            ),
            ("DEPOSIT_CHAIN_ID", self.chain_id.to_string()),
            ("GENESIS_FORK_VERSION", "0x00000000".to_string()),
        ];
        let data: Map<String, Value> = fields
            .into_iter()
            .filter(|(name, _)| !omit.iter().any(|o| o == name))
            .map(|(name, v)| (name.to_string(), Value::String(v)))
            .collect();
        serde_json::json!({ "data": data }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn syncing_bodies() {
        let v = parse(&SyncMode::Synced.syncing_json(9));
        assert_eq!(
            v,
            serde_json::json!({"data": {"head_slot": "9", "sync_distance": "0", "is_syncing": false, "is_optimistic": false, "el_offline": false}})
        );
        // Same bytes as Lodestar 1.5.1 (which has no el_offline).
        assert_eq!(
            SyncMode::SyncedLegacy.syncing_json(0),
            r#"{"data":{"head_slot":"0","sync_distance":"0","is_syncing":false}}"#
        );
        let v = parse(&SyncMode::Syncing { distance: 5 }.syncing_json(3));
        assert_eq!(v["data"]["head_slot"], "0");
        assert_eq!(v["data"]["sync_distance"], "5");
        assert_eq!(v["data"]["is_syncing"], true);
        let v = parse(&SyncMode::Lagging { slots: 4 }.syncing_json(10));
        assert_eq!(v["data"]["head_slot"], "6");
        assert_eq!(v["data"]["sync_distance"], "0");
        assert_eq!(v["data"]["is_syncing"], false);
        assert_eq!(
            parse(&SyncMode::Optimistic.syncing_json(1))["data"]["is_optimistic"],
            true
        );
        assert_eq!(
            parse(&SyncMode::ElOffline.syncing_json(1))["data"]["el_offline"],
            true
        );
    }

    #[test]
    fn sync_mode_names_round_trip() {
        for m in [
            SyncMode::Synced,
            SyncMode::SyncedLegacy,
            SyncMode::Syncing { distance: 3 },
            SyncMode::Optimistic,
            SyncMode::ElOffline,
            SyncMode::Lagging { slots: 3 },
        ] {
            assert_eq!(SyncMode::parse(m.name(), Some(3), Some(3)), Ok(m));
        }
        assert!(SyncMode::parse("syncing", None, Some(1)).is_err());
        assert!(SyncMode::parse("lagging", Some(1), None).is_err());
        assert!(SyncMode::parse("bogus", None, None).is_err());
    }

    #[test]
    fn running_clock_follows_the_wall() {
        let c = Clock::new(100, 5_000_730);
        assert_eq!(c.genesis_time(42, 9_999_999), 5_000);
        assert_eq!(c.wall_slot(5_000_730), 7);
        assert_eq!(c.wall_slot(4_000_000), 0, "0 before genesis");
        assert_eq!(c.until_next_slot_ms(5_000_730), 70);
        assert_eq!(c.until_next_slot_ms(5_000_800), 100);
        assert_eq!((c.slot_duration_ms(), c.seconds_per_slot()), (100, 1));
        let c = Clock::new(2500, 0);
        assert_eq!(c.seconds_per_slot(), 3);
    }

    #[test]
    fn manual_genesis_puts_the_head_at_the_wall_slot() {
        let c = Clock::new(0, 1_000_000);
        assert_eq!((c.slot_duration_ms(), c.seconds_per_slot()), (12_000, 12));
        for (head, now_ms) in [(0, 2_000_999), (5, 2_000_000), (7, 3_456_789)] {
            let genesis = c.genesis_time(head, now_ms);
            assert_eq!((now_ms - genesis * 1000) / 12_000, head);
        }
        assert_eq!(c.genesis_time(u64::MAX, 5_000), 0);
    }

    #[test]
    fn spec_fields_are_strings_and_can_be_omitted() {
        let p = SpecParams {
            clock: Clock::new(0, 0),
            slots_per_epoch: 8,
            max_seed_lookahead: 4,
            withdrawable_delay_epochs: 3,
            chain_id: 17000,
        };
        let v = parse(&p.spec_json(&[]));
        let d = v["data"].as_object().unwrap();
        assert!(d.values().all(Value::is_string));
        assert_eq!(d["SECONDS_PER_SLOT"], "12");
        assert_eq!(d["SLOT_DURATION_MS"], "12000");
        assert_eq!(d["SLOTS_PER_EPOCH"], "8");
        assert_eq!(d["MIN_VALIDATOR_WITHDRAWABILITY_DELAY"], "3");
        assert_eq!(d["MAX_SEED_LOOKAHEAD"], "4");
        assert_eq!(d["DEPOSIT_CHAIN_ID"], "17000");
        let v = parse(&p.spec_json(&["SLOT_DURATION_MS".into()]));
        assert!(v["data"].get("SLOT_DURATION_MS").is_none());
        assert_eq!(v["data"]["SECONDS_PER_SLOT"], "12");
    }
}
