//! The one backoff every retry loop waits by: capped exponential with
//! jitter.
//!
//! Owns the arithmetic (base, doubling, cap, ±jitter) and a count of
//! consecutive failures with its reset. Knows nothing of what is retried
//! or of how a wait is slept: each loop sleeps it beside its own shutdown.
//!
//! | loop | base | cap | jitter |
//! |---|---|---|---|
//! | an HTTP request ([`crate::http::RetryPolicy`]) | `--http-backoff-ms` (500 ms) | 30 s, `Retry-After` included | ±25 % |
//! | the event stream's reconnect ([`crate::watch::stream`]) | 250 ms | 30 s | ±50 % |
//! | a failed pass, the operator-id lookup at start ([`crate::watch::policy`]) | 1 s | 60 s | none |
//!
//! The store's lock wait ([`crate::store`]) is not a backoff: it polls for
//! another process's exit on a fixed step under a deadline.

use std::time::Duration;

/// Capped exponential backoff: before retry `n` (1-based) wait
/// `base · 2^(n−1)`, scaled by a random factor in `[1 − jitter, 1 + jitter]`,
/// never more than `cap`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// The relative spread of each wait, in `[0, 1]` (0: none).
    pub jitter: f64,
    /// Consecutive failures counted by [`Backoff::fail`] since the last
    /// [`Backoff::reset`].
    failures: u32,
}

impl Backoff {
    /// `base` doubling up to `cap`, without jitter.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            jitter: 0.0,
            failures: 0,
        }
    }

    /// The same backoff with each wait spread by ±`jitter` (clamped to
    /// `[0, 1]`).
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The wait before retry `attempt` (1-based; 0 counts as 1), before
    /// jitter: `base · 2^(attempt−1)`, at most `cap`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        self.exponential(attempt).min(self.cap)
    }

    /// The wait before retry `attempt` (1-based; 0 counts as 1): the
    /// exponential, jittered, then capped (a wait long past the cap is the
    /// cap).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.exponential(attempt);
        let wait = if self.jitter > 0.0 {
            use rand::Rng;
            let spread = rand::rng().random_range(1.0 - self.jitter..=1.0 + self.jitter);
            mul(exp, spread)
        } else {
            exp
        };
        wait.min(self.cap)
    }

    /// Counts one more consecutive failure; returns the wait before the
    /// next try ([`Backoff::delay`] of the failures so far).
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures)
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn exponential(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor)
    }
}

/// `d · f`, saturating instead of panicking on overflow.
fn mul(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=9).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.delay(0), Duration::from_secs(1), "0 counts as 1");
        assert_eq!(b.nominal(3), Duration::from_secs(4));
    }

    #[test]
    fn huge_attempts_and_bases_saturate_at_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_jitter(0.5);
        for n in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(b.delay(n), Duration::from_secs(60), "attempt {n}");
        }
        let b = Backoff::new(Duration::MAX, Duration::MAX).with_jitter(0.25);
        assert!(b.delay(u32::MAX) > Duration::from_secs(1 << 40));
    }

    #[test]
    fn jitter_stays_within_its_spread_and_under_the_cap() {
        let b = Backoff::new(100 * MS, 2000 * MS).with_jitter(0.25);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let d1 = b.delay(1);
            let d3 = b.delay(3);
            assert!((75 * MS..=125 * MS).contains(&d1), "{d1:?}");
            assert!((300 * MS..=500 * MS).contains(&d3), "{d3:?}");
            assert!(b.delay(6) <= 2000 * MS);
            seen.insert(d1);
        }
        assert!(seen.len() > 10, "the waits are spread: {}", seen.len());
        assert_eq!(b.delay(40), 2000 * MS, "far past the cap: the cap");
    }

    #[test]
    fn without_jitter_a_wait_is_exact() {
        let b = Backoff::new(250 * MS, 30_000 * MS);
        assert!((0..50).all(|_| b.delay(2) == 500 * MS));
        assert_eq!(b.with_jitter(-1.0).jitter, 0.0, "clamped");
        assert_eq!(b.with_jitter(7.0).jitter, 1.0, "clamped");
    }

    #[test]
    fn failures_grow_the_wait_and_a_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(b.failures(), 0);
        let waits: Vec<u64> = (0..5).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(), Duration::from_secs(1));
    }

    #[test]
    fn a_constant_backoff_is_a_cap_equal_to_its_base() {
        let b = Backoff::new(100 * MS, 100 * MS);
        assert!((1..20).all(|n| b.delay(n) == 100 * MS));
    }
}
