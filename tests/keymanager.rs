//! `KeymanagerClient` against a wiremock keymanager and against the
//! simulator's Keymanager API, loopback only: both lists unioned, the 404
//! of a client without remote-signer support, every error path, the token
//! never surfacing, and a property test of the answer parser.

use std::sync::OnceLock;
use std::time::Duration;

use keysync::domain::Pubkey;
use keysync::http::{Failure, Http, RetryPolicy};
use keysync::inputs::keymanager::{
    KeyList, KeyLists, KeymanagerClient, KeymanagerError, BODY_LIMIT,
};
use keysync::secret::Secret;
use keysync_sim::{Route, Sim, SimConfig};
use proptest::prelude::*;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "km_tok_Zq8Xv3Lp0Rt7Wn2Yb5Kd9Hs4Jf6Gc1";
const KEYSTORES: &str = "/eth/v1/keystores";
const REMOTEKEYS: &str = "/eth/v1/remotekeys";

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(50),
    }
}

fn http(attempts: u32) -> Http {
    Http::new(Duration::from_secs(10), policy(attempts), None, vec![]).unwrap()
}

fn client_at(url: &str, attempts: u32) -> KeymanagerClient {
    KeymanagerClient::new(http(attempts), Url::parse(url).unwrap(), Secret::new(TOKEN))
}

fn client(server: &MockServer, attempts: u32) -> KeymanagerClient {
    client_at(&server.uri(), attempts)
}

/// A distinct pubkey per `i`, in `0x` + lowercase hex.
fn pk(i: u64) -> String {
    let mut b = [0u8; 48];
    b[0] = 0xa0;
    b[8..16].copy_from_slice(&i.to_be_bytes());
    Pubkey(b).to_string()
}

fn key(s: &str) -> Pubkey {
    s.parse().unwrap()
}

fn keystores(keys: &[String]) -> Value {
    json!({"data": keys.iter().map(|k| json!({
        "validating_pubkey": k, "derivation_path": "m/12381/3600/0/0/0", "readonly": false
    })).collect::<Vec<_>>()})
}

fn remotekeys(keys: &[String]) -> Value {
    json!({"data": keys.iter().map(|k| json!({
        "pubkey": k, "url": "https://signer.example:9000", "readonly": false
    })).collect::<Vec<_>>()})
}

async fn mount(server: &MockServer, p: &str, resp: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(p))
        .respond_with(resp)
        .mount(server)
        .await;
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// Neither `text` holds the token nor any 8-byte run of it.
fn assert_no_token(text: &str) {
    for w in TOKEN.as_bytes().windows(8) {
        let w = std::str::from_utf8(w).unwrap();
        assert!(!text.contains(w), "{w:?} (part of the token) in: {text}");
    }
}

/// The error's Display and Debug, both checked for the token.
fn shown(e: &KeymanagerError) -> String {
    let (display, debug) = (e.to_string(), format!("{e:?}"));
    assert_no_token(&display);
    assert_no_token(&debug);
    display
}

// ---- wiremock ------------------------------------------------------------

#[tokio::test]
async fn both_lists_are_unioned_deduplicated_and_sorted() {
    let server = MockServer::start().await;
    // Out of order, a duplicate, another spelling of the same key.
    let local = vec![
        pk(5),
        pk(1),
        pk(3),
        pk(1),
        pk(7).to_uppercase().replacen("0X", "0x", 1),
    ];
    let remote = vec![pk(3), pk(9), pk(2)];
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&local)),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_json(remotekeys(&remote)),
    )
    .await;
    let c = client(&server, 1);
    let got = c.pubkeys().await.unwrap();
    let want: Vec<Pubkey> = [1, 2, 3, 5, 7, 9]
        .into_iter()
        .map(|i| key(&pk(i)))
        .collect();
    assert_eq!(got, want);
    let lists = c.lists().await.unwrap();
    assert_eq!(
        lists,
        KeyLists {
            local: [1, 3, 5, 7].into_iter().map(|i| key(&pk(i))).collect(),
            remote: [2, 3, 9].into_iter().map(|i| key(&pk(i))).collect(),
            remote_supported: true,
        }
    );
    assert_eq!(lists.union(), want);

    // The token travels only as the Bearer header.
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 4);
    for r in &reqs {
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        assert!(!r.url.as_str().contains(TOKEN));
        for (name, value) in r.headers.iter() {
            if name != "authorization" {
                assert!(!value.to_str().unwrap_or("").contains(TOKEN), "{name}");
            }
        }
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let server = MockServer::start().await;
    mount(
        &server,
        "/km/eth/v1/keystores",
        ResponseTemplate::new(200).set_body_json(keystores(&[pk(1)])),
    )
    .await;
    mount(
        &server,
        "/km/eth/v1/remotekeys",
        ResponseTemplate::new(200).set_body_json(remotekeys(&[])),
    )
    .await;
    for base in [
        format!("{}/km", server.uri()),
        format!("{}/km/", server.uri()),
    ] {
        let got = client_at(&base, 1).pubkeys().await.unwrap();
        assert_eq!(got, vec![key(&pk(1))], "{base}");
    }
}

