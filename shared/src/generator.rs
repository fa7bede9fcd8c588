//! The paper's generator: latent → 4×4 → … → `resolution`, grown one level at a time.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::ModelConfig;
use crate::layers::{EqConv2d, EqDense, lrelu, normalize_rows, pixel_norm, upsample2x};
use crate::rng::SplitMix64;
use crate::tensor::lerp;

const SQRT2: f64 = core::f64::consts::SQRT_2;

/// One growth stage: nearest 2× up, then two 3×3 convolutions, each followed by leaky ReLU and
/// pixel norm.
#[derive(Module, Debug)]
pub struct GenBlock {
    /// First 3×3 convolution (previous level's channels → this level's).
    pub conv0: EqConv2d,
    /// Second 3×3 convolution.
    pub conv1: EqConv2d,
}

impl GenBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = upsample2x(x); // [n, c_prev, 2h, 2w]
        let x = pixel_norm(lrelu(self.conv0.forward(x))); // [n, c, 2h, 2w]
        pixel_norm(lrelu(self.conv1.forward(x)))
    }
}

/// The generator of Karras et al. (2018), all levels up to the final resolution.
#[derive(Module, Debug)]
pub struct Generator {
    /// Latent → 4×4×C (gain √2/4).
    pub dense: EqDense,
    /// The 4×4 block's 3×3 convolution.
    pub conv4: EqConv2d,
    /// Growth stages for levels 1, 2, … (index `level − 1`).
    pub blocks: Vec<GenBlock>,
    /// toRGB 1×1 convolutions, one per level (gain 1, linear output).
    pub to_rgb: Vec<EqConv2d>,
    /// Length of the latent code.
    pub latent_size: usize,
    /// Channels of the 4×4 block.
    pub base_channels: usize,
}

impl Generator {
    /// A freshly initialised generator (weights N(0, 1) from `rng`, biases 0).
    pub fn new(config: &ModelConfig, rng: &mut SplitMix64, device: &Device) -> Self {
        let c0 = config.channels(0);
        let rgb = config.image_channels;
        let dense = EqDense::new(config.latent_size, c0 * 16, SQRT2 / 4.0, rng, device);
        let conv4 = EqConv2d::new(c0, c0, 3, SQRT2, rng, device);
        let mut blocks = Vec::new();
        let mut to_rgb = vec![EqConv2d::new(c0, rgb, 1, 1.0, rng, device)];
        for level in 1..config.num_levels() {
            let (cin, cout) = (config.channels(level - 1), config.channels(level));
            blocks.push(GenBlock {
                conv0: EqConv2d::new(cin, cout, 3, SQRT2, rng, device),
                conv1: EqConv2d::new(cout, cout, 3, SQRT2, rng, device),
            });
            to_rgb.push(EqConv2d::new(cout, rgb, 1, 1.0, rng, device));
        }
        Self {
            dense,
            conv4,
            blocks,
            to_rgb,
            latent_size: config.latent_size,
            base_channels: c0,
        }
    }

    /// Number of levels this generator can output (4×4 included).
    pub fn num_levels(&self) -> usize {
        self.to_rgb.len()
    }

    /// Images at `level` (`4·2^level` pixels square) from latents `z` (`[n, latent]`).
    ///
    /// While `level` fades in (`alpha < 1`), the output is
    /// `lerp(upsample(toRGB_old(x_old)), toRGB_new(x_new), alpha)`. Values are in the data range
    /// `[-1, 1]` (not clamped).
    pub fn forward(&self, z: Tensor<2>, level: usize, alpha: f64) -> Tensor<4> {
        self.forward_truncated(z, level, alpha, 1.0)
    }

    /// [`Self::forward`] with the truncation trick: the latent, once on the sphere, is scaled by
    /// `psi` (0 … 1) before the first dense layer. As latents average to zero, that pulls the
    /// first layer's output towards its average over all latents (its bias) by `psi`, as
    /// StyleGAN's truncation pulls `w` towards its mean: more typical faces, less variety; `psi`
    /// 0 draws the one average face, 1 is plain `forward` exactly.
    pub fn forward_truncated(&self, z: Tensor<2>, level: usize, alpha: f64, psi: f64) -> Tensor<4> {
        let (prev, x) = self.features_truncated(z, level, level > 0 && alpha < 1.0, psi);
        let img = self.to_rgb[level].forward(x); // [n, 3, r, r]
        match prev {
            Some(prev) => {
                let old = upsample2x(self.to_rgb[level - 1].forward(prev)); // [n, 3, r, r]
                lerp(old, img, alpha)
            }
            None => img,
        }
    }

