//! A new level's toRGB fitted, as its fade-in starts, to the picture the generator already makes.
//!
//! The paper initialises every toRGB at random, like any other layer. Its features come out of
//! leaky ReLU and pixel norm, so their mean over pixels is far from zero, and a random 1×1
//! convolution of them adds a strong colour cast to the new branch: measured on the 128×128 demo
//! run as its 32×32 level began, the new branch's mean colour was (−0.12, −0.90, +0.98) in the
//! data range where the old branch's was (0.18, −0.07, −0.23) — purple. The fade cross-fades the two, and
//! with a few tens of kimg per fade (not the paper's 600) the cast outlasts it. Here the new toRGB
//! starts instead as the least-squares map (weights and bias, ridge-regularised) from the new
//! level's features to the upsampled old picture, so at α = 0 the two branches nearly agree and
//! the fade adds detail rather than undoing a cast. The choice is the run's `--fade-rgb` option.

use anyhow::{Result, ensure};
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use clap::ValueEnum;
use pggan_model::layers::upsample2x;
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::{Generator, ModelConfig, SplitMix64};
use serde::{Deserialize, Serialize};

/// How a new level's toRGB starts when its fade-in begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FadeRgbStart {
    /// As initialised, at random (the paper's).
    #[default]
    Random,
    /// Fitted by least squares to the picture the level below makes (no colour cast at α = 0).
    Fit,
}

/// The ridge penalty on the weights, as a fraction of the features' mean energy per channel.
/// On the 128×128 demo run's 32×32 level (the EMA generator, 64 latents, measured on fresh
/// ones): 0.01 fits to 0.133 with weights about 0.6 of the random ones' size, 0.1 to 0.159; 1
/// (tried first in the trainer) left 0.198 on its own latents, where 0.01 leaves 0.129.
const RIDGE: f64 = 0.01;
/// Latents the fit draws its pixels from.
const FIT_IMAGES: usize = 32;
/// Pixels per batch of the fit (bounds its memory at high resolutions).
const FIT_PIXELS_PER_BATCH: usize = 32 * 32 * 32;

/// How well a fitted toRGB reproduces the old branch: root mean square differences from the
/// upsampled old picture, over the fit's pixels, in the data range `[-1, 1]`.
#[derive(Debug, Clone, Copy)]
pub struct FitReport {
    /// With the toRGB as it was (random).
    pub rms_before: f64,
    /// With the fitted toRGB.
    pub rms_after: f64,
}

/// Sums over the fit's pixels: features `f` (with a constant 1 appended) against the old
/// picture `y`.
struct Moments {
    /// Unknowns per colour: the channels and the bias.
    k: usize,
    /// `Σ f fᵀ`, `k × k`.
    ff: Vec<f64>,
    /// `Σ f yᵀ`, `k × 3`.
    fy: Vec<f64>,
    /// `Σ y²` per colour.
    yy: [f64; 3],
    /// Pixels summed.
    count: f64,
}

impl Moments {
    /// The mean square of `w·f − y` over the pixels, for a map `w` (`k × 3`).
    fn mean_square_error(&self, w: &[f64]) -> f64 {
        let k = self.k;
        let mut sum = 0.0;
        for c in 0..3 {
            let col: Vec<f64> = (0..k).map(|i| w[i * 3 + c]).collect();
            let wff: f64 = (0..k)
                .map(|i| col[i] * (0..k).map(|j| self.ff[i * k + j] * col[j]).sum::<f64>())
                .sum();
            let wfy: f64 = (0..k).map(|i| col[i] * self.fy[i * 3 + c]).sum();
            sum += wff - 2.0 * wfy + self.yy[c];
        }
        (sum / (3.0 * self.count)).max(0.0)
    }
}

