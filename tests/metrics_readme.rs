//! The README's "Metrics" table and the daemon's `/metrics` cannot drift:
//! a daemon against the in-process simulator runs a pass that writes, then
//! `/metrics` is fetched over HTTP and every metric the table names must be
//! served with its `# TYPE` line (and its labels, where it has series), and
//! every metric served must be in the table.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keysync::watch;
use support::*;

const T: Duration = Duration::from_secs(20);

/// A metric as the README's table names it: `keysync_writes_total{kind,result}`.
#[derive(Debug)]
struct Named {
    name: String,
    labels: Vec<String>,
}

/// Every backticked `keysync_…` and `process_…` name in the first column
/// of the table under `### Metrics`.
fn readme_metrics() -> Vec<Named> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .expect("a \"### Metrics\" section in README.md");
    let section = section.split("\n#").next().unwrap_or(section);
    let mut out = Vec::new();
    for row in section
        .lines()
        .filter(|l| l.starts_with("| `keysync_") || l.starts_with("| `process_"))
    {
        let first = row.split('|').nth(1).expect("a first cell");
        for token in first.split('`').skip(1).step_by(2) {
            let (name, labels) = match token.split_once('{') {
                Some((n, l)) => (
                    n,
                    l.trim_end_matches('}')
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .collect(),
                ),
                None => (token, Vec::new()),
            };
            assert!(
                name.starts_with("keysync_") || name.starts_with("process_"),
                "{token} in {row}"
            );
            out.push(Named {
                name: name.to_string(),
                labels,
            });
        }
    }
    out
}

/// `# TYPE` lines: family → type.
fn types(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect()
}

/// The family a README name is served under: a counter's without `_total`.
fn family<'a>(types: &BTreeMap<&'a str, &'a str>, name: &str) -> Option<(&'a str, &'a str)> {
    if let Some((f, t)) = types.get_key_value(name) {
        return Some((f, t));
    }
    let base = name.strip_suffix("_total")?;
    types
        .get_key_value(base)
        .filter(|(_, t)| **t == "counter")
        .map(|(f, t)| (*f, *t))
}

/// The label names of each sample line of `name` (a histogram's
/// `_bucket`, `_sum` and `_count` lines, without `le`).
fn sample_labels(text: &str, name: &str) -> Vec<BTreeSet<String>> {
    let names = [
        name.to_string(),
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    ];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let end = l.find(['{', ' '])?;
            names.contains(&l[..end].to_string()).then_some(&l[end..])
        })
        .map(|rest| match rest.strip_prefix('{') {
            Some(labels) => labels
                .split("\",")
                .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_string()))
                .filter(|k| k != "le")
                .collect(),
            None => BTreeSet::new(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_readme_names_is_served_with_its_type_and_no_other() {
    let named = readme_metrics();
    assert!(named.len() >= 20, "the README's table read as {named:?}");

    let sim = sim(16).await;
    let (_d, dir) = tmp();
    let file = dir.join("v.pubkeys");
    std::fs::write(&file, pubkeys_text(&sim, [1, 2])).unwrap();
    let mut c = watch_common(&sim, None);
    c.pubkeys_file = Some(file);
    let daemon = watch::start(settings(watch_args(c, &dir.join("state"), true, 10)))
        .await
        .unwrap();
    eventually("a pass that writes", T, || {
        active(&sim) == vec![1, 2]
            && daemon.metrics.get(
                "keysync_writes_total",
                &[("kind", "assign"), ("result", "ok")],
            ) >= 2.0
            && daemon
                .metrics
                .get("keysync_reconciles_total", &[("result", "ok")])
                >= 1.0
    })
    .await;

    let resp = reqwest::get(format!("http://{}/metrics", daemon.listen))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let types = types(&text);

    // README → served: each name with its `# TYPE` line, and each series
    // with (at least) the labels the README gives it.
    for n in &named {
        let Some((fam, kind)) = family(&types, &n.name) else {
            panic!(
                "{} is in the README but /metrics has no `# TYPE` line for it:\n{text}",
                n.name
            );
        };
        assert!(
            !n.name.ends_with("_total") || kind == "counter",
            "{} is a {kind}",
            n.name
        );
        if n.name.ends_with("_seconds") && kind == "histogram" {
            assert_eq!(fam, n.name);
        }
        for labels in sample_labels(&text, &n.name) {
            for l in &n.labels {
                assert!(
                    labels.contains(l),
                    "a series of {} lacks the label {l} the README gives it: {labels:?}",
                    n.name
                );
            }
        }
    }

    // Served → README: nothing is served that the README does not name.
    let in_readme: BTreeSet<&str> = named.iter().map(|n| n.name.as_str()).collect();
    for (fam, kind) in &types {
        let total = format!("{fam}_total");
        assert!(
            in_readme.contains(fam) || (*kind == "counter" && in_readme.contains(total.as_str())),
            "/metrics serves {fam} ({kind}), which the README's table does not name"
        );
    }

    // The pass's own series: a write, its trigger, its remote calls.
    for series in [
        "keysync_writes_total{kind=\"assign\",result=\"ok\"} 2",
        "keysync_triggers_total{reason=\"startup\"} 1",
        "keysync_trigger_to_apply_seconds_count 1",
        "keysync_remote_request_seconds_bucket{party=\"console\",call=",
        "keysync_remote_requests_total{party=\"console\",call=",
        "keysync_planned_changes{kind=\"assign\"} ",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
    daemon.stop().await.unwrap();
}
