//! Black-box tests of the `keysync` binary (show, diff, sync) against
//! wiremock servers on loopback: every exit code, the exact stdout bytes,
//! stderr content, precedence, JSON logs and secret hygiene.

use std::path::PathBuf;

use assert_cmd::Command;
use keysync::domain::Pubkey;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "ovi_live_clitestSECRET0123456789abcdef";
const ME: &str = "/api/v1/me";
const LIST: &str = "/api/v1/operators/42/validators";
const REGISTER: &str = "/api/v1/validator-keys/batch";
const DEPOSIT: &str = "/eth/v1/config/deposit_contract";
const VALIDATORS: &str = "/eth/v1/beacon/states/head/validators";

// ---- harness -------------------------------------------------------------

/// A tokio runtime owning the mock servers, and a temp dir for inputs.
struct Harness {
    rt: tokio::runtime::Runtime,
    api: MockServer,
    dir: tempfile::TempDir,
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
        Harness {
            rt,
            api,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn server(&self) -> MockServer {
        self.rt.block_on(MockServer::start())
    }

    fn mount(&self, mock: Mock) {
        self.rt.block_on(mock.mount(&self.api));
    }

    fn mount_on(&self, server: &MockServer, mock: Mock) {
        self.rt.block_on(mock.mount(server));
    }

    fn requests(&self) -> Vec<Request> {
        self.requests_of(&self.api)
    }

    fn requests_of(&self, server: &MockServer) -> Vec<Request> {
        self.rt.block_on(server.received_requests()).unwrap()
    }

    /// Requests that change the registry.
    fn writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.method.as_str(), "POST" | "DELETE" | "PUT" | "PATCH"))
            .collect()
    }

    fn count(&self, verb: &str, p: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method.as_str() == verb && r.url.path() == p)
            .count()
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Records file for `indices` on chain 0x1.
    fn records(&self, indices: &[u64]) -> PathBuf {
        let rows: Vec<Value> = indices
            .iter()
            .map(|i| json!({"validator_index": i, "chain_id": "0x1", "validator_key": pk(*i).to_string()}))
            .collect();
        self.file("records.json", &Value::Array(rows).to_string())
    }

    /// The binary with a clean environment pointed at the mock API.
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("keysync").unwrap();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYSYNC_HTTP_BACKOFF_MS", "1")
            .env("KEYSYNC_HTTP_TIMEOUT_SECS", "20")
            .env("KEYSYNC_API_URL", self.api.uri())
            .env("KEYSYNC_AUTH_URL", self.api.uri())
            .env("KEYSYNC_API_KEY", KEY)
            .current_dir(self.dir.path());
        c
    }

    fn me_ok(&self) {
        self.mount(
            Mock::given(method("GET"))
                .and(path(ME))
                .respond_with(ok_json(json!({"operator_id": "42", "role": "operator"}))),
        );
    }

    fn list(&self, rows: Value) {
        self.mount(
            Mock::given(method("GET"))
                .and(path(LIST))
                .respond_with(ok_json(
                    json!({"operator_id": "42", "network": "mainnet", "validators": rows}),
                )),
        );
    }

    fn writes_ok(&self) {
        self.mount(
            Mock::given(method("POST"))
                .and(path(REGISTER))
                .respond_with(ok_json(json!({"added": 2, "skipped": 0}))),
        );
        self.mount(
            Mock::given(method("POST"))
                .and(path(LIST))
                .respond_with(ResponseTemplate::new(201)),
        );
        self.mount(
            Mock::given(method("DELETE"))
                .and(path_regex(r"^/api/v1/operators/42/validators/\d+$"))
                .respond_with(ResponseTemplate::new(204)),
        );
    }
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

impl Run {
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }

    fn no_stdout(&self) -> &Self {
        assert_eq!(self.stdout, "", "stdout must stay empty on this failure");
        self
    }

    fn no_key(&self) -> &Self {
        assert!(
            !self.stdout.contains(KEY),
            "key on stdout:\n{}",
            self.stdout
        );
        assert!(
            !self.stderr.contains(KEY),
            "key on stderr:\n{}",
            self.stderr
        );
        assert!(
            !self.stderr.contains("clitestSECRET"),
            "part of the key on stderr:\n{}",
            self.stderr
        );
        self
    }

    fn json_lines(&self) -> Vec<serde_json::Map<String, Value>> {
        assert!(!self.stderr.is_empty());
        self.stderr
            .lines()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => m,
                _ => panic!("stderr line is not a JSON object: {l:?}\n{}", self.stderr),
            })
            .collect()
    }
}

fn ok_json(v: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(v)
}

fn pk(i: u64) -> Pubkey {
    let mut b = [0u8; 48];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[47] = 0xc3;
    Pubkey(b)
}

fn rows(spec: &[(u64, &str, bool)]) -> Value {
    Value::Array(
        spec.iter()
            .map(|(i, c, a)| json!({"validator_index": i, "chain_id": c, "active": a}))
            .collect(),
    )
}

/// Python `json.dumps(plan, indent=2)` + newline, for keys on chain 0x1.
fn plan_bytes(to_register: usize, assign: &[u64], unassign: &[u64]) -> String {
    fn list(keys: &[u64]) -> String {
        if keys.is_empty() {
            return "[]".into();
        }
        let items: Vec<String> = keys
            .iter()
            .map(|i| format!("    [\n      {i},\n      \"0x1\"\n    ]"))
            .collect();
        format!("[\n{}\n  ]", items.join(",\n"))
    }
    format!(
        "{{\n  \"to_register\": {to_register},\n  \"to_assign\": {},\n  \"to_unassign\": {}\n}}\n",
        list(assign),
        list(unassign)
    )
}

/// A beacon node whose validators are `0..known` with pubkey [`pk`].
struct Chain {
    known: u64,
}

