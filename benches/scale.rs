//! The scale model of ARCHITECTURE.md ("Delivery", "At scale"), simulated with logmill's own
//! checkpoint code rather than guessed: a group of `INSTANCES` instances over `PARTITIONS`
//! partitions at `RATE` events per second, each event updating one series out of `SERIES` per
//! instance, drawn from a Zipf distribution (a few hot routes, a long tail). For each
//! checkpoint interval it measures what one instance writes to the state topic (intent,
//! incremental chunks, commit; full snapshots amortised by the rule that writes one when the
//! incremental ones add up to more), what the compacted topic holds, and what a restore reads
//! and decodes. Not criterion: one run, printed for benches/RESULTS.md.
//!
//!   cargo bench --bench scale
//!   INSTANCES=100 PARTITIONS=1000 RATE=10000000 SERIES=100000 cargo bench --bench scale

use std::time::{Duration, Instant};

use logmill::checkpoint::manifest::PartitionState;
use logmill::checkpoint::{
    BlobRef, ChunkRef, Commit, Intent, PartitionEntry, PartitionKey, blob, keys,
};
use logmill::derive::{Aggregates, Stamp, push_label, snapshot};
use logmill::rules::program::Op;
use logmill::rules::{SourceFile, compile};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A Zipf(1) sampler over `0..n` by inversion of its (approximate) CDF.
struct Zipf {
    n: f64,
    h: f64,
    state: u64,
}

impl Zipf {
    fn new(n: u64) -> Zipf {
        Zipf {
            n: n as f64,
            h: (n as f64).ln() + 0.5772,
            state: 0x2545f4914f6cdd1d,
        }
    }
    fn sample(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let u = (self.state >> 11) as f64 / (1u64 << 53) as f64;
        // H(k) ~ ln k + gamma: k = exp(u * H(n) - gamma).
        let k = (u * self.h - 0.5772).exp();
        (k as u64).min(self.n as u64 - 1)
    }
}

fn blob_ref(seq: u64, name: &str, pieces: &[Vec<u8>], raw: u64) -> BlobRef {
    BlobRef {
        seq,
        name: name.into(),
        partition: 1,
        chunks: pieces
            .iter()
            .enumerate()
            .map(|(i, p)| ChunkRef {
                offset: i as i64,
                len: p.len() as u32,
                crc: blob::checksum(p),
            })
            .collect(),
        raw_len: raw,
    }
}

