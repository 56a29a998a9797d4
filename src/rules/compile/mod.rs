//! Rule files in, a `Program` and every diagnostic out.
//!
//! **Compilation is a pure function of the rule files and never stops at the first error**: each
//! file, rule and metric is checked on its own, a broken one is left out of the program, and
//! the caller decides whether any error is fatal (`logmill check` prints them all; the service
//! refuses to swap to a rule set with errors).
//!
//! This module holds what every section shares: files, teams, `defaults`, the rule skeleton
//! and name resolution. Each section of a rule is compiled in its own module, in the order of
//! `SECTIONS` (see `Section`), the way rust-analyzer lowers each construct on its own:
//! `extract` (with `types`), `match`, `metrics`, `then` and `reduce`.

mod conditions;
pub mod envelopes;
mod extract;
mod metrics;
mod patterns;
mod reduce;
mod then;
mod trace;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::diagnostic::{Code, Diagnostic, Sink};
use super::program::*;
use super::read::{MapView, byte_size, duration, limit, scalar};
use super::suggest::did_you_mean;
use super::yaml::{self, Node, Pos};
use crate::decode::Format;
use crate::extract::prefilter::Prefilter;
/// A rule file's name (as printed in diagnostics) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: Arc<str>,
    pub text: String,
}

/// Reads rule files: each path is a file, or a directory whose `*.yaml`/`*.yml` files (not
/// `*.test.yaml`) are read in name order.
pub fn load_paths(paths: &[PathBuf]) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    for path in paths {
        let mut found = Vec::new();
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    found.extend(
                        entries
                            .filter_map(|e| e.ok().map(|e| e.path()))
                            .filter(|p| is_yaml(p) && !is_test_file(p)),
                    );
                    found.sort();
                }
                Err(e) => diags.push(io_diag(path, &e)),
            }
        } else if is_test_file(path) {
            test_file_diags(path, &mut diags);
        } else {
            found.push(path.clone());
        }
        for p in found {
            match std::fs::read_to_string(&p) {
                Ok(text) => files.push(SourceFile {
                    name: p.display().to_string().into(),
                    text,
                }),
                Err(e) => diags.push(io_diag(&p, &e)),
            }
        }
    }
    (files, diags)
}

pub fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

pub fn is_test_file(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

/// A test file given where rule files are expected (`logmill check rules/x.test.yaml`, or a
/// shell glob): it is not read as rules, but its syntax is checked, and the reader is told
/// what runs it.
fn test_file_diags(path: &Path, diags: &mut Vec<Diagnostic>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return diags.push(io_diag(path, &e)),
    };
    let name: Arc<str> = path.display().to_string().into();
    let (_, more) =
        super::testfile::read(name.clone(), &text, path.parent().unwrap_or(Path::new(".")));
    diags.extend(more);
    let mut sink = Sink::new(name);
    sink.warning(
        Pos { line: 1, col: 1 },
        Code::TestFile,
        format!(
            "`{}` is a rule test file: its syntax was checked, not its rules",
            path.display()
        ),
    )
    .hint(format!(
        "run its tests with `logmill test {}`",
        path.display()
    ));
    diags.extend(sink.diags);
}

fn io_diag(path: &Path, e: &std::io::Error) -> Diagnostic {
    let mut sink = Sink::new(path.display().to_string().into());
    sink.error(
        Pos { line: 1, col: 1 },
        Code::Io,
        format!("cannot read rule file: {e}"),
    );
    sink.diags.pop().expect("just pushed")
}

/// Compiles rule files into one program. Rules with errors are left out; see the module docs.
pub fn compile(files: &[SourceFile]) -> (Program, Vec<Diagnostic>) {
    compile_with(files, &Options::default())
}

/// `base`'s files, but those `over` replaces (by file name, wherever they are), then
/// `over`'s: a team's files checked against the deployed set (`check --against`), or the
/// candidate rules beside the live ones (`rules_candidate`). The second value is how many of
/// `base`'s are left, first.
pub fn overlay(base: Vec<SourceFile>, over: Vec<SourceFile>) -> (Vec<SourceFile>, usize) {
    let name = |f: &SourceFile| Path::new(&*f.name).file_name().map(|n| n.to_os_string());
    let replaced: Vec<_> = over.iter().map(name).collect();
    let mut files: Vec<SourceFile> = base
        .into_iter()
        .filter(|f| !replaced.contains(&name(f)))
        .collect();
    let kept = files.len();
    files.extend(over);
    (files, kept)
}

