//! Whether 48 bytes are a validator pubkey at all: a valid compressed
//! BLS12-381 G1 point, as `--verify-pubkeys` asks.
//!
//! Owns the check and the plain-words reason a key fails it; nothing else.
//! The rule is the consensus spec's `KeyValidate` (the IETF BLS signature
//! draft, §2.5): the bytes decode to a point of the curve (ZCash's
//! compressed encoding: flag bits in the top three bits of the first byte,
//! then x big-endian, below the field modulus), the point is not the point
//! at infinity, and it lies in the prime-order subgroup G1. The arithmetic
//! is [`blst`]'s (`PublicKey::key_validate`), the library the consensus
//! clients use; this module only names its verdicts.
//!
//! It proves the bytes could be someone's key, not that anyone holds its
//! secret: that takes a signature, which a pubkey list does not carry.

use blst::min_pk::PublicKey;
use blst::BLST_ERROR;

/// The top bit of the first byte: set in every 48-byte (compressed) encoding.
const COMPRESSION_FLAG: u8 = 0x80;
/// The second bit of the first byte: set only in the encoding of infinity.
const INFINITY_FLAG: u8 = 0x40;

/// Why 48 bytes are not a valid validator pubkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    /// The top bit of the first byte is clear: these bytes claim to be an
    /// uncompressed point, which takes 96 bytes (all-zero bytes land here).
    #[error("not a compressed point: the compression flag (top bit of the first byte) is clear")]
    NotCompressed,
    /// The infinity flag is set, but the other bits are not all zero as the
    /// one encoding of infinity has them.
    #[error(
        "not a valid point encoding: the infinity flag is set but the other bits are not all zero"
    )]
    MalformedInfinity,
    /// The x coordinate (the bytes, flags masked) is not below the field
    /// modulus p.
    #[error("not a valid point encoding: the x coordinate is not below the field modulus")]
    XNotInField,
    /// x³ + 4 has no square root mod p: no point of the curve has this x.
    #[error("not on the curve: no point of BLS12-381 G1 has this x coordinate")]
    NotOnCurve,
    /// A point of the curve, but outside the prime-order subgroup G1 (the
    /// curve's order has a cofactor); `KeyValidate` rejects it.
    #[error(
        "not in the subgroup: the point is on the curve but outside the prime-order subgroup G1"
    )]
    NotInSubgroup,
    /// The point at infinity (the group identity, `0xc0` then 47 zero
    /// bytes): it decodes, but `KeyValidate` rejects it, since anything
    /// would verify under it in an aggregate.
    #[error("the point at infinity, which is no one's key (KeyValidate rejects it)")]
    Infinity,
}

