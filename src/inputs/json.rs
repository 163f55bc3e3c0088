//! JSON inputs: records files, deposit data and EIP-2335 keystores.
//!
//! Owns what each JSON shape means and the errors that name the element.
//! Parsed in one streaming pass over the text, with no tree of values: an
//! array element is read as the few fields keysync needs, each a borrowed
//! slice of the text, and turned into a record or a pubkey before the next
//! one is read. Memory is the output (72 bytes a record, 48 a pubkey; the
//! chain id shared) and nothing per element of what is skipped, so a large
//! array of anything costs about its own size, not 17 times it.
//!
//! Errors are those of a parse into a tree, word for word: the text is
//! first checked as JSON by a pass that builds nothing (so a syntax error
//! anywhere wins, with its line and column, as before); then the first
//! element at fault, in file order, is named.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{err, Location, Record, SourceContent, SourceError};
use crate::domain::{ChainId, Pubkey};

/// The fields of an element that keysync reads, as slices of the text; the
/// last of a repeated key wins.
#[derive(Default)]
struct Fields<'a> {
    validator_index: Option<&'a RawValue>,
    chain_id: Option<&'a RawValue>,
    validator_key: Option<&'a RawValue>,
    pubkey: Option<&'a RawValue>,
    network_name: Option<&'a RawValue>,
    crypto: Option<&'a RawValue>,
    version: Option<&'a RawValue>,
}

/// One array element, or the top-level value.
enum Element<'a> {
    Object(Fields<'a>),
    /// Not an object (it was skipped).
    Other,
}

enum FieldName {
    ValidatorIndex,
    ChainId,
    ValidatorKey,
    Pubkey,
    NetworkName,
    Crypto,
    Version,
    Other,
}

impl<'de> de::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldName, E> {
                Ok(match s {
                    "validator_index" => FieldName::ValidatorIndex,
                    "chain_id" => FieldName::ChainId,
                    "validator_key" => FieldName::ValidatorKey,
                    "pubkey" => FieldName::Pubkey,
                    "network_name" => FieldName::NetworkName,
                    "crypto" => FieldName::Crypto,
                    "version" => FieldName::Version,
                    _ => FieldName::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Reads a value as an [`Element`]: an object's wanted fields, anything
/// else skipped.
struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Element<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Element<'de>, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            let slot = match name {
                FieldName::ValidatorIndex => &mut f.validator_index,
                FieldName::ChainId => &mut f.chain_id,
                FieldName::ValidatorKey => &mut f.validator_key,
                FieldName::Pubkey => &mut f.pubkey,
                FieldName::NetworkName => &mut f.network_name,
                FieldName::Crypto => &mut f.crypto,
                FieldName::Version => &mut f.version,
                FieldName::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?);
        }
        Ok(Element::Object(f))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
        Ok(Element::Other)
    }
}

/// What a JSON file is read as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `KEYSYNC_INDICES_FILE`: an array of records, nothing else.
    Records,
    /// A drop-directory file: a keystore (object), or an array of records
    /// or of deposit data entries (told apart by the first element).
    Detect,
    /// `--deposit-data-file`: an array of deposit data entries, nothing else.
    Deposits,
    /// A file of `--keystores-dir`: a keystore, or nothing (any other JSON
    /// is skipped).
    Keystore,
}

/// How the elements of the top-level array are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Not decided yet (a drop-directory array before its first element).
    Undecided,
    Records,
    Deposits,
}

/// The pass's state: what was read and the first element at fault.
struct Collect<'p> {
    path: &'p Path,
    shape: Shape,
    out: SourceContent,
    /// The first error in file order; reported only if the whole text is
    /// valid JSON (a syntax error anywhere wins).
    failed: Option<SourceError>,
    /// The chain id of the last record: one allocation per chain.
    chain: Option<ChainId>,
    /// The network deposit data entries must name (`--network`).
    network: Option<&'p str>,
}

