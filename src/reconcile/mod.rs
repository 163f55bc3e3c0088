//! The `Reconciler`: the clients and identity every pass uses, and the one
//! reconcile function ([`Reconciler::reconcile`], in `pass`).
//!
//! Owns the steps of a pass — vet the beacon node, fetch what is stale into
//! the cache, list the registry, apply under the guardrail and the
//! empty-registry rule — and the chain-spelling and scope checks. The steps
//! are private to the crate: every command goes through the one function,
//! which does not know which trigger woke it. Safety invariants 1–4 live
//! here: a failing source or beacon node fails the pass before anything is
//! planned, validators the node does not know yet are pending, not gone,
//! and (in [`crate::witness`]) no unassign goes out on the word of a node
//! that is not synced.

use std::sync::Arc;

use crate::apply::{Applied, Observer, Writer};
use crate::beacon::{BeaconClient, ValidatorId, Vetting};
use crate::cache::{ChainCache, Learned};
use crate::desired::{Desired, Refresh, Resolved, EXITING};
use crate::domain::{ChainId, DesiredValidator, Key};
use crate::error::Error;
use crate::http::Http;
use crate::inputs::SourceContent;
use crate::metrics::Metrics;
use crate::plan::{Plan, RegistrySnapshot, Scope};
use crate::progress::Progress;
use crate::registry::RegistryClient;
use crate::settings::Settings;
use crate::witness::Reason;

mod pass;

pub use pass::{PassObserver, PassOutcome, Policy, Stale, State};

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
        /// `--allow-empty`: a pass may unassign every validator in scope.
        allow_empty: bool,
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

/// The `reason` label of held deletes.
impl From<Hold> for crate::metrics::HeldReason {
    fn from(h: Hold) -> Self {
        use crate::metrics::HeldReason;
        match h {
            Hold::MaxDeletes => HeldReason::MaxDeletes,
            Hold::EmptyRegistry => HeldReason::EmptyRegistry,
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
    /// The HTTP client every party shares (it scrubs every secret).
    pub http: Http,
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
        Self::connect_until(settings, metrics, None).await
    }

    /// [`Reconciler::connect`] for the daemon: every retry wait of every
    /// request ends when `shutdown` turns true.
    pub async fn connect_until(
        settings: &Settings,
        metrics: Option<Arc<Metrics>>,
        shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Reconciler, Error> {
        let mut http = settings.http(metrics)?;
        if let Some(rx) = shutdown {
            http = http.with_shutdown(rx);
        }
        let registry = RegistryClient::new(
            http.clone(),
            settings.api_url.clone(),
            settings.auth_url.clone(),
            settings.api_key.clone(),
            settings.network.clone(),
        );
        let beacon = (!settings.beacon_urls.is_empty()).then(|| {
            BeaconClient::new(http.clone(), settings.beacon_urls.clone()).vetted(Vetting {
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
            http,
            registry,
            beacon,
            operator_id,
            chain_id: settings.chain_id.clone(),
            show_progress: settings.log_format == crate::settings::LogFormat::Console,
        })
    }

    /// Starts a light pass on the beacon side: a node the last pass
    /// vetted (right chain, synced) answers without being asked again, and
    /// is vetted afresh before it may confirm a removal (see
    /// [`crate::beacon::BeaconClient::begin_light_pass`]).
    pub(crate) fn begin_pass(&self) {
        if let Some(b) = &self.beacon {
            b.begin_light_pass();
        }
    }

    /// Starts a pass and picks its beacon node now: one on the configured
    /// chain (a wrong URL must never resolve to an empty desired set),
    /// synced if any is.
    pub(crate) async fn check_beacon(&self) -> Result<(), Error> {
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
        let desired = Desired::cold(content.clone(), self.chain_id.clone());
        let (full, epoch) = desired.lookups(cache, refresh);
        self.fetch(&full, &epoch, cache, |_| {}).await?;
        let mut resolved = crate::desired::full(content, cache, &self.chain_id);
        resolved.looked_up = full.len() + epoch.len();
        Ok(resolved)
    }

    /// Asks the beacon node for `full` (every status) and `epoch`
    /// (exit-initiated statuses only) and learns the answers into `cache`, telling
    /// `on_change` what changed.
    pub(crate) async fn fetch(
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
                    .validators(epoch, Some(&EXITING), &|n| progress.update(base + n))
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
    pub(crate) async fn list(&self, expected_rows: usize) -> Result<RegistrySnapshot, Error> {
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
    /// [`Reconciler::confirm_removals`]); `observer` is told right before the
    /// first write.
    async fn execute<O: PassObserver>(
        &self,
        planned: Plan,
        reasons: &[Reason],
        snapshot: &mut RegistrySnapshot,
        mode: Mode<'_>,
        scope: &Scope,
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
        observer.writing(&to_apply)?;
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
