//! The options of `pggan train`, in two records: [`RunOptions`], what a run stores (written to
//! `run/options.json` and into every checkpoint) and [`SessionArgs`], what one invocation says
//! (where the data and the run are, on what, for how long). On `--resume` the checkpoint's own
//! copy of the run's options wins; [`resume_options`] says which may change then.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use pggan_model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::adam::AdamParams;
use crate::backend::BackendKind;
use crate::loss::{LossKind, WganParams};
use crate::rgb_fit::FadeRgbStart;
use crate::schedule::{KimgByLevel, ScheduleSpec, schedule};
use crate::step::StepSettings;

/// Official minibatch sizes by resolution (4, 8, 16, 32, 64, 128, 256, 512, 1024).
pub const DEFAULT_MINIBATCH: [usize; 9] = [128, 128, 128, 64, 32, 16, 8, 4, 4];

/// Everything `pggan train` is told.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// This invocation.
    #[command(flatten)]
    pub session: SessionArgs,
    /// The run.
    #[command(flatten)]
    pub run: RunOptions,
}

/// What one invocation of `pggan train` says; none of it is stored with the run.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Dataset pack made by `pggan prepare`.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: options, checkpoint, grids, stages, metrics.
    #[arg(long)]
    pub run: PathBuf,
    /// Continue the run in `--run` from its checkpoint, with the options stored in it (see
    /// `--help` of each option for what may change).
    #[arg(long)]
    pub resume: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Train data-parallel on this many devices of the backend (GPUs; on the CPU backend the
    /// shards run one after another): each takes an equal share of every minibatch, whole
    /// minibatch-stddev groups, so the minibatch must be a multiple of 4 × this. A run may
    /// change it on --resume.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub devices: u32,
    /// End this session at this many kimg with a checkpoint (continue later with --resume).
    #[arg(long)]
    pub stop_kimg: Option<f64>,
    /// End this session after this many minutes of training with a checkpoint.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Print the options record, the model and the schedule, then stop without training.
    #[arg(long)]
    pub dry_run: bool,
    /// Test hook: poison the reals with NaN from this many kimg on.
    #[arg(long, hide = true)]
    pub debug_nan_at_kimg: Option<f64>,
}

/// Every option that shapes a run, stored with it.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RunOptions {
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
    /// Thousands of images each level trains at full weight before the next fades in: one
    /// number, or a list from 4×4 up (the last repeats), e.g. 40,40,60,100.
    #[arg(long, default_value = "600")]
    pub stabilize_kimg: KimgByLevel,
    /// Thousands of images over which a new level fades in: one number, or a list from 8×8 up
    /// (the last repeats).
    #[arg(long, default_value = "600")]
    pub fade_kimg: KimgByLevel,
    /// Length of the run in thousands of images (default: growth plus one more phase at the
    /// top). May change on resume.
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
    /// Adam learning rate. May change on resume.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Adam β1. May change on resume.
    #[arg(long, default_value_t = 0.0)]
    pub beta1: f64,
    /// Adam β2. May change on resume.
    #[arg(long, default_value_t = 0.99)]
    pub beta2: f64,
    /// Adam ε. May change on resume.
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Gradient penalty weight λ. May change on resume.
    #[arg(long, default_value_t = 10.0)]
    pub gp_lambda: f64,
    /// The share of each minibatch the gradient penalty is taken on (whole minibatch-stddev
    /// groups; 1 = all of it, the paper's): its passes are most of a critic step's cost. May
    /// change on resume.
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "default_gp_fraction")]
    pub gp_fraction: f64,
    /// Drift term weight ε. May change on resume.
    #[arg(long, default_value_t = 0.001)]
    pub drift: f64,
    /// EMA β per step of the generator average. May change on resume.
    #[arg(long, default_value_t = 0.999)]
    pub ema_beta: f64,
    /// EMA half-life in thousands of images (overrides --ema-beta). May change on resume.
    #[arg(long)]
    pub ema_kimg: Option<f64>,
    /// Turn off horizontal mirror augmentation.
    #[arg(long)]
    pub no_mirror: bool,
    /// Thousands of images between ticks (log line, grid, metrics, checkpoint). May change on
    /// resume.
    #[arg(long, default_value_t = 10.0)]
    pub tick_kimg: f64,
    /// Side of the square grid of fixed-latent samples written each tick. May change on resume.
    #[arg(long, default_value_t = 8)]
    pub grid: usize,
    /// Thousands of images between metric evaluations (SWD, MS-SSIM on the held-out split;
    /// 0 = off). May change on resume.
    #[arg(long, default_value_t = 200.0)]
    #[serde(default = "default_metrics_kimg")]
    pub metrics_kimg: f64,
    /// Images per side for the metrics (capped by the held-out split). May change on resume.
    #[arg(long, default_value_t = 2000)]
    #[serde(default = "default_metrics_count")]
    pub metrics_count: usize,
    /// How a new level's toRGB starts its fade-in: fitted to the picture of the level below (no
    /// colour cast at α = 0; docs/design.md) or as initialised (the paper's). Runs stored before
    /// this option used `random`. May change on resume (fades not yet begun).
    #[arg(long, value_enum, default_value = "fit")]
    #[serde(default)]
    pub fade_rgb: FadeRgbStart,
    /// Seed of initialisation, data order, latents and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

