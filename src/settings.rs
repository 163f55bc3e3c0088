//! Command line, stage two: resolved, validated settings.
//!
//! Owns precedence (flag > environment > TOML file > default), defaults,
//! transport-safety rules (secrets only over https or to loopback, no
//! userinfo in any URL) and reading the API key file. Every error names the
//! flag, variable or file key at fault — and never contains the key itself.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use serde::Deserialize;
use url::Url;

use crate::cli::{Command, Common};
use crate::domain::ChainId;
use crate::http::RetryPolicy;
use crate::secret::Secret;

pub const DEFAULT_API_URL: &str = "https://console.getoptimum.io";
pub const DEFAULT_AUTH_URL: &str = "https://auth.getoptimum.io";
pub const DEFAULT_NETWORK: &str = "mainnet";
pub const DEFAULT_CHAIN_ID: &str = "0x1";
pub const DEFAULT_MAX_DELETES: u64 = 10;
/// Most attempts per remote request: more would ride out any outage but
/// hold the exit code an alert keys on for hours.
pub const MAX_HTTP_ATTEMPTS: u32 = 20;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf, &'static str),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(n) => write!(f, "{n}"),
            Origin::Env(n) => write!(f, "{n}"),
            Origin::File(p, k) => write!(f, "{}: {k}", p.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// A setting that is missing, malformed or unsafe (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {origin}: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub message: String,
}

fn cfg_err(origin: impl std::fmt::Display, message: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: origin.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Console,
    Json,
}

/// The optional TOML file (`--config` / `KEYSYNC_CONFIG`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub api_url: Option<String>,
    pub auth_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub operator_id: Option<String>,
    pub network: Option<String>,
    pub chain_id: Option<String>,
    pub beacon_url: Option<String>,
    pub pubkeys_file: Option<PathBuf>,
    pub index_list_file: Option<PathBuf>,
    pub indices_file: Option<PathBuf>,
    pub input_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    pub http_attempts: Option<u32>,
    pub http_backoff_ms: Option<u64>,
    pub http_timeout_secs: Option<u64>,
    pub sync_tolerance_slots: Option<u64>,
    pub max_deletes: Option<u64>,
    pub apply: Option<bool>,
    pub allow_empty: Option<bool>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub debounce_ms: Option<u64>,
    pub max_wait_ms: Option<u64>,
    pub resync_secs: Option<u64>,
    pub writes_per_second: Option<u32>,
    pub slot_ms: Option<u64>,
}

/// Input files, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub pubkeys_file: Option<PathBuf>,
    pub index_list_file: Option<PathBuf>,
    pub indices_file: Option<PathBuf>,
    pub input_dir: Option<PathBuf>,
}

impl Inputs {
    pub fn any(&self) -> bool {
        self.pubkeys_file.is_some()
            || self.index_list_file.is_some()
            || self.indices_file.is_some()
            || self.input_dir.is_some()
    }
}

/// Settings of the daemon only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSettings {
    pub apply: bool,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Quiet time before a pass starts. Larger coalesces more triggers into
    /// one pass but delays every write by as much.
    pub debounce: Duration,
    /// Upper bound on the wait under constant churn. Larger saves passes,
    /// but a busy directory can delay writes up to this long.
    pub max_wait: Duration,
    /// Full re-list of the registry to catch changes made by others. Shorter
    /// notices foreign edits sooner at one list request per interval.
    pub resync: Duration,
    /// Console API writes per second; protects the API (and our key) from
    /// a burst after a large change.
    pub writes_per_second: u32,
    /// Slot length; the event stream is dead after two silent slots.
    pub slot: Duration,
}

/// Everything a command needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: Url,
    pub auth_url: Url,
    pub api_key: Secret,
    /// The file the key came from (the daemon re-reads it when it changes).
    pub api_key_file: Option<PathBuf>,
    pub operator_id: Option<String>,
    pub network: String,
    pub chain_id: ChainId,
    pub beacon_urls: Vec<Url>,
    pub inputs: Inputs,
    pub log_format: LogFormat,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub max_deletes: u64,
    /// Slots a beacon node's head may trail the wall clock and count as
    /// synced (removals wait for a synced node). Larger accepts staler
    /// answers; smaller holds removals through ordinary late blocks.
    pub sync_tolerance: u64,
    /// Emptying is meant (`--allow-empty`): an input with no entries is
    /// not an error, and a pass may unassign every validator.
    pub allow_empty: bool,
    pub watch: WatchSettings,
}

