//! `logmill test`: rule unit tests in YAML next to the rules, like `promtool test rules`.
//! The file format and its checks are in `logmill::rules::testfile`; this runs the tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logmill::engine::Counters;
use logmill::reduce::Summary;
use logmill::rules::testfile::{self, ExpectedSummary, Sample, TestCase, parse_sample};
use logmill::rules::{Program, compile};
use logmill::sink::exposition::{ExpositionFormat, render};

/// Finds test files: given files as they are, directories' `*.test.yaml` files.
pub fn find(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| logmill::rules::compile::is_test_file(p))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs every test in `file`; returns (passed, failed) and prints failures. A file with an
/// error (in itself or in its rules) runs nothing and is an `Err`.
pub fn run_file(file: &Path) -> Result<(usize, usize)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let (spec, diags) = testfile::read(file.display().to_string().into(), &text, dir);
    for d in &diags {
        eprintln!("{d}");
    }
    let Some(spec) = spec else {
        bail!(
            "{}: the test file has errors; none of its tests ran",
            file.display()
        );
    };
    let (sources, mut diags) = logmill::rules::load_paths(&spec.rules);
    let (program, more) = compile(&sources);
    diags.extend(more);
    if diags.iter().any(|d| d.is_error()) {
        for d in diags.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        bail!("{}: its rules do not compile", file.display());
    }
    let program = Arc::new(program);
    let mut errors = Vec::new();
    for t in &spec.tests {
        for s in t.metrics.iter().flatten() {
            if let Some(msg) = unknown_sample(&program, s) {
                let pos = s.pos.unwrap_or(t.pos);
                errors.push(format!(
                    "{}:{}:{}: error[bad-expectation]: {msg}",
                    file.display(),
                    pos.line,
                    pos.col
                ));
            }
        }
    }
    if !errors.is_empty() {
        errors.iter().for_each(|e| eprintln!("{e}"));
        bail!(
            "{}: expectations name metrics the rules do not define",
            file.display()
        );
    }
    let (mut passed, mut failed) = (0, 0);
    let mut counters = Counters::default();
    for t in &spec.tests {
        let where_ = format!("{}:{}:{}", file.display(), t.pos.line, t.pos.col);
        match run_test(&program, t, &mut counters) {
            Ok(()) => passed += 1,
            Err(msg) => {
                failed += 1;
                println!("FAIL {where_} {}\n{msg}", t.name);
            }
        }
    }
    for note in logmill::report::rule_notes(&program, &counters, "test input") {
        println!("{}: {note}", file.display());
    }
    Ok((passed, failed))
}

