//! The `trace` section: where a rule's events say which trace they belong to.
//!
//! Without the section a rule reads the usual fields (`traceparent`, `trace_id`, B3, …; see
//! `TRACE_FIELDS`): event fields of JSON and logfmt events, and captures of those names in
//! any rule. The section names others: `id` (a correlation id such as a request id, kept as
//! it is unless it is hex), `span`, `parent`; and `exemplars: false` keeps the rule's metrics
//! without exemplars.

use super::{Builder, RuleCx, Section};
use crate::decode::Format;
use crate::rules::diagnostic::{Code, Sink};
use crate::rules::program::{TRACE_FIELDS, TraceKind, TraceSources};
use crate::rules::read::{MapView, scalar};
use crate::rules::suggest::did_you_mean;

pub(super) const SECTION: Section = Section {
    keys: &["trace"],
    compile: section,
};

const KEYS: &[&str] = &["id", "span", "parent", "exemplars"];

fn section(b: &mut Builder, m: &mut MapView<'_>, cx: &mut RuleCx<'_>, sink: &mut Sink) {
    let mut sources = TraceSources {
        fields: Vec::new(),
        exemplars: true,
    };
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
        if let Some(n) = t.get("exemplars") {
            match scalar(n, "`trace.exemplars`", sink).as_deref() {
                Some("true") => sources.exemplars = true,
                Some("false") => sources.exemplars = false,
                Some(other) => {
                    sink.error(
                        n.pos,
                        Code::UnknownVariant,
                        format!("`trace.exemplars` is `true` or `false`, not `{other}`"),
                    )
                    .hint(did_you_mean(other, &["true", "false"]));
                }
                None => {}
            }
        }
        t.finish(KEYS, "`trace`", sink);
    }
    // Captures of the usual names, then (for events with fields) the fields themselves.
    for (name, kind) in TRACE_FIELDS {
        if let Some(i) = cx.scope.captures.iter().position(|c| c == name) {
            sources
                .fields
                .push((*kind, crate::rules::program::FieldRef::Capture(i as u32)));
        }
    }
    if cx.scope.format != Some(Format::Text) {
        for (name, kind) in TRACE_FIELDS {
            if cx.scope.captures.iter().any(|c| c == name) {
                continue;
            }
            let path = super::parse_path(name).expect("the usual names are valid paths");
            sources.fields.push((
                *kind,
                crate::rules::program::FieldRef::Event(b.event_field(path)),
            ));
        }
    }
    cx.trace = sources;
}
