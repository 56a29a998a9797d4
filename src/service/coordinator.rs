//! The coordinator: what the poll loop's thread owns, and the consuming half of its work —
//! records into per-worker batches (a partition always goes to the same worker, so that its
//! reduction sees its records in order), batches to the workers, results merged back, the
//! barriers that cut a checkpoint, and backpressure. Checkpointing (`checkpointing.rs`) and
//! rebalancing (`rebalance.rs`) are the other halves, on the same struct because they need the
//! same state consistently.
//!
//! **A cut is consistent without stopping**: the coordinator sends every worker a barrier
//! behind its batches; a worker answers with its partitions' reduction state as of the batches
//! before it. A worker's results after its answer are held, not merged, until every worker has
//! answered; then the merged aggregates, the partitions' offsets and the reduction states all
//! stand at the barrier, and the held results are merged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::checkpointing::Checkpoints;
use super::partitions::Partitions;
use super::rebalance::Ctx;
use super::state::StateStore;
use super::worker::{self, BatchDone, Done, Job};
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

/// One worker: its queue, and the batch being filled for it.
struct Slot {
    tx: Option<Sender<Job>>,
    batch: Vec<OwnedRecord>,
    started: Instant,
    handle: Option<std::thread::JoinHandle<()>>,
    /// The worker holds records for a CRI line's last part (`BatchDone::carrying`), and when
    /// it was last sent a batch: a quiet partition brings none, so it is sent empty ones.
    carrying: bool,
    sent: Instant,
}

/// How often a worker holding records for a CRI line's last part is sent an empty batch, in
/// which it gives them up once they have waited `input.cri_wait`.
const CARRY_TICK: Duration = Duration::from_millis(200);

/// A barrier in progress: who has answered, with which states, and the results held back.
struct Barrier {
    epoch: u64,
    answered: Vec<bool>,
    states: Vec<(PartitionKey, Vec<u8>)>,
    held: Vec<BatchDone>,
}

