//! Issue 12: the OpenTelemetry Collector's Kafka exporter's default encoding, `otlp_proto`:
//! many log records per Kafka message, each an event, counted exactly once per message
//! through crashes.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::*;

const OTLP_RULES: &str = "team: shop
rules:
  - name: requests
    match: {fields: {attributes.http.route: {exists: true}}}
    metrics:
      - name: otlp_requests_total
        type: counter
        help: Requests by service, route and level.
        labels: {service: service, route: attributes.http.route, level: level}
  - name: routine
    match: {fields: {level: {in: [debug, info]}}}
    then: drop
";

fn kv(key: &str, v: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

const SERVICES: [&str; 3] = ["checkout", "payments", "search"];
const ROUTES: [&str; 4] = ["/cart", "/pay", "/search", "/"];
const LEVELS: [(i32, &str); 6] = [
    (5, "debug"),
    (5, "debug"),
    (9, "info"),
    (9, "info"),
    (9, "info"),
    (17, "error"),
];

/// Message `m`: one resource (a service) with `1 + m % 40` log records, each with a route, a
/// severity and a sequence number that makes it unique.
fn message(m: u64) -> (Vec<u8>, Vec<(String, &'static str, String)>) {
    let service = SERVICES[(m % 3) as usize];
    let n = 1 + m % 40;
    let mut events = Vec::new();
    let records = (0..n)
        .map(|i| {
            let seq = m * 100 + i;
            let route = ROUTES[(seq % 4) as usize];
            let (number, level) = LEVELS[(seq / 4 % 6) as usize];
            events.push((service.to_string(), route, level.to_string()));
            LogRecord {
                time_unix_nano: 1_795_740_000_000_000_000 + seq * 1_000_000,
                severity_number: number,
                body: Some(AnyValue {
                    value: Some(Any::StringValue(format!("request seq={seq}"))),
                }),
                attributes: vec![kv("http.route", Any::StringValue(route.into()))],
                ..LogRecord::default()
            }
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Any::StringValue(service.into()))],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "http".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    (request.encode_to_vec(), events)
}

#[test]
fn issue12_otlp_proto_messages_are_many_events_counted_once_through_sigkill() {
    let c = cluster(2);
    // The mock cluster keeps ~5 MiB per partition: the kept topic, replays included, must fit.
    let messages = 2_000u64;
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    let mut kept_bodies = HashSet::new();
    let mut payloads = Vec::new();
    for m in 0..messages {
        let (bytes, events) = message(m);
        for (i, (service, route, level)) in events.into_iter().enumerate() {
            *want
                .entry(format!(
                    "otlp_requests_total{{level=\"{level}\",route=\"{route}\",service=\"{service}\"}}"
                ))
                .or_default() += 1.0;
            if level == "error" {
                kept_bodies.insert(format!("request seq={}", m * 100 + i as u64));
            }
        }
        payloads.push(bytes);
    }
    // A message cut short by a crashed producer: a dead letter, whole.
    let truncated = payloads[7][..payloads[7].len() / 2].to_vec();
    payloads.insert(1_000, truncated.clone());
    let events: usize = (0..messages).map(|m| 1 + (m % 40) as usize).sum();
    produce(&c.bootstrap, payloads.into_iter());
    let tmp = TempDir::new("svc-otlp");
    std::fs::write(tmp.path("rules.yaml"), OTLP_RULES).unwrap();
    let port = free_port();
    let cfg = config_with(
        &tmp.0,
        &c.bootstrap,
        "otlp-0",
        port,
        "0s",
        "input: {envelopes: {logs: otlp_proto}}\n",
    );
    sigkill_rounds(&cfg, 3, 0x9e37_79b9_7f4a_7c15, 300, 900);
    // The killed runs got far enough to checkpoint: the last one resumes mid-stream.
    assert!(!state_records(&c.bootstrap, "it-state").is_empty());
    let _child = start(&cfg);
    assert_exports(&[port], &want, 120, || true, &[&cfg]);
    // Every event kept is on the kept topic as its own JSON record, named by its message's
    // offset and its place in it; replays after the kills are told apart by those.
    let kept = consume_all(&c.bootstrap, "kept");
    let mut by_source: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (payload, source, _) in &kept {
        assert!(source.contains('#'), "no index header: {source}");
        if let Some(old) = by_source.insert(source.as_str(), payload) {
            assert_eq!(
                old,
                payload.as_slice(),
                "{source} written twice, differently"
            );
        }
    }
    let bodies: HashSet<String> = by_source
        .values()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            assert!(v["service"].is_string() && v["attributes"]["http"]["route"].is_string());
            v["message"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(bodies.len(), by_source.len(), "one source per event");
    assert!(
        bodies == kept_bodies,
        "kept {} of {}",
        bodies.len(),
        kept_bodies.len()
    );
    let dead = consume_all(&c.bootstrap, "dead");
    assert!(
        !dead.is_empty()
            && dead
                .iter()
                .all(|d| d.2 == "malformed_otlp" && d.0 == truncated)
    );
    // The last run read what the killed ones had not counted: its unwrapped events.
    let t = telemetry(port);
    let line = t
        .lines()
        .find(|l| l.starts_with("logmill_events_unwrapped_total") && l.contains("otlp_proto"));
    let n: f64 = line
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        n > 0.0 && n <= events as f64,
        "{line:?} for {events} events"
    );
}
