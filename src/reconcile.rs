//! The `Reconciler`: one reconcile function for every command.
//!
//! Owns the pipeline — resolve the desired set (cache first, beacon for what
//! is stale), list the registry (or use the snapshot), plan, enforce the
//! guardrail, apply. It does not know which trigger woke it: the one-shot
//! commands call it once with everything stale; the daemon calls it with
//! what its triggers marked stale. Safety invariants 1–4 live here: a failing
//! source or beacon node fails the pass before anything is planned,
//! validators the node does not know yet are pending, not gone, and (in
//! [`crate::witness`]) no unassign goes out on the word of a node that is not
//! synced.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::apply::{Applied, Observer, Writer};
use crate::beacon::{BeaconClient, ValidatorId, Vetting};
use crate::cache::ChainCache;
use crate::desired::Learned;
use crate::domain::{ChainId, DesiredSet, DesiredValidator, Key, Pubkey, ValidatorIndex};
use crate::error::Error;
use crate::http::Http;
use crate::metrics::Metrics;
use crate::plan::{Plan, RegistrySnapshot, Scope};
use crate::progress::Progress;
use crate::registry::RegistryClient;
use crate::settings::Settings;
use crate::sources::SourceContent;
use crate::witness::Reason;

/// What the beacon node must be asked this pass, besides the ids the cache
/// does not know (always looked up: pending deposits, new inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refresh {
    /// Every id in full (one-shot; the daemon at start and after a reconnect).
    pub all: bool,
    /// Epoch boundary: check every known in-scope validator for
    /// `withdrawal_*` only (small answers; statuses change only at epochs).
    pub epoch: bool,
    /// These indices in full (validators under close watch).
    pub indices: BTreeSet<ValidatorIndex>,
}

impl Refresh {
    pub fn all() -> Self {
        Refresh {
            all: true,
            ..Default::default()
        }
    }

    /// Merges another refresh into this one.
    pub fn merge(&mut self, other: &Refresh) {
        self.all |= other.all;
        self.epoch |= other.epoch;
        self.indices.extend(other.indices.iter().copied());
    }
}

/// Statuses that take a validator out of the registry scope.
const LEAVING: [&str; 2] = ["withdrawal_possible", "withdrawal_done"];

/// The desired set and what could not be resolved.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub desired: DesiredSet,
    /// Ids the beacon node does not know (yet): pending deposits or typos.
    pub unknown: usize,
    /// Known validators out of scope (`withdrawal_*`).
    pub excluded: usize,
    /// Ids sent to the beacon node this pass.
    pub looked_up: usize,
    /// Up to three of the unknown ids, for the warning.
    pub unknown_sample: Vec<String>,
}

impl Resolved {
    /// Logs the unknown (pending) and excluded (withdrawn) counts.
    pub fn log_counts(&self, total: usize) {
        log_counts(self.unknown, self.excluded, &self.unknown_sample, total);
    }
}

/// Logs how many input lines are unknown to the beacon node (pending) and
/// how many are out of scope (withdrawn), out of `total`.
pub fn log_counts(unknown: usize, excluded: usize, sample: &[String], total: usize) {
    if unknown > 0 {
        tracing::warn!(
            unknown,
            total,
            sample = ?sample,
            "the beacon node does not know some validators (deposits not yet processed, or typos): they are assigned once it does, and a registry row of one is never unassigned on the word of a node that does not know it"
        );
    }
    if excluded > 0 {
        tracing::info!(
            excluded,
            "validators in withdrawal_* are no longer owned and leave the desired set"
        );
    }
}

