//! The daemon's view of its inputs: the last good content of each file,
//! of the keystores directory and of each keymanager's key list.
//!
//! Owns safety invariant 1 for the daemon: an input that cannot be read or
//! parsed keeps its last good content (from memory or the store), is logged
//! and counted, is listed in [`InputSet::failing`] (`/ready` says why), and
//! never shrinks the desired set. "Cannot be read" includes what is not a
//! regular file (a directory, FIFO, socket or device, a dangling or looping
//! link) and a file over the size cap: nothing here blocks on a FIFO or
//! reads without bound. A file with no entries and no comment line (zero
//! bytes or whitespace) is taken as being written (truncate-then-write) and
//! ignored until it has content; to empty a list on purpose, leave a
//! comment line in it. A file deleted from the drop directory is removed on
//! purpose, unless the directory itself is gone or lists no input file (a
//! volume not mounted looks like that): then every last good content stands
//! until it lists one again (or `--allow-empty`). A configured file that
//! disappears is an error (its last content stands).
//!
//! Also counts every pubkey line in the chain cache's table of pubkeys
//! ([`ChainCache::count_line`]) and keeps each content as ids into it: the
//! one place the lines are counted, so a content read back from its ids is
//! exactly what was read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Delta, Record, SourceContent, SourceError, SourceKind};
use crate::cache::ChainCache;
use crate::domain::{Key, Pubkey, ValidatorIndex};
use crate::keys::KeyId;

use super::Inputs;
use crate::metrics::{Event, Metrics};

/// Where the last good content of every input is kept across restarts
/// (the daemon's store implements it; this room does not know the store).
pub trait Keep {
    /// The content saved under `key`, if any and whole.
    fn load_source(&self, key: &str) -> Option<SourceContent>;
    /// Every key saved.
    fn source_keys(&self) -> Vec<String>;
    /// Saves `content` under `key`; how many chunks were written.
    fn save_source(&self, key: &str, content: &SourceContent) -> Result<usize, String>;
    /// Forgets `key`.
    fn remove_source(&self, key: &str) -> Result<(), String>;
}

/// A [`Keep`] that keeps nothing (tests and benchmarks, where the store
/// stands apart).
pub struct NoStore;

impl Keep for NoStore {
    fn load_source(&self, _: &str) -> Option<SourceContent> {
        None
    }
    fn source_keys(&self) -> Vec<String> {
        Vec::new()
    }
    fn save_source(&self, _: &str, _: &SourceContent) -> Result<usize, String> {
        Ok(0)
    }
    fn remove_source(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    kind: SourceKind,
    content: Held,
    /// Whether `content` is trustworthy (parsed now or restored from the store).
    known: bool,
    /// Parsed but not yet saved to the store (saved after the pass's
    /// writes): the content itself until then.
    unsaved: Option<SourceContent>,
}

/// An input's last good content as kept in memory: its pubkey lines as
/// ids in the chain cache's table of pubkeys, where they are counted
/// ([`ChainCache::count_line`]): 4 bytes a line instead of 48.
#[derive(Debug, Clone, Default)]
struct Held {
    keys: Vec<KeyId>,
    indices: Vec<ValidatorIndex>,
    records: Vec<Record>,
}

impl Held {
    fn len(&self) -> usize {
        self.keys.len() + self.indices.len() + self.records.len()
    }

    /// The content back, its pubkeys read from `cache`.
    fn content(&self, cache: &ChainCache) -> SourceContent {
        SourceContent {
            pubkeys: self.keys.iter().map(|id| *cache.pubkey(*id)).collect(),
            indices: self.indices.clone(),
            records: self.records.clone(),
        }
    }

    /// Appends this content's pubkeys (read from `cache`) to `out`.
    fn extend_into(&self, out: &mut SourceContent, cache: &ChainCache) {
        out.pubkeys
            .extend(self.keys.iter().map(|id| *cache.pubkey(*id)));
        out.indices.extend_from_slice(&self.indices);
        out.records.extend_from_slice(&self.records);
    }

