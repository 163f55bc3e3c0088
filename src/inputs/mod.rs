//! Inputs: the files that say which validators an operator owns.
//!
//! The room, by module: [`file`] (readable or refused, bounded), `text`
//! (pubkeys and index lists), `json` (records, keystores, deposit data,
//! streamed), detection of a drop-directory file's format here, and
//! [`InputSet`] (the daemon's last good content of every input).
//!
//! Owns reading and parsing every input format — pubkeys list, index list,
//! records JSON, and (for the drop directory) EIP-2335 keystores and deposit
//! data — into one [`SourceContent`]. Errors name the file and the line or
//! array element at fault. Never decides what to do with a broken input:
//! one-shot commands fail, the daemon keeps the last good content. Files
//! are read without network I/O; [`keymanager`] reads a validator client's
//! key list over its Keymanager API.
//!
//! An input is readable or refused (safety invariant 1): it must be a
//! regular file (links followed) of at most [`MAX_INPUT_BYTES`]; anything
//! else — a directory, FIFO, socket or device, a dangling or looping link,
//! a drop directory that is missing or lists nothing — is an error naming
//! the path, never an empty input ([`file`]). A file with no entries and no
//! comment line is [`SourceError::Blank`]: whitespace is not intent. Parsing
//! stays within about the file's own size again (`text`, `json`).

pub mod file;
mod json;
pub mod keymanager;
mod keystores;
mod last_good;
mod text;

pub use last_good::{InputSet, Keep, NoStore};

use std::path::PathBuf as InputPath;

/// The configured inputs, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub pubkeys_file: Option<InputPath>,
    pub index_list_file: Option<InputPath>,
    pub indices_file: Option<InputPath>,
    pub input_dir: Option<InputPath>,
    /// EIP-2335 keystores only; other files are skipped.
    pub keystores_dir: Option<InputPath>,
    pub deposit_data_files: Vec<InputPath>,
    pub keymanagers: Vec<KeymanagerInput>,
    pub checks: Checks,
}

/// What every input is checked against beyond its format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// `--network`: a deposit data file's `network_name` must be this.
    pub network: String,
    /// `--verify-pubkeys`: every pubkey must be a valid BLS12-381 G1 point.
    pub verify_pubkeys: bool,
}

impl Checks {
    /// The network deposit data must name, when one is configured.
    pub fn network(&self) -> Option<&str> {
        Some(self.network.trim()).filter(|n| !n.is_empty())
    }
}

/// A keymanager to read: its URL and its token (read from `token_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeymanagerInput {
    pub url: url::Url,
    pub token_file: InputPath,
    pub token: crate::secret::Secret,
}

impl Inputs {
    pub fn any(&self) -> bool {
        self.pubkeys_file.is_some()
            || self.index_list_file.is_some()
            || self.indices_file.is_some()
            || self.input_dir.is_some()
            || self.keystores_dir.is_some()
            || !self.deposit_data_files.is_empty()
            || !self.keymanagers.is_empty()
    }

    /// The same inputs with every path made absolute against the working
    /// directory (not resolved: links stay links). The daemon's file
    /// watcher reports absolute paths, which a relative path never equals.
    pub fn absolute(&self) -> Inputs {
        let abs = |p: &InputPath| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let opt = |p: &Option<InputPath>| p.as_ref().map(abs);
        Inputs {
            pubkeys_file: opt(&self.pubkeys_file),
            index_list_file: opt(&self.index_list_file),
            indices_file: opt(&self.indices_file),
            input_dir: opt(&self.input_dir),
            keystores_dir: opt(&self.keystores_dir),
            deposit_data_files: self.deposit_data_files.iter().map(abs).collect(),
            keymanagers: self.keymanagers.clone(),
            checks: self.checks.clone(),
        }
    }

    /// Whether some input lists pubkeys the beacon node must resolve.
    pub fn needs_beacon(&self) -> bool {
        self.pubkeys_file.is_some()
            || self.index_list_file.is_some()
            || self.keystores_dir.is_some()
            || !self.deposit_data_files.is_empty()
            || !self.keymanagers.is_empty()
    }
}

