//! Triggers and their coalescing: why a pass should run and what may be stale.
//!
//! Owns the [`Trigger`] vocabulary, the channel that carries triggers with
//! the instant they happened, and [`Pending`], the merge of every trigger
//! since the last pass. A trigger never carries an answer: the pass re-reads
//! state, so duplicate or lost triggers cannot make it wrong.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::desired::Refresh;
use crate::domain::ValidatorIndex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon started: everything is stale.
    Startup,
    /// An input file or a drop-directory entry changed.
    Source(PathBuf),
    /// First head of a new epoch (its slot): statuses may have changed.
    Epoch(u64),
    /// A finalized checkpoint: statuses may have changed.
    Finalized,
    /// A voluntary exit seen on gossip: a hint to watch that index closely.
    Exit(ValidatorIndex),
    /// A chain reorg: statuses at head may differ.
    Reorg,
    /// The event stream (re)connected: events were missed, refresh everything.
    Reconnected,
    /// The periodic full re-list of the registry (changes made by others).
    Resync,
    /// A failed pass, retried.
    Retry,
    /// Removals were held for want of a synced beacon node: look again.
    Recheck,
    /// A secret's file changed (the API key's, a keymanager token's: a
    /// rotated Secret or credential, a regenerated api-token.txt).
    KeyFile,
    /// A keymanager's key list changed, or could not be read: its read
    /// waits in the [`super::keymanagers::Mailbox`].
    Keymanager,
}

impl Trigger {
    pub fn reason(&self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Source(_) => "source",
            Trigger::Epoch(_) => "epoch",
            Trigger::Finalized => "finalized",
            Trigger::Exit(_) => "voluntary_exit",
            Trigger::Reorg => "reorg",
            Trigger::Reconnected => "reconnected",
            Trigger::Resync => "resync",
            Trigger::Retry => "retry",
            Trigger::Recheck => "recheck",
            Trigger::KeyFile => "key_file",
            Trigger::Keymanager => "keymanager",
        }
    }
}

/// A trigger and when it happened. A trigger that waited in the channel
/// while a pass ran is debounced from when it happened, not from when the
/// loop got to it.
#[derive(Debug)]
pub struct Stamped {
    pub trigger: Trigger,
    pub at: tokio::time::Instant,
}

/// The sending side of the trigger channel; stamps every trigger.
#[derive(Debug, Clone)]
pub struct Triggers(mpsc::UnboundedSender<Stamped>);

impl Triggers {
    /// Sends `t`, stamped now. A closed channel means the daemon is
    /// stopping: the trigger is moot.
    pub fn send(&self, trigger: Trigger) {
        let _ = self.0.send(Stamped {
            trigger,
            at: tokio::time::Instant::now(),
        });
    }
}

/// A trigger channel.
pub fn channel() -> (Triggers, mpsc::UnboundedReceiver<Stamped>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Triggers(tx), rx)
}

/// Everything the triggers since the last pass marked stale.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub reasons: BTreeSet<&'static str>,
    /// Re-read these input paths.
    pub paths: BTreeSet<PathBuf>,
    /// Re-read every input.
    pub all_sources: bool,
    /// Re-read every input, taking in only what changed (the resync's
    /// safety net for a lost file event).
    pub reread_sources: bool,
    /// Re-read the API key file.
    pub reread_key: bool,
    /// Take in the keymanagers' latest reads.
    pub keymanagers: bool,
    pub refresh: Refresh,
    /// Indices reported exiting (kept if ours).
    pub exits: BTreeSet<ValidatorIndex>,
    /// A finalized checkpoint arrived.
    pub finalized: bool,
    /// The highest head slot an epoch trigger named.
    pub head_slot: Option<u64>,
    /// Re-list the registry in full.
    pub relist: bool,
    /// Check the beacon node's chain before resolving.
    pub check_beacon: bool,
    /// When the first trigger of this batch arrived.
    pub first_at: Option<Instant>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Adds trigger `t`, which happened at `at`.
    pub fn add(&mut self, t: Trigger, at: Instant) {
        self.first_at = Some(self.first_at.map_or(at, |f| f.min(at)));
        self.reasons.insert(t.reason());
        match t {
            Trigger::Startup => {
                self.all_sources = true;
                self.refresh.all = true;
                self.relist = true;
                self.check_beacon = true;
            }
            Trigger::Source(p) => {
                self.paths.insert(p);
            }
            Trigger::Epoch(slot) => {
                self.refresh.epoch = true;
                self.head_slot = self.head_slot.max(Some(slot));
            }
            Trigger::Reorg => self.refresh.epoch = true,
            // Statuses move only at epoch boundaries: a checkpoint refreshes
            // them only if no epoch refresh ran just before (see controller).
            Trigger::Finalized => self.finalized = true,
            Trigger::Exit(i) => {
                self.exits.insert(i);
            }
            Trigger::Reconnected => {
                self.refresh.all = true;
                self.check_beacon = true;
            }
            Trigger::Resync => {
                self.relist = true;
                self.check_beacon = true;
                self.reread_sources = true;
                self.reread_key = true;
            }
            Trigger::Retry => {}
            // Back to the preferred node, in case it is the one synced again.
            Trigger::Recheck => self.check_beacon = true,
            Trigger::KeyFile => self.reread_key = true,
            Trigger::Keymanager => self.keymanagers = true,
        }
    }

    /// Puts a failed pass's work back, so nothing it was for is lost.
    pub fn merge(&mut self, other: Pending) {
        self.reasons.extend(other.reasons);
        self.paths.extend(other.paths);
        self.all_sources |= other.all_sources;
        self.reread_sources |= other.reread_sources;
        self.reread_key |= other.reread_key;
        self.keymanagers |= other.keymanagers;
        self.refresh.merge(&other.refresh);
        self.exits.extend(other.exits);
        self.finalized |= other.finalized;
        self.head_slot = self.head_slot.max(other.head_slot);
        self.relist |= other.relist;
        self.check_beacon |= other.check_beacon;
        self.first_at = match (self.first_at, other.first_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_coalesce_into_one_pending_pass() {
        let mut p = Pending::default();
        p.add(Trigger::Source("/a".into()), Instant::now());
        p.add(Trigger::Source("/a".into()), Instant::now());
        p.add(Trigger::Epoch(64), Instant::now());
        p.add(Trigger::Epoch(32), Instant::now());
        p.add(Trigger::Finalized, Instant::now());
        p.add(Trigger::Exit(5), Instant::now());
        assert_eq!(p.paths.len(), 1);
        assert!(p.refresh.epoch && p.finalized && !p.refresh.all && !p.relist);
        assert_eq!(p.exits, [5].into());
        assert_eq!(p.head_slot, Some(64), "the latest head counts");
        let mut q = Pending::default();
        q.add(Trigger::Reconnected, Instant::now());
        q.merge(p);
        assert!(q.refresh.all && q.refresh.epoch);
        assert_eq!(q.reasons.len(), 5);
    }
}
