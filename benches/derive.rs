//! Derive: one update into worker-local aggregates, and the merge into the registry.
mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logmill::derive::{Aggregates, Stamp, Version, push_label};
use logmill::rules::program::Op;

fn derive(c: &mut Criterion) {
    let program = common::program(&common::bench_rules("nginx"));
    let counter = program.family_by_name("http_requests_total").unwrap();
    let hist = program
        .family_by_name("http_request_duration_seconds")
        .unwrap();
    let methods = ["GET", "POST", "PUT", "DELETE", "HEAD"];
    let statuses = ["200", "201", "304", "404", "500", "503"];
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let mut k = Vec::new();
            push_label(&mut k, methods[i % 5]);
            push_label(&mut k, statuses[i % 6]);
            k
        })
        .collect();
    let mut g = c.benchmark_group("derive");
    g.throughput(Throughput::Elements(keys.len() as u64));
    let mut agg = Aggregates::new(&program);
    g.bench_function("counter_2_labels", |b| {
        b.iter(|| {
            for (i, k) in keys.iter().enumerate() {
                agg.update(
                    counter,
                    &program.families[counter],
                    k,
                    Op::CounterAdd,
                    1.0,
                    Stamp {
                        version: Version {
                            offset: i as u64,
                            ..Version::default()
                        },
                        ..Stamp::default()
                    },
                );
            }
        })
    });
    let hkeys: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let mut k = Vec::new();
            push_label(&mut k, methods[i % 5]);
            k
        })
        .collect();
    g.bench_function("histogram_observe", |b| {
        b.iter(|| {
            for (i, k) in hkeys.iter().enumerate() {
                agg.update(
                    hist,
                    &program.families[hist],
                    k,
                    Op::Observe,
                    (i % 100) as f64 / 50.0,
                    Stamp::default(),
                );
            }
        })
    });
    g.bench_function("merge_30_series", |b| {
        b.iter_batched(
            || (agg.clone(), Aggregates::new(&program)),
            |(mut local, mut global)| global.merge_from(&mut local, &program, 0),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, derive);
criterion_main!(benches);
