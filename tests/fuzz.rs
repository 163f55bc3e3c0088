//! Bounded fuzzing of every parser keysync has, on stable Rust.
//!
//! Property tests (proptest) over (a) arbitrary bytes and (b) mutated valid
//! inputs — real captures (`tests/fixtures/`) and generated samples, with
//! bytes flipped and set, truncated, deleted, tokens and bytes inserted,
//! slices duplicated and repeated — for: the input files through
//! `inputs::parse` (pubkeys list, index list, records JSON, EIP-2335
//! keystore, deposit data, and the drop directory's detection), the
//! Keymanager answers, the beacon node's validators answers, the console
//! API's listing, beacon events, the SSE framing under the event stream and
//! the event stream as a whole, plus `Retry-After` and the domain's own
//! parsers (pubkey, decimal, chain id, status).
//!
//! Properties: nothing panics; nothing hangs (a watchdog aborts the run
//! with the input after `FUZZ_HANG_SECS`, 60 s, and a case over
//! `FUZZ_SLOW_MS`, 5 s, fails); what parses agrees with an independent
//! reading of the same bytes (serde_json's tree, or a plain
//! re-implementation of the documented rule), so every pubkey parsed comes
//! from the input and counts never exceed its lines or elements; a valid
//! input parses to exactly what was written; errors name the file (inputs),
//! the keymanager or the beacon URL, never carry a secret, and stay short.
//!
//! Every test is `#[ignore]`d, so `cargo test` skips them.
//! `cargo test --test fuzz -- --ignored` runs `FUZZ_CASES` (256 unless set)
//! cases per strategy; `fuzz/run.sh` runs every target in release mode with
//! a large budget and prints one line per target. A failing case's seed is
//! kept in `fuzz/regressions.txt` and replayed first on the next run.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt::{self, Debug};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use keysync::beacon::events::transport::{BoundedBody, Oversize, PRIME};
use keysync::beacon::events::{
    excerpt, parse_event, Event, Item, StreamError, Subscription, MAX_LINE_BYTES,
};
use keysync::beacon::{BeaconClient, BeaconError, BeaconValidator};
use keysync::domain::{decimal, Assignment, ChainId, Pubkey, Status};
use keysync::http::{parse_retry_after, Http, RetryPolicy};
use keysync::inputs::keymanager::{KeyList, KeymanagerClient, KeymanagerError};
use keysync::inputs::{parse, At, Location, Record, SourceContent, SourceError, SourceKind};
use keysync::registry::{RegistryClient, RegistryError};
use keysync::secret::{Secret, MIN_RUN};
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use url::Url;

// ---- harness ---------------------------------------------------------------

/// Where a failing case's seed is kept, and replayed from first.
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions.txt");

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Cases per strategy: `FUZZ_CASES`, 256 unless set.
fn cases() -> u32 {
    u32::try_from(env_num("FUZZ_CASES", 256)).unwrap_or(u32::MAX)
}

/// One fuzz target (one parser): several strategies, one result line.
struct Fuzz {
    target: &'static str,
    started: Instant,
    cases: u64,
}

impl Fuzz {
    fn new(target: &'static str) -> Self {
        Fuzz {
            target,
            started: Instant::now(),
            cases: 0,
        }
    }

    /// Runs `test` on `cases` inputs drawn from `values` (the strategy
    /// named `strategy`), after any seeds kept in [`REGRESSIONS`]; a failure
    /// panics with the smallest failing input.
    fn check<S>(
        &mut self,
        strategy: &'static str,
        cases: u32,
        values: S,
        test: impl Fn(&S::Value) -> Result<(), TestCaseError>,
    ) where
        S: Strategy,
        S::Value: Clone + Send + 'static,
    {
        let label = format!("{}/{strategy}", self.target);
        let slow = Duration::from_millis(env_num("FUZZ_SLOW_MS", 5_000));
        let ran = AtomicU64::new(0);
        let mut runner = TestRunner::new(ProptestConfig {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
            max_shrink_iters: 20_000,
            max_shrink_time: 300_000,
            ..ProptestConfig::default()
        });
        let result = runner.run(&values, |value| {
            ran.fetch_add(1, Ordering::Relaxed);
            let _armed = arm(&label, &value);
            let start = Instant::now();
            test(&value)?;
            let took = start.elapsed();
            prop_assert!(
                took <= slow,
                "one case took {:?} (FUZZ_SLOW_MS is {})",
                took,
                slow.as_millis()
            );
            Ok(())
        });
        self.cases += ran.load(Ordering::Relaxed);
        if let Err(e) = result {
            panic!("fuzz {label}: {e}");
        }
    }

    /// The line `fuzz/run.sh` reads.
    fn done(self) {
        println!(
            "FUZZ-RESULT {} cases={} seconds={:.1}",
            self.target,
            self.cases,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The case each thread is running, for the watchdog.
struct Armed {
    since: Instant,
    label: String,
    input: Box<dyn Debug + Send>,
}

type ArmedMap = Mutex<HashMap<ThreadId, Armed>>;

fn armed() -> &'static ArmedMap {
    static ARMED: OnceLock<ArmedMap> = OnceLock::new();
    static WATCH: Once = Once::new();
    let map = ARMED.get_or_init(Default::default);
    WATCH.call_once(|| {
        std::thread::spawn(move || watch(map));
    });
    map
}

/// Aborts the run, printing the input, when one case runs for longer than
/// `FUZZ_HANG_SECS`: a hang never passes as a slow run.
fn watch(map: &'static ArmedMap) {
    let hang = Duration::from_secs(env_num("FUZZ_HANG_SECS", 60));
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let map = map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = map.values().find(|a| a.since.elapsed() > hang) {
            let input = format!("{:?}", a.input);
            let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fuzz-hang-{}.txt", a.label.replace('/', "-")));
            let _ = std::fs::write(&file, &input);
            let shown: String = input.chars().take(2_000).collect();
            eprintln!(
                "HANG: {} ran one case for over {hang:?} (FUZZ_HANG_SECS); the input (whole in {}): {shown}",
                a.label,
                file.display()
            );
            std::process::abort();
        }
    }
}

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        armed()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&std::thread::current().id());
    }
}

fn arm<T: Debug + Clone + Send + 'static>(label: &str, value: &T) -> Disarm {
    armed()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            std::thread::current().id(),
            Armed {
                since: Instant::now(),
                label: label.to_string(),
                input: Box::new(value.clone()),
            },
        );
    Disarm
}

/// Bytes, shown as an escaped byte string in failures.
#[derive(Clone, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Debug for Blob {
    /// Escaped; a large input by its head and tail (its seed in
    /// `fuzz/regressions.txt` replays it whole).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        if b.len() <= 4096 {
            write!(f, "b\"{}\" ({} bytes)", b.escape_ascii(), b.len())
        } else {
            write!(
                f,
                "b\"{}\" … b\"{}\" ({} bytes)",
                b[..2048].escape_ascii(),
                b[b.len() - 512..].escape_ascii(),
                b.len()
            )
        }
    }
}

impl Blob {
    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

// ---- mutations ---------------------------------------------------------------

/// Inputs grow to at most this by mutation.
const MAX_MUTATED: usize = 1 << 20;

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Delete(Index, u8),
    Insert(Index, Blob),
    /// `len` bytes from `from`, inserted again at `to`.
    Duplicate {
        from: Index,
        len: u16,
        to: Index,
    },
    /// `len` bytes from `from`, repeated `times` times in place.
    Repeat {
        from: Index,
        len: u8,
        times: u16,
    },
}

const PK_HEX: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
/// The keymanager token: scrubbed from every error.
const KM_TOKEN: &str = "km_tok_Zq8Xv3Lp0Rt7Wn2Yb5Kd9Hs4Jf6Gc1";
/// The registry API key: scrubbed from every error.
const API_KEY: &str = "ovi_live_Fz3Qk9Lm2Np7Rs4Tv8Wx1Yb6Cd0Gh5J";

/// What mutations insert: structure, numbers at the edges, field names,
/// SSE fields, secrets, and invalid UTF-8.
fn tokens() -> Vec<Vec<u8>> {
    let text = [
        "\n",
        "\r\n",
        "\r",
        "\n\n",
        "#",
        " ",
        "\t",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\\",
        "\\\"",
        "\\u0000",
        "\\ud800",
        "\\u0030",
        "\\n",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "-0",
        "1.0",
        "1e2",
        "1e999",
        "007",
        "18446744073709551615",
        "18446744073709551616",
        "340282366920938463463374607431768211456",
        "0x",
        "0X",
        "\"0x1\"",
        "\"\"",
        "{}",
        "[]",
        "\u{feff}",
        "\u{a0}",
        "\u{2028}",
        "é",
        "😀",
        "\"pubkey\":",
        "\"validating_pubkey\":",
        "\"validator_index\":",
        "\"chain_id\":",
        "\"validator_key\":",
        "\"data\":",
        "\"validators\":",
        "\"assignments\":",
        "\"active\":",
        "\"index\":",
        "\"status\":",
        "\"validator\":",
        "\"withdrawable_epoch\":",
        "\"slot\":",
        "\"epoch\":",
        "\"message\":",
        "\"depth\":",
        "\"epoch_transition\":",
        "\"validator_index\":\"3\"",
        "event: ",
        "event:",
        "data: ",
        "data:",
        "id: ",
        "id",
        "retry: 10",
        ": keep-alive",
        "event: head\n",
        "event: voluntary_exit\n",
        "event: head_v2\n",
        "data: {\"slot\":\"1\"}\n\n",
        PK_HEX,
        KM_TOKEN,
        API_KEY,
    ];
    let mut t: Vec<Vec<u8>> = text.iter().map(|s| s.as_bytes().to_vec()).collect();
    t.push(format!("0x{PK_HEX}").into_bytes());
    t.push(format!("Bearer {KM_TOKEN}").into_bytes());
    t.push("[".repeat(130).into_bytes());
    t.push("{\"a\":".repeat(130).into_bytes());
    t.push("9".repeat(400).into_bytes());
    t.push("x".repeat(300).into_bytes());
    for b in [
        &b"\xff"[..],
        b"\xfe",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xf0\x9f\x98",
        b"\xc0\xaf",
        b"\xef\xbb\xbf",
        b"\x00",
    ] {
        t.push(b.to_vec());
    }
    t
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(b"\"{}[],:\\\n\r#0123456789xX aAfF-+.eE\t\x00\xff\xc3\xa9\x80".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let insert = prop_oneof![
        3 => select(tokens()),
        1 => vec(any::<u8>(), 1..16),
    ];
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        4 => (any::<Index>(), insert).prop_map(|(i, b)| Mutation::Insert(i, Blob(b))),
        2 => (any::<Index>(), 1u16..512, any::<Index>())
            .prop_map(|(from, len, to)| Mutation::Duplicate { from, len, to }),
        1 => (any::<Index>(), 1u8..64, 2u16..2_000)
            .prop_map(|(from, len, times)| Mutation::Repeat { from, len, times }),
    ]
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    let n = b.len();
    match m {
        Mutation::Flip(i, bit) if n > 0 => b[i.index(n)] ^= 1 << bit,
        Mutation::Set(i, v) if n > 0 => b[i.index(n)] = *v,
        Mutation::Truncate(i) => b.truncate(i.index(n + 1)),
        Mutation::Delete(i, len) if n > 0 => {
            let at = i.index(n);
            b.drain(at..(at + *len as usize).min(n));
        }
        Mutation::Insert(i, bytes) => {
            let at = i.index(n + 1);
            b.splice(at..at, bytes.0.iter().copied());
        }
        Mutation::Duplicate { from, len, to } if n > 0 => {
            let a = from.index(n);
            let slice = b[a..(a + *len as usize).min(n)].to_vec();
            let at = to.index(n + 1);
            b.splice(at..at, slice);
        }
        Mutation::Repeat { from, len, times } if n > 0 => {
            let a = from.index(n);
            let e = (a + *len as usize).min(n);
            let slice = b[a..e].repeat(*times as usize);
            b.splice(e..e, slice);
        }
        _ => {}
    }
    b.truncate(MAX_MUTATED);
}

