//! The paper's critic (discriminator), mirror of the generator, and its forward tape.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::config::ModelConfig;
use crate::layers::{EqConv2d, EqDense, downsample2x, lrelu, mbstd_group, minibatch_stddev};
use crate::rng::SplitMix64;
use crate::tensor::lerp;

const SQRT2: f64 = core::f64::consts::SQRT_2;

/// One stage going down: two 3×3 convolutions with leaky ReLU, then 2×2 average pooling.
#[derive(Module, Debug)]
pub struct CriticBlock {
    /// 3×3 convolution keeping this level's channels.
    pub conv0: EqConv2d,
    /// 3×3 convolution to the next-lower level's channels.
    pub conv1: EqConv2d,
}

/// The critic of Karras et al. (2018) for all levels up to the final resolution.
#[derive(Module, Debug)]
pub struct Critic {
    /// fromRGB 1×1 convolutions, one per level.
    pub from_rgb: Vec<EqConv2d>,
    /// Stages for levels 1, 2, … (index `level − 1`), each halving the resolution.
    pub blocks: Vec<CriticBlock>,
    /// The 4×4 block's 3×3 convolution over features + the stddev map.
    pub conv4: EqConv2d,
    /// Dense layer over the flattened 4×4 features.
    pub dense0: EqDense,
    /// Final dense layer to one score (gain 1).
    pub dense1: EqDense,
    /// Preferred group size of the minibatch-stddev layer.
    pub mbstd_group_size: usize,
    /// Channels at 4×4.
    pub base_channels: usize,
}

/// Pre-activations of one critic block, kept for the input gradient.
#[derive(Debug, Clone)]
pub struct BlockTape {
    /// Input of the first leaky ReLU.
    pub pre0: Tensor<4>,
    /// Input of the second leaky ReLU.
    pub pre1: Tensor<4>,
}

/// What a critic forward pass leaves behind for [`Critic::input_gradient`].
#[derive(Debug, Clone)]
pub struct CriticTape {
    /// Level of the input images.
    pub level: usize,
    /// Fade weight of that level.
    pub alpha: f64,
    /// Pre-activation of the top level's fromRGB.
    pub rgb_pre: Tensor<4>,
    /// Pre-activation of the previous level's fromRGB on the pooled image, while fading.
    pub old_rgb_pre: Option<Tensor<4>>,
    /// Block tapes from the top level down to level 1.
    pub blocks: Vec<BlockTape>,
    /// Input of the minibatch-stddev layer.
    pub mbstd_in: Tensor<4>,
    /// Group size used.
    pub group: usize,
    /// Pre-activation of the 4×4 convolution.
    pub conv4_pre: Tensor<4>,
    /// Pre-activation of the first dense layer.
    pub dense0_pre: Tensor<2>,
}

impl Critic {
    /// A freshly initialised critic (weights N(0, 1) from `rng`, biases 0).
    pub fn new(config: &ModelConfig, rng: &mut SplitMix64, device: &Device) -> Self {
        let rgb = config.image_channels;
        let c0 = config.channels(0);
        let mut from_rgb = vec![EqConv2d::new(rgb, c0, 1, SQRT2, rng, device)];
        let mut blocks = Vec::new();
        for level in 1..config.num_levels() {
            let (c, c_lower) = (config.channels(level), config.channels(level - 1));
            from_rgb.push(EqConv2d::new(rgb, c, 1, SQRT2, rng, device));
            blocks.push(CriticBlock {
                conv0: EqConv2d::new(c, c, 3, SQRT2, rng, device),
                conv1: EqConv2d::new(c, c_lower, 3, SQRT2, rng, device),
            });
        }
        Self {
            from_rgb,
            blocks,
            conv4: EqConv2d::new(c0 + 1, c0, 3, SQRT2, rng, device),
            dense0: EqDense::new(c0 * 16, config.nf(0), SQRT2, rng, device),
            dense1: EqDense::new(config.nf(0), 1, 1.0, rng, device),
            mbstd_group_size: config.mbstd_group_size,
            base_channels: c0,
        }
    }

    /// Number of levels this critic can judge (4×4 included).
    pub fn num_levels(&self) -> usize {
        self.from_rgb.len()
    }

    /// Scores (`[n, 1]`) of images at `level` with fade weight `alpha`.
    pub fn forward(&self, images: Tensor<4>, level: usize, alpha: f64) -> Tensor<2> {
        self.forward_taped(images, level, alpha).0
    }

    /// Scores and the tape that [`input_gradient`](Self::input_gradient) needs.
    ///
    /// While `level` fades in, the features entering level `level − 1` are
    /// `lerp(fromRGB_old(downsample(x)), block(fromRGB_new(x)), alpha)`, mirroring the generator.
    pub fn forward_taped(
        &self,
        images: Tensor<4>,
        level: usize,
        alpha: f64,
    ) -> (Tensor<2>, CriticTape) {
        assert!(
            level < self.num_levels(),
            "level {level} beyond this critic's {} levels",
            self.num_levels()
        );
        let n = images.dims()[0];
        let fading = level > 0 && alpha < 1.0;
        let rgb_pre = self.from_rgb[level].forward(images.clone()); // [n, c_L, r, r]
        let mut x = lrelu(rgb_pre.clone());
        let mut old_rgb_pre = None;
        let mut tapes = Vec::with_capacity(level);
        for l in (1..=level).rev() {
            let block = &self.blocks[l - 1];
            let pre0 = block.conv0.forward(x); // [n, c_l, r_l, r_l]
            let pre1 = block.conv1.forward(lrelu(pre0.clone())); // [n, c_{l-1}, r_l, r_l]
            x = downsample2x(lrelu(pre1.clone())); // [n, c_{l-1}, r_l/2, r_l/2]
            tapes.push(BlockTape { pre0, pre1 });
            if fading && l == level {
                let old_pre = self.from_rgb[level - 1].forward(downsample2x(images.clone()));
                x = lerp(lrelu(old_pre.clone()), x, alpha);
                old_rgb_pre = Some(old_pre);
            }
        }
        let group = mbstd_group(self.mbstd_group_size, n);
        let mbstd_in = x;
        let y = minibatch_stddev(mbstd_in.clone(), group); // [n, c0 + 1, 4, 4]
        let conv4_pre = self.conv4.forward(y); // [n, c0, 4, 4]
        let flat = lrelu(conv4_pre.clone()).reshape([n, self.base_channels * 16]); // [n, 16·c0]
        let dense0_pre = self.dense0.forward(flat); // [n, nf0]
        let score = self.dense1.forward(lrelu(dense0_pre.clone())); // [n, 1]
        let tape = CriticTape {
            level,
            alpha: if fading { alpha } else { 1.0 },
            rgb_pre,
            old_rgb_pre,
            blocks: tapes,
            mbstd_in,
            group,
            conv4_pre,
            dense0_pre,
        };
        (score, tape)
    }
}
