//! What the tokenizer asks of a word's text: a month or weekday name, a unit, a key, a path.

/// What the fold asks of a word: is it a unit (`KB`, `ms`), is it path-like.
pub(super) const UNIT: u8 = 1;
pub(super) const PATH: u8 = 2;

/// `word` in ASCII lower case, when it is short enough to be one of the words looked up here.
fn lower<const N: usize>(word: &[u8]) -> Option<([u8; N], usize)> {
    if word.len() > N {
        return None;
    }
    let mut buf = [0u8; N];
    for (d, s) in buf.iter_mut().zip(word) {
        *d = s.to_ascii_lowercase();
    }
    Some((buf, word.len()))
}

/// Month and weekday names: parts of a date, so values.
#[inline(always)]
pub(super) fn is_date_word(t: &[u8]) -> bool {
    // Every such name starts with its three-letter abbreviation, and so with one of ten
    // letters: most words fail on that.
    if !(3..=9).contains(&t.len())
        || !matches!(
            t[0] | 0x20,
            b'j' | b'f' | b'm' | b'a' | b's' | b'o' | b'n' | b'd' | b't' | b'w'
        )
    {
        return false;
    }
    let abbreviation = [t[0] | 0x20, t[1] | 0x20, t[2] | 0x20];
    if !matches!(
        &abbreviation,
        b"jan"
            | b"feb"
            | b"mar"
            | b"apr"
            | b"may"
            | b"jun"
            | b"jul"
            | b"aug"
            | b"sep"
            | b"oct"
            | b"nov"
            | b"dec"
            | b"mon"
            | b"tue"
            | b"wed"
            | b"thu"
            | b"fri"
            | b"sat"
            | b"sun"
    ) {
        return false;
    }
    let Some((buf, n)) = lower::<9>(t) else {
        return false;
    };
    matches!(
        &buf[..n],
        b"jan"
            | b"feb"
            | b"mar"
            | b"apr"
            | b"may"
            | b"jun"
            | b"jul"
            | b"aug"
            | b"sep"
            | b"sept"
            | b"oct"
            | b"nov"
            | b"dec"
            | b"january"
            | b"february"
            | b"march"
            | b"april"
            | b"june"
            | b"july"
            | b"august"
            | b"september"
            | b"october"
            | b"november"
            | b"december"
            | b"mon"
            | b"tue"
            | b"tues"
            | b"wed"
            | b"thu"
            | b"thurs"
            | b"fri"
            | b"sat"
            | b"sun"
            | b"monday"
            | b"tuesday"
            | b"wednesday"
            | b"thursday"
            | b"friday"
            | b"saturday"
            | b"sunday"
    )
}

/// Units that follow a number: the number and its unit are one value.
#[inline(always)]
pub(super) fn is_unit(t: &[u8]) -> bool {
    if t.is_empty() || t.len() > 4 {
        return false;
    }
    // The word as a little-endian number, in lower case (`| 0x20` lowers letters and makes
    // no other byte a lower-case letter), zero-padded.
    let key = t
        .iter()
        .enumerate()
        .fold(0u32, |k, (x, &c)| k | u32::from(c | 0x20) << (8 * x));
    UNITS.contains(&key)
}

const UNITS: [u32; 25] = {
    let names: [&[u8]; 25] = [
        b"b", b"kb", b"mb", b"gb", b"tb", b"kib", b"mib", b"gib", b"ms", b"us", b"ns", b"s",
        b"sec", b"secs", b"min", b"mins", b"h", b"hr", b"hrs", b"kbps", b"mbps", b"hz", b"khz",
        b"mhz", b"ghz",
    ];
    let mut out = [0u32; 25];
    let mut n = 0;
    while n < 25 {
        let mut x = 0;
        while x < names[n].len() {
            out[n] |= (names[n][x] as u32) << (8 * x);
            x += 1;
        }
        n += 1;
    }
    out
};

