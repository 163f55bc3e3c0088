//! Process entry: parse, resolve settings, start the runtime, dispatch, and
//! turn the result into an exit code (through [`Error::exit_code`] only).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::error::{Error, EXIT_CONFIG};
use crate::{logging, oneshot};

/// `keysync`'s `main`.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    ExitCode::from(run(args))
}

/// Runs keysync with `args`; returns the exit code.
pub fn run(args: Vec<OsString>) -> u8 {
    let parsed = Cli::command().try_get_matches_from(&args);
    let sub = parsed.as_ref().ok().and_then(|m| m.subcommand());
    // Before anything can fail: errors are logged in the format asked for.
    let format = logging::prescan(&args, sub.map(|(_, m)| m));
    let matches = match parsed {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            logging::init(format);
            let rendered = redact_keys(&e.render().to_string());
            tracing::error!(error = %rendered.trim(), "invalid command line");
            return EXIT_CONFIG;
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            logging::init(format);
            tracing::error!(error = %redact_keys(e.to_string().trim()), "invalid command line");
            return EXIT_CONFIG;
        }
    };
    let sub = matches
        .subcommand()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();

    match &cli.command {
        Command::Probe(p) => return crate::watch::ops::probe(p),
        Command::Completions(c) => return completions(c.shell),
        Command::Man => return man(),
        _ => {}
    }
    crate::alloc::tune();
    if let Command::Demo(d) = &cli.command {
        // `format` has demo's --log-format too (it has the same name).
        logging::init_demo(format);
        #[cfg(feature = "demo")]
        return finish(runtime().and_then(|rt| rt.block_on(crate::demo::run(d.clone()))));
        #[cfg(not(feature = "demo"))]
        {
            let _ = d;
            tracing::error!("this keysync was built without the simulator (cargo feature \"demo\"): run `cargo run --release -- demo` from the source tree");
            return EXIT_CONFIG;
        }
    }
    logging::init(format);
    if let Command::Doctor(_) = &cli.command {
        return match runtime() {
            Ok(rt) => rt.block_on(crate::doctor::run(&cli.command, &sub, format)),
            Err(e) => finish(Err(e)),
        };
    }
    let settings = match Settings::resolve(&cli.command, &sub) {
        Ok(s) => s,
        Err(e) => return finish(Err(e.into())),
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            match &cli.command {
                Command::Watch(_) => crate::watch::run(settings).await,
                other => oneshot::run(other, &settings).await,
            }
        })
    });
    finish(result)
}

/// `keysync completions <shell>`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> u8 {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "keysync", &mut out);
    write_stdout(&out)
}

/// `keysync man`: the page (roff) on stdout: the commands, then every
/// setting with its flag, variable and default (`watch` takes them all;
/// each other command a subset of the same names).
fn man() -> u8 {
    let cmd = Cli::command().bin_name("keysync");
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .and_then(|()| match cmd.find_subcommand("watch") {
            Some(watch) => {
                let watch = clap_mangen::Man::new(watch.clone().bin_name("keysync watch"));
                watch.render_synopsis_section(&mut out)?;
                watch.render_options_section(&mut out)
            }
            None => Ok(()),
        });
    match rendered {
        Ok(()) => write_stdout(&out),
        Err(e) => {
            eprintln!("cannot render the man page: {e}");
            crate::error::EXIT_INTERNAL
        }
    }
}

fn write_stdout(bytes: &[u8]) -> u8 {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cannot write to stdout: {e}");
            crate::error::EXIT_INTERNAL
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the async runtime: {e}")))
}

fn finish(result: Result<u8, Error>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code, error = %redact_keys(&e.to_string()), "keysync failed");
            code
        }
    }
}

/// `text` with anything shaped like an API key (`ovi_…` up to whitespace,
/// a quote or a control character) or a bearer token replaced: the shape
/// rules every remote answer is scrubbed with ([`crate::secret::redact_shapes`]).
/// Errors that echo what the user typed (a key passed as a positional
/// argument, to the wrong flag, or put in a URL variable) are reported
/// before the key is known, so scrubbing the key itself cannot catch them.
fn redact_keys(text: &str) -> String {
    crate::secret::redact_shapes(text)
}

#[cfg(test)]
mod tests {
    use super::redact_keys;

    #[test]
    fn redact_keys_hides_key_shaped_tokens_only() {
        assert_eq!(
            redact_keys("unexpected argument 'ovi_live_abc123' found"),
            "unexpected argument 'ovi_[redacted]' found"
        );
        assert_eq!(
            redact_keys("(got \"ovi_live_x\") and ovi_live_y"),
            "(got \"ovi_[redacted]\") and ovi_[redacted]"
        );
        assert_eq!(
            redact_keys("must start with 'ovi_' (the key shape)"),
            "must start with 'ovi_' (the key shape)"
        );
        assert_eq!(redact_keys("httpsovi_abcdef"), "httpsovi_[redacted]");
        assert_eq!(
            redact_keys("the ovi_live_… key from the dashboard"),
            "the ovi_live_… key from the dashboard",
            "a hint's placeholder is not a key"
        );
        assert_eq!(
            redact_keys("error: unexpected value 'Bearer ovi_live_abc' for '--network'"),
            "error: unexpected value 'Bearer [redacted]' for '--network'"
        );
        assert_eq!(
            redact_keys("invalid value 'bearer\tsk_abc123'"),
            "invalid value 'bearer\t[redacted]'"
        );
    }
}
