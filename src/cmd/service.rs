//! `logmill run`, `logmill demo` and `logmill broker`: the service and its embedded broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use logmill::config::{Config, Delivery};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::Aggregates;
use logmill::service::now_ms;
use logmill::sink::http::{Exported, serve};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub(crate) fn load_program(
    paths: &[PathBuf],
    options: &logmill::rules::compile::Options,
) -> Result<logmill::rules::Program> {
    let (files, mut diags) = logmill::rules::load_paths(paths);
    let (program, more) = logmill::rules::compile::compile_with(&files, options);
    diags.extend(more);
    // Notes (default buckets, say) are for `logmill check`.
    diags
        .iter()
        .filter(|d| !d.is_note())
        .for_each(|d| eprintln!("{d}"));
    let errors = diags.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        bail!("{errors} error(s) in the rules; not starting");
    }
    Ok(program)
}

/// Starts the HTTP endpoint and the signal watcher; returns the bound address.
fn start_edges(
    rt: &tokio::runtime::Runtime,
    listen: SocketAddr,
    exported: Arc<Exported>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    stop_http: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    rt.spawn(serve(listener, exported, stop_http));
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
        while hup.recv().await.is_some() {
            reload.store(true, Ordering::Relaxed);
        }
    });
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.store(true, Ordering::Relaxed);
    });
    Ok(addr)
}

fn instance_of(cfg: &Config) -> String {
    cfg.instance_id
        .clone()
        .unwrap_or_else(|| format!("anonymous-{}-{}", std::process::id(), now_ms()))
}

fn init_logs_filtered(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Structured logs on stderr: JSON lines or text, filtered by `RUST_LOG` (default `info`).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn run(config: &Path) -> Result<()> {
    let (cfg, warnings) = match logmill::config::load(config) {
        Ok(c) => c,
        Err(diags) => {
            diags.iter().for_each(|d| eprintln!("{d}"));
            bail!("the config has errors; not starting");
        }
    };
    warnings.iter().for_each(|d| eprintln!("{d}"));
    init_logs(cfg.log_json);
    let program = Arc::new(load_program(&cfg.rules, &cfg.compile_options())?);
    serve_until_stopped(cfg, program, None)
}

/// Prints a live status line from the exported state.
type StatusLine = Box<dyn Fn(&Exported) + Send>;

/// Runs the service with its edges; `status` is called every second while it runs.
fn serve_until_stopped(
    cfg: Config,
    program: Arc<logmill::rules::Program>,
    status: Option<StatusLine>,
) -> Result<()> {
    logmill::service::exit_on_panic();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let telemetry = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing self-telemetry")?;
    let exported = Arc::new(Exported::new(
        Arc::clone(&program),
        Aggregates::new(&program),
        Some(telemetry),
        now_ms,
    ));
    exported.loaded.store(false, Ordering::Relaxed);
    exported.playground.store(cfg.playground, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let (stop_http_tx, stop_http_rx) = tokio::sync::watch::channel(false);
    let addr = start_edges(
        &rt,
        cfg.listen,
        Arc::clone(&exported),
        Arc::clone(&stop),
        Arc::clone(&reload),
        stop_http_rx,
    )?;
    let instance = instance_of(&cfg);
    tracing::info!(instance = %instance, group = %cfg.group_id, "serving http://{addr}/metrics");
    if cfg.playground {
        tracing::info!("the playground page is at http://{addr}/");
    }
    // After the signal handlers: a stop asked for while starting is a graceful stop too.
    rt.block_on(logmill::service::ensure_state_topic(&cfg))
        .context("checking the state topic")?;
    {
        let (cfg, exported) = (cfg.clone(), Arc::clone(&exported));
        rt.spawn(async move {
            if let Err(why) = logmill::service::verify_state_topic(&cfg).await {
                tracing::error!("{why}: not ready until it is fixed");
                *exported.blocker.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            }
        });
    }
    // If stopping takes longer than the deadline (a broker that never answers), leave anyway:
    // what is not checkpointed is replayed after the restart, so nothing is counted twice.
    let deadline = cfg.shutdown_deadline;
    let finished = Arc::new(AtomicBool::new(false));
    {
        let (stop, finished) = (Arc::clone(&stop), Arc::clone(&finished));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(deadline);
            if !finished.load(Ordering::Relaxed) {
                tracing::error!(
                    "shutdown took longer than {deadline:?}; exiting without a final checkpoint"
                );
                std::process::exit(1);
            }
        });
    }
    let status_thread = status.map(|f| {
        let (exported, stop) = (Arc::clone(&exported), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                f(&exported);
            }
        })
    });
    let linger = cfg.linger;
    let result = logmill::service::run(
        cfg,
        instance,
        program,
        Arc::clone(&exported),
        Arc::clone(&stop),
        reload,
    );
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = status_thread {
        let _ = t.join();
    }
    finished.store(true, Ordering::Relaxed);
    // A failed final checkpoint leaves the exports at the last one written, which is where the
    // partitions' next owners resume: still the values to serve while Prometheus scrapes.
    let failed = match result {
        Ok(counters) => {
            tracing::info!(
                events = counters.events_in,
                "stopped; serving the last checkpoint for {linger:?}"
            );
            None
        }
        Err(e @ logmill::service::ServiceError::FinalCheckpoint(_)) => {
            tracing::error!("{e}; serving the last checkpoint for {linger:?}");
            Some(e)
        }
        Err(e) => return Err(e).context("the service stopped"),
    };
    std::thread::sleep(linger);
    let _ = stop_http_tx.send(true);
    rt.shutdown_timeout(Duration::from_secs(1));
    match failed {
        Some(e) => Err(e).context("the service stopped"),
        None => Ok(()),
    }
}

