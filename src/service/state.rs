//! The state topic: reading the commits of this group, fetching chunks by offset, and writing
//! records with their acknowledgement (and offset) known.
//!
//! The topic has two partitions when logmill creates it: commits and intents go to partition
//! 0, chunks to partition 1, so that catching up (which every assignment does) reads only the
//! small records, and chunks are read by offset when a restore needs them. A topic created
//! with one partition works the same, with catching up reading past the chunks too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};

use super::ServiceError;
use crate::checkpoint::blob;
use crate::checkpoint::{BlobRef, Directory, Observed};
use crate::config::Config;
use crate::source::kafka::{Quiet, consumer_config, kafka_error, log_kafka, producer_config};

/// How long the reader waits for more past the watermarks when the broker signals no end of
/// partition (tansu).
const QUIET: Duration = Duration::from_secs(2);

/// A state record's partition and offset, or why it was not written.
type Delivered = Result<(i32, i64), KafkaError>;

/// The id of records whose acknowledgement nobody waits for (tombstones).
const UNWATCHED: u64 = 0;

/// Acknowledgements of state records, by the id each was sent with.
#[derive(Default)]
pub struct Acks {
    next: AtomicU64,
    done: Mutex<HashMap<u64, Delivered>>,
}

impl ClientContext for Acks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_kafka(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        kafka_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        if *id == UNWATCHED {
            return;
        }
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        self.done
            .lock()
            .expect("never poisoned")
            .insert(*id, outcome);
    }
}

/// A state record that was not written, and whether it may have been written all the same
/// (sent, then no answer): then only reading the topic back tells.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct WriteError {
    pub error: KafkaError,
    pub ambiguous: bool,
}

pub struct StateStore {
    pub topic: String,
    pub commit_partition: i32,
    pub chunk_partition: i32,
    reader: BaseConsumer<Quiet>,
    fetcher: BaseConsumer<Quiet>,
    producer: ThreadedProducer<Acks>,
    /// Next offset to read on the commit partition, across catch-ups.
    position: i64,
    at_end: bool,
    last_ms: i64,
    pub directory: Directory,
    pub chunk_bytes: usize,
    pub timeout: Duration,
}