/// Refuses chain ids the registry would not match as meant: a records chain
/// that is not in the registry's spelling (`0x` and lowercase hex: `0x1`,
/// never `1`, `0x01` or `" 0x1"`), and registry rows on another spelling
/// of the configured chain. keysync does not guess which spelling is meant:
/// a wrong guess moves every assignment from one key to the other.
pub fn check_chains<'a>(
    configured: &ChainId,
    records: impl IntoIterator<Item = &'a ChainId>,
    registry: impl IntoIterator<Item = &'a ChainId>,
) -> Result<(), Error> {
    let error = |origin: &str, message: String| {
        Err(Error::Config(crate::settings::ConfigError {
            origin: origin.to_string(),
            message,
        }))
    };
    for c in records {
        if c.is_canonical() {
            continue;
        }
        return match c.numeric() {
            Some(n) => error(
                "a records input",
                format!(
                    "names chain_id {:?}, which the registry spells {:?}{}: write it that way (chain ids are compared as exact strings)",
                    c.as_str(),
                    ChainId::canonical(n).as_str(),
                    if c.same_chain_spelled_otherwise(configured) {
                        " (the configured chain)"
                    } else {
                        ""
                    }
                ),
            ),
            None => error(
                "a records input",
                format!(
                    "names chain_id {:?}, which is not a chain id: write it as 0x-hex, e.g. \"0x1\"",
                    c.as_str()
                ),
            ),
        };
    }
    for c in registry {
        if c.same_chain_spelled_otherwise(configured) {
            return error(
                "the registry",
                format!(
                    "holds rows on chain_id {:?}, which is the configured chain {:?} (KEYSYNC_CHAIN_ID) spelled otherwise; keysync will not guess which spelling is meant: have those rows fixed",
                    c.as_str(),
                    configured.as_str()
                ),
            );
        }
    }
    Ok(())
}

/// Logs registry rows on chains outside `scope` (never unassigned).
pub fn report_outside(snapshot: &RegistrySnapshot, scope: &crate::plan::Scope) -> usize {
    let (n, sample) = snapshot.outside(scope, 5);
    if n > 0 {
        tracing::warn!(
            rows = n,
            sample = ?sample.iter().map(|(i, c)| format!("{i}@{c}")).collect::<Vec<_>>(),
            "the registry holds active rows on chains that are neither KEYSYNC_CHAIN_ID nor in a records input; keysync leaves them alone"
        );
    }
    n
}

/// What to do with a plan.
pub enum Mode<'a> {
    /// Plan only (diff, sync without --apply, shadow mode).
    Plan,
    /// Write it.
    Apply {
        writer: Writer<'a>,
        max_deletes: u64,
        /// One-shot refuses the whole pass (exit 5); the daemon holds the
        /// deletes back and lets the adds through.
        hold_excess_deletes: bool,
        /// `--allow-empty`: a pass may unassign every validator in `scope`.
        allow_empty: bool,
        scope: &'a Scope,
    },
}

/// Why a pass's unassigns were held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// More than `--max-deletes`.
    MaxDeletes,
    /// They would unassign every validator (not all withdrawn), without
    /// `--allow-empty`.
    EmptyRegistry,
}

impl Hold {
    pub fn label(self) -> &'static str {
        match self {
            Hold::MaxDeletes => "max_deletes",
            Hold::EmptyRegistry => "empty_registry",
        }
    }
}

/// Whether `plan` would leave a registry that has validators in `scope`
/// with none: it unassigns every one and assigns nothing, and at least one
/// unassign is for a reason other than a confirmed withdrawal. Emptying a
/// registry by accident looks exactly like this (an empty input, a
/// template left as shipped); every validator of an operator withdrawing
/// is not an accident.
pub fn empties_registry(
    plan: &Plan,
    reasons: &[Reason],
    snapshot: &RegistrySnapshot,
    scope: &Scope,
) -> bool {
    let n = plan.to_unassign.len();
    n > 0
        && !plan.to_assign.iter().any(|k| scope.contains(&k.1))
        && n >= snapshot.active().filter(|k| scope.contains(&k.1)).count()
        && (reasons.len() < n
            || reasons
                .iter()
                .any(|r| !matches!(r, Reason::Withdrawn { .. })))
}

