//! Per-trace summaries and the service graph, from the events of the rules that ask for them
//! (`trace: {summaries: true}`).
//!
//! Events sharing a trace id are gathered until the trace has been quiet for `window` of
//! event time; then one summary says what happened (services in order of appearance, the root
//! service and route, first and last times, duration, events, errors, outcome) and one edge
//! record per call between spans of two services gives the service graph (client, server,
//! failed, latency), as the OpenTelemetry Collector's `servicegraph` connector does from
//! spans. Both are JSON lines that rules read like any event (topic [`TOPIC`]), so teams derive
//! their own metrics from them.
//!
//! Sans-IO and deterministic: what is emitted depends only on the events in order and their
//! times, never on the wall clock. Memory is bounded: at `max_open` traces the least recently
//! active one is summarised early (`"evicted":true`), and a trace keeps at most `max_spans`
//! spans (the rest counted in `"truncated"`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hashbrown::HashMap;
use std::fmt::Write;

use crate::codec::{Corrupt, Reader, Writer};
use crate::decode::json::{Kind, Member};
use crate::extract::trace::{SpanId, TraceId};
use crate::sink::output::json_string as json_str;

/// The topic summaries and edges are read as by rules (`match: {topic: logmill.traces}`).
pub const TOPIC: &str = "logmill.traces";

/// Services named per trace at most; more are counted as truncated.
const MAX_SERVICES: usize = 32;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub window_ms: u64,
    pub max_open: usize,
    pub max_spans: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window_ms: 30_000,
            max_open: 100_000,
            max_spans: 256,
        }
    }
}

