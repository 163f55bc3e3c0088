//! Command line, stage one: what the user typed, validated for shape only.
//!
//! The one definition of every setting. A field of [`Common`] or
//! [`WatchArgs`] is at once the flag (its name, dashed), the environment
//! variable (`env`), the TOML key (its name: these structs deserialize the
//! config file too), the help text (its doc comment) and the default
//! (`default_value`, from a constant below: clap prints it in `--help`,
//! [`crate::config`] resolves to it). Does no I/O: files, URLs and
//! precedence are stage two, [`crate::config`].

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use serde::Deserialize;

use super::LogFormat;
use crate::beacon::node::DEFAULT_SYNC_TOLERANCE_SLOTS;

pub const DEFAULT_API_URL: &str = "https://console.getoptimum.io";
pub const DEFAULT_AUTH_URL: &str = "https://auth.getoptimum.io";
pub const DEFAULT_NETWORK: &str = "mainnet";
pub const DEFAULT_CHAIN_ID: &str = "0x1";
pub const DEFAULT_HTTP_ATTEMPTS: u32 = crate::http::DEFAULT_ATTEMPTS;
/// Most attempts per remote request: more would ride out any outage but
/// hold the exit code an alert keys on for hours.
pub const MAX_HTTP_ATTEMPTS: u32 = 20;
pub const DEFAULT_HTTP_BACKOFF_MS: u64 = crate::http::DEFAULT_BACKOFF_MS;
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_MAX_DELETES: u64 = 10;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_DEBOUNCE_MS: u64 = 250;
pub const DEFAULT_MAX_WAIT_MS: u64 = 2_000;
pub const DEFAULT_RESYNC_SECS: u64 = 600;
pub const DEFAULT_WRITES_PER_SECOND: u32 = 20;
/// A validator client's key list changes when an operator imports or
/// deletes keys: rare, and a minute late costs nothing. Two small GETs to
/// a loopback service every 30 s cost nothing either.
pub const DEFAULT_KEYMANAGER_POLL_SECS: u64 = 30;

#[derive(Debug, Parser)]
#[command(
    name = "keysync",
    version,
    about = "Keep Optimum's validator registry equal to the validators you own.",
    long_about = "Keep Optimum's validator registry equal to the validators you own.\n\n\
        One-shot (show, diff, sync) for cron, systemd timers and Kubernetes CronJobs; \
        `watch` runs next to a beacon node and applies changes within seconds.\n\n\
        Every setting comes from a flag, a KEYSYNC_* environment variable or a TOML \
        file (--config), in that order of precedence.\n\n\
        Exit codes: 0 ok, 2 auth/identity, 3 console API failure, 4 configuration or \
        input error, 5 --max-deletes guardrail, 6 beacon node failure."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the current assignments as JSON (read-only).
    Show(Common),
    /// Print the planned add/remove delta as JSON; no writes.
    Diff(Common),
    /// Print the plan; with --apply, write it (register → assign → unassign).
    Sync(SyncArgs),
    /// Run as a daemon: react to beacon events and file changes, apply deltas.
    Watch(WatchArgs),
    /// Start a local simulator (beacon node + Optimum) and run `watch --apply`
    /// against it, with a scripted chain so you can watch keysync work.
    Demo(DemoArgs),
    /// Exit 0 when a running daemon answers /ready with 200, else 1 (for a
    /// container healthcheck: the image has no shell or curl).
    Probe(ProbeArgs),
    /// Check a configuration end to end, writing nothing: settings, key,
    /// console, beacon nodes, event stream, inputs, the plan a pass would
    /// make, data dir, listen address. One line per check; exit 0 when all
    /// pass, else the exit code of the first failing check's kind.
    Doctor(WatchArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or
    /// powershell (e.g. `keysync completions bash > /etc/bash_completion.d/keysync`).
    Completions(CompletionsArgs),
    /// Print the man page (roff): `keysync man > /usr/local/share/man/man1/keysync.1`.
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Command {
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Show(c) | Command::Diff(c) => Some(c),
            Command::Sync(s) => Some(&s.common),
            Command::Watch(w) | Command::Doctor(w) => Some(&w.common),
            Command::Demo(_) | Command::Probe(_) | Command::Completions(_) | Command::Man => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Show(_) => "show",
            Command::Diff(_) => "diff",
            Command::Sync(_) => "sync",
            Command::Watch(_) => "watch",
            Command::Demo(_) => "demo",
            Command::Probe(_) => "probe",
            Command::Doctor(_) => "doctor",
            Command::Completions(_) => "completions",
            Command::Man => "man",
        }
    }
}

/// Settings every command shares.
///
/// Every field but `config` is also a key of the config file: an unset
/// field (`None`, or `false`) leaves the setting to the file or its default.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default)]
pub struct Common {
    /// TOML file with any of these settings (keys as the variable names
    /// without KEYSYNC_, lowercase). Flags and variables win over it.
    #[arg(long, env = "KEYSYNC_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Optimum console API base URL
    #[arg(long, env = "KEYSYNC_API_URL", value_name = "URL", default_value = DEFAULT_API_URL)]
    pub api_url: Option<String>,

