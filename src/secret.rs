//! Secrets (the `ovi_live_*` API key, keymanager tokens).
//!
//! Owns the only type that holds a secret's bytes. It never prints them:
//! `Debug` and `Display` redact, it does not implement `Serialize`, and a
//! [`Scrubber`] removes secrets — whole or in part — from any text that came
//! back from a remote party before that text reaches a log line or an error.
//!
//! What is scrubbed (see [`Scrubber::scrub`]):
//! - every run of [`MIN_RUN`] or more bytes of a known secret, wherever it
//!   appears (a prefix, a suffix, an infix, the whole); a secret shorter than
//!   [`MIN_RUN`] is scrubbed where it appears whole;
//! - anything shaped like a key, known or not: `ovi_` and what follows it up
//!   to whitespace, a quote or a control character (kept as `ovi_[redacted]`);
//! - the token after a case-insensitive `bearer` and whitespace (kept as
//!   `Bearer [redacted]`, the word as written).
//!
//! Text without any of these comes back byte for byte.

use std::fmt;

/// The shortest run of a secret that is scrubbed wherever it appears: any
/// 8 bytes of a key in a row are "part of the key". Shorter fragments are
/// left alone (scrubbing every 3-letter coincidence would shred ordinary
/// text and tell nothing).
pub const MIN_RUN: usize = 8;

/// Secrets shorter than this are not scrubbed at all: a 1-3 byte "secret"
/// would match ordinary text everywhere.
const MIN_WHOLE: usize = 4;

