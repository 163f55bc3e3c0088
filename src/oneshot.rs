//! The one-shot commands: `show`, `diff`, `sync`.
//!
//! Owns their flow — read inputs (before any network I/O, so input errors
//! surface first), connect, then one call of the shared reconcile function
//! on a cold state with everything stale, whose observer prints the plan
//! before any write and refuses a pass whose removals no synced beacon node
//! confirmed (exit 6, nothing printed or written). stdout gets the JSON
//! result only.

use std::io::Write;

use crate::apply::{Observer, Writer};
use crate::cli::{Command, SyncArgs};
use crate::desired::{log_counts, Counts, Desired};
use crate::error::{Error, EXIT_OK};
use crate::inputs::{self, keymanager};
use crate::output;
use crate::plan::{Plan, RegistrySnapshot, Scope};
use crate::reconcile::{report_outside, Mode, PassObserver, Policy, Reconciler, Stale, State};
use crate::settings::Settings;
use crate::witness::Confirmed;

fn stdout_err(e: std::io::Error) -> Error {
    Error::Runtime(format!("cannot write to stdout: {e}"))
}

/// Runs a one-shot command; returns the exit code on success.
pub async fn run(command: &Command, settings: &Settings) -> Result<u8, Error> {
    match command {
        Command::Show(_) => show(settings).await,
        Command::Diff(_) => sync(settings, None).await,
        Command::Sync(args) => sync(settings, Some(args)).await,
        Command::Watch(_)
        | Command::Demo(_)
        | Command::Probe(_)
        | Command::Doctor(_)
        | Command::Completions(_)
        | Command::Man => Err(Error::Runtime("not a one-shot command".into())),
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
    let mut content = inputs::read_all(&settings.inputs, settings.allow_empty)?;
    if !settings.inputs.keymanagers.is_empty() {
        // Inputs still: a keymanager that cannot be read is exit 4, before
        // anything else is asked of any remote party.
        let clients = keymanager::clients(&settings.http(None)?, &settings.inputs.keymanagers);
        content
            .pubkeys
            .extend(keymanager::read_all(&clients, settings.allow_empty).await?);
    }
    let t_inputs = started.elapsed();
    let rec = Reconciler::connect(settings, None).await?;

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
        }
    } else {
        Mode::Plan
    };
    let mut state = State::cold(Desired::cold(content, rec.chain_id.clone()));
    let mut printer = Printer { started, t_inputs };
    let outcome = rec
        .reconcile(
            &mut state,
            &Stale::everything(),
            Policy {
                mode,
                refuse_unconfirmed: true,
            },
            &mut printer,
        )
        .await?;
    if let Some(applied) = outcome.applied.applied {
        if outcome.applied.noop {
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

/// The one-shot observer: logs the counts, prints the plan on stdout
/// before any write, as optimum-keysync does.
struct Printer {
    started: std::time::Instant,
    t_inputs: std::time::Duration,
}

impl Observer for Printer {}

impl PassObserver for Printer {
    fn resolved(&mut self, c: &Counts) {
        log_counts(c.unknown, c.excluded, &c.sample, c.lines);
    }

    fn outside(&mut self, _rows: usize, snapshot: &RegistrySnapshot, scope: &Scope) {
        report_outside(snapshot, scope);
    }

    fn planned(&mut self, plan: &Plan, _confirmed: &Confirmed) -> Result<(), Error> {
        let t_remote = self.started.elapsed();
        let mut out = std::io::stdout().lock();
        output::plan_json(&mut out, plan)
            .and_then(|_| out.flush())
            .map_err(stdout_err)?;
        tracing::debug!(
            inputs_ms = self.t_inputs.as_millis() as u64,
            remote_ms = (t_remote - self.t_inputs).as_millis() as u64,
            plan_print_ms = (self.started.elapsed() - t_remote).as_millis() as u64,
            "stages"
        );
        Ok(())
    }
}
