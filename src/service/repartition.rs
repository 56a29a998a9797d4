//! The service's side of the repartition stage (`correlate::repartition`): a worker republishes
//! the trace events of the records it evaluates instead of gathering them, and gathers the
//! records of the repartition topic's partitions it owns, which no rule evaluates.

use std::collections::HashMap;
use std::sync::Arc;

use super::partition_state::{Caps, PartitionState};
use super::worker::Reached;
use crate::correlate::repartition::{self, Admit, Config, Position};
use crate::correlate::traces::TraceEvent;
use crate::decode::Part;
use crate::sink::kafka::Outputs;
use crate::source::kafka::OwnedRecord;

/// Splits the repartition topic's records off a batch: `(theirs, the rest)`, each in order.
pub(super) fn split_off(
    config: Option<&Config>,
    records: Vec<OwnedRecord>,
) -> (Vec<OwnedRecord>, Vec<OwnedRecord>) {
    match config {
        Some(c) if records.iter().any(|r| *r.topic == *c.topic) => {
            records.into_iter().partition(|r| *r.topic == *c.topic)
        }
        _ => (Vec::new(), records),
    }
}

/// Republishes a batch's trace events (texts in `text`), each keyed by its trace id and
/// carrying the record it was read from.
pub(super) fn republish(
    outputs: &Outputs,
    records: &[OwnedRecord],
    events: &[TraceEvent],
    text: &str,
) {
    let mut payload = Vec::new();
    let mut key = String::new();
    // Rank among the trace events of one record (one per rule that gathers summaries).
    let mut last: Option<(u32, u32)> = None;
    for e in events {
        let rec = &records[e.record as usize];
        let rank = match last {
            Some((r, k)) if r == e.record => k + 1,
            _ => 0,
        };
        last = Some((e.record, rank));
        let position = Position {
            offset: rec.offset,
            index: match rec.part {
                Part::Event(i) => i,
                Part::Whole | Part::Unreadable(_) => 0,
            },
            rank,
        };
        payload.clear();
        repartition::encode(&mut payload, (&rec.topic, rec.partition), position, e, text);
        key.clear();
        use std::fmt::Write;
        let _ = write!(key, "{}", e.trace);
        outputs.route_repartition(rec, key.as_bytes(), &payload);
        crate::telemetry::repartition("published", 1);
    }
}

/// What gathering the repartition topic's records gave: the summaries and edges each record's
/// watermark closed (ranges of `lines`), and where each partition's reading got to.
#[derive(Default)]
pub(super) struct Gathered {
    pub lines: String,
    /// `(index into the records, range of lines)`.
    pub closed: Vec<(usize, std::ops::Range<usize>)>,
    pub reached: Vec<Reached>,
}

/// Gathers the repartition topic's records into their partitions' traces: replays of what
/// was admitted are dropped, the rest is gathered with the clock at the partition's watermark.
/// A record that does not read is counted and skipped (it is logmill's own, never an event).
pub(super) fn gather(
    (config, sources): (&Config, usize),
    caps: Caps,
    records: &[OwnedRecord],
    states: &mut HashMap<(Arc<str>, i32), PartitionState>,
) -> Gathered {
    let mut g = Gathered::default();
    let (mut duplicates, mut late, mut malformed) = (0, 0, 0);
    for (i, rec) in records.iter().enumerate() {
        super::worker::reach(&mut g.reached, rec);
        let Ok(r) = repartition::decode(&rec.payload) else {
            malformed += 1;
            tracing::warn!(
                partition = rec.partition,
                offset = rec.offset,
                "a record of the repartition topic is not a republished trace event: skipped"
            );
            continue;
        };
        let state = states
            .entry((Arc::clone(&rec.topic), rec.partition))
            .or_insert_with(|| PartitionState::new(caps));
        match state
            .merge
            .admit(&r, config.max_lag_ms, caps.traces.window_ms, sources)
        {
            Admit::Duplicate => duplicates += 1,
            Admit::Accept { watermark, late: l } => {
                late += u64::from(l);
                let at = g.lines.len();
                state
                    .traces
                    .observe_at(&r.event, &r.text, &mut g.lines, watermark);
                if g.lines.len() > at {
                    g.closed.push((i, at..g.lines.len()));
                }
            }
        }
    }
    let admitted = records.len() as u64 - duplicates - malformed;
    crate::telemetry::repartition("admitted", admitted);
    crate::telemetry::repartition("duplicate", duplicates);
    crate::telemetry::repartition("late", late);
    crate::telemetry::repartition("malformed", malformed);
    g
}
