//! The reduction of one partition: its clock, its template miner, and the open windows of
//! dedupe, throttle and patterns. **A decision depends only on the partition's events in order
//! and their times**, so a partition read again after a crash, or by its next owner from the
//! checkpointed state, decides and summarises exactly as before.
//!
//! For each event a rule reduces, in order: windows whose time has passed close (their
//! summaries come out first); a protected event (an error level, `always_keep`) is kept; then
//! `sample`, `dedupe`, `throttle` and `patterns`, each of which may suppress it.

use hashbrown::HashMap;

use super::hash::{combine, hash_bytes};
use super::retain::{Held, Retention, Step, TraceEvent};
use super::summary::Summary;
use super::table::{
    Entry, MAX_SAMPLE_BYTES, MAX_SAMPLES, MAX_VALUE_BYTES, MAX_VARIABLES, Suppression, Table, cut,
};
use super::templates::{Miner, MinerConfig, TemplateId, Variable};
use super::{Action, Ask, Reduction, Verdict};
use crate::rules::program::{KeptBytes, Program, Reduce};

/// Open seconds of kept-bytes budgets per partition (teams times seconds still open, which
/// late events can reopen); past it the oldest closes early, its summary emitted.
const MAX_TEAM_SECONDS: usize = 4096;

/// Where an event came from: its partition (for summary ids), offset (for the range a
/// summary covers) and Kafka timestamp (for a held event written out later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// Which event of its message (a message of many events, OTLP).
    pub part: crate::decode::Part,
}

#[derive(Debug)]
pub struct Reducer {
    /// The partition's reduction clock: the latest event time seen (the rule's time field, or
    /// the record's).
    pub clock: u64,
    pub miner: Miner,
    pub tables: [Table; 4],
    /// The last text of templates the miner evicted, for the windows still open on them (a
    /// window outlives its template's eviction; an evicted template that comes back has its
    /// old id and finds its window). Pruned to the templates open windows name.
    pub texts: HashMap<TemplateId, Box<str>>,
    /// The traces `keep_traces` holds; its own part of the snapshot.
    pub retention: Retention,
    /// Held events of traces kept since the caller last took them: they go out before the
    /// event just decided.
    pub released: Vec<Held>,
    /// Whether anything changed since the last snapshot was taken.
    pub dirty: bool,
    /// The last observation's variables (scratch).
    vars: Vec<Variable>,
}

/// Indexes into `Reducer::tables`.
const DEDUPE: usize = 0;
const THROTTLE: usize = 1;
const PATTERNS: usize = 2;
/// A team's kept bytes in one second (`budget.kept_bytes`), keyed by team and second.
pub(super) const BUDGET: usize = 3;

impl Default for Reducer {
    fn default() -> Reducer {
        Reducer::new()
    }
}

fn action_of(table: usize) -> Action {
    match table {
        DEDUPE => Action::Dedupe,
        THROTTLE => Action::Throttle,
        PATTERNS => Action::Patterns,
        _ => Action::Budget,
    }
}

impl Reducer {
    pub fn new() -> Reducer {
        Reducer {
            clock: 0,
            miner: Miner::new(MinerConfig::default()),
            tables: Default::default(),
            texts: HashMap::new(),
            retention: Retention::default(),
            released: Vec::new(),
            dirty: false,
            vars: Vec::new(),
        }
    }

    /// A new reducer whose `keep_traces` holds at most what `retain` allows.
    pub fn with_retention(retain: super::retain::RetainConfig) -> Reducer {
        Reducer {
            retention: Retention::new(retain),
            ..Reducer::new()
        }
    }

    /// A reducer restored from a snapshot's parts.
    pub(super) fn restored(
        clock: u64,
        miner: Miner,
        tables: [Table; 4],
        texts: HashMap<TemplateId, Box<str>>,
    ) -> Reducer {
        Reducer {
            clock,
            miner,
            tables,
            texts,
            retention: Retention::default(),
            released: Vec::new(),
            dirty: false,
            vars: Vec::new(),
        }
    }

    /// A template's text: live, or as it was when the miner evicted it.
    fn template_text(&self, id: TemplateId) -> Option<String> {
        match self.miner.template(id) {
            Some(t) => Some(t.to_string()),
            None => self.texts.get(&id).map(|t| t.to_string()),
        }
    }

    /// Evicted templates no open window names any more.
    fn prune_texts(&mut self) {
        let open: hashbrown::HashSet<TemplateId> = self.tables[DEDUPE]
            .entries()
            .chain(self.tables[PATTERNS].entries())
            .filter_map(|e| e.template)
            .collect();
        self.texts.retain(|id, _| open.contains(id));
    }

    /// Closes windows whose time has passed at `now`: their summaries.
    fn close_due(
        &mut self,
        now: u64,
        partition: i32,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) {
        for t in 0..self.tables.len() {
            while let Some((key, e)) = self.tables[t].expire(now) {
                self.closed(t, key, e, partition, counts, out);
            }
        }
    }

    fn closed(
        &mut self,
        table: usize,
        key: u64,
        e: Entry,
        partition: i32,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) {
        if e.suppressed() == 0 {
            return;
        }
        counts.summaries[action_of(table) as usize] += 1;
        let template_text = e.template.and_then(|id| self.template_text(id));
        out.push(Summary::new(
            action_of(table),
            partition,
            key,
            e,
            template_text,
        ));
    }

