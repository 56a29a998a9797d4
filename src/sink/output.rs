//! Writers for what leaves replay besides metrics: kept events and dead letters.

use std::fmt::Write;

use base64::Engine as _;

use crate::reduce::{Culprit, Reason};

/// One dead letter as a JSON line: why (and, for a value, which rule, metric and field), where
/// from, and the record itself (base64 when it is not UTF-8, so nothing is lost).
pub fn dead_letter_json(
    out: &mut String,
    reason: Reason,
    culprit: Option<&Culprit>,
    source: &str,
    offset: u64,
    raw: &[u8],
) {
    out.push_str("{\"reason\":\"");
    out.push_str(reason.as_str());
    out.push('"');
    if let Some(c) = culprit {
        out.push_str(",\"rule\":");
        json_string(out, &c.rule);
        out.push_str(",\"metric\":");
        json_string(out, &c.metric);
        out.push_str(",\"field\":");
        json_string(out, &c.field);
    }
    out.push_str(",\"source\":");
    json_string(out, source);
    let _ = write!(out, ",\"offset\":{offset},");
    match std::str::from_utf8(raw) {
        Ok(s) => {
            out.push_str("\"raw\":");
            json_string(out, s);
        }
        Err(_) => {
            out.push_str("\"raw_base64\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(raw));
            out.push('"');
        }
    }
    out.push_str("}\n");
}

/// The bytes a JSON string escapes: controls, `"` and `\\`.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs between the characters that need escaping are copied whole.
    let b = s.as_bytes();
    let mut from = 0;
    loop {
        let i = next_escaped(b, from);
        if i == b.len() {
            break;
        }
        out.push_str(&s[from..i]);
        from = i + 1;
        push_escape(out, b[i]);
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// Writes byte `b`, one that JSON strings escape, escaped.
fn push_escape(out: &mut String, b: u8) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        b => {
            let _ = write!(out, "\\u{:04x}", b);
        }
    }
}

/// The first byte at or after `at` that a JSON string escapes (`b.len()` when none), eight
/// bytes at a time: most strings need nothing escaped.
fn next_escaped(b: &[u8], mut at: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        // As `json::Scanner::skip_plain`: the lowest flagged byte is exact.
        let special = ((quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (w.wrapping_sub(LO * 0x20) & !w))
            & HI;
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < b.len() && !ESCAPED[usize::from(b[at])] {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `json_string` as it was written before it looked at eight bytes at a time.
    fn json_string_by_byte(out: &mut String, s: &str) {
        out.push('"');
        // Runs between the characters that need escaping are copied whole.
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            if !ESCAPED[usize::from(b)] {
                continue;
            }
            out.push_str(&s[from..i]);
            from = i + 1;
            push_escape(out, b);
        }
        out.push_str(&s[from..]);
        out.push('"');
    }

    #[test]
    fn strings_are_escaped_as_byte_by_byte() {
        let alphabet = [
            "a", "\"", "\\", "\n", "\r", "\t", "\u{1}", "\u{1f}", " ", "\u{7f}", "é", "€", "😀",
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i % 60)) as usize + i * 7) % alphabet.len()])
                .collect();
            let (mut a, mut b) = (String::from("x"), String::from("x"));
            json_string(&mut a, &s);
            json_string_by_byte(&mut b, &s);
            assert_eq!(a, b, "{s:?}");
        }
    }
    use crate::decode::DecodeError;

    #[test]
    fn dead_letters_keep_the_bytes() {
        let mut s = String::new();
        dead_letter_json(
            &mut s,
            Reason::Decode(DecodeError::InvalidUtf8),
            None,
            "f.log",
            7,
            b"\xff\x00",
        );
        assert_eq!(
            s,
            "{\"reason\":\"invalid_utf8\",\"source\":\"f.log\",\"offset\":7,\"raw_base64\":\"/wA=\"}\n"
        );
        s.clear();
        dead_letter_json(
            &mut s,
            Reason::Decode(DecodeError::MalformedJson),
            None,
            "f",
            0,
            b"{\"a\"\t",
        );
        assert!(s.contains(r#""raw":"{\"a\"\t""#), "{s}");
    }
}
