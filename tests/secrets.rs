//! Secrets never appear: black-box tests of the `keysync` binary against a
//! console API (wiremock on loopback) that echoes the bearer key back in its
//! error bodies — whole, behind `Bearer `, at every offset around the cut of
//! the 200-character excerpt, and in pieces (every prefix and suffix of 8 or
//! more characters). Neither stdout nor stderr, console or JSON logs, may
//! hold any 8-character run of the key: not the retry WARN lines (logged on
//! every attempt of a 500 or 429) nor the final error.
//!
//! The architecture's rule: "The API key is never written to the store, to
//! logs, to metrics or to error messages" (with invariant 6, secrets only
//! travel over https or to loopback: tests/cli.rs).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use assert_cmd::Command;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "ovi_live_sEcReT7q2WxZ9kLmN4pRtUvY8bCdFgHj";
const ME: &str = "/api/v1/me";
const LIST: &str = "/api/v1/operators/42/validators";
/// The excerpt's length (`http::BODY_EXCERPT`).
const CUT: usize = 200;
/// Attempts per request (the most keysync allows): 19 WARN lines and one
/// final error per run, each with its own body.
const ATTEMPTS: usize = 20;
/// The shortest run of the key that must never appear.
const RUN: usize = 8;

/// Every 8-character run of [`KEY`] in `text`, with where it was.
fn runs_of_key(text: &str) -> Vec<String> {
    let runs: HashSet<&[u8]> = KEY.as_bytes().windows(RUN).collect();
    text.as_bytes()
        .windows(RUN)
        .enumerate()
        .filter(|(_, w)| runs.contains(w))
        .map(|(i, w)| {
            let line_start = text[..i].rfind('\n').map_or(0, |n| n + 1);
            let line_end = text[i..].find('\n').map_or(text.len(), |n| i + n);
            format!(
                "{:?} in line {:?}",
                String::from_utf8_lossy(w),
                &text[line_start..line_end]
            )
        })
        .collect()
}

/// Answers with the next body of `bodies` each time (the last one once
/// they run out), counting the requests it served.
struct Echoes {
    status: u16,
    bodies: Vec<String>,
    served: Arc<AtomicUsize>,
}

impl Respond for Echoes {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let i = self.served.fetch_add(1, Ordering::SeqCst);
        let body = &self.bodies[i.min(self.bodies.len() - 1)];
        let t = ResponseTemplate::new(self.status).set_body_string(body.clone());
        if self.status == 429 {
            t.insert_header("retry-after", "0")
        } else {
            t
        }
    }
}

/// What a careless proxy or server puts in an error body: the key, the
/// header, at every offset from 150 to 260 characters (the excerpt is cut
/// at 200), and every prefix and suffix of 8 characters or more at offsets
/// just before the cut. Some are padded with multi-byte characters.
fn echo_bodies() -> Vec<String> {
    let mut bodies = Vec::new();
    for echo in [
        KEY.to_string(),
        format!("Bearer {KEY}"),
        format!("{{\"headers\":{{\"Authorization\":\"Bearer {KEY}\"}}}}"),
    ] {
        for pad in 150..=260 {
            let filler = if pad % 10 == 0 { "é" } else { "x" };
            bodies.push(format!("{}{echo} end", filler.repeat(pad)));
        }
    }
    let n = KEY.len();
    for len in RUN..n {
        for part in [&KEY[..len], &KEY[n - len..]] {
            for pad in [0, 150, CUT - RUN, CUT - 4, CUT - 1] {
                bodies.push(format!("{}{part} end", "-".repeat(pad)));
            }
        }
    }
    // Infixes, and all but the last character after the bearer word.
    bodies.push(format!("got {} and {}", &KEY[5..n - 5], &KEY[12..30]));
    bodies.push(format!("authorization: bearer {}", &KEY[..n - 1]));
    bodies
}

struct Harness {
    rt: tokio::runtime::Runtime,
    api: MockServer,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let api = rt.block_on(MockServer::start());
        rt.block_on(
            Mock::given(method("GET"))
                .and(path(ME))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"operator_id": "42", "role": "operator"})),
                )
                .mount(&api),
        );
        Harness { rt, api }
    }

    /// The list call answers `status` with `bodies` in turn; returns the
    /// count of bodies served.
    fn list_answers(&self, status: u16, bodies: Vec<String>) -> Arc<AtomicUsize> {
        let served = Arc::new(AtomicUsize::new(0));
        self.rt.block_on(
            Mock::given(method("GET"))
                .and(path(LIST))
                .respond_with(Echoes {
                    status,
                    bodies,
                    served: served.clone(),
                })
                .mount(&self.api),
        );
        served
    }

    fn show(&self, format: &str) -> Run {
        let out = Command::cargo_bin("keysync")
            .unwrap()
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYSYNC_HTTP_BACKOFF_MS", "0")
            .env("KEYSYNC_HTTP_ATTEMPTS", ATTEMPTS.to_string())
            .env("KEYSYNC_HTTP_TIMEOUT_SECS", "20")
            .env("KEYSYNC_API_URL", self.api.uri())
            .env("KEYSYNC_AUTH_URL", self.api.uri())
            .env("KEYSYNC_API_KEY", KEY)
            .args(["show", "--log-format", format])
            .output()
            .unwrap();
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

impl Run {
    /// No 8-character run of the key on stdout or stderr.
    fn no_run_of_the_key(&self) -> &Self {
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let found = runs_of_key(text);
            assert!(
                found.is_empty(),
                "part of the key on {name}:\n{}\n--- {name}\n{text}",
                found.join("\n")
            );
        }
        self
    }

    fn json_lines(&self) -> Vec<serde_json::Map<String, Value>> {
        self.stderr
            .lines()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => m,
                _ => panic!("stderr line is not a JSON object: {l:?}"),
            })
            .collect()
    }
}