/// The result of a pass.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Whether the plan had nothing to do.
    pub noop: bool,
    /// Deletes held back by the guardrail (daemon only), and why.
    pub held: Vec<Key>,
    pub hold: Option<Hold>,
    /// `None` when only planned.
    pub applied: Option<Applied>,
}

/// The clients and identity every pass uses.
pub struct Reconciler {
    pub registry: RegistryClient,
    pub beacon: Option<BeaconClient>,
    pub operator_id: String,
    pub chain_id: ChainId,
    /// Draw a progress line on long resolutions (terminal, console logs).
    pub show_progress: bool,
}

impl Reconciler {
    /// Builds the clients and resolves the operator id (from the settings,
    /// else `GET /api/v1/me`).
    pub async fn connect(
        settings: &Settings,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Reconciler, Error> {
        let http = Http::new(
            settings.timeout,
            settings.retry,
            metrics,
            vec![settings.api_key.clone()],
        )
        .map_err(Error::Runtime)?;
        let registry = RegistryClient::new(
            http.clone(),
            settings.api_url.clone(),
            settings.auth_url.clone(),
            settings.api_key.clone(),
            settings.network.clone(),
        );
        let beacon = (!settings.beacon_urls.is_empty()).then(|| {
            BeaconClient::new(http, settings.beacon_urls.clone()).vetted(Vetting {
                chain: settings
                    .chain_id
                    .numeric()
                    .map(|n| (n, settings.chain_id.to_string())),
                tolerance: settings.sync_tolerance,
            })
        });
        let operator_id = match &settings.operator_id {
            Some(id) => id.clone(),
            None => {
                tracing::info!(auth_url = %settings.auth_url, "operator_id not configured; resolving it via GET /api/v1/me");
                registry.me().await?
            }
        };
        Ok(Reconciler {
            registry,
            beacon,
            operator_id,
            chain_id: settings.chain_id.clone(),
            show_progress: settings.log_format == crate::settings::LogFormat::Console,
        })
    }

    /// Starts a pass on the beacon side: every node is vetted again (right
    /// chain, synced) before its next answer is used.
    pub fn begin_pass(&self) {
        if let Some(b) = &self.beacon {
            b.begin_pass();
        }
    }

    /// Starts a pass and picks its beacon node now: one on the configured
    /// chain (a wrong URL must never resolve to an empty desired set),
    /// synced if any is.
    pub async fn check_beacon(&self) -> Result<(), Error> {
        let Some(beacon) = &self.beacon else {
            return Ok(());
        };
        beacon.begin_pass();
        beacon.check().await?;
        tracing::debug!(beacon = %beacon.active_url(), "beacon node checked");
        Ok(())
    }

    /// Resolves `content` into the desired set, asking the beacon node only
    /// what `refresh` says is stale and learning the answers into `cache`.
    pub async fn resolve(
        &self,
        content: &SourceContent,
        cache: &mut ChainCache,
        refresh: &Refresh,
    ) -> Result<Resolved, Error> {
        let mut looked_up = 0;
        if content.needs_beacon() {
            let (full, epoch) = lookups(&content.pubkeys, &content.indices, cache, refresh);
            looked_up = full.len() + epoch.len();
            self.fetch(&full, &epoch, cache, |_| {}).await?;
        }
        let mut resolved = crate::desired::full(content, cache, &self.chain_id);
        resolved.looked_up = looked_up;
        Ok(resolved)
    }

    /// Asks the beacon node for `full` (every status) and `epoch` (leaving
    /// statuses only) and learns the answers into `cache`, telling
    /// `on_change` what changed.
    pub async fn fetch(
        &self,
        full: &[ValidatorId],
        epoch: &[ValidatorId],
        cache: &mut ChainCache,
        mut on_change: impl FnMut(Learned),
    ) -> Result<(), Error> {
        if full.is_empty() && epoch.is_empty() {
            return Ok(());
        }
        let beacon = self.beacon.as_ref().ok_or_else(|| {
            Error::Config(crate::settings::ConfigError {
                origin: "KEYSYNC_BEACON_URL".into(),
                message: "is required to resolve pubkeys or indices".into(),
            })
        })?;
        let progress = Progress::new(
            "resolving validators",
            full.len() + epoch.len(),
            self.show_progress,
        );
        let mut answers = beacon
            .validators(full, None, &|n| progress.update(n))
            .await?;
        if !epoch.is_empty() {
            let base = full.len();
            answers.extend(
                beacon
                    .validators(epoch, Some(&LEAVING), &|n| progress.update(base + n))
                    .await?,
            );
        }
        progress.finish();
        cache.reserve(answers.len().saturating_sub(cache.len()));
        for v in &answers {
            if let Some(learned) = cache.learn(v) {
                on_change(learned);
            }
        }
        Ok(())
    }

    /// Lists the registry, expecting about `expected_rows` rows (the
    /// answer's size limit scales with it).
    pub async fn list(&self, expected_rows: usize) -> Result<RegistrySnapshot, Error> {
        Ok(RegistrySnapshot::from_rows(
            self.registry
                .list_expecting(&self.operator_id, expected_rows)
                .await?,
        ))
    }

    /// Applies `planned` per `mode`, enforcing the guardrail first.
    /// Successful writes are reflected in `snapshot` and reported to
    /// `observer`. (Plan with [`plan`]; callers print or journal the plan
    /// between the two steps.)
    /// `reasons` has one entry per planned unassign (from
    /// [`Reconciler::confirm_removals`]).
    pub async fn execute<O: Observer>(
        &self,
        planned: Plan,
        reasons: &[Reason],
        snapshot: &mut RegistrySnapshot,
        mode: Mode<'_>,
        observer: &mut O,
    ) -> Result<Outcome, Error> {
        let mut outcome = Outcome {
            noop: planned.is_noop(),
            ..Default::default()
        };
        let Mode::Apply {
            writer,
            max_deletes,
            hold_excess_deletes,
            allow_empty,
            scope,
        } = mode
        else {
            return Ok(outcome);
        };
        let mut to_apply = planned;
        let hold = if !allow_empty && empties_registry(&to_apply, reasons, snapshot, scope) {
            Some(Hold::EmptyRegistry)
        } else if to_apply.to_unassign.len() as u64 > max_deletes {
            Some(Hold::MaxDeletes)
        } else {
            None
        };
        if let Some(hold) = hold {
            let planned = to_apply.to_unassign.len();
            if !hold_excess_deletes {
                return Err(match hold {
                    Hold::MaxDeletes => Error::Guardrail {
                        planned,
                        max: max_deletes,
                    },
                    Hold::EmptyRegistry => Error::EmptiesRegistry { planned },
                });
            }
            outcome.held = std::mem::take(&mut to_apply.to_unassign);
            outcome.hold = Some(hold);
        }
        if to_apply.is_noop() {
            outcome.applied = Some(Applied::default());
            return Ok(outcome);
        }
        let mut tracking = Tracking {
            snapshot,
            inner: observer,
        };
        let applied = writer.apply(&to_apply, reasons, &mut tracking).await?;
        outcome.applied = Some(applied);
        Ok(outcome)
    }
}

/// Keeps the snapshot equal to the registry as keysync's writes land.
struct Tracking<'a, O: Observer> {
    snapshot: &'a mut RegistrySnapshot,
    inner: &'a mut O,
}

