//! Input sources: the files that say which validators an operator owns.
//!
//! Owns reading and parsing every input format — pubkeys list, index list,
//! records JSON, and (for the drop directory) EIP-2335 keystores and deposit
//! data — into one [`SourceContent`]. Errors name the file and the line or
//! array element at fault. Does no network I/O and never decides what to do
//! with a broken file: one-shot commands fail, the daemon keeps the last good
//! content.
//!
//! An input is readable or refused (safety invariant 1): it must be a
//! regular file (links followed) of at most [`MAX_INPUT_BYTES`]; anything
//! else — a directory, FIFO, socket or device, a dangling or looping link,
//! a drop directory that is missing or lists nothing — is an error naming
//! the path, never an empty input ([`file`]). A file with no entries and no
//! comment line is [`SourceError::Blank`]: whitespace is not intent. Parsing
//! stays within about the file's own size again ([`text`], [`json`]).

pub mod file;
mod json;
mod text;

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

/// [`read`] with another size cap.
pub fn read_capped(
    kind: SourceKind,
    path: &Path,
    limit: u64,
) -> Result<SourceContent, SourceError> {
    let bytes = file::read_regular(path, limit).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(kind, path, &bytes)
}

/// Reads a drop-directory entry: as [`read`], a subdirectory named as such.
pub fn read_dropped(path: &Path) -> Result<SourceContent, SourceError> {
    read(SourceKind::Detect, path).map_err(|e| match e {
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
    match kind {
        SourceKind::Pubkeys => text::parse_pubkeys(path, text),
        SourceKind::IndexList => text::parse_index_list(path, text),
        SourceKind::Records => json::parse_records(path, text),
        SourceKind::Detect => parse_detect(path, text),
    }
}

/// Drop-directory files: JSON (records, deposit data, keystore) or a text
/// list (pubkeys or indices), told apart by content.
fn parse_detect(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    match text.trim_start().chars().next() {
        None => Ok(SourceContent::default()),
        Some('[') | Some('{') => json::parse_detect(path, text),
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

/// The configured input files with their formats (the drop directory aside).
pub fn configured(
    inputs: &crate::settings::Inputs,
) -> impl Iterator<Item = (SourceKind, &PathBuf)> {
    [
        (SourceKind::Pubkeys, &inputs.pubkeys_file),
        (SourceKind::IndexList, &inputs.index_list_file),
        (SourceKind::Records, &inputs.indices_file),
    ]
    .into_iter()
    .filter_map(|(kind, path)| path.as_ref().map(|p| (kind, p)))
}

/// Every configured input, read strictly (one-shot commands): the first
/// error fails the run. A blank file and a drop directory with no input
/// file are errors unless `allow_empty` (`--allow-empty`) says emptying is
/// meant; then they contribute nothing.
pub fn read_all(
    inputs: &crate::settings::Inputs,
    allow_empty: bool,
) -> Result<SourceContent, SourceError> {
    let blank_ok = |r: Result<SourceContent, SourceError>| match r {
        Err(SourceError::Blank { path }) if allow_empty => {
            tracing::warn!(path = %path.display(), "input file has no entries (--allow-empty)");
            Ok(SourceContent::default())
        }
        other => other,
    };
    let mut all = SourceContent::default();
    for (kind, path) in configured(inputs) {
        all.extend(&blank_ok(read(kind, path))?);
    }
    if let Some(dir) = &inputs.input_dir {
        let files = dir_files(dir)?;
        if files.is_empty() {
            if !allow_empty {
                return Err(SourceError::EmptyDir { path: dir.clone() });
            }
            tracing::warn!(dir = %dir.display(), "the drop directory has no input file (--allow-empty)");
        }
        for p in files {
            all.extend(&blank_ok(read_dropped(&p))?);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

    fn p(kind: SourceKind, text: &str) -> Result<SourceContent, SourceError> {
        parse(kind, Path::new("in.txt"), text.as_bytes())
    }

    #[test]
    fn pubkeys_skip_comments_and_blanks_and_normalise() {
        let text = format!("# header\n\n0x{PK}\n  {}  # trailing\n", PK.to_uppercase());
        let c = p(SourceKind::Pubkeys, &text).unwrap();
        assert_eq!(c.pubkeys.len(), 2);
        assert_eq!(c.pubkeys[0], c.pubkeys[1]);
        assert_eq!(c.pubkeys[0].to_string(), format!("0x{PK}"));
    }

    #[test]
    fn pubkey_error_names_file_and_line() {
        let e = p(SourceKind::Pubkeys, &format!("0x{PK}\n\n0xdeadbeef\n")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("in.txt:3: not a BLS pubkey"), "{msg}");
    }

    #[test]
    fn a_large_list_parsed_in_halves_keeps_order_and_line_numbers() {
        // 20,000 lines of 99 bytes: past the two-halves threshold.
        let lines: Vec<String> = (0..20_000u64)
            .map(|i| format!("0x{:016x}{}", i, &PK[16..]))
            .collect();
        let text = lines.join("\n") + "\n";
        assert!(text.len() >= text::PARALLEL_PARSE);
        let c = p(SourceKind::Pubkeys, &text).unwrap();
        let want: Vec<Pubkey> = lines.iter().map(|l| l.parse().unwrap()).collect();
        assert_eq!(c.pubkeys, want);

        // An error late in the file names its own line; with two, the first.
        let mut bad = lines.clone();
        bad[17_000] = "0xnope".into();
        let e = p(SourceKind::Pubkeys, &(bad.join("\n") + "\n")).unwrap_err();
        assert!(e.to_string().starts_with("in.txt:17001: "), "{e}");
        bad[3] = "0xearly".into();
        let e = p(SourceKind::Pubkeys, &(bad.join("\n") + "\n")).unwrap_err();
        assert!(e.to_string().starts_with("in.txt:4: "), "{e}");
    }

    #[test]
    fn index_list_accepts_plain_digits_only() {
        let c = p(SourceKind::IndexList, "# x\n1\n 42 \n\n007\n").unwrap();
        assert_eq!(c.indices, vec![1, 42, 7]);
        for bad in [
            "4_2",
            "+5",
            "-1",
            "1.0",
            "٣",
            "0x10",
            "1e3",
            "99999999999999999999999",
        ] {
            let e = p(SourceKind::IndexList, &format!("1\n{bad}\n")).unwrap_err();
            assert!(e.to_string().starts_with("in.txt:2: "), "{bad}: {e}");
        }
    }

    #[test]
    fn records_require_integer_index_string_chain_and_pubkey() {
        let good =
            format!(r#"[{{"validator_index": 5, "chain_id": "0x1", "validator_key": "{PK}"}}]"#);
        let c = p(SourceKind::Records, &good).unwrap();
        assert_eq!(c.records[0].validator_index, 5);
        assert_eq!(c.records[0].validator_key.to_string(), format!("0x{PK}"));
        for (bad, want) in [
            ("true", "validator_index must be a non-negative integer"),
            ("1.0", "validator_index must be a non-negative integer"),
            ("\"5\"", "validator_index must be a non-negative integer"),
            ("-1", "validator_index must be a non-negative integer"),
        ] {
            let text = format!(
                r#"[{{"validator_index": 1, "chain_id": "0x1", "validator_key": "{PK}"}}, {{"validator_index": {bad}, "chain_id": "0x1", "validator_key": "{PK}"}}]"#
            );
            let e = p(SourceKind::Records, &text).unwrap_err().to_string();
            assert!(e.starts_with("in.txt[1]: "), "{e}");
            assert!(e.contains(want), "{e}");
        }
        let e = p(SourceKind::Records, r#"{"a": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a JSON array"), "{e}");
        let e = p(SourceKind::Records, "[1,\n 2,,]")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("in.txt:2:"), "{e}");
    }

    #[test]
    fn detect_tells_formats_apart() {
        let keystore = format!(
            r#"{{"crypto": {{}}, "pubkey": "{PK}", "path": "m/12381/3600/0/0/0", "version": 4}}"#
        );
        assert_eq!(p(SourceKind::Detect, &keystore).unwrap().pubkeys.len(), 1);
        let deposit =
            format!(r#"[{{"pubkey": "{PK}", "amount": 32000000000, "network_name": "mainnet"}}]"#);
        assert_eq!(p(SourceKind::Detect, &deposit).unwrap().pubkeys.len(), 1);
        let records =
            format!(r#"[{{"validator_index": 3, "chain_id": "0x1", "validator_key": "{PK}"}}]"#);
        assert_eq!(p(SourceKind::Detect, &records).unwrap().records.len(), 1);
        assert_eq!(
            p(SourceKind::Detect, "# ours\n12\n13\n").unwrap().indices,
            vec![12, 13]
        );
        assert_eq!(
            p(SourceKind::Detect, &format!("0x{PK}\n"))
                .unwrap()
                .pubkeys
                .len(),
            1
        );
        assert!(p(SourceKind::Detect, "# nothing yet\n").unwrap().is_empty());
        assert!(p(SourceKind::Detect, "[]").unwrap().is_empty());
        assert!(p(SourceKind::Detect, "12\n0xzz\n").is_err());
    }

    #[test]
    fn whitespace_is_not_intent_but_a_comment_is() {
        for kind in [
            SourceKind::Pubkeys,
            SourceKind::IndexList,
            SourceKind::Records,
            SourceKind::Detect,
        ] {
            for blank in ["", "\n", " \t\r\n\n", "\u{3000}\n"] {
                let e = p(kind, blank).unwrap_err();
                assert!(
                    matches!(e, SourceError::Blank { .. }),
                    "{kind:?} {blank:?}: {e}"
                );
                assert!(
                    e.to_string()
                        .starts_with("in.txt: has no entries and no comment line"),
                    "{e}"
                );
            }
        }
        for kind in [
            SourceKind::Pubkeys,
            SourceKind::IndexList,
            SourceKind::Detect,
        ] {
            assert!(p(kind, "# emptied on purpose\n").unwrap().is_empty());
            assert!(p(kind, "\n  # x\n\n").unwrap().is_empty());
        }
        assert!(p(SourceKind::Records, "[]").unwrap().is_empty());
    }

    #[test]
    fn an_index_listed_twice_in_a_file_is_kept_once_below_a_million() {
        let c = p(SourceKind::IndexList, "5\n7\n5\n2000000\n2000000\n7\n").unwrap();
        assert_eq!(c.indices, vec![5, 7, 2000000, 2000000]);
        // An error after a repeat still names its line.
        let e = p(SourceKind::IndexList, "5\n5\nx\n").unwrap_err();
        assert!(e.to_string().starts_with("in.txt:3: "), "{e}");
    }

    fn inputs_in(dir: &Path) -> crate::settings::Inputs {
        crate::settings::Inputs {
            input_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn the_drop_directory_lists_what_it_cannot_read_and_refuses_to_be_empty() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(dir.join(".hidden"), "1\n").unwrap();
        std::fs::write(dir.join("x.swp"), "1\n").unwrap();
        let e = read_all(&inputs_in(dir), false).unwrap_err();
        assert!(matches!(e, SourceError::EmptyDir { .. }), "{e}");
        assert!(read_all(&inputs_in(dir), true).unwrap().is_empty());

        std::fs::write(dir.join("a.txt"), "3\n").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("gone"), dir.join("z.json")).unwrap();
        let files = dir_files(dir).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
        assert_eq!(names, ["a.txt", "sub", "z.json"]);
        let e = read_all(&inputs_in(dir), false).unwrap_err();
        assert!(matches!(e, SourceError::Subdirectory { .. }), "{e}");
        std::fs::remove_dir(dir.join("sub")).unwrap();
        let e = read_all(&inputs_in(dir), true).unwrap_err();
        assert!(
            matches!(
                e,
                SourceError::Read {
                    source: FileError::Dangling { .. },
                    ..
                }
            ),
            "{e}"
        );
        std::fs::remove_file(dir.join("z.json")).unwrap();
        assert_eq!(read_all(&inputs_in(dir), false).unwrap().indices, vec![3]);

        let e = read_all(&inputs_in(&dir.join("missing")), true).unwrap_err();
        assert!(matches!(e, SourceError::Dir { .. }), "{e}");
        let e = read_all(&inputs_in(&dir.join("a.txt")), true).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("cannot list the drop directory: it is not a directory"),
            "{e}"
        );
    }

    #[test]
    fn a_blank_file_passes_only_with_allow_empty() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("v.pubkeys");
        std::fs::write(&f, " \n").unwrap();
        let inputs = crate::settings::Inputs {
            pubkeys_file: Some(f),
            ..Default::default()
        };
        assert!(matches!(
            read_all(&inputs, false),
            Err(SourceError::Blank { .. })
        ));
        assert!(read_all(&inputs, true).unwrap().is_empty());
    }

    #[test]
    fn non_utf8_is_an_error_with_a_line() {
        let e = parse(SourceKind::Pubkeys, Path::new("f"), b"a\nb\n\xff\n").unwrap_err();
        assert_eq!(e.to_string(), "f:3: not UTF-8 text");
    }
}
