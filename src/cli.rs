//! Command line, stage one: what the user typed, validated for shape only.
//!
//! Owns the single definition of every flag, its environment variable and
//! its help text (clap derives `--help` from it). Does no I/O: files, URLs
//! and defaults are resolved in [`crate::settings`].

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

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
}

impl Command {
    pub fn common(&self) -> Option<&Common> {
        match self {
            Command::Show(c) | Command::Diff(c) => Some(c),
            Command::Sync(s) => Some(&s.common),
            Command::Watch(w) => Some(&w.common),
            Command::Demo(_) | Command::Probe(_) => None,
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
        }
    }
}

/// Settings every command shares.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// TOML file with any of these settings (keys as the variable names
    /// without KEYSYNC_, lowercase). Flags and variables win over it.
    #[arg(long, env = "KEYSYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Optimum console API base URL [default: https://console.getoptimum.io]
    #[arg(long, env = "KEYSYNC_API_URL", value_name = "URL")]
    pub api_url: Option<String>,

    /// Optimum auth base URL, for GET /api/v1/me [default: https://auth.getoptimum.io]
    #[arg(long, env = "KEYSYNC_AUTH_URL", value_name = "URL")]
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

    /// Network name sent to the console API [default: mainnet]
    #[arg(long, env = "KEYSYNC_NETWORK", value_name = "NAME")]
    pub network: Option<String>,

    /// Registry chain id: 0x1 for mainnet, 0x88bb0 for hoodi (0x-hex or
    /// decimal; written the registry's way) [default: 0x1]
    #[arg(long, env = "KEYSYNC_CHAIN_ID", value_name = "ID")]
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

    /// Log format on stderr: console or json [default: console]
    #[arg(long, env = "KEYSYNC_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Attempts per remote request (retries on network errors, 429, 5xx),
    /// 1 to 20 [default: 4]
    #[arg(long, env = "KEYSYNC_HTTP_ATTEMPTS", value_name = "N")]
    pub http_attempts: Option<u32>,

    /// First retry backoff in ms, doubled per retry [default: 500]
    #[arg(long, env = "KEYSYNC_HTTP_BACKOFF_MS", value_name = "MS")]
    pub http_backoff_ms: Option<u64>,

    /// Timeout of one remote request in seconds [default: 30]
    #[arg(long, env = "KEYSYNC_HTTP_TIMEOUT_SECS", value_name = "SECS")]
    pub http_timeout_secs: Option<u64>,

    /// How many slots a beacon node's head may trail the wall clock and
    /// still count as synced; removals wait for a synced node [default: 8]
    #[arg(long, env = "KEYSYNC_SYNC_TOLERANCE_SLOTS", value_name = "SLOTS")]
    pub sync_tolerance_slots: Option<u64>,

    /// Emptying is meant: accept an input with no entries, and a pass that
    /// unassigns every validator of the operator.
    #[arg(long, env = "KEYSYNC_ALLOW_EMPTY", action = ArgAction::SetTrue, value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_empty: bool,
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

    /// Refuse to unassign more than N validators in one run [default: 10]
    #[arg(long, env = "KEYSYNC_MAX_DELETES", value_name = "N")]
    pub max_deletes: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,

    /// Write to the registry. Without it: shadow mode (plans are logged and
    /// exposed in /metrics, nothing is written).
    #[arg(long, env = "KEYSYNC_APPLY", action = ArgAction::SetTrue, value_parser = clap::builder::FalseyValueParser::new())]
    pub apply: bool,

    /// Hold back unassigns beyond N per pass until fixed or raised [default: 10]
    #[arg(long, env = "KEYSYNC_MAX_DELETES", value_name = "N")]
    pub max_deletes: Option<u64>,

    /// State directory for the sled store [default: $STATE_DIRECTORY, else the
    /// per-user state dir ($XDG_STATE_HOME or ~/.local/state)/keysync]
    #[arg(long, env = "KEYSYNC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for /health, /ready and /metrics [default: 127.0.0.1:9464]
    #[arg(long, env = "KEYSYNC_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Quiet time before a reconcile starts, in ms [default: 250]
    #[arg(long, env = "KEYSYNC_DEBOUNCE_MS", value_name = "MS")]
    pub debounce_ms: Option<u64>,

    /// Longest a trigger waits under constant churn, in ms [default: 2000]
    #[arg(long, env = "KEYSYNC_MAX_WAIT_MS", value_name = "MS")]
    pub max_wait_ms: Option<u64>,

    /// Full re-list of the registry every N seconds [default: 600]
    #[arg(long, env = "KEYSYNC_RESYNC_SECS", value_name = "SECS")]
    pub resync_secs: Option<u64>,

    /// Console API writes per second (burst the same) [default: 20]
    #[arg(long, env = "KEYSYNC_WRITES_PER_SECOND", value_name = "N")]
    pub writes_per_second: Option<u32>,

    /// Beacon slot length in ms, for the dead-stream timeout of two slots
    /// [default: 12000]
    #[arg(long, env = "KEYSYNC_SLOT_MS", value_name = "MS")]
    pub slot_ms: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The daemon's --listen address; an unspecified host (0.0.0.0, ::)
    /// is probed on loopback [default: 127.0.0.1:9464]
    #[arg(long, env = "KEYSYNC_LISTEN", value_name = "ADDR")]
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
    #[arg(long, default_value = "console")]
    pub log_format: String,
}
