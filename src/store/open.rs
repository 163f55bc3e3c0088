//! Opening the store: the bounded wait for another process's lock, the
//! proof that the store is current (or moving it aside), the schema
//! migration, and the first flush that records where it stands.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sled::IVec;

use super::codec::{be_u64, decode_source, entry_hash};
use super::sidecar::{self, Sidecar};
use super::{
    write_err, Handles, Ledger, Opened, Store, StoreError, Unproven, Which, CONTENT_KEY, DB_DIR,
    DIGEST_KEY, GENERATION_KEY, SCHEMA, SCHEMA_KEY, SCHEMA_V2, STORE_ID_KEY,
};
use crate::domain::ChainId;

/// How long [`Store::open`] waits for the lock of another process on the
/// store (a previous keysync still exiting, on a restart) before refusing
/// with [`StoreError::Locked`]. The wait blocks the calling thread, in
/// steps of [`LOCK_RETRY`].
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The step of that wait. A fixed poll, not a [`crate::backoff::Backoff`]:
/// nothing failed and nobody is being spared load; the lock goes when the
/// other process exits, and a growing step would only add to the restart's
/// latency (one waiter: no jitter to spread).
const LOCK_RETRY: Duration = Duration::from_millis(100);

const DEFAULT_TREE: &[u8] = b"__sled__default";

enum OpenFail {
    Locked,
    Broken(String),
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Opens sled once, turning its panics on damaged files into errors.
fn try_open(path: &Path) -> Result<sled::Db, OpenFail> {
    let path = path.to_path_buf();
    let opened = catch_unwind(move || {
        // A small page cache: the store is read once, at start, and written
        // a few buckets a pass (16 → 4 MB: the daemon's steady RSS at
        // 100,000 validators 61 → 57 MiB, see BENCHMARKS.md).
        sled::Config::new()
            .path(path)
            .cache_capacity(4 << 20)
            .open()
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        // sled reports a held lock as an I/O error "could not acquire lock".
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("lock") => Err(OpenFail::Locked),
        Ok(Err(e)) => Err(OpenFail::Broken(e.to_string())),
        Err(p) => Err(OpenFail::Broken(format!(
            "sled panicked: {}",
            panic_text(&*p)
        ))),
    }
}

/// Runs `attempt` until it is not `busy` (another process holds a lock),
/// waiting at most [`LOCK_WAIT`] in steps of [`LOCK_RETRY`]; the last
/// answer stands.
fn waiting<T, E>(
    mut attempt: impl FnMut() -> Result<T, E>,
    busy: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match attempt() {
            Err(e) if busy(&e) && Instant::now() + LOCK_RETRY <= deadline => {
                std::thread::sleep(LOCK_RETRY)
            }
            other => return other,
        }
    }
}

/// Opens sled, waiting at most [`LOCK_WAIT`] for another process's lock.
fn open_waiting(path: &Path) -> Result<sled::Db, OpenFail> {
    waiting(|| try_open(path), |e| matches!(e, OpenFail::Locked))
}

/// Opens sled again for a store already proven and locked (see
/// [`Store::shed`]), with its trees.
pub(super) fn reopen(db_path: &Path, chain_tree: &str) -> Result<Handles, String> {
    let db = match open_waiting(db_path) {
        Ok(db) => db,
        Err(OpenFail::Locked) => return Err("its sled files are locked by another process".into()),
        Err(OpenFail::Broken(why)) => return Err(why),
    };
    Handles::over(db, chain_tree).map_err(|e| e.to_string())
}

/// Takes the data directory's lock (`keysync.lock`), waiting at most
/// [`LOCK_WAIT`] for another process to let it go. Held for the store's
/// life, around sled's own lock, so that re-opening sled
/// ([`Store::shed`]) leaves no moment for another keysync to take it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = super::lock_file(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            detail: format!("cannot open its lock file {}: {e}", path.display()),
        })?;
    match waiting(
        || file.try_lock(),
        |e| matches!(e, std::fs::TryLockError::WouldBlock),
    ) {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Open {
            path: dir.to_path_buf(),
            detail: format!("cannot lock {}: {e}", path.display()),
        }),
    }
}