/// Records a team's budget where it is declared; a different value in another of the team's
/// files is an error naming both places.
fn declare<T: PartialEq + std::fmt::Debug>(
    budgets: &mut std::collections::BTreeMap<String, (T, String)>,
    team: &str,
    value: T,
    what: &str,
    node: &Node,
    sink: &mut Sink,
) {
    let here = format!("{}:{}:{}", sink.file(), node.pos.line, node.pos.col);
    match budgets.get(team) {
        Some((other, at)) if *other != value => {
            sink.error(
                node.pos,
                Code::MetricConflict,
                format!("team `{team}`'s {what} is {value:?} here and {other:?} at {at}"),
            )
            .hint("declare a team's budget once, or the same in each of its files");
        }
        Some(_) => {}
        None => {
            budgets.insert(team.to_string(), (value, here));
        }
    }
}

/// What compiling takes besides the files: bounds for rules from an untrusted source (the
/// playground page), and the budgets the service's config sets per team.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The most bytes one regex (a `regex:`, a condition's regex, an expanded `grok:`) may take
    /// compiled; `None` is the regex crate's default. Over it, the rule has a `bad-regex` error.
    pub regex_size_limit: Option<usize>,
    /// Rule files may not make the compiler read files (`patterns_dir:`): set for the
    /// playground page, whose rules come from a browser.
    pub no_files: bool,
    /// Per team: budgets that hold whatever its files declare (the platform's word over the
    /// team's own).
    pub budgets: std::collections::BTreeMap<String, TeamBudgets>,
}

/// A team's budgets as the service config sets them (`budgets:`); each one it names replaces
/// what the team's files declare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamBudgets {
    pub series: Option<usize>,
    pub cpu: Option<Duration>,
    pub kept_bytes: Option<u64>,
}

/// `compile`, with bounds.
pub fn compile_with(files: &[SourceFile], options: &Options) -> (Program, Vec<Diagnostic>) {
    let mut b = Builder {
        regex_size_limit: options.regex_size_limit,
        no_files: options.no_files,
        ..Builder::default()
    };
    let mut diags = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut file_hashes = Vec::with_capacity(files.len());
    for file in files {
        file.name.hash(&mut hasher);
        file.text.hash(&mut hasher);
        let mut own = std::collections::hash_map::DefaultHasher::new();
        file.text.hash(&mut own);
        file_hashes.push(own.finish());
        let mut sink = Sink::new(file.name.clone());
        match yaml::parse(&file.text) {
            Ok(root) => b.file(&root, &mut sink),
            Err(e) => yaml_error(&e, &file.text, &mut sink),
        }
        diags.extend(sink.diags);
    }
    // The service config's budgets replace the files' (`Options::budgets`).
    let here = || "the service config".to_string();
    for (team, c) in &options.budgets {
        if let Some(n) = c.series {
            b.budgets.insert(team.clone(), (n, here()));
        }
        if let Some(d) = c.cpu {
            b.cpu_budgets.insert(team.clone(), (d, here()));
        }
        if let Some(n) = c.kept_bytes {
            b.kept_budgets.insert(team.clone(), (n, here()));
        }
    }
    // A budget declared in one of a team's files holds for the rules of all of them.
    for r in &mut b.rules {
        r.cpu_budget = b.cpu_budgets.get(&r.team).map(|(d, _)| *d);
    }
    reduce::kept_bytes_budgets(&mut b);
    let rule_clauses: Vec<Vec<Vec<u32>>> = b.rules.iter().map(|r| r.clauses.clone()).collect();
    let teams: Vec<Team> = b
        .budgets
        .iter()
        .map(|(name, (series, _))| Team {
            name: name.clone(),
            series_budget: Some(*series),
        })
        .collect();
    let families = b
        .families
        .into_iter()
        .map(|e| {
            let mut f = e.family;
            f.budget = teams
                .iter()
                .position(|t| Some(t.name.as_str()) == e.teams.first().map(|t| t.team.as_str()))
                .and_then(|i| {
                    Some(SeriesBudget {
                        team: i as u32,
                        series: teams[i].series_budget?,
                    })
                });
            f
        })
        .collect();
    // Pattern files are part of the rules: an edit there is a new program.
    let mut pattern_dirs: Vec<PathBuf> = b.pattern_dirs.keys().cloned().collect();
    pattern_dirs.sort();
    for dir in &pattern_dirs {
        dir.hash(&mut hasher);
        for (name, regex, _, _) in &b.pattern_dirs[dir] {
            name.hash(&mut hasher);
            regex.hash(&mut hasher);
        }
    }
    let program = Program {
        prefilter: Prefilter::new(&b.literals, &rule_clauses),
        literals: b.literals.clone(),
        rules: b.rules,
        families,
        teams,
        event_fields: b.event_fields,
        envelopes: crate::decode::envelope::Declared {
            topics: b.envelopes.into_iter().map(|(t, e, _)| (t, e)).collect(),
        },
        hash: hasher.finish(),
        files: files.iter().map(|f| f.name.clone()).collect(),
        file_hashes,
        pattern_dirs,
    };
    diags.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    // A team's defaults compile in each of its rules: say a problem there once.
    diags.dedup();
    (program, diags)
}