impl StateStore {
    pub fn open(cfg: &Config, instance: &str) -> Result<StateStore, ServiceError> {
        let reader_config = |name: &str| {
            let mut c = consumer_config(cfg, instance);
            c.set("group.id", format!("{}-state-reader", cfg.group_id))
                .set("client.id", format!("logmill-{instance}-{name}"))
                // The end of a partition as the fetches see it: brokers whose offset queries
                // lag behind their log (tansu) would otherwise hide the newest checkpoints.
                .set("enable.partition.eof", "true")
                // A chunk that is gone is an error to report, not a jump to the next record.
                .set("auto.offset.reset", "error")
                .set("receive.message.max.bytes", "104857600")
                .remove("group.instance.id");
            c
        };
        let reader: BaseConsumer<Quiet> = reader_config("state").create_with_context(Quiet)?;
        let fetcher: BaseConsumer<Quiet> =
            reader_config("state-fetch").create_with_context(Quiet)?;
        let metadata = reader.fetch_metadata(None, Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == cfg.state_topic)
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(ServiceError::NoStateTopic(cfg.state_topic.clone()));
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&cfg.state_topic, 0, Offset::Beginning)?;
        reader.assign(&tpl)?;
        let timeout = cfg.state_write_timeout;
        let producer: ThreadedProducer<Acks> = producer_config(cfg, &format!("{instance}-state"))
            .set("linger.ms", "0")
            .set("acks", "all")
            .set("compression.type", "none")
            .set(
                "message.max.bytes",
                (cfg.chunk_bytes + 64 * 1024).max(1_000_000).to_string(),
            )
            // A delivery report within the timeout, so that every write's outcome is known by
            // the time the writer stops waiting for it.
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set(
                "request.timeout.ms",
                (timeout.as_millis() / 2).max(1000).to_string(),
            )
            .create_with_context(Acks::default())?;
        Ok(StateStore {
            topic: cfg.state_topic.clone(),
            commit_partition: 0,
            chunk_partition: if partitions >= 2 { 1 } else { 0 },
            reader,
            fetcher,
            producer,
            position: 0,
            at_end: false,
            last_ms: 0,
            directory: Directory::new(&cfg.group_id),
            chunk_bytes: cfg.chunk_bytes,
            timeout,
        })
    }

    /// Reads every commit written so far: past the commit partition's high watermark, and
    /// until the fetches find its end (or, on a broker that reports neither right, until a
    /// record written after this call began, or a quiet spell).
    pub fn catch_up(&mut self, timeout: Duration) -> Result<CatchUp, ServiceError> {
        let deadline = Instant::now() + timeout;
        let (_, high) = self.reader.fetch_watermarks(
            &self.topic,
            self.commit_partition,
            Duration::from_secs(5).min(timeout),
        )?;
        let started_ms = super::now_ms() as i64;
        let mut reached: Option<Instant> = None;
        let mut report = CatchUp::default();
        loop {
            if self.position >= high {
                let since = *reached.get_or_insert_with(Instant::now);
                if self.at_end || self.last_ms >= started_ms || since.elapsed() >= QUIET {
                    return Ok(report);
                }
            }
            if Instant::now() > deadline {
                return Err(ServiceError::StateTimeout(self.topic.clone()));
            }
            match self.reader.poll(Duration::from_millis(50)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => self.at_end = true,
                // librdkafka goes on retrying a broker it cannot reach: not a reason to give
                // up before the deadline.
                Some(Err(_)) => {}
                Some(Ok(m)) => {
                    reached = None;
                    self.position = m.offset() + 1;
                    self.at_end = false;
                    if let Some(t) = m.timestamp().to_millis() {
                        self.last_ms = t;
                    }
                    match self.directory.observe(m.key(), m.payload()) {
                        Observed::Unreadable(why) => report
                            .unreadable
                            .push(format!("offset {}: {why}", m.offset())),
                        Observed::Foreign => report.foreign += 1,
                        Observed::Recorded | Observed::Chunk => {}
                    }
                }
            }
        }
    }

    /// Reads a blob's chunks by their offsets and puts it together.
    pub fn fetch(&self, b: &BlobRef) -> Result<Vec<u8>, ServiceError> {
        let Some(first) = b.chunks.first() else {
            return blob::join(&[], &[], b.raw_len).map_err(ServiceError::Restore);
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, b.partition, Offset::Offset(first.offset))?;
        self.fetcher.assign(&tpl)?;
        let want: HashMap<i64, usize> = b
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.offset, i))
            .collect();
        let last = b
            .chunks
            .iter()
            .map(|c| c.offset)
            .max()
            .unwrap_or(first.offset);
        let mut found: Vec<Option<Vec<u8>>> = vec![None; b.chunks.len()];
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(30));
        loop {
            if Instant::now() > deadline {
                return Err(ServiceError::StateTimeout(self.topic.clone()));
            }
            match self.fetcher.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    // Offsets that are gone (a trimmed topic) end the read: what is missing is
                    // reported by the join.
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange)
                    ) {
                        break;
                    }
                }
                Some(Ok(m)) => {
                    if let Some(&i) = want.get(&m.offset()) {
                        found[i] = m.payload().map(<[u8]>::to_vec);
                    }
                    if m.offset() >= last {
                        break;
                    }
                }
            }
        }
        blob::join(&b.chunks, &found, b.raw_len).map_err(ServiceError::Restore)
    }

    /// Sends records to the state topic and waits for every acknowledgement, up to the write
    /// timeout: the partition and offset of each. Nothing is retried here: the caller decides.
    pub fn write(&self, records: &[(i32, String, Option<&[u8]>)]) -> Result<Vec<i64>, WriteError> {
        let ctx = self.producer.context();
        let mut ids = Vec::with_capacity(records.len());
        for (partition, key, payload) in records {
            let id = ctx.next.fetch_add(1, Ordering::Relaxed) + 1;
            let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(id))
                .key(key.as_str())
                .partition(*partition);
            if let Some(p) = payload {
                record = record.payload(*p);
            }
            let mut record = record;
            let deadline = Instant::now() + self.timeout;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) if Instant::now() < deadline => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    // Refused before it was sent: certainly not written.
                    Err((error, _)) => {
                        return Err(WriteError {
                            error,
                            ambiguous: !ids.is_empty(),
                        });
                    }
                }
            }
            ids.push(id);
        }
        // The producer reports every record within its message timeout: wait a little past it.
        let deadline = Instant::now() + self.timeout + Duration::from_secs(2);
        let mut offsets = vec![0; ids.len()];
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        let mut failure = None;
        while !pending.is_empty() {
            {
                let mut done = ctx.done.lock().expect("never poisoned");
                pending.retain(|&i| match done.remove(&ids[i]) {
                    None => true,
                    Some(Ok((_, off))) => {
                        offsets[i] = off;
                        false
                    }
                    Some(Err(e)) => {
                        failure.get_or_insert(e);
                        false
                    }
                });
            }
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                // Still unanswered: forget them, and say that they may land.
                let mut done = ctx.done.lock().expect("never poisoned");
                for i in &pending {
                    done.remove(&ids[*i]);
                }
                return Err(WriteError {
                    error: KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                    ),
                    ambiguous: true,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match failure {
            // A record sent and then reported failed may still have been written (a request
            // that timed out after the broker appended it).
            Some(error) => Err(WriteError {
                error,
                ambiguous: true,
            }),
            None => Ok(offsets),
        }
    }

    /// Tombstones records no commit names any more, without waiting: one that does not land is
    /// only garbage kept longer.
    pub fn tombstone(&self, keys: &[(i32, String)]) {
        for (partition, key) in keys {
            let record =
                BaseRecord::<str, [u8], Box<u64>>::with_opaque_to(&self.topic, Box::new(UNWATCHED))
                    .key(key.as_str())
                    .partition(*partition);
            if self.producer.send(record).is_err() {
                tracing::debug!(key, "tombstone not sent");
            }
        }
    }
}

