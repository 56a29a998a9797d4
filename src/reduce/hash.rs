//! A fixed 64-bit hash for what must hash the same everywhere: template ids and line shapes,
//! sampling decisions, dedupe and throttle keys.
//!
//! Ids must be equal on every instance, after every restart and under every Rust release, so
//! neither `std`'s randomly seeded hasher nor a crate whose output may change can produce them.
//! This is a small multiply-xorshift hash over little-endian words, written down here.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9fb2_1c65_1e98_df25;

/// A 64-bit finaliser (Murmur3's `fmix64`): every input bit affects every output bit.
pub(crate) const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One step of folding a sequence of hashes into one (finish with [`mix`]).
pub(crate) const fn combine(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(K).rotate_left(31)
}

/// Hashing a byte string: `finish(step(step(START, w0), w1)…, len)` over its little-endian
/// 8-byte words, the last one zero-padded. Exposed in parts so that a scan that loads the
/// words anyway can hash as it goes.
pub(crate) const START: u64 = 0x5851_f42d_4c95_7f2d;

pub(crate) const fn step(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(K).rotate_left(29)
}

pub(crate) const fn finish(h: u64, len: usize) -> u64 {
    mix(h ^ (len as u64).wrapping_mul(K))
}

/// `hash_bytes(&[c])`, usable in constants.
pub(crate) const fn hash_byte(c: u8) -> u64 {
    finish(step(START, c as u64), 1)
}

pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = START;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = step(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The remainder as a zero-padded little-endian word, without a copy.
        let w = rest
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &c)| w | u64::from(c) << (8 * i));
        h = step(h, w);
    }
    finish(h, b.len())
}

/// `hash_bytes(&b[i..j])`, each word given to `each` too; the last word loaded whole where `b`
/// goes on past `j`, so that a span of a longer buffer (a field of a line, a chunk of a
/// message) costs a load or two rather than a byte loop. Inlined: most spans are short.
#[inline(always)]
pub(crate) fn hash_span(b: &[u8], i: usize, j: usize, mut each: impl FnMut(u64)) -> u64 {
    let mut h = START;
    let mut k = i;
    while k + 8 <= j {
        let w = u64::from_le_bytes(b[k..k + 8].try_into().expect("8 bytes"));
        each(w);
        h = step(h, w);
        k += 8;
    }
    let n = j - k;
    if n > 0 {
        let w = word_at(b, k) & (u64::MAX >> (8 * (8 - n)));
        each(w);
        h = step(h, w);
    }
    finish(h, j - i)
}

/// The eight bytes of `b` from `i` as a little-endian word, zeros past its end.
#[inline(always)]
pub(crate) fn word_at(b: &[u8], i: usize) -> u64 {
    if let Some(w) = b.get(i..i + 8) {
        return u64::from_le_bytes(w.try_into().expect("8 bytes"));
    }
    if i >= b.len() {
        return 0;
    }
    if b.len() >= 8 {
        // The buffer's last 8 bytes, shifted down to start at `i`.
        let last = u64::from_le_bytes(b[b.len() - 8..].try_into().expect("8 bytes"));
        return last >> (8 * (i + 8 - b.len()));
    }
    b[i..]
        .iter()
        .enumerate()
        .fold(0, |w, (x, &c)| w | u64::from(c) << (8 * x))
}

/// Keys that are already hashes need no hashing again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type BuildIdentity = BuildHasherDefault<Identity>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_values() {
        // Template ids derive from these: a change here changes every id users have stored.
        assert_eq!(hash_bytes(b""), 0x2643_04d1_257f_9540);
        assert_eq!(hash_bytes(b"connection"), 0x9cc2_a64f_907a_4ba5);
        assert_eq!(hash_bytes(b"a 16-byte string"), 0x3c67_3b2e_7106_4d4f);
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn spans_hash_as_their_bytes() {
        let b: Vec<u8> = (0..40u8).map(|c| c.wrapping_mul(37)).collect();
        for len in [0, 3, 8, 9, 17, 40] {
            let b = &b[..len];
            for i in 0..=b.len() {
                for j in i..=b.len() {
                    assert_eq!(hash_span(b, i, j, |_| {}), hash_bytes(&b[i..j]), "{i}..{j}");
                }
            }
        }
    }

    #[test]
    fn words_hold_the_bytes_from_their_start_and_zeros_past_the_end() {
        let b: Vec<u8> = (1..=20u8).collect();
        for len in [0, 3, 8, 13, 20] {
            let b = &b[..len];
            for i in 0..len + 10 {
                let mut want = [0u8; 8];
                for (x, w) in want.iter_mut().enumerate() {
                    *w = b.get(i + x).copied().unwrap_or(0);
                }
                assert_eq!(word_at(b, i), u64::from_le_bytes(want), "{len} {i}");
            }
        }
    }

    #[test]
    fn every_byte_counts() {
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
        assert_ne!(hash_bytes(b"abcdefghi"), hash_bytes(b"abcdefghj"));
    }
}