/// What one event says of its trace. Texts are ranges of the batch's text arena.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    /// Index of the record in its batch.
    pub record: u32,
    pub trace: TraceId,
    pub span: Option<SpanId>,
    pub parent: Option<SpanId>,
    pub time_ms: u64,
    pub service: (u32, u32),
    pub route: (u32, u32),
    pub error: bool,
    pub status: Option<u16>,
    pub duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Span {
    service: u8,
    parent: Option<SpanId>,
    error: bool,
    status: Option<u16>,
    duration_ms: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Open {
    first_ms: u64,
    last_ms: u64,
    /// Order of arrival: ties in `by_last` are broken by it, so eviction is deterministic.
    seq: u64,
    events: u64,
    errors: u64,
    services: Vec<Box<str>>,
    /// The time of each service's first event: summaries name the services in that order,
    /// ties by name, so that the order does not depend on how events from several partitions
    /// interleave (`correlate::repartition`).
    service_first: Vec<u64>,
    /// The earliest event's service and route (ties by service, then route), until an event
    /// without a parent span says the root.
    first: Option<(u8, Box<str>)>,
    first_at: u64,
    root: Option<(u8, Box<str>, Option<SpanId>)>,
    spans: HashMap<SpanId, Span>,
    truncated: u64,
}

/// Counts of what the gatherer did, for telemetry and replay's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub summaries: u64,
    pub edges: u64,
    pub evicted: u64,
    pub truncated: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Gatherer {
    config: Config,
    open: HashMap<TraceId, Open>,
    /// `(last_ms, seq, trace)` of open traces, the quietest on top. An entry may be behind its
    /// trace's `last_ms` (it is pushed once, when the trace opens): when it comes up, it goes
    /// back with the trace's time; an entry of a closed trace is dropped. So the heap holds
    /// about one entry per open trace, and an event costs no heap work.
    by_last: BinaryHeap<Reverse<(u64, u64, TraceId)>>,
    next_seq: u64,
    /// The latest event time seen: the clock windows close by.
    clock_ms: u64,
    pub stats: Stats,
    /// Changed since the last `encode`: the checkpoint's barrier takes only changed states.
    pub dirty: bool,
    /// Where the values of the lines written are, when a reader asks (`Some`).
    pub layout: Option<Layout>,
}

const MAGIC: &[u8; 4] = b"LMTR";
/// 1: services in arrival order; 2: with the times of their first events and of `first`.
const VERSION: u8 = 2;

pub(crate) fn write_trace_id(w: &mut Writer, t: &TraceId) {
    match t {
        TraceId::Hex(v) => {
            w.u8(1);
            w.u64((v >> 64) as u64);
            w.u64(*v as u64);
        }
        TraceId::Custom(s) => {
            w.u8(2);
            w.str(s);
        }
    }
}

pub(crate) fn read_trace_id(r: &mut Reader<'_>) -> Result<TraceId, Corrupt> {
    match r.u8()? {
        1 => {
            let hi = r.u64()?;
            Ok(TraceId::Hex((u128::from(hi) << 64) | u128::from(r.u64()?)))
        }
        2 => crate::extract::trace::custom(r.str()?).map_err(|_| Corrupt),
        _ => Err(Corrupt),
    }
}

fn write_opt_span(w: &mut Writer, s: Option<SpanId>) {
    w.bool(s.is_some());
    w.u64(s.map_or(0, |s| s.0));
}

fn read_opt_span(r: &mut Reader<'_>) -> Result<Option<SpanId>, Corrupt> {
    let some = r.bool()?;
    let v = r.u64()?;
    Ok(some.then_some(SpanId(v)))
}

impl Gatherer {
    /// The open traces, for the checkpoint: they move with their partition to its next owner,
    /// which summarises them exactly as this one would have. Deterministic (traces in arrival
    /// order, spans by id).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.u64(self.clock_ms);
        w.u64(self.next_seq);
        let mut open: Vec<(&TraceId, &Open)> = self.open.iter().collect();
        open.sort_by_key(|(_, t)| t.seq);
        w.u32(open.len() as u32);
        for (id, t) in open {
            write_trace_id(&mut w, id);
            for v in [
                t.first_ms,
                t.last_ms,
                t.seq,
                t.events,
                t.errors,
                t.truncated,
            ] {
                w.u64(v);
            }
            w.u32(t.services.len() as u32);
            for (s, at) in t.services.iter().zip(&t.service_first) {
                w.str(s);
                w.u64(*at);
            }
            w.bool(t.first.is_some());
            let (fi, fr) = t.first.as_ref().map_or((0, ""), |(i, r)| (*i, &**r));
            w.u8(fi);
            w.str(fr);
            w.u64(t.first_at);
            w.bool(t.root.is_some());
            let (ri, rr, rs) = t
                .root
                .as_ref()
                .map_or((0, "", None), |(i, r, s)| (*i, &**r, *s));
            w.u8(ri);
            w.str(rr);
            write_opt_span(&mut w, rs);
            let mut spans: Vec<(&SpanId, &Span)> = t.spans.iter().collect();
            spans.sort_by_key(|(id, _)| **id);
            w.u32(spans.len() as u32);
            for (id, s) in spans {
                w.u64(id.0);
                w.u8(s.service);
                write_opt_span(&mut w, s.parent);
                w.bool(s.error);
                w.bool(s.status.is_some());
                w.u32(u32::from(s.status.unwrap_or(0)));
                w.bool(s.duration_ms.is_some());
                w.f64(s.duration_ms.unwrap_or(0.0));
            }
        }
        w.0
    }

    /// Decodes what `encode` wrote, under the current `config`. Total: malformed input is an
    /// error, never a panic.
    pub fn decode(bytes: &[u8], config: Config) -> Result<Gatherer, Corrupt> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(Corrupt);
        }
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(Corrupt);
        }
        let mut g = Gatherer::new(config);
        g.clock_ms = r.u64()?;
        g.next_seq = r.u64()?;
        for _ in 0..r.count(16)? {
            let id = read_trace_id(&mut r)?;
            let mut t = Open {
                first_ms: r.u64()?,
                last_ms: r.u64()?,
                seq: r.u64()?,
                events: r.u64()?,
                errors: r.u64()?,
                truncated: r.u64()?,
                ..Open::default()
            };
            for _ in 0..r.count(4)? {
                t.services.push(r.str()?.into());
                // Version 1 kept arrival order only: its services tie at the trace's start
                // (so they are named by name once, in a trace open across the upgrade).
                t.service_first
                    .push(if version > 1 { r.u64()? } else { t.first_ms });
            }
            let (has_first, fi, fr) = (r.bool()?, r.u8()?, r.str()?);
            t.first = has_first.then(|| (fi, fr.into()));
            t.first_at = if version > 1 { r.u64()? } else { t.first_ms };
            let (has_root, ri, rr, rs) = (r.bool()?, r.u8()?, r.str()?, read_opt_span(&mut r)?);
            t.root = has_root.then(|| (ri, rr.into(), rs));
            for _ in 0..r.count(8)? {
                let id = SpanId(r.u64()?);
                let service = r.u8()?;
                let parent = read_opt_span(&mut r)?;
                let error = r.bool()?;
                let (has_status, status) = (r.bool()?, r.u32()?);
                let (has_duration, duration) = (r.bool()?, r.f64()?);
                t.spans.insert(
                    id,
                    Span {
                        service,
                        parent,
                        error,
                        status: has_status.then_some(status.min(u32::from(u16::MAX)) as u16),
                        duration_ms: has_duration.then_some(duration),
                    },
                );
            }
            g.by_last.push(Reverse((t.last_ms, t.seq, id.clone())));
            g.open.insert(id, t);
        }
        r.finish()?;
        Ok(g)
    }
    pub fn new(config: Config) -> Gatherer {
        Gatherer {
            config,
            ..Gatherer::default()
        }
    }

    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    /// Adds one event (texts in `text`); summaries and edges of the traces it closes or evicts
    /// are appended to `out` as JSON lines. The event's time is the clock.
    pub fn observe(&mut self, e: &TraceEvent, text: &str, out: &mut String) {
        self.observe_at(e, text, out, e.time_ms);
    }

    /// [`Gatherer::observe`] with the clock at `now_ms` (it never goes back): the watermark of
    /// a repartitioned stream, where an event's own time says nothing of the other sources'.
    pub fn observe_at(&mut self, e: &TraceEvent, text: &str, out: &mut String, now_ms: u64) {
        self.stats.events += 1;
        self.dirty = true;
        self.clock_ms = self.clock_ms.max(now_ms);
        self.expire(self.clock_ms, out);
        let get = |(a, b): (u32, u32)| text.get(a as usize..b as usize).unwrap_or_default();
        if self.open.len() >= self.config.max_open.max(1)
            && !self.open.contains_key(&e.trace)
            && let Some(oldest) = self.quietest()
        {
            self.stats.evicted += 1;
            self.close(&oldest, true, out);
        }
        let seq = self.next_seq;
        let t = self.open.entry(e.trace.clone()).or_insert_with(|| Open {
            first_ms: e.time_ms,
            last_ms: e.time_ms,
            seq,
            ..Open::default()
        });
        let new = t.seq == seq;
        if new {
            self.next_seq += 1;
        }
        t.first_ms = t.first_ms.min(e.time_ms);
        t.last_ms = t.last_ms.max(e.time_ms);
        if new {
            self.by_last
                .push(Reverse((t.last_ms, t.seq, e.trace.clone())));
        }
        t.events += 1;
        t.errors += u64::from(e.error);
        let service = get(e.service);
        let idx = match t.services.iter().position(|s| &**s == service) {
            Some(i) => {
                t.service_first[i] = t.service_first[i].min(e.time_ms);
                i
            }
            None if t.services.len() < MAX_SERVICES => {
                t.services.push(service.into());
                t.service_first.push(e.time_ms);
                t.services.len() - 1
            }
            None => {
                t.truncated += 1;
                self.stats.truncated += 1;
                MAX_SERVICES
            }
        } as u8;
        let route = get(e.route);
        let earlier = match &t.first {
            None => true,
            Some((i, r)) => {
                let was = (
                    t.first_at,
                    t.services.get(*i as usize).map_or("", |s| &**s),
                    &**r,
                );
                (e.time_ms, service, route) < was
            }
        };
        if earlier {
            t.first = Some((idx, route.into()));
            t.first_at = e.time_ms;
        }
        if e.span.is_some() && e.parent.is_none() {
            match &mut t.root {
                None => t.root = Some((idx, route.into(), e.span)),
                // The root's route may be on its last event only.
                Some((_, r, _)) if r.is_empty() && !route.is_empty() => *r = route.into(),
                Some(_) => {}
            }
        }
        if let Some(span) = e.span {
            let room = t.spans.len() < self.config.max_spans;
            match t.spans.get_mut(&span) {
                Some(s) => {
                    s.error |= e.error;
                    s.status = e.status.or(s.status);
                    s.duration_ms = e.duration_ms.or(s.duration_ms);
                    s.parent = s.parent.or(e.parent);
                }
                None if room => {
                    t.spans.insert(
                        span,
                        Span {
                            service: idx,
                            parent: e.parent,
                            error: e.error,
                            status: e.status,
                            duration_ms: e.duration_ms,
                        },
                    );
                }
                None => {
                    t.truncated += 1;
                    self.stats.truncated += 1;
                }
            }
        }
    }

    /// The quietest open trace and its last time: entries of closed traces are dropped on
    /// the way, entries behind their trace's time go back with it.
    fn live_top(&mut self) -> Option<(u64, TraceId)> {
        while let Some(Reverse((last, seq, trace))) = self.by_last.peek() {
            match self.open.get(trace) {
                Some(t) if t.seq == *seq && t.last_ms == *last => {
                    return Some((*last, trace.clone()));
                }
                Some(t) if t.seq == *seq => {
                    let now = t.last_ms;
                    let Some(Reverse((_, seq, trace))) = self.by_last.pop() else {
                        unreachable!("peeked")
                    };
                    self.by_last.push(Reverse((now, seq, trace)));
                }
                _ => {
                    self.by_last.pop();
                }
            }
        }
        None
    }

    fn quietest(&mut self) -> Option<TraceId> {
        self.live_top().map(|(_, t)| t)
    }

    /// Closes the traces quiet for a window at event time `now_ms`.
    pub fn expire(&mut self, now_ms: u64, out: &mut String) {
        // An entry's time is at most its trace's: when the quietest entry is not due, no
        // trace is, and its trace need not be looked up (the usual case, once per event).
        if self
            .by_last
            .peek()
            .is_none_or(|Reverse((last, _, _))| last + self.config.window_ms > now_ms)
        {
            return;
        }
        while let Some((last, trace)) = self.live_top() {
            if last + self.config.window_ms > now_ms {
                break;
            }
            self.close(&trace, false, out);
        }
    }

    /// Closes every open trace, the quietest first (the end of a replay).
    pub fn flush(&mut self, out: &mut String) {
        while let Some(trace) = self.quietest() {
            self.close(&trace, false, out);
        }
    }

    fn close(&mut self, trace: &TraceId, evicted: bool, out: &mut String) {
        let Some(t) = self.open.remove(trace) else {
            return;
        };
        self.stats.summaries += 1;
        let name = |i: u8| t.services.get(i as usize).map_or("", |s| &**s);
        let (root_service, route, root_span) = match (&t.root, &t.first) {
            (Some((s, r, span)), _) => (name(*s), &**r, *span),
            (None, Some((s, r))) => (name(*s), &**r, None),
            (None, None) => ("", "", None),
        };
        let root = root_span.and_then(|s| t.spans.get(&s));
        // The root span's own measure when it logged one, else what the events span.
        let duration_ms = root
            .and_then(|r| r.duration_ms)
            .unwrap_or((t.last_ms - t.first_ms) as f64);
        let outcome = if t.errors > 0 || root.is_some_and(|r| r.status.is_some_and(|s| s >= 500)) {
            "error"
        } else {
            "ok"
        };
        let mut trace_text = String::with_capacity(32);
        match trace {
            TraceId::Hex(v) => crate::extract::trace::push_hex(&mut trace_text, *v, 32),
            TraceId::Custom(c) => trace_text.push_str(c),
        }
        // Hex ids need no escaping; a rule's own may.
        let plain_id = matches!(trace, TraceId::Hex(_));
        let mut line = Line::new(out, self.layout.as_mut());
        line.plain("logmill", "trace");
        line.id(&trace_text, plain_id);
        let mut order: Vec<usize> = (0..t.services.len()).collect();
        order.sort_by(|&a, &b| {
            (t.service_first[a], &t.services[a]).cmp(&(t.service_first[b], &t.services[b]))
        });
        line.strings("services", order.iter().map(|&i| &*t.services[i]));
        line.string("root_service", root_service);
        line.string("route", route);
        line.u64("first_ms", t.first_ms);
        line.u64("last_ms", t.last_ms);
        line.f64("duration_ms", duration_ms);
        line.u64("events", t.events);
        line.u64("errors", t.errors);
        line.u64("spans", t.spans.len() as u64);
        line.plain("outcome", outcome);
        line.u64("truncated", t.truncated);
        line.bool("evicted", evicted);
        line.end();
        // One edge per call whose both ends are known, in span id order (deterministic).
        let mut calls: Vec<(&SpanId, &Span)> = t.spans.iter().collect();
        calls.sort_unstable_by_key(|(id, _)| **id);
        for (_, child) in calls {
            let Some(parent) = child.parent.and_then(|p| t.spans.get(&p)) else {
                continue;
            };
            // A call is counted when it completed (it says its status or duration).
            if child.status.is_none() && child.duration_ms.is_none() {
                continue;
            }
            self.stats.edges += 1;
            let failed = child.error || child.status.is_some_and(|s| s >= 500);
            let mut line = Line::new(out, self.layout.as_mut());
            line.plain("logmill", "edge");
            line.id(&trace_text, plain_id);
            line.string("client", name(parent.service));
            line.string("server", name(child.service));
            line.bool("failed", failed);
            if let Some(d) = child.duration_ms {
                line.f64("duration_ms", d);
            }
            line.end();
        }
    }
}

