//! `logmill test`: rule unit tests in YAML next to the rules, like `promtool test rules`.
//!
//! ```yaml
//! rules: [nginx.yaml]          # default: the rule file with the test file's stem
//! tests:
//!   - name: a 503 is a 5xx
//!     topic: nginx             # optional
//!     input: |
//!       10.0.0.1 - - [10/Mar/2024:12:00:00 +0000] "GET / HTTP/1.1" 503 0 "-" "curl" 0.100
//!     expect:
//!       metrics: |             # every sample of each metric named here, exactly
//!         http_requests_total{code_class="5xx",method="GET"} 1
//!       fates: [keep]          # optional: keep, drop or dead_letter per input line
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::{Aggregates, Version};
use logmill::engine::{Engine, Record};
use logmill::reduce::Fate;
use logmill::rules::compile;
use logmill::rules::yaml::{self, Node};
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

/// Runs every test in `file`; returns (passed, failed) and prints failures.
pub fn run_file(file: &Path) -> Result<(usize, usize)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let root = yaml::parse(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: {}",
            file.display(),
            e.pos.line,
            e.pos.col,
            e.message
        )
    })?;
    let map = root
        .as_map()
        .ok_or_else(|| anyhow!("{}: a test file is a mapping with `tests:`", file.display()))?;
    let get = |k: &str| {
        map.iter()
            .find(|(key, _)| key.as_scalar() == Some(k))
            .map(|(_, v)| v)
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let rule_files: Vec<PathBuf> = match get("rules") {
        Some(n) => scalars(n).into_iter().map(|s| dir.join(s)).collect(),
        None => {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let stem = name
                .trim_end_matches(".test.yaml")
                .trim_end_matches(".test.yml");
            vec![dir.join(format!("{stem}.yaml"))]
        }
    };
    let (sources, mut diags) = logmill::rules::load_paths(&rule_files);
    let (program, more) = compile(&sources);
    diags.extend(more);
    if diags.iter().any(|d| d.is_error()) {
        for d in &diags {
            eprintln!("{d}");
        }
        bail!("{}: its rules do not compile", file.display());
    }
    let program = Arc::new(program);
    let tests = get("tests")
        .and_then(Node::as_seq)
        .ok_or_else(|| anyhow!("{}: missing `tests:` list", file.display()))?;
    let (mut passed, mut failed) = (0, 0);
    for t in tests {
        let name = field(t, "name")
            .and_then(Node::as_scalar)
            .unwrap_or("unnamed")
            .to_string();
        let where_ = format!("{}:{}:{}", file.display(), t.pos.line, t.pos.col);
        match run_test(&program, t) {
            Ok(()) => passed += 1,
            Err(msg) => {
                failed += 1;
                println!("FAIL {where_} {name}\n{msg}");
            }
        }
    }
    Ok((passed, failed))
}

fn field<'a>(n: &'a Node, key: &str) -> Option<&'a Node> {
    n.as_map()?
        .iter()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .map(|(_, v)| v)
}

fn scalars(n: &Node) -> Vec<String> {
    match n.as_seq() {
        Some(items) => items
            .iter()
            .filter_map(|i| i.as_scalar().map(str::to_string))
            .collect(),
        None => n
            .as_scalar()
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
    }
}