#[tokio::test]
async fn remotekeys_404_is_an_empty_remote_list() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&[pk(2), pk(1)])),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(404).set_body_string("Not Found"),
    )
    .await;
    let c = client(&server, 3);
    let lists = c.lists().await.unwrap();
    assert!(!lists.remote_supported);
    assert!(lists.remote.is_empty());
    assert_eq!(c.pubkeys().await.unwrap(), vec![key(&pk(1)), key(&pk(2))]);
    // A 404 is not retried.
    assert_eq!(requests(&server).await.len(), 4);
}

#[tokio::test]
async fn empty_data_lists_are_no_keys() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_string(r#"{"data": []}"#),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    let lists = client(&server, 1).lists().await.unwrap();
    assert_eq!(
        lists,
        KeyLists {
            local: vec![],
            remote: vec![],
            remote_supported: true
        }
    );
}

#[tokio::test]
async fn keystores_404_is_an_error_not_an_empty_list() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(404).set_body_string("Not Found"),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_json(remotekeys(&[pk(1)])),
    )
    .await;
    let c = client(&server, 1);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(&e, KeymanagerError::Failed { failure, call, .. } if failure.status() == Some(404) && *call == KeyList::Keystores.call()),
        "{e:?}"
    );
    let msg = shown(&e);
    assert!(
        msg.contains(c.url()) && msg.contains("HTTP 404") && msg.contains("keystores"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_refused_token_is_rejected_naming_the_url() {
    for (status, list) in [
        (401, KEYSTORES),
        (403, KEYSTORES),
        (401, REMOTEKEYS),
        (403, REMOTEKEYS),
    ] {
        let server = MockServer::start().await;
        let (ok, refused) = if list == KEYSTORES {
            (REMOTEKEYS, KEYSTORES)
        } else {
            (KEYSTORES, REMOTEKEYS)
        };
        mount(
            &server,
            ok,
            ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
        )
        .await;
        mount(
            &server,
            refused,
            ResponseTemplate::new(status)
                .set_body_string(r#"{"error":"missing authorization header"}"#),
        )
        .await;
        let c = client(&server, 4);
        let e = c.pubkeys().await.unwrap_err();
        assert!(e.is_rejected(), "{e:?}");
        assert!(matches!(&e, KeymanagerError::Rejected { status: s, .. } if *s == status));
        assert_eq!(e.url(), server.uri());
        let msg = shown(&e);
        assert!(msg.contains(&server.uri()), "{msg}");
        assert!(msg.contains("the token was refused"), "{msg}");
        assert!(msg.contains(&format!("HTTP {status}")), "{msg}");
        assert!(msg.contains("missing authorization header"), "{msg}");
        assert!(msg.contains(&format!("GET {refused}")), "{msg}");
        // Not retried: one request per list.
        assert_eq!(requests(&server).await.len(), 2);
    }
}

#[tokio::test]
async fn a_non_json_answer_is_malformed_with_an_excerpt() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_string("<html>502 proxy</html>"),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    let e = client(&server, 1).pubkeys().await.unwrap_err();
    assert!(matches!(e, KeymanagerError::Malformed { .. }), "{e:?}");
    let msg = shown(&e);
    assert!(
        msg.contains("not JSON") && msg.contains("<html>502 proxy</html>"),
        "{msg}"
    );
    assert!(
        msg.contains(&server.uri()) && msg.contains("GET /eth/v1/keystores"),
        "{msg}"
    );
}

#[tokio::test]
async fn unexpected_shapes_are_malformed_naming_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("[]", "not a {\"data\": [...]} object"),
        (" \n[[]]", "not a {\"data\": [...]} object"),
        ("null", "not a {\"data\": [...]} object"),
        ("\"data\"", "not a {\"data\": [...]} object"),
        ("{}", "no \"data\" list"),
        (r#"{"data": null}"#, "no \"data\" list"),
        (r#"{"data": {"pubkey": "x"}}"#, "\"data\" is not a list"),
        (r#"{"data": "0x00"}"#, "\"data\" is not a list"),
        (
            r#"{"data": [["0xa0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000ab"]]}"#,
            "remotekeys data[0] is not an object",
        ),
        (
            r#"{"data": [1]}"#,
            "remotekeys data[0] is not an object with a string \"pubkey\"",
        ),
        (
            r#"{"data": [{"validating_pubkey": "0xab"}]}"#,
            "remotekeys data[0] is not an object",
        ),
        (r#"{"data": [{"pubkey": null}]}"#, "remotekeys data[0]"),
        (r#"{"data": [{"pubkey": 12}]}"#, "remotekeys data[0]"),
        ("{\"data\": [", "not JSON"),
    ];
    for (body, want) in cases {
        let server = MockServer::start().await;
        mount(
            &server,
            KEYSTORES,
            ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
        )
        .await;
        mount(
            &server,
            REMOTEKEYS,
            ResponseTemplate::new(200).set_body_string(*body),
        )
        .await;
        let e = client(&server, 1).pubkeys().await.unwrap_err();
        assert!(
            matches!(e, KeymanagerError::Malformed { .. }),
            "{body}: {e:?}"
        );
        let msg = shown(&e);
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(msg.contains("GET /eth/v1/remotekeys"), "{msg}");
    }
}

#[tokio::test]
async fn a_bad_pubkey_is_named_with_its_list_and_position() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&[pk(1), pk(2)])),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_json(remotekeys(&[pk(3), pk(4), "0x1234".into()])),
    )
    .await;
    let e = client(&server, 1).pubkeys().await.unwrap_err();
    match &e {
        KeymanagerError::BadPubkey {
            list, index, value, ..
        } => {
            assert_eq!(
                (*list, *index, value.as_str()),
                (KeyList::Remotekeys, 2, "0x1234")
            );
        }
        other => panic!("{other:?}"),
    }
    let msg = shown(&e);
    assert!(msg.contains("remotekeys data[2].pubkey"), "{msg}");
    assert!(
        msg.contains("not a BLS pubkey") && msg.contains("0x1234"),
        "{msg}"
    );

    let server = MockServer::start().await;
    let mut bad = pk(1);
    bad.replace_range(10..11, "g");
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&[pk(1), bad])),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    let e = client(&server, 1).pubkeys().await.unwrap_err();
    assert!(matches!(
        &e,
        KeymanagerError::BadPubkey {
            list: KeyList::Keystores,
            index: 1,
            ..
        }
    ));
    let msg = shown(&e);
    assert!(
        msg.contains("keystores data[1].validating_pubkey") && msg.contains("'g'"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_answer_over_the_cap_is_too_large() {
    assert_eq!(BODY_LIMIT, 64 << 20);
    let server = MockServer::start().await;
    let many: Vec<String> = (0..20).map(pk).collect();
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&many)),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    let c = client(&server, 3).with_body_limit(2048);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(e, KeymanagerError::TooLarge { limit: 2048, .. }),
        "{e:?}"
    );
    let msg = shown(&e);
    assert!(
        msg.contains(&server.uri()) && msg.contains("2 KiB") && msg.contains("keystores"),
        "{msg}"
    );
    // Within the cap, the same answer reads.
    let c = client(&server, 1).with_body_limit(64 << 10);
    assert_eq!(c.pubkeys().await.unwrap().len(), 20);
}

