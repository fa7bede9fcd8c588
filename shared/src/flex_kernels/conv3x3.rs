//! The 3×3 "same" convolution as a backend extension: the convolution, its transpose (input
//! gradient) and its weight gradient, computed on flex by [`conv3x3_kernels`]. On the autodiff
//! backend the convolution and its transpose record their own backward passes, each made of the
//! other two operations, so the gradient penalty's graph (a transpose of a convolution's
//! gradient) is differentiated by the same kernels.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{ConvOptions, ConvTransposeOptions};
use burn::backend::tensor::FloatTensor;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::module::{conv2d, conv_transpose2d};
use burn::tensor::{DType, Tensor, TensorData};

use super::conv3x3_kernels::{self as kernels, Conv3x3Shape};
use super::runs_on;

fn same_padding() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

fn same_padding_transpose() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([1, 1], [1, 1], [0, 0], [1, 1], 1)
}

/// `weight · scale` (for the default implementations on other backends).
fn scaled<B: Backend>(weight: FloatTensor<B>, scale: f64) -> FloatTensor<B> {
    B::float_mul_scalar(weight, scale.into())
}

/// The three operations with the equalised-learning-rate constant `scale` applied to the weight
/// inside the product (so the scaled weight is never stored), and Burn's own convolutions as the
/// default for any backend.
#[backend_extension(Flex, Autodiff)]
pub trait Conv3x3Backend: Backend {
    /// `conv(x, w·scale)` with padding 1: `[B, C_in, H, W]`, `[C_out, C_in, 3, 3]` →
    /// `[B, C_out, H, W]`.
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        Self::conv2d(x, scaled::<Self>(weight, scale), None, same_padding())
    }

    /// The input gradient of [`conv3x3`](Self::conv3x3): `[B, C_out, H, W]` → `[B, C_in, H, W]`.
    fn conv3x3_transpose(grad: FloatTensor<Self>, weight: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        Self::conv_transpose2d(grad, scaled::<Self>(weight, scale), None, same_padding_transpose())
    }

    /// The gradient of [`conv3x3`](Self::conv3x3) with respect to `weight`, for input `x` and
    /// output gradient `grad` (`scale` times the gradient with respect to the scaled weight).
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        scaled::<Self>(Self::conv2d_weight_backward(x, weight, grad, same_padding()), scale)
    }
}

/// Sizes from an input `[B, C_in, H, W]` and a weight `[C_out, C_in, 3, 3]`.
fn shape_of(input: &FlexTensor, weight: &FlexTensor) -> Conv3x3Shape {
    let x = input.shape();
    let w = weight.shape();
    Conv3x3Shape { batch: x[0], c_in: w[1], c_out: w[0], height: x[2], width: x[3] }
}

/// Runs a kernel on the contiguous data of flex tensors in their float type.
fn run_flex(
    a: FlexTensor,
    b: FlexTensor,
    out_shape: [usize; 4],
    f32_kernel: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> FlexTensor {
    let (a, b) = (a.to_contiguous(), b.to_contiguous());
    match (a.dtype(), b.dtype()) {
        (DType::F32, DType::F32) => {
            FlexTensor::from_data(TensorData::new(f32_kernel(a.storage(), b.storage()), out_shape))
        }
        (DType::F64, DType::F64) => {
            FlexTensor::from_data(TensorData::new(f64_kernel(a.storage(), b.storage()), out_shape))
        }
        (x, w) => panic!("conv3x3: float types {x:?} and {w:?} (only f32 or f64 reach it)"),
    }
}

impl Conv3x3Backend for Flex {
    fn conv3x3(x: FlexTensor, weight: FlexTensor, scale: f64) -> FlexTensor {
        let s = shape_of(&x, &weight);
        run_flex(
            x,
            weight,
            [s.batch, s.c_out, s.height, s.width],
            |x, w| kernels::conv3x3(x, w, scale as f32, s),
            |x, w| kernels::conv3x3(x, w, scale, s),
        )
    }

    fn conv3x3_transpose(grad: FlexTensor, weight: FlexTensor, scale: f64) -> FlexTensor {
        let g = grad.shape();
        let w = weight.shape();
        let s = Conv3x3Shape { batch: g[0], c_in: w[1], c_out: w[0], height: g[2], width: g[3] };
        run_flex(
            grad,
            weight,
            [s.batch, s.c_in, s.height, s.width],
            |g, w| kernels::conv3x3_transpose(g, w, scale as f32, s),
            |g, w| kernels::conv3x3_transpose(g, w, scale, s),
        )
    }

    fn conv3x3_weight_grad(x: FlexTensor, grad: FlexTensor, weight: FlexTensor, scale: f64) -> FlexTensor {
        let s = shape_of(&x, &weight);
        run_flex(
            x,
            grad,
            [s.c_out, s.c_in, 3, 3],
            |x, g| kernels::conv3x3_weight_grad(x, g, scale as f32, s),
            |x, g| kernels::conv3x3_weight_grad(x, g, scale, s),
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
            grads.register::<B>(node.id, B::conv3x3_transpose(grad.clone(), weight.clone(), scale));
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
        match Conv3x3Backward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((xp.clone(), wp.clone(), scale), B::conv3x3(xp, wp, scale)),
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(xp, wp, scale)),
        }
    }

    fn conv3x3_transpose(grad: FloatTensor<Self>, weight: FloatTensor<Self>, scale: f64) -> FloatTensor<Self> {
        let (gp, wp) = (grad.primitive().clone(), weight.primitive().clone());
        match Conv3x3TransposeBackward.prepare::<C>([grad.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((gp.clone(), wp.clone(), scale), B::conv3x3_transpose(gp, wp, scale)),
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3_transpose(gp, wp, scale)),
        }
    }
}

