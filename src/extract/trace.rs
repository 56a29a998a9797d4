//! Trace context carried by an event: which trace and span it belongs to.
//!
//! The ids arrive in several spellings, each with its own rules, and a wrong one must never
//! be taken for a trace (an exemplar that leads nowhere is worse than none):
//! - W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex flags>`), validated as the spec says: a
//!   two-digit version other than `ff`, lowercase hex ids that are not all zeros, and more
//!   fields only for a version above `00`;
//! - B3 single (`b3: <trace>-<span>[-<sampled>[-<parent>]]`, or just the sampling state) and
//!   multi (`X-B3-TraceId` of 16 or 32 hex, `X-B3-SpanId`, `X-B3-ParentSpanId`);
//! - plain fields (`trace_id`, `span_id`, …), where uppercase hex is accepted and lowered,
//!   since loggers print ids both ways;
//! - Datadog's `dd.trace_id`, a decimal 64-bit number.
//!
//! Every id is normalised to lowercase hex: trace ids to 32 digits (a 64-bit id is padded on
//! the left with zeros, as W3C says to), span ids to 16. A rule may also name its own
//! correlation id (a request id), which is kept as it is. Nothing here allocates unless the
//! id is a custom one.

use std::fmt;

/// Why an id was not used. Bounded: these are label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invalid {
    Empty,
    /// Not the number of digits its form requires.
    Length,
    NotHex,
    /// Uppercase hex where the spec requires lowercase (`traceparent`, B3).
    Uppercase,
    /// An id of zeros only, which the specs reserve for "no id".
    AllZero,
    /// `traceparent`'s version is not two hex digits, is `ff`, or `00` with extra fields.
    Version,
    /// The value's structure: separators, number of parts, the flags or sampling state.
    Format,
    /// `dd.trace_id` that is not a decimal 64-bit number.
    Decimal,
    /// A custom correlation id longer than [`MAX_CUSTOM`] bytes or with control characters.
    Custom,
}

impl Invalid {
    pub const ALL: [Invalid; 9] = [
        Invalid::Empty,
        Invalid::Length,
        Invalid::NotHex,
        Invalid::Uppercase,
        Invalid::AllZero,
        Invalid::Version,
        Invalid::Format,
        Invalid::Decimal,
        Invalid::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Empty => "empty",
            Invalid::Length => "length",
            Invalid::NotHex => "not_hex",
            Invalid::Uppercase => "uppercase",
            Invalid::AllZero => "all_zero",
            Invalid::Version => "version",
            Invalid::Format => "format",
            Invalid::Decimal => "decimal",
            Invalid::Custom => "custom",
        }
    }
}

/// Where an id came from, for the invalid-id counter's `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Traceparent,
    B3,
    TraceId,
    SpanId,
    ParentSpanId,
    Datadog,
    /// A field or capture the rule names as its correlation id.
    Rule,
}

impl Source {
    pub const ALL: [Source; 7] = [
        Source::Traceparent,
        Source::B3,
        Source::TraceId,
        Source::SpanId,
        Source::ParentSpanId,
        Source::Datadog,
        Source::Rule,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Traceparent => "traceparent",
            Source::B3 => "b3",
            Source::TraceId => "trace_id",
            Source::SpanId => "span_id",
            Source::ParentSpanId => "parent_span_id",
            Source::Datadog => "dd.trace_id",
            Source::Rule => "rule",
        }
    }
}

/// Longest custom correlation id, in bytes: with its label name it stays within OpenMetrics'
/// 128-character limit for an exemplar's labels, beside a span id.
pub const MAX_CUSTOM: usize = 80;

/// A trace id: 128 bits shown as 32 lowercase hex digits, or a rule's own correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceId {
    Hex(u128),
    Custom(Box<str>),
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceId::Hex(id) => write!(f, "{id:032x}"),
            TraceId::Custom(s) => f.write_str(s),
        }
    }
}

/// A span id: 64 bits shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What an event says of its trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub trace: Option<TraceId>,
    pub span: Option<SpanId>,
    pub parent: Option<SpanId>,
    /// The sampling flag of `traceparent` or B3, when the event carries one.
    pub sampled: Option<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// Lowercase only, as `traceparent` and B3 require.
    Lower,
    /// Either case, lowered.
    Any,
}

