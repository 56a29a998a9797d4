//! Long messages tokenised before, by their skeleton: the message with each run of ASCII
//! digits written as `0`, or, right after a letter, as `0` (one digit) or `00` (more).
//!
//! Every decision of the tokenizer is a function of the skeleton. Digits are neither
//! whitespace, nor split characters, brackets or quotes, so no token starts or ends inside a
//! run of them; a token holding a digit is a variable whatever its digits, but for a name
//! with one trailing digit after letters (`eth0`, [`super::words::is_name_with_index`]),
//! which the skeleton tells from `eth12` by its number of zeros; and words, whose text is
//! hashed, hold no digit. (An address's `5` and `141` are one skeleton's: a quarter of an
//! access log's skeletons were addresses told apart by their one-digit parts.)
//! So the tokens of one message, their spans moved by the lengths of the runs, are the tokens
//! of every other message of its skeleton: the lines of an access log, which differ in their
//! addresses, times, sizes and ids, are cut and folded once per kind of path and client.

mod avx512;

use super::Token;
use super::chunks::{Found, Memory};
use super::scan::{digits, pack};
use crate::reduce::hash::{hash_bytes, word_at};

/// Longer messages are cut and folded without looking for their skeleton: a 64 KiB line of
/// 10,000 tokens is unlikely to come again, and would push out hundreds of others.
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;

/// From `skeleton` on, a skeleton position is `line - skeleton` short of its message's: the
/// end of a run of three digits or more (written as two).
#[derive(Debug, Clone, Copy)]
struct Shift {
    skeleton: u32,
    line: u32,
}

#[derive(Debug, Default)]
pub(super) struct Skeletons {
    /// Skeletons remembered, their tokens' spans in skeleton positions.
    memory: Memory<2048, { 1 << 18 }, { 1 << 15 }>,
    /// The skeleton of the message last loaded (its first `len` bytes), its hash and its
    /// shifts, the last one at `u32::MAX`.
    skeleton: Vec<u8>,
    len: usize,
    hash: u64,
    shifts: Vec<Shift>,
}

/// `b[from..to]` written at `out[len..]`, a word at a time (`out` has room for a word past
/// the line's length); the new length.
#[inline(always)]
fn copy(out: &mut [u8], mut len: usize, b: &[u8], mut from: usize, to: usize) -> usize {
    while from < to {
        out[len..len + 8].copy_from_slice(&word_at(b, from).to_le_bytes());
        let n = (to - from).min(8);
        len += n;
        from += n;
    }
    len
}

/// A run of `n` digits ending at `end`: `0`, or `00` for more than one right after a letter
/// (`after_letter`).
#[inline(always)]
fn mark(
    out: &mut [u8],
    mut len: usize,
    shifts: &mut Vec<Shift>,
    n: usize,
    end: usize,
    after_letter: bool,
) -> usize {
    out[len] = b'0';
    len += 1;
    if n > 1 {
        if after_letter {
            out[len] = b'0';
            len += 1;
            if n == 2 {
                return len;
            }
        }
        shifts.push(Shift {
            skeleton: len as u32,
            line: end as u32,
        });
    }
    len
}

/// Whether the run of digits at `run` comes right after a letter.
#[inline(always)]
fn after_letter(b: &[u8], run: usize) -> bool {
    run > 0 && b[run - 1].is_ascii_alphabetic()
}

/// The skeleton of `b` written at the start of `out` (at least `b.len() + 8` bytes long), its
/// shifts pushed to `shifts`; its length. The line is read as a bit mask of its digits, 64
/// bytes a word, whose runs' starts and ends are found a bit at a time; the bytes between
/// runs are copied a word at a time.
fn scalar(b: &[u8], out: &mut [u8], shifts: &mut Vec<Shift>) -> usize {
    let mut len = 0;
    // The bytes from `from` are not copied yet; a run of digits started at `run`.
    let (mut from, mut run) = (0, usize::MAX);
    // Whether the byte before the block is a digit.
    let mut carry = 0;
    for block in 0..b.len().div_ceil(64) {
        let at = 64 * block;
        let mut digit = 0u64;
        for k in 0..8 {
            digit |= pack(digits(word_at(b, at + 8 * k))) << (8 * k);
        }
        let after_digit = digit << 1 | carry;
        carry = digit >> 63;
        // Bits where a run starts or ends (its first byte past it): they alternate.
        let mut edges = (digit & !after_digit) | (!digit & after_digit);
        while edges != 0 {
            let p = at + edges.trailing_zeros() as usize;
            edges &= edges - 1;
            if run == usize::MAX {
                len = copy(out, len, b, from, p);
                run = p;
            } else {
                let letter = after_letter(b, run);
                len = mark(out, len, shifts, p - run, p, letter);
                (from, run) = (p, usize::MAX);
            }
        }
    }
    if run != usize::MAX {
        // A run to the end of the line, the last block full.
        let letter = after_letter(b, run);
        len = mark(out, len, shifts, b.len() - run, b.len(), letter);
        from = b.len();
    }
    copy(out, len, b, from, b.len())
}

