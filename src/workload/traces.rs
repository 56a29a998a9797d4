//! Multi-service traces as log lines (`logmill gen traces N`): the workload for correlating
//! logs by trace (exemplars, per-trace summaries, a service graph, trace-aware retention).
//!
//! A trace enters at `gateway` with an HTTP route and method and calls 3 to 6 services of
//! eight (`gateway`, `auth`, `cart`, `orders`, `payments`, `inventory`, `search`, `email`)
//! along a fixed call graph; each span is one service handling one call. A span logs 1 to 3
//! events: `request received` when it starts (always, for the root), a progress message in
//! between, and `request completed` or `request failed` when it ends, which alone carries
//! `status` and `duration_ms`. Latencies are lognormal per service with a tail of slow spans;
//! a call starts at least 1 ms after its caller and ends at least 1 ms before it, so containment
//! holds at the timestamps' millisecond precision too. In [`ERROR_SHARE`] of the traces one
//! span fails (status 500, 503 or 504, level `error`, an `error` message) and every ancestor
//! fails after it (500, and 502 at the gateway). Traces start on average every 10 ms from
//! 2024-03-10T12:00:00Z and most last 15–100 ms (the slow tail seconds), so several are open
//! at once; lines are ordered by
//! time, the events of concurrent traces interleaved as in a real stream. `N` counts lines: the
//! stream stops at exactly `N`, leaving the last traces open.
//!
//! `payments` and `email` log text with a W3C `traceparent` (flags `00` for the 10% of traces
//! not sampled); the others log JSON. Optional fields are in brackets:
//!
//! ```text
//! {"ts":"2024-03-10T12:00:00.123Z","level":"info","service":"gateway","msg":"request completed","trace_id":"<32 hex>","span_id":"<16 hex>"[,"parent_span_id":"<16 hex>"][,"route":"/api/v1/orders/:id","method":"GET"][,"status":200,"duration_ms":12.5][,"error":"…"]}
//! 2024-03-10T12:00:00.123Z INFO payments traceparent=00-<32 hex>-<16 hex>-01 parent=<16 hex or -> msg="request completed"[ route=… method=…][ status=200 duration_ms=12.5][ error="…"]
//! ```
//!
//! Route and method are on the root's first and last events. Ids are lowercase hex and never
//! all zeros; no string needs escaping.
//!
//! # Ground truth from the lines alone
//!
//! [`trace_truth`](super::trace_truth) computes it; by hand:
//! - a trace is its `trace_id` (the traceparent's second part); its spans are its `span_id`s;
//! - services: in the order of their first event; root service, route and method: those of the
//!   span without a parent;
//! - error: any event at level `error` (only the failing span and its ancestors log one);
//! - duration: the root's `duration_ms`, or its last timestamp minus its first (the root's
//!   first and last events), which differ by less than 1 ms (timestamps are truncated to ms);
//! - service-graph edges: per child span, the parent span's service → the child's service;
//!   per pair, requests (child spans), failures (child `status` ≥ 500) and latency (the child's
//!   `duration_ms`). A stream cut at `N` lines leaves spans without a completion: only
//!   completed child spans count, and a parent whose only event was cut leaves its children's
//!   edges unknown.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use super::Rng;

/// The share of traces in which one span fails.
pub const ERROR_SHARE: f64 = 0.05;
/// The share of spans that are slow, 5 to 25 times their service's usual work.
const SLOW_SHARE: f64 = 0.02;
/// The share of traces whose traceparent says not sampled (flags `00`).
const UNSAMPLED_SHARE: f64 = 0.1;
/// 2024-03-10T12:00:00Z, the morning the other workloads log too.
const EPOCH_MS: u64 = 1_710_072_000_000;
/// Times are kept in ticks of 100 µs so that durations print exactly with one decimal.
const TICKS_PER_MS: u64 = 10;
/// Mean time between trace starts: a few times shorter than a trace, so traces overlap.
const MEAN_ARRIVAL_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

