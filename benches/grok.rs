//! Grok (issue 12): Logstash's compound patterns on the split matcher against the regex crate's
//! captures of the same expanded regex, and what the library costs to read and expand.
mod common;

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logmill::extract::matcher::{Matcher, Span};
use logmill::rules::grok::{self, library};
use logmill::workload::Kind;

/// Combined log lines: the nginx workload without its trailing request time.
fn combined_lines() -> Vec<String> {
    common::lines(Kind::Nginx, 2000)
        .into_iter()
        .map(|l| {
            let l = String::from_utf8(l).unwrap();
            l[..l.rfind(' ').unwrap()].to_string()
        })
        .collect()
}

/// Syslog lines as rsyslog writes them to files: `Mmm dd hh:mm:ss host prog[pid]: message`.
fn syslog_lines() -> Vec<String> {
    let progs = ["sshd", "CRON", "postfix/smtpd", "kernel", "systemd"];
    let msgs = [
        "Accepted publickey for deploy from 10.0.4.7 port 52114 ssh2",
        "pam_unix(cron:session): session opened for user root by (uid=0)",
        "connect from mail.example.net[198.51.100.23]",
        "Out of memory: Killed process 4242 (java) total-vm:8123456kB",
        "Started Session 812 of user deploy.",
    ];
    (0..2000u32)
        .map(|i| {
            let p = (i as usize * 7) % progs.len();
            format!(
                "Dec {:2} {:02}:{:02}:{:02} web-{} {}[{}]: {}",
                1 + i % 28,
                i % 24,
                i % 60,
                (i * 7) % 60,
                i % 9,
                progs[p],
                1000 + i * 13 % 30000,
                msgs[(i as usize * 3) % msgs.len()]
            )
        })
        .collect()
}

fn bench_pattern(c: &mut Criterion, group: &str, grok_text: &str, lines: &[String]) {
    let e = grok::expand(grok_text, &HashMap::new()).unwrap();
    let m = Matcher::new(&e.regex).unwrap();
    assert!(m.is_split(), "{grok_text} is split");
    let mut slots: Vec<Span> = vec![None; m.group_count()];
    let mut locs = None;
    let re = regex::Regex::new(&e.regex).unwrap();
    let mut caps = re.capture_locations();
    // Same answers on every line before timing either.
    for l in lines {
        assert!(m.captures(l, &mut slots, &mut locs), "{l}");
        assert!(re.captures_read(&mut caps, l).is_some());
        for (g, s) in slots.iter().enumerate() {
            assert_eq!(*s, caps.get(g), "{l}");
        }
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("split_matcher", |b| {
        b.iter(|| {
            for l in lines {
                assert!(m.captures(l, &mut slots, &mut locs));
            }
        })
    });
    g.bench_function("regex_captures", |b| {
        b.iter(|| {
            for l in lines {
                assert!(re.captures_read(&mut caps, l).is_some());
            }
        })
    });
    g.finish();
}

fn grok(c: &mut Criterion) {
    bench_pattern(
        c,
        "grok_combinedapachelog",
        "^%{COMBINEDAPACHELOG}$",
        &combined_lines(),
    );
    bench_pattern(
        c,
        "grok_syslogbase",
        "^%{SYSLOGBASE} %{GREEDYDATA:message}$",
        &syslog_lines(),
    );

    let mut g = c.benchmark_group("grok_library");
    g.bench_function("parse_all_files", |b| {
        b.iter(|| {
            library::FILES
                .iter()
                .map(|(_, text)| library::parse(text).0.len())
                .sum::<usize>()
        })
    });
    g.bench_function("regex_new_combinedapachelog", |b| {
        b.iter(|| {
            let e = grok::expand("^%{COMBINEDAPACHELOG}$", &HashMap::new()).unwrap();
            regex::Regex::new(&e.regex).unwrap()
        })
    });
    g.bench_function("compile_combinedapachelog", |b| {
        b.iter(|| {
            let e = grok::expand("^%{COMBINEDAPACHELOG}$", &HashMap::new()).unwrap();
            Matcher::new(&e.regex).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, grok);
criterion_main!(benches);
