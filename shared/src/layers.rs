//! The building blocks of the paper's networks, each with the input gradient (vector–Jacobian
//! product) the critic's gradient penalty needs.
//!
//! Equalised learning rate: weights are stored as N(0, 1) draws and multiplied at every forward by
//! the He constant `gain / √fan_in`, so every layer learns at the same speed under Adam.

use burn::module::{Module, Param};
use burn::tensor::activation::leaky_relu;
use burn::tensor::module::{avg_pool2d, conv_transpose2d, conv2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, ConvTransposeOptions};
use burn::tensor::{Device, Tensor};

use crate::rng::SplitMix64;
use crate::tensor::tensor_from_f32;

/// Slope of the leaky ReLU for negative inputs.
pub const LRELU_SLOPE: f64 = 0.2;
/// ε of the pixelwise feature normalisation.
pub const PIXEL_NORM_EPS: f64 = 1e-8;
/// ε inside the minibatch standard deviation's square root.
pub const MBSTD_EPS: f64 = 1e-8;

/// The He constant of the equalised learning rate: `gain / √fan_in`.
pub fn he_scale(gain: f64, fan_in: usize) -> f64 {
    gain / (fan_in as f64).sqrt()
}

fn normal_param<const D: usize>(
    shape: [usize; D],
    rng: &mut SplitMix64,
    device: &Device,
) -> Param<Tensor<D>> {
    let n = shape.iter().product();
    Param::from_tensor(tensor_from_f32(rng.normals_f32(n), shape, device))
}

fn zero_param<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::zeros(shape, device))
}

/// A square convolution with "same" padding, stride 1, and equalised learning rate.
#[derive(Module, Debug)]
pub struct EqConv2d {
    /// Unscaled weight, `[out, in, k, k]`, initialised N(0, 1).
    pub weight: Param<Tensor<4>>,
    /// Bias, `[out]`, initialised 0.
    pub bias: Param<Tensor<1>>,
    /// Runtime weight multiplier `gain / √(in·k·k)`.
    pub scale: f64,
    /// Kernel size (odd).
    pub kernel: usize,
}

impl EqConv2d {
    /// A new layer with N(0, 1) weights from `rng`.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        gain: f64,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Self {
        Self {
            weight: normal_param([out_ch, in_ch, kernel, kernel], rng, device),
            bias: zero_param([out_ch], device),
            scale: he_scale(gain, in_ch * kernel * kernel),
            kernel,
        }
    }

    fn scaled_weight(&self) -> Tensor<4> {
        self.weight.val().mul_scalar(self.scale)
    }

    /// A 1×1 layer as a product with every image of a batch: `w·scale · x` (or `(w·scale)ᵀ · x`,
    /// `transposed`, the input gradient), `[n, rows, h, w]` from `x` `[n, cols, h, w]`. On flex a
    /// 1×1 layer runs as that batched product: Burn's `conv2d` lowers its weight gradient to a
    /// convolution with an H×W kernel whose layout copies run on one thread (a fifth of the
    /// trainer's main-thread time at 128×128, with the other cores waiting), where the product's
    /// gradients are batched products split across the cores.
    #[cfg(feature = "flex-kernels")]
    fn pointwise(&self, x: Tensor<4>, transposed: bool) -> Tensor<4> {
        let [n, cols, h, w] = x.dims();
        let [out, c, _, _] = self.weight.dims();
        let weight = self.scaled_weight().reshape([out, c]); // [out, c]
        let weight = if transposed {
            weight.transpose()
        } else {
            weight
        }; // [rows, cols]
        let rows = weight.dims()[0];
        let y = weight
            .unsqueeze::<3>() // [1, rows, cols]
            .matmul(x.reshape([n, cols, h * w])); // [n, rows, h·w]
        y.reshape([n, rows, h, w])
    }

    /// `conv(x, w·scale) + b`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "flex-kernels")]
        if self.kernel == 3
            && let Some(y) =
                crate::flex_kernels::conv3x3::conv3x3(x.clone(), self.weight.val(), self.scale)
        {
            let out = self.bias.dims()[0];
            return y + self.bias.val().reshape([1, out, 1, 1]);
        }
        #[cfg(feature = "flex-kernels")]
        if self.kernel == 1 && crate::flex_kernels::runs_on(&x.device()) {
            let out = self.bias.dims()[0];
            return self.pointwise(x, false) + self.bias.val().reshape([1, out, 1, 1]);
        }
        let pad = self.kernel / 2;
        conv2d(
            x,
            self.scaled_weight(),
            Some(self.bias.val()),
            ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
        )
    }

    /// Input gradient of [`forward`](Self::forward): a transposed convolution with the same scaled
    /// weight. Differentiable in the weight, so a penalty on it trains the layer.
    pub fn input_vjp(&self, grad_out: Tensor<4>) -> Tensor<4> {
        #[cfg(feature = "flex-kernels")]
        if self.kernel == 3
            && let Some(g) = crate::flex_kernels::conv3x3::conv3x3_transpose(
                grad_out.clone(),
                self.weight.val(),
                self.scale,
            )
        {
            return g;
        }
        #[cfg(feature = "flex-kernels")]
        if self.kernel == 1 && crate::flex_kernels::runs_on(&grad_out.device()) {
            return self.pointwise(grad_out, true);
        }
        let pad = self.kernel / 2;
        conv_transpose2d(
            grad_out,
            self.scaled_weight(),
            None,
            ConvTransposeOptions::new([1, 1], [pad, pad], [0, 0], [1, 1], 1),
        )
    }
}