    /// Closes every window and decides every held trace (the end of a replay's input).
    pub fn flush(
        &mut self,
        program: &Program,
        partition: i32,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) {
        for t in 0..self.tables.len() {
            while let Some((key, e)) = self.tables[t].close_all() {
                self.closed(t, key, e, partition, counts, out);
            }
        }
        self.retention.flush(program, counts, &mut self.released);
        self.dirty = true;
    }

    /// Decides one kept event. `message` is the text its templates are mined from, `event`
    /// the event itself (for byte counts and throttle's samples), `record_ms` the record's
    /// event time (used when the rule names no time field).
    pub fn decide(
        &mut self,
        program: &Program,
        ask: &Ask,
        text: &str,
        event: &[u8],
        record_ms: u64,
        source: Source,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) -> Verdict {
        let rule = ask.rule as usize;
        let Some(reduce) = program.rules.get(rule).and_then(|r| r.reduce.as_deref()) else {
            return Verdict::Keep {
                sample_rate: None,
                template: None,
            };
        };
        self.dirty = true;
        let now = self.clock.max(ask.time_ms.unwrap_or(record_ms));
        self.clock = now;
        self.close_due(now, source.partition, counts, out);
        self.retention
            .close_due(now, program, counts, &mut self.released);
        let bytes = event.len() as u64;
        let c = &mut counts.rules[rule];
        c.events_in += 1;
        c.bytes_in += bytes;
        let kept = Verdict::Keep {
            sample_rate: None,
            template: None,
        };
        let retained = self.retained(program, reduce, ask, event, record_ms, source, now, counts);
        // A trace kept whole is not cut by a budget either.
        let whole = retained.is_some();
        let verdict = match retained {
            Some(v) => v,
            None if ask.protected => kept,
            None => self.actions(reduce, ask, text, event, now, source, counts, out),
        };
        let verdict = match (verdict, &reduce.kept_bytes) {
            (Verdict::Keep { .. }, Some(k))
                if self.over_budget(k, ask.protected || whole, event, now, source, counts, out) =>
            {
                Verdict::Suppressed(Action::Budget)
            }
            (v, _) => v,
        };
        let c = &mut counts.rules[rule];
        match verdict {
            Verdict::Keep { .. } => {
                c.protected += u64::from(ask.protected);
                c.events_out += 1;
                c.bytes_out += bytes;
            }
            Verdict::Suppressed(a) => {
                c.suppressed[a as usize] += 1;
                c.suppressed_bytes[a as usize] += bytes;
            }
            Verdict::Held => {}
        }
        verdict
    }

    /// `keep_traces`' part, for an event with a trace id: `None` when sampling keeps the
    /// trace (the event goes on), else whether its trace keeps it whole, dropped it, or holds
    /// it until decided.
    #[allow(clippy::too_many_arguments)]
    fn retained(
        &mut self,
        program: &Program,
        reduce: &Reduce,
        ask: &Ask,
        event: &[u8],
        record_ms: u64,
        source: Source,
        now: u64,
        counts: &mut Reduction,
    ) -> Option<Verdict> {
        let (Some(k), Some(s), true) = (&reduce.keep_traces, &reduce.sample, ask.traced) else {
            return None;
        };
        let e = TraceEvent {
            key: ask.sample_key,
            rate: s.rate,
            protected: ask.protected,
            now,
            wait_ms: k.wait_ms,
            slower_ms: k.slower_ms,
        };
        let held = || Held {
            rule: ask.rule,
            rule_hash: reduce.rule_hash,
            offset: source.offset,
            record_ms,
            timestamp_ms: source.timestamp_ms,
            payload: event.into(),
            part: source.part,
        };
        match self
            .retention
            .event(e, held, program, counts, &mut self.released)
        {
            Step::Sampled => None,
            Step::Keep => Some(Verdict::Keep {
                sample_rate: None,
                template: None,
            }),
            Step::Drop => Some(Verdict::Suppressed(Action::Sample)),
            Step::Held => Some(Verdict::Held),
        }
    }

