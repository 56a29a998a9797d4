//! The Kafka outputs: kept events and dead letters, each record carrying where it came from,
//! and the checkpoint records of the state topic.
//!
//! The service's workers route records as they finish a batch. A checkpoint must not be
//! written before the records of the events it covers are acknowledged, but waiting for the
//! whole producer queue would stall consumption (it always holds newer records). So records are
//! counted by *epoch*: a checkpoint cut closes the current epoch, and it may be written once
//! every record of that epoch and the ones before it is acknowledged ([`Outputs::settled`]),
//! while newer records keep flowing. Checkpoint records have a producer of their own
//! (`service::state`), so writing one waits for that record alone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::reduce::Fate;
use crate::source::kafka::{OwnedRecord, producer_config};

/// Header names on kept and dead-lettered records: where the record came from, so readers can
/// drop replays after a crash, and why a record was dead-lettered.
pub const HEADER_TOPIC: &str = "logmill.source.topic";
pub const HEADER_PARTITION: &str = "logmill.source.partition";
pub const HEADER_OFFSET: &str = "logmill.source.offset";
/// On an event of a message that held many (OTLP): its position in the message, which with
/// the offset identifies it.
pub const HEADER_INDEX: &str = "logmill.source.index";
pub const HEADER_REASON: &str = "logmill.reason";
/// On a dead letter whose value could not be used: the rule, metric and field that failed.
pub const HEADER_RULE: &str = "logmill.rule";
pub const HEADER_METRIC: &str = "logmill.metric";
pub const HEADER_FIELD: &str = "logmill.field";

/// Epochs counted at once: the open one, the one a checkpoint waits for, and slack. Only one
/// checkpoint is in flight at a time, so a slot is long settled when its epoch number comes
/// round again.
const EPOCHS: usize = 4;

/// Records in flight and records lost (retries exhausted, or refused for good), per epoch.
/// Reports come for every record: with `delivery.report.only.error` librdkafka frees delivered
/// records on its broker thread instead, which measured 10% slower and 30% larger here
/// (benches/service.rs).
#[derive(Default)]
pub struct Deliveries {
    epoch: AtomicU64,
    outstanding: [AtomicU64; EPOCHS],
    failed: [AtomicU64; EPOCHS],
    last_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log_kafka(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        crate::source::kafka::kafka_error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        if let Err((e, _)) = result {
            self.failed[slot].fetch_add(1, Ordering::SeqCst);
            *self.last_error.lock().expect("never poisoned") = Some(e.to_string());
        }
        self.outstanding[slot].fetch_sub(1, Ordering::SeqCst);
    }
}

impl Deliveries {
    /// Counts one record in the open epoch and returns its slot. Counted, then checked that
    /// the epoch is still open: with sequentially consistent operations a checkpoint that
    /// closed the epoch afterwards sees the count (or the record moves to the new epoch).
    fn enter(&self) -> usize {
        loop {
            let epoch = self.epoch.load(Ordering::SeqCst);
            let slot = (epoch % EPOCHS as u64) as usize;
            self.outstanding[slot].fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == epoch {
                return slot;
            }
            self.outstanding[slot].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Records that were sent and will never be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub count: u64,
    pub last_error: String,
}

/// On a kept event its rule sampled: one in how many was kept, to re-weigh counts by.
pub const HEADER_SAMPLE_RATE: &str = "logmill.sample_rate";
/// On a kept event whose template was mined.
pub const HEADER_TEMPLATE: &str = "logmill.template.id";
/// On a summary record: `summary`; its id (the same each time its partition is read); and the
/// last offset it covers (`logmill.source.offset` is the first).
pub const HEADER_KIND: &str = "logmill.kind";
pub const HEADER_SUMMARY_ID: &str = "logmill.summary.id";
pub const HEADER_OFFSET_LAST: &str = "logmill.source.offset.last";
/// A trace summary's or edge's trace id (the traces topic).
pub const HEADER_TRACE_ID: &str = "logmill.trace.id";

/// What the reduction says of a kept event, carried in its headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct Meta {
    pub sample_rate: Option<u32>,
    pub template: Option<u64>,
}

pub const HEADER_ORIGINAL_BYTES: &str = "logmill.original.bytes";
pub const HEADER_ORIGINAL_SHA256: &str = "logmill.original.sha256";

pub struct Outputs {
    producer: ThreadedProducer<Deliveries>,
    kept: Option<String>,
    dead_letter: Option<String>,
    traces: Option<String>,
    /// The internal topic trace events are republished to (`correlate::repartition`).
    repartition: Option<String>,
    /// A dead letter carries at most this much of its event, so it always fits in a record.
    max_payload: usize,
}

impl Outputs {
    pub fn new(cfg: &Config, instance: &str) -> Result<Outputs, KafkaError> {
        Ok(Outputs {
            producer: producer_config(cfg, instance).create_with_context(Deliveries::default())?,
            kept: cfg.kept_topic.clone(),
            dead_letter: cfg.dead_letter_topic.clone(),
            traces: cfg.traces_topic.clone(),
            repartition: cfg.repartition.as_ref().map(|r| r.topic.clone()),
            max_payload: cfg.limits.max_event_bytes,
        })
    }

