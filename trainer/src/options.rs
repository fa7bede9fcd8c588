//! The options of a training run: one record, written to `run/options.json` and read back on
//! `--resume`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use pggan_model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::backend::BackendKind;
use crate::loss::{LossKind, WganParams};
use crate::schedule::ScheduleSpec;

/// Official minibatch sizes by resolution (4, 8, 16, 32, 64, 128, 256, 512, 1024).
pub const DEFAULT_MINIBATCH: [usize; 9] = [128, 128, 128, 64, 32, 16, 8, 4, 4];

/// Every option of `pggan train`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Dataset pack made by `pggan prepare`.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: options, checkpoint, grids, stages, metrics.
    #[arg(long)]
    pub run: PathBuf,
    /// Continue the run in `--run` from its checkpoint (its options.json wins, except
    /// `--backend` and `--total-kimg`).
    #[arg(long)]
    #[serde(skip)]
    pub resume: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Final resolution (default: the pack's).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Latent size.
    #[arg(long, default_value_t = 512)]
    pub latent: usize,
    /// Channel schedule numerator: level l has min(fmap_base / 2^(l+1), fmap_max) channels.
    #[arg(long, default_value_t = 8192)]
    pub fmap_base: usize,
    /// Largest channel count.
    #[arg(long, default_value_t = 512)]
    pub fmap_max: usize,
    /// Thousands of images each level trains before the next fades in.
    #[arg(long, default_value_t = 600.0)]
    pub stabilize_kimg: f64,
    /// Thousands of images over which a new level fades in.
    #[arg(long, default_value_t = 600.0)]
    pub fade_kimg: f64,
    /// Length of the run in thousands of images (default: growth plus one more phase at the top).
    #[arg(long)]
    pub total_kimg: Option<f64>,
    /// Loss.
    #[arg(long, value_enum, default_value = "wgan-gp")]
    pub loss: LossKind,
    /// One minibatch size for every level (default: 128/128/128/64/32/16/8/4 for 4…512).
    #[arg(long)]
    pub minibatch: Option<usize>,
    /// Cap on the minibatch size (memory).
    #[arg(long)]
    pub minibatch_max: Option<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Adam β1.
    #[arg(long, default_value_t = 0.0)]
    pub beta1: f64,
    /// Adam β2.
    #[arg(long, default_value_t = 0.99)]
    pub beta2: f64,
    /// Adam ε.
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Gradient penalty weight λ.
    #[arg(long, default_value_t = 10.0)]
    pub gp_lambda: f64,
    /// Drift term weight ε.
    #[arg(long, default_value_t = 0.001)]
    pub drift: f64,
    /// EMA β per step of the generator average.
    #[arg(long, default_value_t = 0.999)]
    pub ema_beta: f64,
    /// EMA half-life in thousands of images (overrides --ema-beta).
    #[arg(long)]
    pub ema_kimg: Option<f64>,
    /// Turn off horizontal mirror augmentation.
    #[arg(long)]
    pub no_mirror: bool,
    /// Thousands of images between ticks (log line, grid, metrics, checkpoint).
    #[arg(long, default_value_t = 10.0)]
    pub tick_kimg: f64,
    /// Side of the square grid of fixed-latent samples written each tick.
    #[arg(long, default_value_t = 8)]
    pub grid: usize,
    /// Thousands of images between metric evaluations (SWD, MS-SSIM on the held-out split; 0 = off).
    #[arg(long, default_value_t = 200.0)]
    #[serde(default = "default_metrics_kimg")]
    pub metrics_kimg: f64,
    /// Images per side for the metrics (capped by the held-out split).
    #[arg(long, default_value_t = 2000)]
    #[serde(default = "default_metrics_count")]
    pub metrics_count: usize,
    /// Seed of initialisation, data order, latents and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// End this session at this many kimg with a checkpoint (continue later with --resume).
    #[arg(long)]
    #[serde(skip)]
    pub stop_kimg: Option<f64>,
    /// End this session after this many minutes of training with a checkpoint.
    #[arg(long)]
    #[serde(skip)]
    pub max_minutes: Option<f64>,
    /// Print the options record, the model and the schedule, then stop without training.
    #[arg(long)]
    #[serde(skip)]
    pub dry_run: bool,
    /// Test hook: poison the reals with NaN from this many kimg on.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub debug_nan_at_kimg: Option<f64>,
}

// Defaults for options added after a run's options.json was written.
fn default_metrics_kimg() -> f64 {
    200.0
}
fn default_metrics_count() -> usize {
    2000
}

