//! The service: a consumer group in, metrics, kept logs and dead letters out, checkpoints in
//! between. This is the edge where threads and I/O live; the per-record work is `Engine`.
//!
//! One coordinator thread polls the consumer, cuts batches and hands them to worker threads,
//! merges their results in dispatch order, produces kept and dead-lettered records, and
//! checkpoints. Rebalance callbacks run on the same thread (inside `poll`), so they see a
//! consistent state without locks of their own. See ARCHITECTURE.md, "Delivery".

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};

use crate::checkpoint::{Checkpoint, Latest, PartitionKey};
use crate::config::{Config, Delivery};
use crate::decode::InputFormat;
use crate::derive::{Aggregates, snapshot};
use crate::engine::{Counters, Engine, Record};
use crate::rules::Program;
use crate::sink::http::Exported;
use crate::sink::kafka::Outputs;
use crate::source::kafka::{OwnedRecord, consumer_config};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("checkpoint of {instance} could not be decoded: {reason}")]
    BadCheckpoint { instance: String, reason: String },
    #[error("timed out reading the state topic `{0}`")]
    StateTimeout(String),
    #[error("{} kept or dead-lettered record(s) were not delivered ({})", .0.count, .0.last_error)]
    Undelivered(crate::sink::kafka::Undelivered),
}

/// How long a checkpoint waits for outputs to be acknowledged before it gives up and retries
/// later; the coordinator is blocked meanwhile, so this stays short.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the state reader waits for more checkpoints past the watermarks when the broker
/// signals no end of partition.
const QUIET: Duration = Duration::from_secs(2);

/// How long the poll loop waits for stalled workers before it pauses fetching.
const STALL: Duration = Duration::from_millis(500);

/// Records the poll loop takes in a row before it looks at batches, results, checkpoints and
/// rule files again.
const HOUSEKEEPING_EVERY: u32 = 256;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the state topic: the latest checkpoint of every identity.
struct StateReader {
    consumer: BaseConsumer,
    topic: String,
    latest: Latest,
    /// Next offset to read, per partition of the state topic, across calls to `catch_up`.
    positions: HashMap<i32, i64>,
    /// Partitions whose end the consumer reached and found nothing after.
    at_end: HashMap<i32, bool>,
    /// Timestamp of the last record read, per partition.
    last_ms: HashMap<i32, i64>,
}

