//! The service through the embedded broker: sustained throughput with exactly-once and with
//! at-least-once, the same broker's ceiling with a bare consumer doing no work, event-to-metric
//! latency under a paced live load, resident memory, and the exported values checked against
//! `logmill replay` of the same lines.
//!
//! Not criterion: every measurement is one long run of child processes (`logmill broker`,
//! `logmill run`), printed as lines for `benches/RESULTS.md`. The workload is the mixed one
//! (nginx, JSON, logfmt, noise, malformed) under the shipped `rules/`, which keep 88% of it.
//!
//!   cargo bench --bench service                  # 4,000,000 events in 64 partitions
//!   N=1000000 PARTITIONS=16 RATE=200000 SECONDS=30 KEEP=1 cargo bench --bench service
//!
//! `RATE` and `SECONDS` shape the live run; `KEEP=1` keeps the configs and logs in the temp
//! directory.
//!
//! The workload is pre-produced with lz4 and large batches, as a production producer would:
//! librdkafka's mock cluster keeps at most 5 MiB (of stored, so compressed, batches) per
//! partition and trims the rest, which the bench checks before measuring (a log start offset
//! above 0 stops it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logmill::sink::http::get;
use logmill::workload::{Kind, Workload};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const SEED: u64 = 42;
const TOPIC: &str = "logs";
const LIVE: &str = "live";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// user + system CPU seconds so far, from /proc.
    fn cpu(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Peak resident memory in MiB (VmHWM).
    fn peak_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb / 1024.0
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The instances the bench starts: each has a state topic, which the mock cluster cannot
/// create on request.
const INSTANCES: &[&str] = &[
    "bench-exactly_once-outputs",
    "bench-at_least_once-outputs",
    "bench-exactly_once-metrics",
    "bench-live",
];

fn broker(partitions: u64) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logmill"))
        .args(["broker", "--partitions", &partitions.to_string()])
        .args(["--topic", TOPIC, "--topic", LIVE])
        .args(
            INSTANCES
                .iter()
                .flat_map(|i| ["--topic".to_string(), format!("{i}-state:2")]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting logmill broker");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (Proc(child), first.trim().to_string())
}

fn lines(n: u64) -> Vec<Vec<u8>> {
    let mut workload = Workload::new(Kind::Mixed, SEED);
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            buf.clear();
            workload.line(&mut buf);
            buf.strip_suffix(b"\n").unwrap_or(&buf).to_vec()
        })
        .collect()
}

fn producer(bootstrap: &str, linger_ms: u32) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn send(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: Option<i32>,
    payload: &[u8],
) {
    let mut record = BaseRecord::<(), [u8]>::to(topic).payload(payload);
    record.partition = partition;
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Produces every line and checks that the broker kept all of them.
fn preproduce(bootstrap: &str, lines: &[Vec<u8>], partitions: usize) {
    let p = producer(bootstrap, 50);
    // Round robin, so that every partition holds the same share and stays under the cap.
    for (i, l) in lines.iter().enumerate() {
        send(&p, TOPIC, Some((i % partitions) as i32), l);
    }
    p.flush(Duration::from_secs(60)).unwrap();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    let mut total = 0;
    for part in md.topics()[0].partitions() {
        let (low, high) = c
            .fetch_watermarks(TOPIC, part.id(), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            low,
            0,
            "the mock trimmed partition {}: fewer events or more partitions",
            part.id()
        );
        total += high;
    }
    assert_eq!(total as usize, lines.len(), "records on the broker");
}

/// The broker's ceiling: a consumer group member that only counts records.
fn bare(bootstrap: &str, n: u64) -> (f64, f64) {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap)
        .set("group.id", "bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.queue.backoff.ms", "20");
    let c: BaseConsumer = cc.create().unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut first = None;
    let cpu0 = cpu_seconds("self");
    while count < n {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            first.get_or_insert_with(Instant::now);
            bytes += m.payload_len() as u64;
            count += 1;
        }
    }
    let secs = first.unwrap().elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu0;
    std::hint::black_box(bytes);
    (n as f64 / secs, cpu)
}

/// user + system CPU seconds of process `pid` (or `self`) so far, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Instance {
    proc: Proc,
    addr: SocketAddr,
}

