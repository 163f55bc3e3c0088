use super::*;
use crate::beacon::BeaconValidator;
use crate::domain::{ChainId, Pubkey, Status};
use crate::inputs::Record;

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
fn shedding_reopens_sled_with_everything_and_keeps_the_directory_locked() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    let mut s = Store::open(dir.path(), &chain).unwrap();
    let mut cache = ChainCache::new();
    for i in 0..3000u64 {
        cache.learn(&BeaconValidator {
            index: i,
            pubkey: Pubkey([(i % 251) as u8; 48]),
            status: Status::ActiveOngoing,
            withdrawable_epoch: Some(i),
        });
    }
    s.save_cache(&mut cache).unwrap();
    let content = SourceContent {
        pubkeys: (0..=255u8).map(pk).collect(),
        ..Default::default()
    };
    s.save_source("file:/a", &content).unwrap();
    // Not flushed yet: shedding must keep it all the same.
    assert!(s.shed(false).unwrap(), "written since opened: re-opened");
    assert!(!s.shed(false).unwrap(), "nothing written since: kept open");
    assert!(s.shed(true).unwrap());
    assert_eq!(s.load_cache().len(), 3000);
    assert_eq!(s.load_source("file:/a"), Some(content.clone()));
    // Writes go on, with the digest kept: the store still proves current.
    s.journal_begin(&JournalEntry {
        started_unix: 1,
        reasons: vec!["file".into()],
        to_assign: 1,
        to_unassign: 0,
        assigned: 0,
        unassigned: 0,
    })
    .unwrap();
    s.flush().unwrap();
    let before = s.generation();
    // The directory stays locked across the re-open.
    assert!(
        matches!(
            std::fs::File::open(lock_file(dir.path())).map(|f| f.try_lock()),
            Ok(Err(std::fs::TryLockError::WouldBlock))
        ),
        "another process could take the store"
    );
    drop(s);
    let s = Store::open(dir.path(), &chain).unwrap();
    assert_eq!(s.opened(), &Opened::Current { generation: before });
    assert_eq!(s.load_cache().len(), 3000);
    assert_eq!(s.load_source("file:/a"), Some(content));
    assert_eq!(s.journal().map(|j| j.to_assign), Some(1));
}

#[test]
fn a_second_opener_is_refused_not_clobbered() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    let _first = Store::open(dir.path(), &chain).unwrap();
    let started = std::time::Instant::now();
    match Store::open(dir.path(), &chain) {
        Err(StoreError::Locked(_)) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two writers opened one store"),
    }
    // It waited for the lock (a restart), but not for ever.
    let waited = started.elapsed();
    assert!(
        waited >= LOCK_WAIT - std::time::Duration::from_millis(250)
            && waited < LOCK_WAIT + std::time::Duration::from_secs(2),
        "waited {waited:?}"
    );
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
    assert_eq!(
        s.handles()
            .unwrap()
            .inputs
            .scan_prefix(chunk_prefix("file:/k"))
            .count(),
        1
    );
    assert_eq!(s.source_keys(), vec!["file:/k".to_string()]);
    s.remove_source("file:/k").unwrap();
    assert!(s.handles().unwrap().inputs.is_empty());
}

#[test]
fn a_damaged_stored_input_is_forgotten_not_half_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
    let content = pubkeys(5_000);
    s.save_source("file:/k", &content).unwrap();
    s.handles()
        .unwrap()
        .inputs
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
        old.insert(b"file:/a", encode_source(&content).unwrap())
            .unwrap();
        old.insert(b"file:/broken", vec![1u8, 2]).unwrap();
        db.open_tree("chain:0x1").unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
    assert_eq!(s.opened(), &Opened::Migrated { from: "schema v2" });
    assert_eq!(s.load_source("file:/a"), Some(content));
    assert_eq!(s.source_keys(), vec!["file:/a".to_string()]);
    assert_eq!(
        s.handles().unwrap().db.get(SCHEMA_KEY).unwrap().as_deref(),
        Some(SCHEMA)
    );
    assert!(!s
        .handles()
        .unwrap()
        .db
        .tree_names()
        .iter()
        .any(|t| t.as_ref() == b"sources"));
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("unusable"))
        .count();
    assert_eq!(aside, 0, "migrated in place, not moved aside");
}

#[test]
fn open_reports_fresh_then_current_and_every_flush_is_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    let g = {
        let s = Store::open(dir.path(), &chain).unwrap();
        assert_eq!(s.opened(), &Opened::Fresh);
        let g = s.generation();
        assert_eq!(g, 1, "the open flushes once");
        s.save_source("file:/a", &pubkeys(3)).unwrap();
        s.flush().unwrap();
        s.flush().unwrap();
        assert_eq!(s.generation(), g + 2);
        s.journal_begin(&JournalEntry {
            started_unix: 1,
            reasons: vec![],
            to_assign: 1,
            to_unassign: 0,
            assigned: 0,
            unassigned: 0,
        })
        .unwrap();
        assert_eq!(s.generation(), g + 3, "journal_begin flushes");
        let file = sidecar::read(dir.path()).unwrap().unwrap();
        assert_eq!(file.generation, s.generation());
        assert_eq!(file.digest, s.ledger().digest());
        s.generation()
    };
    let s = Store::open(dir.path(), &chain).unwrap();
    assert_eq!(s.opened(), &Opened::Current { generation: g });
    assert_eq!(s.generation(), g + 1);
    assert_eq!(s.load_source("file:/a"), Some(pubkeys(3)));
}