#[tokio::test]
async fn server_errors_are_retried_then_fail_naming_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(KEYSTORES))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_json(keystores(&[pk(1)])),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    assert_eq!(
        client(&server, 3).pubkeys().await.unwrap(),
        vec![key(&pk(1))]
    );

    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(500).set_body_string("boom"),
    )
    .await;
    let e = client(&server, 3).pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::Failed {
                failure: Failure::Status {
                    status: 500,
                    attempts: 3,
                    ..
                },
                ..
            }
        ),
        "{e:?}"
    );
    let msg = shown(&e);
    assert!(
        msg.contains("HTTP 500: boom (after 3 attempts)") && msg.contains(&server.uri()),
        "{msg}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = MockServer::start().await;
    mount(
        &server,
        KEYSTORES,
        ResponseTemplate::new(307)
            .insert_header("Location", "http://elsewhere.example/eth/v1/keystores"),
    )
    .await;
    mount(
        &server,
        REMOTEKEYS,
        ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
    )
    .await;
    let e = client(&server, 1).pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::Failed {
                failure: Failure::Redirect { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(shown(&e).contains("elsewhere.example"));
}

#[tokio::test]
async fn answers_echoing_the_token_never_show_it() {
    let half = &TOKEN[..TOKEN.len() / 2];
    let tail = &TOKEN[TOKEN.len() - 9..];
    let echoes = [
        format!("Authorization: Bearer {TOKEN}"),
        format!("bearer {TOKEN} was wrong"),
        format!("token={TOKEN}"),
        format!("{{\"error\":\"bad token {TOKEN}\"}}"),
        format!("part {half} and {tail}"),
        TOKEN.repeat(30),
    ];
    for echo in &echoes {
        for status in [500u16, 401, 403, 400, 200] {
            let server = MockServer::start().await;
            mount(
                &server,
                KEYSTORES,
                ResponseTemplate::new(status).set_body_string(echo.clone()),
            )
            .await;
            mount(
                &server,
                REMOTEKEYS,
                ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
            )
            .await;
            let e = client(&server, 2).pubkeys().await.unwrap_err();
            let msg = shown(&e);
            assert!(msg.contains(&server.uri()), "{msg}");
        }
    }
    // The token as a pubkey value, as an unknown field, in an entry that
    // does not parse.
    let bodies = [
        json!({"data": [{"validating_pubkey": TOKEN}]}),
        json!({"data": [{"validating_pubkey": format!("0x{TOKEN}{}", "0".repeat(96 - TOKEN.len()))}]}),
        json!({"data": [{"validating_pubkey": 5, "secret": TOKEN}]}),
        json!({"data": TOKEN}),
        json!({"nodata": TOKEN}),
    ];
    for body in bodies {
        let server = MockServer::start().await;
        mount(
            &server,
            KEYSTORES,
            ResponseTemplate::new(200).set_body_json(&body),
        )
        .await;
        mount(
            &server,
            REMOTEKEYS,
            ResponseTemplate::new(200).set_body_string(r#"{"data":[]}"#),
        )
        .await;
        let e = client(&server, 1).pubkeys().await.unwrap_err();
        shown(&e);
    }
    // The token in a URL's credentials is never shown either.
    let server = MockServer::start().await;
    mount(&server, KEYSTORES, ResponseTemplate::new(500)).await;
    mount(&server, REMOTEKEYS, ResponseTemplate::new(500)).await;
    let with_creds = server
        .uri()
        .replace("http://", &format!("http://user:{TOKEN}@"));
    let c = client_at(&format!("{with_creds}/?t={TOKEN}#{TOKEN}"), 1);
    assert_no_token(c.url());
    assert_no_token(&format!("{c:?}"));
    let e = c.pubkeys().await.unwrap_err();
    assert!(shown(&e).contains(&server.uri()));
}

#[tokio::test]
async fn a_keymanager_that_is_down_is_unreachable_after_the_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = client_at(&url, 3);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::Unreachable {
                failure: Failure::Transport { attempts: 3, .. },
                ..
            }
        ),
        "{e:?}"
    );
    let msg = shown(&e);
    assert!(
        msg.starts_with(&format!("cannot reach the keymanager at {url}")),
        "{msg}"
    );
    assert!(msg.contains("(after 3 attempts)"), "{msg}");
}

