//! The Kubernetes CRI log format, as the kubelet's runtimes (containerd, CRI-O) write it.
//!
//! Format (Kubernetes `cri-api`, `pkg/apis/runtime/v1`, "log format" and the kubelet's
//! `kuberuntime/logs` parser): `<RFC 3339 nano time> <stdout|stderr> <tags> <message>`, where
//! the tags are `:`-separated and the first is `F` (a full line, or the last part of one) or
//! `P` (a partial line: the runtime cut a long line, at 16 KiB by default, and the next parts
//! follow on the same stream). Fields: `time`, `stream`, `logtag` and `message`.
//!
//! **Partial lines are joined per topic, partition and stream within a batch** (`Joiner`), into
//! one event evaluated at the `F` part; every part's record gets that event's fate. A join is
//! bounded by `max_event_bytes`: a longer one, or one whose batch ends before its `F`, is
//! dead-lettered part by part (`cri_partial_too_large`, `cri_partial_unfinished`), never
//! silently lost. So that a batch rarely ends inside a line, the service carries a young
//! unfinished run over to the partition's next batch (`unfinished_runs`), and replay cuts its
//! batches after a run (`whole_line_cut`).

use super::DecodeError;

/// A CRI line's parts: spans of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub tags: &'a str,
    pub partial: bool,
    pub message: &'a str,
}

/// Reads a CRI line; `None` when it is not one.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    // `<time> <stream> F` with nothing after is an empty line the runtime still wrote.
    let (tags, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let b = time.as_bytes();
    // An RFC 3339 time: `2026-11-26T22:00:00…`; the kubelet parses it strictly too.
    let timelike = b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && b[13] == b':';
    if !timelike || !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    let partial = match tags.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return None,
    };
    Some(Line {
        time,
        stream,
        tags,
        partial,
        message: message.strip_suffix('\n').unwrap_or(message),
    })
}

/// Whether an undeclared record is a CRI line (checked on text records only, so cheaply).
pub fn detect(line: &str) -> bool {
    line.as_bytes().first().is_some_and(u8::is_ascii_digit) && parse(line).is_some()
}

/// Whether `line` is a CRI partial line (whose next part follows).
pub fn is_partial(line: &[u8]) -> bool {
    line.first().is_some_and(u8::is_ascii_digit)
        && std::str::from_utf8(line)
            .ok()
            .and_then(parse)
            .is_some_and(|l| l.partial)
}

/// Where to cut `buf` at a newline (`nl`, the last one) so that a run of CRI partial lines is
/// not split from its last part: before the run, if that is in the second half of `buf`
/// (a run longer than that is cut anyway; its join is then refused, not lost).
pub fn whole_line_cut(buf: &[u8], mut nl: usize) -> usize {
    let floor = buf.len() / 2;
    loop {
        let start = memchr::memrchr(b'\n', &buf[..nl]).map_or(0, |i| i + 1);
        if start == 0 || start - 1 < floor || !is_partial(&buf[start..nl]) {
            return nl;
        }
        nl = start - 1;
    }
}

/// Partial lines waiting for their last part, per topic and stream.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    topic: String,
    /// The partition (`Version::lane`): lines of different partitions are different writers.
    lane: u32,
    stream: String,
    text: String,
    /// Indices in the batch of the records joined so far.
    records: Vec<u32>,
    too_large: bool,
}

/// What to do with a CRI record's message.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// The record is a whole line: evaluate it (with `parts` before it: their records share
    /// its fate). The joined message is in the `String` given to `push`.
    Evaluate { parts: Vec<u32> },
    /// Held until the line's last part.
    Held,
    /// The join grew past the limit: these records (this one included) are dead letters.
    Refused {
        parts: Vec<u32>,
        reason: DecodeError,
    },
}

impl Joiner {
    /// Takes record `index`'s parsed line; on `Evaluate`, `message` holds the whole line.
    pub fn push(
        &mut self,
        topic: &str,
        lane: u32,
        index: u32,
        line: &Line<'_>,
        max_bytes: usize,
        message: &mut String,
    ) -> Joined {
        let at = self
            .pending
            .iter()
            .position(|p| p.lane == lane && p.stream == line.stream && p.topic == topic);
        message.clear();
        let Some(at) = at else {
            if !line.partial {
                message.push_str(line.message);
                return Joined::Evaluate { parts: Vec::new() };
            }
            self.pending.push(Pending {
                topic: topic.to_string(),
                lane,
                stream: line.stream.to_string(),
                text: line.message.to_string(),
                records: vec![index],
                too_large: line.message.len() > max_bytes,
            });
            return Joined::Held;
        };
        let p = &mut self.pending[at];
        p.records.push(index);
        p.too_large |= p.text.len() + line.message.len() > max_bytes;
        if !p.too_large {
            p.text.push_str(line.message);
        }
        if line.partial {
            return Joined::Held;
        }
        let p = self.pending.swap_remove(at);
        let mut parts = p.records;
        parts.pop();
        if p.too_large {
            parts.push(index);
            return Joined::Refused {
                parts,
                reason: DecodeError::CriPartialTooLarge,
            };
        }
        message.push_str(&p.text);
        Joined::Evaluate { parts }
    }

