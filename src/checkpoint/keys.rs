//! Record keys in the state topic. Readable (`kcat -K` shows what a record is) and unique per
//! group and identity, so two groups sharing a state topic never read or compact away each
//! other's records.
//!
//! - `logmill/commit/<group>/<instance>`: the identity's latest checkpoint;
//! - `logmill/intent/<group>/<instance>`: the chunks about to be written;
//! - `logmill/chunk/<group>/<instance>/<seq>/<blob>/<n>`: a piece of a blob.
//!
//! Names are percent-escaped (`/` and `%`), so any group or instance id is one path segment.

use std::fmt::Write;

const PREFIX: &str = "logmill/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Intent,
    Chunk,
}

/// What a key says, for the records of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub kind: Kind,
    pub group: String,
    pub instance: String,
}

fn escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '/' => out.push_str("%2F"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3)? {
            "2F" => out.push('/'),
            "25" => out.push('%'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn key(kind: &str, parts: &[&str]) -> String {
    let mut k = String::from(PREFIX);
    k.push_str(kind);
    for p in parts {
        k.push('/');
        escape(&mut k, p);
    }
    k
}

pub fn commit(group: &str, instance: &str) -> String {
    key("commit", &[group, instance])
}

pub fn intent(group: &str, instance: &str) -> String {
    key("intent", &[group, instance])
}

pub fn chunk(group: &str, instance: &str, seq: u64, blob: &str, n: usize) -> String {
    let mut k = key("chunk", &[group, instance]);
    let _ = write!(k, "/{seq}/");
    escape(&mut k, blob);
    let _ = write!(k, "/{n}");
    k
}

/// Parses a key of the state topic; `None` for anything logmill did not write.
pub fn parse(key: &[u8]) -> Option<Parsed> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?;
    let mut parts = key.split('/');
    let kind = match parts.next()? {
        "commit" => Kind::Commit,
        "intent" => Kind::Intent,
        "chunk" => Kind::Chunk,
        _ => return None,
    };
    let group = unescape(parts.next()?)?;
    let instance = unescape(parts.next()?)?;
    let rest = parts.count();
    let expected = if kind == Kind::Chunk { 3 } else { 0 };
    (rest == expected).then_some(Parsed {
        kind,
        group,
        instance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_whatever_the_names() {
        let c = commit("a/b%c", "pod-0");
        assert_eq!(c, "logmill/commit/a%2Fb%25c/pod-0");
        assert_eq!(
            parse(c.as_bytes()),
            Some(Parsed {
                kind: Kind::Commit,
                group: "a/b%c".into(),
                instance: "pod-0".into()
            })
        );
        let k = chunk("g", "i/1", 7, "p/logs/3", 2);
        assert_eq!(k, "logmill/chunk/g/i%2F1/7/p%2Flogs%2F3/2");
        assert_eq!(parse(k.as_bytes()).unwrap().instance, "i/1");
        assert_eq!(
            parse(b"pod-0"),
            None,
            "the first format keyed by instance alone"
        );
        assert_eq!(parse(b"logmill/commit/g"), None);
        assert_eq!(parse(b"logmill/commit/g/%zz"), None);
    }
}