pub fn broker(port: Option<u16>, partitions: i32, topics: &[String]) -> Result<()> {
    let cluster = MockCluster::new(1).context("starting the mock cluster")?;
    for t in topics {
        // `NAME:PARTITIONS` overrides the partition count, e.g. `logmill-state:2`.
        let (name, n) = match t.rsplit_once(':') {
            Some((name, n)) => (
                name,
                n.parse()
                    .with_context(|| format!("`{t}`: the partition count is not a number"))?,
            ),
            None => (t.as_str(), partitions),
        };
        cluster
            .create_topic(name, n, 1)
            .with_context(|| format!("creating topic {name}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bootstrap = cluster.bootstrap_servers();
    if let Some(port) = port {
        // librdkafka's mock takes no port: a forwarder on the asked one serves bootstrap
        // connections, and the metadata sends clients on to the mock's own port.
        let target = bootstrap.clone();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        rt.spawn(forward(listener, target));
        bootstrap = format!("127.0.0.1:{port}");
    }
    println!("{bootstrap}");
    eprintln!(
        "logmill broker: librdkafka's mock cluster at {bootstrap} with topics {} ({partitions} partitions); for development only, nothing is persisted. Ctrl-C stops it.",
        topics.join(", ")
    );
    rt.block_on(tokio::signal::ctrl_c())?;
    Ok(())
}

/// Relays every connection accepted on `listener` to `target`, both ways.
async fn forward(listener: tokio::net::TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(&target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::warn!("forwarding to {target}: {e}"),
            }
        });
    }
}

/// The sum of every sample of `name` in a text exposition.
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        // From +0: an empty `sum()` of floats is -0, which prints as `-0`.
        .fold(0.0, |a, b| a + b)
}

/// The trace id a generated line carries, to key its record by.
/// The demo's traces are keyed by service, as producers often key them: a trace's events are
/// then in several partitions, and the repartition stage gathers them.
fn service_key(line: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(line).ok()?;
    let service = match text.find("\"service\":\"") {
        Some(i) => text[i + 11..].split('"').next()?,
        None => text.split(' ').nth(2)?,
    };
    Some(service.as_bytes())
}

fn trace_key(line: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(line).ok()?;
    let at = text
        .find("\"trace_id\":\"")
        .map(|i| i + 12)
        .or_else(|| text.find("traceparent=00-").map(|i| i + 15))?;
    line.get(at..at + 32)
}

