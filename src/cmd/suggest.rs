//! `logmill suggest`: a starting rule file from sample events. JSON and logfmt events give
//! their fields: those with few distinct values become labels, numeric durations histograms.
//! Text lines are mined into templates (the reduction's miner); each frequent template
//! becomes a rule whose anchored regex captures its variables, typed by the values seen, with
//! the variables of few values as labels. The file is compiled and run over the sample before
//! it is printed, so it passes `check`, and each rule says how many sample events it matched.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::{Result, bail};
use logmill::decode::Format;
use logmill::reduce::templates::{Miner, MinerConfig, TemplateId};

pub struct Options {
    pub team: String,
    /// Text templates turned into rules, the most frequent first.
    pub max_templates: usize,
}

/// Distinct values kept per field or variable; past it the field has "many".
const DISTINCT: usize = 64;
/// A field or variable with at most this many values over enough events is a label.
const LABEL_VALUES: usize = 12;

#[derive(Default)]
struct Stats {
    seen: u64,
    numeric: u64,
    integer: u64,
    values: Vec<String>,
    many: bool,
}

impl Stats {
    fn add(&mut self, v: &str) {
        self.seen += 1;
        if v.trim().parse::<f64>().is_ok_and(f64::is_finite) {
            self.numeric += 1;
        }
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            self.integer += 1;
        }
        if !self.many && !self.values.iter().any(|x| x == v) {
            if self.values.len() >= DISTINCT {
                self.many = true;
            } else {
                self.values.push(v.to_string());
            }
        }
    }

    fn few(&self) -> bool {
        !self.many && self.values.len() <= LABEL_VALUES && self.seen >= 2 * self.values.len() as u64
    }

    fn all_numeric(&self) -> bool {
        self.seen > 0 && self.numeric == self.seen
    }
}

/// A name usable as a capture, label or metric name part.
fn ident(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    match out.chars().next() {
        Some(c) if c.is_ascii_digit() => format!("v_{out}"),
        None => "v".to_string(),
        _ => out,
    }
}

fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn run(input: &[u8], opts: Options) -> Result<String> {
    let lines: Vec<&str> = super::evaluate::events(input)
        .filter_map(|l| std::str::from_utf8(l).ok())
        .collect();
    if lines.is_empty() {
        bail!("no events in the sample");
    }
    let team = ident(&opts.team);
    let mut by_format: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
    for l in &lines {
        let f = match logmill::decode::detect_format(l.as_bytes()) {
            Format::Json => "json",
            Format::Logfmt => "logfmt",
            Format::Text => "text",
        };
        by_format.entry(f).or_default().push(l);
    }
    let mut rules = String::new();
    for (format, ls) in &by_format {
        match *format {
            "text" => text_rules(&mut rules, &team, ls, opts.max_templates),
            f => field_rule(&mut rules, &team, f, ls),
        }
    }
    let mut out = format!(
        "# Suggested by `logmill suggest` from {} event(s): {}.\n# Review names, labels and buckets, add tests (`logmill test`), then ship.\nteam: {team}\nrules:\n",
        lines.len(),
        by_format
            .iter()
            .map(|(f, l)| format!("{} {f}", l.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&rules);
    // What it suggests must compile and match what it was made from.
    let (program, diags) = logmill::rules::compile(&[logmill::rules::SourceFile {
        name: "suggested.yaml".into(),
        text: out.clone(),
    }]);
    if let Some(d) = diags.iter().find(|d| d.is_error()) {
        bail!("the suggestion does not compile, which is a bug: {d}\n{out}");
    }
    let program = Arc::new(program);
    let all: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let e = super::evaluate::evaluate(&program, "suggest", &all, false);
    let mut annotated = String::new();
    let mut rule = 0;
    for l in out.lines() {
        if l.starts_with("  - name: ") {
            if let Some(n) = e.engine.counters.rule_matches.get(rule) {
                let _ = writeln!(
                    annotated,
                    "  # matched {n} of {} sample events",
                    lines.len()
                );
            }
            rule += 1;
        }
        annotated.push_str(l);
        annotated.push('\n');
    }
    Ok(annotated)
}

/// One rule for the JSON (or logfmt) events: a counter by the fields of few values, and a
/// histogram of each duration field.
fn field_rule(out: &mut String, team: &str, format: &str, lines: &[&str]) {
    let mut fields: BTreeMap<String, Stats> = BTreeMap::new();
    for l in lines {
        for (k, v) in pairs(format, l) {
            fields.entry(k).or_default().add(&v);
        }
    }
    let n = lines.len() as u64;
    let preferred = [
        "level",
        "severity",
        "lvl",
        "service",
        "app",
        "component",
        "method",
        "status",
        "code",
    ];
    let mut labels: Vec<(&String, &Stats)> = fields
        .iter()
        .filter(|(k, s)| {
            s.few() && s.seen * 10 >= n * 3 && !k.contains('.') && ident(k) == k.to_lowercase()
        })
        .collect();
    labels.sort_by_key(|(k, s)| {
        (
            preferred
                .iter()
                .position(|p| *p == k.as_str())
                .unwrap_or(preferred.len()),
            s.values.len(),
        )
    });
    labels.truncate(3);
    let durations: Vec<&String> = fields
        .iter()
        .filter(|(k, s)| {
            let k = k.to_lowercase();
            s.all_numeric()
                && !s.few()
                && [
                    "duration", "latency", "took", "elapsed", "ms", "seconds", "time",
                ]
                .iter()
                .any(|w| k.contains(w))
                && !k.contains("timestamp")
        })
        .map(|(k, _)| k)
        .take(2)
        .collect();
    let label_map = |out: &mut String, ls: &[(&String, &Stats)]| {
        let parts: Vec<String> = ls
            .iter()
            .map(|(k, _)| format!("{}: {k}", ident(k)))
            .collect();
        let _ = writeln!(out, "        labels: {{{}}}", parts.join(", "));
    };
    let _ = writeln!(
        out,
        "  - name: {format}_events\n    format: {format}\n    metrics:"
    );
    let _ = writeln!(
        out,
        "      - name: {team}_{format}_events_total\n        type: counter\n        help: {} events{}.",
        format,
        if labels.is_empty() {
            String::new()
        } else {
            format!(
                " by {}",
                labels
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if !labels.is_empty() {
        label_map(out, &labels);
    }
    let by = labels
        .iter()
        .find(|(k, _)| ["service", "app", "component", "method"].contains(&k.as_str()));
    for d in durations {
        let lower = d.to_lowercase();
        let ms = lower.ends_with("ms") || lower.contains("_ms") || lower.contains("millis");
        let base = ident(
            lower
                .trim_end_matches("_ms")
                .trim_end_matches("ms")
                .trim_end_matches("_seconds"),
        );
        let _ = writeln!(
            out,
            "      - name: {team}_{base}_seconds\n        type: histogram\n        help: {d}{}.\n        unit: seconds\n        value: {d}",
            if ms { " in seconds" } else { "" }
        );
        if ms {
            let _ = writeln!(out, "        scale: 0.001");
        }
        let _ = writeln!(
            out,
            "        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]"
        );
        if let Some(l) = by {
            label_map(out, &[*l]);
        }
    }
}

/// Top-level fields with scalar values, as text.
fn pairs(format: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if format == "json" {
        for (k, v) in logmill::decode::json::top_level(line).unwrap_or_default() {
            if let Some(v) = v {
                out.push((k, v));
            }
        }
    } else {
        let _ = logmill::decode::logfmt::pairs(line, |k, v| {
            out.push((String::from_utf8_lossy(k).into_owned(), v.into_owned()));
        });
    }
    out
}

/// What a text template's variables look like, from every line it matched.
struct Template {
    count: u64,
    /// A line of the template and its variables' spans, in text order.
    sample: (String, Vec<(u16, u32, u32)>),
    vars: HashMap<u16, Stats>,
}

fn text_rules(out: &mut String, team: &str, lines: &[&str], max: usize) {
    let mut miner = Miner::new(MinerConfig::default());
    // The first pass settles the templates; the second sees every line under its final one.
    for l in lines {
        miner.observe(l);
    }
    let mut templates: HashMap<TemplateId, Template> = HashMap::new();
    let mut order: Vec<TemplateId> = Vec::new();
    for l in lines {
        let o = miner.observe(l);
        let t = templates.entry(o.id).or_insert_with(|| {
            order.push(o.id);
            Template {
                count: 0,
                sample: (
                    l.to_string(),
                    o.variables
                        .iter()
                        .map(|v| (v.var, v.start, v.end))
                        .collect(),
                ),
                vars: HashMap::new(),
            }
        });
        t.count += 1;
        for v in o.variables {
            let value = l.get(v.start as usize..v.end as usize).unwrap_or_default();
            t.vars.entry(v.var).or_default().add(value);
        }
    }
    order.sort_by_key(|id| std::cmp::Reverse(templates[id].count));
    let mut names: HashMap<String, u32> = HashMap::new();
    for id in order.into_iter().take(max) {
        let t = &templates[&id];
        let Some(text) = miner.template(id).map(|v| v.to_string()) else {
            continue;
        };
        let (line, spans) = &t.sample;
        let mut pattern = String::from("^");
        let mut at = 0usize;
        let mut captures: Vec<(String, u16)> = Vec::new();
        let mut longest = "";
        for (i, (var, start, end)) in spans.iter().enumerate() {
            let (start, end) = (*start as usize, *end as usize);
            let literal = &line[at..start];
            if literal.trim().len() > longest.len() {
                longest = literal.trim();
            }
            pattern.push_str(&regex::escape(literal));
            let before = literal
                .split(|c: char| !c.is_ascii_alphabetic())
                .rfind(|w| w.len() >= 2)
                .map(ident)
                .unwrap_or_else(|| format!("v{var}"));
            let mut name = before;
            if captures.iter().any(|(n, _)| *n == name) {
                name = format!("{name}_{var}");
            }
            let last = i + 1 == spans.len() && end == line.len();
            let stats = &t.vars[var];
            let all = |f: fn(&str) -> bool| !stats.many && stats.values.iter().all(|v| f(v));
            let class = if stats.seen > 0 && stats.integer == stats.seen {
                r"\d+"
            } else if stats.all_numeric() {
                r"-?\d+(?:\.\d+)?"
            } else if all(|v| !v.is_empty() && !v.contains(char::is_whitespace)) {
                r"\S+"
            } else if last {
                ".*"
            } else {
                ".*?"
            };
            // A line's leading variable with digits and colons is its time.
            if start == 0
                && stats
                    .values
                    .iter()
                    .all(|v| v.contains(':') && v.contains(char::is_numeric))
            {
                name = "time".to_string();
            }
            let _ = write!(pattern, "(?P<{name}>{class})");
            captures.push((name, *var));
            at = end;
        }
        let tail = &line[at..];
        if tail.trim().len() > longest.len() {
            longest = tail.trim();
        }
        pattern.push_str(&regex::escape(tail));
        pattern.push('$');
        let words: Vec<String> = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| w.len() >= 2)
            .take(4)
            .map(ident)
            .collect();
        let mut slug = if words.is_empty() {
            "lines".to_string()
        } else {
            words.join("_")
        };
        let n = names.entry(slug.clone()).or_default();
        *n += 1;
        if *n > 1 {
            slug = format!("{slug}_{n}");
        }
        let labels: Vec<String> = captures
            .iter()
            .filter(|(_, v)| t.vars[v].few() && t.count >= 20)
            .take(3)
            .map(|(name, _)| format!("{name}: {name}"))
            .collect();
        let _ = writeln!(out, "  - name: {slug}\n    format: text");
        if longest.len() >= 4 {
            let _ = writeln!(out, "    match: {{contains: {}}}", yaml_str(longest));
        }
        let _ = writeln!(
            out,
            "    extract:\n      - regex: {}\n    metrics:\n      - name: {team}_{slug}_total\n        type: counter\n        help: {}",
            yaml_str(&pattern),
            yaml_str(&format!("Lines like: {text}"))
        );
        if !labels.is_empty() {
            let _ = writeln!(out, "        labels: {{{}}}", labels.join(", "));
        }
    }
}