/// `eth0`, `ssh2`, `alt0`: letters and one digit name a thing (an interface, a protocol) more
/// often than they count something, so they stay words.
#[inline]
pub(super) fn is_name_with_index(t: &[u8]) -> bool {
    t.len() >= 3
        && t[t.len() - 1].is_ascii_digit()
        && t[..t.len() - 1].iter().all(u8::is_ascii_alphabetic)
}

/// `key` in `key=value`: `[A-Za-z_][A-Za-z0-9_.-]*`.
#[inline]
pub(super) fn is_key(t: &[u8]) -> bool {
    !t.is_empty()
        && (t[0].is_ascii_alphabetic() || t[0] == b'_')
        && t[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `key` in `key:value`: `[A-Za-z_][A-Za-z0-9_]*`.
#[inline]
pub(super) fn is_ident(t: &[u8]) -> bool {
    !t.is_empty()
        && (t[0].is_ascii_alphabetic() || t[0] == b'_')
        && t[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A path, host or dotted name: these are values far more often than message text.
#[inline]
pub(super) fn is_pathlike(t: &[u8]) -> bool {
    if t.len() < 2 {
        return false;
    }
    // A `/`, or a `.` with something other than dots on both sides; in one loop rather than
    // `contains`, whose set-up costs more than these short words.
    let (mut before, mut dot) = (false, false);
    for &c in t {
        match c {
            b'/' => return true,
            b'.' => dot |= before,
            _ if dot => return true,
            _ => before = true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::templates::token::tests::sample_lines;

    /// What `is_unit`, `is_date_word` and `is_pathlike` were written as, on strings.
    fn is_unit_by_definition(w: &str) -> bool {
        const UNITS: [&str; 25] = [
            "b", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "ms", "us", "ns", "s", "sec", "secs",
            "min", "mins", "h", "hr", "hrs", "kbps", "mbps", "hz", "khz", "mhz", "ghz",
        ];
        UNITS.iter().any(|u| u.eq_ignore_ascii_case(w))
    }

    fn is_date_word_by_definition(w: &str) -> bool {
        const NAMES: [&str; 40] = [
            "jan",
            "feb",
            "mar",
            "apr",
            "may",
            "jun",
            "jul",
            "aug",
            "sep",
            "sept",
            "oct",
            "nov",
            "dec",
            "january",
            "february",
            "march",
            "april",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
            "mon",
            "tue",
            "tues",
            "wed",
            "thu",
            "thurs",
            "fri",
            "sat",
            "sun",
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        NAMES.iter().any(|n| n.eq_ignore_ascii_case(w))
    }

    fn is_pathlike_by_definition(w: &str) -> bool {
        w.len() >= 2 && (w.contains('/') || w.trim_matches('.').contains('.'))
    }

    #[test]
    fn word_predicates_as_defined() {
        let mut words: Vec<String> = [
            "",
            "b",
            "B",
            "KB",
            "kB",
            "Kb",
            "kbps",
            "KBPS",
            "kbpss",
            "s",
            "S",
            "x",
            "ms",
            "m",
            "k`",
            "K@",
            "k\0",
            "sec",
            "secs",
            "GHz",
            "mhz",
            "jan",
            "JAN",
            "Jan",
            "janu",
            "january",
            "January",
            "septembe",
            "September",
            "sept",
            "Tues",
            "thurs",
            "Sun",
            "sunday",
            "Sundays",
            "ja",
            "J@N",
            "mon.",
            "/",
            ".",
            "..",
            "...",
            "a.",
            ".a",
            "a.b",
            "..a..",
            "a/",
            "/a",
            "a..",
            "é.",
            ".é.",
            "x.y.z",
            "-.-",
            "under_score",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        words.extend(sample_lines().iter().flat_map(|l| {
            l.split(|c: char| c.is_ascii_whitespace())
                .map(str::to_string)
                .collect::<Vec<_>>()
        }));
        for w in &words {
            let b = w.as_bytes();
            assert_eq!(is_unit(b), is_unit_by_definition(w), "{w:?}");
            assert_eq!(is_date_word(b), is_date_word_by_definition(w), "{w:?}");
            assert_eq!(is_pathlike(b), is_pathlike_by_definition(w), "{w:?}");
        }
    }
}
