//! Checkpointing: cutting a consistent state, waiting for its outputs, writing it to the state
//! topic as chunks and a commit, publishing it; rolling back when its outputs were lost; and
//! restoring it at start. The protocol and its failure cases are in ARCHITECTURE.md,
//! "Delivery".
//!
//! Two rules shape the code. **Nothing is exported that no durable checkpoint holds**, in
//! either delivery mode. And **once a commit record is sent, the instance never rolls back
//! past it**: a commit whose acknowledgement did not come may still land, so it is resolved by
//! reading the state topic back (or superseded by the next one), never assumed lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::coordinator::Coordinator;
use super::partitions::{Carried, Partitions};
use super::rebalance::Ctx;
use super::state::{CatchUp, StateStore, WriteError};
use super::worker::Job;
use super::{ServiceError, now_ms};
use crate::checkpoint::manifest::PartitionState;
use crate::checkpoint::{BlobRef, Commit, Intent, PartitionEntry, PartitionKey, keys};
use crate::config::{Config, Delivery};
use crate::derive::{Aggregates, Changes, snapshot};
use crate::rules::Program;
use crate::telemetry::CheckpointFailure;

/// How long a waiting checkpoint gives the outputs to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A full snapshot is written when the incremental ones since the last one add up to more
/// than it, but not for less than this: small states are cheap to rewrite.
const MIN_FULL_BYTES: u64 = 64 * 1024;

/// The checkpoint bookkeeping: the state topic, what this identity's last commit names, and
/// the checkpoint in progress.
pub struct Checkpoints {
    pub store: StateStore,
    /// The sequence number of the next attempt; every attempt takes one, failed ones too.
    pub seq: u64,
    /// The blobs the last commit names: the full snapshot and the incremental ones since.
    pub base: Option<BlobRef>,
    pub deltas: Vec<BlobRef>,
    /// The next checkpoint writes a full snapshot (after a reload, or a failed restore).
    pub needs_full: bool,
    /// Chunk keys no commit will name: tombstoned after the next successful commit.
    pub garbage: Vec<(i32, String)>,
    pub cut: Option<Cut>,
    /// A commit record sent without an answer: until it is known whether it landed, nothing
    /// rolls back and no new checkpoint is cut.
    pub unresolved: Option<(Cut, Commit, Written)>,
    /// When the last checkpoint was attempted.
    pub last: Instant,
    /// The entries of the last commit, to skip writing one that would say the same.
    last_entries: Vec<PartitionEntry>,
    /// Whether this identity's own last commit is usable: if it could not be restored, its
    /// partition entries are not trusted either.
    pub restored: bool,
    /// Reduction states taken at a barrier whose checkpoint was not written: the next one
    /// writes them (the workers only answer with what changed since).
    pub unwritten: BTreeMap<PartitionKey, Vec<u8>>,
    /// Since when every checkpoint has waited for the group to finish a rebalance.
    pub rebalancing_since: Option<Instant>,
}

/// A checkpoint cut and not yet written: the changes since the last one (and the whole state
/// when this one is full), and where each partition stood.
pub struct Cut {
    started: Instant,
    /// The event clock at the cut.
    clock: u64,
    program: Arc<Program>,
    changes: Changes,
    full: Option<Vec<u8>>,
    entries: Vec<PartitionEntry>,
    /// The reduction states of the partitions that changed since the last checkpoint.
    states: BTreeMap<PartitionKey, Vec<u8>>,
    timestamps: Vec<i64>,
}

/// What a checkpoint wrote: the aggregates' blob (when they changed), the partition entries
/// with their reduction states' blobs, and the bytes.
pub struct Written {
    /// The attempt's sequence number: its blobs have it.
    seq: u64,
    aggregates: Option<BlobRef>,
    entries: Vec<PartitionEntry>,
    bytes: u64,
}

/// Why a checkpoint was not written, and whether it may have been all the same.
#[derive(Debug)]
pub struct Failure {
    pub why: CheckpointFailure,
    pub detail: String,
    /// A commit record was sent and not answered: it may have landed.
    pub ambiguous: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.why.as_str(), self.detail)
    }
}

