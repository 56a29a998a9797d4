//! The `trace` section: where a rule's events say which trace they belong to.
//!
//! Without the section a rule reads the usual fields (`traceparent`, `trace_id`, B3, …; see
//! `TRACE_FIELDS`): event fields of JSON and logfmt events, and captures of those names in
//! any rule. The section names others: `id` (a correlation id such as a request id, kept as
//! it is unless it is hex), `span`, `parent`; and `exemplars: false` keeps the rule's metrics
//! without exemplars. `trace: false` reads no trace context at all.

use super::{Builder, RuleCx, Section};
use crate::decode::Format;
use crate::extract::time::TimeFormat;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::{FieldRef, TRACE_FIELDS, TimeSource, TraceKind, TraceSources};
use crate::rules::read::{MapView, scalar};
use crate::rules::suggest::did_you_mean;

pub(super) const SECTION: Section = Section {
    keys: &["trace"],
    compile: section,
};

const KEYS: &[&str] = &[
    "id",
    "span",
    "parent",
    "exemplars",
    "summaries",
    "service",
    "route",
    "status",
    "duration",
    "level",
    "time",
];

/// What a summary reads of an event, by default: these names as captures, and (for events
/// with fields) as fields. `duration` is in milliseconds.
const SUMMARY_FIELDS: &[(&str, &[&str])] = &[
    ("service", &["service", "service.name"]),
    ("route", &["route", "http.route"]),
    ("status", &["status", "http.status_code"]),
    ("duration", &["duration_ms"]),
    ("level", &["level", "severity"]),
];
const TIME_FIELDS: &[&str] = &["ts", "time", "timestamp", "@timestamp"];

fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    let mut sources = TraceSources {
        exemplars: true,
        ..TraceSources::default()
    };
    let mut named: Vec<(&str, crate::rules::program::FieldRef)> = Vec::new();
    // `trace: false`: the rule's events carry no trace context worth reading, so its fields
    // are not looked for at all (the usual spellings are a dozen names in every JSON object).
    if let Some(node) = m.get("trace")
        && let Some(text) = node.as_scalar()
    {
        if text == "false" {
            cx.trace = TraceSources::default();
        } else {
            sink.error(
                node.pos,
                Code::WrongType,
                format!("`trace` is a mapping, or `false` to read no trace context, not `{text}`"),
            )
            .hint("`trace: {id: request_id}` names the field; `trace: false` turns it off");
        }
        return;
    }
    if let Some(node) = m.get("trace")
        && let Some(mut t) = MapView::new(node, "`trace`", sink)
    {
        for (key, kind) in [
            ("id", TraceKind::Custom),
            ("span", TraceKind::SpanId),
            ("parent", TraceKind::ParentSpanId),
        ] {
            let Some(n) = t.get(key) else { continue };
            let Some(name) = scalar(n, &format!("`trace.{key}`"), sink) else {
                continue;
            };
            if let Some(f) = b.field_ref(&name, n.text_pos, &cx.scope, sink) {
                sources.fields.push((kind, f));
            }
        }
        for (key, flag) in [
            ("exemplars", &mut sources.exemplars),
            ("summaries", &mut sources.summaries),
        ] {
            let Some(n) = t.get(key) else { continue };
            match scalar(n, &format!("`trace.{key}`"), sink).as_deref() {
                Some("true") => *flag = true,
                Some("false") => *flag = false,
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("`trace.{key}` is `true` or `false`, not `{other}`"),
                    )
                    .hint(did_you_mean(other, &["true", "false"]));
                }
                None => {}
            }
        }
        for (key, _) in SUMMARY_FIELDS {
            let Some(n) = t.get(key) else { continue };
            let Some(name) = scalar(n, &format!("`trace.{key}`"), sink) else {
                continue;
            };
            if let Some(f) = b.field_ref(&name, n.text_pos, &cx.scope, sink) {
                named.push((key, f));
            }
        }
        if let Some(n) = t.get("time") {
            sources.time.extend(b.time(n, cx, sink));
        }
        t.finish(KEYS, "`trace`", sink);
    }
    if sources.summaries {
        summary_fields(b, cx, &named, &mut sources);
    }
    // Captures of the usual names, then (for events with fields) the fields themselves.
    for (name, kind) in TRACE_FIELDS {
        if let Some(i) = cx.scope.captures.iter().position(|c| c == name) {
            sources.fields.push((*kind, FieldRef::Capture(i as u32)));
        }
    }
    if cx.scope.format != Some(Format::Text) {
        for (name, kind) in TRACE_FIELDS {
            if cx.scope.captures.iter().any(|c| c == name) {
                continue;
            }
            let path = super::parse_path(name).expect("the usual names are valid paths");
            sources
                .fields
                .push((*kind, FieldRef::Event(b.event_field(path))));
        }
    }
    cx.trace = sources;
}

/// Where the rule's events say what a trace summary needs: what the section names, else the
/// usual names as captures, then as fields.
fn summary_fields(
    b: &mut Builder,
    cx: &RuleCx<'_>,
    named: &[(&str, FieldRef)],
    sources: &mut TraceSources,
) {
    let text = cx.scope.format == Some(Format::Text);
    let mut defaults = |names: &[&str]| -> Vec<FieldRef> {
        let mut out: Vec<FieldRef> = names
            .iter()
            .filter_map(|n| cx.scope.captures.iter().position(|c| c == n))
            .map(|i| FieldRef::Capture(i as u32))
            .collect();
        if !text {
            out.extend(b.default_fields(names));
        }
        out
    };
    for (key, names) in SUMMARY_FIELDS {
        let fields = match named.iter().find(|(k, _)| k == key) {
            Some((_, f)) => vec![*f],
            None => defaults(names),
        };
        match *key {
            "service" => sources.service = fields,
            "route" => sources.route = fields,
            "status" => sources.status = fields,
            "duration" => sources.duration = fields,
            _ => sources.level = fields,
        }
    }
    if sources.time.is_empty() {
        sources.time = defaults(TIME_FIELDS)
            .into_iter()
            .map(|field| TimeSource {
                field,
                format: TimeFormat::Auto,
            })
            .collect();
    }
}
