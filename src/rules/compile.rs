//! Rule files in, a `Program` and every diagnostic out.
//!
//! **Compilation is a pure function of the rule files and never stops at the first error**: each
//! file, rule and metric is checked on its own, a broken one is left out of the program, and
//! the caller decides whether any error is fatal (`logmill check` prints them all; the service
//! refuses to swap to a rule set with errors).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::diagnostic::{Code, Diagnostic, Sink};
use super::grok;
use super::program::*;
use super::read::{MapView, duration, limit, scalar, strings};
use super::suggest::did_you_mean;
use super::yaml::{self, Node, Pos};
use crate::decode::Format;
use crate::extract::matcher::Matcher;
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
    let mut b = Builder::default();
    let mut diags = Vec::new();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.name.hash(&mut hasher);
        file.text.hash(&mut hasher);
        let mut sink = Sink::new(file.name.clone());
        match yaml::parse(&file.text) {
            Ok(root) => b.file(&root, &mut sink),
            Err(e) => {
                sink.error(
                    e.pos,
                    Code::YamlSyntax,
                    format!("invalid yaml: {}", e.message),
                );
            }
        }
        diags.extend(sink.diags);
    }
    let rule_literals: Vec<Vec<u32>> = b.rules.iter().map(|r| r.literals.clone()).collect();
    let program = Program {
        prefilter: Prefilter::new(&b.literals, &rule_literals),
        rules: b.rules,
        families: b.families.into_iter().map(|f| f.family).collect(),
        event_fields: b.event_fields,
        hash: hasher.finish(),
        files: files.iter().map(|f| f.name.clone()).collect(),
    };
    diags.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    (program, diags)
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

struct FamilyEntry {
    family: Family,
    origin: String,
    /// `Some(true)` once a rule sets the gauge, `Some(false)` once one adds to it.
    gauge_sets: Option<bool>,
}

#[derive(Default)]
struct Builder {
    families: Vec<FamilyEntry>,
    family_index: HashMap<String, usize>,
    event_fields: Vec<FieldPath>,
    field_index: HashMap<String, u32>,
    literals: Vec<Vec<u8>>,
    literal_index: HashMap<Vec<u8>, u32>,
    rules: Vec<Rule>,
}

/// File-level settings that rules inherit.
#[derive(Clone)]
struct Defaults {
    max_series: usize,
    expire_after: Option<Duration>,
    format: Option<Format>,
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

const FILE_KEYS: &[&str] = &["team", "defaults", "patterns", "rules"];
const DEFAULT_KEYS: &[&str] = &["max_series", "expire_after", "format"];
const RULE_KEYS: &[&str] = &[
    "name",
    "format",
    "match",
    "extract",
    "types",
    "metrics",
    "then",
    "max_series",
];
const MATCH_KEYS: &[&str] = &["topic", "contains", "fields"];
const TEST_KEYS: &[&str] = &["equals", "in", "exists", "regex", "contains"];
const STEP_KEYS: &[&str] = &["grok", "regex", "json", "logfmt", "from"];
const METRIC_KEYS: &[&str] = &[
    "name",
    "type",
    "help",
    "unit",
    "value",
    "op",
    "labels",
    "static_labels",
    "buckets",
    "quantiles",
    "max_age",
    "age_buckets",
    "max_series",
    "expire_after",
    "scale",
];
const TYPES: &[&str] = &["int", "float", "duration", "bool"];

/// What a rule's own `extract` defines, while the rule is being compiled.
struct RuleScope {
    format: Option<Format>,
    captures: Vec<String>,
    types: HashMap<String, ValueType>,
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

impl Builder {
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
            d.finish(DEFAULT_KEYS, "`defaults`", sink);
        }
        let mut patterns = std::collections::HashMap::new();
        if let Some(mut p) = top
            .get("patterns")
            .and_then(|n| MapView::new(n, "`patterns`", sink))
        {
            for (k, v) in p.entries {
                // A pattern may use others, so it is checked where a grok expression uses it.
                if let (Some(k), Some(v)) = (k.as_scalar(), scalar(v, "a pattern", sink)) {
                    patterns.insert(k.to_string(), v);
                }
            }
            p.accept_all();
            p.finish(&[], "`patterns`", sink);
        }
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

