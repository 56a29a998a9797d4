//! The playground page: paste log lines and a rule file, see the diagnostics, `explain`, the
//! series and the keep/drop decisions; and the rule files the service has loaded, per team.
//!
//! An evaluation compiles the posted rules into a fresh `Program` and runs it sans-IO over the
//! posted lines, as `explain` and `replay` do: it never touches the service's state, rules or
//! files, and it is bounded (`Bounds`). The HTTP side is in `sink::http`; the page's assets are
//! embedded next to this file (no CDN: clusters are often offline).

use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::decode::{InputFormat, Limits};
use crate::derive::Version;
use crate::engine::{Engine, Record};
use crate::reduce::reducer::Out;
use crate::reduce::{Fate, Reducer, Source, Verdict};
use crate::rules::diagnostic::Severity;
use crate::rules::{Diagnostic, SourceFile};
use crate::sink::exposition::{ExpositionFormat, render};
use crate::sink::http::Published;
use crate::sink::output::json_string;

pub const INDEX_HTML: &str = include_str!("index.html");
pub const PLAYGROUND_JS: &str = include_str!("playground.js");
pub const PLAYGROUND_CSS: &str = include_str!("playground.css");

/// The name the posted rule file has in diagnostics.
pub const RULES_NAME: &str = "rules.yaml";

/// What one evaluation may take. A request over a size bound is refused before anything is
/// compiled; the time limit stops the evaluation between lines (what was done is returned,
/// marked truncated).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub rules_bytes: usize,
    pub input_bytes: usize,
    pub lines: usize,
    /// Each regex (a `regex:` or an expanded `grok:`) compiles within this many bytes, so a
    /// pasted `(a{1000}){1000}` is a diagnostic rather than a second of CPU and memory.
    pub regex_bytes: usize,
    pub time: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            rules_bytes: 64 * 1024,
            input_bytes: 256 * 1024,
            lines: 1000,
            regex_bytes: 1 << 20,
            time: Duration::from_secs(2),
        }
    }
}

/// The largest request body the endpoint reads: both texts at their bounds, JSON-escaped.
pub fn max_body(b: &Bounds) -> usize {
    2 * (b.rules_bytes + b.input_bytes) + 1024
}

/// Evaluates a request body (`{"rules": "...", "input": "...", "topic": "..."}`) into the
/// JSON the page renders.
pub fn evaluate_body(body: &[u8], bounds: &Bounds, now_ms: u64) -> String {
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(body);
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(String::from);
    match parsed {
        Ok(v) => evaluate(
            &text(&v, "rules").unwrap_or_default(),
            &text(&v, "input").unwrap_or_default(),
            &text(&v, "topic").unwrap_or_else(|| "playground".into()),
            bounds,
            now_ms,
        ),
        Err(e) => refusal(&format!("the request is not JSON: {e}")),
    }
}

fn refusal(why: &str) -> String {
    let mut out = String::from("{\"refused\":");
    json_string(&mut out, why);
    out.push('}');
    out
}