impl Handles {
    fn over(db: sled::Db, chain_tree: &str) -> Result<Handles, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(write_err);
        Ok(Handles {
            chain: tree(chain_tree)?,
            inputs: tree("inputs")?,
            journal: tree("journal")?,
            db,
        })
    }
}

/// The generation record read from the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Meta {
    store_id: Option<u64>,
    generation: Option<u64>,
    /// The digest at that generation's flush.
    digest: Option<u64>,
    /// The digest of the content, as recorded by the last write.
    content: Option<u64>,
}

/// Every entry of every tree, read to the end: what the store holds.
struct Scan {
    meta: Meta,
    schema: Option<IVec>,
    /// Keys in the default tree that are not ours.
    foreign: bool,
    entries: HashMap<(IVec, IVec), u64>,
    sum: u64,
}

impl Scan {
    fn digest(&self) -> u64 {
        super::codec::digest(self.sum, self.entries.len())
    }
}

/// Reads the whole store (sled reads lazily: a damaged page shows only
/// when it is read, so all of it is read now). An error or a panic is
/// `Err(why)`.
fn scan(db: &sled::Db) -> Result<Scan, String> {
    let read = || -> Result<Scan, String> {
        let err = |e: sled::Error| e.to_string();
        let u64_at = |key: &[u8]| -> Result<Option<u64>, String> {
            match db.get(key).map_err(err)? {
                None => Ok(None),
                Some(v) => be_u64(&v)
                    .map(Some)
                    .ok_or_else(|| format!("malformed {} record", String::from_utf8_lossy(key))),
            }
        };
        let meta = Meta {
            store_id: u64_at(STORE_ID_KEY)?,
            generation: u64_at(GENERATION_KEY)?,
            digest: u64_at(DIGEST_KEY)?,
            content: u64_at(CONTENT_KEY)?,
        };
        let schema = db.get(SCHEMA_KEY).map_err(err)?;
        let mut foreign = false;
        for kv in db.iter() {
            let (k, _) = kv.map_err(err)?;
            foreign |= ![
                SCHEMA_KEY,
                STORE_ID_KEY,
                GENERATION_KEY,
                DIGEST_KEY,
                CONTENT_KEY,
            ]
            .contains(&k.as_ref());
        }
        let mut entries = HashMap::new();
        let mut sum = 0u64;
        for name in db.tree_names() {
            if name.as_ref() == DEFAULT_TREE {
                continue;
            }
            let tree = db.open_tree(&name).map_err(err)?;
            for kv in tree.iter() {
                let (k, v) = kv.map_err(err)?;
                let h = entry_hash(&name, &k, &v);
                sum = sum.wrapping_add(h);
                entries.insert((name.clone(), k), h);
            }
        }
        Ok(Scan {
            meta,
            schema,
            foreign,
            entries,
            sum,
        })
    };
    catch_unwind(AssertUnwindSafe(read))
        .unwrap_or_else(|p| Err(format!("sled panicked reading it: {}", panic_text(&*p))))
}

/// Drops a sled handle whose files may be damaged (its drop flushes).
pub(super) fn close(db: sled::Db) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
}

/// How a store that proved itself is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    /// Nothing stored.
    Fresh,
    /// Generation at least the file's, content checked.
    Current,
    /// From before generations (no generation file yet, or one that claims
    /// nothing): accepted once.
    Legacy,
}

