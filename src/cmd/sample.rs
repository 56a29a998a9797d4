//! `logmill check --sample FILE`: each metric's series over a sample of real events, and an
//! estimate at full scale, so that a cap that would bind is seen before deploying.
//!
//! The rules run with their caps and budgets lifted: distinct label sets are counted exactly
//! up to `EXACT` per family, and past it with a HyperLogLog of the rest (`derive::hll`, about
//! 1% off), so a sample of millions of distinct series is sized in bounded memory. The estimate follows how fast new label sets still appear: with
//! `d(k)` distinct sets after `k` events, Heaps' law `d(k) ∝ k^β` is fitted between the half
//! sample and the whole, and `d(n) · (N / n)^β` projected to `--scale N` events (β = 0 when
//! the second half added none: a closed set of values, such as methods or status classes).

use std::sync::Arc;

use anyhow::{Context, Result};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::Version;
use logmill::engine::{Engine, Record};
use logmill::rules::Program;

pub struct Estimate {
    pub family: String,
    pub sample: usize,
    pub beta: f64,
    pub projected: f64,
    pub cap: usize,
}

/// Label sets counted exactly per family; more are counted by a sketch.
pub const EXACT: usize = 100_000;

/// Runs `program` (caps lifted) over `lines` and estimates each family's series at `scale`
/// events.
pub fn estimate(program: Program, lines: &[&[u8]], scale: u64) -> Vec<Estimate> {
    estimate_with(program, lines, scale, EXACT)
}

/// `estimate`, counting exactly up to `exact` label sets per family.
pub fn estimate_with(
    mut program: Program,
    lines: &[&[u8]],
    scale: u64,
    exact: usize,
) -> Vec<Estimate> {
    let caps: Vec<usize> = program.families.iter().map(|f| f.max_series).collect();
    for f in &mut program.families {
        f.max_series = exact;
        f.budget = None;
    }
    let uncapped = Arc::new(program);
    let mut engine = Engine::new(Arc::clone(&uncapped), InputFormat::Auto, Limits::default());
    engine.local.sketch_overflow();
    let distinct = |f: &logmill::derive::FamilyState| {
        let exact = f.series.len() - usize::from(f.has_overflow());
        exact
            + f.overflow_sketch
                .as_ref()
                .map_or(0, |s| s.estimate().round() as usize)
    };
    let mut fates = Vec::new();
    let mut splitting = logmill::engine::split::Splitting::default();
    let half = lines.len() / 2;
    let mut at_half = vec![0; uncapped.families.len()];
    for (part, range) in [(0, 0..half), (1, half..lines.len())] {
        for chunk in lines[range.clone()].chunks(1024) {
            let batch: Vec<Record> = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| Record {
                    payload: l,
                    topic: "sample",
                    version: Version {
                        offset: (range.start + i) as u64,
                        ..Version::default()
                    },
                    event_ms: 0,
                    part: logmill::decode::Part::Whole,
                })
                .collect();
            // A line that is a message of many events (OTLP JSON) counts as its events.
            let batch: Vec<Record> = splitting
                .records(&engine, &batch)
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            engine.process(&batch, 0, &mut fates);
        }
        if part == 0 {
            for (i, f) in engine.local.families.iter().enumerate() {
                at_half[i] = distinct(f);
            }
        }
    }
    let n = lines.len().max(1) as f64;
    uncapped
        .families
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let sample = engine.local.families.get(i).map_or(0, distinct);
            let half = at_half[i];
            let beta = if half > 0 && sample > half {
                ((sample as f64 / half as f64).ln() / 2f64.ln()).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let projected = sample as f64 * (scale as f64 / n).max(1.0).powf(beta);
            Estimate {
                family: f.name.clone(),
                sample,
                beta,
                projected,
                cap: caps[i],
            }
        })
        .collect()
}

/// Prints the table and a warning per family whose cap would bind; returns how many would.
pub fn report(program: Program, path: &std::path::Path, scale: Option<u64>) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&[u8]> = super::evaluate::events(&bytes).collect();
    let scale = scale.unwrap_or(lines.len() as u64 * 100);
    // Each family's team budget, by family, before `estimate` lifts them.
    let budgets: Vec<Option<(String, usize)>> = program
        .families
        .iter()
        .map(|f| {
            let b = f.budget?;
            Some((program.teams.get(b.team as usize)?.name.clone(), b.series))
        })
        .collect();
    let estimates = estimate(program, &lines, scale);
    println!(
        "series from {} sample event(s), projected to {scale} event(s) (--scale):",
        lines.len()
    );
    let width = estimates
        .iter()
        .map(|e| e.family.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "  {:width$}  {:>9}  {:>6}  {:>11}  {:>9}",
        "family", "sample", "growth", "projected", "cap"
    );
    let mut binding = 0;
    for e in &estimates {
        println!(
            "  {:width$}  {:>9}  {:>6.2}  {:>11.0}  {:>9}",
            e.family, e.sample, e.beta, e.projected, e.cap
        );
    }
    for e in &estimates {
        if e.projected >= e.cap as f64 {
            binding += 1;
            eprintln!(
                "warning: {}: about {:.0} series at {scale} events, over its max_series {} (new label sets would go to its overflow series; totals stay exact)",
                e.family, e.projected, e.cap
            );
        }
    }
    let mut teams: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for (e, b) in estimates.iter().zip(&budgets) {
        if let Some((team, series)) = b {
            teams.entry(team.as_str()).or_insert((0.0, *series)).0 += e.projected;
        }
    }
    for (team, (projected, budget)) in teams {
        if projected >= budget as f64 {
            binding += 1;
            eprintln!(
                "warning: team {team}: about {projected:.0} series at {scale} events over its families, over its series budget {budget} (new label sets would go to their families' overflow series; totals stay exact)"
            );
        }
    }
    Ok(binding)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 9: past the exact bound, label sets are counted by the sketch: a sample of 60,000
    /// distinct paths counted exactly only up to 1,000 still says about 60,000, and projects
    /// an all-distinct label to the scale asked.
    #[test]
    fn issue9_distinct_label_sets_past_the_exact_bound_are_sketched() {
        let rules = "team: t\nrules:\n  - name: r\n    format: json\n    metrics:\n      - {name: hits_total, type: counter, labels: {path: path}}\n      - {name: codes_total, type: counter, labels: {code: code}}\n";
        let (program, diags) = logmill::rules::compile(&[logmill::rules::SourceFile {
            name: "t.yaml".into(),
            text: rules.into(),
        }]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let lines: Vec<String> = (0..60_000)
            .map(|i| format!(r#"{{"path":"/item/{i}","code":"{}"}}"#, 200 + i % 3))
            .collect();
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let e = estimate_with(program, &lines, 600_000, 1_000);
        let hits = e.iter().find(|e| e.family == "hits_total").unwrap();
        let err = (hits.sample as f64 - 60_000.0).abs() / 60_000.0;
        assert!(err < 0.03, "sampled {}", hits.sample);
        assert!(hits.beta > 0.95, "beta {}", hits.beta);
        let err = (hits.projected - 600_000.0).abs() / 600_000.0;
        assert!(err < 0.05, "projected {}", hits.projected);
        let codes = e.iter().find(|e| e.family == "codes_total").unwrap();
        assert_eq!((codes.sample, codes.projected as usize), (3, 3));
    }
}
