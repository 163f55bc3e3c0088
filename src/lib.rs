//! keysync keeps Optimum's validator registry equal to the validators an
//! operator owns.
//!
//! The machine, by room: [`inputs`] (input files) and [`beacon`] (the chain)
//! feed the [`desired`] set; the [`reconcile`] core — one function for every
//! command — plans with the pure [`plan`] and writes through [`apply`] to the
//! [`registry`], once the [`witness`] has confirmed any removal. The one-shot commands live in
//! [`oneshot`]; the daemon in [`watch`] with its [`store`]. [`config`] holds
//! the two stages of configuration ([`cli`], then the settings); [`error`]
//! maps failures to exit codes; every retry loop waits by [`backoff`].

pub mod alloc;
pub mod apply;
pub mod backoff;
pub mod beacon;
pub mod bls;
pub mod cache;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod desired;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod http;
pub mod inputs;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod oneshot;
pub mod output;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod registry;
pub mod run;
pub mod secret;
pub mod store;
pub mod watch;
pub mod witness;

/// Stage two, the resolved settings: [`config`] by its older name.
pub use config as settings;
/// Stage one of configuration, the command line: [`config::cli`].
pub use config::cli;
