//! Logs on stderr via `tracing`: human console lines, or JSON where every
//! stderr line is one JSON object (panics and argument errors included).
//!
//! Owns subscriber setup and the early guess of the format (before the
//! settings are resolved, so that even a configuration error is logged in
//! the format the operator asked for). Never logs secrets: they are `Secret`s.

use std::ffi::OsString;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The log format from `--log-format`, `KEYSYNC_LOG_FORMAT` or the config
/// file, read without failing (errors are reported later, properly): from
/// clap's `matches` of the subcommand when the command line parsed, else
/// found leniently in `args` (an invalid command line is logged as asked).
pub fn prescan(args: &[OsString], matches: Option<&clap::ArgMatches>) -> LogFormat {
    crate::config::early("log_format", args, matches)
        .and_then(|name| LogFormat::parse(&name))
        .unwrap_or(LogFormat::Console)
}

/// Installs the global subscriber. Level from `KEYSYNC_LOG` (an
/// `EnvFilter` directive such as `debug` or `keysync=debug`), default `info`.
/// The SSE crate stays at `info` unless named: at `debug` it logs a line per
/// stream line.
pub fn init(format: LogFormat) {
    let spec = std::env::var("KEYSYNC_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    if spec.trim().is_empty() {
        filter = EnvFilter::new("info");
    }
    if !spec.contains("eventsource_client") {
        if let Ok(d) = "eventsource_client=info".parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Console => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    panic_hook();
}

/// The demo's logs: in console format, its own step lines only (keysync's
/// errors too), each one short line without time, target or span; the
/// daemon's own lines come back with `KEYSYNC_LOG=info`. JSON as usual.
pub fn init_demo(format: LogFormat) {
    if format == LogFormat::Json {
        return init(format);
    }
    let spec = std::env::var("KEYSYNC_LOG").unwrap_or_default();
    let filter = if spec.trim().is_empty() {
        EnvFilter::new("error,keysync::demo=info")
    } else {
        EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("error,keysync::demo=info"))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Plain)
        .try_init();
    panic_hook();
}

/// One line per event: the level (unless INFO), the message and fields.
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        if level != tracing::Level::INFO {
            write!(writer, "{level} ")?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn panic_hook() {
    // A panic is a bug, but even then stderr stays in the chosen format.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(panic = %payload, location = %location, "internal error (a bug): please report it");
    }));
}
