//! `RegistryClient` against a wiremock auth service and console API: every
//! endpoint and every error path of remote-apis.md §1–2.

use std::time::{Duration, Instant};

use keysync::domain::{ChainId, DesiredValidator, Pubkey};
use keysync::http::{Failure, Http, Party, RetryPolicy};
use keysync::registry::{RegistryClient, RegistryError};
use keysync::secret::Secret;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "ovi_live_registrytestkey0123456789";
const ME: &str = "/api/v1/me";
const LIST: &str = "/api/v1/operators/42/validators";
const REGISTER: &str = "/api/v1/validator-keys/batch";

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_secs(5),
    }
}

fn client(server: &MockServer, attempts: u32) -> RegistryClient {
    let http = Http::new(
        Duration::from_secs(10),
        policy(attempts),
        None,
        vec![Secret::new(KEY)],
    )
    .unwrap();
    let url = Url::parse(&server.uri()).unwrap();
    RegistryClient::new(http, url.clone(), url, Secret::new(KEY), "mainnet".into())
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

async fn mount(server: &MockServer, verb: &str, p: &str, resp: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(p))
        .respond_with(resp)
        .mount(server)
        .await;
}

fn pk(i: u64) -> Pubkey {
    let mut b = [0u8; 48];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[47] = 0xab;
    Pubkey(b)
}

fn dv(i: u64) -> DesiredValidator {
    DesiredValidator {
        validator_index: i,
        chain_id: ChainId::new("0x1"),
        validator_key: pk(i),
    }
}

fn status_of(e: &RegistryError) -> Option<u16> {
    match e {
        RegistryError::Failed { failure, .. } => failure.status(),
        RegistryError::Rejected { status, .. } => Some(*status),
        _ => None,
    }
}

// ---- /api/v1/me ----------------------------------------------------------

#[tokio::test]
async fn me_returns_the_operator_id_string_or_number() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ME))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"operator_id": "42", "role": "operator"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount(
        &server,
        "GET",
        ME,
        ResponseTemplate::new(200).set_body_json(json!({"operator_id": 7, "extra": [1]})),
    )
    .await;
    let c = client(&server, 3);
    assert_eq!(c.me().await.unwrap(), "42");
    assert_eq!(c.me().await.unwrap(), "7");
}

#[tokio::test]
async fn me_without_operator_id_is_not_operator_scoped() {
    for body in [
        json!({"operator_id": "", "role": "staff"}),
        json!({"operator_id": "   "}),
        json!({"operator_id": null}),
        json!({"role": "staff"}),
    ] {
        let server = MockServer::start().await;
        mount(
            &server,
            "GET",
            ME,
            ResponseTemplate::new(200).set_body_json(&body),
        )
        .await;
        let e = client(&server, 3).me().await.unwrap_err();
        assert!(
            matches!(e, RegistryError::NotOperatorScoped),
            "{body}: {e:?}"
        );
        assert!(e.is_auth());
        assert!(e.to_string().contains("not scoped"), "{e}");
    }
}

#[tokio::test]
async fn me_401_is_rejected_and_never_retried() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        ME,
        ResponseTemplate::new(401).set_body_string("unknown key"),
    )
    .await;
    let e = client(&server, 5).me().await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Rejected {
                party: Party::Auth,
                status: 401,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_auth());
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn me_5xx_is_retried_then_an_auth_failure() {
    let server = MockServer::start().await;
    mount(&server, "GET", ME, ResponseTemplate::new(503)).await;
    let e = client(&server, 3).me().await.unwrap_err();
    match &e {
        RegistryError::Failed {
            party: Party::Auth,
            failure:
                Failure::Status {
                    status: 503,
                    attempts: 3,
                    ..
                },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(e.is_auth(), "an auth-service outage is exit 2");
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn me_non_json_200_is_malformed_not_a_crash() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        ME,
        ResponseTemplate::new(200).set_body_string("<html>proxy error</html>"),
    )
    .await;
    let e = client(&server, 3).me().await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Malformed {
                party: Party::Auth,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_auth());
    assert_eq!(requests(&server).await.len(), 1);
}

// ---- list ----------------------------------------------------------------

#[tokio::test]
async fn list_reads_either_array_name_and_sends_the_network() {
    for name in ["validators", "assignments"] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(LIST))
            .and(query_param("network", "mainnet"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "operator_id": "42", "network": "mainnet",
                name: [
                    {"validator_index": 1, "chain_id": "0x1", "active": true, "extra": "ignored"},
                    {"validator_index": "2", "chain_id": "0x4268", "active": true},
                ]
            })))
            .expect(1)
            .mount(&server)
            .await;
        let rows = client(&server, 3).list("42").await.unwrap();
        assert_eq!(rows.len(), 2, "{name}");
        assert_eq!(rows[0].validator_index, 1);
        assert_eq!(rows[0].chain_id.as_str(), "0x1");
        assert_eq!(rows[1].validator_index, 2);
        assert_eq!(rows[1].chain_id.as_str(), "0x4268");
        server.verify().await;
    }
}