impl Skeletons {
    /// Whether a message of this length is looked up at all.
    #[inline]
    pub(super) fn wanted(message: &[u8]) -> bool {
        message.len() <= MAX_MESSAGE_BYTES
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.memory.len()
    }

    /// Makes `message`'s skeleton the one [`Skeletons::get`] and [`Skeletons::put`] are about.
    pub(super) fn load(&mut self, message: &[u8]) {
        self.shifts.clear();
        // Room for a whole block written at the end.
        if self.skeleton.len() < message.len() + 64 {
            self.skeleton.resize(message.len() + 64, 0);
        }
        let out = &mut self.skeleton[..];
        let len = match avx512::skeleton(message, out, &mut self.shifts) {
            Some(len) => len,
            None => scalar(message, out, &mut self.shifts),
        };
        self.shifts.push(Shift {
            skeleton: u32::MAX,
            line: u32::MAX,
        });
        self.len = len;
        self.hash = hash_bytes(&self.skeleton[..len]);
    }

    /// The loaded message's skeleton, when it was remembered under the same limits.
    #[inline]
    pub(super) fn find(&self, limits: (usize, usize)) -> Option<Found> {
        self.memory
            .get(self.hash, &self.skeleton[..self.len], limits)
    }

    /// The folded tokens of the skeleton found, their spans in the loaded message, into `out`.
    #[inline]
    pub(super) fn get(&self, found: &Found, out: &mut Vec<Token>) {
        let tokens = self.memory.tokens(found);
        out.clear();
        out.reserve(tokens.len());
        let mut shift = self.shifter();
        out.extend(tokens.iter().map(|t| Token {
            start: shift(t.start),
            end: shift(t.end),
            ..*t
        }));
    }

    /// The span of the found skeleton's token `i`, in skeleton positions.
    pub(super) fn token(&self, found: &Found, i: usize) -> (u32, u32) {
        let t = &self.memory.tokens(found)[i];
        (t.start, t.end)
    }

