//! `logmill shadow`: a candidate rule set against the live one over the same events, before
//! it ships: the series each family gains and loses and the values that change, each rule's
//! match rate and evaluation cost on both sides, and the events whose outcome (kept, dropped,
//! dead-lettered, reduced) changes. Promotion is moving the files; nothing here writes any.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use logmill::rules::Program;
use logmill::sink::exposition::{ExpositionFormat, render};

use super::evaluate::{evaluate, events};

pub struct Options {
    pub inputs: Vec<PathBuf>,
    /// The topic every input is read as; by default its path.
    pub topic: Option<String>,
    pub json: bool,
    /// Series listed per family and outcome change; the rest are counted.
    pub show: usize,
}

/// One side's results, merged over the inputs.
struct Side {
    /// Series key (`name{labels}`) to value, with its family.
    series: BTreeMap<String, (String, f64)>,
    /// `team/rule` to (matches, nanoseconds).
    rules: BTreeMap<String, (u64, u64)>,
    outcomes: Vec<&'static str>,
}

fn side(program: &Arc<Program>, inputs: &[(String, Vec<u8>)]) -> Side {
    let mut rules: BTreeMap<String, (u64, u64)> = program
        .rules
        .iter()
        .map(|r| (format!("{}/{}", r.team, r.name), (0, 0)))
        .collect();
    let mut outcomes = Vec::new();
    let mut aggregates = logmill::derive::Aggregates::new(program);
    for (topic, bytes) in inputs {
        let lines: Vec<&[u8]> = events(bytes).collect();
        let mut e = evaluate(program, topic, &lines, true);
        aggregates.merge_from(&mut e.aggregates, program, 0);
        for (i, r) in program.rules.iter().enumerate() {
            let c = rules
                .get_mut(&format!("{}/{}", r.team, r.name))
                .expect("every rule");
            c.0 += e.engine.counters.rule_matches[i];
            c.1 += e.engine.rule_nanos[i];
        }
        outcomes.extend(e.outcomes);
    }
    let text = render(program, &aggregates, ExpositionFormat::Text, 0);
    let mut series = BTreeMap::new();
    let mut family = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap_or_default().to_string();
            continue;
        }
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        if let Some((key, value)) = l.rsplit_once(' ') {
            let v = value.parse::<f64>().unwrap_or(f64::NAN);
            series.insert(key.to_string(), (family.clone(), v));
        }
    }
    Side {
        series,
        rules,
        outcomes,
    }
}

#[derive(Default)]
struct FamilyDiff {
    added: Vec<(String, f64)>,
    removed: Vec<(String, f64)>,
    changed: Vec<(String, f64, f64)>,
    same: u64,
}

