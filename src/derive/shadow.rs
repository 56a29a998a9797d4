//! Shadow evaluation: what a candidate rule set would change against the live one over the
//! same events. The series each family gains and loses and the values that change, each rule's
//! matches and evaluation cost on both sides, and the events whose outcome (kept, dropped,
//! dead-lettered, reduced) differs, with examples.
//!
//! `logmill shadow` builds the two sides from sample files; the service from its stream
//! (`rules_candidate`, served at `/-/shadow`). Both render the same report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use crate::derive::Aggregates;
use crate::rules::Program;
use crate::sink::exposition::{ExpositionFormat, render};
use crate::sink::output::json_string;

/// Example events kept per outcome change.
pub const EXAMPLES: usize = 10;

/// One rule set's results over some events: its values, and each rule's matches and time
/// (`nanos` may be all zeros: not measured).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub program: Arc<Program>,
    pub aggs: Aggregates,
    pub matches: Vec<u64>,
    pub nanos: Vec<u64>,
}

impl Evaluation {
    pub fn new(program: Arc<Program>) -> Evaluation {
        Evaluation {
            aggs: Aggregates::new(&program),
            matches: vec![0; program.rules.len()],
            nanos: vec![0; program.rules.len()],
            program,
        }
    }

    /// Adds `other`'s, evaluated by the same program.
    fn merge(&mut self, other: &mut Evaluation, now_ms: u64) {
        self.aggs.merge_from(&mut other.aggs, &self.program, now_ms);
        let add = |to: &mut Vec<u64>, from: &[u64]| {
            to.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        };
        add(&mut self.matches, &other.matches);
        add(&mut self.nanos, &other.nanos);
    }
}

/// A batch's shadow evaluation: the live side's (a copy of what it merges for real), the
/// candidate's, and the outcomes compared.
#[derive(Debug)]
pub struct Delta {
    pub live: Evaluation,
    pub candidate: Evaluation,
    pub outcomes: Outcomes,
}

/// Both sides' results since the candidate was loaded (the service's `/-/shadow`). Not
/// checkpointed: a restart, a reload or a new candidate starts them again.
#[derive(Debug)]
pub struct Shadow {
    pub live: Evaluation,
    pub candidate: Evaluation,
    pub outcomes: Outcomes,
    pub since_ms: u64,
}

impl Shadow {
    pub fn new(live: Arc<Program>, candidate: Arc<Program>, now_ms: u64) -> Shadow {
        Shadow {
            live: Evaluation::new(live),
            candidate: Evaluation::new(candidate),
            outcomes: Outcomes::default(),
            since_ms: now_ms,
        }
    }

    /// Adds a batch's; `false` (and nothing added) when it was evaluated by other programs,
    /// before a reload.
    pub fn merge(&mut self, mut d: Delta, now_ms: u64) -> bool {
        if !Arc::ptr_eq(&d.live.program, &self.live.program)
            || !Arc::ptr_eq(&d.candidate.program, &self.candidate.program)
        {
            return false;
        }
        self.live.merge(&mut d.live, now_ms);
        self.candidate.merge(&mut d.candidate, now_ms);
        self.outcomes.merge(d.outcomes, EXAMPLES);
        true
    }

    pub fn report(&self) -> Report {
        Report::new(
            Side::new(&self.live),
            Side::new(&self.candidate),
            self.outcomes.clone(),
        )
    }

    /// The candidate's series, as `/metrics` would show them were it live.
    pub fn exposition(&self, format: ExpositionFormat, now_ms: u64) -> String {
        render(
            &self.candidate.program,
            &self.candidate.aggs,
            format,
            now_ms,
        )
    }
}

/// One side's results.
#[derive(Debug, Default)]
pub struct Side {
    /// Series key (`name{labels}`) to its family and value.
    pub series: BTreeMap<String, (String, f64)>,
    /// `team/rule` to (matches, nanoseconds).
    pub rules: BTreeMap<String, (u64, u64)>,
}

impl Side {
    pub fn new(e: &Evaluation) -> Side {
        let (program, aggs, matches, nanos) = (&e.program, &e.aggs, &e.matches, &e.nanos);
        let rules = program
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = matches.get(i).copied().unwrap_or(0);
                let ns = nanos.get(i).copied().unwrap_or(0);
                (format!("{}/{}", r.team, r.name), (m, ns))
            })
            .collect();
        let text = render(program, aggs, ExpositionFormat::Text, 0);
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
        Side { series, rules }
    }
}

/// The events seen, and those whose outcome differs: per (live, candidate) outcome, how many
/// and the first few events.
#[derive(Debug, Default, Clone)]
pub struct Outcomes {
    pub events: u64,
    pub changes: BTreeMap<(&'static str, &'static str), (u64, Vec<String>)>,
}

impl Outcomes {
    /// One event's outcomes; `examples` is how many events to keep per change.
    pub fn add(
        &mut self,
        live: &'static str,
        candidate: &'static str,
        event: &[u8],
        examples: usize,
    ) {
        self.events += 1;
        if live == candidate {
            return;
        }
        let (n, kept) = self.changes.entry((live, candidate)).or_default();
        *n += 1;
        if kept.len() < examples {
            kept.push(String::from_utf8_lossy(event).into_owned());
        }
    }