    /// Skeleton positions to the loaded message's, for positions that only move forward: the
    /// shifts are walked once; the last is a sentinel.
    #[inline(always)]
    pub(super) fn shifter(&self) -> impl FnMut(u32) -> u32 + '_ {
        let (mut next, mut delta) = (0, 0);
        let mut at = self.shifts[0].skeleton;
        move |p| {
            while p >= at {
                delta = self.shifts[next].line - at;
                next += 1;
                at = self.shifts[next].skeleton;
            }
            p + delta
        }
    }

    /// Remembers the loaded `message`'s `tokens`, `shape` and `cut` for its skeleton, if it
    /// came before.
    pub(super) fn put(
        &mut self,
        message: &[u8],
        tokens: &[Token],
        shape: u64,
        cut: bool,
        limits: (usize, usize),
    ) {
        if !self.memory.seen(self.hash) {
            return;
        }
        // Spans that only move forward, none inside a run of digits: what the module's
        // reasoning says of every tokenisation. Checked rather than assumed, since a skeleton
        // remembered wrongly would give other messages wrong spans.
        let digit = |x: u32| message.get(x as usize).is_some_and(u8::is_ascii_digit);
        let inside = |x: u32| x > 0 && digit(x - 1) && digit(x);
        let mut last = 0;
        for t in tokens {
            if t.start < last || t.end < t.start || inside(t.start) || inside(t.end) {
                debug_assert!(false, "a span inside a run of digits: {t:?}");
                return;
            }
            last = t.end;
        }
        let (mut next, mut delta) = (0, 0);
        let shifts = &self.shifts[..self.shifts.len() - 1];
        let skeleton = tokens.iter().map(|t| {
            let mut t = *t;
            for x in [&mut t.start, &mut t.end] {
                while let Some(s) = shifts.get(next).filter(|s| s.line <= *x) {
                    delta = s.line - s.skeleton;
                    next += 1;
                }
                *x -= delta;
            }
            t
        });
        let key = &self.skeleton[..self.len];
        self.memory
            .put(self.hash, key, skeleton, shape, cut, limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeletons_keep_the_bytes_between_runs_and_mark_one_digit_or_more_after_a_letter() {
        let mut s = Skeletons::default();
        for (line, skeleton) in [
            ("", ""),
            ("abc", "abc"),
            ("1", "0"),
            ("12", "0"),
            ("eth0 eth12 a123456789b 7 77", "eth0 eth00 a00b 0 0"),
            (
                "10.5.141.188 - - [10/Mar/2024:12:00:00",
                "0.0.0.0 - - [0/Mar/0:0:0:0",
            ),
            (
                "exactly8 bytes12 and a longer tail 7",
                "exactly0 bytes00 and a longer tail 0",
            ),
        ] {
            s.load(line.as_bytes());
            assert_eq!(
                String::from_utf8_lossy(&s.skeleton[..s.len]),
                skeleton,
                "{line:?}"
            );
            assert_eq!(s.hash, hash_bytes(skeleton.as_bytes()));
        }
    }

    /// The skeleton and shifts a byte at a time, for the model test.
    fn reference(b: &[u8]) -> (Vec<u8>, Vec<(u32, u32)>) {
        let (mut out, mut shifts, mut run) = (Vec::new(), Vec::new(), 0);
        let mut after_letter = false;
        for (i, &c) in b.iter().chain([&b' ']).enumerate() {
            if c.is_ascii_digit() && i < b.len() {
                if run == 0 {
                    after_letter = i > 0 && b[i - 1].is_ascii_alphabetic();
                }
                run += 1;
                if run == 1 || (run == 2 && after_letter) {
                    out.push(b'0');
                }
                continue;
            }
            if run > 1 + usize::from(after_letter) {
                shifts.push((out.len() as u32, i as u32));
            }
            run = 0;
            if i < b.len() {
                out.push(c);
            }
        }
        (out, shifts)
    }

    /// Lines of every length around the 64-byte blocks, with runs of digits of every length
    /// across their boundaries and at the line's end.
    #[test]
    fn skeletons_and_shifts_agree_with_a_byte_at_a_time_reading() {
        let pairs =
            |s: &[Shift]| -> Vec<(u32, u32)> { s.iter().map(|s| (s.skeleton, s.line)).collect() };
        let mut s = Skeletons::default();
        let mut x = 7u64;
        let mut wide = 0;
        for n in 0..300usize {
            for _ in 0..20 {
                let line: Vec<u8> = (0..n)
                    .map(|_| {
                        x = crate::reduce::hash::mix(x);
                        let y = (x >> 8) as usize;
                        match x % 8 {
                            0 => b'a' + (y % 26) as u8,
                            1 => b' ',
                            2 => b'A' + (y % 26) as u8,
                            // Next to letters by case or code: none of them is one.
                            3 => b"@[`{/:\xc3\xa9\x80\xff"[y % 10],
                            _ => b'0' + (y % 10) as u8,
                        }
                    })
                    .collect();
                s.load(&line);
                let (skeleton, shifts) = reference(&line);
                assert_eq!(&s.skeleton[..s.len], &skeleton[..], "{line:?}");
                let got = pairs(&s.shifts[..s.shifts.len() - 1]);
                assert_eq!(got, shifts, "{:?}", String::from_utf8_lossy(&line));
                assert_eq!(s.hash, hash_bytes(&skeleton));
                // Both readings, whichever `load` took.
                let mut out = vec![0; n + 64];
                let mut wide_shifts = Vec::new();
                if let Some(len) = avx512::skeleton(&line, &mut out, &mut wide_shifts) {
                    wide += 1;
                    assert_eq!(&out[..len], &skeleton[..], "{line:?}");
                    assert_eq!(pairs(&wide_shifts), shifts, "{line:?}");
                }
                let mut scalar_shifts = Vec::new();
                let len = scalar(&line, &mut out, &mut scalar_shifts);
                assert_eq!(&out[..len], &skeleton[..], "{line:?}");
                assert_eq!(pairs(&scalar_shifts), shifts, "{line:?}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            wide > 0,
            std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vbmi2"),
            "the wide reading ran where the processor has it"
        );
    }
}