/// Runs `show` until every echo body was served to a failing list call, in
/// both log formats, checking every run's output.
fn every_echo_is_scrubbed(status: u16) {
    let bodies = echo_bodies();
    for format in ["console", "json"] {
        let h = Harness::new();
        let served = h.list_answers(status, bodies.clone());
        let runs = bodies.len().div_ceil(ATTEMPTS);
        let mut markers = 0;
        for _ in 0..runs {
            let r = h.show(format);
            assert_eq!(
                r.code, 3,
                "a remote failure exits 3\n--- stderr\n{}",
                r.stderr
            );
            r.no_run_of_the_key();
            assert_eq!(r.stdout, "", "nothing on stdout on failure");
            // The bodies were logged (scrubbed, then cut), on every retry.
            markers += r.stderr.matches("[redacted]").count();
            let retries = r.stderr.matches("request failed, retrying").count();
            assert_eq!(retries, ATTEMPTS - 1, "{}", r.stderr);
            if format == "json" {
                let lines = r.json_lines();
                let warn = lines
                    .iter()
                    .filter(|l| l.get("level") == Some(&json!("WARN")))
                    .count();
                assert_eq!(warn, ATTEMPTS - 1, "{}", r.stderr);
                for l in &lines {
                    let text = Value::Object(l.clone()).to_string();
                    assert!(runs_of_key(&text).is_empty(), "{text}");
                }
            } else {
                assert!(r.stderr.contains(&format!("HTTP {status}")), "{}", r.stderr);
            }
        }
        assert!(
            served.load(Ordering::SeqCst) >= bodies.len(),
            "every echo body was answered"
        );
        assert!(
            markers >= 100,
            "the echoes were logged, scrubbed: {markers}"
        );
    }
}

#[test]
fn secrets_never_appear_when_the_console_answers_500_echoing_the_key() {
    every_echo_is_scrubbed(500);
}

#[test]
fn secrets_never_appear_when_the_console_answers_429_echoing_the_key() {
    every_echo_is_scrubbed(429);
}

/// Runs `show` once per body (a malformed 2xx answer is not retried).
fn malformed_answers_are_scrubbed(bodies: Vec<String>) {
    for format in ["console", "json"] {
        let h = Harness::new();
        let served = h.list_answers(200, bodies.clone());
        for body in &bodies {
            let r = h.show(format);
            assert_eq!(r.code, 3, "{body}: {}", r.stderr);
            assert!(r.stderr.contains("unexpected body"), "{}", r.stderr);
            r.no_run_of_the_key();
        }
        assert_eq!(served.load(Ordering::SeqCst), bodies.len());
    }
}

#[test]
fn secrets_never_appear_when_a_2xx_answer_is_malformed_and_echoes_the_key() {
    let n = KEY.len();
    let suffix = &KEY[9..];
    malformed_answers_are_scrubbed(vec![
        format!("{}{KEY}", "y".repeat(CUT - 10)),
        format!("{}{KEY}", "y".repeat(CUT + 190)),
        format!("[\"{}\"]", &KEY[..n - 1]),
        format!("{{\"validators\": \"{suffix}\"}}"),
        format!("{{\"validators\": [{{\"validator_index\": \"{suffix}\"}}]}}"),
        format!(
            "{{\"validators\": [{{\"validator_index\": 1, \"chain_id\": \"{suffix}\", \"active\": \"{}\"}}]}}",
            &KEY[..20]
        ),
    ]);
}

/// serde_json's own message quotes a string value whole ("invalid type:
/// string \"…\""): `RegistryClient::list_expecting` puts it in the error
/// unscrubbed (`not a JSON object ({e})`), so a key suffix the console
/// echoes as the whole body reaches the final error line.
#[test]
fn secrets_never_appear_in_a_json_error_quoting_the_body() {
    let n = KEY.len();
    malformed_answers_are_scrubbed(vec![
        format!("\"{}\"", &KEY[9..]),
        format!("\"{}\"", &KEY[..n - 1]),
        format!("\"Bearer {KEY}\""),
    ]);
}