    /// Sends a record where its fate says: the kept topic, the dead-letter topic, or nowhere.
    /// A record the producer refuses at once counts as lost in its epoch, as one that fails
    /// later does: either way the checkpoint that would cover it is not written.
    pub fn route(
        &self,
        rec: &OwnedRecord,
        fate: &Fate,
        program: &crate::rules::Program,
        meta: Meta,
    ) {
        let (topic, reason) = match fate {
            Fate::Keep => (self.kept.as_deref(), None),
            Fate::Drop => (None, None),
            Fate::DeadLetter(r) => (self.dead_letter.as_deref(), Some(r.as_str())),
        };
        let Some(topic) = topic else {
            return;
        };
        let (mut p, mut o, mut n) = ([0; 20], [0; 20], [0; 20]);
        let partition = format_int(&mut p, rec.partition as i64);
        let offset = format_int(&mut o, rec.offset);
        let mut headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(rec.topic.as_bytes()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(offset),
            });
        let mut x = [0; 20];
        if let crate::decode::Part::Event(i) = rec.part {
            headers = headers.insert(Header {
                key: HEADER_INDEX,
                value: Some(format_int(&mut x, i64::from(i))),
            });
        }
        if let Some(reason) = reason {
            headers = headers.insert(Header {
                key: HEADER_REASON,
                value: Some(reason.as_bytes()),
            });
        }
        let (mut r, mut t) = ([0; 20], String::new());
        if let Some(rate) = meta.sample_rate {
            headers = headers.insert(Header {
                key: HEADER_SAMPLE_RATE,
                value: Some(format_int(&mut r, i64::from(rate))),
            });
        }
        if let Some(id) = meta.template {
            t = format!("{id:016x}");
            headers = headers.insert(Header {
                key: HEADER_TEMPLATE,
                value: Some(t.as_bytes()),
            });
        }
        let _ = &t;
        if let Fate::DeadLetter(r) = fate
            && let Some(c) = r.culprit(program)
        {
            headers = headers
                .insert(Header {
                    key: HEADER_RULE,
                    value: Some(c.rule.as_bytes()),
                })
                .insert(Header {
                    key: HEADER_METRIC,
                    value: Some(c.metric.as_bytes()),
                })
                .insert(Header {
                    key: HEADER_FIELD,
                    value: Some(c.field.as_bytes()),
                });
        }
        // Only an event too large to process can be larger than this: its dead letter carries
        // its beginning, its size and its digest, so that it fits and can still be found.
        let mut payload: &[u8] = &rec.payload;
        let digest;
        if payload.len() > self.max_payload {
            use sha2::Digest;
            digest = hex(&sha2::Sha256::digest(payload));
            headers = headers
                .insert(Header {
                    key: HEADER_ORIGINAL_BYTES,
                    value: Some(format_int(&mut n, payload.len() as i64)),
                })
                .insert(Header {
                    key: HEADER_ORIGINAL_SHA256,
                    value: Some(digest.as_bytes()),
                });
            payload = &payload[..self.max_payload];
        }
        self.send(topic, None, payload, headers);
    }

    /// Sends a reduction summary where kept events go, with the source it covers.
    /// Sends a trace summary or edge (a JSON line of `correlate::traces`) to the traces topic,
    /// keyed by its trace id.
    /// Headers say what it is, its trace, and the record whose time closed the trace: a replay
    /// after a crash writes the same record again, identifiable by them.
    pub fn route_trace(&self, source: &OwnedRecord, line: &str) {
        let Some(topic) = self.traces.as_deref() else {
            return;
        };
        let kind = if line.starts_with("{\"logmill\":\"edge\"") {
            "edge"
        } else {
            "trace"
        };
        let trace_id = line
            .split("\"trace_id\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default();
        let (mut p, mut o) = ([0; 20], [0; 20]);
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: HEADER_KIND,
                value: Some(kind),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(source.topic.as_bytes()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(format_int(&mut p, i64::from(source.partition))),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(format_int(&mut o, source.offset)),
            });
        let headers = headers.insert(Header {
            key: HEADER_TRACE_ID,
            value: Some(trace_id),
        });
        // Keyed by trace id: one trace's summary and edges share a partition downstream.
        self.send(topic, Some(trace_id.as_bytes()), line.as_bytes(), headers);
    }

