//! Issue 7: reduction through `logmill replay`. Exact accounting (for every template and every
//! dedupe or throttle key, the events kept plus those its summaries count are the events that
//! came in), and floods that stay within the caps.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;

use crate::support::*;

/// The JSON workload without error levels (those are never reduced, so they would not be in
/// any action's accounting).
fn workload(n: u64) -> Vec<String> {
    let out = run(&["gen", "json", &n.to_string(), "--seed", "11"]);
    stdout(&out)
        .lines()
        .filter(|l| !l.contains("\"level\":\"error\"") && !l.contains("\"level\":\"fatal\""))
        .map(str::to_string)
        .collect()
}

/// A JSON string field of a line (the workload has no escapes in these fields).
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":\"");
    let at = line.find(&key).map(|i| i + key.len()).unwrap_or(line.len());
    &line[at..at + line[at..].find('"').unwrap_or(0)]
}

/// Replays `lines` under `reduce` (the rule's `reduce:` body): the kept events (`event`,
/// `template_id`) and the summaries, as raw JSON lines.
fn replay(tmp: &TempDir, reduce: &str, lines: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let rules = tmp.path("rules.yaml");
    std::fs::write(
        &rules,
        format!("team: t\nrules:\n  - name: r\n    format: json\n    metrics: [{{name: r_total, type: counter, help: R.}}]\n    reduce:\n      time: ts\n      message: msg\n{reduce}"),
    )
    .unwrap();
    let input = tmp.path("in.log");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let kept = tmp.path("kept.json");
    let out = run(&[
        "replay",
        "-q",
        "--logs-json",
        "--rules",
        rules.to_str().unwrap(),
        "--logs-out",
        kept.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(kept).unwrap();
    let mut events = Vec::new();
    let mut summaries = Vec::new();
    for l in text.lines() {
        if l.starts_with("{\"logmill\":\"summary\"") {
            summaries.push(l.to_string());
        } else {
            // {"event":"<escaped line>"[,"sample_rate":N][,"template_id":"..."]}
            let rest = l.strip_prefix("{\"event\":\"").unwrap();
            let (event, meta) = json_string(rest);
            events.push((event, field(meta, "template_id").to_string()));
        }
    }
    (events, summaries)
}

/// A JSON string's text from just after its opening quote, unescaped (the escapes replay
/// writes), and what follows it.
fn json_string(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(c) => out.push(c),
                None => {}
            },
            c => out.push(c),
        }
    }
    (out, "")
}

