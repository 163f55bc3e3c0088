//! Resolution: defaults, precedence, transport safety, the key, the file
//! layer; and that the example config, README and the definition agree.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::layers::{self, spec};
use super::*;
use crate::cli::{Cli, Common, SyncArgs, WatchArgs};

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

// ---- one definition ------------------------------------------------------

const EXAMPLE: &str = include_str!("../../config/keysync.example.toml");
const README: &str = include_str!("../../README.md");

/// The example with every key line uncommented (`# key = value`).
fn uncommented_example() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once('=').is_some_and(|(k, _)| {
                    k.trim().chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_config_lists_every_key_with_its_default_and_parses() {
    let text = uncommented_example();
    let layer = layers::parse_file(Path::new("keysync.example.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(layer.common.network.as_deref(), Some(DEFAULT_NETWORK));
    let table: toml::Table = toml::from_str(&text).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, layers::file_keys(), "the example's keys");
    for (key, value) in &table {
        let Some(default) = &spec(key).default else {
            continue;
        };
        let shown = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(&shown, default, "the example's {key} is its default");
    }
}

#[test]
fn file_keys_flags_and_variables_are_one_name() {
    for key in layers::file_keys() {
        let s = spec(key);
        assert_eq!(s.flag, format!("--{}", key.replace('_', "-")));
        assert_eq!(
            s.env.as_deref(),
            Some(&*format!("KEYSYNC_{}", key.to_uppercase()))
        );
    }
    assert!(layers::file_keys().contains(&"slot_ms") && !layers::file_keys().contains(&"config"));
}

#[test]
fn the_readme_lists_every_variable_with_its_default() {
    for key in layers::file_keys().into_iter().chain(["config"]) {
        let env = format!("`{}`", layers::env(key));
        let row = README.lines().find(|l| l.starts_with(&format!("| {env}")));
        assert!(README.contains(&env), "README names {env}");
        match (row, &spec(key).default) {
            (Some(row), Some(d)) if d != "false" => {
                assert!(
                    row.contains(&format!("| `{d}` |")),
                    "README's default of {env}: {row}"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn watch_defaults_come_from_the_definition() {
    let w = WatchArgs {
        common: Common {
            beacon_url: Some("http://127.0.0.1:5052".into()),
            ..base()
        },
        ..Default::default()
    };
    let s = Settings::resolve(&Command::Watch(w), &AllFlags).unwrap();
    assert_eq!(s.watch.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(s.watch.debounce, Duration::from_millis(DEFAULT_DEBOUNCE_MS));
    assert_eq!(s.watch.max_wait, Duration::from_millis(DEFAULT_MAX_WAIT_MS));
    assert_eq!(s.watch.resync, Duration::from_secs(DEFAULT_RESYNC_SECS));
    assert_eq!(s.watch.writes_per_second, DEFAULT_WRITES_PER_SECOND);
    assert_eq!(s.watch.slot, None, "the beacon node's spec decides");
    assert!(!s.watch.apply && !s.allow_empty);
    assert_eq!(s.retry, crate::http::RetryPolicy::default());
    assert_eq!(s.timeout, Duration::from_secs(DEFAULT_HTTP_TIMEOUT_SECS));
    assert_eq!(
        s.sync_tolerance,
        crate::beacon::node::DEFAULT_SYNC_TOLERANCE_SLOTS
    );
}

/// Runs clap on `args` and resolves, as `keysync` does.
fn resolve_args(args: &[&str]) -> Result<Settings, ConfigError> {
    let m = Cli::command().try_get_matches_from(args).unwrap();
    let cli = Cli::from_arg_matches(&m).unwrap();
    Settings::resolve(&cli.command, m.subcommand().unwrap().1)
}

#[test]
fn the_file_beats_clap_s_own_default_and_a_flag_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    std::fs::write(
        &p,
        "max_deletes = 3\napply = true\ndebounce_ms = 9\nnetwork = \"hoodi\"\n",
    )
    .unwrap();
    let p = p.to_str().unwrap();
    let base = [
        "keysync",
        "watch",
        "--config",
        p,
        "--api-key",
        "ovi_live_x",
        "--indices-file",
        "in",
        "--beacon-url",
        "http://127.0.0.1:1",
    ];
    let s = resolve_args(&base).unwrap();
    assert_eq!(s.max_deletes, 3);
    assert!(s.watch.apply);
    assert_eq!(s.network, "hoodi");
    assert_eq!(s.watch.debounce, Duration::from_millis(9));
    assert_eq!(s.watch.max_wait, Duration::from_millis(DEFAULT_MAX_WAIT_MS));
    let s = resolve_args(&[&base[..], &["--debounce-ms", "7", "--network", "mainnet"]].concat())
        .unwrap();
    assert_eq!(s.watch.debounce, Duration::from_millis(7));
    assert_eq!(s.network, "mainnet");
    let e = resolve_args(&[&base[..], &["--http-attempts", "0"]].concat()).unwrap_err();
    assert!(
        e.to_string()
            .contains("--http-attempts: must be from 1 to 20"),
        "{e}"
    );
}

#[test]
fn a_switch_on_the_command_line_is_on_and_an_empty_variable_is_unset() {
    let base = [
        "keysync",
        "watch",
        "--api-key",
        "ovi_live_x",
        "--indices-file",
        "in",
        "--beacon-url",
        "http://127.0.0.1:1",
    ];
    assert!(!resolve_args(&base).unwrap().watch.apply);
    assert!(
        resolve_args(&[&base[..], &["--apply"]].concat())
            .unwrap()
            .watch
            .apply
    );
    let m = Cli::command()
        .try_get_matches_from([&base[..], &["--network", ""]].concat())
        .unwrap();
    let sub = m.subcommand().unwrap().1;
    assert_eq!(sub.source_of("network"), None, "an empty value is no value");
    assert_eq!(sub.source_of("apply"), Some(ValueSource::DefaultValue));
}

/// Variables for some settings, flags for the rest.
struct EnvFor(&'static [&'static str]);

impl SourceOf for EnvFor {
    fn source_of(&self, id: &str) -> Option<ValueSource> {
        Some(match self.0.contains(&id) {
            true => ValueSource::EnvVariable,
            false => ValueSource::CommandLine,
        })
    }
}

#[test]
fn a_switch_turned_off_by_its_variable_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    std::fs::write(&p, "apply = true\nallow_empty = true\n").unwrap();
    let watch = Command::Watch(WatchArgs {
        common: Common {
            config: Some(p),
            beacon_url: Some("http://127.0.0.1:5052".into()),
            ..base()
        },
        ..Default::default()
    });
    let s = Settings::resolve(&watch, &AllFlags).unwrap();
    assert!(s.watch.apply && s.allow_empty);
    let s = Settings::resolve(&watch, &EnvFor(&["apply", "allow_empty"])).unwrap();
    assert!(!s.watch.apply && !s.allow_empty);
    let e = Settings::resolve(
        &Command::Watch(WatchArgs {
            slot_ms: Some(0),
            ..match watch {
                Command::Watch(w) => w,
                _ => unreachable!(),
            }
        }),
        &EnvFor(&["slot_ms"]),
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("KEYSYNC_SLOT_MS: must be at least 1"),
        "{e}"
    );
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    for (text, says) in [
        (
            "network = \"x\"\nmax_deletes = \"many\"\n",
            ["k.toml: max_deletes", "line 2, column 15"],
        ),
        (
            "\nhttp_attempts = -1\n",
            ["k.toml: http_attempts", "line 2, column 17"],
        ),
        (
            "network = \"x\"\n\nnetwrok = 1\n",
            ["\"netwrok\"", "line 3, column 1"],
        ),
        (
            "http_attempts = 0\n",
            ["k.toml: http_attempts", "must be from 1 to 20"],
        ),
        ("network = [", ["k.toml", "line 1"]),
    ] {
        std::fs::write(&p, text).unwrap();
        let e = err_of(Common {
            config: Some(p.clone()),
            ..base()
        });
        for s in says {
            assert!(e.contains(s), "{text:?}: {e}");
        }
    }
}

fn early(args: &[&str], matches: bool) -> Option<String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let m = matches.then(|| Cli::command().try_get_matches_from(&args).unwrap());
    layers::early(
        "log_format",
        &args,
        m.as_ref().and_then(|m| m.subcommand()).map(|(_, s)| s),
    )
}

#[test]
fn the_early_log_format_survives_an_invalid_command_line() {
    if std::env::var_os("KEYSYNC_LOG_FORMAT").is_some()
        || std::env::var_os("KEYSYNC_CONFIG").is_some()
    {
        return;
    }
    let json = Some("json".to_string());
    assert_eq!(
        early(&["keysync", "show", "--log-format", "json"], true),
        json
    );
    assert_eq!(
        early(&["keysync", "show"], true),
        None,
        "clap's default is no request"
    );
    assert_eq!(
        early(
            &["keysync", "diff", "--log-format", "json", "--bogus"],
            false
        ),
        json
    );
    assert_eq!(
        early(
            &["keysync", "diff", "--bogus", "x", "--log-format", "json"],
            false
        ),
        json
    );
    assert_eq!(
        early(&["keysync", "--log-format=json", "nonsense"], false),
        json
    );
    assert_eq!(
        early(&["keysync", "show", "--", "--log-format", "json"], false),
        None
    );
    assert_eq!(early(&["keysync", "show", "--log-format"], false), None);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k.toml");
    std::fs::write(&p, "log_format = \"json\"\nnetwrok = 1\n").unwrap();
    let p = p.to_str().unwrap();
    assert_eq!(
        early(&["keysync", "show", "--bogus", "--config", p], false),
        json
    );
    assert_eq!(early(&["keysync", "show", "--config", p], true), json);
    assert_eq!(
        early(
            &["keysync", "show", "--config", p, "--log-format", "console"],
            true
        )
        .as_deref(),
        Some("console")
    );
}
