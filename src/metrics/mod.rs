//! Prometheus metrics, typed, on the official client (`prometheus-client`),
//! served in the OpenMetrics text format.
//!
//! Owns every metric keysync exposes: its name, type, help text, label set
//! and histogram buckets, all in [`Metrics::new`]. Each metric is a field of
//! [`Metrics`] of type [`Registered`], which only registration makes: a
//! metric that is recorded but not served cannot compile, and neither can a
//! label set of the wrong shape (each family's labels are a struct deriving
//! `EncodeLabelSet`; bounded label values are enums). What happens inside
//! keysync is told through the typed [`events`], each of which writes its
//! log line and moves its metrics from one value, so the two never disagree;
//! state gauges (set sizes, the beacon node's sync) are set on the fields.
//!
//! Callers hold [`Metrics`] by `Arc`, never as a global. Never holds a
//! secret: label values are party names, call names, results and reasons.
//!
//! Adding a metric: a field here, its registration in [`Metrics::new`] (the
//! struct literal will not compile without it), its row in the README's
//! "Metrics" table (`tests/metrics_readme.rs` fails otherwise), and, if a
//! log line goes with it, an event in [`events`].

pub mod events;
pub mod process;

use std::fmt;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{text, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

pub use events::Event;
pub use labels::*;

mod labels;
pub use registered::Registered;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram bucket bounds in seconds: 5 ms … 60 s.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// A latency histogram with [`BUCKETS`].
fn seconds() -> Histogram {
    Histogram::new(BUCKETS)
}

/// A gauge of a count.
pub type CountGauge = Gauge;
/// A gauge of seconds (fractional).
pub type SecondsGauge = Gauge<f64, AtomicU64>;
/// A family of latency histograms.
pub type Histograms<S> = Family<S, Histogram, fn() -> Histogram>;

// ---- label values ---------------------------------------------------------

mod registered {
    use std::ops::Deref;

    use prometheus_client::registry::{Metric, Registry};

    use super::Described;

    /// A metric that is served: made only by registering it, so a field of
    /// [`super::Metrics`] of this type cannot exist unregistered.
    #[derive(Debug)]
    pub struct Registered<M>(M);

    impl<M: Metric + Clone> Registered<M> {
        /// Registers `metric` as `name` (a counter's without `_total`: the
        /// encoder appends it to its samples).
        pub(super) fn new(registry: &mut Registry, name: &str, help: &str, metric: M) -> Self {
            // The encoder ends every help text with a full stop.
            let help = help.strip_suffix('.').unwrap_or(help);
            registry.register(name, help, Described(metric.clone()));
            Registered(metric)
        }
    }

    impl<M> Deref for Registered<M> {
        type Target = M;
        fn deref(&self) -> &M {
            &self.0
        }
    }
}

/// A metric whose `# HELP` and `# TYPE` lines are served even before it
/// has a series (the client leaves out empty families): every metric the
/// README names can be found in `/metrics` from the start.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
    fn is_empty(&self) -> bool {
        false
    }
}

/// Registers metrics into one registry.
struct Builder(Registry);

impl Builder {
    /// `name` as the samples show it: a counter's ends in `_total`.
    fn add<M: Metric + Clone>(
        &mut self,
        name: &'static str,
        help: &str,
        metric: M,
    ) -> Registered<M> {
        let family = match metric.metric_type() {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or_else(|| {
                panic!("counter {name} must end in _total");
            }),
            _ => name,
        };
        Registered::new(&mut self.0, family, help, metric)
    }
}

