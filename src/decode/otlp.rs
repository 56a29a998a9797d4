//! The OpenTelemetry Collector's Kafka exporter: `otlp_proto` (its default, a protobuf
//! `ExportLogsServiceRequest`) and `otlp_json` (the same message in OTLP's JSON mapping).
//!
//! One Kafka message holds many log records, so this envelope is unwrapped before the engine
//! rather than inside it: [`Splitter::split`] turns a message into one *event* per log record,
//! each rendered as a flat JSON object, and the sources hand those to the engine as records of
//! their own that share the message's offset (`engine::Part`). Everything after that (rules,
//! reduction, traces, outputs) sees ordinary JSON events. An event reads:
//!
//! - `message`: the body when it is a string; a map body's entries are the event's own fields
//!   instead (**the application's fields win** over the names below when both are used);
//!   another body is `body`.
//! - `time` (RFC 3339, from `time_unix_nano`, else `observed_time_unix_nano`), `level` (the
//!   severity text, else the severity number's name), `severity_text`, `severity_number`,
//!   `trace_id` and `span_id` (hex: trace correlation reads them as it reads any event's),
//!   `trace_flags`, `event_name`.
//! - `attributes.*`, `resource.*` and `scope.name`/`scope.version`, with dotted attribute keys
//!   nested (`resource.k8s.pod.name`), and `service` for `service.name`.
//!
//! Messages are decoded with the `opentelemetry-proto` crate's types (prost for the protobuf,
//! its serde mapping for the JSON); nothing here reads wire bytes by hand.

use std::fmt::Write as _;
use std::ops::Range;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{Map, Value};

use super::DecodeError;
use crate::sink::output::json_string;

/// How an OTLP message is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Proto,
    Json,
}

/// Whether `bytes` look like an `otlp_json` message: a JSON object whose first key is
/// `resourceLogs`. Nothing else a shipper writes starts so.
pub fn detect_json(bytes: &[u8]) -> bool {
    let b = bytes.trim_ascii_start();
    b.first() == Some(&b'{') && b[1..].trim_ascii_start().starts_with(b"\"resourceLogs\"")
}

/// The most text one message's events may take, written out.
const MAX_RENDERED: usize = 64 << 20;

/// Segments a dotted attribute key nests into at most: the rest of a longer key stays whole
/// in its last segment (nesting is recursion, when the tree is written and dropped).
const MAX_NEST: usize = 16;

/// OTLP JSON, through the crate's serde mapping. That mapping wants `values` in an
/// `arrayValue` or `kvlistValue`, which OTLP JSON may leave out when empty: a message it
/// refuses is read again with them put in.
fn from_json(bytes: &[u8]) -> Option<ExportLogsServiceRequest> {
    if let Ok(r) = serde_json::from_slice(bytes) {
        return Some(r);
    }
    let mut v: Value = serde_json::from_slice(bytes).ok()?;
    fill_values(&mut v);
    serde_json::from_value(v).ok()
}

fn fill_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if let ("arrayValue" | "kvlistValue", Value::Object(inner)) =
                    (k.as_str(), &mut *child)
                {
                    inner
                        .entry("values")
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
                fill_values(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(fill_values),
        _ => {}
    }
}

/// A message's events, rendered; reused across messages.
#[derive(Debug, Default)]
pub struct Splitter {
    pub text: String,
    /// Each event's range in `text`, in the message's order.
    pub events: Vec<Range<usize>>,
    resource: String,
    scope: String,
    keys: Vec<String>,
}

