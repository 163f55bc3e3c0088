//! Vetting the beacon nodes of a pass, and the pass's [`Witness`].
//!
//! Owns the per-pass record of each node (on the configured chain? synced?),
//! the choice of the pass's node (the first synced one from the node in use,
//! else the first usable one), the vetted failover (a node is vetted before
//! its first answer of the pass is used, and the pass is only as synced as
//! the least synced node it used), and the reading of a node's sync state
//! and clock. The rule that judges "synced" is [`super::node::judge`].

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::node::{
    self, ChainClock, GenesisBody, NotSynced, SpecBody, Synced, SyncingBody, Unsynced,
};
use super::{display, no_url, worse, BeaconClient, BeaconError, Endpoint, SMALL_BODY};

/// The limit on a `config/spec` answer (real ones are 10–20 KB).
const SPEC_BODY: usize = 1 << 20;

/// What every node must prove, each pass, before its answers are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetting {
    /// The configured chain (numeric, and as configured), when checkable.
    pub chain: Option<(u64, String)>,
    /// How far a head may trail the wall-clock slot and count as synced
    /// (see [`node::DEFAULT_SYNC_TOLERANCE_SLOTS`]).
    pub tolerance: u64,
}

/// How one node fared this pass.
#[derive(Debug, Clone)]
enum Vetted {
    /// On the configured chain; synced or not (a node not synced may still
    /// answer lookups, but never confirms a removal).
    Usable(Result<Synced, Unsynced>),
    Unusable(BeaconError),
}

/// What the current pass has learned of the nodes.
#[derive(Debug, Default)]
pub(super) struct Pass {
    vetted: Vec<Option<Vetted>>,
    /// Nodes whose vetting was carried over from the last pass (a light
    /// pass): checked afresh before they may confirm a removal.
    carried: Vec<bool>,
    selected: Option<usize>,
    /// Nodes whose answer this pass used.
    used: Vec<usize>,
    /// The first node not synced whose answer this pass used.
    unsynced_used: Option<NotSynced>,
}

