//! `keysync-sim`: one loopback process that plays keysync's remote
//! parties — the Optimum auth service, the Optimum console API, an
//! Ethereum beacon node (REST + SSE) and a validator client's Keymanager
//! API — faithfully enough for tests, demos and benchmarks, with a
//! scriptable chain and fault injection.
//!
//! This module owns the [`Sim`] handle (start, control, shutdown) and its
//! [`SimConfig`]. It shares no code with keysync and must stay that way.
//!
//! Three listeners on 127.0.0.1:
//! - main ([`Sim::url`]): `GET /api/v1/me`, the console API, and the JSON
//!   control API under `/sim/…` (see [`control`]);
//! - beacon ([`Sim::beacon_url`]): the Beacon API routes and `/eth/v1/events`.
//!   It can be stopped and restarted on the same port.
//! - keymanager ([`Sim::keymanager_url`]): `GET /eth/v1/keystores` and
//!   `GET /eth/v1/remotekeys` behind [`Sim::keymanager_token`], listing the
//!   keys scripted with [`Sim::keymanager_set_local`] and
//!   [`Sim::keymanager_set_remote`]. It too can be stopped and restarted.
//!
//! Beacon reads ignore `state_id` beyond validating it: `head`, `finalized`,
//! `justified`, `genesis`, a slot or a root all answer from the current state
//! (or from the stale state set by [`Sim::set_stale_above`]).
//!
//! The head always sits at the wall-clock slot a client computes from
//! `beacon/genesis` and `config/spec`: a running clock follows the wall clock
//! from a genesis at the start second; with the manual clock the reported
//! genesis moves instead (details in `node`'s docs). What the node says of
//! its sync state is scripted with [`Sim::set_sync`].

mod beacon;
pub mod chain;
mod cli;
mod console;
pub mod control;
mod faults;
mod keymanager;
mod node;
mod registry;
mod server;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::task::JoinHandle;

pub use chain::Status;
pub use cli::cli_main;
pub use faults::Route;
pub use keymanager::{KeyRef, REMOTE_SIGNER_URL};
pub use node::SyncMode;
pub use registry::{Assignment, ListShape};

use beacon::Streams;
use chain::{Chain, Lifecycle};
use faults::Faults;
use keymanager::KeymanagerState;
use node::{Clock, SpecParams};
use registry::Registry;
use server::Server;

