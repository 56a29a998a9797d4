//! `logmill templates`: the template miner alone over a file or stdin, as CSV
//! `line,template_id,template`, one row per input line in order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use logmill::decode::{Decoded, Decoder, InputFormat, Limits};
use logmill::derive::Version;
use logmill::engine::{Engine, Record};
use logmill::reduce::Fate;
use logmill::reduce::templates::{Miner, MinerConfig, TemplateId};
use logmill::rules::Program;
use logmill::rules::compile::parse_path;

pub struct Options {
    pub input: PathBuf,
    /// Mine this JSON field path or logfmt key instead of the whole line.
    pub field: Option<String>,
    /// Write each row as its line arrives, with the template as it was then.
    pub stream: bool,
    pub templates_out: Option<PathBuf>,
    /// Mine what these rules' reductions mine (exclusive with `field`).
    pub rules: Option<(Arc<Program>, Option<String>)>,
    pub max_templates: usize,
    pub quiet: bool,
}

/// Where the mined text of a line comes from.
enum MessageSource {
    Line,
    Field {
        name: String,
        decoder: Box<Decoder>,
        decoded: Decoded,
    },
    /// What the service mines: the `message` of the first matching rule that reduces the
    /// event. Lines no such rule keeps are not mined (the service would not mine them either).
    Rules {
        engine: Box<Engine>,
        topic: String,
        fates: Vec<Fate>,
    },
}