// Defaults for options added after a run's options.json was written.
fn default_metrics_kimg() -> f64 {
    200.0
}
fn default_metrics_count() -> usize {
    2000
}
fn default_gp_fraction() -> f64 {
    1.0
}

/// Options a resumed run may be given new values for. They change only what happens from the
/// checkpoint on (a resumed run given one is no longer the same as a straight run). The schedule
/// options may change too, but only as long as the new schedule agrees with the old one for
/// every image already shown. Every other option is the run's for good.
pub const CHANGEABLE_ON_RESUME: [&str; 15] = [
    "total_kimg",
    "tick_kimg",
    "grid",
    "metrics_kimg",
    "metrics_count",
    "lr",
    "beta1",
    "beta2",
    "adam_eps",
    "gp_lambda",
    "gp_fraction",
    "drift",
    "ema_beta",
    "ema_kimg",
    "fade_rgb",
];

/// The schedule options: they may change on resume while the past stays as it was.
pub const SCHEDULE_OPTIONS: [&str; 4] =
    ["stabilize_kimg", "fade_kimg", "minibatch", "minibatch_max"];

/// The options of a resumed run: those `stored` in its checkpoint, with the new values of the
/// options given on this command line (`given_on_cli` says which were) that may change — see
/// [`CHANGEABLE_ON_RESUME`] and [`SCHEDULE_OPTIONS`]; the run has shown `nimg` images at
/// `pack_resolution`. An option that may not change, given with another value, is an error that
/// names it.
pub fn resume_options(
    stored: &RunOptions,
    given: &RunOptions,
    given_on_cli: &dyn Fn(&str) -> bool,
    nimg: u64,
    pack_resolution: usize,
) -> Result<RunOptions> {
    let old = serde_json::to_value(stored)?;
    let new = serde_json::to_value(given)?;
    let mut merged = old.clone();
    let mut refused = Vec::new();
    let mut schedule_changed = false;
    for (key, value) in new.as_object().into_iter().flatten() {
        if !given_on_cli(key) || old.get(key) == Some(value) {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        if CHANGEABLE_ON_RESUME.contains(&key.as_str()) {
            merged[key] = value.clone();
        } else if SCHEDULE_OPTIONS.contains(&key.as_str()) {
            merged[key] = value.clone();
            schedule_changed = true;
        } else {
            refused.push(format!(
                "{flag} (the run has {})",
                old.get(key).unwrap_or(&serde_json::Value::Null)
            ));
        }
    }
    if !refused.is_empty() {
        bail!(
            "these options are the run's own and cannot change on --resume: {}; \
             options that may change: {}, and the schedule ({}) where it keeps what was trained",
            refused.join(", "),
            CHANGEABLE_ON_RESUME
                .map(|k| format!("--{}", k.replace('_', "-")))
                .join(", "),
            SCHEDULE_OPTIONS
                .map(|k| format!("--{}", k.replace('_', "-")))
                .join(", "),
        );
    }
    let merged: RunOptions = serde_json::from_value(merged)?;
    if schedule_changed {
        let config = stored.model_config(pack_resolution);
        let (before, after) = (stored.schedule_spec(&config), merged.schedule_spec(&config));
        // Step by step through what was trained: the same level, α and minibatch each time.
        let mut shown = 0u64;
        while shown < nimg {
            let kimg = shown as f64 / 1000.0;
            let (a, b) = (schedule(kimg, &before), schedule(kimg, &after));
            if a != b {
                bail!(
                    "the new schedule differs from the run's at {kimg} kimg, which it has already trained \
                     (level {} α {:.3} minibatch {} there, the new one says level {} α {:.3} minibatch {}); \
                     a schedule may change on --resume only after the images shown ({} kimg)",
                    a.level,
                    a.alpha,
                    a.minibatch,
                    b.level,
                    b.alpha,
                    b.minibatch,
                    nimg as f64 / 1000.0
                );
            }
            shown += a.minibatch as u64;
        }
    }
    Ok(merged)
}

impl RunOptions {
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
            stabilize_kimg: self.stabilize_kimg.clone(),
            fade_kimg: self.fade_kimg.clone(),
            minibatch_by_level,
        }
    }

    /// Length of the run in thousands of images.
    pub fn total_kimg(&self, spec: &ScheduleSpec) -> f64 {
        self.total_kimg.unwrap_or(spec.default_total_kimg())
    }

    /// The settings of a training step.
    pub fn step_settings(&self) -> StepSettings {
        StepSettings {
            loss: self.loss,
            wgan: WganParams {
                gp_lambda: self.gp_lambda,
                gp_target: 1.0,
                gp_fraction: self.gp_fraction,
                drift: self.drift,
            },
            adam: AdamParams {
                lr: self.lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.adam_eps,
            },
            ema_beta: self.ema_beta,
            ema_kimg: self.ema_kimg,
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
        let spec = self.schedule_spec(&config);
        if (0..config.num_levels().saturating_sub(1))
            .any(|l| spec.stabilize(l) + spec.fade(l + 1) <= 0.0)
        {
            bail!("--stabilize-kimg and --fade-kimg cannot both be 0 at a level");
        }
        if let Some(t) = self.total_kimg
            && !(t > 0.0 && t.is_finite())
        {
            bail!("--total-kimg must be a positive number (got {t})");
        }
        let total = self.total_kimg(&spec);
        if config.num_levels() > 1 && spec.fade(1) > total {
            bail!(
                "--fade-kimg {} is longer than the whole run ({total} kimg): no level could finish fading in; \
                 lengthen --total-kimg, or end this session early with --stop-kimg / --max-minutes",
                spec.fade(1)
            );
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
        crate::loss::check_gp_fraction(self.gp_fraction)?;
        if self.grid == 0 || self.grid > 32 {
            bail!("--grid must be between 1 and 32");
        }
        Ok(())
    }
}

impl SessionArgs {
    /// Refuses nonsense session limits.
    pub fn validate(&self) -> Result<()> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunOptions,
    }

    /// The options a command line gives, and which of them it names.
    fn given(args: &[&str]) -> (RunOptions, Vec<String>) {
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap();
        let named = matches
            .ids()
            .filter(|id| {
                matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.to_string())
            .collect();
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        (cli.run, named)
    }

    fn resume(stored: &[&str], args: &[&str], nimg: u64) -> Result<RunOptions> {
        let (stored, _) = given(stored);
        let (new, named) = given(args);
        resume_options(&stored, &new, &|k| named.iter().any(|n| n == k), nimg, 64)
    }

    #[test]
    fn a_resumed_run_keeps_its_own_options_and_takes_the_changeable_ones() {
        let run = ["--latent", "64", "--lr", "0.002", "--stabilize-kimg", "10"];
        // Not named: the stored value stays, whatever the new default.
        let r = resume(&run, &[], 5000).unwrap();
        assert_eq!((r.latent, r.lr), (64, 0.002));
        // The same value again is fine; a changeable one takes effect.
        let r = resume(
            &run,
            &[
                "--latent",
                "64",
                "--lr",
                "0.0005",
                "--total-kimg",
                "99",
                "--gp-fraction",
                "0.25",
            ],
            5000,
        )
        .unwrap();
        assert_eq!(
            (r.latent, r.lr, r.total_kimg, r.gp_fraction),
            (64, 0.0005, Some(99.0), 0.25)
        );
        assert_eq!(r.step_settings().wgan.gp_fraction, 0.25);
        // A run stored before --gp-fraction existed opens with the penalty on every image.
        let mut stored = serde_json::to_value(&r).unwrap();
        stored.as_object_mut().unwrap().remove("gp_fraction");
        let old: RunOptions = serde_json::from_value(stored).unwrap();
        assert_eq!(old.gp_fraction, 1.0);
        // The run's own: refused, naming it and what it was.
        let err = resume(&run, &["--latent", "128", "--seed", "3"], 5000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--latent (the run has 64)") && err.contains("--seed"),
            "{err}"
        );
        assert!(
            err.contains("--lr"),
            "the message lists what may change: {err}"
        );
    }

    #[test]
    fn the_schedule_may_change_only_after_what_was_trained() {
        let run = [
            "--stabilize-kimg",
            "10",
            "--fade-kimg",
            "10",
            "--minibatch",
            "8",
        ];
        // At 15 kimg (fading in 8×8): lengthening 16×16 and later keeps the past.
        let r = resume(&run, &["--stabilize-kimg", "10,10,30"], 15_000).unwrap();
        assert_eq!(r.stabilize_kimg.to_string(), "10,10,30");
        // Lengthening the 4×4 level rewrites the past: refused, saying where.
        let err = resume(&run, &["--stabilize-kimg", "12"], 15_000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at 10 kimg") && err.contains("already trained"),
            "{err}"
        );
        // A new minibatch from the current level on: refused (it is level 1 now), allowed at 0 kimg.
        assert!(resume(&run, &["--minibatch", "16"], 15_000).is_err());
        assert!(resume(&run, &["--minibatch", "16"], 0).is_ok());
    }
}
