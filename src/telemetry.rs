//! Self-telemetry: every metric logmill reports about itself, named in one place.
//!
//! The hot path counts in plain integers (`engine::Counters`); these functions publish them to
//! the `metrics` facade. Label values come from bounded sets: rule names (bounded by the rule
//! files), metric names, and the reason enums.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::decode::DecodeError;
use crate::engine::Counters;
use crate::rules::Program;

pub const EVENTS_IN: &str = "logmill_events_total";
pub const EVENTS_DECODED: &str = "logmill_events_decoded_total";
pub const DECODE_ERRORS: &str = "logmill_decode_errors_total";
pub const EVENTS_UNWRAPPED: &str = "logmill_events_unwrapped_total";
pub const TRACE_IDS_INVALID: &str = "logmill_trace_ids_invalid_total";
pub const EVENTS_KEPT: &str = "logmill_events_kept_total";
pub const EVENTS_DROPPED: &str = "logmill_events_dropped_total";
pub const EVENTS_DEAD_LETTERED: &str = "logmill_events_dead_lettered_total";
pub const EVENTS_UNMATCHED: &str = "logmill_events_unmatched_total";
pub const RULE_MATCHES: &str = "logmill_rule_matches_total";
/// Events a rule's prefilter let through but that were decoded as another format than the
/// rule's, by that format.
pub const RULE_FORMAT_SKIPS: &str = "logmill_rule_format_skips_total";
pub const VALUE_ERRORS: &str = "logmill_value_errors_total";
pub const MISSING_VALUES: &str = "logmill_missing_values_total";
pub const SERIES_OVERFLOW: &str = "logmill_series_overflow_total";
pub const SERIES: &str = "logmill_series";
pub const TEAM_SERIES: &str = "logmill_team_series";
pub const RULE_QUARANTINES: &str = "logmill_rule_quarantines_total";
/// Estimated from one event in 16 (`Engine::profile_rules_sampled`); microseconds, since the
/// facade's counters are whole numbers.
pub const RULE_CPU: &str = "logmill_rule_cpu_microseconds_total";
pub const RULE_QUARANTINE_SKIPS: &str = "logmill_rule_quarantined_events_total";
pub const TEAM_SERIES_BUDGET: &str = "logmill_team_series_budget";
pub const BATCH_EVAL_SECONDS: &str = "logmill_batch_eval_seconds";
pub const CHECKPOINTS: &str = "logmill_checkpoints_total";
pub const CHECKPOINT_SECONDS: &str = "logmill_checkpoint_seconds";
pub const CHECKPOINT_BYTES: &str = "logmill_checkpoint_bytes";
pub const REBALANCES: &str = "logmill_rebalances_total";
pub const RULES_INFO: &str = "logmill_rules_info";
pub const RULES_RELOAD_FAILURES: &str = "logmill_rules_reload_failures_total";

pub const RULES_VALID: &str = "logmill_rules_valid";
pub const REDUCED_EVENTS: &str = "logmill_reduce_events_total";
pub const REDUCED_BYTES: &str = "logmill_reduce_bytes_total";
pub const REDUCE_SUMMARIES: &str = "logmill_reduce_summaries_total";
pub const REDUCE_EVICTIONS: &str = "logmill_reduce_evictions_total";
pub const RETAINED_TRACES: &str = "logmill_retained_traces_total";
pub const RETENTION_RELEASED: &str = "logmill_retention_released_events_total";
pub const RETENTION_HOLD_MS: &str = "logmill_retention_hold_milliseconds_total";
pub const RETENTION_HELD_BYTES: &str = "logmill_retention_held_bytes";
pub const RETENTION_HELD_EVENTS: &str = "logmill_retention_held_events";
pub const REDUCTION_RATIO: &str = "logmill_reduction_ratio";
pub const REPARTITION_EVENTS: &str = "logmill_repartition_events_total";
pub const CHECKPOINT_FAILURES: &str = "logmill_checkpoint_failures_total";
pub const ROLLBACKS: &str = "logmill_rollbacks_total";
pub const CHECKPOINT_RECORDS_SKIPPED: &str = "logmill_checkpoint_records_skipped_total";
pub const RESTORE_FAILURES: &str = "logmill_checkpoint_restore_failures_total";
pub const RESTORE_SECONDS: &str = "logmill_checkpoint_restore_seconds";
pub const CHECKPOINT_WRITTEN_BYTES: &str = "logmill_checkpoint_written_bytes_total";
pub const STATE_BYTES: &str = "logmill_checkpoint_state_bytes";
pub const OFFSET_RESETS: &str = "logmill_offset_resets_total";
pub const ASSIGNED_PARTITIONS: &str = "logmill_assigned_partitions";
pub const HTTP_ACCEPT_ERRORS: &str = "logmill_http_accept_errors_total";
pub const SUBSCRIBED_TOPICS: &str = "logmill_subscribed_topics";