    /// Counts a whole content's pubkey lines in (a restored content).
    fn count_in(content: &SourceContent, cache: &mut ChainCache) -> Held {
        for pk in &content.pubkeys {
            cache.count_line(pk, true);
        }
        Held::of(content, &[], &[], cache)
    }

    /// Counts every pubkey line out (the input is gone).
    fn count_out(&self, cache: &mut ChainCache) -> SourceContent {
        let content = self.content(cache);
        for pk in &content.pubkeys {
            cache.count_line(pk, false);
        }
        content
    }

    /// `content`, whose lines are counted in `cache`, as ids; the lines it
    /// shares with `old` (whose pubkeys are `old_pubkeys`) at its start
    /// keep their ids without a lookup (an append costs only its lines).
    fn of(
        content: &SourceContent,
        old: &[KeyId],
        old_pubkeys: &[Pubkey],
        cache: &mut ChainCache,
    ) -> Held {
        let common = old_pubkeys
            .iter()
            .zip(&content.pubkeys)
            .take_while(|(a, b)| a == b)
            .count();
        let mut keys = Vec::with_capacity(content.pubkeys.len());
        keys.extend_from_slice(&old[..common]);
        for pk in &content.pubkeys[common..] {
            let id = match cache.key_id(pk) {
                Some(id) => id,
                None => {
                    // Cannot happen (every line was counted in first); if
                    // it did, counting the line again errs on the side of
                    // keeping its validator listed.
                    debug_assert!(false, "an input line's pubkey has no id");
                    tracing::error!(pubkey = %pk, "input line counts out of step; the line is counted again");
                    cache.count_line(pk, true);
                    cache.key_id(pk).unwrap_or_default()
                }
            };
            keys.push(id);
        }
        Held {
            keys,
            indices: content.indices.clone(),
            records: content.records.clone(),
        }
    }
}

/// All inputs with their last good content.
pub struct InputSet {
    inputs: Inputs,
    entries: BTreeMap<PathBuf, Entry>,
    /// The inputs (and the drop directory) that cannot be used now, each
    /// with the message that says why.
    problems: BTreeMap<PathBuf, String>,
    /// The drop directory has listed an input file, or its content was
    /// restored: until then its validators are unknown.
    dir_known: bool,
    /// `--allow-empty`: a drop directory that lists no input file is empty
    /// on purpose.
    allow_empty: bool,
}

fn key(p: &Path) -> String {
    format!("file:{}", p.display())
}

/// A keymanager's entry: keyed by its URL, under a path no file has.
fn keymanager_path(url: &url::Url) -> PathBuf {
    PathBuf::from(format!("keymanager:{url}"))
}

/// Where an entry's last good content is kept: a file's under
/// `file:<path>`, a keymanager's under its entry's own path.
fn store_key(path: &Path, kind: SourceKind) -> String {
    if kind == SourceKind::Keymanager {
        path.display().to_string()
    } else {
        key(path)
    }
}

/// How many problems `/ready` spells out; the rest are counted.
const READY_PROBLEMS: usize = 5;

impl InputSet {
    /// The configured inputs, with the last good content from the store
    /// (its pubkey lines counted in `cache`).
    pub fn restore(inputs: Inputs, store: &dyn Keep, cache: &mut ChainCache) -> InputSet {
        let mut entries = BTreeMap::new();
        for (kind, p) in super::configured(&inputs) {
            let stored = store.load_source(&key(p));
            entries.insert(
                p.clone(),
                Entry {
                    kind,
                    known: stored.is_some(),
                    content: Held::count_in(&stored.unwrap_or_default(), cache),
                    unsaved: None,
                },
            );
        }
        for km in &inputs.keymanagers {
            let p = keymanager_path(&km.url);
            let stored = store.load_source(&store_key(&p, SourceKind::Keymanager));
            entries.insert(
                p,
                Entry {
                    kind: SourceKind::Keymanager,
                    known: stored.is_some(),
                    content: Held::count_in(&stored.unwrap_or_default(), cache),
                    unsaved: None,
                },
            );
        }
        let mut dir_known = inputs.input_dir.is_none();
        if let Some(dir) = &inputs.input_dir {
            let prefix = key(dir);
            for k in store.source_keys() {
                if let Some(rest) = k.strip_prefix("file:") {
                    let p = PathBuf::from(rest);
                    if k.starts_with(&prefix) && p.parent() == Some(dir.as_path()) {
                        if let Some(c) = store.load_source(&k) {
                            dir_known = true;
                            entries.insert(
                                p,
                                Entry {
                                    kind: SourceKind::Detect,
                                    content: Held::count_in(&c, cache),
                                    known: true,
                                    unsaved: None,
                                },
                            );
                        }
                    }
                }
            }
        }
        InputSet {
            inputs,
            entries,
            problems: BTreeMap::new(),
            dir_known,
            allow_empty: false,
        }
    }

