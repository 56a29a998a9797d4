//! The coordinator: what the poll loop's thread owns, and the consuming half of its work —
//! records into batches, batches to the workers, results merged back in dispatch order, and
//! backpressure. Checkpointing (`checkpointing.rs`) and rebalancing (`rebalance.rs`) are the
//! other halves, on the same struct because they need the same state consistently.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::checkpointing::Checkpoints;
use super::partitions::Partitions;
use super::rebalance::Ctx;
use super::state::StateStore;
use super::worker::{self, Done, Job};
use super::{ServiceError, now_ms};
use crate::checkpoint::PartitionKey;
use crate::config::Config;
use crate::derive::Aggregates;
use crate::engine::Counters;
use crate::rules::Program;
use crate::sink::http::Exported;
use crate::sink::kafka::Outputs;
use crate::source::kafka::OwnedRecord;

/// How long the poll loop waits for stalled workers before it pauses fetching.
const STALL: Duration = Duration::from_millis(500);

/// Everything the coordinator thread owns. Rebalance callbacks reach it through the consumer
/// context's mutex, which only ever has this one thread contending for it.
pub struct Coordinator {
    pub(super) cfg: Config,
    pub(super) instance: String,
    pub(super) program: Arc<Program>,
    pub(super) outputs: Arc<Outputs>,
    /// This identity's state including what is not checkpointed yet.
    pub(super) pending: Aggregates,
    pub(super) partitions: Partitions,
    pub(super) checkpoints: Checkpoints,
    batch: Vec<OwnedRecord>,
    pub(super) batch_started: Instant,
    next_job: u64,
    next_merge: u64,
    in_flight: u64,
    reorder: BTreeMap<u64, Done>,
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Fetching is paused because the workers stalled (`backpressure`).
    paused: bool,
    topics: HashMap<String, Arc<str>>,
    /// Kafka timestamps of the events merged since the last cut: their metrics become
    /// visible at the checkpoint, which is when their latency is measured.
    pub(super) timestamps: Vec<i64>,
    pub(super) latency: crate::telemetry::Latency,
    pub exported: Arc<Exported>,
    pub counters: Counters,
}

