//! Exemplars: the trace of a recent event behind a counter or a histogram bucket.
//!
//! Each counter series keeps one, each histogram bucket its own (so the slow tail leads to
//! slow traces). Which one is kept must not depend on which worker saw the event or in what
//! order partial aggregates were merged, so the latest by `Version` (event time, partition,
//! offset) wins, as for a gauge's `set`: replay, the service and a restart agree.

use super::Version;
use crate::codec::{Corrupt, Reader, Writer};
use crate::extract::trace::{SpanId, TraceId};

#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace: TraceId,
    pub span: Option<SpanId>,
    /// The observed value (1 for a counter that counts events).
    pub value: f64,
    /// The exemplar's timestamp: the event's time (its Kafka timestamp in the service, the
    /// wall clock when replay read it).
    pub ms: u64,
    /// Which event: the latest wins.
    pub version: Version,
}

/// A series' exemplars: one slot for a counter, one per bucket (with `+Inf`) for a histogram.
pub type Slots = Box<[Option<Exemplar>]>;

/// Puts `e` in `slot` of `slots` (created with `n` slots) unless a later one is there.
pub fn record(slots: &mut Option<Slots>, n: usize, slot: usize, e: Exemplar) {
    let slots = slots.get_or_insert_with(|| vec![None; n].into_boxed_slice());
    if let Some(s) = slots.get_mut(slot)
        && s.as_ref().is_none_or(|old| e.version >= old.version)
    {
        *s = Some(e);
    }
}

/// Puts `e` in `slot` unless a later one is there; returns what the slot held before, so that
/// the caller can put it back (an event that turned out not to be kept).
pub fn replace(slots: &mut Option<Slots>, n: usize, slot: usize, e: Exemplar) -> Option<Exemplar> {
    let slots = slots.get_or_insert_with(|| vec![None; n].into_boxed_slice());
    let s = slots.get_mut(slot)?;
    if s.as_ref().is_none_or(|old| e.version >= old.version) {
        s.replace(e)
    } else {
        s.clone()
    }
}

/// Merges `from` into `into`, slot by slot, the later exemplar winning.
pub fn merge(into: &mut Option<Slots>, from: Option<Slots>) {
    let Some(from) = from else { return };
    match into {
        None => *into = Some(from),
        Some(ours) if ours.len() == from.len() => {
            for (a, b) in ours.iter_mut().zip(from.into_vec()) {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|a| b.version >= a.version)
                {
                    *a = Some(b);
                }
            }
        }
        // A family redefined with other buckets: the newer layout's exemplars stand.
        Some(_) => {}
    }
}

pub fn encode(w: &mut Writer, slots: &Option<Slots>) {
    let Some(slots) = slots else {
        w.u32(0);
        return;
    };
    w.u32(slots.len() as u32);
    for s in slots.iter() {
        let Some(e) = s else {
            w.u8(0);
            continue;
        };
        match &e.trace {
            TraceId::Hex(id) => {
                w.u8(1);
                w.u64((id >> 64) as u64);
                w.u64(*id as u64);
            }
            TraceId::Custom(s) => {
                w.u8(2);
                w.str(s);
            }
        }
        match e.span {
            None => w.bool(false),
            Some(SpanId(s)) => {
                w.bool(true);
                w.u64(s);
            }
        }
        w.f64(e.value);
        w.u64(e.ms);
        w.u64(e.version.ms);
        w.u32(e.version.lane);
        w.u64(e.version.offset);
    }
}

/// Decodes what `encode` wrote; `n` is the number of slots the family has now (0 means
/// "any": the caller checks).
pub fn decode(r: &mut Reader<'_>, n: usize) -> Result<Option<Slots>, Corrupt> {
    let count = r.count(1)?;
    if count == 0 {
        return Ok(None);
    }
    if count != n {
        return Err(Corrupt);
    }
    let mut slots = Vec::with_capacity(count);
    for _ in 0..count {
        let trace = match r.u8()? {
            0 => {
                slots.push(None);
                continue;
            }
            1 => {
                let hi = r.u64()?;
                let lo = r.u64()?;
                TraceId::Hex((u128::from(hi) << 64) | u128::from(lo))
            }
            2 => match crate::extract::trace::custom(r.str()?) {
                Ok(id) => id,
                Err(_) => return Err(Corrupt),
            },
            _ => return Err(Corrupt),
        };
        let span = if r.bool()? {
            Some(SpanId(r.u64()?))
        } else {
            None
        };
        slots.push(Some(Exemplar {
            trace,
            span,
            value: r.f64()?,
            ms: r.u64()?,
            version: Version {
                ms: r.u64()?,
                lane: r.u32()?,
                offset: r.u64()?,
            },
        }));
    }
    Ok(Some(slots.into_boxed_slice()))
}

/// Skips what `encode` wrote.
pub fn skip(r: &mut Reader<'_>) -> Result<(), Corrupt> {
    for _ in 0..r.count(1)? {
        match r.u8()? {
            0 => continue,
            1 => {
                r.take(16)?;
            }
            2 => {
                r.str()?;
            }
            _ => return Err(Corrupt),
        }
        if r.bool()? {
            r.u64()?;
        }
        r.take(8 + 8 + 8 + 4 + 8)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(trace: u128, ms: u64, offset: u64) -> Exemplar {
        Exemplar {
            trace: TraceId::Hex(trace),
            span: Some(SpanId(7)),
            value: 0.25,
            ms,
            version: Version {
                ms,
                lane: 0,
                offset,
            },
        }
    }

    #[test]
    fn the_latest_wins_whatever_the_merge_order() {
        let (a, b, c) = (ex(1, 10, 0), ex(2, 20, 0), ex(3, 20, 5));
        let mut one = None;
        record(&mut one, 2, 0, a.clone());
        record(&mut one, 2, 1, c.clone());
        let mut two = None;
        record(&mut two, 2, 0, b.clone());
        record(&mut two, 2, 1, a.clone());
        let mut x = one.clone();
        merge(&mut x, two.clone());
        let mut y = two;
        merge(&mut y, one);
        assert_eq!(x, y);
        assert_eq!(x.unwrap().to_vec(), vec![Some(b), Some(c)]);
    }

    #[test]
    fn round_trip_and_corrupt_input() {
        let mut slots = None;
        record(&mut slots, 3, 2, ex(u128::MAX - 5, 1, 2));
        record(
            &mut slots,
            3,
            0,
            Exemplar {
                trace: TraceId::Custom("req-42".into()),
                span: None,
                ..ex(1, 1, 1)
            },
        );
        let mut w = Writer(Vec::new());
        encode(&mut w, &slots);
        encode(&mut w, &None);
        let mut r = Reader(&w.0);
        assert_eq!(decode(&mut r, 3).unwrap(), slots);
        assert_eq!(decode(&mut r, 3).unwrap(), None);
        assert!(r.is_empty());
        let mut r = Reader(&w.0);
        skip(&mut r).unwrap();
        skip(&mut r).unwrap();
        assert!(r.is_empty());
        assert!(decode(&mut Reader(&w.0), 4).is_err());
        for cut in 0..w.0.len() - 4 {
            let _ = decode(&mut Reader(&w.0[..cut]), 3);
        }
    }
}