    /// Optimum auth base URL, for GET /api/v1/me
    #[arg(long, env = "KEYSYNC_AUTH_URL", value_name = "URL", default_value = DEFAULT_AUTH_URL)]
    pub auth_url: Option<String>,

    /// Operator API key (ovi_live_…). Prefer --api-key-file.
    #[arg(
        long,
        env = "KEYSYNC_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// File holding the API key (systemd credentials, Docker/Kubernetes secrets).
    #[arg(long, env = "KEYSYNC_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Operator id; resolved from the key via GET /api/v1/me when unset.
    #[arg(long, env = "KEYSYNC_OPERATOR_ID", value_name = "ID")]
    pub operator_id: Option<String>,

    /// Network name sent to the console API
    #[arg(long, env = "KEYSYNC_NETWORK", value_name = "NAME", default_value = DEFAULT_NETWORK)]
    pub network: Option<String>,

    /// Registry chain id: 0x1 for mainnet, 0x88bb0 for hoodi (0x-hex or
    /// decimal; written the registry's way)
    #[arg(long, env = "KEYSYNC_CHAIN_ID", value_name = "ID", default_value = DEFAULT_CHAIN_ID)]
    pub chain_id: Option<String>,

    /// Beacon node URL; several comma-separated for failover (watch).
    /// Required with --pubkeys-file or --index-list-file.
    #[arg(long, env = "KEYSYNC_BEACON_URL", value_name = "URL[,URL…]")]
    pub beacon_url: Option<String>,

    /// One BLS pubkey per line; the beacon node resolves the index.
    #[arg(long, env = "KEYSYNC_PUBKEYS_FILE", value_name = "FILE")]
    pub pubkeys_file: Option<PathBuf>,

    /// One validator index per line; the beacon node resolves the pubkey.
    #[arg(long, env = "KEYSYNC_INDEX_LIST_FILE", value_name = "FILE")]
    pub index_list_file: Option<PathBuf>,

    /// JSON array of {validator_index, chain_id, validator_key}; no lookup.
    #[arg(long, env = "KEYSYNC_INDICES_FILE", value_name = "FILE")]
    pub indices_file: Option<PathBuf>,

    /// Directory whose every file is an input (pubkeys, index list, records,
    /// EIP-2335 keystores, deposit data), told apart by content.
    #[arg(long, env = "KEYSYNC_INPUT_DIR", value_name = "DIR")]
    pub input_dir: Option<PathBuf>,

    /// A validator client's or remote signer's Keymanager API: the keys it
    /// holds (GET /eth/v1/keystores and /eth/v1/remotekeys) are owned.
    /// More than one: [[keymanager]] tables in the config file.
    #[arg(long, env = "KEYSYNC_KEYMANAGER_URL", value_name = "URL")]
    pub keymanager_url: Option<String>,

    /// File holding the Keymanager API token (the validator client's
    /// api-token file); sent only over https or to loopback
    #[arg(long, env = "KEYSYNC_KEYMANAGER_TOKEN_FILE", value_name = "FILE")]
    pub keymanager_token_file: Option<PathBuf>,

    /// Further keymanagers (config file only): [[keymanager]] tables with
    /// `url` and `token_file`.
    #[arg(skip)]
    pub keymanager: Vec<KeymanagerTable>,

    /// Directory of EIP-2335 keystores (the one the validator client
    /// loads): each keystore's pubkey is owned; other files are ignored;
    /// no password is ever read.
    #[arg(long, env = "KEYSYNC_KEYSTORES_DIR", value_name = "DIR")]
    pub keystores_dir: Option<PathBuf>,

    /// Deposit data JSON (deposit_data-….json); repeat the flag, or
    /// comma-separate in the variable. Its network_name must be --network.
    #[arg(
        long,
        env = "KEYSYNC_DEPOSIT_DATA_FILE",
        value_name = "FILE",
        value_delimiter = ',',
        action = ArgAction::Append
    )]
    #[serde(deserialize_with = "one_or_many", default)]
    pub deposit_data_file: Option<Vec<PathBuf>>,

    /// Refuse a pubkey that is not a valid compressed BLS12-381 G1 point
    /// (a typo that keeps length and hex), naming file and line.
    #[arg(
        long,
        env = "KEYSYNC_VERIFY_PUBKEYS",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub verify_pubkeys: bool,

    /// Log format on stderr: console or json
    #[arg(
        long,
        env = "KEYSYNC_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = LogFormat::Console.as_str()
    )]
    pub log_format: Option<String>,

    // The help is built here (not a doc comment) to print the bound checked.
    #[arg(
        long,
        env = "KEYSYNC_HTTP_ATTEMPTS",
        value_name = "N",
        default_value = DEFAULT_HTTP_ATTEMPTS.to_string(),
        help = format!("Attempts per remote request (retries on network errors, 429, 5xx), 1 to {MAX_HTTP_ATTEMPTS}")
    )]
    pub http_attempts: Option<u32>,

    /// First retry backoff in ms, doubled per retry
    #[arg(
        long,
        env = "KEYSYNC_HTTP_BACKOFF_MS",
        value_name = "MS",
        default_value = DEFAULT_HTTP_BACKOFF_MS.to_string()
    )]
    pub http_backoff_ms: Option<u64>,

    /// Timeout of one remote request in seconds
    #[arg(
        long,
        env = "KEYSYNC_HTTP_TIMEOUT_SECS",
        value_name = "SECS",
        default_value = DEFAULT_HTTP_TIMEOUT_SECS.to_string()
    )]
    pub http_timeout_secs: Option<u64>,

    /// How many slots a beacon node's head may trail the wall clock and
    /// still count as synced; removals wait for a synced node
    #[arg(
        long,
        env = "KEYSYNC_SYNC_TOLERANCE_SLOTS",
        value_name = "SLOTS",
        default_value = DEFAULT_SYNC_TOLERANCE_SLOTS.to_string()
    )]
    pub sync_tolerance_slots: Option<u64>,

    /// Emptying is meant: accept an input with no entries, and a pass that
    /// unassigns every validator of the operator.
    #[arg(
        long,
        env = "KEYSYNC_ALLOW_EMPTY",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub allow_empty: bool,
}