/// Where the values of the lines a [`Gatherer`] writes are, when it is asked for them
/// (`Gatherer::layout`): a reader in the same process hands them to rules without parsing
/// the JSON again (`Engine::process_members`).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Per line, in order: where it is in the output (without its newline), and the range of
    /// its members in `members`.
    lines: Vec<(usize, usize, u32, u32)>,
    /// Spans are byte offsets in their line.
    members: Vec<Member>,
}

impl Layout {
    /// Forgets every line (when their output is cleared).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.members.clear();
    }

    /// Lines recorded since the last `clear`.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `i`'s members.
    pub fn members(&self, i: usize) -> &[Member] {
        let (_, _, a, b) = self.lines[i];
        &self.members[a as usize..b as usize]
    }

    /// Line `i` of `out`, the output the lines were appended to (since the last `clear`).
    pub fn line<'a>(&self, out: &'a str, i: usize) -> &'a str {
        let (a, b, _, _) = self.lines[i];
        &out[a..b]
    }
}

/// One summary or edge line being written: a flat JSON object, its members noted in the
/// layout when there is one.
struct Line<'a> {
    out: &'a mut String,
    layout: Option<&'a mut Layout>,
    /// Where the line starts in `out`, and its first member in the layout.
    start: usize,
    first: u32,
    empty: bool,
}

