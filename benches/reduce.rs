//! Reduction (issue 7) on one core, on the mixed workload: the engine alone with the rules of
//! `benches/rules/reduce.yaml` without their `reduce` blocks (plain derivation), the engine
//! then the reducer with every action on (what replay's workers and its writer do, here one
//! after the other), the engine alone with those rules (its asks: keys, times, messages), and
//! the reducer alone over the engine's asks made beforehand (what the writer thread costs). A fresh reducer each iteration: windows and templates are built from
//! nothing, as in a replay of the same lines.
mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logmill::decode::{InputFormat, Limits, Part};
use logmill::engine::Engine;
use logmill::reduce::reducer::Out;
use logmill::reduce::{Ask, Reducer, Reduction, Source};
use logmill::workload::Kind;

const LINES: u64 = 50_000;

/// The rules without their `reduce` blocks, as `benches/e2e.sh` makes them.
fn plain(rules: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in rules.lines() {
        if line == "    reduce:" {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("      ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn source(i: usize) -> Source {
    Source {
        partition: 0,
        offset: i as i64,
        timestamp_ms: None,
        part: Part::Whole,
    }
}

fn reduction(c: &mut Criterion) {
    let lines = common::lines(Kind::Mixed, LINES);
    let records = common::records(&lines);
    let text = common::bench_rules("reduce");
    let plain = common::program(&plain(&text));
    let reducing = common::program(&text);
    assert!(plain.rules.iter().all(|r| r.reduce.is_none()));

    // The engine's asks and texts of each batch, for the reducer alone.
    let mut engine = Engine::new(reducing.clone(), InputFormat::Auto, Limits::default());
    let mut fates = Vec::new();
    let asked: Vec<(Vec<Ask>, String)> = records
        .chunks(1024)
        .map(|batch| {
            engine.process(batch, 0, &mut fates);
            (engine.asks.clone(), engine.text.clone())
        })
        .collect();

    let mut g = c.benchmark_group("reduce_mixed");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records.len() as u64));
    let mut engine = Engine::new(plain, InputFormat::Auto, Limits::default());
    g.bench_function("plain_derivation", |b| {
        b.iter(|| {
            for batch in records.chunks(1024) {
                engine.process(batch, 0, &mut fates);
            }
        })
    });
    let mut engine = Engine::new(reducing.clone(), InputFormat::Auto, Limits::default());
    g.bench_function("engine_asking", |b| {
        b.iter(|| {
            for batch in records.chunks(1024) {
                engine.process(batch, 0, &mut fates);
            }
        })
    });
    let mut outs: Vec<Out> = Vec::new();
    g.bench_function("every_action_on", |b| {
        b.iter_batched_ref(
            || (Reducer::new(), Reduction::new(&reducing)),
            |(reducer, counts)| {
                for (n, batch) in records.chunks(1024).enumerate() {
                    engine.process(batch, 0, &mut fates);
                    outs.clear();
                    let record = |i: usize| (batch[i].payload, 0, source(n * 1024 + i));
                    reducer.batch(
                        &reducing,
                        &engine.asks,
                        &engine.text,
                        record,
                        counts,
                        &mut outs,
                    );
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("reducer_alone", |b| {
        b.iter_batched_ref(
            || (Reducer::new(), Reduction::new(&reducing)),
            |(reducer, counts)| {
                for (n, (batch, (asks, text))) in records.chunks(1024).zip(&asked).enumerate() {
                    outs.clear();
                    let record = |i: usize| (batch[i].payload, 0, source(n * 1024 + i));
                    reducer.batch(&reducing, asks, text, record, counts, &mut outs);
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, reduction);
criterion_main!(benches);
