//! The compiled form of a rule set: what `extract` and `derive` execute.
//!
//! A `Program` is immutable once built and shared (`Arc`) between workers; swapping rules is
//! swapping the `Arc` between batches.

use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;

use crate::decode::Format;
use crate::extract::matcher::Matcher;
use crate::extract::prefilter::Prefilter;
use crate::extract::value::Decimal;

#[derive(Debug)]
pub struct Program {
    pub rules: Vec<Rule>,
    pub families: Vec<Family>,
    /// Event fields some rule reads; decode fills exactly these slots and no others.
    pub event_fields: Vec<FieldPath>,
    /// Envelopes the rule files declare per topic (`envelopes:`).
    pub envelopes: crate::decode::envelope::Declared,
    pub prefilter: Prefilter,
    /// The literals the prefilter looks for, by id (for `explain`).
    pub literals: Vec<Vec<u8>>,
    /// Hash of every source text, to tell which rules are loaded.
    pub hash: u64,
    pub files: Vec<Arc<str>>,
    /// The teams with a budget.
    pub teams: Vec<Team>,
    /// Hash of each file's text, in `files` order, to tell which version of a file is loaded.
    pub file_hashes: Vec<u64>,
    /// The `patterns_dir:` directories the files read, for a reload to watch.
    pub pattern_dirs: Vec<std::path::PathBuf>,
}

impl Program {
    pub fn empty() -> Program {
        Program {
            rules: Vec::new(),
            families: Vec::new(),
            event_fields: Vec::new(),
            envelopes: Default::default(),
            prefilter: Prefilter::new(&[], &[]),
            literals: Vec::new(),
            hash: 0,
            files: Vec::new(),
            teams: Vec::new(),
            file_hashes: Vec::new(),
            pattern_dirs: Vec::new(),
        }
    }

    pub fn family_by_name(&self, name: &str) -> Option<usize> {
        self.families.iter().position(|f| f.name == name)
    }
}

/// A field path like `http.status` or `tags[0]`. For logfmt events the whole name is the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    pub name: String,
    pub segments: Vec<PathSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef {
    /// The whole event as received.
    Line,
    /// The Kafka topic (or the file name in replay).
    Topic,
    /// A decoded event field: an index into `Program::event_fields`.
    Event(u32),
    /// A value captured by this rule's `extract` steps.
    Capture(u32),
    /// The event's trace context (`_trace_id`, `_span_id`, `_parent_span_id`), normalised.
    Trace(TracePart),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracePart {
    Trace,
    Span,
    Parent,
}

/// What a field says of the trace context, by its name (or the rule's `trace:` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// The rule's own correlation id: hex ids are read as such, anything else kept as it is.
    Custom,
    Traceparent,
    B3,
    B3TraceId,
    B3SpanId,
    B3ParentSpanId,
    B3Sampled,
    TraceId,
    Datadog,
    SpanId,
    ParentSpanId,
}

/// Fields read by default for trace context, by name, in order of preference.
pub const TRACE_FIELDS: &[(&str, TraceKind)] = &[
    ("traceparent", TraceKind::Traceparent),
    ("b3", TraceKind::B3),
    ("X-B3-TraceId", TraceKind::B3TraceId),
    ("X-B3-SpanId", TraceKind::B3SpanId),
    ("X-B3-ParentSpanId", TraceKind::B3ParentSpanId),
    ("X-B3-Sampled", TraceKind::B3Sampled),
    ("trace_id", TraceKind::TraceId),
    ("traceId", TraceKind::TraceId),
    ("trace.id", TraceKind::TraceId),
    ("dd.trace_id", TraceKind::Datadog),
    ("span_id", TraceKind::SpanId),
    ("spanId", TraceKind::SpanId),
    ("span.id", TraceKind::SpanId),
    ("parent_span_id", TraceKind::ParentSpanId),
    ("parentSpanId", TraceKind::ParentSpanId),
];