/// Tells where a clap value came from.
pub trait SourceOf {
    fn source_of(&self, id: &str) -> Option<ValueSource>;
}

impl SourceOf for clap::ArgMatches {
    fn source_of(&self, id: &str) -> Option<ValueSource> {
        self.try_get_raw(id).ok().flatten()?;
        self.value_source(id)
    }
}

/// No sources known: every value is taken as a flag (unit tests).
pub struct AllFlags;

impl SourceOf for AllFlags {
    fn source_of(&self, _: &str) -> Option<ValueSource> {
        Some(ValueSource::CommandLine)
    }
}

struct Resolver<'a> {
    sources: &'a dyn SourceOf,
    file: FileConfig,
    file_path: Option<PathBuf>,
}

impl Resolver<'_> {
    /// flag/env value (with its origin) > file value > none.
    fn pick<T: Clone>(
        &self,
        cli: &Option<T>,
        id: &'static str,
        flag: &'static str,
        env: &'static str,
        file: impl Fn(&FileConfig) -> Option<T>,
        file_key: &'static str,
    ) -> Option<(T, Origin)> {
        if let Some(v) = cli {
            let origin = match self.sources.source_of(id) {
                Some(ValueSource::EnvVariable) => Origin::Env(env),
                _ => Origin::Flag(flag),
            };
            return Some((v.clone(), origin));
        }
        let v = file(&self.file)?;
        let path = self.file_path.clone().unwrap_or_default();
        Some((v, Origin::File(path, file_key)))
    }
}

macro_rules! pick {
    ($r:expr, $c:expr, $field:ident, $flag:literal, $env:literal) => {
        $r.pick(
            &$c.$field,
            stringify!($field),
            $flag,
            $env,
            |f| f.$field.clone(),
            stringify!($field),
        )
    };
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(path.display(), format!("cannot read the config file: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        cfg_err(
            path.display(),
            format!("invalid config file: {}", e.to_string().trim()),
        )
    })
}

/// Whether `host` is loopback: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parses a URL that will carry the API key: https, or http to loopback.
fn secret_url(raw: &str, origin: &Origin) -> Result<Url, ConfigError> {
    let url = plain_url(raw, origin)?;
    if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) {
        Ok(url)
    } else {
        Err(cfg_err(origin, format!(
            "must use https:// (got {}): the API key travels on every call; plain http is allowed only to loopback (localhost, 127.0.0.0/8, ::1)",
            redact_url(raw)
        )))
    }
}

/// Parses any URL: scheme and host required, http(s) only, no userinfo.
fn plain_url(raw: &str, origin: &Origin) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    if !raw.contains("://") {
        return Err(cfg_err(
            origin,
            format!(
                "must include a scheme, e.g. https:// (got {:?})",
                redact_url(raw)
            ),
        ));
    }
    let url = Url::parse(raw)
        .map_err(|e| cfg_err(origin, format!("not a URL ({e}): {:?}", redact_url(raw))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(cfg_err(origin, "must not embed credentials (user:pass@host); the API key is the only credential keysync sends"));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(cfg_err(
            origin,
            format!(
                "must be an http:// or https:// URL (got scheme {:?})",
                url.scheme()
            ),
        ));
    }
    if url.host().is_none() {
        return Err(cfg_err(
            origin,
            format!("must include a host (got {:?})", redact_url(raw)),
        ));
    }
    Ok(url)
}

/// A URL for error messages, with any userinfo removed.
fn redact_url(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &raw[..s], &raw[at + 1..]),
        _ => raw.to_string(),
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        // systemd may list several, colon-separated: use the first.
        let s = dir.to_string_lossy().into_owned();
        return PathBuf::from(s.split(':').next().unwrap_or(&s));
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("keysync");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/state/keysync");
    }
    PathBuf::from("keysync-state")
}

