//! What a worker keeps per partition between records: the reduction's windows and templates,
//! and the traces still open. Both move with the partition through the checkpoint.
//!
//! Encoded as the reduction state alone while no trace is open (the format older checkpoints
//! hold, so they restore as they are), else as both under a header of its own.

use crate::codec::{Corrupt, Reader, Writer};
use crate::correlate::traces::{Config, Gatherer};
use crate::reduce::Reducer;

const MAGIC: &[u8; 4] = b"LMPS";
const VERSION: u8 = 1;

#[derive(Debug, Default)]
pub struct PartitionState {
    pub reducer: Reducer,
    pub traces: Gatherer,
}

impl PartitionState {
    pub fn new(traces: Config) -> PartitionState {
        PartitionState {
            reducer: Reducer::new(),
            traces: Gatherer::new(traces),
        }
    }

    /// Changed since the last `encode`.
    pub fn dirty(&self) -> bool {
        self.reducer.dirty || self.traces.dirty
    }

    pub fn encode(&mut self) -> Vec<u8> {
        self.reducer.dirty = false;
        self.traces.dirty = false;
        let reducer = self.reducer.encode();
        if self.traces.open_traces() == 0 {
            return reducer;
        }
        let mut w = Writer(Vec::with_capacity(reducer.len() + 64));
        w.0.extend_from_slice(MAGIC);
        w.u8(VERSION);
        w.bytes(&reducer);
        w.bytes(&self.traces.encode());
        w.0
    }

    /// Total: malformed input is an error, never a panic.
    pub fn decode(bytes: &[u8], traces: Config) -> Result<PartitionState, Corrupt> {
        if !bytes.starts_with(MAGIC) {
            return Ok(PartitionState {
                reducer: Reducer::decode(bytes)?,
                traces: Gatherer::new(traces),
            });
        }
        let mut r = Reader(&bytes[MAGIC.len()..]);
        if r.u8()? != VERSION {
            return Err(Corrupt);
        }
        let reducer = Reducer::decode(r.bytes()?)?;
        let traces = Gatherer::decode(r.bytes()?, traces)?;
        r.finish()?;
        Ok(PartitionState { reducer, traces })
    }
}
