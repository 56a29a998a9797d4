//! Derive: metric state. Worker-local pre-aggregation and the exported registry are the same
//! type, `Aggregates`; a worker merges its batch into the registry, which is how per-event work
//! stays lock-free.
//!
//! **Totals are exact under the cardinality cap**: an update for a new series beyond
//! `max_series` goes to the family's overflow series (every label `__overflow__`) and is counted
//! in `overflowed`, so `sum()` over a family never loses an event.

pub mod snapshot;
pub mod summary;

use hashbrown::HashMap;

use crate::rules::program::{Family, MetricKind, OVERFLOW_VALUE, Op, Program};
use summary::Summary;

/// Series keys are the label values in family order, each as `u32` length + bytes.
pub type Key = Box<[u8]>;

#[derive(Debug, Clone)]
pub enum Value {
    Counter(f64),
    /// `seq` orders `set`s from different workers: the latest event wins.
    Gauge {
        value: f64,
        seq: u64,
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
}

#[derive(Debug, Default, Clone)]
pub struct FamilyState {
    pub series: HashMap<Key, Series>,
    /// Updates that went to the overflow series because the family was at its cap.
    pub overflowed: u64,
    /// Whether `series` holds the overflow series, which does not count against the cap.
    pub(crate) has_overflow: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Aggregates {
    pub families: Vec<FamilyState>,
}

pub fn push_label(key: &mut Vec<u8>, value: &str) {
    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
    key.extend_from_slice(value.as_bytes());
}

pub fn key_values(key: &[u8]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = key;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        out.push(std::str::from_utf8(&rest[4..4 + len]).expect("keys are built from str"));
        rest = &rest[4 + len..];
    }
    out
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
        }
    }

    /// Makes room for a program with more families (after a reload).
    pub fn resize(&mut self, program: &Program) {
        self.families
            .resize(program.families.len(), FamilyState::default());
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
    ) -> (&'s mut Series, bool) {
        // Two lookups on the rare create path keep the common path to one hash and no clone.
        if state.series.contains_key(key) {
            return (state.series.get_mut(key).expect("checked above"), false);
        }
        let overflow = overflow_key(family);
        let is_overflow = *key == *overflow;
        let live = state.series.len() - usize::from(state.has_overflow);
        let redirect = !is_overflow && live >= family.max_series;
        let key: Key = if redirect || is_overflow {
            state.has_overflow = true;
            overflow
        } else {
            key.into()
        };
        let series = state.series.entry(key).or_insert_with(|| Series {
            value: empty(family),
            last_update_ms: now_ms,
            updates: 0,
        });
        (series, redirect)
    }

    /// Applies one update. `v` is the converted value (1 where the rule gives none).
    #[inline]
    pub fn update(
        &mut self,
        fid: usize,
        family: &Family,
        key: &[u8],
        op: Op,
        v: f64,
        seq: u64,
        now_ms: u64,
    ) {
        let state = &mut self.families[fid];
        let (series, redirected) = Self::entry(state, family, key, now_ms);
        series.last_update_ms = now_ms;
        series.updates += 1;
        apply(&mut series.value, family, op, v, seq, now_ms);
        state.overflowed += u64::from(redirected);
    }

    /// Moves everything in `other` into `self`, leaving `other` empty (capacity kept).
    pub fn merge_from(&mut self, other: &mut Aggregates, program: &Program, now_ms: u64) {
        self.resize(program);
        for (fid, theirs) in other.families.iter_mut().enumerate() {
            let Some(family) = program.families.get(fid) else {
                continue;
            };
            let ours = &mut self.families[fid];
            ours.overflowed += std::mem::take(&mut theirs.overflowed);
            theirs.has_overflow = false;
            for (key, series) in theirs.series.drain() {
                let last = series.last_update_ms;
                let updates = series.updates;
                let (target, redirected) = Self::entry(ours, family, &key, last);
                target.updates = 0;
                target.last_update_ms = target.last_update_ms.max(last);
                merge_value(&mut target.value, series.value, now_ms);
                if redirected {
                    ours.overflowed += updates;
                }
            }
        }
    }

    /// Drops series idle for longer than their family's `expire_after`.
    pub fn expire(&mut self, program: &Program, now_ms: u64) -> usize {
        let mut removed = 0;
        for (fid, state) in self.families.iter_mut().enumerate() {
            let Some(ttl) = program.families.get(fid).and_then(|f| f.expire_after) else {
                continue;
            };
            let ttl = ttl.as_millis() as u64;
            let before = state.series.len();
            state.series.retain(|_, s| s.last_update_ms + ttl >= now_ms);
            let overflow = overflow_key(&program.families[fid]);
            state.has_overflow = state.series.contains_key(&overflow);
            removed += before - state.series.len();
        }
        removed
    }
}

