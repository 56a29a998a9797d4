//! Correlate: gathering trace events into summaries and edges, and the repartition stage's
//! share of it (writing a trace event for the internal topic, reading it back, admitting it).
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::correlate::repartition::{self, Admit, Merge, Position};
use logmill::correlate::traces::{Config, Gatherer, TraceEvent};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::Version;
use logmill::engine::{Engine, Record};
use logmill::workload::Kind;

/// The trace events of `gen traces` as the engine finds them, with their texts.
fn trace_events(n: u64) -> (Vec<TraceEvent>, String) {
    let lines = common::lines(Kind::Traces, n);
    let rules = std::fs::read_to_string(format!(
        "{}/tests/data/traces/rules.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record {
            payload: l,
            topic: "logs",
            version: Version {
                offset: i as u64,
                ..Default::default()
            },
            event_ms: 0,
            part: logmill::decode::Part::Whole,
        })
        .collect();
    let mut engine = Engine::new(
        common::program(&rules),
        InputFormat::Auto,
        Limits::default(),
    );
    let mut fates = Vec::new();
    engine.process(&records, 0, &mut fates);
    (
        std::mem::take(&mut engine.trace_events),
        std::mem::take(&mut engine.text),
    )
}

fn correlate(c: &mut Criterion) {
    let (events, text) = trace_events(100_000);
    assert!(events.len() > 90_000, "{}", events.len());
    let mut g = c.benchmark_group("correlate");
    g.throughput(Throughput::Elements(events.len() as u64));
    let mut out = String::new();
    g.bench_function("gather", |b| {
        b.iter(|| {
            let mut gatherer = Gatherer::new(Config::default());
            out.clear();
            for e in &events {
                gatherer.observe(e, &text, &mut out);
            }
            gatherer.flush(&mut out);
        })
    });
    // What each side of the stage adds: the republishing worker writes each event, the
    // internal partition's worker reads it back and admits it, then gathers as above.
    let mut payload = Vec::new();
    g.bench_function("repartition_encode", |b| {
        b.iter(|| {
            for (i, e) in events.iter().enumerate() {
                let at = Position {
                    offset: i as i64,
                    ..Position::default()
                };
                payload.clear();
                repartition::encode(&mut payload, ("logs", (i % 4) as i32), at, e, &text);
            }
        })
    });
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut p = Vec::new();
            let at = Position {
                offset: i as i64,
                ..Position::default()
            };
            repartition::encode(&mut p, ("logs", (i % 4) as i32), at, e, &text);
            p
        })
        .collect();
    g.bench_function("repartition_decode_admit", |b| {
        b.iter(|| {
            let mut merge = Merge::default();
            let mut admitted = 0;
            for p in &encoded {
                let r = repartition::decode(p).unwrap();
                if let Admit::Accept { .. } = merge.admit(&r, 300_000, 30_000, 4) {
                    admitted += 1;
                }
            }
            assert_eq!(admitted, encoded.len());
        })
    });
    g.finish();
}

criterion_group!(benches, correlate);
criterion_main!(benches);