struct Service {
    name: &'static str,
    /// Median of the span's own work, the time not spent waiting for its calls.
    work_ms: f64,
    /// Services it calls (indices into `SERVICES`); the graph has no cycle.
    calls: &'static [usize],
    format: Format,
    /// What it logs while working.
    progress: &'static str,
    /// Why it fails when the failure starts there.
    failure: &'static str,
}

const GATEWAY: usize = 0;
const AUTH: usize = 1;
const CART: usize = 2;
const ORDERS: usize = 3;
const PAYMENTS: usize = 4;
const INVENTORY: usize = 5;
const SEARCH: usize = 6;
const EMAIL: usize = 7;

const SERVICES: &[Service] = &[
    Service {
        name: "gateway",
        work_ms: 1.5,
        calls: &[AUTH, CART, ORDERS, SEARCH, INVENTORY],
        format: Format::Json,
        progress: "routing request",
        failure: "no healthy upstream",
    },
    Service {
        name: "auth",
        work_ms: 4.0,
        calls: &[],
        format: Format::Json,
        progress: "validating token",
        failure: "token store unavailable",
    },
    Service {
        name: "cart",
        work_ms: 6.0,
        calls: &[INVENTORY],
        format: Format::Json,
        progress: "loading cart",
        failure: "cache connection refused",
    },
    Service {
        name: "orders",
        work_ms: 10.0,
        calls: &[PAYMENTS, INVENTORY, CART, EMAIL],
        format: Format::Json,
        progress: "loading order",
        failure: "database deadline exceeded",
    },
    Service {
        name: "payments",
        work_ms: 40.0,
        calls: &[],
        format: Format::Text,
        progress: "contacting card processor",
        failure: "card processor timeout",
    },
    Service {
        name: "inventory",
        work_ms: 7.0,
        calls: &[],
        format: Format::Json,
        progress: "checking stock",
        failure: "stock table deadlock",
    },
    Service {
        name: "search",
        work_ms: 25.0,
        calls: &[INVENTORY],
        format: Format::Json,
        progress: "querying index",
        failure: "index shard unavailable",
    },
    Service {
        name: "email",
        work_ms: 15.0,
        calls: &[],
        format: Format::Text,
        progress: "rendering confirmation",
        failure: "smtp relay refused connection",
    },
];

/// Entry points: method, route template, and the service behind the gateway that serves it.
const ROUTES: &[((&str, &str, usize), u32)] = &[
    (("GET", "/api/v1/orders/:id", ORDERS), 25),
    (("POST", "/api/v1/orders", ORDERS), 10),
    (("GET", "/api/v1/cart", CART), 20),
    (("POST", "/api/v1/cart/items", CART), 15),
    (("GET", "/api/v1/search", SEARCH), 20),
    (("GET", "/api/v1/products/:sku", INVENTORY), 10),
];

/// Events per span other than the root, which always logs its start and end.
const EVENTS: &[(u8, u32)] = &[(1, 20), (2, 40), (3, 40)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The failure starts in this span.
    Origin { status: u16 },
    /// A call to `callee` failed with `returned` and this span fails with it.
    Upstream {
        status: u16,
        callee: usize,
        returned: u16,
    },
}

impl Failure {
    fn status(self) -> u16 {
        match self {
            Failure::Origin { status } | Failure::Upstream { status, .. } => status,
        }
    }
}

struct Span {
    id: u64,
    parent: Option<usize>,
    service: usize,
    children: Vec<usize>,
    /// Ticks since the Unix epoch.
    start: u64,
    end: u64,
    events: u8,
    slow: bool,
    failure: Option<Failure>,
}

/// One trace, built whole before any of its lines is written. Spans are in call order: a
/// parent comes before its children.
struct Trace {
    id: [u64; 2],
    sampled: bool,
    method: &'static str,
    route: &'static str,
    spans: Vec<Span>,
}

