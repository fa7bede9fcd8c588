//! Small tensor helpers used across the crates: `f32` data in and out of tensors, and the linear
//! blend of the fade-in.

use burn::tensor::{Device, Tensor, TensorData};

/// A float tensor from `f32` values, in the device's default float type.
pub fn tensor_from_f32<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Reads a tensor back as `f32` values, whatever its float type.
pub fn tensor_to_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor data")
}

/// `a + (b − a)·t`.
pub fn lerp<const D: usize>(a: Tensor<D>, b: Tensor<D>, t: f64) -> Tensor<D> {
    a.clone() + (b - a).mul_scalar(t)
}
