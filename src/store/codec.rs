//! The store's byte formats: sled keys, the input manifest, the encoded
//! input and cache entries, and the hashes the store keeps on disk.
//!
//! Everything here is stored, so it is defined here once and for all (a
//! library's encoding or hash may change between versions). Decoding never
//! panics: bytes that do not check out decode to `None`.

use crate::cache::Known;
use crate::domain::{ChainId, Pubkey, Status};
use crate::inputs::{Record, SourceContent};

use super::StoreError;

/// Bytes per stored input chunk.
pub(super) const CHUNK: usize = 64 * 1024;

/// Validators per stored cache bucket.
pub(super) const BUCKET: u64 = 1024;

/// The longest chain id a stored record can hold (its length is a `u16`).
pub const MAX_CHAIN_ID_BYTES: usize = u16::MAX as usize;

/// The longest status a cache entry keeps (its length is the low 7 bits of
/// a byte). Beacon statuses are under 20 bytes; a longer one is cut at a
/// character boundary, so it still decodes.
#[cfg(test)]
const MAX_STATUS_BYTES: usize = 0x7f;

/// The length byte's top bit: a `withdrawable_epoch` (8 bytes) follows the
/// status. Entries written before it existed never set it.
const HAS_WITHDRAWABLE: u8 = 0x80;

pub(super) fn manifest_key(key: &str) -> Vec<u8> {
    [b"m", key.as_bytes()].concat()
}

pub(super) fn chunk_prefix(key: &str) -> Vec<u8> {
    // Paths never hold a NUL byte: `c<key>\0` prefixes this key's chunks only.
    [b"c", key.as_bytes(), b"\0"].concat()
}

pub(super) fn chunk_key(key: &str, n: usize) -> Vec<u8> {
    [chunk_prefix(key), (n as u32).to_be_bytes().to_vec()].concat()
}

/// An input's stored form: its encoded length and one hash per chunk.
pub(super) struct Manifest {
    pub len: usize,
    pub hashes: Vec<u64>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 8 * self.hashes.len());
        v.extend_from_slice(&(self.len as u64).to_be_bytes());
        for h in &self.hashes {
            v.extend_from_slice(&h.to_be_bytes());
        }
        v
    }

    pub fn decode(bytes: &[u8]) -> Option<Manifest> {
        let mut r = Reader(bytes);
        let len = usize::try_from(r.u64()?).ok()?;
        let mut hashes = Vec::with_capacity(r.0.len() / 8);
        while !r.0.is_empty() {
            hashes.push(r.u64()?);
        }
        Some(Manifest { len, hashes })
    }
}

/// A chunk's hash: 64-bit multiply-xorshift over 8-byte words, seeded with
/// the length. Also the value hash of the store's digest.
pub(super) fn chunk_hash(bytes: &[u8]) -> u64 {
    hash_with(0x243F_6A88_85A3_08D3, bytes)
}

const K: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(h: u64, w: u64) -> u64 {
    let h = (h ^ w).wrapping_mul(K);
    h ^ (h >> 29)
}

fn hash_with(seed: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut h = mix(seed, bytes.len() as u64);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(h, u64::from_le_bytes(tail))
}

/// The hash of one stored entry (tree, key, value) in the store's digest.
/// The digest is the wrapping sum of these over every entry, so one write
/// updates it without reading the rest of the store.
pub(super) fn entry_hash(tree: &[u8], key: &[u8], value: &[u8]) -> u64 {
    let h = mix(
        hash_with(0x1319_8A2E_0370_7344, tree),
        hash_with(0xA409_3822_299F_31D0, key),
    );
    let h = mix(h, chunk_hash(value));
    // A final avalanche, so that sums of entry hashes do not cancel by
    // structure.
    mix(mix(h, 0x082E_FA98_EC4E_6C89), h)
}

/// The digest of a store: the sum of its entry hashes, and their count.
pub(super) fn digest(sum: u64, entries: usize) -> u64 {
    mix(mix(0x4528_21E6_38D0_1377, sum), entries as u64)
}

