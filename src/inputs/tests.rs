//! Tests of the parent module.

use super::*;

const PK: &str = "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

fn p(kind: SourceKind, text: &str) -> Result<SourceContent, SourceError> {
    parse(kind, Path::new("in.txt"), text.as_bytes())
}

#[test]
fn pubkeys_skip_comments_and_blanks_and_normalise() {
    let text = format!("# header\n\n0x{PK}\n  {}  # trailing\n", PK.to_uppercase());
    let c = p(SourceKind::Pubkeys, &text).unwrap();
    assert_eq!(c.pubkeys.len(), 2);
    assert_eq!(c.pubkeys[0], c.pubkeys[1]);
    assert_eq!(c.pubkeys[0].to_string(), format!("0x{PK}"));
}

#[test]
fn pubkey_error_names_file_and_line() {
    let e = p(SourceKind::Pubkeys, &format!("0x{PK}\n\n0xdeadbeef\n")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("in.txt:3: not a BLS pubkey"), "{msg}");
}

#[test]
fn a_large_list_parsed_in_halves_keeps_order_and_line_numbers() {
    // 20,000 lines of 99 bytes: past the two-halves threshold.
    let lines: Vec<String> = (0..20_000u64)
        .map(|i| format!("0x{:016x}{}", i, &PK[16..]))
        .collect();
    let text = lines.join("\n") + "\n";
    assert!(text.len() >= text::PARALLEL_PARSE);
    let c = p(SourceKind::Pubkeys, &text).unwrap();
    let want: Vec<Pubkey> = lines.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(c.pubkeys, want);

    // An error late in the file names its own line; with two, the first.
    let mut bad = lines.clone();
    bad[17_000] = "0xnope".into();
    let e = p(SourceKind::Pubkeys, &(bad.join("\n") + "\n")).unwrap_err();
    assert!(e.to_string().starts_with("in.txt:17001: "), "{e}");
    bad[3] = "0xearly".into();
    let e = p(SourceKind::Pubkeys, &(bad.join("\n") + "\n")).unwrap_err();
    assert!(e.to_string().starts_with("in.txt:4: "), "{e}");
}

#[test]
fn index_list_accepts_plain_digits_only() {
    let c = p(SourceKind::IndexList, "# x\n1\n 42 \n\n007\n").unwrap();
    assert_eq!(c.indices, vec![1, 42, 7]);
    for bad in [
        "4_2",
        "+5",
        "-1",
        "1.0",
        "٣",
        "0x10",
        "1e3",
        "99999999999999999999999",
    ] {
        let e = p(SourceKind::IndexList, &format!("1\n{bad}\n")).unwrap_err();
        assert!(e.to_string().starts_with("in.txt:2: "), "{bad}: {e}");
    }
}