/// The process's metrics: every one keysync exposes, registered.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub desired_validators: Registered<CountGauge>,
    pub assigned_validators: Registered<CountGauge>,
    pub unknown_validators: Registered<CountGauge>,
    pub excluded_validators: Registered<CountGauge>,
    pub exiting_validators: Registered<CountGauge>,
    pub status_scan_period: Registered<CountGauge>,
    pub status_scan_epoch: Registered<CountGauge>,
    pub reconciles: Registered<Family<ResultLabels, Counter>>,
    pub writes: Registered<Family<WriteLabels, Counter>>,
    pub held_deletes: Registered<CountGauge>,
    pub held_deletes_by_reason: Registered<Family<HeldLabels, CountGauge>>,
    pub planned_changes: Registered<Family<PlannedLabels, CountGauge>>,
    pub beacon_synced: Registered<CountGauge>,
    pub beacon_head_lag_slots: Registered<CountGauge>,
    pub store_rolled_back: Registered<CountGauge>,
    pub source_errors: Registered<Counter>,
    pub inputs_failing: Registered<CountGauge>,
    pub event_stream_connected: Registered<CountGauge>,
    pub event_stream_reconnects: Registered<Counter>,
    pub last_event_age_seconds: Registered<SecondsGauge>,
    pub event_stream_ended: Registered<Family<ReasonLabels, Counter>>,
    pub events_invalid: Registered<Family<TopicLabels, Counter>>,
    pub events: Registered<Family<TopicLabels, Counter>>,
    pub triggers: Registered<Family<ReasonLabels, Counter>>,
    pub trigger_to_apply_seconds: Registered<Histogram>,
    pub remote_request_seconds: Registered<Histograms<RequestLabels>>,
    pub remote_requests: Registered<Family<RequestOutcomeLabels, Counter>>,
    pub reconcile_seconds: Registered<Histogram>,
    pub last_success_timestamp_seconds: Registered<CountGauge>,
    /// 1, labelled with the version.
    pub build_info: Registered<Family<BuildLabels, CountGauge>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, with no labelled series yet.
    pub fn new() -> Self {
        let mut b = Builder(Registry::default());
        Metrics {
            desired_validators: b.add(
                "keysync_desired_validators",
                "Validators in the desired set after the last reconcile.",
                Gauge::default(),
            ),
            assigned_validators: b.add(
                "keysync_assigned_validators",
                "Active assignments in the registry snapshot.",
                Gauge::default(),
            ),
            unknown_validators: b.add(
                "keysync_unknown_validators",
                "Input keys the beacon node does not know yet (pending deposits, or typos).",
                Gauge::default(),
            ),
            excluded_validators: b.add(
                "keysync_excluded_validators",
                "Input keys left out of the desired set because they have withdrawn.",
                Gauge::default(),
            ),
            exiting_validators: b.add(
                "keysync_exiting_validators",
                "Owned validators whose exit is initiated: each is checked at its withdrawable epoch, then leaves.",
                Gauge::default(),
            ),
            status_scan_period: b.add(
                "keysync_status_scan_period_epochs",
                "Every known validator's status is scanned once per this many epochs (from the node's config/spec).",
                Gauge::default(),
            ),
            status_scan_epoch: b.add(
                "keysync_status_scan_epoch",
                "The last epoch whose share of the status scan was checked.",
                Gauge::default(),
            ),
            reconciles: b.add(
                "keysync_reconciles_total",
                "Reconcile passes by result (ok, error).",
                Family::default(),
            ),
            writes: b.add(
                "keysync_writes_total",
                "Registry writes by kind (register, assign, unassign) and result; unassigns also by reason (withdrawn, not_in_inputs, registry_drift).",
                Family::default(),
            ),
            held_deletes: b.add(
                "keysync_held_deletes",
                "Unassigns held back, for any reason (alert when > 0); see keysync_held_deletes_by_reason.",
                Gauge::default(),
            ),
            held_deletes_by_reason: b.add(
                "keysync_held_deletes_by_reason",
                "Unassigns held back, by reason: max_deletes (the guardrail), empty_registry (they would empty it), input_not_read (an input never parsed), beacon_not_synced (no synced beacon node confirmed them).",
                Family::default(),
            ),
            planned_changes: b.add(
                "keysync_planned_changes",
                "Changes the last plan wanted, by kind (assign, unassign); in shadow mode, what --apply would write.",
                Family::default(),
            ),
            beacon_synced: b.add(
                "keysync_beacon_synced",
                "1 when the beacon node the last pass used was synced (removals need it), 0 when not.",
                Gauge::default(),
            ),
            beacon_head_lag_slots: b.add(
                "keysync_beacon_head_lag_slots",
                "Slots the beacon node's head trailed the wall clock at the last check.",
                Gauge::default(),
            ),
            store_rolled_back: b.add(
                "keysync_store_rolled_back",
                "1 when the state store could not prove at start that it was current and was moved aside and rebuilt empty (inputs read afresh); see the error log.",
                Gauge::default(),
            ),
            source_errors: b.add(
                "keysync_source_errors_total",
                "Input files (or the drop directory) that failed to read or parse (last good content kept).",
                Counter::default(),
            ),
            inputs_failing: b.add(
                "keysync_inputs_failing",
                "Inputs that cannot be used now (their last good content stands).",
                Gauge::default(),
            ),
            event_stream_connected: b.add(
                "keysync_event_stream_connected",
                "1 while the beacon event stream is connected.",
                Gauge::default(),
            ),
            event_stream_reconnects: b.add(
                "keysync_event_stream_reconnects_total",
                "Event stream (re)connections.",
                Counter::default(),
            ),
            last_event_age_seconds: b.add(
                "keysync_last_event_age_seconds",
                "Seconds since the last event or keep-alive from the beacon node.",
                Gauge::default(),
            ),
            event_stream_ended: b.add(
                "keysync_event_stream_ended_total",
                "Event stream sessions ended, by reason (silent, closed, too_large, http_status, connection, protocol).",
                Family::default(),
            ),
            events_invalid: b.add(
                "keysync_events_invalid_total",
                "Beacon events skipped because their data did not parse, by topic.",
                Family::default(),
            ),
            events: b.add(
                "keysync_events_total",
                "Beacon events received by topic.",
                Family::default(),
            ),
            triggers: b.add(
                "keysync_triggers_total",
                "Reconcile triggers by reason.",
                Family::default(),
            ),
            trigger_to_apply_seconds: b.add(
                "keysync_trigger_to_apply_seconds",
                "From the first trigger of a pass to the end of its last registry write.",
                seconds(),
            ),
            remote_request_seconds: b.add(
                "keysync_remote_request_seconds",
                "Remote request latency by party and call.",
                Family::new_with_constructor(seconds as fn() -> Histogram),
            ),
            remote_requests: b.add(
                "keysync_remote_requests_total",
                "Remote requests by party, call and outcome.",
                Family::default(),
            ),
            reconcile_seconds: b.add(
                "keysync_reconcile_seconds",
                "Duration of a reconcile pass.",
                seconds(),
            ),
            last_success_timestamp_seconds: b.add(
                "keysync_last_success_timestamp_seconds",
                "Unix time of the last successful reconcile.",
                Gauge::default(),
            ),
            build_info: {
                let info: Registered<Family<BuildLabels, CountGauge>> = b.add(
                    "keysync_build_info",
                    "Always 1; the labels say which keysync this is.",
                    Family::default(),
                );
                info.get_or_create(&BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                })
                .set(1);
                info
            },
            // Last: every field above is registered in it by now.
            registry: {
                b.0.register_collector(Box::new(process::ProcessCollector::new()));
                b.0
            },
        }
    }

    /// Metrics with every series an alert keys on present at 0, so that
    /// `increase()` sees the first error instead of a series appearing.
    pub fn with_zeroes() -> Self {
        let m = Self::new();
        for result in Outcome::ALL {
            let result = *result;
            m.reconciles
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
            for write in Write::all() {
                m.writes
                    .get_or_create(&WriteLabels::new(write, result))
                    .inc_by(0);
            }
        }
        for reason in HeldReason::ALL {
            let reason = *reason;
            m.held_deletes_by_reason
                .get_or_create(&HeldLabels { reason })
                .set(0);
        }
        m
    }

    /// Tells `event`: its log line and its metrics.
    pub fn emit(&self, event: impl Event) {
        event.emit(Some(self));
    }

    /// The exposition of every metric ([`CONTENT_TYPE`]), `# EOF` last.
    pub fn render(&self) -> String {
        let mut encoded = String::new();
        // Writing to a String fails only if a metric's encoding does, and
        // ours cannot (every label value is a plain string or number).
        let _ = text::encode(&mut encoded, &self.registry);
        let mut out = String::with_capacity(encoded.len());
        for line in encoded.lines() {
            match le_last(line) {
                Some(moved) => out.push_str(&moved),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The sum over every sample named `name` (as served: a counter's with
    /// `_total`) that carries the labels `l` (with others or not): `&[]`
    /// sums them all, as a PromQL `sum()` would.
    pub fn get(&self, name: &str, l: &[(&str, &str)]) -> f64 {
        self.render()
            .lines()
            .filter_map(parse_sample)
            .filter(|s| s.name == name && l.iter().all(|(k, v)| s.has(k, v)))
            .map(|s| s.value)
            .sum()
    }
}

/// A histogram bucket line with its `le` label moved after the family's
/// labels (`x_bucket{party="console",call="…",le="0.5"} 3`), where the
/// Prometheus clients and keysync before this client put it; the client
/// writes it first. Label order means nothing to Prometheus; dashboards,
/// greps and tests that read the text keep working. `None`: nothing to
/// move.
fn le_last(line: &str) -> Option<String> {
    let open = line.find('{')?;
    if !line[..open].ends_with("_bucket") {
        return None;
    }
    let labels = &line[open + 1..];
    let rest = labels.strip_prefix("le=\"")?;
    let le_len = rest.find('"')?;
    // The family's labels, up to the closing brace outside any quotes.
    let others = rest[le_len + 1..].strip_prefix(',')?;
    let mut quoted = false;
    let mut escaped = false;
    let close = others.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
        None
    })?;
    // `le="`, the value, the closing quote.
    let le = &labels[..r#"le=""#.len() + le_len + 1];
    Some(format!(
        "{}{{{},{}}}{}",
        &line[..open],
        &others[..close],
        le,
        &others[close + 1..]
    ))
}

/// One sample line of the text exposition.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn has(&self, key: &str, value: &str) -> bool {
        self.labels.iter().any(|(k, v)| *k == key && v == value)
    }
}

/// `name{k="v",…} value`, or `None` for a comment or a line not shaped so.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let end = line.find(['{', ' '])?;
    let name = &line[..end];
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let inner_after_comma = inner.strip_prefix(',').unwrap_or(inner);
            let eq = inner_after_comma.find('=')?;
            let key = &inner_after_comma[..eq];
            let mut chars = inner_after_comma[eq + 1..]
                .strip_prefix('"')?
                .char_indices();
            let mut value = String::new();
            let close = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            // Past the closing quote: `="` is two bytes, the value `close`.
            inner = &inner_after_comma[eq + 3 + close..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests;