/// A cache bucket in its compact form starts with these two bytes. (An
/// entry of the first form starts with a big-endian index, whose first byte
/// is 0xFF only from 2^56 on.)
const BUCKET_V2: [u8; 2] = [0xFF, 0x02];

/// A compact entry's flag: its status is a code (the low six bits) into
/// [`Status::ALL`], not a length followed by the name.
const CODED: u8 = 0x40;

/// The longest status name a compact entry keeps (six bits of length).
const MAX_CODED_NAME: usize = 0x3f;

/// A cache bucket: the entries of indices `bucket * BUCKET ..` (in
/// order), each as its offset in the bucket (2 bytes), its pubkey, a flag
/// byte with its status code (or a name's length and the name) and, when
/// flagged, its withdrawable epoch: 51 bytes an entry, where the first form
/// took 71 (sled keeps about 1.7× what is written resident).
pub(super) fn encode_bucket<'a>(entries: impl Iterator<Item = (u64, &'a Known)>) -> Vec<u8> {
    let mut v = BUCKET_V2.to_vec();
    for (index, k) in entries {
        v.extend_from_slice(&((index % BUCKET) as u16).to_be_bytes());
        v.extend_from_slice(&k.pubkey.0);
        let flag = if k.withdrawable_epoch.is_some() {
            HAS_WITHDRAWABLE
        } else {
            0
        };
        match k.status.code() {
            Some(code) => v.push(flag | CODED | code),
            None => {
                let name = k.status.as_str();
                let mut n = name.len().min(MAX_CODED_NAME);
                while !name.is_char_boundary(n) {
                    n -= 1;
                }
                v.push(flag | n as u8);
                v.extend_from_slice(&name.as_bytes()[..n]);
            }
        }
        if let Some(e) = k.withdrawable_epoch {
            v.extend_from_slice(&e.to_be_bytes());
        }
    }
    v
}

/// Decodes bucket `bucket` in either form, entry by entry, until the end
/// or the first entry that does not check out.
pub(super) fn decode_bucket(bucket: u64, bytes: &[u8], mut f: impl FnMut(u64, Known)) {
    let Some(rest) = bytes.strip_prefix(&BUCKET_V2) else {
        let mut r = Reader(bytes);
        while let Some((index, known)) = decode_entry(&mut r) {
            f(index, known);
        }
        return;
    };
    let mut r = Reader(rest);
    let base = bucket.saturating_mul(BUCKET);
    while !r.0.is_empty() {
        let Some(entry) = decode_compact(&mut r, base) else {
            return;
        };
        f(entry.0, entry.1);
    }
}

fn decode_compact(r: &mut Reader<'_>, base: u64) -> Option<(u64, Known)> {
    let offset = u64::from(r.u16()?);
    if offset >= BUCKET {
        return None;
    }
    let pubkey = r.pubkey()?;
    let flag = r.take(1)?[0];
    let low = usize::from(flag & MAX_CODED_NAME as u8);
    let status = if flag & CODED != 0 {
        Status::ALL.get(low)?.clone()
    } else {
        Status::parse(std::str::from_utf8(r.take(low)?).ok()?)
    };
    let withdrawable_epoch = if flag & HAS_WITHDRAWABLE != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    Some((
        base + offset,
        Known {
            pubkey,
            status,
            withdrawable_epoch,
        },
    ))
}

/// An entry of the first form (buckets written before the compact one;
/// still read, and written by the tests of that reading).
#[cfg(test)]
pub(super) fn encode_entry(v: &mut Vec<u8>, index: u64, k: &Known) {
    let status = k.status.as_str();
    let mut n = status.len().min(MAX_STATUS_BYTES);
    while !status.is_char_boundary(n) {
        n -= 1;
    }
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&k.pubkey.0);
    let flag = if k.withdrawable_epoch.is_some() {
        HAS_WITHDRAWABLE
    } else {
        0
    };
    v.push(n as u8 | flag);
    v.extend_from_slice(&status.as_bytes()[..n]);
    if let Some(e) = k.withdrawable_epoch {
        v.extend_from_slice(&e.to_be_bytes());
    }
}