impl<'a> Line<'a> {
    fn new(out: &'a mut String, layout: Option<&'a mut Layout>) -> Line<'a> {
        out.push('{');
        let first = layout.as_ref().map_or(0, |l| l.members.len() as u32);
        Line {
            start: out.len() - 1,
            out,
            layout,
            first,
            empty: true,
        }
    }

    /// Writes the key; returns where its value starts.
    fn key(&mut self, key: &str) -> usize {
        if !std::mem::replace(&mut self.empty, false) {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out.len()
    }

    fn mark(&mut self, key: &'static str, start: usize, end: usize, kind: Kind) {
        if let Some(l) = self.layout.as_deref_mut() {
            l.members.push(Member {
                key,
                start: (start - self.start) as u32,
                end: (end - self.start) as u32,
                kind,
            });
        }
    }

    fn string(&mut self, key: &'static str, v: &str) {
        let at = self.key(key);
        json_str(self.out, v);
        let end = self.out.len();
        // Every escape is longer than what it stands for.
        let kind = if end - at - 2 == v.len() {
            Kind::String
        } else {
            Kind::Escaped
        };
        self.mark(key, at + 1, end - 1, kind);
    }

    /// A string known to need no escaping.
    fn plain(&mut self, key: &'static str, v: &str) {
        debug_assert!(!v.contains(['"', '\\']) && !v.contains(|c: char| c < ' '));
        let at = self.key(key);
        self.out.push('"');
        self.out.push_str(v);
        self.out.push('"');
        let end = self.out.len();
        self.mark(key, at + 1, end - 1, Kind::String);
    }

    fn id(&mut self, id: &str, plain: bool) {
        if plain {
            self.plain("trace_id", id);
        } else {
            self.string("trace_id", id);
        }
    }

    fn strings<'s>(&mut self, key: &'static str, vs: impl Iterator<Item = &'s str>) {
        let at = self.key(key);
        self.out.push('[');
        for (i, v) in vs.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            json_str(self.out, v);
        }
        self.out.push(']');
        let end = self.out.len();
        self.mark(key, at, end, Kind::Array);
    }

    fn u64(&mut self, key: &'static str, v: u64) {
        let at = self.key(key);
        push_u64(self.out, v);
        let end = self.out.len();
        self.mark(key, at, end, Kind::Scalar);
    }

    fn f64(&mut self, key: &'static str, v: f64) {
        let at = self.key(key);
        // A whole number of milliseconds (a trace's span, most roots) is written as `Display`
        // writes it, without its float formatting.
        if v.fract() == 0.0 && (1.0..1e15).contains(&v) {
            push_u64(self.out, v as u64);
        } else {
            let _ = write!(self.out, "{v}");
        }
        let end = self.out.len();
        self.mark(key, at, end, Kind::Scalar);
    }

    fn bool(&mut self, key: &'static str, v: bool) {
        let at = self.key(key);
        self.out.push_str(if v { "true" } else { "false" });
        let end = self.out.len();
        self.mark(key, at, end, Kind::Scalar);
    }

    fn end(self) {
        self.out.push('}');
        if let Some(l) = self.layout {
            let end = self.out.len();
            l.lines
                .push((self.start, end, self.first, l.members.len() as u32));
        }
        self.out.push('\n');
    }
}