impl Respond for Chain {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap();
        let data: Vec<Value> = body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|id| {
                let id = id.as_str().unwrap();
                let index = match id.parse::<Pubkey>() {
                    Ok(p) if id.starts_with("0x") => u64::from_be_bytes(p.0[..8].try_into().unwrap()),
                    _ => id.parse().unwrap(),
                };
                (index < self.known).then(|| {
                    json!({"index": index.to_string(), "balance": "32000000000", "status": "active_ongoing",
                        "validator": {"pubkey": pk(index).to_string(), "withdrawal_credentials": "0x00",
                            "effective_balance": "32000000000", "slashed": false,
                            "activation_eligibility_epoch": "0", "activation_epoch": "0",
                            "exit_epoch": "18446744073709551615", "withdrawable_epoch": "18446744073709551615"}})
                })
            })
            .collect();
        ok_json(json!({"execution_optimistic": false, "finalized": false, "data": data}))
    }
}

fn deposit(chain_id: &str) -> Mock {
    Mock::given(method("GET"))
        .and(path(DEPOSIT))
        .respond_with(ok_json(json!({"data": {"chain_id": chain_id, "address": "0x00000000219ab540356cBB839Cbe05303d7705Fa"}})))
}

fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Answers 401 with the Authorization header it received in the body, as a
/// careless proxy would.
struct EchoAuth(u16);

impl Respond for EchoAuth {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        ResponseTemplate::new(self.0).set_body_string(format!(
            "{{\"error\": \"invalid credentials\", \"got\": \"{auth}\"}}"
        ))
    }
}

// ---- exit 0 --------------------------------------------------------------

#[test]
fn show_prints_the_python_json_dumps_bytes() {
    let h = Harness::new();
    h.me_ok();
    h.mount(
        Mock::given(method("GET"))
            .and(path(LIST))
            .respond_with(ok_json(json!({"assignments": [
                {"validator_index": 5, "chain_id": "0x1", "active": true, "note": "ignored"},
                {"validator_index": 7, "chain_id": "0x4268"},
                {"validator_index": 9, "chain_id": "0x1", "active": false},
            ]}))),
    );
    let r = run(h.cmd().arg("show"));
    r.expect(0);
    // python3 -c 'import json; print(json.dumps([...], indent=2))'
    assert_eq!(
        r.stdout,
        "[\n  {\n    \"validator_index\": 5,\n    \"chain_id\": \"0x1\",\n    \"active\": true\n  },\n  {\n    \"validator_index\": 7,\n    \"chain_id\": \"0x4268\",\n    \"active\": true\n  },\n  {\n    \"validator_index\": 9,\n    \"chain_id\": \"0x1\",\n    \"active\": false\n  }\n]\n"
    );
    assert!(h.writes().is_empty());
}

#[test]
fn show_of_an_empty_registry_prints_an_empty_array() {
    let h = Harness::new();
    h.me_ok();
    h.mount(
        Mock::given(method("GET"))
            .and(path(LIST))
            .respond_with(ok_json(json!({"validators": null}))),
    );
    let r = run(h.cmd().arg("show"));
    r.expect(0);
    assert_eq!(r.stdout, "[]\n");
}

/// Desired {1, 2, 3}; registry: 2 active, 3 inactive, 9 and 10 active.
fn diff_fixture(h: &Harness) -> PathBuf {
    h.me_ok();
    h.list(rows(&[
        (2, "0x1", true),
        (3, "0x1", false),
        (9, "0x1", true),
        (10, "0x1", true),
    ]));
    h.writes_ok();
    h.records(&[1, 2, 3])
}

const DIFF_PLAN: &str = "{\n  \"to_register\": 2,\n  \"to_assign\": [\n    [\n      1,\n      \"0x1\"\n    ],\n    [\n      3,\n      \"0x1\"\n    ]\n  ],\n  \"to_unassign\": [\n    [\n      9,\n      \"0x1\"\n    ],\n    [\n      10,\n      \"0x1\"\n    ]\n  ]\n}\n";

#[test]
fn diff_prints_the_exact_plan_bytes_and_writes_nothing() {
    let h = Harness::new();
    let records = diff_fixture(&h);
    let r = run(h.cmd().arg("diff").env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0);
    // python3 -c 'import json; print(json.dumps({"to_register": 2, "to_assign": [[1, "0x1"], [3, "0x1"]], "to_unassign": [[9, "0x1"], [10, "0x1"]]}, indent=2))'
    assert_eq!(r.stdout, DIFF_PLAN);
    assert_eq!(r.stdout, plan_bytes(2, &[1, 3], &[9, 10]));
    assert!(h.writes().is_empty());
}

#[test]
fn sync_without_apply_prints_the_plan_and_writes_nothing() {
    let h = Harness::new();
    let records = diff_fixture(&h);
    let r = run(h.cmd().arg("sync").env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0).stderr_has(&["dry-run"]);
    assert_eq!(r.stdout, DIFF_PLAN);
    assert!(h.writes().is_empty(), "{:?}", h.writes());
}

#[test]
fn sync_apply_dry_run_writes_nothing() {
    let h = Harness::new();
    let records = diff_fixture(&h);
    let r = run(h
        .cmd()
        .args(["sync", "--apply", "--dry-run"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0).stderr_has(&["dry-run"]);
    assert_eq!(r.stdout, DIFF_PLAN);
    assert!(h.writes().is_empty(), "{:?}", h.writes());
}

#[test]
fn sync_apply_registers_then_assigns_then_unassigns() {
    let h = Harness::new();
    let records = diff_fixture(&h);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0);
    assert_eq!(r.stdout, DIFF_PLAN);
    let writes = h.writes();
    let seq: Vec<String> = writes
        .iter()
        .map(|w| format!("{} {}", w.method, w.url.path()))
        .collect();
    assert_eq!(
        seq,
        [
            format!("POST {REGISTER}"),
            format!("POST {LIST}"),
            format!("DELETE {LIST}/9"),
            format!("DELETE {LIST}/10"),
        ]
    );
    assert_eq!(
        writes[0].body_json::<Value>().unwrap(),
        json!({"keys": [
            {"validator_index": 1, "chain_id": "0x1", "validator_key": pk(1).to_string()},
            {"validator_index": 3, "chain_id": "0x1", "validator_key": pk(3).to_string()},
        ]})
    );
    assert_eq!(
        writes[1].body_json::<Value>().unwrap(),
        json!({"validators": [
            {"validator_index": 1, "chain_id": "0x1"},
            {"validator_index": 3, "chain_id": "0x1"},
        ]})
    );
    for d in &writes[2..] {
        assert_eq!(d.url.query(), Some("chain_id=0x1"));
    }
    for req in h.requests() {
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            &format!("Bearer {KEY}")
        );
    }
}

