//! The repartition stage: trace events republished keyed by trace id to an internal topic, so
//! that one trace's events meet in one partition (and one gatherer) whichever partitions and
//! instances read them, as Kafka Streams' repartition topics do.
//!
//! Needed when producers key by service or host: a trace's events are then spread over
//! partitions, and a gatherer per source partition sees fragments. Sans-IO: this module says
//! how an event is written to the internal topic ([`encode`]), read back ([`decode`]), and
//! admitted by the consuming side ([`Merge`]); the service routes and reads the records.
//!
//! Exactly-once without transactions: a republished record carries its source (topic,
//! partition, offset, its index in a message of many events, and its rank among the trace
//! events of that record). After a crash or a move, the source partition is read again from
//! its checkpoint and its events are republished again; the consuming side drops every record
//! whose source position is not beyond the last one it admitted from that source partition
//! ([`Merge`], part of its own partition's checkpoint). One source partition is read by one
//! worker at a time and its records reach an internal partition in their order, so the
//! positions admitted from a source only grow.
//!
//! Time: an internal partition interleaves many sources, so an event's own time says nothing
//! of the others'. Traces close by a **watermark**: the lowest of the sources' latest event
//! times, over the sources within `max_lag` of the latest (a source that fell further behind,
//! or went quiet, stops holding every trace open). Sources not heard from yet count as being
//! at the first time the partition admitted, as long as fewer sources were heard from than
//! the input topics have partitions: an instance that starts late holds the others' traces
//! open for up to `max_lag` instead of finding them summarised without its events. What the gatherer emits then depends only
//! on the internal partition's records in order; summaries do not depend on how the sources
//! interleave (`traces.rs` names services by their first time). An event arriving after the
//! watermark has passed its window is counted as late: its trace may have been summarised
//! without it.

use std::collections::BTreeMap;

use crate::codec::{Corrupt, Reader, Writer};
use crate::correlate::traces::{TraceEvent, read_trace_id, write_trace_id};
use crate::extract::trace::SpanId;

const MAGIC: &[u8; 4] = b"LMRP";
const VERSION: u8 = 1;

/// The service's `traces.repartition` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The internal topic (created by whoever deploys logmill, like its other topics).
    pub topic: String,
    /// How far behind the latest source a source may be and still hold the watermark.
    pub max_lag_ms: u64,
}

pub const DEFAULT_MAX_LAG_MS: u64 = 5 * 60 * 1000;

/// Where a republished event was read: records of one source partition are admitted in this
/// order, once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub offset: i64,
    /// The event's index in a message of many (OTLP), else 0.
    pub index: u32,
    /// Its rank among the trace events of that event (one per rule gathering summaries).
    pub rank: u32,
}

/// A republished event, read back: its source, and what it says of its trace (texts in
/// `text`, which `event`'s ranges index).
#[derive(Debug, Clone)]
pub struct Republished {
    pub topic: Box<str>,
    pub partition: i32,
    pub position: Position,
    pub event: TraceEvent,
    pub text: String,
}

/// Writes one trace event (its texts in `text`) read at `topic`/`partition`/`position` as the
/// payload of an internal record.
pub fn encode(
    out: &mut Vec<u8>,
    (topic, partition): (&str, i32),
    position: Position,
    e: &TraceEvent,
    text: &str,
) {
    let get = |(a, b): (u32, u32)| text.get(a as usize..b as usize).unwrap_or_default();
    let mut w = Writer(std::mem::take(out));
    w.0.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.str(topic);
    w.i32(partition);
    w.i64(position.offset);
    w.u32(position.index);
    w.u32(position.rank);
    write_trace_id(&mut w, &e.trace);
    for s in [e.span, e.parent] {
        w.bool(s.is_some());
        w.u64(s.map_or(0, |s| s.0));
    }
    w.u64(e.time_ms);
    w.str(get(e.service));
    w.str(get(e.route));
    w.bool(e.error);
    w.bool(e.status.is_some());
    w.u32(u32::from(e.status.unwrap_or(0)));
    w.bool(e.duration_ms.is_some());
    w.f64(e.duration_ms.unwrap_or(0.0));
    *out = w.0;
}

