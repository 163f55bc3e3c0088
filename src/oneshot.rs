//! The one-shot commands: `show`, `diff`, `sync`.
//!
//! Owns their flow — read inputs (before any network I/O, so input errors
//! surface first), connect, check the beacon node, resolve, list, plan,
//! have the witness confirm the removals (a node that is not synced: exit
//! 6, nothing printed or written), print, maybe apply — through the shared
//! [`Reconciler`]. stdout gets the JSON result only.

use std::io::Write;

use crate::apply::{NoObserver, Writer};
use crate::beacon::BeaconError;
use crate::cache::ChainCache;
use crate::cli::{Command, SyncArgs};
use crate::domain::ChainId;
use crate::error::{Error, EXIT_OK};
use crate::output;
use crate::plan::{plan, Scope};
use crate::reconcile::{check_chains, report_outside, Mode, Reconciler, Refresh};
use crate::settings::Settings;
use crate::sources;
use crate::witness;

fn stdout_err(e: std::io::Error) -> Error {
    Error::Runtime(format!("cannot write to stdout: {e}"))
}

/// Runs a one-shot command; returns the exit code on success.
pub async fn run(command: &Command, settings: &Settings) -> Result<u8, Error> {
    match command {
        Command::Show(_) => show(settings).await,
        Command::Diff(_) => sync(settings, None).await,
        Command::Sync(args) => sync(settings, Some(args)).await,
        Command::Watch(_) | Command::Demo(_) | Command::Probe(_) => {
            Err(Error::Runtime("not a one-shot command".into()))
        }
    }
}

async fn show(settings: &Settings) -> Result<u8, Error> {
    let rec = Reconciler::connect(settings, None).await?;
    let rows = rec.registry.list(&rec.operator_id).await?;
    let mut out = std::io::stdout().lock();
    output::assignments_json(&mut out, &rows)
        .and_then(|_| out.flush())
        .map_err(stdout_err)?;
    Ok(EXIT_OK)
}

/// `diff` (args = None) and `sync`.
async fn sync(settings: &Settings, args: Option<&SyncArgs>) -> Result<u8, Error> {
    let started = std::time::Instant::now();
    let content = sources::read_all(&settings.inputs, settings.allow_empty)?;
    let t_inputs = started.elapsed();
    let rec = Reconciler::connect(settings, None).await?;
    rec.check_beacon().await?;
    let mut cache = ChainCache::new();
    let everything = Refresh::all();
    // In turn, not at once: at 1,000,000 keys, holding the beacon answers
    // and the registry listing together costs more memory than it saves time.
    let resolved = rec.resolve(&content, &mut cache, &everything).await?;
    resolved.log_counts(content.pubkeys.len() + content.indices.len());
    let mut snapshot = rec.list(resolved.desired.len()).await?;
    let t_remote = started.elapsed();

    let apply = args.is_some_and(|a| a.apply && !a.dry_run);
    if let Some(a) = args {
        if !apply {
            tracing::info!(
                apply = a.apply,
                dry_run = a.dry_run,
                "dry-run: no writes performed"
            );
        }
    }
    let record_chains: std::collections::BTreeSet<ChainId> =
        content.records.iter().map(|r| r.chain_id.clone()).collect();
    check_chains(&rec.chain_id, &record_chains, &snapshot.chains())?;
    let scope = Scope::new(rec.chain_id.clone(), record_chains);
    report_outside(&snapshot, &scope);
    let never_stop = || false;
    let mode = if apply {
        Mode::Apply {
            writer: Writer {
                registry: &rec.registry,
                metrics: None,
                operator_id: &rec.operator_id,
                limiter: None,
                should_stop: &never_stop,
            },
            max_deletes: settings.max_deletes,
            hold_excess_deletes: false,
            allow_empty: settings.allow_empty,
            scope: &scope,
        }
    } else {
        Mode::Plan
    };
    let mut planned = plan(&resolved.desired, &snapshot, &scope);
    // Rows the witness keeps are dropped from the plan; the set is done with.
    drop(resolved);
    let confirmed = rec
        .confirm_removals(
            &mut planned,
            &mut cache,
            &content,
            content.needs_beacon(),
            &|_| false,
            |_| {},
        )
        .await?;
    if let Some(ns) = confirmed.not_synced {
        // Nothing printed: a plan made on a stale witness is not the plan.
        return Err(BeaconError::NotSynced(ns).into());
    }
    witness::log_reasons(&planned, &confirmed.reasons);
    {
        // The plan goes to stdout before any write, as optimum-keysync does.
        let mut out = std::io::stdout().lock();
        output::plan_json(&mut out, &planned)
            .and_then(|_| out.flush())
            .map_err(stdout_err)?;
    }
    tracing::debug!(
        inputs_ms = t_inputs.as_millis() as u64,
        remote_ms = (t_remote - t_inputs).as_millis() as u64,
        plan_print_ms = (started.elapsed() - t_remote).as_millis() as u64,
        "stages"
    );
    let outcome = rec
        .execute(
            planned,
            &confirmed.reasons,
            &mut snapshot,
            mode,
            &mut NoObserver,
        )
        .await?;
    if let Some(applied) = outcome.applied {
        if outcome.noop {
            tracing::info!("nothing to do");
        } else {
            tracing::info!(
                registered_added = applied.progress.registered_added,
                registered_skipped = applied.progress.registered_skipped,
                assigned = applied.progress.assigned,
                unassigned = applied.progress.unassigned,
                "sync applied"
            );
        }
    }
    Ok(EXIT_OK)
}
