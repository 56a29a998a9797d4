//! Rule unit test files (`*.test.yaml`): read into tests, every problem a diagnostic.
//!
//! **A test that cannot fail is rejected**: an expectation line that does not parse as a
//! Prometheus sample (`some_metric three`, `m{component=Step_LSC} 7`), a test that expects
//! nothing, or fates that are not `keep`, `drop` or `dead_letter` are errors at their
//! `file:line:col`, and no test of the file runs. `logmill test` runs what this reads;
//! `logmill check` reads a test file it is given with this too.
//!
//! ```yaml
//! rules: [nginx.yaml]          # default: the rule file with the test file's stem
//! tests:
//!   - name: a 503 is a 5xx
//!     topic: nginx             # optional; default `test`
//!     input: |
//!       10.0.0.1 - - [10/Mar/2024:12:00:00 +0000] "GET / HTTP/1.1" 503 0 "-" "curl" 0.100
//!     expect:
//!       metrics: |             # every sample of each sample name written here, exactly
//!         http_requests_total{code_class="5xx",method="GET"} 1
//!       fates: [keep]          # optional: keep, drop or dead_letter per input line, or the
//!                              # reduction that suppressed it: sampled, deduped, throttled,
//!                              # patterned, over_budget
//!       summaries:             # optional: the reduction's summaries, in order, each by the
//!         - {action: dedupe, repeat_count: 2, key: {service: cart}}   # fields it names
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diagnostic::{Code, Diagnostic, Sink};
use super::read::{MapView, scalar, strings};
use super::suggest::did_you_mean;
use super::yaml::{self, Node, Pos};

const FILE_KEYS: &[&str] = &["rules", "tests"];
const TEST_KEYS: &[&str] = &["name", "topic", "input", "expect"];
const EXPECT_KEYS: &[&str] = &["metrics", "fates", "summaries"];
pub const FATES: &[&str] = &[
    "keep",
    "drop",
    "dead_letter",
    "sampled",
    "deduped",
    "throttled",
    "patterned",
    "over_budget",
];
/// What an expected summary may name; see `reduce::Summary::field`.
pub const SUMMARY_FIELDS: &[&str] = &[
    "action",
    "rule",
    "key",
    "template",
    "repeat_count",
    "suppressed",
    "kept",
    "first_ms",
    "last_ms",
    "window_start_ms",
    "samples",
];

#[derive(Debug)]
pub struct TestFile {
    /// The rule files the tests run, resolved against the test file's directory.
    pub rules: Vec<PathBuf>,
    pub tests: Vec<TestCase>,
}

#[derive(Debug)]
pub struct TestCase {
    pub name: String,
    pub pos: Pos,
    pub topic: String,
    pub input: Vec<String>,
    /// Expected samples; only the sample names they mention are compared.
    pub metrics: Option<Vec<Sample>>,
    pub fates: Option<Vec<String>>,
    /// Expected reduction summaries, in order: each the fields it names, as text.
    pub summaries: Option<Vec<ExpectedSummary>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedSummary {
    pub pos: Pos,
    /// `(field, value)`, the key's pairs as `key.<name>`.
    pub fields: Vec<(String, String)>,
}

/// One sample line: labels sorted and unescaped, the value parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Where it was written (expectations), or nowhere (actual output).
    pub pos: Option<Pos>,
}

impl Sample {
    /// Same name and labels, where a label with an empty value is the same as no label (as
    /// in Prometheus): `m{user=""}` is `m`.
    pub fn same_series(&self, other: &Sample) -> bool {
        let set = |s: &'_ Sample| -> Vec<(String, String)> {
            s.labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect()
        };
        self.name == other.name && set(self) == set(other)
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                write!(f, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" })?;
            }
            f.write_str("}")?;
        }
        write!(f, " {}", crate::sink::exposition::float(self.value))
    }
}

/// Why a sample line does not parse: where in the line (characters), what, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleError {
    pub col: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Parses one line of the Prometheus text format's samples. `Ok(None)` for blank lines and
