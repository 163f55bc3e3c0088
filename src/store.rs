//! The daemon's local state in an embedded sled store under `--data-dir`.
//!
//! Owns what keysync keeps between runs, every tree a cache or a journal
//! that can be rebuilt from the beacon node and the registry:
//! - `chain:<chain id>`: index → pubkey + last known status (`ChainCache`);
//! - `sources`: the last content of each input that parsed (invariant 1);
//! - `journal`: the apply in flight, so a kill mid-apply is seen and resumed;
//! - `meta`: the schema version.
//!
//! An unknown, foreign or corrupt store is moved aside and rebuilt, never a
//! crash loop; a store locked by another keysync is refused (two writers
//! must not share one directory). Never holds the API key or any secret.

use std::path::{Path, PathBuf};

use crate::cache::{ChainCache, Known};
use crate::domain::{ChainId, Pubkey, Status};
use crate::sources::{Record, SourceContent};

const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA: &[u8] = b"keysync-store-v2";
const JOURNAL_KEY: &[u8] = b"in_flight";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state directory {0} is in use by another keysync process (only one writer per directory)")]
    Locked(PathBuf),
    #[error("cannot open the state store in {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("state store write failed: {0}")]
    Write(String),
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
    db: sled::Db,
    chain: sled::Tree,
    sources: sled::Tree,
    journal: sled::Tree,
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("lock"))
}

/// Opens sled, turning its panics on corrupt files into errors.
fn try_open(path: &Path) -> Result<sled::Db, sled::Error> {
    let path = path.to_path_buf();
    std::panic::catch_unwind(move || sled::Config::new().path(path).open())
        .unwrap_or_else(|_| Err(sled::Error::Corruption { at: None, bt: () }))
}

