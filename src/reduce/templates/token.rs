//! Tokenising a message for the miner: words, punctuation and variables, with spans.
//!
//! A message is cut at whitespace into chunks, a chunk at `,` `;` `|` into pieces, and a piece
//! loses its enclosing brackets and quotes, its trailing punctuation, and a leading `key=` or
//! `key:`. What remains is one token: a *variable* when it holds a digit (`12ms`, `0x1f`,
//! `blk_-42`, `10.0.0.1:80`, `LOCAL(0)`) or is a month or weekday name, else a *word*.
//! Then one left-to-right pass folds what belongs to a variable into it: a unit after a number
//! (`16.0 KB`), a path or host name next to one (`/a/b HTTP/1.1`), a bracketed group holding
//! only a variable (`(1.16 KB)`, `[pid]`, `()`), and runs of variables joined by punctuation or
//! spaces (`Jul 3 10:05:25 2005`, `1, 2, 3`). So a list, a date or a size is one variable
//! whatever its token count, which is what keeps templates of varying length together.
//!
//! Everything here is linear in the line: one scan to cut, one pass to fold, and at most
//! `max_tokens` tokens (the rest of a longer line is one trailing variable).

use crate::reduce::hash::{START, combine, finish, hash_byte, hash_bytes, mix, step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Var,
    Word,
    Punct,
}

/// One token: where it is in the message and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Token {
    pub kind: Kind,
    pub start: u32,
    pub end: u32,
    /// No whitespace before it.
    pub glued: bool,
    /// Hash of the text for words and punctuation; a constant for variables.
    pub hash: u64,
}

pub(super) const VAR_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

impl Token {
    pub fn text<'a>(&self, message: &'a str) -> &'a str {
        &message[self.start as usize..self.end as usize]
    }
}

const SPACE: u8 = 1;
const DIGIT: u8 = 2;
/// `,` `;` `|` `=` `:`: a chunk holding one is split.
const SPLIT: u8 = 4;
const OPEN: u8 = 8;
const TRAIL: u8 = 16;
/// `,` `;` `|`: a chunk holding one is cut into pieces.
const SEP: u8 = 32;

/// Byte classes, so that one scan of a chunk says whether it needs more than one token.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut k = 0;
        if b.is_ascii_whitespace() {
            k |= SPACE;
        }
        if b.is_ascii_digit() {
            k |= DIGIT;
        }
        if matches!(b, b',' | b';' | b'|' | b'=' | b':') {
            k |= SPLIT;
        }
        if matches!(b, b',' | b';' | b'|') {
            k |= SEP;
        }
        if is_opener(b) {
            k |= OPEN;
        }
        if is_trailing(b) {
            k |= TRAIL;
        }
        t[c] = k;
        c += 1;
    }
    t
};

const fn is_opener(c: u8) -> bool {
    matches!(c, b'(' | b'[' | b'{' | b'<' | b'"' | b'\'')
}

const fn is_trailing(c: u8) -> bool {
    matches!(
        c,
        b')' | b']' | b'}' | b'>' | b'"' | b'\'' | b',' | b';' | b'.' | b':' | b'!' | b'?'
    )
}

/// The opener a bracket closes (quotes are their own pair).
fn pair_of(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        b'{' => b'}',
        b'<' => b'>',
        q => q,
    }
}

fn bracket_index(open: u8) -> Option<usize> {
    match open {
        b'(' => Some(0),
        b'[' => Some(1),
        b'{' => Some(2),
        b'<' => Some(3),
        _ => None,
    }
}

