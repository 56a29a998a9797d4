//! Messages that hold many events (the OpenTelemetry Collector's OTLP, `decode::otlp`) become
//! one record per event before the engine, each with its `Part`, sharing the message's offset.
//!
//! The engine's contract stays one fate per record, and every stage after it (reduction,
//! traces, outputs) keeps working per event. What makes this exactly-once is that **a message's
//! events are always in the same batch**: a batch is split whole, so a checkpoint (taken
//! between batches) covers all of a message's events or none of them, and the offset it
//! records is the message's.

use std::ops::Range;

use super::{Engine, Record};
use crate::decode::cri;
use crate::decode::otlp::{Encoding, Splitter};
use crate::decode::{DecodeError, Part};

impl Engine {
    /// How `topic`'s record `payload` is written when it is a message of many events.
    pub fn many(&self, topic: &str, payload: &[u8]) -> Option<Encoding> {
        self.decoder.many(topic, payload)
    }
}

/// How long, in event time, a CRI line's first part waits for its last across batches.
/// Runtimes write a line's parts together; this covers a shipper's delays.
pub const CRI_GRACE_MS: u64 = 10_000;
/// A partition's records carried over at most, from a line's first part to the batch's end.
pub const CRI_MAX_CARRIED: usize = 10_000;

/// Which records of `batch` wait for the partition's next batch (`true`): from the first part
/// of a CRI line whose last part is not in the batch, every later record of its topic and
/// partition (see `cri::unfinished_runs`). The service carries them, so a line cut by a poll
/// is joined whole rather than dead-lettered; what they are not is counted, and the checkpoint
/// ends before them.
pub fn cri_carry(engine: &Engine, batch: &[Record<'_>]) -> Option<Vec<bool>> {
    let items: Vec<cri::Item> = batch
        .iter()
        .map(|r| cri::Item {
            topic: r.topic,
            lane: r.version.lane,
            event_ms: r.event_ms,
            line: engine.decoder.cri_line(r.topic, r.payload),
        })
        .collect();
    if !items.iter().any(|i| i.line.is_some_and(|l| l.partial)) {
        return None;
    }
    let max = engine.decoder.limits().max_event_bytes;
    let mut carry = vec![false; batch.len()];
    let mut any = false;
    for (lane, first) in cri::unfinished_runs(&items, CRI_GRACE_MS, max) {
        let topic = batch[first].topic;
        let of_partition = |i: &usize| batch[*i].version.lane == lane && batch[*i].topic == topic;
        let n = (first..batch.len()).filter(of_partition).count();
        if n > CRI_MAX_CARRIED {
            continue;
        }
        for i in (first..batch.len()).filter(of_partition) {
            carry[i] = true;
        }
        any = true;
    }
    any.then_some(carry)
}

/// Calls `each` with what `payload` becomes: itself when it is one event; each of its events
/// when it is a message of many; or the reason it is neither (a dead letter: a message that
/// does not decode, or one that holds no event).
pub fn parts(
    engine: &Engine,
    splitter: &mut Splitter,
    topic: &str,
    payload: &[u8],
    mut each: impl FnMut(Part, &[u8]),
) {
    let Some(encoding) = engine.many(topic, payload) else {
        return each(Part::Whole, payload);
    };
    let max = engine.decoder.limits().max_event_bytes;
    match splitter.split(payload, encoding, max) {
        Err(e) => each(Part::Unreadable(e), payload),
        Ok(()) if splitter.events.is_empty() => each(Part::Unreadable(DecodeError::Empty), payload),
        Ok(()) => {
            for i in 0..splitter.events.len() {
                each(Part::Event(i as u32), splitter.event(i).as_bytes());
            }
        }
    }
}

/// Plans the split of borrowed records (`(topic, payload)` in order): `(record, part, its
/// text)` per record after the split, an event's text a range of `text`. What
/// `Splitting::records` and `lines` build their records from.
fn plan<'a>(
    engine: &Engine,
    splitter: &mut Splitter,
    records: impl Iterator<Item = (&'a str, &'a [u8])>,
    text: &mut String,
    plan: &mut Vec<(usize, Part, Option<Range<usize>>)>,
) {
    text.clear();
    plan.clear();
    for (i, (topic, payload)) in records.enumerate() {
        parts(engine, splitter, topic, payload, |part, bytes| {
            let range = matches!(part, Part::Event(_)).then(|| {
                let at = text.len();
                // Events are rendered JSON: valid UTF-8.
                text.push_str(std::str::from_utf8(bytes).expect("rendered as text"));
                at..text.len()
            });
            plan.push((i, part, range));
        });
    }
}

/// Splits borrowed batches (explain, the playground, `check --sample`, rule tests); reused
/// across batches.
#[derive(Debug, Default)]
pub struct Splitting {
    splitter: Splitter,
    text: String,
    plan: Vec<(usize, Part, Option<Range<usize>>)>,
}

impl Splitting {
    /// The batch's records with each message of many events replaced by its events, each
    /// with the index of the record it came from.
    pub fn records<'a>(
        &'a mut self,
        engine: &Engine,
        batch: &[Record<'a>],
    ) -> Vec<(u32, Record<'a>)> {
        plan(
            engine,
            &mut self.splitter,
            batch.iter().map(|r| (r.topic, r.payload)),
            &mut self.text,
            &mut self.plan,
        );
        let text = &self.text;
        self.plan
            .iter()
            .map(|(i, part, range)| {
                let rec = batch[*i];
                let payload = match range {
                    Some(r) => text[r.clone()].as_bytes(),
                    None => rec.payload,
                };
                (
                    *i as u32,
                    Record {
                        payload,
                        part: *part,
                        ..rec
                    },
                )
            })
            .collect()
    }
}

/// Input lines `(offset, event, raw line)` (`source::file::lines`) with each message of many
/// events replaced by its events (`(offset, event, event, part)`), their text in `text`.
pub fn lines<'a>(
    engine: &Engine,
    splitter: &mut Splitter,
    topic: &'a str,
    lines: &[(usize, &'a [u8], &'a [u8])],
    text: &'a mut String,
) -> Vec<(usize, &'a [u8], &'a [u8], Part)> {
    if !lines.iter().any(|l| engine.many(topic, l.1).is_some()) {
        return lines
            .iter()
            .map(|&(o, e, r)| (o, e, r, Part::Whole))
            .collect();
    }
    let mut planned = Vec::with_capacity(lines.len());
    plan(
        engine,
        splitter,
        lines.iter().map(|l| (topic, l.1)),
        text,
        &mut planned,
    );
    let text: &'a str = text;
    planned
        .into_iter()
        .map(|(i, part, range)| {
            let (off, event, raw) = lines[i];
            match range {
                Some(r) => (off, text[r.clone()].as_bytes(), text[r].as_bytes(), part),
                None => (off, event, raw, part),
            }
        })
        .collect()
}
