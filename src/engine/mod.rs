//! The sans-IO core: a batch of records in, fates out, metric updates pre-aggregated.
//!
//! `Engine` runs `decode → extract → derive → reduce` for one worker. It owns only scratch
//! space and worker-local aggregates; it does no I/O, takes the time as an argument and never
//! blocks, so the same code runs under `replay`, the tests and the benchmarks.

use std::sync::Arc;

pub mod budget;
pub mod explain;
pub mod split;

use crate::correlate::traces::TraceEvent;
use crate::correlate::{self, Resolved};
use crate::decode::envelope::{Declared, Envelope};
use crate::decode::json::Member;
use crate::decode::{
    DecodeError, Decoded, Decoder, Format, InputFormat, Limits, Part, Span, Unwrapped, cri,
};
use crate::derive::exemplar::Exemplar;
use crate::derive::{Aggregates, Stamp, Version, push_label};
use crate::extract::prefilter;
use crate::extract::time::TimeFormat;
use crate::extract::value::{ValueError, convert};
use crate::reduce::hash::{combine, hash_bytes, hash_span};
use crate::reduce::{Ask, Decision, Fate, KeySpans, MAX_KEY_SPANS, Reason, ValueFailure};
use crate::rules::program::{
    Cond, FieldRef, KeyFields, LabelSource, Op, Program, Reduce, Rule, Step, Test, TracePart,
};

/// One record as the source hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub payload: &'a [u8],
    /// The Kafka topic, or the input file's name in replay.
    pub topic: &'a str,
    /// Which `set` of a gauge wins: the event time, the partition and the offset in the
    /// service; the byte offset in replay (see `derive::Version`).
    pub version: Version,
    /// The event's time, for `expire_after`: the record's Kafka timestamp (made monotonic within
    /// its partition) in the service, the wall clock in replay.
    pub event_ms: u64,
    /// Which event of its message the record is, when the message held many (`split`).
    pub part: Part,
}

/// Per-record counters, Quickwit-style: plain integers on the hot path, published to the
/// `metrics` facade once per batch by `telemetry::publish`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub events_in: u64,
    /// Bytes of every event read, and of the events kept (before reduction).
    pub bytes_in: u64,
    pub bytes_kept: u64,
    pub kept: u64,
    pub dropped: u64,
    pub dead_lettered: u64,
    pub unmatched: u64,
    /// By `DecodeError` as index.
    pub decode_errors: [u64; DecodeError::ALL.len()],
    pub by_format: [u64; 3],
    /// Events unwrapped from an envelope, by `Envelope` as index.
    pub by_envelope: [u64; Envelope::ALL.len()],
    /// By rule index.
    pub rule_matches: Vec<u64>,
    /// `(rule, reason)` counts of values that could not be used.
    pub value_errors: Vec<(u32, ValueError, u64)>,
    pub missing_values: u64,
    pub eval_nanos: u64,
    /// By rule, then by the event's format (`Format as usize`): events the prefilter let
    /// through that the rule skipped because they were decoded as another format.
    pub format_skips: Vec<[u64; 3]>,
    /// What the reduction did (filled where it runs: the service's workers, replay's writer).
    pub reduction: crate::reduce::Reduction,
    /// Trace ids that were not used, by source and reason.
    pub trace_invalid: correlate::InvalidCounts,
}

impl Counters {
    fn format_skipped(&mut self, program: &Program, rule: u32, got: Format) {
        // Sized lazily: callers reset the counters without knowing of this field.
        if self.format_skips.len() < program.rules.len() {
            self.format_skips.resize(program.rules.len(), [0; 3]);
        }
        self.format_skips[rule as usize][got as usize] += 1;
    }

    fn value_error(&mut self, rule: u32, err: ValueError) {
        match self
            .value_errors
            .iter_mut()
            .find(|(r, e, _)| *r == rule && *e == err)
        {
            Some((_, _, n)) => *n += 1,
            None => self.value_errors.push((rule, err, 1)),
        }
    }
}

/// Why a candidate rule (one the prefilter let through) was not evaluated for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The event was decoded as another format than the rule's `format:`.
    Format { want: Format, got: Format },
    /// The event's topic is not one of the rule's `match.topic`.
    Topic,
}

/// The checks before a rule's conditions: its format and its top-level topics. Also what
/// `explain` reports for a rule that was not tried.
#[inline]
pub fn gate(rule: &Rule, format: Format, topic: &str) -> Result<(), Skip> {
    if let Some(want) = rule.format.filter(|f| *f != format) {
        return Err(Skip::Format { want, got: format });
    }
    if rule.topics.is_empty() {
        // Trace summaries are for the rules that ask for them by name: a rule written for a
        // service's logs (`duration_ms` exists, say) must not count them too.
        if topic == crate::correlate::traces::TOPIC {
            return Err(Skip::Topic);
        }
    } else if !rule.topics.iter().any(|t| t.matches(topic)) {
        return Err(Skip::Topic);
    }
    Ok(())
}