/// Fits `g`'s toRGB of `level` (≥ 1) to its own old branch at α = 0 and returns `g` with it,
/// and how well it fits. The latents come from `seed`, the same for a straight and a resumed run.
/// `g` may be on an autodiff device (the fit reads it off the graph).
pub fn fit_to_rgb(g: Generator, level: usize, seed: u64) -> Result<(Generator, FitReport)> {
    ensure!(
        level >= 1 && level < g.num_levels(),
        "no fade-in at level {level}"
    );
    let net = g.valid(); // off any autodiff graph
    let plain = net.dense.weight.val().device();
    let r = ModelConfig::level_resolution(level);
    let per_batch = (FIT_PIXELS_PER_BATCH / (r * r)).clamp(1, FIT_IMAGES);
    let mut rng = SplitMix64::derive(seed, &format!("fade-rgb-fit-{level}"));
    let c = g.to_rgb[level].weight.dims()[1];
    let k = c + 1;
    let mut m = Moments {
        k,
        ff: vec![0.0; k * k],
        fy: vec![0.0; k * 3],
        yy: [0.0; 3],
        count: 0.0,
    };
    let mut done = 0;
    while done < FIT_IMAGES {
        let n = per_batch.min(FIT_IMAGES - done);
        let z = tensor_from_f32(
            rng.normals_f32(n * g.latent_size),
            [n, g.latent_size],
            &plain,
        );
        let (prev, x) = net.features(z, level, true); // [n, c, r, r]
        let prev = prev.expect("the features of the level below, asked for"); // [n, c', r/2, r/2]
        let y = upsample2x(net.to_rgb[level - 1].forward(prev)); // [n, 3, r, r]
        let rows = n * r * r;
        let f = x.permute([0, 2, 3, 1]).reshape([rows, c]); // [pixels, c]
        let y = y.permute([0, 2, 3, 1]).reshape([rows, 3]); // [pixels, 3]
        let ff = tensor_to_f32(f.clone().transpose().matmul(f.clone())); // [c, c]
        let fy = tensor_to_f32(f.clone().transpose().matmul(y.clone())); // [c, 3]
        let f_sum = tensor_to_f32(f.sum_dim(0)); // [1, c]
        let y_sum = tensor_to_f32(y.clone().sum_dim(0)); // [1, 3]
        let yy = tensor_to_f32(y.square().sum_dim(0)); // [1, 3]
        for i in 0..c {
            for j in 0..c {
                m.ff[i * k + j] += f64::from(ff[i * c + j]);
            }
            m.ff[i * k + c] += f64::from(f_sum[i]);
            m.ff[c * k + i] += f64::from(f_sum[i]);
            for col in 0..3 {
                m.fy[i * 3 + col] += f64::from(fy[i * 3 + col]);
            }
        }
        m.ff[c * k + c] += rows as f64;
        for col in 0..3 {
            m.fy[c * 3 + col] += f64::from(y_sum[col]);
            m.yy[col] += f64::from(yy[col]);
        }
        m.count += rows as f64;
        done += n;
    }
    ensure!(
        m.ff.iter().chain(&m.fy).all(|v| v.is_finite()),
        "the generator's features at level {level} are not finite; it cannot fade in"
    );

    // The current map (effective weights and bias), then the ridge least-squares one: the
    // penalty on the weights is a fraction of the features' mean energy per channel, so it does
    // not depend on the channel count; the bias is free.
    let layer = &net.to_rgb[level];
    let weight = tensor_to_f32(layer.weight.val()); // [3, c, 1, 1]
    let bias = tensor_to_f32(layer.bias.val()); // [3]
    let mut current = vec![0.0; k * 3];
    for col in 0..3 {
        for i in 0..c {
            current[i * 3 + col] = f64::from(weight[col * c + i]) * layer.scale;
        }
        current[c * 3 + col] = f64::from(bias[col]);
    }
    let ridge = RIDGE * (0..c).map(|i| m.ff[i * k + i]).sum::<f64>() / c as f64;
    let mut fitted = vec![0.0; k * 3];
    for col in 0..3 {
        let mut a = m.ff.clone();
        for i in 0..c {
            a[i * k + i] += ridge;
        }
        let b: Vec<f64> = (0..k).map(|i| m.fy[i * 3 + col]).collect();
        for (i, v) in crate::linalg::solve(a, b, k).into_iter().enumerate() {
            fitted[i * 3 + col] = v;
        }
    }
    let report = FitReport {
        rms_before: m.mean_square_error(&current).sqrt(),
        rms_after: m.mean_square_error(&fitted).sqrt(),
    };

    // Back into the layer: raw weights are the effective ones over the He constant.
    let mut g = g;
    let layer = &mut g.to_rgb[level];
    let raw: Vec<f32> = (0..3)
        .flat_map(|col| (0..c).map(move |i| (col, i)))
        .map(|(col, i)| (fitted[i * 3 + col] / layer.scale) as f32)
        .collect();
    let new_bias: Vec<f32> = (0..3).map(|col| fitted[c * 3 + col] as f32).collect();
    layer.weight = replace(layer.weight.clone(), raw, [3, c, 1, 1]);
    layer.bias = replace(layer.bias.clone(), new_bias, [3]);
    Ok((g, report))
}