    fn actions(
        &mut self,
        reduce: &Reduce,
        ask: &Ask,
        text: &str,
        event: &[u8],
        now: u64,
        source: Source,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) -> Verdict {
        let mut sample_rate = None;
        if let Some(s) = &reduce.sample {
            // The same key gets the same decision on every instance and after every restart.
            if super::sampled_out(ask.sample_key, s.rate) {
                return Verdict::Suppressed(Action::Sample);
            }
            if s.rate > 1 {
                sample_rate = Some(s.rate);
            }
        }
        let mined = reduce.patterns.is_some() || reduce.dedupe.as_ref().is_some_and(|d| !d.whole);
        let mut template = None;
        let message = ask.message(text, event);
        if mined {
            let o = self.miner.observe(message);
            template = Some(o.id);
            self.vars.clear();
            if reduce.patterns.is_some() {
                self.vars.extend_from_slice(o.variables);
            }
            if o.evicted.is_some() {
                self.template_evicted();
            }
        }
        let (rule_hash, rule_name) = (reduce.rule_hash, &reduce.rule);
        let cap = reduce.max_keys;
        if let Some(d) = &reduce.dedupe {
            let key = if d.whole {
                combine(rule_hash, hash_bytes(event))
            } else {
                combine(combine(rule_hash, template.unwrap_or(0)), ask.dedupe_key)
            };
            match self.tables[DEDUPE].get_mut(key) {
                Some(e) => {
                    e.suppress_keyed(now, source.offset, || {
                        let (range, spans) = (ask.dedupe_text, &ask.dedupe_spans);
                        ask.key_text_of(text, event, range, spans, &d.key.names)
                    });
                    return Verdict::Suppressed(Action::Dedupe);
                }
                None => {
                    let e = Entry::new(
                        rule_name,
                        now,
                        now.saturating_add(d.window_ms),
                        1,
                        (!d.whole).then_some(template).flatten(),
                    );
                    self.open(DEDUPE, key, e, cap, source.partition, counts, out);
                }
            }
        }
        if let Some(t) = &reduce.throttle {
            let start = now - now % t.per_ms;
            let key = combine(combine(rule_hash, ask.throttle_key), start);
            match self.tables[THROTTLE].get_mut(key) {
                Some(e) if e.kept >= u64::from(t.limit) => {
                    let s = e.suppress_keyed(now, source.offset, || {
                        let (range, spans) = (ask.throttle_text, &ask.throttle_spans);
                        ask.key_text_of(text, event, range, spans, &t.key.names)
                    });
                    if s.samples.len() < MAX_SAMPLES {
                        s.samples
                            .push(cut(&String::from_utf8_lossy(event), MAX_SAMPLE_BYTES));
                    }
                    return Verdict::Suppressed(Action::Throttle);
                }
                Some(e) => e.kept += 1,
                None => {
                    let e = Entry::new(rule_name, start, start.saturating_add(t.per_ms), 1, None);
                    self.open(THROTTLE, key, e, cap, source.partition, counts, out);
                }
            }
        }
        if let (Some(p), Some(id)) = (&reduce.patterns, template) {
            let start = now - now % p.per_ms;
            let key = combine(combine(rule_hash, id), start);
            match self.tables[PATTERNS].get_mut(key) {
                Some(e) if e.kept >= u64::from(p.keep) => {
                    sample_values(e.suppress(now, source.offset), &self.vars, message);
                    return Verdict::Suppressed(Action::Patterns);
                }
                Some(e) => e.kept += 1,
                None => {
                    let mut e = Entry::new(
                        rule_name,
                        start,
                        start.saturating_add(p.per_ms),
                        0,
                        Some(id),
                    );
                    let suppressed = p.keep == 0;
                    if suppressed {
                        sample_values(e.suppress(now, source.offset), &self.vars, message);
                    } else {
                        e.kept = 1;
                    }
                    self.open(PATTERNS, key, e, cap, source.partition, counts, out);
                    if suppressed {
                        return Verdict::Suppressed(Action::Patterns);
                    }
                }
            }
        }
        Verdict::Keep {
            sample_rate,
            template,
        }
    }

    /// Counts a kept event's bytes against its team's second; `true` when they are over it
    /// (the event is then suppressed, unless `protected`: it is kept and its bytes counted).
    #[allow(clippy::too_many_arguments)]
    fn over_budget(
        &mut self,
        k: &KeptBytes,
        protected: bool,
        event: &[u8],
        now: u64,
        source: Source,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) -> bool {
        let bytes = event.len() as u64;
        let start = now - now % 1000;
        let key = combine(k.team_hash, start);
        let e = match self.tables[BUDGET].get_mut(key) {
            Some(e) => e,
            None => {
                // The key is the team's from the start, as snapshots have always had it.
                let mut e = Entry::new(&k.team, start, start.saturating_add(1000), 0, None);
                e.suppression = Some(Box::new(Suppression {
                    key_text: format!("team={}", k.team).into(),
                    ..Suppression::default()
                }));
                self.open(
                    BUDGET,
                    key,
                    e,
                    MAX_TEAM_SECONDS,
                    source.partition,
                    counts,
                    out,
                );
                self.tables[BUDGET].get_mut(key).expect("just opened")
            }
        };
        if protected || e.kept + bytes <= k.per_second {
            e.kept += bytes;
            return false;
        }
        let s = e.suppress(now, source.offset);
        if s.samples.len() < MAX_SAMPLES {
            s.samples
                .push(cut(&String::from_utf8_lossy(event), MAX_SAMPLE_BYTES));
        }
        true
    }

    fn open(
        &mut self,
        table: usize,
        key: u64,
        e: Entry,
        cap: usize,
        partition: i32,
        counts: &mut Reduction,
        out: &mut Vec<Summary>,
    ) {
        if let Some((k, old)) = self.tables[table].insert(key, e, cap) {
            counts.evictions[action_of(table) as usize] += 1;
            self.closed(table, k, old, partition, counts, out);
        }
    }

    /// A template left the miner (its cap): windows open on it keep its last text, for their
    /// summaries. The texts no window needs are dropped once they outnumber the windows, so
    /// they cost amortised constant time and at most about the tables' own size.
    fn template_evicted(&mut self) {
        if let Some(t) = self.miner.evicted() {
            self.texts.insert(t.id(), t.to_string().into());
        }
        let windows = self.tables[DEDUPE].len() + self.tables[PATTERNS].len();
        if self.texts.len() > 2 * windows + 64 {
            self.prune_texts();
        }
    }
}

/// Keeps up to `MAX_SAMPLES` distinct values of each variable of a suppressed event (of the
/// first `MAX_VARIABLES` variables met, so a summary of a 10,000-token line stays small).
fn sample_values(e: &mut Suppression, vars: &[Variable], message: &str) {
    for v in vars {
        let value = message.get(v.span()).unwrap_or_default();
        let room = e.variables.len() < MAX_VARIABLES;
        match e.variables.iter_mut().find(|(n, _)| *n == v.var) {
            Some((_, vs)) if vs.len() < MAX_SAMPLES && !vs.iter().any(|x| x.as_ref() == value) => {
                vs.push(cut(value, MAX_VALUE_BYTES));
            }
            Some(_) => {}
            None if room => e.variables.push((v.var, vec![cut(value, MAX_VALUE_BYTES)])),
            None => {}
        }
    }
}

