//! Issue 8: trace correlation in the service, with a real Prometheus storing the exemplars.

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
