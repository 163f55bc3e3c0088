//! The daemon's local state in an embedded sled store under `--data-dir`.
//!
//! Owns what keysync keeps between runs, every tree a cache or a journal
//! that can be rebuilt from the beacon node and the registry:
//! - `chain:<chain id>`: index → pubkey + last known status (`ChainCache`);
//! - `inputs`: the last content of each input that parsed (invariant 1), in
//!   chunks of 64 KiB with a manifest of their hashes, so saving a changed
//!   input writes only the chunks that changed (an append: two or three);
//! - `journal`: the apply in flight, so a kill mid-apply is seen and resumed;
//! - the default tree: the schema version.
//!
//! A store of the previous schema (v2: each input in one blob) is migrated
//! in place. An unknown, foreign or corrupt store is moved aside and rebuilt,
//! never a crash loop; a store locked by another keysync is refused (two
//! writers must not share one directory). Never holds the API key or any
//! secret.

use std::path::{Path, PathBuf};

use crate::cache::{ChainCache, Known};
use crate::domain::{ChainId, Pubkey, Status};
use crate::sources::{Record, SourceContent};

const SCHEMA_KEY: &[u8] = b"schema";
const SCHEMA: &[u8] = b"keysync-store-v3";
/// The previous schema: migrated on open.
const SCHEMA_V2: &[u8] = b"keysync-store-v2";
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
    inputs: sled::Tree,
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
    std::panic::catch_unwind(move || {
        // A small page cache: the store's working set is a few megabytes.
        sled::Config::new()
            .path(path)
            .cache_capacity(16 << 20)
            .open()
    })
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
                Err(_) if matches!(db.get(SCHEMA_KEY), Ok(Some(v)) if v.as_ref() == SCHEMA_V2) => {
                    match Self::migrate_v2(&db) {
                        Ok(n) => {
                            tracing::info!(inputs = n, "state store migrated from schema v2");
                            db
                        }
                        Err(why) => {
                            drop(db);
                            Self::move_aside(&db_path, &format!("cannot migrate from v2: {why}"))?;
                            try_open(&db_path).map_err(|e| StoreError::Open {
                                path: db_path.clone(),
                                detail: e.to_string(),
                            })?
                        }
                    }
                }
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
            inputs: tree("inputs")?,
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

    /// v2 kept each input in one blob in `sources`: re-save them chunked,
    /// then mark the store v3 and drop the old tree. A crash part-way leaves
    /// the v2 marker, and the migration runs again.
    fn migrate_v2(db: &sled::Db) -> Result<usize, String> {
        let old = db.open_tree("sources").map_err(|e| e.to_string())?;
        let inputs = db.open_tree("inputs").map_err(|e| e.to_string())?;
        let mut n = 0;
        for item in old.iter() {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(&k);
            match decode_source(&v) {
                Some(content) => {
                    save_chunked(&inputs, &key, &content).map_err(|e| e.to_string())?;
                    n += 1;
                }
                None => {
                    tracing::warn!(input = %key, "unreadable stored input dropped in the migration")
                }
            }
        }
        inputs.flush().map_err(|e| e.to_string())?;
        db.insert(SCHEMA_KEY, SCHEMA).map_err(|e| e.to_string())?;
        db.flush().map_err(|e| e.to_string())?;
        db.drop_tree("sources").map_err(|e| e.to_string())?;
        Ok(n)
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

    /// The last good content of a source; `None` if there is none, or if
    /// what is stored does not check out (then it is forgotten, so the next
    /// save writes every chunk).
    pub fn load_source(&self, key: &str) -> Option<SourceContent> {
        let m = self.inputs.get(manifest_key(key)).ok().flatten()?;
        let loaded = Manifest::decode(&m).and_then(|m| {
            let mut bytes = Vec::with_capacity(m.len);
            for (n, hash) in m.hashes.iter().enumerate() {
                let chunk = self.inputs.get(chunk_key(key, n)).ok().flatten()?;
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
        self.inputs
            .scan_prefix(b"m")
            .keys()
            .flatten()
            .map(|k| String::from_utf8_lossy(&k[1..]).into_owned())
            .collect()
    }

    /// Saves a source's content; returns how many chunks were written.
    pub fn save_source(&self, key: &str, content: &SourceContent) -> Result<usize, StoreError> {
        save_chunked(&self.inputs, key, content)
    }

    pub fn remove_source(&self, key: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(manifest_key(key));
        for k in self.inputs.scan_prefix(chunk_prefix(key)).keys().flatten() {
            batch.remove(k);
        }
        self.inputs.apply_batch(batch).map_err(write_err)?;
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

/// Bytes per stored input chunk.
const CHUNK: usize = 64 * 1024;

fn manifest_key(key: &str) -> Vec<u8> {
    [b"m", key.as_bytes()].concat()
}

fn chunk_prefix(key: &str) -> Vec<u8> {
    // Paths never hold a NUL byte: `c<key>\0` prefixes this key's chunks only.
    [b"c", key.as_bytes(), b"\0"].concat()
}

fn chunk_key(key: &str, n: usize) -> Vec<u8> {
    [chunk_prefix(key), (n as u32).to_be_bytes().to_vec()].concat()
}

/// An input's stored form: its encoded length and one hash per chunk.
struct Manifest {
    len: usize,
    hashes: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 8 * self.hashes.len());
        v.extend_from_slice(&(self.len as u64).to_be_bytes());
        for h in &self.hashes {
            v.extend_from_slice(&h.to_be_bytes());
        }
        v
    }

    fn decode(bytes: &[u8]) -> Option<Manifest> {
        let mut r = Reader(bytes);
        let len = usize::try_from(r.u64()?).ok()?;
        let mut hashes = Vec::with_capacity(r.0.len() / 8);
        while !r.0.is_empty() {
            hashes.push(r.u64()?);
        }
        Some(Manifest { len, hashes })
    }
}

/// Writes the chunks of `content` whose hash changed, the manifest, and
/// removes chunks past the end, in one atomic batch.
fn save_chunked(
    tree: &sled::Tree,
    key: &str,
    content: &SourceContent,
) -> Result<usize, StoreError> {
    let bytes = encode_source(content);
    let old = tree
        .get(manifest_key(key))
        .map_err(write_err)?
        .and_then(|m| Manifest::decode(&m))
        .map(|m| m.hashes)
        .unwrap_or_default();
    let new = Manifest {
        len: bytes.len(),
        hashes: bytes.chunks(CHUNK).map(chunk_hash).collect(),
    };
    let mut batch = sled::Batch::default();
    let mut written = 0;
    for (n, chunk) in bytes.chunks(CHUNK).enumerate() {
        if old.get(n) != Some(&new.hashes[n]) {
            batch.insert(chunk_key(key, n), chunk);
            written += 1;
        }
    }
    for n in new.hashes.len()..old.len() {
        batch.remove(chunk_key(key, n));
    }
    batch.insert(manifest_key(key), new.encode());
    tree.apply_batch(batch).map_err(write_err)?;
    Ok(written)
}

/// A chunk's hash. Stored, so defined here once and for all (a library's
/// hash may change between versions): 64-bit multiply-xorshift over 8-byte
/// words, seeded with the length.
fn chunk_hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut words = bytes.chunks_exact(8);
    let mut h = mix(0x243F_6A88_85A3_08D3, bytes.len() as u64);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(h, u64::from_le_bytes(tail))
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
                withdrawable_epoch: None,
            });
            cache.learn(&BeaconValidator {
                index: 5000,
                pubkey: pk(50),
                status: Status::Other("new_status".into()),
                withdrawable_epoch: None,
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

    fn pubkeys(n: u64) -> SourceContent {
        SourceContent {
            pubkeys: (0..n)
                .map(|i| {
                    let mut b = [0u8; 48];
                    b[..8].copy_from_slice(&i.to_be_bytes());
                    Pubkey(b)
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn saving_an_appended_input_writes_only_the_chunks_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
        let mut content = pubkeys(100_000);
        let all = s.save_source("file:/k", &content).unwrap();
        assert_eq!(
            all,
            (12 + 100_000 * 48usize).div_ceil(CHUNK),
            "first save: every chunk"
        );
        content.pubkeys.push(Pubkey([7; 48]));
        let written = s.save_source("file:/k", &content).unwrap();
        assert!(written <= 3, "an append rewrote {written} of {all} chunks");
        assert_eq!(s.load_source("file:/k"), Some(content.clone()));
        // Shrinking drops the chunks past the end.
        let small = pubkeys(10);
        s.save_source("file:/k", &small).unwrap();
        assert_eq!(s.load_source("file:/k"), Some(small));
        assert_eq!(s.inputs.scan_prefix(chunk_prefix("file:/k")).count(), 1);
        assert_eq!(s.source_keys(), vec!["file:/k".to_string()]);
        s.remove_source("file:/k").unwrap();
        assert!(s.inputs.is_empty());
    }

    #[test]
    fn a_damaged_stored_input_is_forgotten_not_half_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
        let content = pubkeys(5_000);
        s.save_source("file:/k", &content).unwrap();
        s.inputs
            .insert(chunk_key("file:/k", 1), vec![0u8; 10])
            .unwrap();
        assert_eq!(s.load_source("file:/k"), None);
        // Forgotten, so the next save writes it whole and it loads again.
        assert_eq!(s.save_source("file:/k", &content).unwrap(), 4);
        assert_eq!(s.load_source("file:/k"), Some(content));
    }

    #[test]
    fn a_v2_store_is_migrated_with_its_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let content = pubkeys(3);
        {
            let db = sled::open(dir.path().join("keysync.sled")).unwrap();
            db.insert(SCHEMA_KEY, SCHEMA_V2).unwrap();
            let old = db.open_tree("sources").unwrap();
            old.insert(b"file:/a", encode_source(&content)).unwrap();
            old.insert(b"file:/broken", vec![1u8, 2]).unwrap();
            db.open_tree("chain:0x1").unwrap();
            db.flush().unwrap();
        }
        let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
        assert_eq!(s.load_source("file:/a"), Some(content));
        assert_eq!(s.source_keys(), vec!["file:/a".to_string()]);
        assert_eq!(s.db.get(SCHEMA_KEY).unwrap().as_deref(), Some(SCHEMA));
        assert!(!s.db.tree_names().iter().any(|t| t.as_ref() == b"sources"));
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("unusable"))
            .count();
        assert_eq!(aside, 0, "migrated in place, not moved aside");
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