/// Reports a YAML syntax error, with a hint where the parser's message is about structure:
/// most of those are indentation, which the message does not say.
pub(crate) fn yaml_error(e: &yaml::SyntaxError, text: &str, sink: &mut Sink) {
    let d = sink.error(
        e.pos,
        Code::YamlSyntax,
        format!("invalid yaml: {}", e.message),
    );
    let lines: Vec<&str> = text.lines().collect();
    let at = (e.pos.line as usize).saturating_sub(1);
    let Some(line) = lines.get(at) else {
        return;
    };
    // Where a line's key starts: after its indentation and any `- ` list markers.
    let key_col = |l: &str| {
        let t = l.trim_start_matches(' ');
        let mut col = l.len() - t.len();
        let mut rest = t;
        while let Some(r) = rest.strip_prefix("- ") {
            let r2 = r.trim_start_matches(' ');
            col += 2 + r.len() - r2.len();
            rest = r2;
        }
        col + 1
    };
    let above = lines[..at]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let m = e.message.as_str();
    if m.contains("tabs disallowed") || line.starts_with('\t') {
        d.hint("YAML indents with spaces only: replace the tab with spaces");
    } else if m.contains("mapping values are not allowed")
        && line
            .chars()
            .take((e.pos.col as usize).saturating_sub(1))
            .collect::<String>()
            .contains(": ")
    {
        d.hint("a value that contains `: ` must be quoted, e.g. `msg: 'took: 3s'`");
    } else if m.contains("mapping values are not allowed")
        || m.contains("did not find expected key")
        || m.contains("did not find expected '-'")
        || m.contains("illegal placement of ':'")
    {
        let mut hint = format!(
            "check the indentation: line {} starts at column {}",
            e.pos.line,
            key_col(line)
        );
        if let Some(above) = above {
            hint.push_str(&format!(", the line above at column {}", key_col(above)));
        }
        hint.push_str(
            "; the keys of one mapping start in the same column (a list item's after its `- `)",
        );
        d.hint(hint);
    }
}

/// Parses `a.b[0].c`. Keys are anything but `.` and `[`; indices are decimal.
pub fn parse_path(name: &str) -> Option<FieldPath> {
    let mut segments = Vec::new();
    for part in name.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && (segments.is_empty() || rest.is_empty()) {
            return None;
        }
        if !key.is_empty() {
            segments.push(PathSegment::Key(key.to_string()));
        }
        while !rest.is_empty() {
            let close = rest.find(']')?;
            let idx: usize = rest[1..close].parse().ok()?;
            segments.push(PathSegment::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return None;
            }
        }
    }
    Some(FieldPath {
        name: name.to_string(),
        segments,
    })
}

