//! stdout: the command's result as JSON, byte-compatible with optimum-keysync.
//!
//! Owns the exact bytes: Python's `json.dumps(obj, indent=2)` layout
//! (2-space indent, `": "`, one element per line, `[]` for empty arrays)
//! with non-ASCII escaped as `\uXXXX`, and a trailing newline. Logs never
//! go here.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

use crate::domain::{Assignment, Key};
use crate::plan::Plan;

/// `PrettyFormatter` plus Python's `ensure_ascii`.
struct PythonFormatter<'a>(PrettyFormatter<'a>);

impl Formatter for PythonFormatter<'_> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Writes `value` as Python's `json.dumps(value, indent=2)` plus a newline,
/// through a buffer: Rust's stdout is line-buffered, and a 100,000-key plan
/// has 300,000 lines (one `write(2)` each without it).
pub fn write_json<T: Serialize + ?Sized, W: Write>(w: &mut W, value: &T) -> io::Result<()> {
    let mut buf = io::BufWriter::with_capacity(1 << 16, w);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        PythonFormatter(PrettyFormatter::with_indent(b"  ")),
    );
    value.serialize(&mut ser).map_err(io::Error::other)?;
    buf.write_all(b"\n")?;
    buf.flush()
}

#[derive(Serialize)]
struct PlanJson<'a> {
    to_register: usize,
    to_assign: &'a [Key],
    to_unassign: &'a [Key],
}

/// The plan as `diff` and `sync` print it.
pub fn plan_json<W: Write>(w: &mut W, plan: &Plan) -> io::Result<()> {
    write_json(
        w,
        &PlanJson {
            to_register: plan.to_register.len(),
            to_assign: &plan.to_assign,
            to_unassign: &plan.to_unassign,
        },
    )
}

/// The assignments as `show` prints them.
pub fn assignments_json<W: Write>(w: &mut W, rows: &[Assignment]) -> io::Result<()> {
    write_json(w, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ChainId;

    #[test]
    fn plan_bytes_match_python_json_dumps_indent_2() {
        let plan = Plan {
            to_register: vec![],
            to_assign: vec![(1, ChainId::new("0x1")), (22, ChainId::new("0x1"))],
            to_unassign: vec![],
        };
        let mut out = Vec::new();
        plan_json(&mut out, &plan).unwrap();
        // python3 -c 'import json; print(json.dumps({"to_register": 0, "to_assign": [[1, "0x1"], [22, "0x1"]], "to_unassign": []}, indent=2))'
        let want = "{\n  \"to_register\": 0,\n  \"to_assign\": [\n    [\n      1,\n      \"0x1\"\n    ],\n    [\n      22,\n      \"0x1\"\n    ]\n  ],\n  \"to_unassign\": []\n}\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn show_bytes_and_ascii_escaping_match_python() {
        let rows = vec![Assignment {
            validator_index: 3,
            chain_id: ChainId::new("0x1é😀"),
            active: false,
        }];
        let mut out = Vec::new();
        assignments_json(&mut out, &rows).unwrap();
        let want = "[\n  {\n    \"validator_index\": 3,\n    \"chain_id\": \"0x1\\u00e9\\ud83d\\ude00\",\n    \"active\": false\n  }\n]\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let mut out = Vec::new();
        assignments_json(&mut out, &[]).unwrap();
        assert_eq!(out, b"[]\n");
    }
}
