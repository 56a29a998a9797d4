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

/// `logmill gen traces`, through replay with summaries on: every trace that completed in the
/// stream has exactly the summary its lines say (services in order, root and route, times,
/// duration, events, spans, outcome), the service graph's edges equal the ground truth's, and
/// the rules reading the summaries count exactly that.
#[test]
fn issue8_trace_summaries_and_service_graph_match_the_ground_truth() {
    let tmp = TempDir::new("i8-summaries");
    let input = tmp.path("in.log");
    let o = logmill().args(["gen", "traces", "30000"]).output().unwrap();
    assert!(o.status.success());
    std::fs::write(&input, &o.stdout).unwrap();
    let truth = logmill::workload::trace_truth(o.stdout.split(|b| *b == b'\n'));
    let (out, prom) = (tmp.path("traces.jsonl"), tmp.path("out.prom"));
    let o = logmill()
        .current_dir(repo())
        .args([
            "replay",
            "--rules",
            "tests/data/traces/rules.yaml",
            "--traces-out",
            out.to_str().unwrap(),
            "--metrics-out",
            prom.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("matched no event"), "{}", stderr(&o));
    let text = std::fs::read_to_string(out).unwrap();
    let field = |l: &str, k: &str| -> String {
        let at = l
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {l}"))
            + k.len()
            + 3;
        let rest = &l[at..];
        if let Some(s) = rest.strip_prefix('"') {
            s[..s.find('"').unwrap()].to_string()
        } else if rest.starts_with('[') {
            rest[..=rest.find(']').unwrap()].to_string()
        } else {
            rest[..rest.find([',', '}']).unwrap()].to_string()
        }
    };
    let mut summaries = 0;
    let mut completed = 0;
    for l in text
        .lines()
        .filter(|l| l.starts_with("{\"logmill\":\"trace\""))
    {
        summaries += 1;
        let t = &truth.traces[&field(l, "trace_id")];
        assert_eq!(field(l, "events"), t.events.to_string(), "{l}");
        assert_eq!(field(l, "spans"), t.spans.to_string(), "{l}");
        assert_eq!(field(l, "first_ms"), t.first_ms.to_string(), "{l}");
        assert_eq!(field(l, "last_ms"), t.last_ms.to_string(), "{l}");
        let services: Vec<String> = t.services.iter().map(|s| format!("\"{s}\"")).collect();
        assert_eq!(
            field(l, "services"),
            format!("[{}]", services.join(",")),
            "{l}"
        );
        assert_eq!(field(l, "outcome") == "error", t.error, "{l}");
        if let Some(d) = t.duration_ms {
            completed += 1;
            assert_eq!(field(l, "duration_ms").parse::<f64>().unwrap(), d, "{l}");
            assert_eq!(Some(field(l, "root_service")), t.root_service, "{l}");
            assert_eq!(Some(field(l, "route")), t.route, "{l}");
        }
    }
    assert_eq!(summaries, truth.traces.len());
    assert!(completed > summaries * 9 / 10, "{completed} of {summaries}");
    // The service graph, edge by edge: requests, failures and the latencies' sum.
    let mut edges: std::collections::BTreeMap<(String, String), (u64, u64, f64)> =
        Default::default();
    for l in text
        .lines()
        .filter(|l| l.starts_with("{\"logmill\":\"edge\""))
    {
        let e = edges
            .entry((field(l, "client"), field(l, "server")))
            .or_default();
        e.0 += 1;
        e.1 += u64::from(field(l, "failed") == "true");
        e.2 += field(l, "duration_ms").parse::<f64>().unwrap();
    }
    assert_eq!(edges.len(), truth.edges.len());
    for ((client, server), want) in &truth.edges {
        let got = edges[&(client.clone(), server.clone())];
        assert_eq!(
            (got.0, got.1),
            (want.requests, want.failures),
            "{client} → {server}"
        );
        let sum: f64 = want.latencies_ms.iter().sum();
        assert!(
            (got.2 - sum).abs() < 1e-6 * sum.max(1.0),
            "{client} → {server}"
        );
    }
    // The rules over the summaries count the same.
    let prom = std::fs::read_to_string(prom).unwrap();
    let total = |name: &str| -> f64 {
        prom.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(total("traces_total{") as usize, summaries);
    let requests: u64 = truth.edges.values().map(|e| e.requests).sum();
    let failures: u64 = truth.edges.values().map(|e| e.failures).sum();
    assert_eq!(total("service_graph_requests_total{") as u64, requests);
    assert_eq!(
        total("service_graph_failed_requests_total{") as u64,
        failures
    );
}

/// `logmill replay ARGS --metrics-out /dev/null -` fed `n` lines made by `line(i)` as it reads
/// them: its summary (stderr) and its peak resident memory in MiB.
fn replay_streamed(
    args: &[&str],
    n: u64,
    line: impl Fn(u64) -> String + Send + 'static,
) -> (String, f64) {
    let mut child = logmill()
        .arg("replay")
        .args(args)
        .args(["--metrics-out", "/dev/null", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(&mut stdin);
        for i in 0..n {
            writeln!(out, "{}", line(i)).unwrap();
        }
    });
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(crate::reduction::peak_mib(pid));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (stderr(&out), peak)
}

/// A million traces open at once (each a single event, none ever quiet within the window):
/// the gatherer stays at its cap, summarising the quietest early and counting it, and memory
/// does not grow with the traces.
#[test]
fn issue8_a_million_open_traces_stay_within_the_cap() {
    let tmp = TempDir::new("i8-flood");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: t\nrules:\n  - name: all\n    format: logfmt\n    trace: {summaries: true}\n    metrics:\n      \
         - {name: events_total, type: counter, help: Events.}\n",
    )
    .unwrap();
    let run_with = |n: u64| -> (String, f64) {
        let rules = tmp.path("rules.yaml");
        let args = [
            "--rules",
            rules.to_str().unwrap(),
            "--max-open-traces",
            "10000",
            "--trace-window",
            "1h",
        ];
        replay_streamed(&args, n, |i| {
            format!(
                "ts={} service=s{} trace_id={:032x} span_id={:016x} msg=hello",
                1_710_072_000_000 + i,
                i % 7,
                u128::from(i) + 1,
                i + 1
            )
        })
    };
    let (small, small_peak) = run_with(200_000);
    assert!(
        small.contains("200000 trace summaries (190000 closed early at the cap)"),
        "{small}"
    );
    let (big, peak) = run_with(1_000_000);
    assert!(
        big.contains(
            "1000000 event(s) gathered, 1000000 trace summaries (990000 closed early at the cap)"
        ),
        "{big}"
    );
    assert!(
        peak < small_peak * 1.5 + 20.0,
        "peak resident {peak:.0} MiB for a million traces, {small_peak:.0} MiB for 200,000"
    );
}

/// The trace id of a `gen traces` line, JSON or text.
fn trace_of(line: &str) -> Option<&str> {
    let at = line
        .find("\"trace_id\":\"")
        .map(|i| i + 12)
        .or_else(|| line.find("traceparent=").map(|i| i + 15))?;
    line.get(at..at + 32)
}

/// Trace-aware retention through replay: one trace in ten is sampled by its id, and every
/// trace with an error is kept whole though its error came after events that sampling would
/// have dropped (they were held, then released). No trace is kept in part, and the share of
/// the others kept is within the binomial bound of one in ten.
#[test]
fn issue8_error_traces_are_kept_whole_and_the_rest_sampled_by_trace() {
    let tmp = TempDir::new("i8-retain");
    let input = tmp.path("in.log");
    let o = logmill().args(["gen", "traces", "60000"]).output().unwrap();
    assert!(o.status.success());
    std::fs::write(&input, &o.stdout).unwrap();
    let truth = logmill::workload::trace_truth(o.stdout.split(|b| *b == b'\n'));
    let rules = tmp.path("retain.yaml");
    let base = std::fs::read_to_string(repo().join("tests/data/traces/rules.yaml")).unwrap();
    // The two services' rules, reduced: sampled by trace, error traces kept whole.
    let reduced = base.replace(
        "    trace: {summaries: true}\n",
        "    trace: {summaries: true}\n    reduce: {sample: 10, keep_traces: {wait: 30s}}\n",
    );
    let reduced = reduced.replace(
        "    trace: {summaries: true, parent: parent}\n",
        "    trace: {summaries: true, parent: parent}\n    reduce: {sample: 10, keep_traces: {wait: 30s}}\n",
    );
    assert_eq!(reduced.matches("keep_traces").count(), 2);
    std::fs::write(&rules, reduced).unwrap();
    let kept = tmp.path("kept.log");
    let o = logmill()
        .args([
            "replay",
            "--rules",
            rules.to_str().unwrap(),
            "--logs-out",
            kept.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&kept).unwrap();
    let mut per_trace: std::collections::BTreeMap<&str, u64> = Default::default();
    for l in text.lines() {
        let t = trace_of(l).unwrap_or_else(|| panic!("a kept line without a trace: {l}"));
        *per_trace.entry(t).or_default() += 1;
    }
    let (mut errors, mut others, mut others_kept) = (0u64, 0u64, 0u64);
    for (id, t) in &truth.traces {
        let kept = per_trace.get(id.as_str()).copied().unwrap_or(0);
        if t.error {
            errors += 1;
            assert_eq!(kept, t.events, "error trace {id} kept in part");
        } else {
            others += 1;
            assert!(
                kept == 0 || kept == t.events,
                "trace {id}: {kept} of {}",
                t.events
            );
            others_kept += u64::from(kept > 0);
        }
    }
    assert!(errors > 200, "{errors} error traces");
    // One in ten, within 4.5 standard deviations of the binomial.
    let (n, p) = (others as f64, 0.1);
    let sd = (n * p * (1.0 - p)).sqrt();
    assert!(
        (others_kept as f64 - n * p).abs() < 4.5 * sd,
        "{others_kept} of {others} kept"
    );
    let lines = text.lines().count() as u64;
    let all: u64 = truth.traces.values().map(|t| t.events).sum();
    assert!(lines < all / 2, "{lines} of {all} lines kept");
}

/// A million traces held at once by `keep_traces` (each a single event, sampled out, never
/// quiet within the wait): the held bytes stay at their cap, the oldest traces are dropped
/// early and counted, every event is accounted for, and memory does not grow with the traces.
#[test]
fn issue8_a_million_held_traces_stay_within_the_held_bytes_cap() {
    let tmp = TempDir::new("i8-held-flood");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: t\nrules:\n  - name: all\n    format: logfmt\n    metrics:\n      \
         - {name: events_total, type: counter, help: Events.}\n    reduce:\n      \
         time: ts\n      sample: 1000000\n      keep_traces: {wait: 1h}\n",
    )
    .unwrap();
    let run_with = |n: u64| -> (String, f64) {
        let rules = tmp.path("rules.yaml");
        let args = ["--rules", rules.to_str().unwrap(), "--max-held-mib", "8"];
        replay_streamed(&args, n, |i| {
            format!(
                "ts={} level=info trace_id={:032x} msg=\"held until its trace is decided\"",
                1_710_072_000_000 + i,
                u128::from(i) * 0x9e37_79b9 + 1,
            )
        })
    };
    let early = |report: &str| -> u64 {
        let at = report.find(" dropped, ").expect("a retention report") + 10;
        report[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let (small, small_peak) = run_with(200_000);
    let (big, peak) = run_with(1_000_000);
    for (report, n) in [(&small, 200_000u64), (&big, 1_000_000)] {
        assert!(
            report.contains(&format!("reduction: {n} events in")),
            "{report}"
        );
        // Every trace is decided: early at the cap, or at the end of the input.
        let e = early(report);
        assert!(e > n / 2 && e < n, "{e} of {n} early\n{report}");
        // Every event is kept (the odd trace sampling keeps) or dropped by sampling.
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with("t/all: "))
            .unwrap_or_else(|| panic!("{report}"));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(numbers[0], n, "{line}");
        assert_eq!(
            numbers[1] + numbers.get(2).copied().unwrap_or(0),
            n,
            "{line}"
        );
        assert!(numbers[1] < 10, "{line}");
    }
    assert!(
        peak < small_peak * 1.5 + 20.0,
        "peak resident {peak:.0} MiB for a million held traces, {small_peak:.0} MiB for 200,000"
    );
}
