//! Typed reading of the spanned YAML tree, reporting what does not fit as diagnostics.
//! Shared by rule files and the service configuration.

use std::time::Duration;

use super::diagnostic::{Code, Sink};
use super::suggest::did_you_mean;
use super::yaml::{Node, Pos};
use crate::extract::value::parse_duration_secs;

/// Reads a mapping key by key; unknown keys are reported at `finish`.
pub struct MapView<'a> {
    pub entries: &'a [(Node, Node)],
    pub used: Vec<bool>,
}

impl<'a> MapView<'a> {
    pub fn new(node: &'a Node, what: &str, sink: &mut Sink) -> Option<MapView<'a>> {
        match node.as_map() {
            Some(entries) => Some(MapView {
                entries,
                used: vec![false; entries.len()],
            }),
            None => {
                sink.error(
                    node.pos,
                    Code::WrongType,
                    format!("{what} must be a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    pub fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self
            .entries
            .iter()
            .position(|(k, _)| k.as_scalar() == Some(key))?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    pub fn finish(self, known: &[&str], what: &str, sink: &mut Sink) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            // A key written twice: only the first is read, so say that, not "unknown key".
            let first = self.entries[..i]
                .iter()
                .find(|(prev, _)| prev.as_scalar().is_some() && prev.as_scalar() == k.as_scalar());
            if let Some((prev, _)) = first {
                sink.error(
                    k.pos,
                    Code::DuplicateKey,
                    format!(
                        "key `{}` is written twice in {what}",
                        k.as_scalar().unwrap_or("?")
                    ),
                )
                .hint(format!(
                    "the first is at line {}, and only one is read: merge the two",
                    prev.pos.line
                ));
                continue;
            }
            if !self.used[i] {
                let name = k.as_scalar().unwrap_or("?");
                sink.error(
                    k.pos,
                    Code::UnknownKey,
                    format!("unknown key `{name}` in {what}"),
                )
                .hint(did_you_mean(name, known));
            }
        }
    }
}

pub fn scalar(node: &Node, what: &str, sink: &mut Sink) -> Option<String> {
    match node.as_scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            sink.error(
                node.pos,
                Code::WrongType,
                format!("{what} must be a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// A string, or a list of strings.
pub fn strings(node: &Node, what: &str, sink: &mut Sink) -> Vec<(String, Pos)> {
    match node.as_seq() {
        Some(items) => items
            .iter()
            .filter_map(|n| scalar(n, what, sink).map(|s| (s, n.pos)))
            .collect(),
        None => scalar(node, what, sink)
            .map(|s| vec![(s, node.pos)])
            .unwrap_or_default(),
    }
}

pub fn duration(node: &Node, what: &str, sink: &mut Sink) -> Option<Duration> {
    duration_from(node, what, sink, false)
}

/// Like `duration`, where zero means "none" (a linger of `0s`).
pub fn duration_or_zero(node: &Node, what: &str, sink: &mut Sink) -> Option<Duration> {
    duration_from(node, what, sink, true)
}

fn duration_from(node: &Node, what: &str, sink: &mut Sink, zero_ok: bool) -> Option<Duration> {
    let text = scalar(node, what, sink)?;
    match parse_duration_secs(&text).filter(|s| *s > 0.0 || (zero_ok && *s == 0.0)) {
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => {
            sink.error(
                node.pos,
                Code::BadDuration,
                format!("invalid duration `{text}` for {what}"),
            )
            .hint(if zero_ok {
                "write a duration like `0s`, `30s` or `2m`"
            } else {
                "write a positive duration like `90s`, `10m` or `1h30m`"
            });
            None
        }
    }
}

/// A positive number of bytes: `65536`, `512KiB`, `16MiB`, `1GiB`, or `KB`/`MB`/`GB` (powers
/// of ten).
pub fn byte_size(node: &Node, what: &str, sink: &mut Sink) -> Option<u64> {
    let text = scalar(node, what, sink)?;
    match parse_byte_size(&text).filter(|n| *n > 0) {
        Some(n) => Some(n),
        None => {
            sink.error(
                node.pos,
                Code::BadLimit,
                format!("invalid size `{text}` for {what}"),
            )
            .hint("write a positive number of bytes like `65536`, `512KiB` or `16MiB`");
            None
        }
    }
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(unit);
    }
    let n: f64 = number.parse().ok()?;
    let bytes = n * unit as f64;
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

pub fn limit(node: &Node, what: &str, sink: &mut Sink) -> Option<usize> {
    match node.as_u64().filter(|n| *n > 0) {
        Some(n) => Some(n as usize),
        None => {
            sink.error(
                node.pos,
                Code::BadLimit,
                format!("{what} must be a positive whole number"),
            );
            None
        }
    }
}

impl MapView<'_> {
    /// Accepts every key: for maps whose keys are names the user chooses.
    pub fn accept_all(&mut self) {
        self.used.iter_mut().for_each(|u| *u = true);
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn issue9_sizes_parse_in_both_units() {
        use super::parse_byte_size as p;
        assert_eq!(p("65536"), Some(65536));
        assert_eq!(p("512KiB"), Some(512 * 1024));
        assert_eq!(p("1.5 MiB"), Some(1_572_864));
        assert_eq!(p("2MB"), Some(2_000_000));
        assert_eq!(p("1 GiB"), Some(1 << 30));
        assert_eq!(p("12 parsecs"), None);
        assert_eq!(p("MiB"), None);
    }
}
