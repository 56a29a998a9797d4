//! Trace correlation (issue 8): trace context read from events, exemplars on what they count.

use std::collections::BTreeSet;

use crate::support::*;

/// The trace ids of every exemplar in an OpenMetrics exposition.
fn exemplar_traces(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.split_once(" # {trace_id=\"")?.1.split('"').next())
        .map(str::to_string)
        .collect()
}

/// Sampling keeps one trace in four, by trace id. Every exemplar must lead to a trace whose
/// logs were kept, for counters and for every histogram bucket, though the sampled-out traces
/// updated the same series later.
#[test]
fn issue8_exemplars_never_point_to_a_sampled_out_trace() {
    let tmp = TempDir::new("i8-sampled");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: t\nrules:\n  - name: calls\n    format: json\n    metrics:\n      \
         - {name: calls_total, type: counter, help: Calls., labels: {service: service}}\n      \
         - {name: call_seconds, type: histogram, help: Call time., value: ms, scale: 0.001, \
         labels: {service: service}, buckets: [0.005, 0.05, 0.5]}\n    reduce:\n      sample: 4\n",
    )
    .unwrap();
    let mut input = String::new();
    for t in 1..=400u32 {
        for span in 0..3u32 {
            input.push_str(&format!(
                "{{\"service\":\"s{}\",\"ms\":{},\"trace_id\":\"{:032x}\",\"span_id\":\"{:016x}\"}}\n",
                t % 3,
                (t * 7 + span * 13) % 900,
                u128::from(t) * 0x9e37_79b9_7f4a_7c15,
                t * 10 + span + 1
            ));
        }
    }
    std::fs::write(tmp.path("in.log"), input).unwrap();
    let (prom, kept) = (tmp.path("out.prom"), tmp.path("kept.log"));
    let o = logmill()
        .args([
            "replay",
            "-q",
            "--openmetrics",
            "--rules",
            tmp.path("rules.yaml").to_str().unwrap(),
            "--metrics-out",
            prom.to_str().unwrap(),
            "--logs-out",
            kept.to_str().unwrap(),
            tmp.path("in.log").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let kept = std::fs::read_to_string(kept).unwrap();
    let kept_traces: BTreeSet<&str> = kept
        .lines()
        .filter_map(|l| l.split("\"trace_id\":\"").nth(1)?.split('"').next())
        .collect();
    // About a quarter of the traces, each whole.
    assert!(
        (70..=130).contains(&kept_traces.len()),
        "{}",
        kept_traces.len()
    );
    assert_eq!(kept.lines().count(), 3 * kept_traces.len());
    let exposition = std::fs::read_to_string(prom).unwrap();
    let exemplars = exemplar_traces(&exposition);
    // 3 counters and 3 × 4 buckets; the lowest buckets' 2 or 3 events each all belong to
    // traces sampled out, so those buckets have no exemplar rather than a dropped trace's.
    assert_eq!(exemplars.len(), 12, "{exposition}");
    assert!(exposition.contains("call_seconds_bucket{service=\"s0\",le=\"0.005\"} 2\n"));
    for t in &exemplars {
        assert!(
            kept_traces.contains(t.as_str()),
            "exemplar {t} points to a trace whose logs were dropped"
        );
    }
}

/// Malformed ids of every kind are counted by source and reason, never used, and never make
/// an event a dead letter.
#[test]
fn issue8_invalid_trace_ids_are_counted_not_used() {
    let tmp = TempDir::new("i8-invalid");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: t\nrules:\n  - name: all\n    format: json\n    metrics:\n      \
         - {name: events_total, type: counter, help: Events.}\n",
    )
    .unwrap();
    let t = "4bf92f3577b34da6a3ce929d0e0e4736";
    let s = "00f067aa0ba902b7";
    let lines = [
        format!(r#"{{"traceparent":"00-{t}-{s}-01-extra"}}"#),
        format!(r#"{{"traceparent":"ff-{t}-{s}-01"}}"#),
        format!(r#"{{"traceparent":"00-{}-{s}-01"}}"#, t.to_uppercase()),
        format!(r#"{{"traceparent":"00-{}-{s}-01"}}"#, "0".repeat(32)),
        format!(r#"{{"traceparent":"00-{t}-{s}"}}"#),
        format!(r#"{{"b3":"{t}-{s}-x"}}"#),
        format!(r#"{{"X-B3-TraceId":"{}"}}"#, &t[..20]),
        format!(r#"{{"trace_id":"{}"}}"#, "z".repeat(32)),
        r#"{"dd":{"trace_id":"99999999999999999999"}}"#.to_string(),
        format!(r#"{{"trace_id":"{t}","span_id":"{}"}}"#, &s[..15]),
    ];
    std::fs::write(tmp.path("in.log"), lines.join("\n") + "\n").unwrap();
    let (prom, tel) = (tmp.path("out.prom"), tmp.path("tel.prom"));
    let o = logmill()
        .args([
            "replay",
            "-q",
            "--openmetrics",
            "--rules",
            tmp.path("rules.yaml").to_str().unwrap(),
            "--metrics-out",
            prom.to_str().unwrap(),
            "--telemetry-out",
            tel.to_str().unwrap(),
            tmp.path("in.log").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let tel = std::fs::read_to_string(tel).unwrap();
    let invalid: BTreeSet<&str> = tel
        .lines()
        .filter(|l| l.starts_with("logmill_trace_ids_invalid_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let want: BTreeSet<&str> = [
        r#"logmill_trace_ids_invalid_total{source="traceparent",reason="version"}"#,
        r#"logmill_trace_ids_invalid_total{source="traceparent",reason="uppercase"}"#,
        r#"logmill_trace_ids_invalid_total{source="traceparent",reason="all_zero"}"#,
        r#"logmill_trace_ids_invalid_total{source="traceparent",reason="format"}"#,
        r#"logmill_trace_ids_invalid_total{source="b3",reason="format"}"#,
        r#"logmill_trace_ids_invalid_total{source="b3",reason="length"}"#,
        r#"logmill_trace_ids_invalid_total{source="trace_id",reason="not_hex"}"#,
        r#"logmill_trace_ids_invalid_total{source="dd.trace_id",reason="decimal"}"#,
        r#"logmill_trace_ids_invalid_total{source="span_id",reason="length"}"#,
    ]
    .into();
    assert_eq!(invalid, want, "{tel}");
    assert!(
        tel.contains(r#"logmill_trace_ids_invalid_total{source="traceparent",reason="version"} 2"#)
    );
    assert!(
        tel.contains("logmill_events_dead_lettered_total 0"),
        "{tel}"
    );
    // Only the last event has a valid trace (its span id is not): one exemplar, no span.
    let exposition = std::fs::read_to_string(prom).unwrap();
    assert!(
        exposition.contains(&format!("events_total 10 # {{trace_id=\"{t}\"}} 1 ")),
        "{exposition}"
    );
}