#[derive(Default)]
struct Builder {
    /// The rule being compiled reads `_trace_id`, `_span_id` or `_parent_span_id`; the
    /// latter two.
    reads_trace: bool,
    reads_spans: bool,
    families: Vec<metrics::FamilyEntry>,
    family_index: HashMap<String, usize>,
    event_fields: Vec<FieldPath>,
    field_index: HashMap<String, u32>,
    literals: Vec<Vec<u8>>,
    literal_index: HashMap<Vec<u8>, u32>,
    rules: Vec<Rule>,
    /// Each team's series budget, with where it was declared.
    budgets: std::collections::BTreeMap<String, (usize, String)>,
    /// Each team's CPU budget per rule (per second), with where it was declared.
    cpu_budgets: std::collections::BTreeMap<String, (Duration, String)>,
    /// Each team's kept bytes per second, with where it was declared.
    pub(super) kept_budgets: std::collections::BTreeMap<String, (u64, String)>,
    /// Bound on each compiled regex (`Options::regex_size_limit`); `None`: the regex crate's.
    regex_size_limit: Option<usize>,
    /// Envelopes declared by the files (`envelopes:`), with where.
    envelopes: Vec<(TopicPattern, crate::decode::envelope::Envelope, String)>,
    /// `Options::no_files`.
    no_files: bool,
    /// The `patterns_dir` directories read so far, by path.
    pattern_dirs: HashMap<PathBuf, patterns::DirPatterns>,
}

/// File-level settings that rules inherit.
#[derive(Clone)]
struct Defaults {
    max_series: usize,
    expire_after: Option<Duration>,
    format: Option<Format>,
    /// The team's `reduce` settings, compiled in each rule's scope (they name its fields).
    reduce: Option<Node>,
}

fn format_of(node: &Node, sink: &mut Sink) -> Option<Format> {
    let s = scalar(node, "`format`", sink)?;
    match s.as_str() {
        "json" => Some(Format::Json),
        "logfmt" => Some(Format::Logfmt),
        "text" => Some(Format::Text),
        "auto" => None,
        other => {
            sink.error(
                node.pos,
                Code::UnknownVariant,
                format!("unknown format `{other}`"),
            )
            .hint(did_you_mean(other, &["json", "logfmt", "text", "auto"]));
            None
        }
    }
}

pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn check_name(
    name: &str,
    pos: Pos,
    what: &str,
    sink: &mut Sink,
    valid: fn(&str) -> bool,
    shape: &str,
) -> bool {
    if !valid(name) {
        sink.error(pos, Code::InvalidName, format!("invalid {what} `{name}`"))
            .hint(format!("{what}s match {shape}"));
        return false;
    }
    if name.starts_with("__") {
        sink.error(
            pos,
            Code::ReservedName,
            format!("{what} `{name}` uses the reserved `__` prefix"),
        )
        .hint("names starting with `__` are reserved for Prometheus internals");
        return false;
    }
    true
}

const FILE_KEYS: &[&str] = &[
    "team",
    "defaults",
    "budget",
    "patterns",
    "envelopes",
    "patterns_dir",
    "rules",
];
const DEFAULT_KEYS: &[&str] = &["max_series", "expire_after", "format", "reduce"];
/// Keys the rule skeleton reads itself; every other key belongs to a section.
const SKELETON_KEYS: &[&str] = &["name", "format", "max_series"];

/// One section of a rule: the keys it owns, and how it compiles them into the rule under
/// construction. Sections run in `SECTIONS` order, so a section may use what earlier ones
/// defined (every section after `extract` may name its captures).
///
/// Adding a section is local: a module with its `SECTION`, the fields it fills in `RuleCx` and
/// `Rule`, and one line in `SECTIONS`.
struct Section {
    keys: &'static [&'static str],
    compile: fn(&mut Builder, &mut MapView<'_>, &mut RuleCx<'_>, &mut Sink),
}

const SECTIONS: &[Section] = &[
    extract::SECTION,
    conditions::SECTION,
    metrics::SECTION,
    then::SECTION,
    trace::SECTION,
    reduce::SECTION,
];

