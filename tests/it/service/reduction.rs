//! Issue 7: reduction in the service. Decisions depend only on each partition's records in
//! order, so after crashes and partition moves the kept topic (replays dropped by their source
//! headers, summaries by their ids) holds exactly what replay decides partition by partition.

use super::*;

const REDUCE_RULES: &str = r#"team: it
rules:
  - name: app
    format: logfmt
    metrics:
      - {name: it_app_total, type: counter, help: App events., labels: {svc: svc}}
    reduce:
      time: {field: ts, format: unix_ms}
      sample: {rate: 2, key: [tid]}
      dedupe: {window: 5s, key: [svc]}
      throttle: {limit: 3, per: 2s, key: [svc]}
      patterns: {keep: 2, per: 10s}
"#;

/// Event `i` of partition `p`: services, traces and a few templates, 40 ms apart.
fn app_event(p: i32, i: u64) -> String {
    let svc = ["a", "b", "c"][(i % 3) as usize];
    let msg = match i % 5 {
        0 => format!("request {i} took {}ms", i % 97),
        1 => format!("cache miss for key k{}", i % 13),
        2 => "health ok".to_string(),
        3 => format!("user u{} logged in from 10.0.{}.{}", i % 7, i % 3, i % 250),
        _ => format!("queue depth {}", i % 11),
    };
    format!(
        "ts={} p={p} n={i} svc={svc} tid=t{} msg=\"{msg}\"",
        1_700_000_000_000 + i * 40,
        i / 4
    )
}

/// `n` app events per partition, each partition closed by a far-future event.
fn app_partitions(partitions: i32, n: u64) -> Vec<Vec<String>> {
    (0..partitions)
        .map(|p| {
            let mut v: Vec<String> = (0..n).map(|i| app_event(p, i)).collect();
            v.push(closing_event(p));
            v
        })
        .collect()
}

/// A record far in the future that closes every window of its partition.
fn closing_event(p: i32) -> String {
    format!("ts=1800000000000 p={p} n=-1 svc=z tid=end msg=\"the end\"")
}

/// What replay decides for one partition's lines: the kept events, and the summaries without
/// what names the partition and offsets (replay is one partition, at byte offsets).
fn replay_partition(dir: &Path, p: i32, lines: &[String]) -> (Vec<String>, Vec<String>) {
    let input = dir.join(format!("p{p}.log"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let kept = dir.join(format!("p{p}.kept"));
    let out = run(&[
        "replay",
        "-q",
        "--rules",
        dir.join("rules.yaml").to_str().unwrap(),
        "--logs-out",
        kept.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(kept).unwrap();
    let (summaries, events): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|l| l.starts_with("{\"logmill\":\"summary\""));
    (
        events.into_iter().map(str::to_string).collect(),
        summaries.into_iter().map(comparable).collect(),
    )
}

/// A summary without its id, partition and offsets, which depend on where it was made.
fn comparable(s: &str) -> String {
    let mut out = Vec::new();
    for part in s.trim_start_matches('{').trim_end_matches('}').split(",\"") {
        let name = part.trim_start_matches('"').split('"').next().unwrap_or("");
        if !matches!(name, "id" | "partition" | "first_offset" | "last_offset") {
            out.push(part.to_string());
        }
    }
    out.join(",\"")
}

/// Every record of the kept topic with its headers.
fn kept_records(bootstrap: &str) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
    let (c, partitions) = reader(bootstrap, "kept");
    let mut highs = BTreeMap::new();
    for &p in &partitions {
        highs.insert(
            p,
            c.fetch_watermarks("kept", p, Duration::from_secs(5))
                .unwrap()
                .1,
        );
    }
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while highs
        .iter()
        .any(|(p, h)| pos.get(p).copied().unwrap_or(0) < *h)
        && Instant::now() < deadline
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            pos.insert(m.partition(), m.offset() + 1);
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

/// The kept topic as sets: events (replays removed by their source) and summaries (replays
/// removed by their id), each in the form replay writes it.
fn kept_sets(bootstrap: &str) -> (HashSet<String>, Vec<String>) {
    let mut events = BTreeMap::new();
    let mut summaries = BTreeMap::new();
    for (payload, h) in kept_records(bootstrap) {
        let text = String::from_utf8(payload).unwrap();
        if h.get("logmill.kind").map(String::as_str) == Some("summary") {
            summaries.insert(h["logmill.summary.id"].clone(), comparable(&text));
        } else {
            events.insert(
                format!(
                    "{}/{}",
                    h["logmill.source.partition"], h["logmill.source.offset"]
                ),
                text,
            );
        }
    }
    let mut s: Vec<String> = summaries.into_values().collect();
    s.sort();
    (events.into_values().collect(), s)
}

fn produce_partitions(bootstrap: &str, per_partition: &[Vec<String>]) {
    let records: Vec<Rec> = per_partition
        .iter()
        .enumerate()
        .flat_map(|(p, lines)| {
            lines
                .iter()
                .map(move |l| Rec::new("logs", l.clone()).partition(p as i32))
        })
        .collect();
    produce_records(bootstrap, &[], records);
}

/// What replay decides, partition by partition.
fn replay_all(dir: &Path, per_partition: &[Vec<String>]) -> (HashSet<String>, Vec<String>) {
    let mut events = HashSet::new();
    let mut summaries = Vec::new();
    for (p, lines) in per_partition.iter().enumerate() {
        let (e, s) = replay_partition(dir, p as i32, lines);
        events.extend(e);
        summaries.extend(s);
    }
    summaries.sort();
    (events, summaries)
}

/// The last run counted `total` app events and the kept topic, replays dropped, holds what
/// replay keeps partition by partition, summaries included.
fn assert_counted_and_kept_as_replay(
    bootstrap: &str,
    cfg: &Path,
    port: u16,
    total: f64,
    want_events: &HashSet<String>,
    want_summaries: &[String],
) {
    assert!(
        wait_for(Duration::from_secs(120), || {
            scrape(port).is_some_and(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("it_app_total"))
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    == total
            }) && ready(port) == 200
        }),
        "{:?}\n{}",
        scrape(port),
        log_of(cfg)
    );
    let (events, summaries) = kept_sets(bootstrap);
    assert_same(
        &events.iter().map(|e| e.as_bytes().to_vec()).collect(),
        &want_events.iter().map(|e| e.as_bytes().to_vec()).collect(),
        "kept events",
    );
    assert_eq!(summaries.len(), want_summaries.len(), "summaries");
    for (g, w) in summaries.iter().zip(want_summaries) {
        assert_eq!(g, w);
    }
}

/// SIGKILL at random points with every action on: after the restart, the kept topic (replays
/// dropped) equals replay's decisions, summaries included, and the metrics are exact.
#[test]
fn issue7_reduction_survives_sigkill_exactly() {
    let partitions = 4;
    let c = cluster(partitions);
    let tmp = TempDir::new("i7-crash");
    std::fs::write(tmp.path("rules.yaml"), REDUCE_RULES).unwrap();
    let per = app_partitions(partitions, 3000);
    let (want_events, want_summaries) = replay_all(&tmp.0, &per);
    assert!(want_summaries.len() > 50, "{}", want_summaries.len());
    produce_partitions(&c.bootstrap, &per);
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "reduce-0", port);
    sigkill_rounds(&cfg, 4, 0x1234_5678_9abc_def1u64, 1000, 2000);
    let _child = start(&cfg);
    let total: f64 = (partitions as f64) * 3001.0;
    assert_counted_and_kept_as_replay(
        &c.bootstrap,
        &cfg,
        port,
        total,
        &want_events,
        &want_summaries,
    );
}

