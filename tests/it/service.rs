//! `logmill run` against librdkafka's mock cluster: the real Kafka protocol on loopback.
//! Every assertion is an exact number computed from what the test produced.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::support::*;

const RULES: &str = r#"team: it
rules:
  - name: events
    format: logfmt
    metrics:
      - {name: it_events_total, type: counter, help: Events by level., labels: {level: level}}
      - {name: it_value_total, type: counter, help: Sum of n., value: n}
  - name: debug
    format: logfmt
    match: {fields: {level: debug}}
    then: drop
"#;

struct Cluster {
    _mock: MockCluster<'static, DefaultProducerContext>,
    bootstrap: String,
}

fn cluster(partitions: i32) -> Cluster {
    let mock = MockCluster::new(1).unwrap();
    for (t, p) in [
        ("logs", partitions),
        ("kept", 2),
        ("dead", 1),
        ("it-state", 1),
    ] {
        mock.create_topic(t, p, 1).unwrap();
    }
    let bootstrap = mock.bootstrap_servers();
    Cluster {
        _mock: mock,
        bootstrap,
    }
}

fn produce(bootstrap: &str, payloads: impl Iterator<Item = Vec<u8>>) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for payload in payloads {
        let mut rec = BaseRecord::<(), [u8]>::to("logs").payload(&payload);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

/// Every record of `topic`: payload and `(source partition, source offset, reason)` headers.
fn consume_all(bootstrap: &str, topic: &str) -> Vec<(Vec<u8>, String, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "it-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut highs = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
        highs.insert(
            p.id(),
            c.fetch_watermarks(topic, p.id(), Duration::from_secs(5))
                .unwrap()
                .1,
        );
    }
    c.assign(&tpl).unwrap();
    let mut pos: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while highs
        .iter()
        .any(|(p, h)| pos.get(p).copied().unwrap_or(0) < *h)
        && Instant::now() < deadline
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            assert_eq!(
                m.offset(),
                pos.get(&m.partition()).copied().unwrap_or(0),
                "{topic} was trimmed"
            );
            pos.insert(m.partition(), m.offset() + 1);
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                    })
                    .unwrap_or_default()
            };
            let source = format!(
                "{}/{}",
                header("logmill.source.partition"),
                header("logmill.source.offset")
            );
            out.push((
                m.payload().unwrap_or_default().to_vec(),
                source,
                header("logmill.reason"),
            ));
        }
    }
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, bootstrap: &str, instance: &str, port: u16) -> PathBuf {
    std::fs::write(dir.join("rules.yaml"), RULES).unwrap();
    let path = dir.join(format!("{instance}.yaml"));
    std::fs::write(
        &path,
        format!(
            "kafka:\n  brokers: \"{bootstrap}\"\n  group_id: it\n  instance_id: {instance}\n  topics: [logs]\n  properties: {{session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\"}}\nrules: [rules.yaml]\noutput: {{kept_topic: kept, dead_letter_topic: dead}}\ndelivery: {{state_topic: it-state, checkpoint_interval: 300ms, linger: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\nbatch: {{max_events: 2000, max_wait: 20ms}}\n"
        ),
    )
    .unwrap();
    path
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `logmill run`; its stderr is appended to `<config>.log` for failure messages.
fn start(config: &Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    Running(
        logmill()
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn log_of(config: &Path) -> String {
    std::fs::read_to_string(config.with_extension("log")).unwrap_or_default()
}

/// Sums every sample of `metric` on the instance's `/metrics`, by `level` label.
fn scrape(port: u16) -> Option<BTreeMap<String, f64>> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = logmill::sink::http::get(addr, "/metrics", "text/plain").ok()?;
    (status == 200).then(|| {
        let mut out = BTreeMap::new();
        for l in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, v) = l.rsplit_once(' ').unwrap();
            *out.entry(series.to_string()).or_insert(0.0) += v.parse::<f64>().unwrap();
        }
        out
    })
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The level of event `i`: info, warn, debug in turn; with `mostly_debug`, only every tenth
/// event is kept (the mock cluster keeps at most 5 MiB per partition, which a crash test's
/// kept topic with replays would pass otherwise).
fn level(i: u64, mostly_debug: bool) -> &'static str {
    match (mostly_debug, i % 10) {
        (true, 0) => "info",
        (true, _) => "debug",
        (false, _) => ["info", "warn", "debug"][(i % 3) as usize],
    }
}

