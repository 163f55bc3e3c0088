//! The top-level error and the one mapping from errors to exit codes.
//!
//! Owns the exit-code contract: 0 ok, 1 internal failure, 2 auth/identity,
//! 3 console API failure, 4 configuration or input error, 5 guardrail, 6
//! beacon node failure. Nothing else in keysync picks an exit code (the
//! daemon's error policy, [`crate::watch::policy`], decides only whether an
//! error ends it, then exits with this code).

use crate::apply::ApplyError;
use crate::beacon::BeaconError;
use crate::inputs::keymanager::KeymanagerError;
use crate::inputs::SourceError;
use crate::registry::RegistryError;
use crate::settings::ConfigError;

pub const EXIT_OK: u8 = 0;
/// keysync itself or its host failed (a panicked task, stdout that cannot
/// be written, no async runtime or file watcher): not the configuration.
pub const EXIT_INTERNAL: u8 = 1;
pub const EXIT_AUTH: u8 = 2;
pub const EXIT_API: u8 = 3;
pub const EXIT_CONFIG: u8 = 4;
pub const EXIT_GUARDRAIL: u8 = 5;
pub const EXIT_BEACON: u8 = 6;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("input error: {0}")]
    Source(#[from] SourceError),
    #[error("input error: {0}")]
    Keymanager(#[from] KeymanagerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Beacon(#[from] BeaconError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("refusing to unassign {planned} validators: more than --max-deletes {max} (nothing was written; raise --max-deletes if a large exit is expected)")]
    Guardrail { planned: usize, max: u64 },
    #[error("refusing to unassign all {planned} validators of the registry and assign none: nothing would be left, and not all of them have withdrawn (nothing was written; if emptying the registry is meant, pass --allow-empty)")]
    EmptiesRegistry { planned: usize },
    #[error("state store: {0}")]
    Store(String),
    /// An internal or host failure (exit code 1).
    #[error("{0}")]
    Runtime(String),
}

fn registry_exit(e: &RegistryError) -> u8 {
    if e.is_auth() {
        EXIT_AUTH
    } else {
        EXIT_API
    }
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Source(_) | Error::Keymanager(_) | Error::Store(_) => {
                EXIT_CONFIG
            }
            Error::Registry(e) => registry_exit(e),
            Error::Apply(ApplyError { source, .. }) => registry_exit(source),
            Error::Beacon(e) => {
                if e.is_config() {
                    EXIT_CONFIG
                } else {
                    EXIT_BEACON
                }
            }
            Error::Guardrail { .. } | Error::EmptiesRegistry { .. } => EXIT_GUARDRAIL,
            Error::Runtime(_) => EXIT_INTERNAL,
        }
    }
}
