//! Timestamps in events, to milliseconds since the Unix epoch: RFC 3339 / ISO 8601, epoch
//! numbers in seconds, milliseconds, microseconds or nanoseconds, and the common log format of
//! Apache and nginx. No time zone database: an offset is what the text says, and a time
//! without one is UTC.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 / ISO 8601 text, or an epoch number whose unit its magnitude tells.
    Auto,
    Rfc3339,
    UnixSeconds,
    UnixMillis,
    UnixMicros,
    UnixNanos,
    /// `26/Nov/2026:10:00:00 +0000`, optionally in brackets.
    Clf,
}

impl TimeFormat {
    pub const NAMES: &'static [&'static str] = &[
        "auto", "rfc3339", "unix_s", "unix_ms", "unix_us", "unix_ns", "clf",
    ];

    pub fn parse(name: &str) -> Option<TimeFormat> {
        Some(match name {
            "auto" => TimeFormat::Auto,
            "rfc3339" | "iso8601" => TimeFormat::Rfc3339,
            "unix_s" => TimeFormat::UnixSeconds,
            "unix_ms" => TimeFormat::UnixMillis,
            "unix_us" => TimeFormat::UnixMicros,
            "unix_ns" => TimeFormat::UnixNanos,
            "clf" => TimeFormat::Clf,
            _ => return None,
        })
    }
}

/// Milliseconds since the epoch, `None` when the text is not a time in that format (or before
/// 1970).
pub fn parse(text: &str, format: TimeFormat) -> Option<u64> {
    // Trimming walks the text as chars: a time with nothing to trim (nearly all of them) is
    // taken as it is.
    let bare = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic() && *b != b'"');
    let t = if bare(text.as_bytes().first()) && bare(text.as_bytes().last()) {
        text
    } else {
        text.trim().trim_matches('"')
    };
    match format {
        TimeFormat::Rfc3339 => rfc3339(t),
        TimeFormat::Clf => clf(t.trim_start_matches('[').trim_end_matches(']')),
        TimeFormat::UnixSeconds => epoch(t, 1e3),
        TimeFormat::UnixMillis => epoch(t, 1.0),
        TimeFormat::UnixMicros => epoch(t, 1e-3),
        TimeFormat::UnixNanos => epoch(t, 1e-6),
        TimeFormat::Auto => {
            if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                // By magnitude: seconds until the year 5138, then ms, µs, ns.
                let v: f64 = t.parse().ok()?;
                let scale = if v < 1e11 {
                    1e3
                } else if v < 1e14 {
                    1.0
                } else if v < 1e17 {
                    1e-3
                } else {
                    1e-6
                };
                epoch(t, scale)
            } else {
                rfc3339(t).or_else(|| clf(t.trim_start_matches('[').trim_end_matches(']')))
            }
        }
    }
}

fn epoch(t: &str, to_ms: f64) -> Option<u64> {
    let v: f64 = t.parse().ok()?;
    let ms = v * to_ms;
    (0.0..1e16).contains(&ms).then_some(ms as u64)
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day counted from 1970-01-01 (Howard Hinnant's algorithm, the inverse
/// of `days_from_civil`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    part.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

fn to_ms(
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    frac_ms: u64,
    offset_s: i64,
) -> Option<u64> {
    at_offset(seconds(y, mo, d, h, mi, s)?, frac_ms, offset_s)
}

/// A civil date and time of day as seconds since the epoch, as if it were UTC.
fn seconds(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// Milliseconds since the epoch of a time of `seconds` (as if UTC) at `offset_s`.
fn at_offset(seconds: i64, frac_ms: u64, offset_s: i64) -> Option<u64> {
    let secs = seconds - offset_s;
    (secs >= 0).then(|| secs as u64 * 1000 + frac_ms)
}

/// `2026-11-26T10:00:00.123Z`, `2026-11-26 10:00:00+01:00`, `2026-11-26T10:00:00` (UTC).
fn rfc3339(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    let day_and_time = rfc3339_head(b)?;
    let (frac_ms, offset) = rfc3339_tail(b)?;
    at_offset(day_and_time, frac_ms, offset)
}

/// The date and time of day of an RFC 3339 text (its first 19 bytes), in seconds since the
/// epoch as if it were UTC.
fn rfc3339_head(b: &[u8]) -> Option<i64> {
    // The date and time are at fixed places: every digit checked at once, then combined
    // (digit by digit with a check each was most of an event time's cost).
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    // `YYYY-MM-`, `DDTHH:MM` and `HH:MM:SS`: which of each word's bytes are digits.
    if !digits_at(word(0), 0x00ff_ff00_ffff_ffff)
        || !digits_at(word(8), 0xffff_00ff_ff00_ffff)
        || !digits_at(word(11), 0xffff_00ff_ff00_ffff)
        || head[4] != b'-'
        || head[7] != b'-'
        || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':'
        || head[16] != b':'
    {
        return None;
    }
    let digit = |i: usize| u32::from(head[i] - b'0');
    let two = |i: usize| digit(i) * 10 + digit(i + 1);
    let y = i64::from(two(0) * 100 + two(2));
    let (mo, d, h, mi, s) = (two(5), two(8), two(11), two(14), two(17));
    seconds(y, mo, d, h, mi, s)
}

/// What follows an RFC 3339 text's seconds: the fraction (as milliseconds) and the offset.
fn rfc3339_tail(b: &[u8]) -> Option<(u64, i64)> {
    let mut i = 19;
    let mut frac_ms = 0u64;
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + u64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            frac_ms *= 10;
        }
    }
    let offset = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, i + 1, 2)? as i64;
            let om = match b.get(i + 3) {
                Some(b':') => digits(b, i + 4, 2)?,
                _ => digits(b, i + 3, 2)?,
            } as i64;
            let o = oh * 3600 + om * 60;
            if sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    Some((frac_ms, offset))
}

