//! Derive: metric state. Worker-local pre-aggregation and the exported registry are the same
//! type, `Aggregates`; a worker merges its batch into the registry, which is how per-event work
//! stays lock-free.
//!
//! **Totals are exact under the cardinality cap**: an update for a new series beyond
//! `max_series` goes to the family's overflow series (every label `__overflow__`) and is counted
//! in `overflowed`, so `sum()` over a family never loses an event.

pub mod exemplar;
pub mod hll;
pub mod shadow;
pub mod snapshot;
pub mod summary;

use hashbrown::HashMap;

use crate::rules::program::{Family, MetricKind, OVERFLOW_VALUE, Op, Program};
use summary::Summary;

/// Series keys are the label values in family order, each as `u32` length + bytes.
pub type Key = Box<[u8]>;

/// Where an update stands in the input, to decide which `set` of a gauge is the latest.
/// Compared field by field: the event time first (across partitions), then the partition, then
/// the offset. Event time is made monotonic within a partition before it gets here
/// (`service::partitions`), so within one partition the later record always wins; replay has
/// no event time and orders by byte offset, which is line order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub ms: u64,
    pub lane: u32,
    pub offset: u64,
}

/// The clocks an update carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stamp {
    /// Which `set` wins.
    pub version: Version,
    /// When the series was last updated, in event time: what `expire_after` measures.
    pub event_ms: u64,
    /// The processing clock: a summary's sliding window turns with it.
    pub now_ms: u64,
}

#[derive(Debug, Clone)]
pub enum Value {
    Counter(f64),
    /// A gauge that is `set` carries the version of the update that set it (the latest wins
    /// whatever the worker that saw it); one that is added to has none. Compile keeps a gauge
    /// to one of the two.
    Gauge {
        value: f64,
        version: Option<Version>,
    },
    Histogram {
        counts: Box<[u64]>,
        sum: f64,
        count: u64,
    },
    Summary(Box<Summary>),
}

#[derive(Debug, Clone)]
pub struct Series {
    pub value: Value,
    pub last_update_ms: u64,
    /// Updates since the last merge, so overflow is counted in events, not series.
    pub(crate) updates: u64,
    /// Changed since the last `take_changes`: goes into the next incremental checkpoint.
    pub(crate) dirty: bool,
    /// Counters and histograms: the traces of recent events (see `exemplar`).
    pub exemplars: Option<exemplar::Slots>,
}

#[derive(Debug, Default, Clone)]
pub struct FamilyState {
    pub series: HashMap<Key, Series>,
    /// Updates that went to the overflow series because the family was at its cap.
    pub overflowed: u64,
    /// Whether `series` holds the overflow series, which does not count against the cap.
    pub(crate) has_overflow: bool,
    /// Keys of the series marked `dirty`, so collecting changes costs what changed.
    pub(crate) dirty: Vec<Key>,
    /// Series expired since the last `take_changes`.
    pub(crate) removed: Vec<Key>,
    /// `overflowed` changed since the last `take_changes`.
    pub(crate) overflow_dirty: bool,
    /// The distinct keys that went to the overflow series, when they are counted
    /// (`sketch_overflow`: `check --sample`).
    pub overflow_sketch: Option<Box<hll::Hll>>,
}

impl FamilyState {
    /// Whether `series` holds the overflow series (which no label set of the family names).
    pub fn has_overflow(&self) -> bool {
        self.has_overflow
    }
}

#[derive(Debug, Default, Clone)]
pub struct Aggregates {
    pub families: Vec<FamilyState>,
    /// Live series (overflow series aside) per team with a budget, by `SeriesBudget::team`:
    /// kept as series are created, counted again after bulk changes (`recount`).
    pub team_series: Vec<usize>,
}

/// What changed in an `Aggregates` since the last time it was asked: per family, the series
/// that changed (with their values then), the ones that expired, and the overflow count.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub families: Vec<FamilyChanges>,
}

#[derive(Debug, Default, Clone)]
pub struct FamilyChanges {
    pub updated: Vec<(Key, Series)>,
    pub removed: Vec<Key>,
    pub overflowed: Option<u64>,
}

impl Changes {
    pub fn series(&self) -> usize {
        self.families
            .iter()
            .map(|f| f.updated.len() + f.removed.len())
            .sum()
    }
}

pub fn push_label(key: &mut Vec<u8>, value: &str) {
    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
    key.extend_from_slice(value.as_bytes());
}

