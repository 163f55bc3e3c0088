//! `keysync doctor`: checks a configuration end to end before the first
//! write, and writes nothing to the registry.
//!
//! Owns the list of checks and their verdicts, in the order a deployment
//! depends on them: settings; the API key accepted and the operator
//! resolved; the console list; each beacon node (reachable, on the
//! configured chain, synced) and its event stream; every input source
//! (counts); the plan a pass would make (pending and unknown keys); the
//! data directory (writable, store not locked by a running keysync); the
//! listen address. One line per check on stdout (`✔`/`✘`, and on `✘` what
//! to do), or one JSON object per check with `--log-format json`. The exit
//! code is that of the first failing check's kind (2 auth, 3 console, 4
//! configuration or input, 6 beacon node), 0 when all pass. The checks use
//! the same code paths as the commands (settings, clients, the one
//! reconcile function in plan mode), so a green doctor means the daemon's
//! first pass sees what the doctor saw. Secrets are never printed: a key
//! or token is named by where it came from.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::apply::Observer;
use crate::beacon::{BeaconClient, Vetting, Witness};
use crate::cli::Command;
use crate::config::{LogFormat, SourceOf};
use crate::desired::{Counts, Desired};
use crate::error::{Error, EXIT_AUTH, EXIT_BEACON, EXIT_CONFIG, EXIT_OK};
use crate::inputs::{self, keymanager, SourceKind};
use crate::plan::Plan;
use crate::reconcile::{Mode, PassObserver, Policy, Reconciler, Stale, State};
use crate::settings::Settings;
use crate::witness::Confirmed;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    /// `None` when it passed; else the exit code of its kind.
    pub failed: Option<u8>,
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            failed: None,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: impl Into<String>, code: u8, detail: impl Into<String>, fix: &str) -> Check {
        Check {
            name: name.into(),
            failed: Some(code),
            detail: crate::secret::redact_shapes(&detail.into()),
            fix: Some(fix.to_string()),
        }
    }

    fn of_error(name: impl Into<String>, e: &Error, fix: &str) -> Check {
        Check::fail(name, e.exit_code(), e.to_string(), fix)
    }
}

/// Prints each check as it is made; remembers the first failure.
struct Report {
    json: bool,
    first_failure: Option<u8>,
}

