//! `logmill shadow`: a candidate rule set against the live one over the same sample files,
//! before it ships (`derive::shadow` compares; the service makes the same report from its
//! stream at `/-/shadow`). Promotion is moving the files; nothing here writes any.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use logmill::derive::shadow::{Evaluation, Outcomes, Report, Side};
use logmill::rules::Program;

use super::evaluate::{evaluate, events};

pub struct Options {
    pub inputs: Vec<PathBuf>,
    /// The topic every input is read as; by default its path.
    pub topic: Option<String>,
    pub json: bool,
    /// Series listed per family and outcome change; the rest are counted.
    pub show: usize,
}

/// One side over every input: its series and rules, and each event's outcome in order with
/// the event (a line, or an event of a line that held many).
fn side(
    program: &Arc<Program>,
    inputs: &[(String, Vec<u8>)],
) -> (Side, Vec<(&'static str, Vec<u8>)>) {
    let mut whole = Evaluation::new(Arc::clone(program));
    let mut outcomes = Vec::new();
    for (topic, bytes) in inputs {
        let lines: Vec<&[u8]> = events(bytes).collect();
        let mut e = evaluate(program, topic, &lines, true);
        let texts = e
            .split
            .take()
            .unwrap_or_else(|| lines.iter().map(|l| l.to_vec()).collect());
        whole.aggs.merge_from(&mut e.aggregates, program, 0);
        for i in 0..program.rules.len() {
            whole.matches[i] += e.engine.counters.rule_matches[i];
            whole.nanos[i] += e.engine.rule_nanos[i];
        }
        outcomes.extend(e.outcomes.into_iter().zip(texts));
    }
    (Side::new(&whole), outcomes)
}

/// Prints the report; `true` when the candidate changes anything.
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
    let (a, live_outcomes) = side(&live, &inputs);
    let (b, candidate_outcomes) = side(&candidate, &inputs);
    let mut outcomes = Outcomes::default();
    for ((x, line), (y, _)) in live_outcomes.iter().zip(&candidate_outcomes) {
        outcomes.add(x, y, line, opts.show);
    }
    let report = Report::new(a, b, outcomes);
    let out = if opts.json {
        report.json(opts.show)
    } else {
        report.text(opts.show)
    };
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(report.differs())
}
