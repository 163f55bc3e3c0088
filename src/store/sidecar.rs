//! The generation file next to the store: what the last successful flush
//! made durable, kept outside sled so that a store rolled back (truncated,
//! damaged, restored from an older copy, deleted) can be told from a
//! current one.
//!
//! `<data dir>/keysync.generation`, a few lines of text:
//!
//! ```text
//! keysync store generation v1
//! store_id 5f0c6a1d2b3e4f70
//! generation 42
//! digest 9a1b2c3d4e5f6071
//! check 0123456789abcdef
//! ```
//!
//! `check` is a hash of the lines above it. The file is replaced
//! atomically: written to a temporary file, synced, renamed over the old
//! one, and the directory synced, so it is always one whole version.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::codec::chunk_hash;

pub const FILE: &str = "keysync.generation";
const TMP: &str = ".keysync.generation.tmp";
const HEADER: &str = "keysync store generation v1";

/// What the last flush made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sidecar {
    /// The store it describes (random, set when the store is created).
    pub store_id: u64,
    /// The store's generation at that flush; 0 claims nothing yet (written
    /// before a new store's first flush).
    pub generation: u64,
    /// The digest of the store's content at that flush.
    pub digest: u64,
}

pub(super) fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn body(s: &Sidecar) -> String {
    format!(
        "{HEADER}\nstore_id {:016x}\ngeneration {}\ndigest {:016x}\n",
        s.store_id, s.generation, s.digest
    )
}

fn encode(s: &Sidecar) -> String {
    let body = body(s);
    format!("{body}check {:016x}\n", chunk_hash(body.as_bytes()))
}

fn decode(text: &str) -> Result<Sidecar, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("not a keysync generation file (unknown header)".into());
    }
    let mut field = |name: &str, hex: bool| -> Result<u64, String> {
        let line = lines.next().unwrap_or_default();
        let value = line
            .strip_prefix(name)
            .and_then(|v| v.strip_prefix(' '))
            .ok_or_else(|| format!("expected `{name}`, found {line:?}"))?;
        if hex {
            u64::from_str_radix(value, 16)
        } else {
            value.parse()
        }
        .map_err(|_| format!("bad `{name}` value {value:?}"))
    };
    let s = Sidecar {
        store_id: field("store_id", true)?,
        generation: field("generation", false)?,
        digest: field("digest", true)?,
    };
    let check = field("check", true)?;
    if lines.next().is_some() {
        return Err("trailing data".into());
    }
    if check != chunk_hash(body(&s).as_bytes()) {
        return Err("its check does not match its content".into());
    }
    Ok(s)
}

/// The generation file in `dir`: `Ok(None)` if there is none, `Err(why)` if
/// it is there but cannot be read or does not check out.
pub(super) fn read(dir: &Path) -> Result<Option<Sidecar>, String> {
    match std::fs::read(path(dir)) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| "not text".to_string())?;
            decode(&text).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the next version of the generation file in `dir` to a temporary
/// file, durably; [`commit`] puts it in place.
pub(super) fn prepare(dir: &Path, s: &Sidecar) -> std::io::Result<()> {
    let mut f = std::fs::File::create(dir.join(TMP))?;
    f.write_all(encode(s).as_bytes())?;
    f.sync_all()
}

/// Replaces the generation file by the prepared one (atomic). Not made
/// durable here: should the rename be lost in a power cut, the previous
/// version stays, which claims an older generation and so accepts the
/// store all the same. Only the very first version must not be lost:
/// [`write`].
pub(super) fn commit(dir: &Path) -> std::io::Result<()> {
    std::fs::rename(dir.join(TMP), path(dir))
}

/// Replaces the generation file in `dir` atomically and durably (the
/// directory too).
pub(super) fn write(dir: &Path, s: &Sidecar) -> std::io::Result<()> {
    prepare(dir, s)?;
    commit(dir)?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_does_not_check_out() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        let s = Sidecar {
            store_id: 0xdead_beef,
            generation: 42,
            digest: u64::MAX,
        };
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(s)));
        assert!(!dir.path().join(TMP).exists());

        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        for bad in [
            text.replace("generation 42", "generation 43"),
            text.replace(HEADER, "something else"),
            text[..text.len() - 2].to_string(),
            String::new(),
            format!("{text}more\n"),
        ] {
            std::fs::write(path(dir.path()), &bad).unwrap();
            assert!(read(dir.path()).is_err(), "accepted {bad:?}");
        }
        std::fs::write(path(dir.path()), [0xff, 0xfe]).unwrap();
        assert!(read(dir.path()).is_err());
    }
}