/// Compiles `rules` into a fresh program and runs it over `input`'s lines: the diagnostics,
/// one `explain` report per line (its JSON form), the exposition of every line's series, and
/// each line's fate after reduction.
pub fn evaluate(rules: &str, input: &str, topic: &str, bounds: &Bounds, now_ms: u64) -> String {
    if rules.len() > bounds.rules_bytes {
        return refusal(&format!(
            "the rule file is {} bytes, over the playground's {} bytes",
            rules.len(),
            bounds.rules_bytes
        ));
    }
    if input.len() > bounds.input_bytes {
        return refusal(&format!(
            "the log lines are {} bytes, over the playground's {} bytes",
            input.len(),
            bounds.input_bytes
        ));
    }
    let started = Instant::now();
    let (program, diags) = compile_bounded(rules, bounds.regex_bytes);
    let program = Arc::new(program);
    let all_lines: Vec<&str> = input
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let mut truncated = None;
    let mut lines = &all_lines[..];
    if lines.len() > bounds.lines {
        truncated = Some(format!(
            "only the first {} of {} lines were evaluated",
            bounds.lines,
            lines.len()
        ));
        lines = &lines[..bounds.lines];
    }
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record {
            payload: l.as_bytes(),
            topic,
            version: Version {
                offset: i as u64,
                ..Version::default()
            },
            event_ms: now_ms,
            part: crate::decode::Part::Whole,
        })
        .collect();
    // Explain line by line, watching the clock between lines; a line that is a message of
    // many events (OTLP JSON) is its events.
    let mut explain = Engine::new(Arc::clone(&program), InputFormat::Auto, Limits::default());
    let mut splitting = crate::engine::split::Splitting::default();
    let records: Vec<Record> = splitting
        .records(&explain, &records)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let mut reports = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        if started.elapsed() > bounds.time {
            truncated = Some(format!(
                "stopped after {i} of {} lines: over the playground's {:?} time limit",
                all_lines.len(),
                bounds.time
            ));
            break;
        }
        let mut json = String::new();
        explain.explain(rec, now_ms).json(&mut json);
        reports.push(json);
    }
    let records = &records[..reports.len()];
    // The real evaluation of the whole input, as `replay` runs it: one batch, one partition.
    let mut engine = Engine::new(Arc::clone(&program), InputFormat::Auto, Limits::default());
    let mut fates = Vec::new();
    engine.process(records, now_ms, &mut fates);
    let exposition = render(&program, &engine.local, ExpositionFormat::Text, now_ms);
    let mut reducer = Reducer::new();
    let mut counts = crate::reduce::Reduction::new(&program);
    let mut outs = Vec::new();
    reducer.batch(
        &program,
        &engine.asks,
        &engine.text,
        |i| {
            (
                records[i].payload,
                now_ms,
                Source {
                    partition: 0,
                    offset: i as i64,
                    timestamp_ms: None,
                    part: crate::decode::Part::Whole,
                },
            )
        },
        &mut counts,
        &mut outs,
    );
    let mut summaries = Vec::new();
    reducer.flush(&program, 0, &mut counts, &mut summaries);
    let mut verdicts = vec![None; records.len()];
    // A held event of a trace kept whole is released later: kept after all.
    let mut released = vec![false; records.len()];
    for o in &outs {
        match o {
            Out::Decided(i, v) => verdicts[*i] = Some(*v),
            Out::Released(h) => {
                if let Some(r) = released.get_mut(h.offset as usize) {
                    *r = true;
                }
            }
            Out::Summary(_) => {}
        }
    }

    let mut out = String::from("{\"diagnostics\":[");
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        diagnostic_json(d, &mut out);
    }
    out.push_str("],\"events\":[");
    for (i, r) in reports.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r.trim_end());
    }
    out.push_str("],\"decisions\":[");
    for (i, f) in fates.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let decision = match (f, verdicts[i]) {
            (Fate::Keep, _) if released[i] => "keep:released with its trace".to_string(),
            (Fate::Keep, Some(Verdict::Suppressed(a))) => format!("drop:{}", a.as_str()),
            (
                Fate::Keep,
                Some(Verdict::Keep {
                    sample_rate: Some(n),
                    ..
                }),
            ) => format!("keep:sampled 1 in {n}"),
            (Fate::Keep, _) => "keep".to_string(),
            (Fate::Drop, _) => "drop".to_string(),
            (Fate::DeadLetter(r), _) => format!("dead_letter:{}", r.as_str()),
        };
        json_string(&mut out, &decision);
    }
    out.push_str("],\"summaries\":[");
    let mut first = true;
    for s in outs
        .iter()
        .filter_map(|o| match o {
            Out::Summary(s) => Some(&**s),
            Out::Decided(..) | Out::Released(_) => None,
        })
        .chain(&summaries)
    {
        if !first {
            out.push(',');
        }
        first = false;
        let mut j = String::new();
        s.json(&mut j);
        out.push_str(j.trim_end());
    }
    out.push_str("],\"exposition\":");
    json_string(&mut out, &exposition);
    let _ = write!(
        out,
        ",\"rules\":{},\"lines\":{},\"took_ms\":{:.1}",
        program.rules.len(),
        reports.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    if let Some(t) = truncated {
        out.push_str(",\"truncated\":");
        json_string(&mut out, &t);
    }
    out.push('}');
    out
}