/// `base` with 1 to 7 mutations.
fn mutated(base: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Blob> {
    (base, vec(mutation(), 1..8)).prop_map(|(mut b, ms)| {
        for m in &ms {
            apply(&mut b, m);
        }
        Blob(b)
    })
}

/// Arbitrary bytes: raw, printable ASCII with line breaks, a soup of
/// tokens, or any Unicode text.
fn arbitrary() -> impl Strategy<Value = Blob> {
    prop_oneof![
        vec(any::<u8>(), 0..1024),
        vec(
            prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\n'), 1 => Just(b'\r')],
            0..1024
        ),
        vec(select(tokens()), 0..96).prop_map(|ts| ts.concat()),
        any::<String>().prop_map(String::into_bytes),
    ]
    .prop_map(Blob)
}

/// How many times `needle` occurs in `hay`.
fn count(hay: &[u8], needle: u8) -> usize {
    hay.iter().filter(|b| **b == needle).count()
}

// ---- pubkeys -----------------------------------------------------------------

fn pubkey() -> impl Strategy<Value = Pubkey> {
    vec(any::<u8>(), 48).prop_map(|v| Pubkey(v.try_into().expect("48 bytes")))
}

/// The lowercase hex of a key, no `0x`.
fn hex(pk: &Pubkey) -> String {
    pk.to_string()[2..].to_string()
}

/// A key as a file or an answer may spell it: with or without `0x`/`0X`,
/// lower, upper or mixed case.
fn spelled() -> impl Strategy<Value = (Pubkey, String)> {
    (pubkey(), 0..3usize, 0..3u8).prop_map(|(pk, prefix, case)| {
        let h = hex(&pk);
        let h = match case {
            0 => h,
            1 => h.to_uppercase(),
            _ => h
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 3 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        };
        let s = format!("{}{h}", ["", "0x", "0X"][prefix]);
        (pk, s)
    })
}

/// A spelled key, drawn from a pool of four now and then (repeats).
fn spelled_or_repeat() -> impl Strategy<Value = (Pubkey, String)> {
    prop_oneof![
        3 => spelled(),
        1 => (0u8..4).prop_map(|i| {
            let pk = Pubkey([i.wrapping_mul(37) | 0x80; 48]);
            (pk, pk.to_string())
        }),
    ]
}

/// The documented rule for a pubkey: 96 hex digits, optional `0x`/`0X`,
/// surrounding whitespace ignored. Written apart from `Pubkey::from_str`.
fn ref_pubkey(s: &str) -> Option<Pubkey> {
    let s = s.trim();
    let h = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if h.len() != 96 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 48];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Pubkey(out))
}

/// The runs of hex digits of an input, lowercased, to find keys in: one
/// pass over the input, however many keys are looked up.
struct Written {
    exact: HashSet<Vec<u8>>,
    longer: Vec<Vec<u8>>,
    escapes: bool,
}

impl Written {
    fn new(input: &[u8]) -> Self {
        let mut w = Written {
            exact: HashSet::new(),
            longer: Vec::new(),
            escapes: input.contains(&b'\\'),
        };
        for run in input.split(|b| !b.is_ascii_hexdigit()) {
            match run.len() {
                96 => {
                    w.exact.insert(run.to_ascii_lowercase());
                }
                n if n > 96 => w.longer.push(run.to_ascii_lowercase()),
                _ => {}
            }
        }
        w
    }

    fn has(&self, pk: &Pubkey) -> bool {
        let h = hex(pk).into_bytes();
        self.escapes
            || self.exact.contains(&h)
            || self.longer.iter().any(|r| r.windows(96).any(|w| w == h))
    }
}

/// No run of [`MIN_RUN`] bytes of `secret` in `text`.
fn no_secret(text: &str, secret: &str) -> Result<(), TestCaseError> {
    for w in secret.as_bytes().windows(MIN_RUN) {
        let w = std::str::from_utf8(w).expect("ASCII secret");
        prop_assert!(!text.contains(w), "a run of the secret ({w:?}) in: {text}");
    }
    Ok(())
}

// ---- serde_json's reading, for the JSON parsers ------------------------------

