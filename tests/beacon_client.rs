//! `BeaconClient` against a wiremock beacon node: the chain-id probe, batched
//! POST resolution, the GET fallback, 404 quirks, retries and failover.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keysync::beacon::{BeaconClient, BeaconError, ValidatorId, GET_CHUNK, POST_CHUNK};
use keysync::domain::{Pubkey, Status};
use keysync::http::{Http, RetryPolicy};
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const DEPOSIT: &str = "/eth/v1/config/deposit_contract";
const VALIDATORS: &str = "/eth/v1/beacon/states/head/validators";
const FIXTURE_PUBKEY: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lodestar-1.5.1/validators-response.json"
    ))
    .unwrap()
}

fn http() -> Http {
    Http::new(
        Duration::from_secs(20),
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_secs(2),
        },
        None,
        vec![],
    )
    .unwrap()
}

fn beacon(urls: &[String]) -> BeaconClient {
    BeaconClient::new(
        http(),
        urls.iter().map(|u| Url::parse(u).unwrap()).collect(),
    )
}

/// A pubkey that encodes its validator index.
fn pk(i: u64) -> Pubkey {
    let mut b = [0u8; 48];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b[47] = 0x5a;
    Pubkey(b)
}

fn index_of(pk: &str) -> Option<u64> {
    let p: Pubkey = pk.parse().ok()?;
    Some(u64::from_be_bytes(p.0[..8].try_into().ok()?))
}

/// A beacon node whose validators are the indices `0..known`, each with
/// pubkey [`pk`]: answers POST (ids in the body) and GET (`id=` params).
struct Chain {
    known: u64,
}

impl Chain {
    fn ids_of(req: &Request) -> Vec<String> {
        if req.method.as_str() == "POST" {
            let body: Value = req.body_json().unwrap();
            body["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        } else {
            req.url
                .query_pairs()
                .filter(|(k, _)| k == "id")
                .map(|(_, v)| v.into_owned())
                .collect()
        }
    }
}

impl Respond for Chain {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut out = String::from(r#"{"execution_optimistic":false,"finalized":false,"data":["#);
        let mut first = true;
        for id in Chain::ids_of(req) {
            let index = if id.starts_with("0x") {
                index_of(&id)
            } else {
                id.parse().ok()
            };
            let Some(i) = index.filter(|i| *i < self.known) else {
                continue;
            };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&format!(
                r#"{{"index":"{i}","balance":"32000000000","status":"active_ongoing","validator":{{"pubkey":"{}","withdrawal_credentials":"0x00","effective_balance":"32000000000","slashed":false,"activation_eligibility_epoch":"0","activation_epoch":"0","exit_epoch":"18446744073709551615","withdrawable_epoch":"18446744073709551615"}}}}"#,
                pk(i)
            ));
        }
        out.push_str("]}");
        ResponseTemplate::new(200).set_body_raw(out, "application/json")
    }
}

async fn requests(server: &MockServer, verb: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == verb)
        .collect()
}

async fn serve_chain(server: &MockServer, verb: &str, known: u64) {
    Mock::given(method(verb))
        .and(path(VALIDATORS))
        .respond_with(Chain { known })
        .mount(server)
        .await;
}

async fn serve_deposit(server: &MockServer, chain_id: &str) {
    Mock::given(method("GET"))
        .and(path(DEPOSIT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"chain_id": chain_id, "address": "0x00000000219ab540356cBB839Cbe05303d7705Fa"}
        })))
        .mount(server)
        .await;
}

fn indices(range: std::ops::Range<u64>) -> Vec<ValidatorId> {
    range.map(ValidatorId::Index).collect()
}

fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn no_progress(_: usize) {}

// ---- deposit_contract ----------------------------------------------------

#[tokio::test]
async fn deposit_contract_chain_id_is_parsed_and_checked() {
    let server = MockServer::start().await;
    serve_deposit(&server, "17000").await;
    let b = beacon(&[server.uri()]);
    assert_eq!(b.chain_id(None).await.unwrap(), 17000);
    assert_eq!(b.chain_id(Some((17000, "0x4268"))).await.unwrap(), 17000);
}