fn main() {
    let instances = env_or("INSTANCES", 100);
    let partitions = env_or("PARTITIONS", 1000);
    let rate = env_or("RATE", 10_000_000);
    let series = env_or("SERIES", 100_000);
    let interval_s = env_or("INTERVAL_S", 1);
    let chunk = 512 * 1024;
    let per_instance = rate / instances * interval_s;
    let owned = partitions / instances;
    let rules = format!(
        "team: s\nrules:\n  - name: r\n    format: json\n    metrics:\n      - {{name: route_requests_total, type: counter, labels: {{route: route, service: service}}, max_series: {}}}\n",
        series * 2
    );
    let (program, d) = compile(&[SourceFile {
        name: "scale.yaml".into(),
        text: rules,
    }]);
    assert!(d.iter().all(|d| !d.is_error()));
    let key = |i: u64| {
        let mut k = Vec::new();
        push_label(&mut k, &format!("/api/v1/items/{i:07}"));
        push_label(&mut k, &format!("svc-{:02}", i % 40));
        k
    };
    // Every series has been seen once: the live state at the start of an interval.
    let mut live = Aggregates::new(&program);
    let mut local = Aggregates::new(&program);
    for i in 0..series {
        local.update(
            0,
            &program.families[0],
            &key(i),
            Op::CounterAdd,
            1.0,
            Stamp::default(),
        );
    }
    live.merge_from(&mut local, &program, 0);
    live.take_changes();
    let t = Instant::now();
    let full = snapshot::encode(&program, &live, 0);
    let full_pieces = blob::split(&full, chunk);
    let full_bytes: u64 = full_pieces.iter().map(|p| p.len() as u64).sum();
    let encode_full = t.elapsed();
    // One interval of events, in batches of 4096 merged as the service merges them.
    let mut zipf = Zipf::new(series);
    let mut left = per_instance;
    while left > 0 {
        let n = left.min(4096);
        for _ in 0..n {
            let i = zipf.sample();
            local.update(
                0,
                &program.families[0],
                &key(i),
                Op::CounterAdd,
                1.0,
                Stamp::default(),
            );
        }
        live.merge_from(&mut local, &program, 0);
        left -= n;
    }
    let t = Instant::now();
    let changes = live.take_changes();
    let changed = changes.series();
    let delta = snapshot::encode_changes(&program, &changes, 0);
    let delta_pieces = blob::split(&delta, chunk);
    let delta_bytes: u64 = delta_pieces.iter().map(|p| p.len() as u64).sum();
    let encode_delta = t.elapsed();
    // A cycle is a full snapshot and the incremental ones after it, until they add up to more
    // than it (or `max_deltas` of them). The commit at its largest names them all, every
    // partition the instance owns, and as many released ones.
    let deltas = (full_bytes / delta_bytes.max(1)).min(100);
    let entries: Vec<PartitionEntry> = (0..owned * 2)
        .map(|p| PartitionEntry {
            key: PartitionKey {
                topic: "logs".into(),
                partition: p as i32,
            },
            epoch: 0,
            next: 123_456_789,
            owned: p < owned,
            state: PartitionState::Inline(vec![1; 9]),
            reduce: None,
        })
        .collect();
    let commit = Commit {
        group: "logmill".into(),
        instance: "logmill-42".into(),
        anonymous: false,
        seq: 1_000_000,
        at_ms: 0,
        subscription: "logs".into(),
        rules_hash: 0,
        base: Some(blob_ref(1, "base", &full_pieces, full.len() as u64)),
        deltas: (0..deltas)
            .map(|d| blob_ref(2 + d, "delta", &delta_pieces, delta.len() as u64))
            .collect(),
        partitions: entries,
    };
    let commit_bytes = commit.encode().len() as u64;
    let intent = Intent {
        seq: 1,
        keys: (0..delta_pieces.len())
            .map(|n| keys::chunk("logmill", "logmill-42", 1, "delta", n))
            .collect(),
    };
    let intent_bytes = intent.encode().len() as u64;
    let full_every = deltas + 1;
    let per_checkpoint =
        (full_bytes + deltas * delta_bytes) / full_every + commit_bytes + intent_bytes;
    // Restore: the full snapshot and up to as many bytes of incremental ones.
    let t = Instant::now();
    let mut restored = Aggregates::new(&program);
    snapshot::restore(&program, &full, &mut restored).unwrap();
    for _ in 0..deltas {
        snapshot::restore(&program, &delta, &mut restored).unwrap();
    }
    let decode = t.elapsed();
    let restore_bytes = full_bytes + deltas * delta_bytes;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "model: {instances} instances, {partitions} partitions ({owned} each), {rate} events/s ({per_instance} per instance per {interval_s} s checkpoint), {series} series per instance"
    );
    println!(
        "per checkpoint of one instance: {changed} series changed; incremental {delta_bytes} B in {} chunk(s) ({:.1} ms to encode); commit {commit_bytes} B naming {deltas} incremental blobs; intent {intent_bytes} B; full snapshot {full_bytes} B ({:.1} ms), every {full_every} checkpoints",
        delta_pieces.len(),
        encode_delta.as_secs_f64() * 1e3,
        encode_full.as_secs_f64() * 1e3,
    );
    println!(
        "state topic: {:.2} MiB/s written by the group ({per_checkpoint} B per instance per checkpoint), {} records/s; compacted size at most {:.0} MiB (full + incremental ≤ 2 × full per instance)",
        mib(per_checkpoint * instances) / interval_s as f64,
        (instances * (2 + delta_pieces.len() as u64)) / interval_s,
        mib(restore_bytes * instances)
    );
    println!(
        "restore after the whole group restarts: each instance reads {:.1} MiB of its own chunks by offset and decodes them in {:.2} s; the commit partition holds {:.1} KiB for all; the chunk partitions serve {:.0} MiB to the group at once",
        mib(restore_bytes),
        decode.as_secs_f64(),
        (commit_bytes * instances) as f64 / 1024.0,
        mib(restore_bytes * instances)
    );
    let _ = Duration::ZERO;
}
