//! Keys to places in a slab: open addressing with linear probing, at most half full. It is
//! here rather than a general map because the reduction's tables must ask for a key's bucket
//! before they need it: a window that closes (at its deadline, or early at a cap) is one that
//! has not been touched for a long time, so its bucket and its entry are cold, and the
//! heap of deadlines says which one closes next long before it does. A key's bucket is found
//! from the key alone, so it can be prefetched; a general map keeps that to itself.

/// A bucket: a key and its place.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    key: u64,
    place: u32,
}

/// The buckets, and beside them a byte a bucket: 0 when empty, else 7 bits of its key's hash
/// (plus one). Most keys asked for are new ones (an event whose window is not open), and a
/// probe for one reads only tags (32 KiB at the default cap), which stay in cache, rather
/// than buckets sixteen times their size.
#[derive(Debug, Clone, Default)]
pub(super) struct Places {
    /// Both a power of two long, or empty.
    tags: Vec<u8>,
    buckets: Vec<Bucket>,
    len: usize,
}

impl Places {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.tags.len().wrapping_sub(1)
    }

    /// The key's first bucket. Keys are hashes already, but of combinations whose low bits need
    /// not be mixed: the product's high bits are.
    fn home(&self, key: u64) -> usize {
        let bits = self.tags.len().trailing_zeros();
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// Other bits of the key than its home's.
    fn tag(key: u64) -> u8 {
        (key.wrapping_mul(0xc4ce_b9fe_1a85_ec53) >> 57) as u8 + 1
    }

    /// The bucket holding `key`.
    pub(super) fn find(&self, key: u64) -> Option<usize> {
        if self.tags.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), Self::tag(key));
        let mut i = self.home(key);
        loop {
            match self.tags[i] {
                0 => return None,
                t if t == tag && self.buckets[i].key == key => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub(super) fn get(&self, key: u64) -> Option<u32> {
        self.find(key).map(|i| self.buckets[i].place)
    }

    /// The place in bucket `at` (from [`Places::find`]).
    pub(super) fn place(&self, at: usize) -> u32 {
        self.buckets[at].place
    }

    /// Puts `key` at `place`, replacing its place if it has one.
    pub(super) fn insert(&mut self, key: u64, place: u32) {
        if 2 * (self.len + 1) > self.tags.len() {
            self.grow();
        }
        let (mask, tag) = (self.mask(), Self::tag(key));
        let mut i = self.home(key);
        loop {
            match self.tags[i] {
                0 => {
                    self.tags[i] = tag;
                    self.buckets[i] = Bucket { key, place };
                    self.len += 1;
                    return;
                }
                t if t == tag && self.buckets[i].key == key => {
                    self.buckets[i].place = place;
                    return;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub(super) fn remove(&mut self, key: u64) -> Option<u32> {
        let at = self.find(key)?;
        let place = self.buckets[at].place;
        self.remove_at(at);
        Some(place)
    }

    /// Empties bucket `at`. The buckets after it, up to the next empty one, move back where
    /// their probe from home would otherwise stop at the hole: no tombstones, so a table that
    /// sees keys come and go forever never fills with them.
    pub(super) fn remove_at(&mut self, at: usize) {
        let mask = self.mask();
        let mut hole = at;
        let mut i = (at + 1) & mask;
        while self.tags[i] != 0 {
            // Bucket `i` may fill the hole if its home is not in the cyclic range (hole, i].
            let from_home = i.wrapping_sub(self.home(self.buckets[i].key)) & mask;
            if from_home >= (i.wrapping_sub(hole) & mask) {
                self.tags[hole] = self.tags[i];
                self.buckets[hole] = self.buckets[i];
                hole = i;
            }
            i = (i + 1) & mask;
        }
        self.tags[hole] = 0;
        self.len -= 1;
    }

    fn grow(&mut self) {
        let size = (2 * self.tags.len()).max(16);
        let tags = std::mem::replace(&mut self.tags, vec![0; size]);
        let buckets = std::mem::replace(&mut self.buckets, vec![Bucket::default(); size]);
        self.len = 0;
        for (_, b) in tags.into_iter().zip(buckets).filter(|(t, _)| *t != 0) {
            self.insert(b.key, b.place);
        }
    }

    /// Asks for `key`'s first bucket (and its tag) to be brought into cache.
    pub(super) fn prefetch(&self, key: u64) {
        if !self.tags.is_empty() {
            let i = self.home(key);
            prefetch(&self.tags[i]);
            prefetch(&self.buckets[i]);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.tags
            .iter()
            .zip(&self.buckets)
            .filter(|(t, _)| **t != 0)
            .map(|(_, b)| (b.key, b.place))
    }
}

/// Asks for the cache line holding `r` to be brought in, without waiting for it.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and cannot fault; the address is that
    // of a live reference anyway. SSE is part of every x86_64 target.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(r).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `std`'s map, through growth and removals that shift buckets back; with a few
    /// hundred keys at most half a table, runs of full buckets (and ones that wrap around the
    /// end) are common.
    #[test]
    fn places_agree_with_a_map_through_growth_and_removal() {
        use std::collections::HashMap;
        let mut p = Places::default();
        let mut want: HashMap<u64, u32> = HashMap::new();
        let mut x = 1u64;
        for step in 0..200_000u32 {
            x = crate::reduce::hash::mix(x.wrapping_add(step.into()));
            let key = crate::reduce::hash::mix(x % 600);
            match x >> 62 {
                0 | 1 => {
                    p.insert(key, step);
                    want.insert(key, step);
                }
                2 => assert_eq!(p.remove(key), want.remove(&key), "step {step}"),
                _ => assert_eq!(p.get(key), want.get(&key).copied(), "step {step}"),
            }
            assert_eq!(p.len(), want.len());
        }
        let mut all: Vec<(u64, u32)> = p.iter().collect();
        let mut expected: Vec<(u64, u32)> = want.into_iter().collect();
        all.sort_unstable();
        expected.sort_unstable();
        assert_eq!(all, expected);
    }
}
