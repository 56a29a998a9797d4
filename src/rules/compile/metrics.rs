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
    "shared",
];

/// A family as the rules define it so far, with where it was first defined.
pub(super) struct FamilyEntry {
    pub(super) family: Family,
    origin: String,
    /// `Some(true)` once a rule sets the gauge, `Some(false)` once one adds to it.
    gauge_sets: Option<bool>,
    /// The teams that define the family, each with its first definition.
    pub(super) teams: Vec<TeamUse>,
}

pub(super) struct TeamUse {
    pub(super) team: String,
    origin: String,
    /// Some definition of this team says `shared: true`.
    shared: bool,
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
        let has_scale = m.get("scale").is_some();
        let unit = m.get("unit").and_then(|n| {
            let u = scalar(n, "`unit`", sink)?;
            if let (Some(name), Some(kind)) = (&name, kind) {
                unit_suffix(name, kind, &u, has_scale, n.pos, sink);
            }
            Some(u)
        });
        if let (Some(name), Some(MetricKind::Counter)) = (&name, kind)
            && !name.ends_with("_total")
        {
            sink.warning(
                    name_node.map_or(node.pos, |n| n.pos),
                    Code::CounterName,
                    format!("counter `{name}` does not end in `_total`"),
                )
                .hint(format!(
                    "name it `{name}_total`: OpenMetrics exposes counters as `<name>_total`, so this one is `{name}` in the Prometheus text format and `{name}_total` in OpenMetrics"
                ));
        }
        let shared = match m.get("shared") {
            Some(n) => n.as_bool().unwrap_or_else(|| {
                sink.error(n.pos, Code::WrongType, "`shared` must be true or false");
                false
            }),
            None => false,
        };
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
            (Some(MetricKind::Histogram), None) => {
                sink.note(
                    node.pos,
                    Code::DefaultBuckets,
                    format!(
                        "histogram `{}` has no `buckets`: the default ones are used ({})",
                        name.as_deref().unwrap_or("?"),
                        DEFAULT_BUCKETS
                            .iter()
                            .map(|b| b.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .hint(
                    "list the bounds that matter for this metric, e.g. `buckets: [0.1, 0.5, 1, 5]`",
                );
                Some(DEFAULT_BUCKETS.to_vec())
            }
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
            budget: None,
        };
        let name_pos = name_node.map_or(node.pos, |n| n.pos);
        let id = self.register(family, name_pos, team, shared, sink)?;
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

    /// Adds a definition of a family, or checks it against the one already there: one type,
    /// one label set, one set of buckets and quantiles; and a family defined by two teams must
    /// be declared `shared: true` by both, or their series would silently add up.
    fn register(
        &mut self,
        family: Family,
        pos: Pos,
        team: &str,
        shared: bool,
        sink: &mut Sink,
    ) -> Option<usize> {
        let here = format!("{}:{}:{}", sink.file(), pos.line, pos.col);
        let name = family.name.clone();
        let Some(&id) = self.family_index.get(&name) else {
            self.families.push(FamilyEntry {
                family,
                origin: here.clone(),
                gauge_sets: None,
                teams: vec![TeamUse {
                    team: team.to_string(),
                    origin: here,
                    shared,
                }],
            });
            self.family_index.insert(name, self.families.len() - 1);
            return Some(self.families.len() - 1);
        };
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
        } else if f.buckets != family.buckets {
            Some("its buckets differ".to_string())
        } else if f.quantiles != family.quantiles
            || f.max_age != family.max_age
            || f.age_buckets != family.age_buckets
        {
            Some("its quantiles or summary window differ".to_string())
        } else {
            None
        };
        let first_team = &existing.teams[0];
        if let Some(why) = conflict {
            let owner = if first_team.team != team {
                format!(" (team `{}`)", first_team.team)
            } else {
                String::new()
            };
            sink.error(
                pos,
                Code::MetricConflict,
                format!(
                    "metric `{name}` is defined differently at {}{owner}: {why}",
                    existing.origin
                ),
            )
            .hint("a metric has one type, one label set and one bucket layout: give one of them another name");
            return None;
        }
        // Another team's definition: both must say the family is one metric written by both.
        let others: Vec<&TeamUse> = existing.teams.iter().filter(|t| t.team != team).collect();
        if let Some(other) = others.first() {
            let unshared: Vec<&&TeamUse> = others.iter().filter(|t| !t.shared).collect();
            if !shared || !unshared.is_empty() {
                let who = match (shared, unshared.first()) {
                    (false, Some(o)) => format!(
                        "declare it `shared: true` here and at {} (team `{}`)",
                        o.origin, o.team
                    ),
                    (false, None) => "declare it `shared: true` here too".to_string(),
                    (true, Some(o)) => format!(
                        "team `{}` must declare it `shared: true` too, at {}",
                        o.team, o.origin
                    ),
                    (true, None) => unreachable!("checked above"),
                };
                sink.error(
                    pos,
                    Code::SharedMetric,
                    format!(
                        "metric `{name}` is also defined by team `{}` at {}: the two teams' series would add up",
                        other.team, other.origin
                    ),
                )
                .hint(format!(
                    "if both teams mean one metric, {who}; otherwise give one of them another name (e.g. `{team}_{name}`)"
                ));
                return None;
            }
            if existing.family.help != family.help {
                sink.warning(
                    pos,
                    Code::SharedMetric,
                    format!(
                        "shared metric `{name}` has another help at {}: that one is shown",
                        existing.origin
                    ),
                )
                .hint("write the same `help` in every team's definition");
            }
        }
        let entry = &mut self.families[id];
        match entry.teams.iter_mut().find(|t| t.team == team) {
            Some(t) => t.shared |= shared,
            None => entry.teams.push(TeamUse {
                team: team.to_string(),
                origin: here,
                shared,
            }),
        }
        Some(id)
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

/// Unit words people put at the end of metric names, with the factor to seconds where one is
/// exact (so the hint can name the `scale` too).
const UNIT_WORDS: &[(&str, Option<&str>)] = &[
    ("ms", Some("0.001")),
    ("msec", Some("0.001")),
    ("msecs", Some("0.001")),
    ("millis", Some("0.001")),
    ("milliseconds", Some("0.001")),
    ("us", Some("0.000001")),
    ("usec", Some("0.000001")),
    ("micros", Some("0.000001")),
    ("microseconds", Some("0.000001")),
    ("ns", Some("0.000000001")),
    ("nanos", Some("0.000000001")),
    ("nanoseconds", Some("0.000000001")),
    ("s", None),
    ("sec", None),
    ("secs", None),
    ("second", None),
    ("seconds", None),
    ("min", Some("60")),
    ("mins", Some("60")),
    ("minutes", Some("60")),
    ("hours", Some("3600")),
    ("byte", None),
    ("bytes", None),
    ("kb", None),
    ("kib", None),
    ("mb", None),
    ("mib", None),
    ("gb", None),
    ("gib", None),
    ("pct", None),
    ("percent", None),
    ("ratio", None),
];

/// OpenMetrics wants the unit as the name's suffix. The suggested name replaces a unit word
/// already there (`x_duration_ms` with unit `seconds` is `x_duration_seconds`, not
/// `x_duration_ms_seconds`).
fn unit_suffix(name: &str, kind: MetricKind, u: &str, has_scale: bool, pos: Pos, sink: &mut Sink) {
    let counter = kind == MetricKind::Counter;
    let base = if counter {
        name.strip_suffix("_total").unwrap_or(name)
    } else {
        name
    };
    if base.ends_with(&format!("_{u}")) {
        return;
    }
    let replaced = UNIT_WORDS.iter().find_map(|(w, factor)| {
        base.strip_suffix(&format!("_{w}"))
            .filter(|stem| !stem.is_empty())
            .map(|stem| (stem, *w, *factor))
    });
    let stem = replaced.map_or(base, |(stem, _, _)| stem);
    let suggestion = if counter {
        format!("{stem}_{u}_total")
    } else {
        format!("{stem}_{u}")
    };
    let mut hint = format!("OpenMetrics requires the unit as a suffix: name it `{suggestion}`");
    if let (Some((_, w, Some(factor))), "seconds", false) = (replaced, u, has_scale) {
        hint.push_str(&format!(
            ", and if the values are in {w}, add `scale: {factor}` to convert them"
        ));
    }
    sink.error(
        pos,
        Code::UnitMismatch,
        format!("metric `{name}` has unit `{u}` but its name does not end in `_{u}`"),
    )
    .hint(hint);
}
