//! The `logmill` binary: argument parsing and the commands. Errors become `anyhow` here and
//! are printed once, with their chain.

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use logmill::decode::{InputFormat, Limits};
use logmill::sink::exposition::ExpositionFormat;

#[derive(Parser)]
#[command(
    name = "logmill",
    version,
    about = "Derive Prometheus metrics from logs, and keep only the logs worth keeping"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run rules over log files or stdin and print the resulting metrics.
    #[command(after_help = "Examples:
  logmill replay --rules rules/ access.log
  zcat app.log.gz | logmill replay --rules rules/app.yaml --logs-out kept.log -
  logmill replay --rules rules/ --openmetrics --metrics-out out.prom a.log b.log
  logmill replay --rules rules/ --topic logs-nginx /var/log/nginx/access.log")]
    Replay {
        /// Rule files or directories of them.
        #[arg(long = "rules", required = true)]
        rules: Vec<PathBuf>,
        /// How to decode events: auto (per event), json, logfmt or text.
        #[arg(long, default_value = "auto")]
        format: InputFormat,
        /// Write the exposition here instead of stdout.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
        /// Write the events that were kept here, in input order; with rules that reduce, their
        /// summaries too (JSON lines, `"logmill":"summary"`).
        #[arg(long)]
        logs_out: Option<PathBuf>,
        /// Kept events as JSON objects (`{"event": ..., "sample_rate": N, "template_id": ...}`)
        /// rather than byte for byte.
        #[arg(long)]
        logs_json: bool,
        /// Write undecodable or unprocessable events here, as JSON lines with the reason.
        #[arg(long)]
        dead_letter_out: Option<PathBuf>,
        /// Write logmill's own metrics (events, errors, matches per rule) here.
        #[arg(long)]
        telemetry_out: Option<PathBuf>,
        /// OpenMetrics instead of the Prometheus text format.
        #[arg(long)]
        openmetrics: bool,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Events larger than this are dead-lettered.
        #[arg(long, default_value_t = 64 * 1024)]
        max_event_bytes: usize,
        /// JSON nested deeper than this is dead-lettered.
        #[arg(long, default_value_t = 32)]
        max_json_depth: usize,
        /// No summary or progress on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Read every input as this topic (`_topic` and `match.topic` see it); by default an
        /// input's topic is its path as given (`stdin` for `-`).
        #[arg(long, value_name = "NAME")]
        topic: Option<String>,
        /// Replay's clock, in milliseconds since the epoch, instead of the wall clock: the time
        /// of events (exemplar timestamps, `expire_after`), so that outputs are reproducible.
        #[arg(long, value_name = "MS")]
        clock_ms: Option<u64>,
        /// Write per-trace summaries and service-graph edges here (JSON lines), from the rules
        /// with `trace: {summaries: true}`; rules read them as topic `logmill.traces`.
        #[arg(long)]
        traces_out: Option<PathBuf>,
        /// A trace is summarised once it has been quiet this long, in event time.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_window)]
        trace_window: std::time::Duration,
        /// Traces open at once; beyond, the quietest is summarised early.
        #[arg(long, default_value_t = 100_000)]
        max_open_traces: usize,
        /// Bytes of events `keep_traces` may hold while their traces are undecided, in MiB;
        /// beyond, the oldest traces are decided early (dropped).
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        max_held_mib: u64,
        /// Input files; `-` is stdin.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Validate rule files, or a service config and the rules it names; print every problem
    /// with its file:line:col.
    #[command(after_help = "Examples:
  logmill check rules/
  logmill check rules/nginx.yaml rules/app.yaml
  logmill check --against /etc/logmill/rules/ edge.yaml   # a team's file with everyone else's
  logmill check --config deploy/demo.yaml
  logmill check rules/ --sample sample.log --scale 50000000   # series at full scale")]
    Check {
        /// A service config (`logmill run --config`) to validate, with its rules.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The deployed rule files (a directory or files): the given files are checked
        /// together with them, replacing deployed files of the same name, so a metric another
        /// team defines differently, or without `shared: true`, is an error before deploying.
        #[arg(long, value_name = "DIR")]
        against: Vec<PathBuf>,
        /// Run the rules over these sample events and estimate each metric's series at full
        /// scale, warning where `max_series` would bind.
        #[arg(long, value_name = "FILE")]
        sample: Option<PathBuf>,
        /// The number of events the estimate is for (default: 100 times the sample).
        #[arg(long, value_name = "EVENTS", requires = "sample")]
        scale: Option<u64>,
        #[arg(required_unless_present = "config")]
        paths: Vec<PathBuf>,
    },
    /// Run the rule unit tests (`*.test.yaml`) in these files or directories.
    #[command(
        after_help = "Examples:\n  logmill test rules/\n  logmill test rules/nginx.test.yaml"
    )]
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the service: a consumer group member that serves derived metrics over HTTP.
    #[command(
        after_help = "Examples:\n  logmill run --config deploy/demo.yaml\n  logmill check --config deploy/demo.yaml   # validate first"
    )]
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// The whole service on an embedded Kafka (librdkafka's mock cluster) with generated logs.
    #[command(
        after_help = "Examples:\n  logmill demo\n  logmill demo --rate 20000 --metrics-addr 127.0.0.1:9898"
    )]
    Demo {
        /// Events per second the built-in generator produces.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value = "127.0.0.1:9898")]
        metrics_addr: std::net::SocketAddr,
        #[arg(long = "rules", default_value = "rules/")]
        rules: Vec<PathBuf>,
    },
    /// The playground page alone (no Kafka): paste log lines and a rule file, see diagnostics,
    /// `explain`, the series and the keep/drop decisions as you type.
    #[command(
        after_help = "Examples:\n  logmill playground                       # then open http://127.0.0.1:9899/\n  logmill playground --listen 127.0.0.1:0 rules/   # any free port; the \"Loaded rules\" view shows rules/"
    )]
    Playground {
        #[arg(long, default_value = "127.0.0.1:9899")]
        listen: std::net::SocketAddr,
        /// Rule files or directories to show in the "Loaded rules" view.
        rules: Vec<PathBuf>,
    },
    /// An embedded Kafka broker for trying rules locally with kcat and `logmill run`; for
    /// development only, it keeps nothing.
    #[command(
        after_help = "Examples:\n  logmill broker --partitions 4 --topic logs --topic logs-kept\n  logmill broker --port 9092 --topic logs --topic logs-kept --topic logs-dead-letter --topic logmill-state:2   # for deploy/demo.yaml"
    )]
    Broker {
        /// Also accept bootstrap connections on 127.0.0.1:PORT. The broker itself listens on
        /// a port librdkafka picks, which its metadata advertises and clients then use.
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// A topic to create, `NAME` or `NAME:PARTITIONS`. The mock cluster cannot create
        /// topics on request: list `logmill run`'s state topic here (`<group>-state:2` unless
        /// the config names another).
        #[arg(long = "topic", default_values = ["logs"])]
        topics: Vec<String>,
    },
    /// A starting rule file from sample events: for JSON and logfmt, their fields (few
    /// values: labels; durations: histograms); for text, the frequent templates, each a rule
    /// with an anchored regex capturing its variables. It passes `check`; review it, add tests.
    #[command(
        after_help = "Examples:\n  logmill suggest --team shop app.log > rules/shop.yaml\n  kubectl logs deploy/api --tail 5000 | logmill suggest --team api --templates 20 -"
    )]
    Suggest {
        /// The team the file is for (the metric names' prefix).
        #[arg(long, default_value = "myteam")]
        team: String,
        /// Text templates turned into rules, the most frequent first.
        #[arg(long, default_value_t = 10)]
        templates: usize,
        /// Sample events; `-` is stdin.
        input: PathBuf,
    },
    /// A candidate rule set against the live one over the same events: series added,
    /// removed and changed per family, each rule's matches and cost on both sides, and the
    /// events whose outcome changes. Writes nothing; promotion is moving the files.
    #[command(
        after_help = "Examples:\n  logmill shadow --live rules/ --candidate new-rules/ sample.log\n  logmill shadow --live rules/ --candidate rules-next/ --json --show 10 a.log b.log\n  logmill shadow --live rules/ --candidate new/ --exit-code sample.log   # 1 when anything differs"
    )]
    Shadow {
        /// The rules in force: files or directories.
        #[arg(long, required = true)]
        live: Vec<PathBuf>,
        /// The rules to try: files or directories.
        #[arg(long, required = true)]
        candidate: Vec<PathBuf>,
        /// The topic inputs are read as (`_topic`, `match.topic`); by default their path.
        #[arg(long)]
        topic: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Series and events listed per family and per outcome change.
        #[arg(long, default_value_t = 5)]
        show: usize,
        /// Exit with 1 when a series or an outcome differs.
        #[arg(long)]
        exit_code: bool,
        /// Input files; `-` is stdin.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Why each event did or did not match each rule: the format detected, the first
    /// condition that failed and the value it saw, the fields extracted, every series changed,
    /// the trace, and what becomes of the event.
    #[command(
        after_help = "Examples:\n  logmill explain --rules rules/ '{\"level\":\"error\",\"service\":\"cart\"}'\n  logmill explain --rules rules/nginx.yaml --file sample.log --json\n  tail -n 5 app.log | logmill explain --rules rules/ -"
    )]
    Explain {
        /// Rule files or directories.
        #[arg(long, required = true)]
        rules: Vec<PathBuf>,
        /// Read the events from this file (`-`: stdin) instead of the arguments.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The topic the events are read as.
        #[arg(long, default_value = "explain")]
        topic: String,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
        /// Events, one per argument (`-`: read them from stdin).
        lines: Vec<String>,
    },
    /// Mine the templates of log messages: CSV `line,template_id,template`, one row per input
    /// line, in order.
    #[command(after_help = "Examples:
  logmill templates app.log > templates.csv
  kubectl logs deploy/api | logmill templates --field msg -
  logmill templates --stream --field message - < events.jsonl
  logmill templates --templates-out summary.csv -q syslog > /dev/null

