//! The traces generator checked against what it promises: formats, ids, time, containment,
//! the error share, and the truth read back from its lines.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::workload::truth::{is_id, traceparent};
use crate::workload::{Kind, generate, trace_truth};

fn lines(buf: &[u8]) -> Vec<&str> {
    std::str::from_utf8(buf).unwrap().lines().collect()
}

/// What a line says, read with the same field rules as the truth but kept whole here, so
/// that the tests below can check spans against each other.
#[derive(Debug)]
struct Seen<'a> {
    ms: u64,
    trace: &'a str,
    span: &'a str,
    parent: Option<&'a str>,
    level: &'a str,
    status: Option<u16>,
    duration_ms: Option<f64>,
}

fn seen(line: &str) -> Seen<'_> {
    let field = |key: &str| -> Option<&str> {
        if line.starts_with('{') {
            let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
            let v = &line[at..];
            match v.strip_prefix('"') {
                Some(s) => s.split('"').next(),
                None => v.split([',', '}']).next(),
            }
        } else {
            let at = line.find(&format!(" {key}="))? + key.len() + 2;
            line[at..].split(' ').next()
        }
    };
    let ts = &line[line.find("2024-").unwrap()..][..24];
    let (trace, span, parent) = if line.starts_with('{') {
        (
            field("trace_id").unwrap(),
            field("span_id").unwrap(),
            field("parent_span_id"),
        )
    } else {
        let (trace, span) = traceparent(field("traceparent").unwrap())
            .unwrap_or_else(|| panic!("invalid traceparent: {line}"));
        (trace, span, field("parent").filter(|p| *p != "-"))
    };
    Seen {
        ms: crate::extract::time::parse(ts, crate::extract::time::TimeFormat::Rfc3339).unwrap(),
        trace,
        span,
        parent,
        level: if line.starts_with('{') {
            field("level").unwrap()
        } else {
            line.split(' ').nth(1).unwrap()
        },
        status: field("status").map(|s| s.parse().unwrap()),
        duration_ms: field("duration_ms").map(|s| s.parse().unwrap()),
    }
}

#[test]
fn same_seed_same_bytes_and_exactly_n_lines() {
    let a = generate(Kind::Traces, 5_000, 7);
    assert_eq!(a, generate(Kind::Traces, 5_000, 7));
    assert_ne!(a, generate(Kind::Traces, 5_000, 8));
    for n in [0, 1, 2, 17, 1_000, 5_000] {
        let cut = generate(Kind::Traces, n, 7);
        assert_eq!(lines(&cut).len() as u64, n);
        // Cutting at N is cutting the one stream, not a different one.
        assert!(a.starts_with(&cut), "{n}");
    }
}

#[test]
fn timestamps_and_ids_are_well_formed() {
    let buf = generate(Kind::Traces, 20_000, 3);
    let (mut json, mut text, mut unsampled, mut previous) = (0, 0, 0, 0);
    for line in lines(&buf) {
        let ts = if line.starts_with('{') {
            json += 1;
            &line[7..31]
        } else {
            text += 1;
            unsampled += usize::from(line.contains("-00 parent="));
            &line[..24]
        };
        let b = ts.as_bytes();
        assert!(
            b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            }),
            "{line}"
        );
        let e = seen(line);
        assert!(e.ms >= previous, "out of order: {line}");
        previous = e.ms;
        assert!(is_id(e.trace, 32) && is_id(e.span, 16), "{line}");
        assert!(e.parent.is_none_or(|p| is_id(p, 16)), "{line}");
        assert_eq!(e.status.is_some(), e.duration_ms.is_some(), "{line}");
        // Only a failed completion is at level error, and every one is.
        let failed = e.status.is_some_and(|s| s >= 500);
        assert_eq!(e.level.eq_ignore_ascii_case("error"), failed, "{line}");
    }
    assert!(json > text && text > 500, "{json} JSON, {text} text");
    assert!(
        unsampled > 0 && unsampled < text / 4,
        "{unsampled} of {text}"
    );
    assert_eq!(
        &lines(&buf)[0][..38],
        r#"{"ts":"2024-03-10T12:00:00.000Z","leve"#
    );
}