impl Trace {
    fn build(rng: &mut Rng, start: u64) -> Trace {
        let &(method, route, entry) = rng.weighted(ROUTES);
        let want = 3 + rng.below(4) as usize;
        let mut trace = Trace {
            // Ids are never zero, as W3C requires: the xorshift state never is, and
            // multiplying it by an odd constant maps only zero to zero.
            id: [rng.next_u64(), rng.next_u64()],
            sampled: rng.unit() >= UNSAMPLED_SHARE,
            method,
            route,
            spans: Vec::new(),
        };
        trace.call(rng, None, GATEWAY);
        // The gateway checks the caller's token before routing, most of the time.
        if rng.unit() < 0.85 {
            trace.call(rng, Some(0), AUTH);
        }
        trace.call(rng, Some(0), entry);
        while trace.services() < want {
            let open = trace.calls(|t, callee| !t.has(callee));
            // Never empty: below six services, one of the gateway's five callees is missing.
            let (caller, callee) = open[rng.below(open.len() as u64) as usize];
            trace.call(rng, Some(caller), callee);
        }
        // A second call to a service already in the trace (stock checked by cart and by
        // orders), so that edges repeat within a trace as they do in real ones.
        if rng.unit() < 0.2 {
            let again = trace.calls(|t, callee| t.has(callee));
            if !again.is_empty() {
                let (caller, callee) = again[rng.below(again.len() as u64) as usize];
                trace.call(rng, Some(caller), callee);
            }
        }
        if rng.unit() < ERROR_SHARE {
            trace.fail(rng);
        }
        trace.time(rng, start);
        trace
    }

    fn call(&mut self, rng: &mut Rng, parent: Option<usize>, service: usize) {
        let index = self.spans.len();
        let events = match parent {
            None => 2 + rng.below(2) as u8,
            Some(p) => {
                self.spans[p].children.push(index);
                *rng.weighted(EVENTS)
            }
        };
        self.spans.push(Span {
            id: rng.next_u64(),
            parent,
            service,
            children: Vec::new(),
            start: 0,
            end: 0,
            events,
            slow: rng.unit() < SLOW_SHARE,
            failure: None,
        });
    }

    fn has(&self, service: usize) -> bool {
        self.spans.iter().any(|s| s.service == service)
    }

    fn services(&self) -> usize {
        (0..SERVICES.len()).filter(|&s| self.has(s)).count()
    }