/// The label values of a key; `None` when the bytes are not a well-formed key (a key only comes
/// from `push_label` or from a checkpoint whose decoding checks it, so this is a guard).
pub fn key_values(key: &[u8]) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let value = rest.get(4..4usize.checked_add(len)?)?;
        out.push(std::str::from_utf8(value).ok()?);
        rest = &rest[4 + len..];
    }
    Some(out)
}

pub(crate) fn overflow_key(family: &Family) -> Key {
    let mut key = Vec::new();
    for _ in &family.label_names {
        push_label(&mut key, OVERFLOW_VALUE);
    }
    key.into()
}

impl Aggregates {
    pub fn new(program: &Program) -> Aggregates {
        Aggregates {
            families: vec![FamilyState::default(); program.families.len()],
            team_series: vec![0; program.teams.len()],
        }
    }

    /// Counts each budgeted team's live series again, after changes made in bulk (expiry,
    /// a restore, a reload).
    pub fn recount(&mut self, program: &Program) {
        self.team_series.clear();
        self.team_series.resize(program.teams.len(), 0);
        for (f, state) in program.families.iter().zip(&self.families) {
            if let Some(b) = f.budget
                && let Some(n) = self.team_series.get_mut(b.team as usize)
            {
                *n += state.series.len() - usize::from(state.has_overflow);
            }
        }
    }

    /// Makes room for a program with more families (after a reload).
    pub fn resize(&mut self, program: &Program) {
        self.families
            .resize(program.families.len(), FamilyState::default());
    }