pub fn demo(rate: u64, metrics_addr: SocketAddr, rules: &[PathBuf]) -> Result<()> {
    // The status line owns the terminal; only warnings are logged.
    if std::env::var_os("RUST_LOG").is_none() {
        init_logs_filtered("warn");
    }
    let program = Arc::new(load_program(rules, &Default::default())?);
    let cluster = MockCluster::new(3).context("starting the mock cluster")?;
    let bootstrap = cluster.bootstrap_servers();
    for (t, p) in [
        ("logs", 4),
        ("logs-kept", 4),
        ("logs-dead-letter", 1),
        ("logs-traces", 2),
        ("logmill-demo-repartition", 4),
        ("logmill-demo-state", 2),
    ] {
        cluster.create_topic(t, p, 1)?;
    }
    eprintln!(
        "logmill demo: kafka at {bootstrap} (e.g. `kcat -b {bootstrap} -C -t logs-kept`), metrics at http://{metrics_addr}/metrics, the playground at http://{metrics_addr}/"
    );
    let cfg = Config {
        file: PathBuf::from("(demo)"),
        brokers: bootstrap.clone(),
        group_id: "logmill-demo".into(),
        instance_id: Some("demo-0".into()),
        topics: vec!["logs".into()],
        topic_regex: None,
        topic_refresh_interval: Duration::from_secs(30),
        properties: [("session.timeout.ms".to_string(), "6000".to_string())]
            .into_iter()
            .collect(),
        rules: rules.to_vec(),
        rules_candidate: Vec::new(),
        budgets: Default::default(),
        input: InputFormat::Auto,
        envelopes: Default::default(),
        limits: Limits::default(),
        cri_wait: std::time::Duration::from_secs(2),
        kept_topic: Some("logs-kept".into()),
        dead_letter_topic: Some("logs-dead-letter".into()),
        traces_topic: Some("logs-traces".into()),
        // Short, so that the demo shows summaries within seconds.
        traces: logmill::correlate::traces::Config {
            window_ms: 5_000,
            ..Default::default()
        },
        retain: Default::default(),
        // Within the demo's few seconds of traces: a partition that has carried no trace yet
        // holds the others' traces open this long at most.
        repartition: Some(logmill::correlate::repartition::Config {
            topic: "logmill-demo-repartition".into(),
            max_lag_ms: 10_000,
        }),
        delivery: Delivery::ExactlyOnce,
        state_topic: "logmill-demo-state".into(),
        checkpoint_interval: Duration::from_secs(1),
        chunk_bytes: 512 * 1024,
        max_deltas: 100,
        state_write_timeout: Duration::from_secs(10),
        linger: Duration::ZERO,
        listen: metrics_addr,
        playground: true,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        batch_max_events: 4096,
        batch_max_wait: Duration::from_millis(50),
        max_in_flight: 200_000,
        shutdown_deadline: Duration::from_secs(10),
        log_json: false,
    };
    let produced = Arc::new(AtomicU64::new(0));
    let generating = Arc::new(AtomicBool::new(true));
    let generator = {
        let (produced, generating) = (Arc::clone(&produced), Arc::clone(&generating));
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "10")
            .create()?;
        std::thread::spawn(move || {
            // Every other line is of a multi-service trace, keyed by its service: the
            // repartition stage brings each trace's events together again.
            let mut mixed = logmill::workload::Workload::new(logmill::workload::Kind::Mixed, 7);
            let mut traces = logmill::workload::Workload::new(logmill::workload::Kind::Traces, 7);
            let mut line = Vec::new();
            let started = Instant::now();
            let mut i = 0u64;
            while generating.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                if i >= due {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                line.clear();
                if i.is_multiple_of(2) {
                    mixed.line(&mut line);
                } else {
                    traces.line(&mut line);
                }
                let payload = line.strip_suffix(b"\n").unwrap_or(&line);
                let key = if i.is_multiple_of(2) {
                    trace_key(payload)
                } else {
                    service_key(payload)
                };
                let mut record = BaseRecord::<[u8], [u8]>::to("logs").payload(payload);
                if let Some(k) = key {
                    record = record.key(k);
                }
                if producer.send(record).is_ok() {
                    i += 1;
                    produced.store(i, Ordering::Relaxed);
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let _ = producer.flush(Duration::from_secs(5));
        })
    };
    let last = AtomicU64::new(0);
    let status: StatusLine = Box::new(move |exported: &Exported| {
        let text = exported.render(logmill::sink::exposition::ExpositionFormat::Text);
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        let telemetry = exported.telemetry().unwrap_or_default();
        let total = |name: &str| sum_of(&telemetry, name);
        let consumed = total(logmill::telemetry::EVENTS_IN) as u64;
        let kept = total(logmill::telemetry::EVENTS_KEPT);
        let per_sec = consumed.saturating_sub(last.swap(consumed, Ordering::Relaxed));
        let ratio = |unit: &str| {
            telemetry
                .lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "{}{{unit=\"{unit}\"}}",
                        logmill::telemetry::REDUCTION_RATIO
                    ))
                })
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        };
        let kept = if consumed == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * kept / consumed as f64)
        };
        // What leaves as logs, after `then: drop` and reduction.
        let out = match (ratio("events"), ratio("bytes")) {
            (Some(e), Some(b)) => format!(
                "logs out {:.0}% of events ({:.0}% of bytes)",
                100.0 * (1.0 - e),
                100.0 * (1.0 - b)
            ),
            _ => "logs out -".to_string(),
        };
        // The service graph and traces, from rules/traces.yaml's families.
        let traces: u64 = text
            .lines()
            .filter(|l| l.starts_with("traces_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        let edges = text
            .lines()
            .filter(|l| l.starts_with("service_graph_requests_total{"))
            .count();
        let ready = match exported.readiness() {
            Ok(()) => "ready".to_string(),
            Err(why) => format!("not ready: {why}"),
        };
        eprint!(
            "\r{per_sec} events/s, {consumed} consumed of {} produced, kept {kept}, {out}, {traces} traces, {edges} service-graph edges, lag {}, {series} series, {ready}\x1b[K",
            produced.load(Ordering::Relaxed),
            total(logmill::telemetry::CONSUMER_LAG),
        );
    });
    let result = serve_until_stopped(cfg, program, Some(status));
    generating.store(false, Ordering::Relaxed);
    let _ = generator.join();
    eprintln!();
    drop(cluster);
    result
}