/// Where a rule reads its events' trace context, in order of preference.
#[derive(Debug, Clone, Default)]
pub struct TraceSources {
    pub fields: Vec<(TraceKind, FieldRef)>,
    /// Whether the rule's counters and histograms take exemplars.
    pub exemplars: bool,
    /// Whether the rule reads the ids as text (`_trace_id`, sampling by trace).
    pub text: bool,
    /// Whether it reads the span ids as text too (`_span_id`, `_parent_span_id`).
    pub span_text: bool,
    /// Whether the rule's events go into per-trace summaries, and where they say what those
    /// need (each list in order of preference; `time` empty means the record's time).
    pub summaries: bool,
    pub service: Vec<FieldRef>,
    pub route: Vec<FieldRef>,
    pub status: Vec<FieldRef>,
    pub duration: Vec<FieldRef>,
    pub level: Vec<FieldRef>,
    pub time: Vec<TimeSource>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub team: String,
    pub file: Arc<str>,
    pub format: Option<Format>,
    /// The event's topic is one of these (empty: any topic).
    pub topics: Vec<TopicPattern>,
    /// What the prefilter requires, as clauses of `Prefilter` literal ids: at least one
    /// literal of every clause occurs in any event the rule matches.
    pub clauses: Vec<Vec<u32>>,
    /// Conditions that read no capture, checked before extraction (all must hold).
    pub pre: Vec<Cond>,
    pub steps: Vec<Step>,
    /// Conditions that read captures, checked after extraction (all must hold).
    pub post: Vec<Cond>,
    pub n_captures: usize,
    /// The name of each capture slot, for what reports name fields (dead letters, explain).
    pub capture_names: Vec<String>,
    pub updates: Vec<Update>,
    pub then: Then,
    pub trace: TraceSources,
    /// What happens to the event after it is counted and kept: sampling, deduplication,
    /// throttling, template summaries (`reduce:` and the team's `defaults.reduce`).
    pub reduce: Option<Box<Reduce>>,
    /// The CPU time per second its team allows each of its rules (`budget.cpu`), enforced
    /// by the service (`Engine::enforce_cpu_budgets`).
    pub cpu_budget: Option<Duration>,
}

/// A rule's `reduce:` section, compiled. Every action works per partition, in event time, and
/// decides from the partition's records in order only (see `crate::reduce`).
#[derive(Debug)]
pub struct Reduce {
    /// `team/rule`, which names the rule's windows and summaries (stable across reloads that
    /// move rules around), and its hash.
    pub rule: Arc<str>,
    pub rule_hash: u64,
    /// The text templates are mined from: the first of these the event has, else the line.
    pub message: Vec<FieldRef>,
    /// The event's level: the first of these it has. Error levels are never reduced.
    pub level: Vec<FieldRef>,
    /// The event's own time, for windows; the record's time (Kafka timestamp) otherwise.
    pub time: Option<TimeSource>,
    /// Events for which this holds are never reduced.
    pub always_keep: Option<Cond>,
    pub sample: Option<Sample>,
    /// Trace-aware retention of what `sample` drops by trace id.
    pub keep_traces: Option<KeepTraces>,
    pub dedupe: Option<Dedupe>,
    pub throttle: Option<Throttle>,
    pub patterns: Option<Patterns>,
    /// Entries (keys, templates) each action keeps per partition; past it the oldest is
    /// closed early, its summary emitted.
    pub max_keys: usize,
    /// The team's kept bytes per second (`budget.kept_bytes`), when it has one.
    pub kept_bytes: Option<KeptBytes>,
}

/// A team's budget of kept bytes per second of event time, per partition: past it in a
/// second, the team's kept events are suppressed (never protected ones) and summarised once
/// per second.
#[derive(Debug, Clone)]
pub struct KeptBytes {
    pub team: Arc<str>,
    pub team_hash: u64,
    pub per_second: u64,
}

/// Fields that make a key, with their names (for summaries).
#[derive(Debug, Default)]
pub struct KeyFields {
    pub fields: Vec<FieldRef>,
    pub names: Vec<String>,
}