impl Coordinator {
    /// Reads the state topic, restores this identity's last checkpoint, and starts the
    /// workers. Exported values are the restored ones from the start.
    pub fn new(
        cfg: Config,
        instance: String,
        program: Arc<Program>,
        exported: Arc<Exported>,
    ) -> Result<Coordinator, ServiceError> {
        let outputs = Arc::new(Outputs::new(&cfg, &instance)?);
        let mut store = StateStore::open(&cfg, &instance)?;
        let report = store.catch_up(Duration::from_secs(30))?;
        super::checkpointing::report_catch_up(&store, &report);
        let (checkpoints, pending, partitions) =
            Checkpoints::restore(store, &cfg, &instance, &program)?;
        exported.publish(Arc::clone(&program), pending.clone());
        let (job_tx, job_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..cfg.workers)
            .map(|i| {
                let (jobs, done) = (Arc::clone(&job_rx), done_tx.clone());
                let (outputs, input, limits) = (Arc::clone(&outputs), cfg.input, cfg.limits);
                std::thread::Builder::new()
                    .name(format!("logmill-worker-{i}"))
                    .spawn(move || worker::run(jobs, done, outputs, input, limits))
                    .expect("spawning a worker thread")
            })
            .collect();
        Ok(Coordinator {
            counters: Counters {
                rule_matches: vec![0; program.rules.len()],
                ..Counters::default()
            },
            cfg,
            instance,
            program,
            outputs,
            pending,
            partitions,
            checkpoints,
            batch: Vec::new(),
            batch_started: Instant::now(),
            next_job: 0,
            next_merge: 0,
            in_flight: 0,
            reorder: BTreeMap::new(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            paused: false,
            topics: HashMap::new(),
            timestamps: Vec::new(),
            latency: crate::telemetry::Latency::new(),
            exported,
        })
    }

    pub(super) fn add(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let topic = match self.topics.get(m.topic()) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = m.topic().into();
                self.topics.insert(m.topic().to_string(), Arc::clone(&t));
                t
            }
        };
        if self.batch.is_empty() {
            self.batch_started = Instant::now();
        }
        let event_ms = self
            .partitions
            .event_time(&topic, m.partition(), m.timestamp().to_millis());
        self.batch
            .push(OwnedRecord::from_message(m, topic, event_ms));
        if self.batch.len() >= self.cfg.batch_max_events {
            self.dispatch();
        }
    }

    pub(super) fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.batch);
        self.in_flight += records.len() as u64;
        let job = Job {
            id: self.next_job,
            program: Arc::clone(&self.program),
            records,
        };
        self.next_job += 1;
        self.jobs
            .as_ref()
            .expect("workers run until shutdown")
            .send(job)
            .expect("workers outlive the coordinator");
    }

    /// Forgets the records read and not dispatched: a rollback reads them again.
    pub(super) fn drop_batch(&mut self) {
        self.batch.clear();
    }

    /// Merges finished batches in dispatch order; `wait` blocks until none is in flight.
    pub(super) fn collect(&mut self, wait: bool) {
        loop {
            let done = if wait && self.next_merge < self.next_job {
                Some(
                    self.results
                        .recv()
                        .expect("workers outlive the coordinator"),
                )
            } else {
                self.results.try_recv().ok()
            };
            match done {
                Some(d) => {
                    self.reorder.insert(d.id, d);
                }
                None if !wait || self.next_merge == self.next_job => return,
                None => {}
            }
            self.merge_ready();
        }
    }

    fn merge_ready(&mut self) {
        while let Some(d) = self.reorder.remove(&self.next_merge) {
            self.next_merge += 1;
            self.merge(d);
        }
    }

    fn merge(&mut self, mut d: Done) {
        let now = now_ms();
        self.pending.merge_from(&mut d.delta, &self.program, now);
        crate::telemetry::publish(&self.program, &d.counters, crate::telemetry::Publish::Add);
        self.counters.absorb(&d.counters);
        self.in_flight -= d.events as u64;
        crate::telemetry::batch_merged();
        if self.timestamps.len() < self.cfg.max_in_flight {
            self.timestamps.extend_from_slice(&d.timestamps);
        }
        for r in d.reached {
            let key = PartitionKey {
                topic: r.topic.to_string(),
                partition: r.partition,
            };
            self.partitions.merged(&key, r.next, r.clock);
        }
    }

    /// Holds the poll loop while too many events are read and not merged. librdkafka's own
    /// queue then fills and it stops fetching (`queued.max.messages.kbytes`), so memory stays
    /// bounded. Only when the workers make no progress for a while (their outputs' broker is
    /// down and the producer queue is full) are the partitions paused, so the loop can go on
    /// serving rebalances, readiness and shutdown: pausing makes librdkafka drop what it
    /// prefetched, to fetch it again on resume, so it is not the first resort.
    pub(super) fn backpressure(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
    ) -> Result<(), ServiceError> {
        let limit = self.cfg.max_in_flight;
        if self.in_flight as usize + self.batch.len() > limit {
            self.dispatch();
            let deadline = Instant::now() + STALL;
            while self.in_flight as usize > limit {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.results.recv_timeout(left) {
                    Ok(d) => {
                        self.reorder.insert(d.id, d);
                        self.merge_ready();
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        unreachable!("workers outlive the coordinator")
                    }
                }
            }
        }
        let stalled = self.in_flight as usize > limit;
        if stalled != self.paused {
            let assignment = consumer.assignment()?;
            if stalled {
                tracing::warn!("workers are stalled (outputs not acknowledged?): pausing fetches");
                consumer.pause(&assignment)?;
            } else {
                tracing::info!("workers caught up: resuming fetches");
                consumer.resume(&assignment)?;
            }
            self.paused = stalled;
        }
        Ok(())
    }

    pub(super) fn shutdown_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }
}