    /// `--allow-empty`: a drop directory that lists no input file is taken
    /// as empty on purpose (otherwise its last good content stands).
    pub fn set_allow_empty(&mut self, allow: bool) {
        self.allow_empty = allow;
    }

    /// The inputs that cannot be used now, each with why: unreadable, not
    /// parsing, blank (being written?), or the drop directory missing or
    /// listing nothing. Their last good content stands meanwhile.
    pub fn failing(&self) -> Vec<(PathBuf, String)> {
        self.problems
            .iter()
            .map(|(p, why)| (p.clone(), why.clone()))
            .collect()
    }

    /// [`failing`](Self::failing) as one line for `/ready`
    /// (`why.inputs_readable`); `None` when every input is fine.
    pub fn unreadable(&self) -> Option<String> {
        if self.problems.is_empty() {
            return None;
        }
        let mut why: Vec<&str> = self
            .problems
            .values()
            .take(READY_PROBLEMS)
            .map(String::as_str)
            .collect();
        let more = self.problems.len().saturating_sub(READY_PROBLEMS);
        let tail = format!("and {more} more");
        if more > 0 {
            why.push(&tail);
        }
        Some(why.join("; "))
    }

    /// The configured files and the drop directory.
    pub fn paths(&self) -> (Vec<PathBuf>, Option<PathBuf>) {
        let files = super::configured(&self.inputs)
            .map(|(_, p)| p.clone())
            .collect();
        (files, self.inputs.input_dir.clone())
    }

    /// Directories to watch (parents of the configured files, the drop dir):
    /// watching the directory survives editors that replace files by rename.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = super::configured(&self.inputs)
            .filter(|(kind, _)| *kind != SourceKind::KeystoresDir)
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

    /// The keystores directory, watched with its subdirectories.
    pub fn keystores_dir(&self) -> Option<&Path> {
        self.inputs.keystores_dir.as_deref()
    }

    /// Takes in a keymanager's read: its key list, or why it failed (its
    /// last good list then stands: logged, counted, named by `/ready`; a
    /// list with no key is such a failure unless `--allow-empty`, see
    /// [`super::keymanager::read_one`]). Returns how its content changed,
    /// if it did.
    pub fn take_keymanager(
        &mut self,
        url: &url::Url,
        read: Result<Vec<Pubkey>, super::keymanager::KeymanagerError>,
        metrics: &Metrics,
        cache: &mut ChainCache,
    ) -> Option<Delta> {
        let path = keymanager_path(url);
        let read = match read {
            Ok(keys) => Ok(SourceContent {
                pubkeys: keys,
                ..SourceContent::default()
            }),
            Err(e) => Err(e.to_string()),
        };
        let delta = self.take(&path, SourceKind::Keymanager, read, metrics, cache);
        self.report(metrics);
        delta
    }

