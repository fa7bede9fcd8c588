//! The once-per-tick maintenance of a training run: the log line and `metrics.jsonl`, the sample
//! grid, every `--metrics-kimg` the paper's metrics on the held-out split (keeping
//! `best.safetensors`), and `report.html`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Tensor;
use pggan_model::latent::latents_for_seeds;
use pggan_model::tensor::tensor_to_f32;
use pggan_model::weights::{WeightDtype, snapshot_to_bytes};
use pggan_model::{Generator, ModelConfig};
use serde_json::json;

use crate::checkpoint::TrainState;
use crate::eval::evaluate;
use crate::fsutil::write_atomic;
use crate::images::{grid, save_png};
use crate::loader::draw;
use crate::loss::CRITIC_STATS;
use crate::metrics::ImageSet;
use crate::pack::{Pack, Split};
use crate::schedule::Phase;
use crate::step::StepLosses;

/// First seed of the latents every metric evaluation draws: far from the grid's (0…).
const METRICS_SEED: u64 = 1_000_000;

/// The losses summed over a tick, on the device until the tick reads them.
pub struct TickStats {
    critic: Option<Tensor<1>>,
    generator: Option<Tensor<1>>,
    /// Steps taken in this tick.
    pub steps: u64,
    images: u64,
    started: Instant,
}

impl TickStats {
    /// An empty tick starting now.
    pub fn new() -> Self {
        Self {
            critic: None,
            generator: None,
            steps: 0,
            images: 0,
            started: Instant::now(),
        }
    }

    /// Adds a step of `images` images.
    pub fn add(&mut self, losses: StepLosses, images: usize) {
        self.steps += 1;
        self.images += images as u64;
        let sum = |acc: Option<Tensor<1>>, x: Tensor<1>| match acc {
            Some(a) => Some(a + x),
            None => Some(x),
        };
        self.critic = sum(self.critic.take(), losses.critic);
        self.generator = sum(self.generator.take(), losses.generator);
    }
}

/// What a tick writes, and where.
pub struct Ticker<'a> {
    /// The run folder.
    pub run: &'a Path,
    /// `metrics.jsonl`, open for appending.
    pub metrics: std::fs::File,
    /// Latents of the sample grid, `[grid², latent]`.
    pub grid_latents: Vec<f32>,
    /// Side of the sample grid.
    pub grid_side: usize,
    /// The model's architecture.
    pub config: ModelConfig,
    /// Thousands of images between metric evaluations (0: none).
    pub metrics_kimg: f64,
    /// Images per side of an evaluation.
    pub metrics_count: usize,
    /// The pack, for its held-out split.
    pub pack: Pack,
}

