//! `logmill replay`: the engine over files or stdin, on every core.

mod writer;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use logmill::correlate::traces::{
    Config as TracesConfig, Gatherer, TOPIC as TRACES_TOPIC, TraceEvent,
};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::{Aggregates, Version};
use logmill::engine::{Counters, Engine, Record};
use logmill::reduce::{Ask, Fate, Reducer, Reduction};
use logmill::rules::Program;
use logmill::sink::exposition::{ExpositionFormat, render};
use logmill::sink::output::dead_letter_json;
use logmill::source::file::{Chunk, lines, read_chunks};
use writer::{Format, Piece, Sink, Writer};

pub struct Options {
    pub inputs: Vec<PathBuf>,
    pub format: InputFormat,
    /// `--envelope`: every input's records are in this envelope.
    pub envelopes: logmill::decode::envelope::Declared,
    pub limits: Limits,
    pub exposition: ExpositionFormat,
    pub metrics_out: Option<PathBuf>,
    pub logs_out: Option<PathBuf>,
    pub dead_letter_out: Option<PathBuf>,
    pub telemetry_out: Option<PathBuf>,
    pub threads: usize,
    pub quiet: bool,
    /// The topic every input is read as (`_topic`, `match.topic`); by default its path.
    pub topic: Option<String>,
    /// Kept events as JSON objects with what reduction says of them (`sample_rate`,
    /// `template_id`), instead of the events byte for byte.
    pub logs_json: bool,
    /// Replay's clock instead of the wall clock (`--clock-ms`).
    pub clock_ms: Option<u64>,
    /// Where per-trace summaries and service-graph edges go, and how they are gathered.
    pub traces_out: Option<PathBuf>,
    pub traces: TracesConfig,
    /// The caps of `keep_traces` (the whole input is one partition).
    pub retain: logmill::reduce::retain::RetainConfig,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const BATCH: usize = 1024;

/// What the workers and the writer end with: each worker's aggregates and counts, the bytes
/// read, and what reduction did.
type Finished = (Vec<(Aggregates, Counters)>, u64, Reduction);

#[derive(Default)]
struct ChunkOutput {
    id: u64,
    kept: Vec<u8>,
    dead: String,
    /// When rules reduce: every kept event, in order, for the writer to reduce.
    events: Vec<KeptEvent>,
    asks: Vec<Ask>,
    text: String,
    /// When rules gather traces: what each of the chunk's events says of its trace, in order
    /// (texts in `text`).
    traces: Vec<TraceEvent>,
    /// When rules reduce: what the writer decided of its events (see `Writer::reduce`). It
    /// goes round with the other buffers rather than being allocated for every chunk and
    /// freed on the sink's thread.
    decided: Vec<logmill::reduce::reducer::Out>,
}

/// A kept event of a chunk, for the reduction: its bytes in `kept` and where it came from
/// (what its rule asks of the reduction is in the chunk's `asks`, by event index).
struct KeptEvent {
    /// The line in `kept`, and a newline after it.
    start: u32,
    end: u32,
    /// The payload's length (the line without a `\r`).
    payload: u32,
    offset: u64,
}

impl ChunkOutput {
    /// Empty, its capacity kept for the next chunk.
    fn clear(&mut self) {
        self.kept.clear();
        self.dead.clear();
        self.events.clear();
        self.asks.clear();
        self.text.clear();
        self.traces.clear();
        self.decided.clear();
    }
}

pub fn run(program: Arc<Program>, opts: Options) -> Result<()> {
    let started = Instant::now();
    let telemetry = match &opts.telemetry_out {
        Some(_) => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("installing the self-telemetry recorder")?,
        ),
        None => None,
    };
    let want_kept = opts.logs_out.is_some();
    let want_dead = opts.dead_letter_out.is_some();
    // Reduction decides in line order, in the writer: the workers hand it every kept event.
    let reducing = program.rules.iter().any(|r| r.reduce.is_some());
    // So do trace summaries: the writer gathers what the workers' events say of their traces.
    let gathering = program.rules.iter().any(|r| r.trace.summaries);
    let names: Vec<String> = opts
        .inputs
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                "stdin".to_string()
            } else {
                p.display().to_string()
            }
        })
        .collect();
    let total_bytes: u64 = opts
        .inputs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = (!opts.quiet
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && total_bytes > 16 << 20)
        .then(|| {
            let bar = indicatif::ProgressBar::new(total_bytes);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template"),
            );
            bar
        });

    let kept_file = open_out(&opts.logs_out)?;
    let dead_file = open_out(&opts.dead_letter_out)?;
    let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(opts.threads * 2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    // With reduction the cores are kept busy by the workers and the writer together: a deeper
    // queue (measured: no faster) would only hold more chunks, each with its events' asks, in
    // memory.
    let depth = if reducing {
        opts.threads
    } else {
        opts.threads * 4
    };
    let (out_tx, out_rx) = sync_channel::<ChunkOutput>(depth);
    // Buffers go round rather than being allocated for every chunk: fresh ones cost a page
    // fault every 4 KiB, and the allocator hands their pages back when they are freed.
    let (spare_data_tx, spare_data_rx) = sync_channel::<Vec<u8>>(opts.threads * 2 + 2);
    let (spare_out_tx, spare_out_rx) = sync_channel::<ChunkOutput>(depth + opts.threads);
    let spare_out_rx = Arc::new(Mutex::new(spare_out_rx));

    let clock = opts.clock_ms.unwrap_or_else(now_ms);
    let mut gathered: Option<Gathered> = None;
    let (results, read, reduction) = std::thread::scope(|s| -> Result<Finished> {
        let reader = s.spawn(|| {
            let tx = chunk_tx;
            let spare_data_rx = spare_data_rx;
            let spare = || spare_data_rx.try_recv().ok();
            read_chunks(&opts.inputs, &tx, spare, |n| {
                if let Some(b) = &bar {
                    b.inc(n)
                }
            })
        });
        let mut workers = Vec::new();
        for _ in 0..opts.threads {
            let rx = Arc::clone(&chunk_rx);
            let tx = out_tx.clone();
            let (spare_data, spare_out) = (spare_data_tx.clone(), Arc::clone(&spare_out_rx));
            let program = Arc::clone(&program);
            let names = &names;
            let topic_name = opts.topic.as_deref();
            let (format, limits) = (opts.format, opts.limits);
            let envelopes = &opts.envelopes;
            workers.push(s.spawn(move || {
                let mut engine = Engine::new(Arc::clone(&program), format, limits);
                engine.declare_envelopes(envelopes);
                let mut splitter = logmill::decode::otlp::Splitter::default();
                let mut fates = Vec::with_capacity(BATCH);
                loop {
                    let chunk = match rx.lock().expect("reader never panics holding it").recv() {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                    let source = names[chunk.input].as_str();
                    let topic = topic_name.unwrap_or(source);
                    let base = ((chunk.input as u64) << 40) + chunk.offset;
                    let all: Vec<(usize, &[u8], &[u8])> = lines(&chunk.data).collect();
                    // Messages of many events (OTLP lines) become their events.
                    let mut events_text = String::new();
                    let all = logmill::engine::split::lines(
                        &engine,
                        &mut splitter,
                        topic,
                        &all,
                        &mut events_text,
                    );
                    let spare = spare_out.lock().ok().and_then(|rx| rx.try_recv().ok());
                    let mut out = spare.unwrap_or_default();
                    out.id = chunk.id;
                    // Most of a chunk is usually kept: one allocation, not a dozen.
                    if want_kept || reducing {
                        out.kept.reserve(chunk.data.len() + all.len());
                    }
                    // Sized for every line, so that they are not copied as they grow.
                    if reducing {
                        out.events.reserve(all.len());
                        out.asks.reserve(all.len());
                    }
                    if gathering {
                        out.traces.reserve(all.len());
                    }
                    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
                    let groups = batches(&all, |l| l.1);
                    let count = groups.len();
                    for (g, group) in groups.into_iter().enumerate() {
                        batch.clear();
                        // Replay has no event time: the wall clock stands in for it, and line
                        // order decides which gauge `set` wins.
                        let now = opts.clock_ms.unwrap_or_else(now_ms);
                        batch.extend(group.iter().map(|(off, l, _, part)| Record {
                            payload: l,
                            topic,
                            version: Version {
                                offset: base + *off as u64,
                                ..Version::default()
                            },
                            event_ms: now,
                            part: *part,
                        }));
                        engine.process(&batch, now, &mut fates);
                        // The batch's asks and trace events refer to its text: moved into the
                        // chunk's.
                        let shift = out.text.len() as u32;
                        if reducing || gathering {
                            // Room for the chunk's other batches too, at this one's size.
                            out.text.reserve(engine.text.len() * (count - g));
                            out.text.push_str(&engine.text);
                        }
                        for e in &engine.trace_events {
                            let mut e = e.clone();
                            for r in [&mut e.service, &mut e.route] {
                                *r = (r.0 + shift, r.1 + shift);
                            }
                            out.traces.push(e);
                        }
                        if reducing {
                            let mut asks = engine.asks.iter().peekable();
                            for (i, ((off, payload, raw, _), fate)) in
                                group.iter().zip(&fates).enumerate()
                            {
                                if *fate != Fate::Keep {
                                    continue;
                                }
                                if let Some(a) = asks.next_if(|a| a.record as usize == i) {
                                    let mut a = *a;
                                    // From here on the index of its event in the chunk.
                                    a.record = out.events.len() as u32;
                                    for r in
                                        [&mut a.message, &mut a.dedupe_text, &mut a.throttle_text]
                                    {
                                        *r = (r.0 + shift, r.1 + shift);
                                    }
                                    out.asks.push(a);
                                }
                                let start = out.kept.len() as u32;
                                out.kept.extend_from_slice(raw);
                                out.events.push(KeptEvent {
                                    start,
                                    end: out.kept.len() as u32,
                                    payload: payload.len() as u32,
                                    offset: base + *off as u64,
                                });
                                // Events kept as they are go out in runs, newlines and all.
                                out.kept.push(b'\n');
                            }
                        }
                        if (want_kept && !reducing) || want_dead {
                            for ((off, _, raw, _), fate) in group.iter().zip(&fates) {
                                match fate {
                                    Fate::Keep if want_kept && !reducing => {
                                        out.kept.extend_from_slice(raw);
                                        out.kept.push(b'\n');
                                    }
                                    Fate::DeadLetter(reason) if want_dead => dead_letter_json(
                                        &mut out.dead,
                                        *reason,
                                        reason.culprit(&program).as_ref(),
                                        source,
                                        chunk.offset + *off as u64,
                                        raw,
                                    ),
                                    _ => {}
                                }
                            }
                        }
                    }
                    if (want_kept || want_dead || reducing || gathering) && tx.send(out).is_err() {
                        break;
                    }
                    let _ = spare_data.try_send(chunk.data);
                }
                (engine.local, engine.counters)
            }));
        }
        drop((out_tx, spare_data_tx));
        // Traces are gathered, and their summaries read by rules, on a thread of their own
        // that takes the chunks in order from the sink, after the writer: the writer's
        // reduction and the gathering each took about half of what was the slowest thread.
        // A chunk's trace events and their texts, the rest of it left to the sink.
        let (trace_tx, trace_rx) = sync_channel::<(Vec<TraceEvent>, String)>(depth);
        let tracer = match gathering {
            true => {
                let file = open_out(&opts.traces_out)?;
                let (program, limits, config) = (Arc::clone(&program), opts.limits, opts.traces);
                Some(s.spawn(move || -> Result<Gathered> {
                    let mut g = Gathering::new(program, limits, config, file);
                    for (events, text) in trace_rx.iter() {
                        g.chunk(&events, &text, clock)?;
                    }
                    g.finish(clock)?;
                    if let Some(f) = g.file.as_mut() {
                        f.flush()?;
                    }
                    Ok(Gathered {
                        local: g.engine.local,
                        rule_matches: g.engine.counters.rule_matches,
                        stats: g.gatherer.stats,
                    })
                }))
            }
            false => {
                drop(trace_rx);
                None
            }
        };
        let sink = Sink {
            kept: kept_file,
            dead: dead_file,
            traces: tracer.is_some().then_some(trace_tx),
            spare: spare_out_tx,
            reduced: reducing,
            format: Format {
                json: opts.logs_json,
                line: String::new(),
            },
        };
        // With rules that reduce, the sink takes the chunks on a thread of its own, behind
        // the writer's decisions; else the writer's thread writes them itself.
        let (piece_tx, piece_rx) = sync_channel::<Piece>(depth);
        let (mut inline, behind) = match reducing {
            true => {
                let behind = s.spawn(move || -> Result<()> {
                    let mut sink = sink;
                    for piece in piece_rx.iter() {
                        sink.take(piece)?;
                    }
                    sink.close()
                });
                (None, Some(behind))
            }
            false => {
                drop(piece_rx);
                (Some(sink), None)
            }
        };
        // A sink that stopped on an error takes no more (it is reported below); the chunks
        // are still drained, so that no worker waits forever.
        let mut piece_tx = Some(piece_tx);
        let mut failed = None;
        let mut give = |piece: Piece| match (inline.as_mut(), &piece_tx) {
            (Some(sink), _) if failed.is_none() => failed = sink.take(piece).err(),
            (None, Some(tx)) if tx.send(piece).is_err() => piece_tx = None,
            _ => {}
        };
        // Outputs in input order while workers run, reduced on the way.
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        let mut writer = Writer {
            program: &program,
            reducer: {
                let mut r = Reducer::new();
                r.retention = logmill::reduce::retain::Retention::new(opts.retain);
                r
            },
            reduction: Reduction::new(&program),
        };
        for out in out_rx.iter() {
            pending.insert(out.id, out);
            while let Some(mut out) = pending.remove(&next) {
                if reducing {
                    writer.reduce(&mut out);
                }
                give(Piece::Chunk(out));
                next += 1;
            }
        }
        if reducing {
            give(Piece::End(writer.finish()));
        }
        drop(piece_tx);
        // Closing the sink closes the tracer's channel too.
        let written = match (inline, behind) {
            (Some(sink), _) => match failed {
                Some(e) => Err(e),
                None => sink.close(),
            },
            (None, Some(behind)) => behind.join().expect("sink panicked"),
            (None, None) => unreachable!("the sink is inline or behind"),
        };
        let reduction = writer.reduction;
        let results = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        let read = reader
            .join()
            .expect("reader panicked")
            .context("reading input")?;
        gathered = tracer
            .map(|t| t.join().expect("tracer panicked"))
            .transpose()?;
        written.context("writing outputs")?;
        Ok((results, read, reduction))
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }

    let now = opts.clock_ms.unwrap_or_else(now_ms);
    let mut global = Aggregates::new(&program);
    let mut counters = Counters::default();
    for (mut local, c) in results {
        global.merge_from(&mut local, &program, now);
        counters.absorb(&c);
    }
    counters.reduction = reduction;
    let trace_stats = match gathered {
        Some(mut g) => {
            global.merge_from(&mut g.local, &program, now);
            // Matches of the rules that read summaries are matches (no rule "matched nothing").
            for (a, b) in counters.rule_matches.iter_mut().zip(&g.rule_matches) {
                *a += b;
            }
            Some(g.stats)
        }
        None => None,
    };
    let exposition = render(&program, &global, opts.exposition, now);
    match &opts.metrics_out {
        Some(p) => {
            std::fs::write(p, &exposition).with_context(|| format!("writing {}", p.display()))?
        }
        None => std::io::stdout().lock().write_all(exposition.as_bytes())?,
    }
    if let (Some(p), Some(handle)) = (&opts.telemetry_out, telemetry) {
        logmill::telemetry::publish_totals(&program, &counters, &global);
        std::fs::write(p, handle.render()).with_context(|| format!("writing {}", p.display()))?;
    }
    if !opts.quiet {
        let secs = started.elapsed().as_secs_f64();
        let n = counters.events_in.max(1) as f64;
        eprintln!(
            "events {}, matched {} ({:.1}%), kept {}, dropped {} (reduction {:.1}%), dead-lettered {}, series {}; {:.2} s, {:.0} events/s, {:.1} MB/s",
            counters.events_in,
            counters.matched(),
            100.0 * counters.matched() as f64 / n,
            counters.kept,
            counters.dropped,
            100.0 * counters.dropped as f64 / n,
            counters.dead_lettered,
            global.series_count(),
            secs,
            counters.events_in as f64 / secs,
            read as f64 / secs / 1e6,
        );
        if reducing {
            eprintln!(
                "{}",
                logmill::report::reduction(&program, &counters.reduction)
            );
        }
        if let Some(t) = trace_stats {
            eprintln!(
                "traces: {} event(s) gathered, {} trace summaries ({} closed early at the cap), {} service-graph edges, {} span(s) or service(s) over the caps",
                t.events, t.summaries, t.evicted, t.edges, t.truncated
            );
        }
        for note in logmill::report::rule_notes(&program, &counters, "event") {
            eprintln!("{note}");
        }
    }
    Ok(())
}

/// The writer's end of trace gathering: one partition (the input, in line order). Summaries
/// and edges are written out and read back as events of `traces::TOPIC`, so rules derive
/// metrics from them.
struct Gathering {
    gatherer: Gatherer,
    engine: Engine,
    file: Option<std::io::BufWriter<std::fs::File>>,
    lines: String,
    fates: Vec<Fate>,
    seq: u64,
}

/// What the tracer ends with: its rules' aggregates and matches, and what it gathered.
struct Gathered {
    local: Aggregates,
    rule_matches: Vec<u64>,
    stats: logmill::correlate::traces::Stats,
}

impl Gathering {
    fn new(
        program: Arc<Program>,
        limits: Limits,
        config: TracesConfig,
        file: Option<std::io::BufWriter<std::fs::File>>,
    ) -> Gathering {
        let mut gatherer = Gatherer::new(config);
        // The engine below takes the summaries' values from where they were written.
        gatherer.layout = Some(Default::default());
        Gathering {
            gatherer,
            engine: Engine::new(
                program,
                InputFormat::Fixed(logmill::decode::Format::Json),
                limits,
            ),
            file,
            lines: String::new(),
            fates: Vec::new(),
            seq: 0,
        }
    }

    fn chunk(&mut self, events: &[TraceEvent], text: &str, now: u64) -> Result<()> {
        for e in events {
            self.gatherer.observe(e, text, &mut self.lines);
        }
        self.emit(now)
    }

    fn finish(&mut self, now: u64) -> Result<()> {
        self.gatherer.flush(&mut self.lines);
        self.emit(now)
    }

    fn emit(&mut self, now: u64) -> Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(self.lines.as_bytes())?;
        }
        let layout = self.gatherer.layout.as_ref().expect("set by `new`");
        let mut records = Vec::with_capacity(layout.len());
        for i in 0..layout.len() {
            self.seq += 1;
            records.push(Record {
                payload: layout.line(&self.lines, i).as_bytes(),
                topic: TRACES_TOPIC,
                // A lane of their own, after the input's, for which `set` wins.
                version: Version {
                    lane: 1,
                    offset: self.seq,
                    ..Version::default()
                },
                event_ms: now,
                part: logmill::decode::Part::Whole,
            });
        }
        for (n, batch) in records.chunks(BATCH).enumerate() {
            let members = |i: usize| {
                let i = n * BATCH + i;
                (layout.line(&self.lines, i), layout.members(i))
            };
            self.engine
                .process_members(batch, &members, now, &mut self.fates);
        }
        self.lines.clear();
        if let Some(l) = self.gatherer.layout.as_mut() {
            l.clear();
        }
        Ok(())
    }
}

fn open_out(p: &Option<PathBuf>) -> Result<Option<std::io::BufWriter<std::fs::File>>> {
    p.as_ref()
        .map(|p| {
            std::fs::File::create(p)
                .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
                .with_context(|| format!("creating {}", p.display()))
        })
        .transpose()
}

/// A chunk's lines in batches of `BATCH`, a batch ending only after a CRI line's last part
/// (its parts are joined within a batch), up to twice as long.
fn batches<T>(all: &[T], line: impl Fn(&T) -> &[u8]) -> Vec<&[T]> {
    let mut out = Vec::with_capacity(all.len() / BATCH + 1);
    let mut rest = all;
    while !rest.is_empty() {
        let mut n = rest.len().min(BATCH);
        while n < rest.len()
            && n < 2 * BATCH
            && logmill::decode::cri::is_partial(line(&rest[n - 1]))
        {
            n += 1;
        }
        let (group, tail) = rest.split_at(n);
        out.push(group);
        rest = tail;
    }
    out
}