pub(super) fn decode_entry(r: &mut Reader<'_>) -> Option<(u64, Known)> {
    let index = r.u64()?;
    let pubkey = r.pubkey()?;
    let len = r.take(1)?[0];
    let n = usize::from(len & !HAS_WITHDRAWABLE);
    let status = Status::parse(std::str::from_utf8(r.take(n)?).ok()?);
    let withdrawable_epoch = if len & HAS_WITHDRAWABLE != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    Some((
        index,
        Known {
            pubkey,
            status,
            withdrawable_epoch,
        },
    ))
}

fn count(what: &str, n: usize) -> Result<[u8; 4], StoreError> {
    u32::try_from(n)
        .map(u32::to_be_bytes)
        .map_err(|_| StoreError::Encode(format!("{n} {what} is more than one input can store")))
}

/// An input's content in its stored form. Refuses what the format cannot
/// hold instead of cutting it: a record whose chain id is longer than
/// [`MAX_CHAIN_ID_BYTES`], or more than `u32::MAX` entries of a kind.
pub(super) fn encode_source(c: &SourceContent) -> Result<Vec<u8>, StoreError> {
    let mut v = Vec::with_capacity(12 + c.pubkeys.len() * 48 + c.indices.len() * 8);
    v.extend_from_slice(&count("pubkeys", c.pubkeys.len())?);
    for p in &c.pubkeys {
        v.extend_from_slice(&p.0);
    }
    v.extend_from_slice(&count("indices", c.indices.len())?);
    for i in &c.indices {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v.extend_from_slice(&count("records", c.records.len())?);
    for r in &c.records {
        v.extend_from_slice(&r.validator_index.to_be_bytes());
        v.extend_from_slice(&r.validator_key.0);
        let chain = r.chain_id.as_str().as_bytes();
        let n = u16::try_from(chain.len()).map_err(|_| {
            StoreError::Encode(format!(
                "the record of validator {} has a chain id of {} bytes; at most {MAX_CHAIN_ID_BYTES} can be stored",
                r.validator_index,
                chain.len()
            ))
        })?;
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(chain);
    }
    Ok(v)
}

/// Reads bytes in order; `None` when the data ends early.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
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
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn pubkey(&mut self) -> Option<Pubkey> {
        Some(Pubkey(self.take(48)?.try_into().ok()?))
    }
}