impl MessageSource {
    /// The message of `line`, or `None` when it is not mined. With `--field`, the whole line
    /// when the field is absent or the line does not decode (counted in `fallbacks`).
    fn message<'a>(&'a mut self, line: &'a str, fallbacks: &mut u64) -> Option<&'a str> {
        match self {
            MessageSource::Line => Some(line),
            MessageSource::Field {
                decoder, decoded, ..
            } => Some(match decoder.decode(line.as_bytes(), decoded) {
                Ok(_) => match decoded.slots.first().copied().flatten() {
                    Some(span) => span.get(line, &decoded.scratch),
                    None => {
                        *fallbacks += 1;
                        line
                    }
                },
                Err(_) => {
                    *fallbacks += 1;
                    line
                }
            }),
            MessageSource::Rules {
                engine,
                topic,
                fates,
            } => {
                let now = now_ms();
                let record = Record {
                    payload: line.as_bytes(),
                    topic,
                    version: Version::default(),
                    event_ms: now,
                    part: logmill::decode::Part::Whole,
                };
                engine.process(&[record], now, fates);
                let ask = engine.asks.first()?;
                Some(ask.message(&engine.text, line.as_bytes()))
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 4180: quoted only when needed, quotes doubled.
fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// `line,id,template` with the template already a CSV field: a row per input line, so its
/// numbers are written by hand rather than through `fmt`, and its text escaped once per
/// template rather than once per row.
fn row(out: &mut impl Write, line: u64, id: TemplateId, field: &str) -> std::io::Result<()> {
    let mut buf = [0u8; 20 + 1 + 16 + 1];
    let digits = line.checked_ilog10().map_or(1, |d| d as usize + 1);
    let mut n = line;
    for k in (0..digits).rev() {
        buf[k] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf[digits] = b',';
    for k in 0..16 {
        buf[digits + 1 + k] = b"0123456789abcdef"[(id >> (60 - 4 * k)) as usize & 15];
    }
    buf[digits + 17] = b',';
    out.write_all(&buf[..digits + 18])?;
    out.write_all(field.as_bytes())?;
    out.write_all(b"\n")
}

pub fn run(opts: Options) -> Result<()> {
    match mine(opts) {
        // `logmill templates big.log | head`: a reader that stops early is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

fn mine(opts: Options) -> Result<()> {
    let mut source = match (&opts.field, &opts.rules) {
        (Some(_), Some(_)) => bail!("--field and --rules both say what to mine: give one"),
        (None, Some((program, topic))) => {
            if !program.rules.iter().any(|r| r.reduce.is_some()) {
                bail!("no rule has a `reduce` section: nothing would be mined");
            }
            MessageSource::Rules {
                engine: Box::new(Engine::new(
                    Arc::clone(program),
                    InputFormat::Auto,
                    Limits::default(),
                )),
                topic: topic.clone().unwrap_or_else(|| {
                    if opts.input.as_os_str() == "-" {
                        "stdin".to_string()
                    } else {
                        opts.input.display().to_string()
                    }
                }),
                fates: Vec::new(),
            }
        }
        (None, None) => MessageSource::Line,
        (Some(name), None) => {
            let Some(path) = parse_path(name) else {
                bail!("`{name}` is not a field path (expected `a.b`, `a[0].b` or a logfmt key)");
            };
            MessageSource::Field {
                name: name.clone(),
                decoder: Box::new(Decoder::new(
                    &[path],
                    InputFormat::Auto,
                    Limits {
                        max_event_bytes: usize::MAX,
                        ..Limits::default()
                    },
                )),
                decoded: Decoded::default(),
            }
        }
    };
    let reader: Box<dyn Read> = if opts.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&opts.input)
                .with_context(|| format!("opening {}", opts.input.display()))?,
        )
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    out.write_all(b"line,template_id,template\n")?;

    let mut miner = Miner::new(MinerConfig {
        max_templates: opts.max_templates,
        ..MinerConfig::default()
    });
    let mut fallbacks = 0u64;
    // Lines no reducing rule kept (with --rules), which have no row.
    let mut unmined = 0u64;
    let mut buf = Vec::new();
    // --stream: the current text of each live template as a CSV field, re-rendered when it
    // changes.
    let mut texts: HashMap<TemplateId, String> = HashMap::new();
    // Otherwise: every line's id, and the last text of templates that were evicted (as CSV
    // fields).
    let mut ids: Vec<(u64, TemplateId)> = Vec::new();
    let mut evicted: HashMap<TemplateId, String> = HashMap::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", opts.input.display()))?
            == 0
        {
            break;
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        // Checked in place when valid (most lines): the lossy conversion walks every line
        // byte by byte, where the check goes a word at a time over ASCII.
        let line = match std::str::from_utf8(&buf) {
            Ok(line) => Cow::Borrowed(line),
            Err(_) => String::from_utf8_lossy(&buf),
        };
        let Some(message) = source.message(&line, &mut fallbacks) else {
            unmined += 1;
            continue;
        };
        let o = miner.observe(message);
        let (id, changed, gone) = (o.id, o.new || o.generalised, o.evicted);
        if let Some(gone) = gone {
            let last = miner
                .evicted()
                .map(|t| csv_field(&t.to_string()).into_owned())
                .unwrap_or_default();
            texts.remove(&gone);
            if !opts.stream {
                evicted.insert(gone, last);
            }
        }
        if opts.stream {
            if changed || !texts.contains_key(&id) {
                let t = miner
                    .template(id)
                    .map(|t| csv_field(&t.to_string()).into_owned())
                    .unwrap_or_default();
                texts.insert(id, t);
            }
            row(&mut out, n, id, &texts[&id])?;
        } else {
            ids.push((n, id));
        }
    }
    if !opts.stream {
        let live: HashMap<TemplateId, String> = miner
            .templates()
            .map(|t| (t.id(), csv_field(&t.to_string()).into_owned()))
            .collect();
        for (line, id) in &ids {
            let text = live
                .get(id)
                .or_else(|| evicted.get(id))
                .map_or("", String::as_str);
            row(&mut out, *line, *id, text)?;
        }
    }
    out.flush()?;
    if let Some(path) = &opts.templates_out {
        let mut f = BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        f.write_all(b"template_id,count,template\n")?;
        for t in miner.templates() {
            write!(f, "{:016x},{},", t.id(), t.count())?;
            f.write_all(csv_field(&t.to_string()).as_bytes())?;
            f.write_all(b"\n")?;
        }
        f.flush()?;
    }
    if !opts.quiet {
        let s = miner.stats();
        eprintln!(
            "{n} line{}, {} templates ({} created, {} evicted at the cap of {})",
            if n == 1 { "" } else { "s" },
            miner.len(),
            s.created,
            s.evicted,
            miner.config().max_templates
        );
        if unmined > 0 {
            eprintln!(
                "{unmined} line{} that no reducing rule kept: not mined, no row",
                if unmined == 1 { "" } else { "s" }
            );
        }
        if let MessageSource::Field { name, .. } = &source
            && fallbacks > 0
        {
            eprintln!(
                "{fallbacks} line{} without field `{name}`: mined whole",
                if fallbacks == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}