#[tokio::test]
async fn list_absent_or_null_is_an_empty_set() {
    for body in [
        json!({"operator_id": "42"}),
        json!({"validators": null}),
        json!({"assignments": null}),
        json!({"validators": null, "assignments": null}),
        json!({"validators": []}),
    ] {
        let server = MockServer::start().await;
        mount(
            &server,
            "GET",
            LIST,
            ResponseTemplate::new(200).set_body_json(&body),
        )
        .await;
        let rows = client(&server, 3).list("42").await.unwrap();
        assert!(rows.is_empty(), "{body}");
    }
}

#[tokio::test]
async fn list_keeps_inactive_rows_and_active_defaults_to_true() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        LIST,
        ResponseTemplate::new(200).set_body_json(json!({"validators": [
            {"validator_index": 1, "chain_id": "0x1", "active": false},
            {"validator_index": 2, "chain_id": "0x1"},
            {"validator_index": 3, "chain_id": "0x1", "active": null},
        ]})),
    )
    .await;
    let rows = client(&server, 3).list("42").await.unwrap();
    let active: Vec<(u64, bool)> = rows.iter().map(|r| (r.validator_index, r.active)).collect();
    assert_eq!(active, vec![(1, false), (2, true), (3, true)]);
}

#[tokio::test]
async fn list_malformed_row_is_malformed() {
    for row in [
        json!({"chain_id": "0x1"}),
        json!({"validator_index": 1}),
        json!({"validator_index": -1, "chain_id": "0x1"}),
        json!({"validator_index": "x1", "chain_id": "0x1"}),
        json!({"validator_index": 1, "chain_id": 1}),
        json!({"validator_index": 1, "chain_id": "0x1", "active": "yes"}),
        json!("just a string"),
    ] {
        let server = MockServer::start().await;
        mount(
            &server,
            "GET",
            LIST,
            ResponseTemplate::new(200).set_body_json(json!({"validators": [
                {"validator_index": 9, "chain_id": "0x1"}, row
            ]})),
        )
        .await;
        let e = client(&server, 3).list("42").await.unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::Malformed {
                    party: Party::Console,
                    ..
                }
            ),
            "{row}: {e:?}"
        );
        assert!(!e.is_auth());
        assert!(e.to_string().contains("row 1"), "{e}");
    }
}

#[tokio::test]
async fn list_non_array_or_non_object_body_is_malformed() {
    for body in [
        ResponseTemplate::new(200).set_body_json(json!({"validators": {"a": 1}})),
        ResponseTemplate::new(200).set_body_json(json!([1, 2])),
        ResponseTemplate::new(200).set_body_string("not json"),
    ] {
        let server = MockServer::start().await;
        mount(&server, "GET", LIST, body).await;
        let e = client(&server, 3).list("42").await.unwrap_err();
        assert!(matches!(e, RegistryError::Malformed { .. }), "{e:?}");
        assert!(!e.is_auth());
    }
}

#[tokio::test]
async fn list_403_is_rejected_auth_and_not_retried() {
    let server = MockServer::start().await;
    mount(&server, "GET", LIST, ResponseTemplate::new(403)).await;
    let e = client(&server, 5).list("42").await.unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Rejected {
                party: Party::Console,
                status: 403,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_auth());
    assert_eq!(requests(&server).await.len(), 1);
}

// ---- register ------------------------------------------------------------

