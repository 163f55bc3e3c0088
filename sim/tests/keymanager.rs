//! Black-box tests of keysync-sim's Keymanager API listener over loopback
//! HTTP with reqwest: the two lists, the token, the 404 of a client
//! without remote-signer support, faults, stop/start and the control API.
//! Timing is never hoped for: conditions are polled against a deadline.

use std::time::{Duration, Instant};

use keysync_sim::{Route, Sim, SimConfig, REMOTE_SIGNER_URL};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn manual_config() -> SimConfig {
    SimConfig {
        slot_ms: 0,
        slots_per_epoch: 4,
        validators: 16,
        keepalive_ms: 60_000,
        ..SimConfig::default()
    }
}

async fn manual() -> Sim {
    Sim::start(manual_config()).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
async fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// `GET {keymanager}/eth/v1/{list}` with `token` (none if `None`):
/// status and body text.
async fn get(sim: &Sim, list: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = http().get(format!("{}/eth/v1/{list}", sim.keymanager_url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The list's answer with the right token, parsed.
async fn get_ok(sim: &Sim, list: &str) -> Value {
    let (status, body) = get(sim, list, Some(&sim.keymanager_token())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn lists_the_scripted_keys_in_lodestars_shape() {
    let sim = manual().await;
    assert_eq!(
        sim.keymanager_token(),
        "km_token_0123456789abcdef0123456789"
    );
    assert_ne!(sim.keymanager_url(), sim.url());
    assert_ne!(sim.keymanager_url(), sim.beacon_url());
    // Nothing scripted: both lists empty, as Lodestar answers.
    assert_eq!(get_ok(&sim, "keystores").await, json!({"data": []}));
    assert_eq!(get_ok(&sim, "remotekeys").await, json!({"data": []}));

    sim.keymanager_set_local([2u64, 5]);
    sim.keymanager_set_remote(vec![sim.pubkey(7)]);
    assert_eq!(sim.keymanager_local(), vec![sim.pubkey(2), sim.pubkey(5)]);
    assert_eq!(
        get_ok(&sim, "keystores").await,
        json!({"data": [
            {"validating_pubkey": sim.pubkey(2), "derivation_path": "", "readonly": false},
            {"validating_pubkey": sim.pubkey(5), "derivation_path": "", "readonly": false},
        ]})
    );
    assert_eq!(
        get_ok(&sim, "remotekeys").await,
        json!({"data": [{"pubkey": sim.pubkey(7), "url": REMOTE_SIGNER_URL, "readonly": false}]})
    );

    // A string is listed verbatim, malformed or not; duplicates are kept.
    sim.keymanager_set_local(["0xnot-a-key", "0xnot-a-key"]);
    assert_eq!(
        get_ok(&sim, "keystores").await["data"][1]["validating_pubkey"],
        "0xnot-a-key"
    );
    assert_eq!(sim.count(Route::Keystores), 3);
    assert_eq!(sim.count(Route::Remotekeys), 2);
}

#[tokio::test]
async fn both_routes_want_the_token() {
    let sim = Sim::start(SimConfig {
        keymanager_token: "km_custom_token_42".into(),
        ..manual_config()
    })
    .await
    .unwrap();
    assert_eq!(sim.keymanager_token(), "km_custom_token_42");
    let refused = (
        StatusCode::UNAUTHORIZED,
        r#"{"error":"missing authorization header"}"#.to_string(),
    );
    for list in ["keystores", "remotekeys"] {
        assert_eq!(get(&sim, list, None).await, refused, "{list}");
        assert_eq!(get(&sim, list, Some("km_wrong")).await, refused, "{list}");
        // The console's key is not the keymanager's token.
        assert_eq!(get(&sim, list, Some(&sim.api_key())).await, refused);
        assert_eq!(get(&sim, list, Some("km_custom_token_42")).await.0, 200);
    }
    // Not "Bearer": refused.
    let r = http()
        .get(format!("{}/eth/v1/keystores", sim.keymanager_url()))
        .header("Authorization", "Basic km_custom_token_42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Rotation: only the new token is accepted.
    sim.set_keymanager_token("km_rotated_token");
    assert_eq!(
        get(&sim, "keystores", Some("km_custom_token_42")).await,
        refused
    );
    assert_eq!(
        get(&sim, "keystores", Some("km_rotated_token")).await.0,
        200
    );
    // The console does not take the keymanager's token either.
    let me = http()
        .get(format!("{}/api/v1/me", sim.url()))
        .bearer_auth("km_rotated_token")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn remotekeys_answers_404_without_remote_signer_support() {
    let sim = manual().await;
    sim.keymanager_set_local([1u64]);
    sim.keymanager_set_remote([2u64]);
    sim.keymanager_remotekeys_404(true);
    for token in [Some(sim.keymanager_token()), None] {
        let (status, body) = get(&sim, "remotekeys", token.as_deref()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["statusCode"],
            404
        );
    }
    // keystores is unaffected.
    assert_eq!(
        get_ok(&sim, "keystores").await["data"][0]["validating_pubkey"],
        sim.pubkey(1)
    );
    sim.keymanager_remotekeys_404(false);
    assert_eq!(
        get_ok(&sim, "remotekeys").await["data"][0]["pubkey"],
        sim.pubkey(2)
    );
    assert_eq!(sim.count(Route::Remotekeys), 3);
}

#[tokio::test]
async fn faults_counts_and_latency_apply_to_both_routes() {
    let sim = manual().await;
    let token = sim.keymanager_token();
    sim.keymanager_set_local([3u64]);

    sim.fail_next(Route::Keystores, 503, 2, Some(4));
    for _ in 0..2 {
        let r = http()
            .get(format!("{}/eth/v1/keystores", sim.keymanager_url()))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "4");
    }
    assert_eq!(get(&sim, "keystores", Some(&token)).await.0, 200);
    // A fault comes before the token check.
    sim.fail_next(Route::Remotekeys, 500, 1, None);
    assert_eq!(get(&sim, "remotekeys", None).await.0, 500);

    sim.non_json_next(Route::Remotekeys, 1);
    assert_eq!(
        get(&sim, "remotekeys", Some(&token)).await,
        (StatusCode::OK, "<html>502 proxy</html>".to_string())
    );
    assert_eq!(get_ok(&sim, "remotekeys").await, json!({"data": []}));

    sim.set_latency(Some(Route::Keystores), 150);
    let t = Instant::now();
    assert_eq!(get(&sim, "keystores", Some(&token)).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    sim.set_latency(Some(Route::Keystores), 0);

    let counts = sim.counts();
    assert_eq!(counts["keystores"], 4);
    assert_eq!(counts["remotekeys"], 3);
    assert_eq!(counts.len(), Route::ALL.len());
    assert_eq!("keystores".parse::<Route>(), Ok(Route::Keystores));
    assert_eq!(Route::Remotekeys.to_string(), "remotekeys");
    sim.reset_counts();
    assert_eq!(sim.count(Route::Keystores), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_keymanager_requests_are_in_flight_until_released() {
    let sim = manual().await;
    sim.hold(Route::Keystores);
    let spawn = || {
        let sim = sim.clone();
        tokio::spawn(async move {
            get(&sim, "keystores", Some(&sim.keymanager_token()))
                .await
                .0
        })
    };
    let (a, b) = (spawn(), spawn());
    assert!(wait_for(10, || sim.in_flight(Route::Keystores) == 2).await);
    // The other route is not held.
    assert_eq!(get_ok(&sim, "remotekeys").await, json!({"data": []}));
    sim.release(Route::Keystores, 1);
    assert!(wait_for(10, || sim.in_flight(Route::Keystores) == 1).await);
    sim.unhold(Route::Keystores);
    assert_eq!(a.await.unwrap(), StatusCode::OK);
    assert_eq!(b.await.unwrap(), StatusCode::OK);
    assert!(wait_for(10, || sim.in_flight(Route::Keystores) == 0).await);
    assert_eq!(sim.max_in_flight(Route::Keystores), 2);
    assert_eq!(sim.max_in_flight(Route::Remotekeys), 1);
}

#[tokio::test]
async fn stop_keymanager_refuses_connections_and_start_rebinds_the_port() {
    let sim = manual().await;
    let url = sim.keymanager_url();
    assert!(sim.keymanager_up().await);
    assert_eq!(get_ok(&sim, "keystores").await, json!({"data": []}));
    sim.stop_keymanager().await;
    sim.stop_keymanager().await; // no-op
    assert!(!sim.keymanager_up().await);
    let err = http()
        .get(format!("{url}/eth/v1/keystores"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // The other listeners are unaffected.
    let health = http()
        .get(format!("{}/eth/v1/node/health", sim.beacon_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    sim.keymanager_set_local([4u64]);
    sim.start_keymanager().await.unwrap();
    sim.start_keymanager().await.unwrap(); // no-op
    assert_eq!(sim.keymanager_url(), url, "same port");
    assert_eq!(
        get_ok(&sim, "keystores").await["data"][0]["validating_pubkey"],
        sim.pubkey(4)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn control_api_drives_the_keymanager() {
    let sim = manual().await;
    let c = http();
    let u = |p: &str| format!("{}/sim/{p}", sim.url());
    let post = |p: &str, body: Value| c.post(u(p)).json(&body).send();
    let state = || async {
        c.get(u("keymanager"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };

    let s = state().await;
    assert_eq!(s["url"], sim.keymanager_url());
    assert_eq!(s["token"], sim.keymanager_token());
    assert_eq!(
        (&s["up"], &s["local"], &s["remote"], &s["remotekeys_404"]),
        (&json!(true), &json!([]), &json!([]), &json!(false))
    );

    let r = post(
        "keymanager/keys",
        json!({"local": [1, sim.pubkey(9), "0xbad"], "remote": [2]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"ok": true, "local": 3, "remote": 1})
    );
    assert_eq!(
        sim.keymanager_local(),
        vec![sim.pubkey(1), sim.pubkey(9), "0xbad".to_string()]
    );
    assert_eq!(sim.keymanager_remote(), vec![sim.pubkey(2)]);
    // Each list is optional: the other stays.
    post("keymanager/keys", json!({"remote": []}))
        .await
        .unwrap();
    assert_eq!(sim.keymanager_local().len(), 3);
    assert!(sim.keymanager_remote().is_empty());
    // A malformed body is a 400, and changes nothing.
    let r = post("keymanager/keys", json!({"local": [-1]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(sim.keymanager_local().len(), 3);

    post("keymanager/remotekeys_404", json!({"on": true}))
        .await
        .unwrap();
    assert_eq!(get(&sim, "remotekeys", None).await.0, 404);
    assert_eq!(state().await["remotekeys_404"], true);
    post("keymanager/remotekeys_404", json!({"on": false}))
        .await
        .unwrap();
    assert_eq!(get(&sim, "remotekeys", None).await.0, 401);

    let r = post("keymanager/token", json!({"token": "km_via_control"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.keymanager_token(), "km_via_control");
    assert_eq!(
        post("keymanager/token", json!({"token": ""}))
            .await
            .unwrap()
            .status(),
        400
    );

    // The generic fault routes take the keymanager's route names.
    post("fail", json!({"route": "keystores", "status": 502}))
        .await
        .unwrap();
    assert_eq!(get(&sim, "keystores", Some("km_via_control")).await.0, 502);
    post("non_json", json!({"route": "remotekeys"}))
        .await
        .unwrap();
    assert_eq!(
        get(&sim, "remotekeys", Some("km_via_control")).await.1,
        "<html>502 proxy</html>"
    );

    let r = post("keymanager/up", json!({"up": false})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["up"], false);
    assert!(!sim.keymanager_up().await);
    let st: Value = c
        .get(u("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["keymanager_up"], false);
    assert_eq!(st["keymanager_url"], sim.keymanager_url());
    assert_eq!(st["counts"]["keystores"], 1);
    let r = post("keymanager/up", json!({"up": true})).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["up"], true);
    assert_eq!(get(&sim, "keystores", Some("km_via_control")).await.0, 200);
}