pub use file::{FileError, MAX_INPUT_BYTES, MAX_KEY_FILE_BYTES};

use std::fmt;
use std::path::{Path, PathBuf};

use crate::domain::{ChainId, Pubkey, ValidatorIndex};

/// What format a source file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// One BLS pubkey per line (`KEYSYNC_PUBKEYS_FILE`).
    Pubkeys,
    /// One validator index per line (`KEYSYNC_INDEX_LIST_FILE`).
    IndexList,
    /// JSON array of `{validator_index, chain_id, validator_key}` (`KEYSYNC_INDICES_FILE`).
    Records,
    /// Any of the above, an EIP-2335 keystore or deposit data, told apart by
    /// content (files in the drop directory).
    Detect,
    /// A deposit data JSON array (`KEYSYNC_DEPOSIT_DATA_FILE`), of the
    /// configured network.
    DepositData,
    /// One file of the keystores directory: a keystore, or skipped.
    Keystore,
    /// The keystores directory as one source (`KEYSYNC_KEYSTORES_DIR`).
    KeystoresDir,
    /// A keymanager's key list (read over HTTP, never from a file).
    Keymanager,
}

/// A record from a records JSON file: needs no beacon lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    pub validator_index: ValidatorIndex,
    pub chain_id: ChainId,
    pub validator_key: Pubkey,
}

/// What one source contributes to the desired set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceContent {
    /// Pubkeys to resolve to indices through the beacon node.
    pub pubkeys: Vec<Pubkey>,
    /// Indices to resolve to pubkeys through the beacon node.
    pub indices: Vec<ValidatorIndex>,
    /// Ready records, no lookup.
    pub records: Vec<Record>,
}

impl SourceContent {
    pub fn len(&self) -> usize {
        self.pubkeys.len() + self.indices.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether resolving this content needs a beacon node.
    pub fn needs_beacon(&self) -> bool {
        !self.pubkeys.is_empty() || !self.indices.is_empty()
    }

    pub fn extend(&mut self, other: &SourceContent) {
        self.pubkeys.extend_from_slice(&other.pubkeys);
        self.indices.extend_from_slice(&other.indices);
        self.records.extend_from_slice(&other.records);
    }

    /// What changed from `old` to `self`, as multisets (a line listed twice
    /// counts twice). Appending, the common case for key tooling, costs a
    /// slice compare; any other edit a hash count of the rest.
    pub fn delta_from(&self, old: &SourceContent) -> Delta {
        let (pubkeys_added, pubkeys_removed) = list_delta(&old.pubkeys, &self.pubkeys);
        let (indices_added, indices_removed) = list_delta(&old.indices, &self.indices);
        let (records_added, records_removed) = list_delta(&old.records, &self.records);
        Delta {
            added: SourceContent {
                pubkeys: pubkeys_added,
                indices: indices_added,
                records: records_added,
            },
            removed: SourceContent {
                pubkeys: pubkeys_removed,
                indices: indices_removed,
                records: records_removed,
            },
        }
    }
}

/// The change of one source between two reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub added: SourceContent,
    pub removed: SourceContent,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// `(added, removed)` from `old` to `new`, counted as multisets.
fn list_delta<T: Clone + Eq + std::hash::Hash>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let common = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[common..], &new[common..]);
    if old.is_empty() || new.is_empty() {
        return (new.to_vec(), old.to_vec());
    }
    let mut count: rustc_hash::FxHashMap<&T, i64> = Default::default();
    for x in new {
        *count.entry(x).or_default() += 1;
    }
    for x in old {
        *count.entry(x).or_default() -= 1;
    }
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for (x, n) in count {
        let to = if n > 0 { &mut added } else { &mut removed };
        to.extend(std::iter::repeat_n(x, n.unsigned_abs() as usize).cloned());
    }
    (added, removed)
}