/// Reads what [`encode`] wrote. Total: anything else is an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Republished, Corrupt> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC || r.u8()? != VERSION {
        return Err(Corrupt);
    }
    let topic: Box<str> = r.str()?.into();
    let partition = r.i32()?;
    let position = Position {
        offset: r.i64()?,
        index: r.u32()?,
        rank: r.u32()?,
    };
    let trace = read_trace_id(&mut r)?;
    let mut span = || -> Result<Option<SpanId>, Corrupt> {
        let some = r.bool()?;
        let v = r.u64()?;
        Ok(some.then_some(SpanId(v)))
    };
    let (span, parent) = (span()?, span()?);
    let time_ms = r.u64()?;
    let mut text = String::new();
    let mut push = |s: &str| {
        let at = text.len() as u32;
        text.push_str(s);
        (at, text.len() as u32)
    };
    let service = push(r.str()?);
    let route = push(r.str()?);
    let error = r.bool()?;
    let (has_status, status) = (r.bool()?, r.u32()?);
    let (has_duration, duration) = (r.bool()?, r.f64()?);
    r.finish()?;
    Ok(Republished {
        topic,
        partition,
        position,
        event: TraceEvent {
            record: 0,
            trace,
            span,
            parent,
            time_ms,
            service,
            route,
            error,
            status: has_status.then_some(status.min(u32::from(u16::MAX)) as u16),
            duration_ms: has_duration.then_some(duration),
        },
        text,
    })
}

/// What the consuming side makes of a republished event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Its source position was admitted before: a replay after a crash or a move.
    Duplicate,
    /// New: gather it with the clock at `watermark`. `late` when the watermark had passed its
    /// window already (its trace may have been summarised without it).
    Accept { watermark: u64, late: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct From {
    last: Position,
    /// The latest event time admitted from it.
    max_ms: u64,
}

/// What an internal partition has admitted, per source partition: the last position (for
/// dropping replays) and the latest event time (for the watermark). Part of the internal
/// partition's checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    sources: BTreeMap<(Box<str>, i32), From>,
    /// How many sources are at each latest time: the watermark is the first key within the
    /// lag of the last one.
    times: BTreeMap<u64, u32>,
    /// The first time admitted, where sources not heard from yet are taken to be.
    start_ms: Option<u64>,
    /// Changed since the last `encode`.
    pub dirty: bool,
    pub stats: MergeStats,
}

/// Counts for telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub admitted: u64,
    pub duplicates: u64,
    pub late: u64,
}

impl Merge {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Admits `r` or says it is a replay; `window_ms` is the gatherer's, for counting late
    /// events; `sources` is how many partitions the input topics have (0 when not known).
    pub fn admit(
        &mut self,
        r: &Republished,
        max_lag_ms: u64,
        window_ms: u64,
        sources: usize,
    ) -> Admit {
        let time = r.event.time_ms;
        self.start_ms.get_or_insert(time);
        let key = (r.topic.clone(), r.partition);
        match self.sources.get_mut(&key) {
            Some(f) if r.position <= f.last => {
                self.stats.duplicates += 1;
                return Admit::Duplicate;
            }
            Some(f) => {
                f.last = r.position;
                if time > f.max_ms {
                    let was = f.max_ms;
                    f.max_ms = time;
                    remove_time(&mut self.times, was);
                    *self.times.entry(time).or_default() += 1;
                }
            }
            None => {
                self.sources.insert(
                    key,
                    From {
                        last: r.position,
                        max_ms: time,
                    },
                );
                *self.times.entry(time).or_default() += 1;
            }
        }
        self.dirty = true;
        self.stats.admitted += 1;
        let watermark = self.watermark(max_lag_ms, sources);
        let late = time.saturating_add(window_ms) <= watermark;
        self.stats.late += u64::from(late);
        Admit::Accept { watermark, late }
    }