Each line gets the id of its template when it arrives; ids never change when a template
generalises, and are the same on every run for the same input. Without --stream, rows are
written after the input ends, each with its template's final text (8 bytes of memory per
line until then); with --stream, each row is written at once with the template's text as
of that line.")]
    Templates {
        /// Mine this JSON field (`msg`, `log.message`, `a[0].b`) or logfmt key instead of the
        /// whole line; a line without it (or that does not decode) is mined whole.
        #[arg(long, conflicts_with = "rules")]
        field: Option<String>,
        /// Mine what these rules' reductions mine: the `message` of the first matching rule
        /// that reduces the line; other lines are not mined and have no row.
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
        /// With --rules: read the input as this topic (default: its path, `stdin` for `-`).
        #[arg(long, value_name = "NAME", requires = "rules")]
        topic: Option<String>,
        /// Write each row as its line arrives, with the template's text at that point.
        #[arg(long)]
        stream: bool,
        /// Also write the templates themselves: CSV `template_id,count,template`.
        #[arg(long)]
        templates_out: Option<PathBuf>,
        /// Templates kept; at the cap the least recently used one is evicted.
        #[arg(long, default_value_t = logmill::reduce::templates::MinerConfig::default().max_templates)]
        max_templates: usize,
        /// No summary on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Input file; `-` is stdin.
        input: PathBuf,
    },
    /// Generate the reference workload: nginx access lines, JSON service logs, a mix, or
    /// multi-service traces.
    #[command(
        after_help = "Examples:\n  logmill gen nginx 2000000 > nginx.log\n  logmill gen json 1000 --seed 7\n  logmill gen mixed 2000 > examples/mixed.log\n  logmill gen traces 50000 --seed 7 > traces.log   # overlapping multi-service traces"
    )]
    Gen {
        /// nginx, json, mixed (both plus logfmt, noise and malformed records) or traces (the
        /// events of overlapping multi-service traces, 5% of them failing)
        kind: logmill::workload::Kind,
        /// Number of lines.
        n: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Compiles the rules and prints their diagnostics (notes only when `notes`: they are for
/// `check`); returns the program and the number of errors.
fn read_stdin() -> Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).context("reading stdin")?;
    Ok(v)
}

