//! Tests of the parent module.

use super::*;

const S: Sidecar = Sidecar {
    store_id: 7,
    generation: 5,
    digest: 99,
};

/// A store at `generation` whose flush recorded `flushed` and whose
/// last write recorded `content`.
fn meta(generation: u64, flushed: u64, content: u64) -> Meta {
    Meta {
        store_id: Some(7),
        generation: Some(generation),
        digest: Some(flushed),
        content: Some(content),
    }
}

#[test]
fn the_decision_table() {
    let ok = |s: Sidecar| Ok(Some(s));
    // No file.
    assert_eq!(
        decide(&Ok(None), &Meta::default(), 1, true),
        Ok(Accepted::Fresh)
    );
    assert_eq!(
        decide(&Ok(None), &Meta::default(), 1, false),
        Ok(Accepted::Legacy)
    );
    assert_eq!(
        decide(&Ok(None), &meta(3, 1, 1), 1, false),
        Err(Unproven::NoGenerationFile { found: 3 })
    );
    assert_eq!(
        decide(&Err("bad".into()), &meta(5, 99, 99), 99, false),
        Err(Unproven::BadGenerationFile("bad".into()))
    );
    // At the file's generation, nothing written since: all three agree.
    assert_eq!(
        decide(&ok(S), &meta(5, 99, 99), 99, false),
        Ok(Accepted::Current)
    );
    assert_eq!(
        decide(&ok(S), &meta(5, 99, 99), 98, false),
        Err(Unproven::DigestMismatch { generation: 5 }),
        "content lost or altered"
    );
    assert_eq!(
        decide(&ok(S), &meta(5, 98, 98), 98, false),
        Err(Unproven::DigestMismatch { generation: 5 }),
        "the store's record of that generation disagrees with the file's"
    );
    // Written since the flush: the content must match the record of
    // the last write.
    assert_eq!(
        decide(&ok(S), &meta(5, 99, 12), 12, false),
        Ok(Accepted::Current)
    );
    assert_eq!(
        decide(&ok(S), &meta(5, 99, 12), 13, false),
        Err(Unproven::DigestMismatch { generation: 5 })
    );
    let no_record = Meta {
        content: None,
        ..meta(5, 99, 0)
    };
    assert_eq!(
        decide(&ok(S), &no_record, 99, false),
        Err(Unproven::DigestMismatch { generation: 5 })
    );
    // Ahead of the file (a crash between the flush and the file's write).
    assert_eq!(
        decide(&ok(S), &meta(6, 12, 12), 12, false),
        Ok(Accepted::Current)
    );
    assert_eq!(
        decide(&ok(S), &meta(6, 12, 12), 13, false),
        Err(Unproven::DigestMismatch { generation: 6 })
    );
    // Behind, missing, another store.
    assert_eq!(
        decide(&ok(S), &meta(4, 99, 99), 99, false),
        Err(Unproven::Behind {
            found: 4,
            expected: 5
        })
    );
    assert_eq!(
        decide(&ok(S), &Meta::default(), 0, true),
        Err(Unproven::Missing { expected: 5 })
    );
    assert_eq!(
        decide(&ok(S), &Meta::default(), 0, false),
        Err(Unproven::Behind {
            found: 0,
            expected: 5
        })
    );
    let other = Meta {
        store_id: Some(8),
        ..meta(9, 1, 1)
    };
    assert_eq!(
        decide(&ok(S), &other, 1, false),
        Err(Unproven::OtherStore {
            found: 8,
            expected: 7
        })
    );
    // A file that claims nothing (generation 0) accepts any store that
    // checks out.
    let zero = Sidecar { generation: 0, ..S };
    assert_eq!(
        decide(&ok(zero), &Meta::default(), 0, true),
        Ok(Accepted::Fresh)
    );
    assert_eq!(
        decide(&ok(zero), &Meta::default(), 1, false),
        Ok(Accepted::Legacy)
    );
    assert_eq!(decide(&ok(zero), &other, 1, false), Ok(Accepted::Current));
}