/// Everything the simulator can be started with. Each field's default is
/// what [`SimConfig::default`] gives.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one Bearer key every auth/console call must carry.
    /// Default `ovi_live_sim_key_0123456789abcdef`.
    pub api_key: String,
    /// The operator the key belongs to. Default `"42"`.
    pub operator_id: String,
    /// Reported by `deposit_contract` as a decimal string. Default 1.
    pub chain_id: u64,
    /// Validators generated at start, all `active_ongoing`. Default 64.
    /// 1,000,000 take about 90 MB and ~0.2 s (release).
    pub validators: u64,
    /// Seed for pubkeys, roots and signatures. Default 0.
    pub seed: u64,
    /// Slot length. Default 12000. 0 = manual clock: slots move only on
    /// [`Sim::advance_slots`] (fully deterministic tests). A running clock
    /// starts at genesis = the start second, so the first slot seen may be
    /// above 0 (up to a second's worth of slots).
    pub slot_ms: u64,
    /// Default 32; tests use 4–8 so epochs pass quickly.
    pub slots_per_epoch: u64,
    /// Keep-alive comment period on event streams. 0 (default) = `slot_ms/2`,
    /// or 1000 ms with the manual clock.
    pub keepalive_ms: u64,
    /// Main listener port; 0 (default) = ephemeral.
    pub main_port: u16,
    /// Beacon listener port; 0 (default) = ephemeral (kept across restarts).
    pub beacon_port: u16,
    /// `GET /api/v1/me` answers an empty `operator_id` (a staff key).
    pub staff_key: bool,
    /// See [`chain::Lifecycle`]. Default 1.
    pub deposit_delay_epochs: u64,
    /// Default 2.
    pub activation_delay_epochs: u64,
    /// Default 2.
    pub exit_delay_epochs: u64,
    /// Default 2.
    pub withdrawable_delay_epochs: u64,
    /// Added latency on every route from the start (as [`Sim::set_latency`]
    /// with `None`). Default 0.
    pub latency_ms: u64,
    /// Answer 404 to a validators query when none of its ids is known.
    pub none_known_404: bool,
    /// `POST …/validators` answers this status (405, or 404 like Lodestar).
    pub post_validators_unsupported: Option<u16>,
    /// The Bearer token the keymanager's routes accept.
    /// Default `km_token_0123456789abcdef0123456789`.
    pub keymanager_token: String,
    /// Keymanager listener port; 0 (default) = ephemeral (kept across restarts).
    pub keymanager_port: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        let lc = Lifecycle::default();
        SimConfig {
            api_key: "ovi_live_sim_key_0123456789abcdef".to_string(),
            operator_id: "42".to_string(),
            chain_id: 1,
            validators: 64,
            seed: 0,
            slot_ms: 12_000,
            slots_per_epoch: 32,
            keepalive_ms: 0,
            main_port: 0,
            beacon_port: 0,
            staff_key: false,
            deposit_delay_epochs: lc.deposit_delay_epochs,
            activation_delay_epochs: lc.activation_delay_epochs,
            exit_delay_epochs: lc.exit_delay_epochs,
            withdrawable_delay_epochs: lc.withdrawable_delay_epochs,
            latency_ms: 0,
            none_known_404: false,
            post_validators_unsupported: None,
            keymanager_token: "km_token_0123456789abcdef0123456789".to_string(),
            keymanager_port: 0,
        }
    }
}

impl SimConfig {
    fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            deposit_delay_epochs: self.deposit_delay_epochs,
            activation_delay_epochs: self.activation_delay_epochs,
            exit_delay_epochs: self.exit_delay_epochs,
            withdrawable_delay_epochs: self.withdrawable_delay_epochs,
        }
    }

    fn keepalive(&self) -> Duration {
        let ms = match (self.keepalive_ms, self.slot_ms) {
            (0, 0) => 1000,
            (0, slot) => (slot / 2).max(1),
            (ms, _) => ms,
        };
        Duration::from_millis(ms)
    }
}

pub(crate) struct Inner {
    cfg: SimConfig,
    main_addr: SocketAddr,
    beacon_addr: SocketAddr,
    keymanager_addr: SocketAddr,
    clock_rules: Clock,
    chain: Mutex<Chain>,
    registry: Mutex<Registry>,
    faults: Faults,
    streams: Streams,
    none_known_404: AtomicBool,
    post_unsupported: Mutex<Option<u16>>,
    sync: Mutex<SyncMode>,
    spec_omit: Mutex<Vec<String>>,
    stale_above: Mutex<Option<u64>>,
    /// The key auth and console accept now (starts as the configured one).
    api_key: Mutex<String>,
    keymanager_state: Mutex<KeymanagerState>,
    queries: Mutex<VecDeque<ValidatorQuery>>,
    main: tokio::sync::Mutex<Option<Server>>,
    beacon: tokio::sync::Mutex<Option<Server>>,
    keymanager: tokio::sync::Mutex<Option<Server>>,
    clock: Mutex<Option<JoinHandle<()>>>,
}

/// One validators query (GET or POST) the beacon node answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatorQuery {
    /// The chain's epoch when it was answered.
    pub epoch: u64,
    /// Ids asked for (`None`: every validator).
    pub ids: Option<usize>,
    /// Whether it named statuses to filter by.
    pub filtered: bool,
}

/// The most queries [`Sim::validator_queries`] remembers (the oldest go).
const MAX_QUERIES: usize = 100_000;

/// A running simulator. Cheap to clone; every clone controls the same one.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