#[tokio::test]
async fn a_node_on_another_chain_is_a_configuration_error() {
    let server = MockServer::start().await;
    serve_deposit(&server, "5").await;
    let e = beacon(&[server.uri()])
        .chain_id(Some((1, "0x1")))
        .await
        .unwrap_err();
    match &e {
        BeaconError::WrongChain {
            node, configured, ..
        } => {
            assert_eq!(*node, 5);
            assert_eq!(configured, "0x1");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.is_config());
}

#[tokio::test]
async fn a_url_that_is_not_a_beacon_node_is_a_beacon_failure_not_config() {
    let cases = [
        ResponseTemplate::new(404).set_body_raw("<html><h1>Not Found</h1></html>", "text/html"),
        ResponseTemplate::new(200).set_body_raw("<html><body>welcome</body></html>", "text/html"),
        ResponseTemplate::new(200).set_body_json(json!({"data": {"address": "0x0"}})),
        ResponseTemplate::new(200).set_body_json(json!({"data": {"chain_id": "one"}})),
    ];
    for resp in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(DEPOSIT))
            .respond_with(resp)
            .mount(&server)
            .await;
        let e = beacon(&[server.uri()])
            .chain_id(Some((1, "0x1")))
            .await
            .unwrap_err();
        assert!(!e.is_config(), "{e:?}");
        assert!(
            matches!(
                e,
                BeaconError::Failed { .. } | BeaconError::Malformed { .. }
            ),
            "{e:?}"
        );
        // A 404 is not retried; the others are 2xx.
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }
}

// ---- POST batching -------------------------------------------------------

#[tokio::test]
async fn twelve_thousand_ids_go_in_three_posts_without_statuses() {
    let server = MockServer::start().await;
    serve_chain(&server, "POST", 1_000_000).await;
    let done = AtomicUsize::new(0);
    let got = beacon(&[server.uri()])
        .validators(&indices(0..12_000), None, &|n| {
            done.fetch_max(n, Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 12_000);
    assert_eq!(done.load(Ordering::Relaxed), 12_000);
    let posts = requests(&server, "POST").await;
    assert_eq!(posts.len(), 3);
    let mut total = 0;
    for p in &posts {
        let body: Value = p.body_json().unwrap();
        let obj = body.as_object().unwrap();
        assert!(
            !obj.contains_key("statuses"),
            "statuses omitted, not null: {:?}",
            obj.keys().collect::<Vec<_>>()
        );
        let n = obj["ids"].as_array().unwrap().len();
        assert!(n <= POST_CHUNK, "{n} ids in one POST");
        total += n;
    }
    assert_eq!(total, 12_000);
    assert!(requests(&server, "GET").await.is_empty());
}

#[tokio::test]
async fn statuses_are_sent_when_given() {
    let server = MockServer::start().await;
    serve_chain(&server, "POST", 10).await;
    beacon(&[server.uri()])
        .validators(
            &[ValidatorId::Pubkey(pk(3))],
            Some(&["withdrawal_possible", "withdrawal_done"]),
            &no_progress,
        )
        .await
        .unwrap();
    let posts = requests(&server, "POST").await;
    assert_eq!(
        posts[0].body_json::<Value>().unwrap(),
        json!({"ids": [pk(3).to_string()], "statuses": ["withdrawal_possible", "withdrawal_done"]})
    );
}

#[tokio::test]
async fn resolves_pubkeys_and_indices_and_skips_unknown_ids() {
    let server = MockServer::start().await;
    serve_chain(&server, "POST", 5).await;
    let ids = vec![
        ValidatorId::Pubkey(pk(1)),
        ValidatorId::Index(4),
        ValidatorId::Pubkey(pk(99)),
        ValidatorId::Index(12345),
    ];
    let mut got = beacon(&[server.uri()])
        .validators(&ids, None, &no_progress)
        .await
        .unwrap();
    got.sort_by_key(|v| v.index);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].index, got[0].pubkey), (1, pk(1)));
    assert_eq!((got[1].index, got[1].pubkey), (4, pk(4)));
    assert_eq!(got[0].status, Status::ActiveOngoing);
    let body: Value = requests(&server, "POST").await[0].body_json().unwrap();
    assert_eq!(
        body["ids"],
        json!([pk(1).to_string(), "4", pk(99).to_string(), "12345"])
    );
}

#[tokio::test]
async fn the_real_lodestar_response_parses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture(), "application/json"))
        .mount(&server)
        .await;
    let got = beacon(&[server.uri()])
        .validators(&[ValidatorId::Index(0)], None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].index, 0);
    assert_eq!(got[0].pubkey.to_string(), FIXTURE_PUBKEY);
    assert_eq!(got[0].status, Status::ActiveOngoing);
}

