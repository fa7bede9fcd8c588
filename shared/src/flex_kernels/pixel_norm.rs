//! Pixelwise feature normalisation as one backend extension: `y = x / √(mean_c(x²) + ε)` and its
//! gradient `dx = r·g − x·r³·mean_c(g·x)` with `r = 1/√(mean_c(x²) + ε)`, each one pass over every
//! image (flex's version is five tensor passes forward and more backward). On the autodiff
//! backend the backward runs `pixel_norm_backward`; it is not differentiated again, which the
//! generator (the only user) never needs.

use super::{Float, dims_of, par_vec, run_kernel, takes};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;

/// Pixel norm over the channel axis of `[N, C, H, W]` (flex only; [`pixel_norm`] routes other
/// devices to Burn's operations).
#[backend_extension(Flex, Autodiff)]
pub trait PixelNormBackend: Backend {
    /// `x / √(mean_c(x²) + ε)`.
    fn pixel_norm(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
    /// The input gradient of [`pixel_norm`](Self::pixel_norm) at `x` for the output gradient `grad`.
    fn pixel_norm_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
}

/// `1/√(mean_c(x²) + ε)` for every pixel of one image `[C, P]`.
fn inverse_rms<T: Float>(x: &[T], channels: usize, pixels: usize, eps: f64) -> Vec<T> {
    let mut sum = vec![T::default(); pixels];
    for plane in x.chunks_exact(pixels) {
        for (s, &v) in sum.iter_mut().zip(plane) {
            *s += v * v;
        }
    }
    let inv_c = T::from_f64(1.0 / channels as f64);
    let eps = T::from_f64(eps);
    sum.iter()
        .map(|&s| T::ONE / (s * inv_c + eps).sqrt())
        .collect()
}

fn forward<T: Float>(x: &[T], channels: usize, pixels: usize, eps: f64) -> Vec<T> {
    let image = channels * pixels;
    par_vec(x.len(), image, |b, y| {
        let x = &x[b * image..][..image];
        let r = inverse_rms(x, channels, pixels, eps);
        for (y, x) in y.chunks_exact_mut(pixels).zip(x.chunks_exact(pixels)) {
            for ((y, &x), &r) in y.iter_mut().zip(x).zip(&r) {
                *y = x * r;
            }
        }
    })
}

fn backward<T: Float>(x: &[T], g: &[T], channels: usize, pixels: usize, eps: f64) -> Vec<T> {
    let image = channels * pixels;
    par_vec(x.len(), image, |b, dx| {
        let (x, g) = (&x[b * image..][..image], &g[b * image..][..image]);
        let r = inverse_rms(x, channels, pixels, eps);
        let mut dot = vec![T::default(); pixels];
        for (xp, gp) in x.chunks_exact(pixels).zip(g.chunks_exact(pixels)) {
            for ((d, &x), &g) in dot.iter_mut().zip(xp).zip(gp) {
                *d += x * g;
            }
        }
        let inv_c = T::from_f64(1.0 / channels as f64);
        // coefficient of x: r³·mean_c(g·x)
        let coef: Vec<T> = r
            .iter()
            .zip(&dot)
            .map(|(&r, &d)| r * r * r * d * inv_c)
            .collect();
        for ((dx, x), g) in dx
            .chunks_exact_mut(pixels)
            .zip(x.chunks_exact(pixels))
            .zip(g.chunks_exact(pixels))
        {
            for i in 0..pixels {
                dx[i] = r[i] * g[i] - x[i] * coef[i];
            }
        }
    })
}

/// Channels and pixels per channel of `[N, C, H, W]`.
fn channels_and_pixels(x: &FlexTensor) -> (usize, usize) {
    let s = x.shape();
    (s[1], s[2] * s[3])
}

impl PixelNormBackend for Flex {
    fn pixel_norm(x: FlexTensor, eps: f64) -> FlexTensor {
        let (c, p) = channels_and_pixels(&x);
        let dims = dims_of(&x);
        run_kernel(
            "pixel_norm",
            [x],
            dims,
            |[x]| forward(x, c, p, eps),
            |[x]| forward(x, c, p, eps),
        )
    }

    fn pixel_norm_backward(x: FlexTensor, grad: FlexTensor, eps: f64) -> FlexTensor {
        let (c, p) = channels_and_pixels(&x);
        let dims = dims_of(&x);
        run_kernel(
            "pixel_norm_backward",
            [x, grad],
            dims,
            |[x, g]| backward(x, g, c, p, eps),
            |[x, g]| backward(x, g, c, p, eps),
        )
    }
}

#[derive(Debug)]
struct PixelNormGrad {
    eps: f64,
}

impl<B: PixelNormBackend> Backward<B, 1> for PixelNormGrad {
    type State = B::FloatTensorPrimitive;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::pixel_norm_backward(ops.state, g, self.eps));
        }
    }
}

impl<B: PixelNormBackend, C: CheckpointStrategy> PixelNormBackend for Autodiff<B, C> {
    fn pixel_norm(x: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        let xp = x.primitive().clone();
        match (PixelNormGrad { eps })
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(xp.clone(), B::pixel_norm(xp, eps)),
            OpsKind::UnTracked(prep) => prep.finish(B::pixel_norm(xp, eps)),
        }
    }

    fn pixel_norm_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        // Backward passes call it on the inner backend; here it is a constant (not differentiated).
        let (xp, gp) = (x.primitive().clone(), grad.primitive().clone());
        <Self as AutodiffBackend>::from_inner(B::pixel_norm_backward(xp, gp, eps))
    }
}

/// Pixel norm with `eps` on flex in f32/f64; `None` otherwise.
pub fn pixel_norm(x: Tensor<4>, eps: f64) -> Option<Tensor<4>> {
    if !takes(&x) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as PixelNormBackend>::pixel_norm(x.into_dispatch(), eps),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::tensor::tensor_from_f32;
    use burn::tensor::Device;

    const EPS: f64 = 1e-8;

    fn reference(x: Tensor<4>) -> Tensor<4> {
        let norm = x.clone().square().mean_dim(1).add_scalar(EPS).sqrt(); // [n, 1, h, w]
        x / norm
    }

    #[test]
    fn forward_and_gradient_equal_burns() {
        let device = Device::flex().autodiff();
        let shape = [3, 7, 5, 4];
        let x0 = tensor_from_f32(SplitMix64::new(1).normals_f32(420), shape, &device);
        let h = tensor_from_f32(SplitMix64::new(2).normals_f32(420), shape, &device);
        let run = |fast: bool| {
            let x = x0.clone().require_grad();
            let y = if fast {
                pixel_norm(x.clone(), EPS).unwrap()
            } else {
                reference(x.clone())
            };
            let loss = (y.clone() * h.clone()).sin().sum();
            (y.inner(), x.grad(&loss.backward()).unwrap())
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        assert!((y1 - y2).abs().max().into_scalar::<f64>() < 1e-6);
        assert!((g1 - g2).abs().max().into_scalar::<f64>() < 1e-5);
    }
}