/// Whether any object in `bytes` repeats a key. A derived struct refuses a
/// repeated field that serde_json's tree keeps the last of, so the tree is
/// no oracle for refusals there.
fn has_repeated_keys(bytes: &[u8]) -> bool {
    struct Dup(bool);
    impl<'de> de::Deserialize<'de> for Dup {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dup, D::Error> {
            d.deserialize_any(Dup(false))
        }
    }
    impl<'de> Visitor<'de> for Dup {
        type Value = Dup;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dup, A::Error> {
            let mut seen = HashSet::new();
            let mut dup = false;
            while let Some(k) = map.next_key::<String>()? {
                dup |= !seen.insert(k);
                dup |= map.next_value::<Dup>()?.0;
            }
            Ok(Dup(dup))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dup, A::Error> {
            let mut dup = false;
            while let Some(d) = seq.next_element::<Dup>()? {
                dup |= d.0;
            }
            Ok(Dup(dup))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_str<E>(self, _: &str) -> Result<Dup, E> {
            Ok(Dup(false))
        }
        fn visit_unit<E>(self) -> Result<Dup, E> {
            Ok(Dup(false))
        }
    }
    serde_json::from_slice::<Dup>(bytes).is_ok_and(|d| d.0)
}

/// The fields of a derived struct read from `v`: an object (unknown keys
/// ignored), or an array in field order (serde reads a struct from either).
/// `None` when a required field is missing or the array is too long.
fn struct_view<'v>(
    v: &'v Value,
    fields: &[(&'static str, bool)],
) -> Option<HashMap<&'static str, &'v Value>> {
    let mut out = HashMap::new();
    match v {
        Value::Object(o) => {
            for (name, required) in fields {
                match o.get(*name) {
                    Some(x) => {
                        out.insert(*name, x);
                    }
                    None if *required => return None,
                    None => {}
                }
            }
        }
        Value::Array(a) => {
            if a.len() > fields.len() {
                return None;
            }
            for (i, (name, required)) in fields.iter().enumerate() {
                match a.get(i) {
                    Some(x) => {
                        out.insert(*name, x);
                    }
                    None if *required => return None,
                    None => {}
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// A Beacon API integer: a JSON non-negative integer or a quoted decimal.
fn quoted(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => ref_decimal(s),
        _ => None,
    }
}

/// Plain ASCII decimal digits, in range.
fn ref_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

// ---- input files ---------------------------------------------------------------

/// Paths errors must name: plain, with spaces and non-ASCII, and not UTF-8.
fn path() -> impl Strategy<Value = PathBuf> {
    select(vec![
        PathBuf::from("/etc/keysync/validators.pubkeys"),
        PathBuf::from("drop dir/ключи #1.json"),
        PathBuf::from(OsStr::from_bytes(b"/tmp/\xffnot-utf8\xfe.txt")),
    ])
}

/// Why the reference refuses an input.
#[derive(Debug, PartialEq)]
enum Fault {
    Blank,
    /// Invalid JSON (serde_json's line and column).
    Syntax,
    At(Location),
}

/// The meaningful lines of a list (as the documented rule says).
fn significant(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let content = raw.split('#').next().unwrap_or("").trim();
        (!content.is_empty()).then_some((i + 1, content))
    })
}

/// What `inputs::parse` should make of `bytes`, read apart from it.
fn ref_input(kind: SourceKind, bytes: &[u8]) -> Result<SourceContent, Fault> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(Fault::At(Location::Line(
                count(&bytes[..e.valid_up_to()], b'\n') + 1,
            )))
        }
    };
    if text.trim().is_empty() {
        return Err(Fault::Blank);
    }
    match kind {
        SourceKind::Pubkeys => ref_pubkeys(text),
        SourceKind::IndexList => ref_indices(text),
        SourceKind::Records => ref_json(text, false),
        SourceKind::Detect => match text.trim_start().chars().next() {
            Some('[' | '{') => ref_json(text, true),
            _ => match significant(text).next() {
                None => Ok(SourceContent::default()),
                Some((_, s)) if s.bytes().all(|b| b.is_ascii_digit()) => ref_indices(text),
                Some(_) => ref_pubkeys(text),
            },
        },
        // Kinds read with checks or not from one file: not fuzzed here.
        #[allow(unreachable_patterns)]
        other => unreachable!("{other:?} is not fuzzed"),
    }
}

fn ref_pubkeys(text: &str) -> Result<SourceContent, Fault> {
    let mut out = SourceContent::default();
    for (line, s) in significant(text) {
        out.pubkeys
            .push(ref_pubkey(s).ok_or(Fault::At(Location::Line(line)))?);
    }
    Ok(out)
}

/// Indices below this are kept once per file.
const DEDUP_BELOW: u64 = 1_000_000;

fn ref_indices(text: &str) -> Result<SourceContent, Fault> {
    let mut out = SourceContent::default();
    let mut seen = HashSet::new();
    for (line, s) in significant(text) {
        let i = ref_decimal(s).ok_or(Fault::At(Location::Line(line)))?;
        if i >= DEDUP_BELOW || seen.insert(i) {
            out.indices.push(i);
        }
    }
    Ok(out)
}

/// A records file (`detect`: or a drop-directory JSON file) through
/// serde_json's tree.
fn ref_json(text: &str, detect: bool) -> Result<SourceContent, Fault> {
    let v: Value = serde_json::from_str(text).map_err(|_| Fault::Syntax)?;
    let mut out = SourceContent::default();
    let at = |i| Fault::At(Location::Element(i));
    match v {
        Value::Object(o) if detect => {
            let pk = o.get("pubkey").and_then(Value::as_str).and_then(ref_pubkey);
            out.pubkeys.push(pk.ok_or(Fault::At(Location::File))?);
        }
        Value::Array(a) => {
            let has = |k: &str| {
                a.first()
                    .and_then(Value::as_object)
                    .is_some_and(|o| o.contains_key(k))
            };
            let records = !detect || a.is_empty() || has("validator_index");
            if !records && !has("pubkey") {
                return Err(at(0));
            }
            for (i, el) in a.iter().enumerate() {
                if records {
                    let o = el.as_object().ok_or(at(i))?;
                    let index = o
                        .get("validator_index")
                        .and_then(Value::as_u64)
                        .ok_or(at(i))?;
                    let chain = o
                        .get("chain_id")
                        .and_then(Value::as_str)
                        .filter(|c| !c.trim().is_empty())
                        .ok_or(at(i))?;
                    let key = o
                        .get("validator_key")
                        .and_then(Value::as_str)
                        .and_then(ref_pubkey)
                        .ok_or(at(i))?;
                    out.records.push(Record {
                        validator_index: index,
                        chain_id: ChainId::new(chain),
                        validator_key: key,
                    });
                } else {
                    let pk = el
                        .get("pubkey")
                        .and_then(Value::as_str)
                        .and_then(ref_pubkey)
                        .ok_or(at(i))?;
                    out.pubkeys.push(pk);
                }
            }
        }
        _ => return Err(Fault::At(Location::File)),
    }
    Ok(out)
}

/// `inputs::parse` agrees with the reference, its errors name `path`, and
/// what it returns comes from the input.
fn check_input(kind: SourceKind, path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = parse(kind, path, bytes);
    let want = ref_input(kind, bytes);
    if let Err(e) = &got {
        prop_assert_eq!(e.path(), path);
        let text = e.to_string();
        let shown = path.display().to_string();
        prop_assert!(
            text.contains(&shown),
            "the error does not name {:?}: {}",
            shown,
            text
        );
    }
    match (&got, &want) {
        (Ok(c), Ok(w)) => prop_assert_eq!(c, w),
        (Err(SourceError::Blank { .. }), Err(Fault::Blank)) => {}
        (
            Err(SourceError::Parse {
                at: At(Location::LineColumn(..)),
                message,
                ..
            }),
            Err(Fault::Syntax),
        ) => prop_assert!(message.starts_with("invalid JSON"), "{}", message),
        (Err(SourceError::Parse { at: At(at), .. }), Err(Fault::At(w))) if at == w => {}
        _ => prop_assert!(false, "parse: {:?}\nreference: {:?}", got, want),
    }
    if let Ok(c) = &got {
        let written = Written::new(bytes);
        for pk in c
            .pubkeys
            .iter()
            .chain(c.records.iter().map(|r| &r.validator_key))
        {
            prop_assert!(written.has(pk), "{} is not in the input", pk);
        }
        let lines = count(bytes, b'\n') + 1;
        prop_assert!(c.len() <= lines + count(bytes, b'{'), "{} entries", c.len());
    }
    Ok(())
}

/// `bytes` with an invalid UTF-8 sequence at byte `at` of valid text is
/// refused, naming the file and the line.
fn check_not_utf8(
    kind: SourceKind,
    path: &Path,
    bytes: &[u8],
    line: usize,
) -> Result<(), TestCaseError> {
    match parse(kind, path, bytes) {
        Err(e @ SourceError::Parse { .. }) => {
            let text = e.to_string();
            let want = format!("{}:{line}: not UTF-8 text", path.display());
            prop_assert_eq!(text, want);
        }
        other => prop_assert!(false, "not refused as non-UTF-8: {:?}", other),
    }
    check_input(kind, path, bytes)
}

/// How a list line is dressed: a comment or blank line before it,
/// indentation, a trailing comment.
#[derive(Clone, Debug)]
struct Dress {
    before: &'static str,
    indent: &'static str,
    after: &'static str,
}

fn dress() -> impl Strategy<Value = Dress> {
    (
        select(vec!["", "", "", "# a comment", "#", "   ", "\t"]),
        select(vec!["", "", " ", "\t", "  "]),
        select(vec!["", "", "", " ", " # ops key 1", "\t#x", "#"]),
    )
        .prop_map(|(before, indent, after)| Dress {
            before,
            indent,
            after,
        })
}

fn eol() -> impl Strategy<Value = &'static str> {
    select(vec!["\n", "\r\n"])
}

fn text_list(items: Vec<(String, Dress)>, eol: &str, final_eol: bool, header: bool) -> String {
    let mut lines = Vec::new();
    if header {
        lines.push("# validators of node-1".to_string());
    }
    for (s, d) in items {
        if !d.before.is_empty() {
            lines.push(d.before.to_string());
        }
        lines.push(format!("{}{s}{}", d.indent, d.after));
    }
    let mut t = lines.join(eol);
    if final_eol {
        t.push_str(eol);
    }
    t
}

/// A pubkeys list and its keys.
fn pubkeys_list() -> impl Strategy<Value = (String, Vec<Pubkey>)> {
    (
        vec((spelled_or_repeat(), dress()), 1..40),
        eol(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(items, eol, fin, header)| {
            let keys = items.iter().map(|((pk, _), _)| *pk).collect();
            let lines = items.into_iter().map(|((_, s), d)| (s, d)).collect();
            (text_list(lines, eol, fin, header), keys)
        })
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 0u64..2_000_000, any::<u64>()]
}

/// An index list and its indices (small ones once).
fn index_list() -> impl Strategy<Value = (String, Vec<u64>)> {
    (
        vec((index(), 0usize..3, dress()), 1..60),
        eol(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(items, eol, fin, header)| {
            let mut seen = HashSet::new();
            let want = items
                .iter()
                .map(|(i, _, _)| *i)
                .filter(|i| *i >= DEDUP_BELOW || seen.insert(*i))
                .collect();
            let lines = items
                .into_iter()
                .map(|(i, zeros, d)| (format!("{}{i}", "0".repeat(zeros)), d))
                .collect();
            (text_list(lines, eol, fin, header), want)
        })
}

fn chain() -> impl Strategy<Value = &'static str> {
    select(vec!["0x1", "0x88bb0", "0x4268", "1", "0xAA36A7", " 0x1 "])
}

/// A records file and its records.
fn records_json() -> impl Strategy<Value = (String, Vec<Record>)> {
    (
        vec(
            (index(), chain(), spelled(), 0usize..6, any::<bool>()),
            0..30,
        ),
        any::<bool>(),
    )
        .prop_map(|(rows, pretty)| {
            let mut parts = Vec::new();
            let mut want = Vec::new();
            for (i, c, (pk, k), order, extra) in rows {
                let mut fields = vec![
                    format!("\"validator_index\": {i}"),
                    format!("\"chain_id\": \"{c}\""),
                    format!("\"validator_key\": \"{k}\""),
                ];
                fields.rotate_left(order % 3);
                if order >= 3 {
                    fields.swap(0, 1);
                }
                if extra {
                    fields.push("\"label\": \"node-1\"".into());
                    fields.push("\"meta\": {\"a\": [1, 2.5, null, \"x,y\"]}".into());
                }
                parts.push(format!("{{{}}}", fields.join(", ")));
                want.push(Record {
                    validator_index: i,
                    chain_id: ChainId::new(c),
                    validator_key: pk,
                });
            }
            let text = if pretty {
                format!("[\n  {}\n]\n", parts.join(",\n  "))
            } else {
                format!("[{}]", parts.join(","))
            };
            (text, want)
        })
}

/// 32 bytes of hex from a key (keystore and deposit fields).
fn hex32(pk: &Pubkey, salt: u8) -> String {
    pk.0[..32]
        .iter()
        .map(|b| format!("{:02x}", b ^ salt))
        .collect()
}

/// An EIP-2335 keystore as the deposit CLI writes it, and its key.
fn keystore() -> impl Strategy<Value = (String, Pubkey)> {
    (spelled(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(|((pk, s), account, first, scrypt)| {
        let kdf = if scrypt {
            format!(r#"{{"function": "scrypt", "params": {{"dklen": 32, "n": 262144, "r": 8, "p": 1, "salt": "{}"}}, "message": ""}}"#, hex32(&pk, 1))
        } else {
            format!(r#"{{"function": "pbkdf2", "params": {{"dklen": 32, "c": 262144, "prf": "hmac-sha256", "salt": "{}"}}, "message": ""}}"#, hex32(&pk, 2))
        };
        let crypto = format!(
            r#""crypto": {{"kdf": {kdf}, "checksum": {{"function": "sha256", "params": {{}}, "message": "{}"}}, "cipher": {{"function": "aes-128-ctr", "params": {{"iv": "{}"}}, "message": "{}"}}}}"#,
            hex32(&pk, 3),
            &hex32(&pk, 4)[..32],
            hex32(&pk, 5)
        );
        let key = format!(r#""pubkey": "{s}""#);
        let rest = format!(r#""description": "", "path": "m/12381/3600/{account}/0/0", "uuid": "1d85ae20-35c5-4611-98e8-aa14a633906f", "version": 4"#);
        let text = if first {
            format!("{{{key}, {crypto}, {rest}}}")
        } else {
            format!("{{{crypto}, {rest}, {key}}}")
        };
        (text, pk)
    })
}

/// Deposit data as the deposit CLI writes it, and its keys in order.
fn deposit_data() -> impl Strategy<Value = (String, Vec<Pubkey>)> {
    (vec(spelled_or_repeat(), 1..20), any::<bool>()).prop_map(|(keys, pretty)| {
        let entries: Vec<String> = keys
            .iter()
            .map(|(pk, s)| {
                format!(
                    r#"{{"pubkey": "{s}", "withdrawal_credentials": "00{}", "amount": 32000000000, "signature": "{}{}{}", "deposit_message_root": "{}", "deposit_data_root": "{}", "fork_version": "00000000", "network_name": "mainnet", "deposit_cli_version": "2.7.0"}}"#,
                    &hex32(pk, 6)[2..],
                    hex32(pk, 7),
                    hex32(pk, 8),
                    hex32(pk, 9),
                    hex32(pk, 10),
                    hex32(pk, 11)
                )
            })
            .collect();
        let sep = if pretty { ",\n" } else { ", " };
        (format!("[{}]", entries.join(sep)), keys.iter().map(|(pk, _)| *pk).collect())
    })
}

/// Valid `text` with an invalid UTF-8 sequence inserted at a character
/// boundary, and the line it is on.
fn not_utf8(text: impl Strategy<Value = String>) -> impl Strategy<Value = (Blob, usize)> {
    let bad = select(vec![
        vec![0xff],
        vec![0xfe],
        vec![0xc0, 0x80],
        vec![0xed, 0xa0, 0x80],
        vec![0xf5, 0x80, 0x80, 0x80],
        vec![0xc3, b'('],
        vec![0xe2, 0x82],
    ]);
    (text, any::<Index>(), bad).prop_map(|(text, at, bad)| {
        let mut p = at.index(text.len() + 1);
        while !text.is_char_boundary(p) {
            p -= 1;
        }
        let line = count(&text.as_bytes()[..p], b'\n') + 1;
        let mut b = text.into_bytes();
        b.splice(p..p, bad);
        (Blob(b), line)
    })
}

/// A pubkeys list over 1 MiB (parsed in two halves at once), mutated.
fn large_pubkeys() -> impl Strategy<Value = Blob> {
    (
        any::<u64>(),
        10_900usize..12_000,
        eol(),
        vec(mutation(), 0..4),
    )
        .prop_map(|(seed, lines, eol, ms)| {
            let mut x = seed | 1;
            let mut text = String::with_capacity(lines * 100);
            for _ in 0..lines {
                let mut key = [0u8; 48];
                for b in key.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                text.push_str(&Pubkey(key).to_string());
                text.push_str(eol);
            }
            let mut b = text.into_bytes();
            for m in &ms {
                apply(&mut b, m);
            }
            Blob(b)
        })
}

/// Every valid input the generators make, as bytes.
fn any_valid_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        pubkeys_list().prop_map(|(t, _)| t.into_bytes()),
        index_list().prop_map(|(t, _)| t.into_bytes()),
        records_json().prop_map(|(t, _)| t.into_bytes()),
        keystore().prop_map(|(t, _)| t.into_bytes()),
        deposit_data().prop_map(|(t, _)| t.into_bytes()),
    ]
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_pubkeys() {
    let kind = SourceKind::Pubkeys;
    let n = cases();
    let mut f = Fuzz::new("inputs_pubkeys");
    f.check("bytes", n, (path(), arbitrary()), |(p, b)| {
        check_input(kind, p, &b.0)
    });
    f.check("valid", n, (path(), pubkeys_list()), |(p, (t, keys))| {
        let got = parse(kind, p, t.as_bytes()).map(|c| c.pubkeys);
        prop_assert_eq!(got.as_ref().ok(), Some(keys), "{:?}", got);
        check_input(kind, p, t.as_bytes())
    });
    f.check(
        "mutated",
        n,
        (
            path(),
            mutated(pubkeys_list().prop_map(|(t, _)| t.into_bytes())),
        ),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "not_utf8",
        n,
        (path(), not_utf8(pubkeys_list().prop_map(|(t, _)| t))),
        |(p, (b, line))| check_not_utf8(kind, p, &b.0, *line),
    );
    f.check(
        "large",
        (n / 50).max(4),
        (path(), large_pubkeys()),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.done();
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_index_list() {
    let kind = SourceKind::IndexList;
    let n = cases();
    let mut f = Fuzz::new("inputs_index_list");
    f.check("bytes", n, (path(), arbitrary()), |(p, b)| {
        check_input(kind, p, &b.0)
    });
    f.check("valid", n, (path(), index_list()), |(p, (t, want))| {
        let got = parse(kind, p, t.as_bytes()).map(|c| c.indices);
        prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
        check_input(kind, p, t.as_bytes())
    });
    f.check(
        "mutated",
        n,
        (
            path(),
            mutated(index_list().prop_map(|(t, _)| t.into_bytes())),
        ),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "not_utf8",
        n,
        (path(), not_utf8(index_list().prop_map(|(t, _)| t))),
        |(p, (b, line))| check_not_utf8(kind, p, &b.0, *line),
    );
    f.done();
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_records() {
    let kind = SourceKind::Records;
    let n = cases();
    let mut f = Fuzz::new("inputs_records");
    f.check("bytes", n, (path(), arbitrary()), |(p, b)| {
        check_input(kind, p, &b.0)
    });
    f.check("valid", n, (path(), records_json()), |(p, (t, want))| {
        let got = parse(kind, p, t.as_bytes()).map(|c| c.records);
        prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
        check_input(kind, p, t.as_bytes())
    });
    f.check(
        "mutated",
        n,
        (
            path(),
            mutated(records_json().prop_map(|(t, _)| t.into_bytes())),
        ),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "not_utf8",
        n,
        (path(), not_utf8(records_json().prop_map(|(t, _)| t))),
        |(p, (b, line))| check_not_utf8(kind, p, &b.0, *line),
    );
    f.done();
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_keystore() {
    let kind = SourceKind::Detect;
    let n = cases();
    let mut f = Fuzz::new("inputs_keystore");
    f.check("valid", n, (path(), keystore()), |(p, (t, pk))| {
        let got = parse(kind, p, t.as_bytes()).map(|c| c.pubkeys);
        prop_assert_eq!(got.as_ref().ok(), Some(&vec![*pk]), "{:?}", got);
        check_input(kind, p, t.as_bytes())
    });
    f.check(
        "mutated",
        n,
        (
            path(),
            mutated(keystore().prop_map(|(t, _)| t.into_bytes())),
        ),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "not_utf8",
        n,
        (path(), not_utf8(keystore().prop_map(|(t, _)| t))),
        |(p, (b, line))| check_not_utf8(kind, p, &b.0, *line),
    );
    f.done();
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_deposit_data() {
    let kind = SourceKind::Detect;
    let n = cases();
    let mut f = Fuzz::new("inputs_deposit_data");
    f.check("valid", n, (path(), deposit_data()), |(p, (t, want))| {
        let got = parse(kind, p, t.as_bytes()).map(|c| c.pubkeys);
        prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
        check_input(kind, p, t.as_bytes())
    });
    f.check(
        "mutated",
        n,
        (
            path(),
            mutated(deposit_data().prop_map(|(t, _)| t.into_bytes())),
        ),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "not_utf8",
        n,
        (path(), not_utf8(deposit_data().prop_map(|(t, _)| t))),
        |(p, (b, line))| check_not_utf8(kind, p, &b.0, *line),
    );
    f.done();
}

/// The drop directory's detection: any input, any format.
#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_inputs_detect() {
    let kind = SourceKind::Detect;
    let n = cases();
    let mut f = Fuzz::new("inputs_detect");
    f.check("bytes", n, (path(), arbitrary()), |(p, b)| {
        check_input(kind, p, &b.0)
    });
    f.check("valid", n, (path(), any_valid_input()), |(p, t)| {
        let got = parse(kind, p, t);
        prop_assert!(
            got.is_ok(),
            "a valid input of any format is read: {:?}",
            got
        );
        check_input(kind, p, t)
    });
    f.check(
        "mutated",
        n,
        (path(), mutated(any_valid_input())),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.check(
        "large",
        (n / 50).max(4),
        (path(), large_pubkeys()),
        |(p, b)| check_input(kind, p, &b.0),
    );
    f.done();
}

// ---- the Keymanager API's answers ---------------------------------------------

fn http(secrets: &[&str]) -> Http {
    Http::new(
        Duration::from_secs(1),
        RetryPolicy::default(),
        None,
        secrets.iter().map(|s| Secret::new(*s)).collect(),
    )
    .expect("an HTTP client")
}

fn km_client() -> KeymanagerClient {
    KeymanagerClient::new(
        http(&[]),
        Url::parse("http://127.0.0.1:9/km/").expect("a URL"),
        Secret::new(KM_TOKEN),
    )
}

/// A list's answer and its keys, deduplicated and sorted.
fn km_answer(list: KeyList) -> impl Strategy<Value = (String, Vec<Pubkey>)> {
    (vec((spelled_or_repeat(), any::<bool>()), 0..40), any::<bool>()).prop_map(move |(keys, extra)| {
        let entries: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, ((_, s), ro))| match list {
                KeyList::Keystores => format!(
                    r#"{{"validating_pubkey":"{s}","derivation_path":"m/12381/3600/{i}/0/0","readonly":{ro}}}"#
                ),
                KeyList::Remotekeys => format!(
                    r#"{{"pubkey":"{s}","url":"https://signer.example:9000","readonly":{ro}}}"#
                ),
            })
            .collect();
        let entries = entries.join(",");
        let body = if extra {
            format!(r#"{{"meta":{{"count":{}}},"data":[{entries}]}}"#, keys.len())
        } else {
            format!(r#"{{"data":[{entries}]}}"#)
        };
        let mut want: Vec<Pubkey> = keys.iter().map(|((pk, _), _)| *pk).collect();
        want.sort();
        want.dedup();
        (body, want)
    })
}

fn check_km(client: &KeymanagerClient, list: KeyList, body: &[u8]) -> Result<(), TestCaseError> {
    match client.parse(list, body) {
        Ok(keys) => {
            prop_assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "not sorted and deduplicated"
            );
            let written = Written::new(body);
            for k in &keys {
                prop_assert!(written.has(k), "{} is not in the answer", k);
            }
            // serde_json's tree reads the same keys (a repeated field is
            // refused by the parser, so the tree's last-wins never differs),
            // unless it is no oracle (see `RefAnswer::Unparsable`).
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return Ok(());
            };
            let data = v.get("data").and_then(Value::as_array);
            prop_assert!(data.is_some(), "accepted without a \"data\" list");
            let mut want = Vec::new();
            for e in data.into_iter().flatten() {
                let pk = e
                    .get(list.field())
                    .and_then(Value::as_str)
                    .and_then(ref_pubkey);
                prop_assert!(pk.is_some(), "accepted an entry without a key: {}", e);
                want.extend(pk);
            }
            want.sort();
            want.dedup();
            prop_assert_eq!(keys, want);
        }
        Err(e) => {
            prop_assert_eq!(e.url(), client.url());
            prop_assert_eq!(e.call(), list.call());
            prop_assert!(
                matches!(
                    e,
                    KeymanagerError::Malformed { .. } | KeymanagerError::BadPubkey { .. }
                ),
                "{:?}",
                e
            );
            let text = e.to_string();
            prop_assert!(text.contains(client.url()), "{}", text);
            no_secret(&text, KM_TOKEN)?;
            prop_assert!(
                text.chars().count() <= 1_200,
                "{} chars: {}",
                text.chars().count(),
                text
            );
        }
    }
    Ok(())
}

fn key_list() -> impl Strategy<Value = KeyList> {
    select(vec![KeyList::Keystores, KeyList::Remotekeys])
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_keymanager() {
    let client = km_client();
    let n = cases();
    let mut f = Fuzz::new("keymanager");
    f.check("bytes", n, (key_list(), arbitrary()), |(l, b)| {
        check_km(&client, *l, &b.0)
    });
    f.check(
        "valid",
        n,
        key_list().prop_flat_map(|l| (Just(l), km_answer(l))),
        |(l, (body, want))| {
            let got = client.parse(*l, body.as_bytes());
            prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
            check_km(&client, *l, body.as_bytes())
        },
    );
    f.check(
        "mutated",
        n,
        (
            key_list(),
            mutated(key_list().prop_flat_map(|l| km_answer(l).prop_map(|(b, _)| b.into_bytes()))),
        ),
        |(l, b)| check_km(&client, *l, &b.0),
    );
    f.done();
}

// ---- the beacon node's validators answers ----------------------------------------

/// `FAR_FUTURE_EPOCH`: "not scheduled".
const FAR_FUTURE: u64 = u64::MAX;
const BEACON_URL: &str = "http://127.0.0.1:9";

fn beacon() -> BeaconClient {
    BeaconClient::new(http(&[]), vec![Url::parse(BEACON_URL).expect("a URL")])
}

const STATUSES: [&str; 10] = [
    "pending_initialized",
    "pending_queued",
    "active_ongoing",
    "active_exiting",
    "active_slashed",
    "exited_unslashed",
    "exited_slashed",
    "withdrawal_possible",
    "withdrawal_done",
    "a_status_of_the_future",
];

/// A validators answer as a beacon node writes it, and what it says.
fn validators_answer() -> impl Strategy<Value = (String, Vec<BeaconValidator>)> {
    let entry = (
        index(),
        pubkey(),
        select(STATUSES.to_vec()),
        prop_oneof![
            Just(None),
            Just(Some(FAR_FUTURE)),
            any::<u64>().prop_map(Some)
        ],
        any::<bool>(),
    );
    vec(entry, 0..30).prop_map(|entries| {
        let (mut indices, mut keys) = (HashSet::new(), HashSet::new());
        let mut parts = Vec::new();
        let mut want = Vec::new();
        for (index, pk, status, w, bare) in entries {
            // One index, one key: an answer that contradicts itself is
            // another test.
            if !indices.insert(index) || !keys.insert(pk) {
                continue;
            }
            let i = if bare { index.to_string() } else { format!("\"{index}\"") };
            let w_field = w.map_or(String::new(), |w| format!(r#","withdrawable_epoch":"{w}""#));
            parts.push(format!(
                r#"{{"index":{i},"balance":"32000000000","status":"{status}","validator":{{"pubkey":"{pk}","withdrawal_credentials":"0x00{}","effective_balance":"32000000000","slashed":false,"activation_eligibility_epoch":"0","activation_epoch":"0","exit_epoch":"18446744073709551615"{w_field}}}}}"#,
                &hex32(&pk, 1)[2..]
            ));
            want.push(BeaconValidator {
                index,
                pubkey: pk,
                status: Status::parse(status),
                withdrawable_epoch: w.filter(|w| *w != FAR_FUTURE),
            });
        }
        (
            format!(
                r#"{{"execution_optimistic":false,"finalized":false,"data":[{}]}}"#,
                parts.join(",")
            ),
            want,
        )
    })
}

#[derive(Debug)]
enum RefAnswer<T> {
    Valid(T),
    Inconsistent,
    Malformed,
    /// Not JSON to serde_json's tree. serde_json skips a value it is not
    /// asked for without checking its strings (a lone surrogate escape,
    /// invalid UTF-8 in an unknown field), so the parsers may read such a
    /// body: the tree is no oracle for it.
    Unparsable,
}

/// A validators answer through serde_json's tree.
fn ref_validators(bytes: &[u8]) -> RefAnswer<Vec<BeaconValidator>> {
    if serde_json::from_slice::<Value>(bytes).is_err() {
        return RefAnswer::Unparsable;
    }
    let read = || -> Option<Vec<BeaconValidator>> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let top = struct_view(&v, &[("data", true)])?;
        let mut out = Vec::new();
        for e in top["data"].as_array()? {
            let e = struct_view(e, &[("index", true), ("status", true), ("validator", true)])?;
            let inner = struct_view(
                e["validator"],
                &[("pubkey", true), ("withdrawable_epoch", false)],
            )?;
            let withdrawable_epoch = match inner.get("withdrawable_epoch") {
                None | Some(Value::Null) => None,
                Some(w) => Some(quoted(w)?),
            };
            out.push(BeaconValidator {
                index: quoted(e["index"])?,
                pubkey: ref_pubkey(inner["pubkey"].as_str()?)?,
                status: Status::parse(e["status"].as_str()?),
                withdrawable_epoch: withdrawable_epoch.filter(|w| *w != FAR_FUTURE),
            });
        }
        Some(out)
    };
    let Some(out) = read() else {
        return RefAnswer::Malformed;
    };
    let (mut by_index, mut by_key) = (HashMap::new(), HashMap::new());
    for v in &out {
        if *by_index.entry(v.index).or_insert(v.pubkey) != v.pubkey
            || *by_key.entry(v.pubkey).or_insert(v.index) != v.index
        {
            return RefAnswer::Inconsistent;
        }
    }
    RefAnswer::Valid(out)
}

fn check_validators(c: &BeaconClient, bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = c.parse_validators_answer(bytes);
    let want = ref_validators(bytes);
    match (&got, &want) {
        (Ok(v), RefAnswer::Valid(w)) => prop_assert_eq!(v, w),
        (Err(BeaconError::Inconsistent { .. }), RefAnswer::Inconsistent) => {}
        (Err(BeaconError::Malformed { .. }), RefAnswer::Malformed) => {}
        // Any outcome: the tree is no oracle (its properties are checked below).
        (_, RefAnswer::Unparsable) => {}
        // A repeated field is refused; the tree keeps the last.
        (Err(BeaconError::Malformed { .. }), _) if has_repeated_keys(bytes) => {}
        _ => prop_assert!(false, "parse: {:?}\nreference: {:?}", got, want),
    }
    match &got {
        Ok(v) => {
            let written = Written::new(bytes);
            for x in v {
                prop_assert!(written.has(&x.pubkey), "{} is not in the answer", x.pubkey);
            }
            let most = count(bytes, b'{') + count(bytes, b'[');
            prop_assert!(v.len() <= most, "{} validators, at most {}", v.len(), most);
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(text.contains(BEACON_URL), "{}", text);
            prop_assert!(
                text.chars().count() <= 1_200,
                "{} chars: {}",
                text.chars().count(),
                text
            );
        }
    }
    Ok(())
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lodestar-1.5.1")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_beacon_validators() {
    let c = beacon();
    let real = fixture("validators-response.json");
    let n = cases();
    let mut f = Fuzz::new("beacon_validators");
    f.check("bytes", n, arbitrary(), |b| check_validators(&c, &b.0));
    f.check("valid", n, validators_answer(), |(body, want)| {
        let got = c.parse_validators_answer(body.as_bytes());
        prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
        check_validators(&c, body.as_bytes())
    });
    f.check(
        "mutated",
        n,
        mutated(prop_oneof![
            1 => Just(real.clone()),
            3 => validators_answer().prop_map(|(b, _)| b.into_bytes()),
        ]),
        |b| check_validators(&c, &b.0),
    );
    f.done();
}

// ---- the console API's listing ---------------------------------------------------

fn registry() -> RegistryClient {
    let api = Url::parse("http://127.0.0.1:9/").expect("a URL");
    RegistryClient::new(
        http(&[API_KEY]),
        api.clone(),
        api,
        Secret::new(API_KEY),
        "mainnet".into(),
    )
}

/// A listing as the console API writes it (either list name, or none),
/// and its rows.
fn listing() -> impl Strategy<Value = (String, Vec<Assignment>)> {
    let row = (
        index(),
        chain(),
        prop_oneof![Just(None), any::<bool>().prop_map(Some)],
        any::<bool>(),
    );
    (vec(row, 0..40), 0..4u8).prop_map(|(rows, shape)| {
        let mut parts = Vec::new();
        let mut want = Vec::new();
        for (i, c, active, quoted) in rows {
            let idx = if quoted {
                format!("\"{i}\"")
            } else {
                i.to_string()
            };
            let active_field = active.map_or(String::new(), |a| format!(r#","active":{a}"#));
            parts.push(format!(
                r#"{{"validator_index":{idx},"chain_id":"{c}"{active_field},"network":"mainnet"}}"#
            ));
            want.push(Assignment {
                validator_index: i,
                chain_id: ChainId::new(c),
                active: active.unwrap_or(true),
            });
        }
        let rows = parts.join(",");
        match shape {
            0 => (format!(r#"{{"validators":[{rows}]}}"#), want),
            1 => (
                format!(r#"{{"assignments":[{rows}],"total":{}}}"#, want.len()),
                want,
            ),
            2 => (
                format!(r#"{{"validators":null,"assignments":[{rows}]}}"#),
                want,
            ),
            _ => (r#"{"validators":null}"#.to_string(), Vec::new()),
        }
    })
}

/// A listing through serde_json's tree.
fn ref_listing(bytes: &[u8]) -> RefAnswer<Vec<Assignment>> {
    if serde_json::from_slice::<Value>(bytes).is_err() {
        return RefAnswer::Unparsable;
    }
    let read = || -> Option<Vec<Assignment>> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let top = struct_view(&v, &[("validators", false), ("assignments", false)])?;
        let list = [top.get("assignments"), top.get("validators")]
            .into_iter()
            .flatten()
            .find(|v| !v.is_null());
        let mut out = Vec::new();
        for row in list.map_or(Some(&Vec::new()), |l| l.as_array())? {
            let r = struct_view(
                row,
                &[
                    ("validator_index", true),
                    ("chain_id", true),
                    ("active", false),
                ],
            )?;
            let active = match r.get("active") {
                None | Some(Value::Null) => true,
                Some(a) => a.as_bool()?,
            };
            out.push(Assignment {
                validator_index: quoted(r["validator_index"])?,
                chain_id: ChainId::new(r["chain_id"].as_str()?),
                active,
            });
        }
        Some(out)
    };
    read().map_or(RefAnswer::Malformed, RefAnswer::Valid)
}

fn check_listing(c: &RegistryClient, bytes: &[u8]) -> Result<(), TestCaseError> {
    let got = c.parse_list(bytes);
    let want = ref_listing(bytes);
    match (&got, &want) {
        (Ok(v), RefAnswer::Valid(w)) => prop_assert_eq!(v, w),
        (Err(RegistryError::Malformed { .. }), RefAnswer::Malformed) => {}
        // Any outcome: the tree is no oracle (its properties are checked below).
        (_, RefAnswer::Unparsable) => {}
        (Err(RegistryError::Malformed { .. }), _) if has_repeated_keys(bytes) => {}
        _ => prop_assert!(false, "parse: {:?}\nreference: {:?}", got, want),
    }
    match &got {
        Ok(v) => {
            let most = count(bytes, b'{') + count(bytes, b'[');
            prop_assert!(v.len() <= most, "{} rows, at most {}", v.len(), most);
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(!e.is_auth(), "a listing's body is never an auth failure");
            no_secret(&text, API_KEY)?;
            prop_assert!(
                text.chars().count() <= 1_200,
                "{} chars: {}",
                text.chars().count(),
                text
            );
        }
    }
    Ok(())
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_registry_list() {
    let c = registry();
    let n = cases();
    let mut f = Fuzz::new("registry_list");
    f.check("bytes", n, arbitrary(), |b| check_listing(&c, &b.0));
    f.check("valid", n, listing(), |(body, want)| {
        let got = c.parse_list(body.as_bytes());
        prop_assert_eq!(got.as_ref().ok(), Some(want), "{:?}", got);
        check_listing(&c, body.as_bytes())
    });
    f.check(
        "mutated",
        n,
        mutated(listing().prop_map(|(b, _)| b.into_bytes())),
        |b| check_listing(&c, &b.0),
    );
    f.done();
}

// ---- beacon events ---------------------------------------------------------------

const KNOWN_TOPICS: [&str; 5] = [
    "head",
    "head_v2",
    "finalized_checkpoint",
    "voluntary_exit",
    "chain_reorg",
];

fn num(n: u64, bare: bool) -> String {
    if bare {
        n.to_string()
    } else {
        format!("\"{n}\"")
    }
}

/// A beacon event as a node sends it: topic, data and what it means.
fn beacon_event() -> impl Strategy<Value = (String, String, Event)> {
    let root = "0x445189d44ee87eb36c9af247417e91aa921ed95ed53abdf5c946f5b3371a0e08";
    prop_oneof![
        (any::<u64>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(move |(slot, et, bare, v2)| {
            let inner = format!(
                r#"{{"slot":{},"block":"{root}","state":"{root}","epoch_transition":{et},"previous_duty_dependent_root":"{root}","current_duty_dependent_root":"{root}","execution_optimistic":false}}"#,
                num(slot, bare)
            );
            let (topic, data) = if v2 {
                ("head_v2", format!(r#"{{"version":"deneb","data":{inner}}}"#))
            } else {
                ("head", inner)
            };
            (topic.to_string(), data, Event::Head { slot, epoch_transition: et })
        }),
        (any::<u64>(), any::<bool>()).prop_map(move |(epoch, bare)| (
            "finalized_checkpoint".to_string(),
            format!(r#"{{"block":"{root}","state":"{root}","epoch":{},"execution_optimistic":false}}"#, num(epoch, bare)),
            Event::FinalizedCheckpoint { epoch },
        )),
        (index(), any::<u64>(), any::<bool>()).prop_map(move |(i, epoch, bare)| (
            "voluntary_exit".to_string(),
            format!(r#"{{"message":{{"epoch":{},"validator_index":{}}},"signature":"0x9331d4afc7eac7a47ea89523c22b24ce606d1a50fef2406cb03ae76cca34bccf"}}"#, num(epoch, bare), num(i, bare)),
            Event::VoluntaryExit { validator_index: i, epoch },
        )),
        (any::<u64>(), prop_oneof![Just(None), any::<u64>().prop_map(Some)], any::<bool>()).prop_map(move |(slot, depth, bare)| {
            let d = depth.map_or(String::new(), |d| format!(r#","depth":{}"#, num(d, bare)));
            (
                "chain_reorg".to_string(),
                format!(r#"{{"slot":{}{d},"old_head_block":"{root}","new_head_block":"{root}","epoch":"7","execution_optimistic":false}}"#, num(slot, bare)),
                Event::ChainReorg { slot, depth: depth.unwrap_or(0) },
            )
        }),
        any::<u64>().prop_map(move |slot| (
            "block".to_string(),
            format!(r#"{{"slot":"{slot}","block":"{root}","execution_optimistic":false}}"#),
            Event::Other("block".into()),
        )),
    ]
}

/// Whether `n` is written in `data` (or could be behind an escape).
fn number_in(data: &str, n: u64) -> bool {
    data.contains(&n.to_string()) || data.contains('\\')
}

fn check_event(topic: &str, data: &str) -> Result<(), TestCaseError> {
    let known = KNOWN_TOPICS.contains(&topic);
    match parse_event(topic, data) {
        Ok(Event::Other(t)) => prop_assert!(!known && t == topic, "{:?} as Other({:?})", topic, t),
        Ok(e) => {
            prop_assert!(known, "{:?} read as {:?}", topic, e);
            let ok = match e {
                Event::Head { slot, .. } => topic.starts_with("head") && number_in(data, slot),
                Event::FinalizedCheckpoint { epoch } => {
                    topic == "finalized_checkpoint" && number_in(data, epoch)
                }
                Event::VoluntaryExit {
                    validator_index,
                    epoch,
                } => {
                    topic == "voluntary_exit"
                        && number_in(data, validator_index)
                        && number_in(data, epoch)
                }
                Event::ChainReorg { slot, depth } => {
                    topic == "chain_reorg"
                        && number_in(data, slot)
                        && (depth == 0 || number_in(data, depth))
                }
                Event::Other(_) => false,
            };
            prop_assert!(ok, "{:?} from {:?} {:?}", e, topic, data);
        }
        Err(_) => prop_assert!(known, "an unknown topic {:?} failed", topic),
    }
    Ok(())
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["head", "head_v2", "finalized_checkpoint", "voluntary_exit", "chain_reorg", "block", "message", ""])
            .prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// Every `event:`/`data:` pair of the real Lodestar stream.
fn fixture_events() -> Vec<(String, String)> {
    let text = String::from_utf8(fixture("sse-stream.txt")).expect("UTF-8");
    let mut out = Vec::new();
    let mut topic = None;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("event: ") {
            topic = Some(t.to_string());
        } else if let (Some(d), Some(t)) = (line.strip_prefix("data: "), topic.take()) {
            out.push((t, d.to_string()));
        }
    }
    assert!(out.len() > 50, "{} events in the fixture", out.len());
    out
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_beacon_events() {
    let real = fixture_events();
    let n = cases();
    let mut f = Fuzz::new("beacon_events");
    f.check("bytes", n, (topic(), arbitrary()), |(t, b)| {
        check_event(t, &b.lossy())
    });
    f.check("valid", n, beacon_event(), |(t, d, want)| {
        prop_assert_eq!(&parse_event(t, d).ok(), &Some(want.clone()));
        check_event(t, d)
    });
    let base = prop_oneof![
        1 => select(real),
        3 => beacon_event().prop_map(|(t, d, _)| (t, d)),
    ];
    f.check(
        "mutated",
        n,
        base.prop_flat_map(|(t, d)| (Just(t), mutated(Just(d.into_bytes())))),
        |(t, b)| check_event(t, &b.lossy()),
    );
    f.done();
}

// ---- SSE framing: the bounded body under the event stream -------------------------

/// Chunk sizes, cycled (0: an empty chunk).
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![usize::MAX]),
        Just(vec![1]),
        vec(0usize..8, 1..8),
        vec(1usize..512, 1..8),
    ]
}

fn chunked(bytes: &[u8], sizes: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let (mut i, mut k, mut empty) = (0, 0, 0);
    while i < bytes.len() {
        let size = sizes[k % sizes.len()];
        k += 1;
        if size == 0 {
            empty += 1;
            if empty <= sizes.len() {
                out.push(Bytes::new());
                continue;
            }
        }
        empty = 0;
        let end = i.saturating_add(size.max(1)).min(bytes.len());
        out.push(Bytes::copy_from_slice(&bytes[i..end]));
        i = end;
    }
    out
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(MAX_LINE_BYTES),
        2 => 0usize..200,
        1 => select(vec![16, 64, 100, 1000, 4096]),
    ]
}

/// The text the SSE parser gets: invalid UTF-8 replaced (U+FFFD per
/// maximal invalid sequence), a character cut by the end of the stream
/// dropped.
fn repaired(bytes: &[u8]) -> Vec<u8> {
    let mut out = String::new();
    let mut cut_at_end = false;
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push('\u{FFFD}');
            cut_at_end = std::str::from_utf8(chunk.invalid())
                .err()
                .is_some_and(|e| e.error_len().is_none());
        }
    }
    // Only the last chunk can be a character cut short.
    if cut_at_end
        && bytes
            .utf8_chunks()
            .last()
            .is_some_and(|c| !c.invalid().is_empty())
    {
        out.pop();
    }
    out.into_bytes()
}

/// Where the first line or event over `limit` is (the byte that passes it)
/// and which it may be reported as.
fn ref_framing(text: &[u8], limit: usize) -> Option<(usize, &'static [&'static str])> {
    let (mut i, mut event) = (0usize, 0usize);
    let n = text.len();
    while i < n {
        let s = i;
        let e = text[s..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
            .map_or(n, |k| s + k);
        let len = e - s;
        let comment = len > 0 && text[s] == b':';
        if len > 0 {
            let line_at = (len > limit).then_some(s + limit);
            // The event's count (its field lines so far, line breaks
            // included) is checked on every non-empty line, a comment's too,
            // though a comment adds nothing to it.
            let event_at = if comment {
                (event > limit).then_some(s)
            } else {
                (event + len > limit).then(|| s + limit.saturating_sub(event))
            };
            match (line_at, event_at) {
                (Some(l), Some(ev)) if ev < l => return Some((ev, &["event", "line"])),
                (Some(l), _) => return Some((l, &["line"])),
                (None, Some(ev)) => return Some((ev, &["event"])),
                (None, None) => {}
            }
        }
        if e == n {
            break;
        }
        if len == 0 {
            event = 0;
        } else if !comment {
            event += len + 1;
        }
        i = e + 1;
        if text[e] == b'\r' && i < n && text[i] == b'\n' {
            i += 1;
        }
    }
    None
}

/// What a bounded body yields over `chunks`: the bytes passed on and the
/// error that ended it, if any.
fn run_bounded(
    chunks: Vec<Bytes>,
    limit: usize,
) -> Result<(Vec<u8>, Option<Oversize>), TestCaseError> {
    let inner: ByteStream = Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)));
    let mut body = BoundedBody::new(inner, limit);
    let mut out = Vec::new();
    let mut first = true;
    loop {
        match body.next().now_or_never() {
            None => prop_assert!(false, "a body of ready chunks is not ready"),
            Some(None) => return Ok((out, None)),
            Some(Some(Ok(chunk))) => {
                prop_assert!(
                    std::str::from_utf8(&chunk).is_ok(),
                    "a chunk passed on is not UTF-8"
                );
                // The first chunk starts with the transport's prime (after
                // a byte order mark); the server's bytes follow.
                let mut chunk = chunk.to_vec();
                if !chunk.is_empty() && std::mem::take(&mut first) {
                    let bom = if chunk.starts_with(b"\xEF\xBB\xBF") {
                        3
                    } else {
                        0
                    };
                    prop_assert!(
                        chunk[bom..].starts_with(PRIME),
                        "the first chunk does not start with the prime"
                    );
                    chunk.drain(bom..bom + PRIME.len());
                }
                out.extend_from_slice(&chunk);
            }
            Some(Some(Err(e))) => {
                let o = e.inner().downcast_ref::<Oversize>().cloned();
                prop_assert!(o.is_some(), "another error: {}", e);
                let after = body.next().now_or_never();
                prop_assert!(
                    matches!(after, Some(None)),
                    "the body goes on after its error"
                );
                return Ok((out, o));
            }
        }
    }
}

fn check_framing(bytes: &[u8], sizes: &[usize], limit: usize) -> Result<(), TestCaseError> {
    let chunks = chunked(bytes, sizes);
    let biggest = chunks.iter().map(Bytes::len).max().unwrap_or(0);
    let (out, err) = run_bounded(chunks, limit)?;
    let text = repaired(bytes);
    match (ref_framing(&text, limit), err) {
        (None, None) => prop_assert!(out == text, "the body passed on other bytes"),
        (Some((at, what)), Some(o)) => {
            prop_assert!(
                what.contains(&o.what),
                "reported as {:?}, expected {:?}",
                o.what,
                what
            );
            prop_assert_eq!(o.limit, limit);
            prop_assert!(o.starts.chars().count() <= 65, "{:?}", o.starts);
            prop_assert!(
                text.starts_with(&out),
                "passed on bytes that are not the input's"
            );
            prop_assert!(
                out.len() <= at,
                "passed on the byte past the limit ({} > {})",
                out.len(),
                at
            );
            prop_assert!(
                out.len() + 3 * biggest + 4 > at,
                "stopped early: {} bytes, over at {}",
                out.len(),
                at
            );
        }
        (want, got) => prop_assert!(false, "reference: {:?}\nbody: {:?}", want, got),
    }
    Ok(())
}

/// Lines of lengths around `limit`: comments, fields, blank lines.
fn near_limit() -> impl Strategy<Value = (Blob, usize)> {
    (1usize..64)
        .prop_flat_map(|limit| {
            let line = (0..limit + 3, 0..4u8, select(vec!["\n", "\r\n", "\r"]));
            (Just(limit), vec(line, 1..30))
        })
        .prop_map(|(limit, lines)| {
            let mut b = Vec::new();
            for (len, kind, eol) in lines {
                match kind {
                    0 => b.extend(std::iter::repeat_n(b'x', len)),
                    1 => {
                        b.push(b':');
                        b.extend(std::iter::repeat_n(b'k', len.saturating_sub(1)));
                    }
                    2 => b.extend_from_slice(b"data: "),
                    _ => {}
                }
                b.extend_from_slice(eol.as_bytes());
            }
            (Blob(b), limit)
        })
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_sse_framing() {
    let real = fixture("sse-stream.txt");
    let n = cases();
    let mut f = Fuzz::new("sse_framing");
    f.check(
        "bytes",
        n,
        (arbitrary(), chunk_sizes(), limit()),
        |(b, s, l)| check_framing(&b.0, s, *l),
    );
    f.check(
        "mutated",
        n,
        (
            mutated(prop_oneof![
                1 => Just(real.clone()),
                3 => sse_stream().prop_map(|(b, _)| b.0),
            ]),
            chunk_sizes(),
            limit(),
        ),
        |(b, s, l)| check_framing(&b.0, s, *l),
    );
    f.check(
        "near_limit",
        n,
        (near_limit(), chunk_sizes()),
        |((b, l), s)| check_framing(&b.0, s, *l),
    );
    f.done();
}

// ---- the event stream as a whole ----------------------------------------------------

/// Answers every request with 200 and the chunks as its body.
#[derive(Clone)]
struct Canned(Arc<Vec<Bytes>>);

impl HttpTransport for Canned {
    fn request(&self, _: Request<Option<Bytes>>) -> ResponseFuture {
        let chunks = self.0.clone();
        Box::pin(async move {
            let body: ByteStream = Box::pin(futures_util::stream::iter(
                chunks.iter().cloned().map(Ok).collect::<Vec<_>>(),
            ));
            Response::builder()
                .status(200)
                .body(body)
                .map_err(TransportError::new)
        })
    }
}

/// An item, as compared: an invalid event by its topic.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Event(Event),
    Invalid(String),
    KeepAlive,
}

fn seen(topic: &str, data: &str) -> Seen {
    match parse_event(topic, data) {
        Ok(e) => Seen::Event(e),
        Err(_) => Seen::Invalid(excerpt(topic.as_bytes())),
    }
}

/// What the SSE parser under `Subscription` (eventsource-client 0.18.0)
/// yields for `text`, each item with the offset after the line that made
/// it; and where, if anywhere, it refuses the stream. Its rules: a leading
/// BOM is dropped; lines end at CRLF, LF or CR; an unterminated last line is
/// dropped; a comment is yielded at once; a blank line dispatches the
/// fields seen since the last one (none: nothing; no data: nothing; no
/// field that sets anything, and no id so far: the stream is refused).
fn ref_sse(text: &[u8]) -> (Vec<(usize, Seen)>, Option<usize>) {
    #[derive(Default, PartialEq)]
    struct Fields {
        event: String,
        data: String,
        id: Option<String>,
        retry: Option<u64>,
    }
    let text = String::from_utf8_lossy(text);
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let offset = text.len() - body.len();
    let b = body.as_bytes();
    let mut items = Vec::new();
    let mut pending: Option<Fields> = None;
    // The bounded transport primes every stream with an empty `id:`.
    let mut last_id: Option<String> = Some(String::new());
    let mut i = 0;
    while let Some(k) = b[i..].iter().position(|c| *c == b'\n' || *c == b'\r') {
        let (s, e) = (i, i + k);
        i = e + 1;
        if b[e] == b'\r' && b.get(i) == Some(&b'\n') {
            i += 1;
        }
        let at = offset + i;
        let line = &body[s..e];
        if line.is_empty() {
            if let Some(f) = pending.take() {
                if f == Fields::default() {
                    return (items, Some(at));
                }
                if !f.data.is_empty() {
                    let topic = if f.event.is_empty() {
                        "message"
                    } else {
                        &f.event
                    };
                    items.push((at, seen(topic, &f.data[..f.data.len() - 1])));
                }
            }
            continue;
        }
        if line.starts_with(':') {
            items.push((at, Seen::KeepAlive));
            continue;
        }
        let (key, value) = match line.split_once(':') {
            Some((k, v)) => (k, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let f = pending.get_or_insert_with(|| Fields {
            id: last_id.clone(),
            ..Fields::default()
        });
        match key {
            "event" => f.event = value.to_string(),
            "data" => {
                f.data.push_str(value);
                f.data.push('\n');
            }
            "id" if !value.contains('\0') => {
                last_id = Some(value.to_string());
                f.id = last_id.clone();
            }
            "retry" => {
                if let Ok(r) = value.parse() {
                    f.retry = Some(r);
                }
            }
            _ => {}
        }
    }
    (items, None)
}

/// Everything a subscription yields over `chunks`, and how it ended.
fn run_stream(
    rt: &tokio::runtime::Runtime,
    chunks: Vec<Bytes>,
    limit: usize,
) -> (Vec<Item>, StreamError) {
    rt.block_on(async {
        let url = Url::parse("http://node.invalid/eth/v1/events").expect("a URL");
        let mut sub =
            Subscription::new(&url, Canned(Arc::new(chunks)), limit).expect("a subscription");
        if let Err(e) = sub.connected().await {
            return (Vec::new(), e);
        }
        let mut items = Vec::new();
        loop {
            match sub.next().await {
                Ok(i) => items.push(i),
                Err(e) => return (items, e),
            }
        }
    })
}

fn check_stream(
    rt: &tokio::runtime::Runtime,
    bytes: &[u8],
    sizes: &[usize],
    limit: usize,
) -> Result<(), TestCaseError> {
    let chunks = chunked(bytes, sizes);
    let biggest = chunks.iter().map(Bytes::len).max().unwrap_or(0);
    let (items, end) = run_stream(rt, chunks, limit);
    let mut got = Vec::new();
    for item in &items {
        got.push(match item {
            Item::Event(e) => Seen::Event(e.clone()),
            Item::KeepAlive => Seen::KeepAlive,
            Item::Invalid(bad) => {
                prop_assert!(
                    !bad.error.is_empty() && bad.error.chars().count() <= 200,
                    "{:?}",
                    bad
                );
                Seen::Invalid(bad.topic.clone())
            }
        });
    }
    let text = repaired(bytes);
    let (want, refused) = ref_sse(&text);
    let over = ref_framing(&text, limit).map(|(at, _)| at);
    // Where the stream stops: an oversize chunk is never parsed.
    let stop = match (over, refused) {
        (Some(o), Some(r)) => Some(o.min(r)),
        (o, r) => o.or(r),
    };
    let whole: Vec<Seen> = want.iter().map(|(_, s)| s.clone()).collect();
    match stop {
        None => {
            prop_assert_eq!(&end, &StreamError::Closed);
            prop_assert_eq!(got, whole);
        }
        Some(at) => {
            let ok_end = match &end {
                StreamError::TooLarge(_) => over.is_some(),
                StreamError::Protocol(_) => refused.is_some_and(|r| over.is_none_or(|o| r <= o)),
                _ => false,
            };
            prop_assert!(
                ok_end,
                "ended with {:?} (oversize at {:?}, refused at {:?})",
                end,
                over,
                refused
            );
            prop_assert!(
                whole.starts_with(&got),
                "not the stream's items:\n{:?}\n{:?}",
                got,
                whole
            );
            // Items of earlier chunks are all there (a chunk repaired can
            // be 3 times its size, plus 3 bytes held back).
            let surely = want
                .iter()
                .filter(|(p, _)| p + 3 * biggest + 4 <= at)
                .count();
            prop_assert!(
                got.len() >= surely,
                "{} items, {} before the stop",
                got.len(),
                surely
            );
        }
    }
    Ok(())
}

/// A well-formed stream (events, some with data over several lines, and
/// keep-alive comments; LF, CRLF or CR) and its items.
fn sse_stream() -> impl Strategy<Value = (Blob, Vec<Seen>)> {
    let piece = prop_oneof![
        4 => beacon_event().prop_map(Some),
        1 => Just(None),
    ];
    (
        vec(piece, 0..20),
        select(vec!["\n", "\r\n", "\r"]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(pieces, eol, split, space, bom)| {
            let sp = if space { " " } else { "" };
            let mut s = String::new();
            if bom {
                s.push('\u{feff}');
            }
            let mut want = Vec::new();
            for p in pieces {
                match p {
                    None => {
                        s += &format!(": keep-alive{eol}");
                        want.push(Seen::KeepAlive);
                    }
                    Some((topic, data, event)) => {
                        s += &format!("event:{sp}{topic}{eol}");
                        if split {
                            for part in data.split_inclusive(',') {
                                s += &format!("data:{sp}{part}{eol}");
                            }
                        } else {
                            s += &format!("data:{sp}{data}{eol}");
                        }
                        s += eol;
                        want.push(Seen::Event(event));
                    }
                }
            }
            (Blob(s.into_bytes()), want)
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_sse_stream() {
    let rt = runtime();
    let real = fixture("sse-stream.txt");
    let n = cases();
    let mut f = Fuzz::new("sse_stream");
    f.check(
        "bytes",
        n,
        (arbitrary(), chunk_sizes(), limit()),
        |(b, s, l)| check_stream(&rt, &b.0, s, *l),
    );
    f.check(
        "valid",
        n,
        (sse_stream(), chunk_sizes()),
        |((b, want), s)| {
            let (items, end) = run_stream(&rt, chunked(&b.0, s), MAX_LINE_BYTES);
            prop_assert_eq!(end, StreamError::Closed);
            let got: Vec<Seen> = items
                .iter()
                .map(|i| match i {
                    Item::Event(e) => Seen::Event(e.clone()),
                    Item::KeepAlive => Seen::KeepAlive,
                    Item::Invalid(bad) => Seen::Invalid(bad.topic.clone()),
                })
                .collect();
            prop_assert_eq!(&got, want);
            check_stream(&rt, &b.0, s, MAX_LINE_BYTES)
        },
    );
    f.check("real", (n / 8).max(4), chunk_sizes(), |s| {
        check_stream(&rt, &real, s, MAX_LINE_BYTES)
    });
    f.check(
        "mutated",
        n,
        (
            mutated(prop_oneof![
                1 => Just(real.clone()),
                3 => sse_stream().prop_map(|(b, _)| b.0),
            ]),
            chunk_sizes(),
            limit(),
        ),
        |(b, s, l)| check_stream(&rt, &b.0, s, *l),
    );
    f.done();
}

// ---- Retry-After and the domain's parsers --------------------------------------------

fn retry_after_value() -> impl Strategy<Value = String> {
    let date =
        (0u64..1 << 34).prop_map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)));
    let base = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        date.clone(),
        Just("18446744073709551616".to_string()),
        Just(" 120 ".to_string()),
    ];
    prop_oneof![
        2 => base,
        2 => mutated(prop_oneof![any::<u64>().prop_map(|n| n.to_string()), date].prop_map(String::into_bytes))
            .prop_map(|b| b.lossy()),
        1 => any::<String>(),
    ]
}

fn check_retry_after(value: &str, now: u64, retry: u32) -> Result<(), TestCaseError> {
    let now = UNIX_EPOCH + Duration::from_secs(now);
    let got = parse_retry_after(value, now);
    let t = value.trim();
    let want = match t.parse::<u64>() {
        Ok(n) => Some(Duration::from_secs(n)),
        Err(_) => httpdate::parse_http_date(t)
            .ok()
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
    };
    prop_assert_eq!(got, want);
    let policy = RetryPolicy::default();
    let wait = policy.delay(retry, got);
    prop_assert!(wait <= policy.max_delay, "waits {:?}", wait);
    Ok(())
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_retry_after() {
    let n = cases();
    let mut f = Fuzz::new("retry_after");
    f.check(
        "values",
        n,
        (retry_after_value(), 0u64..1 << 34, any::<u32>()),
        |(v, now, retry)| check_retry_after(v, *now, *retry),
    );
    f.done();
}

fn check_domain(s: &str) -> Result<(), TestCaseError> {
    let got = s.parse::<Pubkey>();
    let want = ref_pubkey(s);
    prop_assert_eq!(got.as_ref().ok(), want.as_ref(), "{:?}", got);
    if let Ok(pk) = got {
        prop_assert_eq!(pk.to_string().parse::<Pubkey>(), Ok(pk));
    }
    prop_assert_eq!(decimal(s), ref_decimal(s));
    let c = ChainId::new(s);
    if let Some(n) = c.numeric() {
        prop_assert_eq!(ChainId::canonical(n).numeric(), Some(n));
    }
    let _ = c.is_canonical();
    let status = Status::parse(s);
    prop_assert_eq!(status.as_str(), s);
    Ok(())
}

#[test]
#[ignore = "fuzz target: run with --ignored, or fuzz/run.sh"]
fn fuzz_domain() {
    let n = cases();
    let mut f = Fuzz::new("domain");
    f.check("bytes", n, arbitrary(), |b| check_domain(&b.lossy()));
    f.check(
        "mutated",
        n,
        mutated(prop_oneof![
            spelled().prop_map(|(_, s)| s.into_bytes()),
            index().prop_map(|i| i.to_string().into_bytes()),
            chain().prop_map(|c| c.as_bytes().to_vec()),
            select(STATUSES.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        ]),
        |b| check_domain(&b.lossy()),
    );
    f.done();
}

// ---- what the fuzzing found ------------------------------------------------------
//
// Regression tests of what the fuzzing found (the long-line error lives
// beside its parser, in src/inputs/tests.rs). These run in the default
// test run.

/// An SSE field line the spec says to ignore (an unknown field name, an
/// empty `event:`, a `retry:` that is not a number), followed by a blank
/// line, made eventsource-client 0.18.0 report `InvalidEvent` and end the
/// session (the watch loop reconnected and refreshed everything). The
/// bounded transport now primes the stream with an empty `id:`, after
/// which the client ignores such a block, as the WHATWG rules say.
#[test]
fn an_ignorable_sse_field_line_is_skipped() {
    let rt = runtime();
    for junk in ["x-heartbeat\n\n", "event:\n\n", "retry: soon\n\n"] {
        let stream = format!("{junk}event: finalized_checkpoint\ndata: {{\"epoch\":\"7\"}}\n\n");
        let (items, end) = run_stream(&rt, vec![Bytes::from(stream)], MAX_LINE_BYTES);
        assert_eq!(
            (items, end),
            (
                vec![Item::Event(Event::FinalizedCheckpoint { epoch: 7 })],
                StreamError::Closed
            ),
            "after {junk:?}"
        );
    }
}
