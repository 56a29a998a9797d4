//! Rebalancing: the consumer context whose callbacks run inside `poll` on the coordinator's
//! thread, restoring partitions as they are assigned and checkpointing them as they are
//! revoked.
//!
//! A callback blocks the poll loop, so each is bounded: an assignment reads the state topic
//! for at most 30 s, a revocation checkpoints for at most `revoke_deadline`. What cannot be
//! done in that time makes the service stop with an error (a restart resumes from the last
//! checkpoint), rather than go on from a state it cannot vouch for.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use super::checkpointing::{carried, start_at, watermarks};
use super::coordinator::Coordinator;
use super::partitions::Carried;
use super::worker::Job;
use super::{ServiceError, now_ms};
use crate::checkpoint::PartitionKey;
use crate::telemetry::CheckpointFailure;

/// The consumer context: rebalances checkpoint revoked partitions and restore assigned ones.
pub struct Ctx {
    pub coordinator: Mutex<Option<Coordinator>>,
    exported: std::sync::Arc<crate::sink::http::Exported>,
    /// A callback that could not do its part: the loop stops the service with it.
    pub fatal: Mutex<Option<String>>,
}

impl Ctx {
    pub fn new(c: Coordinator) -> Ctx {
        Ctx {
            exported: std::sync::Arc::clone(&c.exported),
            coordinator: Mutex::new(Some(c)),
            fatal: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Option<Coordinator>> {
        // Only the coordinator thread takes it, and a panic ends the process (`cmd::service`).
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn take_fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Assigns in the group's protocol: incrementally under cooperative-sticky (the default), the
/// whole set under an eager strategy a config may choose.
fn assign(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
        _ => consumer.assign(tpl),
    }
}

fn unassign(consumer: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
        _ => consumer.unassign(),
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::kafka::log_kafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::source::kafka::kafka_error(&error, reason);
    }

    /// librdkafka's statistics carry the consumer lag of every assigned partition.
    fn stats(&self, stats: rdkafka::Statistics) {
        let mut lags = Vec::new();
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 && p.fetch_state == "active" {
                    lags.push((topic.clone(), *partition, p.consumer_lag));
                }
            }
        }
        lags.sort();
        self.exported
            .set_extra(crate::telemetry::CONSUMER_LAG, crate::telemetry::lag(&lags));
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut guard = self.lock();
        let Some(c) = guard.as_mut() else {
            // Stopping: the final checkpoint is written (or will not be); just follow the
            // protocol.
            let _ = match err {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => assign(consumer, tpl),
                _ => unassign(consumer, tpl),
            };
            return;
        };
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => c
                .assigned(consumer, tpl)
                .and_then(|()| assign(consumer, tpl).map_err(ServiceError::from)),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let r = c.revoked(consumer, tpl);
                // Unassign whatever happened: keeping revoked partitions would stall the group.
                let _ = unassign(consumer, tpl);
                r
            }
            other => Err(ServiceError::Kafka(KafkaError::Rebalance(other.into()))),
        };
        if let Err(e) = result {
            *self.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
    }
}

