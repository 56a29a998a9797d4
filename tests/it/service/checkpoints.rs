//! Issue 11: checkpoints of any size, written in chunks and incrementally, restored whole or
//! not at all, and partition state that moves with its partition. Against the mock cluster,
//! which refuses records over 1 MB as a broker does.

use super::*;

const ROUTES: &str = "team: it\nrules:\n  - name: routes\n    format: json\n    metrics:\n      - {name: it_route_total, type: counter, help: Requests by route., labels: {route: route, service: service}, max_series: 100000}\n";

/// Event `i` of the high-cardinality workload: 100,000 routes, each with one service.
fn route_event(i: u64) -> Vec<u8> {
    let r = i % 100_000;
    format!(r#"{{"route":"/r/{r}","service":"s{}","n":{i}}}"#, r % 7).into_bytes()
}

/// `logmill replay` of `lines` under the rules in `dir`: the exposition as series → value.
fn replay_truth(dir: &Path, lines: impl Iterator<Item = Vec<u8>>) -> BTreeMap<String, f64> {
    let input = dir.join("truth-input.log");
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(&l);
        text.push(b'\n');
    }
    std::fs::write(&input, text).unwrap();
    let out = run(&[
        "replay",
        "-q",
        "--rules",
        dir.join("rules.yaml").to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut m = BTreeMap::new();
    for l in stdout(&out).lines().filter(|l| !l.starts_with('#')) {
        let (s, v) = l.rsplit_once(' ').unwrap();
        m.insert(s.to_string(), v.parse().unwrap());
    }
    m
}

/// 100,000 series, the checkpoint cut into records of 16 KiB, SIGKILL at random points (so
/// in the middle of writing chunks too): what the restarted instance exports equals replay.
#[test]
fn issue11_hundred_thousand_series_survive_sigkill_exactly() {
    let c = cluster(8);
    let n = 300_000;
    // Spread evenly: the mock cluster keeps ~5 MiB a partition, and the producer's sticky
    // partitioner once put enough in one partition that its start was trimmed before the
    // service read it.
    produce_records(
        &c.bootstrap,
        &[],
        (0..n)
            .map(|i| Rec::new("logs", route_event(i)).partition((i % 8) as i32))
            .collect(),
    );
    let tmp = TempDir::new("i11-series");
    std::fs::write(tmp.path("rules.yaml"), ROUTES).unwrap();
    let want = replay_truth(&tmp.0, (0..n).map(route_event));
    assert_eq!(want.len(), 100_000);
    let port = free_port();
    let cfg = config_with(&tmp.0, &c.bootstrap, "series-0", port, "0s", "");
    let yaml = std::fs::read_to_string(&cfg).unwrap().replace(
        "checkpoint_interval: 300ms",
        "checkpoint_interval: 300ms, chunk_bytes: 16384",
    );
    std::fs::write(&cfg, yaml).unwrap();
    sigkill_rounds(&cfg, 4, 0x9e3779b97f4a7c15u64, 1500, 2500);
    let _child = start(&cfg);
    assert_exports(&[port], &want, 180, || true, &[&cfg]);
    let tel = telemetry(port);
    assert!(
        tel.contains("logmill_checkpoints_total{kind=\"delta\"}"),
        "incremental checkpoints were written:\n{tel}"
    );
    assert!(
        !log_of(&cfg).contains("MessageSizeTooLarge"),
        "{}",
        log_of(&cfg)
    );
}

/// A checkpoint whose chunks were written but whose commit never was (a crash in between) is
/// never restored; its chunks are removed (tombstoned) at the next start.
#[test]
fn issue11_incomplete_checkpoint_is_never_restored() {
    let c = cluster(2);
    let n = 5_000;
    produce(&c.bootstrap, (0..n).map(|i| event(i, false)));
    let tmp = TempDir::new("i11-incomplete");
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "incomplete-0", port);
    let child = start(&cfg);
    let (want, _, _) = truth(n, false);
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    assert!(stop(child).success());
    // What a crash after the chunks and before the commit leaves: an intent naming the
    // chunks of a newer checkpoint, and those chunks, holding other values.
    let seq = 1_000_000;
    let chunk_key = logmill::checkpoint::keys::chunk("it", "incomplete-0", seq, "base", 0);
    let intent = logmill::checkpoint::Intent {
        seq,
        keys: vec![chunk_key.clone()],
    };
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    let intent_key = logmill::checkpoint::keys::intent("it", "incomplete-0");
    let intent_bytes = intent.encode();
    p.send(
        BaseRecord::to("it-state")
            .key(&intent_key)
            .payload(&intent_bytes)
            .partition(0),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.send(
        BaseRecord::to("it-state")
            .key(&chunk_key)
            .payload(b"not the values")
            .partition(1),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let _child = start(&cfg);
    assert_exports(&[port], &want, 60, || true, &[&cfg]);
    let tombstoned = wait_for(Duration::from_secs(30), || {
        state_records(&c.bootstrap, "it-state")
            .iter()
            .any(|(_, k, v)| k.as_deref() == Some(chunk_key.as_bytes()) && v.is_none())
    });
    assert!(
        tombstoned,
        "the orphan chunk was not removed\n{}",
        log_of(&cfg)
    );
}

/// A partition's state moves with it: its event-time clock, here, which decides which gauge
/// `set` wins. The first owner saw partition 0 a hundred seconds ahead of partition 1; the next
/// owner gets a record on partition 0 stamped earlier than that, which is as recent as its
/// partition's clock, so it wins over partition 1's newer-stamped one.
#[test]
fn issue11_partition_state_moves_with_the_partition() {
    let c = cluster(2);
    let tmp = TempDir::new("i11-moves");
    std::fs::write(
        tmp.path("rules.yaml"),
        "team: it\nrules:\n  - name: g\n    format: logfmt\n    metrics:\n      - {name: it_g, type: gauge, value: v, help: G.}\n",
    )
    .unwrap();
    let t0 = 1_700_000_000_000;
    produce_records(
        &c.bootstrap,
        &[],
        vec![
            Rec::new("logs", "v=1").partition(0).at(t0 + 100_000),
            Rec::new("logs", "v=2").partition(1).at(t0 + 10),
        ],
    );
    let (pa, pb) = (free_port(), free_port());
    let a = config(&tmp.0, &c.bootstrap, "moves-a", pa);
    let first = start(&a);
    assert!(
        wait_for(Duration::from_secs(30), || scrape(pa)
            .is_some_and(|m| m.get("it_g") == Some(&1.0))),
        "{}",
        log_of(&a)
    );
    assert!(stop(first).success());
    let b = config(&tmp.0, &c.bootstrap, "moves-b", pb);
    let _second = start(&b);
    assert!(wait_for(Duration::from_secs(30), || ready(pb) == 200));
    produce_records(
        &c.bootstrap,
        &[],
        vec![
            Rec::new("logs", "v=3").partition(1).at(t0 + 50_000),
            Rec::new("logs", "v=4").partition(0).at(t0 + 20),
        ],
    );
    assert!(
        wait_for(Duration::from_secs(30), || scrape(pb)
            .is_some_and(|m| m.get("it_g") == Some(&4.0))),
        "{:?}\n{}",
        scrape(pb),
        log_of(&b)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(scrape(pb).unwrap().get("it_g"), Some(&4.0));
}

/// The state topic's broker goes away for a while: checkpoints fail and are counted, the
/// instance says it is not ready and why, and when the broker is back the values are exact.
#[test]
fn issue11_state_topic_refused_for_a_while() {
    let mock = MockCluster::new(2).unwrap();
    for (t, p) in [("logs", 2), ("kept", 2), ("dead", 1), ("it-state", 2)] {
        mock.create_topic(t, p, 1).unwrap();
        let leader = if t == "it-state" { 2 } else { 1 };
        for partition in 0..p {
            mock.partition_leader(t, partition, Some(leader)).unwrap();
        }
    }
    for group in ["it", "it-state-reader"] {
        mock.coordinator(rdkafka::mocking::MockCoordinator::Group(group.into()), 1)
            .unwrap();
    }
    let bootstrap = mock.bootstrap_servers();
    let n = 5_000;
    produce(&bootstrap, (0..n).map(|i| event(i, false)));
    let tmp = TempDir::new("i11-refused");
    let port = free_port();
    let cfg = config_with(&tmp.0, &bootstrap, "refused-0", port, "0s", "");
    let yaml = std::fs::read_to_string(&cfg).unwrap().replace(
        "checkpoint_interval: 300ms",
        "checkpoint_interval: 300ms, state_write_timeout: 2s",
    );
    std::fs::write(&cfg, yaml).unwrap();
    let _child = start(&cfg);
    let (want, _, _) = truth(n, false);
    assert_exports(&[port], &want, 60, || ready(port) == 200, &[&cfg]);
    mock.broker_down(2).unwrap();
    produce(&bootstrap, (n..2 * n).map(|i| event(i, false)));
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut body = String::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let r = logmill::sink::http::get(addr, "/-/ready", "").unwrap_or_default();
            body = r.1;
            r.0 == 503 && body.contains("checkpoints failed")
        }),
        "{body}\n{}",
        log_of(&cfg)
    );
    assert!(
        telemetry(port).contains("logmill_checkpoint_failures_total{reason=\"state_"),
        "{}",
        telemetry(port)
    );
    assert_eq!(scrape(port), Some(want), "nothing newer is shown meanwhile");
    std::thread::sleep(Duration::from_secs(3));
    mock.broker_up(2).unwrap();
    let (want, _, _) = truth(2 * n, false);
    assert_exports(&[port], &want, 90, || ready(port) == 200, &[&cfg]);
}