fn empty(family: &Family) -> Value {
    match family.kind {
        MetricKind::Counter => Value::Counter(0.0),
        MetricKind::Gauge => Value::Gauge { value: 0.0, seq: 0 },
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
fn apply(value: &mut Value, family: &Family, op: Op, v: f64, seq: u64, now_ms: u64) {
    match (value, op) {
        (Value::Counter(c), _) => *c += v,
        (Value::Gauge { value, seq: s }, Op::GaugeSet) => {
            if seq >= *s {
                *value = v;
                *s = seq;
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
        }
        (Value::Summary(s), _) => s.observe(v, now_ms),
    }
}

fn merge_value(into: &mut Value, from: Value, now_ms: u64) {
    match (into, from) {
        (Value::Counter(a), Value::Counter(b)) => *a += b,
        (Value::Gauge { value, seq }, Value::Gauge { value: v, seq: s }) => {
            // A gauge is either only set (latest seq wins) or only added to (values sum);
            // compile rejects mixing the two, and add-gauges keep seq 0.
            if *seq == 0 && s == 0 {
                *value += v;
            } else if s >= *seq {
                *value = v;
                *seq = s;
            }
        }
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
        }
    }

    fn key(v: &str) -> Vec<u8> {
        let mut k = Vec::new();
        push_label(&mut k, v);
        k
    }

    #[test]
    fn histogram_bucket_boundaries_are_inclusive() {
        let f = family(MetricKind::Histogram, 10);
        let mut agg = Aggregates {
            families: vec![FamilyState::default()],
        };
        for v in [0.0, 0.1, 0.10001, 1.0, 7.0] {
            agg.update(0, &f, &key("x"), Op::Observe, v, 0, 0);
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
        let program = Program {
            families: vec![f.clone()],
            ..Program::empty()
        };
        let mut global = Aggregates::new(&program);
        for round in 0..3 {
            let mut local = Aggregates::new(&program);
            for i in 0..5 {
                local.update(
                    0,
                    &f,
                    &key(&format!("v{round}{i}")),
                    Op::CounterAdd,
                    1.0,
                    0,
                    0,
                );
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
        let program = Program {
            families: vec![f.clone()],
            ..Program::empty()
        };
        let (mut a, mut b, mut g) = (
            Aggregates::new(&program),
            Aggregates::new(&program),
            Aggregates::new(&program),
        );
        a.update(0, &f, &key("x"), Op::GaugeSet, 5.0, 10, 0);
        b.update(0, &f, &key("x"), Op::GaugeSet, 7.0, 3, 0);
        g.merge_from(&mut a, &program, 0);
        g.merge_from(&mut b, &program, 0);
        assert!(matches!(
            g.families[0].series[key("x").as_slice()].value,
            Value::Gauge { value: 5.0, .. }
        ));
    }

    #[test]
    fn idle_series_expire() {
        let f = family(MetricKind::Gauge, 10);
        let program = Program {
            families: vec![f.clone()],
            ..Program::empty()
        };
        let mut g = Aggregates::new(&program);
        g.update(0, &f, &key("old"), Op::GaugeAdd, 1.0, 0, 1_000);
        g.update(0, &f, &key("new"), Op::GaugeAdd, 1.0, 0, 9_000);
        assert_eq!(g.expire(&program, 12_000), 1);
        assert_eq!(g.series_count(), 1);
    }
}