/// What replaces scrubbed text, unless a secret could combine with it (see
/// [`Scrubber::new`]).
const REDACTED: &str = "[redacted]";

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` scrubbed of this secret (whole or any run of [`MIN_RUN`]
    /// bytes) and of anything shaped like a key or a bearer token. Builds a
    /// [`Scrubber`] each call: hold one to scrub many texts.
    pub fn scrub(&self, text: &str) -> String {
        Scrubber::new(std::slice::from_ref(self)).scrub(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `text` with anything shaped like a key or a bearer token replaced
/// (the shape rules of [`Scrubber::scrub`] without known secrets): for text
/// produced before the key is known, e.g. a command-line error echoing what
/// the user typed.
pub fn redact_shapes(text: &str) -> String {
    Scrubber::new(&[]).scrub(text)
}

/// Scrubs a fixed set of secrets out of text, in time linear in the text
/// (times log of a secret's length): each secret is prepared once as the
/// sorted set of its [`MIN_RUN`]-byte windows, and the text's windows are
/// looked up in it.
#[derive(Clone)]
pub struct Scrubber {
    secrets: Vec<Prepared>,
    marker: String,
}

#[derive(Clone)]
enum Prepared {
    /// Every [`MIN_RUN`]-byte window of the secret, little-endian, sorted,
    /// deduplicated. A text byte is part of a run of length ≥ [`MIN_RUN`]
    /// exactly when it lies in a window of the text found here.
    Windows(Vec<u64>),
    /// A secret shorter than [`MIN_RUN`]: matched whole.
    Whole(String),
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

impl Scrubber {
    pub fn new(secrets: &[Secret]) -> Self {
        let raw: Vec<&str> = secrets
            .iter()
            .map(|s| s.expose())
            .filter(|s| s.len() >= MIN_WHOLE)
            .collect();
        let prepared = raw
            .iter()
            .map(|s| {
                if s.len() >= MIN_RUN {
                    let mut w: Vec<u64> = s.as_bytes().windows(MIN_RUN).map(window).collect();
                    w.sort_unstable();
                    w.dedup();
                    Prepared::Windows(w)
                } else {
                    Prepared::Whole(s.to_string())
                }
            })
            .collect();
        let mut scrubber = Scrubber {
            secrets: prepared,
            marker: REDACTED.to_string(),
        };
        // The output is unmatched text with markers in between. A run of a
        // secret (or a short secret whole) that overlaps a marker holds one
        // of its brackets or lies inside "redacted": a secret that could do
        // either (an arbitrary keymanager token might) gets a marker made of
        // a character none of whose bytes any secret holds.
        let clash = raw.iter().any(|s| s.contains(['[', ']']))
            || !scrubber.secret_ranges("redacted").is_empty();
        if clash {
            let free = |c: &char| {
                let mut buf = [0u8; 4];
                let enc = c.encode_utf8(&mut buf).as_bytes();
                !raw.iter().any(|s| s.bytes().any(|b| enc.contains(&b)))
            };
            let c = ['#', '*', '~', '^', '|', '%']
                .into_iter()
                .chain((0x21u8..0x7f).map(char::from))
                .chain((0x2588u32..=0x10ffff).filter_map(char::from_u32))
                .find(free)
                .unwrap_or('#');
            scrubber.marker = c.to_string().repeat(3);
        }
        scrubber
    }

    /// `text` with every known secret (whole, or any run of [`MIN_RUN`]
    /// bytes of it) and everything shaped like a key or a bearer token
    /// replaced. Text without any comes back unchanged.
    pub fn scrub(&self, text: &str) -> String {
        let mut ranges = self.secret_ranges(text);
        shape_ranges(text, &mut ranges);
        if ranges.is_empty() {
            return text.to_string();
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < ranges.len() {
            let (start, mut end) = ranges[i];
            i += 1;
            // Merge overlapping and touching ranges into one marker.
            while i < ranges.len() && ranges[i].0 <= end {
                end = end.max(ranges[i].1);
                i += 1;
            }
            let start = start.max(at);
            out.push_str(&text[at..start]);
            out.push_str(&self.marker);
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }

    /// Byte ranges of `text` holding a secret (whole, or a run of at least
    /// [`MIN_RUN`] bytes), widened to character boundaries.
    fn secret_ranges(&self, text: &str) -> Vec<(usize, usize)> {
        let bytes = text.as_bytes();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut push = |start: usize, end: usize| match ranges.last_mut() {
            Some(last) if start <= last.1 && start >= last.0 => last.1 = last.1.max(end),
            _ => ranges.push((start, end)),
        };
        for p in &self.secrets {
            match p {
                Prepared::Windows(ws) => {
                    for (i, w) in bytes.windows(MIN_RUN).enumerate() {
                        if ws.binary_search(&window(w)).is_ok() {
                            push(i, i + MIN_RUN);
                        }
                    }
                }
                Prepared::Whole(s) => {
                    // Overlapping occurrences too; O(text × secret) at worst.
                    let mut from = 0;
                    while let Some(i) = text[from..].find(s.as_str()) {
                        push(from + i, from + i + s.len());
                        from += i + text[from + i..].chars().next().map_or(1, char::len_utf8);
                    }
                }
            }
        }
        for r in &mut ranges {
            while !text.is_char_boundary(r.0) {
                r.0 -= 1;
            }
            while !text.is_char_boundary(r.1) {
                r.1 += 1;
            }
        }
        ranges
    }
}

fn window(w: &[u8]) -> u64 {
    u64::from_le_bytes(w.try_into().expect("MIN_RUN is 8 bytes"))
}

/// Where a key-shaped or bearer token ends: at whitespace, a quote or a
/// control character.
fn token_end(text: &str, from: usize) -> usize {
    text[from..]
        .find(|c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`'))
        .map_or(text.len(), |i| from + i)
}

/// Key characters after `ovi_` that make a token key-shaped.
const MIN_SHAPE: usize = 6;

