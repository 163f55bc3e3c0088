//! The simulated beacon chain: the validator set (pubkey ↔ index, status,
//! epochs), the slot clock, the scripted lifecycle (deposit → pending →
//! active → exiting → exited → withdrawal) and the events the chain emits
//! (`block`, `head`, `head_v2`, `finalized_checkpoint`, `voluntary_exit`,
//! `chain_reorg`) as ready-to-send JSON.
//!
//! Pure state: no I/O, no clock of its own. The caller advances slots and
//! forwards the returned events. Status transitions happen only inside
//! [`Chain::advance`], at epoch boundaries, before that slot's `head` event
//! is produced. Direct overrides ([`Chain::set_status`]) take effect at once
//! and freeze the validator (no further scripted transitions).
//!
//! Scale: one compact `Validator` per index in a `Vec` (88 bytes; 1,000,000
//! validators take ~90 MB). Generated pubkeys carry a bijection of their
//! index, so pubkey → index is an arithmetic inverse plus one comparison, no
//! map (a million-entry hash map is slow to build and cache-hostile); only
//! pubkeys added by deposits sit in a small `HashMap`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// The beacon spec's "never" epoch.
pub const FAR_FUTURE_EPOCH: u64 = u64::MAX;
/// 32 ETH in Gwei.
const MAX_EFFECTIVE_BALANCE: u64 = 32_000_000_000;

/// A validator status as the Beacon API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    PendingInitialized,
    PendingQueued,
    ActiveOngoing,
    ActiveExiting,
    ActiveSlashed,
    ExitedUnslashed,
    ExitedSlashed,
    WithdrawalPossible,
    WithdrawalDone,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::PendingInitialized,
        Status::PendingQueued,
        Status::ActiveOngoing,
        Status::ActiveExiting,
        Status::ActiveSlashed,
        Status::ExitedUnslashed,
        Status::ExitedSlashed,
        Status::WithdrawalPossible,
        Status::WithdrawalDone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingInitialized => "pending_initialized",
            Status::PendingQueued => "pending_queued",
            Status::ActiveOngoing => "active_ongoing",
            Status::ActiveExiting => "active_exiting",
            Status::ActiveSlashed => "active_slashed",
            Status::ExitedUnslashed => "exited_unslashed",
            Status::ExitedSlashed => "exited_slashed",
            Status::WithdrawalPossible => "withdrawal_possible",
            Status::WithdrawalDone => "withdrawal_done",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of statuses parsed from a `status`/`statuses` filter. Accepts the
/// specific names and the coarse ones (`pending`, `active`, `exited`,
/// `withdrawal`). The empty filter matches everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusFilter(u16);

impl StatusFilter {
    /// Parses the given names; `Err(name)` for the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<StatusFilter, String> {
        let mut bits = 0u16;
        for name in names {
            bits |= match Status::parse(name) {
                Some(st) => st.bit(),
                None => {
                    let prefix = match name {
                        "pending" | "active" | "exited" | "withdrawal" => name,
                        _ => return Err(name.to_string()),
                    };
                    Status::ALL
                        .iter()
                        .filter(|st| st.as_str().starts_with(prefix))
                        .fold(0, |acc, st| acc | st.bit())
                }
            };
        }
        Ok(StatusFilter(bits))
    }

    /// No status named: every validator matches.
    pub fn is_all(self) -> bool {
        self.0 == 0
    }

    pub fn matches(self, st: Status) -> bool {
        self.0 == 0 || self.0 & st.bit() != 0
    }
}

/// How many epochs each scripted lifecycle step takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// A deposit stays unknown to the beacon until the first epoch boundary
    /// at or after `deposit epoch + deposit_delay_epochs` (so 0 and 1 both
    /// mean "the next boundary").
    pub deposit_delay_epochs: u64,
    /// Epochs from `pending_queued` to `active_ongoing`.
    pub activation_delay_epochs: u64,
    /// Epochs from `active_exiting`/`active_slashed` to `exited_*`.
    pub exit_delay_epochs: u64,
    /// Epochs from `exited_*` to `withdrawal_possible` (then one more epoch
    /// to `withdrawal_done`).
    pub withdrawable_delay_epochs: u64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            deposit_delay_epochs: 1,
            activation_delay_epochs: 2,
            exit_delay_epochs: 2,
            withdrawable_delay_epochs: 2,
        }
    }
}

