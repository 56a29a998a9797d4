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

criterion_group!(benches, decode);
criterion_main!(benches);