impl Settings {
    /// Resolves the settings of `command`. `needs_inputs`: diff, sync and
    /// watch need at least one input; show does not.
    pub fn resolve(command: &Command, sources: &dyn SourceOf) -> Result<Settings, ConfigError> {
        let empty = Common::default();
        let c = command.common().unwrap_or(&empty);
        let file_path = c.config.clone();
        let file = match &file_path {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let r = Resolver {
            sources,
            file,
            file_path,
        };

        // An empty value means unset, as in the original (`KEYSYNC_API_URL=`
        // in a unit file or manifest must not be a configuration error).
        let non_empty = |v: Option<(String, Origin)>| v.filter(|(s, _)| !s.trim().is_empty());
        let api_url = match non_empty(pick!(r, c, api_url, "--api-url", "KEYSYNC_API_URL")) {
            Some((v, o)) => secret_url(&v, &o)?,
            None => secret_url(DEFAULT_API_URL, &Origin::Default)?,
        };
        let auth_url = match non_empty(pick!(r, c, auth_url, "--auth-url", "KEYSYNC_AUTH_URL")) {
            Some((v, o)) => secret_url(&v, &o)?,
            None => secret_url(DEFAULT_AUTH_URL, &Origin::Default)?,
        };
        let (api_key, api_key_file) = resolve_key(&r, c)?;

        let operator_id = non_empty(pick!(
            r,
            c,
            operator_id,
            "--operator-id",
            "KEYSYNC_OPERATOR_ID"
        ))
        .map(|(s, _)| s.trim().to_string());
        let network = non_empty(pick!(r, c, network, "--network", "KEYSYNC_NETWORK")).map_or_else(
            || DEFAULT_NETWORK.to_string(),
            |(s, _)| s.trim().to_string(),
        );
        // One chain, one spelling: the registry compares chain ids as exact
        // strings, so `1`, `0x01` and `0X1` all become `0x1`.
        let chain_id = match non_empty(pick!(r, c, chain_id, "--chain-id", "KEYSYNC_CHAIN_ID")) {
            None => ChainId::new(DEFAULT_CHAIN_ID),
            Some((s, o)) => match ChainId::new(s.trim()).numeric() {
                Some(n) => {
                    let canonical = ChainId::canonical(n);
                    if canonical.as_str() != s.trim() {
                        tracing::info!(configured = %s.trim(), registry = %canonical, "chain id normalised to the registry's spelling");
                    }
                    canonical
                }
                None => {
                    return Err(cfg_err(
                        o,
                        format!(
                            "is not a chain id (got {:?}): write the numeric chain id as 0x-hex or decimal, e.g. 0x1 for mainnet, 0x88bb0 for hoodi",
                            s.trim()
                        ),
                    ))
                }
            },
        };

        let beacon_urls = match non_empty(pick!(
            r,
            c,
            beacon_url,
            "--beacon-url",
            "KEYSYNC_BEACON_URL"
        )) {
            Some((v, o)) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| plain_url(s, &o))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };

        let path =
            |v: Option<(PathBuf, Origin)>| v.map(|(p, _)| p).filter(|p| !p.as_os_str().is_empty());
        let inputs = Inputs {
            pubkeys_file: path(pick!(
                r,
                c,
                pubkeys_file,
                "--pubkeys-file",
                "KEYSYNC_PUBKEYS_FILE"
            )),
            index_list_file: path(pick!(
                r,
                c,
                index_list_file,
                "--index-list-file",
                "KEYSYNC_INDEX_LIST_FILE"
            )),
            indices_file: path(pick!(
                r,
                c,
                indices_file,
                "--indices-file",
                "KEYSYNC_INDICES_FILE"
            )),
            input_dir: path(pick!(r, c, input_dir, "--input-dir", "KEYSYNC_INPUT_DIR")),
        };

        let log_format = match non_empty(pick!(
            r,
            c,
            log_format,
            "--log-format",
            "KEYSYNC_LOG_FORMAT"
        )) {
            None => LogFormat::Console,
            Some((v, o)) => match v.trim() {
                "console" => LogFormat::Console,
                "json" => LogFormat::Json,
                other => {
                    return Err(cfg_err(
                        o,
                        format!("must be console or json (got {other:?})"),
                    ))
                }
            },
        };

        let mut retry = RetryPolicy::default();
        if let Some((n, o)) = pick!(
            r,
            c,
            http_attempts,
            "--http-attempts",
            "KEYSYNC_HTTP_ATTEMPTS"
        ) {
            if !(1..=MAX_HTTP_ATTEMPTS).contains(&n) {
                return Err(cfg_err(
                    o,
                    format!("must be from 1 to {MAX_HTTP_ATTEMPTS} (got {n})"),
                ));
            }
            retry.attempts = n;
        }
        if let Some((ms, _)) = pick!(
            r,
            c,
            http_backoff_ms,
            "--http-backoff-ms",
            "KEYSYNC_HTTP_BACKOFF_MS"
        ) {
            retry.base_delay = Duration::from_millis(ms);
        }
        let timeout = match pick!(
            r,
            c,
            http_timeout_secs,
            "--http-timeout-secs",
            "KEYSYNC_HTTP_TIMEOUT_SECS"
        ) {
            Some((0, o)) => return Err(cfg_err(o, "must be at least 1")),
            Some((s, _)) => Duration::from_secs(s),
            None => Duration::from_secs(30),
        };

        let sync_tolerance = pick!(
            r,
            c,
            sync_tolerance_slots,
            "--sync-tolerance-slots",
            "KEYSYNC_SYNC_TOLERANCE_SLOTS"
        )
        .map_or(
            crate::beacon::node::DEFAULT_SYNC_TOLERANCE_SLOTS,
            |(v, _)| v,
        );

        let (max_deletes_cli, apply_cli, w) = match command {
            Command::Sync(s) => (s.max_deletes, false, None),
            Command::Watch(w) => (w.max_deletes, w.apply, Some(w)),
            _ => (None, false, None),
        };
        let max_deletes = r
            .pick(
                &max_deletes_cli,
                "max_deletes",
                "--max-deletes",
                "KEYSYNC_MAX_DELETES",
                |f| f.max_deletes,
                "max_deletes",
            )
            .map_or(DEFAULT_MAX_DELETES, |(v, _)| v);

        let watch = {
            let wp = |cli: Option<u64>,
                      id: &'static str,
                      flag: &'static str,
                      env: &'static str,
                      f: fn(&FileConfig) -> Option<u64>| {
                r.pick(&cli, id, flag, env, f, id)
            };
            let ms = |v: Option<(u64, Origin)>, default: u64| {
                Duration::from_millis(v.map_or(default, |(v, _)| v))
            };
            let listen = match r.pick(
                &w.and_then(|w| w.listen.clone()),
                "listen",
                "--listen",
                "KEYSYNC_LISTEN",
                |f| f.listen.clone(),
                "listen",
            ) {
                None => DEFAULT_LISTEN
                    .parse()
                    .map_err(|_| cfg_err(Origin::Default, "bad default listen address"))?,
                Some((v, o)) => parse_listen(&v).ok_or_else(|| {
                    cfg_err(
                        o,
                        format!("not an address such as 127.0.0.1:9464 (got {v:?})"),
                    )
                })?,
            };
            let writes = r.pick(
                &w.and_then(|w| w.writes_per_second),
                "writes_per_second",
                "--writes-per-second",
                "KEYSYNC_WRITES_PER_SECOND",
                |f| f.writes_per_second,
                "writes_per_second",
            );
            let writes_per_second = match writes {
                Some((0, o)) => return Err(cfg_err(o, "must be at least 1")),
                Some((n, _)) => n,
                None => 20,
            };
            let slot = ms(
                wp(
                    w.and_then(|w| w.slot_ms),
                    "slot_ms",
                    "--slot-ms",
                    "KEYSYNC_SLOT_MS",
                    |f| f.slot_ms,
                ),
                12_000,
            );
            if slot.is_zero() {
                return Err(cfg_err("--slot-ms", "must be at least 1"));
            }
            WatchSettings {
                apply: w.is_some() && (apply_cli || r.file.apply.unwrap_or(false)),
                data_dir: path(r.pick(
                    &w.and_then(|w| w.data_dir.clone()),
                    "data_dir",
                    "--data-dir",
                    "KEYSYNC_DATA_DIR",
                    |f| f.data_dir.clone(),
                    "data_dir",
                ))
                .unwrap_or_else(default_data_dir),
                listen,
                debounce: ms(
                    wp(
                        w.and_then(|w| w.debounce_ms),
                        "debounce_ms",
                        "--debounce-ms",
                        "KEYSYNC_DEBOUNCE_MS",
                        |f| f.debounce_ms,
                    ),
                    250,
                ),
                max_wait: ms(
                    wp(
                        w.and_then(|w| w.max_wait_ms),
                        "max_wait_ms",
                        "--max-wait-ms",
                        "KEYSYNC_MAX_WAIT_MS",
                        |f| f.max_wait_ms,
                    ),
                    2_000,
                ),
                resync: Duration::from_secs(
                    wp(
                        w.and_then(|w| w.resync_secs),
                        "resync_secs",
                        "--resync-secs",
                        "KEYSYNC_RESYNC_SECS",
                        |f| f.resync_secs,
                    )
                    .map_or(600, |(v, _)| v.max(1)),
                ),
                writes_per_second,
                slot,
            }
        };

        let settings = Settings {
            api_url,
            auth_url,
            api_key,
            api_key_file,
            operator_id,
            network,
            chain_id,
            beacon_urls,
            inputs,
            log_format,
            retry,
            timeout,
            max_deletes,
            sync_tolerance,
            allow_empty: c.allow_empty || r.file.allow_empty.unwrap_or(false),
            watch,
        };
        settings.check_inputs(command)?;
        Ok(settings)
    }