/// Starts `logmill run` on `topic` with the shipped rules, checkpointing every second; with
/// `outputs`, kept events and dead letters go to topics of their own.
fn start(
    dir: &Path,
    bootstrap: &str,
    name: &str,
    topic: &str,
    delivery: &str,
    outputs: bool,
) -> Instance {
    let port = free_port();
    let config = dir.join(format!("{name}.yaml"));
    let output = if outputs {
        format!("output: {{kept_topic: {name}-kept, dead_letter_topic: {name}-dead}}\n")
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!(
            "kafka:\n  brokers: \"{bootstrap}\"\n  group_id: {name}\n  instance_id: {name}-0\n  topics: [{topic}]\n  properties: {{session.timeout.ms: \"6000\", fetch.wait.max.ms: \"10\"}}\nrules: [{rules}]\n{output}delivery: {{mode: {delivery}, state_topic: {name}-state, checkpoint_interval: 1s, linger: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n",
            rules = repo().join("rules").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_logmill"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting logmill run");
    Instance {
        proc: Proc(child),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    }
}

/// The sample values of a text exposition, by series.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            Some((s.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: SocketAddr, path: &str) -> BTreeMap<String, f64> {
    match get(addr, path, "text/plain") {
        Ok((200, body)) => samples(&body),
        _ => BTreeMap::new(),
    }
}

/// The series whose value does not depend on the order events were merged in: counters,
/// histogram buckets, counts and sums (sums within a relative 1e-9, float addition order).
fn additive(m: &BTreeMap<String, f64>) -> BTreeMap<&str, f64> {
    m.iter()
        .filter(|(s, _)| {
            let name = s.split('{').next().unwrap();
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|e| name.ends_with(e))
        })
        .map(|(s, v)| (s.as_str(), *v))
        .collect()
}

fn same(got: &BTreeMap<&str, f64>, want: &BTreeMap<&str, f64>) -> bool {
    got.len() == want.len()
        && want.iter().all(|(s, w)| {
            got.get(s)
                .is_some_and(|g| (g - w).abs() <= 1e-9 * w.abs().max(1.0))
        })
}