fn load_rules(paths: &[PathBuf], notes: bool) -> Result<(logmill::rules::Program, usize)> {
    load_rules_with(paths, notes, &Default::default())
}

/// `load_rules`, compiled as the service would with `options` (its config's budgets).
fn load_rules_with(
    paths: &[PathBuf],
    notes: bool,
    options: &logmill::rules::compile::Options,
) -> Result<(logmill::rules::Program, usize)> {
    let (files, mut diags) = logmill::rules::load_paths(paths);
    let (program, more) = logmill::rules::compile::compile_with(&files, options);
    diags.extend(more);
    for d in diags.iter().filter(|d| notes || !d.is_note()) {
        eprintln!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    Ok((program, errors))
}

/// `check --against`: the deployed files first (but those the checked files replace, by file
/// name), then the checked ones, so conflicts are reported in the files being checked.
fn check_against(
    paths: &[PathBuf],
    against: &[PathBuf],
) -> (logmill::rules::Program, usize, usize) {
    let (checked, mut diags) = logmill::rules::load_paths(paths);
    let (deployed, more) = logmill::rules::load_paths(against);
    diags.extend(more);
    let (files, n_deployed) = logmill::rules::compile::overlay(deployed, checked);
    let (program, more) = logmill::rules::compile(&files);
    diags.extend(more);
    // The deployed files' own notes are their owners' business.
    for d in diags
        .iter()
        .filter(|d| !d.is_note() || !is_deployed(&files[..n_deployed], d))
    {
        eprintln!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    (program, errors, n_deployed)
}

fn is_deployed(deployed: &[logmill::rules::SourceFile], d: &logmill::rules::Diagnostic) -> bool {
    deployed.iter().any(|f| f.name == d.file)
}

/// `30s`, `1m`, `500ms`: a window for `--trace-window`.
fn parse_window(s: &str) -> std::result::Result<std::time::Duration, String> {
    logmill::extract::value::parse_duration_secs(s)
        .filter(|d| *d > 0.0 && d.is_finite())
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("`{s}` is not a duration such as 30s, 1m or 500ms"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Replay {
            rules,
            format,
            metrics_out,
            logs_out,
            logs_json,
            dead_letter_out,
            telemetry_out,
            openmetrics,
            threads,
            max_event_bytes,
            max_json_depth,
            quiet,
            topic,
            clock_ms,
            traces_out,
            trace_window,
            max_open_traces,
            max_held_mib,
            inputs,
        } => {
            let (program, errors) = load_rules(&rules, false)?;
            if errors > 0 {
                bail!("{errors} error(s) in the rules; nothing was run");
            }
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1);
            cmd::replay::run(
                Arc::new(program),
                cmd::replay::Options {
                    inputs,
                    format,
                    limits: Limits {
                        max_event_bytes,
                        max_json_depth,
                    },
                    exposition: if openmetrics {
                        ExpositionFormat::OpenMetrics
                    } else {
                        ExpositionFormat::Text
                    },
                    metrics_out,
                    logs_out,
                    dead_letter_out,
                    telemetry_out,
                    threads,
                    quiet,
                    topic,
                    logs_json,
                    clock_ms,
                    traces_out,
                    traces: logmill::correlate::traces::Config {
                        window_ms: trace_window.as_millis() as u64,
                        max_open: max_open_traces,
                        ..Default::default()
                    },
                    retain: logmill::reduce::retain::RetainConfig {
                        max_held_bytes: max_held_mib << 20,
                        ..Default::default()
                    },
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            config,
            against,
            sample,
            scale,
            mut paths,
        } => {
            let mut options = logmill::rules::compile::Options::default();
            if let Some(config) = config {
                match logmill::config::load(&config) {
                    Ok((c, warnings)) => {
                        warnings.iter().for_each(|d| eprintln!("{d}"));
                        options = c.compile_options();
                        paths.extend(c.rules);
                    }
                    Err(diags) => {
                        diags.iter().for_each(|d| eprintln!("{d}"));
                        let errors = diags.iter().filter(|d| d.is_error()).count();
                        eprintln!("{errors} error(s)");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
            let (program, errors, deployed) = if against.is_empty() {
                let (program, errors) = load_rules_with(&paths, true, &options)?;
                (program, errors, 0)
            } else {
                check_against(&paths, &against)
            };
            if errors > 0 {
                eprintln!("{errors} error(s)");
                return Ok(ExitCode::from(1));
            }
            print!(
                "ok: {} rule(s), {} metric(s) in {} file(s)",
                program.rules.len(),
                program.families.len(),
                program.files.len()
            );
            if deployed > 0 {
                print!(", {deployed} of them deployed");
            }
            println!();
            if let Some(sample) = sample {
                cmd::sample::report(program, &sample, scale)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { paths } => {
            let files = cmd::ruletest::find(&paths);
            if files.is_empty() {
                bail!("no test files (*.test.yaml) found");
            }
            let (mut passed, mut failed) = (0, 0);
            for f in files {
                match cmd::ruletest::run_file(&f) {
                    Ok((p, fl)) => {
                        passed += p;
                        failed += fl;
                    }
                    Err(e) => {
                        println!("FAIL {e:#}");
                        failed += 1;
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run { config } => {
            cmd::service::run(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            rate,
            metrics_addr,
            rules,
        } => {
            cmd::service::demo(rate, metrics_addr, &rules)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Playground { listen, rules } => {
            cmd::playground::run(listen, &rules)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Broker {
            port,
            partitions,
            topics,
        } => {
            cmd::service::broker(port, partitions, &topics)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Suggest {
            team,
            templates,
            input,
        } => {
            let bytes = if input.as_os_str() == "-" {
                read_stdin()?
            } else {
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?
            };
            let yaml = cmd::suggest::run(
                &bytes,
                cmd::suggest::Options {
                    team,
                    max_templates: templates,
                },
            )?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Shadow {
            live,
            candidate,
            topic,
            json,
            show,
            exit_code,
            inputs,
        } => {
            let (live, errors) = load_rules(&live, false)?;
            if errors > 0 {
                anyhow::bail!("{errors} error(s) in the live rules");
            }
            let (candidate, errors) = load_rules(&candidate, false)?;
            if errors > 0 {
                anyhow::bail!("{errors} error(s) in the candidate rules; fix them first");
            }
            let differs = cmd::shadow::run(
                std::sync::Arc::new(live),
                std::sync::Arc::new(candidate),
                cmd::shadow::Options {
                    inputs,
                    topic,
                    json,
                    show,
                },
            )?;
            Ok(if exit_code && differs {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain {
            rules,
            file,
            topic,
            json,
            lines,
        } => {
            let (program, errors) = load_rules(&rules, false)?;
            if errors > 0 {
                anyhow::bail!("{errors} error(s) in the rules; nothing was explained");
            }
            let input: Vec<u8> = match (&file, lines.as_slice()) {
                (Some(f), _) if f.as_os_str() == "-" => read_stdin()?,
                (Some(f), _) => {
                    std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
                }
                (None, [one]) if one == "-" => read_stdin()?,
                (None, []) => anyhow::bail!("no events: give them as arguments, --file F or -"),
                (None, many) => many.join("\n").into_bytes(),
            };
            cmd::explain::run(std::sync::Arc::new(program), &topic, &input, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates {
            field,
            rules,
            topic,
            stream,
            templates_out,
            max_templates,
            quiet,
            input,
        } => {
            let rules = if rules.is_empty() {
                None
            } else {
                let (program, errors) = load_rules(&rules, false)?;
                if errors > 0 {
                    bail!("{errors} error(s) in the rules; nothing was run");
                }
                Some((Arc::new(program), topic))
            };
            cmd::templates::run(cmd::templates::Options {
                input,
                field,
                rules,
                stream,
                templates_out,
                max_templates,
                quiet,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen { kind, n, seed } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            logmill::workload::write(kind, n, seed, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
