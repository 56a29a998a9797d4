//! A byte encoding of `Aggregates`, whole or as the changes since the last checkpoint.
//!
//! Families are stored by what defines their stored state (name, kind, label names, buckets,
//! and a summary's window: `max_age` and `age_buckets`), not by index, so a snapshot taken under
//! one rule set restores under the next: a family defined differently now is left out and
//! counted, the others resume where they were. **Decoding is total**: any malformed input (a
//! key that is not label values, a histogram with the wrong bucket count, a summary window
//! that does not fit) is an error for the whole snapshot, never a panic later.

use std::io::Cursor;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use super::exemplar;
use super::summary::Summary;
use super::{Aggregates, Changes, FamilyState, Key, Series, Value, Version, key_values};
use crate::codec::{Corrupt, Reader, Writer};
use crate::rules::program::{Family, MetricKind, Program};

const MAGIC: &[u8; 4] = b"LMAG";
/// 3: counters and histograms carry their exemplars. 2 (without) is still read.
const VERSION: u8 = 3;
const WITHOUT_EXEMPLARS: u8 = 2;
const FULL: u8 = 0;
const CHANGES: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a logmill snapshot")]
    BadMagic,
    #[error("snapshot version {0} is not supported")]
    Version(u8),
    #[error("snapshot is truncated or corrupt")]
    Corrupt,
}

impl From<Corrupt> for SnapshotError {
    fn from(_: Corrupt) -> SnapshotError {
        SnapshotError::Corrupt
    }
}

/// What a restore did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub families: usize,
    pub series: usize,
    /// Families in the snapshot that the program no longer defines the same way.
    pub dropped_families: usize,
}

fn kind_code(k: MetricKind) -> u8 {
    match k {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
        MetricKind::Summary => 3,
    }
}

/// The parts of a family's definition its stored series depend on.
fn write_family(w: &mut Writer, f: &Family) {
    w.str(&f.name);
    w.u8(kind_code(f.kind));
    w.u32(f.label_names.len() as u32);
    for l in &f.label_names {
        w.str(l);
    }
    w.u32(f.buckets.len() as u32);
    for b in &f.buckets {
        w.f64(*b);
    }
    let (max_age, age_buckets) = match f.kind {
        MetricKind::Summary => (f.max_age.as_millis() as u64, f.age_buckets as u32),
        _ => (0, 0),
    };
    w.u64(max_age);
    w.u32(age_buckets);
    // Only a family that expires needs its series' last update: a counter's 8 bytes are most
    // of its compressed size otherwise.
    w.bool(timed(f));
}

fn timed(f: &Family) -> bool {
    f.expire_after.is_some()
}

/// Whether `f` stores its series the way the snapshot's family header says, and whether the
/// snapshot's series carry their last update.
fn same_layout(r: &mut Reader<'_>, f: Option<&Family>) -> Result<(bool, bool), Corrupt> {
    let kind = r.u8()?;
    let n = r.count(4)?;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        labels.push(r.str()?);
    }
    let n = r.count(8)?;
    let mut buckets = Vec::with_capacity(n);
    for _ in 0..n {
        buckets.push(r.f64()?);
    }
    let max_age = r.u64()?;
    let age_buckets = r.u32()?;
    let timed = r.bool()?;
    let same = f.is_some_and(|f| {
        let (f_age, f_buckets) = match f.kind {
            MetricKind::Summary => (f.max_age.as_millis() as u64, f.age_buckets as u32),
            _ => (0, 0),
        };
        kind_code(f.kind) == kind
            && f.label_names.iter().map(String::as_str).eq(labels)
            && f.buckets == buckets
            && (f_age, f_buckets) == (max_age, age_buckets)
    });
    Ok((same, timed))
}

