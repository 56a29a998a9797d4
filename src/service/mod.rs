//! The service: a consumer group in, metrics, kept logs and dead letters out, checkpoints in
//! between. This is the edge where threads and I/O live; the per-record work is `Engine`.
//!
//! One coordinator thread polls the consumer, cuts batches and hands them to worker threads
//! (`worker`), merges their results in dispatch order (`coordinator`), and checkpoints
//! (`checkpointing`, through the state topic in `state`). Rebalance callbacks run on the same
//! thread, inside `poll` (`rebalance`), so they see a consistent state without locks of their
//! own. Partitions carry their own state from owner to owner (`partitions`). See
//! ARCHITECTURE.md, "Delivery".

mod checkpointing;
mod coordinator;
mod partition_state;
mod partitions;
mod rebalance;
mod reload;
mod repartition;
mod shadow;
mod state;
mod subscription;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

pub use coordinator::Coordinator;
pub use partitions::{Carried, Partitions};
pub use rebalance::Ctx;
pub use state::{ensure_state_topic, verify_state_topic};

use crate::config::Config;
use crate::engine::Counters;
use crate::rules::Program;
use crate::sink::http::Exported;
use crate::source::kafka::consumer_config;
use crate::telemetry::CheckpointFailure;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("timed out reading the state topic `{0}`")]
    StateTimeout(String),
    #[error("the state topic `{0}` does not exist (logmill creates it when the broker allows)")]
    NoStateTopic(String),
    #[error(
        "the state topic `{0}` does not exist and creating it failed ({1}): create it with 2 partitions and cleanup.policy=compact (on `logmill broker`, add `--topic {0}:2`)"
    )]
    CreateStateTopic(String, String),
    #[error(
        "the state topic `{0}` has cleanup.policy={1}: it must be `compact` only, or committed checkpoints are deleted"
    )]
    StateTopicNotCompacted(String, String),
    #[error("reading a checkpoint: {0}")]
    Restore(#[from] crate::checkpoint::blob::BlobError),
    #[error("checkpoint blob `{0}`: {1}")]
    Snapshot(String, crate::derive::snapshot::SnapshotError),
    #[error("{0}")]
    Fatal(String),
    #[error(
        "the final checkpoint failed ({0}); nothing is lost: the events since the last one are read again by the partitions' next owner"
    )]
    FinalCheckpoint(String),
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records the poll loop takes in a row before it looks at batches, results, checkpoints and
/// rule files again.
const HOUSEKEEPING_EVERY: u32 = 256;

/// Runs the service until `stop` is set, then checkpoints, leaves the group and returns.
/// `reload` asks for the rules to be read again (SIGHUP); edits to the rule files are noticed
/// on their own. `Err` when the service cannot go on: the caller exits non-zero, and a restart
/// resumes from the last checkpoint.
pub fn run(
    cfg: Config,
    instance: String,
    program: Arc<Program>,
    exported: Arc<Exported>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
) -> Result<Counters, ServiceError> {
    let window = (cfg.checkpoint_interval * 3).max(Duration::from_secs(5));
    exported
        .ready_window_ms
        .store(window.as_millis() as u64, Ordering::Relaxed);
    let mut rules = reload::RuleFiles::new(&cfg);
    crate::telemetry::rules_valid(true);
    exported.set_extra(
        crate::telemetry::RULES_INFO,
        crate::telemetry::rules_info(program.hash),
    );
    let mut coordinator = Coordinator::new(
        cfg.clone(),
        instance.clone(),
        program,
        Arc::clone(&exported),
    )?;
    coordinator.set_candidate(reload::candidate(&cfg));
    let sources = Arc::clone(&coordinator.source_partitions);
    // Statistics carry the consumer lag; only the group consumer asks for them.
    let consumer: BaseConsumer<Ctx> = consumer_config(&cfg, &instance)
        .set("statistics.interval.ms", "5000")
        .create_with_context(Ctx::new(coordinator))?;
    let mut subscription = subscription::Subscription::new(&cfg, sources);
    let result = subscription.start(&cfg, &consumer).and_then(|()| {
        poll(
            &cfg,
            &consumer,
            &stop,
            &reload,
            &mut rules,
            &mut subscription,
        )
    });
    // Whatever ended the loop, the coordinator leaves the consumer's context before anything
    // can close the consumer: a revocation then only follows the protocol, and never
    // checkpoints a state this function gave up on (issue 10, item 5).
    let mut c = consumer
        .context()
        .lock()
        .take()
        .expect("set until shutdown");
    exported.assigned.store(0, Ordering::Relaxed);
    if let Err(e) = result {
        c.shutdown_workers();
        return Err(e);
    }
    let deadline = Instant::now() + cfg.state_write_timeout + Duration::from_secs(5);
    let (mut c, last) = final_checkpoint(&consumer, c, deadline);
    c.shutdown_workers();
    consumer.unsubscribe();
    last.map(|()| c.counters)
}