impl Store {
    /// Opens (or creates) the store in `dir` for `chain_id`.
    pub fn open(dir: &Path, chain_id: &ChainId) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        })?;
        let db_path = dir.join("keysync.sled");
        // A previous keysync may still be exiting (a restart): give its
        // lock a few seconds before refusing.
        let mut opened = try_open(&db_path);
        for _ in 0..50 {
            match &opened {
                Err(e) if is_lock_error(e) => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    opened = try_open(&db_path);
                }
                _ => break,
            }
        }
        let db = match opened {
            Ok(db) => match Self::check_schema(&db) {
                Ok(()) => db,
                Err(why) => {
                    drop(db);
                    Self::move_aside(&db_path, &why)?;
                    try_open(&db_path).map_err(|e| StoreError::Open {
                        path: db_path.clone(),
                        detail: e.to_string(),
                    })?
                }
            },
            Err(e) if is_lock_error(&e) => return Err(StoreError::Locked(dir.to_path_buf())),
            Err(e) => {
                Self::move_aside(&db_path, &e.to_string())?;
                try_open(&db_path).map_err(|e| StoreError::Open {
                    path: db_path.clone(),
                    detail: e.to_string(),
                })?
            }
        };
        db.insert(SCHEMA_KEY, SCHEMA).map_err(write_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(write_err);
        Ok(Store {
            chain: tree(&format!("chain:{}", chain_id.as_str()))?,
            sources: tree("sources")?,
            journal: tree("journal")?,
            db,
        })
    }

    /// `Ok` for a new store or one of our schema; `Err(why)` otherwise.
    fn check_schema(db: &sled::Db) -> Result<(), String> {
        match db.get(SCHEMA_KEY) {
            Ok(Some(v)) if v.as_ref() == SCHEMA => Ok(()),
            Ok(Some(v)) => Err(format!("unknown schema {:?}", String::from_utf8_lossy(&v))),
            Ok(None) if db.tree_names().len() <= 1 && db.is_empty() => Ok(()),
            Ok(None) => Err("no schema marker (foreign data)".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn move_aside(db_path: &Path, why: &str) -> Result<(), StoreError> {
        if !db_path.exists() {
            return Ok(());
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let aside = db_path.with_extension(format!("sled.unusable-{stamp}"));
        tracing::warn!(path = %db_path.display(), moved_to = %aside.display(), reason = why, "state store unusable; moved aside and rebuilding (it is only a cache)");
        std::fs::rename(db_path, &aside).map_err(|e| StoreError::Open {
            path: db_path.to_path_buf(),
            detail: format!("cannot move it aside: {e}"),
        })
    }

    /// The cached chain knowledge.
    pub fn load_cache(&self) -> ChainCache {
        let mut cache = ChainCache::new();
        for (_, v) in self.chain.iter().flatten() {
            let mut r = Reader(&v);
            while !r.0.is_empty() {
                let Some((index, known)) = decode_entry(&mut r) else {
                    break;
                };
                cache.restore(index, known);
            }
        }
        cache
    }

    /// Persists the cache entries changed since the last save. Entries are
    /// stored in buckets of [`BUCKET`] consecutive indices, one sled key per
    /// bucket: sled spends kilobytes of memory per key, so 100,000 keys
    /// would cost ~450 MB where 100 buckets cost a few.
    pub fn save_cache(&self, cache: &mut ChainCache) -> Result<usize, StoreError> {
        let dirty = cache.take_dirty();
        let mut buckets: Vec<u64> = dirty.iter().map(|i| i / BUCKET).collect();
        buckets.dedup();
        let mut batch = sled::Batch::default();
        for b in buckets {
            let mut v = Vec::new();
            for i in b * BUCKET..(b + 1) * BUCKET {
                if let Some(k) = cache.get(i) {
                    encode_entry(&mut v, i, k);
                }
            }
            batch.insert(&b.to_be_bytes(), v);
        }
        self.chain.apply_batch(batch).map_err(write_err)?;
        Ok(dirty.len())
    }

    /// The last good content of a source.
    pub fn load_source(&self, key: &str) -> Option<SourceContent> {
        let v = self.sources.get(key.as_bytes()).ok().flatten()?;
        decode_source(&v)
    }

    pub fn source_keys(&self) -> Vec<String> {
        self.sources
            .iter()
            .keys()
            .flatten()
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }

    pub fn save_source(&self, key: &str, content: &SourceContent) -> Result<(), StoreError> {
        self.sources
            .insert(key.as_bytes(), encode_source(content))
            .map_err(write_err)?;
        Ok(())
    }

    pub fn remove_source(&self, key: &str) -> Result<(), StoreError> {
        self.sources.remove(key.as_bytes()).map_err(write_err)?;
        Ok(())
    }

    pub fn journal(&self) -> Option<JournalEntry> {
        let v = self.journal.get(JOURNAL_KEY).ok().flatten()?;
        serde_json::from_slice(&v).ok()
    }

    /// Records the apply in flight and flushes it to disk before any write.
    pub fn journal_begin(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(write_err)?;
        self.journal.insert(JOURNAL_KEY, bytes).map_err(write_err)?;
        self.journal.flush().map_err(write_err)?;
        Ok(())
    }

    pub fn journal_update(&self, entry: &JournalEntry) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(write_err)?;
        self.journal.insert(JOURNAL_KEY, bytes).map_err(write_err)?;
        Ok(())
    }

    pub fn journal_clear(&self) -> Result<(), StoreError> {
        self.journal.remove(JOURNAL_KEY).map_err(write_err)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(write_err)?;
        Ok(())
    }
}

/// Validators per stored cache bucket.
const BUCKET: u64 = 1024;

fn encode_entry(v: &mut Vec<u8>, index: u64, k: &Known) {
    let status = k.status.as_str().as_bytes();
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&k.pubkey.0);
    v.push(status.len().min(255) as u8);
    v.extend_from_slice(&status[..status.len().min(255)]);
}

fn decode_entry(r: &mut Reader<'_>) -> Option<(u64, Known)> {
    let index = r.u64()?;
    let pubkey = r.pubkey()?;
    let n = r.take(1)?[0] as usize;
    let status = Status::parse(std::str::from_utf8(r.take(n)?).ok()?);
    Some((index, Known { pubkey, status }))
}

fn encode_source(c: &SourceContent) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + c.pubkeys.len() * 48 + c.indices.len() * 8);
    v.extend_from_slice(&(c.pubkeys.len() as u32).to_be_bytes());
    for p in &c.pubkeys {
        v.extend_from_slice(&p.0);
    }
    v.extend_from_slice(&(c.indices.len() as u32).to_be_bytes());
    for i in &c.indices {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v.extend_from_slice(&(c.records.len() as u32).to_be_bytes());
    for r in &c.records {
        v.extend_from_slice(&r.validator_index.to_be_bytes());
        v.extend_from_slice(&r.validator_key.0);
        let chain = r.chain_id.as_str().as_bytes();
        v.extend_from_slice(&(chain.len() as u16).to_be_bytes());
        v.extend_from_slice(chain);
    }
    v
}

/// Reads bytes in order; `None` when the data ends early.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn pubkey(&mut self) -> Option<Pubkey> {
        Some(Pubkey(self.take(48)?.try_into().ok()?))
    }
}