/// A fully connected layer with equalised learning rate.
#[derive(Module, Debug)]
pub struct EqDense {
    /// Unscaled weight, `[in, out]`, initialised N(0, 1).
    pub weight: Param<Tensor<2>>,
    /// Bias, `[out]`, initialised 0.
    pub bias: Param<Tensor<1>>,
    /// Runtime weight multiplier `gain / √in`.
    pub scale: f64,
}

impl EqDense {
    /// A new layer with N(0, 1) weights from `rng`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        gain: f64,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Self {
        Self {
            weight: normal_param([in_features, out_features], rng, device),
            bias: zero_param([out_features], device),
            scale: he_scale(gain, in_features),
        }
    }

    /// `x · (W·scale) + b`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let out = self.bias.dims()[0];
        x.matmul(self.weight.val().mul_scalar(self.scale)) + self.bias.val().reshape([1, out])
    }

    /// Input gradient of [`forward`](Self::forward): `g · (W·scale)ᵀ`.
    pub fn input_vjp(&self, grad_out: Tensor<2>) -> Tensor<2> {
        grad_out.matmul(self.weight.val().mul_scalar(self.scale).transpose())
    }
}

/// Leaky ReLU with slope 0.2.
pub fn lrelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex-kernels")]
    if let Some(y) = crate::flex_kernels::lrelu::leaky_scale(x.clone(), x.clone(), LRELU_SLOPE) {
        return y;
    }
    leaky_relu(x, LRELU_SLOPE)
}

/// Input gradient of [`lrelu`] given its input `pre`: `g · (1 if pre > 0 else 0.2)`. The mask is
/// piecewise constant, so it carries no gradient of its own.
pub fn lrelu_vjp<const D: usize>(pre: Tensor<D>, grad_out: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex-kernels")]
    if let Some(g) =
        crate::flex_kernels::lrelu::leaky_scale(pre.clone().detach(), grad_out.clone(), LRELU_SLOPE)
    {
        return g;
    }
    let negative = pre.detach().lower_equal_elem(0.0); // where the slope is 0.2
    grad_out
        .clone()
        .mask_where(negative, grad_out.mul_scalar(LRELU_SLOPE))
}

/// Pixelwise feature normalisation: each pixel's feature vector scaled to unit RMS.
pub fn pixel_norm(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(y) = crate::flex_kernels::pixel_norm::pixel_norm(x.clone(), PIXEL_NORM_EPS) {
        return y;
    }
    let norm = x
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(PIXEL_NORM_EPS)
        .sqrt(); // [n, 1, h, w]
    x / norm
}

/// Pixel norm of a batch of latents: each row scaled to unit RMS (onto the hypersphere).
pub fn normalize_rows(z: Tensor<2>) -> Tensor<2> {
    let norm = z
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(PIXEL_NORM_EPS)
        .sqrt(); // [n, 1]
    z / norm
}

/// Nearest-neighbour 2× upsampling.
pub fn upsample2x(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(y) = crate::flex_kernels::resample::upsample2x(x.clone(), 1.0) {
        return y;
    }
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1]) // [n, c, h, 1, w, 1]
        .expand([n, c, h, 2, w, 2]) // [n, c, h, 2, w, 2]
        .reshape([n, c, 2 * h, 2 * w])
}