    /// Re-reads every input (start, or a drop-dir listing is needed).
    pub fn reload_all(&mut self, store: &dyn Keep, metrics: &Metrics, cache: &mut ChainCache) {
        let mut paths: Vec<PathBuf> = self
            .entries
            .iter()
            .filter(|(_, e)| e.kind != SourceKind::Keymanager)
            .map(|(p, _)| p.clone())
            .collect();
        // Entries whose file is gone were deleted while we were down, or the
        // directory is not there (then they stand).
        let listing = self.check_dir(metrics);
        let dir_ok = listing.is_some();
        paths.extend(listing.unwrap_or_default());
        paths.sort();
        paths.dedup();
        for p in paths {
            // The caller rebuilds from the whole content after this.
            let _ = self.reload_one(&p, store, metrics, Some(dir_ok), cache);
        }
        self.report(metrics);
    }

    /// Re-reads one path after a change. Returns how its content changed,
    /// if it did.
    pub fn reload(
        &mut self,
        path: &Path,
        store: &dyn Keep,
        metrics: &Metrics,
        cache: &mut ChainCache,
    ) -> Option<Delta> {
        let delta = self.reload_one(path, store, metrics, None, cache);
        self.report(metrics);
        delta
    }

    /// `keysync_inputs_failing`: how many inputs cannot be used now.
    fn report(&self, metrics: &Metrics) {
        metrics.inputs_failing.set(self.problems.len() as i64);
    }

    fn in_dir(&self, path: &Path) -> bool {
        self.inputs
            .input_dir
            .as_deref()
            .is_some_and(|d| path.parent() == Some(d))
    }

    /// `dir_ok`: whether the drop directory was just listed with an input
    /// in it (`None`: list it if that matters).
    fn reload_one(
        &mut self,
        path: &Path,
        store: &dyn Keep,
        metrics: &Metrics,
        dir_ok: Option<bool>,
        cache: &mut ChainCache,
    ) -> Option<Delta> {
        let in_dir = self.in_dir(path);
        let kind = match self.entries.get(path) {
            Some(e) if e.kind == SourceKind::Keymanager => return None,
            Some(e) => e.kind,
            None if in_dir => SourceKind::Detect,
            None => return None,
        };
        // The name itself is gone (not a link whose target is gone).
        let gone = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if in_dir && gone {
            self.problems.remove(path);
            if !self.entries.contains_key(path) {
                return None;
            }
            // Removed on purpose only if the directory is there and lists
            // an input: a volume not mounted must not read as "no keys".
            let dir_ok = dir_ok.unwrap_or_else(|| self.check_dir(metrics).is_some());
            if !dir_ok {
                return None;
            }
            return self.forget(path, store, cache).map(|removed| Delta {
                added: SourceContent::default(),
                removed,
            });
        }
        // --verify-pubkeys: only what the change added is checked (below).
        let checks = super::Checks {
            verify_pubkeys: false,
            ..self.inputs.checks.clone()
        };
        let read = if in_dir {
            super::read_dropped_checked(path, &checks)
        } else {
            super::read_checked(kind, path, &checks)
        };
        let read = match read {
            Ok(content) if self.inputs.checks.verify_pubkeys => {
                let verified = match self.entries.get(path).filter(|e| e.known) {
                    Some(e) => super::verify_added(
                        path,
                        &content.delta_from(&e.content.content(cache)).added,
                    ),
                    None => super::verify_added(path, &content),
                };
                verified.map(|()| content)
            }
            other => other,
        };
        let read = match read {
            Err(SourceError::NoKeystores { .. }) if self.allow_empty => {
                Ok(SourceContent::default())
            }
            other => other,
        };
        match read {
            Err(SourceError::Blank { .. }) => {
                tracing::warn!(path = %path.display(), "input file has no entries and no comment line (being written?); keeping its last good content. To empty a list on purpose, leave a comment line in it");
                self.problems.insert(
                    path.to_path_buf(),
                    format!(
                        "{}: has no entries and no comment line (being written?); its last good content stands; to empty it on purpose, leave a comment line in it",
                        path.display()
                    ),
                );
                None
            }
            other => {
                let took = self.take(path, kind, other.map_err(|e| e.to_string()), metrics, cache);
                let changed = took.is_some();
                let mut delta = took.unwrap_or_default();
                // A file read in a directory that listed nothing: it lists
                // something now, and what it no longer has is removed.
                if in_dir && dir_ok.is_none() && self.problems.contains_key(self.dir()) {
                    if let Some(files) = self.check_dir(metrics) {
                        for gone in self.gone_from_dir(&files) {
                            if let Some(removed) = self.forget(&gone, store, cache) {
                                delta.removed.extend(&removed);
                            }
                        }
                    }
                }
                (changed || !delta.is_empty()).then_some(delta)
            }
        }
    }

