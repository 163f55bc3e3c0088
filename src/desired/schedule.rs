//! The status schedule: which known validators a daemon pass re-reads at an
//! epoch boundary, so that every exit is seen in time at a cost that grows
//! with what changes, not with the size of the set.
//!
//! Owns the rule, not the state. A validator leaves the registry scope when
//! it becomes withdrawable, and its path there is public long before: once
//! an exit is initiated — voluntary exit, execution-layer exit (EIP-7002),
//! consolidation (EIP-7251), ejection, slashing — its record carries
//! `exit_epoch` and `withdrawable_epoch`, at least [`ExitTiming::lead`]
//! epochs after the epoch the initiation was processed in. So the daemon:
//!
//! - scans the known, in-scope set on a rolling basis, one share per epoch,
//!   every validator once per [`ExitTiming::scan_period`], asking only for
//!   exit-initiated statuses (small answers);
//! - checks each validator whose `withdrawable_epoch` it learned exactly
//!   at that boundary ([`crate::cache::ChainCache::due`]), and only then
//!   lets it leave;
//! - looks up every epoch only what the node does not know yet (pending
//!   deposits), and everything at start and after a stream reconnect.
//!
//! The period is a quarter of the lead, so every initiation gets at least
//! `min(4, lead − 1)` scans before its validator becomes withdrawable: a
//! missed tick or a failed pass costs one, not the exit. An epoch with no
//! tick (no block, a lost event) is scanned by the next tick.

use crate::domain::ValidatorIndex;

/// The chain rules the schedule derives from (the node's `config/spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitTiming {
    pub slots_per_epoch: u64,
    pub max_seed_lookahead: u64,
    pub min_validator_withdrawability_delay: u64,
}

impl ExitTiming {
    /// The timing of a node's chain (read with its clock).
    pub fn of(clock: &crate::beacon::node::ChainClock) -> ExitTiming {
        ExitTiming {
            slots_per_epoch: clock.slots_per_epoch,
            max_seed_lookahead: clock.max_seed_lookahead,
            min_validator_withdrawability_delay: clock.min_validator_withdrawability_delay,
        }
    }

    /// The fewest epochs from the epoch an exit initiation is processed in
    /// to its `withdrawable_epoch`: `compute_activation_exit_epoch` puts the
    /// exit `1 + MAX_SEED_LOOKAHEAD` epochs ahead (a queue only delays it),
    /// then `MIN_VALIDATOR_WITHDRAWABILITY_DELAY` more (slashings wait
    /// longer). 261 epochs on mainnet.
    pub fn lead(&self) -> u64 {
        1u64.saturating_add(self.max_seed_lookahead)
            .saturating_add(self.min_validator_withdrawability_delay)
    }

    /// Every known validator is scanned at least once per this many epochs:
    /// a quarter of the lead (65 epochs, about 7 hours, on mainnet), and at
    /// least 1.
    pub fn scan_period(&self) -> u64 {
        (self.lead().saturating_sub(1) / 4).max(1)
    }

    /// The epoch `slot` is in.
    pub fn epoch_of(&self, slot: u64) -> u64 {
        slot / self.slots_per_epoch.max(1)
    }
}

/// One tick's share of the rolling scan: the shares of epochs
/// `first..=last` (more than one when ticks were missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub first: u64,
    pub last: u64,
    pub period: u64,
}

impl Scan {
    /// Every known validator (period 1; what a tick without known chain
    /// rules asks).
    pub fn everything(epoch: u64) -> Scan {
        Scan {
            first: epoch,
            last: epoch,
            period: 1,
        }
    }

    /// The scan of the tick at `current`, after the last successful scan at
    /// `last_scanned`: every epoch in between is scanned too, so an epoch
    /// without a tick loses nothing. A repeated or older epoch (a reorg, a
    /// retried pass) scans the current share again.
    pub fn next(last_scanned: Option<u64>, current: u64, period: u64) -> Scan {
        let first = match last_scanned {
            Some(l) if current > l => l + 1,
            _ => current,
        };
        Scan {
            first,
            last: current,
            period: period.max(1),
        }
    }