/// How long a group's rebalance may hold checkpoints back before it counts as a failure
/// (and the instance stops being ready): a rebalance takes a few seconds, but up to the
/// session timeout of a member that left without a word, and more on a loaded broker.
const REBALANCE_GRACE: Duration = Duration::from_secs(60);

fn failure(why: CheckpointFailure, detail: impl ToString) -> Failure {
    Failure {
        why,
        detail: detail.to_string(),
        ambiguous: false,
    }
}

/// Reports what a catch-up skipped: records it could not read, and other groups' records.
pub fn report_catch_up(store: &StateStore, report: &CatchUp) {
    for what in &report.unreadable {
        tracing::error!(
            topic = %store.topic,
            "skipping a state record that is not a readable logmill checkpoint ({what})"
        );
    }
    crate::telemetry::checkpoint_record_skipped("unreadable", report.unreadable.len() as u64);
    if report.foreign > 0 {
        crate::telemetry::checkpoint_record_skipped("foreign_group", report.foreign);
        let groups: Vec<&str> = store.directory.foreign.keys().map(String::as_str).collect();
        tracing::warn!(
            topic = %store.topic,
            "the state topic also holds checkpoints of other consumer groups ({}); they are ignored: give each group its own state topic",
            groups.join(", ")
        );
    }
}

impl Checkpoints {
    /// Restores this identity's last checkpoint from what the state topic says: the exported
    /// aggregates, and every partition it recorded as released until it is assigned again.
    pub fn restore(
        store: StateStore,
        cfg: &Config,
        instance: &str,
        program: &Program,
    ) -> Result<(Checkpoints, Aggregates, Partitions), ServiceError> {
        let mut c = Checkpoints {
            store,
            seq: 1,
            base: None,
            deltas: Vec::new(),
            needs_full: true,
            garbage: Vec::new(),
            cut: None,
            unresolved: None,
            last: Instant::now(),
            last_entries: Vec::new(),
            restored: true,
            unwritten: BTreeMap::new(),
            rebalancing_since: None,
        };
        let mut pending = Aggregates::new(program);
        let mut partitions = Partitions::default();
        let commit = c.store.directory.commit_of(instance).cloned();
        let intent = c.store.directory.intent_of(instance).cloned();
        let committed_seq = commit.as_ref().map_or(0, |c| c.seq);
        // Decoding refuses sequence numbers near the end of the range, so this cannot wrap.
        c.seq = committed_seq.max(intent.as_ref().map_or(0, |i| i.seq)) + 1;
        // Chunks of an attempt whose commit never came: nothing names them.
        if let Some(i) = intent.filter(|i| i.seq > committed_seq) {
            c.garbage
                .extend(i.keys.into_iter().map(|k| (c.store.chunk_partition, k)));
        }
        c.collect_abandoned(&cfg.group_id, instance);
        let Some(commit) = commit else {
            return Ok((c, pending, partitions));
        };
        let started = Instant::now();
        match c.load(program, &commit) {
            Ok(aggs) => {
                pending = aggs;
                c.base = commit.base.clone();
                c.deltas = commit.deltas.clone();
                c.needs_full = c.base.is_none();
                for mut e in commit.partitions.clone() {
                    // Until they are assigned again, every partition of the last checkpoint is
                    // released: its offset must outlive this identity's next checkpoints.
                    e.owned = false;
                    partitions.released.insert(e.key.clone(), e);
                }
                crate::telemetry::restored(started.elapsed());
                tracing::info!(
                    series = pending.series_count(),
                    deltas = commit.deltas.len(),
                    bytes = commit.blobs().map(BlobRef::stored_bytes).sum::<u64>(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "restored the last checkpoint"
                );
            }
            Err(e) => {
                crate::telemetry::restore_failed("unreadable");
                tracing::error!(
                    instance,
                    seq = commit.seq,
                    "the last checkpoint cannot be restored ({e}): starting from empty values; its partitions resume where other identities' checkpoints say, or at the start of their logs"
                );
                c.restored = false;
            }
        }
        Ok((c, pending, partitions))
    }

    /// The aggregates a commit names: its full snapshot and every incremental one after it.
    fn load(&self, program: &Program, commit: &Commit) -> Result<Aggregates, ServiceError> {
        let mut aggs = Aggregates::new(program);
        for b in commit.base.iter().chain(&commit.deltas) {
            let raw = self.store.fetch(b)?;
            snapshot::restore(program, &raw, &mut aggs)
                .map_err(|e| ServiceError::Snapshot(b.name.clone(), e))?;
        }
        Ok(aggs)
    }

    /// Anonymous identities nobody can resume, whose partitions have all moved on: their
    /// records are removed (issue 10: they accumulated, one per start).
    fn collect_abandoned(&mut self, group: &str, me: &str) {
        let mut keys = Vec::new();
        for c in self.store.directory.abandoned(me) {
            keys.push((
                self.store.commit_partition,
                keys::commit(group, &c.instance),
            ));
            keys.push((
                self.store.commit_partition,
                keys::intent(group, &c.instance),
            ));
            for b in c.blobs() {
                for n in 0..b.chunks.len() {
                    keys.push((
                        b.partition,
                        keys::chunk(group, &c.instance, b.seq, &b.name, n),
                    ));
                }
            }
        }
        if !keys.is_empty() {
            tracing::info!(
                records = keys.len(),
                "removing the checkpoints of finished anonymous instances"
            );
            self.store.tombstone(&keys);
        }
    }
}

impl Coordinator {
    /// Cuts a checkpoint without stopping: a barrier goes to the workers, and when they have
    /// all answered (`Coordinator::collect`) the changes, offsets and reduction states stand
    /// at it; the cut is written once the outputs of its events are acknowledged
    /// (`advance_checkpoint`) while consumption goes on. One cut at a time.
    pub(super) fn cut(&mut self) {
        if self.checkpoints.cut.is_some()
            || self.checkpoints.unresolved.is_some()
            || self.barrier_in_progress()
        {
            return;
        }
        self.start_barrier();
    }