impl Splitter {
    /// Splits one message into its log records' events. A message without any log record
    /// gives no event.
    ///
    /// Bounded: a message whose resource and scope alone pass `max_event` (every event would),
    /// or whose events together pass `MAX_RENDERED`, is refused whole as `too_large`. A
    /// megabyte of protobuf can name a large resource once and a quarter of a million empty
    /// records: written out, each with the resource, that is more than any host holds.
    pub fn split(
        &mut self,
        bytes: &[u8],
        encoding: Encoding,
        max_event: usize,
    ) -> Result<(), DecodeError> {
        self.text.clear();
        self.events.clear();
        let request = match encoding {
            Encoding::Proto => ExportLogsServiceRequest::decode(bytes).ok(),
            Encoding::Json => from_json(bytes),
        }
        .ok_or(DecodeError::MalformedOtlp)?;
        for rl in &request.resource_logs {
            self.resource.clear();
            let service = rl.resource.as_ref().and_then(|r| {
                attributes_json(&mut self.resource, &r.attributes);
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Any::StringValue(s) => Some(s.as_str()),
                        _ => None,
                    })
            });
            for sl in &rl.scope_logs {
                self.scope.clear();
                if let Some(s) = &sl.scope {
                    scope_json(&mut self.scope, s);
                }
                if !sl.log_records.is_empty() && self.resource.len() + self.scope.len() > max_event
                {
                    return Err(DecodeError::TooLarge);
                }
                for record in &sl.log_records {
                    if self.text.len() > MAX_RENDERED {
                        return Err(DecodeError::TooLarge);
                    }
                    let start = self.text.len();
                    render(
                        &mut self.text,
                        &mut self.keys,
                        record,
                        &self.resource,
                        service,
                        &self.scope,
                    );
                    self.events.push(start..self.text.len());
                }
            }
        }
        Ok(())
    }

    pub fn event(&self, i: usize) -> &str {
        &self.text[self.events[i].clone()]
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One log record as a flat JSON object (see the module's documentation for its fields).
fn render(
    out: &mut String,
    keys: &mut Vec<String>,
    r: &LogRecord,
    resource: &str,
    service: Option<&str>,
    scope: &str,
) {
    keys.clear();
    out.push('{');
    let mut first = true;
    let mut field = |out: &mut String, keys: &[String], name: &str| -> bool {
        if keys.iter().any(|k| k == name) {
            return false;
        }
        if !first {
            out.push(',');
        }
        first = false;
        json_string(out, name);
        out.push(':');
        true
    };
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Any::StringValue(s)) => {
            field(out, keys, "message");
            json_string(out, s);
            keys.push("message".into());
        }
        Some(Any::KvlistValue(kv)) => {
            for e in &kv.values {
                if keys.contains(&e.key) {
                    continue;
                }
                field(out, keys, &e.key);
                any_json(out, e.value.as_ref());
                keys.push(e.key.clone());
            }
        }
        Some(v) if field(out, keys, "body") => out.push_str(&value(v).to_string()),
        Some(_) | None => {}
    }
    let time = if r.time_unix_nano != 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    if time != 0 && field(out, keys, "time") {
        out.push('"');
        rfc3339_nanos(out, time);
        out.push('"');
    }
    let level = match r.severity_text.as_str() {
        "" => severity_name(r.severity_number),
        s => Some(s),
    };
    if let Some(level) = level
        && field(out, keys, "level")
    {
        json_string(out, level);
    }
    if !r.severity_text.is_empty() && field(out, keys, "severity_text") {
        json_string(out, &r.severity_text);
    }
    if r.severity_number != 0 && field(out, keys, "severity_number") {
        let _ = write!(out, "{}", r.severity_number);
    }
    // Ids of the wrong length are not ids (the OTLP spec); all-zero ones are left to trace
    // correlation, which counts them as invalid.
    for (name, id, len) in [("trace_id", &r.trace_id, 16), ("span_id", &r.span_id, 8)] {
        if id.len() == len && field(out, keys, name) {
            out.push('"');
            for b in id {
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            out.push('"');
        }
    }
    if r.flags & 0xff != 0 && field(out, keys, "trace_flags") {
        let _ = write!(out, "{}", r.flags & 0xff);
    }
    if !r.event_name.is_empty() && field(out, keys, "event_name") {
        json_string(out, &r.event_name);
    }
    if !r.attributes.is_empty() && field(out, keys, "attributes") {
        attributes_json(out, &r.attributes);
    }
    if !resource.is_empty() && field(out, keys, "resource") {
        out.push_str(resource);
    }
    if let Some(s) = service
        && field(out, keys, "service")
    {
        json_string(out, s);
    }
    if !scope.is_empty() && field(out, keys, "scope") {
        out.push_str(scope);
    }
    out.push('}');
}

fn scope_json(out: &mut String, s: &InstrumentationScope) {
    let mut m = Map::new();
    if !s.name.is_empty() {
        m.insert("name".into(), Value::String(s.name.clone()));
    }
    if !s.version.is_empty() {
        m.insert("version".into(), Value::String(s.version.clone()));
    }
    if !s.attributes.is_empty() {
        m.insert("attributes".into(), nested(&s.attributes));
    }
    if !m.is_empty() {
        out.push_str(&Value::Object(m).to_string());
    }
}

/// Attributes as one JSON object, dotted keys nested (`k8s.pod.name` → `k8s: {pod: {name}}`),
/// so that rules read them by the same dotted paths as any field. Written straight from the
/// keys in nesting order (each object's keys sorted, as the tree would give them); only keys
/// that collide (`a` beside `a.b`, a key twice, an empty segment) go through a tree
/// (`nested`): a tree per record was a fifth of splitting a message.
fn attributes_json(out: &mut String, attributes: &[KeyValue]) {
    let order: Vec<&str> = attributes.iter().map(|kv| kv.key.as_str()).collect();
    // `.` sorts before every other byte, so the keys under one prefix are adjacent.
    let dotted = |k: &str| {
        k.bytes()
            .map(|b| if b == b'.' { 0 } else { b })
            .collect::<Vec<u8>>()
    };
    let mut keyed: Vec<(Vec<u8>, usize)> = order
        .iter()
        .enumerate()
        .map(|(i, k)| (dotted(k), i))
        .collect();
    keyed.sort();
    let collides = keyed.windows(2).any(|w| {
        let (a, b) = (&w[0].0, &w[1].0);
        a == b || (b.starts_with(a) && b.get(a.len()) == Some(&0))
    }) || order
        .iter()
        .any(|k| k.splitn(MAX_NEST, '.').any(str::is_empty));
    if collides {
        out.push_str(&nested(attributes).to_string());
        return;
    }
    let mut open: Vec<&str> = Vec::new();
    // Per open object: whether the next key is its first.
    let mut first = vec![true];
    let comma = |out: &mut String, first: &mut Vec<bool>| {
        let f = first.last_mut().expect("the outer object is open");
        if !*f {
            out.push(',');
        }
        *f = false;
    };
    out.push('{');
    for (_, i) in &keyed {
        let kv = &attributes[*i];
        let mut path: Vec<&str> = kv.key.splitn(MAX_NEST, '.').collect();
        let leaf = path.pop().unwrap_or_default();
        let common = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
        while open.len() > common {
            open.pop();
            first.pop();
            out.push('}');
        }
        for seg in &path[common..] {
            comma(out, &mut first);
            json_string(out, seg);
            out.push_str(":{");
            open.push(seg);
            first.push(true);
        }
        comma(out, &mut first);
        json_string(out, leaf);
        out.push(':');
        any_json(out, kv.value.as_ref());
    }
    for _ in open {
        out.push('}');
    }
    out.push('}');
}

fn nested(attributes: &[KeyValue]) -> Value {
    let mut root = Map::new();
    for kv in attributes {
        let value = any_value(kv.value.as_ref());
        let mut path: Vec<&str> = kv.key.splitn(MAX_NEST, '.').collect();
        let leaf = path.pop().unwrap_or_default();
        // Walks down the path while it is objects; where it is not (`a` is a string and `a.b`
        // comes), the key stays whole at the level reached.
        let mut at = &mut root;
        let mut whole = None;
        for (i, seg) in path.iter().enumerate() {
            let exists = at.get(*seg).is_some_and(|v| !v.is_object());
            if exists || seg.is_empty() {
                whole = Some(path[i..].join(".") + "." + leaf);
                break;
            }
            at = at
                .entry(seg.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("checked to be an object");
        }
        let key = whole.unwrap_or_else(|| leaf.to_string());
        at.entry(key).or_insert(value);
    }
    Value::Object(root)
}

fn any_value(v: Option<&AnyValue>) -> Value {
    v.and_then(|v| v.value.as_ref()).map_or(Value::Null, value)
}

fn value(v: &Any) -> Value {
    match v {
        Any::StringValueStrindex(_) => Value::Null,
        Any::StringValue(s) => Value::String(s.clone()),
        Any::BoolValue(b) => Value::Bool(*b),
        Any::IntValue(i) => Value::from(*i),
        // JSON has no NaN or infinities: those are written as OTLP's JSON writes them.
        Any::DoubleValue(d) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Any::ArrayValue(a) => Value::Array(a.values.iter().map(|v| any_value(Some(v))).collect()),
        Any::KvlistValue(kv) => Value::Object(
            kv.values
                .iter()
                .map(|e| (e.key.clone(), any_value(e.value.as_ref())))
                .collect(),
        ),
        Any::BytesValue(b) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn any_json(out: &mut String, v: Option<&AnyValue>) {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => json_string(out, s),
        Some(Any::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Any::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        other => out.push_str(&other.map_or(Value::Null, value).to_string()),
    }
}

/// The severity number's short name (OpenTelemetry's log data model: 1–4 trace, 5–8 debug, …).
fn severity_name(n: i32) -> Option<&'static str> {
    Some(match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    })
}

/// RFC 3339 in UTC with nanoseconds, `2026-11-27T01:20:00.123456789Z`. Written digit by digit:
/// through `fmt` this was a tenth of splitting a message.
fn rfc3339_nanos(out: &mut String, nanos: u64) {
    let secs = nanos / 1_000_000_000;
    let (days, s) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::extract::time::civil_from_days(days as i64);
    let mut digits = |n: u64, width: u32, then: char| {
        for k in (0..width).rev() {
            out.push((b'0' + (n / 10u64.pow(k) % 10) as u8) as char);
        }
        out.push(then);
    };
    digits(y.clamp(0, 9999) as u64, 4, '-');
    digits(u64::from(m), 2, '-');
    digits(u64::from(d), 2, 'T');
    digits(s / 3600, 2, ':');
    digits(s / 60 % 60, 2, ':');
    digits(s % 60, 2, '.');
    digits(nanos % 1_000_000_000, 9, 'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(key: &str, v: Any) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        }
    }

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Any::StringValue("checkout".into())),
                        kv("k8s.pod.name", Any::StringValue("checkout-7d9".into())),
                        kv("k8s.namespace.name", Any::StringValue("shop".into())),
                    ],
                    ..Resource::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "app".into(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn events(s: &Splitter) -> Vec<Value> {
        (0..s.events.len())
            .map(|i| serde_json::from_str(s.event(i)).expect("events are JSON"))
            .collect()
    }

    #[test]
    fn each_log_record_is_an_event_with_its_resource() {
        let r = request(vec![
            LogRecord {
                time_unix_nano: 1_764_206_400_123_456_789,
                severity_number: 17,
                severity_text: "ERROR".into(),
                body: Some(AnyValue {
                    value: Some(Any::StringValue("payment failed".into())),
                }),
                attributes: vec![
                    kv("http.route", Any::StringValue("/pay".into())),
                    kv("http.status_code", Any::IntValue(502)),
                ],
                trace_id: (1..=16).collect(),
                span_id: (1..=8).collect(),
                flags: 1,
                ..LogRecord::default()
            },
            LogRecord {
                observed_time_unix_nano: 1_764_206_401_000_000_000,
                severity_number: 9,
                body: Some(AnyValue {
                    value: Some(Any::KvlistValue(KeyValueList {
                        values: vec![
                            kv("msg", Any::StringValue("ok".into())),
                            kv("level", Any::StringValue("notice".into())),
                            kv("duration_ms", Any::DoubleValue(12.5)),
                        ],
                    })),
                }),
                // Not an id: the wrong length.
                trace_id: vec![1, 2, 3],
                ..LogRecord::default()
            },
        ]);
        let mut s = Splitter::default();
        for bytes in [
            r.encode_to_vec(),
            serde_json::to_vec(&r).expect("serialisable"),
        ] {
            let encoding = if bytes[0] == b'{' {
                assert!(detect_json(&bytes));
                Encoding::Json
            } else {
                assert!(!detect_json(&bytes));
                Encoding::Proto
            };
            s.split(&bytes, encoding, 1 << 16).expect("a valid message");
            let e = events(&s);
            assert_eq!(e.len(), 2);
            assert_eq!(e[0]["message"], "payment failed");
            assert_eq!(e[0]["time"], "2025-11-27T01:20:00.123456789Z");
            assert_eq!(e[0]["level"], "ERROR");
            assert_eq!(e[0]["severity_number"], 17);
            assert_eq!(e[0]["trace_id"], "0102030405060708090a0b0c0d0e0f10");
            assert_eq!(e[0]["span_id"], "0102030405060708");
            assert_eq!(e[0]["trace_flags"], 1);
            assert_eq!(e[0]["attributes"]["http"]["route"], "/pay");
            assert_eq!(e[0]["attributes"]["http"]["status_code"], 502);
            assert_eq!(e[0]["resource"]["k8s"]["pod"]["name"], "checkout-7d9");
            assert_eq!(e[0]["resource"]["service"]["name"], "checkout");
            assert_eq!(e[0]["service"], "checkout");
            assert_eq!(e[0]["scope"]["name"], "app");
            // A map body is the event's own fields, and they win.
            assert_eq!(e[1]["msg"], "ok");
            assert_eq!(e[1]["level"], "notice");
            assert_eq!(e[1]["duration_ms"], 12.5);
            assert_eq!(e[1]["time"], "2025-11-27T01:20:01.000000000Z");
            assert!(e[1].get("trace_id").is_none());
            assert!(e[1].get("message").is_none());
        }
    }

    #[test]
    fn dotted_keys_nest_unless_a_value_is_in_the_way() {
        let v = nested(&[
            kv("a", Any::StringValue("x".into())),
            kv("a.b", Any::StringValue("y".into())),
            kv("c.d", Any::BoolValue(true)),
            kv("c.e", Any::IntValue(1)),
        ]);
        assert_eq!(
            v,
            serde_json::json!({"a": "x", "a.b": "y", "c": {"d": true, "e": 1}})
        );
    }

    #[test]
    fn attributes_are_written_as_their_tree_would_be() {
        let cases: Vec<Vec<KeyValue>> = vec![
            vec![],
            vec![
                kv("http.route", Any::StringValue("/a\"b".into())),
                kv("http.response.status_code", Any::IntValue(200)),
                kv("a-b", Any::BoolValue(false)),
                kv("a.c", Any::DoubleValue(1.5)),
                kv("ab", Any::DoubleValue(f64::NAN)),
                kv("k8s.pod.name", Any::StringValue("p".into())),
                kv("k8s.namespace.name", Any::StringValue("n".into())),
                kv("z", Any::BytesValue(vec![0, 255])),
            ],
            // Collisions take the tree's way.
            vec![
                kv("a", Any::StringValue("x".into())),
                kv("a.b", Any::StringValue("y".into())),
            ],
            vec![
                kv("a", Any::IntValue(1)),
                kv("a", Any::IntValue(2)),
                kv(".x", Any::IntValue(3)),
            ],
        ];
        for attributes in cases {
            let mut direct = String::new();
            attributes_json(&mut direct, &attributes);
            assert_eq!(direct, nested(&attributes).to_string());
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut s = Splitter::default();
        let good = request(vec![LogRecord::default(); 3]).encode_to_vec();
        assert_eq!(
            s.split(&good[..good.len() - 3], Encoding::Proto, 1 << 16),
            Err(DecodeError::MalformedOtlp)
        );
        assert_eq!(
            s.split(b"{\"resourceLogs\": [", Encoding::Json, 1 << 16),
            Err(DecodeError::MalformedOtlp)
        );
        assert_eq!(
            s.split(b"{\"level\":\"info\"}", Encoding::Proto, 1 << 16),
            Err(DecodeError::MalformedOtlp)
        );
        s.split(&good, Encoding::Proto, 1 << 16).expect("valid");
        assert_eq!(s.events.len(), 3);
        s.split(b"", Encoding::Proto, 1 << 16)
            .expect("an empty request is valid");
        assert!(s.events.is_empty());
    }

    #[test]
    fn what_a_message_can_make_is_bounded() {
        let mut s = Splitter::default();
        // A resource larger than an event may be: every event would be too large.
        // `records` empty records under a resource with a `blob` attribute of `bytes`.
        let blob = |records: usize, bytes: usize| {
            let mut r = request(vec![LogRecord::default(); records]);
            r.resource_logs[0]
                .resource
                .as_mut()
                .unwrap()
                .attributes
                .push(kv("blob", Any::StringValue("x".repeat(bytes))));
            r
        };
        let big = blob(2, 70_000);
        assert_eq!(
            s.split(&big.encode_to_vec(), Encoding::Proto, 1 << 16),
            Err(DecodeError::TooLarge)
        );
        // Half a megabyte of resource and a quarter of a million empty records: each event is
        // under the bound, all of them together are not.
        let bomb = blob(250_000, 500_000);
        assert_eq!(
            s.split(&bomb.encode_to_vec(), Encoding::Proto, 1 << 20),
            Err(DecodeError::TooLarge)
        );
        // A key of a hundred thousand dots nests sixteen deep, the rest kept whole.
        let deep = ".a".repeat(100_000);
        let attrs = vec![kv(&deep[1..], Any::IntValue(1))];
        let mut direct = String::new();
        attributes_json(&mut direct, &attrs);
        assert!(
            direct.starts_with(&"{\"a\":".repeat(MAX_NEST - 1)),
            "{}",
            &direct[..80]
        );
        let scope = InstrumentationScope {
            attributes: attrs,
            ..InstrumentationScope::default()
        };
        let mut out = String::new();
        scope_json(&mut out, &scope);
        assert!(out.len() > 100_000);
    }

    #[test]
    fn empty_arrays_and_maps_may_leave_their_values_out() {
        let mut s = Splitter::default();
        let json = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"kvlistValue":{}},"attributes":[{"key":"tags","value":{"arrayValue":{}}}]}]}]}]}"#;
        s.split(json, Encoding::Json, 1 << 16)
            .expect("valid OTLP JSON");
        let e = events(&s);
        assert_eq!(e[0]["attributes"]["tags"], serde_json::json!([]));
    }
}