/// Where in a file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Line(usize),
    Element(usize),
    LineColumn(usize, usize),
    File,
}

/// A source that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file is not a readable regular file within the size cap.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: FileError,
    },
    /// A drop-directory entry that is a directory.
    #[error("{}: cannot read: it is a directory, not a regular file (the drop directory's subdirectories are not read: move its files up, or start its name with '.')", .path.display())]
    Subdirectory { path: PathBuf },
    /// The drop directory cannot be listed (missing, not a directory, …).
    #[error("{}: cannot list the drop directory: {message}", .path.display())]
    Dir { path: PathBuf, message: String },
    /// The drop directory lists no input file: a volume not mounted looks
    /// just like this, so it is not taken as "no validators".
    #[error("{}: the drop directory has no input file (a volume not mounted?); to empty it on purpose, leave a file with a comment line in it, or pass --allow-empty", .path.display())]
    EmptyDir { path: PathBuf },
    /// The keystores directory holds no keystore: a volume not mounted, or
    /// the wrong directory, looks just like this.
    #[error("{}: no EIP-2335 keystore in it (a volume not mounted, or the wrong directory?); to empty it on purpose, pass --allow-empty", .path.display())]
    NoKeystores { path: PathBuf },
    /// No entries and no comment line: whitespace is not intent.
    #[error("{}: has no entries and no comment line (still being written?); to empty a list on purpose, leave a comment line in it (a JSON input: []), or pass --allow-empty", .path.display())]
    Blank { path: PathBuf },
    #[error("{path}{at}: {message}")]
    Parse {
        path: PathBuf,
        at: At,
        message: String,
    },
}

impl SourceError {
    /// The file or directory at fault.
    pub fn path(&self) -> &Path {
        match self {
            SourceError::Read { path, .. }
            | SourceError::Subdirectory { path }
            | SourceError::Dir { path, .. }
            | SourceError::EmptyDir { path }
            | SourceError::NoKeystores { path }
            | SourceError::Blank { path }
            | SourceError::Parse { path, .. } => path,
        }
    }
}

/// Renders a [`Location`] as `:12`, `[3]`, `:4:7` or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At(pub Location);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Location::Line(l) => write!(f, ":{l}"),
            Location::Element(i) => write!(f, "[{i}]"),
            Location::LineColumn(l, c) => write!(f, ":{l}:{c}"),
            Location::File => Ok(()),
        }
    }
}

fn err(path: &Path, at: Location, message: impl Into<String>) -> SourceError {
    SourceError::Parse {
        path: path.to_path_buf(),
        at: At(at),
        message: message.into(),
    }
}

/// Reads and parses one source file, at most [`MAX_INPUT_BYTES`].
pub fn read(kind: SourceKind, path: &Path) -> Result<SourceContent, SourceError> {
    read_capped(kind, path, MAX_INPUT_BYTES)
}

/// Reads one source (a file, or the keystores directory) with `checks`.
pub fn read_checked(
    kind: SourceKind,
    path: &Path,
    checks: &Checks,
) -> Result<SourceContent, SourceError> {
    if kind == SourceKind::KeystoresDir {
        return keystores::read_dir(path, checks);
    }
    parse_checked(kind, path, &read_file(path, MAX_INPUT_BYTES)?, checks)
}

/// A regular file of at most `limit` bytes, or why not (naming it).
fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    file::read_regular(path, limit).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// [`read`] with another size cap.
pub fn read_capped(
    kind: SourceKind,
    path: &Path,
    limit: u64,
) -> Result<SourceContent, SourceError> {
    parse(kind, path, &read_file(path, limit)?)
}

/// Reads a drop-directory entry as [`read_checked`] does, a subdirectory
/// named as such.
pub fn read_dropped_checked(path: &Path, checks: &Checks) -> Result<SourceContent, SourceError> {
    read_checked(SourceKind::Detect, path, checks).map_err(|e| match e {
        SourceError::Read {
            path,
            source: FileError::NotRegular(file::FileType::Directory),
        } => SourceError::Subdirectory { path },
        other => other,
    })
}

