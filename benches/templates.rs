//! The template miner alone, in wall time on one thread: lines per second over the loghub 2k
//! samples (each run a fresh miner over a whole file, as `examples/templates_eval.rs` does),
//! over the reference workload, a flood of new templates at the cap, and a 64 KiB line of
//! 10,000 tokens against one of 1,000 (linear time).
//!
//! Lines per *CPU*-second come from `examples/templates_eval.rs`, which reads the thread's CPU
//! clock over rounds of 0.1 s and more: the kernel's per-thread counter advances by scheduler
//! ticks, too coarsely for criterion's short samples.
//!
//! The loghub files come from `LOGHUB_DIR` (any of the 16 datasets), else
//! `../shared/data/loghub` (four); without either, only the other benchmarks run.
mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use logmill::reduce::templates::{Miner, MinerConfig};
use logmill::workload::Kind;

const DATASETS: [&str; 16] = [
    "Android",
    "Apache",
    "BGL",
    "HDFS",
    "HPC",
    "Hadoop",
    "HealthApp",
    "Linux",
    "Mac",
    "OpenSSH",
    "OpenStack",
    "Proxifier",
    "Spark",
    "Thunderbird",
    "Windows",
    "Zookeeper",
];

/// The `Content` column of each `*_2k.log_structured.csv` found.
fn loghub() -> Vec<(&'static str, Vec<String>)> {
    let dir = std::env::var("LOGHUB_DIR")
        .unwrap_or_else(|_| format!("{}/../shared/data/loghub", env!("CARGO_MANIFEST_DIR")));
    let mut out = Vec::new();
    for name in DATASETS {
        let Ok(text) =
            std::fs::read_to_string(format!("{dir}/{name}/{name}_2k.log_structured.csv"))
        else {
            continue;
        };
        let mut lines = text.lines();
        let header = split_csv(lines.next().unwrap_or(""));
        let Some(content) = header.iter().position(|h| h == "Content") else {
            continue;
        };
        out.push((
            name,
            lines.map(|l| split_csv(l).swap_remove(content)).collect(),
        ));
    }
    if out.is_empty() {
        eprintln!("no loghub samples under {dir}: set LOGHUB_DIR for the loghub benchmarks");
    }
    out
}

/// One CSV record as loghub writes them: quoted fields with `""` escapes, no newlines.
fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn mine_all(lines: &[String], config: MinerConfig) -> usize {
    let mut m = Miner::new(config);
    for l in lines {
        std::hint::black_box(m.observe(l).id);
    }
    m.len()
}

fn bench(c: &mut Criterion) {
    let samples = loghub();
    let mut g = c.benchmark_group("templates_loghub");
    for (name, lines) in &samples {
        g.throughput(Throughput::Elements(lines.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| mine_all(lines, MinerConfig::default()))
        });
    }
    if samples.len() > 1 {
        let total: usize = samples.iter().map(|(_, l)| l.len()).sum();
        g.throughput(Throughput::Elements(total as u64));
        g.bench_function(format!("all_{}", samples.len()), |b| {
            b.iter(|| {
                samples
                    .iter()
                    .map(|(_, l)| mine_all(l, MinerConfig::default()))
                    .sum::<usize>()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("templates_workload");
    for kind in [Kind::Nginx, Kind::Json] {
        let lines: Vec<String> = common::lines(kind, 20_000)
            .into_iter()
            .map(|l| String::from_utf8(l).expect("utf-8"))
            .collect();
        // Steady state: the miner has seen the workload once already.
        let mut m = Miner::new(MinerConfig::default());
        lines.iter().for_each(|l| {
            m.observe(l);
        });
        g.throughput(Throughput::Elements(lines.len() as u64));
        g.bench_function(format!("{kind:?}").to_lowercase(), |b| {
            b.iter(|| {
                for l in &lines {
                    std::hint::black_box(m.observe(l).id);
                }
            })
        });
    }
    // Every line a new template at the cap: creation and eviction each time.
    let mut m = Miner::new(MinerConfig::default());
    let mut n = 0u64;
    let mut line = String::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function("flood_of_new_templates_at_cap", |b| {
        b.iter(|| {
            n += 1;
            line.clear();
            let mut k = n;
            // A distinct sequence of words, no digits: a new shape every time.
            while k > 0 {
                line.push_str(["alpha ", "beta ", "gamma ", "delta "][(k % 4) as usize]);
                line.push(char::from(b'a' + (k % 26) as u8));
                line.push(' ');
                k /= 4;
            }
            std::hint::black_box(m.observe(&line).id);
        })
    });
    g.finish();

    // Linear time in the line: 10x the tokens, 10x the time (the slow path each time: a
    // fresh miner, so the line is tokenised, searched for and made a template).
    let mut g = c.benchmark_group("templates_long_line");
    let config = MinerConfig {
        max_tokens: 16_384,
        ..MinerConfig::default()
    };
    for tokens in [1_000usize, 10_000] {
        let line: String = (0..tokens)
            .map(|i| match i % 3 {
                0 => format!("k{i}=v{i}"),
                1 => format!("w{}x", i % 97),
                _ => "(a.b)".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        g.throughput(Throughput::Bytes(line.len() as u64));
        g.bench_with_input(BenchmarkId::new("tokens", tokens), &line, |b, line| {
            b.iter(|| {
                let mut m = Miner::new(config);
                std::hint::black_box(m.observe(line).id)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
