//! A registry is never emptied by accident (safety invariant 3, whatever
//! `--max-deletes` says): a pass that would unassign every validator and
//! assign none is refused in one-shot (exit 5) and held in the daemon,
//! unless `--allow-empty` says it is meant. Every validator of an operator
//! withdrawing is not an accident. The shipped templates cannot wipe a
//! registry as shipped. Each test asserts the registry the simulator ends
//! with.

mod support;

use std::time::Duration;

use keysync::watch;
use keysync_sim::Route;
use support::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_a_pass_that_would_empty_the_registry_is_refused_in_one_shot() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 6, "0x1", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, "# every validator here, one per line\n").unwrap();
    let env = [("KEYSYNC_PUBKEYS_FILE", p(&file))];
    let r = keysync(&sim, &["sync", "--apply", "--max-deletes", "100"], &env).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(
        r.stderr.contains("refusing to unassign all 6") && r.stderr.contains("--allow-empty"),
        "{}",
        r.stderr
    );
    assert_eq!(active(&sim), (0..6).collect::<Vec<_>>(), "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);

    let r = keysync(
        &sim,
        &["sync", "--apply", "--max-deletes", "100", "--allow-empty"],
        &env,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(active(&sim).is_empty(), "emptying was meant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_whose_every_validator_withdrew_is_emptied_without_the_flag() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assignment(3, "0x1", true);
    sim.set_status(3, "withdrawal_done");
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [3])).unwrap();
    let r = keysync(
        &sim,
        &["sync", "--apply"],
        &[("KEYSYNC_PUBKEYS_FILE", p(&file))],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("withdrawn"), "{}", r.stderr);
    assert!(active(&sim).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_the_daemon_holds_a_pass_that_would_empty_the_registry() {
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 6, "0x1", true);
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, "# every validator here, one per line\n").unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 100)))
        .await
        .unwrap();
    let held = || {
        daemon.metrics.get(
            "keysync_held_deletes_by_reason",
            &[("reason", "empty_registry")],
        )
    };
    eventually("held", T, || held() == 6.0).await;
    assert_eq!(active(&sim), (0..6).collect::<Vec<_>>(), "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);
    // Adds still go through, and then the rest is not an emptying.
    std::fs::write(&file, pubkeys_text(&sim, [9])).unwrap();
    eventually("converged once the input names a validator", T, || {
        active(&sim) == vec![9]
    })
    .await;
    eventually("nothing held any more", T, || held() == 0.0).await;
    daemon.stop().await.unwrap();
}

/// `key: [..]` or `key: "..."` on the first line of `text` that has `key:`.
fn yaml_list(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: in the template"));
    let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The ConfigMap's `validators.pubkeys` block.
fn configmap_pubkeys(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("validators.pubkeys: |") {
            inside = true;
            continue;
        }
        if inside {
            if line.starts_with("    ") {
                out.push_str(line.trim_start());
                out.push('\n');
            } else {
                break;
            }
        }
    }
    out
}

fn template(path: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_3_the_kubernetes_template_as_shipped_removes_nothing() {
    let k8s = template("kubernetes/keysync-watch.yaml");
    let args = yaml_list(&k8s, "args");
    assert_eq!(args[0], "watch");
    let sim = sim(16).await;
    let (_d, dir) = tmp();
    sim.seed_assign_range(0, 6, "0x1", true);
    let file = dir.join("validators.pubkeys");
    std::fs::write(&file, configmap_pubkeys(&k8s)).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let apply = args.iter().any(|a| a == "--apply");
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), apply, 10)))
        .await
        .unwrap();
    let passes = || daemon.metrics.get("keysync_reconciles_total", &[]);
    eventually("several passes ran", T, || passes() >= 3.0).await;
    assert_eq!(active(&sim), (0..6).collect::<Vec<_>>(), "nothing removed");
    assert_eq!(sim.count(Route::Unassign), 0);
    daemon.stop().await.unwrap();

    // The CronJob and compose file start in shadow mode too.
    let cron = yaml_list(&template("kubernetes/keysync-cronjob.yaml"), "args");
    assert!(!cron.iter().any(|a| a == "--apply"), "{cron:?}");
    let compose = yaml_list(&template("docker-compose.yml"), "command");
    assert!(!compose.iter().any(|a| a == "--apply"), "{compose:?}");
}

#[test]
fn the_systemd_units_start_in_shadow_mode_and_do_not_restart_on_configuration_errors() {
    for unit in ["systemd/keysync.service", "systemd/keysync-sync.service"] {
        let text = template(unit);
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        assert!(!exec.contains("--apply"), "{unit}: {exec}");
    }
    let daemon = template("systemd/keysync.service");
    let prevent = daemon
        .lines()
        .find(|l| l.starts_with("RestartPreventExitStatus="))
        .expect("RestartPreventExitStatus");
    let codes: Vec<&str> = prevent["RestartPreventExitStatus=".len()..]
        .split_whitespace()
        .collect();
    assert!(codes.contains(&"2") && codes.contains(&"4"), "{prevent}");
}
