//! A validating JSON scanner that keeps only the fields the rules ask for.
//!
//! One pass over the bytes checks the whole document (so malformed events are caught) while a
//! path trie says which values to remember; everything else is skipped without building a tree.
//! Measured against `simd-json`'s DOM and tape in `benches/decode.rs` (see ARCHITECTURE.md).

use super::{DecodeError, Decoded, Span};
use crate::rules::program::{FieldPath, PathSegment};

#[derive(Debug, Default)]
pub struct PathTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Sorted by `bucket`.
    keys: Vec<(Box<[u8]>, u32)>,
    /// `keys[from[b]..from[b + 1]]` are the keys of `bucket` b: with the usual trace spellings
    /// a node has a dozen names or more, and an event's key is compared with one of them at
    /// most (a linear search was a tenth of a JSON event's decoding). Empty without keys.
    from: Box<[u16]>,
    indices: Vec<(usize, u32)>,
    slot: Option<u32>,
    /// A child has children: a dotted key (`"log.level"`) may name a path below this node.
    deep: bool,
}

const BUCKETS: usize = 256;

/// A key's bucket in `TrieNode::from`: from its length and first and last bytes.
#[inline]
fn bucket(key: &[u8]) -> usize {
    let (first, last) = (
        key.first().copied().unwrap_or(0),
        key.last().copied().unwrap_or(0),
    );
    let h = (key.len() as u64) | (u64::from(first) << 16) | (u64::from(last) << 24);
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

impl PathTrie {
    /// `node`'s child named `key`, compared as `Scanner::child_by_key` compares plain keys.
    fn child(&self, node: &TrieNode, key: &[u8]) -> Option<u32> {
        let b = bucket(key);
        let (lo, hi) = (usize::from(node.from[b]), usize::from(node.from[b + 1]));
        node.keys[lo..hi]
            .iter()
            .find(|(k, _)| **k == *key)
            .map(|(_, c)| *c)
    }

    pub fn new(fields: &[FieldPath]) -> PathTrie {
        let mut trie = PathTrie {
            nodes: vec![TrieNode::default()],
        };
        for (slot, field) in fields.iter().enumerate() {
            let mut node = 0usize;
            for seg in &field.segments {
                let existing = match seg {
                    PathSegment::Key(k) => trie.nodes[node]
                        .keys
                        .iter()
                        .find(|(key, _)| **key == *k.as_bytes())
                        .map(|(_, c)| *c),
                    PathSegment::Index(i) => trie.nodes[node]
                        .indices
                        .iter()
                        .find(|(j, _)| j == i)
                        .map(|(_, c)| *c),
                };
                node = match existing {
                    Some(c) => c as usize,
                    None => {
                        let c = trie.nodes.len() as u32;
                        trie.nodes.push(TrieNode::default());
                        match seg {
                            PathSegment::Key(k) => {
                                trie.nodes[node].keys.push((k.as_bytes().into(), c))
                            }
                            PathSegment::Index(i) => trie.nodes[node].indices.push((*i, c)),
                        }
                        c as usize
                    }
                };
            }
            trie.nodes[node].slot = Some(slot as u32);
        }
        for n in 0..trie.nodes.len() {
            let deep = trie.nodes[n]
                .keys
                .iter()
                .any(|(_, c)| !trie.nodes[*c as usize].keys.is_empty());
            let node = &mut trie.nodes[n];
            node.deep = deep;
            if node.keys.is_empty() {
                continue;
            }
            node.keys.sort_by_key(|(k, _)| bucket(k));
            let mut from = vec![0u16; BUCKETS + 1];
            for (k, _) in &node.keys {
                from[bucket(k) + 1] += 1;
            }
            for b in 0..BUCKETS {
                from[b + 1] += from[b];
            }
            node.from = from.into();
        }
        trie
    }
}

/// What a member's value is, for [`fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string without escapes: the span is its content, between the quotes.
    String,
    /// A string with escapes: the span is its content, as written.
    Escaped,
    /// A number, `true` or `false`: the span is its text.
    Scalar,
    /// An array of scalars or strings: the span is its text, brackets included.
    Array,
}

/// A top-level member of a JSON object that logmill wrote itself (trace summaries): its key
/// and where its value is in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Written by logmill: no escapes, no dots.
    pub key: &'static str,
    pub start: u32,
    pub end: u32,
    pub kind: Kind,
}