#[test]
fn timestamps_cross_days_and_read_back() {
    let cases = [
        (EPOCH_MS, "2024-03-10T12:00:00.000Z"),
        (EPOCH_MS + 12 * 3_600_000 - 1, "2024-03-10T23:59:59.999Z"),
        (EPOCH_MS + 12 * 3_600_000 + 1, "2024-03-11T00:00:00.001Z"),
        (1_709_164_800_000, "2024-02-29T00:00:00.000Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (1_735_689_599_999, "2024-12-31T23:59:59.999Z"),
    ];
    for (ms, text) in cases {
        let mut out = Vec::new();
        timestamp(&mut out, ms);
        assert_eq!(std::str::from_utf8(&out).unwrap(), text);
        let back = crate::extract::time::parse(text, crate::extract::time::TimeFormat::Rfc3339);
        assert_eq!(back, Some(ms), "{text}");
    }
}

/// Every span's events lie within it, and every call within its caller, at the
/// timestamps' precision; a span's start is its completion minus its duration.
#[test]
fn calls_are_inside_their_callers() {
    let buf = generate(Kind::Traces, 30_000, 11);
    let all: Vec<Seen> = lines(&buf).into_iter().map(seen).collect();
    let mut spans: BTreeMap<(&str, &str), Vec<&Seen>> = BTreeMap::new();
    for e in &all {
        spans.entry((e.trace, e.span)).or_default().push(e);
    }
    // (first event, completion, duration) of completed spans.
    let interval = |events: &[&Seen]| {
        let end = events.iter().find(|e| e.duration_ms.is_some())?;
        Some((events[0].ms, end.ms, end.duration_ms?))
    };
    let mut checked = 0;
    for ((trace, _), events) in &spans {
        assert!((1..=3).contains(&events.len()), "{events:?}");
        let Some((first, end, duration)) = interval(events) else {
            continue;
        };
        assert_eq!(
            events.last().unwrap().ms,
            end,
            "the completion is the last event"
        );
        // Timestamps are truncated to the millisecond, durations are not.
        let start = end as f64 - duration;
        assert!(first as f64 >= start - 1.0, "{events:?}");
        let Some(parent) = events[0].parent else {
            continue;
        };
        let caller = &spans[&(*trace, parent)];
        let Some((caller_first, caller_end, caller_duration)) = interval(caller) else {
            continue;
        };
        assert!(duration < caller_duration, "{events:?} in {caller:?}");
        assert!(end < caller_end, "{events:?} in {caller:?}");
        assert!(
            first as f64 > caller_end as f64 - caller_duration,
            "{events:?} in {caller:?}"
        );
        if caller[0].duration_ms.is_none() {
            // The caller logged its start: a call starts at a later millisecond.
            assert!(first > caller_first, "{events:?} in {caller:?}");
        }
        checked += 1;
    }
    assert!(checked > 5_000, "{checked}");
}

/// Whole traces, every line of each: the truth computed from the lines equals what the
/// generator built.
#[test]
fn truth_from_lines_equals_the_traces_built() {
    let mut rng = Rng::new(5);
    let mut traces = Traces::new();
    let built: Vec<Trace> = (0..2_000).map(|_| traces.open(&mut rng)).collect();
    let mut buf = Vec::new();
    while let Some(Reverse(p)) = traces.pending.pop() {
        buf.extend_from_slice(&p.line);
    }
    let truth = trace_truth(buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()));
    assert_eq!(truth.skipped, 0);
    assert_eq!(truth.traces.len(), built.len());

    let mut edges: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
    let mut errors = 0;
    for trace in &built {
        let id = format!("{:016x}{:016x}", trace.id[0], trace.id[1]);
        let summary = &truth.traces[&id];
        let root = &trace.spans[0];
        let services: BTreeSet<&str> = trace
            .spans
            .iter()
            .map(|s| SERVICES[s.service].name)
            .collect();
        assert!((3..=6).contains(&services.len()), "{id}");
        assert_eq!(
            summary
                .services
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            services
        );
        assert_eq!(summary.services[0], "gateway");
        assert_eq!(summary.root_service.as_deref(), Some("gateway"));
        assert_eq!(summary.route.as_deref(), Some(trace.route));
        assert_eq!(summary.method.as_deref(), Some(trace.method));
        assert_eq!(summary.spans, trace.spans.len() as u64);
        let events: u64 = trace.spans.iter().map(|s| u64::from(s.events)).sum();
        assert_eq!(summary.events, events);
        assert_eq!(summary.error, root.failure.is_some());
        assert_eq!(summary.status.is_some_and(|s| s >= 500), summary.error);
        assert_eq!(summary.first_ms, root.start / TICKS_PER_MS);
        assert_eq!(summary.last_ms, root.end / TICKS_PER_MS);
        let duration = (root.end - root.start) as f64 / TICKS_PER_MS as f64;
        assert_eq!(summary.duration_ms, Some(duration));
        assert!(((summary.last_ms - summary.first_ms) as f64 - duration).abs() < 1.0);
        errors += u64::from(summary.error);

        for span in &trace.spans[1..] {
            let caller = &trace.spans[span.parent.unwrap()];
            let edge = edges
                .entry((
                    SERVICES[caller.service].name.into(),
                    SERVICES[span.service].name.into(),
                ))
                .or_default();
            edge.0 += 1;
            edge.1 += u64::from(span.failure.is_some());
            edge.2 += (span.end - span.start) as f64 / TICKS_PER_MS as f64;
            assert!(SERVICES[caller.service].calls.contains(&span.service));
        }
        // One failure starts the chain, and each failing span's caller fails too.
        let origins = trace
            .spans
            .iter()
            .filter(|s| matches!(s.failure, Some(Failure::Origin { .. })))
            .count();
        assert_eq!(origins, usize::from(root.failure.is_some()));
        for span in &trace.spans {
            if let (Some(_), Some(p)) = (span.failure, span.parent) {
                assert!(trace.spans[p].failure.is_some_and(|f| f.status() >= 500));
            }
        }
    }
    let truth_edges: BTreeMap<_, _> = truth
        .edges
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                (e.requests, e.failures, e.latencies_ms.iter().sum::<f64>()),
            )
        })
        .collect();
    assert_eq!(
        truth_edges.keys().collect::<Vec<_>>(),
        edges.keys().collect::<Vec<_>>()
    );
    for (key, (requests, failures, latency)) in &edges {
        let got = truth_edges[key];
        assert_eq!((got.0, got.1), (*requests, *failures), "{key:?}");
        assert!((got.2 - latency).abs() < 1e-6, "{key:?}");
    }
    assert!(edges.len() >= 8, "{edges:?}");
    // 100 expected; three standard deviations are ±29.
    assert!(
        (70..=130).contains(&errors),
        "{errors} of 2,000 traces failed"
    );
}

