//! Configuration, in two stages: [`cli`] is what the user typed (shape
//! only, no I/O) and the one definition of every setting; this module
//! resolves it into validated [`Settings`].
//!
//! Owns [`Settings`] and [`Settings::resolve`], which takes each setting
//! from the layers (flag > environment > TOML file > default: `layers`),
//! then checks it: URLs in `urls` (secrets only over https or to
//! loopback, no userinfo), the API key and its file in `key`. Every error
//! names the flag, variable or `file: key` at fault — and never contains
//! the key itself.
//!
//! Adding a setting: a field of [`cli::Common`] (every command) or
//! [`cli::WatchArgs`] (the daemon) with its help (the doc comment), `env`
//! and `default_value` — that is its flag, variable, TOML key, help and
//! default; then its field in [`Settings`] and the `get!`/`need!` line in
//! [`Settings::resolve`] that validates it. The tests fail until
//! config/keysync.example.toml and README's table list it.

pub mod cli;
mod key;
mod layers;
#[cfg(test)]
mod tests;
mod urls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use self::cli::Command;
use self::layers::{env, get, need, Blank, Layers};
use crate::domain::ChainId;
use crate::http::RetryPolicy;
use crate::secret::Secret;

pub use self::cli::{
    DEFAULT_API_URL, DEFAULT_AUTH_URL, DEFAULT_CHAIN_ID, DEFAULT_DEBOUNCE_MS,
    DEFAULT_HTTP_ATTEMPTS, DEFAULT_HTTP_BACKOFF_MS, DEFAULT_HTTP_TIMEOUT_SECS,
    DEFAULT_KEYMANAGER_POLL_SECS, DEFAULT_LISTEN, DEFAULT_MAX_DELETES, DEFAULT_MAX_WAIT_MS,
    DEFAULT_NETWORK, DEFAULT_RESYNC_SECS, DEFAULT_WRITES_PER_SECOND, MAX_HTTP_ATTEMPTS,
};
pub use self::key::{reread_key_file, reread_token_file};
pub(crate) use self::layers::early;
pub use self::layers::{AllFlags, Origin, SourceOf};

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

impl LogFormat {
    /// The name `--log-format` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogFormat::Console => "console",
            LogFormat::Json => "json",
        }
    }

    /// `console` or `json`, surrounding blanks ignored.
    pub fn parse(name: &str) -> Option<LogFormat> {
        [LogFormat::Console, LogFormat::Json]
            .into_iter()
            .find(|f| f.as_str() == name.trim())
    }
}

pub use crate::inputs::{Checks, Inputs, KeymanagerInput};

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
    /// Slot length override (`None`: the beacon node's `config/spec`); the
    /// event stream is dead after two silent slots.
    pub slot: Option<Duration>,
    /// How often each keymanager's key list is read. Shorter sees an
    /// imported or deleted key sooner at two GETs per keymanager per poll.
    pub keymanager_poll: Duration,
}

/// Everything a command needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: url::Url,
    pub auth_url: url::Url,
    pub api_key: Secret,
    /// The file the key came from (the daemon re-reads it when it changes).
    pub api_key_file: Option<PathBuf>,
    pub operator_id: Option<String>,
    pub network: String,
    pub chain_id: ChainId,
    pub beacon_urls: Vec<url::Url>,
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