    fn check_inputs(&self, command: &Command) -> Result<(), ConfigError> {
        if matches!(command, Command::Show(_)) {
            return Ok(());
        }
        let beacon_input =
            self.inputs.pubkeys_file.is_some() || self.inputs.index_list_file.is_some();
        if beacon_input && self.beacon_urls.is_empty() {
            return Err(cfg_err(
                "KEYSYNC_BEACON_URL",
                "is required with KEYSYNC_PUBKEYS_FILE or KEYSYNC_INDEX_LIST_FILE: those inputs are resolved against the beacon node",
            ));
        }
        if !self.inputs.any() {
            return Err(cfg_err(
                "inputs",
                "supply KEYSYNC_INDICES_FILE, or KEYSYNC_BEACON_URL with KEYSYNC_PUBKEYS_FILE and/or KEYSYNC_INDEX_LIST_FILE (or, for watch, KEYSYNC_INPUT_DIR): there is no way to compute the desired validator set otherwise",
            ));
        }
        if matches!(command, Command::Watch(_)) && self.beacon_urls.is_empty() {
            return Err(cfg_err(
                "KEYSYNC_BEACON_URL",
                "is required for watch: the daemon follows the beacon node's events",
            ));
        }
        Ok(())
    }
}

fn parse_listen(v: &str) -> Option<SocketAddr> {
    let v = v.trim();
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Some(a);
    }
    // ":9464" → all interfaces, as Prometheus exporters accept.
    let port = v.strip_prefix(':')?.parse::<u16>().ok()?;
    Some(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port))
}