/// Keep 1 in `rate`, decided by a hash of the key.
#[derive(Debug)]
pub struct Sample {
    pub rate: u32,
    /// Empty: the event's trace id (the rule's trace context), else the whole event.
    pub key: KeyFields,
}

/// A trace sampling would drop is held and kept whole if one of its events is protected, or
/// if it lasts longer than `slower_ms`; decided `wait_ms` (event time) after its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepTraces {
    pub wait_ms: u64,
    pub slower_ms: Option<u64>,
}

/// The first event of a key in a window is kept, its repeats are summarised.
#[derive(Debug)]
pub struct Dedupe {
    pub window_ms: u64,
    /// The template of the message and these fields; or, with `whole`, the event's bytes.
    pub key: KeyFields,
    pub whole: bool,
}

/// At most `limit` events per key per interval.
#[derive(Debug)]
pub struct Throttle {
    pub limit: u32,
    pub per_ms: u64,
    /// Empty: one key for the rule.
    pub key: KeyFields,
}

/// The first `keep` events of each template per interval; the rest summarised.
#[derive(Debug)]
pub struct Patterns {
    pub keep: u32,
    pub per_ms: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct TimeSource {
    pub field: FieldRef,
    pub format: crate::extract::time::TimeFormat,
}

pub const DEFAULT_MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Not said: the event is kept unless another matching rule drops it.
    Default,
    /// Said explicitly: kept even if another matching rule drops it.
    Keep,
    Drop,
}

/// A `match:` condition. Literals are the prefilter's: whether one occurs in the event is
/// known once the prefilter has run, so a literal costs nothing to test.
#[derive(Debug)]
pub enum Cond {
    Field(Condition),
    /// The event contains this `Prefilter` literal.
    Literal(u32),
    /// The event's topic is one of these.
    Topic(Vec<TopicPattern>),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// Whether the condition reads a capture (so it can only be checked after extraction).
    pub fn reads_captures(&self) -> bool {
        match self {
            // Trace context is resolved with the captures: a rule may name captures for it.
            Cond::Field(c) => matches!(c.field, FieldRef::Capture(_) | FieldRef::Trace(_)),
            Cond::Literal(_) | Cond::Topic(_) => false,
            Cond::All(cs) | Cond::Any(cs) => cs.iter().any(Cond::reads_captures),
            Cond::Not(c) => c.reads_captures(),
        }
    }
}

