//! The ground truth of a traces workload, computed from its lines alone, so that a test can
//! hold per-trace summaries and the service graph of any pipeline against it. The rules are in
//! [`traces`](super::traces); the two line formats are parsed here by hand, as they are fixed
//! and never need escaping.

use std::collections::BTreeMap;

use crate::extract::time::{TimeFormat, parse as parse_time};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceTruth {
    /// By trace id (32 lowercase hex).
    pub traces: BTreeMap<String, TraceSummary>,
    /// By (caller's service, callee's service).
    pub edges: BTreeMap<(String, String), EdgeStats>,
    /// Lines that are not trace events: blank, another format, an invalid id or traceparent.
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// In the order of their first event's time, ties by name (what the first millisecond
    /// says; the order lines of one millisecond arrive in does not).
    pub services: Vec<String>,
    /// Service, route and method of the span without a parent.
    pub root_service: Option<String>,
    pub route: Option<String>,
    pub method: Option<String>,
    /// The root's status, once it has completed.
    pub status: Option<u16>,
    /// Some event is at level `error`.
    pub error: bool,
    pub events: u64,
    /// Distinct span ids.
    pub spans: u64,
    /// Milliseconds since the Unix epoch of the first and last events.
    pub first_ms: u64,
    pub last_ms: u64,
    /// The root's `duration_ms`; `None` while the root is open (a stream cut short).
    pub duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeStats {
    /// Child spans that completed.
    pub requests: u64,
    /// Those that completed with status 500 or more.
    pub failures: u64,
    /// Their `duration_ms`, in the order of their completions in the stream.
    pub latencies_ms: Vec<f64>,
}

/// One line of the traces workload, borrowed from it.
#[derive(Debug, Clone, PartialEq)]
struct Event<'a> {
    ms: u64,
    error: bool,
    service: &'a str,
    trace: &'a str,
    span: &'a str,
    parent: Option<&'a str>,
    route: Option<&'a str>,
    method: Option<&'a str>,
    status: Option<u16>,
    duration_ms: Option<f64>,
}

#[derive(Default)]
struct SpanState {
    service: String,
    parent: Option<String>,
    /// Status and duration of its completion.
    completion: Option<(Option<u16>, f64)>,
}

/// Per-trace summaries and service-graph edges of a traces workload (lines with or without
/// their newline). Deterministic: the result depends only on the lines and their order.
pub fn trace_truth<'a>(lines: impl Iterator<Item = &'a [u8]>) -> TraceTruth {
    let mut truth = TraceTruth::default();
    let mut spans: BTreeMap<(String, String), SpanState> = BTreeMap::new();
    let mut completions = Vec::new();
    // The first time of each trace's services, beside `services`.
    let mut service_first: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in lines {
        let Some(e) = std::str::from_utf8(line).ok().and_then(event) else {
            truth.skipped += 1;
            continue;
        };
        let summary = truth
            .traces
            .entry(e.trace.to_string())
            .or_insert_with(|| TraceSummary {
                services: Vec::new(),
                root_service: None,
                route: None,
                method: None,
                status: None,
                error: false,
                events: 0,
                spans: 0,
                first_ms: e.ms,
                last_ms: e.ms,
                duration_ms: None,
            });
        summary.events += 1;
        summary.error |= e.error;
        summary.first_ms = summary.first_ms.min(e.ms);
        summary.last_ms = summary.last_ms.max(e.ms);
        let firsts = service_first.entry(e.trace.to_string()).or_default();
        match summary.services.iter().position(|s| s == e.service) {
            Some(i) => firsts[i] = firsts[i].min(e.ms),
            None => {
                summary.services.push(e.service.to_string());
                firsts.push(e.ms);
            }
        }
        if e.parent.is_none() {
            summary.root_service = Some(e.service.to_string());
            if let Some(route) = e.route {
                summary.route = Some(route.to_string());
            }
            if let Some(method) = e.method {
                summary.method = Some(method.to_string());
            }
            if let Some(duration) = e.duration_ms {
                summary.status = e.status;
                summary.duration_ms = Some(duration);
            }
        }
        let key = (e.trace.to_string(), e.span.to_string());
        let span = spans.entry(key.clone()).or_insert_with(|| {
            summary.spans += 1;
            SpanState {
                service: e.service.to_string(),
                parent: e.parent.map(str::to_string),
                completion: None,
            }
        });
        if let Some(duration) = e.duration_ms {
            span.completion = Some((e.status, duration));
            completions.push(key);
        }
    }
    for (trace, firsts) in service_first {
        let summary = truth.traces.get_mut(&trace).expect("entered above");
        let mut named: Vec<(u64, String)> = firsts
            .into_iter()
            .zip(std::mem::take(&mut summary.services))
            .collect();
        named.sort();
        summary.services = named.into_iter().map(|(_, s)| s).collect();
    }
    // After every line: a parent that logs only its completion names its service after its
    // children have completed.
    for key in completions {
        let span = &spans[&key];
        let (Some(parent), Some((status, duration))) = (&span.parent, span.completion) else {
            continue;
        };
        let Some(caller) = spans.get(&(key.0.clone(), parent.clone())) else {
            continue;
        };
        let edge = truth
            .edges
            .entry((caller.service.clone(), span.service.clone()))
            .or_default();
        edge.requests += 1;
        edge.failures += u64::from(status.is_some_and(|s| s >= 500));
        edge.latencies_ms.push(duration);
    }
    truth
}

