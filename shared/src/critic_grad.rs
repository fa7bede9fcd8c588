//! The critic's input gradient `∂D/∂x`, written out by hand from ordinary differentiable ops.
//!
//! Burn 0.22 has first-order autodiff only, and WGAN-GP's penalty `λ(‖∇ₓD(x̂)‖ − 1)²` needs the
//! gradient of a gradient. So the vector–Jacobian product of the critic is built here as a normal
//! forward computation — a transposed convolution per convolution, a 1/0.2 mask per leaky ReLU, a
//! ¼-weighted nearest upsample per average pool, the closed form of the minibatch stddev, both
//! branches of the fade — whose ops all depend on the critic's weights. One `backward()` through
//! the penalty then yields its parameter gradients. The tests compare it with Burn's own `dD/dx`
//! and the penalty's gradients with finite differences, in `f64`.

use burn::tensor::Tensor;

use crate::critic::{Critic, CriticTape};
use crate::layers::{downsample2x_vjp, lrelu_vjp, minibatch_stddev_vjp};

impl Critic {
    /// `grad_outᵀ · ∂D(x)/∂x` for the images of the taped forward pass (`grad_out` is `[n, 1]`;
    /// all ones gives the gradient of the summed scores, as the official penalty uses).
    pub fn input_gradient(&self, tape: &CriticTape, grad_out: Tensor<2>) -> Tensor<4> {
        let n = grad_out.dims()[0];
        let level = tape.level;
        // Dense head, back to the 4×4 features.
        let g = self.dense1.input_vjp(grad_out); // [n, nf0]
        let g = lrelu_vjp(tape.dense0_pre.clone(), g);
        let g = self
            .dense0
            .input_vjp(g)
            .reshape([n, self.base_channels, 4, 4]); // [n, c0, 4, 4]
        let g = lrelu_vjp(tape.conv4_pre.clone(), g);
        let g = self.conv4.input_vjp(g); // [n, c0 + 1, 4, 4]
        let mut g = minibatch_stddev_vjp(tape.mbstd_in.clone(), tape.group, g); // [n, c0, 4, 4]

        // Blocks from level 1 up to the top; the fade splits the gradient at the top block.
        let mut old_branch = None;
        for l in 1..=level {
            if l == level && tape.alpha < 1.0 {
                old_branch = Some(g.clone().mul_scalar(1.0 - tape.alpha)); // [n, c_{L-1}, r/2, r/2]
                g = g.mul_scalar(tape.alpha);
            }
            let block = &self.blocks[l - 1];
            let bt = &tape.blocks[level - l];
            let g_up = downsample2x_vjp(g); // [n, c_{l-1}, r_l, r_l]
            let g_up = lrelu_vjp(bt.pre1.clone(), g_up);
            let g_up = block.conv1.input_vjp(g_up); // [n, c_l, r_l, r_l]
            let g_up = lrelu_vjp(bt.pre0.clone(), g_up);
            g = block.conv0.input_vjp(g_up);
        }
        let g = lrelu_vjp(tape.rgb_pre.clone(), g);
        let grad_images = self.from_rgb[level].input_vjp(g); // [n, 3, r, r]
        match (old_branch, &tape.old_rgb_pre) {
            (Some(g_old), Some(old_pre)) => {
                let g_old = lrelu_vjp(old_pre.clone(), g_old);
                let g_old = self.from_rgb[level - 1].input_vjp(g_old); // [n, 3, r/2, r/2]
                grad_images + downsample2x_vjp(g_old)
            }
            _ => grad_images,
        }
    }

    /// Per-sample L2 norm of the critic's input gradient at `images` (`[n]`), and the scores.
    pub fn input_gradient_norms(
        &self,
        images: Tensor<4>,
        level: usize,
        alpha: f64,
    ) -> (Tensor<1>, Tensor<2>) {
        let n = images.dims()[0];
        let (scores, tape) = self.forward_taped(images, level, alpha);
        let ones = scores.ones_like();
        let grad = self.input_gradient(&tape, ones); // [n, 3, r, r]
        let [_, c, h, w] = grad.dims();
        let norms = grad
            .reshape([n, c * h * w])
            .square()
            .sum_dim(1)
            .sqrt()
            .reshape([n]); // [n]
        (norms, scores)
    }
}