/// Eight hex digits at once (SWAR, in a `u64` of the ASCII bytes, the first digit in the lowest
/// byte): their value, and per byte bit 7 set where a byte is not a hex digit (`bad`) and
/// where it is an uppercase one (`upper`). Ids are parsed for every traced event; a table
/// lookup per digit was a twentieth of a JSON event's processing.
#[inline]
fn hex8(x: u64) -> (u32, u64, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let lo = x & (ONES * 0x0f);
    let hi = (x >> 4) & (ONES * 0x0f);
    // Each test on nibbles (at most 0x0f) plus a constant sets bit 7 of its byte, no carry.
    let not_3 = ((hi ^ (ONES * 3)) + ONES * 0x7f) & HIGH;
    let over_9 = (lo + ONES * 0x76) & HIGH;
    let not_4_or_6 = (((hi | (ONES * 2)) ^ (ONES * 6)) + ONES * 0x7f) & HIGH;
    let zero = !(lo + ONES * 0x7f) & HIGH;
    let over_6 = (lo + ONES * 0x79) & HIGH;
    let not_letter = not_4_or_6 | zero | over_6;
    let bad = (not_3 | over_9) & not_letter;
    // `A`-`F` have bit 1 of their high nibble clear, `a`-`f` set.
    let upper = !not_letter & !((hi & (ONES * 2)) << 6) & HIGH;
    // A letter's value is its low nibble plus nine (bit 2 of its high nibble is set).
    let nib = lo + ((hi >> 2) & ONES) * 9;
    let pairs = ((nib << 4) | (nib >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = ((pairs << 8) | (pairs >> 16)) & 0x0000_ffff_0000_ffff;
    let v = ((quads << 16) | (quads >> 32)) & 0xffff_ffff;
    (v as u32, bad, upper)
}

/// `s` as a hex number of exactly `digits` digits (at most 32).
fn hex(s: &str, digits: usize, case: Case) -> Result<u128, Invalid> {
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    if s.len() != digits {
        return Err(Invalid::Length);
    }
    let b = s.as_bytes();
    let at = |i: usize| {
        hex8(u64::from_le_bytes(
            b[i..i + 8].try_into().expect("eight bytes"),
        ))
    };
    let (v, bad, upper) = match digits {
        // The two sizes of every id, without a loop.
        32 => {
            let (a, b, c, d) = (at(0), at(8), at(16), at(24));
            (
                (u128::from(a.0) << 96)
                    | (u128::from(b.0) << 64)
                    | (u128::from(c.0) << 32)
                    | u128::from(d.0),
                a.1 | b.1 | c.1 | d.1,
                a.2 | b.2 | c.2 | d.2,
            )
        }
        16 => {
            let ((hi, bh, uh), (lo, bl, ul)) = (at(0), at(8));
            ((u128::from(hi) << 32) | u128::from(lo), bh | bl, uh | ul)
        }
        // Fewer digits (`traceparent`'s two flag digits): behind leading zeros.
        n if n < 8 => {
            let mut x = [b'0'; 8];
            x[8 - n..].copy_from_slice(b);
            let (d, bad, upper) = hex8(u64::from_le_bytes(x));
            (u128::from(d), bad, upper)
        }
        _ => unreachable!("ids have 16 or 32 digits, flags 2"),
    };
    if bad != 0 {
        return Err(Invalid::NotHex);
    }
    if upper != 0 && case == Case::Lower {
        return Err(Invalid::Uppercase);
    }
    if v == 0 {
        return Err(Invalid::AllZero);
    }
    Ok(v)
}

/// Appends `v`'s low `digits` hex digits, lowercase, to `out`.
pub fn push_hex(out: &mut String, v: u128, digits: usize) {
    // Two digits per byte from a table, pushed at once: a `push` per digit (its capacity
    // check, its char encoding, a 128-bit shift) was a tenth of an event's cost where rules
    // sample by trace.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        t
    };
    let mut buf = [0u8; 32];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    let digits = &buf[32 - digits.min(32)..];
    out.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
}

/// A trace id of 32 hex digits, or 16 (a 64-bit id, padded).
fn trace_hex(s: &str, case: Case) -> Result<TraceId, Invalid> {
    let digits = if s.len() == 16 { 16 } else { 32 };
    hex(s, digits, case).map(TraceId::Hex)
}

fn span_hex(s: &str, case: Case) -> Result<SpanId, Invalid> {
    hex(s, 16, case).map(|v| SpanId(v as u64))
}

/// A plain `trace_id` field: 32 (or 16) hex digits of either case.
pub fn trace_id(s: &str) -> Result<TraceId, Invalid> {
    trace_hex(trimmed(s), Case::Any)
}

/// A plain `span_id` or `parent_span_id` field.
pub fn span_id(s: &str) -> Result<SpanId, Invalid> {
    span_hex(trimmed(s), Case::Any)
}

/// `s.trim()`, without its scan when `s` starts and ends with ASCII other than whitespace
/// (ids mostly do; a non-ASCII end may be Unicode whitespace, which `trim` removes).
#[inline]
fn trimmed(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l))
            if f.is_ascii()
                && l.is_ascii()
                && !f.is_ascii_whitespace()
                && !l.is_ascii_whitespace() =>
        {
            s
        }
        _ => s.trim(),
    }
}