    pub fn merge(&mut self, other: Outcomes, examples: usize) {
        self.events += other.events;
        for (k, (n, more)) in other.changes {
            let (m, kept) = self.changes.entry(k).or_default();
            *m += n;
            let room = examples.saturating_sub(kept.len());
            kept.extend(more.into_iter().take(room));
        }
    }

    pub fn changed(&self) -> u64 {
        self.changes.values().map(|(n, _)| n).sum()
    }
}

#[derive(Debug, Default)]
struct FamilyDiff {
    added: Vec<(String, f64)>,
    removed: Vec<(String, f64)>,
    changed: Vec<(String, f64, f64)>,
    same: u64,
}

impl FamilyDiff {
    fn differs(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty() || !self.changed.is_empty()
    }
}

/// The comparison of two sides.
pub struct Report {
    live: Side,
    candidate: Side,
    families: BTreeMap<String, FamilyDiff>,
    outcomes: Outcomes,
}

impl Report {
    pub fn new(live: Side, candidate: Side, outcomes: Outcomes) -> Report {
        let mut families: BTreeMap<String, FamilyDiff> = BTreeMap::new();
        for (key, (family, v)) in &live.series {
            let d = families.entry(family.clone()).or_default();
            match candidate.series.get(key) {
                None => d.removed.push((key.clone(), *v)),
                Some((_, w)) if same(*v, *w) => d.same += 1,
                Some((_, w)) => d.changed.push((key.clone(), *v, *w)),
            }
        }
        for (key, (family, v)) in &candidate.series {
            if !live.series.contains_key(key) {
                families
                    .entry(family.clone())
                    .or_default()
                    .added
                    .push((key.clone(), *v));
            }
        }
        Report {
            live,
            candidate,
            families,
            outcomes,
        }
    }

    /// Whether the candidate changes any series or any event's outcome.
    pub fn differs(&self) -> bool {
        self.families.values().any(FamilyDiff::differs) || !self.outcomes.changes.is_empty()
    }

    fn per_event(&self, nanos: u64) -> f64 {
        nanos as f64 / 1000.0 / self.outcomes.events.max(1) as f64
    }

    /// For a terminal; `show` series are listed per family and events per outcome change.
    pub fn text(&self, show: usize) -> String {
        let mut out = String::new();
        let (a, b) = (&self.live, &self.candidate);
        let events = self.outcomes.events;
        let count = |f: fn(&FamilyDiff) -> usize| self.families.values().map(f).sum::<usize>();
        let _ = writeln!(
            out,
            "series: {} live, {} candidate: {} added, {} removed, {} changed, {} the same",
            a.series.len(),
            b.series.len(),
            count(|d| d.added.len()),
            count(|d| d.removed.len()),
            count(|d| d.changed.len()),
            self.families.values().map(|d| d.same).sum::<u64>(),
        );
        for (name, d) in self.families.iter().filter(|(_, d)| d.differs()) {
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
        let names: BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
        for name in names {
            let cell = |s: &Side| match s.rules.get(name) {
                Some((m, ns)) => format!(
                    "{m} ({:.1}%), {:.2} µs",
                    100.0 * *m as f64 / events.max(1) as f64,
                    self.per_event(*ns)
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
        let changed = self.outcomes.changed();
        let _ = writeln!(
            out,
            "outcomes: {} of {events} events the same, {changed} changed",
            events - changed
        );
        for ((x, y), (n, examples)) in &self.outcomes.changes {
            let _ = writeln!(out, "  {x} -> {y}: {n}");
            for e in examples.iter().take(show) {
                let _ = writeln!(out, "    {e}");
            }
        }
        out
    }

    /// For tools: every series that differs, `show` example events per outcome change.
    pub fn json(&self, show: usize) -> String {
        let mut out = String::new();
        let (a, b) = (&self.live, &self.candidate);
        let num = |out: &mut String, v: f64| {
            if v.is_finite() {
                let _ = write!(out, "{v}");
            } else {
                json_string(out, &v.to_string());
            }
        };
        let _ = write!(out, "{{\"events\":{},\"families\":{{", self.outcomes.events);
        for (i, (name, d)) in self.families.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
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
            series(&mut out, &d.added);
            out.push_str("],\"removed\":[");
            series(&mut out, &d.removed);
            out.push_str("],\"changed\":[");
            for (j, (k, v, w)) in d.changed.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"series\":");
                json_string(&mut out, k);
                out.push_str(",\"live\":");
                num(&mut out, *v);
                out.push_str(",\"candidate\":");
                num(&mut out, *w);
                out.push('}');
            }
            let _ = write!(out, "],\"same\":{}}}", d.same);
        }
        out.push_str("},\"rules\":{");
        let names: BTreeSet<&String> = a.rules.keys().chain(b.rules.keys()).collect();
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
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
                        self.per_event(*ns)
                    );
                }
            }
            out.push('}');
        }
        out.push_str("},\"outcomes\":[");
        for (i, ((x, y), (n, examples))) in self.outcomes.changes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"live\":\"{x}\",\"candidate\":\"{y}\",\"events\":{n},\"examples\":["
            );
            for (j, e) in examples.iter().take(show).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                json_string(&mut out, e);
            }
            out.push_str("]}");
        }
        out.push_str("]}\n");
        out
    }
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}
