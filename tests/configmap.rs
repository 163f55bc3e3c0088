//! Inputs mounted from a Kubernetes ConfigMap or Secret: the kubelet
//! updates them by writing a new `..<timestamp>` directory and swapping the
//! `..data` symlink the file's own symlink points through, so no file event
//! ever names the file. The daemon must see every swap, keep the last good
//! content through a swap to garbage, and catch on its resync a change whose
//! event was lost; a rotated API key Secret is used from the next request.
//! Each test asserts the registry the simulator ends with.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keysync::watch;
use support::*;

const T: Duration = Duration::from_secs(20);
const FILE: &str = "validators.pubkeys";

/// The kubelet's atomic writer, step by step: a new timestamped directory
/// with the payload, a `..data_tmp` link to it renamed over `..data`, the
/// old directory removed. The first write also makes the user-visible link
/// `validators.pubkeys -> ..data/validators.pubkeys`. Returns the payload's
/// real path.
fn kubelet_write(dir: &Path, generation: u32, text: &str) -> PathBuf {
    kubelet_write_named(dir, FILE, generation, text)
}

/// [`kubelet_write`] of a volume holding one file, `name`.
fn kubelet_write_named(dir: &Path, name: &str, generation: u32, text: &str) -> PathBuf {
    let ts = format!("..2026_11_23_13_00_{generation:02}.{generation:09}");
    let new = dir.join(&ts);
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join(name), text).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join(name).exists() {
        symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
    new.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_swap_is_seen_and_a_garbage_swap_keeps_the_last_good_content() {
    let sim = sim(64).await;
    let (_d, root) = tmp();
    let mount = root.join("inputs");
    std::fs::create_dir(&mount).unwrap();
    kubelet_write(&mount, 1, &pubkeys_text(&sim, 0..8));
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(mount.join(FILE));
    let daemon = watch::start(settings(watch_args(c, &root.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("8 assigned", T, || {
        active(&sim) == (0..8).collect::<Vec<_>>()
    })
    .await;

    kubelet_write(&mount, 2, &pubkeys_text(&sim, 0..12));
    eventually("12 assigned after a swap", T, || {
        active(&sim) == (0..12).collect::<Vec<_>>()
    })
    .await;
    kubelet_write(&mount, 3, &pubkeys_text(&sim, 0..16));
    eventually("16 assigned after another", T, || {
        active(&sim) == (0..16).collect::<Vec<_>>()
    })
    .await;

    let errors = || daemon.metrics.get("keysync_source_errors_total", &[]);
    let before = errors();
    kubelet_write(&mount, 4, "this is not a pubkey\n");
    eventually("the garbage swap is seen and refused", T, || {
        errors() > before
    })
    .await;
    assert_eq!(
        active(&sim),
        (0..16).collect::<Vec<_>>(),
        "the last good content stands"
    );
    kubelet_write(&mount, 5, &pubkeys_text(&sim, 0..10));
    eventually("a good swap after it applies", T, || {
        active(&sim) == (0..10).collect::<Vec<_>>()
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_event_was_lost_is_caught_by_the_resync() {
    let sim = sim(64).await;
    let (_d, root) = tmp();
    let mount = root.join("inputs");
    std::fs::create_dir(&mount).unwrap();
    kubelet_write(&mount, 1, &pubkeys_text(&sim, 0..4));
    // A second swap before the daemon starts: what the file resolves to is
    // a directory the daemon does not watch after the next swap.
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(mount.join(FILE));
    let mut args = watch_args(c, &root.join("state"), true, 10);
    args.resync_secs = Some(1);
    let daemon = watch::start(settings(args)).await.unwrap();
    eventually("4 assigned", T, || {
        active(&sim) == (0..4).collect::<Vec<_>>()
    })
    .await;
    let payload = kubelet_write(&mount, 2, &pubkeys_text(&sim, 0..5));
    eventually("5 assigned", T, || {
        active(&sim) == (0..5).collect::<Vec<_>>()
    })
    .await;
    // Written in place inside the timestamped directory: no watched
    // directory sees it (a lost event, as under a bind mount replaced
    // underneath).
    let tmp = payload.with_extension("new");
    std::fs::write(&tmp, pubkeys_text(&sim, 0..7)).unwrap();
    std::fs::rename(&tmp, &payload).unwrap();
    eventually("the resync re-read it", T, || {
        active(&sim) == (0..7).collect::<Vec<_>>()
    })
    .await;
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_api_key_secret_is_used_from_the_next_request() {
    let sim = sim(64).await;
    let (_d, root) = tmp();
    let secret = root.join("secret");
    std::fs::create_dir(&secret).unwrap();
    kubelet_write_named(&secret, "api_key", 1, &format!("{}\n", sim.api_key()));
    let file = root.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, 0..3)).unwrap();
    let mut c = watch_common(&sim, None);
    c.api_key = None;
    c.api_key_file = Some(secret.join("api_key"));
    c.pubkeys_file = Some(file.clone());
    let daemon = watch::start(settings(watch_args(c, &root.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("3 assigned", T, || active(&sim) == vec![0, 1, 2]).await;

    // The key is rotated: a new Secret, and the old key revoked.
    let rotated = "ovi_live_rotated_key_fedcba9876543210";
    kubelet_write_named(&secret, "api_key", 2, &format!("{rotated}\n"));
    sim.set_api_key(rotated);
    std::fs::write(&file, pubkeys_text(&sim, 0..4)).unwrap();
    eventually("assigned with the rotated key", T, || {
        active(&sim) == vec![0, 1, 2, 3]
    })
    .await;
    let metrics = daemon.metrics.render();
    daemon.stop().await.unwrap();
    assert!(!metrics.contains(rotated) && !metrics.contains("rotated_key"));
}