#[test]
fn records_require_integer_index_string_chain_and_pubkey() {
    let good = format!(r#"[{{"validator_index": 5, "chain_id": "0x1", "validator_key": "{PK}"}}]"#);
    let c = p(SourceKind::Records, &good).unwrap();
    assert_eq!(c.records[0].validator_index, 5);
    assert_eq!(c.records[0].validator_key.to_string(), format!("0x{PK}"));
    for (bad, want) in [
        ("true", "validator_index must be a non-negative integer"),
        ("1.0", "validator_index must be a non-negative integer"),
        ("\"5\"", "validator_index must be a non-negative integer"),
        ("-1", "validator_index must be a non-negative integer"),
    ] {
        let text = format!(
            r#"[{{"validator_index": 1, "chain_id": "0x1", "validator_key": "{PK}"}}, {{"validator_index": {bad}, "chain_id": "0x1", "validator_key": "{PK}"}}]"#
        );
        let e = p(SourceKind::Records, &text).unwrap_err().to_string();
        assert!(e.starts_with("in.txt[1]: "), "{e}");
        assert!(e.contains(want), "{e}");
    }
    let e = p(SourceKind::Records, r#"{"a": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be a JSON array"), "{e}");
    let e = p(SourceKind::Records, "[1,\n 2,,]")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("in.txt:2:"), "{e}");
}

#[test]
fn detect_tells_formats_apart() {
    let keystore = format!(
        r#"{{"crypto": {{}}, "pubkey": "{PK}", "path": "m/12381/3600/0/0/0", "version": 4}}"#
    );
    assert_eq!(p(SourceKind::Detect, &keystore).unwrap().pubkeys.len(), 1);
    let deposit =
        format!(r#"[{{"pubkey": "{PK}", "amount": 32000000000, "network_name": "mainnet"}}]"#);
    assert_eq!(p(SourceKind::Detect, &deposit).unwrap().pubkeys.len(), 1);
    let records =
        format!(r#"[{{"validator_index": 3, "chain_id": "0x1", "validator_key": "{PK}"}}]"#);
    assert_eq!(p(SourceKind::Detect, &records).unwrap().records.len(), 1);
    assert_eq!(
        p(SourceKind::Detect, "# ours\n12\n13\n").unwrap().indices,
        vec![12, 13]
    );
    assert_eq!(
        p(SourceKind::Detect, &format!("0x{PK}\n"))
            .unwrap()
            .pubkeys
            .len(),
        1
    );
    assert!(p(SourceKind::Detect, "# nothing yet\n").unwrap().is_empty());
    assert!(p(SourceKind::Detect, "[]").unwrap().is_empty());
    assert!(p(SourceKind::Detect, "12\n0xzz\n").is_err());
}

#[test]
fn whitespace_is_not_intent_but_a_comment_is() {
    for kind in [
        SourceKind::Pubkeys,
        SourceKind::IndexList,
        SourceKind::Records,
        SourceKind::Detect,
    ] {
        for blank in ["", "\n", " \t\r\n\n", "\u{3000}\n"] {
            let e = p(kind, blank).unwrap_err();
            assert!(
                matches!(e, SourceError::Blank { .. }),
                "{kind:?} {blank:?}: {e}"
            );
            assert!(
                e.to_string()
                    .starts_with("in.txt: has no entries and no comment line"),
                "{e}"
            );
        }
    }
    for kind in [
        SourceKind::Pubkeys,
        SourceKind::IndexList,
        SourceKind::Detect,
    ] {
        assert!(p(kind, "# emptied on purpose\n").unwrap().is_empty());
        assert!(p(kind, "\n  # x\n\n").unwrap().is_empty());
    }
    assert!(p(SourceKind::Records, "[]").unwrap().is_empty());
}

#[test]
fn an_index_listed_twice_in_a_file_is_kept_once_below_a_million() {
    let c = p(SourceKind::IndexList, "5\n7\n5\n2000000\n2000000\n7\n").unwrap();
    assert_eq!(c.indices, vec![5, 7, 2000000, 2000000]);
    // An error after a repeat still names its line.
    let e = p(SourceKind::IndexList, "5\n5\nx\n").unwrap_err();
    assert!(e.to_string().starts_with("in.txt:3: "), "{e}");
}

fn inputs_in(dir: &Path) -> crate::settings::Inputs {
    crate::settings::Inputs {
        input_dir: Some(dir.to_path_buf()),
        ..Default::default()
    }
}

#[test]
fn the_drop_directory_lists_what_it_cannot_read_and_refuses_to_be_empty() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(dir.join(".hidden"), "1\n").unwrap();
    std::fs::write(dir.join("x.swp"), "1\n").unwrap();
    let e = read_all(&inputs_in(dir), false).unwrap_err();
    assert!(matches!(e, SourceError::EmptyDir { .. }), "{e}");
    assert!(read_all(&inputs_in(dir), true).unwrap().is_empty());

    std::fs::write(dir.join("a.txt"), "3\n").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone"), dir.join("z.json")).unwrap();
    let files = dir_files(dir).unwrap();
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
    assert_eq!(names, ["a.txt", "sub", "z.json"]);
    let e = read_all(&inputs_in(dir), false).unwrap_err();
    assert!(matches!(e, SourceError::Subdirectory { .. }), "{e}");
    std::fs::remove_dir(dir.join("sub")).unwrap();
    let e = read_all(&inputs_in(dir), true).unwrap_err();
    assert!(
        matches!(
            e,
            SourceError::Read {
                source: FileError::Dangling { .. },
                ..
            }
        ),
        "{e}"
    );
    std::fs::remove_file(dir.join("z.json")).unwrap();
    assert_eq!(read_all(&inputs_in(dir), false).unwrap().indices, vec![3]);

    let e = read_all(&inputs_in(&dir.join("missing")), true).unwrap_err();
    assert!(matches!(e, SourceError::Dir { .. }), "{e}");
    let e = read_all(&inputs_in(&dir.join("a.txt")), true).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("cannot list the drop directory: it is not a directory"),
        "{e}"
    );
}

#[test]
fn a_blank_file_passes_only_with_allow_empty() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("v.pubkeys");
    std::fs::write(&f, " \n").unwrap();
    let inputs = crate::settings::Inputs {
        pubkeys_file: Some(f),
        ..Default::default()
    };
    assert!(matches!(
        read_all(&inputs, false),
        Err(SourceError::Blank { .. })
    ));
    assert!(read_all(&inputs, true).unwrap().is_empty());
}

#[test]
fn non_utf8_is_an_error_with_a_line() {
    let e = parse(SourceKind::Pubkeys, Path::new("f"), b"a\nb\n\xff\n").unwrap_err();
    assert_eq!(e.to_string(), "f:3: not UTF-8 text");
}

#[test]
fn a_long_bad_line_is_quoted_cut() {
    let line = "0x".to_string() + &"z".repeat(1 << 20);
    for kind in [SourceKind::Pubkeys, SourceKind::IndexList] {
        let e = parse(kind, Path::new("/etc/keysync/list"), line.as_bytes()).unwrap_err();
        let text = e.to_string();
        assert!(text.len() < 400, "{kind:?}: a {} byte error", text.len());
        assert!(
            text.contains("/etc/keysync/list:1") && text.contains("(1048578 bytes)"),
            "{text}"
        );
    }
}
