//! Fault injection and request accounting for every simulated route:
//! the [`Route`] names, per-route request counters, requests in flight
//! (now, and the most seen at once), "fail the next N", "answer the next N
//! with an HTML proxy page", and added latency.
//!
//! Every faultable handler calls [`Faults::gate`] first; it counts the
//! request (faulted or not), sleeps the configured latency, and returns the
//! injected response if one is due. Every faultable route is also wrapped
//! by [`tracked`], which holds an [`InFlight`] guard from the moment the
//! request reaches the route (before its body is read) until its response
//! body is fully handed to the connection, or until the request is dropped
//! (the client went away mid-request). An event stream is in flight for as
//! long as it stays open. A held route ([`Faults::hold`]) keeps requests
//! waiting after their latency until [`Faults::release`] lets some through,
//! so a test can know exactly which requests are running when something
//! happens. Control routes (`/sim/…`) never pass through here.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use hyper::body::{Frame, SizeHint};
use tokio::sync::Semaphore;

use crate::{lock, Sim};

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
    Keystores,
    Remotekeys,
}

impl Route {
    pub const ALL: [Route; 15] = [
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
        Route::Keystores,
        Route::Remotekeys,
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
            Route::Keystores => "keystores",
            Route::Remotekeys => "remotekeys",
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
    /// Requests still let through before the first failure.
    after: u32,
    remaining: u32,
    retry_after_secs: Option<u64>,
}

#[derive(Default)]
struct RouteState {
    count: AtomicU64,
    /// Requests whose [`InFlight`] guard is alive.
    in_flight: AtomicU64,
    /// The most `in_flight` has been since the last reset.
    max_in_flight: AtomicU64,
    latency_ms: AtomicU64,
    fail: Mutex<Option<FailNext>>,
    non_json: Mutex<u32>,
    /// While held: one permit per request let through.
    hold: Mutex<Option<Arc<Semaphore>>>,
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