    /// Whether the scan covers the whole set.
    pub fn is_full(&self) -> bool {
        self.period <= 1 || self.last.saturating_sub(self.first) >= self.period - 1
    }

    /// Whether validator `i` is in this scan's share: `i mod period` is one
    /// of the residues of `first..=last`.
    pub fn covers(&self, i: ValidatorIndex) -> bool {
        if self.is_full() {
            return true;
        }
        let p = self.period;
        let (r, a, b) = (i % p, self.first % p, self.last % p);
        if a <= b {
            a <= r && r <= b
        } else {
            r >= a || r <= b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timing(msl: u64, mvwd: u64) -> ExitTiming {
        ExitTiming {
            slots_per_epoch: 32,
            max_seed_lookahead: msl,
            min_validator_withdrawability_delay: mvwd,
        }
    }

    #[test]
    fn mainnet_scans_a_sixty_fifth_of_the_set_per_epoch() {
        let t = timing(4, 256);
        assert_eq!(t.lead(), 261);
        assert_eq!(t.scan_period(), 65);
        // The simulator's defaults (exit delay 2, withdrawability delay 2)
        // and Lodestar's dev chain scan everything every epoch.
        assert_eq!(timing(1, 2).scan_period(), 1);
        assert_eq!(timing(1, 1).scan_period(), 1);
        assert_eq!(timing(3, 16).scan_period(), 4);
    }

    #[test]
    fn a_scan_covers_its_residues_and_wraps() {
        let s = Scan {
            first: 9,
            last: 11,
            period: 5,
        };
        // residues 4, 0, 1
        let got: Vec<u64> = (0..10).filter(|i| s.covers(*i)).collect();
        assert_eq!(got, vec![0, 1, 4, 5, 6, 9]);
        assert!(Scan::next(Some(3), 10, 5).is_full(), "7 epochs missed");
        assert_eq!(Scan::next(Some(10), 10, 5).first, 10, "a repeat rescans");
        assert_eq!(Scan::next(None, 10, 5).first, 10);
        assert!(Scan::everything(7).covers(123));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        /// For any spec values, a validator whose exit is initiated in
        /// epoch `e` (processed at any point of it, so the scan of `e`
        /// itself may be too early) is scanned at least `min(4, lead − 1)`
        /// times in `e + 1 .. e + lead`: before it becomes withdrawable,
        /// with three scans to spare on any chain whose lead exceeds 4.
        #[test]
        fn every_initiation_is_seen_before_withdrawability(
            msl in 0u64..=64,
            mvwd in prop_oneof![1u64..=300, 1u64..=100_000],
            i in any::<u32>(),
            e in 0u64..=10_000_000,
        ) {
            let t = timing(msl, mvwd);
            let lead = t.lead();
            let p = t.scan_period();
            let scans = (e + 1..e + lead)
                .filter(|epoch| Scan::next(Some(epoch - 1), *epoch, p).covers(u64::from(i)))
                .count() as u64;
            prop_assert!(scans >= (lead - 1).min(4), "lead {lead} period {p}: {scans} scans");
        }

        /// Whatever epochs the ticks arrive at (blocks missed, events lost),
        /// chaining [`Scan::next`] gives every epoch's share to the first
        /// tick at or after it: no share is ever skipped.
        #[test]
        fn missed_ticks_lose_no_share(
            p in 1u64..=80,
            start in 0u64..=1_000_000,
            gaps in prop::collection::vec(0u64..=100, 1..40),
            k in 0u64..=1_000,
        ) {
            let mut last = start;
            for g in gaps {
                let now = last + g;
                let scan = Scan::next(Some(last), now, p);
                for epoch in last + 1..=now {
                    // Any index in that epoch's share.
                    let i = epoch % p + k * p;
                    prop_assert!(scan.covers(i), "epoch {epoch} index {i} in {scan:?}");
                }
                last = now;
            }
        }
    }
}
