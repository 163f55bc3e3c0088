//! A progress line on a terminal for long resolutions; nothing when stderr
//! is piped or logs are JSON.
//!
//! Owns only the `\r`-rewritten stderr line. Cheap to call often: it redraws
//! at most every 100 ms.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Below this many ids a resolution is quick enough to need no indicator.
pub const THRESHOLD: usize = 1_000;

pub struct Progress {
    label: &'static str,
    total: usize,
    state: Option<Mutex<Instant>>,
}

impl Progress {
    /// An indicator that draws only if `enabled`, stderr is a terminal and
    /// `total` reaches [`THRESHOLD`].
    pub fn new(label: &'static str, total: usize, enabled: bool) -> Self {
        let draw = enabled && total >= THRESHOLD && std::io::stderr().is_terminal();
        Progress {
            label,
            total,
            state: draw.then(|| Mutex::new(Instant::now() - Duration::from_secs(1))),
        }
    }

    pub fn hidden() -> Self {
        Progress {
            label: "",
            total: 0,
            state: None,
        }
    }

    pub fn update(&self, done: usize) {
        let Some(state) = &self.state else { return };
        let Ok(mut last) = state.lock() else { return };
        if last.elapsed() < Duration::from_millis(100) && done < self.total {
            return;
        }
        *last = Instant::now();
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        let _ = write!(
            std::io::stderr(),
            "\r{}: {done}/{} ({pct}%)",
            self.label,
            self.total
        );
    }

    pub fn finish(&self) {
        if self.state.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