fn compile_bounded(rules: &str, regex_bytes: usize) -> (crate::rules::Program, Vec<Diagnostic>) {
    crate::rules::compile::compile_with(
        &[SourceFile {
            name: RULES_NAME.into(),
            text: rules.to_string(),
        }],
        &crate::rules::compile::Options {
            regex_size_limit: Some(regex_bytes),
            no_files: true,
            ..Default::default()
        },
    )
}

fn diagnostic_json(d: &Diagnostic, out: &mut String) {
    out.push_str("{\"file\":");
    json_string(out, &d.file);
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    };
    let _ = write!(
        out,
        ",\"line\":{},\"col\":{},\"severity\":\"{severity}\",\"code\":",
        d.pos.line, d.pos.col
    );
    json_string(out, d.code.as_str());
    out.push_str(",\"message\":");
    json_string(out, &d.message);
    if let Some(h) = &d.hint {
        out.push_str(",\"hint\":");
        json_string(out, h);
    }
    out.push('}');
}

/// The rule files in force, per team, as JSON: each file's hash, its rules with their matches
/// (and the share of all events that is), the families they write with their series against
/// the cap and what overflowed, and the dead-letter and value-error counts by reason. Counts
/// come from what the service exports (`telemetry`, the `/-/metrics` text) and from the
/// published aggregates; a number the service does not have is left out, never estimated.
pub fn teams(published: &Published, telemetry: Option<&str>) -> String {
    let program = &published.program;
    let samples = telemetry.map(parse_samples).unwrap_or_default();
    let find = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .reduce(|a, b| a + b)
    };
    let events = find(crate::telemetry::EVENTS_IN, &[]);
    let mut out = String::from("{\"hash\":");
    json_string(&mut out, &format!("{:016x}", program.hash));
    out.push_str(",\"telemetry\":");
    out.push_str(if telemetry.is_some() { "true" } else { "false" });
    if let Some(e) = events {
        let _ = write!(out, ",\"events\":{e}");
    }
    out.push_str(",\"files\":[");
    for (fi, file) in program.files.iter().enumerate() {
        if fi > 0 {
            out.push(',');
        }
        out.push_str("{\"file\":");
        json_string(&mut out, file);
        if let Some(h) = program.file_hashes.get(fi) {
            out.push_str(",\"hash\":");
            json_string(&mut out, &format!("{h:016x}"));
        }
        let rules: Vec<_> = program.rules.iter().filter(|r| *r.file == **file).collect();
        let team = rules.first().map_or("", |r| r.team.as_str());
        out.push_str(",\"team\":");
        json_string(&mut out, team);
        // The team's budgets (declared once per team, so any rule of it says them).
        out.push_str(",\"budgets\":{");
        let mut budgets = Vec::new();
        if let Some(t) = program.teams.iter().find(|t| t.name == team)
            && let Some(n) = t.series_budget
        {
            budgets.push(format!("\"series\":{n}"));
        }
        if let Some(cpu) = rules.first().and_then(|r| r.cpu_budget) {
            budgets.push(format!("\"cpu_ms\":{}", cpu.as_secs_f64() * 1000.0));
        }
        if let Some(k) = rules
            .first()
            .and_then(|r| r.reduce.as_ref())
            .and_then(|r| r.kept_bytes.as_ref())
        {
            budgets.push(format!("\"kept_bytes\":{}", k.per_second));
        }
        out.push_str(&budgets.join(","));
        out.push('}');
        if let Some(n) = find(crate::telemetry::TEAM_SERIES, &[("team", team)]) {
            let _ = write!(out, ",\"team_series\":{n}");
        }
        out.push_str(",\"rules\":[");
        for (ri, r) in rules.iter().enumerate() {
            if ri > 0 {
                out.push(',');
            }
            out.push_str("{\"rule\":");
            json_string(&mut out, &r.name);
            let labels = [("team", r.team.as_str()), ("rule", r.name.as_str())];
            if let Some(m) = find(crate::telemetry::RULE_MATCHES, &labels) {
                let _ = write!(out, ",\"matches\":{m}");
                if let Some(e) = events.filter(|e| *e > 0.0) {
                    let _ = write!(out, ",\"match_rate\":{}", m / e);
                }
            }
            if let Some(us) = find(crate::telemetry::RULE_CPU, &labels) {
                let _ = write!(out, ",\"cpu_us\":{us}");
                if let Some(e) = events.filter(|e| *e > 0.0) {
                    let _ = write!(out, ",\"us_per_event\":{}", us / e);
                }
            }
            for (key, name) in [
                ("quarantines", crate::telemetry::RULE_QUARANTINES),
                (
                    "quarantined_events",
                    crate::telemetry::RULE_QUARANTINE_SKIPS,
                ),
            ] {
                if let Some(n) = find(name, &labels) {
                    let _ = write!(out, ",\"{key}\":{n}");
                }
            }
            reduction(&mut out, &samples, &r.team, &r.name);
            let errors: Vec<_> = samples
                .iter()
                .filter(|(n, l, v)| {
                    n == crate::telemetry::VALUE_ERRORS
                        && *v > 0.0
                        && l.iter().any(|(k, v)| k == "rule" && *v == r.name)
                })
                .collect();
            out.push_str(",\"value_errors\":{");
            for (i, (_, l, v)) in errors.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let reason = l.iter().find(|(k, _)| k == "reason").map_or("", |(_, v)| v);
                json_string(&mut out, reason);
                let _ = write!(out, ":{v}");
            }
            out.push_str("},\"families\":[");
            let mut families: Vec<usize> = r.updates.iter().map(|u| u.family as usize).collect();
            families.sort_unstable();
            families.dedup();
            for (i, f) in families.iter().enumerate() {
                let Some(family) = program.families.get(*f) else {
                    continue;
                };
                if i > 0 {
                    out.push(',');
                }
                let state = published.aggs.families.get(*f);
                out.push_str("{\"name\":");
                json_string(&mut out, &family.name);
                let _ = write!(
                    out,
                    ",\"series\":{},\"max_series\":{},\"overflowed\":{}}}",
                    state.map_or(0, |s| s.series.len()),
                    family.max_series,
                    state.map_or(0, |s| s.overflowed)
                );
            }
            out.push_str("]}");
        }
        out.push_str("]}");
    }
    out.push_str("],\"dead_letters\":{");
    let mut first = true;
    for (n, l, v) in &samples {
        if n != crate::telemetry::DECODE_ERRORS || *v <= 0.0 {
            continue;
        }
        let Some((_, reason)) = l.iter().find(|(k, _)| k == "reason") else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        json_string(&mut out, reason);
        let _ = write!(out, ":{v}");
    }
    out.push('}');
    if let Some(d) = find(crate::telemetry::EVENTS_DEAD_LETTERED, &[]) {
        let _ = write!(out, ",\"dead_lettered\":{d}");
    }
    out.push('}');
    out
}

