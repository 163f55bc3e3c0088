//! Tests of the parent module.

use super::*;

#[test]
fn renders_counters_gauges_and_histograms() {
    let m = Metrics::new();
    let ok = ResultLabels {
        result: Outcome::Ok,
    };
    m.reconciles.get_or_create(&ok).inc();
    m.reconciles.get_or_create(&ok).inc();
    m.held_deletes.set(3);
    m.trigger_to_apply_seconds.observe(0.2);
    m.writes
        .get_or_create(&WriteLabels::new(
            Write::Unassign(UnassignReason::Withdrawn),
            Outcome::Ok,
        ))
        .inc_by(2);
    m.remote_request_seconds
        .get_or_create(&RequestLabels {
            party: "console",
            call: "POST assign",
        })
        .observe(1.5);
    let text = m.render();
    for line in [
        "# TYPE keysync_reconciles counter\n",
        "keysync_reconciles_total{result=\"ok\"} 2\n",
        "# TYPE keysync_held_deletes gauge\n",
        "keysync_held_deletes 3\n",
        "# TYPE keysync_trigger_to_apply_seconds histogram\n",
        "keysync_trigger_to_apply_seconds_bucket{le=\"0.25\"} 1\n",
        "keysync_trigger_to_apply_seconds_bucket{le=\"0.1\"} 0\n",
        "keysync_trigger_to_apply_seconds_bucket{le=\"+Inf\"} 1\n",
        "keysync_trigger_to_apply_seconds_count 1\n",
        "keysync_writes_total{kind=\"unassign\",result=\"ok\",reason=\"withdrawn\"} 2\n",
        "keysync_remote_request_seconds_bucket{party=\"console\",call=\"POST assign\",le=\"1.0\"} 0\n",
        "keysync_remote_request_seconds_bucket{party=\"console\",call=\"POST assign\",le=\"2.5\"} 1\n",
        "# HELP keysync_reconcile_seconds Duration of a reconcile pass.\n",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(!text.contains(".."), "one full stop per help text: {text}");
    assert_eq!(m.get("keysync_reconciles_total", &[("result", "ok")]), 2.0);
    assert_eq!(m.get("keysync_held_deletes", &[]), 3.0);
    assert_eq!(m.get("keysync_trigger_to_apply_seconds_count", &[]), 1.0);
}

#[test]
fn every_metric_is_described_before_it_has_a_series() {
    let text = Metrics::new().render();
    // keysync's own (the process_* family is read at each scrape).
    let types = text
        .lines()
        .filter(|l| l.starts_with("# TYPE keysync_"))
        .count();
    let helps = text
        .lines()
        .filter(|l| l.starts_with("# HELP keysync_"))
        .count();
    assert_eq!((types, helps), (30, 30), "{text}");
    assert!(text.contains("# TYPE keysync_events counter\n"), "{text}");
    assert!(text.contains("# TYPE keysync_remote_request_seconds histogram\n"));
}

#[test]
fn alerting_series_exist_at_zero_from_the_start() {
    let m = Metrics::with_zeroes();
    let text = m.render();
    for series in [
        "keysync_reconciles_total{result=\"error\"} 0\n",
        "keysync_reconciles_total{result=\"ok\"} 0\n",
        "keysync_source_errors_total 0\n",
        "keysync_event_stream_reconnects_total 0\n",
        "keysync_held_deletes 0\n",
        "keysync_held_deletes_by_reason{reason=\"beacon_not_synced\"} 0\n",
        "keysync_held_deletes_by_reason{reason=\"empty_registry\"} 0\n",
        "keysync_writes_total{kind=\"register\",result=\"error\"} 0\n",
        "keysync_writes_total{kind=\"assign\",result=\"ok\"} 0\n",
        "keysync_writes_total{kind=\"unassign\",result=\"error\",reason=\"withdrawn\"} 0\n",
        "keysync_writes_total{kind=\"unassign\",result=\"ok\",reason=\"registry_drift\"} 0\n",
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
    // Register and assign carry no reason label, not an empty one.
    assert!(!text.contains("reason=\"\""), "{text}");
    let writes = text
        .lines()
        .filter(|l| l.starts_with("keysync_writes_total{"))
        .count();
    assert_eq!(writes, 2 * (2 + 3), "{text}");
    // Nothing is there before it happens.
    assert!(!text.contains("keysync_events_total{"), "{text}");
    assert!(!Metrics::new()
        .render()
        .contains("keysync_reconciles_total{"));
}

#[test]
fn get_sums_the_series_carrying_the_labels_asked_for() {
    let m = Metrics::with_zeroes();
    let add = |w, r, n| m.writes.get_or_create(&WriteLabels::new(w, r)).inc_by(n);
    add(Write::Assign, Outcome::Ok, 5);
    add(Write::Unassign(UnassignReason::NotInInputs), Outcome::Ok, 2);
    add(Write::Unassign(UnassignReason::Withdrawn), Outcome::Ok, 1);
    add(
        Write::Unassign(UnassignReason::Withdrawn),
        Outcome::Error,
        1,
    );
    let get = |l: &[(&str, &str)]| m.get("keysync_writes_total", l);
    assert_eq!(get(&[]), 9.0);
    assert_eq!(get(&[("result", "ok")]), 8.0);
    assert_eq!(get(&[("kind", "unassign")]), 4.0);
    assert_eq!(get(&[("kind", "unassign"), ("reason", "withdrawn")]), 2.0);
    assert_eq!(get(&[("kind", "register")]), 0.0);
    assert_eq!(get(&[("kind", "nonsense")]), 0.0);
    assert_eq!(m.get("keysync_no_such_metric", &[]), 0.0);
    m.last_event_age_seconds.set(1.5);
    assert_eq!(m.get("keysync_last_event_age_seconds", &[]), 1.5);
}

#[test]
fn a_buckets_le_label_comes_after_the_familys() {
    assert_eq!(
        le_last(r#"x_seconds_bucket{le="0.5",party="console",call="a}\"b"} 3"#).as_deref(),
        Some(r#"x_seconds_bucket{party="console",call="a}\"b",le="0.5"} 3"#)
    );
    assert_eq!(le_last(r#"x_seconds_bucket{le="+Inf"} 3"#), None);
    assert_eq!(le_last(r#"x_seconds_count{party="console"} 3"#), None);
    assert_eq!(le_last("x_total 3"), None);
}

#[test]
fn parses_escaped_label_values() {
    let s = parse_sample(r#"x_total{a="q\"u\\o,te}",b="2"} 7"#).expect("a sample");
    assert_eq!(s.name, "x_total");
    assert!(s.has("a", "q\"u\\o,te}") && s.has("b", "2"));
    assert_eq!(s.value, 7.0);
    assert!(parse_sample("# EOF").is_none());
    let s = parse_sample("y 6.0").expect("a sample");
    assert_eq!((s.name, s.value, s.labels.len()), ("y", 6.0, 0));
}

#[test]
fn build_info_and_the_process_metrics_are_served() {
    let text = Metrics::new().render();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    assert_eq!(
        line("keysync_build_info{").as_deref(),
        Some(&*format!(
            "keysync_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ))
    );
    if std::path::Path::new("/proc/self/statm").exists() {
        for name in [
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "process_cpu_seconds_total ",
        ] {
            let l = line(name).unwrap_or_else(|| panic!("{name}missing:\n{text}"));
            let v: f64 = l[name.len()..].trim().parse().unwrap();
            assert!(v >= 0.0, "{l}");
        }
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}