fn run_test(program: &Arc<logmill::rules::Program>, t: &Node) -> Result<(), String> {
    let input = field(t, "input")
        .and_then(Node::as_scalar)
        .ok_or("test has no `input`")?;
    let topic = field(t, "topic")
        .and_then(Node::as_scalar)
        .unwrap_or("test");
    let mut engine = Engine::new(Arc::clone(program), InputFormat::Auto, Limits::default());
    let records: Vec<Record> = input
        .lines()
        .enumerate()
        .map(|(i, l)| Record {
            payload: l.as_bytes(),
            topic,
            version: Version {
                offset: i as u64,
                ..Version::default()
            },
            event_ms: 0,
        })
        .collect();
    let mut fates = Vec::new();
    engine.process(&records, 0, &mut fates);
    let mut global = Aggregates::new(program);
    global.merge_from(&mut engine.local, program, 0);
    let actual = render(program, &global, ExpositionFormat::Text, 0);
    let expect = field(t, "expect").ok_or("test has no `expect`")?;
    let mut problems = String::new();
    if let Some(m) = field(expect, "metrics").and_then(Node::as_scalar) {
        problems.push_str(&diff_samples(m, &actual));
    }
    if let Some(f) = field(expect, "fates") {
        let want = scalars(f);
        let got: Vec<&str> = fates
            .iter()
            .map(|f| match f {
                Fate::Keep => "keep",
                Fate::Drop => "drop",
                Fate::DeadLetter(_) => "dead_letter",
            })
            .collect();
        if want != got {
            problems.push_str(&format!(
                "  fates: expected {want:?}\n          got      {got:?}\n"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// One sample line, normalised: labels sorted, value parsed.
fn parse_sample(line: &str) -> Option<(String, String, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => (&line[..i], &line[i..]),
        None => return None,
    };
    let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
        let mut pairs = Vec::new();
        let mut s = inner;
        loop {
            s = s.trim_start_matches([',', ' ']);
            if let Some(after) = s.strip_prefix('}') {
                s = after;
                break;
            }
            let eq = s.find('=')?;
            let key = s[..eq].trim().to_string();
            let body = s[eq + 1..].trim_start().strip_prefix('"')?;
            let mut end = None;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end?;
            pairs.push(format!("{key}=\"{}\"", &body[..end]));
            s = &body[end + 1..];
        }
        pairs.sort();
        (pairs.join(","), s)
    } else {
        (String::new(), rest)
    };
    let v = value.split_whitespace().next()?;
    let v = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name.to_string(), labels, v))
}

fn show(s: &(String, String, f64)) -> String {
    if s.1.is_empty() {
        format!("{} {}", s.0, s.2)
    } else {
        format!("{}{{{}}} {}", s.0, s.1, s.2)
    }
}

/// For each sample name the expectation mentions, the actual samples must be exactly these.
pub fn diff_samples(expected: &str, actual: &str) -> String {
    let want: Vec<_> = expected.lines().filter_map(parse_sample).collect();
    let got: Vec<_> = actual.lines().filter_map(parse_sample).collect();
    let names: std::collections::BTreeSet<&str> = want.iter().map(|s| s.0.as_str()).collect();
    let close = |a: f64, b: f64| {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
    };
    let mut out = String::new();
    for w in &want {
        if !got
            .iter()
            .any(|g| g.0 == w.0 && g.1 == w.1 && close(g.2, w.2))
        {
            let actual = got.iter().find(|g| g.0 == w.0 && g.1 == w.1);
            match actual {
                Some(a) => out.push_str(&format!("  - {}\n  + {}\n", show(w), show(a))),
                None => out.push_str(&format!("  - {}   (missing)\n", show(w))),
            }
        }
    }
    for g in got.iter().filter(|g| names.contains(g.0.as_str())) {
        if !want.iter().any(|w| w.0 == g.0 && w.1 == g.1) {
            out.push_str(&format!("  + {}   (unexpected)\n", show(g)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_missing_wrong_and_unexpected() {
        let actual = "a{x=\"1\",y=\"2\"} 3\na{x=\"2\"} 1\nb 5\n";
        assert_eq!(
            diff_samples("a{y=\"2\",x=\"1\"} 3\na{x=\"2\"} 1", actual),
            ""
        );
        let d = diff_samples("a{x=\"1\",y=\"2\"} 4\nc 1", actual);
        assert!(
            d.contains("- a{x=\"1\",y=\"2\"} 4") && d.contains("+ a{x=\"1\",y=\"2\"} 3"),
            "{d}"
        );
        assert!(d.contains("+ a{x=\"2\"} 1   (unexpected)"), "{d}");
        assert!(d.contains("- c 1   (missing)"), "{d}");
    }
}