/// 2×2 average pooling (the paper's downscale).
pub fn downsample2x(x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(y) = crate::flex_kernels::resample::pool2x(x.clone(), 0.25) {
        return y;
    }
    avg_pool2d(x, AvgPoolOptions::new([2, 2]))
}

/// Input gradient of [`downsample2x`]: each pixel gets a quarter of its block's gradient.
pub fn downsample2x_vjp(grad_out: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(g) = crate::flex_kernels::resample::upsample2x(grad_out.clone(), 0.25) {
        return g;
    }
    upsample2x(grad_out).mul_scalar(0.25)
}

/// The group size the minibatch-stddev layer uses for `batch`: `preferred` when it divides the
/// batch, else the largest divisor of the batch below it.
pub fn mbstd_group(preferred: usize, batch: usize) -> usize {
    let g = preferred.min(batch).max(1);
    (1..=g)
        .rev()
        .find(|d| batch.is_multiple_of(*d))
        .unwrap_or(1)
}

/// The batch cut into the members of every minibatch-stddev group: `group` slices of `[M, C, H,
/// W]`, slice `g` holding samples `g·M … g·M + M − 1` (`M = batch / group`), so sample `n` is
/// member `n / M` of group `n % M`, like the official `[GMCHW]` reshape.
///
/// Slices rather than that reshape: on Burn 0.22.1's fused GPU backends a reduction over a
/// reshape that splits the batch of a convolution's output gives wrong numbers (measured on
/// wgpu/OpenGL: `conv(x).reshape([4, 2, c, h, w]).mean_dim(0)` off by up to 4.3 where flex is
/// exact; the reshape alone, or the mean alone, is right). `trainer/src/gpu_parity.rs` keeps
/// the whole step checked against flex.
fn group_members(x: &Tensor<4>, group: usize) -> Vec<Tensor<4>> {
    let m = x.dims()[0] / group;
    (0..group).map(|g| x.clone().narrow(0, g * m, m)).collect()
}

/// The mean of equally shaped tensors.
fn mean_of(parts: impl IntoIterator<Item = Tensor<4>>) -> Tensor<4> {
    let mut count = 0;
    let sum = parts
        .into_iter()
        .inspect(|_| count += 1)
        .reduce(|a, b| a + b)
        .expect("at least one part");
    sum.div_scalar(count as f64)
}

/// Minibatch standard deviation: appends one feature map holding, for each sample's group, the
/// average over features and pixels of the per-feature standard deviation across the group.
///
/// Sample `n` belongs to group member `n / m` of group `n % m` with `m = batch / group`, like
/// the official `[GMCHW]` reshape ([`group_members`]).
pub fn minibatch_stddev(x: Tensor<4>, group: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let members = group_members(&x, group); // G × [M, C, H, W]
    let mean = mean_of(members.iter().cloned()); // [M, C, H, W]
    let var = mean_of(members.into_iter().map(|y| (y - mean.clone()).square())); // [M, C, H, W]
    let std = var.add_scalar(MBSTD_EPS).sqrt(); // [M, C, H, W]
    let s = std.mean_dim(1).mean_dim(2).mean_dim(3); // [M, 1, 1, 1]
    let [m, ..] = s.dims();
    let s = s.expand([m, 1, h, w]); // [M, 1, H, W]
    let s = Tensor::cat(vec![s; group], 0); // [N, 1, H, W]
    Tensor::cat(vec![x, s], 1) // [N, C + 1, H, W]
}