// ---- the simulator -------------------------------------------------------

async fn sim() -> Sim {
    Sim::start(SimConfig {
        slot_ms: 0,
        slots_per_epoch: 4,
        validators: 32,
        keymanager_token: TOKEN.into(),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn sim_client(sim: &Sim, attempts: u32) -> KeymanagerClient {
    client_at(&sim.keymanager_url(), attempts)
}

fn sim_keys(sim: &Sim, indices: &[u64]) -> Vec<Pubkey> {
    let mut v: Vec<Pubkey> = indices.iter().map(|i| key(&sim.pubkey(*i))).collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test]
async fn the_simulator_lists_are_unioned() {
    let sim = sim().await;
    let c = sim_client(&sim, 1);
    // Nothing scripted: Lodestar's `{"data": []}` for both.
    assert_eq!(
        c.lists().await.unwrap(),
        KeyLists {
            local: vec![],
            remote: vec![],
            remote_supported: true
        }
    );
    sim.keymanager_set_local([4u64, 1, 9, 4]);
    sim.keymanager_set_remote([9u64, 12]);
    assert_eq!(c.pubkeys().await.unwrap(), sim_keys(&sim, &[1, 4, 9, 12]));
    let lists = c.lists().await.unwrap();
    assert_eq!(lists.local, sim_keys(&sim, &[1, 4, 9]));
    assert_eq!(lists.remote, sim_keys(&sim, &[9, 12]));
    assert_eq!(
        (sim.count(Route::Keystores), sim.count(Route::Remotekeys)),
        (3, 3)
    );

    sim.keymanager_remotekeys_404(true);
    let lists = c.lists().await.unwrap();
    assert!(!lists.remote_supported && lists.remote.is_empty());
    assert_eq!(lists.union(), sim_keys(&sim, &[1, 4, 9]));
    sim.shutdown().await;
}

#[tokio::test]
async fn the_simulator_refuses_a_wrong_token_and_takes_a_rotated_one() {
    let sim = sim().await;
    sim.keymanager_set_local([2u64]);
    sim.set_keymanager_token("km_tok_rotated_0000000000000000");
    let c = sim_client(&sim, 3);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(&e, KeymanagerError::Rejected { status: 401, .. }),
        "{e:?}"
    );
    let msg = shown(&e);
    assert!(
        msg.contains("the token was refused") && msg.contains("missing authorization header"),
        "{msg}"
    );
    assert!(msg.contains(&sim.keymanager_url()), "{msg}");
    // Rotating the client's token follows the keymanager; the old one stays scrubbed.
    c.set_token(Secret::new("km_tok_rotated_0000000000000000"));
    assert_eq!(c.pubkeys().await.unwrap(), sim_keys(&sim, &[2]));
}

#[tokio::test]
async fn the_simulator_faults_map_to_their_errors() {
    let sim = sim().await;
    sim.keymanager_set_local([3u64]);
    let c = sim_client(&sim, 3);

    // Two 503s are ridden out by the retries.
    sim.fail_next(Route::Keystores, 503, 2, None);
    assert_eq!(c.pubkeys().await.unwrap(), sim_keys(&sim, &[3]));
    assert_eq!(sim.count(Route::Keystores), 3);
    // Three are not.
    sim.fail_next(Route::Remotekeys, 502, 3, None);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::Failed {
                failure: Failure::Status {
                    status: 502,
                    attempts: 3,
                    ..
                },
                ..
            }
        ),
        "{e:?}"
    );
    // A proxy page where JSON was expected.
    sim.non_json_next(Route::Remotekeys, 1);
    let e = c.pubkeys().await.unwrap_err();
    assert!(shown(&e).contains("<html>502 proxy</html>"), "{e}");
    // A malformed key, named with its list and position.
    sim.keymanager_set_remote([sim.pubkey(1), "0xnope".to_string()]);
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::BadPubkey {
                list: KeyList::Remotekeys,
                index: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(shown(&e).contains("remotekeys data[1].pubkey"));
    // Over the cap.
    sim.keymanager_set_remote(Vec::<u64>::new());
    sim.keymanager_set_local(0..32u64);
    let e = sim_client(&sim, 1)
        .with_body_limit(1024)
        .pubkeys()
        .await
        .unwrap_err();
    assert!(
        matches!(e, KeymanagerError::TooLarge { limit: 1024, .. }),
        "{e:?}"
    );
    assert_eq!(c.pubkeys().await.unwrap().len(), 32);
}

#[tokio::test]
async fn the_simulator_down_is_unreachable_then_back() {
    let sim = sim().await;
    sim.keymanager_set_local([5u64]);
    let c = sim_client(&sim, 2);
    sim.stop_keymanager().await;
    let e = c.pubkeys().await.unwrap_err();
    assert!(
        matches!(
            &e,
            KeymanagerError::Unreachable {
                failure: Failure::Transport { attempts: 2, .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(shown(&e).contains(&sim.keymanager_url()));
    sim.start_keymanager().await.unwrap();
    assert_eq!(c.pubkeys().await.unwrap(), sim_keys(&sim, &[5]));
}

// ---- the answer parser, property-tested ---------------------------------

/// One client for every case (no request is made).
fn parser() -> &'static KeymanagerClient {
    static C: OnceLock<KeymanagerClient> = OnceLock::new();
    C.get_or_init(|| client_at("http://127.0.0.1:9/", 1))
}

/// `parse`'s outcome is sound: a sorted, deduplicated list, or an error
/// that names the URL and the call and shows no part of the token.
fn check(list: KeyList, body: &[u8]) -> Result<Vec<Pubkey>, ()> {
    match parser().parse(list, body) {
        Ok(keys) => {
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "sorted and deduplicated"
            );
            Ok(keys)
        }
        Err(e) => {
            let msg = shown(&e);
            assert!(
                msg.contains("http://127.0.0.1:9") && msg.contains(list.call()),
                "{msg}"
            );
            assert!(!matches!(
                e,
                KeymanagerError::Unreachable { .. } | KeymanagerError::Rejected { .. }
            ));
            Err(())
        }
    }
}

fn answer(list: KeyList, keys: &[String]) -> Vec<u8> {
    let v = match list {
        KeyList::Keystores => keystores(keys),
        KeyList::Remotekeys => remotekeys(keys),
    };
    serde_json::to_vec(&v).unwrap()
}

fn any_list() -> impl Strategy<Value = KeyList> {
    prop_oneof![Just(KeyList::Keystores), Just(KeyList::Remotekeys)]
}

fn any_keys() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<[u8; 48]>().prop_map(|b| Pubkey(b).to_string()), 0..12)
}

/// An edit of a valid answer.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    /// Puts the token (or part of it) at a place.
    Token(usize, usize),
}