/// `Ok(())` when `bytes` are a valid compressed BLS12-381 G1 point other
/// than infinity, in the subgroup: the consensus spec's `KeyValidate`.
/// Otherwise the first reason it fails, in decoding order.
pub fn is_valid_pubkey(bytes: &[u8; 48]) -> Result<(), BlsError> {
    // blst says "bad encoding" for all three of these; the flags tell which.
    if bytes[0] & COMPRESSION_FLAG == 0 {
        return Err(BlsError::NotCompressed);
    }
    match PublicKey::key_validate(bytes) {
        Ok(_) => Ok(()),
        Err(BLST_ERROR::BLST_BAD_ENCODING) if bytes[0] & INFINITY_FLAG != 0 => {
            Err(BlsError::MalformedInfinity)
        }
        Err(BLST_ERROR::BLST_BAD_ENCODING) => Err(BlsError::XNotInField),
        Err(BLST_ERROR::BLST_POINT_NOT_ON_CURVE) => Err(BlsError::NotOnCurve),
        Err(BLST_ERROR::BLST_POINT_NOT_IN_GROUP) => Err(BlsError::NotInSubgroup),
        Err(BLST_ERROR::BLST_PK_IS_INFINITY) => Err(BlsError::Infinity),
        // Decoding and validating a public key returns none of these (they
        // are about aggregates, signatures and scalars). The match is
        // exhaustive on purpose: a code a later blst adds fails the build.
        Err(
            e @ (BLST_ERROR::BLST_SUCCESS
            | BLST_ERROR::BLST_AGGR_TYPE_MISMATCH
            | BLST_ERROR::BLST_VERIFY_FAIL
            | BLST_ERROR::BLST_BAD_SCALAR),
        ) => unreachable!("blst's key_validate returned {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The interop (mock-start) validator keys 0–7: secret key i is
    /// sha256(i as 32 bytes little-endian) mod r. Key 0 is the one in
    /// tests/fixtures/lodestar-1.5.1/validators-response.json.
    const INTEROP: [&str; 8] = [
        "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c",
        "b89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b",
        "a3a32b0f8b4ddb83f1a0a853d81dd725dfe577d4f4c3db8ece52ce2b026eca84815c1a7e8e92a4de3d755733bf7e4a9b",
        "88c141df77cd9d8d7a71a75c826c41a9c9f03c6ee1b180f3e7852f6a280099ded351b58d66e653af8e42816a4d8f532e",
        "81283b7a20e1ca460ebd9bbd77005d557370cabb1f9a44f530c4c4c66230f675f8df8b4c2818851aa7d77a80ca5a4a5e",
        "ab0bdda0f85f842f431beaccf1250bf1fd7ba51b4100fd64364b6401fda85bb0069b3e715b58819684e7fc0b10a72a34",
        "9977f1c8b731a8d5558146bfb86caea26434f3c5878b589bf280a42c9159e700e9df0e4086296c20b011d2e78c27d373",
        "a8d4c7c27795a725961317ef5953a7032ed6d83739db8b0e8a72353d1b8b4439427f7efa2c89caa03cc9f28f8cbab8ac",
    ];

    fn key(hex: &str) -> [u8; 48] {
        assert_eq!(hex.len(), 96, "{hex}");
        let mut out = [0u8; 48];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// Interop key 0 with its last hex digit replaced.
    fn key0_last_digit(d: char) -> [u8; 48] {
        let mut hex = INTEROP[0].to_string();
        hex.replace_range(95.., &d.to_string());
        key(&hex)
    }

    #[test]
    fn the_interop_keys_are_valid() {
        for (i, hex) in INTEROP.iter().enumerate() {
            assert_eq!(is_valid_pubkey(&key(hex)), Ok(()), "interop key {i}");
        }
    }

    #[test]
    fn one_hex_digit_changed_is_invalid() {
        // Every one of the 1,425 single-digit changes of key 0 outside the
        // flag digit fails, about half each way; these two are checked.
        // …44c -> …44d: x³ + 4 is not a square.
        assert_eq!(
            is_valid_pubkey(&key0_last_digit('d')),
            Err(BlsError::NotOnCurve)
        );
        // …44c -> …440: on the curve, outside G1.
        assert_eq!(
            is_valid_pubkey(&key0_last_digit('0')),
            Err(BlsError::NotInSubgroup)
        );
    }

    #[test]
    fn all_zero_bytes_are_invalid() {
        assert_eq!(is_valid_pubkey(&[0u8; 48]), Err(BlsError::NotCompressed));
    }

    #[test]
    fn the_point_at_infinity_is_invalid() {
        let mut inf = [0u8; 48];
        inf[0] = 0xc0;
        assert_eq!(is_valid_pubkey(&inf), Err(BlsError::Infinity));
    }

    #[test]
    fn infinity_flag_with_other_bits_set_is_invalid() {
        let mut bad = [0u8; 48];
        bad[0] = 0xc0;
        bad[47] = 1;
        assert_eq!(is_valid_pubkey(&bad), Err(BlsError::MalformedInfinity));
        // The sign bit has no place in the encoding of infinity either.
        let mut signed = [0u8; 48];
        signed[0] = 0xe0;
        assert_eq!(is_valid_pubkey(&signed), Err(BlsError::MalformedInfinity));
    }

    #[test]
    fn compression_flag_cleared_is_invalid() {
        let mut k = key(INTEROP[0]);
        k[0] &= !COMPRESSION_FLAG;
        assert_eq!(k[0], 0x29);
        assert_eq!(is_valid_pubkey(&k), Err(BlsError::NotCompressed));
    }

    #[test]
    fn x_at_or_above_the_field_modulus_is_invalid() {
        // p = 0x1a0111ea…: flags 100, then x = 0x1fff…ff > p.
        let mut k = [0xffu8; 48];
        k[0] = 0x9f;
        assert_eq!(is_valid_pubkey(&k), Err(BlsError::XNotInField));
    }

    #[test]
    fn each_reason_reads_in_plain_words() {
        let msg = BlsError::NotInSubgroup.to_string();
        assert!(msg.starts_with("not in the subgroup"), "{msg}");
        assert!(BlsError::Infinity.to_string().contains("point at infinity"));
    }

    /// The cost of `--verify-pubkeys`: one key's check, timed over 10,000.
    /// `cargo test --release --lib bls::tests::validation_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn validation_cost() {
        const N: usize = 10_000;
        let keys: Vec<[u8; 48]> = (0..N).map(|i| key(INTEROP[i % INTEROP.len()])).collect();
        let start = std::time::Instant::now();
        let valid = keys
            .iter()
            .filter(|k| is_valid_pubkey(std::hint::black_box(k)).is_ok())
            .count();
        let took = start.elapsed();
        assert_eq!(valid, N);
        let per_key = took.as_secs_f64() * 1e6 / N as f64;
        println!("{N} keys in {took:?}: {per_key:.1} µs/key; 1,000,000 keys ≈ {per_key:.1} s");
    }
}