/// Parses times like [`parse`], remembering the last text's second: consecutive events mostly
/// share it (a `clf` text whole, an RFC 3339 one up to its fraction), so most are not parsed
/// again. One per worker, remembering one text of each format (rules of different formats
/// take turns); the answers are `parse`'s whatever came before.
#[derive(Debug, Default)]
pub struct TimeParser {
    clf: Last,
    rfc3339: Last,
}

/// A remembered text (whole for `clf`, its first 19 bytes for RFC 3339) and what it gave:
/// `clf`'s time, or RFC 3339's date and time of day as seconds (see `rfc3339_head`).
#[derive(Debug, Default)]
struct Last {
    key: Vec<u8>,
    known: bool,
    value: Option<i64>,
}

impl Last {
    /// `value` for `key`, computed by `f` unless it is the remembered one.
    #[inline]
    fn get(&mut self, key: &[u8], f: impl FnOnce() -> Option<i64>) -> Option<i64> {
        if !self.known || self.key != key {
            self.key.clear();
            self.key.extend_from_slice(key);
            self.known = true;
            self.value = f();
        }
        self.value
    }
}

impl TimeParser {
    pub fn parse(&mut self, text: &str, format: TimeFormat) -> Option<u64> {
        // `trim` and `trim_matches` cost more than the rest when there is nothing to trim.
        let plain = |c: u8| c.is_ascii() && !c.is_ascii_whitespace() && c != b'"';
        let t = match text.as_bytes() {
            [first, .., last] if plain(*first) && plain(*last) => text,
            _ => text.trim().trim_matches('"'),
        };
        match format {
            TimeFormat::Clf => self.clf(t),
            TimeFormat::Rfc3339 => self.rfc3339(t),
            TimeFormat::Auto if !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                self.rfc3339(t).or_else(|| self.clf(t))
            }
            _ => parse(text, format),
        }
    }

    fn clf(&mut self, t: &str) -> Option<u64> {
        let stripped = || clf(t.trim_start_matches('[').trim_end_matches(']')).map(|ms| ms as i64);
        self.clf.get(t.as_bytes(), stripped).map(|ms| ms as u64)
    }

    fn rfc3339(&mut self, t: &str) -> Option<u64> {
        let b = t.as_bytes();
        let Some(head) = b.get(..19) else {
            return rfc3339(t);
        };
        let day_and_time = self.rfc3339.get(head, || rfc3339_head(b))?;
        let (frac_ms, offset) = rfc3339_tail(b)?;
        at_offset(day_and_time, frac_ms, offset)
    }
}

