//! Why an event did or did not match each rule, what it counted and what became of it: the
//! engine's own evaluation, step by step, for `logmill explain`. Slow on purpose (every rule
//! is tried, not only the prefilter's candidates); never on the hot path.

use std::fmt::Write;

use super::{Engine, Record, Skip, field_text, gate};
use crate::decode::{DecodeError, Format, Unwrapped};
use crate::derive::Aggregates;
use crate::reduce::Fate;
use crate::rules::program::{Cond, FieldRef, Program, Rule, Step, Test, TracePart};
use crate::sink::exposition::{ExpositionFormat, render};

/// What `explain` says of one event.
#[derive(Debug, Clone)]
pub struct Report {
    pub format: Result<Format, DecodeError>,
    pub rules: Vec<RuleReport>,
    /// Every series the event changed, with the change (`name{labels}`, delta).
    pub series: Vec<(String, f64)>,
    pub fate: Fate,
    /// What the first matching rule that reduces would do with it, when one does.
    pub reduction: Option<String>,
    pub trace: Option<String>,
    pub span: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RuleReport {
    /// `team/rule`.
    pub rule: String,
    /// `None`: matched; else why not.
    pub why_not: Option<String>,
    /// The rule's captures, when it matched: name and value.
    pub fields: Vec<(String, String)>,
}

fn quote(v: &str) -> String {
    let mut s = String::new();
    crate::sink::output::json_string(&mut s, &v.chars().take(80).collect::<String>());
    s
}

impl Engine {
    /// Explains `rec`. The engine's aggregates and counters are left as they were.
    /// An enveloped record is explained as its message; a CRI partial line as if whole (there
    /// is no batch to join it in).
    pub fn explain(&mut self, rec: &Record<'_>, now_ms: u64) -> Report {
        let mut message = std::mem::take(&mut self.message);
        let report = self.explain_unwrapped(rec, now_ms, &mut message);
        self.message = message;
        report
    }

