//! Where the daemon's memory goes at N validators (default 1,000,000):
//! builds each long-lived structure the way the daemon does at start, in
//! the daemon's order, and prints the resident memory each one adds.
//!
//! `cargo run --release --example memory-bench` (N from `BENCH_N`). The
//! numbers are VmRSS deltas under the daemon's allocator settings
//! ([`keysync::alloc::tune`]): what the process holds, fragmentation
//! included. Transient buffers of a pass (beacon answers, lookup lists) are
//! not here; `bench/watch_bench.rs` measures the whole daemon.

use keysync::beacon::BeaconValidator;
use keysync::cache::ChainCache;
use keysync::desired::Live;
use keysync::domain::{Assignment, ChainId, Pubkey, Status};
use keysync::inputs::{InputSet, NoStore};
use keysync::plan::RegistrySnapshot;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A pubkey that looks random (BLS keys are).
fn pubkey(i: u64) -> Pubkey {
    let mut b = [0u8; 48];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D;
    for chunk in b.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    b[0] = 0x80 | (b[0] & 0x1f);
    Pubkey(b)
}

struct Meter {
    last: u64,
    start: u64,
}

impl Meter {
    fn step(&mut self, what: &str) {
        let now = rss_kib();
        println!(
            "| {what} | {:.1} | {:.1} |",
            (now as f64 - self.last as f64) / 1024.0,
            (now - self.start) as f64 / 1024.0
        );
        self.last = now;
    }
}

fn main() {
    keysync::alloc::tune();
    let n: u64 = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let chain = ChainId::new("0x1");
    let start = rss_kib();
    let mut m = Meter { last: start, start };
    println!("N = {n}; VmRSS at start {:.1} MiB\n", start as f64 / 1024.0);
    println!("| structure | adds (MiB) | total (MiB) |\n|---|---:|---:|");

    let mut cache = ChainCache::new();
    cache.reserve(n as usize);
    for i in 0..n {
        cache.learn(&BeaconValidator {
            index: i,
            pubkey: pubkey(i),
            status: Status::ActiveOngoing,
            withdrawable_epoch: None,
        });
    }
    let _ = cache.take_dirty();
    m.step("chain cache (`ChainCache`: slots and the table of pubkeys)");

    // The input as the daemon reads it: a file of n pubkey lines.
    let dir = std::env::temp_dir().join(format!("keysync-memory-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("keys.txt");
    {
        use std::io::Write as _;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).expect("input file"));
        for i in 0..n {
            writeln!(w, "{}", pubkey(i)).expect("input written");
        }
    }
    m.step("(the input file written)");
    let metrics = keysync::metrics::Metrics::new();
    let inputs = keysync::inputs::Inputs {
        pubkeys_file: Some(file.clone()),
        ..Default::default()
    };
    let mut input_set = InputSet::restore(inputs, &NoStore, &mut cache);
    input_set.reload_all(&NoStore, &metrics, &mut cache);
    input_set.persist(&NoStore);
    keysync::alloc::trim();
    m.step("input's last good content (`InputSet`: 4-byte ids) and its line counts (in the cache)");

    let mut live = Live::new(chain.clone());
    live.rebuild(&input_set.content(&cache), &cache);
    m.step("desired set's bookkeeping (`Live` before settling; touched keys included)");
    live.settle(&cache, |_| None);
    m.step("desired set (`DesiredSet`, after settling)");
    live.clear_touched();
    keysync::alloc::trim();
    m.step("touched keys released");

    let snapshot = RegistrySnapshot::from_rows((0..n).map(|i| Assignment {
        validator_index: i,
        chain_id: chain.clone(),
        active: true,
    }));
    m.step("registry snapshot (`RegistrySnapshot`)");
    let mut store = keysync::store::Store::open(&dir.join("state"), &chain).expect("store opens");
    for i in 0..n {
        // As after the first pass: every entry to persist.
        cache.learn(&BeaconValidator {
            index: i,
            pubkey: pubkey(i),
            status: Status::ActiveExiting,
            withdrawable_epoch: None,
        });
    }
    m.step("(chain cache marked dirty)");
    store.save_cache(&mut cache).expect("cache saved");
    store.flush().expect("flushed");
    m.step("store: the chain cache saved (`sled`)");
    store
        .save_source("file:/bench", &input_set.content(&cache))
        .expect("content saved");
    store.flush().expect("flushed");
    m.step("store: the input's last good content saved (`sled`)");
    let t = std::time::Instant::now();
    store.shed(true).expect("store re-opened");
    keysync::alloc::trim();
    let took = t.elapsed();
    m.step(&format!(
        "store: sled re-opened and its freed pages collected, as after every pass that wrote ({:.1} ms)",
        took.as_secs_f64() * 1000.0
    ));
    let t = std::time::Instant::now();
    keysync::alloc::trim();
    let took = t.elapsed();
    m.step(&format!(
        "after trimming the heap ({:.1} ms)",
        took.as_secs_f64() * 1000.0
    ));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nkept: {} lines, {} cached, {} desired, {} rows",
        cache.pubkey_lines(),
        cache.len(),
        live.desired().len(),
        snapshot.len()
    );
}
