//! The daemon's local state in an embedded sled store under `--data-dir`.
//!
//! Owns what keysync keeps between runs, every tree a cache or a journal
//! that can be rebuilt from the beacon node and the registry:
//! - `chain:<chain id>`: index → pubkey + last known status (`ChainCache`);
//! - `inputs`: the last content of each input that parsed (invariant 1), in
//!   chunks of 64 KiB with a manifest of their hashes, so saving a changed
//!   input writes only the chunks that changed (an append: two or three);
//! - `journal`: the apply in flight, so a kill mid-apply is seen and resumed;
//! - the default tree: the schema version and the generation record
//!   (`store_id`, `generation`, `digest` at that generation, and `content`,
//!   the digest of what the store holds now).
//!
//! **Rollback detection.** The store's digest is a sum of one hash per
//! entry of every tree; each write updates it in the same sled transaction
//! as the write (`content`), so the store's content and its record of it
//! cannot part, even in a crash. Every [`Store::flush`] bumps the store's
//! generation; once sled has made it durable, the generation file next to
//! the store (`keysync.generation`, see `sidecar`) is replaced atomically.
//! On open the store must prove it is current: the same store id, a
//! generation at least the file's, every tree readable to the end, and its
//! content equal to its `content` record (and, when nothing was written
//! since the file's generation, to the file's digest). A store that cannot
//! (truncated, damaged, restored from an older copy, deleted, replaced) is
//! moved aside and rebuilt empty, loudly, so its "last good content" of an
//! input is never trusted (the inputs are read afresh). What happened is
//! [`Store::opened`]. Writes after the last flush are not covered: a crash
//! may lose them (sled recovers a prefix of its writes), as it may lose
//! anything not flushed.
//!
//! **Memory.** sled 0.34 keeps every page it wrote or read resident,
//! whatever its cache capacity (measured: 100 MB written stays about
//! 105 MiB resident with a capacity of 64 KB, 1 MB, 4 MB or 256 MB), and
//! frees what it drops through crossbeam's epoch collector, slowly.
//! [`Store::shed`] closes sled and opens it again, then drains that
//! collector: after the start (which reads the whole store) and after any
//! pass that wrote. The data directory's lock (`keysync.lock`, taken
//! before sled's own and held for the store's life) keeps another keysync
//! out while sled is closed.
//!
//! A store of the previous schema (v2: each input in one blob) is migrated
//! in place; a store from before generations is accepted once, and given
//! its generation file. An unknown, foreign or corrupt store is moved aside
//! and rebuilt, never a crash loop (sled's panics on damaged files are
//! caught); a store locked by another keysync is refused after a bounded
//! wait (two writers must not share one directory). Never holds the API key
//! or any secret.
//!
//! Not detectable from inside the data directory: the whole directory
//! (store and generation file together) restored from an older backup.

mod codec;
mod open;
mod sidecar;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use crate::cache::ChainCache;
use crate::inputs::SourceContent;
use codec::{
    chunk_hash, chunk_key, chunk_prefix, decode_bucket, decode_source, encode_bucket,
    encode_source, manifest_key, Manifest, BUCKET, CHUNK,
};

pub use codec::MAX_CHAIN_ID_BYTES;
pub use open::LOCK_WAIT;
/// The generation file's name in the data directory.
pub use sidecar::FILE as GENERATION_FILE;

/// The sled directory inside the data directory.
const DB_DIR: &str = "keysync.sled";

