//! What a worker keeps per partition between records: the reduction's windows and templates,
//! the traces still open, and the traces `keep_traces` holds. All move with the partition
//! through the checkpoint.
//!
//! Encoded as the reduction state alone while no trace is open or held (the format older
//! checkpoints hold, so they restore as they are), else as all three under a header of its
//! own, which starts with where the held events are to be read again from (`retain_from`), so
//! the coordinator can seek there without decoding the rest.

use crate::codec::{Corrupt, Reader, Writer};
use crate::correlate::traces::{Config as TracesConfig, Gatherer};
use crate::reduce::Reducer;
use crate::reduce::retain::{RetainConfig, Retention};

const MAGIC: &[u8; 4] = b"LMPS";
/// 1: reducer and traces; 2: `retain_from`, reducer, traces, retention.
const VERSION: u8 = 2;

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
    /// Records before this offset were counted before the state was restored: they are read
    /// again only for the events `keep_traces` held (`Retention::rehold`).
    pub counted_from: Option<i64>,
}

impl PartitionState {
    pub fn new(caps: Caps) -> PartitionState {
        PartitionState {
            reducer: Reducer::with_retention(caps.retain),
            traces: Gatherer::new(caps.traces),
            counted_from: None,
        }
    }

    /// Changed since the last `encode`.
    pub fn dirty(&self) -> bool {
        self.reducer.dirty || self.traces.dirty || self.reducer.retention.dirty
    }

    pub fn encode(&mut self) -> Vec<u8> {
        self.reducer.dirty = false;
        self.traces.dirty = false;
        self.reducer.retention.dirty = false;
        let reducer = self.reducer.encode();
        let retention = &self.reducer.retention;
        if self.traces.open_traces() == 0 && retention.is_empty() {
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
        w.0
    }

    /// Where the log is to be read again from for the held events of an encoded state, if
    /// it holds any. Reads the header only.
    pub fn retain_from(bytes: &[u8]) -> Option<i64> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        if r.u8().ok()? != VERSION {
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
        if version != 1 && version != VERSION {
            return Err(Corrupt);
        }
        if version == VERSION {
            r.i64()?;
        }
        let mut reducer = Reducer::decode(r.bytes()?)?;
        let traces = Gatherer::decode(r.bytes()?, caps.traces)?;
        reducer.retention = if version == VERSION {
            let mut rr = Reader(r.bytes()?);
            let t = Retention::decode(&mut rr, caps.retain)?;
            rr.finish()?;
            t
        } else {
            Retention::new(caps.retain)
        };
        r.finish()?;
        Ok(PartitionState {
            reducer,
            traces,
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