impl Settings {
    /// Resolves the settings of `command`; `sources` tells a flag from a
    /// variable (clap's matches of the subcommand). Diff, sync and watch
    /// need at least one input; show does not.
    pub fn resolve(command: &Command, sources: &dyn SourceOf) -> Result<Settings, ConfigError> {
        let l = Layers::new(command, sources)?;
        let (url, origin) = need!(l, common.api_url)?;
        let api_url = urls::secret_url(&url, &origin)?;
        let (url, origin) = need!(l, common.auth_url)?;
        let auth_url = urls::secret_url(&url, &origin)?;
        let (api_key, api_key_file) = key::resolve(&l)?;
        let beacon_urls = match get!(l, common.beacon_url)? {
            Some((list, origin)) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| urls::plain_url(s, &origin))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let path = |v: Option<(PathBuf, Origin)>| v.map(|(p, _)| p);
        let network = need!(l, common.network)?.0.trim().to_string();
        let inputs = Inputs {
            pubkeys_file: path(get!(l, common.pubkeys_file)?),
            index_list_file: path(get!(l, common.index_list_file)?),
            indices_file: path(get!(l, common.indices_file)?),
            input_dir: path(get!(l, common.input_dir)?),
            keystores_dir: path(get!(l, common.keystores_dir)?),
            deposit_data_files: l
                .get_paths("deposit_data_file", |a| &a.common.deposit_data_file)?
                .map(|(v, _)| v.into_iter().filter(|p| !p.is_blank()).collect())
                .unwrap_or_default(),
            keymanagers: key::keymanagers(&l)?,
            checks: Checks {
                network: network.clone(),
                verify_pubkeys: need!(l, common.verify_pubkeys)?.0,
            },
        };
        let (format, origin) = need!(l, common.log_format)?;
        let log_format = LogFormat::parse(&format).ok_or_else(|| {
            cfg_err(
                origin,
                format!("must be console or json (got {:?})", format.trim()),
            )
        })?;
        let (attempts, origin) = need!(l, common.http_attempts)?;
        if !(1..=MAX_HTTP_ATTEMPTS).contains(&attempts) {
            return Err(cfg_err(
                origin,
                format!("must be from 1 to {MAX_HTTP_ATTEMPTS} (got {attempts})"),
            ));
        }
        let retry = RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(need!(l, common.http_backoff_ms)?.0),
            ..RetryPolicy::default()
        };
        let settings = Settings {
            api_url,
            auth_url,
            api_key,
            api_key_file,
            operator_id: get!(l, common.operator_id)?.map(|(s, _)| s.trim().to_string()),
            network,
            chain_id: chain_id(need!(l, common.chain_id)?)?,
            beacon_urls,
            inputs,
            log_format,
            retry,
            timeout: Duration::from_secs(at_least_one(need!(l, common.http_timeout_secs)?)?),
            max_deletes: need!(l, max_deletes)?.0,
            sync_tolerance: need!(l, common.sync_tolerance_slots)?.0,
            allow_empty: need!(l, common.allow_empty)?.0,
            watch: watch_settings(
                &l,
                matches!(command, Command::Watch(_) | Command::Doctor(_)),
            )?,
        };
        settings.check_inputs(command)?;
        Ok(settings)
    }

    /// The HTTP client of every remote party, scrubbing every secret of
    /// these settings (the API key, each keymanager token) from any text a
    /// server sends back.
    pub fn http(
        &self,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Result<crate::http::Http, crate::error::Error> {
        let mut secrets = vec![self.api_key.clone()];
        secrets.extend(self.inputs.keymanagers.iter().map(|k| k.token.clone()));
        crate::http::Http::new(self.timeout, self.retry, metrics, secrets)
            .map_err(crate::error::Error::Runtime)
    }

    fn check_inputs(&self, command: &Command) -> Result<(), ConfigError> {
        if matches!(command, Command::Show(_)) {
            return Ok(());
        }
        let beacon_input = self.inputs.needs_beacon();
        let (beacon, pubkeys, indices) = (
            env("beacon_url"),
            env("pubkeys_file"),
            env("index_list_file"),
        );
        if beacon_input && self.beacon_urls.is_empty() {
            return Err(cfg_err(
                beacon,
                format!("is required with {pubkeys}, {indices}, {}, {} or a keymanager: those inputs are resolved against the beacon node", env("keystores_dir"), env("deposit_data_file")),
            ));
        }
        if !self.inputs.any() {
            return Err(cfg_err(
                "inputs",
                format!(
                    "supply {}, or {beacon} with {pubkeys}, {indices}, {}, {} or {} (or {}): there is no way to compute the desired validator set otherwise",
                    env("indices_file"),
                    env("keystores_dir"),
                    env("deposit_data_file"),
                    env("keymanager_url"),
                    env("input_dir"),
                ),
            ));
        }
        // The doctor checks the daemon's configuration: the same rule.
        if matches!(command, Command::Watch(_) | Command::Doctor(_)) && self.beacon_urls.is_empty()
        {
            return Err(cfg_err(
                beacon,
                "is required for watch: the daemon follows the beacon node's events",
            ));
        }
        Ok(())
    }
}

/// The daemon's settings (resolved for every command: a config file shared
/// with the daemon is checked whole).
fn watch_settings(l: &Layers<'_>, watch: bool) -> Result<WatchSettings, ConfigError> {
    let (listen, origin) = need!(l, listen)?;
    let listen = parse_listen(&listen).ok_or_else(|| {
        cfg_err(
            origin,
            format!("not an address such as {DEFAULT_LISTEN} (got {listen:?})"),
        )
    })?;
    let ms = |(v, _): (u64, Origin)| Duration::from_millis(v);
    Ok(WatchSettings {
        apply: watch && need!(l, apply)?.0,
        data_dir: get!(l, data_dir)?.map_or_else(default_data_dir, |(p, _)| p),
        listen,
        debounce: ms(need!(l, debounce_ms)?),
        max_wait: ms(need!(l, max_wait_ms)?),
        resync: Duration::from_secs(need!(l, resync_secs)?.0.max(1)),
        writes_per_second: at_least_one(need!(l, writes_per_second)?)?,
        slot: get!(l, slot_ms)?
            .map(at_least_one)
            .transpose()?
            .map(Duration::from_millis),
        keymanager_poll: Duration::from_secs(at_least_one(need!(l, keymanager_poll_secs)?)?),
    })
}

/// One chain, one spelling: the registry compares chain ids as exact
/// strings, so `1`, `0x01` and `0X1` all become `0x1`.
fn chain_id((raw, origin): (String, Origin)) -> Result<ChainId, ConfigError> {
    let raw = raw.trim();
    let Some(n) = ChainId::new(raw).numeric() else {
        return Err(cfg_err(
            origin,
            format!(
                "is not a chain id (got {raw:?}): write the numeric chain id as 0x-hex or decimal, e.g. 0x1 for mainnet, 0x88bb0 for hoodi"
            ),
        ));
    };
    let canonical = ChainId::canonical(n);
    if canonical.as_str() != raw {
        tracing::info!(configured = %raw, registry = %canonical, "chain id normalised to the registry's spelling");
    }
    Ok(canonical)
}

fn at_least_one<T: PartialEq + From<u8>>((v, origin): (T, Origin)) -> Result<T, ConfigError> {
    if v == T::from(0) {
        return Err(cfg_err(origin, "must be at least 1"));
    }
    Ok(v)
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

/// `$STATE_DIRECTORY` (systemd), else `$XDG_STATE_HOME/keysync`, else
/// `~/.local/state/keysync`: computed at run time, so `--help` describes it.
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