fn any_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<usize>(),
            prop::sample::select(b"{}[]\",:\\ 0x-9aZnt\x00\xff".to_vec())
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 8usize..=TOKEN.len()).prop_map(|(i, n)| Edit::Token(i, n)),
    ]
}

fn apply(body: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match *edit {
        Edit::Flip(i, b) if !body.is_empty() => {
            let i = i % body.len();
            body[i] ^= b | 1;
        }
        Edit::Flip(..) => {}
        Edit::Insert(i, b) => body.insert(at(i, body.len()), b),
        Edit::Delete(i, n) => {
            let start = at(i, body.len());
            let end = (start + n).min(body.len());
            body.drain(start..end);
        }
        Edit::Truncate(i) => body.truncate(at(i, body.len())),
        Edit::Token(i, n) => {
            let at = at(i, body.len());
            body.splice(at..at, TOKEN.as_bytes()[..n].iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(list in any_list(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check(list, &body);
    }

    #[test]
    fn valid_answers_parse_to_their_keys(list in any_list(), keys in any_keys()) {
        let body = answer(list, &keys);
        let mut want: Vec<Pubkey> = keys.iter().map(|k| key(k)).collect();
        want.sort();
        want.dedup();
        prop_assert_eq!(check(list, &body), Ok(want));
    }

    #[test]
    fn mutated_answers_parse_or_fail_cleanly(
        list in any_list(),
        keys in any_keys(),
        edits in prop::collection::vec(any_edit(), 1..6),
    ) {
        let mut body = answer(list, &keys);
        for e in &edits {
            apply(&mut body, e);
        }
        if let Ok(got) = check(list, &body) {
            // What parses is a set of valid keys.
            prop_assert!(got.len() <= keys.len() + edits.len());
        }
    }
}

#[test]
fn deep_nesting_and_huge_strings_fail_cleanly() {
    let deep = format!("{{\"data\": {}", "[".repeat(200_000));
    assert!(check(KeyList::Keystores, deep.as_bytes()).is_err());
    let deep_entry = format!(
        "{{\"data\": [{}]}}",
        "[".repeat(100_000) + &"]".repeat(100_000)
    );
    assert!(check(KeyList::Remotekeys, deep_entry.as_bytes()).is_err());
    let long = format!(
        "{{\"data\": [{{\"pubkey\": \"0x{}\"}}]}}",
        "ab".repeat(1 << 20)
    );
    assert!(check(KeyList::Remotekeys, long.as_bytes()).is_err());
    let msg = parser()
        .parse(KeyList::Remotekeys, long.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(msg.len() < 1_000, "the excerpt is cut: {} bytes", msg.len());
}
