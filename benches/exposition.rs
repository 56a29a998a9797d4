//! Exposition: rendering a registry of 10,000 series in both formats.
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::derive::{Aggregates, push_label};
use logmill::rules::program::Op;
use logmill::sink::exposition::{ExpositionFormat, render};

fn exposition(c: &mut Criterion) {
    let program = common::program(
        "team: b\nrules:\n  - name: r\n    metrics:\n      - {name: requests_total, type: counter, labels: {route: r, code: c}, max_series: 100000}\n",
    );
    let mut agg = Aggregates::new(&program);
    for i in 0..10_000 {
        let mut k = Vec::new();
        push_label(&mut k, &format!("{}", i % 7));
        push_label(&mut k, &format!("/api/v1/route/{i}"));
        agg.update(
            0,
            &program.families[0],
            &k,
            Op::CounterAdd,
            i as f64,
            logmill::derive::Stamp::default(),
        );
    }
    let mut g = c.benchmark_group("exposition");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("text_10k_series", |b| {
        b.iter(|| render(&program, &agg, ExpositionFormat::Text, 0))
    });
    g.bench_function("openmetrics_10k_series", |b| {
        b.iter(|| render(&program, &agg, ExpositionFormat::OpenMetrics, 0))
    });
    g.finish();
}

criterion_group!(benches, exposition);
criterion_main!(benches);