/// Parses the bytes of a source; `path` only names it in errors. A text
/// with no entries and no comment line (empty, or whitespace only) is
/// [`SourceError::Blank`].
pub fn parse(kind: SourceKind, path: &Path, bytes: &[u8]) -> Result<SourceContent, SourceError> {
    parse_checked(kind, path, bytes, &Checks::default())
}

/// [`parse`], then `checks`: deposit data of `checks.network` only, and
/// with `verify_pubkeys` every pubkey a valid BLS12-381 G1 point (an error
/// names the line or element of the first that is not).
pub fn parse_checked(
    kind: SourceKind,
    path: &Path,
    bytes: &[u8],
    checks: &Checks,
) -> Result<SourceContent, SourceError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        err(path, Location::Line(line), "not UTF-8 text")
    })?;
    if text.trim().is_empty() {
        return Err(SourceError::Blank {
            path: path.to_path_buf(),
        });
    }
    let content = match kind {
        SourceKind::Pubkeys => text::parse_pubkeys(path, text),
        SourceKind::IndexList => text::parse_index_list(path, text),
        SourceKind::Records => json::parse_records(path, text),
        SourceKind::Detect => parse_detect(path, text, checks.network()),
        SourceKind::DepositData => json::parse_deposits(path, text, checks.network()),
        SourceKind::Keystore => json::parse_keystore(path, text),
        SourceKind::KeystoresDir | SourceKind::Keymanager => Err(err(
            path,
            Location::File,
            "is not read as a file (a bug: please report it)",
        )),
    }?;
    if checks.verify_pubkeys {
        verify_points(path, text, &content)?;
    }
    Ok(content)
}

/// The first pubkey of `content` that is not a valid BLS12-381 G1 point,
/// named by its line (text lists) or element (JSON arrays).
fn verify_points(path: &Path, text: &str, content: &SourceContent) -> Result<(), SourceError> {
    let json = text.trim_start().starts_with(['[', '{']);
    let at = |i: usize| {
        if !json {
            let line = text::significant_lines(text).nth(i).map_or(0, |(l, _)| l);
            Location::Line(line)
        } else if text.trim_start().starts_with('{') {
            Location::File
        } else {
            Location::Element(i)
        }
    };
    match first_invalid(content) {
        Some((i, e)) => Err(err(path, at(i), e)),
        None => Ok(()),
    }
}

/// The first pubkey of `content` (pubkeys, then records' keys) that is not
/// a valid BLS12-381 G1 point: its position and what to say of it.
fn first_invalid(content: &SourceContent) -> Option<(usize, String)> {
    let keys = content
        .pubkeys
        .iter()
        .chain(content.records.iter().map(|r| &r.validator_key));
    keys.enumerate().find_map(|(i, pk)| {
        crate::bls::is_valid_pubkey(&pk.0).err().map(|why| {
            (
                i,
                format!("{pk} is not a BLS pubkey: {why} (--verify-pubkeys)"),
            )
        })
    })
}

/// `--verify-pubkeys` for what a change added to an input (the daemon:
/// a million-key file is not checked again for one appended line).
pub fn verify_added(path: &Path, added: &SourceContent) -> Result<(), SourceError> {
    match first_invalid(added) {
        Some((_, e)) => Err(err(path, Location::File, e)),
        None => Ok(()),
    }
}

/// Drop-directory files: JSON (records, deposit data, keystore) or a text
/// list (pubkeys or indices), told apart by content.
fn parse_detect(
    path: &Path,
    text: &str,
    network: Option<&str>,
) -> Result<SourceContent, SourceError> {
    match text.trim_start().chars().next() {
        None => Ok(SourceContent::default()),
        Some('[') | Some('{') => json::parse_detect(path, text, network),
        Some(_) => match text::significant_lines(text).next() {
            None => Ok(SourceContent::default()),
            Some((_, s)) if s.bytes().all(|b| b.is_ascii_digit()) => {
                text::parse_index_list(path, text)
            }
            Some(_) => text::parse_pubkeys(path, text),
        },
    }
}