/// What comes out of reducing a batch, in order: each record's verdict, with the summaries
/// that closed before it. Every reduced record has one, summaries are few: they are boxed, so
/// that a verdict takes 32 bytes rather than a summary's 112.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A record whose rule reduces: what was decided.
    Decided(usize, Verdict),
    Summary(Box<Summary>),
    /// A held event of a trace kept whole (`keep_traces`), written out before the record
    /// whose decision kept it.
    Released(Box<Held>),
}

const _: () = assert!(std::mem::size_of::<Out>() <= 32);

impl Reducer {
    /// Reduces the kept events of one partition's records, in order. `asks` are the engine's,
    /// in record order; `record(i)` gives record `i`'s payload, event time and source.
    pub fn batch<'a>(
        &mut self,
        program: &Program,
        asks: &[Ask],
        text: &str,
        record: impl Fn(usize) -> (&'a [u8], u64, Source),
        counts: &mut Reduction,
        out: &mut Vec<Out>,
    ) {
        let mut summaries = Vec::new();
        for (k, ask) in asks.iter().enumerate() {
            if let Some(next) = asks.get(k + 2) {
                // The event two ahead and its message: written by another thread (a worker,
                // the engine), they are cold here, and reading them is where deciding waits.
                let (payload, _, _) = record(next.record as usize);
                for line in payload.chunks(64).take(4) {
                    super::places::prefetch(&line[0]);
                }
                if let Some(b) = text.as_bytes().get(next.message.0 as usize) {
                    super::places::prefetch(b);
                }
            }
            let i = ask.record as usize;
            let (payload, record_ms, source) = record(i);
            let verdict = self.decide(
                program,
                ask,
                text,
                payload,
                record_ms,
                source,
                counts,
                &mut summaries,
            );
            // Most events close no window and release nothing.
            if !summaries.is_empty() {
                out.extend(summaries.drain(..).map(|s| Out::Summary(Box::new(s))));
            }
            if !self.released.is_empty() {
                out.extend(self.released.drain(..).map(|h| Out::Released(Box::new(h))));
            }
            out.push(Out::Decided(i, verdict));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::decode::{InputFormat, Limits};
    use crate::derive::Version;
    use crate::engine::{Engine, Record};
    use crate::reduce::Fate;
    use crate::rules::{SourceFile, compile};

    /// What [`decided`] gives.
    struct Decided {
        program: Arc<Program>,
        reducer: Reducer,
        counts: Reduction,
        out: Vec<Out>,
        fates: Vec<Fate>,
    }

    /// `lines` (with their times, ms) through the engine and partition `partition`'s
    /// reduction, in one batch.
    fn decided(rules: &str, lines: &[(&str, u64)], partition: i32) -> Decided {
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
            .map(|(i, (l, t))| Record {
                payload: l.as_bytes(),
                topic: "t",
                version: Version {
                    offset: i as u64,
                    ..Version::default()
                },
                event_ms: *t,
                part: crate::decode::Part::Whole,
            })
            .collect();
        let mut fates = Vec::new();
        engine.process(&batch, 0, &mut fates);
        let mut r = Reducer::new();
        let mut counts = Reduction::new(&program);
        let mut out = Vec::new();
        r.batch(
            &program,
            &engine.asks,
            &engine.text,
            |i| {
                (
                    batch[i].payload,
                    batch[i].event_ms,
                    Source {
                        partition,
                        offset: i as i64,
                        timestamp_ms: None,
                        part: crate::decode::Part::Whole,
                    },
                )
            },
            &mut counts,
            &mut out,
        );
        Decided {
            program,
            reducer: r,
            counts,
            out,
            fates,
        }
    }

    /// Runs `lines` (with their times, ms) through the engine and one partition's reduction:
    /// the lines kept, and the summaries as JSON, in output order.
    pub(crate) fn reduce(rules: &str, lines: &[(&str, u64)]) -> (Vec<String>, Vec<String>) {
        let Decided {
            program,
            reducer: mut r,
            mut counts,
            mut out,
            fates,
        } = decided(rules, lines, 0);
        let mut summaries = Vec::new();
        r.flush(&program, 0, &mut counts, &mut summaries);
        out.extend(summaries.into_iter().map(|s| Out::Summary(Box::new(s))));
        out.extend(r.released.drain(..).map(|h| Out::Released(Box::new(h))));
        let released: Vec<usize> = out
            .iter()
            .filter_map(|o| match o {
                Out::Released(h) => Some(h.offset as usize),
                _ => None,
            })
            .collect();
        let decided: std::collections::HashMap<usize, Verdict> = out
            .iter()
            .filter_map(|o| match o {
                Out::Decided(i, v) => Some((*i, *v)),
                _ => None,
            })
            .collect();
        let mut kept = Vec::new();
        let mut sums = Vec::new();
        // Records without a verdict are kept or not by their fate alone.
        for (i, f) in fates.iter().enumerate() {
            let keep = *f == Fate::Keep
                && decided.get(&i).is_none_or(|v| match v {
                    Verdict::Keep { .. } => true,
                    Verdict::Held => released.contains(&i),
                    Verdict::Suppressed(_) => false,
                });
            if keep {
                kept.push(lines[i].0.to_string());
            }
        }
        for o in &out {
            if let Out::Summary(s) = o {
                let mut j = String::new();
                s.json(&mut j);
                sums.push(j.trim_end().to_string());
            }
        }
        // Every reduced event is kept or counted in a summary.
        let (events_in, _, events_out, _) = counts.totals();
        let suppressed: u64 = counts
            .rules
            .iter()
            .map(|r| r.suppressed.iter().sum::<u64>())
            .sum();
        assert_eq!(events_in, events_out + suppressed);
        (kept, sums)
    }

    /// One trace in two (by id hash) sampled, the others held; `slower_than` 5 s.
    const RETAIN: &str = "team: t\nrules:\n  - name: svc\n    format: json\n    metrics: [{name: svc_total, type: counter}]\n    reduce:\n      sample: 1000000\n      keep_traces: {wait: 10s, slower_than: 5s}\n";

    fn traced(trace: &str, level: &str, msg: &str) -> String {
        format!(r#"{{"trace_id":"{trace}","level":"{level}","msg":"{msg}"}}"#)
    }

    #[test]
    fn issue8_a_trace_with_an_error_is_kept_whole_and_the_others_dropped() {
        let (a, b) = (
            "0af7651916cd43dd8448eb211c80319c",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        let lines = [
            traced(a, "info", "request received"),
            traced(b, "info", "request received"),
            traced(a, "info", "calling db"),
            traced(b, "info", "calling db"),
            traced(a, "error", "db timed out"),
            traced(b, "info", "done"),
            traced(a, "info", "late retry"),
        ];
        let timed: Vec<(&str, u64)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), 1_000 * i as u64))
            .collect();
        let (kept, sums) = reduce(RETAIN, &timed);
        // Trace a: its error releases what was held, and its late event follows the decision.
        let want: Vec<&str> = [0, 2, 4, 6].iter().map(|i| lines[*i].as_str()).collect();
        assert_eq!(kept, want);
        assert!(sums.is_empty(), "{sums:?}");
    }

    #[test]
    fn issue8_a_slow_trace_is_kept_and_the_decision_waits_in_event_time() {
        let (slow, quick) = (
            "0af7651916cd43dd8448eb211c80319c",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        );
        let lines = [
            (traced(slow, "info", "start"), 0),
            (traced(quick, "info", "start"), 1_000),
            (traced(quick, "info", "end"), 2_000),
            (traced(slow, "info", "end"), 7_000),
        ];
        let timed: Vec<(&str, u64)> = lines.iter().map(|(l, t)| (l.as_str(), *t)).collect();
        let (kept, _) = reduce(RETAIN, &timed);
        assert_eq!(kept, vec![lines[0].0.as_str(), lines[3].0.as_str()]);
    }

    #[test]
    fn issue8_held_bytes_are_capped_and_the_oldest_trace_is_decided_early() {
        let (program, _) = crate::rules::compile(&[crate::rules::SourceFile {
            name: "t.yaml".into(),
            text: RETAIN.into(),
        }]);
        let mut r = Reducer::new();
        // 300 bytes a one-event trace, plus the overheads: three fit.
        r.retention = Retention::new(super::super::retain::RetainConfig {
            max_held_bytes: 2_000,
            max_decisions: 10,
        });
        let mut counts = Reduction::new(&program);
        let mut out = Vec::new();
        let payload = [b'x'; 300];
        for i in 0..20u64 {
            let ask = Ask {
                record: i as u32,
                rule: 0,
                sample_key: 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i + 1),
                traced: true,
                ..Ask::default()
            };
            if !crate::reduce::sampled_out(ask.sample_key, 1_000_000) {
                continue;
            }
            let source = Source {
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                part: crate::decode::Part::Whole,
            };
            let v = r.decide(
                &program,
                &ask,
                "",
                &payload,
                i,
                source,
                &mut counts,
                &mut out,
            );
            assert_eq!(v, Verdict::Held);
            assert!(r.retention.held_bytes() <= 2_000);
        }
        assert!(counts.retain.early >= 15, "{:?}", counts.retain);
        assert_eq!(r.retention.held_events(), 3);
        assert_eq!(r.retention.retain_from(), Some(17));
        // A trace decided early is remembered (the last ten, the cap): its late event is
        // dropped, not held.
        let first = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(17);
        let late = Ask {
            rule: 0,
            sample_key: first,
            traced: true,
            ..Ask::default()
        };
        let source = Source {
            partition: 0,
            offset: 20,
            timestamp_ms: None,
            part: crate::decode::Part::Whole,
        };
        let v = r.decide(
            &program,
            &late,
            "",
            &payload,
            20,
            source,
            &mut counts,
            &mut out,
        );
        assert_eq!(v, Verdict::Suppressed(Action::Sample));
    }