/// One event ready for the SSE stream: its topic and its JSON `data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub topic: &'static str,
    pub data: String,
}

#[derive(Clone, Debug)]
pub struct Validator {
    pubkey: [u8; 48],
    status: Status,
    slashed: bool,
    activation_eligibility_epoch: u64,
    activation_epoch: u64,
    exit_epoch: u64,
    withdrawable_epoch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Exit,
    Slash,
}

/// A validator whose status will still change by itself.
#[derive(Clone, Copy, Debug)]
struct Flux {
    request: Option<Request>,
    /// Epoch at which it entered its current status.
    since: u64,
}

#[derive(Clone, Debug)]
struct PendingDeposit {
    pubkey: [u8; 48],
    known_epoch: u64,
}

/// The whole simulated chain.
pub struct Chain {
    seed: u64,
    slots_per_epoch: u64,
    lifecycle: Lifecycle,
    validators: Vec<Validator>,
    /// Indices `0..generated` carry [`generated_pubkey`]s, found by
    /// inverting the index word (no map needed).
    generated: u64,
    /// Pubkeys of validators added later by deposits.
    deposited: HashMap<[u8; 48], u64>,
    pending_deposits: Vec<PendingDeposit>,
    flux: BTreeMap<u64, Flux>,
    slot: u64,
    /// Bumped by every reorg; salts block and state roots.
    reorgs: u64,
}

/// SplitMix64's output mix: a bijection on `u64`.
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The inverse of `x ^ (x >> shift)`.
fn unxorshift(y: u64, shift: u32) -> u64 {
    let mut x = y;
    let mut s = shift;
    while s < 64 {
        x ^= y >> s;
        s += shift;
    }
    x
}

/// The multiplicative inverse of an odd `c` modulo 2^64 (Newton).
const fn mod_inverse(c: u64) -> u64 {
    let mut inv = c;
    let mut i = 0;
    while i < 6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(inv)));
        i += 1;
    }
    inv
}

/// The inverse of [`fmix`].
fn fmix_inverse(mut z: u64) -> u64 {
    z = unxorshift(z, 31);
    z = unxorshift(z.wrapping_mul(mod_inverse(0x94D0_49BB_1331_11EB)), 27);
    unxorshift(z.wrapping_mul(mod_inverse(0xBF58_476D_1CE4_E5B9)), 30)
}

