//! Faster kernels for Burn's CPU backend (`flex`), added through Burn's backend-extension API,
//! each with its own gradients on the autodiff backend.
//!
//! - [`conv3x3`]: the paper's 3×3 convolutions, their transpose (the input gradient, which the
//!   critic's hand-written gradient also uses) and their weight gradient. Flex lowers a
//!   convolution's weight gradient to a convolution with an H×W kernel and ran these layers at a
//!   third to a half of PyTorch's speed on the same CPU (`bench/conv.sh`). The forward
//!   convolution and its transpose go through Winograd's F(2×2, 3×3) ([`conv3x3_winograd`]) on
//!   images 8 wide and up (and on all in WebAssembly), through direct kernels on CPUs with
//!   AVX-512 where those are faster ([`conv3x3_batch_lanes`] at 4×4 and 8×8,
//!   [`conv3x3_direct`]), else through tiled matrix products ([`conv3x3_kernels`], which
//!   chooses); the weight gradient through Winograd's form on images 32 and 64 wide, else
//!   direct kernels with AVX-512 or AVX2 ([`conv3x3_direct_weight_grad`]), else matrix
//!   products.
//! - [`lrelu`]: the leaky ReLU and its input gradient as one branch-free, parallel pass
//!   (flex's `mask_where` is a serial loop with a data-dependent branch).
//! - [`pixel_norm`]: pixelwise feature normalisation and its gradient, one pass each.
//! - [`resample`]: nearest 2× upsampling and 2×2 pooling as an adjoint pair of single passes
//!   (flex's average-pool gradient and the expand/reshape upsample were ~6% of a 64×64 step).
//!
//! Only flex runs them, in f32 or f64: the public functions return `None` on every other device
//! (wgpu, CUDA, WebGPU in the browser) and float type, and the model's layers then use Burn's own
//! operations, so the model gives the same results everywhere.

pub mod conv3x3;
pub mod conv3x3_batch_lanes;
pub mod conv3x3_direct;
pub mod conv3x3_direct_weight_grad;
pub mod conv3x3_kernels;
pub mod conv3x3_winograd;
pub mod lrelu;
pub mod pixel_norm;
pub mod resample;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Device, Tensor, TensorData};
use core::mem::MaybeUninit;
use rayon::prelude::*;

/// The element types the kernels run on, f32 and f64, with what the kernels need of them.
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + 'static
    + core::ops::Add<Output = Self>
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::Div<Output = Self>
    + core::ops::AddAssign
{
    /// 1 in this type.
    const ONE: Self;
    /// `v` rounded to this type.
    fn from_f64(v: f64) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// 1 if `b`, else 0 (arithmetic the compiler vectorises, where a choice between two
    /// constants may become a table lookup).
    fn indicator(b: bool) -> Self;
    /// Runs `f` on a buffer of `len` values kept by this thread between calls, so a kernel's
    /// working block costs no allocation, zero fill or fresh pages per call. Its contents on
    /// entry are whatever the last user left: `f` must write before it reads.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// This value rounded to f32.
    fn to_f32(self) -> f32;
    /// `values` as f32, if this type is f32: the kernels that exist in f32 only
    /// ([`conv3x3_direct`]) are reached through it.
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    /// f32 values as this type, if it is f32.
    fn from_f32(values: Vec<f32>) -> Option<Vec<Self>>;
}

macro_rules! impl_float {
    ($t:ty, $as_f32:expr, $from_f32:expr) => {
        impl Float for $t {
            const ONE: Self = 1.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn indicator(b: bool) -> Self {
                <$t>::from(u8::from(b))
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                thread_local! {
                    static SCRATCH: core::cell::Cell<Vec<$t>> = const { core::cell::Cell::new(Vec::new()) };
                }
                // Taken out while in use, so a nested call on this thread gets a buffer of its own.
                let mut buffer = SCRATCH.take();
                if buffer.len() < len {
                    buffer.resize(len, 0.0);
                }
                let result = f(&mut buffer[..len]);
                SCRATCH.set(buffer);
                result
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn as_f32(values: &[Self]) -> Option<&[f32]> {
                $as_f32(values)
            }
            fn from_f32(values: Vec<f32>) -> Option<Vec<Self>> {
                $from_f32(values)
            }
        }
    };
}
impl_float!(f32, Some, Some);
impl_float!(f64, |_| None, |_| None);

/// A vector of `len` values written on rayon's threads, chunk by chunk: `fill(i, chunk)` writes
/// chunk `i` (values `i·chunk_len..`, the last chunk possibly shorter), which the same thread has
/// just zeroed, so the zeros are still in its cache. `vec![0; len]` would zero all of it on the
/// calling thread first, a serial pass over memory that mimalloc reuses (so it is a real fill):
/// the largest item of the trainer's main thread at 128×128, while the other cores waited.
fn par_vec<T: Float>(
    len: usize,
    chunk_len: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk_len.max(1))
        .enumerate()
        .for_each(|(i, chunk)| {
            chunk.fill(MaybeUninit::new(T::default()));
            // SAFETY: every element of `chunk` was written just above; `MaybeUninit<T>` has `T`'s
            // layout.
            let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) };
            fill(i, chunk);
        });
    // SAFETY: the chunks cover `0..len`, and each was initialised above.
    unsafe { out.set_len(len) };
    out
}

/// Whether `device` runs these kernels (flex, with or without autodiff).
pub fn runs_on(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Whether the kernels take `t`: on flex, in f32 or f64.
fn takes<const D: usize>(t: &Tensor<D>) -> bool {
    runs_on(&t.device()) && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Runs the f32 or the f64 version of a kernel on the contiguous data of `inputs` (all of one
/// float type) and wraps its result as a tensor of `shape`. `op` names the operation in the panic
/// for other types, which the public functions never pass.
fn run_kernel<const N: usize>(
    op: &str,
    inputs: [FlexTensor; N],
    shape: Vec<usize>,
    f32_kernel: impl FnOnce([&[f32]; N]) -> Vec<f32>,
    f64_kernel: impl FnOnce([&[f64]; N]) -> Vec<f64>,
) -> FlexTensor {
    let inputs = inputs.map(|t| t.to_contiguous());
    let dtypes = inputs.each_ref().map(|t| t.dtype());
    if dtypes.iter().all(|d| *d == DType::F32) {
        FlexTensor::from_data(TensorData::new(
            f32_kernel(inputs.each_ref().map(|t| t.storage::<f32>())),
            shape,
        ))
    } else if dtypes.iter().all(|d| *d == DType::F64) {
        FlexTensor::from_data(TensorData::new(
            f64_kernel(inputs.each_ref().map(|t| t.storage::<f64>())),
            shape,
        ))
    } else {
        panic!("{op}: float types {dtypes:?} (only f32 or f64, all alike, reach it)")
    }
}

/// The dimensions of a flex tensor.
fn dims_of(t: &FlexTensor) -> Vec<usize> {
    t.shape().to_vec()
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
