//! The Kafka source: consumer settings for a logmill consumer group, and owned records.

use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::message::{BorrowedMessage, Message};

use crate::config::Config;

/// A record copied out of the consumer, so workers can hold it while the poll loop goes on.
#[derive(Debug, Clone)]
pub struct OwnedRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub payload: Vec<u8>,
}

impl OwnedRecord {
    pub fn from_message(m: &BorrowedMessage<'_>, topic: Arc<str>) -> OwnedRecord {
        OwnedRecord {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            payload: m.payload().unwrap_or_default().to_vec(),
        }
    }
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
        // While a checkpoint holds the poll loop the local queue fills past its threshold, and
        // librdkafka then waits this long before fetching the partition again: its default
        // (1 s) halved the throughput through a backlog (benches/service.rs).
        .set("fetch.queue.backoff.ms", "20")
        .set("client.id", format!("logmill-{instance}"));
    if cfg.instance_id.is_some() {
        c.set("group.instance.id", instance);
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Settings for logmill's producer: idempotent, so retries never duplicate within a session.
pub fn producer_config(cfg: &Config, instance: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("client.id", format!("logmill-{instance}-producer"));
    for (k, v) in cfg
        .properties
        .iter()
        .filter(|(k, _)| !k.starts_with("session.") && !k.starts_with("group."))
    {
        c.set(k, v);
    }
    c
}