/// What a rule's own `extract` defines, while the rule is being compiled.
struct RuleScope {
    format: Option<Format>,
    captures: Vec<String>,
    types: HashMap<String, ValueType>,
    /// An extract step had an error, so the captures it would define are unknown: names
    /// that are not found are not reported again (the rule is left out anyway).
    incomplete: bool,
}

impl RuleScope {
    fn capture_slot(&mut self, name: &str) -> u32 {
        match self.captures.iter().position(|c| c == name) {
            Some(i) => i as u32,
            None => {
                self.captures.push(name.to_string());
                (self.captures.len() - 1) as u32
            }
        }
    }
}

/// A rule while its sections compile: what the skeleton read, and what each section adds.
struct RuleCx<'a> {
    name: Option<String>,
    team: &'a str,
    /// The file's defaults with the rule's own `max_series` applied.
    defaults: Defaults,
    patterns: &'a HashMap<String, String>,
    scope: RuleScope,
    /// Whether some section gives the rule an effect (metrics, a drop); see `rule`.
    has_effect: bool,
    // extract
    steps: Vec<Step>,
    /// The longest literal the first pattern step cannot match without.
    line_literal: Option<Vec<u8>>,
    // match
    topics: Vec<TopicPattern>,
    clauses: Vec<Vec<u32>>,
    pre: Vec<Cond>,
    post: Vec<Cond>,
    // metrics
    updates: Vec<Update>,
    // then
    then: Then,
    // trace
    trace: TraceSources,
    // reduce
    reduce: Option<Box<Reduce>>,
}

impl Builder {
    /// A file's `envelopes:`. One topic is one envelope across files: two files saying
    /// different things of the same topic is an error naming both.
    fn declare_envelopes(&mut self, node: &yaml::Node, sink: &mut Sink) {
        for (topic, envelope, pos) in envelopes::declarations(node, sink) {
            let here = format!("{}:{}:{}", sink.file(), pos.line, pos.col);
            match self.envelopes.iter().find(|(t, _, _)| *t == topic) {
                Some((_, other, at)) if *other != envelope => {
                    sink.error(
                        pos,
                        Code::MetricConflict,
                        format!("topic `{topic}` is declared `{envelope}` here and `{other}` at {at}"),
                    )
                    .hint("a topic's records have one envelope: declare it once, or the same in every file");
                }
                Some(_) => {}
                None => self.envelopes.push((topic, envelope, here)),
            }
        }
    }

