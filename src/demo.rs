//! `keysync demo`: the main job against a local simulator, in one command.
//!
//! Owns the demo script only: start keysync-sim in-process (beacon node,
//! auth, console), write an input file, run `watch --apply` against it, and
//! move the simulated chain — a file edit, a voluntary exit, a new deposit —
//! so an operator can see what keysync does. Uses the real daemon unchanged.

use std::time::Duration;

use keysync_sim::{Sim, SimConfig};

use crate::cli::{Command, Common, DemoArgs, WatchArgs};
use crate::error::Error;
use crate::settings::{AllFlags, Settings};
use crate::watch;

fn say(step: &str) {
    tracing::info!(target: "keysync::demo", "{step}");
}

/// Active registry rows, as an operator reads them: `0-7, 9, 64`.
fn rows(sim: &Sim) -> String {
    let ids: Vec<u64> = sim
        .active_assignments()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut k = 0;
    while k < ids.len() {
        let mut j = k;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j > k {
            format!("{}-{}", ids[k], ids[j])
        } else {
            ids[k].to_string()
        });
        k = j + 1;
    }
    if out.is_empty() {
        "(empty)".into()
    } else {
        out.join(", ")
    }
}

/// Waits until `cond` holds (polling; at most `limit`); whether it did.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Resolves on SIGTERM (a no-op future where the handler cannot be set).
async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

pub async fn run(args: DemoArgs) -> Result<u8, Error> {
    let slot_ms = args.slot_ms.max(50);
    let sim = Sim::start(SimConfig {
        validators: args.validators.max(32),
        slot_ms,
        slots_per_epoch: 4,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Runtime(format!("cannot start the simulator: {e}")))?;
    let dir = std::env::temp_dir().join(format!("keysync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Runtime(format!("cannot create {}: {e}", dir.display())))?;
    let file = dir.join("validators.pubkeys");
    let pubkeys = |r: std::ops::Range<u64>| {
        r.map(|i| format!("{}\n", sim.pubkey(i)))
            .collect::<String>()
    };
    let write = |text: &str| {
        std::fs::write(&file, text)
            .map_err(|e| Error::Runtime(format!("cannot write {}: {e}", file.display())))
    };
    write(&format!(
        "# the validators this operator runs\n{}",
        pubkeys(0..8)
    ))?;
    // Someone else left two rows in the registry.
    sim.seed_assignment(30, "0x1", true);
    sim.seed_assignment(31, "0x1", true);

    say(&format!(
        "simulated chain: {} validators, {slot_ms} ms slots; registry: {}; the operator's file lists 0-7",
        args.validators.max(32),
        rows(&sim)
    ));
    let command = Command::Watch(WatchArgs {
        common: Common {
            api_url: Some(sim.url()),
            auth_url: Some(sim.url()),
            api_key: Some(sim.api_key()),
            beacon_url: Some(sim.beacon_url()),
            pubkeys_file: Some(file.clone()),
            log_format: Some(args.log_format.clone()),
            ..Default::default()
        },
        apply: true,
        max_deletes: None,
        data_dir: Some(dir.join("state")),
        listen: Some("127.0.0.1:0".into()),
        debounce_ms: None,
        max_wait_ms: None,
        resync_secs: None,
        writes_per_second: None,
        slot_ms: Some(slot_ms),
        ..Default::default()
    });
    let settings = Settings::resolve(&command, &AllFlags)?;
    let daemon = watch::start(settings).await?;
    say(&format!(
        "keysync watch --apply started: metrics at http://{}/metrics",
        daemon.listen
    ));

    // Each step: what happens, then what keysync did, read off the registry.
    let epochs = |n: u64| Duration::from_millis(slot_ms * 4 * n);
    let script = async {
        let ok = until(epochs(20), || rows(&sim) == "0-7").await;
        say(&format!(
            "keysync {}assigned 0-7 and unassigned 30, 31 (in no input) · registry: {}",
            if ok { "" } else { "has not yet " },
            rows(&sim)
        ));

        say("the operator appends 8-11 to the file");
        let mut text = format!("# the validators this operator runs\n{}", pubkeys(0..12));
        write(&text)?;
        let ok = until(epochs(20), || rows(&sim) == "0-11").await;
        say(&format!(
            "keysync {}assigned 8-11 · registry: {}",
            if ok { "" } else { "has not yet " },
            rows(&sim)
        ));

        say("validator 3 submits a voluntary exit (it stays assigned until withdrawal_*), and a new deposit is added to the file (pending until the chain processes it)");
        sim.exit(3);
        let new_key = sim.deposit(None);
        text.push_str(&format!("{new_key}\n"));
        write(&text)?;
        // A line per change only: validator 3's status, or the registry.
        let mut last = (String::new(), String::new());
        let done = |sim: &Sim| {
            !sim.active_assignments().contains(&(3, "0x1".into()))
                && sim
                    .index_of(&new_key)
                    .is_some_and(|i| sim.active_assignments().contains(&(i, "0x1".into())))
        };
        let deadline = tokio::time::Instant::now() + epochs(40);
        while tokio::time::Instant::now() < deadline {
            let now = (sim.status(3).unwrap_or_default(), rows(&sim));
            if now != last {
                say(&format!(
                    "epoch {}: validator 3 is {} · registry: {}",
                    sim.current_epoch(),
                    now.0,
                    now.1
                ));
                last = now;
            }
            if done(&sim) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let new_index = sim.index_of(&new_key).map_or("?".into(), |i| i.to_string());
        say(&format!(
            "keysync assigned the deposit (index {new_index}) once the chain knew it, and unassigned 3 at withdrawal_* · registry: {}",
            rows(&sim)
        ));
        say("done; keysync keeps running (Ctrl-C or SIGTERM stops it)");
        std::future::pending::<Result<(), Error>>().await
    };
    let limit = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = script => r,
        _ = limit => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = sigterm() => Ok(()),
    };
    let code = daemon.stop().await;
    say(&format!("stopped · registry: {}", rows(&sim)));
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    code
}