#[tokio::test]
async fn register_sends_the_keys_body_and_returns_the_counts() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        REGISTER,
        ResponseTemplate::new(200).set_body_json(json!({"added": 3, "skipped": 1, "x": true})),
    )
    .await;
    let keys = [dv(1), dv(2), dv(3), dv(4)];
    let (added, skipped) = client(&server, 3).register(&keys).await.unwrap();
    assert_eq!((added, skipped), (3, 1));
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    let body: Value = reqs[0].body_json().unwrap();
    let want: Vec<Value> = (1..=4)
        .map(|i| {
            json!({
                "validator_index": i,
                "chain_id": "0x1",
                "validator_key": pk(i).to_string(),
            })
        })
        .collect();
    assert_eq!(body, json!({ "keys": want }));
    // The key is sent as 0x + 96 lowercase hex.
    let k = body["keys"][0]["validator_key"].as_str().unwrap();
    assert!(k.starts_with("0x") && k.len() == 98, "{k}");
    assert_eq!(
        reqs[0].headers.get("content-type").unwrap(),
        "application/json"
    );
}

#[tokio::test]
async fn register_accepts_missing_counts_as_zero() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        REGISTER,
        ResponseTemplate::new(200).set_body_json(json!({"added": 2})),
    )
    .await;
    assert_eq!(client(&server, 3).register(&[dv(1)]).await.unwrap(), (2, 0));
}

#[tokio::test]
async fn register_non_numeric_counts_are_malformed() {
    for body in [
        json!({"added": "three", "skipped": 0}),
        json!({"added": 1, "skipped": -1}),
        json!({"added": 1.5, "skipped": 0}),
        json!({"added": [], "skipped": 0}),
    ] {
        let server = MockServer::start().await;
        mount(
            &server,
            "POST",
            REGISTER,
            ResponseTemplate::new(200).set_body_json(&body),
        )
        .await;
        let e = client(&server, 3).register(&[dv(1)]).await.unwrap_err();
        assert!(
            matches!(
                e,
                RegistryError::Malformed {
                    party: Party::Console,
                    ..
                }
            ),
            "{body}: {e:?}"
        );
        assert!(!e.is_auth());
    }
}

#[tokio::test]
async fn register_non_json_2xx_is_malformed() {
    for resp in [
        ResponseTemplate::new(200).set_body_string("<html>OK</html>"),
        ResponseTemplate::new(201).set_body_string(""),
        ResponseTemplate::new(200).set_body_json(json!("added")),
    ] {
        let server = MockServer::start().await;
        mount(&server, "POST", REGISTER, resp).await;
        let e = client(&server, 3).register(&[dv(1)]).await.unwrap_err();
        assert!(matches!(e, RegistryError::Malformed { .. }), "{e:?}");
        assert_eq!(requests(&server).await.len(), 1, "a 2xx is never retried");
    }
}

// ---- assign / unassign ---------------------------------------------------

#[tokio::test]
async fn assign_sends_the_validators_body() {
    let server = MockServer::start().await;
    mount(&server, "POST", LIST, ResponseTemplate::new(204)).await;
    let keys = vec![(5, ChainId::new("0x1")), (6, ChainId::new("0x4268"))];
    client(&server, 3).assign("42", &keys).await.unwrap();
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].body_json::<Value>().unwrap(),
        json!({"validators": [
            {"validator_index": 5, "chain_id": "0x1"},
            {"validator_index": 6, "chain_id": "0x4268"},
        ]})
    );
}

#[tokio::test]
async fn assign_ignores_any_2xx_body() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        LIST,
        ResponseTemplate::new(200).set_body_string("<html>fine</html>"),
    )
    .await;
    client(&server, 3)
        .assign("42", &[(5, ChainId::new("0x1"))])
        .await
        .unwrap();
}

#[tokio::test]
async fn unassign_deletes_one_row_by_path_and_chain_id_query() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/operators/42/validators/7"))
        .and(query_param("chain_id", "0x1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    client(&server, 3)
        .unassign("42", 7, &ChainId::new("0x1"))
        .await
        .unwrap();
    server.verify().await;
    let reqs = requests(&server).await;
    assert_eq!(reqs[0].url.query(), Some("chain_id=0x1"));
}

// ---- retry policy --------------------------------------------------------

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount(
        &server,
        "GET",
        LIST,
        ResponseTemplate::new(200).set_body_json(json!({"validators": []})),
    )
    .await;
    let started = Instant::now();
    // Base delay 2 ms: only Retry-After can explain a ~1 s wait.
    client(&server, 3).list("42").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(requests(&server).await.len(), 2, "the 429 was retried");
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited only {elapsed:?}"
    );
}

