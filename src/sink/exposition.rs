//! Prometheus text format 0.0.4 and OpenMetrics 1.0 from the registry.
//!
//! Output is sorted (families by name, series by label values) so that it is stable for tests
//! and diffs; `promtool check metrics` accepts it (checked in the test suite).

use std::fmt::Write;

use crate::derive::exemplar::Exemplar;
use crate::derive::{Aggregates, Value, key_values};
use crate::rules::program::{Family, MetricKind, Program};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    Text,
    OpenMetrics,
}

impl ExpositionFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ExpositionFormat::Text => "text/plain; version=0.0.4; charset=utf-8",
            ExpositionFormat::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }

    /// Picks the format a scrape's `Accept` header asks for.
    pub fn from_accept(accept: &str) -> ExpositionFormat {
        if accept.contains("application/openmetrics-text") {
            ExpositionFormat::OpenMetrics
        } else {
            ExpositionFormat::Text
        }
    }
}

pub fn render(
    program: &Program,
    aggs: &Aggregates,
    format: ExpositionFormat,
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let mut order: Vec<usize> = (0..program.families.len()).collect();
    order.sort_by(|a, b| program.families[*a].name.cmp(&program.families[*b].name));
    for fid in order {
        let family = &program.families[fid];
        let Some(state) = aggs.families.get(fid) else {
            continue;
        };
        if state.series.is_empty() {
            continue;
        }
        let om = format == ExpositionFormat::OpenMetrics;
        let base = if om && family.kind == MetricKind::Counter {
            family.name.strip_suffix("_total").unwrap_or(&family.name)
        } else {
            &family.name
        };
        let _ = writeln!(out, "# HELP {base} {}", escape_help(&family.help, om));
        let _ = writeln!(out, "# TYPE {base} {}", family.kind.as_str());
        if let (true, Some(unit)) = (om, &family.unit) {
            let _ = writeln!(out, "# UNIT {base} {unit}");
        }
        let mut series: Vec<(Vec<&str>, &crate::derive::Series)> = state
            .series
            .iter()
            // Keys are well formed by construction and checked when restored; a key that is not
            // is left out rather than rendered wrong.
            .filter_map(|(k, s)| Some((key_values(k)?, s)))
            .filter(|(values, _)| values.len() == family.label_names.len())
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        for (values, s) in series {
            let value = &s.value;
            // Exemplars exist in OpenMetrics only; the text format has no place for them.
            let exemplar = |i: usize| -> Option<&Exemplar> {
                if !om {
                    return None;
                }
                s.exemplars.as_ref()?.get(i)?.as_ref()
            };
            let labels = labels(family, &values);
            match value {
                Value::Counter(c) => {
                    let name = if om {
                        format!("{base}_total")
                    } else {
                        family.name.clone()
                    };
                    sample_with(&mut out, &name, &labels, None, *c, exemplar(0));
                }
                Value::Gauge { value, .. } => sample(&mut out, base, &labels, None, *value),
                Value::Histogram { counts, sum, count } => {
                    let mut cumulative = 0;
                    for (i, n) in counts.iter().enumerate() {
                        cumulative += n;
                        let le = family
                            .buckets
                            .get(i)
                            .map_or("+Inf".to_string(), |b| float(*b));
                        sample_with(
                            &mut out,
                            &format!("{base}_bucket"),
                            &labels,
                            Some(("le", &le)),
                            cumulative as f64,
                            exemplar(i),
                        );
                    }
                    sample(&mut out, &format!("{base}_sum"), &labels, None, *sum);
                    sample(
                        &mut out,
                        &format!("{base}_count"),
                        &labels,
                        None,
                        *count as f64,
                    );
                }
                Value::Summary(s) => {
                    for (q, v) in family
                        .quantiles
                        .iter()
                        .zip(s.quantiles(&family.quantiles, now_ms))
                    {
                        sample(&mut out, base, &labels, Some(("quantile", &float(*q))), v);
                    }
                    sample(&mut out, &format!("{base}_sum"), &labels, None, s.sum);
                    sample(
                        &mut out,
                        &format!("{base}_count"),
                        &labels,
                        None,
                        s.count as f64,
                    );
                }
            }
        }
    }
    if format == ExpositionFormat::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

fn labels(family: &Family, values: &[&str]) -> String {
    let mut s = String::new();
    // Every label, empty ones included: every series of a family carries the same label
    // names, so a family never mixes `{service="sshd"}` and `{service="sshd",user="root"}`.
    for (name, value) in family.label_names.iter().zip(values) {
        if !s.is_empty() {
            s.push(',');
        }
        let _ = write!(s, "{name}=\"{}\"", escape_label(value));
    }
    s
}

fn sample(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>, value: f64) {
    sample_with(out, name, labels, extra, value, None);
}

/// A sample line, with its exemplar when it has one: `# {trace_id="…",span_id="…"} value
/// timestamp`, the timestamp being the event's time in seconds.
fn sample_with(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: f64,
    exemplar: Option<&Exemplar>,
) {
    out.push_str(name);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some((k, v)) = extra {
            if !labels.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&float(value));
    if let Some(e) = exemplar {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\"",
            escape_label(&e.trace.to_string())
        );
        if let Some(span) = e.span {
            let _ = write!(out, ",span_id=\"{span}\"");
        }
        let ms = e.ms;
        let _ = write!(out, "}} {} {}.{:03}", float(e.value), ms / 1000, ms % 1000);
    }
    out.push('\n');
}

pub fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str, om: bool) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if om => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\n\"z\"", false), "x\\\\y\\n\"z\"");
        assert_eq!(escape_help("\"z\"", true), "\\\"z\\\"");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(f64::INFINITY), "+Inf");
    }
}