    /// The records of joins still waiting when the batch ends, and why they are dead letters.
    pub fn unfinished(&mut self) -> impl Iterator<Item = (u32, DecodeError)> + '_ {
        self.pending.drain(..).flat_map(|p| {
            let reason = if p.too_large {
                DecodeError::CriPartialTooLarge
            } else {
                DecodeError::CriPartialUnfinished
            };
            p.records.into_iter().map(move |r| (r, reason))
        })
    }
}

/// A CRI record of a batch, as `unfinished_runs` reads it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub topic: &'a str,
    pub lane: u32,
    pub event_ms: u64,
    /// `None` when the record is not a CRI line.
    pub line: Option<Line<'a>>,
}

/// For each topic and partition whose batch ends inside a CRI line (a partial line without its
/// last part), the index of the run's first part, when the run is worth waiting for: its first
/// part is at most `grace_ms` older than the partition's newest record and its parts hold at
/// most `max_bytes`. The service carries that record and every later one of the partition over
/// to the partition's next batch (so its offsets, which are per partition, stay in order). An
/// older or larger run is evaluated as it is: its parts become dead letters.
pub fn unfinished_runs(items: &[Item<'_>], grace_ms: u64, max_bytes: usize) -> Vec<(u32, usize)> {
    // (lane, topic, stream) → (first index, bytes) of the open run.
    let mut open: Vec<(u32, &str, &str, usize, usize)> = Vec::new();
    let mut newest: Vec<(u32, &str, u64)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match newest
            .iter_mut()
            .find(|(l, t, _)| *l == it.lane && *t == it.topic)
        {
            Some(n) => n.2 = n.2.max(it.event_ms),
            None => newest.push((it.lane, it.topic, it.event_ms)),
        }
        let Some(line) = it.line else { continue };
        let at = open
            .iter()
            .position(|o| o.0 == it.lane && o.2 == line.stream && o.1 == it.topic);
        match (at, line.partial) {
            (Some(a), true) => open[a].4 += line.message.len(),
            (Some(a), false) => {
                open.swap_remove(a);
            }
            (None, true) => open.push((it.lane, it.topic, line.stream, i, line.message.len())),
            (None, false) => {}
        }
    }
    let newest_of = |lane: u32, topic: &str| {
        newest
            .iter()
            .find(|(l, t, _)| *l == lane && *t == topic)
            .map_or(0, |n| n.2)
    };
    let mut cuts: Vec<(u32, usize)> = Vec::new();
    for &(lane, topic, _, first, bytes) in &open {
        let stale = items[first].event_ms.saturating_add(grace_ms) < newest_of(lane, topic);
        if bytes > max_bytes || stale {
            continue;
        }
        match cuts
            .iter_mut()
            .find(|(l, f)| *l == lane && items[*f].topic == topic)
        {
            Some(c) => c.1 = c.1.min(first),
            None => cuts.push((lane, first)),
        }
    }
    // A run past its wait that is open in a partition being cut goes with the cut whole: cut
    // inside, its first parts would be dead letters now and the rest joined later into a
    // line without its start. It is given up in a batch that carries nothing of its
    // partition.
    for &(lane, topic, _, first, _) in &open {
        if let Some(c) = cuts
            .iter_mut()
            .find(|(l, f)| *l == lane && items[*f].topic == topic)
        {
            c.1 = c.1.min(first);
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let l = parse("2026-11-26T22:00:00.123456789Z stdout F GET / 200").unwrap();
        assert_eq!(
            (l.time, l.stream, l.tags, l.partial, l.message),
            (
                "2026-11-26T22:00:00.123456789Z",
                "stdout",
                "F",
                false,
                "GET / 200"
            )
        );
        assert!(
            parse("2026-11-26T22:00:00Z stderr P:x part")
                .unwrap()
                .partial
        );
        assert_eq!(parse("2026-11-26T22:00:00Z stdout F").unwrap().message, "");
        assert!(parse("2026-11-26T22:00:00Z stdin F x").is_none());
        assert!(parse("2026-11-26T22:00:00Z stdout X x").is_none());
        assert!(parse("2026-11-26 22:00:00 stdout F x").is_none());
        assert!(!detect("10.0.0.1 - - [26/Nov/2026] \"GET /\""));
    }

    #[test]
    fn cuts_keep_partial_runs_whole() {
        let buf = b"2026-11-26T22:00:00Z stdout F a\n2026-11-26T22:00:00Z stdout P b\n2026-11-26T22:00:00Z stdout P c\n";
        let last = buf.len() - 1;
        let first_end = memchr::memchr(b'\n', buf).unwrap();
        // The run reaches into the first half: it is cut anyway, but not after its last part.
        assert!(whole_line_cut(buf, last) > first_end);
        assert!(whole_line_cut(buf, last) < last);
        let plain = b"x\ny\n";
        assert_eq!(whole_line_cut(plain, 3), 3);
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut j = Joiner::default();
        let mut m = String::new();
        let out = parse("2026-11-26T22:00:00Z stdout P hel").unwrap();
        let err = parse("2026-11-26T22:00:00Z stderr F oops").unwrap();
        let end = parse("2026-11-26T22:00:01Z stdout F lo").unwrap();
        assert_eq!(j.push("t", 0, 0, &out, 100, &mut m), Joined::Held);
        assert_eq!(
            j.push("t", 0, 1, &err, 100, &mut m),
            Joined::Evaluate { parts: vec![] }
        );
        assert_eq!(m, "oops");
        assert_eq!(
            j.push("t", 0, 2, &end, 100, &mut m),
            Joined::Evaluate { parts: vec![0] }
        );
        assert_eq!(m, "hello");
        assert_eq!(j.unfinished().count(), 0);
    }

    #[test]
    fn bounded_and_unfinished_joins_are_refused() {
        let mut j = Joiner::default();
        let mut m = String::new();
        let p = parse("2026-11-26T22:00:00Z stdout P 0123456789").unwrap();
        let f = parse("2026-11-26T22:00:00Z stdout F 0123456789").unwrap();
        assert_eq!(j.push("t", 0, 0, &p, 15, &mut m), Joined::Held);
        assert_eq!(
            j.push("t", 0, 1, &f, 15, &mut m),
            Joined::Refused {
                parts: vec![0, 1],
                reason: DecodeError::CriPartialTooLarge
            }
        );
        assert_eq!(j.push("t", 0, 2, &p, 15, &mut m), Joined::Held);
        assert_eq!(j.push("u", 0, 3, &p, 15, &mut m), Joined::Held);
        let left: Vec<_> = j.unfinished().collect();
        assert_eq!(
            left,
            vec![
                (2, DecodeError::CriPartialUnfinished),
                (3, DecodeError::CriPartialUnfinished)
            ]
        );
    }

    #[test]
    fn partitions_are_different_writers() {
        let mut j = Joiner::default();
        let mut m = String::new();
        let a = parse("2026-11-26T22:00:00Z stdout P pod-a ").unwrap();
        let b = parse("2026-11-26T22:00:00Z stdout F pod-b").unwrap();
        assert_eq!(j.push("t", 0, 0, &a, 100, &mut m), Joined::Held);
        assert_eq!(
            j.push("t", 1, 1, &b, 100, &mut m),
            Joined::Evaluate { parts: vec![] }
        );
        assert_eq!(m, "pod-b");
    }

    fn items_of<'a>(lines: &[(u32, u64, &'a str)]) -> Vec<Item<'a>> {
        lines
            .iter()
            .map(|(lane, ms, l)| Item {
                topic: "t",
                lane: *lane,
                event_ms: *ms,
                line: parse(l),
            })
            .collect()
    }

    #[test]
    fn young_unfinished_runs_are_carried_from_their_first_part() {
        let lines = [
            (0, 1_000, "2026-11-26T22:00:00Z stdout F done"),
            (0, 1_000, "2026-11-26T22:00:00Z stdout P start "),
            (1, 1_000, "2026-11-26T22:00:00Z stderr P old "),
            (
                0,
                1_500,
                "2026-11-26T22:00:00Z stderr F other stream, after the run",
            ),
            (0, 2_000, "2026-11-26T22:00:00Z stdout P more"),
            (1, 9_000, "2026-11-26T22:00:00Z stdout F later"),
            (2, 1_000, "2026-11-26T22:00:00Z stdout P big big big big"),
            (3, 1_000, "2026-11-26T22:00:00Z stdout P a"),
            (3, 1_000, "2026-11-26T22:00:00Z stdout F b"),
        ];
        let items = items_of(&lines);
        // Partition 0 waits from its open run's first part; partition 1's run is older than the
        // grace and partition 2's larger than the bound: evaluated (dead letters); partition 3
        // finished its line.
        assert_eq!(unfinished_runs(&items, 5_000, 12), vec![(0, 1)]);
        assert_eq!(unfinished_runs(&items, 10_000, 100).len(), 3);
        // A stale run open where a young one is cut is carried whole with it, from its start.
        let stale_then_young = [
            (0, 1_000, "2026-11-26T22:00:00Z stderr P old "),
            (0, 9_000, "2026-11-26T22:00:00Z stdout F between"),
            (0, 9_000, "2026-11-26T22:00:00Z stdout P young "),
        ];
        let items = items_of(&stale_then_young);
        assert_eq!(unfinished_runs(&items, 5_000, 100), vec![(0, 0)]);
    }
}