/// Whether a store with this record, content (`digest`, `empty`) and
/// generation file proves it is current.
fn decide(
    file: &Result<Option<Sidecar>, String>,
    meta: &Meta,
    digest: u64,
    empty: bool,
) -> Result<Accepted, Unproven> {
    let file = match file {
        Err(why) => return Err(Unproven::BadGenerationFile(why.clone())),
        Ok(None) if empty => return Ok(Accepted::Fresh),
        Ok(None) => {
            return match meta.generation {
                None => Ok(Accepted::Legacy),
                Some(found) => Err(Unproven::NoGenerationFile { found }),
            }
        }
        Ok(Some(s)) => s,
    };
    let expected = file.generation;
    if let Some(found) = meta.store_id {
        if expected > 0 && found != file.store_id {
            return Err(Unproven::OtherStore {
                found,
                expected: file.store_id,
            });
        }
    }
    let found = meta.generation.unwrap_or(0);
    if found < expected {
        return Err(if empty {
            Unproven::Missing { expected }
        } else {
            Unproven::Behind { found, expected }
        });
    }
    if meta.generation.is_none() {
        // The file claims nothing (generation 0: written before the first
        // flush of a new or migrating store).
        return Ok(if empty {
            Accepted::Fresh
        } else {
            Accepted::Legacy
        });
    }
    // The content must be what the store recorded with its last write
    // (both are in one transaction); and when nothing changed since the
    // flush the file recorded, what the file recorded.
    let unchanged = found == expected && meta.digest.is_some() && meta.digest == meta.content;
    if meta.content != Some(digest) || (unchanged && file.digest != digest) {
        return Err(Unproven::DigestMismatch { generation: found });
    }
    Ok(Accepted::Current)
}

enum Assessed {
    Accept {
        db: sled::Db,
        scan: Scan,
        how: Accepted,
        v2: bool,
    },
    Reject(Unproven),
}

/// Opens the store at `db_path` and judges it against the generation file.
fn assess(db_path: &Path, file: &Result<Option<Sidecar>, String>) -> Result<Assessed, StoreError> {
    let existed = db_path.exists();
    if !existed {
        // Nothing to open: judged as an empty store, without creating one.
        if let Err(why) = decide(file, &Meta::default(), 0, true) {
            return Ok(Assessed::Reject(why));
        }
    }
    let db = match open_waiting(db_path) {
        Ok(db) => db,
        Err(OpenFail::Locked) => {
            return Err(StoreError::Locked(
                db_path.parent().unwrap_or(db_path).to_path_buf(),
            ))
        }
        Err(OpenFail::Broken(detail)) if !existed => {
            return Err(StoreError::Open {
                path: db_path.to_path_buf(),
                detail,
            })
        }
        Err(OpenFail::Broken(why)) => return Ok(Assessed::Reject(Unproven::Corrupt(why))),
    };
    let scan = match scan(&db) {
        Ok(s) => s,
        Err(why) => {
            close(db);
            return Ok(Assessed::Reject(Unproven::Corrupt(why)));
        }
    };
    let empty = scan.entries.is_empty();
    let v2 = scan.schema.as_deref() == Some(SCHEMA_V2);
    let schema_ok = match scan.schema.as_deref() {
        Some(s) => s == SCHEMA || s == SCHEMA_V2,
        None => empty && !scan.foreign,
    };
    if !schema_ok {
        let why = match &scan.schema {
            Some(s) => format!("unknown schema {:?}", String::from_utf8_lossy(s)),
            None => "no schema marker (foreign data)".into(),
        };
        close(db);
        return Ok(Assessed::Reject(Unproven::Foreign(why)));
    }
    match decide(file, &scan.meta, scan.digest(), empty) {
        Ok(how) => Ok(Assessed::Accept { db, scan, how, v2 }),
        Err(why) => {
            close(db);
            Ok(Assessed::Reject(why))
        }
    }
}