#[test]
fn sync_apply_in_steady_state_writes_nothing() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(&[(1, "0x1", true), (2, "0x1", true)]));
    h.writes_ok();
    let records = h.records(&[1, 2]);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0).stderr_has(&["nothing to do"]);
    assert_eq!(r.stdout, plan_bytes(0, &[], &[]));
    assert!(h.writes().is_empty());
}

#[test]
fn sync_apply_registers_at_most_500_keys_per_request() {
    let h = Harness::new();
    h.me_ok();
    h.list(json!([]));
    h.writes_ok();
    let all: Vec<u64> = (0..1001).collect();
    let records = h.records(&all);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0);
    let sizes: Vec<usize> = h
        .writes()
        .iter()
        .filter(|w| w.url.path() == REGISTER)
        .map(|w| {
            w.body_json::<Value>().unwrap()["keys"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, vec![500, 500, 1]);
    assert_eq!(h.count("POST", LIST), 1);
}

#[test]
fn diff_resolves_pubkeys_and_indices_through_the_beacon_node() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(&[(2, "0x1", true)]));
    let beacon = h.server();
    h.mount_on(&beacon, deposit("1"));
    h.mount_on(
        &beacon,
        Mock::given(method("POST"))
            .and(path(VALIDATORS))
            .respond_with(Chain { known: 100 }),
    );
    let pubkeys = h.file(
        "keys.txt",
        &format!("# mine\n{}\n{}\n{}\n", pk(1), pk(2), pk(500)),
    );
    let index_list = h.file("indices.txt", "4\n");
    let r = run(h
        .cmd()
        .arg("diff")
        .env("KEYSYNC_BEACON_URL", beacon.uri())
        .env("KEYSYNC_PUBKEYS_FILE", &pubkeys)
        .env("KEYSYNC_INDEX_LIST_FILE", &index_list));
    r.expect(0).stderr_has(&["does not know"]);
    assert_eq!(r.stdout, plan_bytes(2, &[1, 4], &[]));
}

#[test]
fn a_configured_operator_id_skips_me() {
    let h = Harness::new();
    h.mount(
        Mock::given(method("GET"))
            .and(path("/api/v1/operators/77/validators"))
            .respond_with(ok_json(json!({"validators": []}))),
    );
    let r = run(h.cmd().arg("show").env("KEYSYNC_OPERATOR_ID", "77"));
    r.expect(0);
    assert_eq!(r.stdout, "[]\n");
    assert_eq!(h.count("GET", ME), 0);
    assert_eq!(h.requests().len(), 1);
}

// ---- precedence ----------------------------------------------------------

#[test]
fn a_flag_beats_the_environment_which_beats_the_config_file() {
    let h = Harness::new();
    let [file_srv, env_srv, flag_srv] = [h.server(), h.server(), h.server()];
    for (srv, idx) in [(&file_srv, 1), (&env_srv, 2), (&flag_srv, 3)] {
        h.mount_on(
            srv,
            Mock::given(method("GET"))
                .and(path(LIST))
                .respond_with(ok_json(
                    json!({"validators": [{"validator_index": idx, "chain_id": "0x1"}]}),
                )),
        );
    }
    let config = h.file(
        "keysync.toml",
        &format!("api_url = \"{}\"\noperator_id = \"42\"\n", file_srv.uri()),
    );
    let show = |srv: usize| {
        format!(
            "[\n  {{\n    \"validator_index\": {srv},\n    \"chain_id\": \"0x1\",\n    \"active\": true\n  }}\n]\n"
        )
    };
    let base = || {
        let mut c = h.cmd();
        c.env_remove("KEYSYNC_API_URL")
            .arg("show")
            .arg("--config")
            .arg(&config);
        c
    };

    let r = run(base()
        .env("KEYSYNC_API_URL", env_srv.uri())
        .args(["--api-url", &flag_srv.uri()]));
    r.expect(0);
    assert_eq!(r.stdout, show(3));

    let r = run(base().env("KEYSYNC_API_URL", env_srv.uri()));
    r.expect(0);
    assert_eq!(r.stdout, show(2));

    let r = run(&mut base());
    r.expect(0);
    assert_eq!(r.stdout, show(1));

    assert_eq!(h.requests_of(&flag_srv).len(), 1);
    assert_eq!(h.requests_of(&env_srv).len(), 1);
    assert_eq!(h.requests_of(&file_srv).len(), 1);
    assert!(
        h.requests().is_empty(),
        "operator_id came from the file: no /me"
    );
}

#[test]
fn an_operator_id_flag_beats_the_environment() {
    let h = Harness::new();
    h.mount(
        Mock::given(method("GET"))
            .and(path("/api/v1/operators/7/validators"))
            .respond_with(ok_json(json!({"validators": []}))),
    );
    let r = run(h
        .cmd()
        .args(["show", "--operator-id", "7"])
        .env("KEYSYNC_OPERATOR_ID", "42"));
    r.expect(0);
    assert_eq!(h.requests().len(), 1);
}

// ---- exit 2 --------------------------------------------------------------

#[test]
fn me_401_exits_2_without_retrying() {
    let h = Harness::new();
    h.mount(
        Mock::given(method("GET"))
            .and(path(ME))
            .respond_with(ResponseTemplate::new(401).set_body_string("unknown key")),
    );
    let r = run(h.cmd().arg("show"));
    r.expect(2).no_stdout().stderr_has(&["401", "rejected"]);
    assert_eq!(h.requests().len(), 1, "a 401 is never retried");
}

#[test]
fn an_auth_service_outage_exits_2_after_retries() {
    let h = Harness::new();
    h.mount(
        Mock::given(method("GET"))
            .and(path(ME))
            .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway")),
    );
    let r = run(h.cmd().arg("show").env("KEYSYNC_HTTP_ATTEMPTS", "3"));
    r.expect(2)
        .no_stdout()
        .stderr_has(&["auth service", "HTTP 502", "after 3 attempts"]);
    assert_eq!(h.count("GET", ME), 3);
    assert_eq!(h.count("GET", LIST), 0);
}

