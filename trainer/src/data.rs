//! Minibatches of reals: epoch-wise shuffled order, mirror augmentation, and the cross-fade that
//! matches the generator's output while a level fades in.

use std::sync::mpsc;

use anyhow::{Context, Result};
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

/// Draws minibatches of training images from a pack, reading only the images each needs. The
/// order and the mirror flips are decided here, on the training thread; a loader thread reads
/// and converts the images, one batch ahead when told what comes next ([`Self::prefetch`]).
pub struct RealSampler {
    seed: u64,
    count: usize,
    /// Where the next batch handed out starts (what a checkpoint saves).
    pub cursor: DataCursor,
    /// Random horizontal flips, as of the next batch handed out.
    pub mirror_rng: SplitMix64,
    mirror: bool,
    order: Vec<u32>,
    order_epoch: Option<u64>,
    loader: Loader,
    /// The batch the loader is preparing, if any.
    pending: Option<Planned>,
}

/// A batch decided but not yet handed out: its shape and the position after it.
struct Planned {
    n: usize,
    resolution: usize,
    cursor_after: DataCursor,
    mirror_after: SplitMix64,
}

/// What the loader thread is asked to make: training images `indices` at `resolution`, each
/// mirrored where `flips` says.
struct Job {
    resolution: usize,
    indices: Vec<usize>,
    flips: Vec<bool>,
}

/// The loader thread and its two channels.
struct Loader {
    jobs: Option<mpsc::Sender<Job>>,
    batches: mpsc::Receiver<Result<Vec<f32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Loader {
    fn start(pack: Pack) -> Result<Self> {
        let mut reader = pack.reader()?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (batch_tx, batches) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pggan-reals".into())
            .spawn(move || {
                let mut image = Vec::new();
                for job in job_rx {
                    let made = make_batch(&pack, &mut reader, &job, &mut image);
                    if batch_tx.send(made).is_err() {
                        break;
                    }
                }
            })
            .context("starting the data loader thread")?;
        Ok(Self {
            jobs: Some(jobs),
            batches,
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .context("the data loader thread has stopped")
    }

    fn receive(&self) -> Result<Vec<f32>> {
        self.batches
            .recv()
            .context("the data loader thread has stopped")?
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.jobs = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads and converts one batch: `[n, 3, r, r]` values in `[-1, 1]`.
fn make_batch(
    pack: &Pack,
    reader: &mut crate::pack::PackReader,
    job: &Job,
    image: &mut Vec<u8>,
) -> Result<Vec<f32>> {
    let r = job.resolution;
    let level = pack.level(Split::Train, r)?;
    image.resize(r * r * 3, 0);
    let mut values = vec![0f32; job.indices.len() * 3 * r * r];
    for (b, (&i, &flip)) in job.indices.iter().zip(&job.flips).enumerate() {
        reader.read_image(level, i, image)?; // [r, r, 3]
        to_planes(
            image,
            r,
            flip,
            &mut values[b * 3 * r * r..(b + 1) * 3 * r * r],
        );
    }
    Ok(values)
}

/// An `[r, r, 3]` byte image as `[3, r, r]` values in `[-1, 1]` into `out`, mirrored left to
/// right when `flip`.
pub fn to_planes(image: &[u8], r: usize, flip: bool, out: &mut [f32]) {
    for y in 0..r {
        for x in 0..r {
            let sx = if flip { r - 1 - x } else { x };
            for c in 0..3 {
                out[c * r * r + y * r + x] = image[(y * r + sx) * 3 + c] as f32 / 127.5 - 1.0;
            }
        }
    }
}

impl RealSampler {
    /// A sampler over the training split of `pack`.
    pub fn new(
        pack: Pack,
        seed: u64,
        cursor: DataCursor,
        mirror_rng: SplitMix64,
        mirror: bool,
    ) -> Result<Self> {
        Ok(Self {
            seed,
            count: pack.count(Split::Train),
            cursor,
            mirror_rng,
            mirror,
            order: Vec::new(),
            order_epoch: None,
            loader: Loader::start(pack)?,
            pending: None,
        })
    }

    /// Number of training images.
    pub fn len(&self) -> usize {
        self.count
    }

    fn ensure_order(&mut self, epoch: u64) {
        if self.order_epoch != Some(epoch) {
            self.order = (0..self.count as u32).collect();
            SplitMix64::derive(
                self.seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                "epoch",
            )
            .shuffle(&mut self.order);
            self.order_epoch = Some(epoch);
        }
    }

    /// Indices of `n` images from `cursor` on (crossing into the next epoch as needed), moving it.
    fn indices_from(&mut self, cursor: &mut DataCursor, n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.ensure_order(cursor.epoch);
            if cursor.position >= self.order.len() {
                *cursor = DataCursor {
                    epoch: cursor.epoch + 1,
                    position: 0,
                };
                continue;
            }
            out.push(self.order[cursor.position] as usize);
            cursor.position += 1;
        }
        out
    }

    /// Indices of the next `n` images, moving the cursor (no images are read).
    #[cfg(test)]
    pub fn next_indices(&mut self, n: usize) -> Vec<usize> {
        let mut cursor = self.cursor;
        let out = self.indices_from(&mut cursor, n);
        self.cursor = cursor;
        out
    }

    /// Decides the batch after the current position and hands it to the loader.
    fn plan(&mut self, n: usize, resolution: usize) -> Result<()> {
        let mut cursor = self.cursor;
        let indices = self.indices_from(&mut cursor, n);
        let mut mirror_after = self.mirror_rng.clone();
        let flips = (0..n)
            .map(|_| self.mirror && mirror_after.below(2) == 1)
            .collect();
        self.loader.send(Job {
            resolution,
            indices,
            flips,
        })?;
        self.pending = Some(Planned {
            n,
            resolution,
            cursor_after: cursor,
            mirror_after,
        });
        Ok(())
    }

    /// Starts reading the next batch (`n` images at `resolution`) while the caller trains on the
    /// current one. A different request at the next [`Self::next_batch`] discards it: the data
    /// order depends only on the batches handed out.
    pub fn prefetch(&mut self, n: usize, resolution: usize) -> Result<()> {
        if self.pending.is_none() {
            self.plan(n, resolution)?;
        }
        Ok(())
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
        if let Some(p) = &self.pending
            && (p.n, p.resolution) != (n, resolution)
        {
            self.pending = None;
            self.loader.receive()?; // made for another shape: dropped
        }
        if self.pending.is_none() {
            self.plan(n, resolution)?;
        }
        let values = self.loader.receive();
        let planned = self.pending.take().expect("planned above");
        let values = values?;
        self.cursor = planned.cursor_after;
        self.mirror_rng = planned.mirror_after;
        let reals = tensor_from_f32(values, [n, 3, resolution, resolution], device);
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
            RealSampler::new(pack, 1, DataCursor::default(), SplitMix64::new(2), mirror).unwrap(),
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
