//! What a run tells the person who wrote the rules, beyond the metrics: rules that matched
//! nothing, and events a rule never saw because they were decoded as another format.
//!
//! `replay` prints these after its summary and `logmill test` after each test file. They are
//! plain lines for a terminal; the same counts are self-metrics (`telemetry`) in the service.

use std::fmt::Write;

use crate::decode::Format;
use crate::engine::Counters;
use crate::rules::Program;

/// Lines per kind beyond which the rest is summed up, so 500 idle rules are not 500 lines.
const MAX_LINES: usize = 20;

/// The notes for a run of `program` that produced `counters`; `unit` names what was read
/// (`event`, `test input`).
pub fn rule_notes(program: &Program, counters: &Counters, unit: &str) -> Vec<String> {
    let mut idle = Vec::new();
    let mut skipping = Vec::new();
    for (r, rule) in program.rules.iter().enumerate() {
        let matched = counters.rule_matches.get(r).copied().unwrap_or(0);
        let skips = counters.format_skips.get(r).copied().unwrap_or([0; 3]);
        let skipped = skipped_phrase(skips);
        let want = rule.format.map_or("any", Format::as_str);
        if matched == 0 {
            let mut line = format!(
                "warning: rule {}/{} matched no {unit}",
                rule.team, rule.name
            );
            if let Some(s) = &skipped {
                let _ = write!(
                    line,
                    "; it skipped {s} (it reads `format: {want}` only){}",
                    hint(rule.format, skips)
                );
            }
            idle.push(line);
        } else if let Some(s) = skipped.filter(|_| !rule.clauses.is_empty()) {
            // With literals, a skipped event contained what the rule looks for: likely meant
            // for it. Without, every event of another format would be listed.
            skipping.push(format!(
                "note: rule {}/{} (format: {want}) skipped {s} that contain its literals{}",
                rule.team,
                rule.name,
                hint(rule.format, skips)
            ));
        }
    }
    let mut out = Vec::new();
    for (lines, what) in [
        (idle, "rule(s) matched nothing"),
        (skipping, "rule(s) skipped events"),
    ] {
        let more = lines.len().saturating_sub(MAX_LINES);
        out.extend(lines.into_iter().take(MAX_LINES));
        if more > 0 {
            out.push(format!("  … and {more} more {what}"));
        }
    }
    out
}

/// `3 event(s) decoded as logfmt and 1 as json`, or `None` when nothing was skipped.
fn skipped_phrase(skips: [u64; 3]) -> Option<String> {
    let parts: Vec<(u64, &str)> = [Format::Logfmt, Format::Json, Format::Text]
        .iter()
        .map(|f| (skips[*f as usize], f.as_str()))
        .filter(|(n, _)| *n > 0)
        .collect();
    let (first, rest) = parts.split_first()?;
    let mut s = format!("{} event(s) decoded as {}", first.0, first.1);
    for (n, f) in rest {
        let _ = write!(s, " and {n} as {f}");
    }
    Some(s)
}

fn hint(want: Option<Format>, skips: [u64; 3]) -> &'static str {
    if want == Some(Format::Text) && skips[Format::Logfmt as usize] > 0 {
        "\n  hint: a line that starts with `key=value` is decoded as logfmt, and text rules do not see it: remove `format: text` (the rule then sees every format), or decode the input with `--format text`"
    } else {
        ""
    }
}

/// What reduction did, in one line and one per rule that reduced anything: events and bytes
/// in and out, and what each action suppressed.
pub fn reduction(program: &Program, r: &crate::reduce::Reduction) -> String {
    use crate::reduce::Action;
    let (events_in, bytes_in, events_out, bytes_out) = r.totals();
    let pct = |out: u64, inn: u64| {
        if inn == 0 {
            0.0
        } else {
            100.0 * (1.0 - out as f64 / inn as f64)
        }
    };
    let mut line = format!(
        "reduction: {events_in} events in, {events_out} kept ({:.1}% fewer), {bytes_in} bytes in, {bytes_out} kept ({:.1}% fewer); summaries {}",
        pct(events_out, events_in),
        pct(bytes_out, bytes_in),
        r.summaries.iter().sum::<u64>(),
    );
    let evicted: u64 = r.evictions.iter().sum::<u64>() - r.retain.early;
    if evicted > 0 {
        let _ = write!(line, "; {evicted} window(s) closed early at a cap");
    }
    let t = &r.retain;
    if t.decided() > 0 {
        let _ = write!(
            line,
            "; whole traces: {} kept ({} held events released), {} dropped, {} dropped early at the held-bytes cap",
            t.kept, t.released, t.dropped, t.early
        );
    }
    for (rule, c) in program.rules.iter().zip(&r.rules) {
        if c.events_in == 0 {
            continue;
        }
        let _ = write!(
            line,
            "\n  {}/{}: {} in, {} kept",
            rule.team, rule.name, c.events_in, c.events_out
        );
        if c.protected > 0 {
            let _ = write!(line, " ({} protected)", c.protected);
        }
        for a in Action::ALL {
            let n = c.suppressed[a as usize];
            if n > 0 {
                let _ = write!(line, ", {} by {}", n, a.as_str());
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{InputFormat, Limits};
    use crate::derive::Version;
    use crate::engine::{Engine, Record};
    use crate::rules::{SourceFile, compile};
    use std::sync::Arc;

    fn notes(rules: &str, lines: &[&str]) -> Vec<String> {
        let (program, diags) = compile(&[SourceFile {
            name: "t.yaml".into(),
            text: rules.into(),
        }]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let program = Arc::new(program);
        let mut engine = Engine::new(program.clone(), InputFormat::Auto, Limits::default());
        let batch: Vec<Record> = lines
            .iter()
            .map(|l| Record {
                payload: l.as_bytes(),
                topic: "t",
                version: Version::default(),
                event_ms: 0,
                part: crate::decode::Part::Whole,
            })
            .collect();
        engine.process(&batch, 0, &mut Vec::new());
        rule_notes(&program, &engine.counters, "event")
    }

    /// Issue 9: `ms=700 took 3s` is decoded as logfmt, so a `format: text` rule never sees
    /// it; the run says so, and says which rules matched nothing.
    #[test]
    fn issue9_rules_that_skip_or_match_nothing_are_reported() {
        let rules = r#"
team: t
rules:
  - name: took
    format: text
    extract: [{regex: 'took (?P<took>\d+)s'}]
    metrics: [{name: took_total, type: counter}]
  - name: never
    match: {contains: "no such thing"}
    metrics: [{name: never_total, type: counter}]
  - name: json_only
    format: json
    metrics: [{name: j_total, type: counter}]
"#;
        let got = notes(rules, &["ms=700 took 3s", "request took 2s", "x=1"]);
        assert_eq!(got[0], "warning: rule t/never matched no event", "{got:#?}");
        assert!(
            got[1].starts_with("warning: rule t/json_only matched no event; it skipped 2 event(s) decoded as logfmt and 1 as text"),
            "{got:#?}"
        );
        assert!(
            got[2].starts_with("note: rule t/took (format: text) skipped 1 event(s) decoded as logfmt that contain its literals\n  hint: a line that starts with `key=value`"),
            "{got:#?}"
        );
        assert_eq!(got.len(), 3, "{got:#?}");
    }
}
