//! `logmill replay`: the engine over files or stdin, on every core.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use logmill::decode::{InputFormat, Limits};
use logmill::derive::{Aggregates, Version};
use logmill::engine::{Counters, Engine, Record};
use logmill::reduce::Fate;
use logmill::rules::Program;
use logmill::sink::exposition::{ExpositionFormat, render};
use logmill::sink::output::dead_letter_json;
use logmill::source::file::{Chunk, lines, read_chunks};

pub struct Options {
    pub inputs: Vec<PathBuf>,
    pub format: InputFormat,
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
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const BATCH: usize = 1024;

struct ChunkOutput {
    id: u64,
    kept: Vec<u8>,
    dead: String,
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

    let mut kept_file = open_out(&opts.logs_out)?;
    let mut dead_file = open_out(&opts.dead_letter_out)?;
    let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(opts.threads * 2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let (out_tx, out_rx) = sync_channel::<ChunkOutput>(opts.threads * 4);

    let (results, read) = std::thread::scope(|s| -> Result<(Vec<(Aggregates, Counters)>, u64)> {
        let reader = s.spawn(|| {
            let tx = chunk_tx;
            read_chunks(&opts.inputs, &tx, |n| {
                if let Some(b) = &bar {
                    b.inc(n)
                }
            })
        });
        let mut workers = Vec::new();
        for _ in 0..opts.threads {
            let rx = Arc::clone(&chunk_rx);
            let tx = out_tx.clone();
            let program = Arc::clone(&program);
            let names = &names;
            let topic_name = opts.topic.as_deref();
            let (format, limits) = (opts.format, opts.limits);
            workers.push(s.spawn(move || {
                let mut engine = Engine::new(Arc::clone(&program), format, limits);
                let mut fates = Vec::with_capacity(BATCH);
                loop {
                    let chunk = match rx.lock().expect("reader never panics holding it").recv() {
                        Ok(c) => c,
                        Err(_) => break,
                    };
                    let source = names[chunk.input].as_str();
                    let topic = topic_name.unwrap_or(source);
                    let base = ((chunk.input as u64) << 40) + chunk.offset;
                    let mut out = ChunkOutput {
                        id: chunk.id,
                        kept: Vec::new(),
                        dead: String::new(),
                    };
                    let all: Vec<(usize, &[u8], &[u8])> = lines(&chunk.data).collect();
                    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
                    for group in all.chunks(BATCH) {
                        batch.clear();
                        // Replay has no event time: the wall clock stands in for it, and line
                        // order decides which gauge `set` wins.
                        let now = now_ms();
                        batch.extend(group.iter().map(|(off, l, _)| Record {
                            payload: l,
                            topic,
                            version: Version {
                                offset: base + *off as u64,
                                ..Version::default()
                            },
                            event_ms: now,
                        }));
                        engine.process(&batch, now, &mut fates);
                        if want_kept || want_dead {
                            for ((off, _, raw), fate) in group.iter().zip(&fates) {
                                match fate {
                                    Fate::Keep if want_kept => {
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
                    if (want_kept || want_dead) && tx.send(out).is_err() {
                        break;
                    }
                }
                (engine.local, engine.counters)
            }));
        }
        drop(out_tx);
        // Write outputs in input order while workers run.
        let mut pending = BTreeMap::new();
        let mut next = 0u64;
        for out in out_rx.iter() {
            pending.insert(out.id, out);
            while let Some(out) = pending.remove(&next) {
                if let Some(f) = kept_file.as_mut() {
                    f.write_all(&out.kept)?;
                }
                if let Some(f) = dead_file.as_mut() {
                    f.write_all(out.dead.as_bytes())?;
                }
                next += 1;
            }
        }
        let results = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect();
        let read = reader
            .join()
            .expect("reader panicked")
            .context("reading input")?;
        Ok((results, read))
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    for f in [kept_file.as_mut(), dead_file.as_mut()]
        .into_iter()
        .flatten()
    {
        f.flush()?;
    }

    let now = now_ms();
    let mut global = Aggregates::new(&program);
    let mut counters = Counters::default();
    for (mut local, c) in results {
        global.merge_from(&mut local, &program, now);
        counters.absorb(&c);
    }
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
        for note in logmill::report::rule_notes(&program, &counters, "event") {
            eprintln!("{note}");
        }
    }
    Ok(())
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
