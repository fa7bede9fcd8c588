//! The 3×3 "same" convolution as a backend extension: the convolution, its transpose (input
//! gradient) and its weight gradient, computed on flex by [`conv3x3_kernels`]. On the autodiff
//! backend the convolution and its transpose record their own backward passes, each made of the
//! other two operations, so the gradient penalty's graph (a transpose of a convolution's
//! gradient) is differentiated by the same kernels.

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

use super::conv3x3_kernels::{self as kernels, Conv3x3Shape};
use super::{run_kernel, takes};

/// The three operations, with the equalised-learning-rate constant `scale` applied to the weight
/// inside the product (so the scaled weight is never stored).
#[backend_extension(Flex, Autodiff)]
pub trait Conv3x3Backend: Backend {
    /// `conv(x, w·scale)` with padding 1: `[B, C_in, H, W]`, `[C_out, C_in, 3, 3]` →
    /// `[B, C_out, H, W]`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, scale: f64) -> FloatTensor<Self>;

    /// The input gradient of [`conv3x3`](Self::conv3x3): `[B, C_out, H, W]` → `[B, C_in, H, W]`.
    fn conv3x3_transpose(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;

    /// The gradient of [`conv3x3`](Self::conv3x3) with respect to `weight`, for input `x` and
    /// output gradient `grad` (`scale` times the gradient with respect to the scaled weight);
    /// `weight` gives only its shape.
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
}

/// Sizes from a batch `[B, ·, H, W]` (the input or the output gradient) and a weight
/// `[C_out, C_in, 3, 3]`.
fn shape_of(batch: &FlexTensor, weight: &FlexTensor) -> Conv3x3Shape {
    let x = batch.shape();
    let w = weight.shape();
    Conv3x3Shape {
        batch: x[0],
        c_in: w[1],
        c_out: w[0],
        height: x[2],
        width: x[3],
    }
}

impl Conv3x3Backend for Flex {
    fn conv3x3(x: FlexTensor, weight: FlexTensor, scale: f64) -> FlexTensor {
        let s = shape_of(&x, &weight);
        run_kernel(
            "conv3x3",
            [x, weight],
            vec![s.batch, s.c_out, s.height, s.width],
            |[x, w]| kernels::conv3x3(x, w, scale as f32, s),
            |[x, w]| kernels::conv3x3(x, w, scale, s),
        )
    }

    fn conv3x3_transpose(grad: FlexTensor, weight: FlexTensor, scale: f64) -> FlexTensor {
        let s = shape_of(&grad, &weight);
        run_kernel(
            "conv3x3_transpose",
            [grad, weight],
            vec![s.batch, s.c_in, s.height, s.width],
            |[g, w]| kernels::conv3x3_transpose(g, w, scale as f32, s),
            |[g, w]| kernels::conv3x3_transpose(g, w, scale, s),
        )
    }

    fn conv3x3_weight_grad(
        x: FlexTensor,
        grad: FlexTensor,
        weight: FlexTensor,
        scale: f64,
    ) -> FlexTensor {
        let s = shape_of(&x, &weight);
        run_kernel(
            "conv3x3_weight_grad",
            [x, grad],
            vec![s.c_out, s.c_in, 3, 3],
            |[x, g]| kernels::conv3x3_weight_grad(x, g, scale as f32, s),
            |[x, g]| kernels::conv3x3_weight_grad(x, g, scale, s),
        )
    }
}

/// Backward of `y = conv3x3(x, w, s)`: `dx = conv3x3_transpose(g, w, s)`,
/// `dw = weight_grad(x, g, s)`.
#[derive(Debug)]
struct Conv3x3Backward;

impl<B: Conv3x3Backend> Backward<B, 2> for Conv3x3Backward {
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, scale) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(
                node.id,
                B::conv3x3_transpose(grad.clone(), weight.clone(), scale),
            );
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::conv3x3_weight_grad(x, grad, weight, scale));
        }
    }
}

/// Backward of `y = conv3x3_transpose(g, w, s)`, given the gradient `h` of `y`:
/// `dg = conv3x3(h, w, s)` and `dw = weight_grad(h, g, s)` (⟨h, Tᵀ(g, w)⟩ = ⟨conv(h, w), g⟩).
#[derive(Debug)]
struct Conv3x3TransposeBackward;

impl<B: Conv3x3Backend> Backward<B, 2> for Conv3x3TransposeBackward {
    type State = (B::FloatTensorPrimitive, B::FloatTensorPrimitive, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_g, node_w] = ops.parents;
        let h = grads.consume::<B>(&ops.node);
        let (g, weight, scale) = ops.state;
        if let Some(node) = node_g {
            grads.register::<B>(node.id, B::conv3x3(h.clone(), weight.clone(), scale));
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::conv3x3_weight_grad(h, g, weight, scale));
        }
    }
}