#[tokio::test]
async fn a_hundred_thousand_pubkeys_resolve_in_at_most_twenty_posts() {
    let server = MockServer::start().await;
    serve_chain(&server, "POST", 1_000_000).await;
    let ids: Vec<ValidatorId> = (0..100_000).map(|i| ValidatorId::Pubkey(pk(i))).collect();
    let got = beacon(&[server.uri()])
        .validators(&ids, None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 100_000);
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.len() <= 20, "{} requests", reqs.len());
    assert!(reqs.iter().all(|r| r.method.as_str() == "POST"));
}

// ---- GET fallback --------------------------------------------------------

fn assert_get_ids_are_repeated_and_capped(gets: &[Request]) -> usize {
    let mut total = 0;
    for g in gets {
        let ids: Vec<String> = g
            .url
            .query_pairs()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert!(!ids.is_empty() && ids.len() <= GET_CHUNK, "{}", ids.len());
        assert!(
            ids.iter().all(|i| !i.contains(',')),
            "repeated id=, not comma-joined"
        );
        total += ids.len();
    }
    total
}

#[tokio::test]
async fn post_405_falls_back_to_get_with_at_most_64_ids() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(405))
        .mount(&server)
        .await;
    serve_chain(&server, "GET", 1_000).await;
    let b = beacon(&[server.uri()]);
    let got = b
        .validators(&indices(0..200), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 200);
    assert_eq!(requests(&server, "POST").await.len(), 1, "405 is final");
    let gets = requests(&server, "GET").await;
    assert_eq!(gets.len(), 4);
    assert_eq!(assert_get_ids_are_repeated_and_capped(&gets), 200);

    // The endpoint is remembered as GET-only.
    b.validators(&indices(0..10), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(requests(&server, "POST").await.len(), 1);
    assert_eq!(requests(&server, "GET").await.len(), 5);
}

#[tokio::test]
async fn post_404_with_a_failing_probe_falls_back_to_get() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    serve_chain(&server, "GET", 1_000).await;
    let got = beacon(&[server.uri()])
        .validators(&indices(10..80), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 70);
    let posts = requests(&server, "POST").await;
    assert_eq!(posts.len(), 2, "the lookup and the probe");
    assert_eq!(
        posts[1].body_json::<Value>().unwrap(),
        json!({"ids": ["0"]})
    );
    let gets = requests(&server, "GET").await;
    assert_eq!(gets.len(), 2);
    assert_eq!(assert_get_ids_are_repeated_and_capped(&gets), 70);
}

#[tokio::test]
async fn post_404_with_a_working_probe_means_none_known_and_post_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .and(body_json(json!({"ids": ["0"]})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture(), "application/json"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let b = beacon(&[server.uri()]);
    let unknown = [ValidatorId::Pubkey(pk(77))];
    let got = b.validators(&unknown, None, &no_progress).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(requests(&server, "POST").await.len(), 2);
    // Known to support POST now: another 404 is taken as "none known"
    // without a second probe, and never turns into GETs.
    let got = b.validators(&unknown, None, &no_progress).await.unwrap();
    assert!(got.is_empty());
    assert_eq!(requests(&server, "POST").await.len(), 3);
    assert!(requests(&server, "GET").await.is_empty());
}

#[tokio::test]
async fn get_404_is_an_empty_result() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(405))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(VALIDATORS))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"code": 404, "message": "not found"})),
        )
        .mount(&server)
        .await;
    let got = beacon(&[server.uri()])
        .validators(&indices(5..9), None, &no_progress)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(
        requests(&server, "GET").await.len(),
        1,
        "404 is not retried"
    );
}

// ---- retries and failover ------------------------------------------------

#[tokio::test]
async fn post_5xx_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture(), "application/json"))
        .mount(&server)
        .await;
    let got = beacon(&[server.uri()])
        .validators(&[ValidatorId::Index(0)], None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(requests(&server, "POST").await.len(), 3);
    assert!(requests(&server, "GET").await.is_empty());
}

#[tokio::test]
async fn a_5xx_that_outlasts_the_retries_is_a_beacon_failure() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let e = beacon(&[server.uri()])
        .validators(&[ValidatorId::Index(0)], None, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(e, BeaconError::Failed { .. }), "{e:?}");
    assert!(!e.is_config());
    assert_eq!(requests(&server, "POST").await.len(), 3);
}