    fn explain_unwrapped(&mut self, rec: &Record<'_>, now_ms: u64, message: &mut String) -> Report {
        let program = std::sync::Arc::clone(&self.program);
        let unwrapped = self
            .decoder
            .unwrap(rec.topic, rec.payload, rec.part, message, &mut self.decoded)
            .and_then(|u| match u {
                Unwrapped::Line(l) => Ok(l),
                Unwrapped::Message | Unwrapped::Cri(_) => {
                    if let Unwrapped::Cri(c) = u {
                        message.clear();
                        message.push_str(c.message);
                    }
                    self.decoder.finish(message, &mut self.decoded)?;
                    Ok(message.as_str())
                }
            });
        let line = match unwrapped {
            Ok(l) => l,
            Err(e) => {
                return Report {
                    format: Err(e),
                    rules: Vec::new(),
                    series: Vec::new(),
                    fate: Fate::DeadLetter(crate::reduce::Reason::Decode(e)),
                    reduction: None,
                    trace: None,
                    span: None,
                };
            }
        };
        let format = self.decoded.format.expect("set by a successful decode");
        program
            .prefilter
            .candidates(line.as_bytes(), &mut self.prefilter, &mut self.candidates);
        let mut rules = Vec::new();
        for (r, rule) in program.rules.iter().enumerate() {
            let why_not = self.why_not(&program, rule, r, format, line, rec.topic);
            let fields = if why_not.is_none() {
                rule.capture_names
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| {
                        let v = field_text(
                            &self.decoded,
                            &self.captures,
                            &self.trace,
                            FieldRef::Capture(i as u32),
                            line,
                            rec.topic,
                        )?;
                        Some((n.clone(), v.to_string()))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            rules.push(RuleReport {
                rule: format!("{}/{}", rule.team, rule.name),
                why_not,
                fields,
            });
        }
        // The real evaluation, on fresh aggregates: what it changes is the delta.
        let saved = std::mem::replace(&mut self.local, Aggregates::new(&program));
        let counters = std::mem::take(&mut self.counters);
        self.counters.rule_matches = vec![0; program.rules.len()];
        let mut fates = Vec::new();
        self.process(std::slice::from_ref(rec), now_ms, &mut fates);
        let text = render(&program, &self.local, ExpositionFormat::Text, now_ms);
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (s, v) = l.rsplit_once(' ')?;
                Some((s.to_string(), v.parse().ok()?))
            })
            // A quantile is not a change; a summary's count and sum say what the event added.
            .filter(|(s, v): &(String, f64)| *v != 0.0 && !s.contains("quantile=\""))
            .collect();
        let reduction = self.asks.first().map(|ask| {
            let rule = &program.rules[ask.rule as usize];
            let reduce = rule
                .reduce
                .as_deref()
                .expect("an ask comes from a reducing rule");
            let mut what = Vec::new();
            if ask.protected {
                what.push("protected (error level or always_keep): never reduced".to_string());
            } else {
                if let Some(s) = &reduce.sample {
                    let out = crate::reduce::sampled_out(ask.sample_key, s.rate);
                    what.push(match (out, reduce.keep_traces.is_some() && ask.traced) {
                        (true, true) => format!(
                            "sample 1 in {} by trace: held until its trace is decided (kept whole if one of its events is protected{})",
                            s.rate,
                            match reduce.keep_traces.and_then(|k| k.slower_ms) {
                                Some(ms) => format!(" or it lasts over {ms} ms"),
                                None => String::new(),
                            }
                        ),
                        (true, false) => format!("sample 1 in {}: dropped", s.rate),
                        (false, _) => format!("sample 1 in {}: kept", s.rate),
                    });
                }
                if reduce.dedupe.is_some() {
                    what.push("dedupe: kept if first of its key in the window".into());
                }
                if let Some(t) = &reduce.throttle {
                    what.push(format!(
                        "throttle: kept while under {} per interval",
                        t.limit
                    ));
                }
                if let Some(p) = &reduce.patterns {
                    what.push(format!(
                        "patterns: kept if among the first {} of its template",
                        p.keep
                    ));
                }
                if let Some(k) = &reduce.kept_bytes {
                    what.push(format!(
                        "team {} budget: kept while its kept bytes this second stay within {} (per partition)",
                        k.team, k.per_second
                    ));
                }
            }
            format!("{}/{}: {}", rule.team, rule.name, what.join("; "))
        });
        let (trace, span) = (
            self.trace.ctx.trace.as_ref().map(ToString::to_string),
            self.trace.ctx.span.map(|s| s.to_string()),
        );
        self.local = saved;
        self.counters = counters;
        Report {
            format: Ok(format),
            rules,
            series,
            fate: fates.first().copied().unwrap_or(Fate::Keep),
            reduction,
            trace,
            span,
        }
    }