/// comments. Strict: label values quoted, a value that is a number, nothing after it.
pub fn parse_sample(line: &str) -> Result<Option<Sample>, SampleError> {
    let mut p = Cursor { s: line, at: 0 };
    p.spaces();
    if p.rest().is_empty() || p.rest().starts_with('#') {
        return Ok(None);
    }
    let name = p.ident(true);
    if name.is_empty() {
        return Err(p.error("expected a metric name", None));
    }
    let mut labels: Vec<(String, String)> = Vec::new();
    if p.eat('{') {
        loop {
            p.spaces();
            if p.eat('}') {
                break;
            }
            let start = p.at;
            let label = p.ident(false);
            if label.is_empty() {
                return Err(p.error("expected a label name or `}`", None));
            }
            if labels.iter().any(|(l, _)| l == label) {
                return Err(SampleError {
                    col: p.col(start),
                    message: format!("label `{label}` is written twice"),
                    hint: None,
                });
            }
            p.spaces();
            if !p.eat('=') {
                return Err(p.error(format!("expected `=` after label `{label}`"), None));
            }
            p.spaces();
            if !p.eat('"') {
                let bare: String = p
                    .rest()
                    .chars()
                    .take_while(|c| !matches!(c, ',' | '}' | ' '))
                    .collect();
                return Err(p.error(
                    format!("the value of label `{label}` must be quoted"),
                    Some(format!("write `{label}=\"{bare}\"`")),
                ));
            }
            let mut value = String::new();
            loop {
                match p.next() {
                    None => {
                        return Err(p.error(
                            format!("the value of label `{label}` has no closing `\"`"),
                            None,
                        ));
                    }
                    Some('"') => break,
                    Some('\\') => match p.next() {
                        Some('n') => value.push('\n'),
                        Some(c @ ('\\' | '"')) => value.push(c),
                        _ => {
                            return Err(p.error(
                                "unknown escape in a label value",
                                Some("label values escape only `\\\\`, `\\\"` and `\\n`".into()),
                            ));
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
            labels.push((label.to_string(), value));
            p.spaces();
            if p.eat(',') {
                continue;
            }
            if p.eat('}') {
                break;
            }
            return Err(p.error("expected `,` or `}` after a label", None));
        }
    }
    let before = p.at;
    p.spaces();
    if p.at == before {
        return Err(p.error(format!("expected a space and a value after `{name}`"), None));
    }
    let start = p.at;
    let token: String = p
        .rest()
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    p.at += token.len();
    let value = match token.as_str() {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        t => match crate::extract::value::Decimal::parse(t) {
            Some(d) => d.to_f64(),
            None => {
                return Err(SampleError {
                    col: p.col(start),
                    message: if t.is_empty() {
                        format!("expected a value after `{name}`")
                    } else {
                        format!("expected a number as the value of `{name}`, found `{t}`")
                    },
                    hint: Some("values are numbers, `+Inf`, `-Inf` or `NaN`".into()),
                });
            }
        },
    };
    p.spaces();
    if !p.rest().is_empty() {
        return Err(p.error(
            format!("unexpected `{}` after the value", p.rest().trim_end()),
            Some("expectations have no timestamps: write `name{labels} value`".into()),
        ));
    }
    labels.sort();
    Ok(Some(Sample {
        name: name.to_string(),
        labels,
        value,
        pos: None,
    }))
}

struct Cursor<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }
    fn col(&self, byte: usize) -> usize {
        self.s[..byte].chars().count()
    }
    fn spaces(&mut self) {
        let r = self.rest();
        self.at += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }
    fn next(&mut self) -> Option<char> {
        let c = self.rest().chars().next()?;
        self.at += c.len_utf8();
        Some(c)
    }
    /// A metric name (`colon`) or a label name.
    fn ident(&mut self, colon: bool) -> &'a str {
        let r = self.rest();
        let len = r
            .char_indices()
            .take_while(|(i, c)| {
                c.is_ascii_alphabetic()
                    || *c == '_'
                    || (colon && *c == ':')
                    || (*i > 0 && c.is_ascii_digit())
            })
            .count();
        self.at += len;
        &r[..len]
    }
    fn error(&self, message: impl Into<String>, hint: Option<String>) -> SampleError {
        SampleError {
            col: self.col(self.at),
            message: message.into(),
            hint,
        }
    }
}

/// Reads a test file. `None` when it has errors (every one is in the diagnostics): a file
/// with a broken test runs none of them.
pub fn read(name: Arc<str>, text: &str, dir: &Path) -> (Option<TestFile>, Vec<Diagnostic>) {
    let mut sink = Sink::new(name.clone());
    let file = match yaml::parse(text) {
        Ok(root) => read_root(&root, &name, dir, &mut sink),
        Err(e) => {
            super::compile::yaml_error(&e, text, &mut sink);
            None
        }
    };
    let file = file.filter(|_| !sink.has_errors());
    (file, sink.diags)
}

fn read_root(root: &Node, name: &str, dir: &Path, sink: &mut Sink) -> Option<TestFile> {
    let mut top = MapView::new(root, "a test file", sink)?;
    let rules = match top.get("rules") {
        Some(n) => strings(n, "`rules`", sink)
            .into_iter()
            .map(|(s, _)| dir.join(s))
            .collect(),
        None => {
            let base = Path::new(name)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let stem = base
                .trim_end_matches(".yaml")
                .trim_end_matches(".yml")
                .trim_end_matches(".test");
            vec![dir.join(format!("{stem}.yaml"))]
        }
    };
    let tests_node = top.get("tests");
    top.finish(FILE_KEYS, "a test file", sink);
    let Some(tests_node) = tests_node else {
        sink.error(root.pos, Code::MissingKey, "missing `tests`")
            .hint("a test file has `tests:`, a list of tests with `input` and `expect`");
        return None;
    };
    let Some(items) = tests_node.as_seq() else {
        sink.error(
            tests_node.pos,
            Code::WrongType,
            format!("`tests` must be a list, found {}", tests_node.describe()),
        );
        return None;
    };
    let tests = items.iter().filter_map(|t| test(t, sink)).collect();
    Some(TestFile { rules, tests })
}

fn test(node: &Node, sink: &mut Sink) -> Option<TestCase> {
    let mut m = MapView::new(node, "a test", sink)?;
    let name = m
        .get("name")
        .and_then(|n| scalar(n, "`name`", sink))
        .unwrap_or_else(|| "unnamed".to_string());
    let topic = m
        .get("topic")
        .and_then(|n| scalar(n, "`topic`", sink))
        .unwrap_or_else(|| "test".to_string());
    let input = match m.get("input") {
        Some(n) if n.as_seq().is_some() => strings(n, "an input line", sink)
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
        Some(n) => scalar(n, "`input`", sink)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        None => {
            sink.error(node.pos, Code::MissingKey, "test has no `input`")
                .hint("add `input: |` with the log lines, one per line");
            Vec::new()
        }
    };
    let expect_node = m.get("expect");
    m.finish(TEST_KEYS, "a test", sink);
    let Some(expect_node) = expect_node else {
        sink.error(node.pos, Code::MissingKey, "test has no `expect`")
            .hint("add `expect:` with `metrics` and/or `fates`: a test that expects nothing cannot fail");
        return None;
    };
    let mut e = MapView::new(expect_node, "`expect`", sink)?;
    let metrics_node = e.get("metrics");
    let fates_node = e.get("fates");
    let summaries_node = e.get("summaries");
    e.finish(EXPECT_KEYS, "`expect`", sink);
    let summaries = summaries_node.map(|n| summaries(n, sink));
    let metrics = metrics_node.and_then(|n| samples(n, sink));
    let fates = fates_node.map(|n| {
        let fates: Vec<(String, Pos)> = strings(n, "a fate", sink);
        for (f, pos) in &fates {
            if !FATES.contains(&f.as_str()) {
                sink.error(*pos, Code::UnknownVariant, format!("unknown fate `{f}`"))
                    .hint(did_you_mean(f, FATES));
            }
        }
        if fates.len() != input.len() {
            sink.error(
                n.pos,
                Code::BadExpectation,
                format!("{} fate(s) for {} input line(s)", fates.len(), input.len()),
            )
            .hint("give one fate per input line, in order");
        }
        fates.into_iter().map(|(f, _)| f).collect()
    });
    if metrics_node.is_none() && fates_node.is_none() && summaries_node.is_none() {
        sink.error(expect_node.pos, Code::BadExpectation, "`expect` expects nothing")
            .hint("add `metrics: |` with samples and/or `fates: [...]`: a test that expects nothing cannot fail");
    }
    Some(TestCase {
        name,
        pos: node.pos,
        topic,
        input,
        metrics,
        fates,
        summaries,
    })
}

fn summaries(node: &Node, sink: &mut Sink) -> Vec<ExpectedSummary> {
    let Some(items) = node.as_seq() else {
        sink.error(
            node.pos,
            Code::WrongType,
            format!("`summaries` must be a list, found {}", node.describe()),
        )
        .hint("e.g. `summaries: [{action: dedupe, repeat_count: 2}]`");
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(mut m) = MapView::new(item, "a summary", sink) else {
            continue;
        };
        let mut fields = Vec::new();
        for (k, v) in m.entries {
            let Some(name) = k.as_scalar() else {
                continue;
            };
            if !SUMMARY_FIELDS.contains(&name) {
                sink.error(
                    k.pos,
                    Code::UnknownKey,
                    format!("a summary has no field `{name}`"),
                )
                .hint(did_you_mean(name, SUMMARY_FIELDS));
                continue;
            }
            if name == "key" {
                if let Some(mut km) = MapView::new(v, "`key`", sink) {
                    for (kk, kv) in km.entries {
                        if let (Some(kk), Some(kv)) =
                            (kk.as_scalar(), scalar(kv, "a key value", sink))
                        {
                            fields.push((format!("key.{kk}"), kv));
                        }
                    }
                    km.accept_all();
                    km.finish(&[], "`key`", sink);
                }
            } else if let Some(value) = scalar(v, "a summary field", sink) {
                fields.push((name.to_string(), value));
            }
        }
        m.accept_all();
        m.finish(&[], "a summary", sink);
        if fields.is_empty() {
            sink.error(
                item.pos,
                Code::BadExpectation,
                "a summary that names nothing matches any",
            )
            .hint("name at least `action`");
        }
        out.push(ExpectedSummary {
            pos: item.pos,
            fields,
        });
    }
    out
}

fn samples(node: &Node, sink: &mut Sink) -> Option<Vec<Sample>> {
    let text = scalar(node, "`metrics`", sink)?;
    let mut out: Vec<Sample> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_sample(line) {
            Ok(None) => {}
            Ok(Some(mut s)) => {
                let pos = node.pos_in_text(i, line.len() - line.trim_start().len());
                if let Some(first) = out.iter().find(|o| o.same_series(&s)) {
                    sink.error(
                        pos,
                        Code::BadExpectation,
                        format!("`{}` is expected twice", s.name),
                    )
                    .hint(format!(
                        "the first expectation of this series is at line {}",
                        first.pos.map_or(0, |p| p.line)
                    ));
                }
                s.pos = Some(pos);
                out.push(s);
            }
            Err(e) => {
                sink.error(
                    node.pos_in_text(i, e.col),
                    Code::BadExpectation,
                    format!("invalid expected sample: {}", e.message),
                )
                .maybe_hint(e.hint);
            }
        }
    }
    if out.is_empty() {
        sink.error(node.pos, Code::BadExpectation, "`metrics` lists no sample")
            .hint("write samples as `name{label=\"value\"} 1`, one per line");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> SampleError {
        parse_sample(line).unwrap_err()
    }

    /// Issue 9: expectations that do not parse were skipped, so the test passed; each is an
    /// error at its column.
    #[test]
    fn issue9_unparseable_expectations_are_errors() {
        let e = err("some_metric three");
        assert_eq!(e.col, 12);
        assert!(e.message.contains("found `three`"), "{e:?}");
        let e = err("m{component=Step_LSC} 7");
        assert_eq!(e.col, 12);
        assert_eq!(e.hint.as_deref(), Some("write `component=\"Step_LSC\"`"));
        for bad in [
            "m{a=\"1\"",
            "m{a=\"1} 2",
            "m{a=\"1\",a=\"2\"} 1",
            "m 1 1700000000",
            "m{=\"x\"} 1",
            "m",
            "m{a=\"1\"}1",
            "3m 1",
        ] {
            assert!(parse_sample(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_parse_and_normalise() {
        let s = parse_sample(" m{b=\"2\", a=\"x\\\"y\",} 1.5")
            .unwrap()
            .unwrap();
        assert_eq!(s.name, "m");
        assert_eq!(
            s.labels,
            vec![("a".into(), "x\"y".into()), ("b".into(), "2".into())]
        );
        assert_eq!(s.value, 1.5);
        assert_eq!(s.to_string(), "m{a=\"x\\\"y\",b=\"2\"} 1.5");
        assert_eq!(parse_sample("# HELP m x").unwrap(), None);
        assert_eq!(parse_sample("   ").unwrap(), None);
        assert_eq!(
            parse_sample("m_bucket{le=\"+Inf\"} +Inf")
                .unwrap()
                .unwrap()
                .value,
            f64::INFINITY
        );
    }

    #[test]
    fn errors_point_into_the_file() {
        let text = "tests:\n  - name: t\n    input: |\n      a\n    expected:\n      metrics: |\n        m 1\n  - name: u\n    input: a\n    expect:\n      metrics: |\n        ok_total 1\n        some_metric three\n      fates: [keep, dorp]\n";
        let (file, diags) = read("f.test.yaml".into(), text, Path::new("."));
        assert!(file.is_none());
        let shown: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        let all = shown.join("\n");
        assert!(
            all.contains("f.test.yaml:5:5: error[unknown-key]: unknown key `expected` in a test\n  hint: did you mean `expect`?"),
            "{all}"
        );
        assert!(
            all.contains("f.test.yaml:13:21: error[bad-expectation]: invalid expected sample: expected a number as the value of `some_metric`, found `three`"),
            "{all}"
        );
        assert!(
            all.contains(
                "error[unknown-variant]: unknown fate `dorp`\n  hint: did you mean `drop`?"
            ),
            "{all}"
        );
        assert!(all.contains("2 fate(s) for 1 input line(s)"), "{all}");
    }
}
