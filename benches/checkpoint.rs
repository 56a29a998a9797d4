//! Checkpoint cost at scale, without Kafka: a full snapshot (encode and compress), an
//! incremental one with 10,000 changed series, and a restore (decompress and decode the full
//! one and the incremental one), at 10,000, 100,000 and 1,000,000 live series of a counter and
//! a histogram labelled by route and service. The bytes each writes are printed once per size
//! (criterion measures time only); `cargo bench --bench checkpoint`, numbers in RESULTS.md.
mod common;

use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use logmill::checkpoint::blob;
use logmill::derive::{Aggregates, Stamp, Version, push_label, snapshot};
use logmill::rules::Program;
use logmill::rules::program::Op;

const RULES: &str = "team: bench\nrules:\n  - name: routes\n    format: json\n    metrics:\n      - {name: route_requests_total, type: counter, labels: {route: route, service: service}, max_series: 2000000}\n      - {name: route_seconds, type: histogram, value: took, labels: {route: route, service: service}, max_series: 2000000, buckets: [0.01, 0.1, 1]}\n";

/// Live state with `n` series: 90% counters, 10% histograms, merged from workers as the
/// service merges them.
fn state(program: &Program, n: usize) -> Aggregates {
    let mut live = Aggregates::new(program);
    let mut local = Aggregates::new(program);
    for i in 0..n {
        let mut k = Vec::new();
        push_label(&mut k, &format!("/api/v1/items/{i:07}"));
        push_label(&mut k, &format!("svc-{:02}", i % 40));
        let at = Stamp {
            version: Version {
                offset: i as u64,
                ..Version::default()
            },
            event_ms: 1_700_000_000_000,
            now_ms: 0,
        };
        if i % 10 == 0 {
            local.update(1, &program.families[1], &k, Op::Observe, 0.05, at);
        } else {
            local.update(0, &program.families[0], &k, Op::CounterAdd, 1.0, at);
        }
        if local.series_count() >= 50_000 {
            live.merge_from(&mut local, program, 0);
        }
    }
    live.merge_from(&mut local, program, 0);
    live.take_changes();
    live
}

/// Touches `changed` series spread over the state.
fn touch(program: &Program, live: &mut Aggregates, n: usize, changed: usize) {
    let mut local = Aggregates::new(program);
    let step = (n / changed).max(1);
    for i in (0..n).step_by(step).take(changed) {
        let mut k = Vec::new();
        push_label(&mut k, &format!("/api/v1/items/{i:07}"));
        push_label(&mut k, &format!("svc-{:02}", i % 40));
        let fid = usize::from(i % 10 == 0);
        let op = if fid == 1 {
            Op::Observe
        } else {
            Op::CounterAdd
        };
        local.update(fid, &program.families[fid], &k, op, 1.0, Stamp::default());
    }
    live.merge_from(&mut local, program, 0);
}

fn bytes(raw: &[u8]) -> usize {
    blob::split(raw, 512 * 1024).iter().map(Vec::len).sum()
}

fn checkpoint(c: &mut Criterion) {
    let program = common::program(RULES);
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for n in [10_000, 100_000, 1_000_000] {
        let mut live = state(&program, n);
        let full = snapshot::encode(&program, &live);
        touch(&program, &mut live, n, 10_000);
        let changes = live.take_changes();
        let delta = snapshot::encode_changes(&program, &changes);
        eprintln!(
            "checkpoint/{n}: full {} B raw, {} B compressed; 10,000 changed: {} B raw, {} B compressed",
            full.len(),
            bytes(&full),
            delta.len(),
            bytes(&delta)
        );
        g.bench_function(format!("full_{n}"), |b| {
            b.iter(|| blob::split(&snapshot::encode(&program, &live), 512 * 1024))
        });
        g.bench_function(format!("delta_10000_of_{n}"), |b| {
            b.iter_batched(
                || {
                    let mut l = live.clone();
                    touch(&program, &mut l, n, 10_000);
                    l
                },
                // The state goes back out, so that dropping it is not timed.
                |mut l| {
                    let c = l.take_changes();
                    let chunks = blob::split(&snapshot::encode_changes(&program, &c), 512 * 1024);
                    (l, chunks)
                },
                BatchSize::LargeInput,
            )
        });
        let stored: Vec<Vec<u8>> = vec![full.clone(), delta.clone()];
        let pieces: Vec<(Vec<Vec<u8>>, u64)> = stored
            .iter()
            .map(|raw| (blob::split(raw, 512 * 1024), raw.len() as u64))
            .collect();
        g.bench_function(format!("restore_{n}"), |b| {
            b.iter(|| {
                let mut aggs = Aggregates::new(&program);
                for (chunks, raw_len) in &pieces {
                    let refs: Vec<_> = chunks
                        .iter()
                        .enumerate()
                        .map(|(i, c)| logmill::checkpoint::ChunkRef {
                            offset: i as i64,
                            len: c.len() as u32,
                            crc: blob::checksum(c),
                        })
                        .collect();
                    let found: Vec<Option<Vec<u8>>> = chunks.iter().cloned().map(Some).collect();
                    let raw = blob::join(&refs, &found, *raw_len).unwrap();
                    snapshot::restore(&program, &raw, &mut aggs).unwrap();
                }
                assert_eq!(aggs.series_count(), n);
                aggs
            })
        });
    }
    g.finish();
}

criterion_group!(benches, checkpoint);
criterion_main!(benches);