    /// Why `rule` does not apply to the decoded event, or `None` when it does (its captures
    /// are then in `self.captures`).
    fn why_not(
        &mut self,
        program: &Program,
        rule: &Rule,
        r: usize,
        format: Format,
        line: &str,
        topic: &str,
    ) -> Option<String> {
        match gate(rule, format, topic) {
            Err(Skip::Format { want, got }) => {
                return Some(format!(
                    "the event is {}, the rule reads {}",
                    got.as_str(),
                    want.as_str()
                ));
            }
            Err(Skip::Topic) => return Some(format!("topic {} is not the rule's", quote(topic))),
            Ok(()) => {}
        }
        for clause in &rule.clauses {
            if !clause.iter().any(|l| self.prefilter.contains(*l)) {
                let texts: Vec<String> = clause
                    .iter()
                    .filter_map(|l| program.literals.get(*l as usize))
                    .map(|b| quote(&String::from_utf8_lossy(b)))
                    .collect();
                return Some(format!("the event does not contain {}", texts.join(" or ")));
            }
        }
        if let Some(c) = rule.pre.iter().find(|c| !self.holds(c, line, topic)) {
            return Some(self.describe(program, rule, c, line, topic));
        }
        // Extraction, as `applies` runs it, step by step.
        if !self.applies(rule, r, line, topic) {
            for (s, step) in rule.steps.iter().enumerate() {
                let what = match step {
                    Step::Alias { format: f, .. } if self.decoded.format != Some(*f) => {
                        format!("extract step {}: the event is not {}", s + 1, f.as_str())
                    }
                    Step::Pattern { from, .. } => {
                        match field_text(
                            &self.decoded,
                            &self.captures,
                            &self.trace,
                            *from,
                            line,
                            topic,
                        ) {
                            None => format!(
                                "extract step {}: {} is missing",
                                s + 1,
                                self.field_name(program, rule, *from)
                            ),
                            Some(v) => format!(
                                "extract step {}: the pattern does not match {}",
                                s + 1,
                                quote(v)
                            ),
                        }
                    }
                    Step::Alias { .. } => continue,
                };
                return Some(what);
            }
            if let Some(c) = rule.post.iter().find(|c| !self.holds(c, line, topic)) {
                return Some(self.describe(program, rule, c, line, topic));
            }
            return Some("extraction failed".into());
        }
        None
    }

    fn field_name(&self, program: &Program, rule: &Rule, f: FieldRef) -> String {
        let name = match f {
            FieldRef::Line => "_line".to_string(),
            FieldRef::Topic => "_topic".to_string(),
            FieldRef::Event(i) => program.event_fields[i as usize].name.clone(),
            FieldRef::Capture(i) => rule.capture_names[i as usize].clone(),
            FieldRef::Trace(TracePart::Trace) => "_trace_id".to_string(),
            FieldRef::Trace(TracePart::Span) => "_span_id".to_string(),
            FieldRef::Trace(TracePart::Parent) => "_parent_span_id".to_string(),
        };
        format!("`{name}`")
    }

