//! Latent codes: the same numbers for a seed on every platform, and their normalisation.

use crate::rng::SplitMix64;

/// The latent code of `seed`: `latent_size` standard normals from a SplitMix64 seeded with it.
///
/// This is the definition a seed in a link or on the command line refers to, natively and in the
/// browser alike.
pub fn latent_for_seed(seed: u64, latent_size: usize) -> Vec<f32> {
    SplitMix64::new(seed).normals_f32(latent_size)
}

/// Latents for seeds `first_seed, first_seed + 1, …`, row after row (`[count, latent_size]`).
pub fn latents_for_seeds(first_seed: u64, count: usize, latent_size: usize) -> Vec<f32> {
    (0..count as u64)
        .flat_map(|i| latent_for_seed(first_seed.wrapping_add(i), latent_size))
        .collect()
}

/// Scales a latent onto the hypersphere of radius `√len` (what the generator's first pixel norm
/// does): `z / sqrt(mean(z²) + 1e-8)`.
pub fn normalize_latent(z: &[f32]) -> Vec<f32> {
    let mean_sq = z.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / z.len().max(1) as f64;
    let inv = 1.0 / (mean_sq + 1e-8).sqrt();
    z.iter().map(|&v| (v as f64 * inv) as f32).collect()
}

/// Spherical-friendly blend of two latents: a linear mix, renormalised onto the hypersphere.
pub fn blend_latents(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let mixed: Vec<f32> = a.iter().zip(b).map(|(&x, &y)| x + (y - x) * t).collect();
    normalize_latent(&mixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_latents_are_fixed_numbers() {
        // Locks the latent definition: changing the PRNG or the transform changes every shared
        // link, so it must be a conscious, versioned decision.
        let z = latent_for_seed(42, 4);
        let expect = [z[0], z[1], z[2], z[3]];
        let again = latent_for_seed(42, 4);
        assert_eq!(z, again);
        let golden: [u32; 4] = [
            expect[0].to_bits(),
            expect[1].to_bits(),
            expect[2].to_bits(),
            expect[3].to_bits(),
        ];
        assert_eq!(golden, GOLDEN_SEED42, "latent of seed 42 changed: {expect:?}");
        assert_ne!(latent_for_seed(43, 4), z);
    }

    // Computed independently with Python (math.log/cos, same SplitMix64 and Box–Muller):
    // [0.8822489, 1.3884733, -0.45084988, 0.67071644].
    const GOLDEN_SEED42: [u32; 4] = [0x3f61db10, 0x3fb1b97e, 0xbee6d5cb, 0x3f2bb413];

    #[test]
    fn batch_rows_equal_single_seeds() {
        let batch = latents_for_seeds(10, 3, 5);
        assert_eq!(&batch[5..10], latent_for_seed(11, 5).as_slice());
    }

    #[test]
    fn normalised_latents_have_unit_rms() {
        let z = normalize_latent(&latent_for_seed(1, 512));
        let rms = (z.iter().map(|v| v * v).sum::<f32>() / 512.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
        let mid = blend_latents(&latent_for_seed(1, 512), &latent_for_seed(2, 512), 0.5);
        let rms = (mid.iter().map(|v| v * v).sum::<f32>() / 512.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
    }
}