#[test]
fn list_403_exits_2() {
    let h = Harness::new();
    h.me_ok();
    h.mount(
        Mock::given(method("GET"))
            .and(path(LIST))
            .respond_with(ResponseTemplate::new(403).set_body_string("forbidden")),
    );
    let records = h.records(&[1]);
    let r = run(h.cmd().arg("diff").env("KEYSYNC_INDICES_FILE", &records));
    r.expect(2).no_stdout().stderr_has(&["403"]);
    assert_eq!(h.count("GET", LIST), 1);
    assert!(h.writes().is_empty());
}

#[test]
fn a_staff_key_without_operator_id_exits_2() {
    let h = Harness::new();
    h.mount(
        Mock::given(method("GET"))
            .and(path(ME))
            .respond_with(ok_json(json!({"operator_id": "", "role": "staff"}))),
    );
    let r = run(h.cmd().arg("show"));
    r.expect(2)
        .no_stdout()
        .stderr_has(&["not scoped to a single operator", "KEYSYNC_OPERATOR_ID"]);
    assert_eq!(h.count("GET", LIST), 0);
}

// ---- exit 3 --------------------------------------------------------------

#[test]
fn a_500_storm_on_list_exits_3_after_the_configured_attempts() {
    let h = Harness::new();
    h.me_ok();
    h.mount(
        Mock::given(method("GET"))
            .and(path(LIST))
            .respond_with(ResponseTemplate::new(500).set_body_string("internal error")),
    );
    let r = run(h.cmd().arg("show").env("KEYSYNC_HTTP_ATTEMPTS", "3"));
    r.expect(3)
        .no_stdout()
        .stderr_has(&["HTTP 500", "after 3 attempts"]);
    assert_eq!(h.count("GET", LIST), 3);
}

#[test]
fn a_non_json_register_response_exits_3() {
    let h = Harness::new();
    h.me_ok();
    h.list(json!([]));
    h.mount(
        Mock::given(method("POST"))
            .and(path(REGISTER))
            .respond_with(ResponseTemplate::new(200).set_body_string("<html>ok</html>")),
    );
    let records = h.records(&[1]);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(3).stderr_has(&["register", "unexpected body"]);
    assert_eq!(r.stdout, plan_bytes(1, &[1], &[]));
    assert_eq!(h.count("POST", REGISTER), 1);
    assert_eq!(
        h.count("POST", LIST),
        0,
        "nothing assigned after a failed register"
    );
}

#[test]
fn an_assign_failure_after_register_exits_3_and_says_what_landed() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(&[(9, "0x1", true)]));
    h.mount(
        Mock::given(method("POST"))
            .and(path(REGISTER))
            .respond_with(ok_json(json!({"added": 1, "skipped": 1}))),
    );
    h.mount(
        Mock::given(method("POST"))
            .and(path(LIST))
            .respond_with(ResponseTemplate::new(500)),
    );
    let records = h.records(&[1, 2]);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_HTTP_ATTEMPTS", "2")
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(3).stderr_has(&[
        "apply failed in the assign stage after registering 1 (+1 already known), assigning 0 and unassigning 0",
    ]);
    assert_eq!(r.stdout, plan_bytes(2, &[1, 2], &[9]));
    assert_eq!(h.count("POST", REGISTER), 1);
    assert_eq!(h.count("POST", LIST), 2, "the 500 was retried once");
    assert_eq!(
        h.count("DELETE", &format!("{LIST}/9")),
        0,
        "unassign never ran"
    );
}

// ---- exit 4 --------------------------------------------------------------

/// A configuration or input error: exit 4, nothing on stdout, no request.
fn config_error(h: &Harness, cmd: &mut Command, needles: &[&str]) -> Run {
    let r = run(cmd);
    r.expect(4).no_stdout().stderr_has(needles).no_key();
    assert!(h.requests().is_empty(), "{:?}", h.requests());
    r
}

#[test]
fn a_missing_api_key_exits_4() {
    let h = Harness::new();
    let records = h.records(&[1]);
    config_error(
        &h,
        h.cmd()
            .env_remove("KEYSYNC_API_KEY")
            .arg("diff")
            .env("KEYSYNC_INDICES_FILE", &records),
        &["KEYSYNC_API_KEY", "is required"],
    );
}

#[test]
fn a_key_that_is_not_ovi_exits_4() {
    let h = Harness::new();
    let records = h.records(&[1]);
    let r = config_error(
        &h,
        h.cmd()
            .env("KEYSYNC_API_KEY", "sk_live_notakey_HIDDEN")
            .arg("diff")
            .env("KEYSYNC_INDICES_FILE", &records),
        &["KEYSYNC_API_KEY", "must start with 'ovi_'"],
    );
    assert!(!r.stderr.contains("HIDDEN"), "{}", r.stderr);
}

#[test]
fn invariant_6_a_plain_http_api_url_to_a_remote_host_exits_4() {
    let h = Harness::new();
    config_error(
        &h,
        h.cmd()
            .args(["show", "--api-url", "http://console.example.com"]),
        &["--api-url", "must use https://"],
    );
    config_error(
        &h,
        h.cmd()
            .arg("show")
            .env("KEYSYNC_AUTH_URL", "http://10.1.2.3:8080"),
        &["KEYSYNC_AUTH_URL", "must use https://"],
    );
}

#[test]
fn userinfo_in_the_beacon_url_exits_4() {
    let h = Harness::new();
    let keys = h.file("keys.txt", &format!("{}\n", pk(1)));
    let r = config_error(
        &h,
        h.cmd()
            .arg("diff")
            .env("KEYSYNC_BEACON_URL", "http://admin:hunter2@127.0.0.1:5052")
            .env("KEYSYNC_PUBKEYS_FILE", &keys),
        &["KEYSYNC_BEACON_URL", "must not embed credentials"],
    );
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
}