#[derive(Debug)]
pub struct Condition {
    pub field: FieldRef,
    pub test: Test,
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic name, or a glob over topic names (`logs-*`, `app-?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    Exact(String),
    Glob(String),
}

impl TopicPattern {
    pub fn new(s: &str) -> TopicPattern {
        if s.contains(['*', '?']) {
            TopicPattern::Glob(s.to_string())
        } else {
            TopicPattern::Exact(s.to_string())
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TopicPattern::Exact(t) | TopicPattern::Glob(t) => t,
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(t) => t == topic,
            TopicPattern::Glob(g) => glob_match(g.as_bytes(), topic.as_bytes()),
        }
    }
}

#[derive(Debug)]
pub enum Test {
    Exists(bool),
    Equals(String),
    In(Vec<String>),
    Regex(Box<FieldRegex>),
    Contains(Box<memchr::memmem::Finder<'static>>),
}

/// A `regex` test. A pattern that is a literal between optional `^` and `$` (`^5`, `^GET$`,
/// `timeout`) is tested as that literal: a regex shared by the workers takes its cache from a
/// pool on every match, which costs more than these tests do.
#[derive(Debug)]
pub struct FieldRegex {
    pub re: regex::Regex,
    literal: Option<(bool, String, bool)>,
}

impl FieldRegex {
    pub fn new(re: regex::Regex) -> FieldRegex {
        let literal = literal_of(re.as_str());
        FieldRegex { re, literal }
    }

    pub fn is_match(&self, v: &str) -> bool {
        match &self.literal {
            Some((true, l, true)) => v == l,
            Some((true, l, false)) => v.starts_with(l.as_str()),
            Some((false, l, true)) => v.ends_with(l.as_str()),
            Some((false, l, false)) => memchr::memmem::find(v.as_bytes(), l.as_bytes()).is_some(),
            None => self.re.is_match(v),
        }
    }
}

/// The literal a pattern matches, and whether it is anchored at the start and at the end; none
/// for any other pattern (classes, alternations, repetitions, case-insensitive letters,
/// multi-line anchors).
fn literal_of(pattern: &str) -> Option<(bool, String, bool)> {
    use regex_syntax::hir::{HirKind, Look};
    let hir = regex_syntax::parse(pattern).ok()?;
    let parts = match hir.kind() {
        HirKind::Concat(parts) => parts.as_slice(),
        _ => std::slice::from_ref(&hir),
    };
    let look =
        |h: &regex_syntax::hir::Hir, want: Look| matches!(h.kind(), HirKind::Look(l) if *l == want);
    let start = parts.first().is_some_and(|h| look(h, Look::Start));
    let end = parts.last().is_some_and(|h| look(h, Look::End)) && parts.len() > usize::from(start);
    let middle = &parts[usize::from(start)..parts.len() - usize::from(end)];
    match middle {
        [h] => match h.kind() {
            HirKind::Literal(l) => Some((start, String::from_utf8(l.0.to_vec()).ok()?, end)),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Debug)]
pub enum Step {
    /// A regex or grok pattern run over `from`; `groups[i]` is the capture slot of group `i + 1`.
    Pattern {
        from: FieldRef,
        matcher: Box<Matcher>,
        groups: Vec<Option<u32>>,
    },
    /// `json:` / `logfmt:` steps: name an event field; fail when the event has another format.
    Alias { format: Format, from: u32, to: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// Any number; the default.
    Float,
    Int,
    /// `250ms`, `1.5s`, `2m`: converted to seconds. A bare number is taken as seconds.
    Duration,
    Bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ValueSource {
    pub field: FieldRef,
    pub ty: ValueType,
}

#[derive(Debug)]
pub struct Update {
    pub family: u32,
    /// In the family's label order.
    pub labels: Vec<LabelSource>,
    pub value: Option<ValueSource>,
    pub op: Op,
    /// Multiplies the value exactly, e.g. 0.001 to turn milliseconds into seconds; `None` is 1.
    pub scale: Option<Decimal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CounterAdd,
    GaugeSet,
    GaugeAdd,
    GaugeSub,
    Observe,
}

#[derive(Debug)]
pub enum LabelSource {
    Static(String),
    /// A field's value, through `map` when there is one. `default` stands for a value that is
    /// missing or empty, or not mapped when there is a map; without a default that is the empty
    /// value (the label is still there: every series of a family has the same label names).
    Field {
        field: FieldRef,
        map: Option<Arc<ValueMap>>,
        default: Option<String>,
    },
}

impl LabelSource {
    /// The label value for a field's text (`None`: the field is missing).
    pub fn value<'a>(
        map: Option<&'a ValueMap>,
        default: Option<&'a str>,
        text: Option<&'a str>,
    ) -> &'a str {
        match (text.filter(|t| !t.is_empty()), map) {
            (None, _) => default.unwrap_or(""),
            (Some(t), None) => t,
            (Some(t), Some(m)) => m.get(t).or(default).unwrap_or(t),
        }
    }
}

/// `map:` on a label: exact keys first, then `?`/`*` globs in file order.
#[derive(Debug, Default)]
pub struct ValueMap {
    pub exact: HashMap<String, String>,
    pub globs: Vec<(String, String)>,
}

impl ValueMap {
    pub fn get(&self, value: &str) -> Option<&str> {
        if let Some(v) = self.exact.get(value) {
            return Some(v);
        }
        self.globs
            .iter()
            .find(|(glob, _)| glob_match(glob.as_bytes(), value.as_bytes()))
            .map(|(_, v)| v.as_str())
    }
}

/// `*` (any run of bytes) and `?` (one byte) globs, as in label maps and `match.topic`.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_match(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob_match(rest, &s[1..]),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub unit: Option<String>,
    pub kind: MetricKind,
    /// Sorted, so the same label set written in another order is the same family.
    pub label_names: Vec<String>,
    pub buckets: Vec<f64>,
    pub quantiles: Vec<f64>,
    pub max_age: Duration,
    pub age_buckets: usize,
    pub max_series: usize,
    pub expire_after: Option<Duration>,
    /// The series budget of the team that defines the family (the first, for a shared one).
    pub budget: Option<SeriesBudget>,
}

/// A team's cap on its series over all its families: past it, a new label set of any of them
/// goes to that family's overflow series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesBudget {
    /// Index into `Program::teams`.
    pub team: u32,
    pub series: usize,
}

/// A team of the program, and its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub name: String,
    pub series_budget: Option<usize>,
}

pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const DEFAULT_QUANTILES: &[f64] = &[0.5, 0.9, 0.99];
pub const DEFAULT_MAX_SERIES: usize = 10_000;
pub const MAX_LABELS: usize = 16;
/// The label value every label of the overflow series carries.
pub const OVERFLOW_VALUE: &str = "__overflow__";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns_are_tested_as_literals() {
        let lit = |a: bool, l: &str, b: bool| Some((a, l.to_string(), b));
        assert_eq!(literal_of("^5"), lit(true, "5", false));
        assert_eq!(literal_of("^GET$"), lit(true, "GET", true));
        assert_eq!(literal_of("timeout"), lit(false, "timeout", false));
        assert_eq!(literal_of(r"\.json$"), lit(false, ".json", true));
        assert_eq!(literal_of("^é"), lit(true, "é", false));
        for other in [
            "(?i)^a", "^a|b", "^a.b", "(?m)^a", "^5+", "^[45]", "", "^", "$", "^$",
        ] {
            assert_eq!(literal_of(other), None, "{other}");
        }
        // Each one matches what its regex matches.
        let values = [
            "", "5", "500", "a5", "GET", "GETS", "x.json", "timeout!", "é1", "\n5",
        ];
        for pattern in [
            "^5", "^GET$", "timeout", r"\.json$", "^é", "^[45]", "(?i)^get",
        ] {
            let t = FieldRegex::new(regex::Regex::new(pattern).unwrap());
            for v in values {
                assert_eq!(t.is_match(v), t.re.is_match(v), "{pattern} on {v:?}");
            }
        }
    }

    #[test]
    fn value_map_precedence() {
        let mut m = ValueMap::default();
        m.exact.insert("503".into(), "unavailable".into());
        m.globs.push(("5??".into(), "5xx".into()));
        m.globs.push(("*".into(), "other".into()));
        assert_eq!(m.get("503"), Some("unavailable"));
        assert_eq!(m.get("500"), Some("5xx"));
        assert_eq!(m.get("5000"), Some("other"));
    }

    /// Issue 9: `default:` without `map:` replaced every value (all users became `unknown`);
    /// it stands only for a missing value, or an unmapped one when there is a map.
    #[test]
    fn issue9_default_without_map_keeps_values() {
        let v = LabelSource::value;
        assert_eq!(v(None, Some("unknown"), Some("root")), "root");
        assert_eq!(v(None, Some("unknown"), None), "unknown");
        assert_eq!(v(None, Some("unknown"), Some("")), "unknown");
        assert_eq!(v(None, None, None), "");
        let mut m = ValueMap::default();
        m.globs.push(("5??".into(), "5xx".into()));
        assert_eq!(v(Some(&m), Some("other"), Some("503")), "5xx");
        assert_eq!(v(Some(&m), Some("other"), Some("200")), "other");
        assert_eq!(v(Some(&m), None, Some("200")), "200");
        assert_eq!(v(Some(&m), Some("other"), None), "other");
    }
}