/// Whether the rule files as they are now compile (0 while an edit has errors and the
/// previous rules keep running).
pub fn rules_valid(files_valid: bool) {
    gauge!(RULES_VALID).set(if files_valid { 1.0 } else { 0.0 });
}

/// The rule set in force, as an info gauge with its hash: one series, the hash now in force
/// (rendered by `Exported`, since the facade cannot drop the replaced hash's series).
pub fn rules_info(hash: u64) -> String {
    format!(
        "# HELP {RULES_INFO} The rule set in force, by the hash of its files.\n# TYPE {RULES_INFO} gauge\n{RULES_INFO}{{hash=\"{hash:016x}\"}} 1\n"
    )
}

/// Records behind the high watermark, for the partitions owned now (rendered by `Exported`:
/// a partition given up leaves at once).
pub fn lag(partitions: &[(String, i32, i64)]) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "# HELP {CONSUMER_LAG} Records behind the high watermark, per owned partition.\n# TYPE {CONSUMER_LAG} gauge\n"
    );
    for (topic, partition, lag) in partitions {
        let _ = writeln!(
            s,
            "{CONSUMER_LAG}{{partition=\"{partition}\",topic=\"{}\"}} {lag}",
            crate::sink::exposition::escape_label(topic)
        );
    }
    s
}

/// A reload found errors and kept the previous rules.
pub fn reload_failed() {
    counter!(RULES_RELOAD_FAILURES).increment(1);
}

/// Why a checkpoint was not written. Bounded: a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFailure {
    /// Kept or dead-lettered records of its events were not delivered.
    OutputsUndelivered,
    /// Outputs not acknowledged in time.
    OutputsTimeout,
    /// Committing the group's offsets failed (a fenced member, or the coordinator).
    CommitOffsets,
    /// The group is rebalancing, or moved on to a generation this member has not joined yet:
    /// offsets cannot be committed until it settles.
    Rebalancing,
    /// Writing to the state topic failed.
    StateWrite,
    /// A write to the state topic whose outcome is not known yet.
    StateUnresolved,
}

impl CheckpointFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointFailure::OutputsUndelivered => "outputs_undelivered",
            CheckpointFailure::OutputsTimeout => "outputs_timeout",
            CheckpointFailure::CommitOffsets => "commit_offsets",
            CheckpointFailure::Rebalancing => "rebalance_in_progress",
            CheckpointFailure::StateWrite => "state_write",
            CheckpointFailure::StateUnresolved => "state_unresolved",
        }
    }
}

pub fn checkpoint_failed(why: CheckpointFailure) {
    counter!(CHECKPOINT_FAILURES, "reason" => why.as_str()).increment(1);
}

pub fn rolled_back() {
    counter!(ROLLBACKS).increment(1);
}

/// A record of the state topic that was not used: `unreadable` (not logmill's, or corrupt) or
/// `foreign_group`.
pub fn checkpoint_record_skipped(reason: &'static str, n: u64) {
    counter!(CHECKPOINT_RECORDS_SKIPPED, "reason" => reason).increment(n);
}

/// This identity's checkpoint could not be restored (`reason`: a bounded word).
pub fn restore_failed(reason: &'static str) {
    counter!(RESTORE_FAILURES, "reason" => reason).increment(1);
}

pub fn restored(took: Duration) {
    histogram!(RESTORE_SECONDS).record(took.as_secs_f64());
}

/// `reason`: `ahead_of_log` (the topic was recreated or truncated) or `behind_log` (records
/// were deleted before they were read).
pub fn offset_reset(reason: &'static str) {
    counter!(OFFSET_RESETS, "reason" => reason).increment(1);
}

pub fn assigned(partitions: usize) {
    gauge!(ASSIGNED_PARTITIONS).set(partitions as f64);
}

pub fn subscribed(topics: usize) {
    gauge!(SUBSCRIBED_TOPICS).set(topics as f64);
}

pub fn accept_failed(e: &std::io::Error) {
    let reason = match e.raw_os_error() {
        Some(24) | Some(23) => "too_many_open_files",
        _ => "other",
    };
    counter!(HTTP_ACCEPT_ERRORS, "reason" => reason).increment(1);
}