#[test]
fn invariant_1_a_bad_pubkey_names_the_file_and_line_and_removes_nothing() {
    let h = Harness::new();
    let keys = h.file(
        "keys.txt",
        &format!("# operator keys\n{}\n\n0xdeadbeef\n", pk(1)),
    );
    let want = format!("{}:4: not a BLS pubkey", keys.display());
    config_error(
        &h,
        h.cmd()
            .arg("diff")
            .env("KEYSYNC_BEACON_URL", refused_url())
            .env("KEYSYNC_PUBKEYS_FILE", &keys),
        &[&want],
    );
}

#[test]
fn an_index_with_an_underscore_names_the_file_and_line() {
    let h = Harness::new();
    let list = h.file("indices.txt", "1\n2\n4_2\n");
    let want = format!("{}:3: not a validator index", list.display());
    config_error(
        &h,
        h.cmd()
            .args(["sync", "--apply"])
            .env("KEYSYNC_BEACON_URL", refused_url())
            .env("KEYSYNC_INDEX_LIST_FILE", &list),
        &[&want, "\"4_2\""],
    );
}

#[test]
fn a_boolean_validator_index_names_the_file_and_element() {
    let h = Harness::new();
    let records = h.file(
        "records.json",
        &json!([
            {"validator_index": 1, "chain_id": "0x1", "validator_key": pk(1).to_string()},
            {"validator_index": true, "chain_id": "0x1", "validator_key": pk(2).to_string()},
        ])
        .to_string(),
    );
    let want = format!(
        "{}[1]: validator_index must be a non-negative integer",
        records.display()
    );
    config_error(
        &h,
        h.cmd().arg("diff").env("KEYSYNC_INDICES_FILE", &records),
        &[&want],
    );
}

#[test]
fn an_unknown_flag_exits_4() {
    let h = Harness::new();
    config_error(
        &h,
        h.cmd().args(["diff", "--max-delets", "3"]),
        &["--max-delets", "invalid command line"],
    );
    config_error(&h, h.cmd().arg("frobnicate"), &["frobnicate"]);
}

#[test]
fn an_unknown_key_in_the_config_file_exits_4() {
    let h = Harness::new();
    let records = h.records(&[1]);
    let config = h.file("keysync.toml", "netwrok = \"hoodi\"\n");
    config_error(
        &h,
        h.cmd()
            .arg("diff")
            .arg("--config")
            .arg(&config)
            .env("KEYSYNC_INDICES_FILE", &records),
        &["keysync.toml", "netwrok"],
    );
}

#[test]
fn a_beacon_node_on_another_chain_exits_4() {
    let h = Harness::new();
    let beacon = h.server();
    h.mount_on(&beacon, deposit("5"));
    let keys = h.file("keys.txt", &format!("{}\n", pk(1)));
    let r = run(h
        .cmd()
        .arg("sync")
        .arg("--apply")
        .env("KEYSYNC_OPERATOR_ID", "42")
        .env("KEYSYNC_BEACON_URL", beacon.uri())
        .env("KEYSYNC_PUBKEYS_FILE", &keys));
    r.expect(4)
        .no_stdout()
        .stderr_has(&["is on chain 5", "KEYSYNC_CHAIN_ID is 0x1"]);
    assert!(h.requests().is_empty(), "never listed nor wrote");
    let beacon_reqs = h.requests_of(&beacon);
    assert!(beacon_reqs.iter().all(|r| r.url.path() == DEPOSIT));
}

// ---- exit 5 --------------------------------------------------------------

#[test]
fn invariant_3_eleven_planned_unassigns_trip_the_default_guardrail() {
    let h = Harness::new();
    h.me_ok();
    let mut registry = vec![(1, "0x1", true)];
    registry.extend((100..111).map(|i| (i, "0x1", true)));
    h.list(rows(&registry));
    h.writes_ok();
    let records = h.records(&[1, 2]);
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(5)
        .stderr_has(&["refusing to unassign 11 validators", "--max-deletes 10"]);
    let unassign: Vec<u64> = (100..111).collect();
    assert_eq!(r.stdout, plan_bytes(1, &[2], &unassign));
    assert!(h.writes().is_empty(), "{:?}", h.writes());
}

#[test]
fn raising_max_deletes_lets_the_unassigns_through() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(
        &(100..111).map(|i| (i, "0x1", true)).collect::<Vec<_>>(),
    ));
    h.writes_ok();
    let records = h.records(&[1]);
    let r = run(h
        .cmd()
        .args(["sync", "--apply", "--max-deletes", "11"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0);
    let deletes = h
        .writes()
        .iter()
        .filter(|w| w.method.as_str() == "DELETE")
        .count();
    assert_eq!(deletes, 11);
}

// ---- exit 6 --------------------------------------------------------------

#[test]
fn invariant_2_a_beacon_url_answering_404_html_exits_6_and_removes_nothing() {
    let h = Harness::new();
    h.me_ok();
    let beacon = h.server();
    h.mount_on(
        &beacon,
        Mock::given(wiremock::matchers::any()).respond_with(
            ResponseTemplate::new(404).set_body_raw(
                "<html><body><h1>404 Not Found</h1></body></html>",
                "text/html",
            ),
        ),
    );
    let keys = h.file("keys.txt", &format!("{}\n", pk(1)));
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_BEACON_URL", beacon.uri())
        .env("KEYSYNC_PUBKEYS_FILE", &keys));
    r.expect(6)
        .no_stdout()
        .stderr_has(&["beacon node", "deposit_contract", "HTTP 404"]);
    assert_eq!(
        h.count("GET", LIST),
        0,
        "a wrong URL never reaches planning"
    );
    assert!(h.writes().is_empty());
}

#[test]
fn a_beacon_refusing_connections_exits_6() {
    let h = Harness::new();
    h.me_ok();
    let list = h.file("indices.txt", "1\n");
    let r = run(h
        .cmd()
        .arg("diff")
        .env("KEYSYNC_HTTP_ATTEMPTS", "2")
        .env("KEYSYNC_BEACON_URL", refused_url())
        .env("KEYSYNC_INDEX_LIST_FILE", &list));
    r.expect(6)
        .no_stdout()
        .stderr_has(&["beacon node", "after 2 attempts"]);
    assert_eq!(h.count("GET", LIST), 0);
}