pub struct Engine {
    program: Arc<Program>,
    decoder: Decoder,
    decoded: Decoded,
    /// The message of an enveloped event (its text, as the record is a bare event's).
    message: String,
    /// CRI partial lines waiting for their last part, within the batch.
    joiner: cri::Joiner,
    /// Fates of records decided after their turn (the parts of a joined CRI line).
    late: Vec<(u32, Fate)>,
    prefilter: prefilter::Scratch,
    candidates: Vec<u32>,
    captures: Vec<Option<Span>>,
    groups: Vec<crate::extract::matcher::Span>,
    /// General-engine scratch per pattern step: `step_base[rule] + step`.
    locs: Vec<Option<regex::CaptureLocations>>,
    step_base: Vec<usize>,
    key: Vec<u8>,
    pub local: Aggregates,
    pub counters: Counters,
    /// For each kept event of the last batch whose rule reduces, what the reduction needs;
    /// text it refers to is in `text`.
    pub asks: Vec<Ask>,
    pub text: String,
    /// Event times of reducing rules and trace summaries (remembering the last second).
    times: crate::extract::time::TimeParser,
    /// The trace context of the rule being evaluated (see `correlate`).
    trace: Resolved,
    /// Invalid trace ids of the current event were counted (once per event).
    trace_counted: bool,
    /// The current event's exemplars, given at once (most traced events are kept) and taken
    /// back if the event is not kept or is sampled out: an exemplar never points to a trace
    /// whose logs were dropped. Keys are ranges of `given_keys`.
    given: Vec<Given>,
    given_keys: Vec<u8>,
    /// The current event's reduction samples it out.
    sampled_out: bool,
    /// Nanoseconds spent on each rule (`profile_rules`), for `logmill shadow`; empty when not
    /// profiling, which then costs nothing.
    pub rule_nanos: Vec<u64>,
    /// One event in this many is profiled (its times counted that many times over); events
    /// seen so far, to pick them.
    profile_every: u64,
    profile_seen: u64,
    /// CPU budgets, when the service enforces them (`enforce_cpu_budgets`).
    pub cpu_guard: Option<budget::CpuGuard>,
    /// When the current batch started (for quarantines).
    batch_start: std::time::Instant,
    /// For each event of the last batch whose rule gathers traces (`trace.summaries`), what
    /// it says of its trace, in order; texts are in `text`.
    pub trace_events: Vec<TraceEvent>,
    /// The last time read of the rule being evaluated, by field and format: its reduction and
    /// its trace summary usually read the same one.
    time_read: Option<(FieldRef, TimeFormat, Option<u64>)>,
}

/// An exemplar given before its event's fate was known, and what it replaced.
#[derive(Debug)]
struct Given {
    family: u32,
    key: (u32, u32),
    slot: usize,
    prev: Option<Exemplar>,
}

/// A field's text in the event being evaluated (a free function, so that callers can borrow
/// the engine's other fields beside it).
fn field_text<'a>(
    decoded: &'a Decoded,
    captures: &[Option<Span>],
    trace: &'a Resolved,
    field: FieldRef,
    line: &'a str,
    topic: &'a str,
) -> Option<&'a str> {
    let scratch = decoded.scratch.as_str();
    match field {
        FieldRef::Trace(part) => trace.get(part),
        FieldRef::Line => Some(line),
        FieldRef::Topic => Some(topic),
        FieldRef::Event(i) => decoded.slots[i as usize].map(|s| s.get(line, scratch)),
        FieldRef::Capture(i) => captures[i as usize].map(|s| s.get(line, scratch)),
    }
}

/// A reduction key's hash starts here; a field the event lacks hashes as this.
const KEY_SEED: u64 = 0x6c6d_6b79;
const KEY_ABSENT: u64 = 0x6e_6f6e65;

/// Levels an event is never reduced at (compared without case).
const ERROR_LEVELS: &[&str] = &[
    "error",
    "err",
    "fatal",
    "critical",
    "crit",
    "alert",
    "emerg",
    "emergency",
    "panic",
    "severe",
];

fn is_error_level(level: &str) -> bool {
    // Most levels (`info`, `debug`, `warn`) are ruled out by their first letter.
    let first = level.as_bytes().first().map(|c| c | 0x20);
    matches!(first, Some(b'e' | b'f' | b'c' | b'a' | b'p' | b's'))
        && ERROR_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level))
}