impl Report {
    fn add(&mut self, c: Check) {
        if self.first_failure.is_none() {
            self.first_failure = c.failed;
        }
        let line = if self.json {
            serde_json::json!({
                "check": c.name,
                "ok": c.failed.is_none(),
                "exit_code": c.failed,
                "detail": c.detail,
                "fix": c.fix,
            })
            .to_string()
        } else {
            match (&c.failed, &c.fix) {
                (None, _) => format!("✔ {}: {}", c.name, c.detail),
                (Some(_), Some(fix)) => format!("✘ {}: {}\n  → {fix}", c.name, c.detail),
                (Some(_), None) => format!("✘ {}: {}", c.name, c.detail),
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|_| out.flush());
    }

    fn code(&self) -> u8 {
        self.first_failure.unwrap_or(EXIT_OK)
    }
}

/// Runs every check of `command`'s configuration; returns the exit code.
pub async fn run(command: &Command, sources: &dyn SourceOf, format: LogFormat) -> u8 {
    let mut r = Report {
        json: format == LogFormat::Json,
        first_failure: None,
    };
    let settings = match Settings::resolve(command, sources) {
        Ok(s) => s,
        Err(e) => {
            r.add(Check::fail(
                "settings",
                EXIT_CONFIG,
                e.to_string(),
                "fix the setting named (see keysync --help and config/keysync.example.toml)",
            ));
            return r.code();
        }
    };
    r.add(Check::ok("settings", summary(&settings)));
    checks(&settings, &mut r).await;
    r.code()
}

fn summary(s: &Settings) -> String {
    let key = match &s.api_key_file {
        Some(f) => format!("the API key from {}", f.display()),
        None => "the API key from KEYSYNC_API_KEY".to_string(),
    };
    format!(
        "network {}, chain {}, {key}, {} beacon URL(s), {}",
        s.network,
        s.chain_id,
        s.beacon_urls.len(),
        if s.watch.apply {
            "watch writes (--apply)"
        } else {
            "watch in shadow mode"
        }
    )
}

async fn checks(s: &Settings, r: &mut Report) {
    // 1. The key and the operator.
    let rec = match Reconciler::connect(s, None).await {
        Ok(rec) => rec,
        Err(e) => {
            r.add(Check::of_error(
                "auth",
                &e,
                "check the API key (KEYSYNC_API_KEY_FILE), KEYSYNC_AUTH_URL and the network path",
            ));
            return;
        }
    };
    let who = match &s.operator_id {
        // Configured: the key must still be accepted, and be that operator's.
        Some(id) => match rec.registry.me().await {
            Ok(me) if me == *id => Check::ok("auth", format!("key accepted; operator {id}")),
            Ok(me) => Check::fail(
                "auth",
                EXIT_AUTH,
                format!("the key belongs to operator {me}, not to the configured operator {id}"),
                "set KEYSYNC_OPERATOR_ID to the key's operator, or use that operator's key",
            ),
            Err(e) => Check::of_error(
                "auth",
                &Error::Registry(e),
                "check the API key and KEYSYNC_AUTH_URL",
            ),
        },
        None => Check::ok(
            "auth",
            format!(
                "key accepted; operator {} (from /api/v1/me)",
                rec.operator_id
            ),
        ),
    };
    let auth_ok = who.failed.is_none();
    r.add(who);
    if !auth_ok {
        return;
    }

    // 2. The registry.
    match rec.registry.list(&rec.operator_id).await {
        Ok(rows) => r.add(Check::ok(
            "console",
            format!(
                "{} rows listed, {} active",
                rows.len(),
                rows.iter().filter(|a| a.active).count()
            ),
        )),
        Err(e) => r.add(Check::of_error(
            "console",
            &Error::Registry(e),
            "check KEYSYNC_API_URL and that the console API is up",
        )),
    }

    // 3. Each beacon node, and its event stream.
    for url in &s.beacon_urls {
        beacon(s, &rec, url, r).await;
    }

    // 4. Every input source, then the plan a pass would make.
    let content = inputs_check(s, &rec, r).await;
    if let Some(content) = content {
        plan_check(s, &rec, content, r).await;
    }

    // 5. What the daemon needs of this machine. Run beside the daemon it
    // checks (`kubectl exec`), the store and the address are that daemon's.
    let running =
        store_locked(&s.watch.data_dir) && running_keysync(s.watch.listen, s.timeout).await;
    r.add(data_dir_check(&s.watch.data_dir, running));
    r.add(listen_check(s.watch.listen, running));
}

async fn beacon(s: &Settings, rec: &Reconciler, url: &url::Url, r: &mut Report) {
    let shown = url.as_str().trim_end_matches('/').to_string();
    let one = BeaconClient::new(rec.http.clone(), vec![url.clone()]).vetted(Vetting {
        chain: s.chain_id.numeric().map(|n| (n, s.chain_id.to_string())),
        tolerance: s.sync_tolerance,
    });
    one.begin_pass();
    let name = format!("beacon {shown}");
    match one.witness().await {
        Ok(Witness::Synced { head_lag, .. }) => r.add(Check::ok(
            name,
            format!(
                "on chain {}, synced (head {head_lag} slot(s) behind the wall clock)",
                s.chain_id
            ),
        )),
        Ok(Witness::NotSynced(ns)) => r.add(Check::fail(
            name,
            EXIT_BEACON,
            ns.to_string(),
            "wait until the node is synced (removals are held until then; adds go through), or point KEYSYNC_BEACON_URL at a synced node",
        )),
        Err(e) => {
            let fix = if e.is_config() {
                "point KEYSYNC_BEACON_URL at a node of the configured chain, or fix KEYSYNC_CHAIN_ID"
            } else {
                "check that the beacon node runs and its REST API is reachable from here"
            };
            r.add(Check::of_error(name, &Error::Beacon(e), fix));
            return;
        }
    }
    r.add(stream_check(&shown, s.timeout).await);
}

/// The event stream opens: the node answers 200 with an event stream
/// (its events are not waited for).
async fn stream_check(shown: &str, timeout: Duration) -> Check {
    let name = format!("event stream {shown}");
    let url = format!("{shown}/eth/v1/events?topics=head");
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Check::fail(name, EXIT_BEACON, e.to_string(), "report this"),
    };
    let answer = tokio::time::timeout(
        timeout,
        client
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send(),
    )
    .await;
    let fix = "the daemon follows this stream: check the node's REST API serves /eth/v1/events (proxies must not buffer it)";
    match answer {
        Ok(Ok(resp)) => {
            let ctype = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if resp.status().is_success() && ctype.starts_with("text/event-stream") {
                Check::ok(name, "opens (text/event-stream)")
            } else {
                Check::fail(
                    name,
                    EXIT_BEACON,
                    format!("answered HTTP {} ({ctype:?})", resp.status().as_u16()),
                    fix,
                )
            }
        }
        Ok(Err(e)) => Check::fail(name, EXIT_BEACON, format!("no answer: {e}"), fix),
        Err(_) => Check::fail(
            name,
            EXIT_BEACON,
            format!("no answer within {} s", timeout.as_secs()),
            fix,
        ),
    }
}