impl Ticker<'_> {
    /// Checks the tick's numbers (a NaN stops the run before anything is saved), then logs,
    /// draws the grid and, when due, measures.
    pub fn tick(
        &mut self,
        stats: &mut TickStats,
        state: &mut TrainState,
        phase: &Phase,
        ema: &Generator,
        say: &dyn Fn(&str),
    ) -> Result<()> {
        let run = self.run;
        let steps = stats.steps.max(1) as f32;
        let critic: Vec<f32> = stats
            .critic
            .take()
            .map(tensor_to_f32)
            .unwrap_or_else(|| vec![0.0; CRITIC_STATS]);
        let gen_loss = stats
            .generator
            .take()
            .map(tensor_to_f32)
            .map(|v| v[0])
            .unwrap_or(0.0)
            / steps;
        let [loss_d, wdist, penalty, drift] = [
            critic[0] / steps,
            critic[1] / steps,
            critic[2] / steps,
            critic[3] / steps,
        ];
        if [loss_d, wdist, penalty, drift, gen_loss]
            .iter()
            .any(|v| !v.is_finite())
        {
            bail!(
                "training diverged before {:.3} kimg: a loss is NaN or infinite (D {loss_d}, G {gen_loss}, penalty {penalty}); \
                 stopped without saving — the last good checkpoint in {} is intact (try a lower --lr)",
                state.nimg as f64 / 1000.0,
                run.display()
            );
        }
        let secs = stats.started.elapsed().as_secs_f64();
        let img_s = stats.images as f64 / secs.max(1e-9);
        let kimg = state.nimg as f64 / 1000.0;
        say(&format!(
            "tick {:<4} kimg {:<9.3} level {} ({}×{}) alpha {:.3} minibatch {:<4} {:>7.1} img/s {:>8.2} sec/kimg  D {:+.4} G {:+.4} W {:+.4} gp {:.4}",
            state.tick,
            kimg,
            phase.level,
            phase.resolution(),
            phase.resolution(),
            phase.alpha,
            phase.minibatch,
            img_s,
            1000.0 / img_s.max(1e-9),
            loss_d,
            gen_loss,
            wdist,
            penalty
        ));
        let mut line = json!({
            "tick": state.tick, "kimg": kimg, "level": phase.level, "resolution": phase.resolution(),
            "alpha": phase.alpha, "minibatch": phase.minibatch, "img_per_s": img_s,
            "sec_per_kimg": 1000.0 / img_s.max(1e-9), "loss_d": loss_d, "loss_g": gen_loss,
            "wasserstein": wdist, "penalty": penalty, "drift": drift,
            "train_seconds": state.train_seconds,
        });
        if let Some(mib) = crate::memory::resident_mib() {
            // The process's memory: on a CPU backend, and on a software GPU driver, this is also
            // the device's; it must stay flat from tick to tick.
            line["rss_mib"] = json!(mib);
        }
        // The GPU's own memory, where the backend reports it: what the allocator has reserved
        // and what live tensors use.
        if let Some(usage) = ema.devices().first().and_then(|d| d.memory_pool_usage()) {
            const MIB: f64 = 1024.0 * 1024.0;
            line["device_reserved_mib"] = json!(usage.bytes_reserved as f64 / MIB);
            line["device_in_use_mib"] = json!(usage.bytes_in_use as f64 / MIB);
        }
        let due = self.metrics_kimg > 0.0
            && (kimg / self.metrics_kimg).floor() as u64 > state.metrics_done;
        if due {
            state.metrics_done = (kimg / self.metrics_kimg).floor() as u64;
            if let Some(m) = self.measure(state, phase, ema, say)? {
                line["metrics"] = m;
            }
        }
        // One write per line, so a reader (or a kill) never sees half of one.
        self.metrics.write_all(format!("{line}\n").as_bytes())?;
        self.metrics.flush()?;
        let fakes = draw(ema, phase.level, phase.alpha, 1.0, &self.grid_latents);
        let picture = grid(&fakes, self.grid_side, self.config.resolution as u32);
        let name = format!("fakes{:06}.png", kimg.floor() as u64);
        save_png(&picture, &run.join("grids").join(name))?;
        crate::report::write_report(run)?;
        *stats = TickStats::new();
        Ok(())
    }

    /// SWD and MS-SSIM of the EMA generator against the held-out split at the current
    /// resolution; keeps `best.safetensors` when the top level, fully faded in, improves.
    fn measure(
        &mut self,
        state: &mut TrainState,
        phase: &Phase,
        ema: &Generator,
        say: &dyn Fn(&str),
    ) -> Result<Option<serde_json::Value>> {
        let r = phase.resolution();
        let held = self.pack.count(Split::Holdout);
        if r < 16 || held < 2 {
            // SWD starts at 16×16; without a held-out split there is nothing to compare.
            return Ok(None);
        }
        let n = self.metrics_count.min(held);
        let reference = ImageSet {
            resolution: r,
            data: self.pack.read_images(Split::Holdout, r, 0, n)?,
        };
        let latents = latents_for_seeds(METRICS_SEED, n, self.config.latent_size);
        let fakes = ImageSet {
            resolution: r,
            data: draw(ema, phase.level, phase.alpha, 1.0, &latents)
                .into_iter()
                .flat_map(|img| img.into_raw())
                .collect(),
        };
        let report = evaluate(&fakes, &reference, 0)?;
        let avg = report.swd["avg"].as_f64().unwrap_or(f64::NAN);
        say(&format!(
            "metrics at {:.1} kimg, {r}×{r}, {n} images: SWD×1e3 avg {avg:.2} ({}), MS-SSIM {:.4} (reals {:.4})",
            state.nimg as f64 / 1000.0,
            report
                .swd
                .iter()
                .filter(|(k, _)| *k != "avg")
                .map(|(k, v)| format!("{k}px {:.2}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", "),
            report.ms_ssim,
            report.ms_ssim_reference
        ));
        let top_level = self.config.num_levels() - 1;
        if phase.level == top_level && !phase.fading() && state.best_swd.is_none_or(|b| avg < b) {
            state.best_swd = Some(avg);
            let kimg = state.nimg as f64 / 1000.0;
            let bytes = snapshot_to_bytes(
                ema,
                &self.config,
                phase.level,
                1.0,
                kimg,
                WeightDtype::F32,
                &[("swd_avg", format!("{avg:.4}"))],
            )?;
            let path = self.run.join("best.safetensors");
            write_atomic(&path, &bytes)?;
            say(&format!("new best SWD {avg:.2}: saved {}", path.display()));
        }
        Ok(Some(serde_json::to_value(&report)?))
    }
}