/// Whether the answers of a pass may remove anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// Every node the pass used is synced; the chosen one trails the wall
    /// clock by `head_lag` slots.
    Synced {
        url: String,
        head_lag: u64,
    },
    NotSynced(NotSynced),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BeaconClient {
    /// The same client, checking every node it uses each pass: on the
    /// configured chain (else skipped), and synced (else believed for adds
    /// only). Passes are marked by [`BeaconClient::begin_pass`].
    pub fn vetted(mut self, vetting: Vetting) -> Self {
        self.vetting = Some(Arc::new(vetting));
        self
    }

    /// Starts a pass: every node is vetted again before its next use.
    pub fn begin_pass(&self) {
        *lock(&self.pass) = Pass::default();
    }

    /// Starts a light pass (an epoch tick, a file change): a node the last
    /// pass found on the configured chain and synced is used without
    /// asking it again, so a quiet epoch costs only its status scan. Before
    /// such a node's answers may remove anything, [`BeaconClient::witness`]
    /// vets it afresh; the chain is also checked at every stream
    /// (re)connect and resync, which start full passes.
    pub fn begin_light_pass(&self) {
        let mut p = lock(&self.pass);
        let vetted: Vec<Option<Vetted>> = std::mem::take(&mut p.vetted)
            .into_iter()
            .map(|v| v.filter(|v| matches!(v, Vetted::Usable(Ok(_)))))
            .collect();
        let carried = vetted.iter().map(Option::is_some).collect();
        *p = Pass {
            vetted,
            carried,
            ..Pass::default()
        };
    }

    /// Picks this pass's node (vetting them in order until a synced one is
    /// found); fails when none is usable. A no-op for a plain client.
    pub async fn check(&self) -> Result<(), BeaconError> {
        self.select().await.map(|_| ())
    }

    /// Whether this pass's answers may remove anything: the chosen node and
    /// every node whose answer the pass used are synced. Picks a node first
    /// if the pass has not yet.
    pub async fn witness(&self) -> Result<Witness, BeaconError> {
        let i = self.select().await?;
        self.vet_carried(i).await?;
        Ok(self.verdict(i))
    }

    /// Vets afresh the chosen node `i` and every node whose answer the pass
    /// used, where their vetting was carried over from the last pass. A
    /// node no longer on the configured chain fails the pass.
    async fn vet_carried(&self, i: usize) -> Result<(), BeaconError> {
        let stale: Vec<usize> = {
            let p = lock(&self.pass);
            let mut nodes = p.used.clone();
            nodes.push(i);
            nodes.sort_unstable();
            nodes.dedup();
            nodes.retain(|n| p.carried.get(*n).copied().unwrap_or(false));
            nodes
        };
        for n in stale {
            let v = self.vet_now(n).await;
            let url = self.url_of(n);
            let mut p = lock(&self.pass);
            if let Some(c) = p.carried.get_mut(n) {
                *c = false;
            }
            if let Some(slot) = p.vetted.get_mut(n) {
                *slot = Some(v.clone());
            }
            match v {
                Vetted::Unusable(e) => return Err(e),
                Vetted::Usable(Err(why)) if p.used.contains(&n) => {
                    if p.unsynced_used.is_none() {
                        p.unsynced_used = Some(NotSynced { url, why });
                    }
                }
                Vetted::Usable(_) => {}
            }
        }
        Ok(())
    }

    /// The clock and exit timing of the node in use, else of the first
    /// node after it that was ever vetted (read once per node; no I/O).
    pub fn chain_clock(&self) -> Option<ChainClock> {
        let n = self.endpoints.len();
        let start = self.active.load(Ordering::Relaxed) % n.max(1);
        (0..n)
            .filter_map(|k| self.endpoints.get((start + k) % n))
            .find_map(|e| e.clock.get().copied())
    }

    /// The verdict of this pass so far, if it picked a node (no I/O).
    pub fn last_witness(&self) -> Option<Witness> {
        let i = lock(&self.pass).selected?;
        Some(self.verdict(i))
    }

    fn verdict(&self, i: usize) -> Witness {
        let p = lock(&self.pass);
        if let Some(ns) = &p.unsynced_used {
            return Witness::NotSynced(ns.clone());
        }
        let url = self.url_of(i);
        match p.vetted.get(i).cloned().flatten() {
            Some(Vetted::Usable(Err(why))) => Witness::NotSynced(NotSynced { url, why }),
            Some(Vetted::Usable(Ok(s))) => Witness::Synced {
                url,
                head_lag: s.lag,
            },
            // A plain client has no opinion of its nodes.
            _ => Witness::Synced { url, head_lag: 0 },
        }
    }

    fn url_of(&self, i: usize) -> String {
        self.endpoints
            .get(i)
            .map(|e| display(&e.url))
            .unwrap_or_default()
    }

    /// This pass's node: the one already picked, else the first synced node
    /// from the active one on, else the first usable one.
    async fn select(&self) -> Result<usize, BeaconError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(no_url());
        }
        let start = self.active.load(Ordering::Relaxed) % n;
        if self.vetting.is_none() {
            return Ok(start);
        }
        if let Some(i) = lock(&self.pass).selected {
            return Ok(i);
        }
        let mut fallback = None;
        let mut err: Option<BeaconError> = None;
        for k in 0..n {
            let i = (start + k) % n;
            match self.vet(i).await {
                Vetted::Usable(Ok(_)) => return Ok(self.choose(i, start)),
                Vetted::Usable(Err(why)) => {
                    if n > 1 {
                        tracing::warn!(url = %self.url_of(i), why = %why, "beacon node not synced; looking for a synced one");
                    }
                    fallback.get_or_insert(i);
                }
                Vetted::Unusable(e) => {
                    if n > 1 {
                        tracing::warn!(error = %e, "beacon node unusable, trying the next one");
                    }
                    err = Some(worse(err, e));
                }
            }
        }
        match fallback {
            Some(i) => Ok(self.choose(i, start)),
            None => Err(err.unwrap_or_else(no_url)),
        }
    }

    fn choose(&self, i: usize, start: usize) -> usize {
        if i != start {
            tracing::warn!(url = %self.url_of(i), "failed over to another beacon node");
        }
        self.active.store(i, Ordering::Relaxed);
        lock(&self.pass).selected = Some(i);
        i
    }

    /// Notes that this pass used node `i`'s answer.
    fn used(&self, i: usize) {
        let url = self.url_of(i);
        let mut p = lock(&self.pass);
        if !p.used.contains(&i) {
            p.used.push(i);
        }
        if p.unsynced_used.is_some() {
            return;
        }
        if let Some(Some(Vetted::Usable(Err(why)))) = p.vetted.get(i) {
            p.unsynced_used = Some(NotSynced {
                url,
                why: why.clone(),
            });
        }
    }

    /// Node `i`'s vetting this pass (done once per pass).
    async fn vet(&self, i: usize) -> Vetted {
        if let Some(v) = lock(&self.pass).vetted.get(i).cloned().flatten() {
            return v;
        }
        let v = self.vet_now(i).await;
        let mut p = lock(&self.pass);
        if p.vetted.len() < self.endpoints.len() {
            p.vetted.resize(self.endpoints.len(), None);
        }
        p.vetted[i] = Some(v.clone());
        v
    }

    async fn vet_now(&self, i: usize) -> Vetted {
        let (Some(vetting), Some(ep)) = (&self.vetting, self.endpoints.get(i)) else {
            return Vetted::Usable(Ok(Synced {
                head_slot: 0,
                lag: 0,
            }));
        };
        // The chain first: it also proves the URL is a beacon node.
        let got = match self.deposit_chain_id(ep).await {
            Ok(c) => c,
            Err(e) => return Vetted::Unusable(e),
        };
        if let Some((want, configured)) = &vetting.chain {
            if got != *want {
                return Vetted::Unusable(BeaconError::WrongChain {
                    url: display(&ep.url),
                    node: got,
                    configured: configured.clone(),
                    others_failed: false,
                });
            }
        }
        Vetted::Usable(self.sync_state(ep, vetting.tolerance).await)
    }

    /// Whether `ep` is synced now (see [`node::judge`]).
    async fn sync_state(&self, ep: &Endpoint, tolerance: u64) -> Result<Synced, Unsynced> {
        let status = self
            .get_json::<SyncingBody>(ep, "GET /eth/v1/node/syncing", SMALL_BODY)
            .await
            .map_err(unknown)?
            .status();
        let clock = self.clock(ep).await.map_err(unknown)?;
        node::judge(&status, &clock, SystemTime::now(), tolerance)
    }

    /// `ep`'s genesis and slot length, read once.
    async fn clock(&self, ep: &Endpoint) -> Result<ChainClock, BeaconError> {
        ep.clock
            .get_or_try_init(|| async {
                let genesis = self
                    .get_json::<GenesisBody>(ep, "GET /eth/v1/beacon/genesis", SMALL_BODY)
                    .await?
                    .genesis_time();
                let spec = self
                    .get_json::<SpecBody>(ep, "GET /eth/v1/config/spec", SPEC_BODY)
                    .await?
                    .spec();
                if !spec.missing.is_empty() {
                    tracing::warn!(url = %display(&ep.url), missing = ?spec.missing, "the beacon node's spec lacks fields; mainnet values stand in");
                }
                Ok(ChainClock {
                    genesis_time: genesis,
                    slot: spec.slot,
                    slots_per_epoch: spec.slots_per_epoch,
                    max_seed_lookahead: spec.max_seed_lookahead,
                    min_validator_withdrawability_delay: spec.min_validator_withdrawability_delay,
                })
            })
            .await
            .copied()
    }

    /// Runs `f` against this pass's node, then each following usable one,
    /// until one succeeds; the node that answered is noted as used (its
    /// sync state then counts for the pass's [`Witness`]). A plain client
    /// runs [`BeaconClient::failover_plain`].
    pub(super) async fn failover<T, F, Fut>(&self, f: F) -> Result<T, BeaconError>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, BeaconError>>,
    {
        if self.vetting.is_none() {
            return self.failover_plain(f).await;
        }
        let first = self.select().await?;
        let n = self.endpoints.len();
        let mut err: Option<BeaconError> = None;
        for k in 0..n {
            let i = (first + k) % n;
            if k > 0 {
                if let Vetted::Unusable(e) = self.vet(i).await {
                    err = Some(worse(err, e));
                    continue;
                }
            }
            match f(i).await {
                Ok(v) => {
                    if k > 0 {
                        self.choose(i, first);
                    }
                    self.used(i);
                    return Ok(v);
                }
                Err(e) => {
                    if n > 1 {
                        tracing::warn!(error = %e, "beacon node unusable, trying the next one");
                    }
                    err = Some(worse(err, e));
                }
            }
        }
        Err(err.unwrap_or_else(no_url))
    }
}

/// A node whose sync state could not be read, described without its URL
/// (the verdict names it).
fn unknown(e: BeaconError) -> Unsynced {
    let detail = match e {
        BeaconError::Failed { call, failure, .. } => format!("{call} failed: {failure}"),
        BeaconError::Malformed { call, detail, .. } => {
            format!("{call} returned an unexpected body: {detail}")
        }
        other => other.to_string(),
    };
    Unsynced::Unknown { detail }
}