pub const BATCHES: &str = "logmill_batches_total";
pub const CONSUMER_LAG: &str = "logmill_consumer_lag";
pub const EVENT_TO_METRIC_SECONDS: &str = "logmill_event_to_metric_latency_seconds";
pub const RESIDENT_BYTES: &str = "logmill_process_resident_memory_bytes";

pub fn batch_merged() {
    counter!(BATCHES).increment(1);
}

/// Resident memory from /proc (Linux); nothing elsewhere.
pub fn process_memory() {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        });
    if let Some(pages) = pages {
        gauge!(RESIDENT_BYTES).set(pages * 4096.0);
    }
}

/// Event-to-metric latency: from an event's Kafka timestamp to the checkpoint that makes its
/// metrics visible. An `hdrhistogram` over the last minute, exported as quantile gauges (one
/// record per event would be too many for the facade).
pub struct Latency {
    hist: hdrhistogram::Histogram<u64>,
    since: std::time::Instant,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            hist: hdrhistogram::Histogram::new(3).expect("3 significant digits is valid"),
            since: std::time::Instant::now(),
        }
    }

    pub fn record(&mut self, now_ms: u64, timestamps: impl Iterator<Item = i64>) {
        if self.since.elapsed() > Duration::from_secs(60) {
            self.hist.reset();
            self.since = std::time::Instant::now();
        }
        for ts in timestamps {
            let _ = self.hist.record((now_ms as i64 - ts).max(0) as u64);
        }
        if !self.hist.is_empty() {
            for q in [0.5, 0.9, 0.99] {
                gauge!(EVENT_TO_METRIC_SECONDS, "quantile" => q.to_string())
                    .set(self.hist.value_at_quantile(q) as f64 / 1000.0);
            }
        }
    }
}

/// A durable checkpoint was written: `kind` is `full` or `delta`, `bytes` what it wrote to
/// the state topic, `state_bytes` what its commit names in all (what a restore reads).
pub fn checkpointed(took: Duration, kind: &'static str, bytes: u64, state_bytes: u64) {
    counter!(CHECKPOINTS, "kind" => kind).increment(1);
    histogram!(CHECKPOINT_SECONDS).record(took.as_secs_f64());
    gauge!(CHECKPOINT_BYTES).set(bytes as f64);
    counter!(CHECKPOINT_WRITTEN_BYTES, "kind" => kind).increment(bytes);
    gauge!(STATE_BYTES).set(state_bytes as f64);
}

/// `kind` is `assign` or `revoke`.
pub fn rebalanced(kind: &'static str) {
    counter!(REBALANCES, "kind" => kind).increment(1);
}

/// How counts reach the facade: the service adds each batch's counts as it goes, replay sets
/// the totals once at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Add,
    Set,
}

fn put(c: metrics::Counter, how: Publish, v: u64) {
    match how {
        Publish::Add => c.increment(v),
        Publish::Set => c.absolute(v),
    }
}

/// Publishes the per-record counters.
pub fn publish(program: &Program, c: &Counters, how: Publish) {
    put(counter!(EVENTS_IN), how, c.events_in);
    for (i, f) in ["json", "logfmt", "text"].iter().enumerate() {
        put(
            counter!(EVENTS_DECODED, "format" => *f),
            how,
            c.by_format[i],
        );
    }
    for e in DecodeError::ALL {
        put(
            counter!(DECODE_ERRORS, "reason" => e.as_str()),
            how,
            c.decode_errors[e as usize],
        );
    }
    for e in crate::decode::envelope::Envelope::ALL {
        if e != crate::decode::envelope::Envelope::None {
            put(
                counter!(EVENTS_UNWRAPPED, "envelope" => e.as_str()),
                how,
                c.by_envelope[e as usize],
            );
        }
    }
    for src in crate::extract::trace::Source::ALL {
        for why in crate::extract::trace::Invalid::ALL {
            let n = c.trace_invalid[src as usize][why as usize];
            // 63 pairs: only those seen, so an exposition without bad ids stays short.
            if n > 0 {
                put(
                    counter!(TRACE_IDS_INVALID, "source" => src.as_str(), "reason" => why.as_str()),
                    how,
                    n,
                );
            }
        }
    }
    put(counter!(EVENTS_KEPT), how, c.kept);
    put(counter!(EVENTS_DROPPED), how, c.dropped);
    put(counter!(EVENTS_DEAD_LETTERED), how, c.dead_lettered);
    put(counter!(EVENTS_UNMATCHED), how, c.unmatched);
    put(counter!(MISSING_VALUES), how, c.missing_values);
    for (r, n) in c.rule_matches.iter().enumerate() {
        if let Some(rule) = program
            .rules
            .get(r)
            .filter(|_| how == Publish::Set || *n > 0)
        {
            put(
                counter!(RULE_MATCHES, "team" => rule.team.clone(), "rule" => rule.name.clone()),
                how,
                *n,
            );
        }
    }
    for (r, skips) in c.format_skips.iter().enumerate() {
        let Some(rule) = program.rules.get(r) else {
            continue;
        };
        for (f, n) in ["json", "logfmt", "text"].iter().zip(skips) {
            // Zeros would be a series per rule and format that says nothing.
            if *n > 0 {
                put(
                    counter!(RULE_FORMAT_SKIPS, "team" => rule.team.clone(), "rule" => rule.name.clone(), "format" => *f),
                    how,
                    *n,
                );
            }
        }
    }
    for (r, e, n) in &c.value_errors {
        if let Some(rule) = program.rules.get(*r as usize) {
            put(
                counter!(VALUE_ERRORS, "rule" => rule.name.clone(), "reason" => e.as_str()),
                how,
                *n,
            );
        }
    }
}

