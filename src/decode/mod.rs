//! Decode: bytes in, an event's fields out, or a reason why the bytes are not an event.
//!
//! Decoding is driven by the compiled rules: only the fields some rule reads are located
//! (`Program::event_fields`), so a JSON event costs one validating scan and no tree.

pub mod cri;
pub mod docker;
pub mod ecs;
pub mod envelope;
pub mod json;
pub mod kubernetes;
pub mod logfmt;
pub mod otlp;
pub mod syslog;

use std::fmt;
use std::str::FromStr;

use crate::rules::program::{FieldPath, PathSegment};
use envelope::{Declared, Envelope, Key};

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
    /// A record of a topic declared `cri` that is not a CRI line.
    MalformedCri,
    /// CRI partial lines whose last part did not come in their batch.
    CriPartialUnfinished,
    /// CRI partial lines that joined would pass `max_event_bytes`.
    CriPartialTooLarge,
    /// A JSON envelope without its message (`log`, `message`).
    MissingMessage,
    /// A syslog priority that is not 0 to 191 in one to three digits.
    BadSyslogPriority,
    /// A record of a topic declared `syslog` that is not a syslog line.
    MalformedSyslog,
    /// An OTLP message (`otlp_proto`, `otlp_json`) that does not decode.
    MalformedOtlp,
}

impl DecodeError {
    pub const ALL: [DecodeError; 13] = [
        DecodeError::Empty,
        DecodeError::TooLarge,
        DecodeError::InvalidUtf8,
        DecodeError::MalformedJson,
        DecodeError::JsonTooDeep,
        DecodeError::MalformedLogfmt,
        DecodeError::MalformedCri,
        DecodeError::CriPartialUnfinished,
        DecodeError::CriPartialTooLarge,
        DecodeError::MissingMessage,
        DecodeError::BadSyslogPriority,
        DecodeError::MalformedSyslog,
        DecodeError::MalformedOtlp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge => "too_large",
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::MalformedJson => "malformed_json",
            DecodeError::JsonTooDeep => "json_too_deep",
            DecodeError::MalformedLogfmt => "malformed_logfmt",
            DecodeError::MalformedCri => "malformed_cri",
            DecodeError::CriPartialUnfinished => "cri_partial_unfinished",
            DecodeError::CriPartialTooLarge => "cri_partial_too_large",
            DecodeError::MissingMessage => "missing_message",
            DecodeError::BadSyslogPriority => "bad_syslog_priority",
            DecodeError::MalformedSyslog => "malformed_syslog",
            DecodeError::MalformedOtlp => "malformed_otlp",
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
    /// The envelope the event was unwrapped from, if any.
    pub envelope: Option<Envelope>,
    /// `slots[i]` holds `Program::event_fields[i]` when the event has it.
    pub slots: Vec<Option<Span>>,
    pub scratch: String,
    /// The envelope's own fields, by the same slots, as text in `outer_scratch`: the message
    /// is decoded into `slots` first, these fill what it does not have.
    outer: Vec<Option<Span>>,
    outer_scratch: String,
    /// The last topic looked up in the declarations, and its envelope.
    topic: Option<(String, Option<Envelope>)>,
}

/// Which part of its Kafka message (or input line) a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// The whole message: one event.
    #[default]
    Whole,
    /// Event `n` of a message that holds many (`otlp`): the record's payload is that event as
    /// `otlp::Splitter` rendered it.
    Event(u32),
    /// A message that holds many events and could not be split: a dead letter, for this reason.
    Unreadable(DecodeError),
}

/// What a record holds, as `Decoder::unwrap` found it.
#[derive(Debug)]
pub enum Unwrapped<'a> {
    /// The record is the event, fully decoded; this is its text.
    Line(&'a str),
    /// An envelope: its message is in the `String` given to `unwrap` and its fields are
    /// noted; `finish` decodes the message.
    Message,
    /// A CRI line: partial lines are joined (`cri::Joiner`) before `finish`.
    Cri(cri::Line<'a>),
}

/// Decodes events for one compiled rule set.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    input: InputFormat,
    /// The program's fields, then the keys envelopes are told apart by (`keys`), then
    /// Vector's spellings of Kubernetes fields (`aliases`).
    json: json::PathTrie,
    logfmt_keys: Vec<(Box<[u8]>, u32)>,
    /// How many slots the program reads (`Program::event_fields`).
    fields: usize,
    /// All slots the JSON scan fills.
    slots: usize,
    /// The slot of each `envelope::Key`, in `Key::ALL` order.
    keys: [u32; 6],
    /// `(alias, field)`: Vector's name of a Kubernetes field a rule reads by Fluent Bit's.
    aliases: Vec<(u32, u32)>,
    /// The program's slots of the fields every envelope may give: `message`, then CRI's
    /// `time`, `stream` and `logtag`.
    message: Option<u32>,
    cri: [Option<u32>; 3],
    /// The program's fields by name, for envelopes parsed by hand (syslog).
    names: Vec<(Box<str>, u32)>,
    declared: Declared,
}

