//! The paper's metrics: multi-scale sliced Wasserstein distance (section 5) and MS-SSIM, with
//! the official procedures (`metrics/sliced_wasserstein.py`, `metrics/ms_ssim.py`).
//!
//! Both take images as one `[n, r, r, 3]` `u8` array, like the pack stores them.

pub mod ms_ssim;
pub mod swd;

/// A set of square RGB images, `[n, r, r, 3]` bytes.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Side in pixels.
    pub resolution: usize,
    /// Pixels, image after image, row-major, RGB interleaved.
    pub data: Vec<u8>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.data.len() / (self.resolution * self.resolution * 3).max(1)
    }

    /// Image `i` as `[r, r, 3]` bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.resolution * self.resolution * 3;
        &self.data[i * size..(i + 1) * size]
    }

    /// The first `n` images.
    pub fn take(mut self, n: usize) -> Self {
        self.data
            .truncate(n * self.resolution * self.resolution * 3);
        self
    }

    /// Which of `len` images [`Self::sample`] draws: `n` without replacement (seeded), or all of
    /// them in order if there are no more than `n`.
    pub fn sample_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        if n < len {
            pggan_model::SplitMix64::derive(seed, "sample").shuffle(&mut order);
            order.truncate(n);
        }
        order
    }

    /// `n` images drawn without replacement (seeded), or all of them if there are fewer.
    pub fn sample(self, n: usize, seed: u64) -> Self {
        if n >= self.len() {
            return self;
        }
        let data = Self::sample_indices(self.len(), n, seed)
            .iter()
            .flat_map(|&i| self.image(i).to_vec())
            .collect();
        Self {
            resolution: self.resolution,
            data,
        }
    }

    /// Image `i` as three `f32` planes (`[3, r, r]`) in 0…255.
    pub fn planes(&self, i: usize) -> Vec<f32> {
        let r2 = self.resolution * self.resolution;
        let img = self.image(i);
        let mut out = vec![0f32; 3 * r2];
        for p in 0..r2 {
            for c in 0..3 {
                out[c * r2 + p] = img[p * 3 + c] as f32;
            }
        }
        out
    }
}
