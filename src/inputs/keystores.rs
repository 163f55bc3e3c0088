//! The keystores directory (`--keystores-dir`): the EIP-2335 keystores a
//! validator client loads, as one source.
//!
//! Owns the walk of the directory as clients lay it out: flat (Teku's
//! `keys/`, staking-deposit-cli's `validator_keys/`) or one subdirectory
//! per validator (Lighthouse's and Nimbus's `validators/0x…/`, Lodestar's
//! `keystores/0x…/`), so files at depth one and two are read. A `*.json`
//! file is a keystore when it is an object with `crypto` and `version`
//! (and then it must have a valid `pubkey`); any other JSON (Lighthouse's
//! `validator_key_cache.json`) and every other file (passwords, lock
//! files, slashing databases) are skipped with a debug line. No password is ever read: the pubkey sits beside the
//! encrypted secret.
//!
//! A `*.json` that is not JSON (a keystore being written) or whose pubkey
//! is malformed is an error naming it: the whole directory's last good
//! content then stands in the daemon, and one-shot commands fail. A
//! directory with no keystore at all is [`SourceError::NoKeystores`]
//! (a volume not mounted looks like that), never "no validators".

use std::path::{Path, PathBuf};

use super::{is_ignored_name, Checks, SourceContent, SourceError, SourceKind};

/// The largest keystore read (real ones are about 1 KB).
pub const KEYSTORE_MAX_BYTES: u64 = 1 << 20;

/// Every keystore's pubkey in `dir` (depth one and two), in path order.
pub fn read_dir(dir: &Path, checks: &Checks) -> Result<SourceContent, SourceError> {
    let mut files = Vec::new();
    list(dir, 0, &mut files)?;
    files.sort();
    let mut out = SourceContent::default();
    let mut keystores = 0usize;
    for path in files {
        let bytes = super::read_file(&path, KEYSTORE_MAX_BYTES)?;
        // A blank member is a keystore being written: an error of the
        // directory, never "this source has no entries" (--allow-empty
        // waives only a directory with no keystore at all).
        let content = super::parse_checked(SourceKind::Keystore, &path, &bytes, checks)
            .map_err(|e| match e {
                SourceError::Blank { path } => super::err(
                    &path,
                    super::Location::File,
                    "empty (a keystore being written?); the directory's last good content stands in the daemon",
                ),
                other => other,
            })?;
        if content.is_empty() {
            tracing::debug!(path = %path.display(), "not an EIP-2335 keystore (no \"crypto\" and \"version\"): skipped");
            continue;
        }
        keystores += 1;
        out.extend(&content);
    }
    if keystores == 0 {
        return Err(SourceError::NoKeystores {
            path: dir.to_path_buf(),
        });
    }
    Ok(out)
}

/// The `*.json` files under `dir`, down to depth two.
fn list(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let fail = |message: String| {
        super::err(
            dir,
            super::Location::File,
            format!("cannot list the keystores directory: {message}"),
        )
    };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_ignored_name(&name) {
            continue;
        }
        // Links followed: a dangling one is an error when it names a keystore.
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        if is_dir {
            if depth == 0 {
                list(&path, depth + 1, out)?;
            } else {
                tracing::debug!(path = %path.display(), "keystores directory: deeper directory skipped");
            }
        } else if name.ends_with(".json") {
            out.push(path);
        } else {
            tracing::debug!(path = %path.display(), "keystores directory: not a .json file, skipped");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    const PK2: &str = "b89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b";

    fn keystore(pk: &str) -> String {
        format!(
            r#"{{"crypto": {{"kdf": {{}}, "checksum": {{}}, "cipher": {{}}}}, "description": "", "pubkey": "{pk}", "path": "m/12381/3600/0/0/0", "uuid": "00000000-0000-0000-0000-000000000000", "version": 4}}"#
        )
    }

    #[test]
    fn flat_and_per_validator_layouts_read_keystores_and_skip_the_rest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("keystore-m_12381_3600_0_0_0-1.json"),
            keystore(PK),
        )
        .unwrap();
        let sub = d.path().join(format!("0x{PK2}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("voting-keystore.json"), keystore(PK2)).unwrap();
        std::fs::write(sub.join("voting-keystore.json.lock"), "").unwrap();
        std::fs::write(
            d.path().join("validator_key_cache.json"),
            r#"{"uuid": "x", "pubkeys": []}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("validator_definitions.yml"), "---\n").unwrap();
        std::fs::write(
            d.path().join("deposit_data-1.json"),
            format!(r#"[{{"pubkey": "{PK}"}}]"#),
        )
        .unwrap();
        let got = read_dir(d.path(), &Checks::default()).unwrap();
        let want: Vec<String> = [PK, PK2].iter().map(|p| format!("0x{p}")).collect();
        let mut got: Vec<String> = got.pubkeys.iter().map(|p| p.to_string()).collect();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_directory_without_keystores_is_an_error_not_no_validators() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("notes.txt"), "hello").unwrap();
        let e = read_dir(d.path(), &Checks::default()).unwrap_err();
        assert!(matches!(e, SourceError::NoKeystores { .. }), "{e}");
        assert!(e.to_string().contains("no EIP-2335 keystore"), "{e}");
    }

    #[test]
    fn a_keystore_being_written_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.json"), keystore(PK)).unwrap();
        std::fs::write(d.path().join("b.json"), &keystore(PK2)[..40]).unwrap();
        let e = read_dir(d.path(), &Checks::default()).unwrap_err();
        assert!(e.to_string().contains("b.json"), "{e}");
    }

    #[test]
    fn a_blank_keystore_fails_the_directory_even_with_allow_empty() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.json"), keystore(PK)).unwrap();
        let sub = d.path().join(format!("0x{PK2}"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("voting-keystore.json"), "").unwrap();
        let e = read_dir(d.path(), &Checks::default()).unwrap_err();
        assert!(matches!(e, SourceError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("voting-keystore.json"), "{e}");
        let inputs = super::super::Inputs {
            keystores_dir: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        assert!(
            super::super::read_all(&inputs, true).is_err(),
            "--allow-empty does not drop the directory"
        );
    }

    #[test]
    fn lighthouses_key_cache_is_not_a_keystore() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.json"), keystore(PK)).unwrap();
        // Lighthouse's validator_key_cache.json: encrypted, but no pubkey.
        std::fs::write(
            d.path().join("validator_key_cache.json"),
            r#"{"crypto": {"kdf": {"function": "pbkdf2", "params": {}, "message": ""}, "checksum": {}, "cipher": {}}, "uuids": ["0b4e1a2c-0000-4000-8000-000000000000"]}"#,
        )
        .unwrap();
        let got = read_dir(d.path(), &Checks::default()).unwrap();
        assert_eq!(got.pubkeys.len(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let e = read_dir(Path::new("/nonexistent/keystores"), &Checks::default()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/keystores"), "{e}");
    }
}