// ---- JSON logs -----------------------------------------------------------

#[test]
fn json_logs_put_one_json_object_on_every_stderr_line() {
    let h = Harness::new();
    let records = diff_fixture(&h);

    // A successful sync with retries and info lines.
    h.mount(
        Mock::given(method("GET"))
            .and(path(LIST))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(1),
    );
    let r = run(h
        .cmd()
        .args(["sync", "--apply", "--log-format", "json"])
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(0);
    assert_eq!(r.stdout, DIFF_PLAN);
    let lines = r.json_lines();
    assert!(lines.iter().any(|l| l["level"] == "WARN"), "{}", r.stderr);
    assert!(lines.iter().all(|l| l.contains_key("message")));

    // A configuration error (missing key), format from the environment.
    let r = run(h
        .cmd()
        .env_remove("KEYSYNC_API_KEY")
        .env("KEYSYNC_LOG_FORMAT", "json")
        .arg("diff")
        .env("KEYSYNC_INDICES_FILE", &records));
    r.expect(4);
    let lines = r.json_lines();
    assert_eq!(lines.last().unwrap()["exit_code"], 4);

    // An unknown flag, format from the flag and from the environment.
    for cmd in [
        h.cmd().args(["diff", "--log-format", "json", "--bogus"]),
        h.cmd()
            .env("KEYSYNC_LOG_FORMAT", "json")
            .args(["sync", "--max-deletes", "many"]),
        h.cmd().args(["--log-format=json", "nonsense"]),
    ] {
        let r = run(cmd);
        r.expect(4);
        let lines = r.json_lines();
        assert_eq!(lines.len(), 1, "{}", r.stderr);
        assert_eq!(lines[0]["level"], "ERROR");
    }

    // A config file that asks for json logs and has a bad value.
    let config = h.file("bad.toml", "log_format = \"json\"\nhttp_attempts = 0\n");
    let r = run(h.cmd().arg("show").arg("--config").arg(&config));
    r.expect(4);
    let lines = r.json_lines();
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("http_attempts"),
        "{}",
        r.stderr
    );
}

// ---- secrets -------------------------------------------------------------

#[test]
fn api_key_never_appears_in_output() {
    let records_h = Harness::new();
    let records = records_h.records(&[1]);

    for format in ["console", "json"] {
        // 401 whose body echoes the Authorization header.
        let h = Harness::new();
        h.mount(
            Mock::given(method("GET"))
                .and(path(ME))
                .respond_with(EchoAuth(401)),
        );
        run(h.cmd().args(["show", "--log-format", format]))
            .expect(2)
            .stderr_has(&["[redacted]"])
            .no_key();

        // 500 (retried, logged on every attempt) whose body contains the key.
        let h = Harness::new();
        h.me_ok();
        h.mount(
            Mock::given(method("GET")).and(path(LIST)).respond_with(
                ResponseTemplate::new(500)
                    .set_body_string(format!("upstream said: Authorization: Bearer {KEY}")),
            ),
        );
        run(h.cmd().args(["show", "--log-format", format]))
            .expect(3)
            .stderr_has(&["[redacted]"])
            .no_key();

        // 403 echoing the key on a write during sync --apply.
        let h = Harness::new();
        h.me_ok();
        h.list(json!([]));
        h.mount(
            Mock::given(method("POST"))
                .and(path(REGISTER))
                .respond_with(EchoAuth(403)),
        );
        run(h
            .cmd()
            .args(["sync", "--apply", "--log-format", format])
            .env("KEYSYNC_INDICES_FILE", &records))
        .expect(2)
        .no_key();

        // Bad URL configurations that contain the key.
        let h = Harness::new();
        for (var, value) in [
            (
                "KEYSYNC_API_URL",
                format!("https://operator:{KEY}@console.example"),
            ),
            ("KEYSYNC_API_URL", KEY.to_string()),
            ("KEYSYNC_AUTH_URL", format!("http://auth.example/{KEY}")),
            ("KEYSYNC_BEACON_URL", format!("http://{KEY}@127.0.0.1:5052")),
            ("KEYSYNC_API_URL", format!("https://console.example:{KEY}")),
        ] {
            run(h
                .cmd()
                .args(["diff", "--log-format", format])
                .env("KEYSYNC_INDICES_FILE", &records)
                .env(var, &value))
            .expect(4)
            .no_key();
        }

        // The key typed where it does not belong on the command line.
        for args in [
            vec!["show", KEY],
            vec!["show", "--http-attempts", KEY],
            vec!["show", "--network"],
            vec!["demo", "--api-key", KEY],
        ] {
            run(h.cmd().args(&args).args(["--log-format", format]))
                .expect(4)
                .no_key();
        }
        assert!(h.requests().is_empty());
    }
}

#[test]
fn api_key_file_is_sent_as_the_bearer_and_never_printed() {
    let h = Harness::new();
    let key_file = h.file("api-key", &format!("{KEY}\n"));
    h.mount(
        Mock::given(method("GET"))
            .and(path(ME))
            .respond_with(EchoAuth(401)),
    );
    let r = run(h
        .cmd()
        .env_remove("KEYSYNC_API_KEY")
        .arg("show")
        .arg("--api-key-file")
        .arg(&key_file));
    r.expect(2).no_key();
    let reqs = h.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].headers.get("authorization").unwrap(),
        &format!("Bearer {KEY}")
    );

    // And it works end to end from the environment variable too.
    let h = Harness::new();
    let key_file = h.file("api-key", &format!("{KEY}\n"));
    h.me_ok();
    h.list(json!([]));
    let r = run(h
        .cmd()
        .env_remove("KEYSYNC_API_KEY")
        .env("KEYSYNC_API_KEY_FILE", &key_file)
        .args(["show", "--log-format", "json"]));
    r.expect(0).no_key();
    assert_eq!(r.stdout, "[]\n");
    for req in h.requests() {
        assert_eq!(
            req.headers.get("authorization").unwrap(),
            &format!("Bearer {KEY}")
        );
    }

    // A key file that is not an ovi_ key: exit 4, content not echoed.
    let bad = h.file("bad-key", "sk_live_CONTENTSECRET\n");
    let r = run(h
        .cmd()
        .env_remove("KEYSYNC_API_KEY")
        .arg("show")
        .arg("--api-key-file")
        .arg(&bad));
    r.expect(4).stderr_has(&["--api-key-file"]);
    assert!(!r.stderr.contains("CONTENTSECRET"), "{}", r.stderr);
}

