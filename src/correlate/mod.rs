//! Correlate: which trace an event belongs to, read from the fields its rule names.
//!
//! Sans-IO and per event, like the other stages: the engine resolves a matched rule's
//! [`TraceSources`] into a [`Resolved`] context, which the rule's metrics take as exemplars,
//! its reduction as the default sampling key, and its conditions and labels as `_trace_id`,
//! `_span_id` and `_parent_span_id`.

pub mod repartition;
pub mod traces;

use crate::extract::trace::{self, Context, Invalid, Source, SpanId, TraceId};
use crate::rules::program::{FieldRef, TraceKind, TracePart, TraceSources};

/// Invalid ids seen, by source and reason (`Source::ALL` × `Invalid::ALL`).
pub type InvalidCounts = [[u64; Invalid::ALL.len()]; Source::ALL.len()];

/// An event's trace context, with its ids as text for the fields that read them.
#[derive(Debug, Default)]
pub struct Resolved {
    pub ctx: Context,
    text: String,
    trace: (u32, u32),
    span: (u32, u32),
    parent: (u32, u32),
}

impl Resolved {
    pub fn clear(&mut self) {
        self.ctx = Context::default();
        self.text.clear();
        self.trace = (0, 0);
        self.span = (0, 0);
        self.parent = (0, 0);
    }

    /// `_trace_id`, `_span_id` or `_parent_span_id`, when the event has it.
    pub fn get(&self, part: TracePart) -> Option<&str> {
        let (a, b) = match part {
            TracePart::Trace => self.trace,
            TracePart::Span => self.span,
            TracePart::Parent => self.parent,
        };
        (b > a).then(|| &self.text[a as usize..b as usize])
    }

    fn write_trace(&mut self, t: &TraceId) -> (u32, u32) {
        let at = self.text.len() as u32;
        match t {
            TraceId::Hex(v) => trace::push_hex(&mut self.text, *v, 32),
            TraceId::Custom(s) => self.text.push_str(s),
        }
        (at, self.text.len() as u32)
    }

    fn write_span(&mut self, s: SpanId) -> (u32, u32) {
        let at = self.text.len() as u32;
        trace::push_hex(&mut self.text, u128::from(s.0), 16);
        (at, self.text.len() as u32)
    }
}

fn source(kind: TraceKind) -> Source {
    match kind {
        TraceKind::Custom => Source::Rule,
        TraceKind::Traceparent => Source::Traceparent,
        TraceKind::B3
        | TraceKind::B3TraceId
        | TraceKind::B3SpanId
        | TraceKind::B3ParentSpanId
        | TraceKind::B3Sampled => Source::B3,
        TraceKind::TraceId => Source::TraceId,
        TraceKind::Datadog => Source::Datadog,
        TraceKind::SpanId => Source::SpanId,
        TraceKind::ParentSpanId => Source::ParentSpanId,
    }
}