/// Datadog's `dd.trace_id`: a decimal 64-bit number (some tracers log it as hex, which is
/// taken as such when it has 16 or 32 digits and a letter).
pub fn datadog_trace_id(s: &str) -> Result<TraceId, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return match trace_hex(s, Case::Any) {
            Ok(id) => Ok(id),
            Err(Invalid::Length | Invalid::NotHex) => Err(Invalid::Decimal),
            Err(e) => Err(e),
        };
    }
    match s.parse::<u64>() {
        Ok(0) => Err(Invalid::AllZero),
        Ok(v) => Ok(TraceId::Hex(u128::from(v))),
        Err(_) => Err(Invalid::Decimal),
    }
}

/// A rule's own correlation id, kept as it is: printable, at most [`MAX_CUSTOM`] bytes.
pub fn custom(s: &str) -> Result<TraceId, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    if s.len() > MAX_CUSTOM || s.chars().any(char::is_control) {
        return Err(Invalid::Custom);
    }
    Ok(TraceId::Custom(s.into()))
}

/// W3C `traceparent`: `version-traceid-parentid-flags`.
pub fn traceparent(s: &str) -> Result<Context, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    let mut parts = s.split('-');
    let version = parts.next().unwrap_or_default();
    if version.len() != 2 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Invalid::Version);
    }
    if version.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Invalid::Uppercase);
    }
    if version == "ff" {
        return Err(Invalid::Version);
    }
    let (Some(trace), Some(span), Some(flags)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Invalid::Format);
    };
    // Version 00 has exactly four fields; a later version may append more, which a reader
    // of version 00 ignores.
    if parts.next().is_some() && version == "00" {
        return Err(Invalid::Version);
    }
    let trace = hex(trace, 32, Case::Lower)?;
    let span = span_hex(span, Case::Lower)?;
    let flags = match hex(flags, 2, Case::Lower) {
        Ok(f) => f as u8,
        // Flags may be all zeros, unlike ids.
        Err(Invalid::AllZero) => 0,
        Err(Invalid::Length | Invalid::Empty) => return Err(Invalid::Format),
        Err(e) => return Err(e),
    };
    Ok(Context {
        trace: Some(TraceId::Hex(trace)),
        span: Some(span),
        parent: None,
        sampled: Some(flags & 1 == 1),
    })
}

/// The sampling state of B3: `1`, `0`, `d` (debug, sampled).
fn b3_sampled(s: &str) -> Result<bool, Invalid> {
    match s {
        "1" | "d" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Invalid::Format),
    }
}

/// B3 single header: `trace-span[-sampled[-parent]]`, or a lone sampling state (no ids).
pub fn b3_single(s: &str) -> Result<Context, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() == 1 {
        return b3_sampled(parts[0]).map(|sampled| Context {
            sampled: Some(sampled),
            ..Context::default()
        });
    }
    if parts.len() > 4 {
        return Err(Invalid::Format);
    }
    let trace = trace_hex(parts[0], Case::Lower)?;
    let span = span_hex(parts[1], Case::Lower)?;
    let sampled = parts.get(2).map(|p| b3_sampled(p)).transpose()?;
    let parent = parts.get(3).map(|p| span_hex(p, Case::Lower)).transpose()?;
    Ok(Context {
        trace: Some(trace),
        span: Some(span),
        parent,
        sampled,
    })
}