#[tokio::test]
async fn a_refusing_first_node_fails_over_to_the_second() {
    let server = MockServer::start().await;
    serve_deposit(&server, "1").await;
    Mock::given(method("POST"))
        .and(path(VALIDATORS))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture(), "application/json"))
        .mount(&server)
        .await;
    let dead = refused_url();
    let b = beacon(&[dead.clone(), server.uri()]);
    assert_eq!(b.chain_id(Some((1, "0x1"))).await.unwrap(), 1);
    assert_eq!(b.active_url(), server.uri());
    let got = b
        .validators(&[ValidatorId::Index(0)], None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].pubkey.to_string(), FIXTURE_PUBKEY);
}

#[tokio::test]
async fn failover_also_covers_validator_lookups() {
    let server = MockServer::start().await;
    serve_chain(&server, "POST", 100).await;
    let b = beacon(&[refused_url(), server.uri()]);
    let got = b
        .validators(&indices(0..50), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 50);
    assert_eq!(b.active_url(), server.uri());
}

#[tokio::test]
async fn every_node_down_is_a_beacon_failure() {
    let e = beacon(&[refused_url(), refused_url()])
        .chain_id(Some((1, "0x1")))
        .await
        .unwrap_err();
    assert!(matches!(e, BeaconError::Failed { .. }), "{e:?}");
    assert!(!e.is_config());
}

#[tokio::test]
async fn a_wrong_chain_is_reported_over_a_dead_node() {
    let server = MockServer::start().await;
    serve_deposit(&server, "5").await;
    let e = beacon(&[refused_url(), server.uri()])
        .chain_id(Some((1, "0x1")))
        .await
        .unwrap_err();
    assert!(e.is_config(), "{e:?}");
}

// ---- light passes ----------------------------------------------------------

/// A node answering as synced, on the chain `chain_id` says (a mock mounted
/// first wins until it is used up).
async fn serve_synced_node(server: &MockServer) {
    let head = 1_000u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Mock::given(method("GET"))
        .and(path("/eth/v1/node/syncing"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "head_slot": head.to_string(), "sync_distance": "0", "is_syncing": false,
            "is_optimistic": false, "el_offline": false
        }})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/eth/v1/beacon/genesis"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "genesis_time": (now - head * 12).to_string(),
            "genesis_validators_root": "0x00", "genesis_fork_version": "0x00000000"
        }})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/eth/v1/config/spec"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {
            "SECONDS_PER_SLOT": "12", "SLOTS_PER_EPOCH": "32",
            "MAX_SEED_LOOKAHEAD": "4", "MIN_VALIDATOR_WITHDRAWABILITY_DELAY": "256"
        }})))
        .mount(server)
        .await;
    serve_chain(server, "POST", 100).await;
}

/// A light pass trusts the last pass's vetting for lookups, but a node
/// that moved to another chain since is caught before its answers may
/// remove anything (invariant 2).
#[tokio::test]
async fn a_light_pass_checks_the_chain_again_before_a_removal() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(DEPOSIT))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"chain_id": "1", "address": "0x00000000219ab540356cBB839Cbe05303d7705Fa"}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    serve_deposit(&server, "17000").await;
    serve_synced_node(&server).await;
    let client = beacon(&[server.uri()]).vetted(keysync::beacon::Vetting {
        chain: Some((1, "0x1".into())),
        tolerance: 8,
    });

    // A full pass: vetted on chain 1, synced; its witness is synced.
    client.begin_pass();
    let got = client
        .validators(&indices(0..3), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(matches!(
        client.witness().await.unwrap(),
        keysync::beacon::Witness::Synced { .. }
    ));
    let deposits = || async {
        requests(&server, "GET")
            .await
            .iter()
            .filter(|r| r.url.path() == DEPOSIT)
            .count()
    };
    assert_eq!(deposits().await, 1);

    // A light pass: the lookup asks the node nothing about itself...
    client.begin_light_pass();
    let got = client
        .validators(&indices(0..3), None, &no_progress)
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(deposits().await, 1, "no chain check before a lookup");
    // ...but before a removal it does, and the node is now on chain 17000.
    match client.witness().await {
        Err(BeaconError::WrongChain { node, .. }) => assert_eq!(node, 17000),
        other => panic!("expected the wrong chain, got {other:?}"),
    }
}
