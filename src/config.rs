//! The service configuration (`logmill run --config`), read like rule files: every problem is
//! a diagnostic with `file:line:col`, all of them at once.
//!
//! `${NAME}` in a string is replaced by the environment variable `NAME` (Kubernetes passes
//! the pod name that way, for static membership).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::decode::{InputFormat, Limits};
use crate::rules::diagnostic::{Code, Diagnostic, Sink};
use crate::rules::read::{MapView, byte_size, duration, duration_or_zero, limit, scalar, strings};
use crate::rules::suggest::did_you_mean;
use crate::rules::yaml::{self, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Exported values cover exactly the events of durable checkpoints.
    ExactlyOnce,
    /// Exported values are live; a crash can count the events since the last checkpoint twice.
    AtLeastOnce,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub brokers: String,
    pub group_id: String,
    /// Static membership: the same id after a restart resumes the same exported values.
    pub instance_id: Option<String>,
    pub topics: Vec<String>,
    /// Topics whose whole name matches are consumed, except logmill's own outputs and state and
    /// Kafka's internal topics; the list is refreshed every `topic_refresh_interval`.
    pub topic_regex: Option<String>,
    pub topic_refresh_interval: Duration,
    /// Passed to librdkafka as they are.
    pub properties: BTreeMap<String, String>,
    /// Rule files or directories, resolved against the config file's directory.
    pub rules: Vec<PathBuf>,
    /// Candidate rule files or directories (`rules_candidate`), shadowing the live ones of the
    /// same file name: evaluated on the same events, shown only at `/-/shadow`.
    pub rules_candidate: Vec<PathBuf>,
    pub input: InputFormat,
    /// Envelopes per topic (`input.envelopes`), before the rule files' declarations.
    pub envelopes: crate::decode::envelope::Declared,
    pub limits: Limits,
    /// How long a worker waits for a CRI line's last part on the wall clock when no batch of
    /// its partition brings it (`input.cri_wait`).
    pub cri_wait: Duration,
    pub kept_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    /// Per-trace summaries and service-graph edges (from rules with `trace.summaries`).
    pub traces_topic: Option<String>,
    pub traces: crate::correlate::traces::Config,
    /// Trace events republished keyed by trace id, when traces span partitions.
    pub repartition: Option<crate::correlate::repartition::Config>,
    /// The caps of `keep_traces`, per partition.
    pub retain: crate::reduce::retain::RetainConfig,
    pub delivery: Delivery,
    pub state_topic: String,
    pub checkpoint_interval: Duration,
    /// Checkpoint blobs are cut into records of at most this many (compressed) bytes.
    pub chunk_bytes: usize,
    /// Incremental checkpoints between two full ones, at most; a full one also comes when the
    /// incremental ones since the last add up to more than it.
    pub max_deltas: usize,
    /// How long a write to the state topic may take before it counts as failed.
    pub state_write_timeout: Duration,
    /// How long `/metrics` keeps serving after a graceful stop.
    pub linger: Duration,
    pub listen: SocketAddr,
    /// Serve the playground page at `/` (`http.playground`, off by default): anyone who can
    /// reach the port can evaluate rules there (bounded, apart from the service's state).
    pub playground: bool,
    /// Per team, budgets that replace what its rule files declare (`budgets`).
    pub budgets: BTreeMap<String, crate::rules::compile::TeamBudgets>,
    pub workers: usize,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    /// Events read but not yet merged before the poll loop waits for the workers.
    pub max_in_flight: usize,
    pub shutdown_deadline: Duration,
    pub log_json: bool,
}

impl Config {
    /// How the service compiles its rules: with the config's team budgets.
    pub fn compile_options(&self) -> crate::rules::compile::Options {
        crate::rules::compile::Options {
            budgets: self.budgets.clone(),
            ..Default::default()
        }
    }
}