/// `v` in decimal, as `Display` writes it.
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[at..]).expect("decimal digits are ASCII"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &mut String, trace: u128, span: u64, parent: u64, t: u64, svc: &str) -> TraceEvent {
        let a = text.len() as u32;
        text.push_str(svc);
        TraceEvent {
            record: 0,
            trace: TraceId::Hex(trace),
            span: Some(SpanId(span)),
            parent: (parent != 0).then_some(SpanId(parent)),
            time_ms: t,
            service: (a, text.len() as u32),
            route: (0, 0),
            error: false,
            status: None,
            duration_ms: None,
        }
    }

    #[test]
    fn a_quiet_trace_is_summarised_with_its_edges() {
        let mut g = Gatherer::new(Config {
            window_ms: 100,
            ..Config::default()
        });
        let mut text = String::new();
        let mut out = String::new();
        let mut a = ev(&mut text, 1, 10, 0, 1000, "gateway");
        g.observe(&a, &text, &mut out);
        let mut b = ev(&mut text, 1, 11, 10, 1005, "cart");
        b.status = Some(503);
        b.error = true;
        b.duration_ms = Some(4.5);
        g.observe(&b, &text, &mut out);
        a.time_ms = 1010;
        a.status = Some(502);
        a.duration_ms = Some(10.0);
        g.observe(&a, &text, &mut out);
        assert!(out.is_empty());
        // Another trace's event 100 ms later closes the first.
        let c = ev(&mut text, 2, 20, 0, 1110, "gateway");
        g.observe(&c, &text, &mut out);
        assert_eq!(
            out,
            "{\"logmill\":\"trace\",\"trace_id\":\"00000000000000000000000000000001\",\"services\":[\"gateway\",\"cart\"],\"root_service\":\"gateway\",\"route\":\"\",\"first_ms\":1000,\"last_ms\":1010,\"duration_ms\":10,\"events\":3,\"errors\":1,\"spans\":2,\"outcome\":\"error\",\"truncated\":0,\"evicted\":false}\n\
             {\"logmill\":\"edge\",\"trace_id\":\"00000000000000000000000000000001\",\"client\":\"gateway\",\"server\":\"cart\",\"failed\":true,\"duration_ms\":4.5}\n"
        );
        assert_eq!(g.open_traces(), 1);
        out.clear();
        g.flush(&mut out);
        assert!(out.contains("\"trace_id\":\"00000000000000000000000000000002\""));
        assert_eq!(g.open_traces(), 0);
    }

    /// Issue 8, repartitioned traces: one trace's events from two sources, interleaved both
    /// ways (each source in its order), summarise the same; services of one millisecond are
    /// named by name whichever came first.
    #[test]
    fn issue8_a_summary_does_not_depend_on_how_sources_interleave() {
        let mut text = String::new();
        let mut root = ev(&mut text, 1, 10, 0, 1000, "gateway");
        root.route = root.service;
        let auth = ev(&mut text, 1, 11, 10, 1002, "auth");
        let mut cart = ev(&mut text, 1, 12, 10, 1002, "cart");
        cart.status = Some(200);
        cart.duration_ms = Some(3.0);
        let mut end = root.clone();
        end.time_ms = 1009;
        end.status = Some(200);
        end.duration_ms = Some(9.0);
        let one = [&root, &end];
        let two = [&cart, &auth];
        let orders: [Vec<&TraceEvent>; 3] = [
            vec![one[0], one[1], two[0], two[1]],
            vec![two[0], one[0], two[1], one[1]],
            vec![two[0], two[1], one[0], one[1]],
        ];
        let mut seen = Vec::new();
        for order in orders {
            let mut g = Gatherer::new(Config::default());
            let mut out = String::new();
            for e in order {
                g.observe_at(e, &text, &mut out, 0);
            }
            g.flush(&mut out);
            seen.push(out);
        }
        assert!(
            seen[0].contains("\"services\":[\"gateway\",\"auth\",\"cart\"],\"root_service\":\"gateway\",\"route\":\"gateway\""),
            "{}",
            seen[0]
        );
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0], seen[2]);
    }

    #[test]
    fn a_restored_gatherer_goes_on_as_the_original_would() {
        let config = Config {
            window_ms: 50,
            max_open: 5,
            max_spans: 4,
        };
        let mut text = String::new();
        let events: Vec<TraceEvent> = (0..60u64)
            .map(|i| {
                let mut e = ev(
                    &mut text,
                    u128::from(i % 7) + 1,
                    i % 5 + 1,
                    i % 3,
                    i * 7,
                    ["a", "b", "c"][(i % 3) as usize],
                );
                e.status = (i % 4 == 0).then_some(200 + (i % 2) as u16 * 300);
                e.duration_ms = (i % 4 == 0).then_some(i as f64 / 4.0);
                e.error = i % 11 == 0;
                e
            })
            .collect();
        let (mut straight, mut out_a) = (Gatherer::new(config), String::new());
        for e in &events {
            straight.observe(e, &text, &mut out_a);
        }
        straight.flush(&mut out_a);
        let (mut first, mut out_b) = (Gatherer::new(config), String::new());
        for e in &events[..31] {
            first.observe(e, &text, &mut out_b);
        }
        let bytes = first.encode();
        let mut restored = Gatherer::decode(&bytes, config).unwrap();
        assert_eq!(restored.encode(), bytes);
        for e in &events[31..] {
            restored.observe(e, &text, &mut out_b);
        }
        restored.flush(&mut out_b);
        assert_eq!(out_a, out_b);
        for cut in 0..bytes.len() {
            assert!(Gatherer::decode(&bytes[..cut], config).is_err());
        }
    }

    #[test]
    fn the_caps_evict_the_quietest_and_truncate_spans() {
        let mut g = Gatherer::new(Config {
            window_ms: 1_000_000,
            max_open: 10,
            max_spans: 3,
        });
        let mut text = String::new();
        let mut out = String::new();
        for t in 0..100u64 {
            for s in 0..5u64 {
                let e = ev(&mut text, u128::from(t) + 1, s + 1, 0, t, "svc");
                g.observe(&e, &text, &mut out);
            }
            assert!(g.open_traces() <= 10);
        }
        assert_eq!(g.stats.evicted, 90);
        assert_eq!(g.stats.truncated, 200);
        assert_eq!(out.lines().count(), 90);
        assert!(out.lines().all(|l| l.contains("\"evicted\":true")));
        assert!(out.lines().all(|l| l.contains("\"events\":5,")));
        // The quietest go first: traces 1 to 90, in order.
        assert!(out.lines().next().unwrap().contains("0000000001\""));
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let mut v = 1u64;
        for n in [0, 9, 10, 99, 100, u64::MAX]
            .into_iter()
            .chain((0..200).map(|_| {
                v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                v >> (v % 64)
            }))
        {
            let mut out = String::from("x");
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    /// Each field's text in a line as one reader read it; `None` when it did not.
    type Read = Option<Vec<Option<String>>>;

    /// What `json::fill` (from the layout) and `json::scan` read of each line, by field.
    fn read_both(
        lines: &str,
        layout: &Layout,
        names: &[&str],
        max_depth: usize,
    ) -> Vec<(Read, Read)> {
        use crate::decode::Decoded;
        use crate::decode::json::{PathTrie, fill, scan};
        let paths: Vec<_> = names
            .iter()
            .map(|n| crate::rules::compile::parse_path(n).unwrap())
            .collect();
        let trie = PathTrie::new(&paths);
        let texts = |line: &str, d: &Decoded| -> Vec<Option<String>> {
            d.slots
                .iter()
                .map(|s| s.map(|s| s.get(line, &d.scratch).to_string()))
                .collect()
        };
        assert_eq!(lines.lines().count(), layout.len());
        lines
            .lines()
            .enumerate()
            .map(|(i, line)| {
                let mut filled = Decoded::default();
                filled.slots.resize(names.len(), None);
                let filled = fill(line, layout.members(i), &trie, max_depth, &mut filled)
                    .then(|| texts(line, &filled));
                let mut scanned = Decoded::default();
                scanned.slots.resize(names.len(), None);
                let scanned = scan(line, &trie, max_depth, &mut scanned)
                    .is_ok()
                    .then(|| texts(line, &scanned));
                (filled, scanned)
            })
            .collect()
    }

    #[test]
    fn a_summary_s_layout_reads_as_its_json() {
        let mut g = Gatherer::new(Config {
            window_ms: 10,
            max_open: 4,
            max_spans: 3,
        });
        g.layout = Some(Layout::default());
        let mut text = String::new();
        let mut out = String::new();
        // Names that JSON escapes, custom ids, errors, durations, evictions, truncation.
        let services = ["gate\"way", "caf\u{e9}", "a\\b", "tab\there", "c\u{1}"];
        for i in 0..200u64 {
            let mut e = ev(
                &mut text,
                u128::from(i % 9) + 1,
                i % 5 + 1,
                i % 3,
                i * 3,
                services[(i % 5) as usize],
            );
            if i % 7 == 0 {
                e.trace = crate::extract::trace::custom("req-\"42\"").unwrap();
            }
            let at = text.len() as u32;
            text.push_str(["/a", "", "/b\\c"][(i % 3) as usize]);
            e.route = (at, text.len() as u32);
            e.status = (i % 4 == 0).then_some(200 + (i % 2) as u16 * 300);
            e.duration_ms = (i % 3 == 0).then_some(i as f64 / 7.0);
            e.error = i % 11 == 0;
            g.observe(&e, &text, &mut out);
        }
        g.flush(&mut out);
        let layout = g.layout.take().unwrap();
        assert!(layout.len() > 50);
        let names = [
            "logmill",
            "trace_id",
            "services",
            "root_service",
            "route",
            "first_ms",
            "last_ms",
            "duration_ms",
            "events",
            "errors",
            "spans",
            "outcome",
            "truncated",
            "evicted",
            "client",
            "server",
            "failed",
            "absent",
            "message",
        ];
        for (filled, scanned) in read_both(&out, &layout, &names, 32) {
            assert!(filled.is_some());
            assert_eq!(filled, scanned);
        }
        // A path below a member, or a depth limit the array is over: the caller scans.
        let below = read_both(&out, &layout, &["outcome", "services[0]"], 32);
        for ((filled, scanned), line) in below.iter().zip(out.lines()) {
            let summary = line.starts_with("{\"logmill\":\"trace\"");
            assert_eq!(filled.is_none(), summary);
            assert!(filled.is_none() || filled == scanned);
        }
        for (filled, _) in read_both(&out, &layout, &["outcome"], 1) {
            assert_eq!(filled, None);
        }
    }

    #[test]
    fn whole_milliseconds_are_written_as_display_writes_them() {
        let mut out = String::new();
        for v in [
            0.0,
            -0.0,
            1.0,
            2.5,
            10.0,
            999_999_999_999_999.0,
            1e15,
            1e16,
            1e21,
            0.1,
            -3.0,
        ] {
            out.clear();
            let mut line = Line::new(&mut out, None);
            line.f64("d", v);
            line.end();
            assert_eq!(out, format!("{{\"d\":{v}}}\n"));
        }
    }
}