/// Renames the store aside (keeping a copy of its generation file inside)
/// and says where; `None` when there is no store to move.
fn move_aside(dir: &Path, db_path: &Path) -> Result<Option<PathBuf>, StoreError> {
    if !db_path.exists() {
        return Ok(None);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut aside = dir.join(format!("{DB_DIR}.unusable-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.join(format!("{DB_DIR}.unusable-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(db_path, &aside).map_err(|e| StoreError::Open {
        path: db_path.to_path_buf(),
        detail: format!("it cannot prove it is current and cannot be moved aside: {e}"),
    })?;
    let _ = std::fs::copy(sidecar::path(dir), aside.join(sidecar::FILE));
    let _ = sidecar::sync_dir(dir);
    Ok(Some(aside))
}

/// Moves an unproven store aside, loudly, and opens a new empty one.
fn rebuild(
    dir: &Path,
    db_path: &Path,
    why: Unproven,
) -> Result<(sled::Db, Scan, Opened), StoreError> {
    let moved_to = move_aside(dir, db_path)?;
    tracing::error!(
        data_dir = %dir.display(),
        moved_to = %moved_to.as_deref().map_or_else(|| "(nothing to move)".into(), |p| p.display().to_string()),
        reason = %why,
        "STATE STORE ROLLED BACK: it cannot prove it is current, so it was moved aside and rebuilt empty; \
         no input's last good content is taken from it (every input is read afresh) and the chain cache is rebuilt"
    );
    let db = try_open(db_path).map_err(|e| StoreError::Open {
        path: db_path.to_path_buf(),
        detail: match e {
            OpenFail::Locked => "locked".into(),
            OpenFail::Broken(d) => d,
        },
    })?;
    let scan = scan(&db).map_err(|detail| StoreError::Open {
        path: db_path.to_path_buf(),
        detail,
    })?;
    Ok((db, scan, Opened::RolledBack { moved_to, why }))
}

impl Store {
    /// Opens (or creates) the store in `dir` for `chain_id`, and proves it
    /// is current (see [`Store::opened`] for the outcome).
    ///
    /// Blocking: reads the whole store once (tens of milliseconds for a
    /// store of 100,000 validators), flushes it (a new generation), and, if
    /// another process holds the store's lock, waits up to [`LOCK_WAIT`]
    /// (5 s) for it before returning [`StoreError::Locked`]. Call it from a
    /// blocking context (`spawn_blocking`) on an async runtime.
    ///
    /// A store that cannot prove it is current (older generation than its
    /// generation file, damaged, unreadable, foreign, missing) is moved
    /// aside to `keysync.sled.unusable-<unix time>` and rebuilt empty, with
    /// an error log naming the data directory, where it went and why. Only
    /// when that rename (or creating a new store) fails is it an error.
    pub fn open(dir: &Path, chain_id: &ChainId) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let lock = lock_dir(dir)?;
        let db_path = dir.join(DB_DIR);
        let file = sidecar::read(dir);
        let (db, scan, opened, v2) = match assess(&db_path, &file)? {
            Assessed::Accept { db, scan, how, v2 } => {
                let opened = match how {
                    Accepted::Fresh => Opened::Fresh,
                    _ if v2 => Opened::Migrated { from: "schema v2" },
                    Accepted::Legacy => Opened::Migrated {
                        from: "a store without a generation file",
                    },
                    Accepted::Current => Opened::Current {
                        generation: scan.meta.generation.unwrap_or_default(),
                    },
                };
                (db, scan, opened, v2)
            }
            Assessed::Reject(why) => {
                let (db, scan, opened) = rebuild(dir, &db_path, why)?;
                (db, scan, opened, false)
            }
        };
        // Ahead of its generation file: a crash between a flush and the
        // file's update (the flush below rewrites it).
        let behind = match (&file, scan.meta.generation) {
            (Ok(Some(s)), Some(g)) => scan.meta.store_id == Some(s.store_id) && s.generation < g,
            _ => false,
        };
        let mut store = Store::assemble(dir, chain_id, &file, db, scan, opened)?;
        store.lock = Some(lock);
        if v2 {
            match store.migrate_v2() {
                Ok(n) => tracing::info!(inputs = n, "state store migrated from schema v2"),
                Err(why) => {
                    let lock = store.lock.take();
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(store)));
                    let why = Unproven::Corrupt(format!("cannot migrate from schema v2: {why}"));
                    let (db, scan, opened) = rebuild(dir, &db_path, why)?;
                    store = Store::assemble(dir, chain_id, &file, db, scan, opened)?;
                    store.lock = lock;
                }
            }
        }
        store
            .handles()?
            .db
            .insert(SCHEMA_KEY, SCHEMA)
            .map_err(write_err)?;
        store.flush()?;
        match &store.opened {
            Opened::Fresh => tracing::info!(data_dir = %dir.display(), "new state store created"),
            Opened::Current { generation } => {
                if behind {
                    tracing::info!(
                        generation,
                        "state store is ahead of its generation file (a crash between a flush and the file's update); the file is rewritten"
                    );
                }
                tracing::info!(generation, data_dir = %dir.display(), "state store is current")
            }
            Opened::Migrated { from } => tracing::info!(
                data_dir = %dir.display(),
                from,
                "state store from an earlier version accepted once; its generation file is written now"
            ),
            Opened::RolledBack { .. } => {}
        }
        Ok(store)
    }

    /// The store over an accepted (or new) sled handle: its id recorded
    /// (next to it first), its trees open, its ledger from the scan.
    fn assemble(
        dir: &Path,
        chain_id: &ChainId,
        file: &Result<Option<Sidecar>, String>,
        db: sled::Db,
        scan: Scan,
        opened: Opened,
    ) -> Result<Store, StoreError> {
        let store_id = scan.meta.store_id.unwrap_or_else(rand::random);
        // A new store id is written next to the store before the store holds
        // it, claiming nothing yet (generation 0): a crash before the first
        // flush leaves a file that accepts the new store.
        if !matches!(file, Ok(Some(s)) if s.store_id == store_id) {
            sidecar::write(
                dir,
                &Sidecar {
                    store_id,
                    generation: 0,
                    digest: 0,
                },
            )
            .map_err(|e| StoreError::Open {
                path: dir.to_path_buf(),
                detail: format!("cannot write its generation file: {e}"),
            })?;
        }
        if scan.meta.store_id.is_none() {
            db.insert(STORE_ID_KEY, &store_id.to_be_bytes())
                .map_err(write_err)?;
        }
        let chain_tree = format!("chain:{}", chain_id.as_str());
        Ok(Store {
            sled: Some(Handles::over(db, &chain_tree)?),
            chain_tree,
            wrote: Default::default(),
            lock: None,
            ledger: Mutex::new(Ledger {
                store_id,
                generation: scan.meta.generation.unwrap_or(0),
                entries: scan.entries,
                sum: scan.sum,
            }),
            dir: dir.to_path_buf(),
            opened,
        })
    }

    /// v2 kept each input in one blob in `sources`: re-save them chunked,
    /// drop the old tree, then mark the store v3 (by the caller). A crash
    /// part-way leaves the v2 marker, and the migration runs again.
    fn migrate_v2(&self) -> Result<usize, String> {
        let db = &self.handles().map_err(|e| e.to_string())?.db;
        let old = db.open_tree("sources").map_err(|e| e.to_string())?;
        let mut n = 0;
        for item in old.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(&k);
            match decode_source(&v) {
                Some(content) => {
                    self.save_source(&key, &content)
                        .map_err(|e| e.to_string())?;
                    n += 1;
                }
                None => {
                    tracing::warn!(input = %key, "unreadable stored input dropped in the migration")
                }
            }
        }
        // Not one transaction with the record of the content: a crash in
        // between leaves a store without a generation yet, which is not
        // checked against its record (and migrates again).
        db.drop_tree("sources").map_err(|e| e.to_string())?;
        self.ledger().drop_tree(b"sources");
        self.write(Which::Inputs, Vec::new())
            .map_err(|e| e.to_string())?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
