//! The slot length the daemon's timers run on: the event stream's silence
//! timeout and failover return, the recheck of held removals, the
//! finalized-checkpoint fallback.
//!
//! Owns one value shared by the tasks: `--slot-ms` when given (an
//! override), else the beacon node's `config/spec` once a pass has read it,
//! else mainnet's 12 s until then.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Mainnet's slot, until the chain says otherwise.
const MAINNET_SLOT_MS: u64 = 12_000;

#[derive(Debug, Clone)]
pub struct SlotLength {
    ms: Arc<AtomicU64>,
    fixed: bool,
}

impl SlotLength {
    /// `overridden`: the `--slot-ms` setting, if any.
    pub fn new(overridden: Option<Duration>) -> SlotLength {
        let ms = overridden.map_or(MAINNET_SLOT_MS, millis);
        SlotLength {
            ms: Arc::new(AtomicU64::new(ms)),
            fixed: overridden.is_some(),
        }
    }

    pub fn get(&self) -> Duration {
        Duration::from_millis(self.ms.load(Ordering::Relaxed))
    }

    /// Takes the chain's slot length, unless it was overridden. Returns
    /// whether the value changed.
    pub fn learn(&self, slot: Duration) -> bool {
        let ms = millis(slot);
        !self.fixed && self.ms.swap(ms, Ordering::Relaxed) != ms
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_decides_unless_the_flag_does() {
        let chain = SlotLength::new(None);
        assert_eq!(chain.get(), Duration::from_secs(12));
        let shared = chain.clone();
        assert!(chain.learn(Duration::from_secs(6)));
        assert!(!chain.learn(Duration::from_secs(6)));
        assert_eq!(
            shared.get(),
            Duration::from_secs(6),
            "one value for every task"
        );

        let flag = SlotLength::new(Some(Duration::from_millis(500)));
        assert!(!flag.learn(Duration::from_secs(6)));
        assert_eq!(flag.get(), Duration::from_millis(500));
    }
}
