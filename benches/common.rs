//! Shared bench setup: workloads and compiled rule sets.
#![allow(dead_code)]

use std::sync::Arc;

use logmill::engine::Record;
use logmill::rules::{Program, SourceFile, compile};
use logmill::workload::{Kind, generate};

pub fn lines(kind: Kind, n: u64) -> Vec<Vec<u8>> {
    generate(kind, n, 42)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// `lines` as records of topic `bench`, numbered by their offsets.
pub fn records(lines: &[Vec<u8>]) -> Vec<Record<'_>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record {
            payload: l,
            topic: "bench",
            version: logmill::derive::Version {
                offset: i as u64,
                ..Default::default()
            },
            event_ms: 0,
            part: logmill::decode::Part::Whole,
        })
        .collect()
}

pub fn program(text: &str) -> Arc<Program> {
    let (program, diags) = compile(&[SourceFile {
        name: "bench.yaml".into(),
        text: text.to_string(),
    }]);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    Arc::new(program)
}

pub fn bench_rules(kind: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/benches/rules/{kind}.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The bench rules, plus `also` rules that match every line (so a line is evaluated by
/// `1 + also` rules), plus `noise` rules that never match: each keys on its own literal, as
/// team rules do, so the prefilter has `noise` more literals to look for.
pub fn rules(kind: &str, also: usize, noise: usize) -> String {
    let mut text = bench_rules(kind);
    for i in 0..also {
        text.push_str(&if kind == "nginx" {
            format!("  - name: also_{i}\n    format: text\n    extract:\n      - regex: '\"(?P<method>[A-Z]+) (?P<path>\\S+) HTTP/[0-9.]+\" (?P<status>\\d{{3}}) '\n    metrics:\n      - {{name: also_{i}_total, type: counter, labels: {{status: status}}}}\n")
        } else {
            format!("  - name: also_{i}\n    format: json\n    match: {{fields: {{status: {{exists: true}}}}}}\n    metrics:\n      - {{name: also_{i}_total, type: counter, labels: {{status: status}}}}\n")
        });
    }
    for i in 0..noise {
        text.push_str(&format!(
            "  - name: noise_{i}\n    match:\n      contains: \"svc-{i:04}-marker\"\n    extract:\n      - regex: 'svc-{i:04}-marker (?P<v>\\d+)'\n    metrics:\n      - {{name: noise_{i}_total, type: counter, value: v}}\n"
        ));
    }
    text
}
