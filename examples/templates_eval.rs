//! Grouping and parsing accuracy of the template miner on the loghub 2k datasets, and its
//! speed in lines per CPU-second.
//!
//! ```sh
//! LOGHUB_DIR=path/to/loghub cargo run --release --example templates_eval
//! ```
//!
//! `LOGHUB_DIR` holds `<Name>/<Name>_2k.log_structured.csv` for any of the 16 datasets (those
//! missing are skipped). Each file's `Content` column is mined in order, one fresh miner per
//! dataset, with the default configuration:
//! - GA (grouping accuracy): the share of lines whose predicted group (template id at arrival)
//!   holds exactly the lines of their ground-truth group (`EventId`);
//! - PA (parsing accuracy): the share of lines whose template's final text equals the ground
//!   truth's `EventTemplate`, whitespace runs counted as one space;
//! - speed: the miner alone (no CSV reading), with the thread's CPU clock, a fresh miner per
//!   file: per dataset, the median of 5 rounds of 0.1 CPU-seconds; overall, every dataset once
//!   in turn for 0.3 CPU-seconds, the median of 9 rounds (and their range: a shared machine's
//!   busy sibling hyperthread slows this thread's CPU-seconds too).
//!
//! `SHUFFLE=seed` mines each dataset in a shuffled order instead, to see how much the result
//! depends on the order of arrival. `DUMP=dir` writes, per dataset, `dir/<Name>.tsv`: each
//! line's template id on arrival and its template's final text, so that two versions of the
//! miner can be compared line for line (`diff -r`).
//!
//! `FLOOD=n` measures instead a flood of `n` lines that are each a new template, with the
//! default configuration, so at the `max_templates` cap from the 1,001st line on: lines per
//! CPU-second, templates held, and the process's peak resident memory. Two floods:
//! - *distinct words*: `event <word> happened for <n>`, where the word is new on every line
//!   and has no digit (so it is a constant): every template shares its other words with all
//!   the others;
//! - *reordered words*: lines of known words (`alpha`, `beta`, `gamma`, `delta`, `a`..`z`) in
//!   an order never seen before, of varying length.
//!
//! `FLOOD_KIND=distinct` or `FLOOD_KIND=reordered` runs only that one (for a profiler).

use std::collections::HashMap;
use std::time::Instant;

use logmill::reduce::templates::{Miner, MinerConfig};

const ROUNDS: usize = 9;

const DATASETS: [&str; 16] = [
    "Android",
    "Apache",
    "BGL",
    "HDFS",
    "HPC",
    "Hadoop",
    "HealthApp",
    "Linux",
    "Mac",
    "OpenSSH",
    "OpenStack",
    "Proxifier",
    "Spark",
    "Thunderbird",
    "Windows",
    "Zookeeper",
];

/// Minimal CSV: quoted fields with `""` escapes, as loghub writes them; no newlines in fields.
fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        fields.push(cur);
        rows.push(fields);
    }
    let header = rows.remove(0);
    (header, rows)
}

/// This thread's CPU time in seconds (scheduler nanoseconds), or wall time where unavailable.
fn cpu_seconds(wall: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(|| wall.elapsed().as_secs_f64(), |ns| ns as f64 / 1e9)
}