impl Collect<'_> {
    fn fail(&mut self, at: Location, message: impl Into<String>) {
        if self.failed.is_none() {
            self.failed = Some(err(self.path, at, message));
        }
    }

    fn row(&mut self, rows: &mut Rows, i: usize, el: Element<'_>) {
        if *rows == Rows::Undecided {
            *rows = match &el {
                Element::Object(f) if f.validator_index.is_some() => Rows::Records,
                Element::Object(f) if f.pubkey.is_some() => Rows::Deposits,
                _ => {
                    return self.fail(
                        Location::Element(0),
                        "neither a validator record nor a deposit data entry",
                    )
                }
            };
        }
        let done = match rows {
            Rows::Records => self.record(i, el).map(|r| self.out.records.push(r)),
            Rows::Deposits => self.deposit(i, el).map(|p| self.out.pubkeys.push(p)),
            Rows::Undecided => Ok(()),
        };
        if let Err(e) = done {
            self.failed = Some(e);
        }
    }

    fn record(&mut self, i: usize, el: Element<'_>) -> Result<Record, SourceError> {
        let path = self.path;
        let at = || Location::Element(i);
        let Element::Object(f) = el else {
            return Err(err(path, at(), "is not an object"));
        };
        // A JSON integer only: a bool, a float (even 1.0), a string or a
        // negative number is an error, never coerced into an index.
        let validator_index = match f.validator_index {
            Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                err(
                    path,
                    at(),
                    format!(
                        "validator_index must be a non-negative integer, got {}",
                        shown(raw)
                    ),
                )
            })?,
            None => return Err(err(path, at(), "validator_index is missing")),
        };
        let chain_id = match f.chain_id {
            Some(raw) => match string(raw) {
                Some(s) if !s.trim().is_empty() => match &self.chain {
                    Some(c) if c.as_str() == s => c.clone(),
                    _ => {
                        let c = ChainId::new(&s);
                        self.chain = Some(c.clone());
                        c
                    }
                },
                _ => {
                    return Err(err(
                        path,
                        at(),
                        format!(
                            "chain_id must be a non-empty string such as \"0x1\", got {}",
                            shown(raw)
                        ),
                    ))
                }
            },
            None => return Err(err(path, at(), "chain_id is missing")),
        };
        let validator_key = match f.validator_key {
            Some(raw) => match string(raw) {
                Some(s) => s
                    .parse::<Pubkey>()
                    .map_err(|e| err(path, at(), format!("validator_key: {e}")))?,
                None => {
                    return Err(err(
                        path,
                        at(),
                        format!("validator_key must be a hex string, got {}", shown(raw)),
                    ))
                }
            },
            None => return Err(err(path, at(), "validator_key is missing")),
        };
        Ok(Record {
            validator_index,
            chain_id,
            validator_key,
        })
    }

    fn deposit(&self, i: usize, el: Element<'_>) -> Result<Pubkey, SourceError> {
        let at = Location::Element(i);
        let (s, network) = match el {
            Element::Object(f) => (f.pubkey.and_then(string), f.network_name),
            Element::Other => (None, None),
        };
        // Deposit data of another network would assign keys that are not
        // validators here (or are someone else's): the file is refused.
        if let (Some(want), Some(raw)) = (self.network, network) {
            match string(raw) {
                Some(got) if got.trim().eq_ignore_ascii_case(want.trim()) => {}
                _ => {
                    return Err(err(
                        self.path,
                        at,
                        format!(
                            "network_name is {}, but --network is {want:?}: deposit data of another network",
                            shown(raw)
                        ),
                    ))
                }
            }
        }
        let Some(s) = s else {
            return Err(err(
                self.path,
                at,
                "deposit data entry without a \"pubkey\"",
            ));
        };
        s.parse::<Pubkey>()
            .map_err(|e| err(self.path, at, format!("pubkey: {e}")))
    }

    /// A keystore: the pubkey is readable without the password.
    fn keystore(&mut self, el: Element<'_>) {
        // In the keystores directory, a keystore is an object with
        // "crypto" and "version" (EIP-2335); anything else is another JSON
        // file of the client (Lighthouse's validator_key_cache.json has
        // "crypto" but no "version" or "pubkey"), skipped.
        let is_keystore =
            matches!(&el, Element::Object(f) if f.crypto.is_some() && f.version.is_some());
        if self.shape == Shape::Keystore && !is_keystore {
            return;
        }
        let s = match el {
            Element::Object(f) => f.pubkey.and_then(string),
            Element::Other => None,
        };
        match s.map(|s| s.parse::<Pubkey>()) {
            Some(Ok(pk)) => self.out.pubkeys.push(pk),
            Some(Err(e)) => self.fail(Location::File, format!("keystore pubkey: {e}")),
            None => self.fail(
                Location::File,
                "JSON object without a \"pubkey\": not an EIP-2335 keystore",
            ),
        }
    }
}