    #[test]
    fn issue8_retention_state_round_trips_and_held_events_are_held_again() {
        let (program, _) = crate::rules::compile(&[crate::rules::SourceFile {
            name: "t.yaml".into(),
            text: RETAIN.into(),
        }]);
        let mut r = Reducer::new();
        let mut counts = Reduction::new(&program);
        let mut out = Vec::new();
        let key = (1..)
            .find(|k| crate::reduce::sampled_out(*k, 1_000_000))
            .unwrap();
        let ask = Ask {
            rule: 0,
            sample_key: key,
            traced: true,
            ..Ask::default()
        };
        for offset in [5, 9] {
            let source = Source {
                partition: 0,
                offset,
                timestamp_ms: Some(offset),
                part: crate::decode::Part::Whole,
            };
            let v = r.decide(
                &program,
                &ask,
                "",
                b"held",
                1_000,
                source,
                &mut counts,
                &mut out,
            );
            assert_eq!(v, Verdict::Held);
        }
        let mut w = crate::codec::Writer::default();
        r.retention.encode(&mut w);
        let mut back = Retention::decode(
            &mut crate::codec::Reader(&w.0),
            super::super::retain::RetainConfig::default(),
        )
        .unwrap();
        assert_eq!(back.retain_from(), Some(5));
        assert_eq!(back.held_events(), 0);
        let held = |offset| super::super::retain::Held {
            rule: 0,
            rule_hash: 0,
            offset,
            record_ms: 1_000,
            timestamp_ms: None,
            payload: b"held".to_vec().into(),
            part: crate::decode::Part::Whole,
        };
        assert!(
            !back.rehold(key, 4, || held(4)),
            "before the trace's first event"
        );
        assert!(!back.rehold(key ^ 1, 6, || held(6)), "another trace");
        assert!(back.rehold(key, 5, || held(5)));
        assert!(back.rehold(key, 9, || held(9)));
        assert!(!back.rehold(key, 11, || held(11)), "more than it held");
        // An error releases both, from the restored state as from the original.
        let mut released = Vec::new();
        let mut c = Reduction::new(&program);
        let e = super::super::retain::TraceEvent {
            key,
            rate: 1_000_000,
            protected: true,
            now: 2_000,
            wait_ms: 10_000,
            slower_ms: None,
        };
        let step = back.event(e, || held(12), &program, &mut c, &mut released);
        assert_eq!(step, super::super::retain::Step::Keep);
        assert_eq!(
            released.iter().map(|h| h.offset).collect::<Vec<_>>(),
            vec![5, 9]
        );
        // Decoding is total.
        for n in 0..w.0.len() {
            let _ = Retention::decode(
                &mut crate::codec::Reader(&w.0[..n]),
                super::super::retain::RetainConfig::default(),
            );
        }
    }