/// Reads every source strictly, as one-shot does; one check each.
async fn inputs_check(
    s: &Settings,
    rec: &Reconciler,
    r: &mut Report,
) -> Option<inputs::SourceContent> {
    let fix = "fix the input named (its file and line are in the message); the daemon would keep its last good content, one-shot would exit 4";
    let mut all = inputs::SourceContent::default();
    let mut ok = true;
    let drop_dir = s.inputs.input_dir.iter().map(|d| (SourceKind::Detect, d));
    for (kind, path) in inputs::configured(&s.inputs).chain(drop_dir) {
        let name = format!("input {}", path.display());
        let read = match kind {
            SourceKind::Detect => inputs::read_drop_dir(path, &s.inputs.checks, s.allow_empty),
            _ => inputs::read_strict(kind, path, &s.inputs.checks, s.allow_empty),
        };
        match read {
            Ok(c) => {
                r.add(Check::ok(name, describe(kind, &c)));
                all.extend(&c);
            }
            Err(e) => {
                ok = false;
                r.add(Check::fail(name, EXIT_CONFIG, e.to_string(), fix));
            }
        }
    }
    let clients = keymanager::clients(&rec.http, &s.inputs.keymanagers);
    for client in &clients {
        let name = format!("keymanager {}", client.url());
        match keymanager::read_one(client, s.allow_empty).await {
            Ok(keys) => {
                r.add(Check::ok(name, format!("{} keys", keys.len())));
                all.pubkeys.extend(keys);
            }
            Err(e) => {
                ok = false;
                let fix = if e.is_rejected() {
                    "check KEYSYNC_KEYMANAGER_TOKEN_FILE: the token was refused"
                } else {
                    "check KEYSYNC_KEYMANAGER_URL and that the validator client serves its Keymanager API"
                };
                r.add(Check::fail(name, EXIT_CONFIG, e.to_string(), fix));
            }
        }
    }
    ok.then_some(all)
}

fn describe(kind: SourceKind, c: &inputs::SourceContent) -> String {
    let what = match kind {
        SourceKind::Pubkeys => "pubkeys list",
        SourceKind::IndexList => "index list",
        SourceKind::Records => "records",
        SourceKind::Detect => "drop directory",
        SourceKind::DepositData => "deposit data",
        SourceKind::Keystore | SourceKind::KeystoresDir => "keystores",
        SourceKind::Keymanager => "keymanager",
    };
    format!(
        "{what}: {} pubkeys, {} indices, {} records",
        c.pubkeys.len(),
        c.indices.len(),
        c.records.len()
    )
}

/// The observer of the doctor's pass: keeps the counts and the plan.
#[derive(Default)]
struct Seen {
    counts: Option<Counts>,
    plan: Option<(usize, usize, usize)>,
}

impl Observer for Seen {}

impl PassObserver for Seen {
    fn resolved(&mut self, c: &Counts) {
        self.counts = Some(c.clone());
    }

    fn planned(&mut self, plan: &Plan, _confirmed: &Confirmed) -> Result<(), Error> {
        self.plan = Some((
            plan.to_register.len(),
            plan.to_assign.len(),
            plan.to_unassign.len(),
        ));
        Ok(())
    }
}

