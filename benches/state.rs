//! The service with many series, through the embedded broker (issue 11): throughput with
//! exactly-once at 100,000 series, checkpoint sizes as the service writes them, and the restore
//! of an identity with 1,000,000 series (start to `/metrics` serving them all again).
//!
//! Not criterion: one run of child processes (`logmill broker`, `logmill run`), printed for
//! `benches/RESULTS.md`.
//!
//!   cargo bench --bench state
//!   N=2000000 SERIES=100000 BIG=1000000 cargo bench --bench state

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logmill::sink::http::get;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }

    fn peak_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap()
            / 1024.0
    }
}

const PARTITIONS: i32 = 64;

fn broker(topics: &[&str]) -> (Proc, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logmill"));
    cmd.args(["broker", "--partitions", &PARTITIONS.to_string()]);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (Proc(child), first.trim().to_string())
}

/// Event `i`: one of `series` routes, each with one service.
fn event(i: u64, series: u64) -> Vec<u8> {
    let r = i % series;
    format!(
        r#"{{"route":"/api/v1/items/{r:07}","service":"svc-{:02}","status":200}}"#,
        r % 40
    )
    .into_bytes()
}

fn produce(bootstrap: &str, topic: &str, n: u64, series: u64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for i in 0..n {
        let payload = event(i, series);
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(&payload)
            .partition((i % PARTITIONS as u64) as i32);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(
    dir: &Path,
    bootstrap: &str,
    name: &str,
    topic: &str,
    max: u64,
    interval: &str,
) -> (Proc, SocketAddr) {
    let port = free_port();
    let rules = dir.join(format!("{name}-rules.yaml"));
    std::fs::write(
        &rules,
        format!("team: bench\nrules:\n  - name: routes\n    format: json\n    metrics:\n      - {{name: route_requests_total, type: counter, labels: {{route: route, service: service}}, max_series: {max}}}\n"),
    )
    .unwrap();
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "kafka:\n  brokers: \"{bootstrap}\"\n  group_id: {name}\n  instance_id: {name}-0\n  topics: [{topic}]\n  properties: {{session.timeout.ms: \"6000\", fetch.wait.max.ms: \"10\"}}\nrules: [{}]\ndelivery: {{state_topic: {name}-state, checkpoint_interval: {interval}, linger: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n",
            rules.display()
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_logmill"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Proc(child), format!("127.0.0.1:{port}").parse().unwrap())
}

fn telemetry(addr: SocketAddr, name: &str) -> f64 {
    get(addr, "/-/metrics", "text/plain")
        .map(|(_, body)| {
            body.lines()
                .filter(|l| {
                    l.starts_with(name)
                        && (name.contains('{') || l[name.len()..].starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

/// Series on `/metrics` and their sum, when it answers.
fn exported(addr: SocketAddr) -> Option<(usize, f64)> {
    let (status, body) = get(addr, "/metrics", "text/plain").ok()?;
    (status == 200).then(|| {
        let mut n = 0;
        let mut sum = 0.0;
        for l in body.lines().filter(|l| !l.starts_with('#')) {
            n += 1;
            sum += l
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
        (n, sum)
    })
}

fn main() {
    let n = env_or("N", 2_000_000);
    let series = env_or("SERIES", 100_000);
    let big = env_or("BIG", 1_000_000);
    let dir = std::env::temp_dir().join(format!("logmill-bench-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_broker, bootstrap) = broker(&["many", "huge", "many-0-state:2", "huge-0-state:2"]);

    eprintln!("pre-producing {n} events over {series} series");
    produce(&bootstrap, "many", n, series);
    let (inst, addr) = start(&dir, &bootstrap, "many-0", "many", series, "1s");
    let deadline = Instant::now() + Duration::from_secs(600);
    let (t0, seen0) = loop {
        let seen = telemetry(addr, "logmill_events_total");
        if seen > 0.0 {
            break (Instant::now(), seen);
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    while telemetry(addr, "logmill_events_total") < n as f64 {
        assert!(Instant::now() < deadline, "events not all consumed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rate = (n as f64 - seen0) / t0.elapsed().as_secs_f64();
    while exported(addr) != Some((series as usize, n as f64)) {
        assert!(
            Instant::now() < deadline,
            "exports not exact: {:?}",
            exported(addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let checkpoints = telemetry(addr, "logmill_checkpoints_total");
    let written = telemetry(addr, "logmill_checkpoint_written_bytes_total");
    let full = telemetry(addr, "logmill_checkpoints_total{kind=\"full\"");
    println!(
        "{series} series, exactly-once, {n} events: {rate:.0} events/s; exports equal the input: yes; {checkpoints} checkpoints ({full} full) wrote {:.1} MiB to the state topic; state {:.2} MiB; peak resident {:.0} MiB",
        written / 1048576.0,
        telemetry(addr, "logmill_checkpoint_state_bytes") / 1048576.0,
        inst.peak_mib()
    );
    inst.stop();

    eprintln!("pre-producing {big} events over {big} series");
    produce(&bootstrap, "huge", big, big);
    // One checkpoint for all of it, so the mock's 5 MiB per partition holds the whole state.
    let (inst, addr) = start(&dir, &bootstrap, "huge-0", "huge", big, "60s");
    while telemetry(addr, "logmill_events_total") < big as f64 {
        assert!(Instant::now() < deadline, "events not all consumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    inst.stop();
    let started = Instant::now();
    let (inst, addr) = start(&dir, &bootstrap, "huge-0", "huge", big, "60s");
    let restored = loop {
        if let Some((s, _)) = exported(addr) {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no restore");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let log = std::fs::read_to_string(dir.join("huge-0.log")).unwrap_or_default();
    let line = log
        .lines()
        .rfind(|l| l.contains("restored the last checkpoint"))
        .unwrap_or("")
        .to_string();
    println!(
        "restore of {restored} series: {:.2} s from process start to /metrics serving them ({}); peak resident {:.0} MiB",
        took.as_secs_f64(),
        line.split("restored the last checkpoint")
            .nth(1)
            .unwrap_or("")
            .trim(),
        inst.peak_mib()
    );
    drop(inst);
    if std::env::var_os("KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