    /// The state as it is at a barrier, with the reduction states the workers answered: series
    /// idle past `expire_after` (in event time) leave first.
    pub(super) fn take_cut(&mut self, states: Vec<(PartitionKey, Vec<u8>)>) -> Cut {
        // States of an abandoned cut are still to be written; newer ones replace them.
        let mut all = std::mem::take(&mut self.checkpoints.unwritten);
        all.extend(states);
        let clock = self.partitions.clock();
        if clock > 0 {
            self.pending.expire(&self.program, clock);
        }
        let c = &self.checkpoints;
        let stored: u64 = c.deltas.iter().map(BlobRef::stored_bytes).sum();
        let base = c.base.as_ref().map_or(0, BlobRef::stored_bytes);
        let full = c.needs_full
            || c.base.is_none()
            || c.deltas.len() >= self.cfg.max_deltas
            || stored > base.max(MIN_FULL_BYTES);
        // Only the partitions still owned: a state of one since revoked went with it.
        all.retain(|k, _| self.partitions.owned.contains_key(k));
        Cut {
            started: Instant::now(),
            clock,
            program: Arc::clone(&self.program),
            changes: self.pending.take_changes(),
            full: full.then(|| snapshot::encode(&self.program, &self.pending, clock)),
            entries: self.partitions.entries(),
            states: all,
            timestamps: std::mem::take(&mut self.timestamps),
        }
    }

    /// Gives a cut's changes back to the live state, for the next checkpoint to carry.
    pub(super) fn abandon(&mut self, cut: Cut) {
        self.pending.unmark_failed(cut.changes);
        for (k, v) in cut.states {
            self.checkpoints.unwritten.entry(k).or_insert(v);
        }
    }