/// `logmill replay` of the same lines: the values the service must export.
fn truth(dir: &Path, lines: &[Vec<u8>]) -> BTreeMap<String, f64> {
    let input = dir.join("input.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for l in lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    drop(f);
    let out = dir.join("truth.prom");
    let status = Command::new(env!("CARGO_BIN_EXE_logmill"))
        .args(["replay", "-q", "--rules"])
        .arg(repo().join("rules"))
        .arg("--metrics-out")
        .arg(&out)
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    samples(&std::fs::read_to_string(out).unwrap())
}

struct Run {
    rate: f64,
    cpu: f64,
    /// From the last event processed to the exports showing it.
    export_lag: f64,
    peak_mib: f64,
    exact: bool,
    /// The instance's reduction ratio, of events and of bytes (`logmill_reduction_ratio`).
    reduction: (f64, f64),
}

/// Consumes the pre-produced topic from the beginning. The rate is over the events processed
/// from the first one the instance counted to the last; the exports are then awaited (one
/// checkpoint more under exactly-once) and compared with replay.
fn measure(
    dir: &Path,
    bootstrap: &str,
    (delivery, outputs): (&str, bool),
    n: u64,
    want: &BTreeMap<String, f64>,
) -> Run {
    let want = additive(want);
    let name = format!(
        "bench-{delivery}-{}",
        if outputs { "outputs" } else { "metrics" }
    );
    let inst = start(dir, bootstrap, &name, TOPIC, delivery, outputs);
    let events = |inst: &Instance| {
        scrape(inst.addr, "/-/metrics")
            .get("logmill_events_total")
            .copied()
            .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let (t1, seen1, cpu0) = loop {
        let seen = events(&inst);
        if seen > 0.0 {
            break (Instant::now(), seen, inst.proc.cpu());
        }
        assert!(Instant::now() < deadline, "no events consumed");
        std::thread::sleep(Duration::from_millis(10));
    };
    while events(&inst) < n as f64 {
        assert!(Instant::now() < deadline, "events not all consumed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = t1.elapsed().as_secs_f64();
    let cpu = inst.proc.cpu() - cpu0;
    let processed = Instant::now();
    let mut exact = false;
    while Instant::now() < deadline {
        if same(&additive(&scrape(inst.addr, "/metrics")), &want) {
            exact = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let tel = scrape(inst.addr, "/-/metrics");
    let ratio = |unit: &str| {
        tel.get(&format!("logmill_reduction_ratio{{unit=\"{unit}\"}}"))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let run = Run {
        reduction: (ratio("events"), ratio("bytes")),
        rate: (n as f64 - seen1) / secs,
        cpu,
        export_lag: processed.elapsed().as_secs_f64(),
        peak_mib: inst.proc.peak_mib(),
        exact,
    };
    inst.proc.stop();
    run
}

/// A paced producer at `rate` for `seconds` while one exactly-once instance consumes; the
/// latency quantiles are the instance's own, from Kafka timestamps to the exporting checkpoint.
fn latency(dir: &Path, bootstrap: &str, rate: u64, seconds: u64, lines: &[Vec<u8>]) -> String {
    let inst = start(dir, bootstrap, "bench-live", LIVE, "exactly_once", true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(inst.addr, "/-/ready", "text/plain").map_or(0, |r| r.0) != 200 {
        assert!(Instant::now() < deadline, "instance never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let p = producer(bootstrap, 5);
    let started = Instant::now();
    let total = rate * seconds;
    let mut i = 0u64;
    while i < total {
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if i >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        while i < due {
            send(&p, LIVE, None, &lines[(i as usize) % lines.len()]);
            i += 1;
        }
    }
    let produce_secs = started.elapsed().as_secs_f64();
    p.flush(Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tel = scrape(inst.addr, "/-/metrics");
        if tel.get("logmill_events_total").copied().unwrap_or(0.0) >= total as f64
            && tel.get("logmill_checkpoints_total").copied().unwrap_or(0.0) > 0.0
        {
            // One more checkpoint exports the last events and records their latency.
            std::thread::sleep(Duration::from_millis(1500));
            break;
        }
        assert!(Instant::now() < deadline, "the live run did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tel = scrape(inst.addr, "/-/metrics");
    let q = |q: &str| {
        tel.get(&format!(
            "logmill_event_to_metric_latency_seconds{{quantile=\"{q}\"}}"
        ))
        .copied()
        .unwrap_or(f64::NAN)
    };
    let out = format!(
        "live: {total} events at {:.0}/s offered ({:.0}/s achieved by the producer): event-to-metric latency p50 {:.2} s, p90 {:.2} s, p99 {:.2} s; peak resident {:.0} MiB",
        rate,
        total as f64 / produce_secs,
        q("0.5"),
        q("0.9"),
        q("0.99"),
        inst.proc.peak_mib()
    );
    inst.proc.stop();
    out
}

fn main() {
    let n = env_or("N", 4_000_000);
    let partitions = env_or("PARTITIONS", 64);
    let rate = env_or("RATE", 200_000);
    let seconds = env_or("SECONDS", 30);
    let dir = std::env::temp_dir().join(format!("logmill-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    eprintln!("generating {n} mixed events");
    let lines = lines(n);
    let want = truth(&dir, &lines);
    let (broker_proc, bootstrap) = broker(partitions);
    eprintln!("pre-producing into {bootstrap} ({partitions} partitions)");
    preproduce(&bootstrap, &lines, partitions as usize);

    let broker_cpu0 = broker_proc.cpu();
    let (bare_rate, bare_cpu) = bare(&bootstrap, n);
    println!(
        "{:<40} {:>9.0} events/s  consumer {:.2} µs CPU per event, broker {:.2} CPU-s",
        "bare consumer",
        bare_rate,
        bare_cpu / n as f64 * 1e6,
        broker_proc.cpu() - broker_cpu0
    );
    let mut rates = BTreeMap::new();
    for (delivery, outputs) in [
        ("exactly_once", true),
        ("at_least_once", true),
        ("exactly_once", false),
    ] {
        let b0 = broker_proc.cpu();
        let r = measure(&dir, &bootstrap, (delivery, outputs), n, &want);
        let what = format!(
            "{delivery}, {}",
            if outputs {
                "kept + dead-letter topics"
            } else {
                "metrics only"
            }
        );
        println!(
            "{what:<40} {:>9.0} events/s  {:.2}× bare; logmill {:.2} µs CPU per event, broker {:.2} CPU-s; peak resident {:.0} MiB; reduction {:.1}% of events, {:.1}% of bytes; exports equal replay: {} ({:.2} s after the last event)",
            r.rate,
            r.rate / bare_rate,
            r.cpu / n as f64 * 1e6,
            broker_proc.cpu() - b0,
            r.peak_mib,
            100.0 * r.reduction.0,
            100.0 * r.reduction.1,
            if r.exact { "yes" } else { "NO" },
            r.export_lag,
        );
        rates.insert((delivery, outputs), r.rate);
    }
    println!(
        "exactly-once costs {:.1}% of at-least-once throughput",
        100.0 * (1.0 - rates[&("exactly_once", true)] / rates[&("at_least_once", true)])
    );
    println!("{}", latency(&dir, &bootstrap, rate, seconds, &lines));
    drop(broker_proc);
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