    /// Counts the distinct label sets each family sends to its overflow series from now on
    /// (`FamilyState::overflow_sketch`).
    pub fn sketch_overflow(&mut self) {
        for f in &mut self.families {
            f.overflow_sketch.get_or_insert_with(Default::default);
        }
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.series.len()).sum()
    }

    /// The series for `key`, created if the cap allows, else the overflow series; the flag
    /// says whether the update was redirected to the overflow series.
    fn entry<'s>(
        state: &'s mut FamilyState,
        family: &Family,
        key: &[u8],
        now_ms: u64,
        team_series: &mut Vec<usize>,
    ) -> (&'s mut Series, bool) {
        // Two lookups on the rare create path keep the common path to one hash and no clone.
        if state.series.contains_key(key) {
            return (state.series.get_mut(key).expect("checked above"), false);
        }
        let overflow = overflow_key(family);
        let is_overflow = *key == *overflow;
        let live = state.series.len() - usize::from(state.has_overflow);
        let team_full = family
            .budget
            .is_some_and(|b| team_series.get(b.team as usize).copied().unwrap_or(0) >= b.series);
        let redirect = !is_overflow && (live >= family.max_series || team_full);
        if let (true, Some(sketch)) = (redirect, state.overflow_sketch.as_mut()) {
            sketch.insert(key);
        }
        let key: Key = if redirect || is_overflow {
            state.has_overflow = true;
            overflow
        } else {
            if let Some(b) = family.budget {
                let t = b.team as usize;
                if team_series.len() <= t {
                    team_series.resize(t + 1, 0);
                }
                team_series[t] += 1;
            }
            key.into()
        };
        let series = state.series.entry(key).or_insert_with(|| Series {
            value: empty(family),
            last_update_ms: now_ms,
            updates: 0,
            dirty: false,
            exemplars: None,
        });
        (series, redirect)
    }

    /// Applies one update. `v` is the converted value (1 where the rule gives none).
    #[inline]
    pub fn update(&mut self, fid: usize, family: &Family, key: &[u8], op: Op, v: f64, at: Stamp) {
        let state = &mut self.families[fid];
        let (series, redirected) =
            Self::entry(state, family, key, at.event_ms, &mut self.team_series);
        series.last_update_ms = series.last_update_ms.max(at.event_ms);
        series.updates += 1;
        apply(&mut series.value, family, op, v, at);
        state.overflowed += u64::from(redirected);
    }

    /// `update`, and the update's trace as the exemplar of the series (or bucket) it went to.
    /// Returns what to give back to [`Aggregates::undo_exemplar`] if the event turns out not
    /// to be kept: the slot and the exemplar it held. One lookup for both, since most traced
    /// events are kept.
    #[inline]
    pub fn update_with_exemplar(
        &mut self,
        fid: usize,
        family: &Family,
        key: &[u8],
        op: Op,
        v: f64,
        at: Stamp,
        e: exemplar::Exemplar,
    ) -> Option<(usize, Option<exemplar::Exemplar>)> {
        let state = &mut self.families[fid];
        let (series, redirected) =
            Self::entry(state, family, key, at.event_ms, &mut self.team_series);
        series.last_update_ms = series.last_update_ms.max(at.event_ms);
        series.updates += 1;
        let bucket = apply(&mut series.value, family, op, v, at);
        // The bucket the observation went to, found once.
        let given = exemplar_slot(family, || bucket)
            .map(|(n, slot)| (slot, exemplar::replace(&mut series.exemplars, n, slot, e)));
        state.overflowed += u64::from(redirected);
        given
    }

    /// Puts back the exemplar `update_with_exemplar` replaced.
    pub fn undo_exemplar(
        &mut self,
        fid: usize,
        family: &Family,
        key: &[u8],
        slot: usize,
        prev: Option<exemplar::Exemplar>,
    ) {
        let state = &mut self.families[fid];
        let (series, _) = Self::entry(state, family, key, 0, &mut self.team_series);
        if let Some(slots) = series.exemplars.as_mut()
            && let Some(s) = slots.get_mut(slot)
        {
            *s = prev;
        }
    }

    /// Gives the series an update went to (`key`, or the overflow series) the update's trace as
    /// its exemplar: for a counter, and for a histogram the bucket `v` fell in. Other kinds
    /// have none (OpenMetrics puts exemplars on counters and buckets only).
    pub fn exemplar(&mut self, fid: usize, family: &Family, key: &[u8], e: exemplar::Exemplar) {
        let v = e.value;
        let Some((n, slot)) = exemplar_slot(family, || family.buckets.partition_point(|b| *b < v))
        else {
            return;
        };
        let state = &mut self.families[fid];
        let (series, _) = Self::entry(state, family, key, e.ms, &mut self.team_series);
        exemplar::record(&mut series.exemplars, n, slot, e);
    }

    /// Moves everything in `other` into `self`, leaving `other` empty (capacity kept). Every
    /// series it touches in `self` is marked changed.
    pub fn merge_from(&mut self, other: &mut Aggregates, program: &Program, now_ms: u64) {
        self.resize(program);
        for (fid, theirs) in other.families.iter_mut().enumerate() {
            let Some(family) = program.families.get(fid) else {
                continue;
            };
            let ours = &mut self.families[fid];
            let overflowed = std::mem::take(&mut theirs.overflowed);
            ours.overflowed += overflowed;
            ours.overflow_dirty |= overflowed > 0;
            theirs.has_overflow = false;
            for (key, series) in theirs.series.drain() {
                let last = series.last_update_ms;
                let updates = series.updates;
                let (target, redirected) =
                    Self::entry(ours, family, &key, last, &mut self.team_series);
                target.updates = 0;
                target.last_update_ms = target.last_update_ms.max(last);
                merge_value(&mut target.value, series.value, now_ms);
                exemplar::merge(&mut target.exemplars, series.exemplars);
                let newly_dirty = !target.dirty;
                target.dirty = true;
                if redirected {
                    ours.overflowed += updates;
                    ours.overflow_dirty = true;
                }
                if newly_dirty {
                    let key = if redirected {
                        overflow_key(family)
                    } else {
                        key
                    };
                    ours.dirty.push(key);
                }
            }
        }
    }

    /// Drops series idle for longer than their family's `expire_after`, measured on the event
    /// clock `clock_ms`; how many.
    pub fn expire(&mut self, program: &Program, clock_ms: u64) -> usize {
        let mut removed = 0;
        for (fid, state) in self.families.iter_mut().enumerate() {
            let Some(ttl) = program.families.get(fid).and_then(|f| f.expire_after) else {
                continue;
            };
            let ttl = ttl.as_millis() as u64;
            let gone = &mut state.removed;
            state.series.retain(|k, s| {
                let keep = s.last_update_ms.saturating_add(ttl) >= clock_ms;
                if !keep {
                    gone.push(k.clone());
                }
                keep
            });
            let overflow = overflow_key(&program.families[fid]);
            state.has_overflow = state.series.contains_key(&overflow);
            removed += state.removed.len();
        }
        if removed > 0 {
            self.recount(program);
        }
        removed
    }

    /// What changed since the last call (or since this was built), and forgets it: the next
    /// incremental checkpoint.
    pub fn take_changes(&mut self) -> Changes {
        let families = self
            .families
            .iter_mut()
            .map(|state| {
                let mut updated = Vec::with_capacity(state.dirty.len());
                for key in state.dirty.drain(..) {
                    // A key may have expired after it changed: then it is only removed.
                    if let Some(s) = state.series.get_mut(&key)
                        && s.dirty
                    {
                        s.dirty = false;
                        updated.push((key, s.clone()));
                    }
                }
                FamilyChanges {
                    updated,
                    removed: std::mem::take(&mut state.removed),
                    overflowed: std::mem::take(&mut state.overflow_dirty)
                        .then_some(state.overflowed),
                }
            })
            .collect();
        Changes { families }
    }

    /// Marks again what a failed checkpoint took, so the next one carries it: the series that
    /// still exist with their current values, the removals that still hold.
    pub fn unmark_failed(&mut self, failed: Changes) {
        for (state, changes) in self.families.iter_mut().zip(failed.families) {
            for (key, _) in changes.updated {
                if let Some(s) = state.series.get_mut(&key)
                    && !s.dirty
                {
                    s.dirty = true;
                    state.dirty.push(key);
                }
            }
            for key in changes.removed {
                if !state.series.contains_key(&key) {
                    state.removed.push(key);
                }
            }
            state.overflow_dirty |= changes.overflowed.is_some();
        }
    }

    /// Applies changes taken from another `Aggregates` with the same families: how the exported
    /// state follows a checkpoint without copying what did not change.
    pub fn apply_changes(&mut self, program: &Program, changes: &Changes) {
        self.resize(program);
        for (fid, (state, c)) in self.families.iter_mut().zip(&changes.families).enumerate() {
            for key in &c.removed {
                state.series.remove(key);
            }
            for (key, series) in &c.updated {
                let mut s = series.clone();
                s.dirty = false;
                s.updates = 0;
                state.series.insert(key.clone(), s);
            }
            if let Some(o) = c.overflowed {
                state.overflowed = o;
            }
            if let Some(f) = program.families.get(fid) {
                state.has_overflow = state.series.contains_key(&overflow_key(f));
            }
        }
        self.recount(program);
    }

    /// Forgets which series changed: after a restore or a rollback, what is here is what the
    /// last checkpoint holds.
    pub fn mark_clean(&mut self) {
        for state in &mut self.families {
            for key in state.dirty.drain(..) {
                if let Some(s) = state.series.get_mut(&key) {
                    s.dirty = false;
                }
            }
            state.removed.clear();
            state.overflow_dirty = false;
        }
    }
}