    /// Republishes a trace event (`correlate::repartition::encode`) to the repartition topic,
    /// keyed by its trace id so that one trace's events share a partition there, with the
    /// timestamp of the record it was read from. In the epoch of that record, like every
    /// output: a checkpoint past the record is written only once its events are in.
    pub fn route_repartition(&self, source: &OwnedRecord, trace_id: &[u8], payload: &[u8]) {
        let Some(topic) = self.repartition.as_deref() else {
            return;
        };
        self.send_at(
            topic,
            Some(trace_id),
            payload,
            OwnedHeaders::new(),
            source.timestamp_ms,
        );
    }

    pub fn route_summary(&self, source_topic: &str, s: &crate::reduce::Summary) {
        let Some(topic) = self.kept.as_deref() else {
            return;
        };
        let mut json = String::new();
        s.json(&mut json);
        let (first, last) = s.offsets();
        let (mut p, mut o, mut l) = ([0; 20], [0; 20], [0; 20]);
        let id = format!("{:016x}", s.id);
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: HEADER_KIND,
                value: Some("summary"),
            })
            .insert(Header {
                key: HEADER_SUMMARY_ID,
                value: Some(id.as_bytes()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(source_topic.as_bytes()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(format_int(&mut p, i64::from(s.partition))),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(format_int(&mut o, first)),
            })
            .insert(Header {
                key: HEADER_OFFSET_LAST,
                value: Some(format_int(&mut l, last)),
            });
        self.send(topic, None, json.trim_end().as_bytes(), headers);
    }

    /// Sends one record in the open epoch; a refusal counts as a loss in it.
    fn send(&self, topic: &str, key: Option<&[u8]>, payload: &[u8], headers: OwnedHeaders) {
        self.send_at(topic, key, payload, headers, None);
    }

    fn send_at(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
        timestamp_ms: Option<i64>,
    ) {
        let ctx = self.producer.context();
        let slot = ctx.enter();
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, slot)
            .payload(payload)
            .headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(t) = timestamp_ms {
            record = record.timestamp(t);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                // A full queue drains as the broker acknowledges: wait it out.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    ctx.failed[slot].fetch_add(1, Ordering::SeqCst);
                    *ctx.last_error.lock().expect("never poisoned") = Some(e.to_string());
                    ctx.outstanding[slot].fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    /// Closes the open epoch: a checkpoint cut. Every record routed before this call belongs
    /// to a closed epoch.
    pub fn close_epoch(&self) {
        self.producer.context().epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn open_slot(&self) -> usize {
        (self.producer.context().epoch.load(Ordering::SeqCst) % EPOCHS as u64) as usize
    }

    /// Whether every record of the closed epochs is acknowledged or failed.
    pub fn settled(&self) -> bool {
        let ctx = self.producer.context();
        let open = self.open_slot();
        (0..EPOCHS)
            .filter(|&s| s != open)
            .all(|s| ctx.outstanding[s].load(Ordering::SeqCst) == 0)
    }

    /// Waits for every record sent so far to be acknowledged or to fail.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The records lost, of the closed epochs or of all. **Losses stay until a rollback
    /// forgets them** (`forget_losses`): reading them never clears them, so no later
    /// checkpoint on any path can pass over a record that was lost.
    pub fn undelivered(&self, closed_only: bool) -> Option<Undelivered> {
        let ctx = self.producer.context();
        let open = self.open_slot();
        let count: u64 = (0..EPOCHS)
            .filter(|&s| !closed_only || s != open)
            .map(|s| ctx.failed[s].load(Ordering::SeqCst))
            .sum();
        (count > 0).then(|| Undelivered {
            count,
            last_error: ctx
                .last_error
                .lock()
                .expect("never poisoned")
                .clone()
                .unwrap_or_default(),
        })
    }

    /// After a rollback every event since the last checkpoint is read and routed again, so
    /// the losses so far are made good.
    pub fn forget_losses(&self) {
        let ctx = self.producer.context();
        for f in &ctx.failed {
            f.store(0, Ordering::SeqCst);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decimal digits of `n` in `buf`, without an allocation per record.
fn format_int(buf: &mut [u8; 20], n: i64) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{n}").expect("an i64 fits in 20 bytes");
    let len = cursor.position() as usize;
    &buf[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_in_place() {
        let mut b = [0; 20];
        assert_eq!(format_int(&mut b, 0), b"0");
        assert_eq!(format_int(&mut b, i64::MIN), b"-9223372036854775808");
        assert_eq!(format_int(&mut b, 1234567), b"1234567");
    }
}