/// Whether the bytes of `w` that `mask` selects are all ASCII digits. Bytes of UTF-8 text
/// are below 0xf5, so adding 6 to one carries into no other.
fn digits_at(w: u64, mask: u64) -> bool {
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let high = w & HIGH;
    // A digit's high nibble is 3, and stays 3 with 6 added (0x3a and above become 0x4_).
    let high6 = w.wrapping_add(0x0606_0606_0606_0606) & HIGH;
    ((high ^ ZEROS) | (high6 ^ ZEROS)) & mask == 0
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `26/Nov/2026:10:00:00 +0000`.
fn clf(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    let d = digits(b, 0, 2)?;
    let mo = MONTHS.iter().position(|m| t.get(3..6) == Some(*m))? as u32 + 1;
    let y = digits(b, 7, 4)? as i64;
    let h = digits(b, 12, 2)?;
    let mi = digits(b, 15, 2)?;
    let s = digits(b, 18, 2)?;
    if b.get(2) != Some(&b'/') || b.get(6) != Some(&b'/') || b.get(11) != Some(&b':') {
        return None;
    }
    let offset = match b.get(20) {
        None => 0,
        Some(b' ') => {
            let sign = *b.get(21)?;
            let o = digits(b, 22, 2)? as i64 * 3600 + digits(b, 24, 2)? as i64 * 60;
            match sign {
                b'+' => o,
                b'-' => -o,
                _ => return None,
            }
        }
        _ => return None,
    };
    to_ms(y, mo, d, h, mi, s, 0, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rfc3339`'s date and time as they were read before the fixed places were read at once.
    fn rfc3339_by_digit(t: &str) -> Option<u64> {
        let b = t.as_bytes();
        let y = digits(b, 0, 4)? as i64;
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let mo = digits(b, 5, 2)?;
        let d = digits(b, 8, 2)?;
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
            return None;
        }
        let h = digits(b, 11, 2)?;
        let mi = digits(b, 14, 2)?;
        let s = digits(b, 17, 2)?;
        if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return None;
        }
        // The fraction and offset are read as they always were.
        let (frac_ms, offset) = rfc3339_tail(b)?;
        to_ms(y, mo, d, h, mi, s, frac_ms, offset)
    }

    #[test]
    fn rfc3339_reads_what_it_read_digit_by_digit() {
        let base = b"2024-03-10T12:00:00.123+01:30";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bytes = b"0123456789-:T t.,Zz+x";
        for _ in 0..200_000 {
            let mut t = base.to_vec();
            t.truncate(10 + (next() % 20) as usize);
            for _ in 0..next() % 3 {
                let at = (next() % t.len() as u64) as usize;
                t[at] = bytes[(next() % bytes.len() as u64) as usize];
            }
            let t = std::str::from_utf8(&t).unwrap();
            assert_eq!(rfc3339(t), rfc3339_by_digit(t), "{t}");
        }
    }

    #[test]
    fn formats() {
        let base = 1_795_690_400_000u64; // 2026-11-26T10:53:20Z
        assert_eq!(parse("2026-11-26T10:53:20Z", TimeFormat::Auto), Some(base));
        assert_eq!(
            parse("2026-11-26T10:53:20.5Z", TimeFormat::Rfc3339),
            Some(base + 500)
        );
        assert_eq!(
            parse("2026-11-26 11:53:20.123456+01:00", TimeFormat::Auto),
            Some(base + 123)
        );
        assert_eq!(
            parse("2026-11-26T10:53:20", TimeFormat::Rfc3339),
            Some(base)
        );
        assert_eq!(parse("1795690400", TimeFormat::Auto), Some(base));
        assert_eq!(parse("1795690400000", TimeFormat::Auto), Some(base));
        assert_eq!(parse("1795690400000000", TimeFormat::Auto), Some(base));
        assert_eq!(
            parse("1795690400.25", TimeFormat::UnixSeconds),
            Some(base + 250)
        );
        assert_eq!(
            parse("[26/Nov/2026:10:53:20 +0000]", TimeFormat::Auto),
            Some(base)
        );
        assert_eq!(
            parse("26/Nov/2026:11:53:20 +0100", TimeFormat::Clf),
            Some(base)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26T10:53",
            "-5",
            "1e400",
        ] {
            assert_eq!(parse(bad, TimeFormat::Auto), None, "{bad}");
        }
        assert_eq!(parse("1969-12-31T23:59:59Z", TimeFormat::Auto), None);
    }

    #[test]
    fn the_parser_remembering_the_last_second_answers_as_parse() {
        // Texts in an order where consecutive ones share a second, a prefix, or nothing, in
        // every format, with the trimming and bad cases `parse` handles.
        let texts = [
            "2026-11-26T10:53:20Z",
            "2026-11-26T10:53:20.5Z",
            "2026-11-26T10:53:20.123456+01:00",
            "2026-11-26T10:53:20",
            "2026-11-26T10:53:20x",
            "2026-11-26T10:53:21.001Z",
            " 2026-11-26T10:53:21.002Z ",
            "\"2026-11-26T10:53:21.003Z\"",
            "2026-11-26T10:53:2",
            "2026-13-26T10:53:21Z",
            "2026-13-26T10:53:21.5Z",
            "1970-01-01T00:30:00+01:00",
            "26/Nov/2026:10:53:20 +0000",
            "[26/Nov/2026:10:53:20 +0000]",
            "[26/Nov/2026:10:53:20 +0000]",
            "26/Nov/2026:10:53:20 -0130",
            "26/Foo/2026:10:53:20 +0000",
            "1795690400",
            "1795690400.25",
            "\" 1795690400\"",
            "",
            "\"",
            "x",
            "\u{a0}2026-11-26T10:53:20Z",
        ];
        let formats = [
            TimeFormat::Auto,
            TimeFormat::Rfc3339,
            TimeFormat::Clf,
            TimeFormat::UnixSeconds,
            TimeFormat::UnixMillis,
        ];
        let mut p = TimeParser::default();
        for round in 0..3 {
            for (i, text) in texts.iter().enumerate() {
                for (k, &format) in formats.iter().enumerate() {
                    // Each text twice in a row in some rounds, formats interleaved in others.
                    let f = formats[(k + i * round) % formats.len()];
                    for f in [format, f] {
                        assert_eq!(p.parse(text, f), parse(text, f), "{text:?} {f:?}");
                    }
                }
            }
        }
    }
}