fn count_of(summary: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = summary.find(&key).unwrap() + key.len();
    summary[at..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Per template: lines in = kept with that template + suppressed in its summaries. The
/// templates are `logmill templates` on the same messages (the same miner, the same order).
#[test]
fn issue7_patterns_account_for_every_event() {
    let tmp = TempDir::new("i7-acct-patterns");
    let lines = workload(20_000);
    std::fs::write(tmp.path("all.log"), lines.join("\n") + "\n").unwrap();
    let csv = run(&[
        "templates",
        "--field",
        "msg",
        tmp.path("all.log").to_str().unwrap(),
    ]);
    assert!(csv.status.success(), "{}", stderr(&csv));
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for row in stdout(&csv).lines().skip(1) {
        let id = row.split(',').nth(1).unwrap().to_string();
        *want.entry(id).or_default() += 1;
    }
    let (events, summaries) = replay(&tmp, "      patterns: {keep: 3, per: 1m}\n", &lines);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for (_, t) in &events {
        *got.entry(t.clone()).or_default() += 1;
    }
    for s in &summaries {
        *got.entry(field(s, "template_id").to_string()).or_default() += count_of(s, "suppressed");
    }
    assert!(summaries.len() >= 3, "{}", summaries.len());
    assert!(
        events.len() < lines.len() / 2,
        "{} kept of {}",
        events.len(),
        lines.len()
    );
    assert_eq!(got, want);
}

/// Per dedupe key (template and service): in = kept + repeat counts.
#[test]
fn issue7_dedupe_and_throttle_account_for_every_event() {
    let tmp = TempDir::new("i7-acct-keys");
    let lines = workload(20_000);
    let (events, summaries) = replay(
        &tmp,
        "      dedupe: {window: 10s, key: [service]}\n",
        &lines,
    );
    let mut kept_by: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (e, t) in &events {
        *kept_by
            .entry((t.clone(), field(e, "service").to_string()))
            .or_default() += 1;
    }
    let mut repeats: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in &summaries {
        *repeats
            .entry((
                field(s, "template_id").to_string(),
                field(s, "service").to_string(),
            ))
            .or_default() += count_of(s, "repeat_count");
    }
    let total: u64 = kept_by.values().sum::<u64>() + repeats.values().sum::<u64>();
    assert_eq!(total, lines.len() as u64);
    // Every key with repeats was kept once per window at least.
    for k in repeats.keys() {
        assert!(kept_by.contains_key(k), "{k:?}");
    }
    let (events, summaries) = replay(
        &tmp,
        "      throttle: {limit: 5, per: 10s, key: [service]}\n",
        &lines,
    );
    let mut in_by: BTreeMap<String, u64> = BTreeMap::new();
    for l in &lines {
        *in_by.entry(field(l, "service").to_string()).or_default() += 1;
    }
    let mut out_by: BTreeMap<String, u64> = BTreeMap::new();
    for (e, _) in &events {
        *out_by.entry(field(e, "service").to_string()).or_default() += 1;
    }
    for s in &summaries {
        *out_by.entry(field(s, "service").to_string()).or_default() += count_of(s, "suppressed");
    }
    assert_eq!(out_by, in_by);
}

/// Peak resident memory of a finished child, from its own accounting (`/usr/bin/time`-less:
/// the test reads VmHWM while it runs).
pub(crate) fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Streams `n` generated lines into `logmill replay` under `reduce`, and returns its stderr
/// summary and its peak resident memory.
fn flood(reduce: &str, n: u64, line: impl Fn(u64, &mut String) + Send + 'static) -> (String, f64) {
    let tmp = TempDir::new(&format!("i7-flood-{}", reduce.len()));
    let rules = tmp.path("rules.yaml");
    std::fs::write(
        &rules,
        format!("team: t\nrules:\n  - name: r\n    format: logfmt\n    metrics: [{{name: r_total, type: counter, help: R.}}]\n    reduce:\n{reduce}"),
    )
    .unwrap();
    let mut child = logmill()
        .args([
            "replay",
            "--rules",
            rules.to_str().unwrap(),
            "--metrics-out",
            "/dev/null",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut buf = String::new();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut stdin);
        for i in 0..n {
            buf.clear();
            line(i, &mut buf);
            buf.push('\n');
            out.write_all(buf.as_bytes()).unwrap();
        }
    });
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_mib(pid));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (stderr(&out), peak)
}

/// Ten million distinct dedupe keys: the windows stay at the cap, the oldest closed early and
/// counted; memory does not grow with the keys (the same peak as for a million).
#[test]
fn issue7_a_flood_of_keys_stays_within_the_caps() {
    let keys = |i: u64, s: &mut String| {
        use std::fmt::Write;
        let _ = write!(s, "k={i:x} msg=\"job done\"");
    };
    let reduce = "      dedupe: {window: 1h, key: [k]}\n      max_keys: 10000\n";
    let (small, small_peak) = flood(reduce, 1_000_000, keys);
    assert!(small.contains("1000000 events in, 1000000 kept"), "{small}");
    let (summary, peak) = flood(reduce, 10_000_000, keys);
    assert!(
        summary.contains("10000000 events in, 10000000 kept"),
        "{summary}"
    );
    assert!(
        summary.contains("9990000 window(s) closed early at a cap"),
        "{summary}"
    );
    assert!(
        peak < small_peak * 1.5 + 20.0,
        "peak resident {peak:.0} MiB for 10 million keys, {small_peak:.0} MiB for a million"
    );
}