/// Says why an expected sample can never be produced: its name is no sample of any family.
fn unknown_sample(program: &Program, s: &Sample) -> Option<String> {
    let names: Vec<String> = program
        .families
        .iter()
        .flat_map(|f| {
            let base = f.name.clone();
            let suffixes: &[&str] = match f.kind {
                logmill::rules::program::MetricKind::Histogram => &["_bucket", "_sum", "_count"],
                logmill::rules::program::MetricKind::Summary => &["", "_sum", "_count"],
                _ => &[""],
            };
            suffixes
                .iter()
                .map(move |x| format!("{base}{x}"))
                .collect::<Vec<_>>()
        })
        .collect();
    if names.contains(&s.name) {
        return None;
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hint = logmill::rules::suggest::closest(&s.name, refs.iter().copied())
        .map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
    Some(format!(
        "`{}` is not a sample of any metric these rules define{hint}",
        s.name
    ))
}

fn run_test(program: &Arc<Program>, t: &TestCase, total: &mut Counters) -> Result<(), String> {
    let lines: Vec<&[u8]> = t.input.iter().map(|l| l.as_bytes()).collect();
    let e = super::evaluate::evaluate(program, &t.topic, &lines, false);
    total.absorb(&e.engine.counters);
    let (global, summaries) = (e.aggregates, e.summaries);
    let actual = render(program, &global, ExpositionFormat::Text, 0);
    let mut problems = String::new();
    if let Some(want) = &t.metrics {
        problems.push_str(&diff_samples(want, &actual));
    }
    if let Some(want) = &t.fates {
        let got = &e.outcomes;
        if want != got {
            problems.push_str(&format!(
                "  fates: expected {want:?}\n          got      {got:?}\n"
            ));
        }
    }
    if let Some(want) = &t.summaries {
        problems.push_str(&diff_summaries(want, &summaries));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The summaries, in order, each with the fields its expectation names.
fn diff_summaries(want: &[ExpectedSummary], got: &[Summary]) -> String {
    let mut out = String::new();
    let json = |s: &Summary| {
        let mut j = String::new();
        s.json(&mut j);
        j.trim_end().to_string()
    };
    for (i, w) in want.iter().enumerate() {
        let Some(g) = got.get(i) else {
            out.push_str(&format!(
                "  - summary {} (line {}) missing\n",
                i + 1,
                w.pos.line
            ));
            continue;
        };
        let wrong: Vec<String> = w
            .fields
            .iter()
            .filter(|(k, v)| g.field(k).as_deref() != Some(v.as_str()))
            .map(|(k, v)| {
                format!(
                    "{k}: expected {v}, got {}",
                    g.field(k).unwrap_or_else(|| "nothing".into())
                )
            })
            .collect();
        if !wrong.is_empty() {
            out.push_str(&format!(
                "  summary {} (line {}): {}\n    {}\n",
                i + 1,
                w.pos.line,
                wrong.join("; "),
                json(g)
            ));
        }
    }
    for g in got.iter().skip(want.len()) {
        out.push_str(&format!("  + {}   (unexpected)\n", json(g)));
    }
    out
}

/// For each sample name the expectation mentions, the actual samples of that name must be
/// exactly these; names it does not mention are not compared.
pub fn diff_samples(want: &[Sample], actual: &str) -> String {
    let got: Vec<Sample> = actual
        .lines()
        .filter_map(|l| parse_sample(l).expect("the exposition is valid"))
        .collect();
    let names: std::collections::BTreeSet<&str> = want.iter().map(|s| s.name.as_str()).collect();
    // Values are rendered with the shortest round-trip text, so a relative 1e-9 only forgives
    // sums that differ in their last bits.
    let close = |a: f64, b: f64| {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
    };
    let mut out = String::new();
    for w in want {
        if !got
            .iter()
            .any(|g| g.same_series(w) && close(g.value, w.value))
        {
            match got.iter().find(|g| g.same_series(w)) {
                Some(a) => out.push_str(&format!("  - {w}\n  + {a}\n")),
                None => out.push_str(&format!("  - {w}   (missing)\n")),
            }
        }
    }
    for g in got.iter().filter(|g| names.contains(g.name.as_str())) {
        if !want.iter().any(|w| w.same_series(g)) {
            out.push_str(&format!("  + {g}   (unexpected)\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter_map(|l| parse_sample(l).unwrap())
            .collect()
    }

    #[test]
    fn diff_reports_missing_wrong_and_unexpected() {
        let actual = "a{x=\"1\",y=\"2\"} 3\na{x=\"2\"} 1\nb 5\n";
        assert_eq!(
            diff_samples(&samples("a{y=\"2\",x=\"1\"} 3\na{x=\"2\"} 1"), actual),
            ""
        );
        let d = diff_samples(&samples("a{x=\"1\",y=\"2\"} 4\nc 1"), actual);
        assert!(
            d.contains("- a{x=\"1\",y=\"2\"} 4") && d.contains("+ a{x=\"1\",y=\"2\"} 3"),
            "{d}"
        );
        assert!(d.contains("+ a{x=\"2\"} 1   (unexpected)"), "{d}");
        assert!(d.contains("- c 1   (missing)"), "{d}");
    }
}