/// A partition moves to another instance in the middle of its windows: the windows go with it
/// (state in the checkpoint), so the summaries and kept events are what one instance reading
/// it all would give, and the template ids do not change.
#[test]
fn issue7_partition_move_keeps_windows_and_ids() {
    let partitions = 2;
    let c = cluster(partitions);
    let tmp = TempDir::new("i7-move");
    std::fs::write(tmp.path("rules.yaml"), REDUCE_RULES).unwrap();
    let per = app_partitions(partitions, 2000);
    let (want_events, want_summaries) = replay_all(&tmp.0, &per);
    let first: Vec<Vec<String>> = per.iter().map(|v| v[..1000].to_vec()).collect();
    let rest: Vec<Vec<String>> = per.iter().map(|v| v[1000..].to_vec()).collect();
    produce_partitions(&c.bootstrap, &first);
    let (pa, pb) = (free_port(), free_port());
    let a = config(&tmp.0, &c.bootstrap, "move-a", pa);
    let child = start(&a);
    assert!(
        wait_for(Duration::from_secs(60), || {
            telemetry(pa).contains("logmill_events_total 2000")
        }),
        "{}",
        log_of(&a)
    );
    assert!(stop(child).success(), "{}", log_of(&a));
    let b = config(&tmp.0, &c.bootstrap, "move-b", pb);
    let _b = start(&b);
    produce_partitions(&c.bootstrap, &rest);
    assert!(
        wait_for(Duration::from_secs(60), || {
            telemetry(pb).contains("logmill_events_total 2002") && ready(pb) == 200
        }),
        "{}",
        log_of(&b)
    );
    std::thread::sleep(Duration::from_secs(2));
    let (events, summaries) = kept_sets(&c.bootstrap);
    assert_same(
        &events.iter().map(|e| e.as_bytes().to_vec()).collect(),
        &want_events.iter().map(|e| e.as_bytes().to_vec()).collect(),
        "kept events",
    );
    assert_eq!(summaries, want_summaries);
}

/// Issue 9: a team's kept bytes per second under SIGKILL at random points. The budget's
/// seconds are per partition in event time and in the checkpoint, so after the restarts the
/// kept topic (replays dropped) is what replay keeps partition by partition, its budget
/// summaries included, and the metrics still count every event.
#[test]
fn issue9_kept_bytes_budget_survives_sigkill_exactly() {
    let partitions = 4;
    let c = cluster(partitions);
    let tmp = TempDir::new("i9-budget-crash");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: it\nbudget: {kept_bytes: 600}\ndefaults:\n  reduce: {time: {field: ts, format: unix_ms}}\nrules:\n  - name: app\n    format: logfmt\n    metrics:\n      - {name: it_app_total, type: counter, help: App events., labels: {svc: svc}}\n",
    )
    .unwrap();
    let per = app_partitions(partitions, 3000);
    let (want_events, want_summaries) = replay_all(&tmp.0, &per);
    // About 2 KB a second per partition against 600 bytes: every second has a summary.
    assert!(want_summaries.len() > 400, "{}", want_summaries.len());
    assert!(want_events.len() < 4 * 3001 / 2, "{}", want_events.len());
    produce_partitions(&c.bootstrap, &per);
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "budget-0", port);
    sigkill_rounds(&cfg, 4, 0x0bad_5eed_1234_5678u64, 800, 1500);
    // The killed runs checkpointed budget seconds: the last one resumes them.
    assert!(!state_records(&c.bootstrap, "it-state").is_empty());
    let _child = start(&cfg);
    let total: f64 = (partitions as f64) * 3001.0;
    assert_counted_and_kept_as_replay(
        &c.bootstrap,
        &cfg,
        port,
        total,
        &want_events,
        &want_summaries,
    );
}