/// The checkpoint of a graceful stop. A member joining or leaving makes the group refuse
/// commits until this member has followed the rebalance, and only polling follows it: the
/// coordinator goes back into the consumer's context meanwhile, so a revocation checkpoints
/// what it takes away and an assignment restores what it gives, and the checkpoint is tried
/// again for what is owned then. Records polled meanwhile are not processed: no checkpoint
/// covers them, and whoever owns their partition next reads them. A callback that could not
/// do its part is fatal, as in the poll loop.
fn final_checkpoint(
    consumer: &BaseConsumer<Ctx>,
    mut c: Coordinator,
    deadline: Instant,
) -> (Coordinator, Result<(), ServiceError>) {
    loop {
        let f = match c.checkpoint_now(consumer, deadline) {
            Ok(()) => return (c, Ok(())),
            Err(f) if f.why == CheckpointFailure::Rebalancing && Instant::now() < deadline => f,
            Err(f) => return (c, Err(ServiceError::FinalCheckpoint(f.to_string()))),
        };
        tracing::info!("the final checkpoint waits for the group's rebalance: {f}");
        *consumer.context().lock() = Some(c);
        let turn = (Instant::now() + Duration::from_millis(500)).min(deadline);
        while Instant::now() < turn {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        c = consumer
            .context()
            .lock()
            .take()
            .expect("put back above, and only this thread takes it");
        if let Some(why) = consumer.context().take_fatal() {
            return (c, Err(ServiceError::Fatal(why)));
        }
    }
}

fn poll(
    cfg: &Config,
    consumer: &BaseConsumer<Ctx>,
    stop: &AtomicBool,
    reload: &AtomicBool,
    rules: &mut reload::RuleFiles,
    subscription: &mut subscription::Subscription,
) -> Result<(), ServiceError> {
    let mut unattended = 0;
    let mut last_gauges = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(20));
        if let Some(why) = consumer.context().take_fatal() {
            return Err(ServiceError::Fatal(why));
        }
        let mut guard = consumer.context().lock();
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
            Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                return Err(ServiceError::Fatal(match code {
                    rdkafka::types::RDKafkaErrorCode::FencedInstanceId => format!(
                        "another member of group `{}` uses instance id `{}`: give each instance its own (`kafka.instance_id`)",
                        cfg.group_id,
                        cfg.instance_id.as_deref().unwrap_or_default()
                    ),
                    other => format!("the consumer failed for good: {other}"),
                }));
            }
            Some(Err(e)) => tracing::warn!("consumer: {e}"),
            None => {}
        }
        unattended = 0;
        c.exported.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        c.dispatch_due(cfg.batch_max_wait);
        c.collect(false);
        c.backpressure(consumer)?;
        if c.checkpoints.last.elapsed() >= cfg.checkpoint_interval {
            c.cut();
        }
        c.advance_checkpoint(consumer)?;
        let asked = reload.swap(false, Ordering::Relaxed);
        if let Some(changed) = rules.check(cfg, c.program().hash, asked) {
            if let Some(new) = changed.live {
                c.swap_program(consumer, new);
            }
            c.set_candidate(changed.candidate);
        }
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            crate::telemetry::rules_valid(rules.valid);
            c.exported.set_extra(
                crate::telemetry::RULES_INFO,
                crate::telemetry::rules_info(c.program().hash),
            );
            crate::telemetry::assigned(c.partitions.owned.len());
        }
        drop(guard);
        subscription.tick(cfg, consumer)?;
    }
    Ok(())
}

/// The exit code of a process that panicked.
pub const PANIC_EXIT: i32 = 70;

/// Makes any panic, on any thread, end the process at once with [`PANIC_EXIT`], after the
/// panic's message: a service with a dead thread would otherwise go on serving frozen
/// `/metrics` while saying it is healthy (issue 10, item 3). Its orchestrator restarts it, and
/// the restart resumes from the last checkpoint.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        crate::sink::http::PANICKED.store(true, Ordering::SeqCst);
        report(info);
        tracing::error!("a thread panicked: exiting for a restart from the last checkpoint");
        std::process::exit(PANIC_EXIT);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, item 3: a panic on any thread ends the process promptly, non-zero. Runs this
    /// test binary again as the panicking process.
    #[test]
    fn issue10_a_panic_anywhere_ends_the_process() {
        if std::env::var_os("LOGMILL_PANIC_CHILD").is_some() {
            exit_on_panic();
            std::thread::spawn(|| panic!("a worker fails"));
            // Without the hook the process would go on: this test would pass, slowly.
            std::thread::sleep(Duration::from_secs(20));
            return;
        }
        let started = Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "service::tests::issue10_a_panic_anywhere_ends_the_process",
                "--nocapture",
            ])
            .env("LOGMILL_PANIC_CHILD", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(PANIC_EXIT), "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(String::from_utf8_lossy(&out.stderr).contains("a worker fails"));
    }
}