    const DEDUPE: &str = "team: t\nrules:\n  - name: health\n    format: json\n    metrics: [{name: health_total, type: counter}]\n    reduce:\n      dedupe: {window: 10s}\n";

    #[test]
    fn dedupe_keeps_the_first_of_a_template_per_window_and_summarises_the_rest() {
        let lines = [
            (r#"{"msg":"health check ok in 12ms"}"#, 1_000),
            (r#"{"msg":"health check ok in 15ms"}"#, 2_000),
            (r#"{"msg":"user 7 logged in"}"#, 3_000),
            (r#"{"msg":"health check ok in 9ms"}"#, 10_999),
            (r#"{"msg":"health check ok in 11ms"}"#, 11_000),
        ];
        let (kept, sums) = reduce(DEDUPE, &lines);
        assert_eq!(kept, vec![lines[0].0, lines[2].0, lines[4].0]);
        assert_eq!(sums.len(), 1, "{sums:?}");
        let s = &sums[0];
        for want in [
            "\"action\":\"dedupe\"",
            "\"repeat_count\":2",
            "\"first_ms\":2000",
            "\"last_ms\":10999",
            "\"template\":\"health check ok in <*>ms\"",
            "\"rule\":\"t/health\"",
        ] {
            assert!(s.contains(want), "{want} in {s}");
        }
    }

    #[test]
    fn errors_and_always_keep_are_never_reduced() {
        let rules = format!("{DEDUPE}      always_keep: {{fields: {{user: vip}}}}\n");
        let lines = [
            (r#"{"msg":"disk full","level":"info"}"#, 1),
            (r#"{"msg":"disk full","level":"ERROR"}"#, 2),
            (r#"{"msg":"disk full","level":"info","user":"vip"}"#, 3),
            (r#"{"msg":"disk full","level":"info"}"#, 4),
        ];
        let (kept, sums) = reduce(&rules, &lines);
        assert_eq!(kept, vec![lines[0].0, lines[1].0, lines[2].0]);
        assert!(sums[0].contains("\"repeat_count\":1"), "{sums:?}");
    }

    #[test]
    fn throttle_and_patterns_count_exactly() {
        let rules = "team: t\nrules:\n  - name: r\n    format: logfmt\n    metrics: [{name: r_total, type: counter}]\n    reduce:\n      throttle: {limit: 2, per: 1m, key: [svc]}\n      patterns: {keep: 1, per: 1m}\n";
        let lines: Vec<(String, u64)> = (0..10)
            .map(|i| {
                (
                    format!(
                        "svc={} msg=\"request {i} took {}ms\"",
                        if i % 2 == 0 { "a" } else { "b" },
                        i * 3
                    ),
                    i as u64 * 1000,
                )
            })
            .collect();
        let lines: Vec<(&str, u64)> = lines.iter().map(|(l, t)| (l.as_str(), *t)).collect();
        let (kept, sums) = reduce(rules, &lines);
        // Throttle keeps two per service; patterns then keeps the first of the template.
        assert_eq!(kept.len(), 1, "{kept:?}");
        let throttled: u64 = sums
            .iter()
            .filter(|s| s.contains("\"action\":\"throttle\""))
            .map(|s| {
                s.split("\"suppressed\":")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        let patterned: u64 = sums
            .iter()
            .filter(|s| s.contains("\"action\":\"patterns\""))
            .map(|s| {
                s.split("\"suppressed\":")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!((throttled, patterned), (6, 3), "{sums:?}");
        let p = sums.iter().find(|s| s.contains("patterns")).unwrap();
        assert!(
            p.contains("\"samples\"") || p.contains("\"variables\""),
            "{p}"
        );
    }

    #[test]
    fn sampling_is_a_function_of_the_key() {
        let rules = "team: t\nrules:\n  - name: r\n    format: json\n    metrics: [{name: r_total, type: counter}]\n    reduce:\n      sample: {rate: 4}\n";
        let lines: Vec<String> = (0..400)
            .map(|i| format!(r#"{{"trace_id":"{:032x}","n":{i}}}"#, i / 4 + 1))
            .collect();
        let input: Vec<(&str, u64)> = lines.iter().map(|l| (l.as_str(), 0)).collect();
        let (kept, _) = reduce(rules, &input);
        // Whole traces are kept or dropped together.
        let traces: std::collections::BTreeMap<&str, usize> =
            kept.iter().fold(Default::default(), |mut m, l| {
                *m.entry(&l[13..l.find("\",").unwrap()]).or_default() += 1;
                m
            });
        assert!(traces.values().all(|n| *n == 4), "{traces:?}");
        assert!(
            (15..=35).contains(&traces.len()),
            "{} of 100 traces kept",
            traces.len()
        );
        let (again, _) = reduce(rules, &input);
        assert_eq!(kept, again);
    }

    #[test]
    fn a_snapshot_resumes_exactly() {
        resumes_exactly(DEDUPE, 700);
    }

    /// Issue 9: a team over its kept bytes in a second: the excess is suppressed (errors kept,
    /// their bytes counted), summarised when the second closes, and every event is kept or in
    /// a summary; a snapshot taken mid-second resumes exactly.
    #[test]
    fn issue9_a_team_over_its_kept_bytes_per_second() {
        let line = |i: usize, level: &str| {
            format!(r#"{{"level":"{level}","msg":"request {i:03} served"}}"#)
        };
        let lines: Vec<String> = (0..12)
            .map(|i| line(i, if i == 5 { "error" } else { "info" }))
            .collect();
        let size = lines[0].len();
        // Three events fit in a second; the times put events 0..6 in one second, 6..12 in the next.
        let rules = format!(
            "team: t\nbudget: {{kept_bytes: {}}}\nrules:\n  - name: r\n    format: json\n    metrics: [{{name: r_total, type: counter}}]\n",
            3 * size
        );
        let input: Vec<(&str, u64)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), 1_000 + (i as u64 / 6) * 1_000 + i as u64 % 6))
            .collect();
        let (kept, sums) = reduce(&rules, &input);
        let want: Vec<String> = [0, 1, 2, 5, 6, 7, 8]
            .iter()
            .map(|i| lines[*i].clone())
            .collect();
        assert_eq!(kept, want);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert!(sums[0].contains(r#""action":"budget""#), "{}", sums[0]);
        assert!(sums[0].contains(r#""suppressed":2"#), "{}", sums[0]);
        assert!(
            sums[0].contains(&format!(r#""kept_bytes":{}"#, 3 * size + lines[5].len())),
            "{}",
            sums[0]
        );
        assert!(sums[1].contains(r#""suppressed":3"#), "{}", sums[1]);
        resumes_exactly(&rules, 250);
    }

    /// The same outputs whether a reducer runs through or is snapshotted halfway and restored;
    /// `step` ms between events.
    fn resumes_exactly(rules: &str, step: u64) {
        let lines: Vec<String> = (0..60)
            .map(|i| format!(r#"{{"msg":"job {} done in {}ms"}}"#, i % 5, i))
            .collect();
        let input: Vec<(&str, u64)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i as u64 * step))
            .collect();
        let (program, _) = compile(&[SourceFile {
            name: "t.yaml".into(),
            text: rules.into(),
        }]);
        let program = Arc::new(program);
        let run = |r: &mut Reducer, part: &[(&str, u64)], base: usize| -> Vec<Out> {
            let mut engine = Engine::new(program.clone(), InputFormat::Auto, Limits::default());
            let batch: Vec<Record> = part
                .iter()
                .map(|(l, t)| Record {
                    payload: l.as_bytes(),
                    topic: "t",
                    version: Version::default(),
                    event_ms: *t,
                    part: crate::decode::Part::Whole,
                })
                .collect();
            let mut fates = Vec::new();
            engine.process(&batch, 0, &mut fates);
            let mut out = Vec::new();
            let mut counts = Reduction::new(&program);
            r.batch(
                &program,
                &engine.asks,
                &engine.text,
                |i| {
                    (
                        batch[i].payload,
                        batch[i].event_ms,
                        Source {
                            partition: 3,
                            offset: (base + i) as i64,
                            timestamp_ms: None,
                            part: crate::decode::Part::Whole,
                        },
                    )
                },
                &mut counts,
                &mut out,
            );
            out
        };
        let mut whole = Reducer::new();
        let mut a = run(&mut whole, &input[..30], 0);
        a.extend(run(&mut whole, &input[30..], 30));
        let mut first = Reducer::new();
        let mut b = run(&mut first, &input[..30], 0);
        let mut second = Reducer::decode(&first.encode()).unwrap();
        b.extend(run(&mut second, &input[30..], 30));
        assert_eq!(a, b);
        assert_eq!(whole.encode(), second.encode());
        let bytes = whole.encode();
        for cut in 0..bytes.len() {
            assert!(Reducer::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Letters only, so that each is a constant word to the miner.
    fn word(mut i: usize) -> String {
        let mut s = Vec::new();
        i += 26;
        while i > 0 {
            s.push(b'a' + (i % 26) as u8);
            i /= 26;
        }
        s.reverse();
        String::from_utf8(s).unwrap()
    }

    #[test]
    fn a_window_outlives_its_templates_eviction() {
        let rules = "team: t\nrules:\n  - name: r\n    format: json\n    metrics: [{name: r_total, type: counter}]\n    reduce:\n      patterns: {keep: 1, per: 1m}\n";
        let mut lines: Vec<(String, u64)> = vec![
            (r#"{"msg":"cache warmed in 12ms"}"#.into(), 0),
            (r#"{"msg":"cache warmed in 15ms"}"#.into(), 1),
        ];
        // More distinct templates than the miner holds: the first one is evicted.
        let cap = MinerConfig::default().max_templates;
        for i in 0..cap + 10 {
            lines.push((
                format!(r#"{{"msg":"{} {} finished"}}"#, word(i), word(i + 7)),
                2 + i as u64,
            ));
        }
        lines.push((r#"{"msg":"cache warmed in 19ms"}"#.into(), 5_000));
        let input: Vec<(&str, u64)> = lines.iter().map(|(l, t)| (l.as_str(), *t)).collect();
        let (kept, summaries) = reduce(rules, &input);
        // The template came back with its id and found its window: one summary, exact.
        let cache: Vec<&String> = summaries
            .iter()
            .filter(|s| s.contains("cache warmed"))
            .collect();
        assert_eq!(cache.len(), 1, "{cache:?}");
        assert!(
            cache[0].contains(r#""template":"cache warmed in <*>ms","suppressed":2"#),
            "{}",
            cache[0]
        );
        assert_eq!(
            kept.iter().filter(|k| k.contains("cache warmed")).count(),
            1
        );
    }

    #[test]
    fn an_evicted_templates_text_survives_a_snapshot() {
        let (program, _) = compile(&[SourceFile {
            name: "t.yaml".into(),
            text: "team: t\nrules:\n  - name: r\n    format: json\n    metrics: [{name: r_total, type: counter}]\n    reduce:\n      patterns: {keep: 1, per: 1m}\n".into(),
        }]);
        let program = Arc::new(program);
        let cap = MinerConfig::default().max_templates;
        let mut lines = vec![
            r#"{"msg":"cache warmed in 12ms"}"#.to_string(),
            r#"{"msg":"cache warmed in 15ms"}"#.to_string(),
        ];
        lines.extend(
            (0..cap + 10).map(|i| format!(r#"{{"msg":"{} {} finished"}}"#, word(i), word(i + 7))),
        );
        let mut engine = Engine::new(program.clone(), InputFormat::Auto, Limits::default());
        let batch: Vec<Record> = lines
            .iter()
            .map(|l| Record {
                payload: l.as_bytes(),
                topic: "t",
                version: Version::default(),
                event_ms: 0,
                part: crate::decode::Part::Whole,
            })
            .collect();
        let mut fates = Vec::new();
        engine.process(&batch, 0, &mut fates);
        let mut r = Reducer::new();
        let mut counts = Reduction::new(&program);
        let mut out = Vec::new();
        let source = Source {
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            part: crate::decode::Part::Whole,
        };
        r.batch(
            &program,
            &engine.asks,
            &engine.text,
            |i| (batch[i].payload, 0, source),
            &mut counts,
            &mut out,
        );
        // Eleven templates were evicted, each with its window still open.
        assert_eq!(r.texts.len(), 11);
        let mut back = Reducer::decode(&r.encode()).unwrap();
        assert_eq!(back.texts, r.texts);
        let mut summaries = Vec::new();
        back.flush(&program, 0, &mut counts, &mut summaries);
        let cache: Vec<&Summary> = summaries
            .iter()
            .filter(|s| s.template_text.as_deref() == Some("cache warmed in <*>ms"))
            .collect();
        assert_eq!(cache.len(), 1);
        assert_eq!(cache[0].suppression.count, 1);
    }

    /// Issue 7: the tables' slab and the suppressions boxed on first use changed no byte of a
    /// snapshot. A state with every table (windows with and without suppressions, samples,
    /// variables, a budget's second with its key) encodes as the build before them did (its
    /// hash pinned from that build) and decodes back to the same bytes.
    #[test]
    fn issue7_snapshots_keep_their_bytes() {
        let rules = "team: t\nbudget: {kept_bytes: 60}\nrules:\n  - name: r\n    format: logfmt\n    metrics: [{name: r_total, type: counter}]\n    reduce:\n      dedupe: {window: 10s, key: [svc]}\n      throttle: {limit: 1, per: 1m, key: [svc]}\n      patterns: {keep: 4, per: 1m}\n";
        let lines: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    "svc={} level={} msg=\"request {} took {}ms\"",
                    if i == 38 {
                        "f"
                    } else {
                        ["a", "b", "c", "d", "e"][i % 5]
                    },
                    if i == 39 { "error" } else { "info" },
                    i % 7,
                    i * 3
                )
            })
            .collect();
        let timed: Vec<(&str, u64)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), 1_000 + i as u64 * 600))
            .collect();
        let r = decided(rules, &timed, 1).reducer;
        let bytes = r.encode();
        assert!(
            r.tables.iter().all(|t| !t.is_empty()),
            "every table has windows"
        );
        for t in &r.tables[..BUDGET] {
            assert!(t.entries().any(|e| e.suppressed() > 0));
        }
        for t in [super::DEDUPE, THROTTLE, BUDGET] {
            assert!(r.tables[t].entries().any(|e| e.suppressed() == 0));
        }
        assert_eq!(
            (bytes.len(), super::super::hash::hash_bytes(&bytes)),
            (1709, 6_699_196_026_749_238_697)
        );
        assert_eq!(Reducer::decode(&bytes).unwrap().encode(), bytes);
    }
}