impl StateReader {
    fn new(cfg: &Config, instance: &str) -> Result<StateReader, ServiceError> {
        let consumer: BaseConsumer = consumer_config(cfg, instance)
            .set("group.id", format!("{}-state-reader", cfg.group_id))
            // The end of a partition as the fetches see it: brokers whose offset queries lag
            // behind their log (tansu) would otherwise hide the newest checkpoints.
            .set("enable.partition.eof", "true")
            .remove("group.instance.id")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&cfg.state_topic), Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(&cfg.state_topic, p.id(), Offset::Beginning)?;
            }
        }
        consumer.assign(&tpl)?;
        Ok(StateReader {
            consumer,
            topic: cfg.state_topic.clone(),
            latest: Latest::default(),
            positions: HashMap::new(),
            at_end: HashMap::new(),
            last_ms: HashMap::new(),
        })
    }

    /// Reads every checkpoint written so far: up to each partition's high watermark, and
    /// until the fetches find its end.
    fn catch_up(&mut self, timeout: Duration) -> Result<(), ServiceError> {
        let deadline = Instant::now() + timeout;
        let assignment = self.consumer.assignment()?;
        let mut targets = HashMap::new();
        for e in assignment.elements() {
            let (_, high) = self.consumer.fetch_watermarks(
                &self.topic,
                e.partition(),
                Duration::from_secs(5),
            )?;
            targets.insert(e.partition(), high);
        }
        // Past the watermarks, done at the end of every partition. Brokers that report
        // neither right (tansu) get two ways out: a record written after this call began (a
        // partition is in order, so everything before it is read), or a quiet spell.
        let started_ms = now_ms() as i64;
        let mut reached: Option<Instant> = None;
        loop {
            let past_watermarks = targets
                .iter()
                .all(|(p, high)| self.positions.get(p).copied().unwrap_or(0) >= *high);
            let caught_up = targets.keys().all(|p| {
                self.at_end.get(p).copied().unwrap_or(false)
                    || self.last_ms.get(p).is_some_and(|t| *t >= started_ms)
            });
            if past_watermarks {
                let since = *reached.get_or_insert_with(Instant::now);
                if caught_up || since.elapsed() >= QUIET {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(ServiceError::StateTimeout(self.topic.clone()));
            }
            if self.read_one(Duration::from_millis(50)) {
                reached = None;
            }
        }
    }

    /// Reads one checkpoint record or end of partition, if one comes within `timeout`;
    /// whether a record came.
    fn read_one(&mut self, timeout: Duration) -> bool {
        let m = match self.consumer.poll(timeout) {
            None => return false,
            Some(Ok(m)) => m,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                self.at_end.insert(p, true);
                return false;
            }
            // librdkafka reports a broker it cannot reach and goes on retrying: not a reason
            // to give up on the state topic before the deadline.
            Some(Err(e)) => {
                tracing_warn(&format!("reading checkpoints: {e}"));
                return false;
            }
        };
        self.positions.insert(m.partition(), m.offset() + 1);
        self.at_end.insert(m.partition(), false);
        if let Some(t) = m.timestamp().to_millis() {
            self.last_ms.insert(m.partition(), t);
        }
        if let Some(payload) = m.payload() {
            match Checkpoint::decode(payload) {
                Ok(cp) => self.latest.observe(cp),
                Err(e) => tracing_warn(&format!("skipping an unreadable checkpoint record: {e}")),
            }
        }
        true
    }
}

fn tracing_warn(msg: &str) {
    tracing::warn!("{msg}");
}

/// A checkpoint cut and not yet written: the merged state and offsets at the cut, and the
/// Kafka timestamps of the events it covers that no checkpoint did before.
struct Cut {
    started: Instant,
    pending: Aggregates,
    next: BTreeMap<PartitionKey, i64>,
    timestamps: Vec<i64>,
}

struct Job {
    id: u64,
    program: Arc<Program>,
    records: Vec<OwnedRecord>,
}

/// A batch's results. Its records are gone: the worker routed them to the outputs, and only
/// where each partition's reading got to and the events' timestamps come back.
struct Done {
    id: u64,
    delta: Aggregates,
    counters: Counters,
    events: usize,
    /// The next offset of every partition in the batch.
    next: Vec<(Arc<str>, i32, i64)>,
    timestamps: Vec<i64>,
    /// A record the outputs refused (not a full queue, which is waited out).
    error: Option<KafkaError>,
}

fn worker(
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: Sender<Done>,
    outputs: Arc<Outputs>,
    input: InputFormat,
    limits: crate::decode::Limits,
) {
    let mut engine: Option<Engine> = None;
    loop {
        let job = match jobs
            .lock()
            .expect("no worker panics holding the queue")
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
            // Offsets of different partitions do not compare; Kafka timestamps do, so a gauge
            // `set` keeps the value of the latest event across partitions.
            .map(|r| Record {
                payload: &r.payload,
                topic: &r.topic,
                seq: r.timestamp_ms.map_or(r.offset as u64, |t| t as u64),
            })
            .collect();
        let mut fates = Vec::with_capacity(records.len());
        e.process(&records, now_ms(), &mut fates);
        drop(records);
        let delta = std::mem::replace(&mut e.local, Aggregates::new(&job.program));
        let counters = std::mem::take(&mut e.counters);
        e.counters.rule_matches = vec![0; job.program.rules.len()];
        let mut next: Vec<(Arc<str>, i32, i64)> = Vec::new();
        let mut error = None;
        for (rec, fate) in job.records.iter().zip(&fates) {
            // A batch holds a few partitions: a linear scan beats a map.
            match next
                .iter_mut()
                .find(|(t, p, _)| *p == rec.partition && Arc::ptr_eq(t, &rec.topic))
            {
                Some((_, _, off)) => *off = (*off).max(rec.offset + 1),
                None => next.push((Arc::clone(&rec.topic), rec.partition, rec.offset + 1)),
            }
            if error.is_none() {
                error = outputs.route(rec, fate).err();
            }
        }
        let timestamps = job.records.iter().filter_map(|r| r.timestamp_ms).collect();
        let result = Done {
            id: job.id,
            delta,
            counters,
            events: job.records.len(),
            next,
            timestamps,
            error,
        };
        drop(job.records);
        if done.send(result).is_err() {
            return;
        }
    }
}