/// Fills `out` as [`scan`] would from `line`, a flat JSON object whose members (in order)
/// are `members`, without reading the line again. `false` when it cannot say what `scan`
/// would (a rule reads below a member, or the depth limit is below the array's): the caller
/// scans.
pub fn fill(
    line: &str,
    members: &[Member],
    trie: &PathTrie,
    max_depth: usize,
    out: &mut Decoded,
) -> bool {
    let root = &trie.nodes[0];
    if max_depth < 2 {
        return false;
    }
    if root.keys.is_empty() {
        return true;
    }
    for m in members {
        debug_assert!(!m.key.contains(['.', '\\', '"']), "a plain key");
        let Some(node) = trie.child(root, m.key.as_bytes()) else {
            continue;
        };
        let node = &trie.nodes[node as usize];
        if !node.keys.is_empty() || !node.indices.is_empty() {
            return false;
        }
        let Some(slot) = node.slot else { continue };
        let (start, end) = (m.start as usize, m.end as usize);
        let Some(value) = line.get(start..end) else {
            return false;
        };
        // The last of a duplicate key wins, as in `scan`.
        out.slots[slot as usize] = Some(match m.kind {
            Kind::Escaped => {
                let at = out.scratch.len();
                super::unescape_json_into(value, &mut out.scratch);
                Span {
                    start: at as u32,
                    end: out.scratch.len() as u32,
                    scratch: true,
                }
            }
            Kind::String | Kind::Scalar | Kind::Array => Span::raw(start, end),
        });
    }
    true
}

pub fn scan(
    line: &str,
    trie: &PathTrie,
    max_depth: usize,
    out: &mut Decoded,
) -> Result<(), DecodeError> {
    let mut s = Scanner {
        b: line.as_bytes(),
        line,
        i: 0,
        trie,
        max_depth,
        key_buf: String::new(),
        top: None,
    };
    s.value(Some(0), 1, out)?;
    s.ws();
    if s.i != s.b.len() {
        return Err(DecodeError::MalformedJson);
    }
    Ok(())
}

struct Scanner<'a> {
    b: &'a [u8],
    line: &'a str,
    i: usize,
    trie: &'a PathTrie,
    max_depth: usize,
    key_buf: String,
    /// When listing an object's members (`top_level`).
    top: Option<Vec<Listed>>,
}

/// A member of an object: its key's span, whether the key is escaped, and its value's span.
type Listed = (usize, usize, bool, usize, usize);

/// The members of a JSON object, in order: each key, and its value as text when it is a
/// string (unescaped), a number or a boolean (`None` for objects, arrays and null).
pub fn top_level(line: &str) -> Result<Vec<(String, Option<String>)>, DecodeError> {
    let trie = PathTrie::new(&[]);
    let mut s = Scanner {
        b: line.as_bytes(),
        line,
        i: 0,
        trie: &trie,
        max_depth: 64,
        key_buf: String::new(),
        top: Some(Vec::new()),
    };
    s.ws();
    if s.peek()? != b'{' {
        return Err(BAD);
    }
    s.value(None, 1, &mut Decoded::default())?;
    s.ws();
    if s.i != s.b.len() {
        return Err(BAD);
    }
    let unescape = |a: usize, b: usize, escaped: bool| {
        let mut out = String::new();
        if escaped {
            super::unescape_json_into(&line[a..b], &mut out);
        } else {
            out.push_str(&line[a..b]);
        }
        out
    };
    Ok(s.top
        .unwrap_or_default()
        .into_iter()
        .map(|(ks, ke, escaped, vs, ve)| {
            let raw = &line[vs..ve];
            let value = match raw.as_bytes().first() {
                Some(b'"') => Some(unescape(
                    vs + 1,
                    ve - 1,
                    raw[1..raw.len() - 1].contains('\\'),
                )),
                Some(b'{' | b'[') | None => None,
                _ if raw == "null" => None,
                _ => Some(raw.to_string()),
            };
            (unescape(ks, ke, escaped), value)
        })
        .collect())
}

const BAD: DecodeError = DecodeError::MalformedJson;

