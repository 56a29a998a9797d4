//! The Kubernetes CRI log format, as the kubelet's runtimes (containerd, CRI-O) write it.
//!
//! Format (Kubernetes `cri-api`, `pkg/apis/runtime/v1`, "log format" and the kubelet's
//! `kuberuntime/logs` parser): `<RFC 3339 nano time> <stdout|stderr> <tags> <message>`, where
//! the tags are `:`-separated and the first is `F` (a full line, or the last part of one) or
//! `P` (a partial line: the runtime cut a long line, at 16 KiB by default, and the next parts
//! follow on the same stream). Fields: `time`, `stream`, `logtag` and `message`.
//!
//! **Partial lines are joined per topic and stream within a batch** (`Joiner`), into one event
//! evaluated at the `F` part; every part's record gets that event's fate. A join is bounded by
//! `max_event_bytes`: a longer one, or one whose batch ends before its `F`, is dead-lettered
//! part by part (`cri_partial_too_large`, `cri_partial_unfinished`), never silently lost.

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
        index: u32,
        line: &Line<'_>,
        max_bytes: usize,
        message: &mut String,
    ) -> Joined {
        let at = self
            .pending
            .iter()
            .position(|p| p.topic == topic && p.stream == line.stream);
        message.clear();
        let Some(at) = at else {
            if !line.partial {
                message.push_str(line.message);
                return Joined::Evaluate { parts: Vec::new() };
            }
            self.pending.push(Pending {
                topic: topic.to_string(),
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
        assert_eq!(j.push("t", 0, &out, 100, &mut m), Joined::Held);
        assert_eq!(
            j.push("t", 1, &err, 100, &mut m),
            Joined::Evaluate { parts: vec![] }
        );
        assert_eq!(m, "oops");
        assert_eq!(
            j.push("t", 2, &end, 100, &mut m),
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
        assert_eq!(j.push("t", 0, &p, 15, &mut m), Joined::Held);
        assert_eq!(
            j.push("t", 1, &f, 15, &mut m),
            Joined::Refused {
                parts: vec![0, 1],
                reason: DecodeError::CriPartialTooLarge
            }
        );
        assert_eq!(j.push("t", 2, &p, 15, &mut m), Joined::Held);
        assert_eq!(j.push("u", 3, &p, 15, &mut m), Joined::Held);
        let left: Vec<_> = j.unfinished().collect();
        assert_eq!(
            left,
            vec![
                (2, DecodeError::CriPartialUnfinished),
                (3, DecodeError::CriPartialUnfinished)
            ]
        );
    }
}
