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
        assert!(
            level < self.num_levels(),
            "level {level} beyond this generator's {} levels",
            self.num_levels()
        );
        let (prev, x) = self.features(z, level, level > 0 && alpha < 1.0);
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
        assert!(
            level < self.num_levels(),
            "level {level} beyond this generator's {} levels",
            self.num_levels()
        );
        let n = z.dims()[0];
        let x = normalize_rows(z); // [n, latent] on the hypersphere
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