/// Everything the coordinator thread owns. Rebalance callbacks reach it through the consumer
/// context's mutex, which only ever has this one thread contending for it.
pub struct Coordinator {
    cfg: Config,
    instance: String,
    program: Arc<Program>,
    outputs: Arc<Outputs>,
    state: StateReader,
    seq: u64,
    /// This identity's state including what is not checkpointed yet.
    pending: Aggregates,
    /// The state and offsets of the last durable checkpoint, to roll back to.
    committed: Aggregates,
    committed_next: BTreeMap<PartitionKey, i64>,
    /// Next offset to read for each owned partition, as far as merged results go.
    next: BTreeMap<PartitionKey, i64>,
    /// Where this identity's counts of the partitions it no longer owns end. Every checkpoint
    /// carries them: it replaces the identity's previous one, and the partition's next owner
    /// may read the state topic only after it (then it would find no offset and count the
    /// partition again from the start).
    released: BTreeMap<PartitionKey, i64>,
    batch: Vec<OwnedRecord>,
    batch_started: Instant,
    next_job: u64,
    next_merge: u64,
    in_flight: u64,
    reorder: BTreeMap<u64, Done>,
    jobs: Option<Sender<Job>>,
    results: Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    last_checkpoint: Instant,
    cut: Option<Cut>,
    /// Fetching is paused because the workers stalled (`backpressure`).
    paused: bool,
    last_publish: Instant,
    topics: HashMap<String, Arc<str>>,
    /// Kafka timestamps of the events merged since the last checkpoint: their metrics become
    /// visible at the next checkpoint, which is when their latency is measured.
    timestamps: Vec<i64>,
    latency: crate::telemetry::Latency,
    pub exported: Arc<Exported>,
    pub counters: Counters,
}

