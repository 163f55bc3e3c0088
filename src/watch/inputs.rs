//! The daemon's view of its input files: the last good content of each.
//!
//! Owns safety invariant 1 for the daemon: a file that cannot be read or
//! parsed keeps its last good content (from memory or the store), is logged
//! and counted, and never shrinks the desired set. A zero-byte file is taken
//! as being written (truncate-then-write) and ignored until it has content;
//! to empty a list on purpose, leave a comment line in it. A file deleted
//! from the drop directory is removed on purpose; a configured file that
//! disappears is an error (its last content stands).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::domain::{Key, Pubkey};
use crate::metrics::Metrics;
use crate::settings::Inputs;
use crate::sources::{self, Delta, SourceContent, SourceKind};
use crate::store::Store;

#[derive(Debug, Clone)]
struct Entry {
    kind: SourceKind,
    content: SourceContent,
    /// Whether `content` is trustworthy (parsed now or restored from the store).
    known: bool,
    failing: bool,
    /// Parsed but not yet saved to the store (saved after the pass's writes).
    unsaved: bool,
}

/// All inputs with their last good content.
pub struct InputSet {
    inputs: Inputs,
    entries: BTreeMap<PathBuf, Entry>,
}

fn key(p: &Path) -> String {
    format!("file:{}", p.display())
}

impl InputSet {
    /// The configured inputs, with the last good content from the store.
    pub fn restore(inputs: Inputs, store: &Store) -> InputSet {
        let mut entries = BTreeMap::new();
        for (kind, p) in sources::configured(&inputs) {
            let stored = store.load_source(&key(p));
            entries.insert(
                p.clone(),
                Entry {
                    kind,
                    known: stored.is_some(),
                    content: stored.unwrap_or_default(),
                    failing: false,
                    unsaved: false,
                },
            );
        }
        if let Some(dir) = &inputs.input_dir {
            let prefix = key(dir);
            for k in store.source_keys() {
                if let Some(rest) = k.strip_prefix("file:") {
                    let p = PathBuf::from(rest);
                    if k.starts_with(&prefix) && p.parent() == Some(dir.as_path()) {
                        if let Some(c) = store.load_source(&k) {
                            entries.insert(
                                p,
                                Entry {
                                    kind: SourceKind::Detect,
                                    content: c,
                                    known: true,
                                    failing: false,
                                    unsaved: false,
                                },
                            );
                        }
                    }
                }
            }
        }
        InputSet { inputs, entries }
    }

    /// The configured files and the drop directory.
    pub fn paths(&self) -> (Vec<PathBuf>, Option<PathBuf>) {
        let files = sources::configured(&self.inputs)
            .map(|(_, p)| p.clone())
            .collect();
        (files, self.inputs.input_dir.clone())
    }

