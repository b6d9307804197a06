//! The test RNG.

use half::{bf16, f16};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast and a fixed algorithm, so a seed gives
/// the same stream on every platform and with every version of every crate (golden files and
/// GPU-vs-CPU comparisons rely on that).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `[0, n)` (by modulo: the bias is below 2⁻⁴⁰ for the small `n` tests use).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`, a multiple of 2⁻²⁴.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-1, 1)`, a multiple of 2⁻²³.
    pub fn sym(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A multiple of 1/64 in `[-15.625, 15.625]`: exact in f16, bf16 and f32.
    pub fn small(&mut self) -> f32 {
        (self.below(2001) as f32 - 1000.0) / 64.0
    }

    /// A positive scale in `[1/4096, 1000/4096]`, exact in f16.
    pub fn scale(&mut self) -> f32 {
        (1 + self.below(1000)) as f32 / 4096.0
    }

    /// Any finite f32 bit pattern (subnormals, -0.0 and huge values included).
    pub fn any_f32(&mut self) -> f32 {
        loop {
            let v = f32::from_bits(self.next_u64() as u32);
            if v.is_finite() {
                return v;
            }
        }
    }

    /// Any finite f16 bit pattern.
    pub fn any_f16(&mut self) -> f16 {
        loop {
            let v = f16::from_bits(self.next_u64() as u16);
            if v.is_finite() {
                return v;
            }
        }
    }

    /// Any finite bf16 bit pattern.
    pub fn any_bf16(&mut self) -> bf16 {
        loop {
            let v = bf16::from_bits(self.next_u64() as u16);
            if v.is_finite() {
                return v;
            }
        }
    }

    /// Any positive finite f16 (a valid scale).
    pub fn pos_f16(&mut self) -> f16 {
        loop {
            let v = f16::from_bits(self.next_u64() as u16 & 0x7fff);
            if v.is_finite() && v.to_f32() > 0.0 {
                return v;
            }
        }
    }
}

/// The integer draw the weight generators make, from either test RNG: [`SplitMix64`] (fixed
/// forever) or `rand`'s `ChaCha8Rng` (used by tests written against `rand`).
pub trait TestRng {
    /// In `lo..=hi` (`lo ≤ hi`).
    fn int_in(&mut self, lo: i32, hi: i32) -> i32;
}

impl TestRng for SplitMix64 {
    fn int_in(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo + 1) as u64) as i32
    }
}

impl TestRng for ChaCha8Rng {
    /// `rand`'s `random_range(lo..=hi)`; it draws the same for i8 and i32 bounds (both sample a
    /// u32), so tests that drew i8 values directly see the same stream.
    fn int_in(&mut self, lo: i32, hi: i32) -> i32 {
        rand::Rng::random_range(self, lo..=hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs for seed 1234567 of the reference implementation (Vigna's
    /// splitmix64.c), so that the stream can never drift.
    #[test]
    fn splitmix64_matches_the_reference_stream() {
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821
            ]
        );
    }

    #[test]
    fn int_in_covers_the_closed_range() {
        let mut r = SplitMix64::new(7);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let v = r.int_in(-2, 2);
            assert!((-2..=2).contains(&v));
            seen[(v + 2) as usize] = true;
        }
        assert_eq!(seen, [true; 5]);
    }
}
