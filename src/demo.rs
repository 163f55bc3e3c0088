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
    tracing::info!(target: "keysync::demo", "── {step}");
}

pub async fn run(args: DemoArgs) -> Result<u8, Error> {
    let sim = Sim::start(SimConfig {
        validators: args.validators.max(32),
        slot_ms: args.slot_ms.max(50),
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
    // Someone else left two stale rows in the registry.
    sim.seed_assignment(30, "0x1", true);
    sim.seed_assignment(31, "0x1", true);

    say(&format!(
        "simulator up: beacon {} · console {} · {} validators, {} ms slots. Inputs: {}",
        sim.beacon_url(),
        sim.url(),
        args.validators.max(32),
        args.slot_ms.max(50),
        file.display()
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
        slot_ms: Some(args.slot_ms.max(50)),
    });
    let settings = Settings::resolve(&command, &AllFlags)?;
    let daemon = watch::start(settings).await?;
    say(&format!(
        "keysync watch --apply running; metrics at http://{}/metrics",
        daemon.listen
    ));

    let epoch = Duration::from_millis(args.slot_ms.max(50) * 4);
    let registry = |sim: &Sim| {
        sim.active_assignments()
            .into_iter()
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let script = async {
        tokio::time::sleep(epoch * 2).await;
        say(&format!("registry now: {:?}", registry(&sim)));
        say("operator appends validators 8..12 to the pubkeys file");
        let mut text = format!("# the validators this operator runs\n{}", pubkeys(0..12));
        write(&text)?;
        tokio::time::sleep(epoch * 2).await;
        say(&format!("registry now: {:?}", registry(&sim)));
        say("validator 3 submits a voluntary exit (it stays assigned until withdrawal_*)");
        sim.exit(3);
        let new_key = sim.deposit(None);
        say(&format!("a new deposit {}… is made and added to the file (pending until the chain processes it)", &new_key[..18]));
        text.push_str(&format!("{new_key}\n"));
        write(&text)?;
        for _ in 0..12 {
            tokio::time::sleep(epoch).await;
            say(&format!(
                "epoch {}: validator 3 is {}; registry {:?}",
                sim.current_epoch(),
                sim.status(3).unwrap_or_default(),
                registry(&sim)
            ));
        }
        say("demo script done; keysync keeps running (Ctrl-C to stop)");
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
    };
    let code = daemon.stop().await;
    say(&format!("final registry: {:?}", registry(&sim)));
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    code
}
