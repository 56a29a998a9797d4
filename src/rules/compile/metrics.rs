//! The `metrics` section: families (name, type, help, unit), labels, the value and its
//! scale, histogram buckets and summary settings, and conflicts between definitions of one
//! family.

use std::sync::Arc;
use std::time::Duration;

use super::{Builder, Defaults, RuleCx, RuleScope, Section, check_name, valid_metric_name};
use crate::extract::value::Decimal;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::grok;
use crate::rules::program::*;
use crate::rules::read::{MapView, duration, limit, scalar};
use crate::rules::suggest::did_you_mean;
use crate::rules::yaml::{Node, Pos};

pub(super) const SECTION: Section = Section {
    keys: &["metrics"],
    compile: section,
};

const METRIC_KEYS: &[&str] = &[
    "name",
    "type",
    "help",
    "unit",
    "value",
    "op",
    "labels",
    "static_labels",
    "buckets",
    "quantiles",
    "max_age",
    "age_buckets",
    "max_series",
    "expire_after",
    "scale",
];

/// A family as the rules define it so far, with where it was first defined.
pub(super) struct FamilyEntry {
    pub(super) family: Family,
    origin: String,
    /// `Some(true)` once a rule sets the gauge, `Some(false)` once one adds to it.
    gauge_sets: Option<bool>,
}

fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    let Some(ms) = m.get("metrics") else {
        return;
    };
    cx.has_effect = true;
    match ms.as_seq() {
        Some(items) => {
            for item in items {
                if let Some(u) = b.metric(
                    item,
                    cx.team,
                    cx.name.as_deref().unwrap_or("?"),
                    &cx.defaults,
                    &cx.scope,
                    sink,
                ) {
                    cx.updates.push(u);
                }
            }
        }
        None => {
            sink.error(
                ms.pos,
                Code::WrongType,
                format!("`metrics` must be a list, found {}", ms.describe()),
            );
        }
    }
}

