//! The line as bit masks, 64 bytes a word (whitespace, digits, split characters), and the
//! word-at-a-time helpers the tokenizer cuts and hashes with.

use super::{CLASS, SPACE};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bit of each byte below `n` (1 ≤ n ≤ 128), exactly: no borrow crosses bytes.
fn below(w: u64, n: u8) -> u64 {
    !((w & !HIGH).wrapping_add(ONES * u64::from(0x80 - n))) & !w & HIGH
}

/// High bit of each ASCII digit byte of `w`.
#[inline]
pub(super) fn digits(w: u64) -> u64 {
    below(w ^ (ONES * u64::from(b'0')), 10)
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

/// The high bits of the bytes of `m` as the low 8 bits, byte `k` to bit `k`.
pub(super) fn pack(m: u64) -> u64 {
    ((m >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Mask {
    Digit,
    /// `,` `;` `|` `=` `:`, and `<` `>` with them (a wider set costs a look at the byte, a
    /// narrower one would be wrong).
    Split,
}

/// A 64-byte block of the line as bit masks, bit `k` for byte `k` of the block.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    /// Whitespace, and every position past the end of the line.
    space: u64,
    digit: u64,
    split: u64,
}

impl Block {
    /// Block `n`, which starts inside the line.
    fn of(b: &[u8], n: usize) -> Block {
        if let Some(whole) = b.get(64 * n..64 * n + 64) {
            // Most blocks: eight words, no end of line to mind.
            let mut out = Block::default();
            for (k, w) in whole.chunks_exact(8).enumerate() {
                let (space, digit, split) = classify(u64::from_le_bytes(w.try_into().expect("8")));
                out.space |= space << (8 * k);
                out.digit |= digit << (8 * k);
                out.split |= split << (8 * k);
            }
            return out;
        }
        let mut out = Block::default();
        let words = (b.len() - 64 * n).min(64).div_ceil(8);
        if words < 8 {
            out.space = u64::MAX << (8 * words);
        }
        for k in 0..words {
            let at = 64 * n + 8 * k;
            let w = match b.get(at..at + 8) {
                Some(w) => u64::from_le_bytes(w.try_into().expect("8 bytes")),
                None if b.len() >= 8 => {
                    // The line's last bytes, then spaces: past the end is space.
                    let rest = b.len() - at;
                    let last = u64::from_le_bytes(b[b.len() - 8..].try_into().expect("8 bytes"));
                    last >> (8 * (8 - rest)) | (ONES * u64::from(b' ')) << (8 * rest)
                }
                None => {
                    let mut buf = [b' '; 8];
                    buf[..b.len() - at].copy_from_slice(&b[at..]);
                    u64::from_le_bytes(buf)
                }
            };
            let (space, digit, split) = classify(w);
            out.space |= space << (8 * k);
            out.digit |= digit << (8 * k);
            out.split |= split << (8 * k);
        }
        out
    }
}

/// The whitespace, digit and split-character bits of the 8 bytes of `w` (byte `k` to bit `k`).
#[inline(always)]
fn classify(w: u64) -> (u64, u64, u64) {
    let mut space = below(w, 0x21);
    if below(w, 0x20) != 0 {
        // Control characters: the table says which are whitespace.
        space = 0;
        for (x, c) in w.to_le_bytes().into_iter().enumerate() {
            if CLASS[c as usize] & SPACE != 0 {
                space |= 0x80 << (8 * x);
            }
        }
    }
    let digit = digits(w);
    let split = between(w, b'9', b'?') | equal_to(w, b',') | equal_to(w, b'|');
    (pack(space), pack(digit), pack(split))
}

/// The line's bytes as bit masks, made block by block as the tokenizer reaches them (a line
/// cut at `max_tokens` is not classified beyond the cut).
#[derive(Debug, Default)]
pub(super) struct Masks {
    blocks: Vec<Block>,
}

impl Masks {
    #[inline]
    pub(super) fn clear(&mut self) {
        self.blocks.clear();
    }

    /// The whitespace mask of block `n`, classifying the blocks up to it first if needed.
    #[inline]
    fn space(&mut self, b: &[u8], n: usize) -> u64 {
        if n >= self.blocks.len() {
            self.extend(b, n);
        }
        self.blocks[n].space
    }

    #[inline(never)]
    fn extend(&mut self, b: &[u8], n: usize) {
        while self.blocks.len() <= n {
            let next = Block::of(b, self.blocks.len());
            self.blocks.push(next);
        }
    }

    /// The first position from `i` on that is not whitespace (`b.len()` if none).
    #[inline]
    pub(super) fn skip_space(&mut self, b: &[u8], mut i: usize) -> usize {
        while i < b.len() {
            let m = !self.space(b, i / 64) >> (i % 64);
            if m != 0 {
                return (i + m.trailing_zeros() as usize).min(b.len());
            }
            i = (i / 64 + 1) * 64;
        }
        b.len()
    }

    /// The end of the chunk starting at `i`: the next whitespace or the end of the line.
    #[inline]
    pub(super) fn chunk_end(&mut self, b: &[u8], mut i: usize) -> usize {
        loop {
            let m = self.space(b, i / 64) >> (i % 64);
            if m != 0 {
                return (i + m.trailing_zeros() as usize).min(b.len());
            }
            i = (i / 64 + 1) * 64;
        }
    }

    fn mask(&self, which: Mask, n: usize) -> u64 {
        let b = &self.blocks[n];
        match which {
            Mask::Digit => b.digit,
            Mask::Split => b.split,
        }
    }

    /// The first position in `i..j` (already classified) in mask `which`.
    #[inline]
    pub(super) fn first(&self, which: Mask, mut i: usize, j: usize) -> Option<usize> {
        while i < j {
            let n = i / 64;
            let m = self.mask(which, n) >> (i % 64);
            if m != 0 {
                let k = i + m.trailing_zeros() as usize;
                return (k < j).then_some(k);
            }
            i = (n + 1) * 64;
        }
        None
    }

    #[inline]
    pub(super) fn any(&self, which: Mask, i: usize, j: usize) -> bool {
        self.first(which, i, j).is_some()
    }
}

/// A forward-only search for a split character in one piece, over the line's masks.
pub(super) struct Cursor(pub(super) usize);

impl Cursor {
    /// Offset from `i` of the first `c` in `b[i..j]`; `i` never decreases and `j` never
    /// increases between calls, so each split character is looked at once (`k=k=k=…`, where
    /// there is no `:`, is not searched to its end at every `=`).
    #[inline]
    pub(super) fn find(
        &mut self,
        masks: &Masks,
        b: &[u8],
        i: usize,
        j: usize,
        c: u8,
    ) -> Option<usize> {
        self.0 = self.0.max(i);
        while let Some(k) = masks.first(Mask::Split, self.0, j) {
            self.0 = k;
            if b[k] == c {
                return Some(k - i);
            }
            self.0 = k + 1;
        }
        self.0 = self.0.max(j);
        None
    }
}

/// `hash_bytes(&b[i..j])`, and whether the bytes hold a `/` or a `.` (else they are not
/// path-like). Inlined: it runs for every word, and most words are a load or two.
#[inline(always)]
pub(super) fn hash_span(b: &[u8], i: usize, j: usize) -> (u64, bool) {
    let mut dotted = 0;
    let h = crate::reduce::hash::hash_span(b, i, j, |w| {
        dotted |= equal_to(w, b'/') | equal_to(w, b'.')
    });
    (h, dotted != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::hash::hash_bytes;
    use crate::reduce::templates::token::SPLIT;
    use crate::reduce::templates::token::tests::sample_lines;

    #[test]
    fn masks_agree_with_the_byte_table() {
        for line in sample_lines() {
            let b = line.as_bytes();
            let mut masks = Masks::default();
            if !b.is_empty() {
                masks.chunk_end(b, b.len() - 1);
            }
            for (k, &c) in b.iter().enumerate() {
                let block = masks.blocks[k / 64];
                let bit = |m: u64| m >> (k % 64) & 1 == 1;
                assert_eq!(bit(block.space), c.is_ascii_whitespace(), "{line:?} at {k}");
                assert_eq!(bit(block.digit), c.is_ascii_digit(), "{line:?} at {k}");
                // Wider than the split characters, never narrower.
                assert!(
                    CLASS[c as usize] & SPLIT == 0 || bit(block.split),
                    "{line:?} at {k}"
                );
                assert!(
                    !bit(block.split) || b",;|=:<>".contains(&c),
                    "{line:?} at {k}"
                );
            }
            for k in b.len()..b.len().next_multiple_of(64) {
                assert_eq!(
                    masks.blocks[k / 64].space >> (k % 64) & 1,
                    1,
                    "{line:?} past the end"
                );
            }
            for i in 0..b.len() {
                let end = (i..b.len())
                    .find(|&j| b[j].is_ascii_whitespace())
                    .unwrap_or(b.len());
                let next = (i..b.len())
                    .find(|&j| !b[j].is_ascii_whitespace())
                    .unwrap_or(b.len());
                assert_eq!(masks.chunk_end(b, i), end, "{line:?} at {i}");
                assert_eq!(masks.skip_space(b, i), next, "{line:?} at {i}");
                for j in i..=b.len().min(i + 70) {
                    let digit = (i..j).find(|&k| b[k].is_ascii_digit());
                    assert_eq!(masks.first(Mask::Digit, i, j), digit, "{line:?} {i}..{j}");
                    assert_eq!(masks.any(Mask::Digit, i, j), digit.is_some());
                    let eq = b[i..j].iter().position(|&c| c == b'=');
                    let colon = b[i..j].iter().position(|&c| c == b':');
                    let (mut e, mut c) = (Cursor(i), Cursor(i));
                    assert_eq!(e.find(&masks, b, i, j, b'='), eq, "{line:?} {i}..{j}");
                    assert_eq!(c.find(&masks, b, i, j, b':'), colon, "{line:?} {i}..{j}");
                }
            }
        }
    }

    #[test]
    fn spans_hash_as_their_bytes() {
        for line in sample_lines().iter().take(40) {
            let b = line.as_bytes();
            for i in 0..b.len() {
                for j in i..=b.len() {
                    let (hash, dotted) = hash_span(b, i, j);
                    assert_eq!(hash, hash_bytes(&b[i..j]), "{line:?} {i}..{j}");
                    assert_eq!(dotted, b[i..j].iter().any(|&c| c == b'/' || c == b'.'));
                }
            }
        }
    }
}