    /// Takes in one source's read: the new content (its delta returned,
    /// `Some` when anything changed or it was never known), or why it
    /// cannot be used (its last good content stands).
    fn take(
        &mut self,
        path: &Path,
        kind: SourceKind,
        read: Result<SourceContent, String>,
        metrics: &Metrics,
        cache: &mut ChainCache,
    ) -> Option<Delta> {
        match read {
            Ok(content) => {
                if self.problems.remove(path).is_some() {
                    tracing::info!(path = %path.display(), "input can be used again");
                }
                let entry = self.entries.entry(path.to_path_buf()).or_insert(Entry {
                    kind,
                    content: Held::default(),
                    known: false,
                    unsaved: None,
                });
                // An entry never known holds no content: all of it is added.
                let old = entry.content.content(cache);
                let delta = content.delta_from(&old);
                let changed = !entry.known || !delta.is_empty();
                entry.known = true;
                if changed {
                    tracing::info!(
                        path = %path.display(),
                        entries = content.len(),
                        added = delta.added.len(),
                        removed = delta.removed.len(),
                        "input file loaded"
                    );
                    // Counted in before out: a line that stays keeps its id.
                    for pk in &delta.added.pubkeys {
                        cache.count_line(pk, true);
                    }
                    for pk in &delta.removed.pubkeys {
                        cache.count_line(pk, false);
                    }
                    entry.content = Held::of(&content, &entry.content.keys, &old.pubkeys, cache);
                    entry.unsaved = Some(content);
                }
                (changed || !delta.is_empty()).then_some(delta)
            }
            Err(e) => {
                let entry = self.entries.entry(path.to_path_buf()).or_insert(Entry {
                    kind,
                    content: Held::default(),
                    known: false,
                    unsaved: None,
                });
                metrics.emit(SourceFailed {
                    path,
                    error: &e,
                    kept: entry.content.len(),
                });
                self.problems.insert(path.to_path_buf(), e);
                None
            }
        }
    }

    /// The drop directory (only called when there is one).
    fn dir(&self) -> &Path {
        self.inputs.input_dir.as_deref().unwrap_or(Path::new(""))
    }

    /// Lists the drop directory: its input files, or `None` (the error
    /// recorded, logged and counted) when it is missing, unreadable or lists
    /// no input file without `--allow-empty`. No drop directory: `Some([])`.
    /// Every input path to re-read on a resync: the configured files, the
    /// drop-dir entries known, and what the drop directory lists now (a
    /// change whose event was lost costs at most one resync interval).
    pub fn known_paths(&mut self, metrics: &Metrics) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.entries.keys().cloned().collect();
        paths.extend(self.check_dir(metrics).unwrap_or_default());
        paths.sort();
        paths.dedup();
        paths
    }

