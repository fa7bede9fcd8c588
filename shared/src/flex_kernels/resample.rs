//! Nearest 2× upsampling and 2×2 block pooling as one pair of backend extensions, each the
//! other's adjoint: `upsample2x(x, s)` copies `s·x` into every pixel of a 2×2 block, and
//! `pool2x(x, s)` is `s` times the sum of each 2×2 block. The paper's downscale is `pool2x(x, ¼)`,
//! its input gradient `upsample2x(g, ¼)`; the generator's upscale is `upsample2x(x, 1)`. On flex
//! both are single passes over each image plane, split across rayon's threads; on the autodiff
//! backend the backward of each is the other with the same scale.

use super::{Float, par_vec, run_kernel, takes};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::Tensor;

/// The pair of resampling operations (flex only; the public functions route other devices to
/// Burn's operations).
#[backend_extension(Flex, Autodiff)]
pub trait ResampleBackend: Backend {
    /// `[N, C, H, W]` → `[N, C, 2H, 2W]`, each pixel `scale·x` repeated over its 2×2 block.
    fn upsample2x(x: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
    /// `[N, C, 2H, 2W]` → `[N, C, H, W]`, `scale` times each 2×2 block's sum.
    fn pool2x(x: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;
}

fn upsample_planes<T: Float>(x: &[T], h: usize, w: usize, scale: T) -> Vec<T> {
    par_vec(x.len() * 4, 4 * h * w, |plane, dst| {
        let src = &x[plane * h * w..][..h * w];
        for (y, row) in src.chunks_exact(w).enumerate() {
            let (top, bottom) = dst[2 * y * 2 * w..(2 * y + 2) * 2 * w].split_at_mut(2 * w);
            for (x, &v) in row.iter().enumerate() {
                let v = v * scale;
                top[2 * x] = v;
                top[2 * x + 1] = v;
            }
            bottom.copy_from_slice(top);
        }
    })
}

fn pool_planes<T: Float>(x: &[T], h: usize, w: usize, scale: T) -> Vec<T> {
    // h, w: the output's size.
    par_vec(x.len() / 4, h * w, |plane, dst| {
        let src = &x[plane * 4 * h * w..][..4 * h * w];
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let top = &src[2 * y * 2 * w..][..2 * w];
            let bottom = &src[(2 * y + 1) * 2 * w..][..2 * w];
            for (x, o) in row.iter_mut().enumerate() {
                *o = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) * scale;
            }
        }
    })
}

fn resample_flex(x: FlexTensor, scale: f64, up: bool) -> FlexTensor {
    let s = x.shape();
    let [n, c, h, w] = [s[0], s[1], s[2], s[3]];
    let (oh, ow) = if up { (2 * h, 2 * w) } else { (h / 2, w / 2) };
    run_kernel(
        if up { "upsample2x" } else { "pool2x" },
        [x],
        vec![n, c, oh, ow],
        |[x]| {
            if up {
                upsample_planes(x, h, w, scale as f32)
            } else {
                pool_planes(x, oh, ow, scale as f32)
            }
        },
        |[x]| {
            if up {
                upsample_planes(x, h, w, scale)
            } else {
                pool_planes(x, oh, ow, scale)
            }
        },
    )
}

impl ResampleBackend for Flex {
    fn upsample2x(x: FlexTensor, scale: f64) -> FlexTensor {
        resample_flex(x, scale, true)
    }

    fn pool2x(x: FlexTensor, scale: f64) -> FlexTensor {
        resample_flex(x, scale, false)
    }
}

/// Backward of `upsample2x(x, s)`: `pool2x(g, s)`.
#[derive(Debug)]
struct UpsampleBackward;

impl<B: ResampleBackend> Backward<B, 1> for UpsampleBackward {
    type State = f64;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::pool2x(g, ops.state));
        }
    }
}

/// Backward of `pool2x(x, s)`: `upsample2x(g, s)`.
#[derive(Debug)]
struct PoolBackward;

impl<B: ResampleBackend> Backward<B, 1> for PoolBackward {
    type State = f64;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::upsample2x(g, ops.state));
        }
    }
}