/// The file the store's lock is taken on (`keysync.lock` in the data
/// directory, held around sled's own): another process holding it has the
/// store open.
pub fn lock_file(dir: &Path) -> PathBuf {
    dir.join("keysync.lock")
}
const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA: &[u8] = b"keysync-store-v3";
/// The previous schema: migrated on open.
const SCHEMA_V2: &[u8] = b"keysync-store-v2";
/// The generation record, in the default tree (outside the digest).
const STORE_ID_KEY: &[u8] = b"store_id";
const GENERATION_KEY: &[u8] = b"generation";
/// The digest at the last flush.
const DIGEST_KEY: &[u8] = b"digest";
/// The digest of the content now, written with every write.
const CONTENT_KEY: &[u8] = b"content";
const JOURNAL_KEY: &[u8] = b"in_flight";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state directory {0} is in use by another keysync process (only one writer per directory)")]
    Locked(PathBuf),
    #[error("cannot open the state store in {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("state store write failed: {0}")]
    Write(String),
    #[error("cannot store this content: {0}")]
    Encode(String),
}

/// What [`Store::open`] found, for the daemon to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// There was no store: a new, empty one was created.
    Fresh,
    /// The store proved it is current (generation at least the one
    /// recorded next to it, and its content checked out).
    Current { generation: u64 },
    /// A store from an earlier keysync, accepted once: from before
    /// generations (no generation file yet), or of schema v2 (migrated).
    Migrated { from: &'static str },
    /// The store could not prove it is current: it was moved aside to
    /// `moved_to` (`None` when there was none to move) and rebuilt empty, so
    /// no input's last good content comes from it.
    RolledBack {
        moved_to: Option<PathBuf>,
        why: Unproven,
    },
}

impl Opened {
    /// Whether the store was moved aside and rebuilt empty.
    pub fn is_rolled_back(&self) -> bool {
        matches!(self, Opened::RolledBack { .. })
    }
}

impl std::fmt::Display for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::Fresh => write!(f, "new store"),
            Opened::Current { generation } => write!(f, "current (generation {generation})"),
            Opened::Migrated { from } => write!(f, "migrated from {from}"),
            Opened::RolledBack {
                moved_to: Some(p),
                why,
            } => write!(f, "rolled back ({why}); moved aside to {}", p.display()),
            Opened::RolledBack {
                moved_to: None,
                why,
            } => write!(f, "rolled back ({why})"),
        }
    }
}

/// Why a store could not prove it is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unproven {
    /// Its generation is older than the one recorded next to it: truncated,
    /// or restored from an older copy.
    Behind { found: u64, expected: u64 },
    /// There is no store (or an empty one) where generation `expected` was
    /// recorded.
    Missing { expected: u64 },
    /// It is another store than the one recorded next to it.
    OtherStore { found: u64, expected: u64 },
    /// Its content does not match the digest recorded at its generation:
    /// part of it was lost or altered.
    DigestMismatch { generation: u64 },
    /// It has a generation but its generation file is gone.
    NoGenerationFile { found: u64 },
    /// Its generation file is there but unreadable or damaged.
    BadGenerationFile(String),
    /// sled cannot open or read it (an error or a panic).
    Corrupt(String),
    /// Not a keysync store of a schema this version knows.
    Foreign(String),
}

impl std::fmt::Display for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unproven::Behind { found, expected } => write!(
                f,
                "generation {found} found, {expected} expected: truncated or restored from an older copy"
            ),
            Unproven::Missing { expected } => write!(
                f,
                "no store content found, generation {expected} expected: deleted or truncated"
            ),
            Unproven::OtherStore { found, expected } => write!(
                f,
                "store id {found:016x} found, {expected:016x} expected: another store was put in its place"
            ),
            Unproven::DigestMismatch { generation } => write!(
                f,
                "its content does not match the digest of its generation {generation}: part of it was lost"
            ),
            Unproven::NoGenerationFile { found } => write!(
                f,
                "it is at generation {found} but its generation file {} is missing",
                sidecar::FILE
            ),
            Unproven::BadGenerationFile(why) => {
                write!(f, "its generation file {} is damaged: {why}", sidecar::FILE)
            }
            Unproven::Corrupt(why) => write!(f, "corrupt: {why}"),
            Unproven::Foreign(why) => write!(f, "not a keysync store: {why}"),
        }
    }
}

