//! The daemon's error policy: what a failure means for `keysync watch`, in
//! one place.
//!
//! Owns the decision, for any [`Error`] a pass (or the identity lookup at
//! start) returns, between *requeue* (the work is kept and tried again
//! after a backoff) and *stop* (retrying cannot help: the daemon ends with
//! the error's exit code, [`Error::exit_code`], and one error line saying
//! why). Not *when* the retry runs: that is the [`super::scheduler`]'s.
//!
//! | error | daemon | exit |
//! |---|---|---|
//! | console / auth: transport, 5xx, 429, any other failed call, a bad body | requeue | — |
//! | console / auth: the key rejected (401/403), or not scoped to one operator, on any call or write | stop | 2 |
//! | beacon: down, not a beacon node, inconsistent, not synced | requeue | — |
//! | beacon: on another chain, every node tried | stop | 4 |
//! | beacon: on another chain, while another node is merely down | requeue (the other may come back) | — |
//! | configuration ([`Error::Config`]: a missing beacon URL for pubkeys, a chain id spelled otherwise in a records input or the registry) | stop | 4 |
//! | an input ([`Error::Source`]) | requeue: an input heals when its file is fixed, and the daemon watches it (a pass keeps an input's last good content, so none fails on one today) | — |
//! | the state store ([`Error::Store`]: a write failed) | requeue | — |
//! | guardrail, empties the registry | requeue (the daemon holds these deletes; a pass never fails on them) | — |
//! | internal ([`Error::Runtime`]) | stop: a restart is the remedy | 1 |

use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::registry::RegistryError;

/// Between failed passes, and between failed identity lookups at start:
/// 1 s doubling to 60 s.
pub const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Try the same work again after this long.
    After(Duration),
    /// Retrying cannot help: the daemon stops with `code`; `why` says so in
    /// its error line.
    Stop { code: u8, why: &'static str },
}

/// The policy: `attempts` counts the consecutive failures, this one
/// included (1 for the first).
pub fn error_policy(e: &Error, attempts: u32) -> Requeue {
    let stop = |why| Requeue::Stop {
        code: e.exit_code(),
        why,
    };
    match e {
        Error::Config(_) => stop("a configuration error: retrying cannot fix it"),
        Error::Beacon(b) if b.is_config_everywhere() => {
            stop("a configuration error: no configured beacon node is on the configured chain")
        }
        Error::Registry(r) if rejected(r) => stop("the API key was rejected"),
        Error::Apply(a) if rejected(&a.source) => stop("the API key was rejected"),
        Error::Runtime(_) => stop("an internal failure: a restart is the remedy"),
        Error::Registry(_)
        | Error::Apply(_)
        | Error::Beacon(_)
        | Error::Source(_)
        | Error::Keymanager(_)
        | Error::Store(_)
        | Error::Guardrail { .. }
        | Error::EmptiesRegistry { .. } => Requeue::After(RETRY_BACKOFF.delay(attempts)),
    }
}

fn rejected(e: &RegistryError) -> bool {
    matches!(
        e,
        RegistryError::Rejected { .. } | RegistryError::NotOperatorScoped
    )
}