    /// What a failing condition saw.
    fn describe(
        &self,
        program: &Program,
        rule: &Rule,
        c: &Cond,
        line: &str,
        topic: &str,
    ) -> String {
        match c {
            Cond::Field(f) => {
                let name = self.field_name(program, rule, f.field);
                let v = field_text(
                    &self.decoded,
                    &self.captures,
                    &self.trace,
                    f.field,
                    line,
                    topic,
                );
                let test = match &f.test {
                    Test::Exists(true) => "to exist".to_string(),
                    Test::Exists(false) => "to be absent".to_string(),
                    Test::Equals(s) => format!("to equal {}", quote(s)),
                    Test::In(set) => format!(
                        "to be one of {}",
                        set.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
                    ),
                    Test::Regex(re) => format!("to match /{}/", re.re.as_str()),
                    Test::Contains(_) => "to contain its text".to_string(),
                };
                match v {
                    Some(v) => format!("{name} is {}, wanted {test}", quote(v)),
                    None => format!("{name} is missing, wanted {test}"),
                }
            }
            Cond::Literal(l) => format!(
                "the event does not contain {}",
                quote(&String::from_utf8_lossy(
                    program.literals.get(*l as usize).map_or(&[][..], |v| v)
                ))
            ),
            Cond::Topic(_) => format!("topic {} is not one of the rule's", quote(topic)),
            Cond::All(cs) => cs
                .iter()
                .find(|c| !self.holds(c, line, topic))
                .map_or("`all` failed".into(), |c| {
                    self.describe(program, rule, c, line, topic)
                }),
            Cond::Any(cs) => {
                let parts: Vec<String> = cs
                    .iter()
                    .map(|c| self.describe(program, rule, c, line, topic))
                    .collect();
                format!("none of `any` holds: {}", parts.join("; "))
            }
            Cond::Not(inner) => match &**inner {
                Cond::Field(f) => {
                    let name = self.field_name(program, rule, f.field);
                    match field_text(
                        &self.decoded,
                        &self.captures,
                        &self.trace,
                        f.field,
                        line,
                        topic,
                    ) {
                        Some(v) => format!("{name} is {}, which its `not` excludes", quote(v)),
                        None => format!("{name} is missing, which its `not` excludes"),
                    }
                }
                Cond::Literal(l) => format!(
                    "the event contains {}, which its `not` excludes",
                    quote(&String::from_utf8_lossy(
                        program.literals.get(*l as usize).map_or(&[][..], |v| v)
                    ))
                ),
                _ => "its `not` condition holds".into(),
            },
        }
    }
}

impl Report {
    /// For a person: one block per event.
    pub fn text(&self, n: usize, out: &mut String) {
        let _ = match &self.format {
            Ok(f) => writeln!(out, "event {n}: {}", f.as_str()),
            Err(e) => writeln!(out, "event {n}: not decoded: {}", e.as_str()),
        };
        for r in &self.rules {
            match &r.why_not {
                None => {
                    let _ = writeln!(out, "  ✓ {}", r.rule);
                    for (k, v) in &r.fields {
                        let _ = writeln!(out, "      {k} = {}", quote(v));
                    }
                }
                Some(why) => {
                    let _ = writeln!(out, "  ✗ {}: {why}", r.rule);
                }
            }
        }
        for (s, v) in &self.series {
            let _ = writeln!(out, "  {s} +{v}");
        }
        if let (Some(t), span) = (&self.trace, &self.span) {
            let _ = writeln!(
                out,
                "  trace {t}{}",
                span.as_ref()
                    .map_or(String::new(), |s| format!(" span {s}"))
            );
        }
        let fate = match self.fate {
            Fate::Keep => "kept".to_string(),
            Fate::Drop => "dropped".to_string(),
            Fate::DeadLetter(r) => format!("dead-lettered ({})", r.as_str()),
        };
        let _ = writeln!(out, "  → {fate}");
        if let Some(r) = &self.reduction {
            let _ = writeln!(out, "  reduce {r}");
        }
    }

    /// For tools: one JSON object per event.
    pub fn json(&self, out: &mut String) {
        out.push_str("{\"format\":");
        match &self.format {
            Ok(f) => crate::sink::output::json_string(out, f.as_str()),
            Err(e) => {
                out.push_str("null,\"decode_error\":");
                crate::sink::output::json_string(out, e.as_str());
            }
        }
        out.push_str(",\"rules\":[");
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"rule\":");
            crate::sink::output::json_string(out, &r.rule);
            let _ = write!(out, ",\"matched\":{}", r.why_not.is_none());
            if let Some(w) = &r.why_not {
                out.push_str(",\"why_not\":");
                crate::sink::output::json_string(out, w);
            }
            out.push_str(",\"fields\":{");
            for (j, (k, v)) in r.fields.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                crate::sink::output::json_string(out, k);
                out.push(':');
                crate::sink::output::json_string(out, v);
            }
            out.push_str("}}");
        }
        out.push_str("],\"series\":{");
        for (i, (s, v)) in self.series.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::sink::output::json_string(out, s);
            let _ = write!(out, ":{v}");
        }
        out.push_str("},\"fate\":");
        let fate = match self.fate {
            Fate::Keep => "keep".to_string(),
            Fate::Drop => "drop".to_string(),
            Fate::DeadLetter(r) => format!("dead_letter:{}", r.as_str()),
        };
        crate::sink::output::json_string(out, &fate);
        for (k, v) in [
            ("reduction", &self.reduction),
            ("trace_id", &self.trace),
            ("span_id", &self.span),
        ] {
            if let Some(v) = v {
                let _ = write!(out, ",\"{k}\":");
                crate::sink::output::json_string(out, v);
            }
        }
        out.push_str("}\n");
    }
}
