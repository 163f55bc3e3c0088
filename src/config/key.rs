//! The API key: from `--api-key` or from the file `--api-key-file` names
//! (the one given with the higher precedence; both at the same level is an
//! error), read with the limits inputs have, and checked for its shape.
//!
//! Owns reading the key file, at start and when the daemon re-reads a
//! rotated one. No error ever contains the key.

use std::path::{Path, PathBuf};

use super::layers::{env, get, spec, Layers, Origin};
use super::{cfg_err, ConfigError};
use crate::secret::Secret;

/// The API key, and the file it came from, if it did.
pub(super) fn resolve(l: &Layers<'_>) -> Result<(Secret, Option<PathBuf>), ConfigError> {
    let key = get!(l, common.api_key)?;
    let file = get!(l, common.api_key_file)?;
    let (value, origin) = match (key, file) {
        (None, None) => {
            return Err(cfg_err(
                env("api_key"),
                format!(
                    "is required (or {}): the ovi_live_… key from the Optimum partners dashboard",
                    env("api_key_file")
                ),
            ))
        }
        (Some((_, ko)), Some((_, fo))) if ko.rank() == fo.rank() => {
            return Err(cfg_err(
                format!("{ko} and {fo}"),
                "set one of them, not both",
            ));
        }
        (Some((k, ko)), Some((_, fo))) if ko.rank() > fo.rank() => (k, ko),
        (Some(_), Some((p, fo))) | (None, Some((p, fo))) => {
            let key = read_key_file(&p, &fo)?;
            return Ok((check_key(key, &fo)?, Some(p)));
        }
        (Some((k, ko)), None) => (k, ko),
    };
    Ok((check_key(value, &origin)?, None))
}

/// Reads the API key file again (the daemon, when it changed: a rotated
/// Kubernetes Secret or systemd credential), with every check of the start.
pub fn reread_key_file(path: &Path) -> Result<Secret, ConfigError> {
    let origin = Origin::Flag(&spec("api_key_file").flag);
    check_key(read_key_file(path, &origin)?, &origin)
}

/// The checks every API key passes, wherever it came from.
fn check_key(value: String, origin: &Origin) -> Result<Secret, ConfigError> {
    let value = value.trim().to_string();
    if !value.starts_with("ovi_") {
        return Err(cfg_err(
            origin,
            "the API key must start with 'ovi_' (the operator-portal key shape, the only credential the console API accepts)",
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(cfg_err(
            origin,
            "the API key contains whitespace or control characters",
        ));
    }
    Ok(Secret::new(value))
}

/// The key file: a regular file (links followed) of at most 64 KiB, as
/// inputs are read: a FIFO, directory or device is an error naming the
/// file, and never blocks or reads without bound.
fn read_key_file(path: &Path, origin: &Origin) -> Result<String, ConfigError> {
    use crate::inputs::file::{read_regular, MAX_KEY_FILE_BYTES};
    let bytes = read_regular(path, MAX_KEY_FILE_BYTES).map_err(|e| {
        // An I/O failure by its kind only ("permission denied"), as before.
        let why = match e.io_kind() {
            Some(kind) => kind.to_string(),
            None => e.to_string(),
        };
        cfg_err(
            origin,
            format!("cannot read the API key file {}: {why}", path.display()),
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        cfg_err(
            origin,
            format!("the API key file {} is not UTF-8 text", path.display()),
        )
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(cfg_err(
            origin,
            format!("the API key file {} is empty", path.display()),
        ));
    }
    Ok(key.to_string())
}