impl<B: ResampleBackend, C: CheckpointStrategy> ResampleBackend for Autodiff<B, C> {
    fn upsample2x(x: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let xp = x.primitive().clone();
        match UpsampleBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(scale, B::upsample2x(xp, scale)),
            OpsKind::UnTracked(prep) => prep.finish(B::upsample2x(xp, scale)),
        }
    }

    fn pool2x(x: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let xp = x.primitive().clone();
        match PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(scale, B::pool2x(xp, scale)),
            OpsKind::UnTracked(prep) => prep.finish(B::pool2x(xp, scale)),
        }
    }
}

/// `[N, C, H, W]` → `[N, C, 2H, 2W]` with each pixel `scale·x` over its 2×2 block, on flex in
/// f32/f64; `None` otherwise.
pub fn upsample2x(x: Tensor<4>, scale: f64) -> Option<Tensor<4>> {
    if !takes(&x) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as ResampleBackend>::upsample2x(x.into_dispatch(), scale),
    ))
}

/// `scale` times the sum of each 2×2 block, on flex in f32/f64 with even sides; `None` otherwise.
pub fn pool2x(x: Tensor<4>, scale: f64) -> Option<Tensor<4>> {
    let [_, _, h, w] = x.dims();
    if !takes(&x) || h % 2 != 0 || w % 2 != 0 {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as ResampleBackend>::pool2x(x.into_dispatch(), scale),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::tensor::tensor_from_f32;
    use burn::tensor::Device;
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::ops::AvgPoolOptions;

    fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        tensor_from_f32(
            SplitMix64::new(seed).normals_f32(shape.iter().product()),
            shape,
            device,
        )
    }

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar::<f64>()
    }

    fn burn_upsample(x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        x.reshape([n, c, h, 1, w, 1])
            .expand([n, c, h, 2, w, 2])
            .reshape([n, c, 2 * h, 2 * w])
    }

    #[test]
    fn both_equal_burns_operations() {
        let device = Device::flex();
        let x = random([3, 5, 6, 10], 1, &device);
        assert!(
            max_diff(
                pool2x(x.clone(), 0.25).unwrap(),
                avg_pool2d(x.clone(), AvgPoolOptions::new([2, 2]))
            ) < 1e-6
        );
        assert!(
            max_diff(
                upsample2x(x.clone(), 1.0).unwrap(),
                burn_upsample(x.clone())
            ) == 0.0
        );
        assert!(
            max_diff(
                upsample2x(x.clone(), 0.25).unwrap(),
                burn_upsample(x.clone()).mul_scalar(0.25)
            ) == 0.0
        );
        assert!(
            pool2x(random([1, 1, 3, 4], 2, &device), 1.0).is_none(),
            "odd sides go to Burn's ops"
        );
    }

    #[test]
    fn gradients_equal_burns() {
        let device = Device::flex().autodiff();
        let x0 = random([2, 3, 8, 6], 3, &device);
        let h_up = random([2, 3, 16, 12], 4, &device);
        let h_pool = random([2, 3, 4, 3], 5, &device);
        let grads_of = |fast: bool| {
            let x = x0.clone().require_grad();
            let (up, pooled) = if fast {
                (
                    upsample2x(x.clone(), 1.0).unwrap(),
                    pool2x(x.clone(), 0.25).unwrap(),
                )
            } else {
                (
                    burn_upsample(x.clone()),
                    avg_pool2d(x.clone(), AvgPoolOptions::new([2, 2])),
                )
            };
            // A pool of an upsample too, as in the critic's input gradient.
            let twice = if fast {
                pool2x(up.clone(), 0.25).unwrap()
            } else {
                avg_pool2d(up.clone(), AvgPoolOptions::new([2, 2]))
            };
            let loss = (up * h_up.clone()).sin().sum()
                + (pooled * h_pool.clone()).sum()
                + twice.square().sum();
            x.grad(&loss.backward()).unwrap()
        };
        assert!(max_diff(grads_of(true), grads_of(false)) < 1e-5);
    }
}