    /// Counts the request, applies latency, waits while the route is held,
    /// and returns the injected response if one is due (a due fault is
    /// consumed).
    pub async fn gate(&self, route: Route) -> Option<Response> {
        let st = self.route(route);
        st.count.fetch_add(1, Ordering::Relaxed);
        let ms =
            st.latency_ms.load(Ordering::Relaxed) + self.global_latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let held = lock(&st.hold).clone();
        if let Some(held) = held {
            // Closed by `unhold`: everyone waiting goes on.
            if let Ok(permit) = held.acquire().await {
                permit.forget();
            }
        }
        {
            let mut fail = lock(&st.fail);
            match fail.as_mut() {
                Some(f) if f.after > 0 => f.after -= 1,
                Some(f) => {
                    f.remaining = f.remaining.saturating_sub(1);
                    let f = *f;
                    if f.remaining == 0 {
                        *fail = None;
                    }
                    return Some(injected(f.status, f.retry_after_secs));
                }
                None => {}
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
        self.fail_after(route, 0, status, count, retry_after_secs);
    }

    /// [`Faults::fail_next`] once `after` more requests have passed the
    /// gate unharmed (in the order their latency ends).
    pub fn fail_after(
        &self,
        route: Route,
        after: u32,
        status: u16,
        count: u32,
        retry_after_secs: Option<u64>,
    ) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        *lock(&self.route(route).fail) = (count > 0).then_some(FailNext {
            status,
            after,
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

    /// From now on, requests to `route` wait (after their latency) until
    /// released one by one with [`Faults::release`], or all at once by
    /// [`Faults::unhold`]. No-op if already held.
    pub fn hold(&self, route: Route) {
        lock(&self.route(route).hold).get_or_insert_with(|| Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` requests to a held `route` through: waiting ones first,
    /// then the next to arrive. No-op if not held.
    pub fn release(&self, route: Route, n: usize) {
        if let Some(held) = lock(&self.route(route).hold).as_ref() {
            held.add_permits(n);
        }
    }

    /// Ends the hold: every waiting request goes on, and later ones are not
    /// held.
    pub fn unhold(&self, route: Route) {
        if let Some(held) = lock(&self.route(route).hold).take() {
            held.close();
        }
    }

    /// Requests to `route` in flight now.
    pub fn in_flight(&self, route: Route) -> u64 {
        self.route(route).in_flight.load(Ordering::SeqCst)
    }

    /// The most requests to `route` in flight at once since the last
    /// [`Faults::reset_counts`].
    pub fn max_in_flight(&self, route: Route) -> u64 {
        self.route(route).max_in_flight.load(Ordering::SeqCst)
    }

    /// Zeroes the request counters; the in-flight maxima restart from what
    /// is in flight now (those requests are still running).
    pub fn reset_counts(&self) {
        for st in &self.routes {
            st.count.store(0, Ordering::Relaxed);
            st.max_in_flight.store(0, Ordering::SeqCst);
            // After the store: an increment racing with it either is seen
            // here or raises the maximum itself afterwards.
            st.max_in_flight
                .fetch_max(st.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }

    fn enter(&self, route: Route) {
        let st = self.route(route);
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self, route: Route) {
        self.route(route).in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request to a route in flight, for as long as this lives.
pub struct InFlight {
    sim: Sim,
    route: Route,
}

impl InFlight {
    pub fn new(sim: Sim, route: Route) -> InFlight {
        sim.faults().enter(route);
        InFlight { sim, route }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sim.faults().leave(self.route);
    }
}

/// `handler` with every request counted in flight for `route` (see the
/// module docs).
pub fn tracked(sim: &Sim, route: Route, handler: MethodRouter<Sim>) -> MethodRouter<Sim> {
    handler.layer(middleware::from_fn_with_state(
        (sim.clone(), route),
        in_flight,
    ))
}

/// The guard lives in this future while the route runs (so a dropped
/// request drops it), then in the response body until it is sent.
async fn in_flight(State((sim, route)): State<(Sim, Route)>, req: Request, next: Next) -> Response {
    let guard = InFlight::new(sim, route);
    next.run(req).await.map(|body| {
        Body::new(GuardedBody {
            body,
            guard: Some(guard),
        })
    })
}

/// A response body that releases its guard once it has given its last
/// frame (or fails, or is dropped unsent). Sizes pass through, so a full
/// body keeps its `Content-Length`.
struct GuardedBody {
    body: Body,
    guard: Option<InFlight>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
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

    #[tokio::test]
    async fn held_requests_wait_until_released() {
        let f = Arc::new(Faults::default());
        let gate = |f: &Arc<Faults>| {
            let f = f.clone();
            tokio::spawn(async move { f.gate(Route::Health).await.is_none() })
        };
        let arrived = |f: &Arc<Faults>, n: u64| {
            let f = f.clone();
            async move {
                while f.count(Route::Health) < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        f.hold(Route::Health);
        let a = gate(&f);
        arrived(&f, 1).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!a.is_finished(), "held");
        f.release(Route::Health, 1);
        assert!(a.await.unwrap());
        // A release ahead of arrivals is kept for the next one.
        f.release(Route::Health, 1);
        assert!(gate(&f).await.unwrap());
        let (c, d) = (gate(&f), gate(&f));
        arrived(&f, 4).await;
        f.unhold(Route::Health);
        assert!(c.await.unwrap() && d.await.unwrap());
        assert!(f.gate(Route::Health).await.is_none(), "no longer held");
    }

    #[tokio::test]
    async fn fail_after_lets_some_through_first() {
        let f = Faults::default();
        f.fail_after(Route::Spec, 2, 400, 1, None);
        assert!(f.gate(Route::Spec).await.is_none());
        assert!(f.gate(Route::Spec).await.is_none());
        assert_eq!(f.gate(Route::Spec).await.unwrap().status(), 400);
        assert!(f.gate(Route::Spec).await.is_none());
        // A request let through still meets the other faults.
        f.fail_after(Route::Spec, 1, 503, 1, None);
        f.non_json_next(Route::Spec, 1);
        assert_eq!(f.gate(Route::Spec).await.unwrap().status(), 200);
        assert_eq!(f.gate(Route::Spec).await.unwrap().status(), 503);
        assert!(f.gate(Route::Spec).await.is_none());
    }
}
