//! Worker threads. Each owns a set of partitions (`Partitions::assign` picks the worker) and
//! their reduction state, evaluates whole batches of them with its own `Engine`, reduces the
//! kept events in each partition's order, routes what remains (kept events, summaries, dead
//! letters) to the outputs, and returns what the coordinator merges.
//!
//! Jobs come in order on the worker's own queue: a partition's batches, its state's load and
//! drop, and the coordinator's barriers, which a worker answers with the reduction state of its
//! partitions as of every batch before the barrier (the state a checkpoint cut records).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use super::partition_state::{Caps, PartitionState};
use super::shadow::Candidate;
use crate::checkpoint::PartitionKey;
use crate::correlate::traces::TOPIC as TRACES_TOPIC;
use crate::decode::envelope::Declared;
use crate::decode::otlp::Splitter;
use crate::decode::{InputFormat, Limits, Part};
use crate::derive::shadow::{Delta, Evaluation};
use crate::derive::{Aggregates, Version};
use crate::engine::{Counters, Engine, Record};
use crate::reduce::retain::Held;
use crate::reduce::{Fate, Reduction, Source, Summary, Verdict};
use crate::rules::Program;
use crate::sink::kafka::{Meta, Outputs};
use crate::source::kafka::OwnedRecord;

pub enum Job {
    Batch {
        program: Arc<Program>,
        /// The candidate rules (`rules_candidate`), evaluated beside `program`.
        candidate: Option<Arc<Program>>,
        records: Vec<OwnedRecord>,
    },
    /// A checkpoint barrier: answer with the reduction state of every partition it changed
    /// since the last barrier.
    Cut { epoch: u64 },
    /// Start (or go back to) this reduction state for a partition; `None` starts it empty.
    /// Records before `counted` are counted already: read again only for held events.
    Load {
        key: PartitionKey,
        state: Option<Vec<u8>>,
        counted: i64,
    },
    /// The partition is no longer this worker's.
    Drop { key: PartitionKey },
}

/// Where a batch's reading of one partition got to.
#[derive(Debug, Clone)]
pub struct Reached {
    pub topic: Arc<str>,
    pub partition: i32,
    pub next: i64,
    /// The event time of the last record read.
    pub clock: u64,
}

/// A batch's results. Its records are gone: the worker routed them to the outputs; what comes
/// back is where each partition's reading got to and the events' timestamps.
pub struct BatchDone {
    pub worker: usize,
    pub delta: Aggregates,
    pub counters: Counters,
    /// The records polled (a message of many events is one).
    pub records: usize,
    /// The worker holds records for a CRI line's last part after the batch.
    pub carrying: bool,
    pub reached: Vec<Reached>,
    pub timestamps: Vec<i64>,
    /// The candidate's evaluation of the batch beside the live one, when there is a candidate.
    pub shadow: Option<Box<Delta>>,
}

pub enum Done {
    Batch(Box<BatchDone>),
    /// The answer to a barrier: the encoded reduction state of each partition that changed.
    Cut {
        worker: usize,
        epoch: u64,
        states: Vec<(PartitionKey, Vec<u8>)>,
    },
}