    /// The lowest latest time among the sources within `max_lag_ms` of the latest one, the
    /// sources not heard from yet (of `sources`) taken to be at the first time admitted.
    pub fn watermark(&self, max_lag_ms: u64, sources: usize) -> u64 {
        let Some((&latest, _)) = self.times.last_key_value() else {
            return 0;
        };
        let floor = latest.saturating_sub(max_lag_ms);
        let heard = self.times.range(floor..).next().map_or(latest, |(t, _)| *t);
        match self.start_ms {
            Some(start) if self.sources.len() < sources && start >= floor => heard.min(start),
            _ => heard,
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.bool(self.start_ms.is_some());
        w.u64(self.start_ms.unwrap_or(0));
        w.u32(self.sources.len() as u32);
        for ((topic, partition), f) in &self.sources {
            w.str(topic);
            w.i32(*partition);
            w.i64(f.last.offset);
            w.u32(f.last.index);
            w.u32(f.last.rank);
            w.u64(f.max_ms);
        }
    }

    /// Reads what [`Merge::encode`] wrote. Total.
    pub fn decode(r: &mut Reader<'_>) -> Result<Merge, Corrupt> {
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(Corrupt);
        }
        let mut m = Merge::default();
        let (has_start, start) = (r.bool()?, r.u64()?);
        m.start_ms = has_start.then_some(start);
        for _ in 0..r.count(28)? {
            let key = (r.str()?.into(), r.i32()?);
            let last = Position {
                offset: r.i64()?,
                index: r.u32()?,
                rank: r.u32()?,
            };
            let max_ms = r.u64()?;
            if m.sources.insert(key, From { last, max_ms }).is_some() {
                return Err(Corrupt);
            }
            *m.times.entry(max_ms).or_default() += 1;
        }
        Ok(m)
    }
}

