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

use crate::checkpoint::PartitionKey;
use crate::decode::{InputFormat, Limits};
use crate::derive::{Aggregates, Version};
use crate::engine::{Counters, Engine, Record};
use crate::reduce::{Fate, Reducer, Reduction, Source, Summary, Verdict};
use crate::rules::Program;
use crate::sink::kafka::{Meta, Outputs};
use crate::source::kafka::OwnedRecord;

pub enum Job {
    Batch {
        program: Arc<Program>,
        records: Vec<OwnedRecord>,
    },
    /// A checkpoint barrier: answer with the reduction state of every partition it changed
    /// since the last barrier.
    Cut { epoch: u64 },
    /// Start (or go back to) this reduction state for a partition; `None` starts it empty.
    Load {
        key: PartitionKey,
        state: Option<Vec<u8>>,
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
    pub events: usize,
    pub reached: Vec<Reached>,
    pub timestamps: Vec<i64>,
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

pub fn run(
    worker: usize,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    outputs: Arc<Outputs>,
    input: InputFormat,
    limits: Limits,
) {
    let mut engine: Option<Engine> = None;
    let mut reducers: HashMap<(Arc<str>, i32), Reducer> = HashMap::new();
    let mut summaries: Vec<Summary> = Vec::new();
    for job in jobs {
        let (program, records) = match job {
            Job::Batch { program, records } => (program, records),
            Job::Cut { epoch } => {
                let mut states: Vec<(PartitionKey, Vec<u8>)> = reducers
                    .iter_mut()
                    .filter(|(_, r)| r.dirty)
                    .map(|((topic, partition), r)| {
                        r.dirty = false;
                        (
                            PartitionKey {
                                topic: topic.to_string(),
                                partition: *partition,
                            },
                            r.encode(),
                        )
                    })
                    .collect();
                states.sort_by(|a, b| a.0.cmp(&b.0));
                if done
                    .send(Done::Cut {
                        worker,
                        epoch,
                        states,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Job::Load { key, state } => {
                let reducer = match state.map(|s| Reducer::decode(&s)) {
                    Some(Ok(r)) => r,
                    Some(Err(_)) => {
                        crate::telemetry::restore_failed("reduction_state");
                        tracing::error!(partition = %key, "the partition's reduction state cannot be read: starting it empty");
                        Reducer::new()
                    }
                    None => Reducer::new(),
                };
                reducers.insert((key.topic.as_str().into(), key.partition), reducer);
                continue;
            }
            Job::Drop { key } => {
                reducers.remove(&(Arc::<str>::from(key.topic.as_str()), key.partition));
                continue;
            }
        };
        let e = match &mut engine {
            Some(e) if Arc::ptr_eq(e.program(), &program) => e,
            _ => engine.insert(Engine::new(Arc::clone(&program), input, limits)),
        };
        let batch: Vec<Record> = records
            .iter()
            .map(|r| Record {
                payload: &r.payload,
                topic: &r.topic,
                version: Version {
                    ms: r.event_ms,
                    lane: r.partition as u32,
                    offset: r.offset as u64,
                },
                event_ms: r.event_ms,
            })
            .collect();
        let mut fates = Vec::with_capacity(batch.len());
        e.process(&batch, super::now_ms(), &mut fates);
        drop(batch);
        // Reduction, in each partition's order (a batch holds the partitions in record order).
        let mut verdicts: Vec<Option<Verdict>> = vec![None; records.len()];
        let mut reduction = Reduction::new(&program);
        let mut closing: Vec<(usize, Summary)> = Vec::new();
        for ask in &e.asks {
            let i = ask.record as usize;
            let rec = &records[i];
            let reducer = reducers
                .entry((Arc::clone(&rec.topic), rec.partition))
                .or_default();
            let source = Source {
                partition: rec.partition,
                offset: rec.offset,
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
        }
        let delta = std::mem::replace(&mut e.local, Aggregates::new(&program));
        let mut counters = std::mem::take(&mut e.counters);
        counters.reduction = reduction;
        e.counters.rule_matches = vec![0; program.rules.len()];
        let mut reached: Vec<Reached> = Vec::new();
        let mut closing = closing.into_iter().peekable();
        for (i, (rec, fate)) in records.iter().zip(&fates).enumerate() {
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
            // Summaries a record's time closed come out before it.
            while let Some((_, s)) = closing.next_if(|(j, _)| *j == i) {
                outputs.route_summary(&rec.topic, &s);
            }
            // Every record is routed, whatever happened to the one before: a record the
            // producer refuses is counted as lost in its epoch (`Outputs::route`), and the
            // checkpoint that would cover it rolls back instead.
            let meta = match (fate, verdicts[i]) {
                (Fate::Keep, Some(Verdict::Suppressed(_))) => continue,
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
        let timestamps = records.iter().filter_map(|r| r.timestamp_ms).collect();
        let result = BatchDone {
            worker,
            delta,
            counters,
            events: records.len(),
            reached,
            timestamps,
        };
        drop(records);
        if done.send(Done::Batch(Box::new(result))).is_err() {
            return;
        }
    }
}
