//! Replay's end of the pipeline, after the workers: the reduction of the chunks in line order
//! (`Writer`), and the sink that writes what is kept, the summaries and the dead letters, hands
//! the chunks' trace events to the tracer and the chunks' buffers back (`Sink`). With rules
//! that reduce, deciding is the one stage that runs in line order, and writing took a tenth of
//! its thread (copies into the output buffer, the kernel's into the page cache): the sink then
//! runs on a thread of its own behind the writer, which took the median wall time of
//! `gen mixed` 500,000 from 432 to 414 ms. Without, the writer's thread writes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::mpsc::SyncSender;

use anyhow::Result;
use logmill::correlate::traces::TraceEvent;
use logmill::reduce::reducer::Out;
use logmill::reduce::{Reducer, Reduction, Source, Verdict};
use logmill::rules::Program;

use super::ChunkOutput;

/// One partition's reduction (the input, in line order), decided as chunks come in order.
pub(super) struct Writer<'p> {
    pub program: &'p Program,
    pub reducer: Reducer,
    pub reduction: Reduction,
}

impl Writer<'_> {
    /// Decides a chunk's kept events, in order, into its `decided`: each after the summaries
    /// and held events it let out.
    pub(super) fn reduce(&mut self, out: &mut ChunkOutput) {
        let mut decided = std::mem::take(&mut out.decided);
        decided.reserve(out.asks.len());
        let chunk = &*out;
        let event = |i: usize| {
            let e = &chunk.events[i];
            let payload = &chunk.kept[e.start as usize..(e.start + e.payload) as usize];
            (
                payload,
                0,
                Source {
                    partition: 0,
                    offset: e.offset as i64,
                    timestamp_ms: None,
                    part: logmill::decode::Part::Whole,
                },
            )
        };
        // The workers numbered each ask by its event.
        self.reducer.batch(
            self.program,
            &chunk.asks,
            &chunk.text,
            event,
            &mut self.reduction,
            &mut decided,
        );
        out.decided = decided;
    }

    /// The end of the input closes every window: the held events it releases, then the
    /// summaries.
    pub(super) fn finish(&mut self) -> Vec<Out> {
        let mut summaries = Vec::new();
        self.reducer
            .flush(self.program, 0, &mut self.reduction, &mut summaries);
        let released = std::mem::take(&mut self.reducer.released);
        let released = released.into_iter().map(|h| Out::Released(Box::new(h)));
        released
            .chain(summaries.into_iter().map(|s| Out::Summary(Box::new(s))))
            .collect()
    }
}

/// What the sink is given: a chunk (with what was decided of its events, when rules reduce),
/// or what the end of the input let out.
pub(super) enum Piece {
    Chunk(ChunkOutput),
    End(Vec<Out>),
}

pub(super) struct Sink {
    pub kept: Option<BufWriter<File>>,
    pub dead: Option<BufWriter<File>>,
    /// The tracer's channel, while it takes chunks (it stops on an error, which its join
    /// returns; the chunks are still drained, so that no worker waits forever).
    pub traces: Option<SyncSender<(Vec<TraceEvent>, String)>>,
    /// Where a chunk's buffers go back to, for a worker's next chunk.
    pub spare: SyncSender<ChunkOutput>,
    /// Whether the chunks come with what was decided of their events.
    pub reduced: bool,
    pub format: Format,
}

impl Sink {
    pub(super) fn take(&mut self, piece: Piece) -> Result<()> {
        match piece {
            Piece::Chunk(out) => self.chunk(out),
            Piece::End(outs) => self.end(&outs),
        }
    }

    fn chunk(&mut self, mut out: ChunkOutput) -> Result<()> {
        if let Some(f) = self.kept.as_mut() {
            match self.reduced {
                true => self.format.reduced(f, &out, &out.decided)?,
                false => f.write_all(&out.kept)?,
            }
        }
        if let Some(f) = self.dead.as_mut() {
            f.write_all(out.dead.as_bytes())?;
        }
        if let Some(tx) = &self.traces {
            let traces = std::mem::take(&mut out.traces);
            if tx.send((traces, std::mem::take(&mut out.text))).is_err() {
                self.traces = None;
            }
        }
        out.clear();
        let _ = self.spare.try_send(out);
        Ok(())
    }