/// Everything the coordinator thread owns. Rebalance callbacks reach it through the consumer
/// context's mutex, which only ever has this one thread contending for it.
pub struct Coordinator {
    pub(super) cfg: Config,
    pub(super) instance: String,
    pub(super) program: Arc<Program>,
    /// The candidate rules evaluated beside `program` (`rules_candidate`).
    pub(super) candidate: Option<Arc<Program>>,
    pub(super) outputs: Arc<Outputs>,
    /// This identity's state including what is not checkpointed yet.
    pub(super) pending: Aggregates,
    pub(super) partitions: Partitions,
    pub(super) checkpoints: Checkpoints,
    slots: Vec<Slot>,
    results: Receiver<Done>,
    /// Records sent to workers and not merged yet (a message of many events is one).
    in_flight: u64,
    /// Batches and barriers sent and not answered yet.
    unanswered: u64,
    barrier: Option<Barrier>,
    epoch: u64,
    /// Fetching is paused because the workers stalled (`backpressure`).
    paused: bool,
    topics: HashMap<String, Arc<str>>,
    /// Kafka timestamps of the events merged since the last cut: their metrics become
    /// visible at the checkpoint, which is when their latency is measured.
    pub(super) timestamps: Vec<i64>,
    pub(super) latency: crate::telemetry::Latency,
    pub exported: Arc<Exported>,
    pub counters: Counters,
    /// How many partitions the input topics have (the subscription counts them): the
    /// repartition stage's watermark waits for sources not heard from yet.
    pub source_partitions: Arc<AtomicUsize>,
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
        let (done_tx, done_rx) = channel::<Done>();
        let source_partitions = Arc::new(AtomicUsize::new(0));
        let slots = (0..cfg.workers.max(1))
            .map(|i| {
                let (tx, rx) = channel::<Job>();
                let done = done_tx.clone();
                let (outputs, input, limits) = (Arc::clone(&outputs), cfg.input, cfg.limits);
                let envelopes = cfg.envelopes.clone();
                let repartition = cfg.repartition.clone();
                let sources = Arc::clone(&source_partitions);
                let caps = super::partition_state::Caps {
                    traces: cfg.traces,
                    retain: cfg.retain,
                    cri_wait: cfg.cri_wait,
                };
                let handle = std::thread::Builder::new()
                    .name(format!("logmill-worker-{i}"))
                    .spawn(move || {
                        let reading = worker::Reading {
                            input,
                            envelopes,
                            repartition,
                            sources,
                        };
                        worker::run(i, rx, done, outputs, reading, limits, caps)
                    })
                    .expect("spawning a worker thread");
                Slot {
                    tx: Some(tx),
                    batch: Vec::new(),
                    started: Instant::now(),
                    handle: Some(handle),
                    carrying: false,
                    sent: Instant::now(),
                }
            })
            .collect();
        Ok(Coordinator {
            source_partitions,
            counters: Counters {
                rule_matches: vec![0; program.rules.len()],
                ..Counters::default()
            },
            cfg,
            instance,
            program,
            candidate: None,
            outputs,
            pending,
            partitions,
            checkpoints,
            slots,
            results: done_rx,
            in_flight: 0,
            unanswered: 0,
            barrier: None,
            epoch: 0,
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
        let (event_ms, w) =
            self.partitions
                .event_time(&topic, m.partition(), m.timestamp().to_millis());
        let w = w.min(self.slots.len() - 1);
        let slot = &mut self.slots[w];
        if slot.batch.is_empty() {
            slot.started = Instant::now();
        }
        slot.batch
            .push(OwnedRecord::from_message(m, topic, event_ms));
        if slot.batch.len() >= self.cfg.batch_max_events {
            self.dispatch(w);
        }
    }

    /// Sends a job to a worker, counting what it will answer.
    pub(super) fn send(&mut self, w: usize, job: Job) {
        if matches!(job, Job::Batch { .. } | Job::Cut { .. }) {
            self.unanswered += 1;
        }
        self.slots[w]
            .tx
            .as_ref()
            .expect("workers run until shutdown")
            .send(job)
            .expect("workers outlive the coordinator");
    }

    fn dispatch(&mut self, w: usize) {
        if self.slots[w].batch.is_empty() {
            return;
        }
        self.send_batch(w);
    }

    /// Sends worker `w` its slot's records as a batch (none: an empty one).
    fn send_batch(&mut self, w: usize) {
        self.slots[w].sent = Instant::now();
        let records = std::mem::take(&mut self.slots[w].batch);
        self.in_flight += records.len() as u64;
        let program = Arc::clone(&self.program);
        let candidate = self.candidate.clone();
        self.send(
            w,
            Job::Batch {
                program,
                candidate,
                records,
            },
        );
    }

    pub(super) fn dispatch_all(&mut self) {
        for w in 0..self.slots.len() {
            self.dispatch(w);
        }
    }

    /// Sends batches that have waited `max_wait`, and an empty one every `CARRY_TICK` to a
    /// worker holding records for a CRI line's last part.
    pub(super) fn dispatch_due(&mut self, max_wait: Duration) {
        for w in 0..self.slots.len() {
            let slot = &self.slots[w];
            if !slot.batch.is_empty() && slot.started.elapsed() >= max_wait {
                self.dispatch(w);
            } else if slot.batch.is_empty() && slot.carrying && slot.sent.elapsed() >= CARRY_TICK {
                self.send_batch(w);
            }
        }
    }

    /// Forgets the records read and not dispatched: a rollback reads them again.
    pub(super) fn drop_batches(&mut self) {
        for s in &mut self.slots {
            s.batch.clear();
        }
    }

    /// Sends a barrier behind every worker's batches; the cut is taken when all have answered
    /// (`collect`).
    pub(super) fn start_barrier(&mut self) {
        self.dispatch_all();
        self.epoch += 1;
        let epoch = self.epoch;
        for w in 0..self.slots.len() {
            self.send(w, Job::Cut { epoch });
        }
        self.barrier = Some(Barrier {
            epoch,
            answered: vec![false; self.slots.len()],
            states: Vec::new(),
            held: Vec::new(),
        });
    }

    pub(super) fn barrier_in_progress(&self) -> bool {
        self.barrier.is_some()
    }

    /// Takes in finished work; `wait` blocks until every batch and barrier sent is answered.
    pub(super) fn collect(&mut self, wait: bool) {
        loop {
            let done = if wait && self.unanswered > 0 {
                Some(
                    self.results
                        .recv()
                        .expect("workers outlive the coordinator"),
                )
            } else {
                self.results.try_recv().ok()
            };
            match done {
                Some(d) => self.take(d),
                None => return,
            }
        }
    }

    /// Waits until every worker has answered everything, a barrier in progress included.
    pub(super) fn wait_idle(&mut self) {
        self.collect(true);
        debug_assert!(self.barrier.is_none());
    }

    fn take(&mut self, d: Done) {
        self.unanswered -= 1;
        if let Done::Batch(b) = &d {
            self.slots[b.worker].carrying = b.carrying;
        }
        match d {
            Done::Batch(b) => match &mut self.barrier {
                Some(bar) if bar.answered[b.worker] => bar.held.push(*b),
                _ => self.merge(*b),
            },
            Done::Cut {
                worker,
                epoch,
                states,
            } => {
                let Some(bar) = self.barrier.as_mut().filter(|b| b.epoch == epoch) else {
                    return;
                };
                bar.answered[worker] = true;
                bar.states.extend(states);
                if bar.answered.iter().all(|a| *a) {
                    let bar = self.barrier.take().expect("checked above");
                    // Every record of every batch before the barrier was routed by now: they
                    // are all in the epoch this closes.
                    self.outputs.close_epoch();
                    let cut = self.take_cut(bar.states);
                    self.checkpoints.cut = Some(cut);
                    for b in bar.held {
                        self.merge(b);
                    }
                }
            }
        }
    }

    fn merge(&mut self, mut d: BatchDone) {
        let now = now_ms();
        self.pending.merge_from(&mut d.delta, &self.program, now);
        if let Some(shadow) = d.shadow.take() {
            self.exported.merge_shadow(*shadow, now);
        }
        crate::telemetry::publish(&self.program, &d.counters, crate::telemetry::Publish::Add);
        crate::telemetry::publish_reduction(&self.program, &d.counters.reduction);
        self.counters.absorb(&d.counters);
        crate::telemetry::reduction_ratio(&self.counters);
        self.in_flight -= d.records as u64;
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

    /// Holds the poll loop while too many records are read and not merged. librdkafka's own
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
        let waiting: usize = self.slots.iter().map(|s| s.batch.len()).sum();
        if self.in_flight as usize + waiting > limit {
            self.dispatch_all();
            let deadline = Instant::now() + STALL;
            while self.in_flight as usize > limit {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.results.recv_timeout(left) {
                    Ok(d) => self.take(d),
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
        for s in &mut self.slots {
            s.tx = None;
        }
        for s in &mut self.slots {
            if let Some(h) = s.handle.take() {
                let _ = h.join();
            }
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }
}
