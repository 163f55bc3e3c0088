//! Following the beacon node's event stream.
//!
//! Owns the subscription to `head`, `finalized_checkpoint`, `voluntary_exit`
//! and `chain_reorg`: connect (the first URL on the configured chain that
//! answers), read with a deadline of two slots (a stream without a complete
//! event or keep-alive comment for that long is dead, even if its socket is
//! open and bytes trickle in), reconnect forever with capped, jittered
//! backoff, and come back to the preferred URL after a failover. Every
//! (re)connect sends [`Trigger::Reconnected`]: events missed while away are
//! gone, so the pass after it refreshes everything. Turns events into
//! triggers only; the framing, its size cap and the typed events are
//! [`crate::beacon::events`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use url::Url;

use super::ops::Health;
use super::trigger::{Trigger, Triggers};
use crate::backoff::Backoff;
use crate::beacon::events::transport::Reqwest;
use crate::beacon::events::{
    events_url, BadEvent, Event, Item, StreamError, Subscription, MAX_LINE_BYTES,
};
use crate::beacon::{self, BeaconClient};
use crate::http::Http;

use crate::metrics::{Event as MetricsEvent, Metrics, ReasonLabels, TopicLabels};

/// What the stream follower needs.
pub struct StreamConfig {
    pub urls: Vec<Url>,
    /// Configured chain (numeric, and as configured), when checkable.
    pub expected_chain: Option<(u64, String)>,
    /// Read at each (re)connection: the chain's, once a pass has read it.
    pub slot: super::slot::SlotLength,
    /// Used for the chain check of each URL before subscribing.
    pub http: Http,
}

/// Runs until `shutdown` turns true.
pub async fn follow(
    cfg: StreamConfig,
    triggers: Triggers,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    let transport = match Reqwest::new() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start following the event stream");
            return;
        }
    };
    let mut backoff = reconnect_backoff();
    loop {
        if *shutdown.borrow() {
            return;
        }
        for (i, url) in cfg.urls.iter().enumerate() {
            let slot = cfg.slot.get();
            // Two slots of silence (at least one second) mean the stream
            // is dead.
            let silence = (slot * 2).max(Duration::from_secs(1));
            // After a failover, try the preferred node again after this long.
            let come_back = (slot * 10).max(Duration::from_secs(2));
            let outcome = tokio::select! {
                o = session(&cfg, &transport, url, i, silence, come_back, &triggers, &metrics, &health) => o,
                _ = shutdown.changed() => return,
            };
            health.set_stream(false);
            metrics.event_stream_connected.set(0);
            match outcome {
                Session::Ended { lasted, why } => {
                    metrics.emit(StreamEnded {
                        url,
                        reason: why.reason(),
                        why: &why,
                        lasted,
                    });
                    // A session cut short (an oversized line, a node that
                    // closes at once) backs off like a failed connect.
                    if lasted > silence {
                        backoff.reset();
                    }
                    break;
                }
                Session::ComeBack => {
                    backoff.reset();
                    tracing::info!(url = %beacon::display(url), "trying the preferred beacon node again");
                    break;
                }
                Session::Failed(why) => {
                    tracing::warn!(url = %beacon::display(url), error = %why, "cannot subscribe to the event stream");
                }
            }
        }
        // Every round that did not end a healthy session counts a failure;
        // after a healthy one the first wait is the base again.
        let wait = backoff.fail();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Between reconnects: 0.25 s doubling to 30 s, ±50 %.
fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter(0.5)
}

enum Session {
    /// Subscribed, then the stream closed, failed or fell silent.
    Ended { lasted: Duration, why: Ended },
    /// Subscribed to a fallback long enough: try the preferred one.
    ComeBack,
    /// Could not subscribe.
    Failed(String),
}