pub(super) fn decode_source(bytes: &[u8]) -> Option<SourceContent> {
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

/// A big-endian `u64` stored value; `None` if it is not 8 bytes.
pub(super) fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(i: u8) -> Pubkey {
        Pubkey([i; 48])
    }

    #[test]
    fn truncated_source_bytes_decode_to_none() {
        let c = SourceContent {
            pubkeys: vec![pk(1)],
            indices: vec![1],
            records: vec![],
        };
        let bytes = encode_source(&c).unwrap();
        assert_eq!(decode_source(&bytes), Some(c));
        assert_eq!(decode_source(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn an_oversized_chain_id_is_refused_not_cut() {
        let record = |chain: &str| SourceContent {
            records: vec![Record {
                validator_index: 9,
                chain_id: ChainId::new(chain),
                validator_key: pk(9),
            }],
            ..Default::default()
        };
        let longest = "x".repeat(MAX_CHAIN_ID_BYTES);
        let c = record(&longest);
        assert_eq!(decode_source(&encode_source(&c).unwrap()), Some(c));
        match encode_source(&record(&format!("{longest}y"))) {
            Err(StoreError::Encode(why)) => {
                assert!(why.contains("validator 9"), "{why}");
                assert!(why.contains("65536 bytes"), "{why}");
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
    }

    #[test]
    fn a_long_status_is_cut_at_a_character_boundary_and_still_decodes() {
        let status = Status::Other("é".repeat(200));
        let mut v = Vec::new();
        encode_entry(
            &mut v,
            3,
            &Known {
                pubkey: pk(3),
                status,
                withdrawable_epoch: Some(77),
            },
        );
        encode_entry(
            &mut v,
            4,
            &Known {
                pubkey: pk(4),
                status: Status::ActiveOngoing,
                withdrawable_epoch: None,
            },
        );
        let mut r = Reader(&v);
        let (i, k) = decode_entry(&mut r).unwrap();
        assert_eq!(i, 3);
        assert_eq!(k.status.as_str(), "é".repeat(63));
        assert_eq!(k.withdrawable_epoch, Some(77));
        let (i, k) = decode_entry(&mut r).unwrap();
        assert_eq!(
            (i, k.status, k.withdrawable_epoch),
            (4, Status::ActiveOngoing, None)
        );
        assert!(r.0.is_empty());
    }

    #[test]
    fn a_compact_bucket_round_trips_and_a_first_form_bucket_still_reads() {
        let known = |k: u8, status: Status, w: Option<u64>| Known {
            pubkey: pk(k),
            status,
            withdrawable_epoch: w,
        };
        let entries = vec![
            (3 * BUCKET, known(1, Status::ActiveOngoing, None)),
            (3 * BUCKET + 7, known(2, Status::ExitedSlashed, Some(8_200))),
            (
                3 * BUCKET + 9,
                known(3, Status::Other("x".repeat(100)), None),
            ),
            (4 * BUCKET - 1, known(4, Status::WithdrawalDone, Some(9))),
        ];
        let bytes = encode_bucket(entries.iter().map(|(i, k)| (*i, k)));
        assert_eq!(bytes.len(), 2 + 4 * 51 + 63 + 2 * 8, "51 bytes an entry");
        let mut got = Vec::new();
        decode_bucket(3, &bytes, |i, k| got.push((i, k)));
        let mut want = entries.clone();
        want[2].1.status = Status::Other("x".repeat(63));
        assert_eq!(got, want);

        // The first form, as written before: the same entries come back.
        let mut old = Vec::new();
        for (i, k) in &want {
            encode_entry(&mut old, *i, k);
        }
        let mut again = Vec::new();
        decode_bucket(3, &old, |i, k| again.push((i, k)));
        assert_eq!(again, want);

        // A cut or damaged bucket yields what checks out before the damage.
        let mut cut = Vec::new();
        decode_bucket(3, &bytes[..bytes.len() - 3], |i, k| cut.push((i, k)));
        assert_eq!(cut, want[..3]);
        let mut bad = bytes.clone();
        bad[2] = 0xff; // offset 0xff03: outside the bucket
        let mut none = Vec::new();
        decode_bucket(3, &bad, |i, k| none.push((i, k)));
        assert!(none.is_empty());
    }

    #[test]
    fn an_entry_written_before_withdrawable_epochs_were_kept_still_decodes() {
        // index, pubkey, length byte without the flag, status.
        let mut v = 5u64.to_be_bytes().to_vec();
        v.extend_from_slice(&pk(5).0);
        v.push(14);
        v.extend_from_slice(b"active_exiting");
        let (i, k) = decode_entry(&mut Reader(&v)).unwrap();
        assert_eq!(
            (i, k.status, k.withdrawable_epoch),
            (5, Status::ActiveExiting, None)
        );
    }

    #[test]
    fn entry_hashes_tell_tree_key_and_value_apart() {
        let h = entry_hash(b"inputs", b"k", b"v");
        assert_ne!(h, entry_hash(b"journal", b"k", b"v"));
        assert_ne!(h, entry_hash(b"inputs", b"k2", b"v"));
        assert_ne!(h, entry_hash(b"inputs", b"k", b"v2"));
        assert_ne!(entry_hash(b"ab", b"c", b""), entry_hash(b"a", b"bc", b""));
        assert_ne!(digest(h, 1), digest(h, 2));
    }
}
