//! Tests of the parent module.

//! The streaming parse against the tree parse it replaced (kept here as
//! the oracle): the same content, or the same error message.
use super::*;
use proptest::prelude::*;
use serde_json::Value;

mod oracle {
    use super::super::super::{err, Location, Record, SourceContent, SourceError};
    use crate::domain::{ChainId, Pubkey};
    use serde_json::Value;
    use std::path::Path;

    fn parse_json(path: &Path, text: &str) -> Result<Value, SourceError> {
        serde_json::from_str(text).map_err(|e| {
            err(
                path,
                Location::LineColumn(e.line(), e.column()),
                format!("invalid JSON: {e}"),
            )
        })
    }

    pub fn parse_records(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
        let value = parse_json(path, text)?;
        let Value::Array(rows) = value else {
            return Err(err(
                path,
                Location::File,
                "must be a JSON array of validator records",
            ));
        };
        records_from(path, &rows)
    }

    fn records_from(path: &Path, rows: &[Value]) -> Result<SourceContent, SourceError> {
        let mut out = SourceContent::default();
        for (i, row) in rows.iter().enumerate() {
            let at = || Location::Element(i);
            let Value::Object(obj) = row else {
                return Err(err(path, at(), "is not an object"));
            };
            let validator_index = match obj.get("validator_index") {
                Some(Value::Number(n)) if n.is_u64() => n.as_u64().unwrap_or_default(),
                Some(other) => {
                    return Err(err(
                        path,
                        at(),
                        format!("validator_index must be a non-negative integer, got {other}"),
                    ))
                }
                None => return Err(err(path, at(), "validator_index is missing")),
            };
            let chain_id = match obj.get("chain_id") {
                Some(Value::String(s)) if !s.trim().is_empty() => ChainId::new(s),
                Some(other) => {
                    return Err(err(
                        path,
                        at(),
                        format!("chain_id must be a non-empty string such as \"0x1\", got {other}"),
                    ))
                }
                None => return Err(err(path, at(), "chain_id is missing")),
            };
            let validator_key = match obj.get("validator_key") {
                Some(Value::String(s)) => s
                    .parse::<Pubkey>()
                    .map_err(|e| err(path, at(), format!("validator_key: {e}")))?,
                Some(other) => {
                    return Err(err(
                        path,
                        at(),
                        format!("validator_key must be a hex string, got {other}"),
                    ))
                }
                None => return Err(err(path, at(), "validator_key is missing")),
            };
            out.records.push(Record {
                validator_index,
                chain_id,
                validator_key,
            });
        }
        Ok(out)
    }

    pub fn parse_detect(path: &Path, text: &str) -> Result<SourceContent, SourceError> {
        match parse_json(path, text)? {
            Value::Object(obj) => match obj.get("pubkey") {
                Some(Value::String(s)) => {
                    let pk = s
                        .parse::<Pubkey>()
                        .map_err(|e| err(path, Location::File, format!("keystore pubkey: {e}")))?;
                    Ok(SourceContent {
                        pubkeys: vec![pk],
                        ..Default::default()
                    })
                }
                _ => Err(err(
                    path,
                    Location::File,
                    "JSON object without a \"pubkey\": not an EIP-2335 keystore",
                )),
            },
            Value::Array(rows) => match rows.first() {
                None => Ok(SourceContent::default()),
                Some(Value::Object(o)) if o.contains_key("validator_index") => {
                    records_from(path, &rows)
                }
                Some(Value::Object(o)) if o.contains_key("pubkey") => {
                    let mut out = SourceContent::default();
                    for (i, row) in rows.iter().enumerate() {
                        let pk = row
                            .get("pubkey")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                err(
                                    path,
                                    Location::Element(i),
                                    "deposit data entry without a \"pubkey\"",
                                )
                            })?
                            .parse::<Pubkey>()
                            .map_err(|e| err(path, Location::Element(i), format!("pubkey: {e}")))?;
                        out.pubkeys.push(pk);
                    }
                    Ok(out)
                }
                Some(_) => Err(err(
                    path,
                    Location::Element(0),
                    "neither a validator record nor a deposit data entry",
                )),
            },
            _ => Err(err(path, Location::File, "unrecognised JSON input")),
        }
    }
}