fn event(line: &str) -> Option<Event<'_>> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.starts_with('{') {
        json_event(line)
    } else {
        text_event(line)
    }
}

fn json_event(line: &str) -> Option<Event<'_>> {
    let fields = json_fields(line)?;
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let trace = get("trace_id").filter(|t| is_id(t, 32))?;
    let span = get("span_id").filter(|s| is_id(s, 16))?;
    let parent = match get("parent_span_id") {
        Some(p) if is_id(p, 16) => Some(p),
        Some(_) => return None,
        None => None,
    };
    Some(Event {
        ms: parse_time(get("ts")?, TimeFormat::Rfc3339)?,
        error: get("level")? == "error",
        service: get("service")?,
        trace,
        span,
        parent,
        route: get("route"),
        method: get("method"),
        status: get("status").map(str::parse).transpose().ok()?,
        duration_ms: get("duration_ms").map(str::parse).transpose().ok()?,
    })
}

/// The members of a flat JSON object whose strings have no escapes: keys, and values as their
/// text (strings without their quotes).
fn json_fields(line: &str) -> Option<Vec<(&str, &str)>> {
    let mut rest = line.strip_prefix('{')?.strip_suffix('}')?;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.strip_prefix('"')?.split_once('"')?;
        let after = after.strip_prefix(':')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(s) => s.split_once('"')?,
            None => after.split_at(after.find(',').unwrap_or(after.len())),
        };
        if value.contains('\\') {
            return None;
        }
        fields.push((key, value));
        rest = match after.strip_prefix(',') {
            Some(next) if !next.is_empty() => next,
            Some(_) => return None,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(fields)
}

/// `<ts> <LEVEL> <service> key=value key="quoted value" …`, with a W3C `traceparent` and a
/// `parent` span id or `-`.
fn text_event(line: &str) -> Option<Event<'_>> {
    let (ts, rest) = line.split_once(' ')?;
    let (level, rest) = rest.split_once(' ')?;
    let (service, mut rest) = rest.split_once(' ')?;
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = match after.strip_prefix('"') {
            Some(s) => s.split_once('"')?,
            None => after.split_at(after.find(' ').unwrap_or(after.len())),
        };
        fields.push((key, value));
        rest = match after.strip_prefix(' ') {
            Some(next) => next,
            None if after.is_empty() => after,
            None => return None,
        };
    }
    let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let (trace, span) = traceparent(get("traceparent")?)?;
    let parent = match get("parent")? {
        "-" => None,
        p if is_id(p, 16) => Some(p),
        _ => return None,
    };
    Some(Event {
        ms: parse_time(ts, TimeFormat::Rfc3339)?,
        error: level.eq_ignore_ascii_case("error"),
        service,
        trace,
        span,
        parent,
        route: get("route"),
        method: get("method"),
        status: get("status").map(str::parse).transpose().ok()?,
        duration_ms: get("duration_ms").map(str::parse).transpose().ok()?,
    })
}

/// Trace id and span id of a valid W3C traceparent of version 00.
pub(super) fn traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let flags_ok = flags.len() == 2
        && flags
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (version == "00" && parts.next().is_none() && is_id(trace, 32) && is_id(span, 16) && flags_ok)
        .then_some((trace, span))
}