impl Coordinator {
    /// Restores assigned partitions: each starts where the freshest checkpoint of this group
    /// says, checked against its log, with the state its last owner recorded.
    pub(super) fn assigned(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        tpl: &mut TopicPartitionList,
    ) -> Result<(), ServiceError> {
        // Without the latest checkpoints a partition could resume behind what another
        // instance exported: wait for the state topic rather than guess, but not for ever.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.checkpoints.store.catch_up(Duration::from_secs(10)) {
                Ok(report) => {
                    super::checkpointing::report_catch_up(&self.checkpoints.store, &report);
                    break;
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!("reading checkpoints before resuming partitions: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        let latest = self
            .cfg
            .properties
            .get("auto.offset.reset")
            .is_some_and(|v| matches!(v.as_str(), "latest" | "largest" | "end"));
        let elements: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let except = (!self.checkpoints.restored).then(|| self.instance.clone());
        for (topic, partition) in elements {
            let key = PartitionKey {
                topic: topic.clone(),
                partition,
            };
            let (low, high) = watermarks(consumer, &topic, partition)?;
            let store = &self.checkpoints.store;
            let resume = store
                .directory
                .resume(&key, except.as_deref())
                .map(|(who, e)| (who.to_string(), e.clone()));
            let reduce_of = |who: &str, e: &crate::checkpoint::PartitionEntry| {
                e.reduce.clone().map(|b| (b, who == self.instance))
            };
            let (start, epoch, state, reduce, from) = match resume {
                Some((who, e)) if e.next > high => {
                    // Issue 10, item 6: the topic was recreated or truncated. Counting from the
                    // log start under a higher epoch, so no checkpoint's stale offset wins again.
                    crate::telemetry::offset_reset("ahead_of_log");
                    tracing::error!(
                        partition = %key,
                        checkpointed = e.next,
                        log_end = high,
                        by = who,
                        "the checkpointed offset is beyond the end of its log (was the topic recreated or truncated?): counting it from the start of its log, {low}"
                    );
                    (
                        low,
                        e.epoch + 1,
                        Carried::default(),
                        None,
                        "log start (reset)",
                    )
                }
                Some((who, e)) if e.next < low => {
                    crate::telemetry::offset_reset("behind_log");
                    tracing::error!(
                        partition = %key,
                        checkpointed = e.next,
                        log_start = low,
                        by = who,
                        "records {}..{low} were deleted before they were read (retention shorter than the lag?): they are not counted",
                        e.next
                    );
                    let state = carried(store, &e).unwrap_or_default();
                    let reduce = reduce_of(&who, &e);
                    (low, e.epoch, state, reduce, "log start (records lost)")
                }
                Some((who, e)) => {
                    let state = carried(store, &e).unwrap_or_else(|why| {
                        tracing::warn!(partition = %key, "the partition's state cannot be read ({why}): starting it empty");
                        Carried::default()
                    });
                    let reduce = reduce_of(&who, &e);
                    (e.next, e.epoch, state, reduce, "checkpoint")
                }
                None => (
                    if latest { high } else { low },
                    0,
                    Carried::default(),
                    None,
                    "log start",
                ),
            };
            // The partition's reduction state, for its worker, before any of its records.
            let loaded = match &reduce {
                Some((b, _)) => match self.checkpoints.store.fetch(b) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        crate::telemetry::restore_failed("reduction_state");
                        tracing::error!(partition = %key, "the partition's reduction state cannot be read ({e}): its open windows start empty");
                        None
                    }
                },
                None => None,
            };
            // Held events of open traces are read again from where the oldest starts (not
            // before the log's start: what retention deleted is not held again).
            let seek = loaded
                .as_deref()
                .and_then(super::partition_state::PartitionState::retain_from)
                .map_or(start, |from| from.max(low).min(start));
            if seek < start {
                tracing::info!(
                    topic,
                    partition,
                    offset = start,
                    from,
                    held_from = seek,
                    "resuming"
                );
            } else {
                tracing::info!(topic, partition, offset = start, from, "resuming");
            }
            start_at(tpl, &topic, partition, seek)?;
            let topic_arc: std::sync::Arc<str> = topic.as_str().into();
            let (blob, ours) = match reduce {
                Some((b, ours)) => (Some(b), ours),
                None => (None, false),
            };
            let worker = self.partitions.assign(
                key.clone(),
                topic_arc,
                epoch,
                start,
                state,
                blob,
                self.cfg.workers.max(1),
            );
            if let Some(o) = self.partitions.owned.get_mut(&key) {
                o.reduce_ours = ours;
            }
            self.send(
                worker,
                Job::Load {
                    key,
                    state: loaded,
                    counted: start,
                },
            );
        }
        let owned = self.partitions.owned.len();
        self.exported
            .assigned
            .store(owned as u64, Ordering::Relaxed);
        self.exported
            .assigned_at_ms
            .store(now_ms(), Ordering::Relaxed);
        crate::telemetry::assigned(owned);
        crate::telemetry::rebalanced("assign");
        tracing::info!(partitions = tpl.count(), owned, "assigned");
        Ok(())
    }

    /// Checkpoints before partitions move on. When that fails without a doubt (outputs lost,
    /// the group's offsets not committed), the instance rolls back, so what the next owners
    /// replay is never exported here. When a commit record's fate is unknown, it cannot hand
    /// the partitions over safely: the service stops.
    pub(super) fn revoked(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        tpl: &TopicPartitionList,
    ) -> Result<(), ServiceError> {
        tracing::info!(partitions = tpl.count(), "revoking");
        let deadline = Instant::now() + self.cfg.state_write_timeout * 2 + Duration::from_secs(5);
        let mut result = Ok(());
        if let Err(f) = self.checkpoint_now(consumer, deadline) {
            if f.ambiguous {
                result = Err(ServiceError::Fatal(format!(
                    "a checkpoint's commit got no answer while partitions were revoked ({f}): stopping, the restart reads the state topic back"
                )));
            } else {
                self.failed(&f);
                result = self.rollback(consumer);
                // A commit refused because the group is rebalancing is what a revocation can
                // meet (the embedded broker was seen to refuse one while a member joined): the
                // next owner reads from the last checkpoint, nothing to look into.
                match (&result, f.why) {
                    (Err(_), _) => {}
                    (Ok(()), CheckpointFailure::Rebalancing) => tracing::info!(
                        "the group refused the revoked partitions' checkpoint while rebalancing: rolled back to the last checkpoint"
                    ),
                    (Ok(()), _) => tracing::warn!(
                        "a checkpoint failed while partitions were revoked ({f}): rolled back to the last checkpoint"
                    ),
                }
            }
        }
        for e in tpl.elements() {
            let key = PartitionKey {
                topic: e.topic().to_string(),
                partition: e.partition(),
            };
            if let Some(o) = self.partitions.owned.get(&key) {
                let worker = o.worker;
                self.send(worker, Job::Drop { key: key.clone() });
            }
            self.partitions.revoke(&key);
        }
        let owned = self.partitions.owned.len();
        self.exported
            .assigned
            .store(owned as u64, Ordering::Relaxed);
        crate::telemetry::assigned(owned);
        crate::telemetry::rebalanced("revoke");
        result
    }
}
