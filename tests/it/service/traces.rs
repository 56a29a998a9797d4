//! Issue 8: trace correlation in the service, with a real Prometheus storing the exemplars.

use std::collections::BTreeSet;

use super::*;

const TRACE_RULES: &str = r#"team: it
rules:
  - name: calls
    format: json
    metrics:
      - {name: it_calls_total, type: counter, help: Calls., labels: {svc: svc}}
      - {name: it_call_seconds, type: histogram, help: Call time., value: ms, scale: 0.001, labels: {svc: svc}, buckets: [0.01, 0.1, 1]}
    reduce:
      sample: 3
"#;

/// Event `i`: traces of 4 events, a quarter of them slow.
fn call(i: u64) -> Vec<u8> {
    let trace = ((i / 4 + 1) as u128).wrapping_mul(0x0123_4567_89ab_cdef_1357_9bdf_0246_8ace);
    format!(
        r#"{{"svc":"s{}","ms":{},"trace_id":"{trace:032x}","span_id":"{:016x}"}}"#,
        i % 2,
        if i % 4 == 3 {
            400 + i % 300
        } else {
            2 + i % 50
        },
        i + 1
    )
    .into_bytes()
}

/// Prometheus, scraping with exemplar storage on, gets exemplars for the counters and the
/// histogram buckets from `/metrics` (OpenMetrics, negotiated), and each trace id it stores
/// is one whose events are in the kept topic: sampling never leaves an exemplar behind.
#[test]
fn issue8_prometheus_stores_exemplars_of_kept_traces() {
    if !have("prometheus") {
        eprintln!("skipped: no prometheus");
        return;
    }
    let c = cluster(2);
    let n = 4_000;
    produce(&c.bootstrap, (0..n).map(call));
    let tmp = TempDir::new("svc-exemplars");
    std::fs::write(tmp.path("rules.yaml"), TRACE_RULES).unwrap();
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "ex-0", port);
    let _child = start(&cfg);
    assert!(
        wait_for(Duration::from_secs(60), || {
            scrape(port).is_some_and(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("it_calls_total"))
                    .map(|(_, v)| v)
                    .sum::<f64>()
                    == n as f64
            })
        }),
        "{}",
        log_of(&cfg)
    );

    let prom_port = free_port();
    std::fs::write(
        tmp.path("prometheus.yml"),
        format!("global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: logmill\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"),
    )
    .unwrap();
    let prometheus = Running(
        std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                tmp.path("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path("tsdb").display()
            ))
            .arg("--enable-feature=exemplar-storage")
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{prom_port}").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = |metric: &str| {
        logmill::sink::http::get(
            addr,
            &format!(
                "/api/v1/query_exemplars?query={metric}&start={}&end={}",
                now - 3600,
                now + 3600
            ),
            "application/json",
        )
        .map(|r| r.1)
        .unwrap_or_default()
    };
    let traces_in = |body: &str| -> Vec<String> {
        body.split("\"trace_id\":\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let mut last = String::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            last = query("it_call_seconds_bucket");
            // Both services' slow and fast buckets.
            traces_in(&last).len() >= 4 && !traces_in(&query("it_calls_total")).is_empty()
        }),
        "prometheus stored no exemplars: {last}"
    );
    let mut stored = traces_in(&last);
    stored.extend(traces_in(&query("it_calls_total")));
    drop(prometheus);

    let kept: HashSet<String> = consume_all(&c.bootstrap, "kept")
        .into_iter()
        .filter_map(|(payload, _, _)| {
            let text = String::from_utf8(payload).ok()?;
            Some(
                text.split("\"trace_id\":\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    assert!(!kept.is_empty());
    for t in &stored {
        assert!(kept.contains(t), "exemplar {t} is not a kept trace");
    }
}

/// `gen traces` spread over partitions by trace id, then a far-future event per partition
/// whose time closes every trace still open.
fn trace_partitions(partitions: usize, n: u64) -> Vec<Vec<String>> {
    let o = run(&["gen", "traces", &n.to_string()]);
    assert!(o.status.success());
    let mut per: Vec<Vec<String>> = vec![Vec::new(); partitions];
    for l in String::from_utf8(o.stdout).unwrap().lines() {
        let id = l
            .split("\"trace_id\":\"")
            .nth(1)
            .or_else(|| l.split("traceparent=00-").nth(1))
            .unwrap();
        let p = u64::from_str_radix(&id[..8], 16).unwrap() as usize % partitions;
        per[p].push(l.to_string());
    }
    for (p, lines) in per.iter_mut().enumerate() {
        lines.push(format!(
            r#"{{"ts":"2030-01-01T00:00:00.000Z","level":"info","service":"closer","msg":"end","trace_id":"{:032x}","span_id":"00000000000000{:02x}"}}"#,
            0xc1_05e0 + p,
            p + 1
        ));
    }
    per
}

/// What `replay` writes to `out_flag` (`--traces-out`, `--logs-out`) for `lines`, with tmp's
/// rules.yaml.
fn replay_to(tmp: &TempDir, name: &str, lines: &[String], out_flag: &str) -> String {
    let input = tmp.path(&format!("{name}.log"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = tmp.path(&format!("{name}.out"));
    let o = run(&[
        "replay",
        "-q",
        "--rules",
        tmp.path("rules.yaml").to_str().unwrap(),
        out_flag,
        out.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out).unwrap()
}

/// The summaries and edges `replay` writes for `lines`, less the closing events' own traces,
/// which stay open in the service.
fn replayed_traces(tmp: &TempDir, name: &str, lines: &[String]) -> BTreeSet<String> {
    replay_to(tmp, name, lines, "--traces-out")
        .lines()
        .filter(|l| !l.contains("\"services\":[\"closer\"]"))
        .map(str::to_string)
        .collect()
}

/// Every record of the traces topic, replays removed (a record is its payload: the same
/// trace closed by the same record gives the same bytes).
fn trace_records(bootstrap: &str) -> BTreeSet<String> {
    consume_all(bootstrap, "traces")
        .into_iter()
        .map(|(payload, _, _)| String::from_utf8(payload).unwrap())
        .collect()
}

/// SIGKILLs while traces are open: open traces are in the checkpoint per partition, so after
/// the restarts the traces topic (replays removed) holds exactly the summaries and edges that
/// replay gives partition by partition, and the metrics rules derive from them are exact.
#[test]
fn issue8_trace_summaries_survive_sigkill_exactly() {
    let partitions = 2;
    let c = cluster(partitions);
    let tmp = TempDir::new("i8-crash");
    std::fs::copy(
        repo().join("tests/data/traces/rules.yaml"),
        tmp.path("rules.yaml"),
    )
    .unwrap();
    let per = trace_partitions(partitions as usize, 16_000);
    // What replay gathers, partition by partition, without the closing traces (which stay
    // open in the service, since nothing comes after them).
    let mut want = BTreeSet::new();
    for (p, lines) in per.iter().enumerate() {
        want.extend(replayed_traces(&tmp, &format!("p{p}"), lines));
    }
    let want_traces = want
        .iter()
        .filter(|l| l.contains("\"logmill\":\"trace\""))
        .count();
    assert!(want_traces > 500, "{want_traces}");
    // The first half, read and checkpointed with traces open, then a SIGKILL; the rest, with
    // SIGKILLs at random points.
    let halves: Vec<(Vec<Vec<String>>, u64)> = [0, 1]
        .iter()
        .map(|h| {
            let part: Vec<Vec<String>> = per
                .iter()
                .map(|v| {
                    let mid = v.len() / 2;
                    if *h == 0 {
                        v[..mid].to_vec()
                    } else {
                        v[mid..].to_vec()
                    }
                })
                .collect();
            let n = part.iter().map(Vec::len).sum::<usize>() as u64;
            (part, n)
        })
        .collect();
    let produce_half = |half: &[Vec<String>]| {
        let records: Vec<Rec> = half
            .iter()
            .enumerate()
            .flat_map(|(p, lines)| {
                lines
                    .iter()
                    .map(move |l| Rec::new("logs", l.clone()).partition(p as i32))
            })
            .collect();
        produce_records(&c.bootstrap, &[], records);
    };
    produce_half(&halves[0].0);
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "traces-0", port);
    let mut child = start(&cfg);
    assert!(
        wait_for(Duration::from_secs(60), || {
            telemetry(port).contains(&format!("logmill_events_total {}", halves[0].1))
        }),
        "{}",
        log_of(&cfg)
    );
    // Checkpoints every 300 ms: one holds the open traces by now.
    std::thread::sleep(Duration::from_millis(1500));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    produce_half(&halves[1].0);
    sigkill_rounds(&cfg, 2, 0x2545_f491_4f6c_dd1du64, 500, 1500);
    let _child = start(&cfg);
    let traces_total = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("traces_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(
        wait_for(Duration::from_secs(120), || {
            scrape(port).is_some_and(|m| traces_total(&m) == want_traces as f64)
                && ready(port) == 200
        }),
        "{:?}\n{}",
        scrape(port).map(|m| traces_total(&m)),
        log_of(&cfg)
    );
    // Keyed by trace id, so that one trace's records share a partition downstream.
    let (reader, _) = reader(&c.bootstrap, "traces");
    let mut checked = 0;
    while checked < 50 {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) {
            let payload = std::str::from_utf8(m.payload().unwrap()).unwrap();
            let id = payload
                .split("\"trace_id\":\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            assert_eq!(m.key(), Some(id.as_bytes()), "{payload}");
            checked += 1;
        }
    }
    let got = trace_records(&c.bootstrap);
    let missing: Vec<&String> = want.difference(&got).take(3).collect();
    let extra: Vec<&String> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
}

/// Trace-aware retention under SIGKILL: traces held across checkpoints (their events are not
/// in the checkpoint, only where they start) are read again after each restart for retention
/// only. The kept topic, replays removed by their source headers, holds exactly the events
/// replay keeps partition by partition (error traces whole, the rest sampled by trace), and
/// the counts are exact: the events read again are not counted again.
#[test]
fn issue8_retention_survives_sigkill_exactly() {
    let partitions = 2;
    let c = cluster(partitions);
    let tmp = TempDir::new("i8-retain-crash");
    let rules = std::fs::read_to_string(repo().join("tests/data/traces/rules.yaml")).unwrap();
    let reduce = "    reduce: {time: ts, sample: 10, keep_traces: {wait: 1m}}\n";
    let rules = rules
        .replace(
            "    trace: {summaries: true}\n",
            &format!("    trace: {{summaries: true}}\n{reduce}"),
        )
        .replace(
            "    trace: {summaries: true, parent: parent}\n",
            &format!("    trace: {{summaries: true, parent: parent}}\n{reduce}"),
        );
    assert_eq!(rules.matches("keep_traces").count(), 2);
    std::fs::write(tmp.path("rules.yaml"), &rules).unwrap();
    // Each partition's error events moved to its end (before the closing event), and a wait
    // longer than the stream: the error traces are held across every checkpoint and crash,
    // and kept whole only if their held events are read again after each restart.
    let per: Vec<Vec<String>> = trace_partitions(partitions as usize, 16_000)
        .into_iter()
        .map(|mut v| {
            let closer = v.pop().unwrap();
            let error = |l: &String| l.contains("\"level\":\"error\"") || l.contains(" ERROR ");
            let (mut quiet, errors): (Vec<String>, Vec<String>) =
                v.into_iter().partition(|l| !error(l));
            assert!(errors.len() > 10, "{} errors", errors.len());
            quiet.extend(errors);
            quiet.push(closer);
            quiet
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0;
    for (p, part) in per.iter().enumerate() {
        lines += part.len();
        for l in replay_to(&tmp, &format!("p{p}"), part, "--logs-out").lines() {
            *want.entry(l.to_string()).or_default() += 1;
        }
    }
    let kept_lines: u64 = want.values().sum();
    assert!(
        kept_lines > 1_000 && kept_lines < lines as u64 / 2,
        "{kept_lines} of {lines}"
    );
    // The first half of each partition, read and checkpointed with traces held, a SIGKILL;
    // then the rest, with SIGKILLs at random points.
    let half = |h: usize| -> Vec<Rec> {
        per.iter()
            .enumerate()
            .flat_map(|(p, v)| {
                let mid = v.len() / 2;
                let part = if h == 0 { &v[..mid] } else { &v[mid..] };
                part.iter()
                    .map(move |l| Rec::new("logs", l.clone()).partition(p as i32))
            })
            .collect()
    };
    let first = half(0);
    let first_n = first.len();
    produce_records(&c.bootstrap, &[], first);
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "retain-0", port);
    let mut child = start(&cfg);
    assert!(
        wait_for(Duration::from_secs(60), || {
            telemetry(port).contains(&format!("logmill_events_total {first_n}"))
        }),
        "{}",
        log_of(&cfg)
    );
    std::thread::sleep(Duration::from_millis(1500));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    produce_records(&c.bootstrap, &[], half(1));
    sigkill_rounds(&cfg, 2, 0x9e37_79b9_7f4a_7c15u64, 500, 1500);
    let _child = start(&cfg);
    let events = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("shop_events_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(
        wait_for(Duration::from_secs(120), || {
            scrape(port).is_some_and(|m| events(&m) == lines as f64) && ready(port) == 200
        }),
        "{:?}\n{}",
        scrape(port).map(|m| events(&m)),
        log_of(&cfg)
    );
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = HashSet::new();
    let wait_kept = |got: &mut BTreeMap<String, u64>, seen: &mut HashSet<String>| {
        for (payload, source, _) in consume_all(&c.bootstrap, "kept") {
            if seen.insert(source) {
                *got.entry(String::from_utf8(payload).unwrap()).or_default() += 1;
            }
        }
        got.values().sum::<u64>() >= kept_lines
    };
    assert!(wait_for(Duration::from_secs(30), || wait_kept(
        &mut got, &mut seen
    )));
    let missing: Vec<&String> = want
        .iter()
        .filter(|(l, n)| got.get(*l) != Some(n))
        .map(|(l, _)| l)
        .take(3)
        .collect();
    let extra: Vec<&String> = got
        .keys()
        .filter(|l| !want.contains_key(*l))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}\n{}",
        log_of(&cfg)
    );
}

/// Issue 8, traces spread over partitions: the input keyed by service (as producers often
/// do), so every trace's events are in several partitions, read by two instances with the
/// repartition stage on; the first is SIGKILLed and started again while the second joins.
/// The traces topic (replays removed) holds exactly the summaries and edges replay gives for
/// the whole stream in one piece, and the metrics derived from them are exact across both.
#[test]
fn issue8_repartitioned_traces_across_two_instances_are_exact() {
    let c = cluster_with(&[
        ("logs", 4),
        ("kept", 2),
        ("dead", 1),
        ("traces", 2),
        ("it-state", 2),
        ("it-repartition", 3),
    ]);
    let tmp = TempDir::new("i8-repartition");
    std::fs::copy(
        repo().join("tests/data/traces/rules.yaml"),
        tmp.path("rules.yaml"),
    )
    .unwrap();
    let o = run(&["gen", "traces", "24000"]);
    assert!(o.status.success());
    let mut lines: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // Past every trace's window (30 s) and within the sources' allowed lag (5 min): one
    // event per input partition and key, so each partition of the repartition topic hears
    // from every input partition that it has gone on.
    let closing = "2024-03-10T12:03:00.000Z";
    let last = lines.last().unwrap();
    let last = last
        .split("\"ts\":\"")
        .nth(1)
        .unwrap_or(last)
        .get(..24)
        .unwrap();
    assert!(last < "2024-03-10T12:02:00", "the stream ends at {last}");
    let services = [
        "gateway",
        "auth",
        "cart",
        "orders",
        "payments",
        "inventory",
        "search",
        "email",
        "closer",
    ];
    let partition_of = |l: &str| -> i32 {
        let service = l
            .split("\"service\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .or_else(|| l.split(' ').nth(2))
            .unwrap();
        let i = services.iter().position(|s| *s == service).unwrap();
        (i % 4) as i32
    };
    let mut closers = Vec::new();
    for p in 0..4 {
        for k in 0..32 {
            closers.push(format!(
                r#"{{"ts":"{closing}","level":"info","service":"closer","msg":"end","trace_id":"c1050e{p:02x}{k:024x}","span_id":"00000000000000{:02x}","partition":{p}}}"#,
                k + 1
            ));
        }
    }
    lines.extend(closers);
    // What replay gathers from the whole stream in one piece.
    let want = replayed_traces(&tmp, "all", &lines);
    let want_traces = want
        .iter()
        .filter(|l| l.contains("\"logmill\":\"trace\""))
        .count();
    assert!(want_traces > 1_500, "{want_traces}");
    let records: Vec<Rec> = lines
        .iter()
        .map(|l| {
            let p = l.split("\"partition\":").nth(1).map_or_else(
                || partition_of(l),
                |p| p.trim_end_matches('}').parse().unwrap(),
            );
            Rec::new("logs", l.clone()).partition(p)
        })
        .collect();
    produce_records(&c.bootstrap, &[], records);
    let extra = "traces: {repartition: {topic: it-repartition}}\n";
    let ports = [free_port(), free_port()];
    let cfgs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .zip(ports)
        .map(|(id, p)| config_with(&tmp.0, &c.bootstrap, id, p, "0s", extra))
        .collect();
    let a = start(&cfgs[0]);
    std::thread::sleep(Duration::from_millis(1200));
    let _b = start(&cfgs[1]);
    std::thread::sleep(Duration::from_millis(1500));
    drop(a);
    eprintln!("killed a");
    let _a = start(&cfgs[0]);
    let traces_total = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with("traces_total"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(
        wait_for(Duration::from_secs(120), || {
            sum(&ports).is_some_and(|m| traces_total(&m) == want_traces as f64)
        }),
        "{:?} of {want_traces}\n{}\n{}",
        sum(&ports).map(|m| traces_total(&m)),
        log_of(&cfgs[0]),
        log_of(&cfgs[1])
    );
    let got = trace_records(&c.bootstrap);
    let missing: Vec<&String> = want.difference(&got).take(3).collect();
    let extra: Vec<&String> = got.difference(&want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing, {} extra: missing {missing:?}\nextra {extra:?}",
        want.difference(&got).count(),
        got.difference(&want).count()
    );
    // The stage ran: events were republished, and each admitted once.
    let republished: f64 = ports
        .iter()
        .map(|p| {
            telemetry(*p)
                .lines()
                .filter(|l| {
                    l.starts_with("logmill_repartition_events_total{outcome=\"published\"}")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    assert!(republished > 0.0, "nothing was republished");
}