fn write_series(w: &mut Writer, key: &[u8], s: &Series, timed: bool) {
    w.bytes(key);
    if timed {
        w.u64(s.last_update_ms);
    }
    match &s.value {
        Value::Counter(c) => {
            w.f64(*c);
            exemplar::encode(w, &s.exemplars);
        }
        Value::Gauge { value, version } => {
            w.f64(*value);
            match version {
                None => w.bool(false),
                Some(v) => {
                    w.bool(true);
                    w.u64(v.ms);
                    w.u32(v.lane);
                    w.u64(v.offset);
                }
            }
        }
        Value::Histogram { counts, sum, count } => {
            w.u32(counts.len() as u32);
            counts.iter().for_each(|c| w.u64(*c));
            w.f64(*sum);
            w.u64(*count);
            exemplar::encode(w, &s.exemplars);
        }
        Value::Summary(sm) => sm.encode(w),
    }
}

/// `timed`: the series carries its last update; otherwise it gets `clock_ms`, the event clock
/// when the snapshot was taken.
fn read_series(
    r: &mut Reader<'_>,
    f: &Family,
    timed: bool,
    clock_ms: u64,
    exemplars: bool,
) -> Result<(Key, Series), Corrupt> {
    let mut slots = None;
    let key: Key = r.bytes()?.into();
    if key_values(&key).is_none_or(|v| v.len() != f.label_names.len()) {
        return Err(Corrupt);
    }
    let last_update_ms = if timed { r.u64()? } else { clock_ms };
    let value = match f.kind {
        MetricKind::Counter => {
            let c = r.f64()?;
            if exemplars {
                slots = exemplar::decode(r, 1)?;
            }
            Value::Counter(c)
        }
        MetricKind::Gauge => Value::Gauge {
            value: r.f64()?,
            version: if r.bool()? {
                Some(Version {
                    ms: r.u64()?,
                    lane: r.u32()?,
                    offset: r.u64()?,
                })
            } else {
                None
            },
        },
        MetricKind::Histogram => {
            let n = r.count(8)?;
            if n != f.buckets.len() + 1 {
                return Err(Corrupt);
            }
            let counts: Box<[u64]> = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
            let value = Value::Histogram {
                counts,
                sum: r.f64()?,
                count: r.u64()?,
            };
            if exemplars {
                slots = exemplar::decode(r, n)?;
            }
            value
        }
        MetricKind::Summary => {
            let s = Summary::decode(r)?;
            if s.slots.len() != f.age_buckets.max(1) {
                return Err(Corrupt);
            }
            Value::Summary(Box::new(s))
        }
    };
    Ok((
        key,
        Series {
            value,
            last_update_ms,
            updates: 0,
            dirty: false,
            exemplars: slots,
        },
    ))
}

/// Skips one series of a family no longer defined the same way.
fn skip_series(r: &mut Reader<'_>, kind: u8, timed: bool, exemplars: bool) -> Result<(), Corrupt> {
    r.bytes()?;
    if timed {
        r.u64()?;
    }
    match kind {
        0 => {
            r.f64()?;
            if exemplars {
                exemplar::skip(r)?;
            }
        }
        1 => {
            r.f64()?;
            if r.bool()? {
                r.take(20)?;
            }
        }
        2 => {
            let n = r.count(8)?;
            r.take(n * 8 + 16)?;
            if exemplars {
                exemplar::skip(r)?;
            }
        }
        3 => {
            Summary::skip(r)?;
        }
        _ => return Err(Corrupt),
    }
    Ok(())
}

fn header(w: &mut Writer, mode: u8, clock_ms: u64) {
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.u8(mode);
    w.u64(clock_ms);
}

/// Encodes every family of `aggs` that `program` defines; `clock_ms` is the event clock now.
pub fn encode(program: &Program, aggs: &Aggregates, clock_ms: u64) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + 48 * aggs.series_count()));
    header(&mut w, FULL, clock_ms);
    let families: Vec<(&Family, &FamilyState)> = program
        .families
        .iter()
        .zip(&aggs.families)
        .filter(|(_, s)| !s.series.is_empty() || s.overflowed > 0)
        .collect();
    w.u32(families.len() as u32);
    for (f, state) in families {
        write_family(&mut w, f);
        w.u64(state.overflowed);
        w.u32(0);
        w.u32(state.series.len() as u32);
        for (key, s) in &state.series {
            write_series(&mut w, key, s, timed(f));
        }
    }
    w.0
}