/// A stream cut at N lines: open traces have no duration, and edges count only what
/// completed, so a cut stream's edges are a part of the whole stream's.
#[test]
fn a_cut_stream_has_a_consistent_truth() {
    let whole = generate(Kind::Traces, 40_000, 9);
    let cut = generate(Kind::Traces, 10_000, 9);
    let truth = |buf: &[u8]| trace_truth(buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()));
    let (whole, cut) = (truth(&whole), truth(&cut));
    assert!(cut.traces.values().any(|t| t.duration_ms.is_none()));
    for (id, t) in &cut.traces {
        assert_eq!(
            t.root_service.as_deref(),
            Some("gateway"),
            "the root logs first"
        );
        if t.duration_ms.is_some() {
            assert_eq!(t, &whole.traces[id]);
        }
    }
    for (key, e) in &cut.edges {
        let w = &whole.edges[key];
        assert!(
            e.requests <= w.requests && e.failures <= w.failures,
            "{key:?}"
        );
    }
}

/// Several traces are open at once, their lines interleaved.
#[test]
fn traces_overlap() {
    let buf = generate(Kind::Traces, 20_000, 1);
    let truth = trace_truth(buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()));
    let mut ends: Vec<(u64, i32)> = truth
        .traces
        .values()
        .flat_map(|t| [(t.first_ms, 1), (t.last_ms + 1, -1)])
        .collect();
    ends.sort();
    let (mut open, mut most) = (0, 0);
    for (_, d) in ends {
        open += d;
        most = most.max(open);
    }
    assert!(most >= 8, "at most {most} traces open at once");
}