#[tokio::test]
async fn a_5xx_storm_that_recovers_succeeds() {
    let server = MockServer::start().await;
    for status in [500, 502, 503] {
        Mock::given(method("POST"))
            .and(path(REGISTER))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    mount(
        &server,
        "POST",
        REGISTER,
        ResponseTemplate::new(200).set_body_json(json!({"added": 1, "skipped": 0})),
    )
    .await;
    assert_eq!(client(&server, 4).register(&[dv(1)]).await.unwrap(), (1, 0));
    assert_eq!(requests(&server).await.len(), 4);
}

#[tokio::test]
async fn a_5xx_storm_that_outlasts_the_attempts_fails_as_an_api_error() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        LIST,
        ResponseTemplate::new(500).set_body_string("boom"),
    )
    .await;
    let e = client(&server, 4).list("42").await.unwrap_err();
    assert_eq!(status_of(&e), Some(500));
    assert!(!e.is_auth());
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert_eq!(requests(&server).await.len(), 4);
}

#[tokio::test]
async fn other_4xx_fail_fast_with_one_request() {
    for status in [400u16, 404, 409, 422] {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(status).set_body_string("nope"))
            .mount(&server)
            .await;
        let c = client(&server, 5);
        let errs = [
            c.list("42").await.unwrap_err(),
            c.register(&[dv(1)]).await.unwrap_err(),
            c.assign("42", &[(1, ChainId::new("0x1"))])
                .await
                .unwrap_err(),
            c.unassign("42", 1, &ChainId::new("0x1")).await.unwrap_err(),
        ];
        for e in &errs {
            assert_eq!(status_of(e), Some(status), "{e:?}");
            assert!(matches!(e, RegistryError::Failed { .. }), "{e:?}");
            assert!(!e.is_auth());
        }
        assert_eq!(
            requests(&server).await.len(),
            4,
            "HTTP {status}: one request per call"
        );
    }
}

#[tokio::test]
async fn network_errors_are_retried_then_fail() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let http = Http::new(
        Duration::from_secs(5),
        policy(3),
        None,
        vec![Secret::new(KEY)],
    )
    .unwrap();
    let c = RegistryClient::new(http, url.clone(), url, Secret::new(KEY), "mainnet".into());
    match c.list("42").await.unwrap_err() {
        RegistryError::Unreachable {
            failure: Failure::Transport { attempts: 3, .. },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_bearer_key_is_sent_on_every_call() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        ME,
        ResponseTemplate::new(200).set_body_json(json!({"operator_id": "42"})),
    )
    .await;
    mount(
        &server,
        "GET",
        LIST,
        ResponseTemplate::new(200).set_body_json(json!({"validators": []})),
    )
    .await;
    mount(
        &server,
        "POST",
        REGISTER,
        ResponseTemplate::new(200).set_body_json(json!({"added": 1, "skipped": 0})),
    )
    .await;
    mount(&server, "POST", LIST, ResponseTemplate::new(200)).await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let c = client(&server, 3);
    c.me().await.unwrap();
    c.list("42").await.unwrap();
    c.register(&[dv(1)]).await.unwrap();
    c.assign("42", &[(1, ChainId::new("0x1"))]).await.unwrap();
    c.unassign("42", 1, &ChainId::new("0x1")).await.unwrap();
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            &format!("Bearer {KEY}"),
            "{} {}",
            r.method,
            r.url
        );
    }
}

#[tokio::test]
async fn error_bodies_are_scrubbed_of_the_key() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        ME,
        ResponseTemplate::new(401).set_body_string(format!("bad token Bearer {KEY}")),
    )
    .await;
    mount(
        &server,
        "GET",
        LIST,
        ResponseTemplate::new(500).set_body_string(format!("{{\"echo\": \"{KEY}\"}}")),
    )
    .await;
    let c = client(&server, 2);
    for e in [c.me().await.unwrap_err(), c.list("42").await.unwrap_err()] {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