/// `param` with new values, on its device, tracked for gradients if it was.
fn replace<const D: usize>(
    param: Param<Tensor<D>>,
    values: Vec<f32>,
    shape: [usize; D],
) -> Param<Tensor<D>> {
    param.map(|old| {
        let new = tensor_from_f32(values, shape, &old.device());
        if old.is_require_grad() {
            new.require_grad()
        } else {
            new
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// Root mean square of the new branch (α = 1) against the old one (α = 0) on `z`.
    fn branch_rms(g: &Generator, z: &[f32], n: usize, level: usize) -> f64 {
        let net = g.valid();
        let dev = net.dense.weight.val().device();
        let z = tensor_from_f32(z.to_vec(), [n, net.latent_size], &dev);
        let old = net.forward(z.clone(), level, 0.0);
        let new = net.forward(z, level, 1.0);
        let d = tensor_to_f32((new - old).square().mean());
        f64::from(d[0]).sqrt()
    }

    /// On a randomly initialised generator, the fit takes the new branch from a picture far from
    /// the old one to close to it, on latents it never saw; its report is the exact error on its
    /// own latents; the layer stays trainable on an autodiff device; the rest is untouched.
    #[test]
    fn the_fitted_branch_reproduces_the_old_picture() {
        // 64 channels at 16×16: a random generator's pictures are noise, far harder to
        // reproduce than a trained one's (measured here: 1.12 → 0.58 on fresh latents; on the
        // 128×128 demo run's 32×32 level: 1.015 → 0.133).
        let config = crate::parity::small_config()
            .with_fmap_base(256)
            .with_fmap_max(64);
        let plain = Device::flex();
        let level = 2;
        for device in [plain.clone(), plain.clone().autodiff()] {
            let g = Generator::new(&config, &mut SplitMix64::new(3), &device);
            let fresh = SplitMix64::new(99).normals_f32(8 * g.latent_size);
            let before = branch_rms(&g, &fresh, 8, level);
            let mut rng = SplitMix64::derive(7, &format!("fade-rgb-fit-{level}"));
            let own = rng.normals_f32(FIT_IMAGES * g.latent_size);
            let own_before = branch_rms(&g, &own, FIT_IMAGES, level);
            let dense_before = tensor_to_f32(g.dense.weight.val().inner());

            let (fitted, report) = fit_to_rgb(g, level, 7).unwrap();
            let after = branch_rms(&fitted, &fresh, 8, level);
            let own_after = branch_rms(&fitted, &own, FIT_IMAGES, level);
            assert!(after < 0.7 * before, "fresh latents: {before} → {after}");
            assert!(
                (report.rms_before - own_before).abs() < 1e-4 * own_before.max(1.0),
                "{report:?} vs {own_before}"
            );
            assert!(
                (report.rms_after - own_after).abs() < 1e-4 * own_before.max(1.0),
                "{report:?} vs {own_after}"
            );
            assert_eq!(
                tensor_to_f32(fitted.dense.weight.val().inner()),
                dense_before
            );
            assert_eq!(
                fitted.to_rgb[level].weight.val().is_require_grad(),
                device.is_autodiff()
            );
        }
    }

    /// Level 0 has nothing to fade from.
    #[test]
    fn level_zero_is_refused() {
        let config = crate::parity::small_config();
        let g = Generator::new(&config, &mut SplitMix64::new(3), &Device::flex());
        let err = fit_to_rgb(g, 0, 7).expect_err("level 0 has no fade-in");
        assert!(err.to_string().contains("no fade-in at level 0"), "{err}");
    }
}
