//! Decode: bytes in, an event's fields out, or a reason why the bytes are not an event.
//!
//! Decoding is driven by the compiled rules: only the fields some rule reads are located
//! (`Program::event_fields`), so a JSON event costs one validating scan and no tree.

pub mod json;
pub mod logfmt;

use std::fmt;
use std::str::FromStr;

use crate::rules::program::FieldPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Logfmt,
    Text,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Logfmt => "logfmt",
            Format::Text => "text",
        }
    }
}

/// How the source says to decode its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Per event: `{` starts JSON, a leading `key=value` starts logfmt, anything else is text.
    #[default]
    Auto,
    Fixed(Format),
}

impl FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(InputFormat::Auto),
            "json" => Ok(InputFormat::Fixed(Format::Json)),
            "logfmt" => Ok(InputFormat::Fixed(Format::Logfmt)),
            "text" => Ok(InputFormat::Fixed(Format::Text)),
            _ => Err(format!(
                "unknown format `{s}` (expected auto, json, logfmt or text)"
            )),
        }
    }
}

/// Why a record is not an event. A bounded set: these become label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeError {
    Empty,
    TooLarge,
    InvalidUtf8,
    MalformedJson,
    JsonTooDeep,
    MalformedLogfmt,
}

impl DecodeError {
    pub const ALL: [DecodeError; 6] = [
        DecodeError::Empty,
        DecodeError::TooLarge,
        DecodeError::InvalidUtf8,
        DecodeError::MalformedJson,
        DecodeError::JsonTooDeep,
        DecodeError::MalformedLogfmt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge => "too_large",
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::MalformedJson => "malformed_json",
            DecodeError::JsonTooDeep => "json_too_deep",
            DecodeError::MalformedLogfmt => "malformed_logfmt",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_event_bytes: 64 * 1024,
            max_json_depth: 32,
        }
    }
}

/// Where a value's text lives: in the event itself, or in the decoder's scratch (unescaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
    pub scratch: bool,
}

impl Span {
    pub fn raw(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
            scratch: false,
        }
    }

    pub fn get<'a>(self, line: &'a str, scratch: &'a str) -> &'a str {
        let src = if self.scratch { scratch } else { line };
        &src[self.start as usize..self.end as usize]
    }
}

/// One event's decoded fields; reused across events so decoding does not allocate.
#[derive(Debug, Default)]
pub struct Decoded {
    pub format: Option<Format>,
    /// `slots[i]` holds `Program::event_fields[i]` when the event has it.
    pub slots: Vec<Option<Span>>,
    pub scratch: String,
}

/// Decodes events for one compiled rule set.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    input: InputFormat,
    json: json::PathTrie,
    logfmt_keys: Vec<(Box<[u8]>, u32)>,
}

impl Decoder {
    pub fn new(fields: &[FieldPath], input: InputFormat, limits: Limits) -> Decoder {
        Decoder {
            limits,
            input,
            json: json::PathTrie::new(fields),
            logfmt_keys: fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_bytes().into(), i as u32))
                .collect(),
        }
    }

    /// Validates and decodes `bytes`; on success the event's text is `bytes` as `&str`.
    pub fn decode<'a>(&self, bytes: &'a [u8], out: &mut Decoded) -> Result<&'a str, DecodeError> {
        out.format = None;
        out.slots.clear();
        out.slots.resize(self.logfmt_keys.len(), None);
        out.scratch.clear();
        if bytes.len() > self.limits.max_event_bytes {
            return Err(DecodeError::TooLarge);
        }
        let line = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        let trimmed = line.trim_ascii_start();
        if trimmed.is_empty() {
            return Err(DecodeError::Empty);
        }
        let format = match self.input {
            InputFormat::Fixed(f) => f,
            InputFormat::Auto => detect(trimmed.as_bytes()),
        };
        match format {
            Format::Json => json::scan(line, &self.json, self.limits.max_json_depth, out)?,
            Format::Logfmt => logfmt::scan(line, &self.logfmt_keys, out)?,
            Format::Text => {}
        }
        out.format = Some(format);
        Ok(line)
    }
}

/// The format `InputFormat::Auto` reads an event as (its first non-blank byte and key).
pub fn detect_format(b: &[u8]) -> Format {
    match b.trim_ascii_start() {
        [] => Format::Text,
        t => detect(t),
    }
}

fn detect(b: &[u8]) -> Format {
    if b[0] == b'{' {
        return Format::Json;
    }
    let key_len = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/'))
        .count();
    if key_len > 0 && b[0].is_ascii_alphabetic() | (b[0] == b'_') && b.get(key_len) == Some(&b'=') {
        Format::Logfmt
    } else {
        Format::Text
    }
}

/// Appends the JSON-unescaped form of `s` (the inside of a string literal) to `out`.
/// `s` has been validated by the scanner.
pub(crate) fn unescape_json_into(s: &str, out: &mut String) {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let hi = u32::from_str_radix(&hex, 16).unwrap_or(0xfffd);
                let code = if (0xd800..0xdc00).contains(&hi) {
                    let rest = chars.as_str();
                    if rest.starts_with("\\u") {
                        let lo = u32::from_str_radix(rest.get(2..6).unwrap_or(""), 16).unwrap_or(0);
                        if (0xdc00..0xe000).contains(&lo) {
                            chars = rest[6..].chars();
                            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                        } else {
                            0xfffd
                        }
                    } else {
                        0xfffd
                    }
                } else {
                    hi
                };
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats() {
        assert_eq!(detect(br#"{"a":1}"#), Format::Json);
        assert_eq!(detect(b"level=info msg=hi"), Format::Logfmt);
        assert_eq!(detect(b"10.0.0.1 - - [x]"), Format::Text);
        assert_eq!(detect(b"a = b"), Format::Text);
    }

    #[test]
    fn bad_input_is_reported_by_reason() {
        let d = Decoder::new(
            &[],
            InputFormat::Auto,
            Limits {
                max_event_bytes: 16,
                max_json_depth: 2,
            },
        );
        let mut out = Decoded::default();
        assert_eq!(d.decode(b"", &mut out), Err(DecodeError::Empty));
        assert_eq!(d.decode(b"   ", &mut out), Err(DecodeError::Empty));
        assert_eq!(
            d.decode(b"01234567890123456", &mut out),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            d.decode(b"\xff\xfe", &mut out),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            d.decode(b"{\"a\":", &mut out),
            Err(DecodeError::MalformedJson)
        );
        assert_eq!(
            d.decode(b"{\"a\":[[1]]}", &mut out),
            Err(DecodeError::JsonTooDeep)
        );
        assert_eq!(
            d.decode(b"a=\"open", &mut out),
            Err(DecodeError::MalformedLogfmt)
        );
    }

    #[test]
    fn unescapes_json() {
        let mut s = String::new();
        unescape_json_into(r#"a\"b\\c\n\u00e9\ud83d\ude00"#, &mut s);
        assert_eq!(s, "a\"b\\c\né😀");
    }
}
