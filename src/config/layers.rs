//! Precedence: each setting from its flag, else its environment variable,
//! else the config file, else its default.
//!
//! Owns where a value came from ([`Origin`], told by clap's `ValueSource`),
//! the names of every setting as clap knows them (flag, variable and
//! default are read off `Cli::command()`, never spelled here), the file
//! layer (the TOML file deserialized into the [`WatchArgs`] clap fills) and
//! the early read of one setting that never fails (the log format, needed
//! before anything else resolves).

use std::collections::HashMap;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, CommandFactory};
use serde::Deserialize;

use super::cli::{Cli, Command, Common, WatchArgs};
use super::{cfg_err, ConfigError};

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(&'static str),
    Env(&'static str),
    /// The config file and the key.
    File(PathBuf, &'static str),
    /// The default of the setting with this flag.
    Default(&'static str),
}

impl Origin {
    /// flag > variable > file > default.
    pub fn rank(&self) -> u8 {
        match self {
            Origin::Flag(_) => 3,
            Origin::Env(_) => 2,
            Origin::File(..) => 1,
            Origin::Default(_) => 0,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(n) | Origin::Env(n) => write!(f, "{n}"),
            Origin::File(p, k) => write!(f, "{}: {k}", p.display()),
            Origin::Default(flag) => write!(f, "the default of {flag}"),
        }
    }
}

/// Tells where a clap value came from.
pub trait SourceOf {
    fn source_of(&self, id: &str) -> Option<ValueSource>;
}

impl SourceOf for ArgMatches {
    fn source_of(&self, id: &str) -> Option<ValueSource> {
        let mut raw = self.try_get_raw(id).ok().flatten()?;
        // An empty value (`KEYSYNC_APPLY=` in a unit file) is no value.
        if raw.all(|v| v.is_empty()) {
            return None;
        }
        self.value_source(id)
    }
}

/// No sources known: every value is taken as a flag (unit tests).
pub struct AllFlags;

impl SourceOf for AllFlags {
    fn source_of(&self, _: &str) -> Option<ValueSource> {
        Some(ValueSource::CommandLine)
    }
}

/// How clap knows a setting.
#[derive(Debug)]
pub(crate) struct Spec {
    /// `--api-url`.
    pub flag: String,
    /// `KEYSYNC_API_URL`; every setting has one (`config` included).
    pub env: Option<String>,
    /// As clap prints it in `--help`.
    pub default: Option<String>,
}

/// Every setting by clap id, from `watch`, the command that has them all
/// (the others take a subset, under the same names).
static SPECS: LazyLock<HashMap<String, Spec>> = LazyLock::new(|| {
    let mut cli = Cli::command();
    cli.build(); // fills in what clap implies, such as a switch's "false"
    let Some(watch) = cli.find_subcommand("watch") else {
        return HashMap::new();
    };
    watch
        .get_arguments()
        .filter_map(|a| {
            let spec = Spec {
                flag: format!("--{}", a.get_long()?),
                env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                default: a
                    .get_default_values()
                    .first()
                    .map(|d| d.to_string_lossy().into_owned()),
            };
            Some((a.get_id().to_string(), spec))
        })
        .collect()
});

/// The setting clap calls `id`. A name that is not one is a bug caught by
/// any test that resolves settings.
pub(crate) fn spec(id: &str) -> &'static Spec {
    let specs: &'static HashMap<String, Spec> = &SPECS;
    specs
        .get(id)
        .unwrap_or_else(|| panic!("{id:?} is not a setting of the command line"))
}

/// The variable of setting `id`, for messages.
pub(crate) fn env(id: &str) -> &'static str {
    let s = spec(id);
    s.env.as_deref().unwrap_or(&s.flag)
}

/// The keys of a config file that are tables, not settings of the command
/// line: `[[keymanager]]`.
pub(crate) const FILE_TABLES: [&str; 1] = ["keymanager"];

/// The settings a config file may hold, sorted: every setting (all have a
/// variable) but `config` itself. The file may hold [`FILE_TABLES`] too.
pub(crate) fn file_keys() -> Vec<&'static str> {
    let specs: &'static HashMap<String, Spec> = &SPECS;
    let mut keys: Vec<&'static str> = specs
        .iter()
        .filter(|(id, s)| s.env.is_some() && id.as_str() != "config")
        .map(|(id, _)| id.as_str())
        .collect();
    keys.sort_unstable();
    keys
}

/// A field of the clap structs as a layer holds it: an `Option`, set when
/// `Some`; or a switch, set when on (or turned off by its variable).
pub(crate) trait Field {
    type Value: Clone + FromStr + Blank;
    fn value(&self, from_env: bool) -> Option<Self::Value>;
}

impl<T: Clone + FromStr + Blank> Field for Option<T> {
    type Value = T;
    fn value(&self, _: bool) -> Option<T> {
        self.clone()
    }
}

impl Field for bool {
    type Value = bool;
    fn value(&self, from_env: bool) -> Option<bool> {
        (*self || from_env).then_some(*self)
    }
}

