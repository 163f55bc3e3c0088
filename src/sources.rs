//! Input sources: the files that say which validators an operator owns.
//!
//! Owns parsing of every input format — pubkeys list, index list, records
//! JSON, and (for the drop directory) EIP-2335 keystores and deposit data —
//! into one [`SourceContent`]. Errors name the file and the line or array
//! element at fault. Does no network I/O and never decides what to do with a
//! broken file: one-shot commands fail, the daemon keeps the last good content.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::domain::{decimal, ChainId, Pubkey, ValidatorIndex};

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
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{at}: {message}")]
    Parse {
        path: PathBuf,
        at: At,
        message: String,
    },
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

/// Reads and parses one source file.
pub fn read(kind: SourceKind, path: &Path) -> Result<SourceContent, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(kind, path, &bytes)
}

/// Parses the bytes of a source; `path` only names it in errors.
pub fn parse(kind: SourceKind, path: &Path, bytes: &[u8]) -> Result<SourceContent, SourceError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        err(path, Location::Line(line), "not UTF-8 text")
    })?;
    match kind {
        SourceKind::Pubkeys => parse_pubkeys(path, text),
        SourceKind::IndexList => parse_index_list(path, text),
        SourceKind::Records => parse_records(path, text),
        SourceKind::Detect => parse_detect(path, text),
    }
}

/// The meaningful lines of a text list: `(line number, content)`, with blank
/// lines and `#` comments (whole-line or trailing) removed.
fn significant_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let content = raw.split('#').next().unwrap_or("").trim();
        (!content.is_empty()).then_some((i + 1, content))
    })
}

/// Lists at least this long are parsed in two halves at once.
const PARALLEL_PARSE: usize = 1 << 20;

fn parse_pubkeys(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    let pubkeys = if text.len() >= PARALLEL_PARSE && two_cores {
        // Cut after a newline (an ASCII byte, so a char boundary) near the middle.
        let mid = text.len() / 2;
        let cut = text.as_bytes()[mid..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |at| mid + at + 1);
        let (first, second) = text.split_at(cut);
        let (a, b) = std::thread::scope(|s| {
            let b = s.spawn(|| pubkey_lines(path, second));
            (pubkey_lines(path, first), b.join())
        });
        // A panic in the helper thread is a bug here, not bad input: pass it on.
        let b = b.unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The first error in file order wins; the second half's lines are
        // counted from the cut.
        let mut pubkeys = a?;
        pubkeys.extend(b.map_err(|e| match e {
            SourceError::Parse {
                path,
                at: At(Location::Line(line)),
                message,
            } => {
                let before = first.bytes().filter(|b| *b == b'\n').count();
                SourceError::Parse {
                    path,
                    at: At(Location::Line(before + line)),
                    message,
                }
            }
            other => other,
        })?);
        pubkeys
    } else {
        pubkey_lines(path, text)?
    };
    Ok(SourceContent {
        pubkeys,
        ..Default::default()
    })
}

/// The pubkeys of the lines of `text`.
fn pubkey_lines(path: &Path, text: &str) -> Result<Vec<Pubkey>, SourceError> {
    // One line is 96 to 98 characters and a newline: one allocation.
    let mut out = Vec::with_capacity(text.len() / 97);
    for (line, s) in significant_lines(text) {
        let pk = s
            .parse::<Pubkey>()
            .map_err(|e| err(path, Location::Line(line), format!("{e}: {s:?}")))?;
        out.push(pk);
    }
    Ok(out)
}

/// Plain ASCII decimal digits only: `4_2`, `+5`, `-1`, `1.0` and non-ASCII
/// digits are errors, so a typo never becomes a plausible index.
fn parse_index(s: &str) -> Result<ValidatorIndex, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        decimal(s).ok_or_else(|| format!("validator index out of range: {s:?}"))
    } else {
        Err(format!(
            "not a validator index (plain decimal digits only): {s:?}"
        ))
    }
}

fn parse_index_list(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    let mut out = SourceContent::default();
    for (line, s) in significant_lines(text) {
        out.indices
            .push(parse_index(s).map_err(|m| err(path, Location::Line(line), m))?);
    }
    Ok(out)
}