    fn check_dir(&mut self, metrics: &Metrics) -> Option<Vec<PathBuf>> {
        let Some(dir) = self.inputs.input_dir.clone() else {
            return Some(Vec::new());
        };
        let failed = match super::dir_files(&dir) {
            Ok(files) if !files.is_empty() || self.allow_empty => {
                if self.problems.remove(&dir).is_some() {
                    tracing::info!(dir = %dir.display(), "the drop directory lists input files again");
                }
                self.dir_known = true;
                return Some(files);
            }
            Ok(_) => SourceError::EmptyDir { path: dir.clone() },
            Err(e) => e,
        };
        let kept = self
            .entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir.as_path()))
            .count();
        metrics.emit(DropDirFailed {
            error: &failed,
            kept_files: kept,
        });
        self.problems.insert(dir, failed.to_string());
        None
    }

    /// Drop-directory entries whose file is not in `files`.
    fn gone_from_dir(&self, files: &[PathBuf]) -> Vec<PathBuf> {
        self.entries
            .iter()
            .filter(|(p, e)| {
                e.kind == SourceKind::Detect && self.in_dir(p) && files.binary_search(p).is_err()
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Drops a drop-directory entry whose file was deleted (its lines
    /// counted out of `cache`); its content.
    fn forget(
        &mut self,
        path: &Path,
        store: &dyn Keep,
        cache: &mut ChainCache,
    ) -> Option<SourceContent> {
        let removed = self.entries.remove(path)?;
        self.problems.remove(path);
        tracing::info!(path = %path.display(), "input file removed from the drop directory");
        if let Err(e) = store.remove_source(&key(path)) {
            tracing::warn!(error = %e, "cannot forget a removed input in the store");
        }
        Some(removed.content.count_out(cache))
    }

    /// Saves the last good content of inputs that changed. Called after the
    /// pass's writes: a multi-megabyte save must not delay them.
    pub fn persist(&mut self, store: &dyn Keep) {
        for (path, e) in self.entries.iter_mut() {
            let Some(content) = &e.unsaved else { continue };
            match store.save_source(&store_key(path, e.kind), content) {
                Ok(chunks) => {
                    tracing::debug!(path = %path.display(), chunks, "last good content saved");
                    e.unsaved = None;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot save the input's last good content")
                }
            }
        }
    }

    /// The union of every input's last good content.
    pub fn content(&self, cache: &ChainCache) -> SourceContent {
        let mut all = SourceContent::default();
        all.pubkeys
            .reserve_exact(self.entries.values().map(|e| e.content.keys.len()).sum());
        for e in self.entries.values() {
            e.content.extend_into(&mut all, cache);
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
    /// or missing file), or the drop directory has never listed an input
    /// file: unassigns must wait, since those validators are unknown.
    pub fn complete(&self) -> bool {
        self.dir_known && self.entries.values().all(|e| e.known)
    }
}

// ---- events: a source that cannot be used, logged and counted together ---

/// An input file could not be read or parsed; its last good content
/// (`kept` entries) stands.
pub struct SourceFailed<'a> {
    pub path: &'a Path,
    pub error: &'a dyn std::fmt::Display,
    pub kept: usize,
}

impl Event for SourceFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.source_errors.inc();
    }

    fn log(&self) {
        tracing::error!(target: "keysync::inputs::last_good", error = %self.error, input = %self.path.display(), kept = self.kept, "input cannot be used; keeping its last good content");
    }
}

/// The drop directory could not be listed (or lists nothing); the last
/// good content of its `kept_files` stands.
pub struct DropDirFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
    pub kept_files: usize,
}

impl Event for DropDirFailed<'_> {
    fn record(&self, m: &Metrics) {
        m.source_errors.inc();
    }

    fn log(&self) {
        tracing::error!(target: "keysync::inputs::last_good", error = %self.error, kept_files = self.kept_files, "the drop directory cannot be used; the last good content of its files stands");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_says_why_for_the_first_five_and_counts_the_rest() {
        let mut set = InputSet {
            inputs: Inputs::default(),
            entries: BTreeMap::new(),
            problems: BTreeMap::new(),
            dir_known: true,
            allow_empty: false,
        };
        assert_eq!(set.unreadable(), None);
        for i in 0..7 {
            set.problems.insert(
                PathBuf::from(format!("/in/{i}")),
                format!("/in/{i}: broken"),
            );
        }
        assert_eq!(
            set.unreadable().unwrap(),
            "/in/0: broken; /in/1: broken; /in/2: broken; /in/3: broken; /in/4: broken; and 2 more"
        );
        assert_eq!(set.failing().len(), 7);
    }

    use super::NoStore;

    /// Interop validators 0 and 1: valid G1 points.
    const K0: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    const K1: &str = "b89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b";

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Edits of two inputs (a file, a keymanager's list), with the chain moving pubkeys between
        /// indices meanwhile (ids freed and reused): each input's content
        /// reads back exactly as last written (kept as ids), and the cache
        /// counts the lines of both.
        #[test]
        fn contents_kept_as_ids_read_back_exactly(
            steps in proptest::collection::vec(
                (0usize..2, proptest::collection::vec(0u8..6, 0..8), proptest::option::of((0u64..4, 0u8..8))),
                1..12,
            ),
        ) {
            let d = tempfile::tempdir().unwrap();
            let files = [d.path().join("a.pubkeys")];
            let pk = |k: u8| {
                let mut b = [0u8; 48];
                b[0] = 0x80;
                b[47] = k;
                Pubkey(b)
            };
            let mut written: [Vec<u8>; 2] = [vec![], vec![]];
            std::fs::write(&files[0], "# keys\n").unwrap();
            let inputs = Inputs {
                pubkeys_file: Some(files[0].clone()),
                ..Default::default()
            };
            let metrics = Metrics::new();
            let mut cache = ChainCache::new();
            let mut set = InputSet::restore(inputs, &NoStore, &mut cache);
            // The second input a keymanager's list: both go through `take`.
            let url = url::Url::parse("http://127.0.0.1:1/").unwrap();
            set.reload_all(&NoStore, &metrics, &mut cache);
            for (n, keys, learn) in steps {
                if n == 0 {
                    let text: String = keys.iter().map(|k| format!("{}\n", pk(*k))).collect();
                    std::fs::write(&files[0], format!("# keys\n{text}")).unwrap();
                    set.reload(&files[0], &NoStore, &metrics, &mut cache);
                } else {
                    set.take_keymanager(&url, Ok(keys.iter().map(|k| pk(*k)).collect()), &metrics, &mut cache);
                }
                written[n] = keys;
                if let Some((i, k)) = learn {
                    cache.learn(&crate::beacon::BeaconValidator {
                        index: i,
                        pubkey: pk(k),
                        status: crate::domain::Status::ActiveOngoing,
                        withdrawable_epoch: None,
                    });
                }
                let mut want: Vec<Pubkey> = written.iter().flatten().map(|k| pk(*k)).collect();
                let mut have = set.content(&cache).pubkeys;
                want.sort();
                have.sort();
                proptest::prop_assert_eq!(&have, &want);
                for k in 0u8..8 {
                    let n = want.iter().filter(|p| **p == pk(k)).count() as u32;
                    proptest::prop_assert_eq!(cache.lines(&pk(k)), n);
                }
            }
        }
    }

    #[test]
    fn verify_pubkeys_checks_what_a_change_adds_and_keeps_the_last_good_content() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("v.pubkeys");
        std::fs::write(&file, format!("{K0}\n")).unwrap();
        let inputs = Inputs {
            pubkeys_file: Some(file.clone()),
            checks: super::super::Checks {
                verify_pubkeys: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let metrics = Metrics::new();
        let mut cache = ChainCache::new();
        let mut set = InputSet::restore(inputs, &NoStore, &mut cache);
        set.reload_all(&NoStore, &metrics, &mut cache);
        assert_eq!(set.content(&cache).pubkeys.len(), 1);
        // A typo that keeps length and hex: refused, the last good stands.
        let typo = format!("{}d", &K0[..K0.len() - 1]);
        std::fs::write(&file, format!("{K0}\n{typo}\n")).unwrap();
        assert!(set.reload(&file, &NoStore, &metrics, &mut cache).is_none());
        assert_eq!(set.content(&cache).pubkeys.len(), 1);
        let why = set.unreadable().unwrap();
        assert!(
            why.contains("is not a BLS pubkey") && why.contains(&typo),
            "{why}"
        );
        // Fixed: the added key is checked and taken.
        std::fs::write(&file, format!("{K0}\n{K1}\n")).unwrap();
        let delta = set.reload(&file, &NoStore, &metrics, &mut cache).unwrap();
        assert_eq!(delta.added.pubkeys.len(), 1);
        assert_eq!(set.unreadable(), None);
    }
}
