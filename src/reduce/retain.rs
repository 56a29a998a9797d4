//! Trace-aware retention (`reduce.keep_traces`): a trace that `sample` would drop is not
//! dropped at once. Its events are held until the trace is decided: kept whole when one of
//! its events is protected (an error level, `always_keep`) or when it lasts longer than
//! `slower_than`, else dropped as sampling said, once `wait` (event time) has passed since its
//! last event. A decided trace's late events follow the remembered decision.
//!
//! **A trace's decision depends only on the partition's events in order and their times**,
//! like every other reduction: a partition read again decides the same way. The checkpoint
//! carries the open traces without their events (where each starts, how many it holds) and
//! the remembered decisions; after a restore the held events are read again from the log
//! (`retain_from`) and held again (`rehold`), not counted again.
//!
//! Bounded: held bytes per partition (`max_held_bytes`; over it the oldest traces are decided
//! early, by their id's hash, which drops them, counted) and remembered decisions
//! (`max_decisions`, oldest forgotten first).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use hashbrown::HashMap;

use super::hash::BuildIdentity;
use super::{Action, Reduction};
use crate::codec::{Corrupt, Reader, Writer};
use crate::rules::program::Program;

/// What an open trace and a held event cost besides the event's bytes (the map, the
/// deadline and age entries, the event's record): counted against `max_held_bytes`, so that
/// a flood of one-event traces is capped like a few big ones.
const TRACE_OVERHEAD: u64 = 192;
const EVENT_OVERHEAD: u64 = 64;

/// The caps of one partition's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainConfig {
    pub max_held_bytes: u64,
    pub max_decisions: usize,
}

impl Default for RetainConfig {
    fn default() -> RetainConfig {
        RetainConfig {
            max_held_bytes: 16 << 20,
            max_decisions: 100_000,
        }
    }
}

/// An event waiting for its trace's decision: enough to write it out later as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The rule that reduced it: its index in the program it was held under, and its hash
    /// (`Reduce::rule_hash`), which finds it again after a reload moved rules around.
    pub rule: u32,
    pub rule_hash: u64,
    pub offset: i64,
    /// The record's event time and Kafka timestamp.
    pub record_ms: u64,
    pub timestamp_ms: Option<i64>,
    pub payload: Box<[u8]>,
    /// Which event of its message it is (OTLP), for its headers when it is written.
    pub part: crate::decode::Part,
}

/// What retention says of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Sampling keeps the trace: the event goes on to the other actions.
    Sampled,
    /// The trace is kept whole: the event is kept as it is.
    Keep,
    /// The trace was dropped.
    Drop,
    /// Held until the trace is decided.
    Held,
}

/// What retention did, for telemetry: traces decided by outcome, and the event time their
/// held events waited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainCounts {
    /// Traces kept whole for a protected event or their duration.
    pub kept: u64,
    /// Traces dropped when their wait ended.
    pub dropped: u64,
    /// Traces decided early (dropped) to stay under `max_held_bytes`.
    pub early: u64,
    /// Held events written out when their trace was kept.
    pub released: u64,
    /// Sum over decided traces of the event time from their first held event to the decision.
    pub hold_ms: u64,
}

impl RetainCounts {
    pub fn absorb(&mut self, o: &RetainCounts) {
        self.kept += o.kept;
        self.dropped += o.dropped;
        self.early += o.early;
        self.released += o.released;
        self.hold_ms += o.hold_ms;
    }