/// An empty value means unset, at every layer (`KEYSYNC_API_URL=` in a
/// unit file or manifest is not a configuration error).
pub(crate) trait Blank {
    fn is_blank(&self) -> bool {
        false
    }
}

impl Blank for String {
    fn is_blank(&self) -> bool {
        self.trim().is_empty()
    }
}

impl Blank for PathBuf {
    fn is_blank(&self) -> bool {
        self.as_os_str().is_empty()
    }
}

impl Blank for Vec<PathBuf> {
    fn is_blank(&self) -> bool {
        self.iter().all(Blank::is_blank)
    }
}

impl Blank for u32 {}
impl Blank for u64 {}
impl Blank for bool {}

/// The layers of one command's settings.
pub(crate) struct Layers<'a> {
    sources: &'a dyn SourceOf,
    /// Flags and variables: what clap filled (or a test built).
    given: WatchArgs,
    /// The config file, and what it holds.
    file: Option<(PathBuf, WatchArgs)>,
}

impl<'a> Layers<'a> {
    /// Reads the config file, if one is named.
    pub fn new(command: &Command, sources: &'a dyn SourceOf) -> Result<Self, ConfigError> {
        let given = match command {
            Command::Show(c) | Command::Diff(c) => WatchArgs {
                common: c.clone(),
                ..WatchArgs::default()
            },
            Command::Sync(s) => WatchArgs {
                common: s.common.clone(),
                max_deletes: s.max_deletes,
                ..WatchArgs::default()
            },
            Command::Watch(w) | Command::Doctor(w) => w.clone(),
            Command::Demo(_) | Command::Probe(_) | Command::Completions(_) | Command::Man => {
                WatchArgs::default()
            }
        };
        let file = match given.common.config.clone().filter(|p| !p.is_blank()) {
            Some(path) => {
                let layer = load_file(&path)?;
                Some((path, layer))
            }
            None => None,
        };
        Ok(Layers {
            sources,
            given,
            file,
        })
    }

    /// Setting `id` (the name of `field`) with its origin, `None` when
    /// unset and without a default. Use [`get!`] to name it once.
    pub fn get<F: Field>(
        &self,
        id: &'static str,
        field: impl Fn(&WatchArgs) -> &F,
    ) -> Result<Option<(F::Value, Origin)>, ConfigError> {
        self.layered(
            id,
            |args, from_env| field(args).value(from_env),
            |d| d.parse().ok(),
        )
    }

    /// A list setting (a repeatable flag, a comma-separated variable, an
    /// array in the file): the list of the layer that wins, not a merge.
    pub fn get_paths(
        &self,
        id: &'static str,
        field: impl Fn(&WatchArgs) -> &Option<Vec<PathBuf>>,
    ) -> Result<Option<(Vec<PathBuf>, Origin)>, ConfigError> {
        self.layered(id, |args, _| field(args).clone(), |_| None)
    }

    /// [`Layers::get`] for any shape of value: `value` reads a layer,
    /// `default` parses the default clap prints.
    fn layered<V: Blank>(
        &self,
        id: &'static str,
        value: impl Fn(&WatchArgs, bool) -> Option<V>,
        default: impl Fn(&str) -> Option<V>,
    ) -> Result<Option<(V, Origin)>, ConfigError> {
        let spec = spec(id);
        let source = self.sources.source_of(id);
        let from_env = source == Some(ValueSource::EnvVariable);
        // A value clap took from the default ranks below the file: skipped
        // here, the default comes last.
        if source != Some(ValueSource::DefaultValue) {
            if let Some(v) = value(&self.given, from_env) {
                if !v.is_blank() {
                    let origin = if from_env {
                        Origin::Env(env(id))
                    } else {
                        Origin::Flag(&spec.flag)
                    };
                    return Ok(Some((v, origin)));
                }
            }
        }
        if let Some((path, file)) = &self.file {
            if let Some(v) = value(file, false).filter(|v| !v.is_blank()) {
                return Ok(Some((v, Origin::File(path.clone(), id))));
            }
        }
        let Some(text) = &spec.default else {
            return Ok(None);
        };
        let origin = Origin::Default(&spec.flag);
        match default(text) {
            Some(v) => Ok(Some((v, origin))),
            None => Err(cfg_err(origin, format!("is not valid ({text:?})"))),
        }
    }

    /// The `[[keymanager]]` tables of the config file, with the file.
    pub fn keymanager_tables(&self) -> Option<(&Path, &[super::cli::KeymanagerTable])> {
        let (path, file) = self.file.as_ref()?;
        Some((path.as_path(), file.common.keymanager.as_slice()))
    }

    /// [`Layers::get`] of a setting that must have a value.
    pub fn need<F: Field>(
        &self,
        id: &'static str,
        field: impl Fn(&WatchArgs) -> &F,
    ) -> Result<(F::Value, Origin), ConfigError> {
        self.get(id, field)?
            .ok_or_else(|| cfg_err(env(id), "is required"))
    }
}

