//! What a worker keeps per partition between records: the reduction's windows and templates,
//! the traces still open, the traces `keep_traces` holds, and for a partition of the
//! repartition topic what it admitted from each source partition. All move with the partition
//! through the checkpoint.
//!
//! Encoded as the reduction state alone while no trace is open or held (the format older
//! checkpoints hold, so they restore as they are), else as all three under a header of its
//! own, which starts with where the held events are to be read again from (`retain_from`), so
//! the coordinator can seek there without decoding the rest.

use crate::codec::{Corrupt, Reader, Writer};
use crate::correlate::repartition::Merge;
use crate::correlate::traces::{Config as TracesConfig, Gatherer};
use crate::reduce::Reducer;
use crate::reduce::retain::{RetainConfig, Retention};

const MAGIC: &[u8; 4] = b"LMPS";
/// 1: reducer and traces; 2: `retain_from`, reducer, traces, retention; 3: the same and the
/// repartition merge.
const VERSION: u8 = 3;

/// The caps of a partition's state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub traces: TracesConfig,
    pub retain: RetainConfig,
    /// How long records wait for a CRI line's last part (`input.cri_wait`), on the wall clock.
    pub cri_wait: std::time::Duration,
}

#[derive(Debug, Default)]
pub struct PartitionState {
    pub reducer: Reducer,
    pub traces: Gatherer,
    /// A partition of the repartition topic: the last position and latest time admitted
    /// from each source partition (`correlate::repartition`).
    pub merge: Merge,
    /// Records before this offset were counted before the state was restored: they are read
    /// again only for the events `keep_traces` held (`Retention::rehold`).
    pub counted_from: Option<i64>,
}

impl PartitionState {
    pub fn new(caps: Caps) -> PartitionState {
        PartitionState {
            reducer: Reducer::with_retention(caps.retain),
            traces: Gatherer::new(caps.traces),
            merge: Merge::default(),
            counted_from: None,
        }
    }

    /// Changed since the last `encode`.
    pub fn dirty(&self) -> bool {
        self.reducer.dirty || self.traces.dirty || self.reducer.retention.dirty || self.merge.dirty
    }

    pub fn encode(&mut self) -> Vec<u8> {
        self.reducer.dirty = false;
        self.traces.dirty = false;
        self.reducer.retention.dirty = false;
        self.merge.dirty = false;
        let reducer = self.reducer.encode();
        let retention = &self.reducer.retention;
        if self.traces.open_traces() == 0 && retention.is_empty() && self.merge.is_empty() {
            return reducer;
        }
        let mut w = Writer(Vec::with_capacity(reducer.len() + 64));
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.i64(retention.retain_from().unwrap_or(-1));
        w.bytes(&reducer);
        w.bytes(&self.traces.encode());
        let mut r = Writer::default();
        retention.encode(&mut r);
        w.bytes(&r.0);
        let mut m = Writer::default();
        self.merge.encode(&mut m);
        w.bytes(&m.0);
        w.0
    }

    /// Where the log is to be read again from for the held events of an encoded state, if
    /// it holds any. Reads the header only.
    pub fn retain_from(bytes: &[u8]) -> Option<i64> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        if r.u8().ok()? < 2 {
            return None;
        }
        r.i64().ok().filter(|o| *o >= 0)
    }

    /// Total: malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8], caps: Caps) -> Result<PartitionState, Corrupt> {
        if !bytes.starts_with(MAGIC) {
            let mut s = PartitionState::new(caps);
            s.reducer = Reducer::decode(bytes)?;
            s.reducer.retention = Retention::new(caps.retain);
            return Ok(s);
        }
        let mut r = Reader(&bytes[MAGIC.len()..]);
        let version = r.u8()?;
        if !(1..=VERSION).contains(&version) {
            return Err(Corrupt);
        }
        if version >= 2 {
            r.i64()?;
        }
        let mut reducer = Reducer::decode(r.bytes()?)?;
        let traces = Gatherer::decode(r.bytes()?, caps.traces)?;
        reducer.retention = if version >= 2 {
            let mut rr = Reader(r.bytes()?);
            let t = Retention::decode(&mut rr, caps.retain)?;
            rr.finish()?;
            t
        } else {
            Retention::new(caps.retain)
        };
        let merge = if version >= 3 {
            let mut mr = Reader(r.bytes()?);
            let m = Merge::decode(&mut mr)?;
            mr.finish()?;
            m
        } else {
            Merge::default()
        };
        r.finish()?;
        Ok(PartitionState {
            reducer,
            traces,
            merge,
            counted_from: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_is_the_reducers_own_format() {
        let mut s = PartitionState::new(Caps::default());
        let bytes = s.encode();
        assert!(!bytes.starts_with(MAGIC));
        assert_eq!(PartitionState::retain_from(&bytes), None);
        let back = PartitionState::decode(&bytes, Caps::default()).unwrap();
        assert_eq!(back.reducer.retention.open_traces(), 0);
    }

    #[test]
    fn issue8_a_repartition_partitions_merge_travels_with_it() {
        use crate::correlate::repartition::{self, Admit, Position};
        use crate::correlate::traces::TraceEvent;
        use crate::extract::trace::TraceId;
        let mut s = PartitionState::new(Caps::default());
        let e = TraceEvent {
            record: 0,
            trace: TraceId::Hex(0xabc),
            span: None,
            parent: None,
            time_ms: 1_000,
            service: (0, 4),
            route: (4, 4),
            error: false,
            status: None,
            duration_ms: None,
        };
        let mut bytes = Vec::new();
        let at = Position {
            offset: 9,
            ..Position::default()
        };
        repartition::encode(&mut bytes, ("logs", 3), at, &e, "cart");
        let r = repartition::decode(&bytes).unwrap();
        assert!(matches!(
            s.merge.admit(&r, 60_000, 1_000, 1),
            Admit::Accept { .. }
        ));
        assert!(s.dirty());
        let encoded = s.encode();
        assert!(
            encoded.starts_with(MAGIC),
            "no longer the reducer's bytes alone"
        );
        let mut back = PartitionState::decode(&encoded, Caps::default()).unwrap();
        assert_eq!(back.merge.admit(&r, 60_000, 1_000, 1), Admit::Duplicate);
    }

    #[test]
    fn decoding_is_total() {
        let mut s = PartitionState::new(Caps::default());
        let mut bytes = s.encode();
        bytes.splice(0..0, MAGIC.iter().copied().chain([VERSION]));
        for n in 0..bytes.len() {
            let _ = PartitionState::decode(&bytes[..n], Caps::default());
            let _ = PartitionState::retain_from(&bytes[..n]);
        }
    }
}