    pub fn decided(&self) -> u64 {
        self.kept + self.dropped + self.early
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Kept,
    Dropped,
    /// Dropped before its wait ended, to stay under `max_held_bytes`.
    Early,
}

impl Outcome {
    /// A trace nothing kept before its wait ended: kept if it lasted long enough.
    fn timed_out(o: &Open) -> Outcome {
        if o.last_ms - o.first_ms > o.slower_ms {
            Outcome::Kept
        } else {
            Outcome::Dropped
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    /// Order of opening: the oldest is decided first under pressure.
    seq: u64,
    first_ms: u64,
    last_ms: u64,
    /// When the trace is decided if nothing keeps it before: its last event's time plus the
    /// longest `wait` of its events' rules.
    deadline: u64,
    /// The shortest `slower_than` of its events' rules (`u64::MAX`: none).
    slower_ms: u64,
    /// The first held event's offset: the log is read again from there after a restore.
    first_offset: i64,
    /// Events held, including those not held again yet after a restore.
    events: u64,
    held: Vec<Held>,
    /// What its held events cost against `max_held_bytes`.
    bytes: u64,
}

#[derive(Debug, Default)]
pub struct Retention {
    cfg: RetainConfig,
    open: HashMap<u64, Open, BuildIdentity>,
    /// `(deadline, key)`, one per open trace, pushed when it opened: a trace's deadline only
    /// grows, so an entry that comes due early is pushed again with the trace's deadline then
    /// (entries of decided traces are skipped), and an event costs no reordering.
    deadlines: BinaryHeap<Reverse<(u64, u64)>>,
    /// `(seq, key)` in opening order; entries of decided traces are skipped, and compacted
    /// away when they outnumber the open traces.
    ages: VecDeque<(u64, u64)>,
    decided: HashMap<u64, bool, BuildIdentity>,
    decided_order: VecDeque<u64>,
    held_bytes: u64,
    held_events: u64,
    seq: u64,
    /// Changed since the last snapshot.
    pub dirty: bool,
}

/// One event's part in a trace, as `Retention::event` needs it.
#[derive(Debug, Clone, Copy)]
pub struct TraceEvent {
    /// The hash of the trace id.
    pub key: u64,
    pub rate: u32,
    pub protected: bool,
    /// The event's time (the partition's reduction clock).
    pub now: u64,
    pub wait_ms: u64,
    pub slower_ms: Option<u64>,
}

impl Retention {
    pub fn new(cfg: RetainConfig) -> Retention {
        Retention {
            cfg,
            ..Retention::default()
        }
    }

    /// Nothing open and nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.decided.is_empty()
    }

    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    pub fn held_events(&self) -> u64 {
        self.held_events
    }

    /// Where the log must be read again from after a restore, for the held events: the first
    /// held event of the oldest open trace (offsets grow with opening order).
    pub fn retain_from(&self) -> Option<i64> {
        let key = self.oldest()?;
        self.open.get(&key).map(|o| o.first_offset)
    }

    /// The oldest open trace.
    fn oldest(&self) -> Option<u64> {
        self.ages
            .iter()
            .find(|(seq, key)| self.open.get(key).is_some_and(|o| o.seq == *seq))
            .map(|(_, key)| *key)
    }

    /// Decides the traces whose wait has passed at `now`.
    pub fn close_due(
        &mut self,
        now: u64,
        program: &Program,
        counts: &mut Reduction,
        out: &mut Vec<Held>,
    ) {
        while let Some(&Reverse((deadline, key))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(o) = self.open.get(&key) else {
                continue;
            };
            if o.deadline > now {
                self.deadlines.push(Reverse((o.deadline, key)));
                continue;
            }
            let o = self.take(key).expect("looked up above");
            let how = Outcome::timed_out(&o);
            self.settle(key, o, how, now, program, counts, out);
        }
    }

    /// Decides every open trace (the end of a replay's input).
    pub fn flush(&mut self, program: &Program, counts: &mut Reduction, out: &mut Vec<Held>) {
        let keys: Vec<(u64, u64)> = self.ages.drain(..).collect();
        for (seq, key) in keys {
            if self.open.get(&key).is_some_and(|o| o.seq == seq) {
                let o = self.take(key).expect("looked up above");
                let (now, how) = (o.last_ms, Outcome::timed_out(&o));
                self.settle(key, o, how, now, program, counts, out);
            }
        }
        self.deadlines.clear();
    }

    /// One event of a trace sampling would drop by its id, unless the trace is kept. `held`
    /// makes the event's copy, only when it is held.
    pub fn event(
        &mut self,
        e: TraceEvent,
        held: impl FnOnce() -> Held,
        program: &Program,
        counts: &mut Reduction,
        out: &mut Vec<Held>,
    ) -> Step {
        if let Some(&keep) = self.decided.get(&e.key) {
            return if keep || e.protected {
                Step::Keep
            } else {
                Step::Drop
            };
        }
        if !super::sampled_out(e.key, e.rate) {
            return Step::Sampled;
        }
        self.dirty = true;
        let o = match self.open.get_mut(&e.key) {
            Some(o) => o,
            None => {
                self.seq += 1;
                let deadline = e.now.saturating_add(e.wait_ms);
                self.deadlines.push(Reverse((deadline, e.key)));
                self.ages.push_back((self.seq, e.key));
                self.open.entry(e.key).or_insert(Open {
                    seq: self.seq,
                    first_ms: e.now,
                    last_ms: e.now,
                    deadline,
                    slower_ms: u64::MAX,
                    first_offset: i64::MAX,
                    events: 0,
                    held: Vec::new(),
                    bytes: 0,
                })
            }
        };
        o.last_ms = o.last_ms.max(e.now);
        o.slower_ms = o.slower_ms.min(e.slower_ms.unwrap_or(u64::MAX));
        o.deadline = o.deadline.max(e.now.saturating_add(e.wait_ms));
        if e.protected || o.last_ms - o.first_ms > o.slower_ms {
            let o = self.take(e.key).expect("open above");
            self.settle(e.key, o, Outcome::Kept, e.now, program, counts, out);
            return Step::Keep;
        }
        let h = held();
        let cost = h.payload.len() as u64
            + EVENT_OVERHEAD
            + if o.events == 0 { TRACE_OVERHEAD } else { 0 };
        o.first_offset = o.first_offset.min(h.offset);
        o.events += 1;
        o.bytes += cost;
        o.held.push(h);
        self.held_bytes += cost;
        self.held_events += 1;
        while self.held_bytes > self.cfg.max_held_bytes {
            let Some(oldest) = self.oldest() else {
                break;
            };
            let o = self.take(oldest).expect("open");
            counts.evictions[Action::Sample as usize] += 1;
            self.settle(oldest, o, Outcome::Early, e.now, program, counts, out);
        }
        Step::Held
    }

    /// After a restore: an event read again that its open trace held. `false` when it is not
    /// one (its trace was decided before the checkpoint, or is not open).
    pub fn rehold(&mut self, key: u64, offset: i64, held: impl FnOnce() -> Held) -> bool {
        let Some(o) = self.open.get_mut(&key) else {
            return false;
        };
        if offset < o.first_offset || o.held.len() as u64 >= o.events {
            return false;
        }
        let h = held();
        let cost = h.payload.len() as u64
            + EVENT_OVERHEAD
            + if o.held.is_empty() { TRACE_OVERHEAD } else { 0 };
        o.bytes += cost;
        self.held_bytes += cost;
        self.held_events += 1;
        o.held.push(h);
        true
    }

    /// Takes an open trace out; its heap and age entries become stale and are skipped.
    fn take(&mut self, key: u64) -> Option<Open> {
        let o = self.open.remove(&key)?;
        // Stale entries at the front go at once; the rest once they outnumber open traces.
        while let Some(&(seq, k)) = self.ages.front() {
            if self.open.get(&k).is_some_and(|o| o.seq == seq) {
                break;
            }
            self.ages.pop_front();
        }
        if self.ages.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            self.ages
                .retain(|(seq, k)| open.get(k).is_some_and(|o| o.seq == *seq));
        }
        if self.deadlines.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            let live: Vec<Reverse<(u64, u64)>> = self
                .deadlines
                .drain()
                .filter(|Reverse((_, k))| open.contains_key(k))
                .collect();
            self.deadlines = live.into();
        }
        Some(o)
    }

