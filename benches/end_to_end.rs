//! End to end on one core: bytes to fates and aggregates through `Engine`, for the reference
//! workloads with the bench rules, with 5 matching rules, and with 500 rules of which 5 match.
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::decode::{InputFormat, Limits};
use logmill::engine::Engine;
use logmill::workload::Kind;

fn end_to_end(c: &mut Criterion) {
    for (kind, name) in [(Kind::Nginx, "nginx"), (Kind::Json, "json")] {
        let lines = common::lines(kind, 4096);
        let records = common::records(&lines);
        let mut g = c.benchmark_group(format!("engine_{name}"));
        g.throughput(Throughput::Elements(records.len() as u64));
        for (label, rules) in [
            ("bench_rules", common::rules(name, 0, 0)),
            ("5_rules_match", common::rules(name, 4, 0)),
            ("500_rules_5_match", common::rules(name, 4, 495)),
        ] {
            let program = common::program(&rules);
            let mut engine = Engine::new(program, InputFormat::Auto, Limits::default());
            let mut fates = Vec::new();
            g.bench_function(label, |b| {
                b.iter(|| {
                    for batch in records.chunks(1024) {
                        engine.process(batch, 0, &mut fates);
                    }
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