fn opener_of_bracket(close: u8) -> Option<u8> {
    match close {
        b')' => Some(b'('),
        b']' => Some(b'['),
        b'}' => Some(b'{'),
        b'>' => Some(b'<'),
        _ => None,
    }
}

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
fn is_date_word(t: &[u8]) -> bool {
    if t.len() < 3
        || !matches!(
            t[0] | 0x20,
            b'j' | b'f' | b'm' | b'a' | b's' | b'o' | b'n' | b'd' | b't' | b'w'
        )
    {
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
pub(super) fn is_unit(t: &[u8]) -> bool {
    let Some((buf, n)) = lower::<4>(t) else {
        return false;
    };
    matches!(
        &buf[..n],
        b"b" | b"kb"
            | b"mb"
            | b"gb"
            | b"tb"
            | b"kib"
            | b"mib"
            | b"gib"
            | b"ms"
            | b"us"
            | b"ns"
            | b"s"
            | b"sec"
            | b"secs"
            | b"min"
            | b"mins"
            | b"h"
            | b"hr"
            | b"hrs"
            | b"kbps"
            | b"mbps"
            | b"hz"
            | b"khz"
            | b"mhz"
            | b"ghz"
    )
}

/// `eth0`, `ssh2`, `alt0`: letters and one digit name a thing (an interface, a protocol) more
/// often than they count something, so they stay words.
fn is_name_with_index(t: &[u8]) -> bool {
    t.len() >= 3
        && t[t.len() - 1].is_ascii_digit()
        && t[..t.len() - 1].iter().all(u8::is_ascii_alphabetic)
}

/// `key` in `key=value`: `[A-Za-z_][A-Za-z0-9_.-]*`.
fn is_key(t: &[u8]) -> bool {
    !t.is_empty()
        && (t[0].is_ascii_alphabetic() || t[0] == b'_')
        && t[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `key` in `key:value`: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_ident(t: &[u8]) -> bool {
    !t.is_empty()
        && (t[0].is_ascii_alphabetic() || t[0] == b'_')
        && t[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A path, host or dotted name: these are values far more often than message text.
pub(super) fn is_pathlike(t: &[u8]) -> bool {
    if t.len() < 2 {
        return false;
    }
    let inner = {
        let mut s = t;
        while let [b'.', rest @ ..] = s {
            s = rest;
        }
        while let [rest @ .., b'.'] = s {
            s = rest;
        }
        s
    };
    t.contains(&b'/') || inner.contains(&b'.')
}

/// Limits on one line's tokens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_tokens: usize,
    pub max_word_bytes: usize,
}

/// Reusable buffers: tokenising allocates nothing once they have grown.
#[derive(Debug, Default)]
pub(super) struct Tokenizer {
    raw: Vec<Token>,
    tails: Vec<(u32, u32)>,
    /// For each raw token, the set of closers that occur after it (bit per closer kind).
    closers_after: Vec<u8>,
    pub out: Vec<Token>,
}

fn closer_bit(c: u8) -> u8 {
    match c {
        b')' => 1,
        b']' => 2,
        b'}' => 4,
        b'>' => 8,
        b'"' => 16,
        b'\'' => 32,
        _ => 0,
    }
}

impl Tokenizer {
    /// Tokenises `message` into `self.out`; returns whether the line was cut at `max_tokens`.
    pub fn run(&mut self, message: &str, limits: Limits) -> bool {
        self.raw.clear();
        self.out.clear();
        let b = message.as_bytes();
        let len = b.len().min(u32::MAX as usize);
        let b = &b[..len];
        let budget = limits.max_tokens.max(2) - 1;
        let mut i = 0;
        let mut cut = false;
        while i < b.len() {
            if b[i].is_ascii_whitespace() {
                i += 1;
                continue;
            }
            if self.raw.len() >= budget {
                // The rest of the line, whatever it holds, is one variable.
                let mut end = b.len();
                while end > i && b[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                self.raw.push(var(i, end, false));
                cut = true;
                break;
            }
            let start = i;
            let (end, mut classes, hash) = scan_chunk(b, i);
            i = end;
            classes &= DIGIT | SPLIT | SEP;
            // Most chunks are a plain word or number: nothing to peel or split.
            let plain = classes & SPLIT == 0
                && CLASS[b[start] as usize] & OPEN == 0
                && CLASS[b[i - 1] as usize] & TRAIL == 0;
            if plain {
                self.core_known(b, start, i, false, classes & DIGIT != 0, hash, limits);
            } else if classes & SEP == 0 {
                self.piece(b, start, i, false, limits);
            } else {
                self.chunk(b, start, i, limits);
            }
        }
        if self.raw.len() > limits.max_tokens {
            // A chunk can yield several tokens; fold the overflow into one trailing variable.
            let keep = limits.max_tokens - 1;
            let start = self.raw[keep].start;
            let end = self.raw.last().map_or(start, |t| t.end);
            let glued = self.raw[keep].glued;
            self.raw.truncate(keep);
            self.raw.push(var(start as usize, end as usize, glued));
            cut = true;
        }
        self.fold(b);
        cut
    }

    fn chunk(&mut self, b: &[u8], start: usize, end: usize, limits: Limits) {
        let mut last = start;
        for k in memchr::memchr3_iter(b',', b';', b'|', &b[start..end]) {
            let k = start + k;
            if k > last {
                self.piece(b, last, k, last != start, limits);
            }
            self.raw.push(punct(b, k, k != start));
            last = k + 1;
        }
        if last < end {
            self.piece(b, last, end, last != start, limits);
        }
    }

    /// One piece of a chunk: `(`key`=`value`)`, peeled iteratively (a value may itself be
    /// `k=v`), trailing punctuation emitted after the innermost core.
    fn piece(&mut self, b: &[u8], mut i: usize, mut j: usize, mut glued: bool, limits: Limits) {
        let tails_base = self.tails.len();
        // Where each kind of opening bracket last occurs: a closing bracket at the end is
        // peeled only when its opener is not inside. Trailing characters are never openers,
        // so one scan (made when first needed) serves every step below.
        let mut last_open: Option<[Option<usize>; 4]> = None;
        let (mut next_eq, mut next_colon) = (Cursor(i), Cursor(i));
        loop {
            let piece_start = i;
            while i < j && is_opener(b[i]) {
                self.raw.push(punct(b, i, glued));
                glued = true;
                i += 1;
            }
            let tail_end = j;
            while j > i && is_trailing(b[j - 1]) {
                let c = b[j - 1];
                let inside = opener_of_bracket(c)
                    .and_then(bracket_index)
                    .is_some_and(|t| {
                        let last = last_open.get_or_insert_with(|| {
                            let mut last = [None; 4];
                            for (k, &c) in b[i..j].iter().enumerate() {
                                if let Some(t) = bracket_index(c) {
                                    last[t] = Some(i + k);
                                }
                            }
                            last
                        });
                        last[t].is_some_and(|at| at >= i)
                    });
                if inside {
                    break;
                }
                j -= 1;
            }
            self.tails.push((j as u32, tail_end as u32));
            let core = &b[i..j];
            // The first `=` and `:` of the core. `i` only grows, so each search resumes where
            // the last one stopped: `k:k:k:…` is not rescanned at every step.
            let eq = next_eq.find(b, i, j, b'=');
            let colon = next_colon.find(b, i, j, b':');
            if let Some(k) = eq.filter(|&k| k > 0 && is_key(&core[..k])) {
                self.core(b, i, i + k, glued, limits);
                self.raw.push(punct(b, i + k, true));
                if i + k + 1 == j {
                    self.raw.push(var(j, j, true));
                    break;
                }
                i += k + 1;
                glued = true;
                continue;
            }
            if let Some(k) = colon.filter(|&k| k > 0 && k + 1 < core.len() && is_ident(&core[..k]))
            {
                self.core(b, i, i + k, glued, limits);
                self.raw.push(punct(b, i + k, true));
                i += k + 1;
                glued = true;
                continue;
            }
            // `"key":value`, as in JSON: the key, its closing quote, the colon, the value.
            let quoted_key = colon.filter(|&k| {
                k > 1
                    && k + 1 < core.len()
                    && matches!(core[k - 1], b'"' | b'\'')
                    && is_ident(&core[..k - 1])
            });
            if let Some(k) = quoted_key {
                self.core(b, i, i + k - 1, glued, limits);
                self.raw.push(punct(b, i + k - 1, true));
                self.raw.push(punct(b, i + k, true));
                i += k + 1;
                glued = true;
                continue;
            }
            if core.is_empty() {
                // `()`, `[]`: an empty value, still a variable slot.
                if i > piece_start && j < tail_end && b[j] == pair_of(b[i - 1]) {
                    self.raw.push(var(i, i, true));
                }
            } else {
                self.core(b, i, j, glued, limits);
            }
            break;
        }
        while self.tails.len() > tails_base {
            let (s, e) = self.tails.pop().expect("non-empty");
            for k in s..e {
                self.raw.push(punct(b, k as usize, true));
            }
        }
    }

    fn core(&mut self, b: &[u8], i: usize, j: usize, glued: bool, limits: Limits) {
        if i == j {
            return;
        }
        let digit = b[i..j].iter().any(u8::is_ascii_digit);
        self.core_known(b, i, j, glued, digit, None, limits);
    }

    fn core_known(
        &mut self,
        b: &[u8],
        i: usize,
        j: usize,
        glued: bool,
        digit: bool,
        hash: Option<u64>,
        limits: Limits,
    ) {
        let t = &b[i..j];
        let variable = if digit {
            !is_name_with_index(t)
        } else {
            t.len() > limits.max_word_bytes || is_date_word(t)
        };
        self.raw.push(if variable {
            var(i, j, glued)
        } else {
            Token {
                kind: Kind::Word,
                start: i as u32,
                end: j as u32,
                glued,
                hash: hash.unwrap_or_else(|| hash_bytes(t)),
            }
        });
    }

    /// The folding pass (see the module doc), as a shift-reduce over the raw tokens.
    fn fold(&mut self, b: &[u8]) {
        // Filled on first use: only a value glued to a lone opener needs it.
        self.closers_after.clear();
        for k in 0..self.raw.len() {
            let t = self.raw[k];
            match t.kind {
                Kind::Word => {
                    let text = &b[t.start as usize..t.end as usize];
                    let after_var = self.out.last().is_some_and(|l| l.kind == Kind::Var);
                    if after_var && is_unit(text) {
                        self.out.last_mut().expect("after a variable").end = t.end;
                    } else if after_var && !t.glued && is_pathlike(text) {
                        self.push_var(b, var(t.start as usize, t.end as usize, t.glued), k);
                    } else {
                        self.out.push(t);
                    }
                }
                Kind::Punct => {
                    self.out.push(t);
                    self.reduce_group(b, k);
                }
                Kind::Var => self.push_var(b, t, k),
            }
        }
    }

    /// `( v )` → v, and `(host)` next to a variable → a variable.
    fn reduce_group(&mut self, b: &[u8], k: usize) {
        let n = self.out.len();
        if n < 3 {
            return;
        }
        let (open, mid, close) = (self.out[n - 3], self.out[n - 2], self.out[n - 1]);
        let c = b[close.start as usize];
        if !(close.glued && mid.glued && open.kind == Kind::Punct && mid.kind != Kind::Punct) {
            return;
        }
        let o = b[open.start as usize];
        if !is_opener(o) || pair_of(o) != c {
            return;
        }
        let reduce = match mid.kind {
            Kind::Var => true,
            Kind::Word => is_pathlike(&b[mid.start as usize..mid.end as usize]),
            Kind::Punct => false,
        };
        if reduce {
            self.out.truncate(n - 3);
            self.push_var(
                b,
                var(open.start as usize, close.end as usize, open.glued),
                k,
            );
        }
    }

    /// Whether closer `c` occurs among the raw tokens after `k`.
    fn closer_after(&mut self, b: &[u8], k: usize, c: u8) -> bool {
        if self.closers_after.len() != self.raw.len() {
            self.closers_after.resize(self.raw.len(), 0);
            let mut seen = 0u8;
            for k in (0..self.raw.len()).rev() {
                self.closers_after[k] = seen;
                let t = self.raw[k];
                if t.kind == Kind::Punct {
                    seen |= closer_bit(b[t.start as usize]);
                }
            }
        }
        self.closers_after[k] & closer_bit(c) != 0
    }

    fn push_var(&mut self, b: &[u8], mut v: Token, k: usize) {
        // Iterative, not recursive: a line may hold thousands of these in a row.
        while !v.glued {
            let n = self.out.len();
            let Some(last) = self.out.last().copied() else {
                break;
            };
            // A path or host just before, across a space, is part of the value.
            if last.kind == Kind::Word
                && !last.glued
                && is_pathlike(&b[last.start as usize..last.end as usize])
            {
                self.out.pop();
                v = var(last.start as usize, v.end as usize, last.glued);
                continue;
            }
            // `(host)` before a variable: the group is a value too.
            if n >= 3 {
                let (open, mid) = (self.out[n - 3], self.out[n - 2]);
                let o = b[open.start as usize];
                if open.kind == Kind::Punct
                    && is_opener(o)
                    && last.kind == Kind::Punct
                    && b[last.start as usize] == pair_of(o)
                    && mid.kind == Kind::Word
                    && mid.glued
                    && last.glued
                    && is_pathlike(&b[mid.start as usize..mid.end as usize])
                {
                    self.out.truncate(n - 3);
                    v = var(open.start as usize, v.end as usize, open.glued);
                    continue;
                }
            }
            break;
        }
        // A lone opener glued to a value (`<1 sec`, `#3`) with no closer later: part of it.
        let opener = self.out.last().copied().filter(|last| {
            v.glued && last.kind == Kind::Punct && !last.glued && is_opener(b[last.start as usize])
        });
        let lone_opener =
            opener.is_some_and(|o| !self.closer_after(b, k, pair_of(b[o.start as usize])));
        if lone_opener {
            let last = self.out.pop().expect("checked");
            v.start = last.start;
            v.glued = last.glued;
        }
        // Runs of variables joined by glued punctuation or spaces are one variable. The look
        // back is bounded, so that `((((…` cannot make this quadratic.
        let mut m = self.out.len();
        let floor = m.saturating_sub(MAX_JOINING_PUNCT + 1);
        while m > floor {
            let t = self.out[m - 1];
            match t.kind {
                Kind::Var => {
                    v.start = t.start;
                    v.glued = t.glued;
                    self.out.truncate(m - 1);
                    break;
                }
                Kind::Punct if t.glued && !matches!(b[t.start as usize], b'"' | b'\'') => m -= 1,
                _ => break,
            }
        }
        self.out.push(v);
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte below `n` (exact up to the first such byte; enough for "any").
fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH
}

fn equal_to(w: u64, c: u8) -> u64 {
    below(w ^ (ONES * u64::from(c)), 1)
}

/// High bit of each ASCII byte `b` with `lo < b < hi`.
fn between(w: u64, lo: u8, hi: u8) -> u64 {
    let low7 = w & (ONES * 0x7f);
    (ONES * (127 + u64::from(hi))).wrapping_sub(low7)
        & !w
        & low7.wrapping_add(ONES * (127 - u64::from(lo)))
        & HIGH
}

/// The end of the chunk starting at `i` (the next whitespace), the classes of its bytes, and
/// its hash when the scan could make it on the way; eight bytes at a time where the line
/// allows.
fn scan_chunk(b: &[u8], mut i: usize) -> (usize, u8, Option<u64>) {
    let start = i;
    let mut classes = 0u8;
    let mut h = Some(START);
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        // Bytes up to 0x20 are whitespace or control characters; the table decides.
        let low = below(w, 0x21);
        let n = if low == 0 {
            8
        } else {
            (low.trailing_zeros() / 8) as usize
        };
        let keep = if n == 8 {
            HIGH
        } else {
            HIGH & ((1u64 << (8 * n)) - 1)
        };
        if between(w, b'0' - 1, b'9' + 1) & keep != 0 {
            classes |= DIGIT;
        }
        let sep = equal_to(w, b',') | equal_to(w, b';') | equal_to(w, b'|');
        if sep & keep != 0 {
            classes |= SEP | SPLIT;
        }
        if (equal_to(w, b'=') | equal_to(w, b':')) & keep != 0 {
            classes |= SPLIT;
        }
        i += n;
        if n == 8 {
            h = h.map(|h| step(h, w));
            continue;
        }
        if CLASS[b[i] as usize] & SPACE != 0 {
            let h = h.map(|h| {
                if n > 0 {
                    step(h, w & ((1u64 << (8 * n)) - 1))
                } else {
                    h
                }
            });
            return (i, classes, h.map(|h| finish(h, i - start)));
        }
        // A control character inside the chunk: count it, go on (and hash later).
        classes |= CLASS[b[i] as usize];
        i += 1;
        h = None;
    }
    while i < b.len() {
        let c = CLASS[b[i] as usize];
        if c & SPACE != 0 {
            break;
        }
        classes |= c;
        i += 1;
    }
    // The tail was not hashed word by word.
    let h = h.filter(|_| i == start);
    (i, classes, h)
}

/// A forward-only search for a byte in one piece.
struct Cursor(usize);

impl Cursor {
    /// Offset from `i` of the first `c` in `b[i..j]`; `i` never decreases between calls.
    fn find(&mut self, b: &[u8], i: usize, j: usize, c: u8) -> Option<usize> {
        if self.0 < i {
            self.0 = i;
        }
        if j - self.0.min(j) > 32 {
            self.0 = memchr::memchr(c, &b[self.0..j]).map_or(j, |k| self.0 + k);
        } else {
            // Short: a plain loop beats the vectorised search's setup.
            while self.0 < j && b[self.0] != c {
                self.0 += 1;
            }
        }
        (self.0 < j).then(|| self.0 - i)
    }
}

/// Punctuation characters that may join two variables into one (`10:05:25`, `1),(2`).
const MAX_JOINING_PUNCT: usize = 8;

fn var(start: usize, end: usize, glued: bool) -> Token {
    Token {
        kind: Kind::Var,
        start: start as u32,
        end: end as u32,
        glued,
        hash: VAR_HASH,
    }
}

fn punct(b: &[u8], i: usize, glued: bool) -> Token {
    Token {
        kind: Kind::Punct,
        start: i as u32,
        end: i as u32 + 1,
        glued,
        hash: BYTE_HASH[b[i] as usize],
    }
}

/// `hash_bytes` of each single byte, for punctuation.
static BYTE_HASH: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = hash_byte(c as u8);
        c += 1;
    }
    t
};

/// The hash of a tokenised line's shape: its words and punctuation, and where variables are.
pub(super) fn key_hash(tokens: &[Token]) -> u64 {
    let mut h = 0x243f_6a88_85a3_08d3u64;
    for t in tokens {
        h = combine(h, t.hash ^ ((t.kind as u64) << 62));
    }
    mix(h ^ tokens.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_tokens: 128,
        max_word_bytes: 256,
    };

    fn show(line: &str) -> String {
        let mut t = Tokenizer::default();
        t.run(line, LIMITS);
        t.out
            .iter()
            .map(|tok| match tok.kind {
                Kind::Var => format!("<{}>", tok.text(line)),
                _ => tok.text(line).to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn numbers_glued_to_units_and_punctuation_are_one_variable() {
        assert_eq!(show("took 12ms"), "took <12ms>");
        assert_eq!(show("pid (1234) [77]"), "pid <(1234) [77]>");
        assert_eq!(show("listening on port:8080"), "listening on port : <8080>");
        assert_eq!(show("size 16.0 KB, free 3"), "size <16.0 KB> , free <3>");
        assert_eq!(show("lifetime <1 sec"), "lifetime <<1 sec>");
    }

    #[test]
    fn key_value_pairs_split_at_the_separator() {
        assert_eq!(show("uid=0 user=root"), "uid = <0> user = root");
        assert_eq!(show("logname= tty=x"), "logname = <> tty = x");
        assert_eq!(show("GET /a?x=1&y=2 HTTP/1.1"), "GET </a?x=1&y=2 HTTP/1.1>");
    }

    #[test]
    fn hosts_ports_paths_and_dates_are_variables() {
        assert_eq!(
            show("proxy.example.com:5070 open through 10.0.0.1:80"),
            "<proxy.example.com:5070> open through <10.0.0.1:80>"
        );
        assert_eq!(
            show("connection from 1.2.3.4 (a.b.com) at Sun Jul 10 03:55:15 2005"),
            "connection from <1.2.3.4 (a.b.com)> at <Sun Jul 10 03:55:15 2005>"
        );
        assert_eq!(show("from 1.2.3.4 () at x"), "from <1.2.3.4 ()> at x");
        assert_eq!(
            show("synchronized to LOCAL(0), stratum 2"),
            "synchronized to <LOCAL(0)> , stratum <2>"
        );
    }

    #[test]
    fn lists_of_values_are_one_variable() {
        assert_eq!(show("irqs 3 4 5 10 11 ok"), "irqs <3 4 5 10 11> ok");
        assert_eq!(show("ids 1, 2, 3."), "ids <1, 2, 3> .");
        assert_eq!(
            show("Fan speeds ( 1 2 **** 3 )"),
            "Fan speeds ( <1 2> **** <3> )"
        );
    }

    #[test]
    fn names_with_an_index_stay_words() {
        assert_eq!(show("via interface eth0"), "via interface eth0");
        assert_eq!(show("node-12 up"), "<node-12> up");
    }

    #[test]
    fn chunk_scan_agrees_with_the_byte_table() {
        let samples = [
            "plainword rest",
            "a1",
            "key=value,x;y|z: 12:00 \t tab",
            "é€ unicode ünïcödé42 end",
            "ctl\x01char\x1fhere more",
            "exactly8 bytes12 x",
            "0123456789abcdef:ghij,",
            "sixteen_bytes_ab sixteen_bytes_abc x",
        ];
        for s in samples {
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if CLASS[b[i] as usize] & SPACE != 0 {
                    i += 1;
                    continue;
                }
                let (end, classes, hash) = scan_chunk(b, i);
                if let Some(h) = hash {
                    assert_eq!(h, hash_bytes(&b[i..end]), "{s:?} at {i}");
                }
                let mut want = 0;
                let mut j = i;
                while j < b.len() && CLASS[b[j] as usize] & SPACE == 0 {
                    want |= CLASS[b[j] as usize];
                    j += 1;
                }
                assert_eq!(end, j, "{s:?} at {i}");
                let bits = DIGIT | SPLIT | SEP;
                assert_eq!(classes & bits, want & bits, "{s:?} at {i}");
                i = end;
            }
        }
    }

    #[test]
    fn byte_hashes_are_the_hashes_of_one_byte() {
        for c in 0..=255u8 {
            assert_eq!(BYTE_HASH[c as usize], hash_bytes(&[c]));
        }
    }

    #[test]
    fn json_keys_and_values() {
        assert_eq!(
            show(r#"{"level":"info","took":12}"#),
            r#"{ " level " : " info " , " took " : <12> }"#
        );
    }

    #[test]
    fn quotes_and_brackets_are_punctuation() {
        assert_eq!(
            show(r#"tag="View Lock", name=x"#),
            r#"tag = " View Lock " , name = x"#
        );
        assert_eq!(show("'Active'"), "' Active '");
    }

    #[test]
    fn long_lines_end_in_one_variable() {
        let line = (0..1000)
            .map(|i| "ab".repeat(i % 7 + 1))
            .collect::<Vec<_>>()
            .join(" ");
        let mut t = Tokenizer::default();
        let cut = t.run(
            &line,
            Limits {
                max_tokens: 8,
                max_word_bytes: 256,
            },
        );
        assert!(cut);
        assert_eq!(t.out.len(), 8);
        let last = t.out.last().unwrap();
        assert_eq!(last.kind, Kind::Var);
        assert_eq!(last.end as usize, line.len());
    }

    #[test]
    fn spans_point_into_the_message() {
        let line = "a=1 b (2) c";
        let mut t = Tokenizer::default();
        t.run(line, LIMITS);
        for tok in &t.out {
            assert!(tok.start <= tok.end && tok.end as usize <= line.len());
        }
    }
}