    fn rule(
        &mut self,
        node: &Node,
        team: &str,
        defaults: &Defaults,
        patterns: &std::collections::HashMap<String, String>,
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
        let mut scope = RuleScope {
            format,
            captures: Vec::new(),
            types: HashMap::new(),
        };
        if let Some(mut t) = m
            .get("types")
            .and_then(|n| MapView::new(n, "`types`", sink))
        {
            for (k, v) in t.entries {
                let (Some(k), Some(ty)) = (k.as_scalar(), scalar(v, "a type", sink)) else {
                    continue;
                };
                if let Some(ty) = value_type(&ty, v.pos, sink) {
                    scope.types.insert(k.to_string(), ty);
                }
            }
            t.accept_all();
            t.finish(&[], "`types`", sink);
        }

        // Extraction first: it defines the captures every other part may refer to.
        let mut steps = Vec::new();
        let mut line_literal = None;
        if let Some(ex) = m.get("extract") {
            let items: Vec<&Node> = match ex.as_seq() {
                Some(items) => items.iter().collect(),
                None => vec![ex],
            };
            for step in items {
                if let Some((new, lit)) = self.step(step, &mut scope, patterns, sink) {
                    if line_literal.is_none() && steps.is_empty() {
                        line_literal = lit;
                    }
                    steps.extend(new);
                }
            }
        }

        let mut literals = Vec::new();
        let mut topics = Vec::new();
        let mut pre = Vec::new();
        let mut post = Vec::new();
        if let Some(mut mm) = m
            .get("match")
            .and_then(|n| MapView::new(n, "`match`", sink))
        {
            if let Some(n) = mm.get("topic") {
                topics = strings(n, "`topic`", sink)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
            }
            if let Some(n) = mm.get("contains") {
                for (lit, pos) in strings(n, "`contains`", sink) {
                    if lit.is_empty() {
                        sink.warning(pos, Code::WrongType, "empty `contains` matches everything");
                        continue;
                    }
                    literals.push(self.literal(lit.into_bytes()));
                }
            }
            if let Some(mut f) = mm
                .get("fields")
                .and_then(|n| MapView::new(n, "`match.fields`", sink))
            {
                for (k, v) in f.entries {
                    let Some(field_name) = scalar(k, "a field name", sink) else {
                        continue;
                    };
                    let Some(field) = self.field_ref(&field_name, k.pos, &scope, sink) else {
                        continue;
                    };
                    let Some(test) = self.test(v, sink) else {
                        continue;
                    };
                    let cond = Condition { field, test };
                    if matches!(field, FieldRef::Capture(_)) {
                        post.push(cond)
                    } else {
                        pre.push(cond)
                    }
                }
                f.accept_all();
                f.finish(&[], "`match.fields`", sink);
            }
            mm.finish(MATCH_KEYS, "`match`", sink);
        }
        if literals.is_empty() {
            if let Some(lit) = line_literal {
                literals.push(self.literal(lit));
            }
        }

        let rule_max = m
            .get("max_series")
            .and_then(|n| limit(n, "`max_series`", sink));
        let mut updates = Vec::new();
        if let Some(ms) = m.get("metrics") {
            match ms.as_seq() {
                Some(items) => {
                    for item in items {
                        let rule_defaults = Defaults {
                            max_series: rule_max.unwrap_or(defaults.max_series),
                            ..defaults.clone()
                        };
                        if let Some(u) = self.metric(
                            item,
                            team,
                            name.as_deref().unwrap_or("?"),
                            &rule_defaults,
                            &scope,
                            sink,
                        ) {
                            updates.push(u);
                        }
                    }
                }
                None => {
                    sink.error(
                        ms.pos,
                        Code::WrongType,
                        format!("`metrics` must be a list, found {}", ms.describe()),
                    );
                }
            }
        }
        let then = match m.get("then") {
            None => Then::Default,
            Some(n) => match scalar(n, "`then`", sink).as_deref() {
                Some("keep") => Then::Keep,
                Some("drop") => Then::Drop,
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown `then` action `{other}`"),
                    )
                    .hint(did_you_mean(other, &["keep", "drop"]));
                    Then::Default
                }
                None => Then::Default,
            },
        };
        if updates.is_empty() && then != Then::Drop && m.get("metrics").is_none() {
            sink.warning(
                node.pos,
                Code::MissingKey,
                "rule has no `metrics` and does not drop: it has no effect",
            )
            .hint("add `metrics:` or `then: drop`");
        }
        m.finish(RULE_KEYS, "a rule", sink);
        let errors_after = sink.diags.iter().filter(|d| d.is_error()).count();
        if errors_after > errors_before {
            return None;
        }
        Some(Rule {
            name: name?,
            team: team.to_string(),
            file: sink.file().clone(),
            format,
            topics,
            literals,
            pre,
            steps,
            post,
            n_captures: scope.captures.len(),
            updates,
            then,
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
            _ => {}
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

    fn test(&mut self, node: &Node, sink: &mut Sink) -> Option<Test> {
        if node.as_map().is_none() {
            return scalar(node, "a field condition", sink).map(Test::Equals);
        }
        let mut t = MapView::new(node, "a field condition", sink)?;
        let mut out = None;
        let mut count = 0;
        if let Some(n) = t.get("equals") {
            count += 1;
            out = scalar(n, "`equals`", sink).map(Test::Equals);
        }
        if let Some(n) = t.get("in") {
            count += 1;
            out = Some(Test::In(
                strings(n, "`in`", sink)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect(),
            ));
        }
        if let Some(n) = t.get("exists") {
            count += 1;
            match n.as_bool() {
                Some(b) => out = Some(Test::Exists(b)),
                None => {
                    sink.error(n.pos, Code::WrongType, "`exists` must be true or false");
                }
            }
        }
        if let Some(n) = t.get("regex") {
            count += 1;
            if let Some(p) = scalar(n, "`regex`", sink) {
                out = compile_regex(&p, n, sink).map(|r| Test::Regex(Box::new(r)));
            }
        }
        if let Some(n) = t.get("contains") {
            count += 1;
            out = scalar(n, "`contains`", sink).map(|s| {
                Test::Contains(Box::new(
                    memchr::memmem::Finder::new(s.as_bytes()).into_owned(),
                ))
            });
        }
        if count != 1 {
            sink.error(
                node.pos,
                Code::WrongType,
                "a field condition needs exactly one test",
            )
            .hint(format!("use one of: {}", TEST_KEYS.join(", ")));
        }
        t.finish(TEST_KEYS, "a field condition", sink);
        out
    }

    fn step(
        &mut self,
        node: &Node,
        scope: &mut RuleScope,
        patterns: &std::collections::HashMap<String, String>,
        sink: &mut Sink,
    ) -> Option<(Vec<Step>, Option<Vec<u8>>)> {
        let mut s = MapView::new(node, "an extract step", sink)?;
        let from_node = s.get("from");
        let from = match from_node {
            Some(n) => {
                let name = scalar(n, "`from`", sink)?;
                self.field_ref(&name, n.pos, scope, sink)?
            }
            None => FieldRef::Line,
        };
        let grok_node = s.get("grok");
        let regex_node = s.get("regex");
        let json_node = s.get("json");
        let logfmt_node = s.get("logfmt");
        s.finish(STEP_KEYS, "an extract step", sink);
        let kinds = [grok_node, regex_node, json_node, logfmt_node]
            .iter()
            .filter(|n| n.is_some())
            .count();
        if kinds != 1 {
            sink.error(
                node.pos,
                Code::WrongType,
                "an extract step needs exactly one of `grok`, `regex`, `json`, `logfmt`",
            );
            return None;
        }
        if let Some(n) = json_node.or(logfmt_node) {
            let format = if json_node.is_some() {
                Format::Json
            } else {
                Format::Logfmt
            };
            let mut a = MapView::new(n, "a field list", sink)?;
            let mut aliases = Vec::new();
            for (k, v) in a.entries {
                let (Some(alias), Some(path)) = (k.as_scalar(), scalar(v, "a field path", sink))
                else {
                    continue;
                };
                if !grok::valid_field_name(alias) {
                    sink.error(
                        k.pos,
                        Code::InvalidName,
                        format!("invalid field name `{alias}`"),
                    )
                    .hint("field names match [A-Za-z_][A-Za-z0-9_]*");
                    continue;
                }
                let field = if format == Format::Logfmt {
                    FieldPath {
                        name: path.clone(),
                        segments: vec![PathSegment::Key(path.clone())],
                    }
                } else {
                    match parse_path(&path) {
                        Some(p) => p,
                        None => {
                            sink.error(
                                v.text_pos,
                                Code::BadJsonPath,
                                format!("invalid field path `{path}`"),
                            )
                            .hint("paths look like `level`, `http.status` or `tags[0]`");
                            continue;
                        }
                    }
                };
                let from = self.event_field(field);
                aliases.push(Step::Alias {
                    format,
                    from,
                    to: scope.capture_slot(alias),
                });
            }
            a.accept_all();
            return Some((aliases, None));
        }
        let (pattern, node, fields) = if let Some(n) = grok_node {
            let text = scalar(n, "`grok`", sink)?;
            match grok::expand(&text, patterns) {
                Ok(e) => (e.regex, n, e.fields),
                Err(errors) => {
                    for e in errors {
                        sink.error(
                            n.text_pos.shifted(e.offset),
                            Code::UnknownPattern,
                            e.message,
                        )
                        .maybe_hint(e.hint);
                    }
                    return None;
                }
            }
        } else {
            let n = regex_node.expect("one kind is present");
            (scalar(n, "`regex`", sink)?, n, Vec::new())
        };
        for f in &fields {
            if let Some(ty) = &f.ty {
                if let Some(ty) = value_type(ty, node.text_pos.shifted(f.offset), sink) {
                    scope.types.insert(f.name.clone(), ty);
                }
            }
        }
        compile_regex(&pattern, node, sink)?;
        let matcher = match Matcher::new(&pattern) {
            Ok(m) => m,
            Err(e) => {
                sink.error(node.pos, Code::BadRegex, format!("invalid regex: {e}"));
                return None;
            }
        };
        if matcher.anchoring_helps() {
            sink.warning(
                node.pos,
                Code::SlowPattern,
                "the pattern starts with a field and is not anchored, so it runs on the general regex engine",
            )
            .hint("if events start with it, begin the pattern with `^`: it is then split at its literals, 2-3 times faster");
        }
        let groups = matcher
            .regex()
            .capture_names()
            .skip(1)
            .map(|name| name.map(|n| scope.capture_slot(n)))
            .collect();
        let lit = (from == FieldRef::Line)
            .then(|| matcher.required_literal().map(<[u8]>::to_vec))
            .flatten();
        Some((
            vec![Step::Pattern {
                from,
                matcher: Box::new(matcher),
                groups,
            }],
            lit,
        ))
    }

    fn metric(
        &mut self,
        node: &Node,
        team: &str,
        rule: &str,
        defaults: &Defaults,
        scope: &RuleScope,
        sink: &mut Sink,
    ) -> Option<Update> {
        let errors_before = sink.diags.iter().filter(|d| d.is_error()).count();
        let mut m = MapView::new(node, "a metric", sink)?;
        let kind = match m.get("type") {
            Some(n) => match scalar(n, "`type`", sink).as_deref() {
                Some("counter") => Some(MetricKind::Counter),
                Some("gauge") => Some(MetricKind::Gauge),
                Some("histogram") => Some(MetricKind::Histogram),
                Some("summary") => Some(MetricKind::Summary),
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown metric type `{other}`"),
                    )
                    .hint(did_you_mean(
                        other,
                        &["counter", "gauge", "histogram", "summary"],
                    ));
                    None
                }
                None => None,
            },
            None => {
                sink.error(node.pos, Code::MissingKey, "metric has no `type`")
                    .hint("add `type: counter`, `gauge`, `histogram` or `summary`");
                None
            }
        };
        let name_node = m.get("name");
        let name = match name_node {
            Some(n) => scalar(n, "`name`", sink).filter(|s| {
                check_name(
                    s,
                    n.pos,
                    "metric name",
                    sink,
                    valid_metric_name,
                    "[a-zA-Z_:][a-zA-Z0-9_:]*",
                )
            }),
            None => {
                sink.error(node.pos, Code::MissingKey, "metric has no `name`");
                None
            }
        };
        let help = m
            .get("help")
            .and_then(|n| scalar(n, "`help`", sink))
            .unwrap_or_else(|| format!("Derived by logmill rule {team}/{rule}."));
        let unit = m.get("unit").and_then(|n| {
            let u = scalar(n, "`unit`", sink)?;
            if let (Some(name), Some(kind)) = (&name, kind) {
                let base = if kind == MetricKind::Counter {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                if !base.ends_with(&format!("_{u}")) {
                    let suggestion = if kind == MetricKind::Counter {
                        format!("{base}_{u}_total")
                    } else {
                        format!("{base}_{u}")
                    };
                    sink.error(
                        n.pos,
                        Code::UnitMismatch,
                        format!(
                            "metric `{name}` has unit `{u}` but its name does not end in `_{u}`"
                        ),
                    )
                    .hint(format!(
                        "OpenMetrics requires the unit as a suffix: name it `{suggestion}`"
                    ));
                }
            }
            Some(u)
        });
        let op = match (kind, m.get("op")) {
            (Some(MetricKind::Gauge), Some(n)) => match scalar(n, "`op`", sink).as_deref() {
                Some("set") => Some(Op::GaugeSet),
                Some("add") | Some("inc") => Some(Op::GaugeAdd),
                Some("sub") | Some("dec") => Some(Op::GaugeSub),
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown gauge op `{other}`"),
                    )
                    .hint(did_you_mean(other, &["set", "add", "sub", "inc", "dec"]));
                    None
                }
                None => None,
            },
            (Some(_), Some(n)) => {
                sink.error(n.pos, Code::UnknownKey, "`op` applies to gauges only")
                    .hint("counters only add; histograms and summaries observe");
                None
            }
            (Some(MetricKind::Gauge), None) => Some(Op::GaugeSet),
            (Some(MetricKind::Counter), None) => Some(Op::CounterAdd),
            (Some(_), None) => Some(Op::Observe),
            (None, _) => None,
        };
        let value_node = m.get("value");
        let value = match value_node {
            Some(n) => scalar(n, "`value`", sink).and_then(|f| {
                let field = self.field_ref(&f, n.pos, scope, sink)?;
                let ty = scope.types.get(&f).copied().unwrap_or(ValueType::Float);
                Some(ValueSource { field, ty })
            }),
            None => None,
        };
        let scale = match m.get("scale") {
            Some(n) => match n.as_f64().filter(|v| v.is_finite() && *v != 0.0) {
                Some(v) => v,
                None => {
                    sink.error(n.pos, Code::WrongType, "`scale` must be a non-zero number")
                        .hint("e.g. `scale: 0.001` turns milliseconds into seconds");
                    1.0
                }
            },
            None => 1.0,
        };
        let needs_value = matches!(kind, Some(MetricKind::Histogram | MetricKind::Summary))
            || op == Some(Op::GaugeSet);
        if needs_value && value_node.is_none() {
            sink.error(
                node.pos,
                Code::MissingKey,
                format!(
                    "{} `{}` needs a `value`",
                    kind.map_or("metric", MetricKind::as_str),
                    name.as_deref().unwrap_or("?")
                ),
            )
            .hint("name the field to observe, e.g. `value: request_time`");
        }