/// Encodes changes taken from an `Aggregates` under `program`.
pub fn encode_changes(program: &Program, changes: &Changes, clock_ms: u64) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + 48 * changes.series()));
    header(&mut w, CHANGES, clock_ms);
    let families: Vec<_> = program
        .families
        .iter()
        .zip(&changes.families)
        .filter(|(_, c)| !c.updated.is_empty() || !c.removed.is_empty() || c.overflowed.is_some())
        .collect();
    w.u32(families.len() as u32);
    for (f, c) in families {
        write_family(&mut w, f);
        // Overflow counts only grow: the maximum of old and new is the new one.
        w.u64(c.overflowed.unwrap_or(0));
        w.u32(c.removed.len() as u32);
        for k in &c.removed {
            w.bytes(k);
        }
        w.u32(c.updated.len() as u32);
        for (key, s) in &c.updated {
            write_series(&mut w, key, s, timed(f));
        }
    }
    w.0
}

/// One family's part of a decoded snapshot.
struct Section {
    fid: usize,
    overflowed: u64,
    removed: Vec<Key>,
    series: Vec<(Key, Series)>,
}

/// Restores a snapshot into `aggs`: a full one replaces its contents, changes apply on top of
/// them. Only families `program` defines the same way are restored. The whole input is decoded
/// before anything is applied, so on error `aggs` is left as it was.
pub fn restore(
    program: &Program,
    bytes: &[u8],
    aggs: &mut Aggregates,
) -> Result<Restored, SnapshotError> {
    let mut r = Reader(bytes);
    if r.take(4).map_err(|_| SnapshotError::BadMagic)? != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION && version != WITHOUT_EXEMPLARS {
        return Err(SnapshotError::Version(version));
    }
    let full = match r.u8()? {
        FULL => true,
        CHANGES => false,
        _ => return Err(SnapshotError::Corrupt),
    };
    let clock_ms = r.u64()?;
    let mut restored = Restored::default();
    let mut sections = Vec::new();
    for _ in 0..r.count(21)? {
        let name = r.str()?;
        let target = program.family_by_name(name);
        // The kind is the first byte after the name: what skipping a family goes by.
        let kind = Reader(r.0).u8()?;
        let (same, timed) = same_layout(&mut r, target.map(|i| &program.families[i]))?;
        if !same {
            r.u64()?;
            for _ in 0..r.count(4)? {
                r.bytes()?;
            }
            for _ in 0..r.count(4)? {
                skip_series(&mut r, kind, timed, version >= VERSION)?;
            }
            restored.dropped_families += 1;
            continue;
        }
        let fid = target.expect("same_layout needs a family");
        let f = &program.families[fid];
        let overflowed = r.u64()?;
        let n = r.count(4)?;
        let mut removed = Vec::with_capacity(n);
        for _ in 0..n {
            let key = r.bytes()?;
            if key_values(key).is_none_or(|v| v.len() != f.label_names.len()) {
                return Err(SnapshotError::Corrupt);
            }
            removed.push(key.into());
        }
        let n = r.count(12)?;
        let mut series = Vec::with_capacity(n);
        for _ in 0..n {
            series.push(read_series(&mut r, f, timed, clock_ms, version >= VERSION)?);
        }
        restored.series += series.len();
        restored.families += 1;
        sections.push(Section {
            fid,
            overflowed,
            removed,
            series,
        });
    }
    r.finish()?;
    if full {
        *aggs = Aggregates::new(program);
    } else {
        aggs.resize(program);
    }
    for s in sections {
        let state = &mut aggs.families[s.fid];
        // Overflow counts only grow: the larger of the two is the newer.
        state.overflowed = state.overflowed.max(s.overflowed);
        for key in &s.removed {
            state.series.remove(key);
        }
        state.series.reserve(s.series.len());
        for (key, series) in s.series {
            state.series.insert(key, series);
        }
        state.has_overflow = state
            .series
            .contains_key(&super::overflow_key(&program.families[s.fid]));
    }
    aggs.recount(program);
    aggs.mark_clean();
    Ok(restored)
}