impl Scanner<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Result<u8, DecodeError> {
        self.b.get(self.i).copied().ok_or(BAD)
    }

    fn value(
        &mut self,
        node: Option<u32>,
        depth: usize,
        out: &mut Decoded,
    ) -> Result<(), DecodeError> {
        self.ws();
        let start = self.i;
        let slot = node.and_then(|n| self.trie.nodes[n as usize].slot);
        match self.peek()? {
            b'{' => {
                if depth > self.max_depth {
                    return Err(DecodeError::JsonTooDeep);
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                } else {
                    loop {
                        self.ws();
                        if self.peek()? != b'"' {
                            return Err(BAD);
                        }
                        self.i += 1;
                        let (ks, ke, escaped) = self.string()?;
                        let child = node.and_then(|n| self.child_by_key(n, ks, ke, escaped));
                        self.ws();
                        if self.peek()? != b':' {
                            return Err(BAD);
                        }
                        self.i += 1;
                        self.ws();
                        let at = self.i;
                        self.value(child, depth + 1, out)?;
                        if depth == 1
                            && let Some(top) = &mut self.top
                        {
                            top.push((ks, ke, escaped, at, self.i));
                        }
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b'}' => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(BAD),
                        }
                    }
                }
            }
            b'[' => {
                if depth > self.max_depth {
                    return Err(DecodeError::JsonTooDeep);
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                } else {
                    let mut index = 0usize;
                    loop {
                        let child = node.and_then(|n| {
                            self.trie.nodes[n as usize]
                                .indices
                                .iter()
                                .find(|(j, _)| *j == index)
                                .map(|(_, c)| *c)
                        });
                        self.value(child, depth + 1, out)?;
                        index += 1;
                        self.ws();
                        match self.peek()? {
                            b',' => self.i += 1,
                            b']' => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err(BAD),
                        }
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let (s, e, escaped) = self.string()?;
                if let Some(slot) = slot {
                    let span = if escaped {
                        let at = out.scratch.len();
                        super::unescape_json_into(&self.line[s..e], &mut out.scratch);
                        Span {
                            start: at as u32,
                            end: out.scratch.len() as u32,
                            scratch: true,
                        }
                    } else {
                        Span::raw(s, e)
                    };
                    out.slots[slot as usize] = Some(span);
                }
                return Ok(());
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => {
                // null is absence: `exists` is false and labels read it as empty.
                return self.literal(b"null");
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return Err(BAD),
        }
        if let Some(slot) = slot {
            out.slots[slot as usize] = Some(Span::raw(start, self.i));
        }
        Ok(())
    }

    fn child_by_key(&mut self, node: u32, ks: usize, ke: usize, escaped: bool) -> Option<u32> {
        let n = &self.trie.nodes[node as usize];
        if n.keys.is_empty() {
            return None;
        }
        let key: &[u8] = if escaped {
            self.key_buf.clear();
            super::unescape_json_into(&self.line[ks..ke], &mut self.key_buf);
            self.key_buf.as_bytes()
        } else {
            &self.b[ks..ke]
        };
        let b = bucket(key);
        let (lo, hi) = (usize::from(n.from[b]), usize::from(n.from[b + 1]));
        let found = n.keys[lo..hi]
            .iter()
            .find(|(k, _)| **k == *key)
            .map(|(_, c)| *c);
        if found.is_some() || !n.deep || !key.contains(&b'.') {
            return found;
        }
        // ECS loggers write `"log.level": "info"` for `{"log": {"level": "info"}}`: the same
        // field. Only looked for where the rules read a nested path.
        let mut at = node;
        for part in key.split(|b| *b == b'.') {
            at = self.trie.nodes[at as usize]
                .keys
                .iter()
                .find(|(k, _)| **k == *part)
                .map(|(_, c)| *c)?;
        }
        (at != node).then_some(at)
    }

    /// After the opening quote; returns the content span and whether it has escapes.
    #[inline]
    fn string(&mut self) -> Result<(usize, usize, bool), DecodeError> {
        let start = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            let c = *self.b.get(self.i).ok_or(BAD)?;
            match c {
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Ok((start, end, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(BAD)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(BAD);
                            }
                            self.i += 6;
                        }
                        _ => return Err(BAD),
                    }
                }
                0..=0x1f => return Err(BAD),
                _ => self.i += 1,
            }
        }
    }

    /// Skips string bytes that need no attention, eight at a time: most of a log line is
    /// string content, and this is where the scanner spends its time.
    #[inline]
    fn skip_plain(&mut self) {
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            let quote = w ^ (LO * b'"' as u64);
            let backslash = w ^ (LO * b'\\' as u64);
            // Per byte: zero after the xor means a match; below 0x20 means a control byte. The
            // lowest flagged byte is exact (borrows only disturb the bytes above it).
            let special = (quote.wrapping_sub(LO) & !quote)
                | (backslash.wrapping_sub(LO) & !backslash)
                | (w.wrapping_sub(LO * 0x20) & !w);
            let special = special & HI;
            if special != 0 {
                self.i += (special.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(BAD)
        }
    }

    fn number(&mut self) -> Result<(), DecodeError> {
        let digits = |s: &mut Self| {
            let from = s.i;
            while let Some(b'0'..=b'9') = s.b.get(s.i) {
                s.i += 1;
            }
            s.i - from
        };
        if self.b[self.i] == b'-' {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(BAD),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(BAD);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(BAD);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_lists_members_with_scalar_values() {
        let got =
            top_level(r#"{"a":"x\"y", "b": 1.5,"c":{"d":2},"e":null,"f":true,"g":[1]}"#).unwrap();
        let want: Vec<(String, Option<String>)> = vec![
            ("a".into(), Some("x\"y".into())),
            ("b".into(), Some("1.5".into())),
            ("c".into(), None),
            ("e".into(), None),
            ("f".into(), Some("true".into())),
            ("g".into(), None),
        ];
        assert_eq!(got, want);
        assert!(top_level("[1]").is_err());
        assert!(top_level(r#"{"a":1"#).is_err());
    }

    fn path(name: &str) -> FieldPath {
        crate::rules::compile::parse_path(name).unwrap()
    }

    fn fields(line: &str, names: &[&str]) -> Result<Vec<Option<String>>, DecodeError> {
        let paths: Vec<FieldPath> = names.iter().map(|n| path(n)).collect();
        let trie = PathTrie::new(&paths);
        let mut out = Decoded {
            slots: vec![None; names.len()],
            ..Default::default()
        };
        scan(line, &trie, 32, &mut out)?;
        Ok(out
            .slots
            .iter()
            .map(|s| s.map(|s| s.get(line, &out.scratch).to_string()))
            .collect())
    }

    #[test]
    fn extracts_nested_and_indexed_fields() {
        let line = r#"{"a":{"b":[10,{"c":"x\ty"}]},"n":-1.5e3,"t":true,"z":null,"o":{"k":1}}"#;
        let got = fields(line, &["a.b[0]", "a.b[1].c", "n", "t", "z", "o", "missing"]).unwrap();
        assert_eq!(
            got,
            vec![
                Some("10".into()),
                Some("x\ty".into()),
                Some("-1.5e3".into()),
                Some("true".into()),
                None,
                Some(r#"{"k":1}"#.into()),
                None
            ]
        );
    }

    #[test]
    fn escaped_keys_match() {
        let got = fields(r#"{"le\u0076el":"warn"}"#, &["level"]).unwrap();
        assert_eq!(got, vec![Some("warn".into())]);
    }

    /// The eight-bytes-at-a-time skip must stop at every special byte wherever it falls.
    #[test]
    fn special_bytes_at_every_offset() {
        for pos in 0..24 {
            for (special, valid, want) in [
                ("\\\"", true, "\""),
                ("\\n", true, "\n"),
                ("\u{1}", false, ""),
                ("\u{1f}", false, ""),
                ("é", true, "é"),
                ("\u{7f}", true, "\u{7f}"),
            ] {
                let text = format!("{}{special}{}", "a".repeat(pos), "b".repeat(24 - pos));
                let line = format!(r#"{{"k":"{text}","n":1}}"#);
                let got = fields(&line, &["k", "n"]);
                assert_eq!(got.is_ok(), valid, "{line:?}");
                if valid {
                    let want = format!("{}{want}{}", "a".repeat(pos), "b".repeat(24 - pos));
                    assert_eq!(got.unwrap(), vec![Some(want), Some("1".into())], "{line:?}");
                }
            }
        }
    }

    /// The scanner accepts exactly what a full parser accepts (simd-json as the oracle).
    #[test]
    fn agrees_with_simd_json_on_validity() {
        let cases = [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,2]"#,
            r#"{"a":"b"} x"#,
            r#"  {"a" : [ 1 , { "b" : null } ] }  "#,
            r#"{"a":1e5,"b":-0.0E-2}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"é😀"}"#,
            r#"[1,[2,[3]]]"#,
            r#"{"a":}"#,
            r#""s""#,
            "1",
        ];
        for case in cases {
            let ours = fields(case, &[]).is_ok();
            let mut bytes = case.as_bytes().to_vec();
            let theirs = simd_json::to_borrowed_value(&mut bytes).is_ok();
            assert_eq!(ours, theirs, "{case}");
        }
    }
}
