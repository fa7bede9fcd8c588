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
//!
//! Only flex runs them: the public functions fall back to Burn's own operations on every other
//! device (wgpu, CUDA, the browser), so the model gives the same results everywhere.

pub mod conv3x3;
pub mod conv3x3_kernels;
pub mod lrelu;

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