/// `len` lowercase hex digits, not all zeros (which W3C reserves for "no id").
pub(super) fn is_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    #[test]
    fn ids_and_traceparents() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                Some((TRACE, "b7ad6b7169203331")),
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                Some((TRACE, "b7ad6b7169203331")),
            ),
            (
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                None,
            ),
            (
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
                None,
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                None,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                None,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
                None,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
                None,
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
                None,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(traceparent(value), *expected, "{value}");
        }
    }

    #[test]
    fn both_formats_parse_to_the_same_event() {
        let json = format!(
            r#"{{"ts":"2024-03-10T12:00:00.123Z","level":"error","service":"payments","msg":"request failed","trace_id":"{TRACE}","span_id":"b7ad6b7169203331","parent_span_id":"00f067aa0ba902b7","status":503,"duration_ms":12.5,"error":"card processor timeout"}}"#
        );
        let text = format!(
            r#"2024-03-10T12:00:00.123Z ERROR payments traceparent=00-{TRACE}-b7ad6b7169203331-01 parent=00f067aa0ba902b7 msg="request failed" status=503 duration_ms=12.5 error="card processor timeout""#
        );
        let expected = Event {
            ms: 1_710_072_000_123,
            error: true,
            service: "payments",
            trace: TRACE,
            span: "b7ad6b7169203331",
            parent: Some("00f067aa0ba902b7"),
            route: None,
            method: None,
            status: Some(503),
            duration_ms: Some(12.5),
        };
        assert_eq!(event(&json), Some(expected.clone()));
        assert_eq!(event(&text), Some(expected));
    }

    #[test]
    fn lines_that_are_not_trace_events_are_skipped() {
        let lines = [
            "",
            "kernel: [ 1234.5678] eth0: link up",
            r#"{"ts":"2024-03-10T12:00:00.123Z","level":"info","service":"cart"}"#,
            r#"{"ts":"2024-03-10T12:00:00.123Z","level":"info","service":"cart","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"0000000000000000"}"#,
            r#"{"ts":"2024-03-10T12:00:00.123Z","level":"info","service":"cart","trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331",}"#,
            "2024-03-10T12:00:00.123Z INFO email traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 msg=\"no parent field\"",
            "2024-03-10T12:00:00.123Z INFO email traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 parent=- msg=\"unterminated",
        ];
        let truth = trace_truth(lines.iter().map(|l| l.as_bytes()));
        assert_eq!(truth.skipped, lines.len() as u64);
        assert!(truth.traces.is_empty());
    }

    /// A trace small enough to check by hand: gateway (root) → cart → inventory, where
    /// inventory fails, and the gateway's call to auth; the cart span only logs its completion.
    #[test]
    fn a_trace_by_hand() {
        let t = TRACE;
        let lines = [
            format!(
                r#"{{"ts":"2024-03-10T12:00:00.000Z","level":"info","service":"gateway","msg":"request received","trace_id":"{t}","span_id":"1000000000000001","route":"/api/v1/cart","method":"GET"}}"#
            ),
            format!(
                r#"2024-03-10T12:00:00.004Z INFO auth traceparent=00-{t}-2000000000000002-01 parent=1000000000000001 msg="request completed" status=200 duration_ms=2.5"#
            ),
            format!(
                r#"{{"ts":"2024-03-10T12:00:00.010Z","level":"error","service":"inventory","msg":"request failed","trace_id":"{t}","span_id":"4000000000000004","parent_span_id":"3000000000000003","status":503,"duration_ms":3.0,"error":"stock table deadlock"}}"#
            ),
            format!(
                r#"{{"ts":"2024-03-10T12:00:00.012Z","level":"error","service":"cart","msg":"request failed","trace_id":"{t}","span_id":"3000000000000003","parent_span_id":"1000000000000001","status":500,"duration_ms":6.1}}"#
            ),
            format!(
                r#"{{"ts":"2024-03-10T12:00:00.014Z","level":"error","service":"gateway","msg":"request failed","trace_id":"{t}","span_id":"1000000000000001","route":"/api/v1/cart","method":"GET","status":502,"duration_ms":14.2}}"#
            ),
        ];
        let truth = trace_truth(lines.iter().map(|l| l.as_bytes()));
        let summary = TraceSummary {
            services: ["gateway", "auth", "inventory", "cart"]
                .map(String::from)
                .to_vec(),
            root_service: Some("gateway".into()),
            route: Some("/api/v1/cart".into()),
            method: Some("GET".into()),
            status: Some(502),
            error: true,
            events: 5,
            spans: 4,
            first_ms: 1_710_072_000_000,
            last_ms: 1_710_072_000_014,
            duration_ms: Some(14.2),
        };
        let edge = |requests, failures, latencies_ms: &[f64]| EdgeStats {
            requests,
            failures,
            latencies_ms: latencies_ms.to_vec(),
        };
        let edges = BTreeMap::from([
            (("cart".into(), "inventory".into()), edge(1, 1, &[3.0])),
            (("gateway".into(), "auth".into()), edge(1, 0, &[2.5])),
            (("gateway".into(), "cart".into()), edge(1, 1, &[6.1])),
        ]);
        assert_eq!(truth.traces, BTreeMap::from([(t.to_string(), summary)]));
        assert_eq!(truth.edges, edges);
        assert_eq!(truth.skipped, 0);

        // Cut before the cart's completion: its edge to inventory is unknown (nothing has
        // named the cart's service yet) and the root is open.
        let cut = trace_truth(lines[..3].iter().map(|l| l.as_bytes()));
        assert_eq!(cut.traces[t].duration_ms, None);
        assert_eq!(cut.traces[t].status, None);
        assert_eq!(
            cut.edges,
            BTreeMap::from([(("gateway".into(), "auth".into()), edge(1, 0, &[2.5]))])
        );
    }
}
