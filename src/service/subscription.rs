//! What the consumer subscribes to. A `topic_regex` is not handed to librdkafka: its pattern
//! subscription would include logmill's own outputs (a kept topic the regex matches is read
//! again and again) and notices new topics only at its metadata refresh (five minutes by
//! default). Instead the topics are listed every `topic_refresh_interval`, matched against the
//! whole name, logmill's own and Kafka's internal topics left out, and the consumer subscribes
//! to that list when it changes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::ServiceError;
use super::rebalance::Ctx;
use crate::config::{Config, consumable, subscription};

pub struct Subscription {
    regex: Option<regex::Regex>,
    topics: BTreeSet<String>,
    every: Duration,
    last: Instant,
    /// How many partitions the input topics have, for the repartition stage's watermark.
    sources: Arc<AtomicUsize>,
}

impl Subscription {
    pub fn new(cfg: &Config, sources: Arc<AtomicUsize>) -> Subscription {
        Subscription {
            regex: cfg
                .topic_regex
                .as_deref()
                .map(|re| subscription(re).expect("checked when the config was read")),
            topics: cfg.topics.iter().chain(repartition(cfg)).cloned().collect(),
            every: cfg.topic_refresh_interval,
            last: Instant::now(),
            sources,
        }
    }

    /// Subscribes for the first time.
    pub fn start(
        &mut self,
        cfg: &Config,
        consumer: &BaseConsumer<Ctx>,
    ) -> Result<(), ServiceError> {
        if self.regex.is_some() {
            self.topics.clear();
            self.refresh(cfg, consumer)?;
            if self.topics.is_empty() {
                tracing::info!(
                    "no topic matches `topic_regex` yet; looking again every {:?}",
                    self.every
                );
            }
            return Ok(());
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        crate::telemetry::subscribed(topics.len());
        if cfg.repartition.is_some() {
            match consumer.fetch_metadata(None, Duration::from_secs(10)) {
                Ok(m) => self.count_sources(cfg, &m),
                Err(e) => tracing::warn!(
                    "listing the input topics' partitions failed ({e}): the repartition stage's watermark does not wait for partitions it has not heard from"
                ),
            }
        }
        Ok(())
    }

    /// Lists the topics again when it is time; resubscribes when the matching set changed.
    pub fn tick(&mut self, cfg: &Config, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        if self.regex.is_none() || self.last.elapsed() < self.every {
            return Ok(());
        }
        self.refresh(cfg, consumer)
    }

    fn refresh(&mut self, cfg: &Config, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        self.last = Instant::now();
        let Some(re) = &self.regex else {
            return Ok(());
        };
        let metadata = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(
                    "listing topics for `topic_regex` failed ({e}); trying again in {:?}",
                    self.every
                );
                return Ok(());
            }
        };
        let now: BTreeSet<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| re.is_match(name) && consumable(cfg, name))
            .map(str::to_string)
            .chain(repartition(cfg).cloned())
            .collect();
        self.count_sources(cfg, &metadata);
        if now == self.topics {
            return Ok(());
        }
        tracing::info!(
            topics = now.iter().cloned().collect::<Vec<_>>().join(","),
            "topics matching `topic_regex` changed: subscribing"
        );
        let list: Vec<&str> = now.iter().map(String::as_str).collect();
        if list.is_empty() {
            consumer.unsubscribe();
        } else {
            consumer.subscribe(&list)?;
        }
        crate::telemetry::subscribed(list.len());
        self.topics = now;
        self.count_sources(cfg, &metadata);
        Ok(())
    }
}

impl Subscription {
    /// Counts the partitions of the input topics (all subscribed topics but the repartition
    /// topic): as many sources may republish trace events.
    fn count_sources(&self, cfg: &Config, metadata: &rdkafka::metadata::Metadata) {
        let n: usize = metadata
            .topics()
            .iter()
            .filter(|t| {
                self.topics.contains(t.name())
                    && Some(t.name()) != repartition(cfg).map(String::as_str)
            })
            .map(|t| t.partitions().len())
            .sum();
        self.sources.store(n, Ordering::Relaxed);
    }
}

/// The repartition topic (`traces.repartition`), which every instance reads beside its inputs.
fn repartition(cfg: &Config) -> Option<&String> {
    cfg.repartition.as_ref().map(|r| &r.topic)
}
