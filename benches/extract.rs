//! Extract: the split matcher against the regex crate's captures, and the prefilter's cost
//! as rules are added.
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::extract::matcher::Matcher;
use logmill::extract::prefilter::Scratch;
use logmill::workload::Kind;

const NGINX: &str = r#"^(?P<remote_addr>\S+) \S+ \S+ \[(?P<time_local>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<ua>[^"]*)" (?P<request_time>\d+\.\d+)$"#;

fn extract(c: &mut Criterion) {
    let lines: Vec<String> = common::lines(Kind::Nginx, 2000)
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    let mut g = c.benchmark_group("extract_nginx");
    g.throughput(Throughput::Elements(lines.len() as u64));
    let m = Matcher::new(NGINX).unwrap();
    assert!(m.is_split());
    let mut slots = vec![None; m.group_count()];
    let mut locs = None;
    g.bench_function("split_matcher", |b| {
        b.iter(|| {
            for l in &lines {
                assert!(m.captures(l, &mut slots, &mut locs));
            }
        })
    });
    let re = regex::Regex::new(NGINX).unwrap();
    let mut caps = re.capture_locations();
    g.bench_function("regex_captures", |b| {
        b.iter(|| {
            for l in &lines {
                assert!(re.captures_read(&mut caps, l).is_some());
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("prefilter");
    g.throughput(Throughput::Elements(lines.len() as u64));
    for extra in [0, 495] {
        let program = common::program(&common::rules("nginx", 0, extra));
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        g.bench_function(format!("rules_{}", extra + 1), |b| {
            b.iter(|| {
                for l in &lines {
                    program
                        .prefilter
                        .candidates(l.as_bytes(), &mut scratch, &mut out);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