/// Why a subscribed session ended.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("no complete event or keep-alive for two slots")]
    Silent,
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl Ended {
    fn reason(&self) -> &'static str {
        match self {
            Ended::Silent => "silent",
            Ended::Stream(e) => e.reason(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    cfg: &StreamConfig,
    transport: &Reqwest,
    url: &Url,
    position: usize,
    silence: Duration,
    come_back: Duration,
    triggers: &Triggers,
    metrics: &Metrics,
    health: &Health,
) -> Session {
    // Wrong chain or not a beacon node: skip it (never follow the wrong chain).
    let probe = BeaconClient::new(cfg.http.clone(), vec![url.clone()]);
    let expected = cfg.expected_chain.as_ref().map(|(n, s)| (*n, s.as_str()));
    if let Err(e) = probe.chain_id(expected).await {
        return Session::Failed(e.to_string());
    }
    let mut sub = match Subscription::new(&events_url(url), transport.clone(), MAX_LINE_BYTES) {
        Ok(s) => s,
        Err(e) => return Session::Failed(e.to_string()),
    };
    match tokio::time::timeout(silence.max(Duration::from_secs(5)), sub.connected()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Session::Failed(e.to_string()),
        Err(_) => return Session::Failed("no answer".into()),
    }
    let started = Instant::now();
    metrics.emit(StreamConnected { url });
    health.set_stream(true);
    triggers.send(Trigger::Reconnected);

    loop {
        // Only a complete event or a keep-alive comment restarts the
        // deadline: bytes that never complete one do not.
        let mut deadline = silence;
        if position > 0 {
            match come_back.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => deadline = deadline.min(left),
                _ => return Session::ComeBack,
            }
        }
        let item = match tokio::time::timeout(deadline, sub.next()).await {
            Ok(Ok(item)) => item,
            Ok(Err(e)) => {
                return Session::Ended {
                    lasted: started.elapsed(),
                    why: e.into(),
                }
            }
            Err(_) if position > 0 && started.elapsed() >= come_back => return Session::ComeBack,
            Err(_) => {
                return Session::Ended {
                    lasted: started.elapsed(),
                    why: Ended::Silent,
                }
            }
        };
        health.touch_event();
        match item {
            Item::KeepAlive => {}
            Item::Event(ev) => {
                metrics.emit(EventReceived { topic: topic(&ev) });
                if let Some(t) = trigger_for(ev) {
                    triggers.send(t);
                }
            }
            Item::Invalid(BadEvent { topic, error }) => {
                metrics.emit(EventInvalid {
                    url,
                    topic: &topic,
                    label: known(&topic),
                    error: &error,
                });
            }
        }
    }
}

/// `name` if it is one of the topics keysync parses, else `"other"` (a
/// bounded label set).
fn known(name: &str) -> &'static str {
    crate::beacon::events::TOPICS
        .into_iter()
        .chain(["head_v2"])
        .find(|t| *t == name)
        .unwrap_or("other")
}

fn topic(e: &Event) -> &'static str {
    match e {
        Event::Head { .. } => "head",
        Event::FinalizedCheckpoint { .. } => "finalized_checkpoint",
        Event::VoluntaryExit { .. } => "voluntary_exit",
        Event::ChainReorg { .. } => "chain_reorg",
        Event::Other(_) => "other",
    }
}

/// The trigger an event raises, if any.
pub fn trigger_for(e: Event) -> Option<Trigger> {
    match e {
        Event::Head {
            slot,
            epoch_transition: true,
        } => Some(Trigger::Epoch(slot)),
        Event::FinalizedCheckpoint { .. } => Some(Trigger::Finalized),
        Event::VoluntaryExit {
            validator_index, ..
        } => Some(Trigger::Exit(validator_index)),
        Event::ChainReorg { .. } => Some(Trigger::Reorg),
        Event::Head { .. } | Event::Other(_) => None,
    }
}

// ---- events: the stream's life, logged and counted together --------------

/// Subscribed to `url`'s event stream.
pub struct StreamConnected<'a> {
    pub url: &'a Url,
}

impl MetricsEvent for StreamConnected<'_> {
    fn record(&self, m: &Metrics) {
        m.event_stream_connected.set(1);
        m.event_stream_reconnects.inc();
    }

    fn log(&self) {
        tracing::info!(target: "keysync::watch::stream", url = %crate::beacon::display(self.url), "event stream connected");
    }
}

/// A subscribed session ended (`reason`: its fixed label), after `lasted`.
pub struct StreamEnded<'a> {
    pub url: &'a Url,
    pub reason: &'static str,
    pub why: &'a dyn std::fmt::Display,
    pub lasted: Duration,
}

impl MetricsEvent for StreamEnded<'_> {
    fn record(&self, m: &Metrics) {
        m.event_stream_ended
            .get_or_create(&ReasonLabels {
                reason: self.reason,
            })
            .inc();
    }

    fn log(&self) {
        tracing::warn!(target: "keysync::watch::stream", url = %crate::beacon::display(self.url), why = %self.why, lasted_s = self.lasted.as_secs(), "event stream ended; reconnecting");
    }
}

/// A beacon event arrived (`topic`: its fixed name, or `other`).
pub struct EventReceived {
    pub topic: &'static str,
}

impl MetricsEvent for EventReceived {
    fn record(&self, m: &Metrics) {
        m.events
            .get_or_create(&TopicLabels { topic: self.topic })
            .inc();
    }
}

/// A beacon event whose data did not parse was skipped: `topic` as sent,
/// `label` the bounded name it is counted under.
pub struct EventInvalid<'a> {
    pub url: &'a Url,
    pub topic: &'a str,
    pub label: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl MetricsEvent for EventInvalid<'_> {
    fn record(&self, m: &Metrics) {
        m.events_invalid
            .get_or_create(&TopicLabels { topic: self.label })
            .inc();
    }

    fn log(&self) {
        tracing::warn!(target: "keysync::watch::stream", url = %crate::beacon::display(self.url), event = %self.topic, error = %self.error, "unparseable beacon event skipped");
    }
}