/// `layers.get("api_url", |a| &a.common.api_url)`, the name spelled once:
/// the field's, which is clap's id and the TOML key.
macro_rules! get {
    ($layers:expr, common.$field:ident) => {
        $layers.get(stringify!($field), |a| &a.common.$field)
    };
    ($layers:expr, $field:ident) => {
        $layers.get(stringify!($field), |a| &a.$field)
    };
}

/// [`get!`] of a setting that must have a value (all with a default).
macro_rules! need {
    ($layers:expr, common.$field:ident) => {
        $layers.need(stringify!($field), |a| &a.common.$field)
    };
    ($layers:expr, $field:ident) => {
        $layers.need(stringify!($field), |a| &a.$field)
    };
}

pub(crate) use {get, need};

/// The config file, as the file layer.
pub(crate) fn load_file(path: &Path) -> Result<WatchArgs, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(path.display(), format!("cannot read the config file: {e}")))?;
    parse_file(path, &text)
}

/// `text` as the file layer: [`WatchArgs`] (strict: an unknown key is an
/// error), with every error naming the key and line at fault.
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<WatchArgs, ConfigError> {
    let invalid = |key: Option<&str>, what: &str, span: Option<Range<usize>>| {
        let at = span
            .filter(|s| *s != (0..0))
            .map(|s| format!(" ({})", line_column(text, s.start)))
            .unwrap_or_default();
        match key {
            Some(k) => cfg_err(format!("{}: {k}", path.display()), format!("{what}{at}")),
            None => cfg_err(path.display(), format!("invalid config file: {what}{at}")),
        }
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| invalid(None, e.message(), e.span()))?;
    let mut keys = file_keys();
    keys.extend(FILE_TABLES);
    for key in doc.get_ref().keys() {
        if !keys.contains(&key.get_ref().as_ref()) {
            let what = format!(
                "unknown key {:?}; the keys are the variable names without KEYSYNC_, lowercase: {}",
                key.get_ref(),
                keys.join(", ")
            );
            return Err(invalid(None, &what, Some(key.span())));
        }
    }
    // The key a value error is about, by where it points.
    let key_at = |span: &Option<Range<usize>>| {
        let at = span.as_ref()?.start;
        doc.get_ref()
            .iter()
            .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
            .map(|(k, _)| k.get_ref().to_string())
    };
    let typed = |e: toml::de::Error| invalid(key_at(&e.span()).as_deref(), e.message(), e.span());
    // Common's keys on their own first: once flattened into WatchArgs, a
    // value of the wrong type no longer knows its line.
    Common::deserialize(toml::de::Deserializer::from(doc.clone())).map_err(typed)?;
    WatchArgs::deserialize(toml::de::Deserializer::from(doc.clone())).map_err(typed)
}

/// "line 2, column 15" of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

/// Setting `id` as given (flag, variable or config file), read without
/// ever failing: for the little that must be known before the settings
/// resolve, such as the log format that even an invalid command line or
/// configuration is reported in. `matches`: the subcommand's, when the
/// command line parsed; otherwise `args` is searched leniently.
pub(crate) fn early(
    id: &'static str,
    args: &[OsString],
    matches: Option<&ArgMatches>,
) -> Option<String> {
    given_early(id, args, matches).or_else(|| {
        let path = given_early("config", args, matches)?;
        let text = std::fs::read_to_string(path).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let value = table.get(id)?.as_str()?.to_string();
        (!value.is_blank()).then_some(value)
    })
}

/// `id` from the flag or the variable.
fn given_early(
    id: &'static str,
    args: &[OsString],
    matches: Option<&ArgMatches>,
) -> Option<String> {
    let spec = spec(id);
    let flag = match matches {
        Some(m) => match m.source_of(id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => m
                .try_get_raw(id)
                .ok()
                .flatten()
                .and_then(|mut v| v.next())
                .map(|v| v.to_string_lossy().into_owned()),
            _ => None,
        },
        None => lenient(id, &spec.flag, args),
    };
    // The variable too, for a command without the flag (demo).
    flag.filter(|v| !v.is_blank()).or_else(|| {
        let v = std::env::var(spec.env.as_deref()?).ok()?;
        (!v.is_blank()).then_some(v)
    })
}

/// The last value of flag `--long` in a command line clap refused. clap
/// stops at the first token it cannot place, so it is shown two tokens at
/// a time: a flag and what follows it (`--log-format json`, or
/// `--log-format=json` and anything).
fn lenient(id: &'static str, flag: &str, args: &[OsString]) -> Option<String> {
    let long = flag.trim_start_matches('-').to_string();
    let cmd = clap::Command::new("keysync")
        .no_binary_name(true)
        .ignore_errors(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(Arg::new(id).long(long).num_args(1))
        .arg(Arg::new("anything else").num_args(0..));
    let mut found = None;
    for (i, arg) in args.iter().enumerate().skip(1) {
        if arg == "--" {
            break;
        }
        let window = &args[i..args.len().min(i + 2)];
        let Ok(m) = cmd.clone().try_get_matches_from(window) else {
            continue;
        };
        if m.value_source(id) == Some(ValueSource::CommandLine) {
            if let Some(v) = m.get_one::<String>(id) {
                found = Some(v.clone());
            }
        }
    }
    found
}