    /// Writes the cut checkpoint once its outputs are settled. A cut whose outputs were lost
    /// is dropped and the instance rolls back to the last checkpoint; any other failure is
    /// counted and retried at the next interval. `Err` only when the service cannot go on.
    pub(super) fn advance_checkpoint(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
    ) -> Result<(), ServiceError> {
        if self.checkpoints.unresolved.is_some() {
            if self.checkpoints.last.elapsed() >= self.cfg.checkpoint_interval {
                self.checkpoints.last = Instant::now();
                if let Err(f) = self.resolve(Duration::from_secs(2)) {
                    self.failed(&f);
                }
            }
            return Ok(());
        }
        if self.checkpoints.cut.is_none() || !self.outputs.settled() {
            return Ok(());
        }
        let cut = self.checkpoints.cut.take().expect("checked above");
        self.checkpoints.last = Instant::now();
        if let Some(lost) = self.outputs.undelivered(true) {
            self.abandon(cut);
            let f = failure(
                CheckpointFailure::OutputsUndelivered,
                format!(
                    "{} kept or dead-lettered record(s) were not delivered ({})",
                    lost.count, lost.last_error
                ),
            );
            self.failed(&f);
            self.rollback(consumer)?;
            tracing::warn!("records were not delivered: rolled back to the last checkpoint");
            return Ok(());
        }
        if let Err(f) = self.write(consumer, cut) {
            self.failed(&f);
        }
        Ok(())
    }

