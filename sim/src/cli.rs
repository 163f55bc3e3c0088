//! The `keysync-sim` binary's entry: flags → [`SimConfig`], a tokio runtime,
//! one JSON line on stdout once listening (`{"url", "beacon_url",
//! "api_key", "operator_id", "keymanager_url", "keymanager_token"}`, for
//! scripts), logs on stderr, exit 0 on
//! SIGINT/SIGTERM. Everything else is driven through the control API.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use clap::Parser;

use crate::{Sim, SimConfig};

/// Local simulator of the Optimum auth service, the Optimum console API, an
/// Ethereum beacon node (REST + SSE) and a validator client's Keymanager
/// API, with a scriptable chain and fault injection. Control API under
/// `{url}/sim/…`.
#[derive(Debug, Parser)]
#[command(name = "keysync-sim", version)]
pub struct Args {
    /// Validators generated at start (all active_ongoing).
    #[arg(long, default_value_t = 64)]
    pub validators: u64,
    /// Slot length in ms; 0 = manual clock (advance with POST /sim/advance).
    #[arg(long, default_value_t = 12_000)]
    pub slot_ms: u64,
    #[arg(long, default_value_t = 32)]
    pub slots_per_epoch: u64,
    /// Keep-alive period on event streams; 0 = slot_ms/2 (1000 with a manual clock).
    #[arg(long, default_value_t = 0)]
    pub keepalive_ms: u64,
    /// Main listener port (auth, console, control); 0 = ephemeral.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Beacon listener port; 0 = ephemeral.
    #[arg(long, default_value_t = 0)]
    pub beacon_port: u16,
    /// The Bearer key the auth and console routes accept.
    #[arg(long, default_value = "ovi_live_sim_key_0123456789abcdef")]
    pub api_key: String,
    #[arg(long, default_value = "42")]
    pub operator_id: String,
    /// Chain id reported by deposit_contract (decimal).
    #[arg(long, default_value_t = 1)]
    pub chain_id: u64,
    /// Seed for generated pubkeys and roots.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Added latency on every route, in ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// /api/v1/me answers an empty operator_id (a staff key).
    #[arg(long)]
    pub staff_key: bool,
    #[arg(long, default_value_t = 1)]
    pub deposit_delay_epochs: u64,
    #[arg(long, default_value_t = 2)]
    pub activation_delay_epochs: u64,
    #[arg(long, default_value_t = 2)]
    pub exit_delay_epochs: u64,
    #[arg(long, default_value_t = 2)]
    pub withdrawable_delay_epochs: u64,
    /// Validators queries naming no known id answer 404.
    #[arg(long)]
    pub none_known_404: bool,
    /// POST validators answers this status (405, or 404 like Lodestar).
    #[arg(long)]
    pub post_validators_unsupported: Option<u16>,
    /// Keymanager API listener port; 0 = ephemeral.
    #[arg(long, default_value_t = 0)]
    pub keymanager_port: u16,
    /// The Bearer token the keymanager API accepts.
    #[arg(long, default_value = "km_token_0123456789abcdef0123456789")]
    pub keymanager_token: String,
}

impl Args {
    pub fn config(&self) -> SimConfig {
        SimConfig {
            api_key: self.api_key.clone(),
            operator_id: self.operator_id.clone(),
            chain_id: self.chain_id,
            validators: self.validators,
            seed: self.seed,
            slot_ms: self.slot_ms,
            slots_per_epoch: self.slots_per_epoch,
            keepalive_ms: self.keepalive_ms,
            main_port: self.port,
            beacon_port: self.beacon_port,
            staff_key: self.staff_key,
            deposit_delay_epochs: self.deposit_delay_epochs,
            activation_delay_epochs: self.activation_delay_epochs,
            exit_delay_epochs: self.exit_delay_epochs,
            withdrawable_delay_epochs: self.withdrawable_delay_epochs,
            latency_ms: self.latency_ms,
            none_known_404: self.none_known_404,
            post_validators_unsupported: self.post_validators_unsupported,
            keymanager_token: self.keymanager_token.clone(),
            keymanager_port: self.keymanager_port,
        }
    }
}

/// Runs the simulator until SIGINT/SIGTERM.
pub fn cli_main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keysync-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args.config()))
}

async fn run(cfg: SimConfig) -> ExitCode {
    let sim = match Sim::start(cfg).await {
        Ok(sim) => sim,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the simulator");
            return ExitCode::FAILURE;
        }
    };
    let line = serde_json::json!({
        "url": sim.url(),
        "beacon_url": sim.beacon_url(),
        "api_key": sim.api_key(),
        "operator_id": sim.operator_id(),
        "keymanager_url": sim.keymanager_url(),
        "keymanager_token": sim.keymanager_token(),
    });
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        tracing::warn!("stdout closed; serving anyway");
    }
    drop(out);
    wait_for_signal().await;
    tracing::info!("signal received; shutting down");
    sim.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_config() {
        let args = Args::try_parse_from([
            "keysync-sim",
            "--validators",
            "1000",
            "--slot-ms",
            "0",
            "--slots-per-epoch",
            "4",
            "--port",
            "7000",
            "--beacon-port",
            "7001",
            "--api-key",
            "ovi_live_x",
            "--operator-id",
            "7",
            "--chain-id",
            "17000",
            "--seed",
            "9",
            "--latency-ms",
            "5",
            "--post-validators-unsupported",
            "404",
            "--keymanager-port",
            "7002",
            "--keymanager-token",
            "km_x",
        ])
        .unwrap();
        let cfg = args.config();
        assert_eq!(cfg.validators, 1000);
        assert_eq!(cfg.slot_ms, 0);
        assert_eq!(cfg.slots_per_epoch, 4);
        assert_eq!((cfg.main_port, cfg.beacon_port), (7000, 7001));
        assert_eq!(cfg.api_key, "ovi_live_x");
        assert_eq!(cfg.operator_id, "7");
        assert_eq!(cfg.chain_id, 17000);
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.latency_ms, 5);
        assert_eq!(cfg.post_validators_unsupported, Some(404));
        assert_eq!(
            (cfg.keymanager_port, cfg.keymanager_token.as_str()),
            (7002, "km_x")
        );
    }

    #[test]
    fn defaults_match_sim_config() {
        let cfg = Args::try_parse_from(["keysync-sim"]).unwrap().config();
        let d = SimConfig::default();
        assert_eq!(cfg.api_key, d.api_key);
        assert_eq!(cfg.keymanager_token, d.keymanager_token);
        assert_eq!(cfg.keymanager_port, d.keymanager_port);
        assert_eq!(
            (cfg.validators, cfg.slot_ms, cfg.slots_per_epoch),
            (d.validators, d.slot_ms, d.slots_per_epoch)
        );
        assert_eq!(cfg.exit_delay_epochs, d.exit_delay_epochs);
    }
}
