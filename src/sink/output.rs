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
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        if !ESCAPED[usize::from(b)] {
            continue;
        }
        out.push_str(&s[from..i]);
        from = i + 1;
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
    out.push_str(&s[from..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
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
