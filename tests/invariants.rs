//! Safety invariant 4 of the architecture: a desired validator that the
//! beacon node does not know (yet) is pending, not gone; a cached index
//! whose status the node did not return is kept.
//!
//! The other invariants are proven by the tests named after them:
//! `invariant_1_*`, `invariant_2_*`, `invariant_3_*` (tests/cli.rs,
//! tests/watch.rs; a wrong beacon witness in tests/wrong_witness.rs),
//! `invariant_5_*` (tests/watch_kill.rs) and `invariant_6_*` (tests/cli.rs).

use std::time::Duration;

use keysync::beacon::{BeaconClient, BeaconValidator};
use keysync::cache::ChainCache;
use keysync::desired::Refresh;
use keysync::domain::{ChainId, Pubkey, Status};
use keysync::http::{Http, RetryPolicy};
use keysync::inputs::SourceContent;
use keysync::reconcile::Reconciler;
use keysync::registry::RegistryClient;
use keysync::secret::Secret;
use url::Url;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn pk(i: u8) -> Pubkey {
    let mut b = [0x80u8; 48];
    b[47] = i;
    Pubkey(b)
}

#[tokio::test]
async fn invariant_4_unknown_validators_are_pending_and_unreturned_cached_ones_are_kept() {
    // A beacon node that returns nothing at all for any id.
    let beacon = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/eth/v1/beacon/states/head/validators"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": []})))
        .mount(&beacon)
        .await;
    let http = Http::new(
        Duration::from_secs(5),
        RetryPolicy {
            attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
        None,
        vec![],
    )
    .unwrap();
    let url = Url::parse(&beacon.uri()).unwrap();
    let rec = Reconciler {
        http: http.clone(),
        registry: RegistryClient::new(
            http.clone(),
            url.clone(),
            url.clone(),
            Secret::new("ovi_live_x"),
            "mainnet".into(),
        ),
        beacon: Some(BeaconClient::new(http.clone(), vec![url])),
        operator_id: "42".into(),
        chain_id: ChainId::new("0x1"),
        show_progress: false,
    };
    // The cache learned validator 7 = pk(7) earlier; pk(9) was never seen.
    let mut cache = ChainCache::new();
    cache.learn(&BeaconValidator {
        index: 7,
        pubkey: pk(7),
        status: Status::ActiveOngoing,
        withdrawable_epoch: None,
    });
    let content = SourceContent {
        pubkeys: vec![pk(7), pk(9)],
        indices: vec![],
        records: vec![],
    };

    let resolved = rec
        .resolve(&content, &mut cache, &Refresh::all())
        .await
        .unwrap();
    assert!(
        resolved.desired.contains(&(7, ChainId::new("0x1"))),
        "cached, not returned: kept"
    );
    assert_eq!(resolved.unknown, 1, "never known: pending");
    assert_eq!(resolved.desired.len(), 1);
    assert_eq!(
        cache.get(7).map(|k| k.status.clone()),
        Some(Status::ActiveOngoing)
    );
}
