//! The keymanagers as a daemon input: each read every
//! `--keymanager-poll-secs`, its latest read left in a [`Mailbox`] for the
//! next pass.
//!
//! Owns the poll loop and when it asks for a pass: after a read whose key
//! list differs from the last one left (a key imported or deleted), and
//! after every failed read (so each is logged and counted, and `/ready`
//! names it). A read that matches the last one asks for nothing: a quiet
//! validator client costs two GETs per poll and no pass. It also refuses a
//! `remotekeys` that turns 404 after serving keys (a failed read, not every
//! remote key deleted). An empty list is refused by
//! [`crate::inputs::keymanager::read_lists`]; a failed read keeps the last
//! good list in [`crate::inputs::InputSet::take_keymanager`].

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use url::Url;

use super::trigger::{Trigger, Triggers};
use crate::domain::Pubkey;
use crate::inputs::keymanager::{KeymanagerClient, KeymanagerError};

/// One keymanager's latest read, not yet taken by a pass.
pub type Read = (Url, Result<Vec<Pubkey>, KeymanagerError>);

/// The latest read of each keymanager, for the next pass to take.
#[derive(Clone, Default)]
pub struct Mailbox(Arc<Mutex<Vec<Option<Read>>>>);

impl Mailbox {
    fn put(&self, i: usize, read: Read) {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        slots[i] = Some(read);
    }

    /// Every read left since the last take.
    pub fn take(&self) -> Vec<Read> {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slots.iter_mut().filter_map(Option::take).collect()
    }
}

/// A key list's fingerprint (order-independent: lists come sorted).
fn fingerprint(keys: &[Pubkey]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    keys.hash(&mut h);
    h.finish()
}

/// Reads every keymanager now and every `every` after, until shutdown.
pub async fn poll(
    clients: Vec<KeymanagerClient>,
    urls: Vec<Url>,
    every: Duration,
    allow_empty: bool,
    mailbox: Mailbox,
    tx: Triggers,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last: Vec<Option<u64>> = vec![None; clients.len()];
    // Whether each served `remotekeys` at its last good read.
    let mut remote_served: Vec<bool> = vec![false; clients.len()];
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = super::scheduler::requested(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        let reads = tokio::select! {
            biased;
            _ = super::scheduler::requested(&mut shutdown) => return,
            r = futures_util::future::join_all(
                clients.iter().map(|c| crate::inputs::keymanager::read_lists(c, allow_empty)),
            ) => r,
        };
        let mut wake = false;
        for (i, (read, url)) in reads.into_iter().zip(&urls).enumerate() {
            // A 404 where the list was served is a failed read, not
            // "every remote key deleted".
            let read = match read {
                Ok(l) if remote_served[i] && !l.remote_supported => {
                    Err(KeymanagerError::RemoteKeysGone {
                        url: clients[i].url().to_string(),
                    })
                }
                Ok(l) => {
                    remote_served[i] = l.remote_supported;
                    Ok(l.union())
                }
                Err(e) => Err(e),
            };
            let print = read.as_ref().ok().map(|k| fingerprint(k));
            // A failure always: the pass logs and counts it.
            if print.is_none() || print != last[i] {
                wake = true;
                last[i] = print;
                mailbox.put(i, (url.clone(), read));
            }
        }
        if wake {
            tx.send(Trigger::Keymanager);
        }
    }
}