/// What a catch-up met besides this group's commits.
#[derive(Debug, Default)]
pub struct CatchUp {
    pub unreadable: Vec<String>,
    pub foreign: u64,
}

/// Creates the state topic when it does not exist: compacted, and two partitions (commits,
/// chunks). See `verify_state_topic` for one that exists.
pub async fn ensure_state_topic(cfg: &Config) -> Result<(), ServiceError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("allow.auto.create.topics", "false")
        .create_with_context(Quiet)?;
    // All topics: a metadata request naming the topic would create it with broker defaults.
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == cfg.state_topic && !t.partitions().is_empty());
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if !exists {
        let max_bytes = (cfg.chunk_bytes + 64 * 1024).max(1_048_588).to_string();
        let topic = NewTopic::new(&cfg.state_topic, 2, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            // Tombstones stay a day, so a reader that started before one still sees it.
            .set("delete.retention.ms", "86400000")
            .set("min.compaction.lag.ms", "0")
            .set("segment.ms", "3600000")
            .set("max.message.bytes", &max_bytes);
        let missing = |why: String| ServiceError::CreateStateTopic(cfg.state_topic.clone(), why);
        let results = tokio::time::timeout(
            Duration::from_secs(15),
            admin.create_topics([&topic], &options),
        )
        .await
        .map_err(|_| missing("the broker did not answer".into()))?
        .map_err(|e| missing(e.to_string()))?;
        for r in results {
            match r {
                Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, e)) => return Err(missing(e.to_string())),
            }
        }
        tracing::info!(topic = %cfg.state_topic, "created the state topic (compacted, 2 partitions)");
        return Ok(());
    }
    Ok(())
}

/// Checks that the state topic is compacted and never deleted by time, which would remove a
/// committed snapshot's chunks. Brokers that cannot describe configs (the mock cluster) never
/// answer, so this runs beside the start, not before it; `Err` says what is wrong.
pub async fn verify_state_topic(cfg: &Config) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("allow.auto.create.topics", "false")
        .create_with_context(Quiet)
        .map_err(|e| e.to_string())?;
    let described = tokio::time::timeout(
        Duration::from_secs(10),
        admin.describe_configs(
            [&ResourceSpecifier::Topic(&cfg.state_topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .await;
    let policy = match described {
        Ok(Ok(results)) => results
            .into_iter()
            .flatten()
            .flat_map(|r| r.entries)
            .find(|e| e.name == "cleanup.policy")
            .and_then(|e| e.value),
        _ => None,
    };
    if policy.is_none() {
        tracing::info!(
            topic = %cfg.state_topic,
            "the broker did not describe the state topic's config: compaction not verified"
        );
    }
    compaction_ok(&cfg.state_topic, policy.as_deref())
}

/// A state topic must be compacted, and only compacted.
pub fn compaction_ok(topic: &str, policy: Option<&str>) -> Result<(), String> {
    match policy {
        None => Ok(()),
        Some(p) if p.split(',').all(|s| s.trim() == "compact") => Ok(()),
        Some(p) => {
            Err(ServiceError::StateTopicNotCompacted(topic.to_string(), p.to_string()).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_compacted_state_topic_will_do() {
        assert!(compaction_ok("s", Some("compact")).is_ok());
        assert!(compaction_ok("s", None).is_ok(), "not known: not refused");
        let e = compaction_ok("s", Some("compact,delete")).unwrap_err();
        assert!(e.contains("cleanup.policy=compact,delete"), "{e}");
        assert!(compaction_ok("s", Some("delete")).is_err());
    }
}