pub fn run(live: Arc<Program>, candidate: Arc<Program>, opts: Options) -> Result<bool> {
    let mut inputs = Vec::new();
    for p in &opts.inputs {
        let bytes = if p.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)?;
            b
        } else {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
        };
        let topic = opts
            .topic
            .clone()
            .unwrap_or_else(|| p.display().to_string());
        inputs.push((topic, bytes));
    }
    let (a, b) = (side(&live, &inputs), side(&candidate, &inputs));
    let mut families: BTreeMap<String, FamilyDiff> = BTreeMap::new();
    for (key, (family, v)) in &a.series {
        let d = families.entry(family.clone()).or_default();
        match b.series.get(key) {
            None => d.removed.push((key.clone(), *v)),
            Some((_, w)) if same(*v, *w) => d.same += 1,
            Some((_, w)) => d.changed.push((key.clone(), *v, *w)),
        }
    }
    for (key, (family, v)) in &b.series {
        if !a.series.contains_key(key) {
            families
                .entry(family.clone())
                .or_default()
                .added
                .push((key.clone(), *v));
        }
    }
    let mut changes: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, (x, y)) in a.outcomes.iter().zip(&b.outcomes).enumerate() {
        if x != y {
            changes.entry((x, y)).or_default().push(i);
        }
    }
    let events = a.outcomes.len();
    let lines: Vec<&[u8]> = inputs
        .iter()
        .flat_map(|(_, bytes)| super::evaluate::events(bytes))
        .collect();
    let mut out = String::new();
    if opts.json {
        json_report(
            &mut out, events, &families, &a, &b, &changes, &lines, opts.show,
        );
    } else {
        text_report(
            &mut out, events, &families, &a, &b, &changes, &lines, opts.show,
        );
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    let differs = families
        .values()
        .any(|d| !d.added.is_empty() || !d.removed.is_empty() || !d.changed.is_empty())
        || !changes.is_empty();
    Ok(differs)
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn per_event(nanos: u64, events: usize) -> f64 {
    nanos as f64 / 1000.0 / events.max(1) as f64
}

#[allow(clippy::too_many_arguments)]
fn text_report(
    out: &mut String,
    events: usize,
    families: &BTreeMap<String, FamilyDiff>,
    a: &Side,
    b: &Side,
    changes: &BTreeMap<(&str, &str), Vec<usize>>,
    lines: &[&[u8]],
    show: usize,
) {
    let count = |f: fn(&FamilyDiff) -> usize| families.values().map(f).sum::<usize>();
    let _ = writeln!(
        out,
        "series: {} live, {} candidate: {} added, {} removed, {} changed, {} the same",
        a.series.len(),
        b.series.len(),
        count(|d| d.added.len()),
        count(|d| d.removed.len()),
        count(|d| d.changed.len()),
        families.values().map(|d| d.same).sum::<u64>(),
    );
    for (name, d) in families {
        if d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {name}: {} added, {} removed, {} changed",
            d.added.len(),
            d.removed.len(),
            d.changed.len()
        );
        for (k, v) in d.added.iter().take(show) {
            let _ = writeln!(out, "    + {k} {v}");
        }
        for (k, v) in d.removed.iter().take(show) {
            let _ = writeln!(out, "    - {k} {v}");
        }
        for (k, v, w) in d.changed.iter().take(show) {
            let _ = writeln!(out, "    ~ {k} {v} -> {w} ({:+})", w - v);
        }
        let listed =
            d.added.len().min(show) + d.removed.len().min(show) + d.changed.len().min(show);
        let all = d.added.len() + d.removed.len() + d.changed.len();
        if all > listed {
            let _ = writeln!(out, "    … and {} more (--show N lists more)", all - listed);
        }
    }
    let _ = writeln!(
        out,
        "rules (matches of {events} events, and µs per event evaluated):"
    );
    let names: std::collections::BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
    for name in names {
        let cell = |s: &Side| match s.rules.get(name) {
            Some((m, ns)) => format!(
                "{m} ({:.1}%), {:.2} µs",
                100.0 * *m as f64 / events.max(1) as f64,
                per_event(*ns, events)
            ),
            None => "-".to_string(),
        };
        let mark = match (a.rules.contains_key(name), b.rules.contains_key(name)) {
            (false, true) => " (new)",
            (true, false) => " (removed)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  {name}{mark}: live {}; candidate {}",
            cell(a),
            cell(b)
        );
    }
    let changed: usize = changes.values().map(Vec::len).sum();
    let _ = writeln!(
        out,
        "outcomes: {} of {events} events the same, {changed} changed",
        events - changed
    );
    for ((x, y), which) in changes {
        let _ = writeln!(out, "  {x} -> {y}: {}", which.len());
        for i in which.iter().take(show) {
            let _ = writeln!(
                out,
                "    {}",
                String::from_utf8_lossy(lines.get(*i).copied().unwrap_or_default())
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn json_report(
    out: &mut String,
    events: usize,
    families: &BTreeMap<String, FamilyDiff>,
    a: &Side,
    b: &Side,
    changes: &BTreeMap<(&str, &str), Vec<usize>>,
    lines: &[&[u8]],
    show: usize,
) {
    use logmill::sink::output::json_string;
    let num = |out: &mut String, v: f64| {
        if v.is_finite() {
            let _ = write!(out, "{v}");
        } else {
            json_string(out, &v.to_string());
        }
    };
    let _ = write!(out, "{{\"events\":{events},\"families\":{{");
    for (i, (name, d)) in families.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, name);
        let series = |out: &mut String, list: &[(String, f64)]| {
            for (j, (k, v)) in list.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"series\":");
                json_string(out, k);
                out.push_str(",\"value\":");
                num(out, *v);
                out.push('}');
            }
        };
        out.push_str(":{\"added\":[");
        series(out, &d.added);
        out.push_str("],\"removed\":[");
        series(out, &d.removed);
        out.push_str("],\"changed\":[");
        for (j, (k, v, w)) in d.changed.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"series\":");
            json_string(out, k);
            out.push_str(",\"live\":");
            num(out, *v);
            out.push_str(",\"candidate\":");
            num(out, *w);
            out.push('}');
        }
        let _ = write!(out, "],\"same\":{}}}", d.same);
    }
    out.push_str("},\"rules\":{");
    let names: std::collections::BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, name);
        out.push_str(":{");
        let mut first = true;
        for (which, s) in [("live", a), ("candidate", b)] {
            if let Some((m, ns)) = s.rules.get(name) {
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(
                    out,
                    "\"{which}\":{{\"matches\":{m},\"us_per_event\":{:.3}}}",
                    per_event(*ns, events)
                );
            }
        }
        out.push('}');
    }
    out.push_str("},\"outcomes\":[");
    for (i, ((x, y), which)) in changes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"live\":\"{x}\",\"candidate\":\"{y}\",\"events\":{},\"examples\":[",
            which.len()
        );
        for (j, e) in which.iter().take(show).enumerate() {
            if j > 0 {
                out.push(',');
            }
            json_string(
                out,
                &String::from_utf8_lossy(lines.get(*e).copied().unwrap_or_default()),
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
}