    /// What the end of the input let out.
    fn end(&mut self, outs: &[Out]) -> Result<()> {
        let Some(f) = self.kept.as_mut() else {
            return Ok(());
        };
        for o in outs {
            match o {
                Out::Released(h) => self.format.event(f, &h.payload, None, None)?,
                Out::Summary(s) => self.format.summary(f, s)?,
                Out::Decided(..) => {}
            }
        }
        Ok(())
    }

    /// Everything written through to the files.
    pub(super) fn close(mut self) -> Result<()> {
        for f in [self.kept.as_mut(), self.dead.as_mut()]
            .into_iter()
            .flatten()
        {
            f.flush()?;
        }
        Ok(())
    }
}

/// How kept events and summaries are written.
pub(super) struct Format {
    /// Kept events as JSON objects (`--logs-json`), with their sample rate and template.
    pub json: bool,
    pub line: String,
}

impl Format {
    /// A reduced chunk's kept events. Events without an ask are kept as they are; a summary
    /// comes right before the event whose time closed its window, and held events of traces
    /// kept whole right before the event that kept them.
    fn reduced(&mut self, f: &mut BufWriter<File>, out: &ChunkOutput, outs: &[Out]) -> Result<()> {
        let mut next = 0;
        let mut held: Vec<&logmill::reduce::Summary> = Vec::new();
        let mut released: Vec<&[u8]> = Vec::new();
        for o in outs {
            match o {
                Out::Summary(s) => held.push(s),
                Out::Released(h) => released.push(&h.payload),
                Out::Decided(j, v) => {
                    self.events(f, out, next..*j)?;
                    for s in held.drain(..) {
                        self.summary(f, s)?;
                    }
                    for raw in released.drain(..) {
                        self.event(f, raw, None, None)?;
                    }
                    let e = &out.events[*j];
                    if let Verdict::Keep {
                        sample_rate,
                        template,
                    } = v
                    {
                        let raw = &out.kept[e.start as usize..e.end as usize];
                        self.event(f, raw, *sample_rate, *template)?;
                    }
                    next = j + 1;
                }
            }
        }
        self.events(f, out, next..out.events.len())
    }

    fn summary(&mut self, f: &mut BufWriter<File>, s: &logmill::reduce::Summary) -> Result<()> {
        self.line.clear();
        s.json(&mut self.line);
        f.write_all(self.line.as_bytes())?;
        Ok(())
    }

    /// Events `range` of `out`, kept as they are.
    fn events(
        &mut self,
        f: &mut BufWriter<File>,
        out: &ChunkOutput,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        let events = &out.events[range];
        if let (false, Some(first), Some(last)) = (self.json, events.first(), events.last()) {
            // One write for the run: the lines are contiguous in `kept`, each with its newline.
            f.write_all(&out.kept[first.start as usize..last.end as usize + 1])?;
            return Ok(());
        }
        for e in events {
            self.event(f, &out.kept[e.start as usize..e.end as usize], None, None)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        f: &mut BufWriter<File>,
        raw: &[u8],
        sample_rate: Option<u32>,
        template: Option<u64>,
    ) -> Result<()> {
        if !self.json {
            f.write_all(raw)?;
            f.write_all(b"\n")?;
            return Ok(());
        }
        self.line.clear();
        self.line.push_str("{\"event\":");
        logmill::sink::output::json_string(&mut self.line, &String::from_utf8_lossy(raw));
        if let Some(r) = sample_rate {
            self.line.push_str(&format!(",\"sample_rate\":{r}"));
        }
        if let Some(t) = template {
            self.line
                .push_str(&format!(",\"template_id\":\"{t:016x}\""));
        }
        self.line.push_str("}\n");
        f.write_all(self.line.as_bytes())?;
        Ok(())
    }
}