impl TrainOptions {
    /// The model architecture these options describe (with the pack's resolution as default).
    pub fn model_config(&self, pack_resolution: usize) -> ModelConfig {
        ModelConfig::new()
            .with_resolution(self.resolution.unwrap_or(pack_resolution))
            .with_latent_size(self.latent)
            .with_fmap_base(self.fmap_base)
            .with_fmap_max(self.fmap_max)
    }

    /// The progressive schedule.
    pub fn schedule_spec(&self, config: &ModelConfig) -> ScheduleSpec {
        let minibatch_by_level = (0..config.num_levels())
            .map(|l| {
                let b = self
                    .minibatch
                    .unwrap_or(DEFAULT_MINIBATCH[l.min(DEFAULT_MINIBATCH.len() - 1)]);
                self.minibatch_max.map_or(b, |m| b.min(m))
            })
            .collect();
        ScheduleSpec {
            num_levels: config.num_levels(),
            stabilize_kimg: self.stabilize_kimg,
            fade_kimg: self.fade_kimg,
            minibatch_by_level,
        }
    }

    /// Length of the run in thousands of images.
    pub fn total_kimg(&self, spec: &ScheduleSpec) -> f64 {
        self.total_kimg
            .unwrap_or(spec.growth_kimg() + spec.stabilize_kimg + spec.fade_kimg)
    }

    /// Adam's parameters.
    pub fn adam(&self) -> AdamParams {
        AdamParams {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.adam_eps,
        }
    }

    /// WGAN-GP's parameters.
    pub fn wgan(&self) -> WganParams {
        WganParams {
            gp_lambda: self.gp_lambda,
            gp_target: 1.0,
            drift: self.drift,
        }
    }

    /// Refuses nonsense values up front, saying what is allowed.
    pub fn validate(&self, pack_resolution: usize) -> Result<()> {
        let config = self.model_config(pack_resolution);
        config.validate()?;
        if config.resolution > pack_resolution {
            bail!(
                "--resolution {} is above the pack's {pack_resolution}; prepare a larger pack",
                config.resolution
            );
        }
        if self.minibatch == Some(0) || self.minibatch_max == Some(0) {
            bail!("minibatch sizes must be at least 1");
        }
        for (name, v) in [
            ("--stabilize-kimg", self.stabilize_kimg),
            ("--fade-kimg", self.fade_kimg),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("{name} must be a finite number ≥ 0 (got {v})");
            }
        }
        if self.stabilize_kimg + self.fade_kimg <= 0.0 && config.num_levels() > 1 {
            bail!("--stabilize-kimg and --fade-kimg cannot both be 0");
        }
        if let Some(t) = self.total_kimg
            && !(t > 0.0 && t.is_finite())
        {
            bail!("--total-kimg must be a positive number (got {t})");
        }
        let total = self.total_kimg(&self.schedule_spec(&config));
        if config.num_levels() > 1 && self.fade_kimg > total {
            bail!(
                "--fade-kimg {} is longer than the whole run ({total} kimg): no level could finish fading in; \
                 lengthen --total-kimg, or end this session early with --stop-kimg / --max-minutes",
                self.fade_kimg
            );
        }
        for (name, v) in [
            ("--stop-kimg", self.stop_kimg),
            ("--max-minutes", self.max_minutes),
        ] {
            if let Some(v) = v
                && !(v > 0.0 && v.is_finite())
            {
                bail!("{name} must be a positive number (got {v})");
            }
        }
        if !(self.tick_kimg > 0.0 && self.tick_kimg.is_finite()) {
            bail!("--tick-kimg must be positive (got {})", self.tick_kimg);
        }
        let adam_ok = self.lr.is_finite()
            && self.lr > 0.0
            && (0.0..1.0).contains(&self.beta1)
            && (0.0..1.0).contains(&self.beta2);
        if !adam_ok {
            bail!("Adam needs lr > 0 and 0 ≤ β1, β2 < 1");
        }
        if !(self.metrics_kimg >= 0.0 && self.metrics_kimg.is_finite()) || self.metrics_count < 2 {
            bail!(
                "--metrics-kimg must be ≥ 0 (0 turns metrics off) and --metrics-count at least 2"
            );
        }
        if !(0.0..=1.0).contains(&self.ema_beta) {
            bail!("--ema-beta must be in [0, 1]");
        }
        if self.grid == 0 || self.grid > 32 {
            bail!("--grid must be between 1 and 32");
        }
        Ok(())
    }
}