/// The API key from `--api-key`/`KEYSYNC_API_KEY` or the file named by
/// `--api-key-file`/`KEYSYNC_API_KEY_FILE` (the one set with the higher
/// precedence; both at the same level is an error).
/// The API key, and the file it came from, if it did.
fn resolve_key(r: &Resolver<'_>, c: &Common) -> Result<(Secret, Option<PathBuf>), ConfigError> {
    let key = pick!(r, c, api_key, "--api-key", "KEYSYNC_API_KEY").filter(|(k, _)| !k.is_empty());
    let file = pick!(r, c, api_key_file, "--api-key-file", "KEYSYNC_API_KEY_FILE")
        .filter(|(p, _)| !p.as_os_str().is_empty());
    let rank = |o: &Origin| match o {
        Origin::Flag(_) => 3,
        Origin::Env(_) => 2,
        Origin::File(..) => 1,
        Origin::Default => 0,
    };
    let (value, origin) = match (key, file) {
        (None, None) => {
            return Err(cfg_err(
                "KEYSYNC_API_KEY",
                "is required (or KEYSYNC_API_KEY_FILE): the ovi_live_… key from the Optimum partners dashboard",
            ))
        }
        (Some((_, ko)), Some((_, fo))) if rank(&ko) == rank(&fo) => {
            return Err(cfg_err(format!("{ko} and {fo}"), "set one of them, not both"));
        }
        (Some((k, ko)), Some((p, fo))) => {
            if rank(&ko) > rank(&fo) {
                (k, ko)
            } else {
                let key = read_key_file(&p, &fo)?;
                return Ok((check_key(key, &fo)?, Some(p)));
            }
        }
        (Some((k, ko)), None) => (k, ko),
        (None, Some((p, fo))) => {
            let key = read_key_file(&p, &fo)?;
            return Ok((check_key(key, &fo)?, Some(p)));
        }
    };
    Ok((check_key(value, &origin)?, None))
}