impl Builder {
    fn metric(
        &mut self,
        node: &Node,
        team: &str,
        rule: &str,
        defaults: &Defaults,
        scope: &RuleScope,
        sink: &mut Sink,
    ) -> Option<Update> {
        let errors_before = sink.diags.iter().filter(|d| d.is_error()).count();
        let mut m = MapView::new(node, "a metric", sink)?;
        let kind = match m.get("type") {
            Some(n) => match scalar(n, "`type`", sink).as_deref() {
                Some("counter") => Some(MetricKind::Counter),
                Some("gauge") => Some(MetricKind::Gauge),
                Some("histogram") => Some(MetricKind::Histogram),
                Some("summary") => Some(MetricKind::Summary),
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown metric type `{other}`"),
                    )
                    .hint(did_you_mean(
                        other,
                        &["counter", "gauge", "histogram", "summary"],
                    ));
                    None
                }
                None => None,
            },
            None => {
                sink.error(node.pos, Code::MissingKey, "metric has no `type`")
                    .hint("add `type: counter`, `gauge`, `histogram` or `summary`");
                None
            }
        };
        let name_node = m.get("name");
        let name = match name_node {
            Some(n) => scalar(n, "`name`", sink).filter(|s| {
                check_name(
                    s,
                    n.pos,
                    "metric name",
                    sink,
                    valid_metric_name,
                    "[a-zA-Z_:][a-zA-Z0-9_:]*",
                )
            }),
            None => {
                sink.error(node.pos, Code::MissingKey, "metric has no `name`");
                None
            }
        };
        let help = m
            .get("help")
            .and_then(|n| scalar(n, "`help`", sink))
            .unwrap_or_else(|| format!("Derived by logmill rule {team}/{rule}."));
        let unit = m.get("unit").and_then(|n| {
            let u = scalar(n, "`unit`", sink)?;
            if let (Some(name), Some(kind)) = (&name, kind) {
                let base = if kind == MetricKind::Counter {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                if !base.ends_with(&format!("_{u}")) {
                    let suggestion = if kind == MetricKind::Counter {
                        format!("{base}_{u}_total")
                    } else {
                        format!("{base}_{u}")
                    };
                    sink.error(
                        n.pos,
                        Code::UnitMismatch,
                        format!(
                            "metric `{name}` has unit `{u}` but its name does not end in `_{u}`"
                        ),
                    )
                    .hint(format!(
                        "OpenMetrics requires the unit as a suffix: name it `{suggestion}`"
                    ));
                }
            }
            Some(u)
        });
        let op = match (kind, m.get("op")) {
            (Some(MetricKind::Gauge), Some(n)) => match scalar(n, "`op`", sink).as_deref() {
                Some("set") => Some(Op::GaugeSet),
                Some("add") | Some("inc") => Some(Op::GaugeAdd),
                Some("sub") | Some("dec") => Some(Op::GaugeSub),
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("unknown gauge op `{other}`"),
                    )
                    .hint(did_you_mean(other, &["set", "add", "sub", "inc", "dec"]));
                    None
                }
                None => None,
            },
            (Some(_), Some(n)) => {
                sink.error(n.pos, Code::UnknownKey, "`op` applies to gauges only")
                    .hint("counters only add; histograms and summaries observe");
                None
            }
            (Some(MetricKind::Gauge), None) => Some(Op::GaugeSet),
            (Some(MetricKind::Counter), None) => Some(Op::CounterAdd),
            (Some(_), None) => Some(Op::Observe),
            (None, _) => None,
        };
        let value_node = m.get("value");
        let value = match value_node {
            Some(n) => scalar(n, "`value`", sink).and_then(|f| {
                let field = self.field_ref(&f, n.pos, scope, sink)?;
                let ty = scope.types.get(&f).copied().unwrap_or(ValueType::Float);
                Some(ValueSource { field, ty })
            }),
            None => None,
        };
        // Kept as the decimal written, so that values are scaled exactly (see
        // `extract::value`); a scale of 1 is no scale.
        let scale = match m.get("scale") {
            Some(n) => match n
                .as_f64()
                .and(n.as_scalar())
                .and_then(Decimal::parse)
                .filter(|d| !d.is_zero() && d.to_f64().is_finite())
            {
                Some(d) => (d != Decimal::ONE).then_some(d),
                None => {
                    sink.error(n.pos, Code::WrongType, "`scale` must be a non-zero number")
                        .hint("e.g. `scale: 0.001` turns milliseconds into seconds");
                    None
                }
            },
            None => None,
        };
        let needs_value = matches!(kind, Some(MetricKind::Histogram | MetricKind::Summary))
            || op == Some(Op::GaugeSet);
        if needs_value && value_node.is_none() {
            sink.error(
                node.pos,
                Code::MissingKey,
                format!(
                    "{} `{}` needs a `value`",
                    kind.map_or("metric", MetricKind::as_str),
                    name.as_deref().unwrap_or("?")
                ),
            )
            .hint("name the field to observe, e.g. `value: request_time`");
        }

        let mut labels: Vec<(String, LabelSource)> = Vec::new();
        if let Some(mut l) = m
            .get("labels")
            .and_then(|n| MapView::new(n, "`labels`", sink))
        {
            for (k, v) in l.entries {
                let Some(label) = scalar(k, "a label name", sink) else {
                    continue;
                };
                if !self.label_name_ok(&label, k.pos, kind, sink) {
                    continue;
                }
                let source = if v.as_map().is_some() {
                    let Some(mut lm) = MapView::new(v, "a label", sink) else {
                        continue;
                    };
                    let from = lm.get("from");
                    let map_node = lm.get("map");
                    let default = lm.get("default").and_then(|n| scalar(n, "`default`", sink));
                    lm.finish(&["from", "map", "default"], "a label", sink);
                    let Some(from) = from else {
                        sink.error(
                            v.pos,
                            Code::MissingKey,
                            format!("label `{label}` has no `from`"),
                        )
                        .hint("name the field the label comes from");
                        continue;
                    };
                    let Some(fname) = scalar(from, "`from`", sink) else {
                        continue;
                    };
                    let Some(field) = self.field_ref(&fname, from.pos, scope, sink) else {
                        continue;
                    };
                    let map =
                        map_node
                            .and_then(|n| MapView::new(n, "`map`", sink))
                            .map(|mut mm| {
                                let mut vm = ValueMap::default();
                                for (mk, mv) in mm.entries {
                                    let (Some(mk), Some(mv)) =
                                        (mk.as_scalar(), scalar(mv, "a mapped value", sink))
                                    else {
                                        continue;
                                    };
                                    if mk.contains(['*', '?']) {
                                        vm.globs.push((mk.to_string(), mv));
                                    } else {
                                        vm.exact.insert(mk.to_string(), mv);
                                    }
                                }
                                mm.accept_all();
                                mm.finish(&[], "`map`", sink);
                                Arc::new(vm)
                            });
                    LabelSource::Field {
                        field,
                        map,
                        default,
                    }
                } else {
                    let Some(fname) = scalar(v, "a label source", sink) else {
                        continue;
                    };
                    let Some(field) = self.field_ref(&fname, v.pos, scope, sink) else {
                        continue;
                    };
                    LabelSource::Field {
                        field,
                        map: None,
                        default: None,
                    }
                };
                labels.push((label, source));
            }
            l.accept_all();
            l.finish(&[], "`labels`", sink);
        }
        if let Some(mut sl) = m
            .get("static_labels")
            .and_then(|n| MapView::new(n, "`static_labels`", sink))
        {
            for (k, v) in sl.entries {
                let (Some(label), Some(value)) = (
                    scalar(k, "a label name", sink),
                    scalar(v, "a label value", sink),
                ) else {
                    continue;
                };
                if self.label_name_ok(&label, k.pos, kind, sink) {
                    labels.push((label, LabelSource::Static(value)));
                }
            }
            sl.accept_all();
            sl.finish(&[], "`static_labels`", sink);
        }
        if labels.len() > MAX_LABELS {
            sink.error(
                node.pos,
                Code::TooManyLabels,
                format!(
                    "metric has {} labels, over the limit of {MAX_LABELS}",
                    labels.len()
                ),
            )
            .hint("every label multiplies the series count; drop the ones nobody aggregates by");
        }
        let mut seen = std::collections::HashSet::new();
        for (l, _) in &labels {
            if !seen.insert(l.clone()) {
                sink.error(
                    node.pos,
                    Code::InvalidName,
                    format!("label `{l}` is defined twice"),
                );
            }
        }

        let buckets = match (kind, m.get("buckets")) {
            (Some(MetricKind::Histogram), Some(n)) => {
                numbers(n, "`buckets`", sink).and_then(|bs| {
                    for (i, (b, pos)) in bs.iter().enumerate() {
                        if b.is_infinite() {
                            sink.error(*pos, Code::BadBuckets, "`+Inf` bucket is implicit")
                                .hint("remove it: every histogram has a +Inf bucket");
                            return None;
                        }
                        if i > 0 && *b <= bs[i - 1].0 {
                            sink.error(
                                *pos,
                                Code::BadBuckets,
                                format!(
                                    "bucket {b} is not greater than the one before it ({})",
                                    bs[i - 1].0
                                ),
                            )
                            .hint("bucket upper bounds must be strictly increasing");
                            return None;
                        }
                    }
                    if bs.is_empty() {
                        sink.error(n.pos, Code::BadBuckets, "`buckets` is empty")
                            .hint("list upper bounds, or leave `buckets` out for the default ones");
                        return None;
                    }
                    Some(bs.into_iter().map(|(b, _)| b).collect())
                })
            }
            (Some(MetricKind::Histogram), None) => Some(DEFAULT_BUCKETS.to_vec()),
            (Some(_), Some(n)) => {
                sink.error(
                    n.pos,
                    Code::UnknownKey,
                    "`buckets` applies to histograms only",
                );
                None
            }
            _ => None,
        }
        .unwrap_or_default();
        let quantiles = match (kind, m.get("quantiles")) {
            (Some(MetricKind::Summary), Some(n)) => {
                numbers(n, "`quantiles`", sink).and_then(|qs| {
                    for (q, pos) in &qs {
                        if !(0.0..=1.0).contains(q) {
                            sink.error(
                                *pos,
                                Code::BadQuantile,
                                format!("quantile {q} is outside [0, 1]"),
                            )
                            .hint("write quantiles as fractions: 0.99, not 99");
                            return None;
                        }
                    }
                    let mut qs: Vec<f64> = qs.into_iter().map(|(q, _)| q).collect();
                    qs.sort_by(f64::total_cmp);
                    qs.dedup();
                    Some(qs)
                })
            }
            (Some(MetricKind::Summary), None) => Some(DEFAULT_QUANTILES.to_vec()),
            (Some(_), Some(n)) => {
                sink.error(
                    n.pos,
                    Code::UnknownKey,
                    "`quantiles` applies to summaries only",
                );
                None
            }
            _ => None,
        }
        .unwrap_or_default();
        let max_age = m
            .get("max_age")
            .and_then(|n| duration(n, "`max_age`", sink))
            .unwrap_or(Duration::from_secs(600));
        let age_buckets = m
            .get("age_buckets")
            .and_then(|n| limit(n, "`age_buckets`", sink))
            .unwrap_or(5)
            .min(60);
        let max_series = m
            .get("max_series")
            .and_then(|n| limit(n, "`max_series`", sink))
            .unwrap_or(defaults.max_series);
        let expire_after = match m.get("expire_after") {
            Some(n) => duration(n, "`expire_after`", sink),
            None if kind == Some(MetricKind::Counter) => None,
            None => defaults.expire_after,
        };
        m.finish(METRIC_KEYS, "a metric", sink);
        if sink.diags.iter().filter(|d| d.is_error()).count() > errors_before {
            return None;
        }
        let (name, kind, op) = (name?, kind?, op?);

        labels.sort_by(|a, b| a.0.cmp(&b.0));
        let label_names: Vec<String> = labels.iter().map(|(l, _)| l.clone()).collect();
        let family = Family {
            name: name.clone(),
            help,
            unit,
            kind,
            label_names,
            buckets,
            quantiles,
            max_age,
            age_buckets,
            max_series,
            expire_after,
        };
        let name_pos = name_node.map_or(node.pos, |n| n.pos);
        let id = match self.family_index.get(&name) {
            Some(&id) => {
                let existing = &self.families[id];
                let f = &existing.family;
                let conflict = if f.kind != family.kind {
                    Some(format!(
                        "it is a {} there and a {} here",
                        f.kind.as_str(),
                        family.kind.as_str()
                    ))
                } else if f.label_names != family.label_names {
                    Some(format!(
                        "its labels are [{}] there and [{}] here",
                        f.label_names.join(", "),
                        family.label_names.join(", ")
                    ))
                } else if f.buckets != family.buckets || f.quantiles != family.quantiles {
                    Some("its buckets or quantiles differ".to_string())
                } else {
                    None
                };
                if let Some(why) = conflict {
                    sink.error(
                        name_pos,
                        Code::MetricConflict,
                        format!("metric `{name}` is defined differently elsewhere: {why}"),
                    )
                    .hint(format!(
                        "first defined at {}; give one of them another name",
                        existing.origin
                    ));
                    return None;
                }
                id
            }
            None => {
                self.families.push(FamilyEntry {
                    family,
                    origin: format!("{}:{}:{}", sink.file(), name_pos.line, name_pos.col),
                    gauge_sets: None,
                });
                self.family_index
                    .insert(name.clone(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        if kind == MetricKind::Gauge {
            let sets = op == Op::GaugeSet;
            let entry = &mut self.families[id];
            match entry.gauge_sets {
                Some(prev) if prev != sets => {
                    sink.error(name_pos, Code::GaugeModeConflict, format!("gauge `{name}` is both set and added to"))
                        .hint(format!("rules of one gauge must all `set` or all `add`/`sub` (first defined at {})", entry.origin));
                    return None;
                }
                _ => entry.gauge_sets = Some(sets),
            }
        }
        Some(Update {
            family: id as u32,
            labels: labels.into_iter().map(|(_, s)| s).collect(),
            value,
            op,
            scale,
        })
    }

    fn label_name_ok(
        &self,
        label: &str,
        pos: Pos,
        kind: Option<MetricKind>,
        sink: &mut Sink,
    ) -> bool {
        if !check_name(
            label,
            pos,
            "label name",
            sink,
            grok::valid_field_name,
            "[a-zA-Z_][a-zA-Z0-9_]*",
        ) {
            return false;
        }
        let reserved = match kind {
            Some(MetricKind::Histogram) => label == "le",
            Some(MetricKind::Summary) => label == "quantile",
            _ => false,
        };
        if reserved {
            sink.error(
                pos,
                Code::ReservedName,
                format!("label `{label}` is reserved for this metric type"),
            )
            .hint("rename the label");
        }
        !reserved
    }
}

fn numbers(node: &Node, what: &str, sink: &mut Sink) -> Option<Vec<(f64, Pos)>> {
    let Some(items) = node.as_seq() else {
        sink.error(
            node.pos,
            Code::WrongType,
            format!(
                "{what} must be a list of numbers, found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for n in items {
        match n.as_f64() {
            Some(v) => out.push((v, n.pos)),
            None => {
                sink.error(
                    n.pos,
                    Code::WrongType,
                    format!(
                        "{what} must be numbers, found `{}`",
                        n.as_scalar().unwrap_or("?")
                    ),
                );
                return None;
            }
        }
    }
    Some(out)
}
