//! A fixed 64-bit hash for template ids and line shapes.
//!
//! Ids must be equal on every instance, after every restart and under every Rust release, so
//! neither `std`'s randomly seeded hasher nor a crate whose output may change can produce them.
//! This is a small multiply-xorshift hash over little-endian words, written down here.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9fb2_1c65_1e98_df25;

/// A 64-bit finaliser (Murmur3's `fmix64`): every input bit affects every output bit.
pub(super) const fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One step of folding a sequence of hashes into one (finish with [`mix`]).
pub(super) const fn combine(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(K).rotate_left(31)
}

/// `hash_bytes(&[c])`, usable in constants.
pub(super) const fn hash_byte(c: u8) -> u64 {
    mix((K ^ c as u64).wrapping_mul(K).rotate_left(29))
}

pub(super) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The remainder as a zero-padded little-endian word, without a copy.
        let w = rest
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &c)| w | u64::from(c) << (8 * i));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    mix(h)
}

/// Keys that are already hashes need no hashing again.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Identity(u64);

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

pub(super) type BuildIdentity = BuildHasherDefault<Identity>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_values() {
        // Template ids derive from these: a change here changes every id users have stored.
        assert_eq!(hash_bytes(b""), 0);
        assert_eq!(hash_bytes(b"connection"), 0xf63f_2b35_1c99_0013);
        assert_eq!(hash_bytes(b"a 16-byte string"), 0x2dc9_8f33_c4bd_49b2);
        assert_eq!(mix(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn every_byte_counts() {
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"b"));
        assert_ne!(hash_bytes(b"abcdefgh"), hash_bytes(b"abcdefgh\0"));
        assert_ne!(hash_bytes(b"abcdefghi"), hash_bytes(b"abcdefghj"));
    }
}