        let mut labels: Vec<(String, LabelSource)> = Vec::new();
        if let Some(mut l) = m
            .get("labels")
            .and_then(|n| MapView::new(n, "`labels`", sink))
        {
            for (k, v) in l.entries {
                let Some(label) = scalar(k, "a label name", sink) else {
                    continue;
                };
                if !self.label_name_ok(&label, k.pos, kind, sink) {
                    continue;
                }
                let source = if v.as_map().is_some() {
                    let Some(mut lm) = MapView::new(v, "a label", sink) else {
                        continue;
                    };
                    let from = lm.get("from");
                    let map_node = lm.get("map");
                    let default = lm.get("default").and_then(|n| scalar(n, "`default`", sink));
                    lm.finish(&["from", "map", "default"], "a label", sink);
                    let Some(from) = from else {
                        sink.error(
                            v.pos,
                            Code::MissingKey,
                            format!("label `{label}` has no `from`"),
                        )
                        .hint("name the field the label comes from");
                        continue;
                    };
                    let Some(fname) = scalar(from, "`from`", sink) else {
                        continue;
                    };
                    let Some(field) = self.field_ref(&fname, from.pos, scope, sink) else {
                        continue;
                    };
                    let mut vm = ValueMap {
                        default,
                        ..ValueMap::default()
                    };
                    if let Some(mut mm) = map_node.and_then(|n| MapView::new(n, "`map`", sink)) {
                        for (mk, mv) in mm.entries {
                            let (Some(mk), Some(mv)) =
                                (mk.as_scalar(), scalar(mv, "a mapped value", sink))
                            else {
                                continue;
                            };
                            if mk.contains(['*', '?']) {
                                vm.globs.push((mk.to_string(), mv));
                            } else {
                                vm.exact.insert(mk.to_string(), mv);
                            }
                        }
                        mm.accept_all();
                        mm.finish(&[], "`map`", sink);
                    }
                    LabelSource::Field {
                        field,
                        map: Some(Arc::new(vm)),
                    }
                } else {
                    let Some(fname) = scalar(v, "a label source", sink) else {
                        continue;
                    };
                    let Some(field) = self.field_ref(&fname, v.pos, scope, sink) else {
                        continue;
                    };
                    LabelSource::Field { field, map: None }
                };
                labels.push((label, source));
            }
            l.accept_all();
            l.finish(&[], "`labels`", sink);
        }
        if let Some(mut sl) = m
            .get("static_labels")
            .and_then(|n| MapView::new(n, "`static_labels`", sink))
        {
            for (k, v) in sl.entries {
                let (Some(label), Some(value)) = (
                    scalar(k, "a label name", sink),
                    scalar(v, "a label value", sink),
                ) else {
                    continue;
                };
                if self.label_name_ok(&label, k.pos, kind, sink) {
                    labels.push((label, LabelSource::Static(value)));
                }
            }
            sl.accept_all();
            sl.finish(&[], "`static_labels`", sink);
        }
        if labels.len() > MAX_LABELS {
            sink.error(
                node.pos,
                Code::TooManyLabels,
                format!(
                    "metric has {} labels, over the limit of {MAX_LABELS}",
                    labels.len()
                ),
            )
            .hint("every label multiplies the series count; drop the ones nobody aggregates by");
        }
        let mut seen = std::collections::HashSet::new();
        for (l, _) in &labels {
            if !seen.insert(l.clone()) {
                sink.error(
                    node.pos,
                    Code::InvalidName,
                    format!("label `{l}` is defined twice"),
                );
            }
        }

