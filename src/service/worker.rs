//! Worker threads: each evaluates whole batches with its own `Engine`, routes the batch's kept
//! and dead-lettered records to the outputs, and returns what the coordinator merges.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::decode::{InputFormat, Limits};
use crate::derive::{Aggregates, Version};
use crate::engine::{Counters, Engine, Record};
use crate::rules::Program;
use crate::sink::kafka::Outputs;
use crate::source::kafka::OwnedRecord;

pub struct Job {
    pub id: u64,
    pub program: Arc<Program>,
    pub records: Vec<OwnedRecord>,
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
pub struct Done {
    pub id: u64,
    pub delta: Aggregates,
    pub counters: Counters,
    pub events: usize,
    pub reached: Vec<Reached>,
    pub timestamps: Vec<i64>,
}

pub fn run(
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    outputs: Arc<Outputs>,
    input: InputFormat,
    limits: Limits,
) {
    let mut engine: Option<Engine> = None;
    loop {
        let job = match jobs
            .lock()
            .expect("workers never panic holding the queue")
            .recv()
        {
            Ok(j) => j,
            Err(_) => return,
        };
        let e = match &mut engine {
            Some(e) if Arc::ptr_eq(e.program(), &job.program) => e,
            _ => engine.insert(Engine::new(Arc::clone(&job.program), input, limits)),
        };
        let records: Vec<Record> = job
            .records
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
        let mut fates = Vec::with_capacity(records.len());
        e.process(&records, super::now_ms(), &mut fates);
        drop(records);
        let delta = std::mem::replace(&mut e.local, Aggregates::new(&job.program));
        let counters = std::mem::take(&mut e.counters);
        e.counters.rule_matches = vec![0; job.program.rules.len()];
        let mut reached: Vec<Reached> = Vec::new();
        for (rec, fate) in job.records.iter().zip(&fates) {
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
            // Every record is routed, whatever happened to the one before: a record the
            // producer refuses is counted as lost in its epoch (`Outputs::route`), and the
            // checkpoint that would cover it rolls back instead.
            outputs.route(rec, fate, &job.program);
        }
        let timestamps = job.records.iter().filter_map(|r| r.timestamp_ms).collect();
        let result = Done {
            id: job.id,
            delta,
            counters,
            events: job.records.len(),
            reached,
            timestamps,
        };
        drop(job.records);
        if done.send(result).is_err() {
            return;
        }
    }
}
