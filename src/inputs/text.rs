//! Text lists: one BLS pubkey or one validator index per line, `#` comments.
//!
//! Owns what a line of a list means and the errors that name the line.
//! Memory: a pubkey line (at least 96 bytes) becomes 48; an index line
//! becomes 8 bytes, and an index below [`DEDUP_BELOW`] is kept once per
//! file, so short lines repeated (`1\n1\n…`) cannot cost 4 times their
//! bytes.

use std::path::Path;

use super::{err, At, Location, SourceContent, SourceError};
use crate::domain::{decimal, Pubkey, ValidatorIndex};

/// The meaningful lines of a text list: `(line number, content)`, with blank
/// lines and `#` comments (whole-line or trailing) removed.
pub(super) fn significant_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let content = raw.split('#').next().unwrap_or("").trim();
        (!content.is_empty()).then_some((i + 1, content))
    })
}

/// Lists at least this long are parsed in two halves at once.
pub(super) const PARALLEL_PARSE: usize = 1 << 20;

pub(super) fn parse_pubkeys(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
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
            .map_err(|e| err(path, Location::Line(line), format!("{e}: {}", shown(s))))?;
        out.push(pk);
    }
    Ok(out)
}

/// Plain ASCII decimal digits only: `4_2`, `+5`, `-1`, `1.0` and non-ASCII
/// digits are errors, so a typo never becomes a plausible index.
fn parse_index(s: &str) -> Result<ValidatorIndex, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        decimal(s).ok_or_else(|| format!("validator index out of range: {}", shown(s)))
    } else {
        Err(format!(
            "not a validator index (plain decimal digits only): {}",
            shown(s)
        ))
    }
}

/// Lines longer than this are quoted cut (a bad line of a megabyte must
/// not make a megabyte of error, logged at every re-read).
const SHOWN_MAX: usize = 128;

/// A line as an error quotes it: whole, or its first 64 characters and its
/// length, as JSON inputs quote a long value.
fn shown(s: &str) -> String {
    if s.len() <= SHOWN_MAX {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(64).collect();
    format!("{cut:?}… ({} bytes)", s.len())
}

/// Indices below this are kept once per file (a 125 KiB bitmap): a line of
/// any index at or above it takes at least 8 bytes (`1000000\n`), as much as
/// the index it becomes. Repeats change nothing downstream: the desired set
/// is a set, and a file's own repeats never change what it contributes.
pub(super) const DEDUP_BELOW: ValidatorIndex = 1_000_000;

pub(super) fn parse_index_list(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    let mut out = SourceContent::default();
    // A line of an index not kept once is at least 8 bytes: one allocation
    // of at most the text's size, never grown by doubling (2x transiently).
    out.indices.reserve(text.len() / 8);
    let mut seen: Vec<u64> = Vec::new();
    for (line, s) in significant_lines(text) {
        let i = parse_index(s).map_err(|m| err(path, Location::Line(line), m))?;
        if i < DEDUP_BELOW {
            if seen.is_empty() {
                seen = vec![0; DEDUP_BELOW.div_ceil(64) as usize];
            }
            let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
            if seen[word] & bit != 0 {
                continue;
            }
            seen[word] |= bit;
        }
        out.indices.push(i);
    }
    // Held for as long as the daemon runs: no unused half.
    if out.indices.capacity() > out.indices.len() + out.indices.len() / 4 {
        out.indices.shrink_to_fit();
    }
    Ok(out)
}
