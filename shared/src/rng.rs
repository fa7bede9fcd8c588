//! A portable pseudo-random generator and normal transform.
//!
//! Latents, weight initialisation and every random choice of the trainer come from here rather than
//! from a backend's RNG, so that a seed means the same numbers natively, in WebAssembly and on any
//! backend. SplitMix64 (Steele, Lea & Flood 2014) uses only 64-bit integer arithmetic; the normal
//! transform is Box–Muller in `f64` through the `libm` crate (pure Rust, identical results on every
//! platform), rounded to `f32` at the end.

use serde::{Deserialize, Serialize};

/// SplitMix64: a tiny, fast, statistically sound generator whose whole state is one `u64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
    /// A second normal from the last Box–Muller pair, handed out by the next call.
    spare_normal: Option<u64>,
}

/// FNV-1a, 64 bits, of `bytes`: a quick fingerprint (stream names, file versions), not a
/// security measure.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare_normal: None,
        }
    }

    /// A generator for one named purpose, derived from a run seed: streams for different
    /// purposes (initialisation, data order, latents) never overlap in practice.
    pub fn derive(seed: u64, stream: &str) -> Self {
        let mut mixer = Self::new(seed ^ fnv1a(stream.as_bytes()));
        Self::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)` (Lemire's multiply-shift; `n` must be positive).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal sample in `f64` (Box–Muller, both outputs used).
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(bits) = self.spare_normal.take() {
            return f64::from_bits(bits);
        }
        let u1 = 1.0 - self.uniform_f64(); // (0, 1]: the log is finite
        let u2 = self.uniform_f64();
        let radius = libm::sqrt(-2.0 * libm::log(u1));
        let angle = 2.0 * core::f64::consts::PI * u2;
        self.spare_normal = Some((radius * libm::sin(angle)).to_bits());
        radius * libm::cos(angle)
    }

    /// `count` standard normal samples rounded to `f32`.
    pub fn normals_f32(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| self.normal_f64() as f32).collect()
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_sequence() {
        // Reference values of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut rng = SplitMix64::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| rng.normal_f64()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / xs.len() as f64 / var / var;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(3);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 850 && c < 1150), "{seen:?}");
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        let a = SplitMix64::derive(5, "latents").next_u64();
        let b = SplitMix64::derive(5, "data").next_u64();
        assert_ne!(a, b);
        assert_eq!(a, SplitMix64::derive(5, "latents").next_u64());
    }

    #[test]
    fn state_round_trips_through_json_mid_pair() {
        let mut rng = SplitMix64::new(11);
        rng.normal_f64(); // leaves a spare normal
        let copy: SplitMix64 = serde_json::from_str(&serde_json::to_string(&rng).unwrap()).unwrap();
        let mut rng2 = copy;
        assert_eq!(rng.normal_f64().to_bits(), rng2.normal_f64().to_bits());
        assert_eq!(rng.next_u64(), rng2.next_u64());
    }
}