fn remove_time(times: &mut BTreeMap<u64, u32>, t: u64) {
    if let Some(n) = times.get_mut(&t) {
        *n -= 1;
        if *n == 0 {
            times.remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::trace::TraceId;

    fn event(text: &mut String, trace: u128, time_ms: u64, service: &str) -> TraceEvent {
        let at = text.len() as u32;
        text.push_str(service);
        let service = (at, text.len() as u32);
        text.push_str("/cart");
        TraceEvent {
            record: 7,
            trace: TraceId::Hex(trace),
            span: Some(SpanId(0x1234)),
            parent: None,
            time_ms,
            service,
            route: (service.1, text.len() as u32),
            error: true,
            status: Some(503),
            duration_ms: Some(12.5),
        }
    }

    fn republished(source: i32, offset: i64, time_ms: u64) -> Republished {
        let mut text = String::new();
        let e = event(&mut text, 0xabc, time_ms, "cart");
        let mut bytes = Vec::new();
        let position = Position {
            offset,
            index: 0,
            rank: 0,
        };
        encode(&mut bytes, ("logs", source), position, &e, &text);
        decode(&bytes).unwrap()
    }

    #[test]
    fn an_event_reads_back_as_it_was_written() {
        let mut text = String::from("unrelated ");
        let e = event(
            &mut text,
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            1_000,
            "gateway",
        );
        let position = Position {
            offset: 42,
            index: 3,
            rank: 1,
        };
        let mut bytes = Vec::new();
        encode(&mut bytes, ("logs", 5), position, &e, &text);
        let r = decode(&bytes).unwrap();
        assert_eq!((&*r.topic, r.partition, r.position), ("logs", 5, position));
        let get = |(a, b): (u32, u32)| &r.text[a as usize..b as usize];
        assert_eq!(get(r.event.service), "gateway");
        assert_eq!(get(r.event.route), "/cart");
        assert_eq!(r.event.trace, e.trace);
        assert_eq!((r.event.span, r.event.parent), (e.span, None));
        assert_eq!(r.event.time_ms, 1_000);
        assert!(r.event.error);
        assert_eq!(
            (r.event.status, r.event.duration_ms),
            (Some(503), Some(12.5))
        );
        // Every truncation and any trailing byte is an error, not a panic.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{n}");
        }
        bytes.push(0);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn replays_of_a_source_are_dropped_by_position() {
        let mut m = Merge::default();
        let admit = |m: &mut Merge, source, offset, time| {
            m.admit(&republished(source, offset, time), 60_000, 1_000, 0)
        };
        assert!(matches!(admit(&mut m, 0, 10, 100), Admit::Accept { .. }));
        assert!(matches!(admit(&mut m, 0, 11, 110), Admit::Accept { .. }));
        // The source read again from an older checkpoint: its events come again.
        assert_eq!(admit(&mut m, 0, 10, 100), Admit::Duplicate);
        assert_eq!(admit(&mut m, 0, 11, 110), Admit::Duplicate);
        assert!(matches!(admit(&mut m, 0, 12, 120), Admit::Accept { .. }));
        // Another partition's offsets are its own.
        assert!(matches!(admit(&mut m, 1, 10, 100), Admit::Accept { .. }));
        // Two events of one record: told apart by index and rank.
        let mut r = republished(1, 10, 100);
        r.position.rank = 1;
        assert!(matches!(
            m.admit(&r, 60_000, 1_000, 0),
            Admit::Accept { .. }
        ));
        assert_eq!(m.admit(&r, 60_000, 1_000, 0), Admit::Duplicate);
        assert_eq!(
            m.stats,
            MergeStats {
                admitted: 5,
                duplicates: 3,
                late: 0
            }
        );
    }

    #[test]
    fn the_watermark_waits_for_the_slowest_source_within_the_lag() {
        let mut m = Merge::default();
        let mut offset = 0;
        let mut admit = |m: &mut Merge, source, time| {
            offset += 1;
            match m.admit(&republished(source, offset, time), 10_000, 1_000, 2) {
                Admit::Accept { watermark, late } => (watermark, late),
                Admit::Duplicate => panic!("a new position"),
            }
        };
        assert_eq!(admit(&mut m, 0, 1_000), (1_000, false));
        assert_eq!(admit(&mut m, 1, 500), (500, false));
        assert_eq!(admit(&mut m, 0, 5_000), (500, false));
        assert_eq!(admit(&mut m, 1, 4_000), (4_000, false));
        // Source 1 falls more than the lag behind: it no longer holds the others back, and
        // what it sends late is counted.
        assert_eq!(admit(&mut m, 0, 20_000), (20_000, false));
        assert_eq!(admit(&mut m, 1, 4_500), (20_000, true));
        assert_eq!(m.stats.late, 1);
    }

    #[test]
    fn sources_not_heard_from_hold_the_watermark_within_the_lag() {
        let mut m = Merge::default();
        let admit = |m: &mut Merge, source, offset, time| match m.admit(
            &republished(source, offset, time),
            10_000,
            1_000,
            3,
        ) {
            Admit::Accept { watermark, .. } => watermark,
            Admit::Duplicate => panic!("a new position"),
        };
        // Three input partitions, one heard from: the others may still bring older events.
        assert_eq!(admit(&mut m, 0, 1, 1_000), 1_000);
        assert_eq!(admit(&mut m, 0, 2, 5_000), 1_000);
        assert_eq!(admit(&mut m, 1, 1, 4_000), 1_000);
        // Past the lag, the silent one no longer holds anything open.
        assert_eq!(admit(&mut m, 0, 3, 12_000), 4_000);
        // Every source heard from: the lowest of theirs (the gatherer's clock never goes
        // back, whatever the watermark does).
        assert_eq!(admit(&mut m, 2, 1, 3_000), 3_000);
        assert_eq!(admit(&mut m, 1, 2, 11_000), 3_000);
        assert_eq!(admit(&mut m, 2, 2, 11_500), 11_000);
    }

    #[test]
    fn the_merge_state_reads_back_whole() {
        let mut m = Merge::default();
        for (s, o, t) in [(0, 5, 100), (1, 9, 300), (2, 1, 200), (0, 6, 150)] {
            m.admit(&republished(s, o, t), 60_000, 1_000, 4);
        }
        let mut w = Writer::default();
        m.encode(&mut w);
        let back = Merge::decode(&mut Reader(&w.0)).unwrap();
        assert_eq!(back.sources, m.sources);
        assert_eq!(back.times, m.times);
        assert_eq!(back.start_ms, Some(100));
        assert_eq!(back.watermark(60_000, 3), 150);
        // A fourth source not heard from yet holds the watermark at the first time admitted.
        assert_eq!(back.watermark(60_000, 4), 100);
        assert_eq!(
            back.clone()
                .admit(&republished(0, 6, 150), 60_000, 1_000, 4),
            Admit::Duplicate
        );
        for n in 0..w.0.len() {
            assert!(Merge::decode(&mut Reader(&w.0[..n])).is_err(), "{n}");
        }
    }
}