/// How a worker reads its records: the input format and envelopes of the topics it consumes,
/// and the repartition topic, whose records are republished trace events.
pub struct Reading {
    pub input: InputFormat,
    pub envelopes: Declared,
    pub repartition: Option<crate::correlate::repartition::Config>,
    /// How many partitions the input topics have (0 while not known).
    pub sources: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn run(
    worker: usize,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    outputs: Arc<Outputs>,
    reading: Reading,
    limits: Limits,
    caps: Caps,
) {
    let Reading {
        input,
        envelopes,
        repartition,
        sources,
    } = reading;
    let mut engine: Option<Engine> = None;
    // Reads the trace summaries and edges as events, so rules derive metrics from them.
    let mut trace_engine: Option<Engine> = None;
    let mut states: HashMap<(Arc<str>, i32), PartitionState> = HashMap::new();
    let mut summaries: Vec<Summary> = Vec::new();
    // Partitions whose records before `counted_from` are being read again.
    let mut rereading = 0usize;
    // What this worker's partitions hold for `keep_traces`, as last published.
    let mut published_held = (0i64, 0i64);
    let mut shadow: Option<Candidate> = None;
    let mut splitter = Splitter::default();
    let mut carried = Carried::default();
    for job in jobs {
        let (program, candidate, records) = match job {
            Job::Batch {
                program,
                candidate,
                records,
            } => (program, candidate, records),
            Job::Cut { epoch } => {
                let mut changed: Vec<(PartitionKey, Vec<u8>)> = states
                    .iter_mut()
                    .filter(|(_, s)| s.dirty())
                    .map(|((topic, partition), r)| {
                        (
                            PartitionKey {
                                topic: topic.to_string(),
                                partition: *partition,
                            },
                            r.encode(),
                        )
                    })
                    .collect();
                changed.sort_by(|a, b| a.0.cmp(&b.0));
                if done
                    .send(Done::Cut {
                        worker,
                        epoch,
                        states: changed,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Job::Load {
                key,
                state,
                counted,
            } => {
                // A rollback loads a partition's state again and reads it again from there.
                carried.forget(&key);
                let mut loaded = match state.map(|s| PartitionState::decode(&s, caps)) {
                    Some(Ok(s)) => s,
                    Some(Err(_)) => {
                        crate::telemetry::restore_failed("reduction_state");
                        tracing::error!(partition = %key, "the partition's reduction state cannot be read: starting it empty");
                        PartitionState::new(caps)
                    }
                    None => PartitionState::new(caps),
                };
                if loaded.reducer.retention.retain_from().is_some() {
                    loaded.counted_from = Some(counted);
                    rereading += 1;
                }
                let old = states.insert((key.topic.as_str().into(), key.partition), loaded);
                if old.is_some_and(|o| o.counted_from.is_some()) {
                    rereading -= 1;
                }
                continue;
            }
            Job::Drop { key } => {
                carried.forget(&key);
                if let Some(c) = &mut shadow {
                    c.forget(&key.topic, key.partition);
                }
                let old = states.remove(&(Arc::<str>::from(key.topic.as_str()), key.partition));
                if old.is_some_and(|o| o.counted_from.is_some()) {
                    rereading -= 1;
                }
                continue;
            }
        };
        let e = match &mut engine {
            Some(e) if Arc::ptr_eq(e.program(), &program) => e,
            _ => {
                let mut e = Engine::new(Arc::clone(&program), input, limits);
                e.declare_envelopes(&envelopes);
                e.enforce_cpu_budgets(BUDGET_WINDOW, QUARANTINE);
                engine.insert(e)
            }
        };
        match (&candidate, &shadow) {
            (Some(p), Some(c)) if Arc::ptr_eq(p, c.program()) => {}
            (Some(p), _) => {
                shadow = Some(Candidate::new(Arc::clone(p), input, limits, caps.retain));
            }
            (None, _) => shadow = None,
        }
        // Each rule's cost, for `logmill_rule_cpu_microseconds_total` and the shadow.
        Candidate::profile_live(e);
        // In flight is counted in polled records, whatever they held.
        let polled = records.len();
        let (merged, records) = super::repartition::split_off(repartition.as_ref(), records);
        let records = split(e, &mut splitter, records);
        let records = carried.batch(e, records, caps.cri_wait);
        let records = if rereading > 0 {
            let (again, records) = split_reread(records, &mut states, &mut rereading);
            if !again.is_empty() {
                rehold(e, &program, &again, &mut states);
            }
            records
        } else {
            records
        };
        let batch: Vec<Record> = records.iter().map(as_record).collect();
        let mut fates = Vec::with_capacity(batch.len());
        e.process(&batch, super::now_ms(), &mut fates);
        drop(batch);
        quarantines(e, &program, false);
        // Reduction, in each partition's order (a batch holds the partitions in record order).
        let mut verdicts: Vec<Option<Verdict>> = vec![None; records.len()];
        let mut reduction = Reduction::new(&program);
        let mut closing: Vec<(usize, Summary)> = Vec::new();
        let mut releasing: Vec<(usize, Held)> = Vec::new();
        for ask in &e.asks {
            let i = ask.record as usize;
            let rec = &records[i];
            let reducer = &mut states
                .entry((Arc::clone(&rec.topic), rec.partition))
                .or_insert_with(|| PartitionState::new(caps))
                .reducer;
            let source = Source {
                partition: rec.partition,
                offset: rec.offset,
                timestamp_ms: rec.timestamp_ms,
                part: rec.part,
            };
            let v = reducer.decide(
                &program,
                ask,
                &e.text,
                &rec.payload,
                rec.event_ms,
                source,
                &mut reduction,
                &mut summaries,
            );
            verdicts[i] = Some(v);
            closing.extend(summaries.drain(..).map(|s| (i, s)));
            releasing.extend(reducer.released.drain(..).map(|h| (i, h)));
        }
        let held = states.values().fold((0, 0), |(b, n), s| {
            let r = &s.reducer.retention;
            (b + r.held_bytes() as i64, n + r.held_events() as i64)
        });
        crate::telemetry::retention_held(held.0 - published_held.0, held.1 - published_held.1);
        published_held = held;
        // Traces, in each partition's order: the summaries and edges of the traces a record's
        // time closed go out before it.
        let mut trace_lines = String::new();
        let mut closed: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
        // With a repartition topic, trace events meet there instead, keyed by trace.
        if repartition.is_some() {
            super::repartition::republish(&outputs, &records, &e.trace_events, &e.text);
        }
        let gathered = repartition
            .as_ref()
            .filter(|_| !merged.is_empty())
            .map(|c| {
                let sources = sources.load(std::sync::atomic::Ordering::Relaxed);
                super::repartition::gather((c, sources), caps, &merged, &mut states)
            });
        let local: &[crate::correlate::traces::TraceEvent] = match repartition {
            Some(_) => &[],
            None => &e.trace_events,
        };
        for t in local {
            let i = t.record as usize;
            let rec = &records[i];
            let at = trace_lines.len();
            states
                .entry((Arc::clone(&rec.topic), rec.partition))
                .or_insert_with(|| PartitionState::new(caps))
                .traces
                .observe(t, &e.text, &mut trace_lines);
            if trace_lines.len() > at {
                closed.push((i, at..trace_lines.len()));
            }
        }
        let mut delta = std::mem::replace(&mut e.local, Aggregates::new(&program));
        let mut counters = std::mem::take(&mut e.counters);
        // The trace summaries and edges, read as events by the rules.
        let mut lines: Vec<Record> = Vec::new();
        let merged_ref = &merged;
        let from_merged = gathered.iter().flat_map(|g| {
            g.closed
                .iter()
                .map(move |(i, r)| (&merged_ref[*i], &g.lines[r.clone()]))
        });
        let from_records = closed
            .iter()
            .map(|(i, r)| (&records[*i], &trace_lines[r.clone()]));
        for (rec, text) in from_records.chain(from_merged) {
            for l in text.lines() {
                lines.push(Record {
                    payload: l.as_bytes(),
                    topic: TRACES_TOPIC,
                    version: Version {
                        ms: rec.event_ms,
                        lane: rec.partition as u32,
                        offset: rec.offset as u64,
                    },
                    event_ms: rec.event_ms,
                    part: Part::Whole,
                });
            }
        }
        if !lines.is_empty() {
            let te = match &mut trace_engine {
                Some(t) if Arc::ptr_eq(t.program(), &program) => t,
                _ => trace_engine.insert(Engine::new(
                    Arc::clone(&program),
                    InputFormat::Fixed(crate::decode::Format::Json),
                    limits,
                )),
            };
            read_trace_lines(te, &program, &lines, &mut delta, &mut counters.rule_matches);
        }
        let shadowed = shadow.as_mut().map(|c| {
            let live = Evaluation {
                program: Arc::clone(&program),
                aggs: delta.clone(),
                matches: counters.rule_matches.clone(),
                nanos: e.rule_nanos.clone(),
            };
            let outcomes: Vec<&'static str> = fates
                .iter()
                .zip(&verdicts)
                .map(|(f, v)| crate::reduce::outcome(f, v.as_ref()))
                .collect();
            Box::new(c.batch(live, &outcomes, &records, &lines, super::now_ms()))
        });
        drop(lines);
        crate::telemetry::rule_cpu(&program, &mut e.rule_nanos);
        counters.reduction = reduction;
        e.counters.rule_matches = vec![0; program.rules.len()];
        let mut reached: Vec<Reached> = Vec::new();
        let mut closing = closing.into_iter().peekable();
        let mut releasing = releasing.into_iter().peekable();
        let mut closed_out = closed.into_iter().peekable();
        for (i, (rec, fate)) in records.iter().zip(&fates).enumerate() {
            reach(&mut reached, rec);
            // Summaries a record's time closed come out before it.
            while let Some((_, s)) = closing.next_if(|(j, _)| *j == i) {
                outputs.route_summary(&rec.topic, &s);
            }
            // Held events of traces this record's decision kept come out before it.
            while let Some((_, h)) = releasing.next_if(|(j, _)| *j == i) {
                let released = OwnedRecord {
                    topic: Arc::clone(&rec.topic),
                    partition: rec.partition,
                    offset: h.offset,
                    timestamp_ms: h.timestamp_ms,
                    event_ms: h.record_ms,
                    payload: h.payload.into_vec(),
                    part: h.part,
                };
                outputs.route(&released, &Fate::Keep, &program, Meta::default());
            }
            while let Some((_, range)) = closed_out.next_if(|(j, _)| *j == i) {
                for l in trace_lines[range].lines() {
                    outputs.route_trace(rec, l);
                }
            }
            // Every record is routed, whatever happened to the one before: a record the
            // producer refuses is counted as lost in its epoch (`Outputs::route`), and the
            // checkpoint that would cover it rolls back instead.
            let meta = match (fate, verdicts[i]) {
                (Fate::Keep, Some(Verdict::Suppressed(_) | Verdict::Held)) => continue,
                (
                    _,
                    Some(Verdict::Keep {
                        sample_rate,
                        template,
                    }),
                ) => Meta {
                    sample_rate,
                    template,
                },
                _ => Meta::default(),
            };
            outputs.route(rec, fate, &program, meta);
        }
        if let Some(g) = gathered {
            for (i, range) in &g.closed {
                for l in g.lines[range.clone()].lines() {
                    outputs.route_trace(&merged[*i], l);
                }
            }
            reached.extend(g.reached);
        }
        let timestamps = records.iter().filter_map(|r| r.timestamp_ms).collect();
        let result = BatchDone {
            worker,
            delta,
            counters,
            records: polled,
            carrying: !carried.records.is_empty(),
            reached,
            timestamps,
            shadow: shadowed,
        };
        drop(records);
        if done.send(Done::Batch(Box::new(result))).is_err() {
            return;
        }
    }
}

/// The batch with each message of many events (OTLP) replaced by its events, as records that
/// share its offset (`engine::split`).
fn split(e: &Engine, splitter: &mut Splitter, records: Vec<OwnedRecord>) -> Vec<OwnedRecord> {
    if !records
        .iter()
        .any(|r| e.many(&r.topic, &r.payload).is_some())
    {
        return records;
    }
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        crate::engine::split::parts(e, splitter, &r.topic, &r.payload, |part, bytes| {
            out.push(OwnedRecord {
                topic: Arc::clone(&r.topic),
                payload: match part {
                    Part::Event(_) => bytes.to_vec(),
                    // The message itself, for its dead letter.
                    Part::Whole | Part::Unreadable(_) => r.payload.clone(),
                },
                part,
                ..r
            });
        });
    }
    out
}

/// Records waiting for a CRI line's last part (`engine::split::cri_carry`), in order, and
/// since when the first of them waits: they are given up (evaluated as they are) in the first
/// batch after `Caps::cri_wait`. The coordinator sends empty batches while there are any
/// (`BatchDone::carrying`), since a quiet partition brings none.
#[derive(Default)]
struct Carried {
    records: Vec<OwnedRecord>,
    /// The first record's topic, partition and offset, and when it was first carried.
    since: Option<(RecordAt, std::time::Instant)>,
}

type RecordAt = (Arc<str>, i32, i64);

impl Carried {
    /// The batch with the records carried from the last one before it, less those that wait
    /// for a CRI line's last part now; all of them once the wait is over.
    fn batch(
        &mut self,
        e: &Engine,
        records: Vec<OwnedRecord>,
        wait: std::time::Duration,
    ) -> Vec<OwnedRecord> {
        let give_up = self
            .since
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() >= wait);
        let records = if self.records.is_empty() {
            records
        } else {
            // Carried records are older than any new one of their partition.
            let mut all = std::mem::take(&mut self.records);
            all.extend(records);
            all
        };
        let now = if give_up {
            records
        } else {
            self.take_waiting(e, records)
        };
        let first = self
            .records
            .first()
            .map(|r| (Arc::clone(&r.topic), r.partition, r.offset));
        self.since = match (first, self.since.take()) {
            (None, _) => None,
            // The same line still waits: since as before.
            (Some(f), Some((was, t))) if f == was => Some((f, t)),
            (Some(f), _) => Some((f, std::time::Instant::now())),
        };
        now
    }

    /// `records` less those that wait, which go to `self.records`.
    fn take_waiting(&mut self, e: &Engine, records: Vec<OwnedRecord>) -> Vec<OwnedRecord> {
        let batch: Vec<Record> = records.iter().map(as_record).collect();
        let Some(wait) = crate::engine::split::cri_carry(e, &batch) else {
            return records;
        };
        drop(batch);
        let mut now = Vec::with_capacity(records.len());
        for (r, w) in records.into_iter().zip(wait) {
            if w {
                self.records.push(r);
            } else {
                now.push(r);
            }
        }
        now
    }

    /// Forgets a partition's records: whoever reads it next (its next owner, or this worker
    /// after a rollback) reads them again, since the checkpoint ends before them.
    fn forget(&mut self, key: &PartitionKey) {
        self.records
            .retain(|r| !(r.partition == key.partition && *r.topic == *key.topic));
    }
}

/// Notes that `rec` was read: its partition's reading got past it.
pub(super) fn reach(reached: &mut Vec<Reached>, rec: &OwnedRecord) {
    // A batch holds a few partitions: a linear scan beats a map.
    match reached
        .iter_mut()
        .find(|r| r.partition == rec.partition && Arc::ptr_eq(&r.topic, &rec.topic))
    {
        Some(r) => {
            r.next = r.next.max(rec.offset + 1);
            r.clock = r.clock.max(rec.event_ms);
        }
        None => reached.push(Reached {
            topic: Arc::clone(&rec.topic),
            partition: rec.partition,
            next: rec.offset + 1,
            clock: rec.event_ms,
        }),
    }
}

/// A polled record as the engine reads it: its version is its event time, partition and
/// offset.
pub(super) fn as_record(r: &OwnedRecord) -> Record<'_> {
    Record {
        payload: &r.payload,
        topic: &r.topic,
        version: Version {
            ms: r.event_ms,
            lane: r.partition as u32,
            offset: r.offset as u64,
        },
        event_ms: r.event_ms,
        part: r.part,
    }
}

/// The trace summaries and edges of a batch, read by `te` (the rules over them): their
/// values go to `delta` and their matches to `matches`, and nothing else is counted, since
/// these are not events read from Kafka.
pub(super) fn read_trace_lines(
    te: &mut Engine,
    program: &Program,
    lines: &[Record<'_>],
    delta: &mut Aggregates,
    matches: &mut [u64],
) {
    let mut fates = Vec::with_capacity(lines.len());
    te.process(lines, super::now_ms(), &mut fates);
    delta.merge_from(&mut te.local, program, super::now_ms());
    for (a, b) in matches.iter_mut().zip(&te.counters.rule_matches) {
        *a += b;
    }
    te.counters = Counters {
        rule_matches: vec![0; program.rules.len()],
        ..Counters::default()
    };
}

/// The window over which a rule's CPU is held against its team's budget, and how long a rule
/// over it is not evaluated.
pub(super) const BUDGET_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
pub(super) const QUARANTINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Says which rules went over their CPU budget, and counts what quarantined rules skipped.
/// A `candidate`'s (`rules_candidate`) are only logged: they are not the live rules' numbers.
pub(super) fn quarantines(e: &mut Engine, program: &Program, candidate: bool) {
    let Some(g) = e.cpu_guard.as_mut() else {
        return;
    };
    let which = if candidate { "candidate rule" } else { "rule" };
    for (r, per_second) in g.take_quarantined() {
        let Some(rule) = program.rules.get(r as usize) else {
            continue;
        };
        if !candidate {
            crate::telemetry::rule_quarantined(&rule.team, &rule.name);
        }
        tracing::warn!(
            team = %rule.team,
            rule = %rule.name,
            "{which} {}/{} used {:?} of CPU per second, over its team's budget of {:?}: not evaluated for {:?}, then tried again",
            rule.team,
            rule.name,
            per_second,
            rule.cpu_budget.unwrap_or_default(),
            QUARANTINE
        );
    }
    for (r, n) in g.take_skipped().into_iter().enumerate() {
        if n > 0
            && !candidate
            && let Some(rule) = program.rules.get(r)
        {
            crate::telemetry::rule_quarantine_skips(&rule.team, &rule.name, n);
        }
    }
}

/// Splits off the records of partitions restored with held traces that were counted before
/// the restore (`PartitionState::counted_from`); a partition's first record past it ends its
/// reading again.
fn split_reread(
    records: Vec<OwnedRecord>,
    states: &mut HashMap<(Arc<str>, i32), PartitionState>,
    rereading: &mut usize,
) -> (Vec<OwnedRecord>, Vec<OwnedRecord>) {
    let mut again = Vec::new();
    let mut counted = Vec::with_capacity(records.len());
    for r in records {
        let s = states.get_mut(&(Arc::clone(&r.topic), r.partition));
        match s.and_then(|s| s.counted_from.map(|c| (s, c))) {
            Some((_, c)) if r.offset < c => again.push(r),
            Some((s, _)) => {
                s.counted_from = None;
                *rereading -= 1;
                counted.push(r);
            }
            None => counted.push(r),
        }
    }
    (again, counted)
}

/// Records read again after a restore: evaluated only to find the events their open traces
/// held, which are held again. Nothing is counted, routed or reduced otherwise.
fn rehold(
    e: &mut Engine,
    program: &Arc<Program>,
    again: &[OwnedRecord],
    states: &mut HashMap<(Arc<str>, i32), PartitionState>,
) {
    let batch: Vec<Record> = again.iter().map(as_record).collect();
    let mut fates = Vec::with_capacity(batch.len());
    e.process(&batch, super::now_ms(), &mut fates);
    for ask in e.asks.iter().filter(|a| a.traced) {
        let rec = &again[ask.record as usize];
        let Some(s) = states.get_mut(&(Arc::clone(&rec.topic), rec.partition)) else {
            continue;
        };
        let rule_hash = program
            .rules
            .get(ask.rule as usize)
            .and_then(|r| r.reduce.as_ref())
            .map_or(0, |r| r.rule_hash);
        s.reducer
            .retention
            .rehold(ask.sample_key, rec.offset, || Held {
                rule: ask.rule,
                rule_hash,
                offset: rec.offset,
                record_ms: rec.event_ms,
                timestamp_ms: rec.timestamp_ms,
                payload: rec.payload.clone().into_boxed_slice(),
                part: rec.part,
            });
    }
    // What the engine counted of them was counted before the restore.
    e.local = Aggregates::new(program);
    e.counters = Counters {
        rule_matches: vec![0; program.rules.len()],
        ..Counters::default()
    };
}