    /// Directories to watch (parents of the configured files, the drop dir):
    /// watching the directory survives editors that replace files by rename.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = sources::configured(&self.inputs)
            .map(|(_, p)| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            })
            .chain(self.inputs.input_dir.clone())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Re-reads every input (start, or a drop-dir listing is needed).
    pub fn reload_all(&mut self, store: &Store, metrics: &Metrics) {
        let mut paths: Vec<PathBuf> = self.entries.keys().cloned().collect();
        if let Some(dir) = self.inputs.input_dir.clone() {
            match sources::dir_files(&dir) {
                Ok(files) => {
                    // Stored entries whose file is gone were deleted while we were down.
                    let gone: Vec<PathBuf> = self
                        .entries
                        .iter()
                        .filter(|(p, e)| e.kind == SourceKind::Detect && !files.contains(p))
                        .map(|(p, _)| p.clone())
                        .collect();
                    paths.extend(gone);
                    paths.extend(files);
                }
                Err(e) => {
                    metrics.inc("keysync_source_errors_total", &[]);
                    tracing::error!(error = %e, "cannot list the input directory; its last good content stands");
                }
            }
        }
        paths.sort();
        paths.dedup();
        for p in paths {
            // The caller rebuilds from the whole content after this.
            let _ = self.reload(&p, store, metrics);
        }
    }

    /// Re-reads one path after a change. Returns how its content changed,
    /// if it did.
    pub fn reload(&mut self, path: &Path, store: &Store, metrics: &Metrics) -> Option<Delta> {
        let in_dir = self
            .inputs
            .input_dir
            .as_deref()
            .is_some_and(|d| path.parent() == Some(d));
        let kind = match self.entries.get(path) {
            Some(e) => e.kind,
            None if in_dir => SourceKind::Detect,
            None => return None,
        };
        let exists = std::fs::metadata(path);
        if kind == SourceKind::Detect
            && matches!(&exists, Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            let removed = self.entries.remove(path)?;
            tracing::info!(path = %path.display(), "input file removed from the drop directory");
            if let Err(e) = store.remove_source(&key(path)) {
                tracing::warn!(error = %e, "cannot forget a removed input in the store");
            }
            return Some(Delta {
                added: SourceContent::default(),
                removed: removed.content,
            });
        }
        if exists.as_ref().is_ok_and(|m| !m.is_file()) {
            return None;
        }
        if exists.as_ref().is_ok_and(|m| m.len() == 0) {
            tracing::warn!(path = %path.display(), "input file is empty (being written?); keeping its last good content. To empty a list on purpose, leave a comment line in it");
            return None;
        }
        let entry = self.entries.entry(path.to_path_buf()).or_insert(Entry {
            kind,
            content: SourceContent::default(),
            known: false,
            failing: false,
            unsaved: false,
        });
        match sources::read(kind, path) {
            Ok(content) => {
                if entry.failing {
                    tracing::info!(path = %path.display(), "input file parses again");
                }
                // An entry never known holds no content: all of it is added.
                let delta = content.delta_from(&entry.content);
                let changed = !entry.known || !delta.is_empty();
                entry.failing = false;
                entry.known = true;
                if !changed {
                    return None;
                }
                tracing::info!(
                    path = %path.display(),
                    entries = content.len(),
                    added = delta.added.len(),
                    removed = delta.removed.len(),
                    "input file loaded"
                );
                entry.content = content;
                entry.unsaved = true;
                Some(delta)
            }
            Err(e) => {
                entry.failing = true;
                metrics.inc("keysync_source_errors_total", &[]);
                tracing::error!(error = %e, kept = entry.content.len(), "input file cannot be used; keeping its last good content");
                None
            }
        }
    }

    /// Saves the last good content of inputs that changed. Called after the
    /// pass's writes: a multi-megabyte save must not delay them.
    pub fn persist(&mut self, store: &Store) {
        for (path, e) in self.entries.iter_mut().filter(|(_, e)| e.unsaved) {
            match store.save_source(&key(path), &e.content) {
                Ok(chunks) => {
                    tracing::debug!(path = %path.display(), chunks, "last good content saved");
                    e.unsaved = false;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot save the input's last good content")
                }
            }
        }
    }

    /// The union of every input's last good content.
    pub fn content(&self) -> SourceContent {
        let mut all = SourceContent::default();
        for e in self.entries.values() {
            all.extend(&e.content);
        }
        all
    }

    /// The pubkey of the last record for `key`, in input order (the one
    /// that wins when records disagree).
    pub fn last_record(&self, key: &Key) -> Option<Pubkey> {
        self.entries
            .values()
            .flat_map(|e| e.content.records.iter())
            .rfind(|r| r.validator_index == key.0 && r.chain_id == key.1)
            .map(|r| r.validator_key)
    }

    /// False while some input has never parsed (first start with a broken
    /// or missing file): unassigns must wait, since that input's validators
    /// are unknown.
    pub fn complete(&self) -> bool {
        self.entries.values().all(|e| e.known)
    }
}
