//! A byte encoding of `Aggregates`, for checkpoints.
//!
//! Families are stored by name, kind and label names, not by index, so a checkpoint taken under
//! one rule set restores under the next: a family whose definition changed (another kind,
//! other labels, other buckets) is left out and counted, the others resume where they were.

use std::io::Cursor;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use super::summary::Summary;
use super::{Aggregates, FamilyState, Series, Value};
use crate::rules::program::{MetricKind, Program};

const MAGIC: &[u8; 4] = b"LMAG";
const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a logmill snapshot")]
    BadMagic,
    #[error("snapshot version {0} is not supported")]
    Version(u8),
    #[error("snapshot is truncated or corrupt")]
    Corrupt,
}

/// What a restore did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub families: usize,
    pub series: usize,
    /// Families in the snapshot that the program no longer defines the same way.
    pub dropped_families: usize,
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Corrupt);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| SnapshotError::Corrupt)
    }
}

fn kind_code(k: MetricKind) -> u8 {
    match k {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
        MetricKind::Summary => 3,
    }
}

/// Encodes every family of `aggs` that `program` defines.
pub fn encode(program: &Program, aggs: &Aggregates) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    let families: Vec<(usize, &FamilyState)> = aggs
        .families
        .iter()
        .enumerate()
        .filter(|(i, f)| *i < program.families.len() && !f.series.is_empty())
        .collect();
    w.u32(families.len() as u32);
    for (fid, state) in families {
        let f = &program.families[fid];
        w.bytes(f.name.as_bytes());
        w.u8(kind_code(f.kind));
        w.u32(f.label_names.len() as u32);
        for l in &f.label_names {
            w.bytes(l.as_bytes());
        }
        w.u32(f.buckets.len() as u32);
        for b in &f.buckets {
            w.f64(*b);
        }
        w.u64(state.overflowed);
        w.u32(state.series.len() as u32);
        for (key, s) in &state.series {
            w.bytes(key);
            w.u64(s.last_update_ms);
            match &s.value {
                Value::Counter(c) => w.f64(*c),
                Value::Gauge { value, seq } => {
                    w.f64(*value);
                    w.u64(*seq);
                }
                Value::Histogram { counts, sum, count } => {
                    w.u32(counts.len() as u32);
                    counts.iter().for_each(|c| w.u64(*c));
                    w.f64(*sum);
                    w.u64(*count);
                }
                Value::Summary(sm) => sm.encode(&mut w),
            }
        }
    }
    w.0
}

/// Replaces `aggs` with the snapshot's contents, for the families `program` defines the same way.
pub fn decode(
    program: &Program,
    bytes: &[u8],
    aggs: &mut Aggregates,
) -> Result<Restored, SnapshotError> {
    let mut r = R(bytes);
    if r.take(4)? != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let mut out = Aggregates::new(program);
    let mut restored = Restored::default();
    for _ in 0..r.u32()? {
        let name = r.str()?.to_string();
        let kind = r.u8()?;
        let labels: Vec<String> = (0..r.u32()?)
            .map(|_| r.str().map(str::to_string))
            .collect::<Result<_, _>>()?;
        let buckets: Vec<f64> = (0..r.u32()?).map(|_| r.f64()).collect::<Result<_, _>>()?;
        let overflowed = r.u64()?;
        let target = program.family_by_name(&name).filter(|&i| {
            let f = &program.families[i];
            kind_code(f.kind) == kind && f.label_names == labels && f.buckets == buckets
        });
        let mut state = FamilyState {
            overflowed,
            ..FamilyState::default()
        };
        for _ in 0..r.u32()? {
            let key: Box<[u8]> = r.bytes()?.into();
            let last_update_ms = r.u64()?;
            let value = match kind {
                0 => Value::Counter(r.f64()?),
                1 => Value::Gauge {
                    value: r.f64()?,
                    seq: r.u64()?,
                },
                2 => {
                    let counts: Box<[u64]> =
                        (0..r.u32()?).map(|_| r.u64()).collect::<Result<_, _>>()?;
                    Value::Histogram {
                        counts,
                        sum: r.f64()?,
                        count: r.u64()?,
                    }
                }
                3 => Value::Summary(Box::new(Summary::decode(&mut r)?)),
                _ => return Err(SnapshotError::Corrupt),
            };
            state.series.insert(
                key,
                Series {
                    value,
                    last_update_ms,
                    updates: 0,
                },
            );
        }
        match target {
            Some(fid) => {
                let f = &program.families[fid];
                state.has_overflow = state.series.contains_key(&super::overflow_key(f));
                restored.series += state.series.len();
                restored.families += 1;
                out.families[fid] = state;
            }
            None => restored.dropped_families += 1,
        }
    }
    if !r.0.is_empty() {
        return Err(SnapshotError::Corrupt);
    }
    *aggs = out;
    Ok(restored)
}