fn decode_source(bytes: &[u8]) -> Option<SourceContent> {
    let mut r = Reader(bytes);
    let mut c = SourceContent::default();
    for _ in 0..r.u32()? {
        c.pubkeys.push(r.pubkey()?);
    }
    for _ in 0..r.u32()? {
        c.indices.push(r.u64()?);
    }
    for _ in 0..r.u32()? {
        let validator_index = r.u64()?;
        let validator_key = r.pubkey()?;
        let n = r.u16()? as usize;
        let chain = std::str::from_utf8(r.take(n)?).ok()?;
        c.records.push(Record {
            validator_index,
            chain_id: ChainId::new(chain),
            validator_key,
        });
    }
    r.0.is_empty().then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::BeaconValidator;

    fn pk(i: u8) -> Pubkey {
        Pubkey([i; 48])
    }

    #[test]
    fn cache_sources_and_journal_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainId::new("0x1");
        {
            let s = Store::open(dir.path(), &chain).unwrap();
            let mut cache = ChainCache::new();
            cache.learn(&BeaconValidator {
                index: 7,
                pubkey: pk(7),
                status: Status::ActiveExiting,
            });
            cache.learn(&BeaconValidator {
                index: 5000,
                pubkey: pk(50),
                status: Status::Other("new_status".into()),
            });
            assert_eq!(s.save_cache(&mut cache).unwrap(), 2);
            assert_eq!(
                s.save_cache(&mut cache).unwrap(),
                0,
                "only dirty entries are written"
            );
            let content = SourceContent {
                pubkeys: vec![pk(1)],
                indices: vec![5, 6],
                records: vec![Record {
                    validator_index: 9,
                    chain_id: ChainId::new("0x5"),
                    validator_key: pk(9),
                }],
            };
            s.save_source("file:/a", &content).unwrap();
            s.journal_begin(&JournalEntry {
                started_unix: 1,
                reasons: vec!["file".into()],
                to_assign: 3,
                to_unassign: 1,
                assigned: 0,
                unassigned: 0,
            })
            .unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path(), &chain).unwrap();
        let cache = s.load_cache();
        assert_eq!(
            cache.get(7).map(|k| k.status.clone()),
            Some(Status::ActiveExiting)
        );
        assert_eq!(cache.index_of(&pk(7)), Some(7));
        assert_eq!(
            cache.get(5000).map(|k| k.status.clone()),
            Some(Status::Other("new_status".into())),
            "another bucket"
        );
        assert_eq!(cache.len(), 2);
        let c = s.load_source("file:/a").unwrap();
        assert_eq!(c.indices, vec![5, 6]);
        assert_eq!(c.records[0].chain_id.as_str(), "0x5");
        assert_eq!(s.journal().map(|j| j.to_assign), Some(3));
        s.journal_clear().unwrap();
        assert!(s.journal().is_none());
    }

    #[test]
    fn a_second_opener_is_refused_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainId::new("0x1");
        let _first = Store::open(dir.path(), &chain).unwrap();
        match Store::open(dir.path(), &chain) {
            Err(StoreError::Locked(_)) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("two writers opened one store"),
        }
    }

    #[test]
    fn corrupt_or_foreign_data_is_moved_aside_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let chain = ChainId::new("0x1");
        let db_path = dir.path().join("keysync.sled");
        std::fs::create_dir_all(&db_path).unwrap();
        std::fs::write(db_path.join("conf"), b"\xff\x00garbage").unwrap();
        std::fs::write(db_path.join("db"), vec![0xAB; 4096]).unwrap();
        let s = Store::open(dir.path(), &chain).unwrap();
        s.save_source("k", &SourceContent::default()).unwrap();
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("unusable"))
            .count();
        assert_eq!(aside, 1);
        drop(s);
        // Foreign: a sled db without our schema marker.
        let dir2 = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir2.path().join("keysync.sled")).unwrap();
            db.insert(b"someone", b"else").unwrap();
            db.flush().unwrap();
        }
        let s = Store::open(dir2.path(), &chain).unwrap();
        assert!(s.load_source("someone").is_none());
    }

    #[test]
    fn truncated_source_bytes_decode_to_none() {
        let c = SourceContent {
            pubkeys: vec![pk(1)],
            indices: vec![1],
            records: vec![],
        };
        let bytes = encode_source(&c);
        assert_eq!(decode_source(&bytes), Some(c));
        assert_eq!(decode_source(&bytes[..bytes.len() - 1]), None);
    }
}