    fn file(&mut self, root: &Node, sink: &mut Sink) {
        if root.is_null() {
            sink.error(root.pos, Code::MissingKey, "empty rule file")
                .hint("a rule file has `team:` and `rules:`");
            return;
        }
        let Some(mut top) = MapView::new(root, "a rule file", sink) else {
            return;
        };
        let team = match top.get("team") {
            Some(n) => scalar(n, "`team`", sink).filter(|t| {
                let ok = !t.is_empty()
                    && t.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    });
                if !ok {
                    sink.error(n.pos, Code::InvalidName, format!("invalid team `{t}`"))
                        .hint("teams match [a-z0-9_-]+");
                }
                ok
            }),
            None => {
                sink.error(root.pos, Code::MissingKey, "missing `team`")
                    .hint("every rule file belongs to one team: add `team: <name>`");
                None
            }
        };
        let mut defaults = Defaults {
            max_series: DEFAULT_MAX_SERIES,
            expire_after: None,
            format: None,
            reduce: None,
        };
        if let Some(d) = top
            .get("defaults")
            .and_then(|n| MapView::new(n, "`defaults`", sink))
        {
            let mut d = d;
            if let Some(n) = d.get("max_series") {
                defaults.max_series = limit(n, "`max_series`", sink).unwrap_or(DEFAULT_MAX_SERIES);
            }
            if let Some(n) = d.get("expire_after") {
                defaults.expire_after = duration(n, "`expire_after`", sink);
            }
            if let Some(n) = d.get("format") {
                defaults.format = format_of(n, sink);
            }
            defaults.reduce = d.get("reduce").cloned();
            d.finish(DEFAULT_KEYS, "`defaults`", sink);
        }
        // `budget: {series: N, cpu: D, kept_bytes: B}`: what the team's rules may use,
        // together.
        if let Some(n) = top.get("budget")
            && let Some(mut m) = MapView::new(n, "`budget`", sink)
        {
            if let Some(v) = m.get("series")
                && let (Some(limit), Some(team)) = (limit(v, "`series`", sink), team.as_ref())
            {
                declare(&mut self.budgets, team, limit, "series budget", v, sink);
            }
            if let Some(v) = m.get("cpu")
                && let (Some(cpu), Some(team)) = (duration(v, "`cpu`", sink), team.as_ref())
            {
                declare(&mut self.cpu_budgets, team, cpu, "CPU budget", v, sink);
            }
            if let Some(v) = m.get("kept_bytes")
                && let (Some(bytes), Some(team)) =
                    (byte_size(v, "`kept_bytes`", sink), team.as_ref())
            {
                declare(
                    &mut self.kept_budgets,
                    team,
                    bytes,
                    "kept bytes budget",
                    v,
                    sink,
                );
            }
            m.finish(&["series", "cpu", "kept_bytes"], "`budget`", sink);
        }
        if let Some(n) = top.get("envelopes") {
            self.declare_envelopes(n, sink);
        }
        let patterns = self.file_patterns(&mut top, sink);
        let rules = top.get("rules");
        top.finish(FILE_KEYS, "a rule file", sink);
        // Without a valid team the rules are still checked, to report everything at once, but
        // none of them is kept.
        let team_ok = team.is_some();
        let team = team.unwrap_or_default();
        let Some(rules) = rules else {
            sink.error(root.pos, Code::MissingKey, "missing `rules`")
                .hint("add `rules:` with a list of rules");
            return;
        };
        let Some(items) = rules.as_seq() else {
            sink.error(
                rules.pos,
                Code::WrongType,
                format!("`rules` must be a list, found {}", rules.describe()),
            );
            return;
        };
        let mut names: HashMap<String, Pos> = HashMap::new();
        for item in items {
            if let Some(rule) = self.rule(item, &team, &defaults, &patterns, sink) {
                if let Some(first) = names.get(&rule.name) {
                    sink.error(
                        item.pos,
                        Code::DuplicateRule,
                        format!("rule `{}` is defined twice", rule.name),
                    )
                    .hint(format!("the first definition is at line {}", first.line));
                    continue;
                }
                names.insert(rule.name.clone(), item.pos);
                if team_ok {
                    self.rules.push(rule);
                }
            }
        }
    }

    /// The rule skeleton: name and format, then every section in order, then the rule.
    fn rule(
        &mut self,
        node: &Node,
        team: &str,
        defaults: &Defaults,
        patterns: &HashMap<String, String>,
        sink: &mut Sink,
    ) -> Option<Rule> {
        let errors_before = sink.diags.iter().filter(|d| d.is_error()).count();
        let mut m = MapView::new(node, "a rule", sink)?;
        let name = match m.get("name") {
            Some(n) => scalar(n, "`name`", sink).filter(|s| {
                let ok = !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    sink.error(n.pos, Code::InvalidName, format!("invalid rule name `{s}`"))
                        .hint("rule names match [A-Za-z0-9_.-]+");
                }
                ok
            }),
            None => {
                sink.error(node.pos, Code::MissingKey, "rule has no `name`")
                    .hint("add `name: <what it counts>`");
                None
            }
        };
        let format = match m.get("format") {
            Some(n) => format_of(n, sink),
            None => defaults.format,
        };
        let rule_max = m
            .get("max_series")
            .and_then(|n| limit(n, "`max_series`", sink));
        let mut cx = RuleCx {
            name,
            team,
            defaults: Defaults {
                max_series: rule_max.unwrap_or(defaults.max_series),
                ..defaults.clone()
            },
            patterns,
            scope: RuleScope {
                format,
                captures: Vec::new(),
                types: HashMap::new(),
                incomplete: false,
            },
            has_effect: false,
            steps: Vec::new(),
            line_literal: None,
            topics: Vec::new(),
            clauses: Vec::new(),
            pre: Vec::new(),
            post: Vec::new(),
            updates: Vec::new(),
            then: Then::Default,
            trace: TraceSources::default(),
            reduce: None,
        };
        self.reads_trace = false;
        self.reads_spans = false;
        for section in SECTIONS {
            (section.compile)(self, &mut m, &mut cx, sink);
        }
        // The ids as text cost a formatting per event: only for the rules that read them
        // (or sample by them).
        cx.trace.text = self.reads_trace
            || cx
                .reduce
                .as_ref()
                .and_then(|r| r.sample.as_ref())
                .is_some_and(|s| s.key.fields.is_empty());
        // Sampling by trace needs the trace id's text only.
        cx.trace.span_text = self.reads_spans;
        if !cx.has_effect {
            sink.warning(
                node.pos,
                Code::MissingKey,
                "rule has no `metrics` and does not drop: it has no effect",
            )
            .hint("add `metrics:` or `then: drop`");
        }
        let known: Vec<&str> = SKELETON_KEYS
            .iter()
            .chain(SECTIONS.iter().flat_map(|s| s.keys))
            .copied()
            .collect();
        m.finish(&known, "a rule", sink);
        let errors_after = sink.diags.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }
        Some(Rule {
            name: cx.name?,
            team: team.to_string(),
            file: sink.file().clone(),
            format,
            topics: cx.topics,
            clauses: cx.clauses,
            pre: cx.pre,
            steps: cx.steps,
            post: cx.post,
            n_captures: cx.scope.captures.len(),
            capture_names: cx.scope.captures,
            updates: cx.updates,
            then: cx.then,
            trace: cx.trace,
            reduce: cx.reduce,
            cpu_budget: None,
        })
    }

    fn literal(&mut self, lit: Vec<u8>) -> u32 {
        let next = self.literals.len() as u32;
        *self.literal_index.entry(lit.clone()).or_insert_with(|| {
            self.literals.push(lit);
            next
        })
    }

    fn event_field(&mut self, path: FieldPath) -> u32 {
        let next = self.event_fields.len() as u32;
        *self
            .field_index
            .entry(path.name.clone())
            .or_insert_with(|| {
                self.event_fields.push(path);
                next
            })
    }

    /// Resolves a name used in a rule: a capture of this rule, a built-in, or an event field.
    fn field_ref(
        &mut self,
        name: &str,
        pos: Pos,
        scope: &RuleScope,
        sink: &mut Sink,
    ) -> Option<FieldRef> {
        if let Some(i) = scope.captures.iter().position(|c| c == name) {
            return Some(FieldRef::Capture(i as u32));
        }
        match name {
            "_line" => return Some(FieldRef::Line),
            "_topic" => return Some(FieldRef::Topic),
            "_trace_id" | "_span_id" | "_parent_span_id" => {
                self.reads_trace = true;
                self.reads_spans |= name != "_trace_id";
                return Some(FieldRef::Trace(match name {
                    "_trace_id" => TracePart::Trace,
                    "_span_id" => TracePart::Span,
                    _ => TracePart::Parent,
                }));
            }
            _ => {}
        }
        if scope.incomplete {
            return None;
        }
        let names: Vec<&str> = scope.captures.iter().map(String::as_str).collect();
        if scope.format == Some(Format::Text) {
            let hint = if names.is_empty() {
                "text events have no fields of their own: capture it with `extract` (`regex` or `grok`)".to_string()
            } else {
                format!(
                    "the rule's extract defines {}; {}",
                    names.join(", "),
                    did_you_mean(name, &names)
                )
            };
            sink.error(
                pos,
                Code::UndefinedField,
                format!("`{name}` is not captured by this rule's extract"),
            )
            .hint(hint);
            return None;
        }
        if let Some(c) = super::suggest::closest(name, names.iter().copied()) {
            sink.warning(
                pos,
                Code::UndefinedField,
                format!("`{name}` is not a capture; it is read as an event field"),
            )
            .hint(format!("did you mean the capture `{c}`?"));
        }
        match parse_path(name) {
            Some(path) => Some(FieldRef::Event(self.event_field(path))),
            None => {
                sink.error(
                    pos,
                    Code::BadJsonPath,
                    format!("invalid field path `{name}`"),
                )
                .hint("paths look like `level`, `http.status` or `tags[0]`");
                None
            }
        }
    }
}