const TOP: &[&str] = &[
    "kafka",
    "rules",
    "rules_candidate",
    "budgets",
    "input",
    "output",
    "traces",
    "delivery",
    "http",
    "workers",
    "batch",
    "max_in_flight",
    "shutdown_deadline",
    "log",
];
const KAFKA: &[&str] = &[
    "brokers",
    "group_id",
    "instance_id",
    "topics",
    "topic_regex",
    "topic_refresh_interval",
    "properties",
];
const INPUT: &[&str] = &[
    "format",
    "envelopes",
    "max_event_bytes",
    "max_json_depth",
    "cri_wait",
];
const OUTPUT: &[&str] = &["kept_topic", "dead_letter_topic", "traces_topic"];
const TRACES: &[&str] = &[
    "window",
    "max_open",
    "max_spans",
    "max_held_bytes",
    "max_decisions",
    "repartition",
];
const REPARTITION: &[&str] = &["topic", "max_lag"];
const DELIVERY: &[&str] = &[
    "mode",
    "state_topic",
    "checkpoint_interval",
    "linger",
    "chunk_bytes",
    "max_deltas",
    "state_write_timeout",
];
const HTTP: &[&str] = &["listen", "playground"];
const BATCH: &[&str] = &["max_events", "max_wait"];
const LOG: &[&str] = &["format"];

/// A `topic_regex` as logmill applies it: to whole topic names.
pub fn subscription(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!(
        "^(?:{})$",
        re.trim_start_matches('^').trim_end_matches('$')
    ))
}

/// Whether logmill may consume a topic a `topic_regex` matches: not its own outputs or state,
/// nor Kafka's internal topics.
pub fn consumable(cfg: &Config, topic: &str) -> bool {
    !topic.starts_with("__")
        && Some(topic) != cfg.kept_topic.as_deref()
        && Some(topic) != cfg.dead_letter_topic.as_deref()
        && Some(topic) != cfg.traces_topic.as_deref()
        && Some(topic) != cfg.repartition.as_ref().map(|r| r.topic.as_str())
        && topic != cfg.state_topic
}

/// Expands `${NAME}` from the environment; an unset variable is an error.
fn expand_env(s: &str) -> Result<String, String> {
    expand_with(s, |name| std::env::var(name).ok())
}

fn expand_with(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..]
            .find('}')
            .ok_or_else(|| "unterminated `${`".to_string())?
            + i;
        let name = &rest[i + 2..end];
        out.push_str(
            &env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?,
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn text(node: &Node, what: &str, sink: &mut Sink) -> Option<String> {
    let raw = scalar(node, what, sink)?;
    match expand_env(&raw) {
        Ok(s) => Some(s),
        Err(e) => {
            sink.error(node.pos, Code::WrongType, format!("{what}: {e}"))
                .hint("set it, or write the value itself");
            None
        }
    }
}

/// Reads and validates a config file. `Err` holds every diagnostic (errors and warnings).
pub fn load(path: &Path) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let name: Arc<str> = path.display().to_string().into();
    let mut sink = Sink::new(name);
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            sink.error(
                Default::default(),
                Code::Io,
                format!("cannot read config: {e}"),
            );
            return Err(sink.diags);
        }
    };
    let root = match yaml::parse(&src) {
        Ok(r) => r,
        Err(e) => {
            sink.error(
                e.pos,
                Code::YamlSyntax,
                format!("invalid yaml: {}", e.message),
            );
            return Err(sink.diags);
        }
    };
    let config = parse(&root, path, &mut sink);
    match config {
        Some(c) if !sink.has_errors() => Ok((c, sink.diags)),
        _ => Err(sink.diags),
    }
}