    /// The features under the toRGB layers at `level` (`[n, c_level, r, r]`), and with
    /// `keep_previous` those of the level below (`[n, c_level−1, r/2, r/2]`, the input of the
    /// fade's old branch; `None` at level 0).
    pub fn features(
        &self,
        z: Tensor<2>,
        level: usize,
        keep_previous: bool,
    ) -> (Option<Tensor<4>>, Tensor<4>) {
        self.features_truncated(z, level, keep_previous, 1.0)
    }

    fn features_truncated(
        &self,
        z: Tensor<2>,
        level: usize,
        keep_previous: bool,
        psi: f64,
    ) -> (Option<Tensor<4>>, Tensor<4>) {
        assert!(
            level < self.num_levels(),
            "level {level} beyond this generator's {} levels",
            self.num_levels()
        );
        let n = z.dims()[0];
        let mut x = normalize_rows(z); // [n, latent] on the hypersphere
        if psi != 1.0 {
            x = x.mul_scalar(psi); // towards the latents' average, 0
        }
        let x = self.dense.forward(x).reshape([n, self.base_channels, 4, 4]); // [n, c0, 4, 4]
        let x = pixel_norm(lrelu(x));
        let mut x = pixel_norm(lrelu(self.conv4.forward(x))); // [n, c0, 4, 4]
        let mut prev = None;
        for (i, block) in self.blocks.iter().take(level).enumerate() {
            if keep_previous && i + 1 == level {
                prev = Some(x.clone());
            }
            x = block.forward(x); // [n, c_l, 4·2^l, 4·2^l]
        }
        (prev, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{tensor_from_f32, tensor_to_f32};

    /// Truncation pulls faces towards one average face: at ψ 0 every latent draws the same
    /// picture; as ψ falls, faces come closer to it and to each other; ψ 1 is `forward`.
    #[test]
    fn truncation_pulls_faces_towards_the_average_face() {
        let config = ModelConfig::new()
            .with_resolution(16)
            .with_latent_size(16)
            .with_fmap_base(64)
            .with_fmap_max(16);
        let device = Device::flex();
        let mut g = Generator::new(&config, &mut SplitMix64::new(5), &device);
        // Pixel norm undoes any scale, so with the dense layer's bias at its initial 0 truncation
        // would change nothing; a trained one's is not (the shipped 64×64 model: bias 0.30 root
        // mean square against 0.36 for the latent's part).
        let bias = SplitMix64::new(6).normals_f32(16 * 16);
        g.dense.bias = g
            .dense
            .bias
            .map(|b| tensor_from_f32(bias.iter().map(|v| v * 0.3).collect(), b.dims(), &device));
        let n = 8;
        let z = SplitMix64::new(9).normals_f32(n * 16);
        let draw = |psi: f64| {
            let z = tensor_from_f32(z.clone(), [n, 16], &device);
            tensor_to_f32(g.forward_truncated(z, 2, 1.0, psi))
        };
        let per = 3 * 16 * 16;
        let average = draw(0.0);
        for face in average.chunks(per).skip(1) {
            assert_eq!(face, &average[..per], "ψ 0: one face for every latent");
        }
        // Root mean square distance from the average face, and between faces 0 and 1.
        let spread = |img: &[f32]| {
            let from_average = img
                .iter()
                .zip(&average)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                / img.len() as f32;
            let apart = img[..per]
                .iter()
                .zip(&img[per..2 * per])
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                / per as f32;
            (from_average.sqrt(), apart.sqrt())
        };
        let mut last = (f32::INFINITY, f32::INFINITY);
        for psi in [1.0, 0.75, 0.5, 0.25] {
            let now = spread(&draw(psi));
            assert!(
                now.0 < last.0 && now.1 < last.1,
                "ψ {psi}: {now:?} after {last:?}"
            );
            last = now;
        }
        let plain = tensor_to_f32(g.forward(tensor_from_f32(z.clone(), [n, 16], &device), 2, 1.0));
        assert_eq!(plain, draw(1.0));
    }
}