        let buckets = match (kind, m.get("buckets")) {
            (Some(MetricKind::Histogram), Some(n)) => {
                numbers(n, "`buckets`", sink).and_then(|bs| {
                    for (i, (b, pos)) in bs.iter().enumerate() {
                        if b.is_infinite() {
                            sink.error(*pos, Code::BadBuckets, "`+Inf` bucket is implicit")
                                .hint("remove it: every histogram has a +Inf bucket");
                            return None;
                        }
                        if i > 0 && *b <= bs[i - 1].0 {
                            sink.error(
                                *pos,
                                Code::BadBuckets,
                                format!(
                                    "bucket {b} is not greater than the one before it ({})",
                                    bs[i - 1].0
                                ),
                            )
                            .hint("bucket upper bounds must be strictly increasing");
                            return None;
                        }
                    }
                    if bs.is_empty() {
                        sink.error(n.pos, Code::BadBuckets, "`buckets` is empty")
                            .hint("list upper bounds, or leave `buckets` out for the default ones");
                        return None;
                    }
                    Some(bs.into_iter().map(|(b, _)| b).collect())
                })
            }
            (Some(MetricKind::Histogram), None) => Some(DEFAULT_BUCKETS.to_vec()),
            (Some(_), Some(n)) => {
                sink.error(
                    n.pos,
                    Code::UnknownKey,
                    "`buckets` applies to histograms only",
                );
                None
            }
            _ => None,
        }
        .unwrap_or_default();
        let quantiles = match (kind, m.get("quantiles")) {
            (Some(MetricKind::Summary), Some(n)) => {
                numbers(n, "`quantiles`", sink).and_then(|qs| {
                    for (q, pos) in &qs {
                        if !(0.0..=1.0).contains(q) {
                            sink.error(
                                *pos,
                                Code::BadQuantile,
                                format!("quantile {q} is outside [0, 1]"),
                            )
                            .hint("write quantiles as fractions: 0.99, not 99");
                            return None;
                        }
                    }
                    let mut qs: Vec<f64> = qs.into_iter().map(|(q, _)| q).collect();
                    qs.sort_by(f64::total_cmp);
                    qs.dedup();
                    Some(qs)
                })
            }
            (Some(MetricKind::Summary), None) => Some(DEFAULT_QUANTILES.to_vec()),
            (Some(_), Some(n)) => {
                sink.error(
                    n.pos,
                    Code::UnknownKey,
                    "`quantiles` applies to summaries only",
                );
                None
            }
            _ => None,
        }
        .unwrap_or_default();
        let max_age = m
            .get("max_age")
            .and_then(|n| duration(n, "`max_age`", sink))
            .unwrap_or(Duration::from_secs(600));
        let age_buckets = m
            .get("age_buckets")
            .and_then(|n| limit(n, "`age_buckets`", sink))
            .unwrap_or(5)
            .min(60);
        let max_series = m
            .get("max_series")
            .and_then(|n| limit(n, "`max_series`", sink))
            .unwrap_or(defaults.max_series);
        let expire_after = match m.get("expire_after") {
            Some(n) => duration(n, "`expire_after`", sink),
            None if kind == Some(MetricKind::Counter) => None,
            None => defaults.expire_after,
        };
        m.finish(METRIC_KEYS, "a metric", sink);
        if sink.diags.iter().filter(|d| d.is_error()).count() > errors_before {
            return None;
        }
        let (name, kind, op) = (name?, kind?, op?);

        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let label_names: Vec<String> = labels.iter().map(|(l, _)| l.clone()).collect();
        let family = Family {
            name: name.clone(),
            help,
            unit,
            kind,
            label_names,
            buckets,
            quantiles,
            max_age,
            age_buckets,
            max_series,
            expire_after,
        };
        let name_pos = name_node.map_or(node.pos, |n| n.pos);
        let id = match self.family_index.get(&name) {
            Some(&id) => {
                let existing = &self.families[id];
                let f = &existing.family;
                let conflict = if f.kind != family.kind {
                    Some(format!(
                        "it is a {} there and a {} here",
                        f.kind.as_str(),
                        family.kind.as_str()
                    ))
                } else if f.label_names != family.label_names {
                    Some(format!(
                        "its labels are [{}] there and [{}] here",
                        f.label_names.join(", "),
                        family.label_names.join(", ")
                    ))
                } else if f.buckets != family.buckets || f.quantiles != family.quantiles {
                    Some("its buckets or quantiles differ".to_string())
                } else {
                    None
                };
                if let Some(why) = conflict {
                    sink.error(
                        name_pos,
                        Code::MetricConflict,
                        format!("metric `{name}` is defined differently elsewhere: {why}"),
                    )
                    .hint(format!(
                        "first defined at {}; give one of them another name",
                        existing.origin
                    ));
                    return None;
                }
                id
            }
            None => {
                self.families.push(FamilyEntry {
                    family,
                    origin: format!("{}:{}:{}", sink.file(), name_pos.line, name_pos.col),
                    gauge_sets: None,
                });
                self.family_index
                    .insert(name.clone(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        if kind == MetricKind::Gauge {
            let sets = op == Op::GaugeSet;
            let entry = &mut self.families[id];
            match entry.gauge_sets {
                Some(prev) if prev != sets => {
                    sink.error(name_pos, Code::GaugeModeConflict, format!("gauge `{name}` is both set and added to"))
                        .hint(format!("rules of one gauge must all `set` or all `add`/`sub` (first defined at {})", entry.origin));
                    return None;
                }
                _ => entry.gauge_sets = Some(sets),
            }
        }
        Some(Update {
            family: id as u32,
            labels: labels.into_iter().map(|(_, s)| s).collect(),
            value,
            op,
            scale,
        })
    }

    fn label_name_ok(
        &self,
        label: &str,
        pos: Pos,
        kind: Option<MetricKind>,
        sink: &mut Sink,
    ) -> bool {
        if !check_name(
            label,
            pos,
            "label name",
            sink,
            grok::valid_field_name,
            "[a-zA-Z_][a-zA-Z0-9_]*",
        ) {
            return false;
        }
        let reserved = match kind {
            Some(MetricKind::Histogram) => label == "le",
            Some(MetricKind::Summary) => label == "quantile",
            _ => false,
        };
        if reserved {
            sink.error(
                pos,
                Code::ReservedName,
                format!("label `{label}` is reserved for this metric type"),
            )
            .hint("rename the label");
        }
        !reserved
    }
}

fn numbers(node: &Node, what: &str, sink: &mut Sink) -> Option<Vec<(f64, Pos)>> {
    let Some(items) = node.as_seq() else {
        sink.error(
            node.pos,
            Code::WrongType,
            format!(
                "{what} must be a list of numbers, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for n in items {
        match n.as_f64() {
            Some(v) => out.push((v, n.pos)),
            None => {
                sink.error(
                    n.pos,
                    Code::WrongType,
                    format!(
                        "{what} must be numbers, found `{}`",
                        n.as_scalar().unwrap_or("?")
                    ),
                );
                return None;
            }
        }
    }
    Some(out)
}

fn value_type(ty: &str, pos: Pos, sink: &mut Sink) -> Option<ValueType> {
    match ty {
        "int" => Some(ValueType::Int),
        "float" => Some(ValueType::Float),
        "duration" => Some(ValueType::Duration),
        "bool" => Some(ValueType::Bool),
        other => {
            sink.error(pos, Code::UnknownVariant, format!("unknown type `{other}`"))
                .hint(did_you_mean(other, TYPES));
            None
        }
    }
}

/// Compiles a regex, reporting the regex crate's message at the error's position.
fn compile_regex(pattern: &str, node: &Node, sink: &mut Sink) -> Option<regex::Regex> {
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
    match regex::Regex::new(pattern) {
        Ok(r) => Some(r),
        Err(e) => {
            sink.error(node.pos, Code::BadRegex, format!("invalid regex: {e}"));
            None
        }
    }
}
