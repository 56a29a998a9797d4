//! Decode: our validating field scanner against simd-json's DOM and tape, per JSON line.
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::decode::{Decoded, Decoder, InputFormat, Limits};
use logmill::rules::compile::parse_path;
use logmill::workload::Kind;

fn decode(c: &mut Criterion) {
    let lines = common::lines(Kind::Json, 2000);
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let mut g = c.benchmark_group("decode_json");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let fields: Vec<_> = ["level", "service", "duration_ms"]
        .iter()
        .map(|p| parse_path(p).unwrap())
        .collect();
    let decoder = Decoder::new(&fields, InputFormat::Auto, Limits::default());
    let mut out = Decoded::default();
    g.bench_function("logmill_scan_3_fields", |b| {
        b.iter(|| {
            for l in &lines {
                decoder.decode(l, &mut out).unwrap();
            }
        })
    });
    let mut buf = Vec::new();
    g.bench_function("simd_json_dom", |b| {
        b.iter(|| {
            for l in &lines {
                buf.clear();
                buf.extend_from_slice(l);
                std::hint::black_box(simd_json::to_borrowed_value(&mut buf).unwrap());
            }
        })
    });
    let mut buffers = simd_json::Buffers::default();
    g.bench_function("simd_json_tape", |b| {
        b.iter(|| {
            for l in &lines {
                buf.clear();
                buf.extend_from_slice(l);
                std::hint::black_box(
                    simd_json::Deserializer::from_slice_with_buffers(&mut buf, &mut buffers)
                        .unwrap(),
                );
            }
        })
    });
    g.finish();
    let mut g = c.benchmark_group("decode_bytes");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("utf8_only_text", |b| {
        let text = Decoder::new(
            &[],
            InputFormat::Fixed(logmill::decode::Format::Text),
            Limits::default(),
        );
        b.iter(|| {
            for l in &lines {
                text.decode(l, &mut out).unwrap();
            }
        })
    });
    g.finish();
}

/// Splitting the OpenTelemetry Collector's messages (100 log records each, as its Kafka exporter
/// batches them) into events, per log record.
fn otlp(c: &mut Criterion) {
    use logmill::decode::otlp::{Encoding, Splitter};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message as _;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(v.into())),
        }),
        ..KeyValue::default()
    };
    let lines = common::lines(Kind::Nginx, 100);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("k8s.namespace.name", "shop"),
                    kv("k8s.pod.name", "checkout-7d9f6c5b4-x2x9q"),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| LogRecord {
                        time_unix_nano: 1_795_740_000_000_000_000 + i as u64,
                        severity_number: 9,
                        body: Some(AnyValue {
                            value: Some(Any::StringValue(String::from_utf8_lossy(l).into_owned())),
                        }),
                        attributes: vec![kv("http.route", "/cart")],
                        trace_id: vec![7; 16],
                        span_id: vec![9; 8],
                        ..LogRecord::default()
                    })
                    .collect(),
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let proto = request.encode_to_vec();
    let json = serde_json::to_vec(&request).unwrap();
    let mut g = c.benchmark_group("decode_otlp");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let mut s = Splitter::default();
    for (name, bytes, encoding) in [
        ("split_proto_100", &proto, Encoding::Proto),
        ("split_json_100", &json, Encoding::Json),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                s.split(bytes, encoding, 1 << 16).unwrap();
                assert_eq!(s.events.len(), 100);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, otlp);
criterion_main!(benches);
