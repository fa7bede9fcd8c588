//! The leaky ReLU and its input gradient as one backend extension, `leaky_scale(pre, g, slope) =
//! g · (1 if pre > 0 else slope)`: the activation is `leaky_scale(x, x, slope)` and its gradient
//! `leaky_scale(pre, g, slope)`. On flex it is one branch-free pass over contiguous data, split across
//! rayon's threads. On the autodiff backend only `g` receives a gradient (`leaky_scale(pre, h)`):
//! the slope is piecewise constant in `pre`.

use super::{Float, dims_of, par_vec, run_kernel, takes};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::Tensor;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// `g · (1 if pre > 0 else slope)` (flex only; [`leaky_scale`] routes other devices to Burn's
/// ops).
#[backend_extension(Flex, Autodiff)]
pub trait LeakyBackend: Backend {
    /// `grad` scaled by the leaky ReLU's slope at `pre` (same shapes, f32 or f64).
    fn leaky_scale(
        pre: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        slope: f64,
    ) -> FloatTensor<Self>;
}

/// `g · (1 if p > 0 else slope)` element by element.
fn scale_slices<T: Float>(pre: &[T], grad: &[T], slope: T, one_minus_slope: T) -> Vec<T> {
    par_vec(grad.len(), CHUNK, |i, out| {
        let pre = &pre[i * CHUNK..][..out.len()];
        let grad = &grad[i * CHUNK..][..out.len()];
        for ((o, &p), &g) in out.iter_mut().zip(pre).zip(grad) {
            // Arithmetic, not a choice between two constants: LLVM made that choice a table
            // lookup and kept the loop scalar (8.6% of a 64×64 step of the demo model).
            *o = g * (slope + one_minus_slope * T::indicator(p > T::default()));
        }
    })
}

impl LeakyBackend for Flex {
    fn leaky_scale(pre: FlexTensor, grad: FlexTensor, slope: f64) -> FlexTensor {
        let dims = dims_of(&grad);
        assert_eq!(dims_of(&pre), dims, "leaky_scale: shapes differ");
        run_kernel(
            "leaky_scale",
            [pre, grad],
            dims,
            |[p, g]| scale_slices(p, g, slope as f32, 1.0 - slope as f32),
            |[p, g]| scale_slices(p, g, slope, 1.0 - slope),
        )
    }
}

/// Backward of `leaky_scale(pre, g, slope)` given the gradient `h` of its output:
/// `dg = leaky_scale(pre, h, slope)`.
#[derive(Debug)]
struct LeakyScaleBackward {
    slope: f64,
}

impl<B: LeakyBackend> Backward<B, 2> for LeakyScaleBackward {
    type State = B::FloatTensorPrimitive;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [_, node_grad] = ops.parents;
        let h = grads.consume::<B>(&ops.node);
        if let Some(node) = node_grad {
            grads.register::<B>(node.id, B::leaky_scale(ops.state, h, self.slope));
        }
    }
}

impl<B: LeakyBackend, C: CheckpointStrategy> LeakyBackend for Autodiff<B, C> {
    fn leaky_scale(
        pre: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        slope: f64,
    ) -> FloatTensor<Self> {
        let (pp, gp) = (pre.primitive().clone(), grad.primitive().clone());
        match (LeakyScaleBackward { slope })
            .prepare::<C>([pre.node(), grad.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(pp.clone(), B::leaky_scale(pp, gp, slope)),
            OpsKind::UnTracked(prep) => prep.finish(B::leaky_scale(pp, gp, slope)),
        }
    }
}

/// `g · (1 if pre > 0 else slope)` on flex in f32 or f64; `None` otherwise (the caller then uses
/// Burn's operations).
pub fn leaky_scale<const D: usize>(
    pre: Tensor<D>,
    grad: Tensor<D>,
    slope: f64,
) -> Option<Tensor<D>> {
    if !takes(&pre) || !takes(&grad) || pre.dims() != grad.dims() {
        return None;
    }
    Some(Tensor::from_dispatch(
        <Dispatch as LeakyBackend>::leaky_scale(pre.into_dispatch(), grad.into_dispatch(), slope),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::tensor::tensor_from_f32;
    use burn::tensor::Device;
    use burn::tensor::activation::leaky_relu;

    const SLOPE: f64 = 0.2;

    fn random(n: usize, seed: u64, device: &Device) -> Tensor<2> {
        let mut values = SplitMix64::new(seed).normals_f32(n * 50_000);
        values[3] = 0.0; // the kink itself: slope 0.2, as in `lrelu_vjp`
        tensor_from_f32(values, [n, 50_000], device)
    }

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f64 {
        (a - b).abs().max().into_scalar::<f64>()
    }

    #[test]
    fn activation_and_gradients_equal_burns() {
        let device = Device::flex().autodiff();
        let x0 = random(3, 1, &device); // more elements than one chunk
        let h = random(3, 2, &device);
        let x = x0.clone().require_grad();
        let y = leaky_scale(x.clone(), x.clone(), SLOPE).expect("flex");
        assert!(max_diff(y.clone(), leaky_relu(x0.clone(), SLOPE)) == 0.0);
        let grads = (y * h.clone()).sum().backward();
        let fast = x.grad(&grads).unwrap();
        let x = x0.clone().require_grad();
        let grads = (leaky_relu(x.clone(), SLOPE) * h.clone()).sum().backward();
        let reference = x.grad(&grads).unwrap();
        // Burn's own gradient takes slope 1 at exactly 0; ours 0.2 (as `lrelu_vjp`): compare elsewhere.
        let at_zero = x0.clone().inner().equal_elem(0.0);
        let masked = |t: Tensor<2>| t.inner().mask_fill(at_zero.clone(), 0.0);
        assert!(
            max_diff(
                Tensor::from_inner(masked(fast)),
                Tensor::from_inner(masked(reference))
            ) < 1e-7
        );
    }

    #[test]
    fn scaling_a_gradient_is_linear_in_it_and_constant_in_pre() {
        let device = Device::flex().autodiff();
        let pre = random(2, 3, &device).require_grad();
        let g = random(2, 4, &device).require_grad();
        let h = random(2, 5, &device);
        let out = leaky_scale(pre.clone(), g.clone(), SLOPE).expect("flex");
        let grads = (out * h.clone()).sum().backward();
        let expected = leaky_scale(pre.clone().detach(), h, SLOPE).unwrap();
        assert!(max_diff(g.grad(&grads).unwrap(), expected.inner()) == 0.0);
        assert!(
            pre.grad(&grads)
                .is_none_or(|d| d.abs().max().into_scalar::<f64>() == 0.0)
        );
    }
}