const PK: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

fn same(text: &str) {
    let path = Path::new("f.json");
    let show = |r: Result<SourceContent, SourceError>| match r {
        Ok(c) => format!("ok {c:?}"),
        Err(e) => format!("err {e}"),
    };
    assert_eq!(
        show(parse_records(path, text)),
        show(oracle::parse_records(path, text)),
        "records: {text}"
    );
    if text.trim_start().starts_with(['[', '{']) {
        assert_eq!(
            show(parse_detect(path, text, None)),
            show(oracle::parse_detect(path, text)),
            "detect: {text}"
        );
    }
}

#[test]
fn the_same_as_a_tree_parse_on_known_shapes() {
    let rec = |i: &str, c: &str, k: &str| {
        format!(r#"{{"validator_index": {i}, "chain_id": {c}, "validator_key": {k}}}"#)
    };
    let key = format!("\"{PK}\"");
    let cases = [
        "[]".to_string(),
        " [ ] ".into(),
        "[1,\n 2,,]".into(),
        "[1, 2".into(),
        "[1] x".into(),
        "{}".into(),
        "{\"a\": 1}".into(),
        format!("{{\"pubkey\": {key}, \"crypto\": {{\"x\": [1, 2, {{}}]}}}}"),
        "{\"pubkey\": \"0xzz\"}".into(),
        "{\"pubkey\": 5}".into(),
        format!("{{\"pubkey\": 5, \"pubkey\": {key}}}"),
        format!("[{}]", rec("5", "\"0x1\"", &key)),
        format!(
            "[{}, {}]",
            rec("5", "\"0x1\"", &key),
            rec("6", "\"0x5\"", &key)
        ),
        format!("[{}, 7]", rec("5", "\"0x1\"", &key)),
        format!("[{}]", rec("true", "\"0x1\"", &key)),
        format!("[{}]", rec("1.0", "\"0x1\"", &key)),
        format!("[{}]", rec("-1", "\"0x1\"", &key)),
        format!("[{}]", rec("-0", "\"0x1\"", &key)),
        format!("[{}]", rec("\"5\"", "\"0x1\"", &key)),
        format!("[{}]", rec("{ \"a\" : [1, 2] }", "\"0x1\"", &key)),
        format!("[{}]", rec("18446744073709551615", "\"0x1\"", &key)),
        format!("[{}]", rec("18446744073709551616", "\"0x1\"", &key)),
        format!("[{}]", rec("1e3", "\"0x1\"", &key)),
        format!("[{}]", rec("5", "\"  \"", &key)),
        format!("[{}]", rec("5", "null", &key)),
        format!("[{}]", rec("5", "\"0\\u0078\\n1\"", &key)),
        format!("[{}]", rec("5", "\"0x1\"", "\"0xdead\"")),
        format!("[{}]", rec("5", "\"0x1\"", "[\"a\"]")),
        format!("[{}]", rec("5", "\"0x1\"", &format!("\"\\u0030x{PK}\""))),
        format!(r#"[{{"chain_id": "0x1", "validator_key": {key}}}]"#),
        format!(r#"[{{"validator_index": 1, "validator_key": {key}}}]"#),
        r#"[{"validator_index": 1, "chain_id": "0x1"}]"#.into(),
        format!(
            r#"[{{"validator_index": 1, "validator_index": "x", "chain_id": "0x1", "validator_key": {key}}}]"#
        ),
        format!(r#"[{{"validator\u005findex": 3, "chain_id": "0x1", "validator_key": {key}}}]"#),
        format!("[{{\"pubkey\": {key}, \"amount\": 32000000000}}]"),
        format!("[{{\"pubkey\": {key}}}, {{\"amount\": 1}}]"),
        format!("[{{\"pubkey\": {key}}}, 3]"),
        format!("[{{\"pubkey\": {key}}}, {{\"pubkey\": \"0x12\"}}]"),
        format!("[{{\"pubkey\": {key}}}, {{\"pubkey\": 12}}]"),
        format!("[{{\"pubkey\": {key}, \"validator_index\": 2}}]"),
        "[{\"other\": 1}]".into(),
        "[[1]]".into(),
        "[\"x\"]".into(),
        "[null, {]".into(),
        format!("[{}, 1, {{]", rec("5", "\"0x1\"", &key)),
        "[1, 1, 1, 1]".into(),
        "[{\"amount\": {\"a\": 1,}}]".into(),
        "[{\"validator_index\": 1e400}]".into(),
        "[{\"other\": 1e400}]".into(),
        "[{\"other\": \"\\ud800\"}]".into(),
        format!("[{}{}]", "[".repeat(200), "]".repeat(200)),
        format!("[{{\"x\": {}{}}}]", "[".repeat(127), "]".repeat(127)),
        "[{}, {\"x\": {\"a\": 1,}}]".into(),
        "\"x\"".into(),
        "5".into(),
        "null".into(),
    ];
    for c in &cases {
        same(c);
    }
}

fn value() -> impl Strategy<Value = String> {
    let key = format!("\"{PK}\"");
    prop_oneof![
        Just("1".to_string()),
        Just("0".to_string()),
        Just("-3".to_string()),
        Just("2.5".to_string()),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("\"0x1\"".to_string()),
        Just("\"\"".to_string()),
        Just("\"0xab\"".to_string()),
        Just(key),
        Just("[1, {\"a\": 2}]".to_string()),
        Just("{\"pubkey\": 1}".to_string()),
    ]
}

fn element() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("validator_index"),
        Just("chain_id"),
        Just("validator_key"),
        Just("pubkey"),
        Just("amount"),
    ];
    prop_oneof![
        4 => proptest::collection::vec((field, value()), 0..5).prop_map(|fs| {
            let body: Vec<String> =
                fs.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            format!("{{{}}}", body.join(", "))
        }),
        1 => value(),
    ]
}

proptest! {
    #[test]
    fn the_same_as_a_tree_parse_on_generated_arrays(
        rows in proptest::collection::vec(element(), 0..6),
        broken in proptest::option::of(0usize..40),
    ) {
        let mut text = format!("[{}]", rows.join(", "));
        if let Some(at) = broken {
            // A syntax error somewhere (or nowhere, past the end).
            if at < text.len() && text.is_char_boundary(at) {
                text.insert(at, '}');
            }
        }
        same(&text);
        if let Some(first) = rows.first() {
            same(first);
        }
    }
}

#[test]
fn a_long_value_is_quoted_cut() {
    let long = format!("[{{\"validator_index\": [{}1]}}]", "1,".repeat(5000));
    let e = parse_records(Path::new("f"), &long)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("f[0]: validator_index must be a non-negative integer, got [1,1,"),
        "{e}"
    );
    assert!(e.ends_with("… (10003 bytes)"), "{e}");
}

#[test]
fn a_chain_id_is_one_allocation_per_chain() {
    let rows: Vec<Value> = (0..4)
        .map(|i| serde_json::json!({"validator_index": i, "chain_id": if i < 3 {"0x1"} else {"0x5"}, "validator_key": PK}))
        .collect();
    let c = parse_records(Path::new("f"), &Value::Array(rows).to_string()).unwrap();
    let ptr = |i: usize| c.records[i].chain_id.as_str().as_ptr();
    assert_eq!(ptr(0), ptr(2));
    assert_ne!(ptr(0), ptr(3));
}