impl Coordinator {
    pub fn new(
        cfg: Config,
        instance: String,
        program: Arc<Program>,
        exported: Arc<Exported>,
    ) -> Result<Coordinator, ServiceError> {
        let outputs = Arc::new(Outputs::new(&cfg, &instance)?);
        let mut state = StateReader::new(&cfg, &instance)?;
        state.catch_up(Duration::from_secs(30))?;
        let mut pending = Aggregates::new(&program);
        let mut seq = 0;
        let mut released = BTreeMap::new();
        if let Some(cp) = state.latest.of(&instance) {
            seq = cp.seq;
            // Until they are assigned again, every partition of the last checkpoint is
            // released: its offset must outlive this identity's next checkpoints.
            released = cp.offsets.iter().cloned().collect();
            snapshot::decode(&program, &cp.metrics, &mut pending).map_err(|e| {
                ServiceError::BadCheckpoint {
                    instance: instance.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
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
                    .spawn(move || worker(jobs, done, outputs, input, limits))
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
            state,
            seq,
            committed: pending.clone(),
            committed_next: BTreeMap::new(),
            pending,
            next: BTreeMap::new(),
            released,
            batch: Vec::new(),
            batch_started: Instant::now(),
            next_job: 0,
            next_merge: 0,
            in_flight: 0,
            reorder: BTreeMap::new(),
            jobs: Some(job_tx),
            results: done_rx,
            workers,
            last_checkpoint: Instant::now(),
            cut: None,
            paused: false,
            last_publish: Instant::now(),
            topics: HashMap::new(),
            timestamps: Vec::new(),
            latency: crate::telemetry::Latency::new(),
            exported,
        })
    }

    fn add(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
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
        self.batch.push(OwnedRecord::from_message(m, topic));
        if self.batch.len() >= self.cfg.batch_max_events {
            self.dispatch();
        }
    }

    fn dispatch(&mut self) {
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

    /// Merges finished batches in dispatch order; `wait` blocks until none is in flight.
    fn collect(&mut self, wait: bool) -> Result<(), ServiceError> {
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
                None if !wait || self.next_merge == self.next_job => return Ok(()),
                None => {}
            }
            while let Some(d) = self.reorder.remove(&self.next_merge) {
                self.next_merge += 1;
                self.merge(d)?;
            }
        }
    }

    fn merge(&mut self, mut d: Done) -> Result<(), ServiceError> {
        let now = now_ms();
        self.pending.merge_from(&mut d.delta, &self.program, now);
        crate::telemetry::publish(&self.program, &d.counters, crate::telemetry::Publish::Add);
        self.counters.absorb(&d.counters);
        self.in_flight -= d.events as u64;
        crate::telemetry::batch_merged();
        if self.timestamps.len() < self.cfg.max_in_flight {
            self.timestamps.extend_from_slice(&d.timestamps);
        }
        for (topic, partition, off) in d.next {
            let key = PartitionKey {
                topic: topic.to_string(),
                partition,
            };
            let next = self.next.entry(key).or_insert(0);
            *next = (*next).max(off);
        }
        if let Some(e) = d.error {
            return Err(e.into());
        }
        if self.cfg.delivery == Delivery::AtLeastOnce
            && self.last_publish.elapsed() > Duration::from_millis(500)
        {
            self.exported
                .publish(Arc::clone(&self.program), self.pending.clone());
            self.last_publish = Instant::now();
        }
        Ok(())
    }

    /// Cuts a checkpoint without stopping: the merged state and offsets as they are now
    /// (consistent between merges), written once the outputs of their events are acknowledged
    /// (`advance_checkpoint`) while consumption goes on. One cut at a time.
    fn cut(&mut self) {
        if self.cut.is_some() {
            return;
        }
        self.outputs.close_epoch();
        self.cut = Some(self.state_now(Instant::now()));
    }

    /// The merged state and offsets as they are, with the timestamps merged since the last cut.
    fn state_now(&mut self, started: Instant) -> Cut {
        Cut {
            started,
            pending: self.pending.clone(),
            next: self.next.clone(),
            timestamps: std::mem::take(&mut self.timestamps),
        }
    }

    /// Writes the cut checkpoint if its outputs are settled; a cut whose outputs were lost is
    /// dropped and the instance rolls back to the last checkpoint.
    fn advance_checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        if self.cut.is_none() || !self.outputs.settled() {
            return Ok(());
        }
        let cut = self.cut.take().expect("checked above");
        if let Some(lost) = self.outputs.take_undelivered(true) {
            self.rollback(consumer, "records were not delivered");
            return Err(ServiceError::Undelivered(lost));
        }
        self.write_checkpoint(consumer, cut)
    }

    /// Makes everything processed so far durable, then exports it, waiting for it: on
    /// revocation, reload and shutdown. Any failure leaves the exported values as they were:
    /// they never show what a checkpoint does not hold. Revocation, the one caller that goes
    /// on after a failure, rolls back; reload and shutdown stop the service.
    pub fn checkpoint(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        // A cut in flight is covered by this checkpoint.
        self.cut = None;
        let started = Instant::now();
        self.dispatch();
        self.collect(true)?;
        self.outputs.flush(FLUSH_TIMEOUT)?;
        if let Some(lost) = self.outputs.take_undelivered(false) {
            return Err(ServiceError::Undelivered(lost));
        }
        let cut = self.state_now(started);
        self.write_checkpoint(consumer, cut)
    }

