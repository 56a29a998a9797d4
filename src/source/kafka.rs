//! The Kafka source: consumer settings for a logmill consumer group, owned records, and the
//! client context every logmill Kafka client logs through.

use std::sync::Arc;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::Config;

/// A record copied out of the consumer, so workers can hold it while the poll loop goes on.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// Event time: the record's timestamp, made monotonic within its partition by the poll
    /// loop (`service::partitions`), so that the later record of a partition is never older.
    pub event_ms: u64,
    pub payload: Vec<u8>,
    /// Which event of its message the record is, when the message held many
    /// (`engine::split`): the payload is then that event.
    pub part: crate::decode::Part,
}

impl OwnedRecord {
    pub fn from_message(m: &BorrowedMessage<'_>, topic: Arc<str>, event_ms: u64) -> OwnedRecord {
        OwnedRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            event_ms,
            payload: m.payload().unwrap_or_default().to_vec(),
            part: crate::decode::Part::Whole,
        }
    }
}

/// How librdkafka's logs and errors reach logmill's: through `tracing`, with reaching the end
/// of a partition (which readers ask for) not an error at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

pub fn log_kafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac} {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
    }
}

pub fn kafka_error(error: &KafkaError, reason: &str) {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::PartitionEOF) => {}
        // librdkafka reports every broker it cannot reach and goes on retrying; the effects
        // that matter (checkpoints, outputs) are reported where they happen.
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
            tracing::info!(target: "librdkafka", "{error}: {reason}")
        }
        _ => tracing::warn!(target: "librdkafka", "{error}: {reason}"),
    }
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_kafka(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        kafka_error(&error, reason);
    }
}

impl ConsumerContext for Quiet {}

/// Properties that only consumers know; librdkafka warns when a producer is given one.
const CONSUMER_ONLY: &[&str] = &[
    "group.",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "auto.offset.reset",
    "auto.commit.interval.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "fetch.",
    "queued.",
    "isolation.level",
    "check.crcs",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
];

/// Properties that only producers know.
const PRODUCER_ONLY: &[&str] = &[
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "acks",
    "request.required.acks",
    "compression.",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "partitioner",
    "sticky.partitioning.linger.ms",
    "retry.backoff.max.ms",
    "retries",
    "message.send.max.retries",
];

fn applies(key: &str, excluded: &[&str]) -> bool {
    !excluded
        .iter()
        .any(|p| key == *p || (p.ends_with('.') && key.starts_with(p)))
}

/// librdkafka settings for the group consumer. Offsets are never auto-committed: checkpoints
/// decide where partitions resume, group offsets are committed with them for lag tools.
pub fn consumer_config(cfg: &Config, instance: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("allow.auto.create.topics", "false")
        // While a checkpoint holds the poll loop the local queue fills past its threshold, and
        // librdkafka then waits this long before fetching the partition again: its default
        // (1 s) halved the throughput through a backlog (benches/service.rs).
        .set("fetch.queue.backoff.ms", "20")
        .set("client.id", format!("logmill-{instance}"));
    if cfg.instance_id.is_some() {
        c.set("group.instance.id", instance);
    }
    for (k, v) in cfg
        .properties
        .iter()
        .filter(|(k, _)| applies(k, PRODUCER_ONLY))
    {
        c.set(k, v);
    }
    c
}

/// Settings for logmill's producers: idempotent, so retries never duplicate within a session.
pub fn producer_config(cfg: &Config, instance: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("client.id", format!("logmill-{instance}-producer"));
    for (k, v) in cfg
        .properties
        .iter()
        .filter(|(k, _)| applies(k, CONSUMER_ONLY))
    {
        c.set(k, v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_go_to_the_clients_that_know_them() {
        assert!(!applies("heartbeat.interval.ms", CONSUMER_ONLY));
        assert!(!applies("group.instance.id", CONSUMER_ONLY));
        assert!(!applies("fetch.max.bytes", CONSUMER_ONLY));
        assert!(applies("security.protocol", CONSUMER_ONLY));
        assert!(!applies("linger.ms", PRODUCER_ONLY));
        assert!(applies("session.timeout.ms", PRODUCER_ONLY));
    }
}