/// Locks a std mutex, ignoring poisoning (state stays usable after a
/// panicking test thread).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A JSON response from an already serialised body.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error answer of the console and control APIs:
/// `{"error": code, "message": …}` (message omitted when `None`).
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Option<String>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl std::fmt::Display,
    ) -> Self {
        ApiError {
            status,
            code,
            message: Some(message.to_string()),
        }
    }

    /// 400 `bad_request` with `message`.
    pub(crate) fn bad_request(message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `{"error": "invalid_credential"}`, exactly.
    pub(crate) fn invalid_credential() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credential",
            message: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.message {
            Some(m) => serde_json::json!({"error": self.code, "message": m}),
            None => serde_json::json!({"error": self.code}),
        };
        json_response(self.status, body.to_string())
    }
}

/// Bodies up to 256 MiB (bulk seeding, 10,000-id queries).
const BODY_LIMIT: usize = 256 << 20;

impl Sim {
    /// Binds the three listeners, generates the chain and starts the clock.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
        let (main_listener, main_addr) = server::bind(cfg.main_port).await?;
        let (beacon_listener, beacon_addr) = server::bind(cfg.beacon_port).await?;
        let (keymanager_listener, keymanager_addr) = server::bind(cfg.keymanager_port).await?;
        let (seed, n, spe, lc) = (
            cfg.seed,
            cfg.validators,
            cfg.slots_per_epoch,
            cfg.lifecycle(),
        );
        let chain = tokio::task::spawn_blocking(move || Chain::new(seed, n, spe, lc))
            .await
            .map_err(std::io::Error::other)?;
        let clock_rules = Clock::new(cfg.slot_ms, node::now_ms());
        let faults = Faults::default();
        faults.set_latency(None, cfg.latency_ms);
        let inner = Inner {
            main_addr,
            beacon_addr,
            keymanager_addr,
            clock_rules,
            chain: Mutex::new(chain),
            registry: Mutex::new(Registry::default()),
            faults,
            streams: Streams::new(cfg.keepalive()),
            none_known_404: AtomicBool::new(cfg.none_known_404),
            post_unsupported: Mutex::new(cfg.post_validators_unsupported),
            sync: Mutex::new(SyncMode::default()),
            spec_omit: Mutex::new(Vec::new()),
            stale_above: Mutex::new(None),
            api_key: Mutex::new(cfg.api_key.clone()),
            queries: Mutex::new(VecDeque::new()),
            keymanager_state: Mutex::new(KeymanagerState {
                token: cfg.keymanager_token.clone(),
                ..KeymanagerState::default()
            }),
            main: tokio::sync::Mutex::new(None),
            beacon: tokio::sync::Mutex::new(None),
            keymanager: tokio::sync::Mutex::new(None),
            clock: Mutex::new(None),
            cfg,
        };
        let sim = Sim {
            inner: Arc::new(inner),
        };
        // The head is at the wall-clock slot before anyone can ask.
        sim.follow_wall_clock();
        *sim.inner.main.lock().await = Some(Server::spawn(main_listener, sim.main_router()));
        *sim.inner.beacon.lock().await = Some(Server::spawn(beacon_listener, sim.beacon_router()));
        *sim.inner.keymanager.lock().await =
            Some(Server::spawn(keymanager_listener, sim.keymanager_router()));
        if sim.inner.cfg.slot_ms > 0 {
            *lock(&sim.inner.clock) = Some(sim.spawn_clock());
        }
        tracing::info!(url = %sim.url(), beacon_url = %sim.beacon_url(), keymanager_url = %sim.keymanager_url(), validators = n, "simulator listening");
        Ok(sim)
    }

    fn main_router(&self) -> Router {
        console::routes(self)
            .merge(control::routes())
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }

    fn beacon_router(&self) -> Router {
        beacon::routes(self)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }

    fn keymanager_router(&self) -> Router {
        keymanager::routes(self)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.clone())
    }

    /// Ticks at every wall-clock slot start and moves the chain to the
    /// wall-clock slot (several slots after a late tick; none while
    /// [`Sim::advance_slots`] has it ahead).
    fn spawn_clock(&self) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let clock = self.inner.clock_rules;
        tokio::spawn(async move {
            loop {
                let wait = clock.until_next_slot_ms(node::now_ms());
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match weak.upgrade() {
                    Some(inner) => Sim { inner }.follow_wall_clock(),
                    None => break,
                }
            }
        })
    }

    /// Advances a running clock's chain to the wall-clock slot; never moves
    /// it back. No-op with the manual clock.
    fn follow_wall_clock(&self) {
        let clock = self.inner.clock_rules;
        if !clock.is_running() {
            return;
        }
        let mut chain = self.chain();
        let behind = clock.wall_slot(node::now_ms()).saturating_sub(chain.slot());
        if behind > 0 {
            let events = chain.advance(behind);
            self.streams().publish(events);
        }
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub(crate) fn streams(&self) -> &Streams {
        &self.inner.streams
    }

    pub(crate) fn chain(&self) -> MutexGuard<'_, Chain> {
        lock(&self.inner.chain)
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inner.registry)
    }

    pub(crate) fn keymanager(&self) -> MutexGuard<'_, KeymanagerState> {
        lock(&self.inner.keymanager_state)
    }

    /// The `genesis_time` reported when the head is at `head_slot` (see
    /// [`Sim::genesis_time`]).
    pub(crate) fn genesis_time_at(&self, head_slot: u64) -> u64 {
        self.inner
            .clock_rules
            .genesis_time(head_slot, node::now_ms())
    }

    /// What `config/spec` reports, minus the omitted fields.
    pub(crate) fn spec_json(&self) -> String {
        let params = SpecParams {
            clock: self.inner.clock_rules,
            slots_per_epoch: self.chain().slots_per_epoch(),
            max_seed_lookahead: self.inner.cfg.exit_delay_epochs.saturating_sub(1),
            withdrawable_delay_epochs: self.inner.cfg.withdrawable_delay_epochs,
            chain_id: self.inner.cfg.chain_id,
        };
        params.spec_json(&lock(&self.inner.spec_omit))
    }

    pub(crate) fn stale_above(&self) -> Option<u64> {
        *lock(&self.inner.stale_above)
    }

    pub(crate) fn none_known_404(&self) -> bool {
        self.inner.none_known_404.load(Ordering::Relaxed)
    }

    pub(crate) fn post_unsupported_status(&self) -> Option<u16> {
        *lock(&self.inner.post_unsupported)
    }

    /// `http://127.0.0.1:PORT`: auth, console and control API.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.main_addr)
    }

    /// `http://127.0.0.1:BPORT`: the beacon node.
    pub fn beacon_url(&self) -> String {
        format!("http://{}", self.inner.beacon_addr)
    }

    /// The key auth and console accept now.
    pub fn api_key(&self) -> String {
        lock(&self.inner.api_key).clone()
    }

    /// Rotates the key: from now on only `key` is accepted (the old one is
    /// revoked, as the partners dashboard does).
    pub fn set_api_key(&self, key: &str) {
        *lock(&self.inner.api_key) = key.to_string();
    }

    pub fn operator_id(&self) -> String {
        self.inner.cfg.operator_id.clone()
    }

    // ---- chain ----------------------------------------------------------

    /// The pubkey at `index` (or the one generated for it if the chain does
    /// not know it yet): `0x` + 96 lowercase hex.
    pub fn pubkey(&self, index: u64) -> String {
        chain::to_hex(&self.chain().pubkey(index))
    }

    /// The beacon status of `index`, `None` if the chain does not know it.
    pub fn status(&self, index: u64) -> Option<String> {
        self.chain().status(index).map(|s| s.as_str().to_string())
    }

    pub fn index_of(&self, pubkey: &str) -> Option<u64> {
        self.chain().index_of(&chain::parse_pubkey(pubkey)?)
    }

    /// Number of validators the chain knows.
    pub fn validator_count(&self) -> u64 {
        self.chain().len()
    }

    pub fn current_slot(&self) -> u64 {
        self.chain().slot()
    }

    pub fn current_epoch(&self) -> u64 {
        self.chain().epoch()
    }

    /// The `genesis_time` `beacon/genesis` reports now (Unix seconds): the
    /// start second with a running clock; with the manual clock
    /// `now - current_slot() * 12`, so the head is always at the
    /// wall-clock slot.
    pub fn genesis_time(&self) -> u64 {
        self.genesis_time_at(self.current_slot())
    }

    /// Moves the chain `n` slots ahead (works with either clock mode),
    /// sending each slot's events. A running clock then waits for the wall
    /// clock to catch up (it never moves back).
    pub fn advance_slots(&self, n: u64) {
        let mut chain = self.chain();
        let events = chain.advance(n);
        self.streams().publish(events);
    }

    /// Moves to the first slot of epoch `current_epoch() + n` (so exactly
    /// `n` epoch boundaries pass).
    pub fn advance_epochs(&self, n: u64) {
        if n == 0 {
            return;
        }
        let mut chain = self.chain();
        let target = chain
            .epoch()
            .saturating_add(n)
            .saturating_mul(chain.slots_per_epoch());
        let slots = target.saturating_sub(chain.slot());
        let events = chain.advance(slots);
        self.streams().publish(events);
    }

    /// Submits a deposit (`None` = a fresh generated pubkey) and returns its
    /// pubkey. Panics on a malformed pubkey (a test bug); see
    /// [`Sim::try_deposit`].
    pub fn deposit(&self, pubkey: Option<String>) -> String {
        match self.try_deposit(pubkey.as_deref()) {
            Ok(pk) => pk,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Sim::deposit`] that reports a malformed pubkey instead.
    pub fn try_deposit(&self, pubkey: Option<&str>) -> Result<String, String> {
        let pk = match pubkey {
            Some(s) => Some(
                chain::parse_pubkey(s).ok_or_else(|| format!("not a 0x+96-hex pubkey: {s:?}"))?,
            ),
            None => None,
        };
        Ok(chain::to_hex(&self.chain().deposit(pk)))
    }

    /// Emits `voluntary_exit` at once; the status moves at the next epoch
    /// boundary (active validators only).
    pub fn exit(&self, index: u64) {
        let mut chain = self.chain();
        if let Some(ev) = chain.exit(index) {
            self.streams().publish([ev]);
        }
    }

    /// An execution-layer exit (EIP-7002): the validator exits as after a
    /// voluntary exit, but no event is emitted. Returns whether it was
    /// scheduled (active validators only).
    pub fn el_exit(&self, index: u64) -> bool {
        self.chain().exit_silently(index)
    }

    /// A consolidation (EIP-7251) of `source` into `target`: the source
    /// exits with no event (its balance moves to the target, which stays
    /// active). Returns whether it was scheduled (both active, distinct).
    pub fn consolidate(&self, source: u64, target: u64) -> bool {
        let mut chain = self.chain();
        let active = |i| chain.status(i) == Some(chain::Status::ActiveOngoing);
        source != target && active(source) && active(target) && chain.exit_silently(source)
    }

    /// Schedules a slashing for the next epoch boundary (active only).
    pub fn slash(&self, index: u64) {
        self.chain().slash(index);
    }

    /// Overrides a status at once and freezes it there. Panics on an unknown
    /// status name (a test bug); see [`Sim::try_set_status`].
    pub fn set_status(&self, index: u64, status: &str) {
        if let Err(e) = self.try_set_status(index, status) {
            panic!("{e}");
        }
    }

    /// [`Sim::set_status`] that reports an unknown status name or index.
    pub fn try_set_status(&self, index: u64, status: &str) -> Result<(), String> {
        let st = Status::parse(status).ok_or_else(|| format!("unknown status {status:?}"))?;
        if self.chain().set_status(index, st) {
            Ok(())
        } else {
            Err(format!("unknown validator index {index}"))
        }
    }

    /// Emits a `chain_reorg` event of `depth` slots.
    pub fn reorg(&self, depth: u64) {
        let mut chain = self.chain();
        let ev = chain.reorg(depth);
        self.streams().publish([ev]);
    }

    // ---- node state -----------------------------------------------------

    /// What `node/syncing` reports from now on.
    pub fn set_sync(&self, mode: SyncMode) {
        *lock(&self.inner.sync) = mode;
    }

    pub fn sync_mode(&self) -> SyncMode {
        *lock(&self.inner.sync)
    }

    /// Leaves the named fields (e.g. `"SECONDS_PER_SLOT"`) out of
    /// `config/spec`'s answer; an empty list restores them all.
    pub fn set_spec_omit(&self, fields: Vec<String>) {
        *lock(&self.inner.spec_omit) = fields;
    }

    /// While `Some(n)`, the validators routes answer like a node restored
    /// from an old state: validators with index >= `n` are unknown to them
    /// (left out; with none-known-404 a query knowing none of its ids
    /// answers 404). The chain itself (statuses, events, registry) goes on
    /// unaffected. `None` restores.
    pub fn set_stale_above(&self, above: Option<u64>) {
        *lock(&self.inner.stale_above) = above;
    }

    // ---- registry -------------------------------------------------------

    /// Every assignment row, sorted by (index, chain_id).
    pub fn assignments(&self) -> Vec<Assignment> {
        self.registry().assignments()
    }

    pub fn active_assignments(&self) -> BTreeSet<(u64, String)> {
        self.registry().active_assignments()
    }

    /// Registered keys: (index, chain_id) → validator_key.
    pub fn registered(&self) -> BTreeMap<(u64, String), String> {
        self.registry().registered()
    }

    /// Puts an assignment row in place; also registers `pubkey(index)` for
    /// the pair if the chain knows the index.
    pub fn seed_assignment(&self, index: u64, chain_id: &str, active: bool) {
        self.seed_assign_range(index, index.saturating_add(1), chain_id, active);
    }

    /// [`Sim::seed_assignment`] for every index in `start..end`, fast
    /// (500,000 rows in well under a second in release).
    pub fn seed_assign_range(&self, start: u64, end: u64, chain_id: &str, active: bool) {
        let keys: Vec<(u64, Option<String>)> = {
            let chain = self.chain();
            (start..end)
                .map(|i| {
                    (
                        i,
                        (i < chain.len()).then(|| chain::to_hex(&chain.pubkey(i))),
                    )
                })
                .collect()
        };
        let mut reg = self.registry();
        for (i, key) in keys {
            reg.seed_assignment(i, chain_id, active);
            if let Some(key) = key {
                reg.seed_registered(i, chain_id, key);
            }
        }
    }

    pub fn seed_registered(&self, index: u64, chain_id: &str, key: &str) {
        self.registry()
            .seed_registered(index, chain_id, key.to_string());
    }

    pub fn set_list_shape(&self, shape: ListShape) {
        self.registry().shape = shape;
    }

    // ---- faults ---------------------------------------------------------

    /// The next `count` requests to `route` answer `status` (with
    /// `Retry-After` if given) and change nothing. `count` 0 clears.
    pub fn fail_next(&self, route: Route, status: u16, count: u32, retry_after_secs: Option<u64>) {
        self.faults()
            .fail_next(route, status, count, retry_after_secs);
    }

    /// [`Sim::fail_next`], once `after` more requests to `route` have been
    /// answered normally (counted in the order their latency ends, so with
    /// concurrent requests: the `after + 1`-th to be answered fails).
    pub fn fail_after(
        &self,
        route: Route,
        after: u32,
        status: u16,
        count: u32,
        retry_after_secs: Option<u64>,
    ) {
        self.faults()
            .fail_after(route, after, status, count, retry_after_secs);
    }

    /// From now on, requests to `route` wait (after their latency, before
    /// any injected fault) until [`Sim::release`] lets them through. While
    /// waiting they are in flight; a client that hangs up leaves.
    /// No-op if already held.
    pub fn hold(&self, route: Route) {
        self.faults().hold(route);
    }

    /// Lets `n` requests to a held `route` through, waiting ones first (in
    /// arrival order), then the next to arrive. No-op if not held.
    pub fn release(&self, route: Route, n: usize) {
        self.faults().release(route, n);
    }

    /// Ends the hold on `route`: waiting requests go on, later ones pass.
    pub fn unhold(&self, route: Route) {
        self.faults().unhold(route);
    }

    /// The next `count` requests to `route` answer 200 `<html>502 proxy</html>`.
    pub fn non_json_next(&self, route: Route, count: u32) {
        self.faults().non_json_next(route, count);
    }

    /// Fixed added latency for one route, or for every route (`None`); the
    /// two add up.
    pub fn set_latency(&self, route: Option<Route>, ms: u64) {
        self.faults().set_latency(route, ms);
    }

    /// `POST …/validators` answers `status` (405, or 404 like Lodestar);
    /// `None` restores support.
    pub fn post_validators_unsupported(&self, status: Option<u16>) {
        *lock(&self.inner.post_unsupported) = status;
    }

    /// Answer 404 to a validators query when none of its ids is known.
    pub fn set_none_known_404(&self, on: bool) {
        self.inner.none_known_404.store(on, Ordering::Relaxed);
    }

    /// Ends every open event stream now (clients reconnect).
    pub fn close_streams(&self) {
        self.streams().close_all();
    }

    /// While on, open streams stay connected but receive nothing at all
    /// (no events, no keep-alives); events in between are lost.
    pub fn silence_streams(&self, on: bool) {
        self.streams().set_silenced(on);
    }

    /// Number of event streams currently connected.
    pub fn open_streams(&self) -> usize {
        self.streams().open()
    }

    /// Closes the beacon listener and every beacon connection (clients see
    /// connection refused). No-op if already stopped.
    pub async fn stop_beacon(&self) {
        if let Some(server) = self.inner.beacon.lock().await.take() {
            server.stop().await;
            tracing::info!("beacon stopped");
        }
    }

    /// Rebinds the beacon listener on the same port. No-op if running.
    pub async fn start_beacon(&self) -> std::io::Result<()> {
        let mut slot = self.inner.beacon.lock().await;
        if slot.is_none() {
            let (listener, _) = server::bind(self.inner.beacon_addr.port()).await?;
            *slot = Some(Server::spawn(listener, self.beacon_router()));
            tracing::info!("beacon started");
        }
        Ok(())
    }

    pub async fn beacon_up(&self) -> bool {
        self.inner.beacon.lock().await.is_some()
    }

    /// Requests received per route name (faulted ones included), every route
    /// listed.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        Route::ALL
            .into_iter()
            .map(|r| (r.to_string(), self.faults().count(r)))
            .collect()
    }

    pub fn count(&self, route: Route) -> u64 {
        self.faults().count(route)
    }

    /// The validators queries answered so far, oldest first (the last
    /// 100,000).
    pub fn validator_queries(&self) -> Vec<ValidatorQuery> {
        lock(&self.inner.queries).iter().copied().collect()
    }

    pub(crate) fn record_query(&self, q: ValidatorQuery) {
        let mut qs = lock(&self.inner.queries);
        if qs.len() >= MAX_QUERIES {
            qs.pop_front();
        }
        qs.push_back(q);
    }

    /// Requests to `route` in flight now: from reaching the route until
    /// the response body is fully sent, or the client goes away. An open
    /// event stream is in flight.
    pub fn in_flight(&self, route: Route) -> u64 {
        self.faults().in_flight(route)
    }

    /// The most requests to `route` that were in flight at once (as
    /// [`Sim::in_flight`] counts them) since start or the last
    /// [`Sim::reset_counts`].
    pub fn max_in_flight(&self, route: Route) -> u64 {
        self.faults().max_in_flight(route)
    }

    /// Requests in flight per route name, now and the most at once, every
    /// route listed: `{route: (now, max)}`.
    pub fn in_flight_counts(&self) -> BTreeMap<String, (u64, u64)> {
        Route::ALL
            .into_iter()
            .map(|r| (r.to_string(), (self.in_flight(r), self.max_in_flight(r))))
            .collect()
    }

    /// Zeroes the request counters and restarts the in-flight maxima from
    /// what is in flight now.
    pub fn reset_counts(&self) {
        self.faults().reset_counts();
    }

    // ---- keymanager ----------------------------------------------------

    /// `http://127.0.0.1:KPORT`: the validator client's Keymanager API.
    pub fn keymanager_url(&self) -> String {
        format!("http://{}", self.inner.keymanager_addr)
    }

    /// The Bearer token the keymanager accepts now (starts as
    /// [`SimConfig::keymanager_token`]).
    pub fn keymanager_token(&self) -> String {
        self.keymanager().token.clone()
    }

    /// Rotates the keymanager's token: from now on only `token` is accepted.
    pub fn set_keymanager_token(&self, token: &str) {
        self.keymanager().token = token.to_string();
    }

    /// What `keystores` lists from now on, in this order: an index is
    /// listed as [`Sim::pubkey`] of it, a string verbatim (malformed on
    /// purpose, if the test wants). Duplicates are kept.
    pub fn keymanager_set_local<K: Into<KeyRef>>(&self, keys: impl IntoIterator<Item = K>) {
        let keys = self.resolve_keys(keys);
        self.keymanager().local = keys;
    }

    /// What `remotekeys` lists from now on (as [`Sim::keymanager_set_local`]).
    pub fn keymanager_set_remote<K: Into<KeyRef>>(&self, keys: impl IntoIterator<Item = K>) {
        let keys = self.resolve_keys(keys);
        self.keymanager().remote = keys;
    }

    fn resolve_keys<K: Into<KeyRef>>(&self, keys: impl IntoIterator<Item = K>) -> Vec<String> {
        let chain = self.chain();
        keys.into_iter()
            .map(|k| match k.into() {
                KeyRef::Index(i) => chain::to_hex(&chain.pubkey(i)),
                KeyRef::Pubkey(s) => s,
            })
            .collect()
    }

    /// What `keystores` lists now.
    pub fn keymanager_local(&self) -> Vec<String> {
        self.keymanager().local.clone()
    }

    /// What `remotekeys` lists now.
    pub fn keymanager_remote(&self) -> Vec<String> {
        self.keymanager().remote.clone()
    }

    /// While on, `remotekeys` answers 404, whatever the token: a client
    /// without remote-signer support.
    pub fn keymanager_remotekeys_404(&self, on: bool) {
        self.keymanager().remotekeys_404 = on;
    }

    /// Closes the keymanager listener and every connection to it (clients
    /// see connection refused). No-op if already stopped.
    pub async fn stop_keymanager(&self) {
        if let Some(server) = self.inner.keymanager.lock().await.take() {
            server.stop().await;
            tracing::info!("keymanager stopped");
        }
    }

    /// Rebinds the keymanager listener on the same port. No-op if running.
    pub async fn start_keymanager(&self) -> std::io::Result<()> {
        let mut slot = self.inner.keymanager.lock().await;
        if slot.is_none() {
            let (listener, _) = server::bind(self.inner.keymanager_addr.port()).await?;
            *slot = Some(Server::spawn(listener, self.keymanager_router()));
            tracing::info!("keymanager started");
        }
        Ok(())
    }

    pub async fn keymanager_up(&self) -> bool {
        self.inner.keymanager.lock().await.is_some()
    }

    /// Stops the clock and every listener, cutting every connection.
    pub async fn shutdown(self) {
        if let Some(clock) = lock(&self.inner.clock).take() {
            clock.abort();
        }
        self.stop_beacon().await;
        self.stop_keymanager().await;
        if let Some(server) = self.inner.main.lock().await.take() {
            server.stop().await;
        }
    }
}
