//! Prometheus metrics: a tiny registry of counters, gauges and histograms
//! rendered in the text exposition format.
//!
//! Owns metric names, help texts and rendering. Callers record through
//! [`Metrics`] (passed by `Arc`, never global). Never holds a secret: label
//! values are party names, call names, results and reasons only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram bucket bounds in seconds: 5 ms … 60 s.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Every metric keysync exposes, with its type and help text.
const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "keysync_desired_validators",
        "gauge",
        "Validators in the desired set after the last reconcile.",
    ),
    (
        "keysync_assigned_validators",
        "gauge",
        "Active assignments in the registry snapshot.",
    ),
    (
        "keysync_reconciles_total",
        "counter",
        "Reconcile passes by result (ok, error).",
    ),
    (
        "keysync_writes_total",
        "counter",
        "Registry writes by kind (register, assign, unassign) and result; unassigns also by reason (withdrawn, not_in_inputs, registry_drift).",
    ),
    (
        "keysync_held_deletes",
        "gauge",
        "Unassigns held back, for any reason (alert when > 0); see keysync_held_deletes_by_reason.",
    ),
    (
        "keysync_held_deletes_by_reason",
        "gauge",
        "Unassigns held back, by reason: max_deletes (the guardrail), input_not_read (an input never parsed), beacon_not_synced (no synced beacon node confirmed them).",
    ),
    (
        "keysync_planned_changes",
        "gauge",
        "Changes the last plan wanted, by kind (assign, unassign); in shadow mode, what --apply would write.",
    ),
    (
        "keysync_beacon_synced",
        "gauge",
        "1 when the beacon node the last pass used was synced (removals need it), 0 when not.",
    ),
    (
        "keysync_beacon_head_lag_slots",
        "gauge",
        "Slots the beacon node's head trailed the wall clock at the last check.",
    ),
    (
        "keysync_store_rolled_back",
        "gauge",
        "1 when the state store could not prove at start that it was current and was moved aside and rebuilt empty (inputs read afresh); see the error log.",
    ),
    (
        "keysync_source_errors_total",
        "counter",
        "Input files that failed to parse (last good content kept).",
    ),
    (
        "keysync_event_stream_connected",
        "gauge",
        "1 while the beacon event stream is connected.",
    ),
    (
        "keysync_event_stream_reconnects_total",
        "counter",
        "Event stream (re)connections.",
    ),
    (
        "keysync_last_event_age_seconds",
        "gauge",
        "Seconds since the last event or keep-alive from the beacon node.",
    ),
    (
        "keysync_event_stream_ended_total",
        "counter",
        "Event stream sessions ended, by reason (silent, closed, too_large, http_status, connection, protocol).",
    ),
    (
        "keysync_events_invalid_total",
        "counter",
        "Beacon events skipped because their data did not parse, by topic.",
    ),
    (
        "keysync_events_total",
        "counter",
        "Beacon events received by topic.",
    ),
    (
        "keysync_triggers_total",
        "counter",
        "Reconcile triggers by reason.",
    ),
    (
        "keysync_trigger_to_apply_seconds",
        "histogram",
        "From the first trigger of a pass to the end of its last registry write.",
    ),
    (
        "keysync_remote_request_seconds",
        "histogram",
        "Remote request latency by party and call.",
    ),
    (
        "keysync_remote_requests_total",
        "counter",
        "Remote requests by party, call and outcome.",
    ),
    (
        "keysync_reconcile_seconds",
        "histogram",
        "Duration of a reconcile pass.",
    ),
    (
        "keysync_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful reconcile.",
    ),
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    scalars: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The process's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Metrics with every series an alert keys on present at 0, so that
    /// `increase()` sees the first error instead of a series appearing.
    pub fn with_zeroes() -> Self {
        let m = Self::default();
        for result in ["ok", "error"] {
            m.add("keysync_reconciles_total", &[("result", result)], 0.0);
            for kind in ["register", "assign"] {
                m.add(
                    "keysync_writes_total",
                    &[("kind", kind), ("result", result)],
                    0.0,
                );
            }
            for reason in ["withdrawn", "not_in_inputs", "registry_drift"] {
                m.add(
                    "keysync_writes_total",
                    &[("kind", "unassign"), ("result", result), ("reason", reason)],
                    0.0,
                );
            }
        }
        m.add("keysync_source_errors_total", &[], 0.0);
        m.add("keysync_event_stream_reconnects_total", &[], 0.0);
        m.set("keysync_held_deletes", &[], 0.0);
        for reason in [
            "max_deletes",
            "empty_registry",
            "input_not_read",
            "beacon_not_synced",
        ] {
            m.set("keysync_held_deletes_by_reason", &[("reason", reason)], 0.0);
        }
        m
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)]) {
        self.add(name, l, 1.0);
    }

    pub fn add(&self, name: &'static str, l: &[(&'static str, &str)], by: f64) {
        self.with(|i| *i.scalars.entry((name, labels(l))).or_insert(0.0) += by);
    }

    pub fn set(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        self.with(|i| {
            i.scalars.insert((name, labels(l)), v);
        });
    }

    /// The sum over every series of `name` that carries the labels `l`
    /// (with others or not): `&[]` sums them all, as a PromQL `sum()` would.
    pub fn get(&self, name: &'static str, l: &[(&'static str, &str)]) -> f64 {
        let want = labels(l);
        self.with(|i| {
            i.scalars
                .range((name, Vec::new())..)
                .take_while(|((n, _), _)| *n == name)
                .filter(|((_, have), _)| want.iter().all(|w| have.contains(w)))
                .map(|(_, v)| *v)
                .sum()
        })
    }

    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], seconds: f64) {
        self.with(|i| {
            let h = i.histograms.entry((name, labels(l))).or_default();
            for (bound, c) in BUCKETS.iter().zip(h.counts.iter_mut()) {
                if seconds <= *bound {
                    *c += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// The Prometheus text exposition of every metric recorded so far.
    pub fn render(&self) -> String {
        self.with(|i| {
            let mut out = String::new();
            for (name, kind, help) in CATALOGUE {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for ((n, l), v) in i.scalars.range((*name, Vec::new())..) {
                    if n != name {
                        break;
                    }
                    let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
                }
                for ((n, l), h) in i.histograms.range((*name, Vec::new())..) {
                    if n != name {
                        break;
                    }
                    for (bound, c) in BUCKETS.iter().zip(h.counts.iter()) {
                        let le = bound.to_string();
                        let _ = writeln!(out, "{name}_bucket{} {c}", fmt_labels(l, Some(&le)));
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(l, Some("+Inf")),
                        h.count
                    );
                    let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
                }
            }
            out
        })
    }
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.inc("keysync_reconciles_total", &[("result", "ok")]);
        m.inc("keysync_reconciles_total", &[("result", "ok")]);
        m.set("keysync_held_deletes", &[], 3.0);
        m.observe("keysync_trigger_to_apply_seconds", &[], 0.2);
        let text = m.render();
        assert!(
            text.contains("keysync_reconciles_total{result=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("keysync_held_deletes 3\n"));
        assert!(text.contains("keysync_trigger_to_apply_seconds_bucket{le=\"0.25\"} 1\n"));
        assert!(text.contains("keysync_trigger_to_apply_seconds_bucket{le=\"0.1\"} 0\n"));
        assert!(text.contains("keysync_trigger_to_apply_seconds_count 1\n"));
    }

    #[test]
    fn alerting_series_exist_at_zero_from_the_start() {
        let text = Metrics::with_zeroes().render();
        for series in [
            "keysync_reconciles_total{result=\"error\"} 0\n",
            "keysync_source_errors_total 0\n",
            "keysync_held_deletes_by_reason{reason=\"beacon_not_synced\"} 0\n",
            "keysync_writes_total{kind=\"unassign\",result=\"error\",reason=\"withdrawn\"} 0\n",
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }
}