/// Letters only, so each is a constant word to the miner: `n` distinct words.
fn word(mut i: u64, s: &mut String) {
    i += 26;
    let start = s.len();
    while i > 0 {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
    }
    // SAFETY of the reversal: the pushed bytes are ASCII.
    let tail: String = s[start..].chars().rev().collect();
    s.truncate(start);
    s.push_str(&tail);
}

/// A million distinct templates: the miner stays at its cap and the pattern windows at
/// theirs; every event is still accounted for, and memory does not grow with the templates
/// (measured: 92 MiB at 300,000, 116 at a million, 122 at three million).
#[test]
fn issue7_a_flood_of_templates_stays_within_the_caps() {
    let templates = |i: u64, s: &mut String| {
        s.push_str("msg=\"");
        word(i, s);
        s.push(' ');
        word(i.wrapping_mul(7919) % 1_000_003, s);
        s.push_str(" finished\"");
    };
    let reduce = "      message: msg\n      patterns: {keep: 1, per: 1h}\n      max_keys: 10000\n";
    // The miner's caches fill to their caps over the first few hundred thousand lines.
    let (small, small_peak) = flood(reduce, 300_000, templates);
    assert!(small.contains("300000 events in, 300000 kept"), "{small}");
    let (summary, peak) = flood(reduce, 1_000_000, templates);
    assert!(
        summary.contains("1000000 events in, 1000000 kept"),
        "{summary}"
    );
    assert!(
        summary.contains("990000 window(s) closed early at a cap"),
        "{summary}"
    );
    assert!(
        peak < small_peak * 1.5 + 20.0,
        "peak resident {peak:.0} MiB for a million templates, {small_peak:.0} MiB for 300,000"
    );
}

/// A 64 KiB line of 10,000 tokens, repeated: mined, summarised with bounded samples, and
/// every event accounted for.
#[test]
fn issue7_a_64_kib_line_of_10000_tokens_is_reduced() {
    let tmp = TempDir::new("i7-long");
    let lines: Vec<String> = (0..50)
        .map(|n| {
            let body: Vec<String> = (0..10_000)
                .map(|i| match i % 3 {
                    0 => format!("k{}=v{}", i % 10, (i + n) % 10),
                    1 => format!("wrd{}x", i % 97),
                    _ => "(a.b)".to_string(),
                })
                .collect();
            format!(
                r#"{{"ts":"2024-03-10T12:00:{:02}Z","level":"info","msg":"{}"}}"#,
                n,
                body.join(" ")
            )
        })
        .collect();
    // Within the default 64 KiB event cap, so not dead-lettered.
    assert!(
        lines
            .iter()
            .all(|l| (60 * 1024..=64 * 1024).contains(&l.len())),
        "{}",
        lines[0].len()
    );
    let reduce = "      throttle: {limit: 10, per: 1m}\n      patterns: {keep: 2, per: 1m}\n";
    let (events, summaries) = replay(&tmp, reduce, &lines);
    assert_eq!(events.len(), 2);
    let by_action = |a: &str| -> Vec<&String> {
        summaries
            .iter()
            .filter(|s| s.contains(&format!("\"action\":\"{a}\"")))
            .collect()
    };
    let (throttled, patterned) = (by_action("throttle"), by_action("patterns"));
    assert_eq!((throttled.len(), patterned.len()), (1, 1), "{summaries:?}");
    assert_eq!(count_of(throttled[0], "suppressed"), 40);
    assert_eq!(count_of(patterned[0], "suppressed"), 8);
    // Samples and values are bounded: no summary carries its events whole.
    assert!(throttled[0].len() < 4 * 1024, "{}", throttled[0].len());
    assert!(
        patterned[0].len() < 64 * 1024 + 16 * 1024,
        "{}",
        patterned[0].len()
    );
}