fn parse(root: &Node, path: &Path, sink: &mut Sink) -> Option<Config> {
    let mut top = MapView::new(root, "the config", sink)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut brokers = None;
    let mut group_id = None;
    let mut instance_id = None;
    let mut topics = Vec::new();
    let mut topic_regex = None;
    let mut topic_regex_pos = root.pos;
    let mut topic_refresh_interval = Duration::from_secs(30);
    let mut properties = BTreeMap::new();
    let kafka_node = top.get("kafka");
    match kafka_node.and_then(|n| MapView::new(n, "`kafka`", sink)) {
        Some(mut k) => {
            let kafka_pos = kafka_node.map_or(root.pos, |n| n.pos);
            brokers = k.get("brokers").and_then(|n| text(n, "`brokers`", sink));
            group_id = k.get("group_id").and_then(|n| text(n, "`group_id`", sink));
            instance_id = k
                .get("instance_id")
                .and_then(|n| text(n, "`instance_id`", sink));
            if let Some(n) = k.get("topics") {
                topics = strings(n, "`topics`", sink)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
            }
            if let Some(n) = k.get("topic_regex")
                && let Some(re) = scalar(n, "`topic_regex`", sink)
            {
                if let Err(e) = regex::Regex::new(&re) {
                    sink.error(n.text_pos, Code::BadRegex, format!("invalid regex: {e}"));
                }
                topic_regex_pos = n.text_pos;
                topic_regex = Some(re);
            }
            if let Some(n) = k.get("topic_refresh_interval") {
                topic_refresh_interval =
                    duration(n, "`topic_refresh_interval`", sink).unwrap_or(topic_refresh_interval);
            }
            if let Some(mut p) = k
                .get("properties")
                .and_then(|n| MapView::new(n, "`properties`", sink))
            {
                for (key, value) in p.entries {
                    if let (Some(key), Some(value)) =
                        (key.as_scalar(), text(value, "a property", sink))
                    {
                        properties.insert(key.to_string(), value);
                    }
                }
                p.accept_all();
                p.finish(&[], "`properties`", sink);
            }
            for (key, name) in [(&brokers, "brokers"), (&group_id, "group_id")] {
                if key.is_none() && k.get(name).is_none() {
                    sink.error(
                        kafka_pos,
                        Code::MissingKey,
                        format!("`kafka.{name}` is required"),
                    );
                }
            }
            if topics.is_empty() && topic_regex.is_none() {
                sink.error(
                    kafka_pos,
                    Code::MissingKey,
                    "`kafka` needs `topics` or `topic_regex`",
                )
                .hint("name the topics to consume, e.g. `topics: [logs]`");
            }
            k.finish(KAFKA, "`kafka`", sink);
        }
        None => {
            sink.error(root.pos, Code::MissingKey, "missing `kafka`")
                .hint("add `kafka:` with `brokers`, `group_id` and `topics`");
        }
    }
    let rules: Vec<PathBuf> = match top.get("rules") {
        Some(n) => strings(n, "`rules`", sink)
            .into_iter()
            .map(|(s, _)| dir.join(s))
            .collect(),
        None => {
            sink.error(root.pos, Code::MissingKey, "missing `rules`")
                .hint("list rule files or directories, e.g. `rules: [rules/]`");
            Vec::new()
        }
    };
    let rules_candidate: Vec<PathBuf> = top
        .get("rules_candidate")
        .map(|n| {
            strings(n, "`rules_candidate`", sink)
                .into_iter()
                .map(|(s, _)| dir.join(s))
                .collect()
        })
        .unwrap_or_default();
    let mut input = InputFormat::Auto;
    let mut envelopes = crate::decode::envelope::Declared::default();
    let mut limits = Limits::default();
    let mut cri_wait = Duration::from_secs(2);
    if let Some(mut i) = top
        .get("input")
        .and_then(|n| MapView::new(n, "`input`", sink))
    {
        if let Some(n) = i.get("format")
            && let Some(f) = scalar(n, "`format`", sink)
        {
            match f.parse() {
                Ok(f) => input = f,
                Err(e) => {
                    sink.error(n.pos, Code::UnknownVariant, e)
                        .hint(did_you_mean(&f, &["auto", "json", "logfmt", "text"]));
                }
            }
        }
        if let Some(n) = i.get("max_event_bytes") {
            limits.max_event_bytes =
                limit(n, "`max_event_bytes`", sink).unwrap_or(limits.max_event_bytes);
        }
        if let Some(n) = i.get("max_json_depth") {
            limits.max_json_depth =
                limit(n, "`max_json_depth`", sink).unwrap_or(limits.max_json_depth);
        }
        if let Some(n) = i.get("cri_wait") {
            cri_wait = duration(n, "`cri_wait`", sink).unwrap_or(cri_wait);
        }
        if let Some(n) = i.get("envelopes") {
            envelopes.topics = crate::rules::compile::envelopes::declarations(n, sink)
                .into_iter()
                .map(|(t, e, _)| (t, e))
                .collect();
        }
        i.finish(INPUT, "`input`", sink);
    }
    let (mut kept_topic, mut dead_letter_topic, mut traces_topic) = (None, None, None);
    if let Some(mut o) = top
        .get("output")
        .and_then(|n| MapView::new(n, "`output`", sink))
    {
        kept_topic = o
            .get("kept_topic")
            .and_then(|n| text(n, "`kept_topic`", sink));
        dead_letter_topic = o
            .get("dead_letter_topic")
            .and_then(|n| text(n, "`dead_letter_topic`", sink));
        traces_topic = o
            .get("traces_topic")
            .and_then(|n| text(n, "`traces_topic`", sink));
        o.finish(OUTPUT, "`output`", sink);
    }
    let mut traces = crate::correlate::traces::Config::default();
    let mut retain = crate::reduce::retain::RetainConfig::default();
    let mut repartition = None;
    if let Some(mut t) = top
        .get("traces")
        .and_then(|n| MapView::new(n, "`traces`", sink))
    {
        if let Some(d) = t.get("window").and_then(|n| duration(n, "`window`", sink)) {
            traces.window_ms = d.as_millis() as u64;
        }
        if let Some(n) = t.get("max_open") {
            traces.max_open = limit(n, "`max_open`", sink).unwrap_or(traces.max_open);
        }
        if let Some(n) = t.get("max_spans") {
            traces.max_spans = limit(n, "`max_spans`", sink).unwrap_or(traces.max_spans);
        }
        if let Some(n) = t.get("max_held_bytes") {
            retain.max_held_bytes =
                limit(n, "`max_held_bytes`", sink).map_or(retain.max_held_bytes, |v| v as u64);
        }
        if let Some(n) = t.get("max_decisions") {
            retain.max_decisions =
                limit(n, "`max_decisions`", sink).unwrap_or(retain.max_decisions);
        }
        if let Some((node, mut r)) = t
            .get("repartition")
            .and_then(|n| Some((n, MapView::new(n, "`repartition`", sink)?)))
        {
            let topic = r.get("topic").and_then(|n| text(n, "`topic`", sink));
            let max_lag_ms = r
                .get("max_lag")
                .and_then(|n| duration(n, "`max_lag`", sink))
                .map_or(crate::correlate::repartition::DEFAULT_MAX_LAG_MS, |d| {
                    d.as_millis() as u64
                });
            match topic {
                Some(topic) => {
                    repartition = Some(crate::correlate::repartition::Config { topic, max_lag_ms })
                }
                None => {
                    sink.error(node.pos, Code::MissingKey, "`repartition` needs `topic`")
                        .hint("name the internal topic trace events are republished to, e.g. `topic: logs-traces-repartition`");
                }
            }
            r.finish(REPARTITION, "`repartition`", sink);
        }
        t.finish(TRACES, "`traces`", sink);
    }
    let mut delivery = Delivery::ExactlyOnce;
    let mut state_topic = None;
    let mut checkpoint_interval = Duration::from_secs(5);
    let mut linger = Duration::from_secs(15);
    let mut chunk_bytes = 512 * 1024;
    let mut max_deltas = 100;
    let mut state_write_timeout = Duration::from_secs(10);
    if let Some(mut d) = top
        .get("delivery")
        .and_then(|n| MapView::new(n, "`delivery`", sink))
    {
        if let Some(n) = d.get("mode") {
            match scalar(n, "`mode`", sink).as_deref() {
                Some("exactly_once") => delivery = Delivery::ExactlyOnce,
                Some("at_least_once") => delivery = Delivery::AtLeastOnce,
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown delivery mode `{other}`"),
                    )
                    .hint(did_you_mean(other, &["exactly_once", "at_least_once"]));
                }
                None => {}
            }
        }
        state_topic = d
            .get("state_topic")
            .and_then(|n| text(n, "`state_topic`", sink));
        if let Some(n) = d.get("checkpoint_interval") {
            checkpoint_interval =
                duration(n, "`checkpoint_interval`", sink).unwrap_or(checkpoint_interval);
        }
        if let Some(n) = d.get("linger") {
            linger = duration_or_zero(n, "`linger`", sink).unwrap_or(linger);
        }
        if let Some(n) = d.get("chunk_bytes") {
            chunk_bytes = limit(n, "`chunk_bytes`", sink).unwrap_or(chunk_bytes);
            if !(4096..=8 * 1024 * 1024).contains(&chunk_bytes) {
                sink.error(n.pos, Code::BadLimit, format!("`chunk_bytes` {chunk_bytes} is out of range"))
                    .hint("between 4096 and 8388608; keep it under the state topic's `max.message.bytes` (1 MB by default)");
            }
        }
        if let Some(n) = d.get("max_deltas") {
            max_deltas = limit(n, "`max_deltas`", sink).unwrap_or(max_deltas);
        }
        if let Some(n) = d.get("state_write_timeout") {
            state_write_timeout =
                duration(n, "`state_write_timeout`", sink).unwrap_or(state_write_timeout);
        }
        d.finish(DELIVERY, "`delivery`", sink);
    }
    let mut listen: SocketAddr = "0.0.0.0:9898".parse().expect("a valid address");
    let mut playground = false;
    if let Some(mut h) = top
        .get("http")
        .and_then(|n| MapView::new(n, "`http`", sink))
    {
        if let Some(n) = h.get("listen")
            && let Some(s) = text(n, "`listen`", sink)
        {
            match s.parse() {
                Ok(a) => listen = a,
                Err(_) => {
                    sink.error(
                        n.pos,
                        Code::WrongType,
                        format!("invalid listen address `{s}`"),
                    )
                    .hint("write HOST:PORT, e.g. `0.0.0.0:9898`");
                }
            }
        }
        if let Some(n) = h.get("playground") {
            match n.as_bool() {
                Some(b) => playground = b,
                None => {
                    sink.error(n.pos, Code::WrongType, "`playground` must be true or false");
                }
            }
        }
        h.finish(HTTP, "`http`", sink);
    }
    let mut budgets = BTreeMap::new();
    if let Some(mut teams) = top
        .get("budgets")
        .and_then(|n| MapView::new(n, "`budgets`", sink))
    {
        teams.accept_all();
        for (team, node) in teams.entries {
            let (Some(team), Some(mut m)) = (
                team.as_scalar(),
                MapView::new(node, "a team's budgets", sink),
            ) else {
                continue;
            };
            let b = crate::rules::compile::TeamBudgets {
                series: m.get("series").and_then(|n| limit(n, "`series`", sink)),
                cpu: m.get("cpu").and_then(|n| duration(n, "`cpu`", sink)),
                kept_bytes: m
                    .get("kept_bytes")
                    .and_then(|n| byte_size(n, "`kept_bytes`", sink)),
            };
            m.finish(&["series", "cpu", "kept_bytes"], "a team's budgets", sink);
            budgets.insert(team.to_string(), b);
        }
        teams.finish(&[], "`budgets`", sink);
    }
    let workers = top
        .get("workers")
        .and_then(|n| limit(n, "`workers`", sink))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (mut batch_max_events, mut batch_max_wait) = (4096, Duration::from_millis(50));
    if let Some(mut b) = top
        .get("batch")
        .and_then(|n| MapView::new(n, "`batch`", sink))
    {
        if let Some(n) = b.get("max_events") {
            batch_max_events = limit(n, "`max_events`", sink).unwrap_or(batch_max_events);
        }
        if let Some(n) = b.get("max_wait") {
            batch_max_wait = duration(n, "`max_wait`", sink).unwrap_or(batch_max_wait);
        }
        b.finish(BATCH, "`batch`", sink);
    }
    let max_in_flight = top
        .get("max_in_flight")
        .and_then(|n| limit(n, "`max_in_flight`", sink))
        .unwrap_or(200_000);
    let shutdown_deadline = top
        .get("shutdown_deadline")
        .and_then(|n| duration(n, "`shutdown_deadline`", sink))
        .unwrap_or(Duration::from_secs(30));
    let mut log_json = false;
    if let Some(mut l) = top.get("log").and_then(|n| MapView::new(n, "`log`", sink)) {
        if let Some(n) = l.get("format") {
            match scalar(n, "`format`", sink).as_deref() {
                Some("json") => log_json = true,
                Some("text") => log_json = false,
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown log format `{other}`"),
                    )
                    .hint(did_you_mean(other, &["text", "json"]));
                }
                None => {}
            }
        }
        l.finish(LOG, "`log`", sink);
    }
    top.finish(TOP, "the config", sink);
    let group_id = group_id?;
    let state_topic = state_topic.unwrap_or_else(|| format!("{group_id}-state"));
    let own: Vec<(&str, &str)> = [
        (kept_topic.as_deref(), "the kept topic"),
        (dead_letter_topic.as_deref(), "the dead-letter topic"),
        (Some(state_topic.as_str()), "the state topic"),
        (traces_topic.as_deref(), "the traces topic"),
        (
            repartition
                .as_ref()
                .map(|r: &crate::correlate::repartition::Config| r.topic.as_str()),
            "the repartition topic",
        ),
    ]
    .into_iter()
    .filter_map(|(t, what)| Some((t?, what)))
    .collect();
    let max_record = properties
        .get("message.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000);
    if limits.max_event_bytes + 4096 > max_record {
        sink.error(
            root.pos,
            Code::BadLimit,
            format!(
                "`input.max_event_bytes` ({}) does not leave room for headers under the producer's `message.max.bytes` ({max_record})",
                limits.max_event_bytes
            ),
        )
        .hint("kept records and dead letters carry at most `max_event_bytes` of their event: keep it 4 KiB under `message.max.bytes`");
    }
    for (t, what) in &own {
        if let Some(re) = topic_regex.as_deref().and_then(|re| subscription(re).ok())
            && re.is_match(t)
        {
            sink.error(
                topic_regex_pos,
                Code::BadRegex,
                format!("`topic_regex` matches {what} `{t}`: logmill would read its own output"),
            )
            .hint("narrow the regex (it must match whole topic names), or rename the output topic");
        }
        if topics.iter().any(|x| x == t) {
            sink.error(
                root.pos,
                Code::WrongType,
                format!("`kafka.topics` lists {what} `{t}`: logmill would read its own output"),
            );
        }
    }
    Some(Config {
        file: path.to_path_buf(),
        brokers: brokers?,
        state_topic,
        group_id,
        instance_id,
        topics,
        topic_regex,
        topic_refresh_interval,
        properties,
        rules,
        rules_candidate,
        input,
        envelopes,
        limits,
        cri_wait,
        kept_topic,
        dead_letter_topic,
        traces_topic,
        traces,
        repartition,
        retain,
        delivery,
        checkpoint_interval,
        chunk_bytes,
        max_deltas,
        state_write_timeout,
        linger,
        listen,
        playground,
        budgets,
        workers,
        batch_max_events,
        batch_max_wait,
        max_in_flight,
        shutdown_deadline,
        log_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, Vec<String>> {
        // Tests run in parallel: each call gets a directory of its own (two texts of one
        // length once shared one, and one test removed it under the other).
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("logmill-config-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, text).unwrap();
        let r = load(&path)
            .map(|(c, _)| c)
            .map_err(|d| d.iter().map(|d| d.to_string()).collect());
        std::fs::remove_dir_all(dir).unwrap();
        r
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c =
            load_str("kafka: {brokers: 'b:9092', group_id: g, topics: [logs]}\nrules: [rules/]\n")
                .unwrap();
        assert_eq!(c.state_topic, "g-state");
        assert_eq!(c.delivery, Delivery::ExactlyOnce);
        assert!(c.rules[0].ends_with("rules/"));
    }

    #[test]
    fn issue12_envelopes_are_declared_per_topic() {
        use crate::decode::envelope::Envelope;
        let c = load_str(
            "kafka: {brokers: b, group_id: g, topics: [pods, beats]}\nrules: [r]\ninput: {envelopes: {pods: cri, 'beats*': filebeat}}\n",
        )
        .unwrap();
        assert_eq!(c.envelopes.of("pods"), Some(Envelope::Cri));
        assert_eq!(c.envelopes.of("beats-eu"), Some(Envelope::Ecs));
        assert_eq!(c.envelopes.of("other"), None);
        let errs = load_str(
            "kafka: {brokers: b, group_id: g, topics: [t]}\nrules: [r]\ninput: {envelopes: {t: dockr}}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("unknown envelope `dockr`"), "{all}");
        assert!(all.contains("did you mean `docker`"), "{all}");
    }

    #[test]
    fn every_problem_is_reported() {
        let errs = load_str(
            "kafka: {brokers: b, grup_id: g}\nrules: [r]\ndelivery: {mode: twice, linger: soon}\nhttp: {listen: nowhere}\n",
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "unknown key `grup_id`",
            "did you mean `group_id`",
            "needs `topics`",
            "unknown delivery mode `twice`",
            "invalid duration `soon`",
            "invalid listen address",
        ] {
            assert!(all.contains(want), "{want} in\n{all}");
        }
    }

    #[test]
    fn issue9_team_budgets_from_the_service_config() {
        let c = load_str("kafka: {brokers: b, group_id: g, topics: [t]}\nrules: [r]\nbudgets:\n  edge: {series: 5000, cpu: 20ms, kept_bytes: 1MiB}\n  web: {series: 10}\n").unwrap();
        let edge = &c.budgets["edge"];
        assert_eq!(edge.series, Some(5000));
        assert_eq!(edge.cpu, Some(Duration::from_millis(20)));
        assert_eq!(edge.kept_bytes, Some(1 << 20));
        assert_eq!(c.budgets["web"].kept_bytes, None);
        let errs = load_str("kafka: {brokers: b, group_id: g, topics: [t]}\nrules: [r]\nbudgets:\n  edge: {sereis: 5}\n").unwrap_err();
        assert!(errs.iter().any(|e| e.contains("sereis")), "{errs:?}");
    }

    #[test]
    fn issue8_the_repartition_stage_is_configured_under_traces() {
        let c = load_str("kafka: {brokers: b, group_id: g, topics: [logs]}\nrules: [r]\ntraces: {repartition: {topic: logs-by-trace, max_lag: 1m}}\n").unwrap();
        let r = c.repartition.clone().unwrap();
        assert_eq!((r.topic.as_str(), r.max_lag_ms), ("logs-by-trace", 60_000));
        // It is read beside the inputs, never as one of them.
        assert!(!consumable(&c, "logs-by-trace"));
        let c = load_str("kafka: {brokers: b, group_id: g, topics: [logs]}\nrules: [r]\ntraces: {repartition: {topic: t2}}\n").unwrap();
        assert_eq!(
            c.repartition.unwrap().max_lag_ms,
            crate::correlate::repartition::DEFAULT_MAX_LAG_MS
        );
        for (yaml, want) in [
            (
                "traces: {repartition: {max_lag: 1m}}",
                "`repartition` needs `topic`",
            ),
            (
                "traces: {repartition: {topic: logs}}",
                "`kafka.topics` lists the repartition topic `logs`",
            ),
            (
                "traces: {repartition: {topic: x, lag: 1m}}",
                "unknown key `lag`",
            ),
        ] {
            let errs = load_str(&format!(
                "kafka: {{brokers: b, group_id: g, topics: [logs]}}\nrules: [r]\n{yaml}\n"
            ))
            .unwrap_err();
            assert!(errs.iter().any(|e| e.contains(want)), "{want} in {errs:?}");
        }
    }

    #[test]
    fn environment_is_expanded() {
        let env = |n: &str| (n == "POD_NAME").then(|| "pod-3".to_string());
        assert_eq!(
            expand_with("logmill-${POD_NAME}", env).as_deref(),
            Ok("logmill-pod-3")
        );
        assert!(expand_with("${POD_NAME", env).is_err());
        let errs = load_str("kafka: {brokers: b, group_id: g, topics: [t], instance_id: '${LOGMILL_NOT_SET_X}'}\nrules: [r]\n").unwrap_err();
        assert!(
            errs[0].contains("`LOGMILL_NOT_SET_X` is not set"),
            "{errs:?}"
        );
    }
}