    /// Steps 3 to 5 of the protocol (ARCHITECTURE.md, "Delivery"), once the outputs of the
    /// cut's events are acknowledged.
    fn write_checkpoint(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        cut: Cut,
    ) -> Result<(), ServiceError> {
        // Committing first fences a zombie: a member that lost its partitions fails here and
        // writes no checkpoint for them.
        let mut tpl = TopicPartitionList::new();
        for (k, off) in &cut.next {
            tpl.add_partition_offset(&k.topic, k.partition, Offset::Offset(*off))?;
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        }
        let cp = Checkpoint {
            instance: self.instance.clone(),
            seq: self.seq + 1,
            at_ms: now_ms(),
            offsets: self
                .released
                .iter()
                .filter(|(k, _)| !cut.next.contains_key(*k))
                .chain(&cut.next)
                .map(|(k, o)| (k.clone(), *o))
                .collect(),
            metrics: snapshot::encode(&self.program, &cut.pending),
        };
        let bytes = cp.encode();
        self.outputs
            .checkpoint(&self.cfg.state_topic, &self.instance, &bytes, FLUSH_TIMEOUT)?;
        self.seq += 1;
        self.state.latest.observe(cp);
        // `at_least_once` already shows newer values than the cut's: it must not go back.
        let shown = match self.cfg.delivery {
            Delivery::ExactlyOnce => cut.pending.clone(),
            Delivery::AtLeastOnce => self.pending.clone(),
        };
        self.exported.publish(Arc::clone(&self.program), shown);
        self.committed = cut.pending;
        self.committed_next = cut.next;
        let now = now_ms();
        self.exported
            .last_checkpoint_ms
            .store(now, Ordering::Relaxed);
        self.last_checkpoint = Instant::now();
        self.latency.record(now, cut.timestamps.into_iter());
        crate::telemetry::publish_registry(&self.program, &self.committed);
        crate::telemetry::process_memory();
        crate::telemetry::checkpointed(cut.started.elapsed(), bytes.len());
        Ok(())
    }