/// Whether a drop-directory file name is a temporary or hidden file that is
/// not (yet) an input: `.name`, `name~`, `*.swp`, `*.tmp`, `*.part`.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".swp", ".swx", ".tmp", ".part", ".partial"]
            .iter()
            .any(|s| name.ends_with(s))
}

/// The inputs of a drop directory, sorted by name: every entry but the
/// ignored names, whatever it is. An entry that is not a readable regular
/// file (a subdirectory, a dangling link) is listed, so that reading it
/// fails loudly instead of its keys going missing. A directory that is
/// missing or not a directory is an error; an empty list is the caller's
/// to judge ([`SourceError::EmptyDir`]).
pub fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let fail = |message: String| SourceError::Dir {
        path: dir.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("it is not a directory".into()));
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_ignored_name(&name) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The configured input files with their formats, and the keystores
/// directory (the drop directory aside).
pub fn configured(inputs: &Inputs) -> impl Iterator<Item = (SourceKind, &PathBuf)> {
    [
        (SourceKind::Pubkeys, &inputs.pubkeys_file),
        (SourceKind::IndexList, &inputs.index_list_file),
        (SourceKind::Records, &inputs.indices_file),
        (SourceKind::KeystoresDir, &inputs.keystores_dir),
    ]
    .into_iter()
    .filter_map(|(kind, path)| path.as_ref().map(|p| (kind, p)))
    .chain(
        inputs
            .deposit_data_files
            .iter()
            .map(|p| (SourceKind::DepositData, p)),
    )
}

/// Every configured input, read strictly (one-shot commands): the first
/// error fails the run. A blank file and a drop directory with no input
/// file are errors unless `allow_empty` (`--allow-empty`) says emptying is
/// meant; then they contribute nothing.
pub fn read_all(inputs: &Inputs, allow_empty: bool) -> Result<SourceContent, SourceError> {
    let mut all = SourceContent::default();
    for (kind, path) in configured(inputs) {
        all.extend(&read_strict(kind, path, &inputs.checks, allow_empty)?);
    }
    if let Some(dir) = &inputs.input_dir {
        all.extend(&read_drop_dir(dir, &inputs.checks, allow_empty)?);
    }
    Ok(all)
}

/// One configured source, read strictly (one-shot commands, doctor): a
/// source with no entries is an error unless `allow_empty`.
pub fn read_strict(
    kind: SourceKind,
    path: &Path,
    checks: &Checks,
    allow_empty: bool,
) -> Result<SourceContent, SourceError> {
    blank_ok(read_checked(kind, path, checks), allow_empty)
}

/// The drop directory, read strictly: every file, and a directory with no
/// input file is an error unless `allow_empty`.
pub fn read_drop_dir(
    dir: &Path,
    checks: &Checks,
    allow_empty: bool,
) -> Result<SourceContent, SourceError> {
    let files = dir_files(dir)?;
    if files.is_empty() {
        if !allow_empty {
            return Err(SourceError::EmptyDir {
                path: dir.to_path_buf(),
            });
        }
        tracing::warn!(dir = %dir.display(), "the drop directory has no input file (--allow-empty)");
    }
    let mut all = SourceContent::default();
    for p in files {
        all.extend(&blank_ok(read_dropped_checked(&p, checks), allow_empty)?);
    }
    Ok(all)
}

/// With `allow_empty`, a source with no entries contributes nothing.
fn blank_ok(
    r: Result<SourceContent, SourceError>,
    allow_empty: bool,
) -> Result<SourceContent, SourceError> {
    match r {
        Err(SourceError::Blank { path } | SourceError::NoKeystores { path }) if allow_empty => {
            tracing::warn!(path = %path.display(), "input has no entries (--allow-empty)");
            Ok(SourceContent::default())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