impl Summary {
    fn encode(&self, w: &mut W) {
        w.u64(self.slot_ms);
        w.u64(self.slots.len() as u64);
        for (epoch, h) in &self.slots {
            w.u64(*epoch);
            let mut buf = Vec::new();
            if let Some(h) = h {
                V2Serializer::new()
                    .serialize(h, &mut buf)
                    .expect("serialising to memory cannot fail");
            }
            w.bytes(&buf);
        }
        w.f64(self.sum);
        w.u64(self.count);
    }

    fn decode(r: &mut R<'_>) -> Result<Summary, SnapshotError> {
        let slot_ms = r.u64()?;
        let n = r.u64()? as usize;
        if n == 0 || n > 1024 {
            return Err(SnapshotError::Corrupt);
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let epoch = r.u64()?;
            let b = r.bytes()?;
            let h = if b.is_empty() {
                None
            } else {
                Some(
                    Deserializer::new()
                        .deserialize(&mut Cursor::new(b))
                        .map_err(|_| SnapshotError::Corrupt)?,
                )
            };
            slots.push((epoch, h));
        }
        Ok(Summary {
            slot_ms,
            slots,
            sum: r.f64()?,
            count: r.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::push_label;
    use crate::rules::program::Op;
    use crate::rules::{SourceFile, compile};
    use crate::sink::exposition::{ExpositionFormat, render};

    /// One update to family `fid`, for building test state.
    fn update(
        a: &mut Aggregates,
        p: &Program,
        fid: usize,
        key: &[u8],
        op: Op,
        v: f64,
        seq: u64,
        now: u64,
    ) {
        a.update(fid, &p.families[fid], key, op, v, seq, now);
    }

    fn program(text: &str) -> Program {
        let (p, d) = compile(&[SourceFile {
            name: "t".into(),
            text: text.into(),
        }]);
        assert!(d.iter().all(|d| !d.is_error()), "{d:?}");
        p
    }

    const RULES: &str = "team: t\nrules:\n  - name: r\n    metrics:\n      - {name: c_total, type: counter, labels: {a: a}, max_series: 2}\n      - {name: g, type: gauge, value: v}\n      - {name: h, type: histogram, value: v, buckets: [1, 2]}\n      - {name: s, type: summary, value: v}\n";

    #[test]
    fn round_trip_gives_the_same_exposition() {
        let p = program(RULES);
        let mut a = Aggregates::new(&p);
        for (i, v) in ["x", "y", "z", "w"].iter().enumerate() {
            let mut k = Vec::new();
            push_label(&mut k, v);
            update(&mut a, &p, 0, &k, Op::CounterAdd, 1.0, i as u64, 5);
            update(&mut a, &p, 1, &[], Op::GaugeSet, i as f64, i as u64, 5);
            update(&mut a, &p, 2, &[], Op::Observe, i as f64, 0, 5);
            update(&mut a, &p, 3, &[], Op::Observe, i as f64, 0, 5);
        }
        let bytes = encode(&p, &a);
        let mut b = Aggregates::default();
        let r = decode(&p, &bytes, &mut b).unwrap();
        assert_eq!(
            r,
            Restored {
                families: 4,
                series: 6,
                dropped_families: 0
            }
        );
        assert_eq!(
            render(&p, &a, ExpositionFormat::Text, 5),
            render(&p, &b, ExpositionFormat::Text, 5)
        );
        assert_eq!(b.families[0].overflowed, 2);
        // The overflow series is known again, so it does not take a place under the cap.
        let mut k = Vec::new();
        push_label(&mut k, "new");
        update(&mut b, &p, 0, &k, Op::CounterAdd, 1.0, 0, 5);
        assert_eq!(b.families[0].overflowed, 3);
    }

    #[test]
    fn changed_families_are_dropped_others_restored() {
        let p = program(RULES);
        let mut a = Aggregates::new(&p);
        update(&mut a, &p, 1, &[], Op::GaugeSet, 3.0, 1, 0);
        update(&mut a, &p, 2, &[], Op::Observe, 1.0, 0, 0);
        let bytes = encode(&p, &a);
        let changed = program(&RULES.replace("buckets: [1, 2]", "buckets: [1, 5]"));
        let mut b = Aggregates::default();
        let r = decode(&changed, &bytes, &mut b).unwrap();
        assert_eq!(
            r,
            Restored {
                families: 1,
                series: 1,
                dropped_families: 1
            }
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let p = program(RULES);
        let mut a = Aggregates::new(&p);
        update(&mut a, &p, 2, &[], Op::Observe, 1.0, 0, 0);
        let bytes = encode(&p, &a);
        let mut b = Aggregates::default();
        assert_eq!(decode(&p, b"nope", &mut b), Err(SnapshotError::BadMagic));
        for cut in 5..bytes.len() {
            assert!(decode(&p, &bytes[..cut], &mut b).is_err(), "cut at {cut}");
        }
    }
}