/// Called once per batch by the engine; a no-op until a recorder is installed.
pub fn batch_evaluated(elapsed: Duration) {
    histogram!(BATCH_EVAL_SECONDS).record(elapsed.as_secs_f64());
}

/// Replay's totals, once at the end: the counters plus the registry's overflow and size.
pub fn publish_totals(program: &Program, c: &Counters, aggs: &crate::derive::Aggregates) {
    publish(program, c, Publish::Set);
    publish_registry(program, aggs);
}

/// The registry's size and, per metric, the updates that went to its overflow series.
pub fn publish_registry(program: &Program, aggs: &crate::derive::Aggregates) {
    for (family, state) in program.families.iter().zip(&aggs.families) {
        counter!(SERIES_OVERFLOW, "metric" => family.name.clone()).absolute(state.overflowed);
    }
    gauge!(SERIES).set(aggs.series_count() as f64);
    for (i, t) in program.teams.iter().enumerate() {
        let Some(budget) = t.series_budget else {
            continue;
        };
        let n = aggs.team_series.get(i).copied().unwrap_or(0);
        gauge!(TEAM_SERIES, "team" => t.name.clone()).set(n as f64);
        gauge!(TEAM_SERIES_BUDGET, "team" => t.name.clone()).set(budget as f64);
    }
}

impl Counters {
    /// Adds another worker's counts.
    pub fn absorb(&mut self, o: &Counters) {
        self.events_in += o.events_in;
        self.bytes_in += o.bytes_in;
        self.bytes_kept += o.bytes_kept;
        self.kept += o.kept;
        self.dropped += o.dropped;
        self.dead_lettered += o.dead_lettered;
        self.unmatched += o.unmatched;
        self.missing_values += o.missing_values;
        self.eval_nanos += o.eval_nanos;
        self.decode_errors
            .iter_mut()
            .zip(o.decode_errors)
            .for_each(|(a, b)| *a += b);
        self.by_format
            .iter_mut()
            .zip(o.by_format)
            .for_each(|(a, b)| *a += b);
        self.by_envelope
            .iter_mut()
            .zip(o.by_envelope)
            .for_each(|(a, b)| *a += b);
        for (a, b) in self.trace_invalid.iter_mut().zip(&o.trace_invalid) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        if self.rule_matches.len() < o.rule_matches.len() {
            self.rule_matches.resize(o.rule_matches.len(), 0);
        }
        self.rule_matches
            .iter_mut()
            .zip(&o.rule_matches)
            .for_each(|(a, b)| *a += b);
        if self.format_skips.len() < o.format_skips.len() {
            self.format_skips.resize(o.format_skips.len(), [0; 3]);
        }
        for (a, b) in self.format_skips.iter_mut().zip(&o.format_skips) {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        self.reduction.absorb(&o.reduction);
        for (r, e, n) in &o.value_errors {
            match self
                .value_errors
                .iter_mut()
                .find(|(r2, e2, _)| r2 == r && e2 == e)
            {
                Some((_, _, m)) => *m += n,
                None => self.value_errors.push((*r, *e, *n)),
            }
        }
    }

    pub fn matched(&self) -> u64 {
        self.events_in - self.unmatched - self.decode_errors.iter().sum::<u64>()
    }
}

/// What reduction did in a batch: per rule, events and bytes by outcome (`in`, `kept`,
/// `protected` and each action's suppressions), and per action its summaries and the windows
/// closed early at a cap.
pub fn publish_reduction(program: &Program, r: &crate::reduce::Reduction) {
    use crate::reduce::Action;
    for (rule, c) in program.rules.iter().zip(&r.rules) {
        if c.events_in == 0 {
            continue;
        }
        let labels = |outcome: &'static str| {
            [
                ("team", rule.team.clone()),
                ("rule", rule.name.clone()),
                ("outcome", outcome.to_string()),
            ]
        };
        counter!(REDUCED_EVENTS, &labels("in")).increment(c.events_in);
        counter!(REDUCED_BYTES, &labels("in")).increment(c.bytes_in);
        counter!(REDUCED_EVENTS, &labels("kept")).increment(c.events_out);
        counter!(REDUCED_BYTES, &labels("kept")).increment(c.bytes_out);
        if c.protected > 0 {
            counter!(REDUCED_EVENTS, &labels("protected")).increment(c.protected);
        }
        for a in Action::ALL {
            let (n, b) = (c.suppressed[a as usize], c.suppressed_bytes[a as usize]);
            if n > 0 {
                counter!(REDUCED_EVENTS, &labels(a.as_str())).increment(n);
                counter!(REDUCED_BYTES, &labels(a.as_str())).increment(b);
            }
        }
    }
    for a in Action::ALL {
        let (s, e) = (r.summaries[a as usize], r.evictions[a as usize]);
        if s > 0 {
            counter!(REDUCE_SUMMARIES, "action" => a.as_str()).increment(s);
        }
        if e > 0 {
            counter!(REDUCE_EVICTIONS, "action" => a.as_str()).increment(e);
        }
    }
    let t = &r.retain;
    if t.decided() > 0 {
        for (decision, n) in [("kept", t.kept), ("dropped", t.dropped), ("early", t.early)] {
            if n > 0 {
                counter!(RETAINED_TRACES, "decision" => decision).increment(n);
            }
        }
        counter!(RETENTION_RELEASED).increment(t.released);
        // Event time held, summed over decided traces: with the decisions, the mean hold.
        counter!(RETENTION_HOLD_MS).increment(t.hold_ms);
    }
}