impl<B: Conv3x3Backend, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive().clone(), weight.primitive().clone());
        match Conv3x3Backward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((xp.clone(), wp.clone(), scale), B::conv3x3(xp, wp, scale))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(xp, wp, scale)),
        }
    }

    fn conv3x3_transpose(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let (gp, wp) = (grad.primitive().clone(), weight.primitive().clone());
        match Conv3x3TransposeBackward
            .prepare::<C>([grad.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                (gp.clone(), wp.clone(), scale),
                B::conv3x3_transpose(gp, wp, scale),
            ),
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3_transpose(gp, wp, scale)),
        }
    }

    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        // Backward passes call it on the inner backend; here it is a constant (not differentiated).
        let (xp, gp, wp) = (
            x.primitive().clone(),
            grad.primitive().clone(),
            weight.primitive().clone(),
        );
        <Self as AutodiffBackend>::from_inner(B::conv3x3_weight_grad(xp, gp, wp, scale))
    }
}

fn takes_both(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
    takes(x) && x.dtype() == weight.dtype() && weight.dims()[2..] == [3, 3]
}

/// `conv(x, w·scale)` with padding 1 and no bias on flex in f32/f64; `None` otherwise (the caller
/// then uses Burn's convolution).
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, scale: f64) -> Option<Tensor<4>> {
    if !takes_both(&x, &weight) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as Conv3x3Backend>::conv3x3(x.into_dispatch(), weight.into_dispatch(), scale),
    ))
}

/// The input gradient of [`conv3x3`]: a transposed convolution with the same scaled weight, on
/// flex in f32/f64; `None` otherwise.
pub fn conv3x3_transpose(grad: Tensor<4>, weight: Tensor<4>, scale: f64) -> Option<Tensor<4>> {
    if !takes_both(&grad, &weight) {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as Conv3x3Backend>::conv3x3_transpose(
            grad.into_dispatch(),
            weight.into_dispatch(),
            scale,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::tensor::{tensor_from_f32, tensor_to_f32};
    use burn::tensor::module::{conv_transpose2d, conv2d};
    use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
    use burn::tensor::{Device, Distribution};

    fn same_padding() -> ConvOptions<2> {
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
    }

    fn same_padding_transpose() -> ConvTransposeOptions<2> {
        ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1)
    }

    fn close(a: Tensor<4>, b: Tensor<4>, tolerance: f64) {
        assert_eq!(a.dims(), b.dims());
        let scale = b.clone().abs().max().into_scalar::<f64>().max(1.0);
        let diff = (a - b).abs().max().into_scalar::<f64>();
        assert!(
            diff <= tolerance * scale,
            "max difference {diff} (scale {scale})"
        );
    }

    fn random(shape: [usize; 4], seed: u64, device: &Device) -> Tensor<4> {
        let n = shape.iter().product();
        tensor_from_f32(SplitMix64::new(seed).normals_f32(n), shape, device)
    }

    /// The forward and the transpose equal Burn's `conv2d` and `conv_transpose2d`.
    #[test]
    fn forward_and_transpose_equal_burns_convolutions() {
        let device = Device::flex();
        let x = random([3, 5, 9, 6], 1, &device);
        let w = random([4, 5, 3, 3], 2, &device);
        let g = random([3, 4, 9, 6], 3, &device);
        close(
            conv3x3(x.clone(), w.clone(), 0.3).unwrap(),
            conv2d(x, w.clone().mul_scalar(0.3), None, same_padding()),
            1e-5,
        );
        close(
            conv3x3_transpose(g.clone(), w.clone(), 0.3).unwrap(),
            conv_transpose2d(g, w.mul_scalar(0.3), None, same_padding_transpose()),
            1e-5,
        );
        let y = tensor_to_f32(
            conv3x3(
                Tensor::random([2, 3, 4, 4], Distribution::Default, &device),
                random([2, 3, 3, 3], 4, &device),
                1.0,
            )
            .unwrap(),
        );
        assert!(y.iter().all(|v| v.is_finite()));
    }

    /// On the autodiff backend, gradients of a loss through the convolution and through its
    /// transpose — and through a transpose of a convolution's gradient, as in the gradient
    /// penalty — equal the gradients Burn computes through its own convolutions.
    #[test]
    fn autodiff_gradients_equal_burns() {
        let device = Device::flex().autodiff();
        let x0 = random([2, 3, 7, 5], 5, &device);
        let w0 = random([4, 3, 3, 3], 6, &device);
        let h0 = random([2, 4, 7, 5], 7, &device);
        let gradients = |fast: bool| {
            let x = x0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let h = h0.clone().detach().require_grad();
            let (y, t) = if fast {
                (
                    conv3x3(x.clone(), w.clone(), 0.3).unwrap(),
                    conv3x3_transpose(h.clone(), w.clone(), 0.3).unwrap(),
                )
            } else {
                (
                    conv2d(x.clone(), w.clone().mul_scalar(0.3), None, same_padding()),
                    conv_transpose2d(
                        h.clone(),
                        w.clone().mul_scalar(0.3),
                        None,
                        same_padding_transpose(),
                    ),
                )
            };
            // A loss with both operations and a product of them, so every backward path runs.
            let loss = y.clone().square().sum()
                + (t.clone() * x.clone()).sum()
                + (y * h.clone()).sin().sum();
            let grads = loss.backward();
            [
                x.grad(&grads).unwrap(),
                w.grad(&grads).unwrap(),
                h.grad(&grads).unwrap(),
            ]
        };
        let (fast, reference) = (gradients(true), gradients(false));
        for (a, b) in fast.into_iter().zip(reference) {
            close(a, b, 1e-5);
        }
    }
}