    /// Calls the graph allows from the spans so far, `(caller span, callee service)`, that
    /// `keep` accepts; a span calls a service at most once.
    fn calls(&self, keep: impl Fn(&Trace, usize) -> bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, span) in self.spans.iter().enumerate() {
            for &callee in SERVICES[span.service].calls {
                let called = span
                    .children
                    .iter()
                    .any(|&c| self.spans[c].service == callee);
                if !called && keep(self, callee) {
                    out.push((i, callee));
                }
            }
        }
        out
    }

    fn fail(&mut self, rng: &mut Rng) {
        let mut at = rng.below(self.spans.len() as u64) as usize;
        let mut returned = [500, 503, 504][rng.below(3) as usize];
        self.spans[at].failure = Some(Failure::Origin { status: returned });
        while let Some(parent) = self.spans[at].parent {
            let status = if parent == 0 { 502 } else { 500 };
            let callee = self.spans[at].service;
            self.spans[parent].failure = Some(Failure::Upstream {
                status,
                callee,
                returned,
            });
            (at, returned) = (parent, status);
        }
    }

    /// Durations bottom-up (children come after their parent, so in reverse order), then
    /// start times top-down.
    fn time(&mut self, rng: &mut Rng, start: u64) {
        let n = self.spans.len();
        let (mut offset, mut duration) = (vec![0u64; n], vec![0u64; n]);
        for i in (0..n).rev() {
            let span = &self.spans[i];
            let mut work = SERVICES[span.service].work_ms * (0.5 * rng.gauss()).exp();
            if span.slow {
                work *= 5.0 + 20.0 * rng.unit();
            }
            if span.failure == Some(Failure::Origin { status: 504 }) {
                // A timeout: the span waited for something that never answered.
                work *= 10.0 + 20.0 * rng.unit();
            }
            let work = (work * TICKS_PER_MS as f64).round() as u64;
            let before = (work * 3 / 5).max(TICKS_PER_MS);
            let after = (work - work * 3 / 5).max(TICKS_PER_MS);
            let (mut end, mut previous) = (before, before);
            for (k, &child) in span.children.iter().enumerate() {
                // Most calls wait for the previous one; some run concurrently with it.
                let at = if k > 0 && rng.unit() < 0.25 {
                    previous
                } else {
                    end + rng.below(2 * TICKS_PER_MS)
                };
                offset[child] = at;
                end = end.max(at + duration[child]);
                previous = at;
            }
            duration[i] = end + after;
        }
        for i in 0..n {
            let base = self.spans[i].parent.map_or(start, |p| self.spans[p].start);
            self.spans[i].start = base + offset[i];
            self.spans[i].end = self.spans[i].start + duration[i];
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    at: u64,
    /// Breaks ties in the order lines were queued, so equal times keep call order.
    seq: u64,
    line: Vec<u8>,
}

/// The open traces: lines already made and not yet written, in time order.
pub(super) struct Traces {
    pending: BinaryHeap<Reverse<Pending>>,
    next_start: u64,
    seq: u64,
}

impl Traces {
    pub(super) fn new() -> Traces {
        Traces {
            pending: BinaryHeap::new(),
            next_start: EPOCH_MS * TICKS_PER_MS,
            seq: 0,
        }
    }

    pub(super) fn line(&mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        // A trace not yet started logs nothing before its start, so a line earlier than the
        // next start is final.
        while self
            .pending
            .peek()
            .is_none_or(|Reverse(p)| p.at > self.next_start)
        {
            self.open(rng);
        }
        if let Some(Reverse(p)) = self.pending.pop() {
            out.extend_from_slice(&p.line);
        }
    }

    /// Builds the next trace and queues its lines.
    fn open(&mut self, rng: &mut Rng) -> Trace {
        let trace = Trace::build(rng, self.next_start);
        for span in &trace.spans {
            self.queue(rng, &trace, span);
        }
        let gap = -rng.unit().max(1e-12).ln() * MEAN_ARRIVAL_MS * TICKS_PER_MS as f64;
        self.next_start += gap as u64;
        trace
    }

    fn queue(&mut self, rng: &mut Rng, trace: &Trace, span: &Span) {
        let root = span.parent.is_none();
        let service = &SERVICES[span.service];
        if span.events >= 2 {
            let mut e = Event::new(span.start, Level::Info, "request received");
            if root {
                e.request = Some((trace.method, trace.route));
            }
            self.push(trace, span, &e);
        }
        if span.events == 3 {
            // Strictly inside the span: a progress message is neither its start nor its end.
            let at = span.start + 1 + rng.below(span.end - span.start - 1);
            let e = if span.slow {
                Event::new(at, Level::Warn, "slower than usual")
            } else {
                Event::new(at, Level::Info, service.progress)
            };
            self.push(trace, span, &e);
        }
        let mut e = match span.failure {
            None => Event::new(span.end, Level::Info, "request completed"),
            Some(failure) => {
                let mut e = Event::new(span.end, Level::Error, "request failed");
                e.error = Some(match failure {
                    Failure::Origin { .. } => service.failure.to_string(),
                    Failure::Upstream {
                        callee, returned, ..
                    } => format!("upstream {} returned {returned}", SERVICES[callee].name),
                });
                e
            }
        };
        e.status = Some(match span.failure {
            Some(failure) => failure.status(),
            None if root && trace.method == "POST" => 201,
            None => 200,
        });
        e.duration = Some(span.end - span.start);
        if root {
            e.request = Some((trace.method, trace.route));
        }
        self.push(trace, span, &e);
    }

    fn push(&mut self, trace: &Trace, span: &Span, event: &Event) {
        let mut line = Vec::with_capacity(256);
        let parent = span.parent.map(|p| trace.spans[p].id);
        match SERVICES[span.service].format {
            Format::Json => json(&mut line, trace, span, parent, event),
            Format::Text => text(&mut line, trace, span, parent, event),
        }
        self.pending.push(Reverse(Pending {
            at: event.at,
            seq: self.seq,
            line,
        }));
        self.seq += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn json(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

struct Event {
    at: u64,
    level: Level,
    msg: &'static str,
    request: Option<(&'static str, &'static str)>,
    status: Option<u16>,
    duration: Option<u64>,
    error: Option<String>,
}

impl Event {
    fn new(at: u64, level: Level, msg: &'static str) -> Event {
        Event {
            at,
            level,
            msg,
            request: None,
            status: None,
            duration: None,
            error: None,
        }
    }
}

fn json(out: &mut Vec<u8>, trace: &Trace, span: &Span, parent: Option<u64>, e: &Event) {
    out.extend_from_slice(b"{\"ts\":\"");
    timestamp(out, e.at / TICKS_PER_MS);
    let _ = write!(
        out,
        "\",\"level\":\"{}\",\"service\":\"{}\",\"msg\":\"{}\",\"trace_id\":\"{:016x}{:016x}\",\"span_id\":\"{:016x}\"",
        e.level.json(),
        SERVICES[span.service].name,
        e.msg,
        trace.id[0],
        trace.id[1],
        span.id,
    );
    if let Some(parent) = parent {
        let _ = write!(out, ",\"parent_span_id\":\"{parent:016x}\"");
    }
    if let Some((method, route)) = e.request {
        let _ = write!(out, ",\"route\":\"{route}\",\"method\":\"{method}\"");
    }
    if let Some(status) = e.status {
        let _ = write!(out, ",\"status\":{status}");
    }
    if let Some(d) = e.duration {
        let _ = write!(
            out,
            ",\"duration_ms\":{}.{}",
            d / TICKS_PER_MS,
            d % TICKS_PER_MS
        );
    }
    if let Some(error) = &e.error {
        let _ = write!(out, ",\"error\":\"{error}\"");
    }
    out.extend_from_slice(b"}\n");
}

fn text(out: &mut Vec<u8>, trace: &Trace, span: &Span, parent: Option<u64>, e: &Event) {
    timestamp(out, e.at / TICKS_PER_MS);
    let _ = write!(
        out,
        " {} {} traceparent=00-{:016x}{:016x}-{:016x}-{} parent=",
        e.level.text(),
        SERVICES[span.service].name,
        trace.id[0],
        trace.id[1],
        span.id,
        if trace.sampled { "01" } else { "00" },
    );
    match parent {
        Some(parent) => {
            let _ = write!(out, "{parent:016x}");
        }
        None => out.push(b'-'),
    }
    let _ = write!(out, " msg=\"{}\"", e.msg);
    if let Some((method, route)) = e.request {
        let _ = write!(out, " route={route} method={method}");
    }
    if let Some(status) = e.status {
        let _ = write!(out, " status={status}");
    }
    if let Some(d) = e.duration {
        let _ = write!(
            out,
            " duration_ms={}.{}",
            d / TICKS_PER_MS,
            d % TICKS_PER_MS
        );
    }
    if let Some(error) = &e.error {
        let _ = write!(out, " error=\"{error}\"");
    }
    out.push(b'\n');
}

/// RFC 3339 in UTC with milliseconds, `2024-03-10T12:00:00.123Z`.
fn timestamp(out: &mut Vec<u8>, ms: u64) {
    let (days, ms) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = crate::extract::time::civil_from_days(days as i64);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    );
}

#[cfg(test)]
mod tests;