/// Lines per CPU-second mining `corpus` (a fresh miner per file), in `rounds` rounds of at
/// least `seconds` each: (median, lowest, highest).
fn rates<S: AsRef<str>>(rounds: usize, seconds: f64, corpus: &[Vec<S>]) -> (f64, f64, f64) {
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| {
            let wall = Instant::now();
            let start = cpu_seconds(wall);
            let mut lines = 0usize;
            loop {
                for messages in corpus {
                    let mut m = Miner::new(MinerConfig::default());
                    for msg in messages {
                        std::hint::black_box(m.observe(msg.as_ref()).id);
                    }
                    lines += messages.len();
                }
                let spent = cpu_seconds(wall) - start;
                if spent >= seconds {
                    break lines as f64 / spent;
                }
            }
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    (rates[rounds / 2], rates[0], rates[rounds - 1])
}

fn median_rate<S: AsRef<str>>(rounds: usize, seconds: f64, corpus: &[Vec<S>]) -> f64 {
    rates(rounds, seconds, corpus).0
}

fn grouping_accuracy(predicted: &[u64], truth: &[&str]) -> f64 {
    let mut by_pred: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (p, t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(*p).or_default().push(i);
        by_truth.entry(t).or_default().push(i);
    }
    let correct: usize = by_truth
        .values()
        .filter(|lines| by_pred[&predicted[lines[0]]] == **lines)
        .map(Vec::len)
        .sum();
    correct as f64 / predicted.len() as f64
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// Line `i` of a flood of new templates (see the module doc), in `line`.
fn flood_line(distinct_words: bool, i: u64, line: &mut String) {
    line.clear();
    if distinct_words {
        // `k` and then `i` in base 26: no month, weekday or state starts with a `k`.
        line.push_str("event k");
        let mut k = i;
        loop {
            line.push(char::from(b'a' + (k % 26) as u8));
            k /= 26;
            if k == 0 {
                break;
            }
        }
        line.push_str(" happened for ");
        line.push_str(&i.to_string());
    } else {
        let mut k = i + 1;
        while k > 0 {
            line.push_str(["alpha ", "beta ", "gamma ", "delta "][(k % 4) as usize]);
            line.push(char::from(b'a' + (k % 26) as u8));
            line.push(' ');
            k /= 4;
        }
    }
}

/// Peak resident memory of this process, from `/proc/self/status`, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The flood measurement (`FLOOD=n`).
fn flood(n: u64) {
    const CHUNK: u64 = 100_000;
    println!("| flood | lines | templates held | evicted | lines / CPU-s | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let kind = std::env::var("FLOOD_KIND").unwrap_or_default();
    for distinct_words in [true, false] {
        if !kind.is_empty() && kind != ["reordered", "distinct"][usize::from(distinct_words)] {
            continue;
        }
        let mut miner = Miner::new(MinerConfig::default());
        let mut lines: Vec<String> = Vec::new();
        let (mut spent, mut done) = (0.0, 0u64);
        while done < n {
            // Lines are made outside the measurement, a chunk at a time.
            let count = CHUNK.min(n - done);
            lines.resize_with(count as usize, String::new);
            for (k, l) in lines.iter_mut().enumerate() {
                flood_line(distinct_words, done + k as u64, l);
            }
            let wall = Instant::now();
            let start = cpu_seconds(wall);
            for l in &lines {
                std::hint::black_box(miner.observe(l).id);
            }
            spent += cpu_seconds(wall) - start;
            done += count;
            assert!(miner.len() <= miner.config().max_templates);
        }
        let stats = miner.stats();
        println!(
            "| {} | {n} | {} | {} | {:.3} M | {} MiB |",
            if distinct_words {
                "distinct words"
            } else {
                "reordered words"
            },
            miner.len(),
            stats.evicted,
            n as f64 / spent / 1e6,
            peak_rss_kib().map_or("?".into(), |k| (k / 1024).to_string()),
        );
    }
}

fn main() {
    if let Some(n) = std::env::var("FLOOD").ok().and_then(|s| s.parse().ok()) {
        flood(n);
        return;
    }
    let dump = std::env::var("DUMP").ok();
    let dir = std::env::var("LOGHUB_DIR").unwrap_or_else(|_| "../shared/data/loghub".into());
    let seed: Option<u64> = std::env::var("SHUFFLE").ok().and_then(|s| s.parse().ok());
    println!("| dataset | lines | templates (truth) | searched | GA | PA | lines / CPU-s |");
    println!("|---|---|---|---|---|---|---|");
    let (mut ga_sum, mut pa_sum, mut n) = (0.0, 0.0, 0);
    let mut corpus: Vec<Vec<String>> = Vec::new();
    for name in DATASETS {
        let path = format!("{dir}/{name}/{name}_2k.log_structured.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let (header, mut rows) = csv_rows(&text);
        if let Some(seed) = seed {
            shuffle(&mut rows, seed);
        }
        let col = |n: &str| header.iter().position(|h| h == n).expect("column");
        let (content, event, template) = (col("Content"), col("EventId"), col("EventTemplate"));
        let messages: Vec<&str> = rows.iter().map(|r| r[content].as_str()).collect();
        let truth: Vec<&str> = rows.iter().map(|r| r[event].as_str()).collect();

        let mut miner = Miner::new(MinerConfig::default());
        let ids: Vec<u64> = messages.iter().map(|m| miner.observe(m).id).collect();
        let ga = grouping_accuracy(&ids, &truth);
        if let Some(dump) = &dump {
            let rows: String = ids
                .iter()
                .map(|id| format!("{id:016x}\t{}\n", miner.template(*id).expect("live")))
                .collect();
            std::fs::write(format!("{dump}/{name}.tsv"), rows).expect("writes the dump");
        }
        let correct = ids
            .iter()
            .zip(&rows)
            .filter(|(id, r)| {
                squash(&miner.template(**id).expect("live").to_string()) == squash(&r[template])
            })
            .count();
        let pa = correct as f64 / ids.len() as f64;

        let per_dataset = median_rate(5, 0.1, std::slice::from_ref(&messages));
        corpus.push(
            messages
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<String>>(),
        );
        let truth_groups = truth.iter().collect::<std::collections::HashSet<_>>().len();
        println!(
            "| {name} | {} | {} ({truth_groups}) | {} | {ga:.3} | {pa:.3} | {:.2} M |",
            messages.len(),
            miner.len(),
            miner.stats().searched,
            per_dataset / 1e6
        );
        ga_sum += ga;
        pa_sum += pa;
        n += 1;
    }
    if n == 0 {
        eprintln!("no loghub datasets under {dir} (set LOGHUB_DIR)");
        std::process::exit(1);
    }
    // Rounds of every dataset in turn; the median round is the figure (the machine may be
    // shared: a busy sibling hyperthread slows this thread's CPU-seconds too).
    let (overall, low, high) = rates(ROUNDS, 0.3, &corpus);
    println!(
        "| **average of {n}** | | | | **{:.3}** | **{:.3}** | **{:.2} M** |",
        ga_sum / n as f64,
        pa_sum / n as f64,
        overall / 1e6
    );
    println!(
        "\nall {n} datasets in turn, {ROUNDS} rounds: median {:.2} M lines / CPU-s, range {:.2} M to {:.2} M",
        overall / 1e6,
        low / 1e6,
        high / 1e6
    );
}