impl Decoder {
    pub fn new(fields: &[FieldPath], input: InputFormat, limits: Limits) -> Decoder {
        let slot_of = |name: &str| {
            fields
                .iter()
                .position(|f| f.name == name && f.segments.len() == name.split('.').count())
                .map(|i| i as u32)
        };
        let mut all: Vec<FieldPath> = fields.to_vec();
        let mut keys = [0u32; 6];
        for (k, key) in Key::ALL.iter().enumerate() {
            let path = key.path();
            let at = all.iter().position(|f| {
                f.segments
                    .iter()
                    .map(|s| match s {
                        PathSegment::Key(k) => k.as_str(),
                        PathSegment::Index(_) => "[]",
                    })
                    .eq(path.split('.'))
            });
            keys[k] = match at {
                Some(i) => i as u32,
                None => {
                    all.push(FieldPath {
                        name: path.to_string(),
                        segments: path
                            .split('.')
                            .map(|s| PathSegment::Key(s.to_string()))
                            .collect(),
                    });
                    (all.len() - 1) as u32
                }
            };
        }
        let mut aliases = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if let Some(alias) = kubernetes::vector_alias(f) {
                all.push(alias);
                aliases.push(((all.len() - 1) as u32, i as u32));
            }
        }
        Decoder {
            limits,
            input,
            json: json::PathTrie::new(&all),
            logfmt_keys: fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_bytes().into(), i as u32))
                .collect(),
            fields: fields.len(),
            slots: all.len(),
            keys,
            aliases,
            message: slot_of("message"),
            cri: [slot_of("time"), slot_of("stream"), slot_of("logtag")],
            names: fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_str().into(), i as u32))
                .collect(),
            declared: Declared::default(),
        }
    }

    /// Topics whose envelope is declared (the first declaration naming a topic wins).
    pub fn declare(&mut self, declared: Declared) {
        self.declared = declared;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn reset(&self, out: &mut Decoded) {
        out.format = None;
        out.envelope = None;
        out.slots.clear();
        out.slots.resize(self.slots, None);
        out.scratch.clear();
    }

    /// Validates and decodes `bytes` as an event itself (no envelope); on success the event's
    /// text is `bytes` as `&str`.
    pub fn decode<'a>(&self, bytes: &'a [u8], out: &mut Decoded) -> Result<&'a str, DecodeError> {
        self.reset(out);
        let line = self.validate(bytes)?;
        let format = match self.input {
            InputFormat::Fixed(f) => f,
            InputFormat::Auto => detect(line.trim_ascii_start().as_bytes()),
        };
        self.scan(line, format, out)?;
        Ok(line)
    }

    /// `unwrap` for a record logmill wrote itself, `line`, a flat JSON object whose members
    /// are `members` (`json::fill`): decoded as `unwrap` would, without reading it again;
    /// `false` when `unwrap` might decide otherwise (the input format is not fixed JSON, the
    /// topic declares an envelope, the record is over the size cap, a rule reads below a
    /// member): the caller unwraps it.
    pub fn fill(
        &self,
        topic: &str,
        line: &str,
        part: Part,
        members: &[json::Member],
        out: &mut Decoded,
    ) -> bool {
        if part != Part::Whole
            || self.input != InputFormat::Fixed(Format::Json)
            || self.declared_of(topic, out).is_some()
            || line.len() > self.limits.max_event_bytes
            || line.trim_ascii_start().is_empty()
        {
            return false;
        }
        self.reset(out);
        if !json::fill(line, members, &self.json, self.limits.max_json_depth, out) {
            return false;
        }
        out.format = Some(Format::Json);
        true
    }

    fn validate<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
        if bytes.len() > self.limits.max_event_bytes {
            return Err(DecodeError::TooLarge);
        }
        let line = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if line.trim_ascii_start().is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(line)
    }

    fn scan(&self, line: &str, format: Format, out: &mut Decoded) -> Result<(), DecodeError> {
        match format {
            Format::Json => json::scan(line, &self.json, self.limits.max_json_depth, out)?,
            Format::Logfmt => logfmt::scan(line, &self.logfmt_keys, out)?,
            Format::Text => {}
        }
        out.format = Some(format);
        Ok(())
    }

    /// How `topic`'s record `bytes` is written when it is a message of many events, to be
    /// split (`otlp::Splitter`) before the engine: declared, else detected (`otlp_json` only,
    /// and only when the input format is `auto`).
    pub fn many(&self, topic: &str, bytes: &[u8]) -> Option<otlp::Encoding> {
        match self.declared.of(topic) {
            Some(e) => e.otlp(),
            None => self.detected_many(bytes),
        }
    }

    /// `many` for a topic without a declared envelope.
    fn detected_many(&self, bytes: &[u8]) -> Option<otlp::Encoding> {
        (self.input == InputFormat::Auto && otlp::detect_json(bytes))
            .then_some(otlp::Encoding::Json)
    }

    /// `topic`'s record `bytes` as a CRI line, when it is one (declared, or detected as
    /// `unwrap` detects it).
    pub fn cri_line<'a>(&self, topic: &str, bytes: &'a [u8]) -> Option<cri::Line<'a>> {
        // Asked of every record of a batch: most are told apart without a UTF-8 check.
        match self.declared.of(topic) {
            Some(Envelope::Cri) => {}
            Some(_) => return None,
            None if self.input == InputFormat::Auto
                && bytes.first().is_some_and(u8::is_ascii_digit) => {}
            None => return None,
        }
        cri::parse(std::str::from_utf8(bytes).ok()?)
    }

    /// Validates `bytes` and unwraps the envelope of `topic`'s record: declared, else
    /// detected (only when the input format is `auto`: a fixed format says what records are).
    /// `part` says whether the record is a split message's event (see `Part`).
    pub fn unwrap<'a>(
        &self,
        topic: &str,
        bytes: &'a [u8],
        part: Part,
        message: &mut String,
        out: &mut Decoded,
    ) -> Result<Unwrapped<'a>, DecodeError> {
        self.reset(out);
        if let Part::Unreadable(e) = part {
            return Err(e);
        }
        let line = self.validate(bytes)?;
        let mut declared = self.declared_of(topic, out);
        match (part, declared.and_then(Envelope::otlp)) {
            // Its splitter said the topic's messages hold many events.
            (Part::Event(_), None) => declared = Some(Envelope::OtlpJson),
            (Part::Event(_), Some(_)) => {}
            // A source that does not split messages gave one: it cannot be read as one event.
            (Part::Whole, Some(_)) => return Err(DecodeError::MalformedOtlp),
            // (The topic's declaration is known already: only detection is left to ask.)
            (Part::Whole, None) if declared.is_none() && self.detected_many(bytes).is_some() => {
                return Err(DecodeError::MalformedOtlp);
            }
            _ => {}
        }
        let format = match (declared, self.input) {
            (Some(Envelope::None), InputFormat::Auto) | (None, InputFormat::Auto) => {
                detect(line.trim_ascii_start().as_bytes())
            }
            (Some(Envelope::None) | None, InputFormat::Fixed(f)) => f,
            (Some(Envelope::Cri | Envelope::Syslog), _) => Format::Text,
            (Some(_), _) => Format::Json,
        };
        let envelope = match declared {
            Some(Envelope::None) => None,
            Some(e) => Some(e),
            None if self.input != InputFormat::Auto => None,
            None => match format {
                Format::Text if cri::detect(line) => Some(Envelope::Cri),
                Format::Text if syslog::detect(line) => Some(Envelope::Syslog),
                _ => None,
            },
        };
        if envelope == Some(Envelope::Cri) {
            let cri = cri::parse(line).ok_or(DecodeError::MalformedCri)?;
            out.envelope = Some(Envelope::Cri);
            self.note_cri(&cri, out);
            return Ok(Unwrapped::Cri(cri));
        }
        if envelope == Some(Envelope::Syslog) {
            let mut values = std::mem::take(&mut out.scratch);
            let parsed = syslog::parse(line, &mut values);
            if let Ok(l) = &parsed {
                message.clear();
                message.push_str(l.message);
                self.note_syslog(l, &values, out);
                out.envelope = Some(Envelope::Syslog);
            }
            out.scratch = values;
            return parsed.map(|_| Unwrapped::Message);
        }
        self.scan(line, format, out)?;
        let envelope = match envelope {
            Some(e) => e,
            None if format == Format::Json
                && declared.is_none()
                && self.input == InputFormat::Auto =>
            {
                match envelope::detect_json(&self.found(line, out)) {
                    Some(e) => e,
                    None => return Ok(Unwrapped::Line(line)),
                }
            }
            None => return Ok(Unwrapped::Line(line)),
        };
        let text = envelope::message_keys(envelope)
            .iter()
            .find_map(|k| out.slots[self.keys[*k as usize] as usize]);
        let text = match text {
            Some(t) => t.get(line, &out.scratch),
            // An OTLP event without a string body holds its fields itself.
            None if envelope.otlp().is_some() => {
                out.envelope = Some(envelope);
                return Ok(Unwrapped::Line(line));
            }
            None => return Err(DecodeError::MissingMessage),
        };
        message.clear();
        message.push_str(text.strip_suffix('\n').unwrap_or(text));
        out.envelope = Some(envelope);
        // The envelope's fields are copied aside: the message's own decoding reuses `slots`.
        self.clear_outer(out);
        let copy = |span: Span, out: &mut Decoded| {
            let at = out.outer_scratch.len();
            out.outer_scratch.push_str(span.get(line, &out.scratch));
            Span {
                start: at as u32,
                end: out.outer_scratch.len() as u32,
                scratch: true,
            }
        };
        for i in 0..self.fields {
            if let Some(span) = out.slots[i] {
                out.outer[i] = Some(copy(span, out));
            }
        }
        if envelope == Envelope::Kubernetes {
            for &(alias, field) in &self.aliases {
                if let (None, Some(span)) = (out.outer[field as usize], out.slots[alias as usize]) {
                    out.outer[field as usize] = Some(copy(span, out));
                }
            }
        }
        Ok(Unwrapped::Message)
    }

    /// Decodes an envelope's message (after `unwrap`), then gives it the envelope's fields it
    /// does not have itself.
    pub fn finish(&self, message: &str, out: &mut Decoded) -> Result<(), DecodeError> {
        let envelope = out.envelope;
        self.reset(out);
        out.envelope = envelope;
        let trimmed = message.trim_ascii_start();
        let format = match self.input {
            InputFormat::Fixed(f) if !trimmed.is_empty() => f,
            _ if trimmed.is_empty() => Format::Text,
            _ => detect(trimmed.as_bytes()),
        };
        self.scan(message, format, out)?;
        for i in 0..self.fields.min(out.outer.len()) {
            if let (None, Some(span)) = (out.slots[i], out.outer[i]) {
                let at = out.scratch.len();
                out.scratch
                    .push_str(span.get("", out.outer_scratch.as_str()));
                out.slots[i] = Some(Span {
                    start: at as u32,
                    end: out.scratch.len() as u32,
                    scratch: true,
                });
            }
        }
        if let Some(m) = self.message {
            out.slots[m as usize].get_or_insert(Span::raw(0, message.len()));
        }
        Ok(())
    }

    fn declared_of(&self, topic: &str, out: &mut Decoded) -> Option<Envelope> {
        if self.declared.is_empty() {
            return None;
        }
        match &out.topic {
            Some((t, e)) if t == topic => *e,
            _ => {
                let e = self.declared.of(topic);
                out.topic = Some((topic.to_string(), e));
                e
            }
        }
    }

    /// CRI's fields, as the envelope's.
    fn note_cri(&self, line: &cri::Line<'_>, out: &mut Decoded) {
        self.clear_outer(out);
        for (slot, text) in self.cri.iter().zip([line.time, line.stream, line.tags]) {
            if let Some(slot) = slot {
                put_outer(out, *slot, text);
            }
        }
    }

    /// No envelope fields yet, for this record.
    fn clear_outer(&self, out: &mut Decoded) {
        out.outer.clear();
        out.outer.resize(self.fields, None);
        out.outer_scratch.clear();
    }

    /// Syslog's fields, as the envelope's.
    fn note_syslog(&self, l: &syslog::Line<'_>, values: &str, out: &mut Decoded) {
        self.clear_outer(out);
        let priority = l.priority.map(|p| p.to_string());
        let fixed = [
            ("priority", priority.as_deref()),
            ("facility", l.facility()),
            ("severity", l.severity()),
            ("timestamp", l.timestamp),
            ("hostname", l.hostname),
            ("appname", l.appname),
            ("procid", l.procid),
            ("msgid", l.msgid),
        ];
        for (name, slot) in &self.names {
            let text = match fixed.iter().find(|(n, _)| **n == **name) {
                Some((_, v)) => *v,
                // `sd.<SD-ID>.<name>`, compared without building the name.
                None => name.strip_prefix("sd.").and_then(|rest| {
                    l.params.iter().find_map(|(id, param, (a, b))| {
                        let p = rest.strip_prefix(id)?.strip_prefix('.')?;
                        (p == *param).then(|| &values[*a..*b])
                    })
                }),
            };
            if let Some(text) = text {
                put_outer(out, *slot, text);
            }
        }
    }

    /// Which of the keys that tell JSON envelopes apart the scanned record has.
    fn found(&self, line: &str, out: &Decoded) -> envelope::Found {
        let at = |k: Key| out.slots[self.keys[k as usize] as usize];
        // A string value's span starts after its quote (or is unescaped into the scratch).
        let string = |k: Key| {
            at(k).is_some_and(|s| {
                s.scratch || (s.start > 0 && line.as_bytes()[s.start as usize - 1] == b'"')
            })
        };
        envelope::Found {
            log_string: string(Key::Log),
            message_string: string(Key::Message),
            stream: at(Key::Stream).is_some(),
            time: at(Key::Time).is_some(),
            kubernetes: at(Key::Kubernetes).is_some(),
            ecs_version: at(Key::EcsVersion).is_some(),
        }
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

/// An envelope field's text, copied into the record's envelope scratch, at `slot`.
fn put_outer(out: &mut Decoded, slot: u32, text: &str) {
    let at = out.outer_scratch.len();
    out.outer_scratch.push_str(text);
    out.outer[slot as usize] = Some(Span {
        start: at as u32,
        end: out.outer_scratch.len() as u32,
        scratch: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::program::TopicPattern;

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

    fn decoder(fields: &[&str], input: InputFormat) -> Decoder {
        let paths: Vec<FieldPath> = fields
            .iter()
            .map(|f| crate::rules::compile::parse_path(f).unwrap())
            .collect();
        Decoder::new(&paths, input, Limits::default())
    }

    /// Unwraps and decodes one record: its envelope, text and the fields asked for.
    fn unwrap_one(
        d: &Decoder,
        topic: &str,
        rec: &str,
    ) -> (Option<Envelope>, String, Vec<Option<String>>) {
        let (mut out, mut msg) = (Decoded::default(), String::new());
        let text = match d
            .unwrap(topic, rec.as_bytes(), Part::Whole, &mut msg, &mut out)
            .unwrap()
        {
            Unwrapped::Line(l) => l.to_string(),
            Unwrapped::Message => {
                d.finish(&msg, &mut out).unwrap();
                msg.clone()
            }
            Unwrapped::Cri(c) => {
                msg = c.message.to_string();
                d.finish(&msg, &mut out).unwrap();
                msg.clone()
            }
        };
        let fields = out.slots[..d.fields]
            .iter()
            .map(|s| s.map(|s| s.get(&text, &out.scratch).to_string()))
            .collect();
        (out.envelope, text, fields)
    }

    #[test]
    fn issue12_docker_message_is_the_text_and_app_fields_win() {
        let d = decoder(&["message", "stream", "time", "level"], InputFormat::Auto);
        let (env, text, f) = unwrap_one(
            &d,
            "t",
            r#"{"log":"{\"level\":\"warn\",\"time\":\"app\"}\n","stream":"stderr","time":"2026-11-26T22:00:00Z"}"#,
        );
        assert_eq!(env, Some(Envelope::Docker));
        assert_eq!(text, r#"{"level":"warn","time":"app"}"#);
        assert_eq!(
            f,
            [
                Some(text.as_str()),
                Some("stderr"),
                Some("app"),
                Some("warn")
            ]
            .map(|s| s.map(str::to_string))
        );
    }

    #[test]
    fn issue12_plain_json_and_fixed_formats_are_not_unwrapped() {
        let auto = decoder(&["message"], InputFormat::Auto);
        let plain = r#"{"message":"hi","time":"2026-11-26T22:00:00Z","stream":"x"}"#;
        let (env, text, _) = unwrap_one(&auto, "t", plain);
        assert_eq!((env, text.as_str()), (None, plain));
        let fixed = decoder(&["message"], InputFormat::Fixed(Format::Json));
        let docker = r#"{"log":"x","stream":"stdout","time":"2026-11-26T22:00:00Z"}"#;
        assert_eq!(unwrap_one(&fixed, "t", docker).0, None);
        assert_eq!(unwrap_one(&auto, "t", docker).0, Some(Envelope::Docker));
        let text = decoder(&["message"], InputFormat::Fixed(Format::Text));
        let cri = "2026-11-26T22:00:00.1Z stdout F hello";
        assert_eq!(unwrap_one(&text, "t", cri).0, None);
        assert_eq!(unwrap_one(&auto, "t", cri).0, Some(Envelope::Cri));
    }

    #[test]
    fn issue12_declared_envelopes_win_over_detection() {
        let mut d = decoder(&["stream"], InputFormat::Auto);
        d.declare(Declared {
            topics: vec![
                (TopicPattern::new("raw"), Envelope::None),
                (TopicPattern::new("pods-*"), Envelope::Cri),
            ],
        });
        let cri = "2026-11-26T22:00:00.1Z stdout F hello";
        assert_eq!(unwrap_one(&d, "raw", cri).0, None);
        let (env, text, f) = unwrap_one(&d, "pods-a", cri);
        assert_eq!((env, text.as_str()), (Some(Envelope::Cri), "hello"));
        assert_eq!(f, vec![Some("stdout".to_string())]);
        let (mut out, mut msg) = (Decoded::default(), String::new());
        assert_eq!(
            d.unwrap("pods-a", b"not cri", Part::Whole, &mut msg, &mut out)
                .err(),
            Some(DecodeError::MalformedCri)
        );
    }

    #[test]
    fn issue12_dotted_keys_read_as_nested_paths() {
        let d = decoder(&["log.level", "service.name", "message"], InputFormat::Auto);
        let flat =
            r#"{"log.level":"info","ecs.version":"1.6.0","service.name":"cart","message":"ok"}"#;
        let nested = r#"{"log":{"level":"info"},"ecs":{"version":"8.0.0"},"service":{"name":"cart"},"message":"ok"}"#;
        for rec in [flat, nested] {
            let (env, text, f) = unwrap_one(&d, "t", rec);
            assert_eq!((env, text.as_str()), (Some(Envelope::Ecs), "ok"));
            assert_eq!(f, ["info", "cart", "ok"].map(|s| Some(s.to_string())));
        }
    }

    #[test]
    fn issue12_vector_fields_answer_to_fluent_bit_names() {
        let d = decoder(
            &[
                "kubernetes.namespace_name",
                "kubernetes.labels.app",
                "stream",
            ],
            InputFormat::Auto,
        );
        let vector = r#"{"kubernetes":{"pod_namespace":"shop","pod_labels":{"app":"cart"}},"message":"x","stream":"stderr"}"#;
        let (env, _, f) = unwrap_one(&d, "t", vector);
        assert_eq!(env, Some(Envelope::Kubernetes));
        assert_eq!(f, ["shop", "cart", "stderr"].map(|s| Some(s.to_string())));
    }

    #[test]
    fn issue12_syslog_lines_with_a_priority_are_detected() {
        let d = decoder(
            &["severity", "appname", "sd.origin.ip", "level"],
            InputFormat::Auto,
        );
        let (env, text, f) = unwrap_one(
            &d,
            "t",
            r#"<11>1 2026-11-26T22:00:00Z h app - - [origin ip="10.0.0.1"] level=error msg=x"#,
        );
        assert_eq!(
            (env, text.as_str()),
            (Some(Envelope::Syslog), "level=error msg=x")
        );
        assert_eq!(
            f,
            ["err", "app", "10.0.0.1", "error"].map(|s| Some(s.to_string()))
        );
        let file_format = "2026-11-26T22:00:00.1+00:00 web-1 sshd[1]: hi";
        assert_eq!(unwrap_one(&d, "t", file_format).0, None);
        let (mut out, mut msg) = (Decoded::default(), String::new());
        assert_eq!(
            d.unwrap(
                "t",
                b"<300>1 - - - - - - x",
                Part::Whole,
                &mut msg,
                &mut out
            )
            .err(),
            Some(DecodeError::BadSyslogPriority)
        );
    }

    #[test]
    fn unescapes_json() {
        let mut s = String::new();
        unescape_json_into(r#"a\"b\\c\n\u00e9\ud83d\ude00"#, &mut s);
        assert_eq!(s, "a\"b\\c\né😀");
    }
}