fn parse_json(path: &Path, text: &str) -> Result<Value, SourceError> {
    serde_json::from_str(text).map_err(|e| {
        err(
            path,
            Location::LineColumn(e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    })
}

fn parse_records(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    let value = parse_json(path, text)?;
    let Value::Array(rows) = value else {
        return Err(err(
            path,
            Location::File,
            "must be a JSON array of validator records",
        ));
    };
    records_from(path, &rows)
}

fn records_from(path: &Path, rows: &[Value]) -> Result<SourceContent, SourceError> {
    let mut out = SourceContent::default();
    for (i, row) in rows.iter().enumerate() {
        let at = || Location::Element(i);
        let Value::Object(obj) = row else {
            return Err(err(path, at(), "is not an object"));
        };
        // A JSON integer only: a bool, a float (even 1.0), a string or a
        // negative number is an error, never coerced into an index.
        let validator_index = match obj.get("validator_index") {
            Some(Value::Number(n)) if n.is_u64() => n.as_u64().unwrap_or_default(),
            Some(other) => {
                return Err(err(
                    path,
                    at(),
                    format!("validator_index must be a non-negative integer, got {other}"),
                ))
            }
            None => return Err(err(path, at(), "validator_index is missing")),
        };
        let chain_id = match obj.get("chain_id") {
            Some(Value::String(s)) if !s.trim().is_empty() => ChainId::new(s),
            Some(other) => {
                return Err(err(
                    path,
                    at(),
                    format!("chain_id must be a non-empty string such as \"0x1\", got {other}"),
                ))
            }
            None => return Err(err(path, at(), "chain_id is missing")),
        };
        let validator_key = match obj.get("validator_key") {
            Some(Value::String(s)) => s
                .parse::<Pubkey>()
                .map_err(|e| err(path, at(), format!("validator_key: {e}")))?,
            Some(other) => {
                return Err(err(
                    path,
                    at(),
                    format!("validator_key must be a hex string, got {other}"),
                ))
            }
            None => return Err(err(path, at(), "validator_key is missing")),
        };
        out.records.push(Record {
            validator_index,
            chain_id,
            validator_key,
        });
    }
    Ok(out)
}

/// Drop-directory files: JSON (records, deposit data, keystore) or a text
/// list (pubkeys or indices), told apart by content.
fn parse_detect(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    match text.trim_start().chars().next() {
        None => Ok(SourceContent::default()),
        Some('[') | Some('{') => {
            let value = parse_json(path, text)?;
            match value {
                // EIP-2335 keystore: the pubkey is readable without the password.
                Value::Object(obj) => match obj.get("pubkey") {
                    Some(Value::String(s)) => {
                        let pk = s.parse::<Pubkey>().map_err(|e| {
                            err(path, Location::File, format!("keystore pubkey: {e}"))
                        })?;
                        Ok(SourceContent {
                            pubkeys: vec![pk],
                            ..Default::default()
                        })
                    }
                    _ => Err(err(
                        path,
                        Location::File,
                        "JSON object without a \"pubkey\": not an EIP-2335 keystore",
                    )),
                },
                Value::Array(rows) => match rows.first() {
                    None => Ok(SourceContent::default()),
                    Some(Value::Object(o)) if o.contains_key("validator_index") => {
                        records_from(path, &rows)
                    }
                    Some(Value::Object(o)) if o.contains_key("pubkey") => {
                        deposit_data_from(path, &rows)
                    }
                    Some(_) => Err(err(
                        path,
                        Location::Element(0),
                        "neither a validator record nor a deposit data entry",
                    )),
                },
                _ => Err(err(path, Location::File, "unrecognised JSON input")),
            }
        }
        Some(_) => {
            let first = significant_lines(text).next();
            match first {
                None => Ok(SourceContent::default()),
                Some((_, s)) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    parse_index_list(path, text)
                }
                Some(_) => parse_pubkeys(path, text),
            }
        }
    }
}

fn deposit_data_from(path: &Path, rows: &[Value]) -> Result<SourceContent, SourceError> {
    let mut out = SourceContent::default();
    for (i, row) in rows.iter().enumerate() {
        let pk = row
            .get("pubkey")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err(
                    path,
                    Location::Element(i),
                    "deposit data entry without a \"pubkey\"",
                )
            })?
            .parse::<Pubkey>()
            .map_err(|e| err(path, Location::Element(i), format!("pubkey: {e}")))?;
        out.pubkeys.push(pk);
    }
    Ok(out)
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

/// The input files of a drop directory, sorted by name.
pub fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let io = |source| SourceError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ignored_name(&name) {
            continue;
        }
        if entry.file_type().map_err(io)?.is_file()
            || std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        {
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
/// error fails the run.
pub fn read_all(inputs: &crate::settings::Inputs) -> Result<SourceContent, SourceError> {
    let mut all = SourceContent::default();
    for (kind, path) in configured(inputs) {
        all.extend(&read(kind, path)?);
    }
    if let Some(dir) = &inputs.input_dir {
        for p in dir_files(dir)? {
            all.extend(&read(SourceKind::Detect, &p)?);
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
        assert!(text.len() >= PARALLEL_PARSE);
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
        assert!(p(SourceKind::Detect, "").unwrap().is_empty());
        assert!(p(SourceKind::Detect, "12\n0xzz\n").is_err());
    }

    #[test]
    fn non_utf8_is_an_error_with_a_line() {
        let e = parse(SourceKind::Pubkeys, Path::new("f"), b"a\nb\n\xff\n").unwrap_err();
        assert_eq!(e.to_string(), "f:3: not UTF-8 text");
    }
}
