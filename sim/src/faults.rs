//! Fault injection and request accounting for every simulated route:
//! the [`Route`] names, per-route request counters, "fail the next N",
//! "answer the next N with an HTML proxy page", and added latency.
//!
//! Every faultable handler calls [`Faults::gate`] first; it counts the
//! request (faulted or not), sleeps the configured latency, and returns the
//! injected response if one is due. Control routes (`/sim/…`) never pass
//! through here.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::lock;

/// A route the simulator serves, by its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Route {
    Me,
    List,
    Register,
    Assign,
    Unassign,
    DepositContract,
    Health,
    Genesis,
    NodeSyncing,
    Spec,
    ValidatorsGet,
    ValidatorsPost,
    Events,
}

impl Route {
    pub const ALL: [Route; 13] = [
        Route::Me,
        Route::List,
        Route::Register,
        Route::Assign,
        Route::Unassign,
        Route::DepositContract,
        Route::Health,
        Route::Genesis,
        Route::NodeSyncing,
        Route::Spec,
        Route::ValidatorsGet,
        Route::ValidatorsPost,
        Route::Events,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Me => "me",
            Route::List => "list",
            Route::Register => "register",
            Route::Assign => "assign",
            Route::Unassign => "unassign",
            Route::DepositContract => "deposit_contract",
            Route::Health => "health",
            Route::Genesis => "genesis",
            Route::NodeSyncing => "node_syncing",
            Route::Spec => "spec",
            Route::ValidatorsGet => "validators_get",
            Route::ValidatorsPost => "validators_post",
            Route::Events => "events",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Route {
    type Err = String;
    fn from_str(s: &str) -> Result<Route, String> {
        Route::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown route {s:?}"))
    }
}

#[derive(Clone, Copy, Debug)]
struct FailNext {
    status: StatusCode,
    remaining: u32,
    retry_after_secs: Option<u64>,
}

#[derive(Default)]
struct RouteState {
    count: AtomicU64,
    latency_ms: AtomicU64,
    fail: Mutex<Option<FailNext>>,
    non_json: Mutex<u32>,
}

/// All fault knobs and counters.
#[derive(Default)]
pub struct Faults {
    routes: [RouteState; Route::ALL.len()],
    /// Added to every route's own latency.
    global_latency_ms: AtomicU64,
}

impl Faults {
    fn route(&self, route: Route) -> &RouteState {
        &self.routes[route as usize]
    }

    /// Counts the request, applies latency, and returns the injected
    /// response if one is due (a due fault is consumed).
    pub async fn gate(&self, route: Route) -> Option<Response> {
        let st = self.route(route);
        st.count.fetch_add(1, Ordering::Relaxed);
        let ms =
            st.latency_ms.load(Ordering::Relaxed) + self.global_latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        {
            let mut fail = lock(&st.fail);
            if let Some(f) = fail.as_mut() {
                f.remaining = f.remaining.saturating_sub(1);
                let f = *f;
                if f.remaining == 0 {
                    *fail = None;
                }
                return Some(injected(f.status, f.retry_after_secs));
            }
        }
        let mut non_json = lock(&st.non_json);
        if *non_json > 0 {
            *non_json -= 1;
            return Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html>502 proxy</html>",
                )
                    .into_response(),
            );
        }
        None
    }

    /// The next `count` requests to `route` answer `status` (0 clears).
    pub fn fail_next(&self, route: Route, status: u16, count: u32, retry_after_secs: Option<u64>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *lock(&self.route(route).fail) = (count > 0).then_some(FailNext {
            status,
            remaining: count,
            retry_after_secs,
        });
    }

    /// The next `count` requests to `route` answer 200 with an HTML page.
    pub fn non_json_next(&self, route: Route, count: u32) {
        *lock(&self.route(route).non_json) = count;
    }

    /// Added latency: for one route, or (`None`) for every route. The two
    /// add up.
    pub fn set_latency(&self, route: Option<Route>, ms: u64) {
        match route {
            Some(r) => self.route(r).latency_ms.store(ms, Ordering::Relaxed),
            None => self.global_latency_ms.store(ms, Ordering::Relaxed),
        }
    }

    pub fn count(&self, route: Route) -> u64 {
        self.route(route).count.load(Ordering::Relaxed)
    }

    pub fn reset_counts(&self) {
        for st in &self.routes {
            st.count.store(0, Ordering::Relaxed);
        }
    }
}

fn injected(status: StatusCode, retry_after_secs: Option<u64>) -> Response {
    let body = format!(
        "{{\"error\":\"injected_fault\",\"code\":{},\"message\":\"injected fault\"}}",
        status.as_u16()
    );
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(secs) = retry_after_secs {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_round_trip() {
        for r in Route::ALL {
            assert_eq!(r.to_string().parse::<Route>(), Ok(r));
        }
        assert!("nope".parse::<Route>().is_err());
        assert_eq!(Route::ValidatorsPost.to_string(), "validators_post");
    }

    #[test]
    fn all_lists_every_route_at_its_own_slot() {
        // `Faults` indexes its per-route state by discriminant.
        for (i, r) in Route::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r}");
        }
        assert_eq!(Route::NodeSyncing.to_string(), "node_syncing");
        assert_eq!("spec".parse::<Route>(), Ok(Route::Spec));
    }

    #[tokio::test]
    async fn fail_next_is_consumed_then_passes() {
        let f = Faults::default();
        f.fail_next(Route::List, 503, 2, Some(7));
        let r = f.gate(Route::List).await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(f.gate(Route::List).await.unwrap().status(), 503);
        assert!(f.gate(Route::List).await.is_none());
        assert!(f.gate(Route::Me).await.is_none());
        assert_eq!(f.count(Route::List), 3);
        f.non_json_next(Route::Me, 1);
        assert_eq!(f.gate(Route::Me).await.unwrap().status(), 200);
        assert!(f.gate(Route::Me).await.is_none());
        f.reset_counts();
        assert_eq!(f.count(Route::List), 0);
    }
}