/// Compiles a regex, reporting the regex crate's message at the error's position.
fn compile_regex(
    pattern: &str,
    node: &Node,
    size_limit: Option<usize>,
    sink: &mut Sink,
) -> Option<regex::Regex> {
    if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
        let (offset, msg) = match &e {
            regex_syntax::Error::Parse(p) => (p.span().start.offset, p.kind().to_string()),
            regex_syntax::Error::Translate(t) => (t.span().start.offset, t.kind().to_string()),
            _ => (0, e.to_string()),
        };
        // Inside a single-line scalar the offset maps to a column; grok output does not.
        let single_line = !pattern.contains('\n') && node.as_scalar() == Some(pattern);
        let pos = if single_line {
            node.text_pos
                .shifted(pattern[..offset.min(pattern.len())].chars().count())
        } else {
            node.pos
        };
        sink.error(pos, Code::BadRegex, format!("invalid regex: {msg}"))
            .hint(if single_line {
                format!("in `{pattern}`")
            } else {
                "in the regex this grok expression expands to".to_string()
            });
        return None;
    }
    let mut builder = regex::RegexBuilder::new(pattern);
    if let Some(limit) = size_limit {
        builder.size_limit(limit);
    }
    match builder.build() {
        Ok(r) => Some(r),
        Err(e) => {
            sink.error(node.pos, Code::BadRegex, format!("invalid regex: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9: budgets the service config sets for a team replace what its files declare
    /// (the platform's word over the team's), each one on its own.
    #[test]
    fn issue9_the_service_configs_budgets_replace_the_files() {
        let file = SourceFile {
            name: "edge.yaml".into(),
            text: "team: edge\nbudget: {series: 100, cpu: 50ms}\nrules:\n  - name: r\n    format: json\n    metrics: [{name: edge_total, type: counter}]\n".into(),
        };
        let (own, diags) = compile(std::slice::from_ref(&file));
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        assert_eq!(own.teams[0].series_budget, Some(100));
        assert_eq!(own.rules[0].cpu_budget, Some(Duration::from_millis(50)));
        assert!(own.rules[0].reduce.is_none());
        let options = Options {
            budgets: [(
                "edge".to_string(),
                TeamBudgets {
                    series: Some(10),
                    cpu: None,
                    kept_bytes: Some(4096),
                },
            )]
            .into_iter()
            .collect(),
            ..Options::default()
        };
        let (capped, diags) = compile_with(&[file], &options);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        assert_eq!(capped.teams[0].series_budget, Some(10));
        assert_eq!(capped.rules[0].cpu_budget, Some(Duration::from_millis(50)));
        let kept = capped.rules[0]
            .reduce
            .as_ref()
            .and_then(|r| r.kept_bytes.as_ref())
            .map(|k| k.per_second);
        assert_eq!(kept, Some(4096));
    }

    /// Issue 8: `trace: false` reads no trace context, so the decoder looks for none of the
    /// usual spellings; anything else but a mapping is an error.
    #[test]
    fn issue8_trace_false_reads_no_trace_context() {
        let rules = |trace: &str| SourceFile {
            name: "t.yaml".into(),
            text: format!(
                "team: t\nrules:\n  - name: r\n    format: json\n{trace}    metrics: [{{name: t_total, type: counter, labels: {{level: level}}}}]\n"
            ),
        };
        let (on, diags) = compile(&[rules("")]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        assert!(on.event_fields.iter().any(|f| f.name == "trace_id"));
        assert!(on.rules[0].trace.exemplars);
        let (off, diags) = compile(&[rules("    trace: false\n")]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let names: Vec<&str> = off.event_fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["level"]);
        assert!(off.rules[0].trace.fields.is_empty() && !off.rules[0].trace.exemplars);
        let (_, diags) = compile(&[rules("    trace: yes\n")]);
        assert!(
            diags
                .iter()
                .any(|d| d.is_error() && d.message.contains("or `false`")),
            "{diags:?}"
        );
    }
}
