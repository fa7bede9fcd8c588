//! Faster kernels for Burn's CPU backend (`flex`), added through Burn's backend-extension API,
//! each with its own gradients on the autodiff backend.
//!
//! - [`conv3x3`]: the paper's 3×3 convolutions, their transpose (the input gradient, which the
//!   critic's hand-written gradient also uses) and their weight gradient, as tiled matrix
//!   products ([`conv3x3_kernels`]). Flex lowers a convolution's weight gradient to a
//!   convolution with an H×W kernel and ran these layers at a third to a half of PyTorch's speed
//!   on the same CPU (`bench/conv.sh`).
//! - [`lrelu`]: the leaky ReLU and its input gradient as one branch-free, parallel pass
//!   (flex's `mask_where` is a serial loop with a data-dependent branch).
//! - [`pixel_norm`]: pixelwise feature normalisation and its gradient, one pass each.
//! - [`resample`]: nearest 2× upsampling and 2×2 pooling as an adjoint pair of single passes
//!   (flex's average-pool gradient and the expand/reshape upsample were ~6% of a 64×64 step).
//!
//! Only flex runs them: the public functions fall back to Burn's own operations on every other
//! device (wgpu, CUDA, the browser), so the model gives the same results everywhere.

pub mod conv3x3;
pub mod conv3x3_kernels;
pub mod lrelu;
pub mod pixel_norm;
pub mod resample;

use burn::tensor::Device;

/// Whether `device` runs these kernels (flex, with or without autodiff).
pub fn runs_on(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_flex_with_or_without_autodiff() {
        assert!(runs_on(&Device::flex()));
        assert!(runs_on(&Device::flex().autodiff()));
    }
}