// ---- a wrong witness and hostile answers ---------------------------------

/// Mounts what every beacon node answers about itself: on chain 1, synced,
/// its head at the wall-clock slot (12 s slots).
fn synced_node(h: &Harness, beacon: &MockServer) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let genesis = now - 1200;
    h.mount_on(beacon, deposit("1"));
    h.mount_on(
        beacon,
        Mock::given(method("GET"))
            .and(path("/eth/v1/node/syncing"))
            .respond_with(ok_json(
                json!({"data": {"head_slot": "100", "sync_distance": "0",
                "is_syncing": false, "is_optimistic": false, "el_offline": false}}),
            )),
    );
    h.mount_on(
        beacon,
        Mock::given(method("GET"))
            .and(path("/eth/v1/beacon/genesis"))
            .respond_with(ok_json(json!({"data": {"genesis_time": genesis.to_string(),
                "genesis_validators_root": format!("0x{}", "00".repeat(32)), "genesis_fork_version": "0x00000000"}}))),
    );
    h.mount_on(
        beacon,
        Mock::given(method("GET"))
            .and(path("/eth/v1/config/spec"))
            .respond_with(ok_json(
                json!({"data": {"SECONDS_PER_SLOT": "12", "SLOTS_PER_EPOCH": "32"}}),
            )),
    );
}

/// A beacon node that answers lookups by index but knows no pubkey: a
/// pubkey lookup that failed.
struct IndicesOnly {
    known: u64,
}

impl Respond for IndicesOnly {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = req.body_json().unwrap();
        let data: Vec<Value> = body["ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|id| id.as_str()?.parse::<u64>().ok())
            .filter(|i| *i < self.known)
            .map(|index| {
                json!({"index": index.to_string(), "balance": "32000000000", "status": "active_ongoing",
                    "validator": {"pubkey": pk(index).to_string(), "withdrawal_credentials": "0x00",
                        "effective_balance": "32000000000", "slashed": false,
                        "activation_eligibility_epoch": "0", "activation_epoch": "0",
                        "exit_epoch": "18446744073709551615", "withdrawable_epoch": "18446744073709551615"}})
            })
            .collect();
        ok_json(json!({"execution_optimistic": false, "finalized": false, "data": data}))
    }
}

#[test]
fn invariant_2_a_listed_pubkey_is_never_unassigned_when_its_lookup_failed() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(&[
        (1, "0x1", true),
        (2, "0x1", true),
        (7, "0x1", true),
    ]));
    h.writes_ok();
    let beacon = h.server();
    synced_node(&h, &beacon);
    h.mount_on(
        &beacon,
        Mock::given(method("POST"))
            .and(path(VALIDATORS))
            .respond_with(IndicesOnly { known: 100 }),
    );
    // 1 and 2 are ours; 7 is not.
    let keys = h.file("keys.txt", &format!("{}\n{}\n", pk(1), pk(2)));
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_BEACON_URL", beacon.uri())
        .env("KEYSYNC_PUBKEYS_FILE", &keys));
    r.expect(0)
        .stderr_has(&["listed in the inputs", "they stay"]);
    assert_eq!(r.stdout, plan_bytes(0, &[], &[7]));
    let deletes: Vec<String> = h
        .writes()
        .iter()
        .filter(|w| w.method.as_str() == "DELETE")
        .map(|w| w.url.path().to_string())
        .collect();
    assert_eq!(deletes, vec![format!("{LIST}/7")], "only the stranger");
}

/// A loopback beacon node whose validators answer never ends: a 200 with a
/// chunked body that streams forever. Everything else a node is asked
/// gets a synced, chain-1 answer. Returns its URL and the bytes of body it
/// managed to send before the client hung up.
fn endless_validators_node() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let small = match target.as_str() {
                        "/eth/v1/config/deposit_contract" => {
                            Some(r#"{"data":{"chain_id":"1","address":"0x00"}}"#.to_string())
                        }
                        "/eth/v1/node/syncing" => Some(
                            r#"{"data":{"head_slot":"100","sync_distance":"0","is_syncing":false}}"#
                                .to_string(),
                        ),
                        "/eth/v1/beacon/genesis" => Some(format!(
                            r#"{{"data":{{"genesis_time":"{}"}}}}"#,
                            now - 1200
                        )),
                        "/eth/v1/config/spec" => Some(r#"{"data":{"SECONDS_PER_SLOT":"12"}}"#.to_string()),
                        _ => None,
                    };
                    if let Some(b) = small {
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                            b.len()
                        );
                        continue;
                    }
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    let row =
                        r#"{"index":"1","status":"active_ongoing","validator":{"pubkey":"0x00"}},"#;
                    let chunk = row.repeat(100);
                    let mut first = format!("{:x}\r\n{{\"data\":[\r\n", "{\"data\":[".len());
                    loop {
                        first.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
                        if out.write_all(first.as_bytes()).is_err() {
                            return;
                        }
                        counter.fetch_add(first.len(), std::sync::atomic::Ordering::Relaxed);
                        first.clear();
                    }
                }
            });
        }
    });
    (url, sent)
}

#[test]
fn an_endless_beacon_answer_ends_in_a_clear_error_with_bounded_memory() {
    let h = Harness::new();
    h.me_ok();
    let (url, sent) = endless_validators_node();
    let list = h.file("indices.txt", "1\n");
    let r = run(h
        .cmd()
        .arg("diff")
        .env("KEYSYNC_BEACON_URL", &url)
        .env("KEYSYNC_INDEX_LIST_FILE", &list));
    r.expect(6).no_stdout().stderr_has(&[
        &url,
        "POST /eth/v1/beacon/states/head/validators",
        "larger than the 65 KiB keysync accepts",
    ]);
    // The server counts what the kernel took: its send buffer (autotuned up
    // to `tcp_wmem`'s 4 MB) and keysync's receive window fill before
    // keysync's close reaches it (4.2 MB once, under load). A client that
    // read on would never stop (the stream is endless), so 16 MiB still
    // tells the two apart.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 16 << 20,
        "keysync stopped reading near its limit, not {sent} bytes in"
    );
}