/// One `[[keymanager]]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeymanagerTable {
    pub url: String,
    pub token_file: Option<PathBuf>,
}

/// A list in the config file: an array of paths, or one path.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    }))
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub common: Common,

    /// Actually write to the registry (without it, sync only prints the plan).
    #[arg(long, action = ArgAction::SetTrue)]
    pub apply: bool,

    /// Never write, even with --apply (CI safety belt).
    #[arg(long, action = ArgAction::SetTrue)]
    pub dry_run: bool,

    /// Refuse to unassign more than N validators in one run
    #[arg(
        long,
        env = "KEYSYNC_MAX_DELETES",
        value_name = "N",
        default_value = DEFAULT_MAX_DELETES.to_string()
    )]
    pub max_deletes: Option<u64>,
}

/// The daemon's settings: with [`Common`] flattened in, every key the
/// config file may hold (it deserializes into this struct; an unknown key
/// is an error).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub common: Common,

    /// Write to the registry. Without it: shadow mode (plans are logged and
    /// exposed in /metrics, nothing is written).
    #[arg(
        long,
        env = "KEYSYNC_APPLY",
        action = ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub apply: bool,

    /// Hold back unassigns beyond N per pass until fixed or raised
    #[arg(
        long,
        env = "KEYSYNC_MAX_DELETES",
        value_name = "N",
        default_value = DEFAULT_MAX_DELETES.to_string()
    )]
    pub max_deletes: Option<u64>,

    /// State directory for the sled store [default: $STATE_DIRECTORY, else the
    /// per-user state dir ($XDG_STATE_HOME or ~/.local/state)/keysync]
    #[arg(long, env = "KEYSYNC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for /health, /ready and /metrics
    #[arg(long, env = "KEYSYNC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: Option<String>,

    /// Quiet time before a reconcile starts, in ms
    #[arg(
        long,
        env = "KEYSYNC_DEBOUNCE_MS",
        value_name = "MS",
        default_value = DEFAULT_DEBOUNCE_MS.to_string()
    )]
    pub debounce_ms: Option<u64>,

    /// Longest a trigger waits under constant churn, in ms
    #[arg(
        long,
        env = "KEYSYNC_MAX_WAIT_MS",
        value_name = "MS",
        default_value = DEFAULT_MAX_WAIT_MS.to_string()
    )]
    pub max_wait_ms: Option<u64>,

    /// Full re-list of the registry every N seconds
    #[arg(
        long,
        env = "KEYSYNC_RESYNC_SECS",
        value_name = "SECS",
        default_value = DEFAULT_RESYNC_SECS.to_string()
    )]
    pub resync_secs: Option<u64>,

    /// Console API writes per second (burst the same)
    #[arg(
        long,
        env = "KEYSYNC_WRITES_PER_SECOND",
        value_name = "N",
        default_value = DEFAULT_WRITES_PER_SECOND.to_string()
    )]
    pub writes_per_second: Option<u32>,

    /// How often the daemon reads each keymanager's key list, in seconds
    #[arg(
        long,
        env = "KEYSYNC_KEYMANAGER_POLL_SECS",
        value_name = "SECS",
        default_value = DEFAULT_KEYMANAGER_POLL_SECS.to_string()
    )]
    pub keymanager_poll_secs: Option<u64>,

    /// Beacon slot length in ms, for the dead-stream timeout of two slots
    /// [default: the beacon node's config/spec]
    #[arg(long, env = "KEYSYNC_SLOT_MS", value_name = "MS")]
    pub slot_ms: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The daemon's --listen address; an unspecified host (0.0.0.0, ::)
    /// is probed on loopback
    #[arg(long, env = "KEYSYNC_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: Option<String>,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Validators on the simulated chain.
    #[arg(long, default_value_t = 64)]
    pub validators: u64,

    /// Simulated slot length in ms.
    #[arg(long, default_value_t = 1000)]
    pub slot_ms: u64,

    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,

    /// Log format on stderr: console or json.
    #[arg(long, default_value = LogFormat::Console.as_str())]
    pub log_format: String,
}
