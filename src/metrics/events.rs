//! What happens inside keysync, as typed events (Vector's internal events):
//! one value per occurrence, whose [`Event::emit`] writes its log line and
//! moves its metrics together, so logs and metrics never disagree.
//!
//! Each log line keeps the target (`keysync::apply`, …) and the fields it
//! had where it was written before, so log filters and readers see no
//! difference. An event without metrics to move (the one-shot commands
//! keep none) still logs.
//!
//! Adding an event: a struct named for what happened (past tense), beside
//! the component that emits it, holding what its log line and metrics
//! need; `record` moves the metrics, `log` writes the line; the call site
//! does `metrics.emit(E { … })` (or `E { … }.emit(metrics)` where metrics
//! may be absent). The events live with their components (apply, http,
//! inputs, the watch loop), so this room depends on none of them.

use super::Metrics;

/// Something that happened, told once.
pub trait Event: Sized {
    /// Moves this event's metrics.
    fn record(&self, metrics: &Metrics);

    /// Writes this event's log line, if it has one.
    fn log(&self) {}

    /// Both: the log line always, the metrics where they are kept.
    fn emit(self, metrics: Option<&Metrics>) {
        self.log();
        if let Some(m) = metrics {
            self.record(m);
        }
    }
}