/// Event `i` of the test workload: `level=... n=i`; every 97th is malformed JSON and every
/// 101st invalid UTF-8.
fn event(i: u64, mostly_debug: bool) -> Vec<u8> {
    if i % 97 == 0 {
        return b"{\"level\":".to_vec();
    }
    if i % 101 == 0 {
        return vec![0xff, 0xfe, b'x'];
    }
    format!("level={} n={i}", level(i, mostly_debug)).into_bytes()
}

fn truth(n: u64, mostly_debug: bool) -> (BTreeMap<String, f64>, HashSet<Vec<u8>>, usize) {
    let mut t = BTreeMap::new();
    let mut kept = HashSet::new();
    let mut dead = 0;
    for i in 0..n {
        let e = event(i, mostly_debug);
        if i % 97 == 0 || i % 101 == 0 {
            dead += 1;
            continue;
        }
        let level = level(i, mostly_debug);
        *t.entry(format!("it_events_total{{level=\"{level}\"}}"))
            .or_insert(0.0) += 1.0;
        *t.entry("it_value_total".to_string()).or_insert(0.0) += i as f64;
        if level != "debug" {
            kept.insert(e);
        }
    }
    (t, kept, dead)
}

/// Set equality with a readable failure: counts and a few examples each way.
fn assert_same(got: &HashSet<Vec<u8>>, want: &HashSet<Vec<u8>>, what: &str) {
    let show = |s: Vec<&Vec<u8>>| {
        s.iter()
            .take(5)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    let missing: Vec<&Vec<u8>> = want.difference(got).collect();
    let extra: Vec<&Vec<u8>> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} missing (e.g. {:?}), {} unexpected (e.g. {:?})",
        missing.len(),
        show(missing.clone()),
        extra.len(),
        show(extra.clone())
    );
}

#[test]
fn end_to_end_exact_counts_kept_and_dead_letters() {
    let c = cluster(4);
    let n = 20_000;
    produce(&c.bootstrap, (0..n).map(|i| event(i, false)));
    let tmp = TempDir::new("svc-e2e");
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "e2e-0", port);
    let child = start(&cfg);
    let (want, kept, dead) = truth(n, false);
    let mut got = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            got = scrape(port);
            got.as_ref() == Some(&want)
        }),
        "exported {got:?}, want {want:?}\n{}",
        log_of(&cfg)
    );
    drop(child);
    let kept_records = consume_all(&c.bootstrap, "kept");
    let unique: HashSet<Vec<u8>> = kept_records.iter().map(|r| r.0.clone()).collect();
    assert_same(&unique, &kept, "kept topic");
    assert_eq!(
        kept_records.len(),
        kept.len(),
        "one run without crashes writes each kept event once"
    );
    let dead_records = consume_all(&c.bootstrap, "dead");
    assert_eq!(dead_records.len(), dead);
    let reasons: HashSet<&str> = dead_records.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(reasons, HashSet::from(["malformed_json", "invalid_utf8"]));
}

/// SIGKILL at random points, restart under the same identity: the final counters equal the
/// ground truth exactly, and every kept event is on the kept topic (replays carry the same
/// source headers, so readers can drop them).
#[test]
fn crash_safety_under_sigkill() {
    let c = cluster(4);
    let n = 200_000;
    produce(&c.bootstrap, (0..n).map(|i| event(i, true)));
    let tmp = TempDir::new("svc-crash");
    let port = free_port();
    let cfg = config(&tmp.0, &c.bootstrap, "crash-0", port);
    let (want, kept, _) = truth(n, true);
    let mut seed = 0x2545f4914f6cdd1du64;
    for round in 0..5 {
        let mut child = start(&cfg);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(800 + seed % 1500));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        eprintln!("killed run {round}");
    }
    let _child = start(&cfg);
    let mut got = None;
    assert!(
        wait_for(Duration::from_secs(120), || {
            got = scrape(port);
            got.as_ref() == Some(&want)
        }),
        "exported {got:?}, want {want:?}\n{}",
        log_of(&cfg)
    );
    let kept_records = consume_all(&c.bootstrap, "kept");
    let by_source: BTreeMap<&str, &Vec<u8>> =
        kept_records.iter().map(|r| (r.1.as_str(), &r.0)).collect();
    let unique: HashSet<Vec<u8>> = by_source.values().map(|v| (*v).clone()).collect();
    assert_same(
        &unique,
        &kept,
        "kept topic, replays removed by their source headers",
    );
}
