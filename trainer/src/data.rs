//! Minibatches of reals: epoch-wise shuffled order, mirror augmentation, and the cross-fade that
//! matches the generator's output while a level fades in.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use pggan_model::SplitMix64;
use pggan_model::layers::{downsample2x, upsample2x};
use pggan_model::tensor::{lerp, tensor_from_f32};
use serde::{Deserialize, Serialize};

use crate::pack::{Pack, Split};

/// Position in the data order: which epoch, and how far into it. The order of epoch `e` is a
/// fixed shuffle derived from the run seed and `e`, so this is all a checkpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DataCursor {
    /// Epoch number.
    pub epoch: u64,
    /// Images of that epoch already used.
    pub position: usize,
}

/// Draws minibatches of training images from a pack.
pub struct RealSampler {
    pack: Pack,
    seed: u64,
    /// Where the next batch starts.
    pub cursor: DataCursor,
    /// Random horizontal flips.
    pub mirror_rng: SplitMix64,
    mirror: bool,
    order: Vec<u32>,
    order_epoch: Option<u64>,
    level_res: usize,
    level_bytes: Vec<u8>,
}

impl RealSampler {
    /// A sampler over the training split of `pack`.
    pub fn new(
        pack: Pack,
        seed: u64,
        cursor: DataCursor,
        mirror_rng: SplitMix64,
        mirror: bool,
    ) -> Self {
        Self {
            pack,
            seed,
            cursor,
            mirror_rng,
            mirror,
            order: Vec::new(),
            order_epoch: None,
            level_res: 0,
            level_bytes: Vec::new(),
        }
    }

    /// Number of training images.
    pub fn len(&self) -> usize {
        self.pack.count(Split::Train)
    }

    fn ensure_order(&mut self) {
        if self.order_epoch != Some(self.cursor.epoch) {
            self.order = (0..self.len() as u32).collect();
            SplitMix64::derive(
                self.seed ^ self.cursor.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                "epoch",
            )
            .shuffle(&mut self.order);
            self.order_epoch = Some(self.cursor.epoch);
        }
    }

    /// Indices of the next `n` images (crossing into the next epoch as needed).
    pub fn next_indices(&mut self, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.ensure_order();
            if self.cursor.position >= self.order.len() {
                self.cursor = DataCursor {
                    epoch: self.cursor.epoch + 1,
                    position: 0,
                };
                continue;
            }
            out.push(self.order[self.cursor.position] as usize);
            self.cursor.position += 1;
        }
        out
    }

    /// The next `n` reals at `resolution`, `[n, 3, r, r]` in `[-1, 1]`, mirrored at random, and
    /// cross-faded like the generator's output when `alpha < 1`.
    pub fn next_batch(
        &mut self,
        n: usize,
        resolution: usize,
        alpha: f64,
        device: &Device,
    ) -> Result<Tensor<4>> {
        if self.level_res != resolution {
            self.level_bytes = self.pack.read_level(Split::Train, resolution)?;
            self.level_res = resolution;
        }
        let idx = self.next_indices(n);
        let r = resolution;
        let mut values = vec![0f32; n * 3 * r * r];
        for (b, &i) in idx.iter().enumerate() {
            let img = &self.level_bytes[i * r * r * 3..(i + 1) * r * r * 3]; // [r, r, 3]
            let flip = self.mirror && self.mirror_rng.below(2) == 1;
            let out = &mut values[b * 3 * r * r..(b + 1) * 3 * r * r]; // [3, r, r]
            for y in 0..r {
                for x in 0..r {
                    let sx = if flip { r - 1 - x } else { x };
                    for c in 0..3 {
                        out[c * r * r + y * r + x] = img[(y * r + sx) * 3 + c] as f32 / 127.5 - 1.0;
                    }
                }
            }
        }
        let reals = tensor_from_f32(values, [n, 3, r, r], device);
        Ok(fade_reals(reals, alpha))
    }
}

/// While a level fades in, reals are blended with their blurred (down-then-up) copy exactly like
/// the generator blends its two toRGB outputs.
pub fn fade_reals(reals: Tensor<4>, alpha: f64) -> Tensor<4> {
    if alpha >= 1.0 {
        return reals;
    }
    let coarse = upsample2x(downsample2x(reals.clone())); // [n, 3, r, r]
    lerp(coarse, reals, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::write_pack;

    fn sampler(count: usize, mirror: bool) -> (RealSampler, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "pggan-data-test-{}-{count}-{mirror}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.pack");
        let imgs: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                (0..8 * 8 * 3)
                    .map(|p| ((i * 10 + p % 3) % 256) as u8)
                    .collect()
            })
            .collect();
        write_pack(&path, 8, &imgs, &[], serde_json::json!({})).unwrap();
        let pack = Pack::open(&path).unwrap();
        (
            RealSampler::new(pack, 1, DataCursor::default(), SplitMix64::new(2), mirror),
            dir,
        )
    }

    #[test]
    fn each_epoch_visits_every_image_once() {
        let (mut s, dir) = sampler(10, false);
        let mut first = s.next_indices(10);
        let second = s.next_indices(10);
        assert_ne!(first, second, "epochs are shuffled differently");
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert_eq!(
            s.cursor,
            DataCursor {
                epoch: 1,
                position: 10
            }
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn cursor_resumes_the_same_order() {
        let (mut a, dir) = sampler(7, false);
        a.next_indices(5);
        let saved = a.cursor;
        let rest = a.next_indices(9);
        let (mut b, dir2) = sampler(7, false);
        b.cursor = saved;
        assert_eq!(b.next_indices(9), rest);
        std::fs::remove_dir_all(dir).ok();
        std::fs::remove_dir_all(dir2).ok();
    }

    #[test]
    fn batches_are_in_range_and_faded() {
        let (mut s, dir) = sampler(4, true);
        let dev = Device::flex();
        let x = s.next_batch(4, 8, 1.0, &dev).unwrap();
        assert_eq!(x.dims(), [4, 3, 8, 8]);
        let v = pggan_model::tensor::tensor_to_f32(x.clone());
        assert!(v.iter().all(|&p| (-1.0..=1.0).contains(&p)));
        let half = pggan_model::tensor::tensor_to_f32(fade_reals(x.clone(), 0.0));
        let coarse = pggan_model::tensor::tensor_to_f32(upsample2x(downsample2x(x)));
        assert_eq!(half, coarse);
        std::fs::remove_dir_all(dir).ok();
    }
}
