//! One rule set over a few events, the way `logmill test` and `logmill shadow` see it: the
//! engine, then the reduction as one partition in line order (the end of the input closes its
//! windows and decides its held traces), and each event's outcome in words.

use std::sync::Arc;

use logmill::decode::{InputFormat, Limits};
use logmill::derive::{Aggregates, Version};
use logmill::engine::split::Splitting;
use logmill::engine::{Engine, Record};
use logmill::reduce::reducer::Out;
use logmill::reduce::{Fate, Reducer, Reduction, Source, Summary, Verdict};
use logmill::rules::Program;

/// The events of a sample file: its non-empty lines, without a trailing `\r`.
pub fn events(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

pub struct Evaluated {
    pub engine: Engine,
    /// The engine's aggregates, merged.
    pub aggregates: Aggregates,
    /// Per event: `keep`, `drop`, `dead_letter`, or the reduction action that removed it
    /// (`sampled`, `deduped`, `throttled`, `patterned`).
    pub outcomes: Vec<&'static str>,
    pub summaries: Vec<Summary>,
    /// The events `outcomes` are of, when the lines held messages of many events (else the
    /// lines themselves are).
    pub split: Option<Vec<Vec<u8>>>,
}

/// Evaluates `lines` read from `topic`; `profile` measures each rule's time (`rule_nanos`).
pub fn evaluate(program: &Arc<Program>, topic: &str, lines: &[&[u8]], profile: bool) -> Evaluated {
    let mut engine = Engine::new(Arc::clone(program), InputFormat::Auto, Limits::default());
    if profile {
        engine.profile_rules();
    }
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Record {
            payload: l,
            topic,
            version: Version {
                offset: i as u64,
                ..Version::default()
            },
            event_ms: 0,
            part: logmill::decode::Part::Whole,
        })
        .collect();
    // Lines that are messages of many events (OTLP JSON) are evaluated as their events.
    let mut splitting = Splitting::default();
    let records: Vec<Record> = splitting
        .records(&engine, &records)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let split = (records.len() != lines.len()
        || records
            .iter()
            .any(|r| r.part != logmill::decode::Part::Whole))
    .then(|| records.iter().map(|r| r.payload.to_vec()).collect());
    let mut fates = Vec::new();
    engine.process(&records, 0, &mut fates);
    let mut reducer = Reducer::new();
    let mut reduction = Reduction::new(program);
    let mut outs = Vec::new();
    reducer.batch(
        program,
        &engine.asks,
        &engine.text,
        |i| {
            (
                records[i].payload,
                0,
                Source {
                    partition: 0,
                    offset: i as i64,
                    timestamp_ms: None,
                    part: logmill::decode::Part::Whole,
                },
            )
        },
        &mut reduction,
        &mut outs,
    );
    let mut summaries: Vec<Summary> = Vec::new();
    let mut verdicts = vec![None; records.len()];
    // A held event's fate is its trace's: kept if released, sampled out otherwise.
    let mut released = std::collections::HashSet::new();
    for o in outs {
        match o {
            Out::Decided(i, v) => verdicts[i] = Some(v),
            Out::Summary(s) => summaries.push(*s),
            Out::Released(h) => {
                released.insert(h.offset);
            }
        }
    }
    reducer.flush(program, 0, &mut reduction, &mut summaries);
    released.extend(reducer.released.drain(..).map(|h| h.offset));
    engine.counters.reduction = reduction;
    let mut aggregates = Aggregates::new(program);
    aggregates.merge_from(&mut engine.local, program, 0);
    let outcomes = fates
        .iter()
        .zip(&verdicts)
        .enumerate()
        .map(|(i, (f, v))| match (f, v) {
            (Fate::Keep, Some(Verdict::Held)) if released.contains(&(i as i64)) => "keep",
            (Fate::Keep, Some(Verdict::Held)) => "sampled",
            _ => logmill::reduce::outcome(f, v.as_ref()),
        })
        .collect();
    Evaluated {
        engine,
        aggregates,
        outcomes,
        summaries,
        split,
    }
}