fn empty(family: &Family) -> Value {
    match family.kind {
        MetricKind::Counter => Value::Counter(0.0),
        MetricKind::Gauge => Value::Gauge {
            value: 0.0,
            version: None,
        },
        MetricKind::Histogram => Value::Histogram {
            counts: vec![0; family.buckets.len() + 1].into(),
            sum: 0.0,
            count: 0,
        },
        MetricKind::Summary => {
            Value::Summary(Box::new(Summary::new(family.max_age, family.age_buckets)))
        }
    }
}

#[inline]
/// How many exemplar slots a series of `family` has, and which one an observation takes (of a
/// histogram: the bucket it went to, `bucket`).
fn exemplar_slot(family: &Family, bucket: impl FnOnce() -> usize) -> Option<(usize, usize)> {
    match family.kind {
        MetricKind::Counter => Some((1, 0)),
        MetricKind::Histogram => Some((family.buckets.len() + 1, bucket())),
        MetricKind::Gauge | MetricKind::Summary => None,
    }
}

/// Applies an update; returns the bucket a histogram observation went to (its exemplar's).
fn apply(value: &mut Value, family: &Family, op: Op, v: f64, at: Stamp) -> usize {
    match (value, op) {
        (Value::Counter(c), _) => *c += v,
        (Value::Gauge { value, version }, Op::GaugeSet) => {
            if version.is_none_or(|known| at.version >= known) {
                *value = v;
                *version = Some(at.version);
            }
        }
        (Value::Gauge { value, .. }, Op::GaugeSub) => *value -= v,
        (Value::Gauge { value, .. }, _) => *value += v,
        (Value::Histogram { counts, sum, count }, _) => {
            // Prometheus buckets are `le`: v lands in the first bucket whose bound is >= v.
            let i = family.buckets.partition_point(|b| *b < v);
            counts[i] += 1;
            *sum += v;
            *count += 1;
            return i;
        }
        (Value::Summary(s), _) => s.observe(v, at.now_ms),
    }
    0
}