#[test]
fn the_digest_kept_by_writes_equals_the_digest_of_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    let kept = {
        let s = Store::open(dir.path(), &chain).unwrap();
        let mut cache = ChainCache::new();
        for i in [1, 2, 3000] {
            cache.learn(&BeaconValidator {
                index: i,
                pubkey: pk(i as u8),
                status: Status::ActiveOngoing,
                withdrawable_epoch: None,
            });
        }
        s.save_cache(&mut cache).unwrap();
        s.save_source("file:/a", &pubkeys(5_000)).unwrap();
        s.save_source("file:/a", &pubkeys(5_001)).unwrap();
        s.save_source("file:/b", &pubkeys(10)).unwrap();
        s.remove_source("file:/b").unwrap();
        s.journal_update(&JournalEntry {
            started_unix: 1,
            reasons: vec![],
            to_assign: 1,
            to_unassign: 0,
            assigned: 0,
            unassigned: 0,
        })
        .unwrap();
        s.journal_clear().unwrap();
        s.flush().unwrap();
        let digest = s.ledger().digest();
        digest
    };
    let s = Store::open(dir.path(), &chain).unwrap();
    assert!(matches!(s.opened(), Opened::Current { .. }));
    assert_eq!(s.ledger().digest(), kept);
}

#[test]
fn a_clean_store_whose_content_changed_behind_its_back_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    let old = pubkeys(100);
    {
        let s = Store::open(dir.path(), &chain).unwrap();
        s.save_source("file:/a", &old).unwrap();
        s.flush().unwrap();
        s.save_source("file:/a", &pubkeys(105)).unwrap();
        s.flush().unwrap();
    }
    {
        // An older input comes back, the generation record untouched (as a
        // store that lost pages but kept its record would).
        let db = sled::open(dir.path().join("keysync.sled")).unwrap();
        let inputs = db.open_tree("inputs").unwrap();
        let bytes = encode_source(&old).unwrap();
        inputs
            .insert(chunk_key("file:/a", 0), bytes.as_slice())
            .unwrap();
        let m = Manifest {
            len: bytes.len(),
            hashes: vec![chunk_hash(&bytes)],
        };
        inputs.insert(manifest_key("file:/a"), m.encode()).unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path(), &chain).unwrap();
    match s.opened() {
        Opened::RolledBack {
            moved_to: Some(aside),
            why: Unproven::DigestMismatch { .. },
        } => assert!(aside.is_dir()),
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(s.load_source("file:/a"), None, "never the older content");
}

#[test]
fn an_oversized_chain_id_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), &ChainId::new("0x1")).unwrap();
    let content = SourceContent {
        records: vec![Record {
            validator_index: 9,
            chain_id: ChainId::new(&"9".repeat(MAX_CHAIN_ID_BYTES + 1)),
            validator_key: pk(9),
        }],
        ..Default::default()
    };
    match s.save_source("file:/r.json", &content) {
        Err(e @ StoreError::Encode(_)) => {
            let text = e.to_string();
            assert!(text.contains("file:/r.json"), "{text}");
            assert!(text.contains("65535"), "{text}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    assert_eq!(s.load_source("file:/r.json"), None);
    assert!(s.source_keys().is_empty());
}

#[test]
fn writes_after_the_last_flush_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::new("0x1");
    {
        let s = Store::open(dir.path(), &chain).unwrap();
        s.save_source("file:/a", &pubkeys(3_000)).unwrap();
        s.flush().unwrap();
        // Not flushed by keysync; sled writes it out when dropped.
        s.save_source("file:/b", &pubkeys(2_000)).unwrap();
    }
    {
        let s = Store::open(dir.path(), &chain).unwrap();
        assert!(matches!(s.opened(), Opened::Current { .. }));
        assert_eq!(s.load_source("file:/b"), Some(pubkeys(2_000)));
        s.save_source("file:/b", &pubkeys(2_001)).unwrap();
    }
    {
        // A chunk of the unflushed write goes missing.
        let db = sled::open(dir.path().join("keysync.sled")).unwrap();
        db.open_tree("inputs")
            .unwrap()
            .remove(chunk_key("file:/b", 1))
            .unwrap();
        db.flush().unwrap();
    }
    let s = Store::open(dir.path(), &chain).unwrap();
    assert!(
        matches!(
            s.opened(),
            Opened::RolledBack {
                why: Unproven::DigestMismatch { .. },
                ..
            }
        ),
        "{:?}",
        s.opened()
    );
    assert_eq!(s.load_source("file:/a"), None);
}