/// The error line of a daemon that stops on `e` (the key scrubbed from
/// anything echoed, as for every error keysync prints at exit).
pub fn log_stop(e: &Error, code: u8, why: &str) {
    tracing::error!(
        exit_code = code,
        error = %crate::secret::redact_shapes(&e.to_string()),
        "{why}; keysync watch stops"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{ApplyError, Stage};
    use crate::beacon::BeaconError;
    use crate::error::{EXIT_AUTH, EXIT_CONFIG, EXIT_INTERNAL};
    use crate::http::{Failure, Party};
    use crate::settings::ConfigError;

    fn status(code: u16) -> Failure {
        Failure::Status {
            status: code,
            body: String::new(),
            retry_after: None,
            attempts: 3,
        }
    }

    fn transport() -> Failure {
        Failure::Transport {
            detail: "connection refused".into(),
            attempts: 3,
        }
    }

    fn wrong_chain(others_failed: bool) -> Error {
        Error::Beacon(BeaconError::WrongChain {
            url: "http://b".into(),
            node: 5,
            configured: "0x1".into(),
            others_failed,
        })
    }

    fn rejected_key() -> RegistryError {
        RegistryError::Rejected {
            party: Party::Console,
            call: "POST assign",
            status: 403,
            body: String::new(),
        }
    }

    fn retried() -> Vec<Error> {
        let failed = |party, failure| RegistryError::Failed {
            party,
            call: "GET list",
            failure,
        };
        vec![
            Error::Registry(failed(Party::Console, status(503))),
            Error::Registry(failed(Party::Console, status(429))),
            Error::Registry(failed(Party::Auth, status(500))),
            Error::Registry(RegistryError::Unreachable {
                party: Party::Auth,
                call: "GET /api/v1/me",
                host: "auth".into(),
                failure: transport(),
            }),
            Error::Registry(RegistryError::Malformed {
                party: Party::Console,
                call: "GET list",
                detail: "not json".into(),
            }),
            Error::Apply(ApplyError {
                stage: Stage::Assign,
                progress: Default::default(),
                source: Box::new(failed(Party::Console, status(502))),
            }),
            Error::Beacon(BeaconError::Failed {
                url: "http://b".into(),
                call: "POST validators",
                failure: transport(),
            }),
            Error::Beacon(BeaconError::Malformed {
                url: "http://b".into(),
                call: "GET deposit_contract",
                detail: "html".into(),
            }),
            Error::Beacon(BeaconError::Inconsistent {
                url: "http://b".into(),
                detail: "one pubkey at two indices".into(),
            }),
            wrong_chain(true),
            Error::Store("cannot save the inputs".into()),
            Error::Guardrail {
                planned: 11,
                max: 10,
            },
            Error::EmptiesRegistry { planned: 3 },
        ]
    }

    #[test]
    fn remote_and_store_failures_requeue_with_the_retry_backoff() {
        for e in retried() {
            for attempt in 1..=8 {
                assert_eq!(
                    error_policy(&e, attempt),
                    Requeue::After(RETRY_BACKOFF.delay(attempt)),
                    "{e}"
                );
            }
        }
        let waits: Vec<u64> = (1..=8)
            .map(|n| match error_policy(&Error::Store("x".into()), n) {
                Requeue::After(d) => d.as_secs(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn configuration_errors_stop_the_daemon_with_exit_4() {
        let config = Error::Config(ConfigError {
            origin: "KEYSYNC_BEACON_URL".into(),
            message: "is required to resolve pubkeys or indices".into(),
        });
        for e in [config, wrong_chain(false)] {
            for attempt in [1, 7] {
                match error_policy(&e, attempt) {
                    Requeue::Stop { code, why } => {
                        assert_eq!(code, EXIT_CONFIG, "{e}");
                        assert!(why.contains("configuration"), "{why}");
                    }
                    other => panic!("{e}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_rejected_key_stops_the_daemon_with_exit_2() {
        for e in [
            Error::Registry(rejected_key()),
            Error::Registry(RegistryError::NotOperatorScoped),
            Error::Apply(ApplyError {
                stage: Stage::Unassign,
                progress: Default::default(),
                source: Box::new(rejected_key()),
            }),
        ] {
            assert!(
                matches!(error_policy(&e, 1), Requeue::Stop { code, .. } if code == EXIT_AUTH),
                "{e}"
            );
        }
    }

    #[test]
    fn an_internal_failure_stops_with_its_own_code_not_the_configurations() {
        let e = Error::Runtime("daemon task failed: panicked".into());
        assert_eq!(e.exit_code(), EXIT_INTERNAL);
        assert!(matches!(
            error_policy(&e, 1),
            Requeue::Stop {
                code: EXIT_INTERNAL,
                ..
            }
        ));
    }

    #[test]
    fn a_stop_always_exits_with_the_errors_own_code() {
        let config = Error::Config(ConfigError {
            origin: "x".into(),
            message: "y".into(),
        });
        for e in retried().into_iter().chain([config, wrong_chain(false)]) {
            if let Requeue::Stop { code, .. } = error_policy(&e, 1) {
                assert_eq!(code, e.exit_code(), "{e}");
            }
        }
    }
}