fn merge_value(into: &mut Value, from: Value, now_ms: u64) {
    match (into, from) {
        (Value::Counter(a), Value::Counter(b)) => *a += b,
        (
            Value::Gauge { value, version },
            Value::Gauge {
                value: v,
                version: theirs,
            },
        ) => match theirs {
            // Only ever added to: the values sum.
            None => *value += v,
            Some(t) => {
                if version.is_none_or(|known| t >= known) {
                    *value = v;
                    *version = Some(t);
                }
            }
        },
        (
            Value::Histogram { counts, sum, count },
            Value::Histogram {
                counts: c,
                sum: s,
                count: n,
            },
        ) => {
            counts.iter_mut().zip(c.iter()).for_each(|(a, b)| *a += b);
            *sum += s;
            *count += n;
        }
        (Value::Summary(a), Value::Summary(b)) => a.merge(&b, now_ms),
        _ => unreachable!("a family's series all have the family's kind"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn family(kind: MetricKind, max_series: usize) -> Family {
        Family {
            name: "m".into(),
            help: String::new(),
            unit: None,
            kind,
            label_names: vec!["a".into()],
            buckets: vec![0.1, 1.0],
            quantiles: vec![0.5],
            max_age: Duration::from_secs(60),
            age_buckets: 2,
            max_series,
            expire_after: Some(Duration::from_secs(10)),
            budget: None,
        }
    }

    fn key(v: &str) -> Vec<u8> {
        let mut k = Vec::new();
        push_label(&mut k, v);
        k
    }

    fn at(ms: u64, lane: u32, offset: u64) -> Stamp {
        Stamp {
            version: Version { ms, lane, offset },
            event_ms: ms,
            now_ms: 0,
        }
    }

    fn program_of(f: &Family) -> Program {
        Program {
            families: vec![f.clone()],
            ..Program::empty()
        }
    }

    fn gauge_value(a: &Aggregates, k: &str) -> f64 {
        match a.families[0].series[key(k).as_slice()].value {
            Value::Gauge { value, .. } => value,
            _ => panic!("not a gauge"),
        }
    }

    #[test]
    fn histogram_bucket_boundaries_are_inclusive() {
        let f = family(MetricKind::Histogram, 10);
        let mut agg = Aggregates {
            families: vec![FamilyState::default()],
            team_series: Vec::new(),
        };
        for v in [0.0, 0.1, 0.10001, 1.0, 7.0] {
            agg.update(0, &f, &key("x"), Op::Observe, v, at(0, 0, 0));
        }
        let Value::Histogram { counts, count, .. } =
            &agg.families[0].series[key("x").as_slice()].value
        else {
            panic!()
        };
        assert_eq!(&counts[..], &[2, 2, 1]);
        assert_eq!(*count, 5);
    }

    #[test]
    fn overflow_keeps_totals_across_merges() {
        let f = family(MetricKind::Counter, 2);
        let program = program_of(&f);
        let mut global = Aggregates::new(&program);
        for round in 0..3 {
            let mut local = Aggregates::new(&program);
            for i in 0..5 {
                let k = key(&format!("v{round}{i}"));
                local.update(0, &f, &k, Op::CounterAdd, 1.0, at(0, 0, 0));
            }
            global.merge_from(&mut local, &program, 0);
        }
        let total: f64 = global.families[0]
            .series
            .values()
            .map(|s| match s.value {
                Value::Counter(c) => c,
                _ => 0.0,
            })
            .sum();
        assert_eq!(total, 15.0);
        assert_eq!(
            global.families[0].series.len(),
            3,
            "two series and the overflow one"
        );
        assert_eq!(global.families[0].overflowed, 13);
    }

    #[test]
    fn gauge_set_latest_event_wins_across_workers() {
        let f = family(MetricKind::Gauge, 10);
        let program = program_of(&f);
        let (mut a, mut b, mut g) = (
            Aggregates::new(&program),
            Aggregates::new(&program),
            Aggregates::new(&program),
        );
        a.update(0, &f, &key("x"), Op::GaugeSet, 5.0, at(10, 0, 0));
        b.update(0, &f, &key("x"), Op::GaugeSet, 7.0, at(3, 0, 9));
        g.merge_from(&mut a, &program, 0);
        g.merge_from(&mut b, &program, 0);
        assert_eq!(gauge_value(&g, "x"), 5.0);
    }

    /// Issue 10, item 9: version 0 (no timestamp, offset 0) was the marker of added gauges, so
    /// two such `set`s merged by adding.
    #[test]
    fn issue10_gauge_sets_without_timestamps_never_add() {
        let f = family(MetricKind::Gauge, 10);
        let program = program_of(&f);
        let mut g = Aggregates::new(&program);
        for (lane, v) in [(0, 5.0), (1, 7.0), (0, 9.0)] {
            let mut local = Aggregates::new(&program);
            local.update(0, &f, &key("x"), Op::GaugeSet, v, at(0, lane, 0));
            g.merge_from(&mut local, &program, 0);
        }
        assert_eq!(gauge_value(&g, "x"), 7.0, "the higher partition wins a tie");
        let mut adds = Aggregates::new(&program);
        for v in [5.0, 7.0] {
            let mut local = Aggregates::new(&program);
            local.update(0, &f, &key("x"), Op::GaugeAdd, v, at(0, 0, 0));
            adds.merge_from(&mut local, &program, 0);
        }
        assert_eq!(gauge_value(&adds, "x"), 12.0);
    }

    /// Issue 10, item 12: expiry measures idleness on the event clock it is given, and
    /// reports what it removed as a change.
    #[test]
    fn issue10_idle_series_expire_on_the_event_clock() {
        let f = family(MetricKind::Gauge, 10);
        let program = program_of(&f);
        let mut g = Aggregates::new(&program);
        let mut local = Aggregates::new(&program);
        local.update(0, &f, &key("old"), Op::GaugeAdd, 1.0, at(1_000, 0, 0));
        local.update(0, &f, &key("new"), Op::GaugeAdd, 1.0, at(9_000, 0, 1));
        g.merge_from(&mut local, &program, 0);
        g.take_changes();
        assert_eq!(g.expire(&program, 12_000), 1);
        assert_eq!(g.series_count(), 1);
        let changes = g.take_changes();
        assert_eq!(
            changes.families[0].removed,
            vec![key("old").into_boxed_slice()]
        );
        assert!(changes.families[0].updated.is_empty());
    }

    /// Changes carry exactly the series merged since the last take, and applying them to a
    /// copy of the state before gives the state after.
    #[test]
    fn changes_follow_merges_and_apply_to_a_copy() {
        let f = family(MetricKind::Counter, 3);
        let program = program_of(&f);
        let mut live = Aggregates::new(&program);
        let mut local = Aggregates::new(&program);
        for k in ["a", "b", "c", "d", "e"] {
            local.update(0, &f, &key(k), Op::CounterAdd, 1.0, at(0, 0, 0));
        }
        live.merge_from(&mut local, &program, 0);
        let mut copy = Aggregates::new(&program);
        copy.apply_changes(&program, &live.take_changes());
        local.update(0, &f, &key("b"), Op::CounterAdd, 2.0, at(0, 0, 0));
        live.merge_from(&mut local, &program, 0);
        let changes = live.take_changes();
        assert_eq!(changes.series(), 1);
        assert_eq!(changes.families[0].overflowed, None);
        copy.apply_changes(&program, &changes);
        let render = |a: &Aggregates| {
            let mut v: Vec<(Vec<u8>, String)> = a.families[0]
                .series
                .iter()
                .map(|(k, s)| (k.to_vec(), format!("{:?}", s.value)))
                .collect();
            v.sort();
            v
        };
        assert_eq!(render(&copy), render(&live));
        assert_eq!(copy.families[0].overflowed, 2);
        assert!(live.take_changes().families[0].updated.is_empty());
    }

    #[test]
    fn malformed_keys_are_none_not_a_panic() {
        assert_eq!(key_values(&key("x")), Some(vec!["x"]));
        assert_eq!(key_values(&[]), Some(vec![]));
        assert_eq!(key_values(&[9, 0, 0, 0, b'x']), None);
        assert_eq!(key_values(&[1, 0]), None);
        assert_eq!(key_values(&[1, 0, 0, 0, 0xff]), None);
    }
}