/// An apply in flight, as recorded before its first write.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub started_unix: u64,
    pub reasons: Vec<String>,
    pub to_assign: usize,
    pub to_unassign: usize,
    pub assigned: u64,
    pub unassigned: u64,
}

pub struct Store {
    /// sled's handles; `None` only when re-opening them failed (see
    /// [`Store::shed`]): then every read finds nothing and every write fails.
    sled: Option<Handles>,
    /// The chain's tree name (`chain:<chain id>`).
    chain_tree: String,
    /// Whether anything was written since sled was (re)opened.
    wrote: std::sync::atomic::AtomicBool,
    /// The data directory's lock (`keysync.lock`), held for the store's life.
    lock: Option<std::fs::File>,
    /// The data directory (holds the sled directory and the generation file).
    dir: PathBuf,
    ledger: Mutex<Ledger>,
    opened: Opened,
}

/// An open sled database and the trees keysync uses.
struct Handles {
    db: sled::Db,
    chain: sled::Tree,
    inputs: sled::Tree,
    journal: sled::Tree,
}

/// The store's generation record as kept in memory, with the hash of every
/// entry so a write updates the digest without reading the store.
#[derive(Default)]
struct Ledger {
    store_id: u64,
    generation: u64,
    entries: HashMap<(IVec, IVec), u64>,
    sum: u64,
}

impl Ledger {
    /// The digest after `changes` (key → new entry hash, `None` removed)
    /// in `tree`, without applying them.
    fn digest_after(&self, tree: &IVec, changes: &HashMap<IVec, Option<u64>>) -> u64 {
        let (mut sum, mut count) = (self.sum, self.entries.len());
        for (key, new) in changes {
            if let Some(old) = self.entries.get(&(tree.clone(), key.clone())) {
                sum = sum.wrapping_sub(*old);
                count -= 1;
            }
            if let Some(h) = new {
                sum = sum.wrapping_add(*h);
                count += 1;
            }
        }
        codec::digest(sum, count)
    }

    fn apply(&mut self, tree: &IVec, changes: HashMap<IVec, Option<u64>>) {
        for (key, new) in changes {
            let slot = (tree.clone(), key);
            if let Some(old) = self.entries.remove(&slot) {
                self.sum = self.sum.wrapping_sub(old);
            }
            if let Some(h) = new {
                self.sum = self.sum.wrapping_add(h);
                self.entries.insert(slot, h);
            }
        }
    }

    fn drop_tree(&mut self, tree: &[u8]) {
        let mut sum = self.sum;
        self.entries.retain(|(t, _), h| {
            let keep = t.as_ref() != tree;
            if !keep {
                sum = sum.wrapping_sub(*h);
            }
            keep
        });
        self.sum = sum;
    }

    fn digest(&self) -> u64 {
        codec::digest(self.sum, self.entries.len())
    }
}

/// Syncs every file under `dir` (sled's log, config and blob files), then
/// the directories (new blob files' entries). A file sled removes meanwhile
/// is skipped.
fn sync_tree(dir: &std::path::Path) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for entry in std::fs::read_dir(dir)? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        let synced = match entry.file_type() {
            Ok(t) if t.is_dir() => sync_tree(&entry.path()),
            Ok(_) => std::fs::File::open(entry.path()).and_then(|f| f.sync_all()),
            Err(e) => Err(e),
        };
        match synced {
            Err(e) if !gone(&e) => return Err(e),
            _ => {}
        }
    }
    sidecar::sync_dir(dir)
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

/// One write of a batch: a value to insert, or `None` to remove the key.
type Op = (IVec, Option<IVec>);

/// Which of keysync's trees a write goes to.
#[derive(Debug, Clone, Copy)]
enum Which {
    Chain,
    Inputs,
    Journal,
}

impl Which {
    fn of(self, h: &Handles) -> &sled::Tree {
        match self {
            Which::Chain => &h.chain,
            Which::Inputs => &h.inputs,
            Which::Journal => &h.journal,
        }
    }
}