/// Input gradient of [`minibatch_stddev`] in closed form.
///
/// With `d = x − mean_g(x)` and `σ = √(mean_g(d²) + ε)`, the appended map of group `m` is
/// `s_m = mean_{c,h,w}(σ)`, and `∂s_m/∂x_g = d_g / (G·σ·C·H·W)` (the mean's own term sums to
/// zero). `grad_out` is `[N, C + 1, H, W]`; the result is `[N, C, H, W]`.
pub fn minibatch_stddev_vjp(x: Tensor<4>, group: usize, grad_out: Tensor<4>) -> Tensor<4> {
    let [_, c, h, w] = x.dims();
    let grad_x = grad_out.clone().narrow(1, 0, c); // [N, C, H, W]
    let grad_s = grad_out.narrow(1, c, 1); // [N, 1, H, W]
    let grad_s = group_members(&grad_s, group)
        .into_iter()
        .reduce(|a, b| a + b)
        .expect("at least one member")
        .sum_dim(2)
        .sum_dim(3); // [M, 1, 1, 1]
    let members = group_members(&x, group); // G × [M, C, H, W]
    let mean = mean_of(members.iter().cloned()); // [M, C, H, W]
    let centred: Vec<Tensor<4>> = members.into_iter().map(|y| y - mean.clone()).collect();
    let std = mean_of(centred.iter().map(|d| d.clone().square()))
        .add_scalar(MBSTD_EPS)
        .sqrt(); // [M, C, H, W]
    let coef = grad_s.div_scalar((group * c * h * w) as f64); // [M, 1, 1, 1]
    let scale = coef / std; // [M, C, H, W]
    let grad_from_s = Tensor::cat(centred.into_iter().map(|d| d * scale.clone()).collect(), 0); // [N, C, H, W]
    grad_x + grad_from_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::tensor_to_f32;

    fn dev() -> Device {
        Device::flex()
    }

    #[test]
    fn he_constants() {
        // 3×3 conv from 512 channels, gain √2: √2 / √4608.
        assert!((he_scale(2f64.sqrt(), 512 * 9) - 0.020833333).abs() < 1e-8);
        let mut rng = SplitMix64::new(0);
        let conv = EqConv2d::new(16, 8, 3, 2f64.sqrt(), &mut rng, &dev());
        assert!((conv.scale - 2f64.sqrt() / 12.0).abs() < 1e-12);
        let rgb = EqConv2d::new(32, 3, 1, 1.0, &mut rng, &dev());
        assert!((rgb.scale - 1.0 / 32f64.sqrt()).abs() < 1e-12);
        // The 4×4 block's dense layer: gain √2/4 over the latent.
        let dense = EqDense::new(512, 16 * 8, 2f64.sqrt() / 4.0, &mut rng, &dev());
        assert!((dense.scale - 2f64.sqrt() / 4.0 / 512f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn weights_are_unit_normal_and_biases_zero() {
        let mut rng = SplitMix64::new(1);
        let conv = EqConv2d::new(64, 64, 3, 2f64.sqrt(), &mut rng, &dev());
        let w = tensor_to_f32(conv.weight.val());
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "mean {mean} var {var}"
        );
        assert!(tensor_to_f32(conv.bias.val()).iter().all(|&b| b == 0.0));
    }

    #[test]
    fn equalised_conv_keeps_unit_variance() {
        // With N(0,1) inputs and the He constant, outputs have variance ≈ gain².
        let mut rng = SplitMix64::new(2);
        let conv = EqConv2d::new(64, 64, 3, 1.0, &mut rng, &dev());
        let x = tensor_from_f32(rng.normals_f32(4 * 64 * 16 * 16), [4, 64, 16, 16], &dev());
        let y = tensor_to_f32(conv.forward(x).slice([0..4, 0..64, 1..15, 1..15]));
        let var = y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32;
        assert!((var - 1.0).abs() < 0.1, "variance {var}");
    }

    #[test]
    fn pixel_norm_gives_unit_rms_per_pixel() {
        let mut rng = SplitMix64::new(3);
        let x = tensor_from_f32(
            rng.normals_f32(2 * 5 * 3 * 3)
                .iter()
                .map(|v| v * 7.0)
                .collect(),
            [2, 5, 3, 3],
            &dev(),
        );
        let y = pixel_norm(x);
        let ms = tensor_to_f32(y.square().mean_dim(1));
        assert!(ms.iter().all(|v| (v - 1.0).abs() < 1e-5), "{ms:?}");
    }

    /// A 1×1 layer (on flex a batched matrix product) gives what Burn's own convolution gives,
    /// with the same gradients in its input, weight and bias: forward, and through its input
    /// gradient as the critic's penalty uses it.
    #[test]
    fn pointwise_layers_equal_burns_convolutions_with_their_gradients() {
        let device = Device::flex().autodiff();
        let mut rng = SplitMix64::new(11);
        let mut random = |shape: [usize; 4]| {
            tensor_from_f32(rng.normals_f32(shape.iter().product()), shape, &device)
        };
        let (x0, w0, h0) = (
            random([2, 5, 4, 6]),
            random([3, 5, 1, 1]),
            random([2, 3, 4, 6]),
        );
        let b0 = Tensor::<1>::from_floats([0.5, -1.0, 2.0], &device);
        let scale = he_scale(1.0, 5);
        let gradients = |layer_path: bool| {
            let x = x0.clone().require_grad();
            let w = w0.clone().require_grad();
            let b = b0.clone().require_grad();
            let h = h0.clone().require_grad();
            let (y, t) = if layer_path {
                let layer = EqConv2d {
                    weight: Param::from_tensor(w.clone()),
                    bias: Param::from_tensor(b.clone()),
                    scale,
                    kernel: 1,
                };
                (layer.forward(x.clone()), layer.input_vjp(h.clone()))
            } else {
                let w = w.clone().mul_scalar(scale);
                let y = conv2d(
                    x.clone(),
                    w.clone(),
                    Some(b.clone()),
                    ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
                );
                let t = conv_transpose2d(
                    h.clone(),
                    w,
                    None,
                    ConvTransposeOptions::new([1, 1], [0, 0], [0, 0], [1, 1], 1),
                );
                (y, t)
            };
            let loss = y.clone().square().sum()
                + (t.clone() * x.clone()).sum()
                + (y * h.clone()).sin().sum();
            let grads = loss.backward();
            let values = [
                t.inner(),
                x.grad(&grads).unwrap(),
                w.grad(&grads).unwrap(),
                h.grad(&grads).unwrap(),
            ];
            (
                values.map(tensor_to_f32),
                tensor_to_f32(b.grad(&grads).unwrap()),
            )
        };
        let ((fast, fast_b), (reference, reference_b)) = (gradients(true), gradients(false));
        for (a, b) in fast
            .iter()
            .chain([&fast_b])
            .zip(reference.iter().chain([&reference_b]))
        {
            assert_eq!(a.len(), b.len());
            let diff = a
                .iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff < 1e-4, "differs by {diff}");
        }
    }

    #[test]
    fn up_and_down_sampling() {
        let x = tensor_from_f32(vec![1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2], &dev());
        let up = tensor_to_f32(upsample2x(x.clone()));
        assert_eq!(
            up,
            vec![
                1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.
            ]
        );
        let down = tensor_to_f32(downsample2x(upsample2x(x)));
        assert_eq!(down, vec![1.0, 2.0, 3.0, 4.0]);
        let y = tensor_from_f32((0..16).map(|v| v as f32).collect(), [1, 1, 4, 4], &dev());
        assert_eq!(tensor_to_f32(downsample2x(y)), vec![2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn lrelu_and_its_mask() {
        let x = tensor_from_f32(vec![-2.0, -0.5, 0.5, 3.0], [4], &dev());
        assert_eq!(tensor_to_f32(lrelu(x.clone())), vec![-0.4, -0.1, 0.5, 3.0]);
        let g = tensor_from_f32(vec![1.0, 1.0, 1.0, 2.0], [4], &dev());
        assert_eq!(tensor_to_f32(lrelu_vjp(x, g)), vec![0.2, 0.2, 1.0, 2.0]);
    }

    #[test]
    fn group_falls_back_to_a_divisor() {
        assert_eq!(mbstd_group(4, 16), 4);
        assert_eq!(mbstd_group(4, 6), 3);
        assert_eq!(mbstd_group(4, 5), 1);
        assert_eq!(mbstd_group(4, 2), 2);
        assert_eq!(mbstd_group(4, 1), 1);
    }

    #[test]
    fn minibatch_stddev_matches_definition() {
        // Batch 4, group 2 → m = 2 groups: samples {0, 2} and {1, 3}.
        let vals: Vec<f32> = vec![
            0.0, 2.0, // sample 0: c=0 px (0,0),(0,1)
            1.0, 1.0, // sample 1
            4.0, 2.0, // sample 2
            3.0, 5.0, // sample 3
        ];
        let x = tensor_from_f32(vals, [4, 1, 1, 2], &dev());
        let y = minibatch_stddev(x, 2);
        assert_eq!(y.dims(), [4, 2, 1, 2]);
        let s = tensor_to_f32(y.narrow(1, 1, 1));
        // group {0,2}: std of (0,4)=2, of (2,2)=0 → mean 1 (+ε effects).
        // group {1,3}: std of (1,3)=1, of (1,5)=2 → 1.5.
        let expect = [1.0, 1.0, 1.5, 1.5, 1.0, 1.0, 1.5, 1.5];
        for (a, b) in s.iter().zip(expect) {
            assert!((a - b).abs() < 1e-3, "{s:?}");
        }
    }
}