/// Resolves `sources` into `out`: the first valid trace id in their order, the span (and
/// parent) of the same header when it has them, else of the first valid span fields. Invalid
/// values are counted in `invalid` when `count` (once per event, however many rules read
/// it) and passed over.
pub fn resolve<'a>(
    sources: &TraceSources,
    text: impl Fn(FieldRef) -> Option<&'a str>,
    out: &mut Resolved,
    invalid: &mut InvalidCounts,
    count: bool,
) {
    out.clear();
    let mut ctx = Context::default();
    let mut bad = |kind: TraceKind, why: Invalid| {
        if count {
            invalid[source(kind) as usize][why as usize] += 1;
        }
    };
    for &(kind, field) in &sources.fields {
        // A part already known from a preferred source is not looked up again.
        let wanted = match kind {
            TraceKind::Custom
            | TraceKind::Traceparent
            | TraceKind::B3
            | TraceKind::B3TraceId
            | TraceKind::TraceId
            | TraceKind::Datadog => ctx.trace.is_none(),
            TraceKind::B3SpanId | TraceKind::SpanId => ctx.span.is_none(),
            TraceKind::B3ParentSpanId | TraceKind::ParentSpanId => ctx.parent.is_none(),
            TraceKind::B3Sampled => ctx.sampled.is_none(),
        };
        if !wanted {
            continue;
        }
        let Some(v) = text(field) else { continue };
        match kind {
            TraceKind::Custom if ctx.trace.is_none() => {
                // A hex id is a trace id in whatever form; anything else is the rule's own.
                let id = trace::trace_id(v).or_else(|_| trace::custom(v));
                match id {
                    Ok(id) => ctx.trace = Some(id),
                    Err(e) => bad(kind, e),
                }
            }
            TraceKind::Traceparent | TraceKind::B3 if ctx.trace.is_none() => {
                let parsed = if kind == TraceKind::Traceparent {
                    trace::traceparent(v)
                } else {
                    trace::b3_single(v)
                };
                match parsed {
                    Ok(c) => {
                        ctx.sampled = ctx.sampled.or(c.sampled);
                        if c.trace.is_some() {
                            ctx.trace = c.trace;
                            ctx.span = c.span.or(ctx.span);
                            ctx.parent = c.parent.or(ctx.parent);
                        }
                    }
                    Err(e) => bad(kind, e),
                }
            }
            TraceKind::B3TraceId | TraceKind::TraceId | TraceKind::Datadog
                if ctx.trace.is_none() =>
            {
                let parsed = match kind {
                    TraceKind::B3TraceId => trace::b3_trace_id(v),
                    TraceKind::Datadog => trace::datadog_trace_id(v),
                    _ => trace::trace_id(v),
                };
                match parsed {
                    Ok(id) => ctx.trace = Some(id),
                    Err(e) => bad(kind, e),
                }
            }
            TraceKind::B3SpanId | TraceKind::SpanId if ctx.span.is_none() => {
                let parsed = if kind == TraceKind::B3SpanId {
                    trace::b3_span_id(v)
                } else {
                    trace::span_id(v)
                };
                match parsed {
                    Ok(s) => ctx.span = Some(s),
                    Err(e) => bad(kind, e),
                }
            }
            TraceKind::B3ParentSpanId | TraceKind::ParentSpanId if ctx.parent.is_none() => {
                let parsed = if kind == TraceKind::B3ParentSpanId {
                    trace::b3_span_id(v)
                } else {
                    trace::span_id(v)
                };
                match parsed {
                    Ok(s) => ctx.parent = Some(s),
                    Err(e) => bad(kind, e),
                }
            }
            TraceKind::B3Sampled if ctx.sampled.is_none() => match trace::b3_sampled_header(v) {
                Ok(s) => ctx.sampled = Some(s),
                Err(e) => bad(kind, e),
            },
            // Already known from a preferred source.
            _ => {}
        }
    }
    // Spans without a trace say nothing an exemplar or a summary could use.
    if ctx.trace.is_none() {
        ctx.span = None;
        ctx.parent = None;
    }
    if !sources.text {
        out.ctx = ctx;
        return;
    }
    if let Some(t) = &ctx.trace {
        out.trace = out.write_trace(t);
    }
    if sources.span_text {
        if let Some(s) = ctx.span {
            out.span = out.write_span(s);
        }
        if let Some(s) = ctx.parent {
            out.parent = out.write_span(s);
        }
    }
    out.ctx = ctx;
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    fn run(fields: &[(TraceKind, &str)]) -> (Resolved, InvalidCounts) {
        let sources = TraceSources {
            fields: fields
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (*k, FieldRef::Capture(i as u32)))
                .collect(),
            exemplars: true,
            text: true,
            span_text: true,
            ..TraceSources::default()
        };
        let values: Vec<&str> = fields.iter().map(|(_, v)| *v).collect();
        let mut out = Resolved::default();
        let mut invalid = [[0; Invalid::ALL.len()]; Source::ALL.len()];
        resolve(
            &sources,
            |f| match f {
                FieldRef::Capture(i) => Some(values[i as usize]),
                _ => None,
            },
            &mut out,
            &mut invalid,
            true,
        );
        (out, invalid)
    }

    #[test]
    fn the_first_valid_source_wins_and_invalid_ones_are_counted() {
        let tp = format!("00-{T}-{S}-01");
        let (r, invalid) = run(&[
            (TraceKind::Traceparent, "00-zz-bad"),
            (TraceKind::TraceId, &T.to_uppercase()),
            (TraceKind::SpanId, S),
            (TraceKind::Traceparent, &tp),
        ]);
        assert_eq!(r.get(TracePart::Trace), Some(T));
        assert_eq!(r.get(TracePart::Span), Some(S));
        assert_eq!(r.get(TracePart::Parent), None);
        assert_eq!(
            invalid[Source::Traceparent as usize][Invalid::Format as usize],
            1
        );
    }

    #[test]
    fn spans_without_a_trace_are_not_kept() {
        let (r, _) = run(&[(TraceKind::SpanId, S)]);
        assert_eq!(r.get(TracePart::Span), None);
        assert_eq!(r.ctx, Context::default());
    }

    #[test]
    fn a_rule_s_own_id_may_be_anything_printable() {
        let (r, _) = run(&[(TraceKind::Custom, "req-42"), (TraceKind::TraceId, T)]);
        assert_eq!(r.get(TracePart::Trace), Some("req-42"));
        let (r, _) = run(&[(TraceKind::Custom, T)]);
        assert_eq!(r.ctx.trace, Some(trace::trace_id(T).unwrap()));
    }
}