/// A rule went over its team's CPU budget and is not evaluated for a while.
pub fn rule_quarantined(team: &str, rule: &str) {
    counter!(RULE_QUARANTINES, "team" => team.to_string(), "rule" => rule.to_string()).increment(1);
}

/// CPU each rule took, per rule of `program` (nanoseconds, estimated); what is under a
/// microsecond is carried to the next call.
pub fn rule_cpu(program: &Program, nanos: &mut [u64]) {
    for (rule, n) in program.rules.iter().zip(nanos) {
        if *n >= 1000 {
            counter!(RULE_CPU, "team" => rule.team.clone(), "rule" => rule.name.clone())
                .increment(*n / 1000);
            *n %= 1000;
        }
    }
}

/// Events a quarantined rule would have been tried on.
pub fn rule_quarantine_skips(team: &str, rule: &str, n: u64) {
    counter!(RULE_QUARANTINE_SKIPS, "team" => team.to_string(), "rule" => rule.to_string())
        .increment(n);
}

/// What a worker's partitions hold for `keep_traces` changed by this much.
pub fn retention_held(bytes: i64, events: i64) {
    if bytes != 0 {
        gauge!(RETENTION_HELD_BYTES).increment(bytes as f64);
    }
    if events != 0 {
        gauge!(RETENTION_HELD_EVENTS).increment(events as f64);
    }
}

/// Trace events through the repartition stage, by `outcome`: `published` (republished by the
/// partition that read them), `admitted`, `duplicate` (a replay dropped by its source
/// position), `late` (admitted after the watermark passed its window), `malformed`.
pub fn repartition(outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(REPARTITION_EVENTS, "outcome" => outcome).increment(n);
    }
}

/// The share of events and bytes read that do not leave as logs (dropped by `then: drop` or
/// by reduction), since the start.
pub fn reduction_ratio(c: &Counters) {
    let suppressed: u64 = c
        .reduction
        .rules
        .iter()
        .map(|r| r.suppressed.iter().sum::<u64>())
        .sum();
    let suppressed_bytes: u64 = c
        .reduction
        .rules
        .iter()
        .map(|r| r.suppressed_bytes.iter().sum::<u64>())
        .sum();
    let ratio = |out: u64, inn: u64| {
        if inn == 0 {
            0.0
        } else {
            1.0 - out as f64 / inn as f64
        }
    };
    gauge!(REDUCTION_RATIO, "unit" => "events")
        .set(ratio(c.kept.saturating_sub(suppressed), c.events_in));
    gauge!(REDUCTION_RATIO, "unit" => "bytes").set(ratio(
        c.bytes_kept.saturating_sub(suppressed_bytes),
        c.bytes_in,
    ));
}