/// Reads the API key file again (the daemon, when it changed: a rotated
/// Kubernetes Secret or systemd credential), with every check of the start.
pub fn reread_key_file(path: &Path) -> Result<Secret, ConfigError> {
    let origin = Origin::Flag("--api-key-file");
    check_key(read_key_file(path, &origin)?, &origin)
}

/// The checks every API key passes, wherever it came from.
fn check_key(value: String, origin: &Origin) -> Result<Secret, ConfigError> {
    let value = value.trim().to_string();
    if !value.starts_with("ovi_") {
        return Err(cfg_err(
            origin,
            "the API key must start with 'ovi_' (the operator-portal key shape, the only credential the console API accepts)",
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(cfg_err(
            origin,
            "the API key contains whitespace or control characters",
        ));
    }
    Ok(Secret::new(value))
}

/// The key file: a regular file (links followed) of at most 64 KiB, as
/// inputs are read: a FIFO, directory or device is an error naming the
/// file, and never blocks or reads without bound.
fn read_key_file(path: &Path, origin: &Origin) -> Result<String, ConfigError> {
    use crate::sources::file::{read_regular, MAX_KEY_FILE_BYTES};
    let bytes = read_regular(path, MAX_KEY_FILE_BYTES).map_err(|e| {
        // An I/O failure by its kind only ("permission denied"), as before.
        let why = match e.io_kind() {
            Some(kind) => kind.to_string(),
            None => e.to_string(),
        };
        cfg_err(
            origin,
            format!("cannot read the API key file {}: {why}", path.display()),
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        cfg_err(
            origin,
            format!("the API key file {} is not UTF-8 text", path.display()),
        )
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(cfg_err(
            origin,
            format!("the API key file {} is empty", path.display()),
        ));
    }
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Common, SyncArgs};

    fn sync(c: Common) -> Command {
        Command::Sync(SyncArgs {
            common: c,
            apply: false,
            dry_run: false,
            max_deletes: None,
        })
    }

    fn base() -> Common {
        Common {
            api_key: Some("ovi_live_test".into()),
            indices_file: Some("in.json".into()),
            ..Default::default()
        }
    }

    fn err_of(c: Common) -> String {
        Settings::resolve(&sync(c), &AllFlags)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_the_originals() {
        let s = Settings::resolve(&sync(base()), &AllFlags).unwrap();
        assert_eq!(s.api_url.as_str(), "https://console.getoptimum.io/");
        assert_eq!(s.auth_url.as_str(), "https://auth.getoptimum.io/");
        assert_eq!(s.network, "mainnet");
        assert_eq!(s.chain_id.as_str(), "0x1");
        assert_eq!(s.max_deletes, 10);
        assert_eq!(s.log_format, LogFormat::Console);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.5",
            "http://[::1]:9",
            "https://example.com",
        ] {
            let c = Common {
                api_url: Some(ok.into()),
                ..base()
            };
            assert!(Settings::resolve(&sync(c), &AllFlags).is_ok(), "{ok}");
        }
        let e = err_of(Common {
            api_url: Some("http://console.example.com".into()),
            ..base()
        });
        assert!(e.contains("--api-url") && e.contains("https"), "{e}");
        let e = err_of(Common {
            auth_url: Some("console.example.com".into()),
            ..base()
        });
        assert!(e.contains("--auth-url") && e.contains("scheme"), "{e}");
        let e = err_of(Common {
            api_url: Some("https://u:pw@h.example".into()),
            ..base()
        });
        assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
        let e = err_of(Common {
            beacon_url: Some("http://u:p@beacon:5052".into()),
            ..base()
        });
        assert!(e.contains("--beacon-url") && !e.contains(":p@"), "{e}");
        let c = Common {
            beacon_url: Some("http://10.0.0.2:5052, http://beacon-2:5052".into()),
            ..base()
        };
        assert_eq!(
            Settings::resolve(&sync(c), &AllFlags)
                .unwrap()
                .beacon_urls
                .len(),
            2
        );
    }

    #[test]
    fn empty_urls_mean_the_defaults() {
        let c = Common {
            api_url: Some(String::new()),
            auth_url: Some("  ".into()),
            ..base()
        };
        let s = Settings::resolve(&sync(c), &AllFlags).unwrap();
        assert_eq!(s.api_url.as_str(), "https://console.getoptimum.io/");
        assert_eq!(s.auth_url.as_str(), "https://auth.getoptimum.io/");
    }

    #[test]
    fn key_must_be_ovi_and_never_echoed() {
        let e = err_of(Common {
            api_key: Some("sk_live_supersecret".into()),
            ..base()
        });
        assert!(e.contains("ovi_") && !e.contains("supersecret"), "{e}");
        let e = err_of(Common {
            api_key: None,
            ..base()
        });
        assert!(e.contains("KEYSYNC_API_KEY"), "{e}");
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "ovi_live_fromfile\n").unwrap();
        let c = Common {
            api_key: None,
            api_key_file: Some(p.clone()),
            ..base()
        };
        let s = Settings::resolve(&sync(c), &AllFlags).unwrap();
        assert_eq!(s.api_key.expose(), "ovi_live_fromfile");
        let c = Common {
            api_key_file: Some(p),
            ..base()
        };
        assert!(err_of(c).contains("not both"));
    }

    #[test]
    fn file_values_apply_below_flags_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(
            &p,
            "network = \"hoodi\"\nchain_id = \"0x88bb0\"\nmax_deletes = 3\n",
        )
        .unwrap();
        let c = Common {
            config: Some(p.clone()),
            chain_id: Some("0x4268".into()),
            ..base()
        };
        let s = Settings::resolve(&sync(c), &AllFlags).unwrap();
        assert_eq!(s.network, "hoodi");
        assert_eq!(s.chain_id.as_str(), "0x4268");
        assert_eq!(s.max_deletes, 3);
        std::fs::write(&p, "netwrok = \"hoodi\"\n").unwrap();
        let e = err_of(Common {
            config: Some(p),
            ..base()
        });
        assert!(e.contains("k.toml") && e.contains("netwrok"), "{e}");
    }

    #[test]
    fn inputs_are_required_for_diff_and_sync_but_not_show() {
        let e = err_of(Common {
            indices_file: None,
            ..base()
        });
        assert!(e.contains("KEYSYNC_INDICES_FILE"), "{e}");
        let e = err_of(Common {
            pubkeys_file: Some("p".into()),
            ..base()
        });
        assert!(e.contains("KEYSYNC_BEACON_URL"), "{e}");
        let show = Command::Show(Common {
            indices_file: None,
            ..base()
        });
        assert!(Settings::resolve(&show, &AllFlags).is_ok());
    }

    #[test]
    fn log_format_is_checked() {
        let e = err_of(Common {
            log_format: Some("xml".into()),
            ..base()
        });
        assert!(e.contains("--log-format"), "{e}");
    }
}