    /// A restored open trace.
    fn put(&mut self, key: u64, o: Open) {
        self.deadlines.push(Reverse((o.deadline, key)));
        self.ages.push_back((o.seq, key));
        self.open.insert(key, o);
    }

    /// A trace's decision: its held events are written out (`keep`) or dropped, and the
    /// decision is remembered for its late events.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &mut self,
        key: u64,
        o: Open,
        how: Outcome,
        now: u64,
        program: &Program,
        counts: &mut Reduction,
        out: &mut Vec<Held>,
    ) {
        self.dirty = true;
        self.held_bytes -= o.bytes;
        self.held_events -= o.held.len() as u64;
        counts.retain.hold_ms += now.saturating_sub(o.first_ms);
        match how {
            Outcome::Kept => counts.retain.kept += 1,
            Outcome::Dropped => counts.retain.dropped += 1,
            Outcome::Early => counts.retain.early += 1,
        }
        let keep = how == Outcome::Kept;
        for h in o.held {
            let rule = rule_index(program, &h);
            let bytes = h.payload.len() as u64;
            if let Some(c) = rule.and_then(|r| counts.rules.get_mut(r)) {
                if keep {
                    c.events_out += 1;
                    c.bytes_out += bytes;
                } else {
                    c.suppressed[Action::Sample as usize] += 1;
                    c.suppressed_bytes[Action::Sample as usize] += bytes;
                }
            }
            if keep {
                counts.retain.released += 1;
                out.push(h);
            }
        }
        self.remember(key, keep);
    }

    fn remember(&mut self, key: u64, keep: bool) {
        if self.cfg.max_decisions == 0 {
            return;
        }
        if self.decided.insert(key, keep).is_none() {
            self.decided_order.push_back(key);
        }
        while self.decided_order.len() > self.cfg.max_decisions {
            if let Some(k) = self.decided_order.pop_front() {
                self.decided.remove(&k);
            }
        }
    }

    /// Open traces (without their events) and remembered decisions, in a deterministic order.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.seq);
        let live: Vec<(u64, &Open)> = self
            .ages
            .iter()
            .filter_map(|(seq, k)| self.open.get(k).filter(|o| o.seq == *seq).map(|o| (*k, o)))
            .collect();
        w.u32(live.len() as u32);
        for (key, o) in live {
            w.u64(key);
            w.u64(o.seq);
            w.u64(o.first_ms);
            w.u64(o.last_ms);
            w.u64(o.deadline);
            w.u64(o.slower_ms);
            w.i64(o.first_offset);
            w.u64(o.events);
        }
        w.u32(self.decided_order.len() as u32);
        for k in &self.decided_order {
            w.u64(*k);
            w.bool(self.decided[k]);
        }
    }

    /// Total: malformed input is an error, never a panic.
    pub fn decode(r: &mut Reader<'_>, cfg: RetainConfig) -> Result<Retention, Corrupt> {
        let mut t = Retention::new(cfg);
        t.seq = r.u64()?;
        for _ in 0..r.count(64)? {
            let key = r.u64()?;
            let o = Open {
                seq: r.u64()?,
                first_ms: r.u64()?,
                last_ms: r.u64()?,
                deadline: r.u64()?,
                slower_ms: r.u64()?,
                first_offset: r.i64()?,
                events: r.u64()?,
                held: Vec::new(),
                bytes: 0,
            };
            // In opening order, as written.
            let after = t.ages.back().map_or(0, |(seq, _)| *seq);
            if o.last_ms < o.first_ms
                || o.seq <= after
                || o.seq > t.seq
                || t.open.contains_key(&key)
            {
                return Err(Corrupt);
            }
            t.put(key, o);
        }
        for _ in 0..r.count(9)? {
            let k = r.u64()?;
            let keep = r.bool()?;
            t.remember(k, keep);
        }
        Ok(t)
    }
}

/// The index of a held event's rule in `program`: where it was, unless a reload moved it.
fn rule_index(program: &Program, h: &Held) -> Option<usize> {
    let hash_of = |i: usize| {
        program
            .rules
            .get(i)
            .and_then(|r| r.reduce.as_ref())
            .map(|r| r.rule_hash)
    };
    if hash_of(h.rule as usize) == Some(h.rule_hash) {
        return Some(h.rule as usize);
    }
    (0..program.rules.len()).find(|i| hash_of(*i) == Some(h.rule_hash))
}