/// A rule's reduction as self-telemetry counts it: events and bytes in and kept, and the
/// events each action suppressed (`,"reduction":{...}`; nothing when it reduced nothing).
fn reduction(out: &mut String, samples: &[Sample], team: &str, rule: &str) {
    let mut events: Vec<(&str, f64)> = Vec::new();
    let mut bytes: Vec<(&str, f64)> = Vec::new();
    for (n, l, v) in samples {
        let is = |k: &str, want: &str| l.iter().any(|(lk, lv)| lk == k && lv == want);
        if !is("team", team) || !is("rule", rule) {
            continue;
        }
        let Some((_, outcome)) = l.iter().find(|(k, _)| k == "outcome") else {
            continue;
        };
        if n == crate::telemetry::REDUCED_EVENTS {
            events.push((outcome, *v));
        } else if n == crate::telemetry::REDUCED_BYTES {
            bytes.push((outcome, *v));
        }
    }
    if events.is_empty() {
        return;
    }
    let object = |out: &mut String, pairs: &[(&str, f64)]| {
        out.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(out, k);
            let _ = write!(out, ":{v}");
        }
        out.push('}');
    };
    out.push_str(",\"reduction\":{\"events\":");
    object(out, &events);
    out.push_str(",\"bytes\":");
    object(out, &bytes);
    out.push('}');
}