/// SplitMix64: the fast deterministic hash behind every generated pubkey,
/// root and signature.
pub fn splitmix64(x: u64) -> u64 {
    fmix(x.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

/// The bijective word stored in bytes 1..9 of a generated pubkey.
fn index_word(seed: u64, index: u64) -> u64 {
    fmix(index ^ splitmix64(seed ^ 0x6A09_E667_F3BC_C909))
}

fn index_from_word(seed: u64, word: u64) -> u64 {
    fmix_inverse(word) ^ splitmix64(seed ^ 0x6A09_E667_F3BC_C909)
}

/// `n` pseudo-random bytes from `(seed, domain, a)`.
fn hash_bytes<const N: usize>(seed: u64, domain: u64, a: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut state = splitmix64(seed ^ splitmix64(domain ^ splitmix64(a)));
    for chunk in out.chunks_mut(8) {
        state = splitmix64(state);
        chunk.copy_from_slice(&state.to_be_bytes()[..chunk.len()]);
    }
    out
}

/// The deterministic pubkey generated for `index` under `seed`: 48 bytes,
/// first byte in `0x80..=0xbf` (a compressed G1 point's flag bits), bytes
/// 1..9 a bijection of the index (so distinct, and invertible for lookup),
/// the rest SplitMix64 output of `(seed, index)`.
pub fn generated_pubkey(seed: u64, index: u64) -> [u8; 48] {
    let mut pk: [u8; 48] = hash_bytes(seed, 0x5055_424b, index);
    pk[0] = 0x80 | (pk[0] & 0x3f);
    pk[1..9].copy_from_slice(&index_word(seed, index).to_be_bytes());
    pk
}

/// Lowercase `0x`-prefixed hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Renders one validator in the Beacon API's shape (quoted integers).
pub fn write_validator_json(seed: u64, out: &mut String, index: u64, v: &Validator) {
    let balance = match v.status {
        Status::WithdrawalDone => 0,
        _ => MAX_EFFECTIVE_BALANCE,
    };
    let mut creds = [0u8; 32];
    creds[1..].copy_from_slice(&hash_bytes::<31>(seed, 0x5743, index));
    let _ = write!(
        out,
        "{{\"index\":\"{index}\",\"balance\":\"{balance}\",\"status\":\"{}\",\"validator\":{{\"pubkey\":\"",
        v.status.as_str()
    );
    push_hex(out, &v.pubkey);
    out.push_str("\",\"withdrawal_credentials\":\"");
    push_hex(out, &creds);
    let _ = write!(
        out,
        "\",\"effective_balance\":\"{balance}\",\"slashed\":{},\"activation_eligibility_epoch\":\"{}\",\"activation_epoch\":\"{}\",\"exit_epoch\":\"{}\",\"withdrawable_epoch\":\"{}\"}}}}",
        v.slashed,
        v.activation_eligibility_epoch,
        v.activation_epoch,
        v.exit_epoch,
        v.withdrawable_epoch
    );
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push_str("0x");
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

/// Parses `0x` + 96 hex digits (either case) into pubkey bytes.
pub fn parse_pubkey(s: &str) -> Option<[u8; 48]> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    let raw = hex.as_bytes();
    if raw.len() != 96 {
        return None;
    }
    let mut out = [0u8; 48];
    for (i, pair) in raw.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

impl Chain {
    /// Generates `validators` validators, all `active_ongoing` since epoch 0.
    pub fn new(seed: u64, validators: u64, slots_per_epoch: u64, lifecycle: Lifecycle) -> Chain {
        let n = validators as usize;
        let mut vals = Vec::with_capacity(n);
        for i in 0..validators {
            let pubkey = generated_pubkey(seed, i);
            vals.push(Validator {
                pubkey,
                status: Status::ActiveOngoing,
                slashed: false,
                activation_eligibility_epoch: 0,
                activation_epoch: 0,
                exit_epoch: FAR_FUTURE_EPOCH,
                withdrawable_epoch: FAR_FUTURE_EPOCH,
            });
        }
        Chain {
            seed,
            slots_per_epoch: slots_per_epoch.max(1),
            lifecycle,
            validators: vals,
            generated: validators,
            deposited: HashMap::new(),
            pending_deposits: Vec::new(),
            flux: BTreeMap::new(),
            slot: 0,
            reorgs: 0,
        }
    }

    pub fn slot(&self) -> u64 {
        self.slot
    }

    pub fn epoch(&self) -> u64 {
        self.slot / self.slots_per_epoch
    }

    pub fn slots_per_epoch(&self) -> u64 {
        self.slots_per_epoch
    }

    /// Number of validators the chain knows (indices `0..len`).
    pub fn len(&self) -> u64 {
        self.validators.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The pubkey at `index`, or the one that would be generated for it.
    pub fn pubkey(&self, index: u64) -> [u8; 48] {
        match self.validators.get(index as usize) {
            Some(v) => v.pubkey,
            None => generated_pubkey(self.seed, index),
        }
    }

    pub fn index_of(&self, pubkey: &[u8; 48]) -> Option<u64> {
        let mut word = [0u8; 8];
        word.copy_from_slice(&pubkey[1..9]);
        let i = index_from_word(self.seed, u64::from_be_bytes(word));
        if i < self.generated
            && self
                .validators
                .get(i as usize)
                .is_some_and(|v| &v.pubkey == pubkey)
        {
            return Some(i);
        }
        self.deposited.get(pubkey).copied()
    }

    pub fn status(&self, index: u64) -> Option<Status> {
        self.validators.get(index as usize).map(|v| v.status)
    }

    /// Resolves a Beacon API validator id (`0x`+96 hex, or a decimal index)
    /// to a known index. Anything else, including comma-joined lists, is
    /// unknown.
    pub fn resolve_id(&self, id: &str) -> Option<u64> {
        if id.starts_with("0x") || id.starts_with("0X") {
            self.index_of(&parse_pubkey(id)?)
        } else if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            let i: u64 = id.parse().ok()?;
            (i < self.len()).then_some(i)
        } else {
            None
        }
    }

    /// Appends one Beacon API validator entry as JSON (all integers quoted).
    pub fn write_validator_json(&self, out: &mut String, index: u64) {
        if let Some(v) = self.validators.get(index as usize) {
            write_validator_json(self.seed, out, index, v);
        }
    }

    /// Copies of the validators at `indices` whose status passes `keep`,
    /// with the seed to render them: taken under the lock, rendered
    /// outside it (see [`write_validator_json`]).
    pub fn views(
        &self,
        indices: &[u64],
        keep: impl Fn(Status) -> bool,
    ) -> (u64, Vec<(u64, Validator)>) {
        let views = indices
            .iter()
            .filter_map(|i| self.validators.get(*i as usize).map(|v| (*i, v)))
            .filter(|(_, v)| keep(v.status))
            .map(|(i, v)| (i, v.clone()))
            .collect();
        (self.seed, views)
    }

    /// A block root for `slot` (changes after a reorg).
    pub fn block_root(&self, slot: u64) -> [u8; 32] {
        hash_bytes(self.seed ^ self.reorgs.rotate_left(32), 0x424c4b, slot)
    }

    fn state_root(&self, slot: u64) -> [u8; 32] {
        hash_bytes(self.seed ^ self.reorgs.rotate_left(32), 0x5354, slot)
    }

    /// The genesis validators root (a function of the seed).
    pub fn genesis_validators_root(&self) -> [u8; 32] {
        hash_bytes(self.seed, 0x4756, 0)
    }

    /// Advances the clock by `n` slots and returns the events, in order.
    /// At each epoch's first slot the lifecycle steps run first, then
    /// `block`, `head` (+`head_v2`) and `finalized_checkpoint` follow.
    pub fn advance(&mut self, n: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..n {
            self.slot += 1;
            let slot = self.slot;
            let boundary = slot % self.slots_per_epoch == 0;
            if boundary {
                self.process_epoch(self.epoch());
            }
            self.slot_events(slot, boundary, &mut events);
        }
        events
    }

    fn slot_events(&self, slot: u64, boundary: bool, events: &mut Vec<Event>) {
        let epoch = self.epoch();
        let spe = self.slots_per_epoch;
        let block = to_hex(&self.block_root(slot));
        let dependent = |e: u64| to_hex(&self.block_root((e * spe).saturating_sub(1)));
        events.push(Event {
            topic: "block",
            data: format!(
                "{{\"slot\":\"{slot}\",\"block\":\"{block}\",\"execution_optimistic\":false}}"
            ),
        });
        let head = format!(
            "{{\"slot\":\"{slot}\",\"block\":\"{block}\",\"state\":\"{}\",\"epoch_transition\":{boundary},\"previous_duty_dependent_root\":\"{}\",\"current_duty_dependent_root\":\"{}\",\"execution_optimistic\":false}}",
            to_hex(&self.state_root(slot)),
            dependent(epoch.saturating_sub(1)),
            dependent(epoch),
        );
        events.push(Event {
            topic: "head_v2",
            data: format!("{{\"version\":\"deneb\",\"data\":{head}}}"),
        });
        events.push(Event {
            topic: "head",
            data: head,
        });
        if boundary {
            let fin = epoch.saturating_sub(2);
            events.push(Event {
                topic: "finalized_checkpoint",
                data: format!(
                    "{{\"block\":\"{}\",\"state\":\"{}\",\"epoch\":\"{fin}\",\"execution_optimistic\":false}}",
                    to_hex(&self.block_root(fin * spe)),
                    to_hex(&self.state_root(fin * spe)),
                ),
            });
        }
    }

    /// Runs the lifecycle steps due at the start of `epoch`.
    fn process_epoch(&mut self, epoch: u64) {
        // Deposits the beacon now sees get the next indices, in order.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_deposits)
            .into_iter()
            .partition(|d| d.known_epoch <= epoch);
        self.pending_deposits = later;
        for d in due {
            let index = self.len();
            self.deposited.insert(d.pubkey, index);
            self.validators.push(Validator {
                pubkey: d.pubkey,
                status: Status::PendingInitialized,
                slashed: false,
                activation_eligibility_epoch: FAR_FUTURE_EPOCH,
                activation_epoch: FAR_FUTURE_EPOCH,
                exit_epoch: FAR_FUTURE_EPOCH,
                withdrawable_epoch: FAR_FUTURE_EPOCH,
            });
            self.flux.insert(
                index,
                Flux {
                    request: None,
                    since: epoch,
                },
            );
        }

        let lc = self.lifecycle;
        let mut settled = Vec::new();
        for (&index, flux) in self.flux.iter_mut() {
            let Some(v) = self.validators.get_mut(index as usize) else {
                settled.push(index);
                continue;
            };
            // Several steps may fall on one boundary when a delay is 0.
            loop {
                let next = match v.status {
                    Status::PendingInitialized if epoch > flux.since => {
                        v.activation_eligibility_epoch = epoch;
                        v.activation_epoch = epoch + lc.activation_delay_epochs;
                        Status::PendingQueued
                    }
                    Status::PendingQueued if epoch >= v.activation_epoch => Status::ActiveOngoing,
                    Status::ActiveOngoing | Status::ActiveExiting if flux.request.is_some() => {
                        let slash = flux.request == Some(Request::Slash);
                        flux.request = None;
                        if v.exit_epoch == FAR_FUTURE_EPOCH {
                            v.exit_epoch = epoch + lc.exit_delay_epochs;
                            v.withdrawable_epoch = v.exit_epoch + lc.withdrawable_delay_epochs;
                        }
                        if slash {
                            v.slashed = true;
                            Status::ActiveSlashed
                        } else {
                            Status::ActiveExiting
                        }
                    }
                    Status::ActiveExiting | Status::ActiveSlashed if epoch >= v.exit_epoch => {
                        if v.slashed {
                            Status::ExitedSlashed
                        } else {
                            Status::ExitedUnslashed
                        }
                    }
                    Status::ExitedUnslashed | Status::ExitedSlashed
                        if epoch >= v.withdrawable_epoch =>
                    {
                        Status::WithdrawalPossible
                    }
                    Status::WithdrawalPossible if epoch > v.withdrawable_epoch => {
                        Status::WithdrawalDone
                    }
                    _ => break,
                };
                v.status = next;
                flux.since = epoch;
            }
            let idle_active = v.status == Status::ActiveOngoing && flux.request.is_none();
            if idle_active || v.status == Status::WithdrawalDone {
                settled.push(index);
            }
        }
        for index in settled {
            self.flux.remove(&index);
        }
    }

    /// Submits a deposit. `None` picks a fresh generated pubkey. A pubkey the
    /// chain already knows (or a deposit already pending) changes nothing.
    pub fn deposit(&mut self, pubkey: Option<[u8; 48]>) -> [u8; 48] {
        let pubkey = match pubkey {
            Some(pk) => pk,
            None => {
                let mut k = self.len() + self.pending_deposits.len() as u64;
                loop {
                    let pk = generated_pubkey(self.seed, k);
                    if !self.is_known_or_pending(&pk) {
                        break pk;
                    }
                    k += 1;
                }
            }
        };
        if !self.is_known_or_pending(&pubkey) {
            self.pending_deposits.push(PendingDeposit {
                pubkey,
                known_epoch: self.epoch() + self.lifecycle.deposit_delay_epochs,
            });
        }
        pubkey
    }

    fn is_known_or_pending(&self, pk: &[u8; 48]) -> bool {
        self.index_of(pk).is_some() || self.pending_deposits.iter().any(|d| &d.pubkey == pk)
    }

    /// Requests a voluntary exit: returns the `voluntary_exit` event (emitted
    /// at once) when the index is known. The status changes at the next
    /// epoch boundary if the validator is `active_ongoing`.
    pub fn exit(&mut self, index: u64) -> Option<Event> {
        let v = self.validators.get(index as usize)?;
        if v.status == Status::ActiveOngoing {
            self.request(index, Request::Exit);
        }
        let signature: [u8; 96] = hash_bytes(self.seed, 0x0053_4947, index);
        Some(Event {
            topic: "voluntary_exit",
            data: format!(
                "{{\"message\":{{\"epoch\":\"{}\",\"validator_index\":\"{index}\"}},\"signature\":\"{}\"}}",
                self.epoch(),
                to_hex(&signature)
            ),
        })
    }

    /// An exit initiated without any event: an execution-layer exit
    /// (EIP-7002, a withdrawal-credential request) or the source of a
    /// consolidation (EIP-7251). The status moves at the next epoch
    /// boundary, with `exit_epoch` and `withdrawable_epoch` set as for a
    /// voluntary exit; nothing is published. Returns whether it was
    /// scheduled (active validators only).
    pub fn exit_silently(&mut self, index: u64) -> bool {
        match self.status(index) {
            Some(Status::ActiveOngoing) => {
                self.request(index, Request::Exit);
                true
            }
            _ => false,
        }
    }

    /// Schedules a slashing for the next epoch boundary (active validators
    /// only). Returns whether it was scheduled.
    pub fn slash(&mut self, index: u64) -> bool {
        match self.status(index) {
            Some(Status::ActiveOngoing | Status::ActiveExiting) => {
                self.request(index, Request::Slash);
                true
            }
            _ => false,
        }
    }

    fn request(&mut self, index: u64, request: Request) {
        let epoch = self.epoch();
        let flux = self.flux.entry(index).or_insert(Flux {
            request: None,
            since: epoch,
        });
        if flux.request != Some(Request::Slash) {
            flux.request = Some(request);
        }
    }

    /// Overrides a status at once and freezes the validator there. Epoch
    /// fields are made plausible for the new status. Returns false for an
    /// unknown index.
    pub fn set_status(&mut self, index: u64, status: Status) -> bool {
        let epoch = self.epoch();
        let Some(v) = self.validators.get_mut(index as usize) else {
            return false;
        };
        self.flux.remove(&index);
        v.status = status;
        v.slashed = matches!(status, Status::ActiveSlashed | Status::ExitedSlashed);
        match status {
            Status::PendingInitialized | Status::PendingQueued => {
                v.activation_eligibility_epoch = FAR_FUTURE_EPOCH;
                v.activation_epoch = FAR_FUTURE_EPOCH;
                v.exit_epoch = FAR_FUTURE_EPOCH;
                v.withdrawable_epoch = FAR_FUTURE_EPOCH;
            }
            Status::ActiveOngoing => {
                v.activation_epoch = v.activation_epoch.min(epoch);
                v.activation_eligibility_epoch = v.activation_eligibility_epoch.min(epoch);
                v.exit_epoch = FAR_FUTURE_EPOCH;
                v.withdrawable_epoch = FAR_FUTURE_EPOCH;
            }
            _ => {
                v.activation_epoch = v.activation_epoch.min(epoch);
                v.activation_eligibility_epoch = v.activation_eligibility_epoch.min(epoch);
                if v.exit_epoch == FAR_FUTURE_EPOCH {
                    v.exit_epoch = epoch + 1;
                    v.withdrawable_epoch = epoch + 1 + self.lifecycle.withdrawable_delay_epochs;
                }
            }
        }
        true
    }

    /// A `chain_reorg` event of `depth` slots at the current head; block and
    /// state roots change from here on.
    pub fn reorg(&mut self, depth: u64) -> Event {
        let slot = self.slot;
        let old_block = to_hex(&self.block_root(slot));
        let old_state = to_hex(&self.state_root(slot));
        self.reorgs += 1;
        Event {
            topic: "chain_reorg",
            data: format!(
                "{{\"slot\":\"{slot}\",\"depth\":\"{depth}\",\"old_head_block\":\"{old_block}\",\"new_head_block\":\"{}\",\"old_head_state\":\"{old_state}\",\"new_head_state\":\"{}\",\"epoch\":\"{}\",\"execution_optimistic\":false}}",
                to_hex(&self.block_root(slot)),
                to_hex(&self.state_root(slot)),
                self.epoch()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Chain {
        Chain::new(7, n, 4, Lifecycle::default())
    }

    fn advance_epochs(c: &mut Chain, n: u64) -> Vec<Event> {
        let target = (c.epoch() + n) * c.slots_per_epoch();
        let slots = target - c.slot();
        c.advance(slots)
    }

    #[test]
    fn pubkeys_are_deterministic_distinct_and_valid_looking() {
        let a = chain(1000);
        let b = chain(1000);
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let pk = a.pubkey(i);
            assert_eq!(pk, b.pubkey(i));
            assert!((0x80..=0xbf).contains(&pk[0]));
            assert!(seen.insert(pk));
            assert_eq!(a.index_of(&pk), Some(i));
        }
        assert_ne!(generated_pubkey(1, 0), generated_pubkey(2, 0));
    }

    #[test]
    fn index_word_inverts() {
        assert_eq!(
            mod_inverse(0x94D0_49BB_1331_11EB).wrapping_mul(0x94D0_49BB_1331_11EB),
            1
        );
        for seed in [0, 1, u64::MAX] {
            for i in [0, 1, 2, 1_000_000, u64::MAX] {
                assert_eq!(index_from_word(seed, index_word(seed, i)), i);
            }
        }
        let c = chain(10);
        // A pubkey whose index word points at a real index but whose other
        // bytes differ is unknown.
        let mut forged = c.pubkey(3);
        forged[47] ^= 1;
        assert_eq!(c.index_of(&forged), None);
    }

    #[test]
    fn hex_round_trips_either_case() {
        let pk = generated_pubkey(3, 9);
        let hex = to_hex(&pk);
        assert_eq!(hex.len(), 98);
        assert_eq!(parse_pubkey(&hex), Some(pk));
        assert_eq!(
            parse_pubkey(&hex.to_uppercase().replacen("0X", "0x", 1)),
            Some(pk)
        );
        assert_eq!(parse_pubkey("0x1234"), None);
        assert_eq!(parse_pubkey(&hex[2..]), None);
    }

    #[test]
    fn resolve_id_accepts_pubkeys_and_indices_only() {
        let c = chain(10);
        assert_eq!(c.resolve_id("3"), Some(3));
        assert_eq!(c.resolve_id("10"), None);
        assert_eq!(c.resolve_id("2,3"), None);
        assert_eq!(c.resolve_id(&to_hex(&c.pubkey(4))), Some(4));
        assert_eq!(c.resolve_id(&to_hex(&generated_pubkey(7, 99))), None);
        assert_eq!(c.resolve_id("-1"), None);
    }

    #[test]
    fn status_filter_accepts_specific_and_coarse_names() {
        let f = StatusFilter::parse(["active", "pending_queued"]).unwrap();
        assert!(f.matches(Status::ActiveOngoing));
        assert!(f.matches(Status::ActiveSlashed));
        assert!(f.matches(Status::PendingQueued));
        assert!(!f.matches(Status::PendingInitialized));
        assert!(!f.matches(Status::WithdrawalDone));
        assert!(StatusFilter::parse([])
            .unwrap()
            .matches(Status::WithdrawalDone));
        assert_eq!(StatusFilter::parse(["bogus"]), Err("bogus".to_string()));
    }

    #[test]
    fn head_marks_epoch_transition_and_finality_follows() {
        let mut c = chain(4);
        let events = c.advance(4);
        let heads: Vec<_> = events.iter().filter(|e| e.topic == "head").collect();
        assert_eq!(heads.len(), 4);
        assert!(heads[3].data.contains("\"slot\":\"4\""));
        assert!(heads[3].data.contains("\"epoch_transition\":true"));
        assert!(heads[0].data.contains("\"epoch_transition\":false"));
        let fin: Vec<_> = events
            .iter()
            .filter(|e| e.topic == "finalized_checkpoint")
            .collect();
        assert_eq!(fin.len(), 1);
        assert!(fin[0].data.contains("\"epoch\":\"0\""));
        let events = advance_epochs(&mut c, 2);
        let fin = events
            .iter()
            .rfind(|e| e.topic == "finalized_checkpoint")
            .unwrap();
        assert!(fin.data.contains("\"epoch\":\"1\""));
        // current_duty_dependent_root at an epoch start is the previous slot's block.
        let head = events.iter().rfind(|e| e.topic == "head").unwrap();
        assert!(head.data.contains(&format!(
            "\"current_duty_dependent_root\":\"{}\"",
            to_hex(&c.block_root(11))
        )));
    }

    #[test]
    fn deposit_walks_pending_to_active() {
        let mut c = chain(4);
        let pk = c.deposit(None);
        assert_eq!(c.index_of(&pk), None);
        c.advance(1);
        assert_eq!(
            c.index_of(&pk),
            None,
            "unknown until the next epoch boundary"
        );
        advance_epochs(&mut c, 1);
        assert_eq!(c.index_of(&pk), Some(4));
        assert_eq!(c.status(4), Some(Status::PendingInitialized));
        advance_epochs(&mut c, 1);
        assert_eq!(c.status(4), Some(Status::PendingQueued));
        advance_epochs(&mut c, 1);
        assert_eq!(c.status(4), Some(Status::PendingQueued));
        advance_epochs(&mut c, 1);
        assert_eq!(c.status(4), Some(Status::ActiveOngoing));
        assert!(c.flux.is_empty());
        // Depositing a known key again changes nothing.
        assert_eq!(c.deposit(Some(pk)), pk);
        advance_epochs(&mut c, 2);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn exit_walks_to_withdrawal_done_at_boundaries_only() {
        let mut c = chain(4);
        c.advance(1);
        let ev = c.exit(2).unwrap();
        assert_eq!(ev.topic, "voluntary_exit");
        assert!(ev.data.contains("\"validator_index\":\"2\""));
        c.advance(2);
        assert_eq!(c.status(2), Some(Status::ActiveOngoing));
        let mut seen = vec![];
        for _ in 0..8 {
            advance_epochs(&mut c, 1);
            seen.push((c.epoch(), c.status(2).unwrap()));
        }
        use Status::*;
        assert_eq!(
            seen,
            vec![
                (1, ActiveExiting),
                (2, ActiveExiting),
                (3, ExitedUnslashed),
                (4, ExitedUnslashed),
                (5, WithdrawalPossible),
                (6, WithdrawalDone),
                (7, WithdrawalDone),
                (8, WithdrawalDone),
            ]
        );
        assert!(c.flux.is_empty());
    }

    #[test]
    fn slash_goes_through_slashed_states() {
        let mut c = chain(4);
        assert!(c.slash(1));
        let mut seen = vec![];
        for _ in 0..6 {
            advance_epochs(&mut c, 1);
            seen.push(c.status(1).unwrap());
        }
        use Status::*;
        assert_eq!(
            seen,
            vec![
                ActiveSlashed,
                ActiveSlashed,
                ExitedSlashed,
                ExitedSlashed,
                WithdrawalPossible,
                WithdrawalDone
            ]
        );
        let mut s = String::new();
        c.write_validator_json(&mut s, 1);
        assert!(s.contains("\"slashed\":true"));
    }

    #[test]
    fn set_status_overrides_at_once_and_freezes() {
        let mut c = chain(4);
        c.exit(0);
        assert!(c.set_status(0, Status::ExitedUnslashed));
        assert_eq!(c.status(0), Some(Status::ExitedUnslashed));
        advance_epochs(&mut c, 10);
        assert_eq!(c.status(0), Some(Status::ExitedUnslashed));
        assert!(!c.set_status(99, Status::ActiveOngoing));
    }

    #[test]
    fn validator_json_has_quoted_integers() {
        let c = chain(2);
        let mut s = String::new();
        c.write_validator_json(&mut s, 1);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["index"], "1");
        assert_eq!(v["balance"], "32000000000");
        assert_eq!(v["status"], "active_ongoing");
        assert_eq!(v["validator"]["exit_epoch"], "18446744073709551615");
        assert_eq!(v["validator"]["pubkey"], to_hex(&c.pubkey(1)));
        assert_eq!(
            v["validator"]["withdrawal_credentials"]
                .as_str()
                .unwrap()
                .len(),
            66
        );
    }

    #[test]
    fn reorg_changes_roots() {
        let mut c = chain(2);
        c.advance(3);
        let before = c.block_root(3);
        let ev = c.reorg(2);
        assert_eq!(ev.topic, "chain_reorg");
        assert!(ev.data.contains("\"depth\":\"2\""));
        assert_ne!(before, c.block_root(3));
    }
}
