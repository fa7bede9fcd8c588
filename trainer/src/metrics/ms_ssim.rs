//! MS-SSIM between image pairs, as the official `metrics/ms_ssim.py`: 5 scales weighted
//! 0.0448/0.2856/0.3001/0.2363/0.1333, a Gaussian window of 11 (σ 1.5, both shrunk at scales
//! smaller than the window) applied "valid", k1 0.01, k2 0.03, 2×2 averaging between scales,
//! negative terms clipped to 0, the product averaged over pairs.
//!
//! For a set, pairs are images (0, 1), (2, 3), …: a low value means varied samples.

use rayon::prelude::*;

use super::ImageSet;

/// Weights of the five scales, finest first.
pub const WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const FILTER_SIZE: usize = 11;
const FILTER_SIGMA: f64 = 1.5;
const K1: f64 = 0.01;
const K2: f64 = 0.03;
const MAX_VAL: f64 = 255.0;

/// The 1-D factor of the official `_FSpecialGauss(size, sigma)` (the 2-D window is its outer
/// product, normalised).
fn gauss_1d(size: usize, sigma: f64) -> Vec<f64> {
    let radius = (size / 2) as f64;
    let offset = if size.is_multiple_of(2) { 0.5 } else { 0.0 };
    let g: Vec<f64> = (0..size)
        .map(|i| {
            let x = offset - radius + i as f64;
            (-(x * x) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// "Valid" separable filtering of an `h × w` plane.
fn filter_valid(plane: &[f64], h: usize, w: usize, k: &[f64]) -> (Vec<f64>, usize, usize) {
    let n = k.len();
    let (oh, ow) = (h + 1 - n, w + 1 - n);
    let mut tmp = vec![0f64; h * ow];
    for y in 0..h {
        for x in 0..ow {
            tmp[y * ow + x] = (0..n).map(|i| k[i] * plane[y * w + x + i]).sum();
        }
    }
    let mut out = vec![0f64; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..n).map(|i| k[i] * tmp[(y + i) * ow + x]).sum();
        }
    }
    (out, oh, ow)
}

/// SSIM and contrast-structure terms of one scale, averaged over pixels and channels.
fn ssim_scale(a: &[Vec<f64>], b: &[Vec<f64>], h: usize, w: usize) -> (f64, f64) {
    let size = FILTER_SIZE.min(h).min(w);
    let sigma = size as f64 * FILTER_SIGMA / FILTER_SIZE as f64;
    let k = gauss_1d(size, sigma);
    let c1 = (K1 * MAX_VAL).powi(2);
    let c2 = (K2 * MAX_VAL).powi(2);
    let (mut ssim_sum, mut cs_sum, mut count) = (0.0, 0.0, 0usize);
    for (pa, pb) in a.iter().zip(b) {
        let prod = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<f64>>();
        let (mu1, oh, ow) = filter_valid(pa, h, w, &k);
        let (mu2, _, _) = filter_valid(pb, h, w, &k);
        let (s11, _, _) = filter_valid(&prod(pa, pa), h, w, &k);
        let (s22, _, _) = filter_valid(&prod(pb, pb), h, w, &k);
        let (s12, _, _) = filter_valid(&prod(pa, pb), h, w, &k);
        for i in 0..oh * ow {
            let (m11, m22, m12) = (mu1[i] * mu1[i], mu2[i] * mu2[i], mu1[i] * mu2[i]);
            let v1 = 2.0 * (s12[i] - m12) + c2;
            let v2 = (s11[i] - m11) + (s22[i] - m22) + c2;
            ssim_sum += ((2.0 * m12 + c1) * v1) / ((m11 + m22 + c1) * v2);
            cs_sum += v1 / v2;
        }
        count += oh * ow;
    }
    (ssim_sum / count as f64, cs_sum / count as f64)
}

/// 2×2 average (odd trailing rows/columns dropped, like the official `_HoxDownsample`).
fn halve(plane: &[f64], h: usize, w: usize) -> Vec<f64> {
    let (h2, w2) = (h / 2, w / 2);
    let mut out = vec![0f64; h2 * w2];
    for y in 0..h2 {
        for x in 0..w2 {
            out[y * w2 + x] = (plane[2 * y * w + 2 * x]
                + plane[2 * y * w + 2 * x + 1]
                + plane[(2 * y + 1) * w + 2 * x]
                + plane[(2 * y + 1) * w + 2 * x + 1])
                * 0.25;
        }
    }
    out
}

/// MS-SSIM of one pair of `[r, r, 3]` images.
pub fn ms_ssim_pair(a: &[u8], b: &[u8], r: usize) -> f64 {
    let planes = |img: &[u8]| -> Vec<Vec<f64>> {
        (0..3)
            .map(|c| (0..r * r).map(|p| img[p * 3 + c] as f64).collect())
            .collect()
    };
    let (mut pa, mut pb) = (planes(a), planes(b));
    let mut size = r;
    let mut value = 1.0;
    for (s, weight) in WEIGHTS.iter().enumerate() {
        let (ssim, cs) = ssim_scale(&pa, &pb, size, size);
        let term = if s + 1 == WEIGHTS.len() { ssim } else { cs };
        value *= term.max(0.0).powf(*weight);
        if s + 1 < WEIGHTS.len() {
            pa = pa.iter().map(|p| halve(p, size, size)).collect();
            pb = pb.iter().map(|p| halve(p, size, size)).collect();
            size /= 2;
        }
    }
    value
}

/// Mean MS-SSIM over the pairs (0, 1), (2, 3), … of a set.
pub fn ms_ssim_set(images: &ImageSet) -> f64 {
    let pairs = images.len() / 2;
    if pairs == 0 {
        return f64::NAN;
    }
    let r = images.resolution;
    let total: f64 = (0..pairs)
        .into_par_iter()
        .map(|i| ms_ssim_pair(images.image(2 * i), images.image(2 * i + 1), r))
        .sum();
    total / pairs as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(seed: usize) -> (Vec<u8>, Vec<u8>) {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for y in 0..32usize {
            for x in 0..32usize {
                for c in 0..3usize {
                    let v = (x * 5 + y * 3 + c * 40 + seed * 31) % 200;
                    let noise =
                        ((x * 7919 + y * 104729 + c * 1299709 + seed * 7) % 121) as i64 - 60;
                    a.push(v as u8);
                    b.push((v as i64 + noise).clamp(0, 255) as u8);
                }
            }
        }
        (a, b)
    }

    #[test]
    fn matches_the_official_implementation() {
        // Reference: the official msssim() (scipy fftconvolve) on the same pairs.
        let (a0, b0) = pair(0);
        let (a1, b1) = pair(1);
        assert!((ms_ssim_pair(&a0, &b0, 32) - 0.8983518134349501).abs() < 1e-6);
        assert!((ms_ssim_pair(&a1, &b1, 32) - 0.9147306417724945).abs() < 1e-6);
        let set = ImageSet {
            resolution: 32,
            data: [a0, b0, a1, b1].concat(),
        };
        assert!((ms_ssim_set(&set) - 0.9065412276037224).abs() < 1e-6);
    }

    #[test]
    fn identical_is_one_and_noise_is_near_zero() {
        let (a, _) = pair(3);
        assert!((ms_ssim_pair(&a, &a, 32) - 1.0).abs() < 1e-9);
        let mut rng = pggan_model::SplitMix64::new(1);
        let noise: Vec<u8> = (0..2 * 64 * 64 * 3).map(|_| rng.below(256) as u8).collect();
        let set = ImageSet {
            resolution: 64,
            data: noise,
        };
        let v = ms_ssim_set(&set);
        assert!(v < 0.05, "unrelated noise gives {v}");
    }

    #[test]
    fn window_shrinks_like_the_official_one() {
        let g = gauss_1d(4, 4.0 * 1.5 / 11.0);
        assert_eq!(g.len(), 4);
        assert!((g[0] - g[3]).abs() < 1e-12 && (g[1] - g[2]).abs() < 1e-12);
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
