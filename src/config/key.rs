//! The API key: from `--api-key` or from the file `--api-key-file` names
//! (the one given with the higher precedence; both at the same level is an
//! error), read with the limits inputs have, and checked for its shape.
//!
//! Owns reading the key file, at start and when the daemon re-reads a
//! rotated one. No error ever contains the key.

use std::path::{Path, PathBuf};

use super::layers::{env, get, spec, Layers, Origin};
use super::{cfg_err, ConfigError, KeymanagerInput};
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

/// The keymanagers: `--keymanager-url` with `--keymanager-token-file`,
/// then each `[[keymanager]]` table of the config file. Each URL carries
/// its token, so it is https or loopback; the token is read now, from its
/// file only.
pub(super) fn keymanagers(l: &Layers<'_>) -> Result<Vec<KeymanagerInput>, ConfigError> {
    let mut out = Vec::new();
    let url = get!(l, common.keymanager_url)?;
    let token_file = get!(l, common.keymanager_token_file)?;
    match (url, token_file) {
        (None, None) => {}
        (Some((_, origin)), None) => {
            return Err(cfg_err(
                origin,
                format!(
                "needs {} too: the keymanager API token (the validator client's api-token file)",
                env("keymanager_token_file")
            ),
            ))
        }
        (None, Some((_, origin))) => {
            return Err(cfg_err(
                origin,
                format!("is set without {}", env("keymanager_url")),
            ))
        }
        // A pair: a URL from one layer with the token of another would send
        // one keymanager's token to another keymanager.
        (Some((_, uo)), Some((_, fo))) if uo.rank() != fo.rank() => {
            return Err(cfg_err(
                format!("{uo} and {fo}"),
                "set the keymanager URL and its token file together, at the same level (both flags, both variables or both in the file): from different levels, one keymanager's token could go to another",
            ))
        }
        (Some((url, uo)), Some((file, fo))) => out.push(keymanager(&url, &uo, file, &fo)?),
    }
    if let Some((path, tables)) = l.keymanager_tables() {
        for (i, t) in tables.iter().enumerate() {
            let origin = Origin::File(path.to_path_buf(), "keymanager");
            let at =
                |what: &str| cfg_err(&origin, format!("[[keymanager]] number {}: {what}", i + 1));
            let Some(file) = t.token_file.clone().filter(|f| !f.as_os_str().is_empty()) else {
                return Err(at("needs token_file (the keymanager API token file)"));
            };
            if t.url.trim().is_empty() {
                return Err(at("needs url"));
            }
            out.push(keymanager(&t.url, &origin, file, &origin)?);
        }
    }
    // One keymanager listed twice would be read twice: refuse it.
    for (i, k) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.url == k.url) {
            return Err(cfg_err(
                "keymanager",
                format!("{} is configured twice", k.url),
            ));
        }
    }
    Ok(out)
}

fn keymanager(
    url: &str,
    url_origin: &Origin,
    token_file: PathBuf,
    file_origin: &Origin,
) -> Result<KeymanagerInput, ConfigError> {
    let url = super::urls::secret_url(url, url_origin)?;
    let token = read_token_file(&token_file, file_origin)?;
    Ok(KeymanagerInput {
        url,
        token_file,
        token,
    })
}

/// Reads a keymanager token file again (the daemon, when it changed: a
/// regenerated `api-token.txt`), with every check of the start.
pub fn reread_token_file(path: &Path) -> Result<Secret, ConfigError> {
    read_token_file(path, &Origin::Flag(&spec("keymanager_token_file").flag))
}

fn read_token_file(path: &Path, origin: &Origin) -> Result<Secret, ConfigError> {
    let token = read_secret_file(path, origin, "keymanager token file")?;
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(cfg_err(
            origin,
            format!(
                "the keymanager token file {} holds whitespace or control characters inside the token",
                path.display()
            ),
        ));
    }
    Ok(Secret::new(token))
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
    read_secret_file(path, origin, "API key file")
}

/// A secret's file, named `what` in errors; its content trimmed.
fn read_secret_file(path: &Path, origin: &Origin, what: &str) -> Result<String, ConfigError> {
    use crate::inputs::file::{read_regular, MAX_KEY_FILE_BYTES};
    let bytes = read_regular(path, MAX_KEY_FILE_BYTES).map_err(|e| {
        // An I/O failure by its kind only ("permission denied"), as before.
        let why = match e.io_kind() {
            Some(kind) => kind.to_string(),
            None => e.to_string(),
        };
        cfg_err(
            origin,
            format!("cannot read the {what} {}: {why}", path.display()),
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        cfg_err(
            origin,
            format!("the {what} {} is not UTF-8 text", path.display()),
        )
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(cfg_err(
            origin,
            format!("the {what} {} is empty", path.display()),
        ));
    }
    Ok(key.to_string())
}