    fn assigned(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), ServiceError> {
        // Without the latest checkpoints a partition could resume behind what another
        // instance exported: wait for the state topic rather than guess.
        let mut attempt = 0;
        while let Err(e) = self.state.catch_up(Duration::from_secs(10)) {
            attempt += 1;
            tracing_warn(&format!(
                "reading checkpoints before resuming partitions (attempt {attempt}): {e}"
            ));
            if attempt >= 30 {
                return Err(e);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        tracing::info!(partitions = tpl.count(), "assigned");
        let elements: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in elements {
            let key = PartitionKey {
                topic: topic.clone(),
                partition,
            };
            // Every owned partition gets an explicit start, so that a rollback can go back to
            // it even before its first checkpoint.
            let checkpointed = self.state.latest.resume_offset(&key);
            let start = checkpointed.or_else(|| start_of(consumer, &self.cfg, &topic, partition));
            tracing::info!(
                topic,
                partition,
                offset = start,
                from = if checkpointed.is_some() {
                    "checkpoint"
                } else {
                    "log start"
                },
                "resuming"
            );
            self.released.remove(&key);
            if let Some(off) = start {
                tpl.set_partition_offset(&topic, partition, Offset::Offset(off))?;
                self.next.insert(key.clone(), off);
                self.committed_next.insert(key, off);
            }
        }
        crate::telemetry::rebalanced("assign");
        Ok(())
    }

    fn revoked(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ServiceError> {
        tracing::info!(partitions = tpl.count(), "revoking");
        let result = self.checkpoint(consumer);
        if result.is_err() {
            // What was processed since the last checkpoint will be replayed by the partitions'
            // next owners, so it must not be exported here, ever: go back to the checkpoint.
            self.rollback(
                consumer,
                "a checkpoint failed while partitions were revoked",
            );
        }
        for e in tpl.elements() {
            let key = PartitionKey {
                topic: e.topic().to_string(),
                partition: e.partition(),
            };
            self.next.remove(&key);
            // After the checkpoint (or the rollback), the last durable offset is where this
            // identity's counts of the partition end.
            if let Some(off) = self.committed_next.remove(&key) {
                self.released.insert(key, off);
            }
        }
        crate::telemetry::rebalanced("revoke");
        result
    }

    /// Returns to the last checkpoint: its values, and its offsets for the partitions kept
    /// (they are read again from there). Used when a checkpoint cannot be written before
    /// partitions move on, and when outputs were lost. Under `at_least_once` the values stay:
    /// they are already exported, and counting the replayed events again is the over-count
    /// that mode allows.
    fn rollback(&mut self, consumer: &BaseConsumer<Ctx>, why: &str) {
        self.cut = None;
        self.batch.clear();
        // Batches in flight are read again too: let them land, then forget them.
        if let Err(e) = self.collect(true) {
            tracing_warn(&format!("while rolling back: {e}"));
        }
        self.timestamps.clear();
        if self.cfg.delivery == Delivery::ExactlyOnce {
            self.pending = self.committed.clone();
        }
        for (key, off) in &self.committed_next {
            if let Some(next) = self.next.get_mut(key) {
                let _ = consumer.seek(
                    &key.topic,
                    key.partition,
                    Offset::Offset(*off),
                    Duration::from_secs(5),
                );
                *next = *off;
            }
        }
        tracing_warn(&format!("{why}: rolled back to the last checkpoint"));
    }

    /// Holds the poll loop while too many events are read and not merged. librdkafka's own
    /// queue then fills and it stops fetching (`queued.max.messages.kbytes`), so memory stays
    /// bounded. Only when the workers make no progress for a while (their outputs' broker is
    /// down and the producer queue is full) are the partitions paused, so the loop can go on
    /// serving rebalances, readiness and shutdown: pausing makes librdkafka drop what it
    /// prefetched, to fetch it again on resume, so it is not the first resort.
    fn backpressure(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        let limit = self.cfg.max_in_flight;
        if self.in_flight as usize + self.batch.len() > limit {
            self.dispatch();
            let deadline = Instant::now() + STALL;
            while self.in_flight as usize > limit {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.results.recv_timeout(left) {
                    Ok(d) => {
                        self.reorder.insert(d.id, d);
                        while let Some(d) = self.reorder.remove(&self.next_merge) {
                            self.next_merge += 1;
                            self.merge(d)?;
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        unreachable!("workers outlive the coordinator")
                    }
                }
            }
        }
        let stalled = self.in_flight as usize > limit;
        if stalled != self.paused {
            let assignment = consumer.assignment()?;
            if stalled {
                tracing_warn("workers are stalled (outputs not acknowledged?): pausing fetches");
                consumer.pause(&assignment)?;
            } else {
                consumer.resume(&assignment)?;
            }
            self.paused = stalled;
        }
        Ok(())
    }

    /// Swaps in a new rule set between batches. Series of families that did not change keep
    /// their values (they move over by name through a snapshot); the swap is checkpointed at
    /// once so that what is exported is always described by the rules in force.
    pub fn swap_program(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        program: Arc<Program>,
    ) -> Result<(), ServiceError> {
        self.dispatch();
        self.collect(true)?;
        let remap = |from: &Aggregates| -> Result<Aggregates, ServiceError> {
            let mut to = Aggregates::new(&program);
            snapshot::decode(&program, &snapshot::encode(&self.program, from), &mut to).map_err(
                |e| ServiceError::BadCheckpoint {
                    instance: self.instance.clone(),
                    reason: e.to_string(),
                },
            )?;
            Ok(to)
        };
        self.pending = remap(&self.pending)?;
        self.committed = remap(&self.committed)?;
        self.program = program;
        self.counters.rule_matches = vec![0; self.program.rules.len()];
        self.checkpoint(consumer)
    }

    fn shutdown_workers(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Where a partition that no checkpoint covers starts: the start of its log (the end under
/// `auto.offset.reset: latest`). Not the group's committed offset: offsets are committed
/// before the checkpoint record is written, so a commit can cover events no checkpoint holds.
fn start_of(
    consumer: &BaseConsumer<Ctx>,
    cfg: &Config,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let latest = cfg
        .properties
        .get("auto.offset.reset")
        .is_some_and(|v| matches!(v.as_str(), "latest" | "largest" | "end"));
    match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
        Ok((low, high)) => Some(if latest { high } else { low }),
        Err(e) => {
            tracing_warn(&format!(
                "no start offset for {topic}/{partition} ({e}): librdkafka picks it"
            ));
            None
        }
    }
}

/// Assigns in the group's protocol: incrementally under cooperative-sticky (the default), the
/// whole set under an eager strategy a config may choose.
fn assign(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        rdkafka::consumer::RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
        _ => consumer.assign(tpl),
    }
}

fn unassign(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        rdkafka::consumer::RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    }
}

/// The consumer context: rebalances checkpoint revoked partitions and restore assigned ones.
pub struct Ctx {
    pub coordinator: Mutex<Option<Coordinator>>,
    pub errors: Mutex<Vec<String>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing_warn(&format!("kafka: {error}: {reason}"));
    }

    /// librdkafka's statistics carry the consumer lag of every assigned partition.
    fn stats(&self, stats: rdkafka::Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    crate::telemetry::lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut guard = self
            .coordinator
            .lock()
            .expect("the coordinator never panics holding its lock");
        let Some(c) = guard.as_mut() else {
            // Shutting down: the final checkpoint is written; just follow the protocol.
            let _ = match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => assign(consumer, tpl),
                _ => unassign(consumer, tpl),
            };
            return;
        };
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                c.assigned(consumer, tpl).and_then(|()| {
                    assign(consumer, tpl)?;
                    c.exported.ready.store(true, Ordering::Relaxed);
                    Ok(())
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = c.revoked(consumer, tpl);
                // Unassign whatever happened: keeping revoked partitions would stall the group.
                let _ = unassign(consumer, tpl);
                r
            }
            other => Err(ServiceError::Kafka(KafkaError::Rebalance(other.into()))),
        };
        if let Err(e) = result {
            self.errors
                .lock()
                .expect("never poisoned")
                .push(e.to_string());
        }
    }
}

/// The rule files' names, sizes and modification times, to notice edits.
type Fingerprint = Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>;

fn fingerprint(paths: &[std::path::PathBuf]) -> Fingerprint {
    let mut files = Vec::new();
    for p in paths {
        let entries: Vec<std::path::PathBuf> = if p.is_dir() {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| crate::rules::compile::is_yaml(p))
                .collect()
        } else {
            vec![p.clone()]
        };
        for f in entries {
            let md = std::fs::metadata(&f).ok();
            files.push((
                f,
                md.as_ref().map_or(0, |m| m.len()),
                md.and_then(|m| m.modified().ok()),
            ));
        }
    }
    files.sort();
    files
}

/// Recompiles the rules; `None` (and the diagnostics reported) when they have errors.
fn recompile(cfg: &Config) -> Option<Arc<Program>> {
    let (files, mut diags) = crate::rules::load_paths(&cfg.rules);
    let (program, more) = crate::rules::compile(&files);
    diags.extend(more);
    for d in &diags {
        tracing::warn!(diagnostic = %d, "rule reload");
    }
    if diags.iter().any(|d| d.is_error()) {
        crate::telemetry::reload_failed();
        tracing_warn("the changed rules have errors: still running the previous rules");
        return None;
    }
    Some(Arc::new(program))
}

/// Runs the service until `stop` is set, then checkpoints, leaves the group and returns.
/// `reload` asks for the rules to be read again (SIGHUP); edits to the rule files are noticed
/// on their own.
pub fn run(
    cfg: Config,
    instance: String,
    program: Arc<Program>,
    exported: Arc<Exported>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> Result<Counters, ServiceError> {
    crate::telemetry::rules_loaded(program.hash, None);
    let window = (cfg.checkpoint_interval * 3).max(Duration::from_secs(5));
    exported
        .ready_window_ms
        .store(window.as_millis() as u64, Ordering::Relaxed);
    let mut rules_seen = fingerprint(&cfg.rules);
    let mut last_rules_check = Instant::now();
    let coordinator = Coordinator::new(
        cfg.clone(),
        instance.clone(),
        program,
        Arc::clone(&exported),
    )?;
    let ctx = Ctx {
        coordinator: Mutex::new(Some(coordinator)),
        errors: Mutex::new(Vec::new()),
    };
    // Statistics carry the consumer lag; only the group consumer asks for them.
    let consumer: BaseConsumer<Ctx> = consumer_config(&cfg, &instance)
        .set("statistics.interval.ms", "5000")
        .create_with_context(ctx)?;
    match &cfg.topic_regex {
        Some(re) => consumer.subscribe(&[&format!("^{}", re.trim_start_matches('^'))])?,
        None => consumer.subscribe(&cfg.topics.iter().map(String::as_str).collect::<Vec<_>>())?,
    }
    let mut unattended = 0;
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(20));
        let mut guard = consumer
            .context()
            .coordinator
            .lock()
            .expect("never poisoned");
        let c = guard.as_mut().expect("set until shutdown");
        match polled {
            Some(Ok(m)) => {
                c.add(&m);
                // What follows reads clocks and takes locks: once per burst of records, not
                // once per record, or it costs more than the record.
                unattended += 1;
                if unattended < HOUSEKEEPING_EVERY {
                    continue;
                }
            }
            Some(Err(e)) => tracing_warn(&format!("consumer: {e}")),
            None => {}
        }
        unattended = 0;
        exported.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        if c.batch_started.elapsed() >= cfg.batch_max_wait {
            c.dispatch();
        }
        c.collect(false)?;
        c.backpressure(&consumer)?;
        if c.last_checkpoint.elapsed() >= cfg.checkpoint_interval {
            c.cut();
        }
        // Readiness follows from the checkpoint's age (`Exported::is_ready`): a failure needs
        // no bookkeeping here beyond trying again at the next interval. A checkpoint that lost
        // outputs has rolled back already.
        if let Err(e) = c.advance_checkpoint(&consumer) {
            tracing_warn(&format!("checkpoint failed, will retry: {e}"));
            c.last_checkpoint = Instant::now();
        }
        if last_rules_check.elapsed() >= Duration::from_secs(1) || reload.load(Ordering::Relaxed) {
            last_rules_check = Instant::now();
            let now_seen = fingerprint(&cfg.rules);
            if reload.swap(false, Ordering::Relaxed) || now_seen != rules_seen {
                rules_seen = now_seen;
                if let Some(new) = recompile(&cfg) {
                    let old_hash = c.program.hash;
                    if new.hash != old_hash {
                        let new_hash = new.hash;
                        c.swap_program(&consumer, new)?;
                        crate::telemetry::rules_loaded(new_hash, Some(old_hash));
                        tracing::info!(
                            rules = c.program.rules.len(),
                            hash = format!("{:016x}", c.program.hash),
                            "rules reloaded"
                        );
                    }
                }
            }
        }
        let errors: Vec<String> =
            std::mem::take(&mut *consumer.context().errors.lock().expect("never poisoned"));
        for e in errors {
            tracing_warn(&format!("rebalance: {e}"));
        }
    }
    let mut guard = consumer
        .context()
        .coordinator
        .lock()
        .expect("never poisoned");
    let mut c = guard.take().expect("set until shutdown");
    drop(guard);
    c.checkpoint(&consumer)?;
    c.exported.ready.store(false, Ordering::Relaxed);
    c.shutdown_workers();
    consumer.unsubscribe();
    Ok(c.counters)
}