/// Moves `aggs` from one program to the next (a rule reload): the families defined the same
/// way keep their series, the others start over.
pub fn remap(from: &Program, to: &Program, aggs: &Aggregates) -> Aggregates {
    let mut out = Aggregates::new(to);
    for (fid, f) in from.families.iter().enumerate() {
        let Some(tid) = to.family_by_name(&f.name) else {
            continue;
        };
        let t = &to.families[tid];
        let same = t.kind == f.kind
            && t.label_names == f.label_names
            && t.buckets == f.buckets
            && (t.kind != MetricKind::Summary
                || (t.max_age == f.max_age && t.age_buckets == f.age_buckets));
        if let (true, Some(state)) = (same, aggs.families.get(fid)) {
            let mut state = state.clone();
            state.dirty.clear();
            state.removed.clear();
            state.overflow_dirty = false;
            for s in state.series.values_mut() {
                s.dirty = false;
            }
            out.families[tid] = state;
        }
    }
    out.recount(to);
    out
}

impl Summary {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.slot_ms);
        w.u32(self.slots.len() as u32);
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

    fn decode(r: &mut Reader<'_>) -> Result<Summary, Corrupt> {
        let slot_ms = r.u64()?;
        let n = r.count(12)?;
        if n == 0 || n > 1024 || slot_ms == 0 {
            return Err(Corrupt);
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            let epoch = r.u64()?;
            let b = r.bytes()?;
            let h = if b.is_empty() {
                None
            } else {
                let mut h: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut Cursor::new(b))
                    .map_err(|_| Corrupt)?;
                // Deserialised histograms are fixed-range: a larger value than any seen before
                // the checkpoint would not fit (issue 10, item 1).
                h.auto(true);
                Some(h)
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

    fn skip(r: &mut Reader<'_>) -> Result<(), Corrupt> {
        r.u64()?;
        for _ in 0..r.count(12)? {
            r.u64()?;
            r.bytes()?;
        }
        r.take(16)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::{Stamp, push_label};
    use crate::rules::program::Op;
    use crate::rules::{SourceFile, compile};
    use crate::sink::exposition::{ExpositionFormat, render};

    fn update(a: &mut Aggregates, p: &Program, fid: usize, key: &[u8], op: Op, v: f64, ms: u64) {
        let at = Stamp {
            version: Version {
                ms,
                lane: 0,
                offset: ms,
            },
            event_ms: ms,
            now_ms: 5,
        };
        let mut local = Aggregates::new(p);
        local.update(fid, &p.families[fid], key, op, v, at);
        a.merge_from(&mut local, p, 5);
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

    fn label(v: &str) -> Vec<u8> {
        let mut k = Vec::new();
        push_label(&mut k, v);
        k
    }

    fn state() -> (Program, Aggregates) {
        let p = program(RULES);
        let mut a = Aggregates::new(&p);
        for (i, v) in ["x", "y", "z", "w"].iter().enumerate() {
            update(&mut a, &p, 0, &label(v), Op::CounterAdd, 1.0, i as u64);
            update(&mut a, &p, 1, &[], Op::GaugeSet, i as f64, i as u64);
            update(&mut a, &p, 2, &[], Op::Observe, i as f64, i as u64);
            update(&mut a, &p, 3, &[], Op::Observe, i as f64, i as u64);
        }
        (p, a)
    }

    fn text(p: &Program, a: &Aggregates) -> String {
        render(p, a, ExpositionFormat::Text, 5)
    }

    #[test]
    fn round_trip_gives_the_same_exposition() {
        let (p, mut a) = state();
        let bytes = encode(&p, &a, 0);
        let mut b = Aggregates::default();
        let r = restore(&p, &bytes, &mut b).unwrap();
        assert_eq!(
            r,
            Restored {
                families: 4,
                series: 6,
                dropped_families: 0
            }
        );
        assert_eq!(text(&p, &a), text(&p, &b));
        assert_eq!(b.families[0].overflowed, 2);
        // The overflow series is known again, so it does not take a place under the cap.
        update(&mut b, &p, 0, &label("new"), Op::CounterAdd, 1.0, 9);
        assert_eq!(b.families[0].overflowed, 3);
        assert!(a.take_changes().series() > 0);
    }

    #[test]
    fn changes_restore_on_top_of_a_full_snapshot() {
        let (p, mut a) = state();
        let full = encode(&p, &a, 0);
        a.take_changes();
        update(&mut a, &p, 0, &label("x"), Op::CounterAdd, 5.0, 10);
        update(&mut a, &p, 3, &[], Op::Observe, 7.0, 10);
        let delta = encode_changes(&p, &a.take_changes(), 0);
        assert!(
            delta.len() < full.len(),
            "{} vs {}",
            delta.len(),
            full.len()
        );
        let mut b = Aggregates::default();
        restore(&p, &full, &mut b).unwrap();
        restore(&p, &delta, &mut b).unwrap();
        assert_eq!(text(&p, &a), text(&p, &b));
    }

    #[test]
    fn changed_families_are_dropped_others_restored() {
        let (p, a) = state();
        let bytes = encode(&p, &a, 0);
        let changed = program(&RULES.replace("buckets: [1, 2]", "buckets: [1, 5]"));
        let mut b = Aggregates::default();
        let r = restore(&changed, &bytes, &mut b).unwrap();
        assert_eq!((r.families, r.dropped_families), (3, 1));
    }

    /// Issue 10, item 11: a summary whose window changed is a changed family; restoring its
    /// old slots kept every new observation out of the window.
    #[test]
    fn issue10_summary_window_change_is_a_changed_family() {
        let (p, a) = state();
        let bytes = encode(&p, &a, 0);
        let changed = program(&RULES.replace(
            "{name: s, type: summary, value: v}",
            "{name: s, type: summary, value: v, max_age: 2m}",
        ));
        let mut b = Aggregates::default();
        let r = restore(&changed, &bytes, &mut b).unwrap();
        assert_eq!((r.families, r.dropped_families), (3, 1));
        let again = remap(&p, &changed, &a);
        assert!(again.families[3].series.is_empty());
        assert_eq!(again.families[0].series.len(), 3);
    }

    /// Issue 10, item 1: a summary restored from a snapshot takes a value larger than any it
    /// had seen (its histograms came back fixed-range and the merge panicked).
    #[test]
    fn issue10_restored_summary_takes_larger_values() {
        let p = program(RULES);
        let mut a = Aggregates::new(&p);
        update(&mut a, &p, 3, &[], Op::Observe, 1.0, 0);
        let mut b = Aggregates::default();
        restore(&p, &encode(&p, &a, 0), &mut b).unwrap();
        update(&mut b, &p, 3, &[], Op::Observe, 1000.0, 1);
        update(&mut b, &p, 3, &[], Op::Observe, 1e9, 2);
        assert!(text(&p, &b).contains("s_count 3"));
    }

    /// Issue 10, item 2: decoding is total. Truncations, flipped bytes and a key that is not
    /// label values are errors, and the target is left as it was.
    #[test]
    fn issue10_corrupt_input_is_an_error_not_a_panic() {
        let (p, a) = state();
        let bytes = encode(&p, &a, 0);
        let mut b = Aggregates::default();
        assert_eq!(restore(&p, b"nope", &mut b), Err(SnapshotError::BadMagic));
        for cut in 5..bytes.len() {
            assert!(restore(&p, &bytes[..cut], &mut b).is_err(), "cut at {cut}");
        }
        let mut rng = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut flipped = bytes.clone();
            let i = (rng as usize) % flipped.len();
            flipped[i] ^= 1 << (rng >> 60 & 7);
            let mut c = Aggregates::default();
            if restore(&p, &flipped, &mut c).is_ok() {
                let _ = text(&p, &c);
            }
        }
        // One series whose key promises more bytes than it has.
        let mut w = Writer::default();
        header(&mut w, FULL, 0);
        w.u32(1);
        write_family(&mut w, &p.families[0]);
        w.u64(0);
        w.u32(0);
        w.u32(1);
        w.bytes(&[200, 0, 0, 0, b'x']);
        w.f64(1.0);
        assert_eq!(restore(&p, &w.0, &mut b), Err(SnapshotError::Corrupt));
        assert_eq!(b.series_count(), 0);
    }
}