impl<O: Observer> Observer for Tracking<'_, O> {
    fn registered(&mut self, chunk: &[DesiredValidator]) {
        self.inner.registered(chunk);
    }
    fn assigned(&mut self, keys: &[Key]) {
        for k in keys {
            self.snapshot.mark_assigned(k.clone());
        }
        self.inner.assigned(keys);
    }
    fn unassigned(&mut self, key: &Key) {
        self.snapshot.mark_unassigned(key);
        self.inner.unassigned(key);
    }
}

/// Splits the ids of `pubkeys` and `indices` lines to look up into (full
/// lookups, withdrawal-only checks).
pub(crate) fn lookups<'a>(
    pubkeys: impl IntoIterator<Item = &'a Pubkey>,
    indices: impl IntoIterator<Item = &'a ValidatorIndex>,
    cache: &ChainCache,
    refresh: &Refresh,
) -> (Vec<ValidatorId>, Vec<ValidatorId>) {
    let mut full: Vec<ValidatorId> = Vec::new();
    let mut epoch: Vec<ValidatorId> = Vec::new();
    let mut visit = |index: Option<ValidatorIndex>, pubkey: Option<Pubkey>| {
        match (index.and_then(|i| cache.get(i).map(|k| (i, k))), pubkey) {
            (Some((i, known)), _) => {
                if refresh.all || refresh.indices.contains(&i) {
                    full.push(ValidatorId::Index(i));
                } else if refresh.epoch && known.status.in_scope() {
                    // withdrawal_* never comes back into scope: no need to ask again.
                    epoch.push(ValidatorId::Index(i));
                }
            }
            (None, Some(pk)) => full.push(ValidatorId::Pubkey(pk)),
            (None, None) => full.extend(index.map(ValidatorId::Index)),
        }
    };
    for pk in pubkeys {
        visit(cache.index_of(pk), Some(*pk));
    }
    for i in indices {
        visit(Some(*i), None);
    }
    // In place: no second copy of a million ids to deduplicate them.
    full.sort_unstable();
    full.dedup();
    epoch.sort_unstable();
    epoch.dedup();
    (full, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::BeaconValidator;
    use crate::domain::Status;

    fn pk(i: u64) -> Pubkey {
        let mut b = [0u8; 48];
        b[..8].copy_from_slice(&i.to_be_bytes());
        Pubkey(b)
    }

    fn known(cache: &mut ChainCache, i: u64, s: &str) {
        cache.learn(&BeaconValidator {
            index: i,
            pubkey: pk(i),
            status: Status::parse(s),
            withdrawable_epoch: None,
        });
    }

    #[test]
    fn lookups_ask_only_for_what_is_stale() {
        let mut cache = ChainCache::new();
        known(&mut cache, 1, "active_ongoing");
        known(&mut cache, 2, "withdrawal_done");
        known(&mut cache, 3, "exited_unslashed");
        let content = SourceContent {
            pubkeys: vec![pk(1), pk(2), pk(9)],
            indices: vec![3, 4, 1],
            records: vec![],
        };

        let (full, epoch) = lookups(&content.pubkeys, &content.indices, &cache, &Refresh::all());
        assert_eq!(
            full,
            vec![
                ValidatorId::Pubkey(pk(9)),
                ValidatorId::Index(1),
                ValidatorId::Index(2),
                ValidatorId::Index(3),
                ValidatorId::Index(4)
            ],
            "each validator once, sorted"
        );
        assert!(epoch.is_empty());

        let (full, epoch) = lookups(
            &content.pubkeys,
            &content.indices,
            &cache,
            &Refresh {
                epoch: true,
                ..Default::default()
            },
        );
        assert_eq!(
            full,
            vec![ValidatorId::Pubkey(pk(9)), ValidatorId::Index(4)]
        );
        assert_eq!(
            epoch,
            vec![ValidatorId::Index(1), ValidatorId::Index(3)],
            "withdrawal_done never moves again"
        );

        let (full, epoch) = lookups(
            &content.pubkeys,
            &content.indices,
            &cache,
            &Refresh {
                indices: [3].into(),
                ..Default::default()
            },
        );
        assert_eq!(
            full,
            vec![
                ValidatorId::Pubkey(pk(9)),
                ValidatorId::Index(3),
                ValidatorId::Index(4)
            ]
        );
        assert!(epoch.is_empty());
    }
}