#[test]
fn an_oversized_identity_answer_is_an_auth_failure_naming_the_party() {
    let h = Harness::new();
    h.mount(Mock::given(method("GET")).and(path(ME)).respond_with(
        ResponseTemplate::new(200).set_body_raw(
            format!(
                "{{\"operator_id\":\"42\",\"pad\":\"{}\"}}",
                "x".repeat(100_000)
            ),
            "application/json",
        ),
    ));
    run(h.cmd().arg("show"))
        .expect(2)
        .no_stdout()
        .stderr_has(&["auth service", "GET /api/v1/me", "larger than the 64 KiB"])
        .no_key();
}

#[test]
fn auth_and_console_redirects_are_not_followed() {
    let h = Harness::new();
    h.mount(Mock::given(method("GET")).and(path(ME)).respond_with(
        ResponseTemplate::new(302).insert_header("location", "https://collector.example/steal?x=1"),
    ));
    run(h.cmd().arg("show"))
        .expect(2)
        .no_stdout()
        .stderr_has(&["HTTP 302 redirect to collector.example", "not followed"])
        .no_key();
    assert_eq!(h.count("GET", ME), 1, "asked once, never followed");

    let h = Harness::new();
    h.me_ok();
    h.mount(Mock::given(method("GET")).and(path(LIST)).respond_with(
        ResponseTemplate::new(307).insert_header("location", "http://127.0.0.2:1/list"),
    ));
    run(h.cmd().arg("show"))
        .expect(3)
        .stderr_has(&["console API", "HTTP 307 redirect to 127.0.0.2"])
        .no_key();
}

/// A beacon node whose answer puts pk(3) at index 3 and again at 50.
struct TwoIndicesForOnePubkey;

impl Respond for TwoIndicesForOnePubkey {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let row = |index: u64, key: u64| {
            json!({"index": index.to_string(), "balance": "32000000000", "status": "active_ongoing",
                "validator": {"pubkey": pk(key).to_string(), "withdrawal_credentials": "0x00",
                    "effective_balance": "32000000000", "slashed": false,
                    "activation_eligibility_epoch": "0", "activation_epoch": "0",
                    "exit_epoch": "18446744073709551615", "withdrawable_epoch": "18446744073709551615"}})
        };
        ok_json(json!({"data": [row(3, 3), row(50, 3)]}))
    }
}

#[test]
fn invariant_2_a_beacon_answer_that_contradicts_itself_exits_6_and_moves_nothing() {
    let h = Harness::new();
    h.me_ok();
    h.list(rows(&[(3, "0x1", true)]));
    h.writes_ok();
    let beacon = h.server();
    synced_node(&h, &beacon);
    h.mount_on(
        &beacon,
        Mock::given(method("POST"))
            .and(path(VALIDATORS))
            .respond_with(TwoIndicesForOnePubkey),
    );
    let keys = h.file("keys.txt", &format!("{}\n", pk(3)));
    let r = run(h
        .cmd()
        .args(["sync", "--apply"])
        .env("KEYSYNC_BEACON_URL", beacon.uri())
        .env("KEYSYNC_PUBKEYS_FILE", &keys));
    r.expect(6).no_stdout().stderr_has(&[
        "answered inconsistently",
        &format!("pubkey {} is at two indices, 3 and 50", pk(3)),
    ]);
    assert!(h.writes().is_empty(), "neither unassign 3 nor assign 50");
}

#[test]
fn http_attempts_are_bounded() {
    let h = Harness::new();
    let records = h.records(&[1]);
    for n in ["0", "21", "4294967295"] {
        config_error(
            &h,
            h.cmd()
                .arg("diff")
                .env("KEYSYNC_HTTP_ATTEMPTS", n)
                .env("KEYSYNC_INDICES_FILE", &records),
            &["KEYSYNC_HTTP_ATTEMPTS", "must be from 1 to 20"],
        );
    }
    assert!(h.requests().is_empty(), "refused before any request");
}

#[test]
fn an_unreachable_auth_service_says_so_and_exits_2() {
    let h = Harness::new();
    let url = refused_url();
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let r = run(h
        .cmd()
        .arg("show")
        .env("KEYSYNC_AUTH_URL", &url)
        .env("KEYSYNC_HTTP_ATTEMPTS", "2"));
    r.expect(2).no_stdout().stderr_has(&[
        &format!("cannot reach the auth service at {host}"),
        "check the URL, DNS and the network path",
        "after 2 attempts",
    ]);
}

// ---- completions and man page --------------------------------------------

#[test]
fn completions_and_the_man_page_come_from_the_same_definitions() {
    for (shell, marker) in [
        ("bash", "_keysync()"),
        ("zsh", "#compdef keysync"),
        ("fish", "complete -c keysync"),
        ("elvish", "edit:completion:arg-completer[keysync]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = Command::cargo_bin("keysync")
            .unwrap()
            .args(["completions", shell])
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}: {marker} missing");
        assert!(
            text.contains("keymanager-url"),
            "{shell}: every flag is completed"
        );
        assert!(
            text.contains("doctor"),
            "{shell}: every command is completed"
        );
    }
    let out = Command::cargo_bin("keysync")
        .unwrap()
        .arg("man")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH keysync 1"), "{page}");
    for needle in [
        "keysync\\-doctor(1)",
        "KEYSYNC_API_KEY_FILE",
        "\\-\\-keystores\\-dir",
        "Exit codes",
    ] {
        assert!(page.contains(needle), "the man page names {needle}");
    }
    let bad = Command::cargo_bin("keysync")
        .unwrap()
        .args(["completions", "tcsh"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(4),
        "an unknown shell is a usage error"
    );
}