/// A JSON string's value (borrowed unless it has escapes); `None` for any
/// other value.
fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<&str>(raw.get())
        .map(Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
        .ok()
}

/// Values longer than this are quoted cut, not re-printed.
const SHOWN_MAX: usize = 1024;

/// A value as an error quotes it: compact JSON, as a parsed tree prints;
/// a long one cut to its first 64 characters (never a tree of it).
fn shown(raw: &RawValue) -> String {
    let text = raw.get();
    if text.len() > SHOWN_MAX {
        let cut: String = text.chars().take(64).collect();
        return format!("{cut}… ({} bytes)", text.len());
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// Any JSON value, checked as a parse into a tree checks it (numbers in
/// range, strings well formed, nesting at most 128 deep) and kept nowhere.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
}

/// The top-level value.
struct Top<'s, 'p> {
    c: &'s mut Collect<'p>,
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut rows = match self.c.shape {
            Shape::Records => Rows::Records,
            Shape::Detect => Rows::Undecided,
            Shape::Deposits => Rows::Deposits,
            Shape::Keystore => {
                // Not a keystore: skipped whole.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
        };
        let mut i = 0;
        loop {
            if self.c.failed.is_some() {
                // The rest is only checked for syntax.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(());
            }
            let Some(el) = seq.next_element_seed(ElementSeed)? else {
                return Ok(());
            };
            self.c.row(&mut rows, i, el);
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let el = ElementVisitor.visit_map(map)?;
        match self.c.shape {
            Shape::Detect | Shape::Keystore => self.c.keystore(el),
            Shape::Records => self.c.fail(Location::File, NOT_AN_ARRAY),
            Shape::Deposits => self.c.fail(Location::File, NOT_DEPOSITS),
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.other()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.other()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.other()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.other()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.other()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.other()
    }
}

const NOT_AN_ARRAY: &str = "must be a JSON array of validator records";
const NOT_DEPOSITS: &str = "must be a JSON array of deposit data entries";

impl Top<'_, '_> {
    /// A top-level value that is neither an array nor an object.
    fn other<E>(self) -> Result<(), E> {
        match self.c.shape {
            Shape::Records => self.c.fail(Location::File, NOT_AN_ARRAY),
            Shape::Detect => self.c.fail(Location::File, "unrecognised JSON input"),
            Shape::Deposits => self.c.fail(Location::File, NOT_DEPOSITS),
            Shape::Keystore => {}
        }
        Ok(())
    }
}

fn parse(
    path: &Path,
    text: &str,
    shape: Shape,
    network: Option<&str>,
) -> Result<SourceContent, SourceError> {
    let mut c = Collect {
        path,
        shape,
        out: SourceContent::default(),
        failed: None,
        chain: None,
        network,
    };
    let syntax = |e: serde_json::Error| {
        err(
            path,
            Location::LineColumn(e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    };
    // Syntax first, building nothing: its errors win, as in a tree parse.
    serde_json::from_str::<Skip>(text).map_err(syntax)?;
    // Then the content, element by element (valid JSON: only the content
    // can be at fault now).
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(Top { c: &mut c })
        .and_then(|()| de.end())
        .map_err(syntax)?;
    match c.failed {
        Some(e) => Err(e),
        None => Ok(c.out),
    }
}

/// A records file (`KEYSYNC_INDICES_FILE`).
pub(super) fn parse_records(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    parse(path, text, Shape::Records, None)
}

/// A deposit data file (`--deposit-data-file`): every entry's
/// `network_name`, when present, must be `network`.
pub(super) fn parse_deposits(
    path: &Path,
    text: &str,
    network: Option<&str>,
) -> Result<SourceContent, SourceError> {
    parse(path, text, Shape::Deposits, network)
}

/// A file of the keystores directory: its pubkey if it is a keystore (an
/// object with `crypto`), nothing if it is any other JSON.
pub(super) fn parse_keystore(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
    parse(path, text, Shape::Keystore, None)
}

/// A drop-directory JSON file: a keystore, records or deposit data.
/// Deposit data in it must name `network` when that is given.
pub(super) fn parse_detect(
    path: &Path,
    text: &str,
    network: Option<&str>,
) -> Result<SourceContent, SourceError> {
    parse(path, text, Shape::Detect, network)
}

#[cfg(test)]
mod tests;