/// B3 multi: `X-B3-TraceId` (16 or 32 lowercase hex).
pub fn b3_trace_id(s: &str) -> Result<TraceId, Invalid> {
    trace_hex(s.trim(), Case::Lower)
}

/// B3 multi: `X-B3-SpanId` or `X-B3-ParentSpanId`.
pub fn b3_span_id(s: &str) -> Result<SpanId, Invalid> {
    span_hex(s.trim(), Case::Lower)
}

/// B3 multi: `X-B3-Sampled`.
pub fn b3_sampled_header(s: &str) -> Result<bool, Invalid> {
    b3_sampled(s.trim())
}

#[cfg(test)]
mod tests {
    /// `hex` digit by digit, as it was written before it took eight at once.
    fn hex_by_digit(s: &str, digits: usize, case: Case) -> Result<u128, Invalid> {
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        if s.len() != digits {
            return Err(Invalid::Length);
        }
        let (mut v, mut upper) = (0u128, false);
        for b in s.bytes() {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => {
                    upper = true;
                    b - b'A' + 10
                }
                _ => return Err(Invalid::NotHex),
            };
            v = (v << 4) | u128::from(d);
        }
        if upper && case == Case::Lower {
            return Err(Invalid::Uppercase);
        }
        if v == 0 {
            return Err(Invalid::AllZero);
        }
        Ok(v)
    }

    #[test]
    fn eight_digits_at_once_agree_with_one_at_a_time() {
        // Every byte, in every position of a chunk; then random ids near the hex alphabet.
        for b in 0u8..=127 {
            for at in 0..16 {
                let mut id = *b"0123456789abcdef";
                id[at] = b;
                let s = std::str::from_utf8(&id).unwrap();
                for case in [Case::Lower, Case::Any] {
                    assert_eq!(hex(s, 16, case), hex_by_digit(s, 16, case), "{s:?}");
                }
            }
        }
        let alphabet: Vec<char> = "0123456789abcdefABCDEF/:@G`gzZé0000000000"
            .chars()
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            let len = [16, 32, 32, 2][(x % 4) as usize];
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            for case in [Case::Lower, Case::Any] {
                assert_eq!(hex(&s, len, case), hex_by_digit(&s, len, case), "{s:?}");
            }
        }
    }

    use super::*;

    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    fn tp(s: &str) -> Result<(String, String, bool), Invalid> {
        traceparent(s).map(|c| {
            (
                c.trace.unwrap().to_string(),
                c.span.unwrap().to_string(),
                c.sampled.unwrap(),
            )
        })
    }

    #[test]
    fn traceparent_as_the_spec_says() {
        assert_eq!(
            tp(&format!("00-{T}-{S}-01")),
            Ok((T.into(), S.into(), true))
        );
        assert_eq!(
            tp(&format!("00-{T}-{S}-00")),
            Ok((T.into(), S.into(), false))
        );
        // A later version may carry more fields; version 00 may not.
        assert!(tp(&format!("01-{T}-{S}-01-what-comes")).is_ok());
        let bad = [
            (format!("00-{T}-{S}-01-extra"), Invalid::Version),
            (format!("ff-{T}-{S}-01"), Invalid::Version),
            (format!("0-{T}-{S}-01"), Invalid::Version),
            (format!("zz-{T}-{S}-01"), Invalid::Version),
            (format!("00-{T}-{S}"), Invalid::Format),
            (format!("00-{T}-{S}-1"), Invalid::Format),
            (
                format!("00-{}-{S}-01", T.to_uppercase()),
                Invalid::Uppercase,
            ),
            (
                format!("00-{T}-{}-01", S.to_uppercase()),
                Invalid::Uppercase,
            ),
            (format!("00-{}-{S}-01", "0".repeat(32)), Invalid::AllZero),
            (format!("00-{T}-{}-01", "0".repeat(16)), Invalid::AllZero),
            (format!("00-{}-{S}-01", &T[..31]), Invalid::Length),
            (format!("00-{T}x-{S}-01"), Invalid::Length),
            (format!("00-{}g-{S}-01", &T[..31]), Invalid::NotHex),
            (String::new(), Invalid::Empty),
        ];
        for (s, want) in bad {
            assert_eq!(tp(&s), Err(want), "{s}");
        }
    }

    #[test]
    fn b3_single_and_multi() {
        let c = b3_single(&format!("{T}-{S}-1-{}", "05e3ac9a4f6e3b90")).unwrap();
        assert_eq!(c.trace.unwrap().to_string(), T);
        assert_eq!(c.span.unwrap().to_string(), S);
        assert_eq!(c.parent.unwrap().to_string(), "05e3ac9a4f6e3b90");
        assert_eq!(c.sampled, Some(true));
        // A 64-bit trace id is padded on the left.
        let c = b3_single(&format!("{}-{S}", &T[16..])).unwrap();
        assert_eq!(
            c.trace.unwrap().to_string(),
            format!("{}{}", "0".repeat(16), &T[16..])
        );
        assert_eq!(b3_single("0").unwrap().sampled, Some(false));
        assert_eq!(b3_single("d").unwrap().sampled, Some(true));
        assert_eq!(b3_single(&format!("{T}-{S}-x")), Err(Invalid::Format));
        assert_eq!(b3_single(&format!("{T}-{S}-1-{S}-1")), Err(Invalid::Format));
        assert_eq!(
            b3_single(&format!("{}-{S}", T.to_uppercase())),
            Err(Invalid::Uppercase)
        );
        assert_eq!(b3_trace_id(&T[..20]), Err(Invalid::Length));
        assert_eq!(b3_trace_id(&T[16..]).unwrap().to_string().len(), 32);
        assert_eq!(b3_span_id(S).unwrap().to_string(), S);
        assert_eq!(b3_sampled_header("1"), Ok(true));
    }

    #[test]
    fn plain_fields_take_either_case() {
        assert_eq!(trace_id(&T.to_uppercase()).unwrap().to_string(), T);
        assert_eq!(span_id(&S.to_uppercase()).unwrap().to_string(), S);
        assert_eq!(trace_id("xyz"), Err(Invalid::Length));
        assert_eq!(trace_id(&"g".repeat(32)), Err(Invalid::NotHex));
        assert_eq!(trace_id(""), Err(Invalid::Empty));
        assert_eq!(span_id(&"0".repeat(16)), Err(Invalid::AllZero));
    }

    #[test]
    fn datadog_decimal_ids_become_hex() {
        // 64-bit decimal, shown as W3C does a 64-bit id: 32 digits, zeros on the left.
        assert_eq!(
            datadog_trace_id("5208512171318403364").unwrap().to_string(),
            "000000000000000048485a3953bb6124"
        );
        assert_eq!(
            datadog_trace_id("18446744073709551615")
                .unwrap()
                .to_string(),
            "0000000000000000ffffffffffffffff"
        );
        assert_eq!(
            datadog_trace_id("18446744073709551616"),
            Err(Invalid::Decimal)
        );
        assert_eq!(datadog_trace_id("0"), Err(Invalid::AllZero));
        assert_eq!(datadog_trace_id("12ab"), Err(Invalid::Decimal));
        assert_eq!(datadog_trace_id(T).unwrap().to_string(), T);
    }

    #[test]
    fn custom_ids_are_kept_as_they_are() {
        let id = "req-7f9c2ba4-e88f-4b2d-9a1c-0c8f5e1b2d3a";
        assert_eq!(custom(id).unwrap().to_string(), id);
        assert_eq!(custom(&"x".repeat(MAX_CUSTOM + 1)), Err(Invalid::Custom));
        assert_eq!(custom("a\nb"), Err(Invalid::Custom));
        assert_eq!(custom("  "), Err(Invalid::Empty));
    }

    #[test]
    fn ids_are_written_as_format_writes_them() {
        let mut x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for _ in 0..1000 {
            let mut out = String::from("<");
            push_hex(&mut out, x, 32);
            push_hex(&mut out, x, 16);
            assert_eq!(out, format!("<{x:032x}{:016x}", x as u64));
            x = x.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(17) ^ 0x9e37;
        }
    }
}
