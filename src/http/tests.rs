//! Tests of the parent module.

use super::*;

#[test]
fn delay_grows_and_honours_retry_after_within_the_cap() {
    let p = RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
    };
    let d1 = p.delay(1, None);
    let d3 = p.delay(3, None);
    assert!(d1 >= Duration::from_millis(75) && d1 <= Duration::from_millis(125));
    assert!(d3 >= Duration::from_millis(300) && d3 <= Duration::from_millis(500));
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(1))),
        Duration::from_secs(1)
    );
    assert_eq!(
        p.delay(1, Some(Duration::from_secs(3600))),
        Duration::from_secs(2)
    );
    assert_eq!(p.delay(40, None), Duration::from_secs(2));
}

#[test]
fn retry_after_takes_seconds_and_http_dates() {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
    let at = UNIX_EPOCH + Duration::from_secs(784_111_777);
    let now = at - Duration::from_secs(90);
    assert_eq!(
        parse_retry_after(" 120 ", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
        Some(Duration::from_secs(90))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + Duration::from_secs(5)),
        Some(Duration::ZERO),
        "a date in the past: retry now"
    );
    assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
}

const KEY: &str = "ovi_live_0123456789abcdefGHIJKLmnopqrstuv";

fn http_with(secrets: Vec<Secret>) -> Http {
    Http::new(
        Duration::from_secs(1),
        RetryPolicy::default(),
        None,
        secrets,
    )
    .unwrap()
}

/// Every `MIN_RUN`-byte run of `secret` found in `text`.
fn runs_in(text: &str, secret: &str) -> Vec<String> {
    let min = crate::secret::MIN_RUN;
    let runs: std::collections::HashSet<&[u8]> = secret.as_bytes().windows(min).collect();
    text.as_bytes()
        .windows(min)
        .filter(|w| runs.contains(w))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

#[track_caller]
fn assert_clean(out: &str, secret: &str, what: &str) {
    let found = runs_in(out, secret);
    assert!(found.is_empty(), "{what}: runs {found:?} left in {out:?}");
}

/// What a careless server echoes: the key, its parts, the header.
fn echoes(key: &str) -> Vec<String> {
    let n = key.len();
    let mut e = vec![
        key.to_string(),
        format!("Bearer {key}"),
        format!("Authorization: Bearer {key}"),
        format!("authorization: bearer {}", &key[3..]),
        format!("{{\"got\":\"{}\"}}", &key[5..n - 5]),
    ];
    for len in crate::secret::MIN_RUN..n {
        e.push(key[..len].to_string());
        e.push(key[n - len..].to_string());
    }
    e
}

#[test]
fn secrets_never_appear_in_an_excerpt_whatever_the_offset() {
    let http = http_with(vec![Secret::new(KEY)]);
    for (i, echo) in echoes(KEY).into_iter().enumerate() {
        // Multi-byte text before the cut for a sample of the echoes.
        let fillers: &[&str] = if i % 4 == 0 {
            &["x", "é", "日", "🚀"]
        } else {
            &["x"]
        };
        for pad in 150..=260 {
            for filler in fillers {
                let body = format!("{}{echo} tail", filler.repeat(pad));
                let e = http.excerpt(&body);
                assert_clean(&e, KEY, &format!("pad {pad} {filler} {echo}"));
                assert!(e.chars().count() <= BODY_EXCERPT + 1, "{e}");
            }
        }
    }
}

#[test]
fn secrets_never_appear_in_a_status_failure_or_its_log_line() {
    // The WARN retry line and the error print `Failure`'s Display.
    let http = http_with(vec![Secret::new(KEY)]);
    for echo in echoes(KEY) {
        for pad in [0, 180, 195, 199, 200, 201] {
            let f = Failure::Status {
                status: 500,
                body: http.excerpt(&format!("{}{echo}", "-".repeat(pad))),
                retry_after: None,
                attempts: 2,
            };
            assert_clean(&format!("{f} {f:?}"), KEY, &echo);
        }
    }
}

#[test]
fn any_registered_secret_gets_the_same_treatment() {
    let token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    let short = "pa55wd";
    let http = http_with(vec![
        Secret::new(KEY),
        Secret::new(token),
        Secret::new(short),
    ]);
    for echo in echoes(token) {
        for pad in [0, 190, 199, 200] {
            let body = format!("{}{echo} and {short}!", "x".repeat(pad));
            let e = http.excerpt(&body);
            assert_clean(&e, token, &echo);
            assert!(!e.contains(short), "{e}");
        }
    }
    // A 7-byte piece of a token is not a run: ordinary text stays.
    assert_eq!(http.scrub("row 9f86d08 ok"), "row 9f86d08 ok");
    assert_eq!(http.scrub("row 9f86d081 ok"), "row [redacted] ok");
}

#[test]
fn ordinary_bodies_are_unchanged_byte_for_byte() {
    let http = http_with(vec![Secret::new(KEY)]);
    for body in [
        "internal server error",
        "{\"error\":\"rate limited\",\"retry_in\":3}",
        "<html><body><h1>502 Bad Gateway</h1></body></html>",
        "déjà vu: 日本語 🚀",
    ] {
        assert_eq!(http.scrub(body), body);
        assert_eq!(http.excerpt(body), body);
    }
    let long = "0123456 ".repeat(100);
    assert_eq!(http.scrub(&long), long, "7-byte pieces of the key");
    let e = http.excerpt(&long);
    assert_eq!(e, format!("{}…", &long[..BODY_EXCERPT]));
}

#[test]
fn scrubbing_is_linear_in_the_body() {
    // Far above any error excerpt: a quadratic scan would take minutes.
    let http = http_with(vec![Secret::new(KEY), Secret::new("aaaa")]);
    let started = Instant::now();
    for body in [
        "ovi_".repeat(1 << 17),
        "bearer ".repeat(1 << 16),
        "a".repeat(1 << 19),
        KEY[..20].repeat(1 << 14),
    ] {
        let out = http.scrub(&body);
        assert!(!out.contains(&KEY[..8]));
    }
    assert!(started.elapsed() < Duration::from_secs(20));
}

proptest::proptest! {
    #[test]
    fn an_excerpt_never_panics_and_never_holds_a_run(
        pad in "\\PC{0,260}",
        tail in "\\PC{0,40}",
        start in 0usize..KEY.len(),
        len in 0usize..=KEY.len(),
    ) {
        let http = http_with(vec![Secret::new(KEY)]);
        let part = &KEY[start..(start + len).min(KEY.len())];
        let body = format!("{pad}{part}{tail}");
        let e = http.excerpt(&body);
        let runs = runs_in(&e, KEY);
        proptest::prop_assert!(runs.is_empty(), "{:?} in {:?}", runs, e);
        proptest::prop_assert!(e.chars().count() <= BODY_EXCERPT + 1);
    }
}

#[test]
fn a_remote_request_is_timed_and_counted_by_outcome() {
    let m = Metrics::new();
    for reply in [Reply::Status(503), Reply::Transport, Reply::Ok] {
        m.emit(RemoteRequest {
            party: Party::Console,
            call: "POST assign",
            reply,
            seconds: 0.02,
            retry: None,
        });
    }
    let text = m.render();
    for line in [
        "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"503\"} 1\n",
        "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"transport\"} 1\n",
        "keysync_remote_requests_total{party=\"console\",call=\"POST assign\",outcome=\"ok\"} 1\n",
        "keysync_remote_request_seconds_count{party=\"console\",call=\"POST assign\"} 3\n",
        "keysync_remote_request_seconds_bucket{party=\"console\",call=\"POST assign\",le=\"0.025\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}