/// One pass of the reconcile function in plan mode: what the first pass
/// of the daemon (or `sync`) would do, and which keys the chain does not
/// know yet.
async fn plan_check(
    s: &Settings,
    rec: &Reconciler,
    content: inputs::SourceContent,
    r: &mut Report,
) {
    let mut state = State::cold(Desired::cold(content, rec.chain_id.clone()));
    let mut seen = Seen::default();
    let result = rec
        .reconcile(
            &mut state,
            &Stale::everything(),
            Policy {
                mode: Mode::Plan,
                refuse_unconfirmed: false,
            },
            &mut seen,
        )
        .await;
    let fix = "see the message: the party it names failed during the pass";
    match (result, seen.plan) {
        (Ok(_), Some((register, assign, unassign))) => {
            let (unknown, excluded, sample) = seen
                .counts
                .map(|c| (c.unknown, c.excluded, c.sample))
                .unwrap_or_default();
            let mut detail = format!(
                "a pass would register {register}, assign {assign}, unassign {unassign}; {unknown} key(s) pending or unknown to the chain, {excluded} excluded"
            );
            if !sample.is_empty() {
                detail.push_str(&format!(" (e.g. {})", sample.join(", ")));
            }
            if unassign as u64 > s.max_deletes {
                detail.push_str(&format!(
                    "; more unassigns than --max-deletes {}: sync would refuse (exit 5), watch would hold them",
                    s.max_deletes
                ));
            }
            r.add(Check::ok("plan", detail));
        }
        (Ok(_), None) => r.add(Check::ok("plan", "nothing planned")),
        (Err(e), _) => r.add(Check::of_error("plan", &e, fix)),
    }
}

/// Whether another process holds the store's lock in `dir`.
fn store_locked(dir: &Path) -> bool {
    std::fs::File::open(crate::store::lock_file(dir))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Whether a keysync daemon answers on `listen` (its `/metrics` serves
/// `keysync_build_info`).
async fn running_keysync(listen: std::net::SocketAddr, timeout: Duration) -> bool {
    if listen.port() == 0 {
        return false;
    }
    let addr = crate::watch::ops::reachable(listen);
    let Ok(client) = reqwest::Client::builder()
        .timeout(timeout.min(Duration::from_secs(5)))
        .build()
    else {
        return false;
    };
    match client.get(format!("http://{addr}/metrics")).send().await {
        Ok(resp) if resp.status().is_success() => resp
            .text()
            .await
            .is_ok_and(|t| t.contains("keysync_build_info")),
        _ => false,
    }
}

/// The data directory can be written, and no other keysync holds its
/// store (the daemon `running` here, on the listen address and holding
/// this store, may).
fn data_dir_check(dir: &Path, running: bool) -> Check {
    let name = "data dir";
    let fix_dir =
        "set KEYSYNC_DATA_DIR to a directory keysync's user can write (systemd: StateDirectory=)";
    // The directory, or the nearest parent that exists (watch creates it).
    let mut probe_in = dir;
    while !probe_in.exists() {
        match probe_in.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe_in = p,
            _ => break,
        }
    }
    let probe = probe_in.join(format!(".keysync-doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        return Check::fail(
            name,
            EXIT_CONFIG,
            format!("{} is not writable: {e}", probe_in.display()),
            fix_dir,
        );
    }
    let _ = std::fs::remove_file(&probe);
    let db = crate::store::lock_file(dir);
    if store_locked(dir) {
        if running {
            return Check::ok(
                name,
                format!(
                    "{} writable; the store is held by the keysync watch running here",
                    dir.display()
                ),
            );
        }
        return Check::fail(
            name,
            EXIT_CONFIG,
            format!(
                "{}: the store is locked by another process (a keysync watch running?)",
                dir.display()
            ),
            "stop the other keysync, or give this one its own KEYSYNC_DATA_DIR",
        );
    }
    let state = if db.exists() {
        "store present, not locked"
    } else {
        "no store yet (watch creates it)"
    };
    Check::ok(name, format!("{} writable; {state}", dir.display()))
}

/// The listen address is free (or the daemon `running` there holds it).
fn listen_check(addr: std::net::SocketAddr, running: bool) -> Check {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok("listen", format!("{addr} is free")),
        Err(_) if running => Check::ok(
            "listen",
            format!("{addr} is held by the keysync watch running here"),
        ),
        Err(e) => Check::fail(
            "listen",
            EXIT_CONFIG,
            format!("cannot listen on {addr}: {e}"),
            "choose a free KEYSYNC_LISTEN (a keysync watch already running holds it)",
        ),
    }
}
