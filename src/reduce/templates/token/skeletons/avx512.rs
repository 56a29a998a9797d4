//! Skeletons 64 bytes at a time, where the processor can compress bytes (AVX-512 VBMI2): a
//! block's digits and letters are two compares, what the skeleton keeps of it a few
//! operations on their bit masks, and the kept bytes, digits written as `0`, one compress and
//! one store. The portable reading ([`super::scalar`]) spends a loop turn on each end of each
//! run of digits, and a line of an access log has thirty runs: it was a tenth of the
//! instructions of a replay with every reduction on. Both are checked against a byte-at-a-time
//! reading. (Valgrind does not emulate AVX-512: under it the portable reading runs.)
//!
//! This is one of the crate's two `unsafe` places (`unsafe_code` is denied, allowed here):
//! the block loads and stores take raw pointers, and the kernel may only run where the
//! processor has the instructions, which [`skeleton`] asks before calling it.

use super::Shift;

/// The skeleton of `b` written at the start of `out` (at least `b.len() + 64` bytes long), its
/// shifts pushed to `shifts` (without the sentinel); its length. `None` where the processor
/// cannot: the caller reads the line the portable way.
#[allow(unsafe_code)]
#[inline]
pub(super) fn skeleton(b: &[u8], out: &mut [u8], shifts: &mut Vec<Shift>) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if *x86::AVAILABLE {
        assert!(
            out.len() >= b.len() + 64,
            "room for a whole block past the line"
        );
        // SAFETY: the processor has every feature the kernel is compiled for.
        return Some(unsafe { x86::skeleton(b, out, shifts) });
    }
    let _ = (b, out, shifts);
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Shift;
    use std::arch::x86_64::*;

    /// Whether the processor has the kernel's features: asked once.
    pub(super) static AVAILABLE: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi2")
            && is_x86_feature_detected!("popcnt")
    });

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    #[allow(unsafe_code)]
    pub(super) fn skeleton(b: &[u8], out: &mut [u8], shifts: &mut Vec<Shift>) -> usize {
        let (zero, ten) = (_mm512_set1_epi8(b'0' as i8), _mm512_set1_epi8(10));
        let (case, a, letters) = (
            _mm512_set1_epi8(0x20),
            _mm512_set1_epi8(b'a' as i8),
            _mm512_set1_epi8(26),
        );
        let mut len = 0;
        // Bit 63 of the block before: a digit, a letter, a run's start right after a letter,
        // a byte kept.
        let (mut digit_in, mut letter_in, mut start_in, mut kept_in) = (0, 0, 0, 0);
        for at in (0..b.len()).step_by(64) {
            let rest = b.len() - at;
            let valid = if rest >= 64 {
                u64::MAX
            } else {
                (1 << rest) - 1
            };
            let p = b[at..].as_ptr();
            // SAFETY: a whole block is inside `b`; of a partial one only the bytes inside `b`
            // are read (masked lanes are not, and do not fault).
            let v = unsafe {
                if rest >= 64 {
                    _mm512_loadu_si512(p.cast())
                } else {
                    _mm512_maskz_loadu_epi8(valid, p.cast())
                }
            };
            let digit = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, zero), ten) & valid;
            let letter =
                _mm512_cmplt_epu8_mask(_mm512_sub_epi8(_mm512_or_si512(v, case), a), letters);
            let after_digit = digit << 1 | digit_in;
            let start = digit & !after_digit;
            // A run right after a letter keeps its second digit (`eth0` and `eth12` differ).
            let start_after_letter = start & (letter << 1 | letter_in);
            let second = (start_after_letter << 1 | start_in) & digit;
            let keep = (!digit | start | second) & valid;
            let kept = _mm512_maskz_compress_epi8(keep, _mm512_mask_mov_epi8(v, digit, zero));
            // A run whose last digit was dropped moves every later position: a shift where
            // it ends (its first byte past it, the line's end for a run to the end of a
            // partial block).
            let mut ends = !digit & after_digit & !(keep << 1 | kept_in);
            while ends != 0 {
                let bit = ends.trailing_zeros();
                ends &= ends - 1;
                shifts.push(Shift {
                    skeleton: (len + (keep & ((1 << bit) - 1)).count_ones() as usize) as u32,
                    line: (at + bit as usize) as u32,
                });
            }
            // SAFETY: `out` has 64 bytes past the line's length, and `len <= at`.
            unsafe { _mm512_storeu_si512(out[len..len + 64].as_mut_ptr().cast(), kept) };
            len += keep.count_ones() as usize;
            (digit_in, letter_in, start_in, kept_in) = (
                digit >> 63,
                letter >> 63,
                start_after_letter >> 63,
                keep >> 63,
            );
        }
        // A line of whole blocks that ends in a run whose last digit was dropped.
        if digit_in == 1 && kept_in == 0 {
            shifts.push(Shift {
                skeleton: len as u32,
                line: b.len() as u32,
            });
        }
        len
    }
}