    /// Makes everything processed so far durable, then exports it, waiting for it: on
    /// revocation, reload and shutdown. A failed state write is retried until `deadline`.
    /// `Err` leaves the exported values as they were: they never show what a checkpoint does
    /// not hold.
    pub(super) fn checkpoint_now(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        deadline: Instant,
    ) -> Result<(), Failure> {
        // A barrier or cut in flight is covered by this checkpoint.
        self.wait_idle();
        if let Some(cut) = self.checkpoints.cut.take() {
            self.abandon(cut);
        }
        while self.checkpoints.unresolved.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.resolve(left.max(Duration::from_millis(100))) {
                Ok(()) => {}
                Err(f) if Instant::now() >= deadline => return Err(f),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        self.start_barrier();
        self.wait_idle();
        if let Some(cut) = self.checkpoints.cut.take() {
            self.abandon(cut);
        }
        let flush = deadline
            .saturating_duration_since(Instant::now())
            .min(FLUSH_TIMEOUT);
        if let Err(e) = self.outputs.flush(flush) {
            return Err(failure(CheckpointFailure::OutputsTimeout, e));
        }
        if let Some(lost) = self.outputs.undelivered(false) {
            return Err(failure(
                CheckpointFailure::OutputsUndelivered,
                format!("{} record(s) ({})", lost.count, lost.last_error),
            ));
        }
        loop {
            // Nothing is in flight: the cut is what was merged, and the states abandoned above.
            let cut = self.take_cut(Vec::new());
            self.checkpoints.last = Instant::now();
            match self.write(consumer, cut) {
                Ok(()) => return Ok(()),
                Err(f) if f.ambiguous => {
                    // Learn whether it landed. Either way the next turn writes what is not
                    // durable yet: nothing, when it did.
                    while self.checkpoints.unresolved.is_some() && Instant::now() < deadline {
                        if self.resolve(Duration::from_secs(2)).is_err() {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                    if self.checkpoints.unresolved.is_some() {
                        return Err(f);
                    }
                }
                Err(f) if f.why == CheckpointFailure::StateWrite && Instant::now() < deadline => {
                    tracing::info!("checkpoint not written ({f}); trying again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// The chunk keys of a blob this identity wrote.
    fn chunk_keys(&self, b: &BlobRef) -> Vec<(i32, String)> {
        (0..b.chunks.len())
            .map(|n| {
                (
                    b.partition,
                    keys::chunk(&self.cfg.group_id, &self.instance, b.seq, &b.name, n),
                )
            })
            .collect()
    }

    /// Steps 3 to 5 of the protocol (ARCHITECTURE.md, "Delivery"), once the outputs of the
    /// cut's events are acknowledged: commit the group's offsets, write the chunks (after an
    /// intent naming them) of the aggregates' snapshot and of each changed partition's
    /// reduction state, write the commit naming them, publish.
    fn write(&mut self, consumer: &BaseConsumer<Ctx>, cut: Cut) -> Result<(), Failure> {
        // Committing first fences a zombie: a member that lost its partitions fails here and
        // writes no checkpoint for them.
        let mut tpl = TopicPartitionList::new();
        for e in cut.entries.iter().filter(|e| e.owned) {
            let _ = tpl.add_partition_offset(&e.key.topic, e.key.partition, Offset::Offset(e.next));
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        {
            self.abandon(cut);
            // Refused because the group is rebalancing, or has moved on to a generation this
            // member has not joined yet (librdkafka rejoins at once): the symptoms of a member
            // joining or leaving, given the same grace.
            let why = match e.rdkafka_error_code() {
                Some(
                    rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                    | rdkafka::types::RDKafkaErrorCode::IllegalGeneration,
                ) => CheckpointFailure::Rebalancing,
                _ => CheckpointFailure::CommitOffsets,
            };
            return Err(failure(why, e));
        }
        let aggregates_changed = cut.full.is_some()
            || cut.changes.series() > 0
            || cut.changes.families.iter().any(|f| f.overflowed.is_some());
        // Nothing changed since the last commit: it still says everything.
        if !aggregates_changed
            && cut.states.is_empty()
            && cut.entries == self.checkpoints.last_entries
        {
            let entries = cut.entries.clone();
            let seq = self.checkpoints.seq;
            self.succeeded(
                cut,
                Written {
                    seq,
                    aggregates: None,
                    entries,
                    bytes: 0,
                },
            );
            return Ok(());
        }
        let seq = self.checkpoints.seq;
        self.checkpoints.seq = seq.saturating_add(1);
        // The blobs: the aggregates' (full or changes), then each changed partition's state.
        let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
        if aggregates_changed {
            blobs.push(match &cut.full {
                Some(full) => ("base".to_string(), full.clone()),
                None => (
                    "delta".to_string(),
                    snapshot::encode_changes(&cut.program, &cut.changes, cut.clock),
                ),
            });
        }
        for (k, state) in &cut.states {
            blobs.push((format!("r/{}/{}", k.topic, k.partition), state.clone()));
        }
        let store = &self.checkpoints.store;
        let group = &self.cfg.group_id;
        let mut records: Vec<(i32, String, Vec<u8>)> = Vec::new();
        let mut shapes: Vec<(String, usize, u64)> = Vec::new();
        for (name, raw) in &blobs {
            let pieces = crate::checkpoint::blob::split(raw, store.chunk_bytes);
            shapes.push((name.clone(), pieces.len(), raw.len() as u64));
            for (n, p) in pieces.into_iter().enumerate() {
                records.push((
                    store.chunk_partition,
                    keys::chunk(group, &self.instance, seq, name, n),
                    p,
                ));
            }
        }
        let intent = Intent {
            seq,
            keys: records.iter().map(|(_, k, _)| k.clone()).collect(),
        };
        let intent_bytes = intent.encode();
        let state_write = |e: WriteError| failure(CheckpointFailure::StateWrite, e);
        if let Err(e) = store.write(&[(
            store.commit_partition,
            keys::intent(group, &self.instance),
            Some(&intent_bytes),
        )]) {
            self.abandon(cut);
            return Err(state_write(e));
        }
        let sends: Vec<(i32, String, Option<&[u8]>)> = records
            .iter()
            .map(|(p, k, v)| (*p, k.clone(), Some(v.as_slice())))
            .collect();
        let offsets = match store.write(&sends) {
            Ok(o) => o,
            Err(e) => {
                self.checkpoints
                    .garbage
                    .extend(records.into_iter().map(|(p, k, _)| (p, k)));
                self.abandon(cut);
                return Err(state_write(e));
            }
        };
        let mut refs: Vec<BlobRef> = Vec::new();
        let mut at = 0;
        for (name, n, raw_len) in shapes {
            let chunks = records[at..at + n]
                .iter()
                .zip(&offsets[at..at + n])
                .map(|((_, _, p), offset)| crate::checkpoint::ChunkRef {
                    offset: *offset,
                    len: p.len() as u32,
                    crc: crate::checkpoint::blob::checksum(p),
                })
                .collect();
            refs.push(BlobRef {
                seq,
                name,
                partition: store.chunk_partition,
                chunks,
                raw_len,
            });
            at += n;
        }
        let bytes: u64 = refs.iter().map(BlobRef::stored_bytes).sum();
        let aggregates = aggregates_changed.then(|| refs.remove(0));
        let mut entries = cut.entries.clone();
        for (k, b) in cut.states.keys().zip(refs) {
            if let Some(e) = entries.iter_mut().find(|e| &e.key == k) {
                e.reduce = Some(b);
            }
        }
        let (base, deltas) = match &aggregates {
            Some(b) if cut.full.is_some() => (Some(b.clone()), Vec::new()),
            Some(b) => {
                let mut d = self.checkpoints.deltas.clone();
                d.push(b.clone());
                (self.checkpoints.base.clone(), d)
            }
            None => (
                self.checkpoints.base.clone(),
                self.checkpoints.deltas.clone(),
            ),
        };
        let commit = Commit {
            group: group.clone(),
            instance: self.instance.clone(),
            anonymous: self.cfg.instance_id.is_none(),
            seq,
            at_ms: now_ms(),
            subscription: self.subscription(),
            rules_hash: cut.program.hash,
            base,
            deltas,
            partitions: entries.clone(),
        };
        let written = Written {
            seq,
            aggregates,
            entries,
            bytes,
        };
        let commit_bytes = commit.encode();
        match store.write(&[(
            store.commit_partition,
            keys::commit(group, &self.instance),
            Some(&commit_bytes),
        )]) {
            Ok(_) => {
                self.checkpoints.store.directory.committed(commit);
                self.succeeded(cut, written);
                Ok(())
            }
            Err(e) if e.ambiguous => {
                let f = Failure {
                    why: CheckpointFailure::StateUnresolved,
                    detail: format!(
                        "the commit record got no answer ({}); reading the state topic back",
                        e.error
                    ),
                    ambiguous: true,
                };
                self.checkpoints.unresolved = Some((cut, commit, written));
                Err(f)
            }
            Err(e) => {
                let garbage = self.written_keys(&written);
                self.checkpoints.garbage.extend(garbage);
                self.abandon(cut);
                Err(state_write(e))
            }
        }
    }

    /// The chunk keys of the blobs a checkpoint attempt wrote (those of its sequence number).
    fn written_keys(&self, w: &Written) -> Vec<(i32, String)> {
        w.aggregates
            .iter()
            .chain(w.entries.iter().filter_map(|e| e.reduce.as_ref()))
            .filter(|b| b.seq == w.seq)
            .flat_map(|b| self.chunk_keys(b))
            .collect()
    }

    /// Reads the state topic back to learn whether an unanswered commit landed.
    fn resolve(&mut self, timeout: Duration) -> Result<(), Failure> {
        let Some((_, commit, _)) = &self.checkpoints.unresolved else {
            return Ok(());
        };
        let seq = commit.seq;
        if let Err(e) = self.checkpoints.store.catch_up(timeout) {
            return Err(Failure {
                why: CheckpointFailure::StateUnresolved,
                detail: format!("cannot read the state topic back: {e}"),
                ambiguous: true,
            });
        }
        let (cut, commit, written) = self.checkpoints.unresolved.take().expect("checked above");
        let landed = self
            .checkpoints
            .store
            .directory
            .commit_of(&self.instance)
            .is_some_and(|c| c.seq == seq);
        if landed {
            tracing::info!(seq, "the unanswered checkpoint did land");
            self.succeeded(cut, written);
            return Ok(());
        }
        tracing::info!(
            seq,
            "the unanswered checkpoint did not land; the next one carries its changes"
        );
        let garbage = self.written_keys(&written);
        self.checkpoints.garbage.extend(garbage);
        drop(commit);
        self.abandon(cut);
        Ok(())
    }

    /// Step 5, and the bookkeeping of a durable checkpoint.
    fn succeeded(&mut self, cut: Cut, written: Written) {
        self.exported.apply(&cut.program, &cut.changes);
        // Reduction states the new commit replaced are no longer named.
        let mut garbage = Vec::new();
        for e in written.entries.iter().filter(|e| e.owned) {
            let old = self
                .partitions
                .owned
                .get(&e.key)
                .filter(|o| o.reduce_ours)
                .and_then(|o| o.reduce.as_ref());
            if let (Some(old), Some(new)) = (old, &e.reduce)
                && old != new
            {
                garbage.extend(self.chunk_keys(old));
            }
        }
        if let (Some(_), true) = (&written.aggregates, cut.full.is_some()) {
            let c = &self.checkpoints;
            for old in c.base.iter().chain(&c.deltas) {
                garbage.extend(self.chunk_keys(old));
            }
        }
        let c = &mut self.checkpoints;
        c.garbage.extend(garbage);
        if let Some(blob) = written.aggregates {
            if cut.full.is_some() {
                c.base = Some(blob);
                c.deltas.clear();
                c.needs_full = false;
            } else {
                c.deltas.push(blob);
            }
        }
        self.partitions.committed(&written.entries);
        // A released partition another identity has checkpointed further is no longer this
        // identity's to speak for; its state's chunks go.
        let directory = &c.store.directory;
        let gone: Vec<PartitionEntry> = self
            .partitions
            .released
            .values()
            .filter(|e| directory.superseded(&self.instance, e))
            .cloned()
            .collect();
        for e in &gone {
            self.partitions.released.remove(&e.key);
        }
        let mut more = Vec::new();
        for b in gone.iter().filter_map(|e| e.reduce.as_ref()) {
            more.extend(self.chunk_keys(b));
        }
        let c = &mut self.checkpoints;
        c.garbage.extend(more);
        c.last_entries = written.entries;
        let garbage = std::mem::take(&mut c.garbage);
        c.store.tombstone(&garbage);
        let now = now_ms();
        self.exported
            .last_checkpoint_ms
            .store(now, Ordering::Relaxed);
        self.exported.failed_checkpoints.store(0, Ordering::Relaxed);
        c.rebalancing_since = None;
        self.latency.record(now, cut.timestamps.into_iter());
        let state_bytes: u64 = c
            .base
            .iter()
            .chain(&c.deltas)
            .map(BlobRef::stored_bytes)
            .sum();
        let kind = if cut.full.is_some() { "full" } else { "delta" };
        crate::telemetry::publish_registry(&self.program, &self.pending);
        crate::telemetry::process_memory();
        crate::telemetry::checkpointed(cut.started.elapsed(), kind, written.bytes, state_bytes);
    }

    /// Counts a failed checkpoint, and says so loudly once it keeps failing. A commit refused
    /// because the group is rebalancing is what a member joining or leaving looks like: it
    /// counts as a failure only once the rebalance outlasts [`REBALANCE_GRACE`].
    pub(super) fn failed(&mut self, f: &Failure) {
        crate::telemetry::checkpoint_failed(f.why);
        if f.why == CheckpointFailure::Rebalancing {
            let since = *self
                .checkpoints
                .rebalancing_since
                .get_or_insert_with(Instant::now);
            if since.elapsed() < REBALANCE_GRACE {
                tracing::info!("checkpoint waits for the group's rebalance: {f}");
                return;
            }
        }
        let n = self
            .exported
            .failed_checkpoints
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        *self
            .exported
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = f.to_string();
        let advice = match f.why {
            CheckpointFailure::OutputsUndelivered | CheckpointFailure::OutputsTimeout => {
                "check the brokers of the kept and dead-letter topics"
            }
            CheckpointFailure::CommitOffsets => {
                "check the group coordinator (this instance may have lost its partitions)"
            }
            CheckpointFailure::Rebalancing => {
                "the group has been rebalancing for long: check for members that join and leave in a loop (crashes, `max.poll.interval.ms`)"
            }
            CheckpointFailure::StateWrite | CheckpointFailure::StateUnresolved => {
                "check the state topic: its brokers, and that `delivery.chunk_bytes` is under its `max.message.bytes`"
            }
        };
        if n == crate::sink::http::FAILURES_BEFORE_NOT_READY {
            tracing::error!(
                failures = n,
                "checkpoints keep failing ({f}): not ready until one succeeds; {advice}"
            );
        } else {
            tracing::info!(failures = n, "checkpoint failed, will retry: {f}");
        }
    }

    /// Returns to the last checkpoint: its values, and its offsets for the partitions kept
    /// (they are read again from there). Used when outputs were lost, and when a checkpoint
    /// cannot be written before partitions move on. Under `at_least_once` the values stay:
    /// counting the replayed events again is the over-count that mode allows. `Err` when a
    /// partition cannot be rewound: then the process must restart from its checkpoint.
    pub(super) fn rollback(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), ServiceError> {
        debug_assert!(self.checkpoints.unresolved.is_none());
        self.drop_batches();
        // Batches in flight are read again too: let them land, then forget them.
        self.wait_idle();
        self.checkpoints.cut = None;
        self.checkpoints.unwritten.clear();
        self.timestamps.clear();
        if self.cfg.delivery == Delivery::ExactlyOnce {
            let shown = self.exported.current();
            self.pending = shown.aggs.clone();
            self.pending.mark_clean();
        } else {
            // The values stay, and so do their changes: the next checkpoint writes them.
        }
        self.outputs.forget_losses();
        // Each partition's reduction goes back to its state at the last checkpoint, so that
        // what is read again is decided again the same way.
        let owned: Vec<(PartitionKey, usize, Option<BlobRef>, i64)> = self
            .partitions
            .owned
            .iter()
            .map(|(k, o)| (k.clone(), o.worker, o.reduce.clone(), o.committed_next))
            .collect();
        // Held events of open traces are read again from where the oldest starts.
        let mut retained: Vec<(PartitionKey, i64)> = Vec::new();
        for (key, worker, blob, counted) in owned {
            let state = match blob {
                Some(b) => Some(self.checkpoints.store.fetch(&b).map_err(|e| {
                    ServiceError::Fatal(format!(
                        "cannot read back the reduction state of {key} ({e}): restarting from the last checkpoint"
                    ))
                })?),
                None => None,
            };
            if let Some(from) = state
                .as_deref()
                .and_then(super::partition_state::PartitionState::retain_from)
            {
                retained.push((key.clone(), from));
            }
            self.send(
                worker,
                Job::Load {
                    key,
                    state,
                    counted,
                },
            );
        }
        for (key, mut off) in self.partitions.roll_back() {
            if let Some((_, from)) = retained.iter().find(|(k, _)| *k == key) {
                off = off.min(*from);
            }
            let mut attempt = 0;
            while let Err(e) = consumer.seek(
                &key.topic,
                key.partition,
                Offset::Offset(off),
                Duration::from_secs(5),
            ) {
                attempt += 1;
                if attempt >= 3 {
                    return Err(ServiceError::Fatal(format!(
                        "cannot rewind {key} to offset {off} ({e}): restarting from the last checkpoint"
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        crate::telemetry::rolled_back();
        Ok(())
    }

    fn subscription(&self) -> String {
        match &self.cfg.topic_regex {
            Some(re) => format!("regex:{re}"),
            None => self.cfg.topics.join(","),
        }
    }
}

/// The state a partition's entry carries, read back for its next owner.
pub fn carried(store: &StateStore, entry: &PartitionEntry) -> Result<Carried, String> {
    match &entry.state {
        PartitionState::None => Ok(Carried::default()),
        PartitionState::Inline(b) => Carried::decode(b).map_err(|e| e.to_string()),
        PartitionState::Blob(b) => {
            let raw = store.fetch(b).map_err(|e| e.to_string())?;
            Carried::decode(&raw).map_err(|e| e.to_string())
        }
    }
}

/// Tells the consumer where an assigned partition starts.
pub fn start_at(
    tpl: &mut TopicPartitionList,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), ServiceError> {
    tpl.set_partition_offset(topic, partition, Offset::Offset(offset))?;
    Ok(())
}

/// The low and high watermarks of a partition, asked a few times before giving up.
pub fn watermarks(
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), ServiceError> {
    let mut attempt = 0;
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => return Ok(w),
            Err(e) if attempt >= 3 => {
                return Err(ServiceError::Fatal(format!(
                    "cannot read where {topic}/{partition} starts and ends ({e})"
                )));
            }
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