type Sample = (String, Vec<(String, String)>, f64);

/// The samples of a text exposition: name, labels, value. Only what `telemetry` renders needs
/// reading (no escapes in our label values but `\"` and `\\`, which are undone).
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap_or(rest))),
        };
        out.push((name.to_string(), labels, value));
    }
    out
}

fn parse_labels(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some((k, rest)) = s.split_once("=\"") {
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        v.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.push((k.trim_start_matches(',').to_string(), v));
        s = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile;

    const RULES: &str = "team: web\nrules:\n  - name: requests\n    match: {contains: GET}\n    extract: {regex: 'GET (?P<path>\\S+) (?P<status>\\d+)'}\n    metrics:\n      - {name: http_requests_total, type: counter, labels: {status: status}}\n    then: drop\n";

    fn value(json: &str) -> serde_json::Value {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    #[test]
    fn evaluates_series_explain_and_decisions() {
        let out = value(&evaluate(
            RULES,
            "GET /a 200\nGET /b 500\nGET /c 200\nsomething else\n",
            "t",
            &Bounds::default(),
            0,
        ));
        assert_eq!(out["diagnostics"], serde_json::json!([]), "{out}");
        let expo = out["exposition"].as_str().unwrap();
        assert!(
            expo.contains("http_requests_total{status=\"200\"} 2")
                && expo.contains("http_requests_total{status=\"500\"} 1"),
            "{expo}"
        );
        assert_eq!(
            out["decisions"],
            serde_json::json!(["drop", "drop", "drop", "keep"])
        );
        assert_eq!(out["events"][0]["rules"][0]["matched"], true);
        assert_eq!(out["events"][3]["rules"][0]["matched"], false);
    }

    #[test]
    fn diagnostics_carry_line_column_and_hint() {
        let broken = RULES.replace("labels: {status: status}", "lables: [status]");
        let out = value(&evaluate(
            &broken,
            "GET /a 200\n",
            "t",
            &Bounds::default(),
            0,
        ));
        let d = &out["diagnostics"][0];
        assert_eq!(
            (
                d["file"].as_str(),
                d["line"].as_u64(),
                d["severity"].as_str()
            ),
            (Some(RULES_NAME), Some(7), Some("error")),
            "{out}"
        );
        assert!(d["hint"].as_str().unwrap().contains("labels"), "{d}");
        assert_eq!(out["exposition"], "", "a rule with an error is left out");
    }

    #[test]
    fn bounds_refuse_or_truncate() {
        let b = Bounds {
            rules_bytes: 10,
            ..Bounds::default()
        };
        assert!(value(&evaluate(RULES, "", "t", &b, 0))["refused"].is_string());
        let b = Bounds {
            lines: 2,
            ..Bounds::default()
        };
        let out = value(&evaluate(
            RULES,
            "GET /a 200\nGET /a 200\nGET /a 200\n",
            "t",
            &b,
            0,
        ));
        assert_eq!(out["lines"], 2);
        assert!(out["truncated"].as_str().unwrap().contains("first 2 of 3"));
        // The shipped default takes the rule's regex; a smaller bound refuses it.
        let b = Bounds {
            regex_bytes: 100,
            ..Bounds::default()
        };
        let out = value(&evaluate(RULES, "GET /a 200\n", "t", &b, 0));
        let d = &out["diagnostics"][0];
        assert_eq!(d["code"], "bad-regex", "{out}");
        assert!(d["message"].as_str().unwrap().contains("size limit"), "{d}");
        assert!(value(&evaluate_body(b"nope", &b, 0))["refused"].is_string());
    }

    #[test]
    fn teams_read_exported_numbers_only() {
        let (program, _) = compile(&[SourceFile {
            name: "web.yaml".into(),
            text: RULES.into(),
        }]);
        let program = Arc::new(program);
        let published = Published {
            aggs: crate::derive::Aggregates::new(&program),
            program,
        };
        let none = value(&teams(&published, None));
        let rule = &none["files"][0]["rules"][0];
        assert_eq!(none["files"][0]["team"], "web");
        assert!(rule.get("matches").is_none() && rule.get("match_rate").is_none());
        assert_eq!(rule["families"][0]["max_series"], 10_000);
        let telemetry = "# TYPE logmill_events_total counter\nlogmill_events_total 8\nlogmill_rule_matches_total{rule=\"requests\",team=\"web\"} 2\nlogmill_decode_errors_total{reason=\"invalid_utf8\"} 1\nlogmill_value_errors_total{reason=\"not_a_number\",rule=\"requests\"} 3\n";
        let some = value(&teams(&published, Some(telemetry)));
        let rule = &some["files"][0]["rules"][0];
        assert_eq!(
            (rule["matches"].as_f64(), rule["match_rate"].as_f64()),
            (Some(2.0), Some(0.25))
        );
        assert_eq!(rule["value_errors"]["not_a_number"], 3.0);
        assert_eq!(some["dead_letters"]["invalid_utf8"], 1.0);
        // Issue 9: cost, quarantines and reduction per rule, budgets per team.
        let telemetry = format!(
            "{telemetry}logmill_rule_cpu_microseconds_total{{rule=\"requests\",team=\"web\"}} 40\nlogmill_rule_quarantines_total{{rule=\"requests\",team=\"web\"}} 1\nlogmill_reduce_events_total{{outcome=\"in\",rule=\"requests\",team=\"web\"}} 8\nlogmill_reduce_events_total{{outcome=\"budget\",rule=\"requests\",team=\"web\"}} 5\nlogmill_reduce_bytes_total{{outcome=\"kept\",rule=\"requests\",team=\"web\"}} 300\nlogmill_team_series{{team=\"web\"}} 4\n"
        );
        let more = value(&teams(&published, Some(&telemetry)));
        let rule = &more["files"][0]["rules"][0];
        assert_eq!(rule["us_per_event"].as_f64(), Some(5.0));
        assert_eq!(rule["quarantines"].as_f64(), Some(1.0));
        assert_eq!(rule["reduction"]["events"]["budget"].as_f64(), Some(5.0));
        assert_eq!(rule["reduction"]["bytes"]["kept"].as_f64(), Some(300.0));
        assert_eq!(more["files"][0]["team_series"].as_f64(), Some(4.0));
        let (budgeted, _) = compile(&[SourceFile {
            name: "web.yaml".into(),
            text: format!("budget: {{series: 100, kept_bytes: 1KiB, cpu: 20ms}}\n{RULES}"),
        }]);
        let budgeted = Arc::new(budgeted);
        let published = Published {
            aggs: crate::derive::Aggregates::new(&budgeted),
            program: budgeted,
        };
        let b = value(&teams(&published, None));
        let budgets = &b["files"][0]["budgets"];
        assert_eq!(budgets["series"].as_f64(), Some(100.0));
        assert_eq!(budgets["kept_bytes"].as_f64(), Some(1024.0));
        assert_eq!(budgets["cpu_ms"].as_f64(), Some(20.0));
    }
}