impl Engine {
    pub fn new(program: Arc<Program>, input: InputFormat, limits: Limits) -> Engine {
        let mut step_base = Vec::with_capacity(program.rules.len());
        let mut n = 0;
        for r in &program.rules {
            step_base.push(n);
            n += r.steps.len();
        }
        Engine {
            decoder: {
                let mut d = Decoder::new(&program.event_fields, input, limits);
                d.declare(program.envelopes.clone());
                d
            },
            decoded: Decoded::default(),
            message: String::new(),
            joiner: cri::Joiner::default(),
            late: Vec::new(),
            prefilter: prefilter::Scratch::default(),
            candidates: Vec::new(),
            captures: Vec::new(),
            groups: Vec::new(),
            locs: (0..n).map(|_| None).collect(),
            step_base,
            key: Vec::new(),
            local: Aggregates::new(&program),
            counters: Counters {
                rule_matches: vec![0; program.rules.len()],
                ..Counters::default()
            },
            program,
            asks: Vec::new(),
            text: String::new(),
            times: Default::default(),
            trace: Resolved::default(),
            trace_counted: false,
            given: Vec::new(),
            given_keys: Vec::new(),
            sampled_out: false,
            rule_nanos: Vec::new(),
            profile_every: 1,
            profile_seen: 0,
            cpu_guard: None,
            batch_start: std::time::Instant::now(),
            trace_events: Vec::new(),
            time_read: None,
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    /// Envelopes declared by the service config (or replay's `--envelope`), before those of
    /// the rule files.
    pub fn declare_envelopes(&mut self, declared: &Declared) {
        self.decoder.declare(declared.then(&self.program.envelopes));
    }

    /// Quarantines the rules that use more CPU than their team's budget (`budget.cpu`) over
    /// `window`, for `cool_down`. Only the service does: it makes counts depend on time.
    pub fn enforce_cpu_budgets(
        &mut self,
        window: std::time::Duration,
        cool_down: std::time::Duration,
    ) {
        self.cpu_guard = budget::CpuGuard::new(&self.program, window, cool_down);
    }

    /// Measures the time each rule's evaluation takes (its conditions, extraction and
    /// metrics, for the events the prefilter gives it), into `rule_nanos`.
    pub fn profile_rules(&mut self) {
        self.profile_rules_sampled(1);
    }

    /// `profile_rules` on one event in `every`, each measured time counted `every` times:
    /// an estimate that costs the service next to nothing (`rules_candidate`).
    pub fn profile_rules_sampled(&mut self, every: u64) {
        self.rule_nanos = vec![0; self.program.rules.len()];
        self.profile_every = every.max(1);
    }

    /// Processes a batch; `fates[i]` is the fate of `batch[i]`.
    pub fn process(&mut self, batch: &[Record<'_>], now_ms: u64, fates: &mut Vec<Fate>) {
        self.process_with(batch, None, now_ms, fates);
    }

    /// `process` for records logmill wrote itself as flat JSON objects (trace summaries and
    /// edges), whose text and members are known: `members(i)` are `batch[i]`'s payload as
    /// text (the same slice) and its members. Their JSON is not scanned again; the fates and
    /// metrics are those `process` gives.
    pub fn process_members<'m>(
        &mut self,
        batch: &[Record<'_>],
        members: &dyn Fn(usize) -> (&'m str, &'m [Member]),
        now_ms: u64,
        fates: &mut Vec<Fate>,
    ) {
        self.process_with(batch, Some(members), now_ms, fates);
    }

    fn process_with<'m>(
        &mut self,
        batch: &[Record<'_>],
        members: Option<&dyn Fn(usize) -> (&'m str, &'m [Member])>,
        now_ms: u64,
        fates: &mut Vec<Fate>,
    ) {
        let started = std::time::Instant::now();
        self.batch_start = started;
        // One reference count per batch, not per event.
        let program = Arc::clone(&self.program);
        fates.clear();
        self.asks.clear();
        self.trace_events.clear();
        self.text.clear();
        self.late.clear();
        for (i, rec) in batch.iter().enumerate() {
            // A held CRI part's fate is its line's, known at the line's last part.
            // The payload itself as text (no UTF-8 check), when the caller has it.
            let known = members
                .map(|m| m(i))
                .filter(|(line, _)| std::ptr::eq(line.as_bytes(), rec.payload));
            let fate = match known {
                Some((line, members))
                    if self
                        .decoder
                        .fill(rec.topic, line, rec.part, members, &mut self.decoded) =>
                {
                    self.evaluate(&program, rec, line, now_ms)
                }
                _ => self
                    .event(&program, rec, i as u32, now_ms)
                    .unwrap_or(Fate::Drop),
            };
            if let Some(t) = self
                .trace_events
                .last_mut()
                .filter(|t| t.record == u32::MAX)
            {
                t.record = i as u32;
            }
            if let (Fate::Keep, Some(ask)) = (fate, self.asks.last_mut()) {
                if ask.record == u32::MAX {
                    ask.record = i as u32;
                }
            } else if self.asks.last().is_some_and(|a| a.record == u32::MAX) {
                // Its rule matched, but the event is not kept after all.
                self.asks.pop();
            }
            fates.push(fate);
        }
        for (r, reason) in self.joiner.unfinished() {
            self.late
                .push((r, Fate::DeadLetter(Reason::Decode(reason))));
        }
        for &(r, fate) in &self.late {
            if let Fate::DeadLetter(Reason::Decode(e)) = fate {
                self.counters.decode_errors[e as usize] += 1;
            }
            fates[r as usize] = fate;
        }
        for (rec, fate) in batch.iter().zip(fates.iter()) {
            self.counters.bytes_in += rec.payload.len() as u64;
            match fate {
                Fate::Keep => {
                    self.counters.kept += 1;
                    self.counters.bytes_kept += rec.payload.len() as u64;
                }
                Fate::Drop => self.counters.dropped += 1,
                Fate::DeadLetter(_) => self.counters.dead_lettered += 1,
            }
        }
        self.counters.events_in += batch.len() as u64;
        if let Some(g) = &mut self.cpu_guard {
            g.roll(std::time::Instant::now());
        }
        let elapsed = started.elapsed();
        self.counters.eval_nanos += elapsed.as_nanos() as u64;
        crate::telemetry::batch_evaluated(elapsed);
    }

    /// Record `index`'s fate, or `None` while it is a part of a CRI line still being joined.
    fn event(
        &mut self,
        program: &Program,
        rec: &Record<'_>,
        index: u32,
        now_ms: u64,
    ) -> Option<Fate> {
        // Taken out for the event, so that its text can be borrowed beside `&mut self`.
        let mut message = std::mem::take(&mut self.message);
        let fate = self.unwrap(program, rec, index, now_ms, &mut message);
        self.message = message;
        fate
    }

    fn unwrap(
        &mut self,
        program: &Program,
        rec: &Record<'_>,
        index: u32,
        now_ms: u64,
        message: &mut String,
    ) -> Option<Fate> {
        let dead = |c: &mut Counters, e: DecodeError| {
            c.decode_errors[e as usize] += 1;
            Fate::DeadLetter(Reason::Decode(e))
        };
        let unwrapped =
            self.decoder
                .unwrap(rec.topic, rec.payload, rec.part, message, &mut self.decoded);
        let line = match unwrapped {
            Err(e) => return Some(dead(&mut self.counters, e)),
            Ok(Unwrapped::Line(line)) => {
                if let Some(e) = self.decoded.envelope {
                    self.counters.by_envelope[e as usize] += 1;
                }
                return Some(self.evaluate(program, rec, line, now_ms));
            }
            Ok(Unwrapped::Message) => None,
            Ok(Unwrapped::Cri(line)) => Some(line),
        };
        let mut parts = Vec::new();
        if let Some(line) = line {
            let max = self.decoder.limits().max_event_bytes;
            match self
                .joiner
                .push(rec.topic, rec.version.lane, index, &line, max, message)
            {
                cri::Joined::Held => return None,
                cri::Joined::Refused { parts, reason } => {
                    let fate = Fate::DeadLetter(Reason::Decode(reason));
                    self.late.extend(parts.into_iter().map(|p| (p, fate)));
                    return None;
                }
                cri::Joined::Evaluate { parts: p } => parts = p,
            }
        }
        if let Err(e) = self.decoder.finish(message, &mut self.decoded) {
            return Some(dead(&mut self.counters, e));
        }
        if let Some(e) = self.decoded.envelope {
            self.counters.by_envelope[e as usize] += 1;
        }
        let fate = self.evaluate(program, rec, message, now_ms);
        self.late.extend(parts.into_iter().map(|p| (p, fate)));
        Some(fate)
    }

    /// Rules over a decoded event whose text is `line`.
    fn evaluate(&mut self, program: &Program, rec: &Record<'_>, line: &str, now_ms: u64) -> Fate {
        let format = self.decoded.format.expect("set by a successful decode");
        self.counters.by_format[format as usize] += 1;
        self.trace_counted = false;
        self.sampled_out = false;
        self.trace.clear();
        self.given.clear();
        self.given_keys.clear();
        program
            .prefilter
            .candidates(line.as_bytes(), &mut self.prefilter, &mut self.candidates);
        let mut decision = Decision::default();
        let mut matched = false;
        let mut failure = None;
        let mut asked = false;
        let mut gathered = false;
        let profiling = !self.rule_nanos.is_empty() && {
            self.profile_seen += 1;
            self.profile_seen.is_multiple_of(self.profile_every)
        };
        let guarded = self.cpu_guard.as_mut().is_some_and(|g| g.sample());
        // Each rule's time runs from its turn to the next rule's (whatever path it leaves by).
        let mut timing: Option<(usize, std::time::Instant)> = None;
        for i in 0..self.candidates.len() {
            let r = self.candidates[i];
            if profiling || guarded {
                let now = std::time::Instant::now();
                if let Some((prev, t0)) = timing.replace((r as usize, now)) {
                    self.spend(prev, (now - t0).as_nanos() as u64, profiling, guarded);
                }
            }
            if let Some(g) = &mut self.cpu_guard
                && g.quarantined(r as usize, self.batch_start)
            {
                g.skipped[r as usize] += 1;
                continue;
            }
            let rule = &program.rules[r as usize];
            if let Err(skip) = gate(rule, format, rec.topic) {
                if let Skip::Format { got, .. } = skip {
                    self.counters.format_skipped(program, r, got);
                }
                continue;
            }
            if !self.applies(rule, r as usize, line, rec.topic) {
                continue;
            }
            matched = true;
            self.counters.rule_matches[r as usize] += 1;
            // Its captures are new.
            self.time_read = None;
            // The first matching rule that reduces decides the reduction; its captures are
            // only live now.
            if let (false, Some(reduce)) = (asked, rule.reduce.as_deref()) {
                asked = true;
                let ask = self.ask(reduce, r, line, rec);
                self.asks.push(ask);
            }
            if !gathered && rule.trace.summaries && self.trace.ctx.trace.is_some() {
                gathered = true;
                let e = self.trace_event(rule, line, rec);
                self.trace_events.push(e);
            }
            if let Err((error, update)) = self.derive(rule, program, line, rec, now_ms) {
                self.counters.value_error(r, error);
                failure.get_or_insert(ValueFailure {
                    error,
                    rule: r,
                    update,
                });
            }
            decision.add(rule.then);
        }
        if let Some((prev, t0)) = timing {
            self.spend(prev, t0.elapsed().as_nanos() as u64, profiling, guarded);
        }
        if !matched {
            self.counters.unmatched += 1;
        }
        let fate = match failure {
            // The event's other metrics were counted; the event itself goes where a person can
            // see what was wrong with it, whatever `then:` said.
            Some(e) => Fate::DeadLetter(Reason::Value(e)),
            None => decision.fate(),
        };
        if fate != Fate::Keep || self.sampled_out {
            self.take_back_exemplars(program);
        }
        fate
    }

    /// Time measured for rule `r`: to the profile when this event is profiled, and to its
    /// budget when it is one of the guard's sample.
    fn spend(&mut self, r: usize, nanos: u64, profiled: bool, sampled: bool) {
        if profiled && let Some(n) = self.rule_nanos.get_mut(r) {
            *n += nanos * self.profile_every;
        }
        if let (true, Some(g)) = (sampled, &mut self.cpu_guard) {
            g.spent(r, nanos);
        }
    }

    fn take_back_exemplars(&mut self, program: &Program) {
        // Newest first, so a series given two of this event's gets its own back.
        while let Some(g) = self.given.pop() {
            let key = &self.given_keys[g.key.0 as usize..g.key.1 as usize];
            let fid = g.family as usize;
            self.local
                .undo_exemplar(fid, &program.families[fid], key, g.slot, g.prev);
        }
    }

    /// What the reduction needs of an event its rule matched (see `Ask`); `record` is filled
    /// in once the event is known to be kept.
    fn ask(&mut self, reduce: &Reduce, rule: u32, line: &str, rec: &Record<'_>) -> Ask {
        let topic = rec.topic;
        let level_error = reduce
            .level
            .iter()
            .find_map(|f| self.text(*f, line, topic))
            .is_some_and(is_error_level);
        let protected = level_error
            || reduce
                .always_keep
                .as_ref()
                .is_some_and(|c| self.holds(c, line, topic));
        let time_ms = reduce
            .time
            .and_then(|t| self.time(t.field, t.format, line, topic));
        let keyed = |e: &Engine, k: &KeyFields| -> u64 {
            k.fields.iter().fold(KEY_SEED, |h, f| {
                combine(
                    h,
                    e.text(*f, line, topic)
                        .map_or(KEY_ABSENT, |v| hash_bytes(v.as_bytes())),
                )
            })
        };
        let mut traced = false;
        let sample_key = match &reduce.sample {
            None => 0,
            Some(s) if !s.key.fields.is_empty() => keyed(self, &s.key),
            // A trace's events share a decision whatever the spelling of its id.
            Some(_) => match self.trace.get(TracePart::Trace) {
                Some(trace) => {
                    traced = true;
                    hash_bytes(trace.as_bytes())
                }
                None => hash_bytes(rec.payload),
            },
        };
        self.sampled_out = !protected
            && reduce
                .sample
                .as_ref()
                .is_some_and(|s| crate::reduce::sampled_out(sample_key, s.rate));
        let mut ask = Ask {
            record: u32::MAX,
            rule,
            protected,
            time_ms,
            sample_key,
            traced,
            ..Ask::default()
        };
        if let Some(d) = reduce.dedupe.as_ref().filter(|d| !d.whole) {
            let whole = std::ptr::eq(line.as_bytes(), rec.payload);
            (ask.dedupe_key, ask.dedupe_text, ask.dedupe_spans) =
                self.key(&d.key, line, topic, whole);
        }
        if let Some(t) = &reduce.throttle {
            let whole = std::ptr::eq(line.as_bytes(), rec.payload);
            (ask.throttle_key, ask.throttle_text, ask.throttle_spans) =
                self.key(&t.key, line, topic, whole);
        }
        if reduce.patterns.is_some() || reduce.dedupe.as_ref().is_some_and(|d| !d.whole) {
            let at = self.text.len() as u32;
            let message = reduce
                .message
                .iter()
                .find_map(|f| {
                    field_text(&self.decoded, &self.captures, &self.trace, *f, line, topic)
                })
                .unwrap_or(line);
            if std::ptr::eq(message.as_bytes(), rec.payload) {
                ask.message_is_event = true;
            } else {
                self.text.push_str(message);
                ask.message = (at, self.text.len() as u32);
            }
        }
        ask
    }

    /// What the event says of its trace, for the summaries (`correlate::traces`).
    fn trace_event(&mut self, rule: &Rule, line: &str, rec: &Record<'_>) -> TraceEvent {
        let t = &rule.trace;
        let topic = rec.topic;
        fn first<'a>(
            e: &'a Engine,
            fs: &[FieldRef],
            line: &'a str,
            topic: &'a str,
        ) -> Option<&'a str> {
            fs.iter().find_map(|f| e.text(*f, line, topic))
        }
        let status: Option<u16> =
            first(self, &t.status, line, topic).and_then(|s| s.trim().parse().ok());
        let duration_ms: Option<f64> = first(self, &t.duration, line, topic)
            .and_then(|s| s.trim().parse().ok())
            .filter(|d: &f64| d.is_finite());
        let error = first(self, &t.level, line, topic).is_some_and(is_error_level)
            || status.is_some_and(|s| s >= 500);
        let time_ms = t
            .time
            .iter()
            .find_map(|ts| self.time(ts.field, ts.format, line, topic))
            .unwrap_or(rec.event_ms);
        let range = |e: &mut Engine, fs: &[FieldRef]| -> (u32, u32) {
            let at = e.text.len() as u32;
            if let Some(v) = fs
                .iter()
                .find_map(|f| field_text(&e.decoded, &e.captures, &e.trace, *f, line, topic))
            {
                e.text.push_str(v);
            }
            (at, e.text.len() as u32)
        };
        let service = range(self, &t.service);
        let route = range(self, &t.route);
        TraceEvent {
            // Filled in by `process`, which knows the record's place in the batch.
            record: u32::MAX,
            trace: self.trace.ctx.trace.clone().expect("checked by the caller"),
            span: self.trace.ctx.span,
            parent: self.trace.ctx.parent,
            time_ms,
            service,
            route,
            error,
            status,
            duration_ms,
        }
    }

    /// The time `field` says in `format`, read once per rule and event.
    fn time(
        &mut self,
        field: FieldRef,
        format: TimeFormat,
        line: &str,
        topic: &str,
    ) -> Option<u64> {
        match self.time_read {
            Some((f, t, ms)) if f == field && t == format => ms,
            _ => {
                let text = field_text(
                    &self.decoded,
                    &self.captures,
                    &self.trace,
                    field,
                    line,
                    topic,
                )?;
                let ms = self.times.parse(text, format);
                self.time_read = Some((field, format, ms));
                ms
            }
        }
    }

    /// A key's hash (as `ask`'s `keyed`), and where its text comes from: spans of the event
    /// when `line` is the event and every value is a span of it (or absent), else its text
    /// in the arena (`key_text`).
    fn key(
        &mut self,
        k: &KeyFields,
        line: &str,
        topic: &str,
        whole: bool,
    ) -> (u64, (u32, u32), KeySpans) {
        let mut spans = KeySpans::default();
        if whole && k.fields.len() <= MAX_KEY_SPANS {
            let mut hash = KEY_SEED;
            for (i, f) in k.fields.iter().enumerate() {
                let span = match *f {
                    FieldRef::Line => Some(Span::raw(0, line.len())),
                    FieldRef::Event(i) => self.decoded.slots[i as usize],
                    FieldRef::Capture(i) => self.captures[i as usize],
                    FieldRef::Topic | FieldRef::Trace(_) => return self.key_text(k, line, topic),
                };
                let value = match span {
                    Some(s) if s.scratch => return self.key_text(k, line, topic),
                    Some(s) => {
                        spans.spans[i] = (s.start, s.end);
                        // The value's bytes read in place, words loaded across its end.
                        hash_span(line.as_bytes(), s.start as usize, s.end as usize, |_| {})
                    }
                    None => KEY_ABSENT,
                };
                hash = combine(hash, value);
            }
            spans.n = k.fields.len() as u32;
            return (hash, (0, 0), spans);
        }
        self.key_text(k, line, topic)
    }

    /// A key's hash (as `ask`'s `keyed`), and its fields' `name=value` pairs, joined by
    /// `\x1f`, into the text arena: each field looked up once for both.
    fn key_text(&mut self, k: &KeyFields, line: &str, topic: &str) -> (u64, (u32, u32), KeySpans) {
        let at = self.text.len() as u32;
        let mut hash = KEY_SEED;
        for (i, (f, name)) in k.fields.iter().zip(&k.names).enumerate() {
            if i > 0 {
                self.text.push('\u{1f}');
            }
            self.text.push_str(name);
            self.text.push('=');
            let value = field_text(&self.decoded, &self.captures, &self.trace, *f, line, topic);
            hash = combine(hash, value.map_or(KEY_ABSENT, |v| hash_bytes(v.as_bytes())));
            self.text.push_str(value.unwrap_or(""));
        }
        (hash, (at, self.text.len() as u32), KeySpans::default())
    }

    fn text<'a>(&'a self, field: FieldRef, line: &'a str, topic: &'a str) -> Option<&'a str> {
        field_text(
            &self.decoded,
            &self.captures,
            &self.trace,
            field,
            line,
            topic,
        )
    }

    fn span(&self, field: FieldRef, line: &str) -> Option<Span> {
        match field {
            FieldRef::Line => Some(Span::raw(0, line.len())),
            FieldRef::Topic | FieldRef::Trace(_) => None,
            FieldRef::Event(i) => self.decoded.slots[i as usize],
            FieldRef::Capture(i) => self.captures[i as usize],
        }
    }

    fn check(&self, conds: &[Cond], line: &str, topic: &str) -> bool {
        conds.iter().all(|c| self.holds(c, line, topic))
    }

    fn holds(&self, cond: &Cond, line: &str, topic: &str) -> bool {
        match cond {
            Cond::Field(c) => {
                let v = self.text(c.field, line, topic);
                match (&c.test, v) {
                    (Test::Exists(want), v) => v.is_some() == *want,
                    (_, None) => false,
                    (Test::Equals(s), Some(v)) => v == s,
                    (Test::In(set), Some(v)) => set.iter().any(|s| s == v),
                    (Test::Regex(re), Some(v)) => re.is_match(v),
                    (Test::Contains(f), Some(v)) => f.find(v.as_bytes()).is_some(),
                }
            }
            // The prefilter scanned the event for every literal already.
            Cond::Literal(l) => self.prefilter.contains(*l),
            Cond::Topic(ts) => ts.iter().any(|t| t.matches(topic)),
            Cond::All(cs) => cs.iter().all(|c| self.holds(c, line, topic)),
            Cond::Any(cs) => cs.iter().any(|c| self.holds(c, line, topic)),
            Cond::Not(c) => !self.holds(c, line, topic),
        }
    }

    /// Match conditions and extraction; on success `self.captures` holds the rule's fields.
    fn applies(&mut self, rule: &Rule, r: usize, line: &str, topic: &str) -> bool {
        if !self.check(&rule.pre, line, topic) {
            return false;
        }
        self.captures.clear();
        self.captures.resize(rule.n_captures, None);
        for (s, step) in rule.steps.iter().enumerate() {
            match step {
                Step::Alias { format, from, to } => {
                    if self.decoded.format != Some(*format) {
                        return false;
                    }
                    self.captures[*to as usize] = self.decoded.slots[*from as usize];
                }
                Step::Pattern {
                    from,
                    matcher,
                    groups,
                } => {
                    let base = match *from {
                        // The topic is not in the event: copy it where spans can point.
                        FieldRef::Topic => {
                            let at = self.decoded.scratch.len();
                            self.decoded.scratch.push_str(topic);
                            Span {
                                start: at as u32,
                                end: self.decoded.scratch.len() as u32,
                                scratch: true,
                            }
                        }
                        f => match self.span(f, line) {
                            Some(s) => s,
                            None => return false,
                        },
                    };
                    let text = base.get(line, &self.decoded.scratch);
                    self.groups.resize(matcher.group_count(), None);
                    let locs = &mut self.locs[self.step_base[r] + s];
                    if !matcher.captures(text, &mut self.groups, locs) {
                        return false;
                    }
                    for (g, slot) in groups.iter().enumerate() {
                        if let (Some(slot), Some((a, b))) = (slot, self.groups[g + 1]) {
                            self.captures[*slot as usize] = Some(Span {
                                start: base.start + a as u32,
                                end: base.start + b as u32,
                                scratch: base.scratch,
                            });
                        }
                    }
                }
            }
        }
        if rule.trace.fields.is_empty() {
            self.trace.clear();
        } else {
            let (decoded, captures, empty) = (&self.decoded, &self.captures, &Resolved::default());
            correlate::resolve(
                &rule.trace,
                |f| field_text(decoded, captures, empty, f, line, topic),
                &mut self.trace,
                &mut self.counters.trace_invalid,
                !self.trace_counted,
            );
            self.trace_counted = true;
        }
        self.check(&rule.post, line, topic)
    }

    fn derive(
        &mut self,
        rule: &Rule,
        program: &Program,
        line: &str,
        rec: &Record<'_>,
        now_ms: u64,
    ) -> Result<(), (ValueError, u32)> {
        let mut failure = Ok(());
        for (ui, u) in rule.updates.iter().enumerate() {
            // The first failing metric of the rule is the one the dead letter names.
            let mut fail = |e: ValueError| {
                if failure.is_ok() {
                    failure = Err((e, ui as u32));
                }
            };
            let v = match u.value {
                None => 1.0,
                Some(src) => match self.text(src.field, line, rec.topic) {
                    None => {
                        self.counters.missing_values += 1;
                        continue;
                    }
                    Some(text) => match convert(text, src.ty, u.scale) {
                        Ok(v) => v,
                        Err(e) => {
                            fail(e);
                            continue;
                        }
                    },
                },
            };
            if u.op == Op::CounterAdd && v < 0.0 {
                fail(ValueError::NegativeCounter);
                continue;
            }
            let mut key = std::mem::take(&mut self.key);
            key.clear();
            for l in &u.labels {
                match l {
                    LabelSource::Static(s) => push_label(&mut key, s),
                    LabelSource::Field {
                        field,
                        map,
                        default,
                    } => {
                        let text = self.text(*field, line, rec.topic);
                        push_label(
                            &mut key,
                            LabelSource::value(map.as_deref(), default.as_deref(), text),
                        );
                    }
                }
            }
            let fid = u.family as usize;
            let at = Stamp {
                version: rec.version,
                event_ms: rec.event_ms,
                now_ms,
            };
            let family = &program.families[fid];
            match (rule.trace.exemplars, &self.trace.ctx.trace) {
                (true, Some(trace)) => {
                    let e = Exemplar {
                        trace: trace.clone(),
                        span: self.trace.ctx.span,
                        value: v,
                        ms: rec.event_ms,
                        version: rec.version,
                    };
                    if let Some((slot, prev)) = self
                        .local
                        .update_with_exemplar(fid, family, &key, u.op, v, at, e)
                    {
                        let start = self.given_keys.len() as u32;
                        self.given_keys.extend_from_slice(&key);
                        self.given.push(Given {
                            family: u.family,
                            key: (start, self.given_keys.len() as u32),
                            slot,
                            prev,
                        });
                    }
                }
                _ => self.local.update(fid, family, &key, u.op, v, at),
            }
            self.key = key;
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{SourceFile, compile};
    use crate::sink::exposition::{ExpositionFormat, render};

    pub(crate) fn run(rules: &str, lines: &[&str]) -> (String, Vec<Fate>) {
        let (program, diags) = compile(&[SourceFile {
            name: "t.yaml".into(),
            text: rules.into(),
        }]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let program = Arc::new(program);
        let mut engine = Engine::new(program.clone(), InputFormat::Auto, Limits::default());
        let batch: Vec<Record> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Record {
                payload: l.as_bytes(),
                topic: "t",
                version: Version {
                    offset: i as u64,
                    ..Version::default()
                },
                event_ms: 0,
                part: crate::decode::Part::Whole,
            })
            .collect();
        let mut fates = Vec::new();
        engine.process(&batch, 0, &mut fates);
        let mut global = Aggregates::new(&program);
        global.merge_from(&mut engine.local, &program, 0);
        (render(&program, &global, ExpositionFormat::Text, 0), fates)
    }

    /// Issue 12: a CRI line cut into parts is one event, evaluated at its last part; every
    /// part's record gets that event's fate, and parts whose line does not end in the batch
    /// are dead letters with their reason, not lost.
    #[test]
    fn issue12_cri_parts_share_their_line_fate_and_unfinished_parts_are_dead_letters() {
        let rules = "team: t\nrules:\n  - name: r\n    match: {fields: {level: {equals: error}}}\n    metrics: [{name: errors_total, type: counter, help: E., labels: {stream: stream}}]\n    then: keep\n  - name: other\n    match: {not: {fields: {level: {exists: true}}}}\n    metrics: [{name: other_total, type: counter, help: O.}]\n    then: drop\n";
        let (out, fates) = run(
            rules,
            &[
                r#"2026-11-26T22:00:00.000000001Z stdout P {"level":"er"#,
                "2026-11-26T22:00:00.000000002Z stderr F plain text on stderr",
                r#"2026-11-26T22:00:00.000000003Z stdout F ror","msg":"x"}"#,
                "2026-11-26T22:00:00.000000004Z stdout P left open",
            ],
        );
        assert!(out.contains("errors_total{stream=\"stdout\"} 1"), "{out}");
        assert!(out.contains("other_total 1"), "{out}");
        assert_eq!(
            fates,
            vec![
                Fate::Keep,
                Fate::Drop,
                Fate::Keep,
                Fate::DeadLetter(Reason::Decode(DecodeError::CriPartialUnfinished)),
            ]
        );
    }

    /// Issue 8: trace summaries carry `duration_ms`, as service logs do; only the rules that
    /// name their topic may count them.
    #[test]
    fn trace_summaries_are_seen_only_by_rules_that_name_their_topic() {
        let rules = "team: t\nrules:\n  - name: any\n    format: json\n    match: {fields: {duration_ms: {exists: true}}}\n    metrics: [{name: any_total, type: counter, help: A.}]\n  - name: named\n    format: json\n    match: {topic: logmill.traces}\n    metrics: [{name: named_total, type: counter, help: N.}]\n  - name: glob\n    format: json\n    match: {topic: \"logmill.*\"}\n    metrics: [{name: glob_total, type: counter, help: G.}]\n";
        let (program, diags) = compile(&[SourceFile {
            name: "t.yaml".into(),
            text: rules.into(),
        }]);
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let program = Arc::new(program);
        let mut engine = Engine::new(program.clone(), InputFormat::Auto, Limits::default());
        let line = br#"{"logmill":"trace","duration_ms":12.5}"#;
        let batch: Vec<Record> = [crate::correlate::traces::TOPIC, "app"]
            .iter()
            .map(|topic| Record {
                payload: line,
                topic,
                version: Version::default(),
                event_ms: 0,
                part: Part::Whole,
            })
            .collect();
        let mut fates = Vec::new();
        engine.process(&batch, 0, &mut fates);
        let mut global = Aggregates::new(&program);
        global.merge_from(&mut engine.local, &program, 0);
        let out = render(&program, &global, ExpositionFormat::Text, 0);
        assert!(out.contains("any_total 1\n"), "{out}");
        assert!(out.contains("named_total 1\n"), "{out}");
        assert!(out.contains("glob_total 1\n"), "{out}");
    }

    #[test]
    fn error_levels_by_first_letter_are_the_listed_ones() {
        for level in [
            "error",
            "ERROR",
            "Err",
            "fatal",
            "FATAL",
            "critical",
            "crit",
            "alert",
            "emerg",
            "Emergency",
            "panic",
            "severe",
            "info",
            "INFO",
            "debug",
            "warn",
            "warning",
            "trace",
            "notice",
            "e",
            "",
            "errors",
            "\u{e9}rror",
            "5",
            "Error ",
        ] {
            assert_eq!(
                is_error_level(level),
                ERROR_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)),
                "{level:?}"
            );
        }
    }

    #[test]
    fn counts_with_value_maps_and_drops() {
        let rules = r#"
team: t
rules:
  - name: r
    extract:
      - regex: '^(?P<method>[A-Z]+) (?P<status>\d+)'
    metrics:
      - name: reqs_total
        type: counter
        labels:
          method: method
          class: {from: status, map: {"5??": 5xx, "4??": 4xx}, default: ok}
    then: drop
"#;
        let (out, fates) = run(rules, &["GET 503", "GET 200", "PUT 404", "nothing here"]);
        assert!(
            out.contains(r#"reqs_total{class="5xx",method="GET"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"reqs_total{class="ok",method="GET"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"reqs_total{class="4xx",method="PUT"} 1"#),
            "{out}"
        );
        assert_eq!(fates, vec![Fate::Drop, Fate::Drop, Fate::Drop, Fate::Keep]);
    }

    #[test]
    fn bad_values_dead_letter_but_other_metrics_count() {
        let rules = r#"
team: t
rules:
  - name: r
    format: json
    metrics:
      - {name: lines_total, type: counter}
      - {name: d, type: histogram, value: d, buckets: [1]}
"#;
        let (out, fates) = run(rules, &[r#"{"d":"x"}"#, r#"{"d":0.5}"#, r#"{"e":1}"#]);
        assert!(out.contains("lines_total 3"), "{out}");
        assert!(out.contains("d_count 1"), "{out}");
        assert_eq!(
            fates[0],
            Fate::DeadLetter(Reason::Value(ValueFailure {
                error: ValueError::NotANumber,
                rule: 0,
                update: 1
            }))
        );
        assert_eq!(fates[1], Fate::Keep);
        assert_eq!(fates[2], Fate::Keep, "a missing value is not an error");
    }

    /// A random condition over a few literals, as YAML and as a reference predicate.
    enum Tree {
        Lit(&'static str),
        Any(Vec<Tree>),
        All(Vec<Tree>),
        Not(Box<Tree>),
    }

    const WORDS: [&str; 5] = ["ab", "b", "abc", "ca", "x"];

    fn tree(rng: &mut crate::workload::Rng, depth: u32) -> Tree {
        match if depth == 0 { 0 } else { rng.below(4) } {
            0 => Tree::Lit(WORDS[rng.below(5) as usize]),
            1 => Tree::Any(
                (0..1 + rng.below(3))
                    .map(|_| tree(rng, depth - 1))
                    .collect(),
            ),
            2 => Tree::All(
                (0..1 + rng.below(3))
                    .map(|_| tree(rng, depth - 1))
                    .collect(),
            ),
            _ => Tree::Not(Box::new(tree(rng, depth - 1))),
        }
    }

    impl Tree {
        fn yaml(&self) -> String {
            let list = |ts: &[Tree]| ts.iter().map(Tree::yaml).collect::<Vec<_>>().join(", ");
            match self {
                Tree::Lit(w) => format!("{{contains: \"{w}\"}}"),
                Tree::Any(ts) => format!("{{any: [{}]}}", list(ts)),
                Tree::All(ts) => format!("{{all: [{}]}}", list(ts)),
                Tree::Not(t) => format!("{{not: {}}}", t.yaml()),
            }
        }

        fn eval(&self, line: &str) -> bool {
            match self {
                Tree::Lit(w) => line.contains(w),
                Tree::Any(ts) => ts.iter().any(|t| t.eval(line)),
                Tree::All(ts) => ts.iter().all(|t| t.eval(line)),
                Tree::Not(t) => !t.eval(line),
            }
        }
    }

    /// Issue 9: `any`/`all`/`not` over literals decide through the prefilter exactly as the
    /// plain definition does (a literal under `any` or `not` is not required of the event),
    /// for random trees and lines, with the top-level literals left to the prefilter alone.
    #[test]
    fn issue9_conditions_through_the_prefilter_match_the_definition() {
        let mut rng = crate::workload::Rng::new(12);
        for _ in 0..60 {
            let trees: Vec<(Tree, Option<&str>)> = (0..6)
                .map(|_| {
                    let top = (rng.below(2) == 0).then(|| WORDS[rng.below(5) as usize]);
                    (tree(&mut rng, 3), top)
                })
                .collect();
            let mut rules = String::from("team: t\nrules:\n");
            for (i, (t, top)) in trees.iter().enumerate() {
                let top = top.map_or(String::new(), |w| format!("contains: \"{w}\", "));
                rules.push_str(&format!(
                    "  - name: r{i}\n    match: {{{top}all: [{}]}}\n    metrics: [{{name: r{i}_total, type: counter}}]\n",
                    t.yaml()
                ));
            }
            let lines: Vec<String> = (0..40)
                .map(|_| {
                    (0..rng.below(6))
                        .map(|_| ["a", "b", "c", "x", " "][rng.below(5) as usize])
                        .collect()
                })
                .filter(|l: &String| !l.trim().is_empty())
                .collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let (out, _) = run(&rules, &refs);
            for (i, (t, top)) in trees.iter().enumerate() {
                let want = refs
                    .iter()
                    .filter(|l| t.eval(l) && top.is_none_or(|w| l.contains(w)))
                    .count();
                let got = out
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("r{i}_total ")))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                assert_eq!(got, want, "rule r{i}: {}\n{rules}", t.yaml());
            }
        }
    }
}