/// Adds the byte ranges of key-shaped tokens (what follows `ovi_`, with at
/// least [`MIN_SHAPE`] key characters) and of bearer tokens (what follows
/// `bearer` and whitespace, any case). Linear: a token is scanned once.
fn shape_ranges(text: &str, ranges: &mut Vec<(usize, usize)>) {
    const KEY: &str = "ovi_";
    let mut from = 0;
    while let Some(i) = text[from..].find(KEY) {
        let start = from + i + KEY.len();
        let end = token_end(text, start);
        // A key has a long run of key characters; `ovi_live_…` in a hint
        // (five, then an ellipsis) is a placeholder, not a key.
        let keyish = text.as_bytes()[start..end]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            .count();
        if keyish >= MIN_SHAPE {
            ranges.push((start, end));
        }
        // Any `ovi_` inside this token yields a part of the same range.
        from = end.max(start);
    }

    const BEARER: &[u8] = b"bearer";
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + BEARER.len() <= bytes.len() {
        if !bytes[i..i + BEARER.len()].eq_ignore_ascii_case(BEARER) {
            i += 1;
            continue;
        }
        // `i` is on an ASCII byte, so a character boundary.
        let after = i + BEARER.len();
        let rest = &text[after..];
        let start = after + (rest.len() - rest.trim_start().len());
        if start > after {
            let end = token_end(text, start);
            if end > start {
                ranges.push((start, end));
            }
        }
        i = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "ovi_live_0123456789abcdefGHIJKLmnopqrstuv";

    /// Every `MIN_RUN`-byte run of `secret` that occurs in `text` (the
    /// oracle: quadratic, obviously right).
    fn runs_in(text: &str, secret: &str) -> Vec<String> {
        let s = secret.as_bytes();
        if s.len() < MIN_RUN {
            return if text.contains(secret) {
                vec![secret.to_string()]
            } else {
                vec![]
            };
        }
        let runs: std::collections::HashSet<&[u8]> = s.windows(MIN_RUN).collect();
        text.as_bytes()
            .windows(MIN_RUN)
            .filter(|w| runs.contains(w))
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }

    fn assert_clean(out: &str, secret: &str, input: &str) {
        let found = runs_in(out, secret);
        assert!(
            found.is_empty(),
            "runs {found:?} of the secret left in {out:?} (from {input:?})"
        );
    }

    #[test]
    fn never_prints_itself() {
        let s = Secret::new(KEY);
        assert!(!format!("{s:?} {s}").contains("0123"));
        assert_eq!(s.scrub(&format!("x {KEY} y")), "x [redacted] y");
        assert!(!format!("{:?}", Scrubber::new(&[s])).contains("0123"));
    }

    #[test]
    fn every_prefix_suffix_and_infix_of_eight_or_more_is_scrubbed() {
        let s = Scrubber::new(&[Secret::new(KEY)]);
        let n = KEY.len();
        let mut parts = Vec::new();
        for len in MIN_RUN..=n {
            parts.push(&KEY[..len]);
            parts.push(&KEY[n - len..]);
            for start in 0..=n - len {
                parts.push(&KEY[start..start + len]);
            }
        }
        for part in parts {
            for text in [
                part.to_string(),
                format!("echo: {part}!"),
                format!("{{\"got\":\"{part}\"}}"),
                format!("a{part}{part}b"),
                format!("é{part}ü"),
            ] {
                let out = s.scrub(&text);
                assert_clean(&out, KEY, &text);
                assert!(out.contains("[redacted]"), "{out}");
            }
        }
    }

    #[test]
    fn fragments_shorter_than_a_run_are_left_alone() {
        // A known secret that is not key-shaped: its 7-byte pieces stay.
        let token = "deadbeefcafef00d1234";
        let s = Scrubber::new(&[Secret::new(token)]);
        assert_eq!(s.scrub("id deadbee ok"), "id deadbee ok");
        assert_eq!(s.scrub("id f00d123 ok"), "id f00d123 ok");
        assert_eq!(s.scrub("id deadbeef ok"), "id [redacted] ok");
        assert_eq!(s.scrub("id xf00d1234y ok"), "id x[redacted]y ok");
    }

    #[test]
    fn short_secrets_are_scrubbed_whole_only() {
        let s = Scrubber::new(&[Secret::new("hunter2"), Secret::new("abc")]);
        assert_eq!(s.scrub("pw hunter2 hunter"), "pw [redacted] hunter");
        // Under four bytes: not scrubbed at all.
        assert_eq!(s.scrub("abc"), "abc");
        let s = Scrubber::new(&[Secret::new("aaaa")]);
        assert_eq!(s.scrub("xaaaaay"), "x[redacted]y", "overlapping matches");
    }

    #[test]
    fn key_shapes_and_bearer_tokens_are_scrubbed_known_or_not() {
        let s = Scrubber::new(&[Secret::new("0badc0ffee0badc0ffee")]);
        for (text, want) in [
            ("x ovi_live_other y", "x ovi_[redacted] y"),
            ("\"ovi_test_x\"", "\"ovi_[redacted]\""),
            ("ovi_", "ovi_"),
            ("the ovi_live_… key", "the ovi_live_… key"),
            ("ovi_live_abc…", "ovi_[redacted]"),
            ("'ovi_' is the shape", "'ovi_' is the shape"),
            (
                "Authorization: Bearer sometoken123",
                "Authorization: Bearer [redacted]",
            ),
            (
                "authorization: bearer\tabc",
                "authorization: bearer\t[redacted]",
            ),
            ("BEARER  x\"y", "BEARER  [redacted]\"y"),
            ("Bearer xBearer y", "Bearer [redacted] [redacted]"),
            ("bearer", "bearer"),
            ("bearer\n", "bearer\n"),
            ("bearers", "bearers"),
        ] {
            assert_eq!(s.scrub(text), want, "{text:?}");
        }
        let s = Scrubber::new(&[Secret::new(KEY)]);
        // `ovi_live` is itself a run of the key.
        assert_eq!(s.scrub("x ovi_live_other y"), "x [redacted] y");
        assert_eq!(s.scrub("x ovi_test_other y"), "x ovi_[redacted] y");
        let text = format!("Authorization: Bearer {KEY}");
        assert_eq!(s.scrub(&text), "Authorization: Bearer [redacted]");
        let text = format!("Bearer {}", &KEY[9..]);
        assert_eq!(s.scrub(&text), "Bearer [redacted]");
        assert_eq!(
            redact_shapes("Bearer abc ovi_x ovi_xyz123"),
            "Bearer [redacted] ovi_x ovi_[redacted]"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let s = Scrubber::new(&[Secret::new(KEY), Secret::new("0badc0ffee0badc0ffee")]);
        for text in [
            "",
            "internal server error",
            "{\"error\":\"rate limited\",\"retry_in\":3}",
            "<html><body>502 Bad Gateway</body></html>",
            "ovi is fine, so is live_ and 0123456 and bear with me",
            "日本語のエラー 🚀 é\u{301}",
        ] {
            assert_eq!(s.scrub(text), text);
        }
    }

    #[test]
    fn a_secret_that_could_combine_with_the_marker_gets_another_marker() {
        for token in ["ab[redacted]cd", "xx]redacted[yy", "0123redacted", "dact"] {
            let s = Scrubber::new(&[Secret::new(token)]);
            for text in [
                format!("a {token} b"),
                format!("{token}{token}"),
                format!("[{}]", &token[..token.len().min(9)]),
            ] {
                let out = s.scrub(&text);
                assert_clean(&out, token, &text);
            }
        }
        // Ordinary secrets keep the readable marker.
        assert_eq!(Scrubber::new(&[Secret::new(KEY)]).marker, REDACTED);
    }

    #[test]
    fn multi_byte_secrets_are_cut_on_character_boundaries() {
        let token = "пароль-секрет-ключ";
        let s = Scrubber::new(&[Secret::new(token)]);
        for len in 1..=token.chars().count() {
            for start in 0..=token.chars().count() - len {
                let part: String = token.chars().skip(start).take(len).collect();
                let text = format!("ж{part}ж");
                let out = s.scrub(&text);
                assert_clean(&out, token, &text);
            }
        }
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "ovi_live_[A-Za-z0-9]{8,48}",
            "[0-9a-f]{8,64}",
            "[A-Za-z0-9+/=_-]{8,40}",
            "\\PC{4,24}",
        ]
    }

    proptest! {
        #[test]
        fn no_run_of_a_secret_survives(
            key in key_strategy(),
            pieces in prop::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), "\\PC{0,12}", 0u8..4),
                0..8,
            ),
        ) {
            let chars: Vec<char> = key.chars().collect();
            let mut text = String::new();
            for (a, b, filler, kind) in &pieces {
                let (a, b) = (a.index(chars.len() + 1), b.index(chars.len() + 1));
                let part: String = chars[a.min(b)..a.max(b)].iter().collect();
                text.push_str(filler);
                match kind {
                    0 => text.push_str(&part),
                    1 => text.push_str(&key),
                    2 => text.push_str(&format!("Bearer {part}")),
                    _ => {}
                }
            }
            let out = Scrubber::new(&[Secret::new(key.clone())]).scrub(&text);
            if key.len() >= MIN_RUN {
                assert_clean(&out, &key, &text);
            } else {
                prop_assert!(!out.contains(&key), "{out:?}");
            }
        }

        #[test]
        fn text_without_secrets_or_shapes_is_unchanged(
            key in key_strategy(),
            text in "\\PC{0,200}",
        ) {
            prop_assume!(runs_in(&text, &key).is_empty());
            prop_assume!(!text.contains("ovi_") && !text.to_ascii_lowercase().contains("bearer"));
            prop_assert_eq!(Scrubber::new(&[Secret::new(key)]).scrub(&text), text);
        }
    }
}