fn supported(x: &Tensor<4>, weight: &Tensor<4>) -> bool {
    let float = |t: &Tensor<4>| matches!(t.dtype(), DType::F32 | DType::F64);
    runs_on(&x.device()) && float(x) && x.dtype() == weight.dtype() && weight.dims()[2..] == [3, 3]
}

/// `conv(x, w·scale)` with padding 1 and no bias: the fast kernels on flex (f32/f64), Burn's
/// convolution elsewhere.
pub fn conv3x3(x: Tensor<4>, weight: Tensor<4>, scale: f64) -> Tensor<4> {
    if !supported(&x, &weight) {
        return conv2d(x, weight.mul_scalar(scale), None, same_padding());
    }
    Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(x.into_dispatch(), weight.into_dispatch(), scale))
}

/// The input gradient of [`conv3x3`]: a transposed convolution with the same scaled weight.
pub fn conv3x3_transpose(grad: Tensor<4>, weight: Tensor<4>, scale: f64) -> Tensor<4> {
    if !supported(&grad, &weight) {
        return conv_transpose2d(grad, weight.mul_scalar(scale), None, same_padding_transpose());
    }
    Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3_transpose(
        grad.into_dispatch(),
        weight.into_dispatch(),
        scale,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::{tensor_from_f32, tensor_to_f32};
    use crate::rng::SplitMix64;
    use burn::tensor::{Device, Distribution};

    fn close(a: Tensor<4>, b: Tensor<4>, tolerance: f64) {
        assert_eq!(a.dims(), b.dims());
        let scale = b.clone().abs().max().into_scalar::<f64>().max(1.0);
        let diff = (a - b).abs().max().into_scalar::<f64>();
        assert!(diff <= tolerance * scale, "max difference {diff} (scale {scale})");
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
        close(conv3x3(x.clone(), w.clone(), 0.3), conv2d(x, w.clone().mul_scalar(0.3), None, same_padding()), 1e-5);
        close(conv3x3_transpose(g.clone(), w.clone(), 0.3), conv_transpose2d(g, w.mul_scalar(0.3), None, same_padding_transpose()), 1e-5);
        let y = tensor_to_f32(conv3x3(Tensor::random([2, 3, 4, 4], Distribution::Default, &device), random([2, 3, 3, 3], 4, &device), 1.0));
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
                (conv3x3(x.clone(), w.clone(), 0.3), conv3x3_transpose(h.clone(), w.clone(), 0.3))
            } else {
                (
                    conv2d(x.clone(), w.clone().mul_scalar(0.3), None, same_padding()),
                    conv_transpose2d(h.clone(), w.clone().mul_scalar(0.3), None, same_padding_transpose()),
                )
            };
            // A loss with both operations and a product of them, so every backward path runs.
            let loss = y.clone().square().sum() + (t.clone() * x.clone()).sum() + (y * h.clone()).sin().sum();
            let grads = loss.backward();
            [x.grad(&grads).unwrap(), w.grad(&grads).unwrap(), h.grad(&grads).unwrap()]
        };
        let (fast, reference) = (gradients(true), gradients(false));
        for (a, b) in fast.into_iter().zip(reference) {
            close(a, b, 1e-5);
        }
    }
}