/// sled frees the pages it drops through crossbeam's global epoch
/// collector: deferred, a few bags per later operation, so most of a closed
/// database stays allocated for a long while. Each flush collects up to
/// eight expired bags (of up to 64 objects); 4096 flushes cover several
/// million objects and take about 7 ms. Measured at 1,000,000 validators:
/// 48 MiB handed back after a re-open.
fn drain_epoch_garbage() {
    for _ in 0..4096 {
        crossbeam_epoch::pin().flush();
    }
}

impl Store {
    /// What opening found: fresh, current, migrated, or rolled back (moved
    /// aside and rebuilt empty).
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// The generation of the last flush.
    pub fn generation(&self) -> u64 {
        self.ledger().generation
    }

    fn handles(&self) -> Result<&Handles, StoreError> {
        self.sled.as_ref().ok_or_else(|| {
            StoreError::Write(format!(
                "the state store in {} could not be re-opened",
                self.dir.display()
            ))
        })
    }

    /// Hands back the memory sled holds for what it wrote and read, once
    /// anything was written since it was opened (`force`: in any case, as
    /// after reading the whole store at start): closes sled and opens it
    /// again, then drains crossbeam's epoch collector (8–12 ms at 1,000,000
    /// validators). Any write, however small: what a write costs sled is
    /// out of all proportion to its bytes (at 1,000,000 validators, exits
    /// rewriting a few 51 KB chain-cache buckets a pass grew the heap by
    /// 3 MiB a pass, under 1 MB written in 15 passes; re-opening after each
    /// pass that wrote kept it flat). A quiet pass writes nothing. Nothing is lost: what was written is flushed
    /// to sled's log first (no new generation: that is [`Store::flush`]'s),
    /// and the ledger stays. The data directory stays
    /// locked throughout (`keysync.lock`, see [`Store::open`]), so no other
    /// keysync can take it in between. Returns whether it re-opened; an
    /// error leaves the store closed (reads find nothing, writes fail, so
    /// no apply starts without its journal).
    pub fn shed(&mut self, force: bool) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        if !force && !self.wrote.load(Ordering::Relaxed) {
            return Ok(false);
        }
        // What is written but not yet in sled's files goes there first.
        self.handles()?.db.flush().map_err(write_err)?;
        if let Some(h) = self.sled.take() {
            open::close(h.db);
        }
        let db_path = self.dir.join(DB_DIR);
        let h = open::reopen(&db_path, &self.chain_tree).map_err(|detail| StoreError::Open {
            path: self.dir.clone(),
            detail,
        })?;
        self.sled = Some(h);
        self.wrote.store(false, Ordering::Relaxed);
        drain_epoch_garbage();
        Ok(true)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every write goes through here: the batch and the store's record of
    /// its new digest are one sled transaction (recovered whole or not at
    /// all), and the ledger follows.
    fn write(&self, which: Which, ops: Vec<Op>) -> Result<(), StoreError> {
        let h = self.handles()?;
        let tree = which.of(h);
        let name = tree.name();
        let mut ledger = self.ledger();
        let mut changes = HashMap::with_capacity(ops.len());
        let mut batch = sled::Batch::default();
        for (k, v) in ops {
            changes.insert(
                k.clone(),
                v.as_ref().map(|v| codec::entry_hash(&name, &k, v)),
            );
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        let content = ledger.digest_after(&name, &changes).to_be_bytes();
        let meta: &sled::Tree = &h.db;
        (tree, meta)
            .transaction(|(t, m)| {
                t.apply_batch(&batch)?;
                m.insert(CONTENT_KEY, &content)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| write_err(format!("{e:?}")))?;
        ledger.apply(&name, changes);
        self.wrote.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The cached chain knowledge.
    pub fn load_cache(&self) -> ChainCache {
        let mut cache = ChainCache::new();
        let Some(h) = &self.sled else {
            return cache;
        };
        for (k, v) in h.chain.iter().flatten() {
            let Ok(bucket) = <[u8; 8]>::try_from(&*k).map(u64::from_be_bytes) else {
                continue;
            };
            decode_bucket(bucket, &v, |index, known| cache.restore(index, known));
        }
        cache
    }

    /// Persists the cache entries changed since the last save. Entries are
    /// stored in buckets of [`BUCKET`] consecutive indices, one sled key per
    /// bucket: sled spends kilobytes of memory per key, so 100,000 keys
    /// would cost ~450 MB where 100 buckets cost a few.
    pub fn save_cache(&self, cache: &mut ChainCache) -> Result<usize, StoreError> {
        let dirty = cache.take_dirty();
        if dirty.is_empty() {
            return Ok(0);
        }
        let mut buckets: Vec<u64> = dirty.iter().map(|i| i / BUCKET).collect();
        buckets.dedup();
        let mut ops = Vec::with_capacity(buckets.len());
        for b in buckets {
            let entries: Vec<(u64, crate::cache::Known)> = (b * BUCKET..(b + 1) * BUCKET)
                .filter_map(|i| cache.get(i).map(|k| (i, k)))
                .collect();
            let v = encode_bucket(entries.iter().map(|(i, k)| (*i, k)));
            ops.push((IVec::from(&b.to_be_bytes()), Some(IVec::from(v))));
        }
        self.write(Which::Chain, ops)?;
        Ok(dirty.len())
    }

    /// The last good content of a source; `None` if there is none, or if
    /// what is stored does not check out (then it is forgotten, so the next
    /// save writes every chunk).
    pub fn load_source(&self, key: &str) -> Option<SourceContent> {
        let inputs = &self.sled.as_ref()?.inputs;
        let m = inputs.get(manifest_key(key)).ok().flatten()?;
        let loaded = Manifest::decode(&m).and_then(|m| {
            let mut bytes = Vec::with_capacity(m.len);
            for (n, hash) in m.hashes.iter().enumerate() {
                let chunk = inputs.get(chunk_key(key, n)).ok().flatten()?;
                if chunk_hash(&chunk) != *hash {
                    return None;
                }
                bytes.extend_from_slice(&chunk);
            }
            (bytes.len() == m.len)
                .then(|| decode_source(&bytes))
                .flatten()
        });
        if loaded.is_none() {
            tracing::warn!(
                input = key,
                "stored last good content of an input is damaged; forgetting it"
            );
            let _ = self.remove_source(key);
        }
        loaded
    }

    pub fn source_keys(&self) -> Vec<String> {
        let Some(h) = &self.sled else {
            return Vec::new();
        };
        h.inputs
            .scan_prefix(b"m")
            .keys()
            .flatten()
            .map(|k| String::from_utf8_lossy(&k[1..]).into_owned())
            .collect()
    }

    /// Saves a source's content; returns how many chunks were written.
    /// Writes the chunks whose hash changed, the manifest, and removes
    /// chunks past the end, in one atomic batch. Content the format cannot
    /// hold (see [`MAX_CHAIN_ID_BYTES`]) is refused with
    /// [`StoreError::Encode`], never cut.
    pub fn save_source(&self, key: &str, content: &SourceContent) -> Result<usize, StoreError> {
        let bytes = encode_source(content).map_err(|e| match e {
            StoreError::Encode(why) => StoreError::Encode(format!("input {key}: {why}")),
            other => other,
        })?;
        let old = self
            .handles()?
            .inputs
            .get(manifest_key(key))
            .map_err(write_err)?
            .and_then(|m| Manifest::decode(&m))
            .map(|m| m.hashes)
            .unwrap_or_default();
        let new = Manifest {
            len: bytes.len(),
            hashes: bytes.chunks(CHUNK).map(chunk_hash).collect(),
        };
        let mut ops = Vec::new();
        for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
            if old.get(n) != Some(&new.hashes[n]) {
                ops.push((IVec::from(chunk_key(key, n)), Some(IVec::from(chunk))));
            }
        }
        let written = ops.len();
        for n in new.hashes.len()..old.len() {
            ops.push((IVec::from(chunk_key(key, n)), None));
        }
        ops.push((
            IVec::from(manifest_key(key)),
            Some(IVec::from(new.encode())),
        ));
        self.write(Which::Inputs, ops)?;
        Ok(written)
    }

    pub fn remove_source(&self, key: &str) -> Result<(), StoreError> {
        let mut ops: Vec<Op> = vec![(IVec::from(manifest_key(key)), None)];
        for k in self.handles()?.inputs.scan_prefix(chunk_prefix(key)).keys() {
            ops.push((k.map_err(write_err)?, None));
        }
        self.write(Which::Inputs, ops)
    }

    pub fn journal(&self) -> Option<JournalEntry> {
        let v = self
            .sled
            .as_ref()?
            .journal
            .get(JOURNAL_KEY)
            .ok()
            .flatten()?;
        serde_json::from_slice(&v).ok()
    }

    /// Records the apply in flight and flushes it (a new generation) to
    /// disk before any write.
    pub fn journal_begin(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        self.journal_update(entry)?;
        self.flush()
    }

    pub fn journal_update(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(write_err)?;
        self.write(
            Which::Journal,
            vec![(IVec::from(JOURNAL_KEY), Some(IVec::from(bytes)))],
        )
    }

    pub fn journal_clear(&self) -> Result<(), StoreError> {
        self.write(Which::Journal, vec![(IVec::from(JOURNAL_KEY), None)])
    }

    /// Makes every write so far durable as a new generation: records the
    /// generation and the digest of the content in the store, has sled
    /// flush (fsync), then replaces the generation file next to the store
    /// (write, fsync, rename, fsync the directory). A crash between the two
    /// leaves the store one generation ahead of the file, which the next
    /// open accepts.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut ledger = self.ledger();
        let next = ledger.generation + 1;
        let digest = ledger.digest();
        let mut batch = sled::Batch::default();
        batch.insert(GENERATION_KEY, &next.to_be_bytes());
        batch.insert(DIGEST_KEY, &digest.to_be_bytes());
        batch.insert(CONTENT_KEY, &digest.to_be_bytes());
        let h = self.handles()?;
        h.db.apply_batch(batch).map_err(write_err)?;
        ledger.generation = next;
        h.db.flush().map_err(write_err)?;
        let file = sidecar::Sidecar {
            store_id: ledger.store_id,
            generation: next,
            digest,
        };
        // sled's flush leaves the file's metadata and its blob files to the
        // page cache: sync them, so the generation file never claims what a
        // power cut could take; meanwhile the next generation file is
        // written aside (two fsyncs at once cost about one).
        let (synced, prepared) = std::thread::scope(|s| {
            let prepared = s.spawn(|| sidecar::prepare(&self.dir, &file));
            let synced = sync_tree(&self.dir.join(DB_DIR));
            let prepared = prepared
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("panicked")));
            (synced, prepared)
        });
        synced.map_err(|e| write_err(format!("cannot sync the store's files: {e}")))?;
        prepared
            .and_then(|()| sidecar::commit(&self.dir))
            .map_err(|e| {
                StoreError::Write(format!(
                    "the store is flushed but its generation file could not be written: {e}"
                ))
            })
    }
}

#[cfg(test)]
mod tests;

impl crate::inputs::Keep for Store {
    fn load_source(&self, key: &str) -> Option<SourceContent> {
        Store::load_source(self, key)
    }
    fn source_keys(&self) -> Vec<String> {
        Store::source_keys(self)
    }
    fn save_source(&self, key: &str, content: &SourceContent) -> Result<usize, String> {
        Store::save_source(self, key, content).map_err(|e| e.to_string())
    }
    fn remove_source(&self, key: &str) -> Result<(), String> {
        Store::remove_source(self, key).map_err(|e| e.to_string())
    }
}
