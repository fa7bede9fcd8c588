//! `pggan bench`: training throughput (img/s) per resolution for a model size and backend — the
//! training step itself ([`Networks::step`]), on reals from a pack (mirrored, as in training) or
//! on random ones.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Tensor;
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::{ModelConfig, SplitMix64};

use crate::backend::BackendKind;
use crate::data::{DataCursor, RealSampler};
use crate::pack::Pack;
use crate::step::{Networks, StepRandom, StepSettings};

/// What to measure (the options of `pggan bench`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendKind,
    /// Final resolution: every level up to it is measured.
    #[arg(long, default_value_t = 32)]
    pub resolution: usize,
    /// Only measure levels at or above this resolution.
    #[arg(long, default_value_t = 4)]
    pub min_resolution: usize,
    /// Latent size.
    #[arg(long, default_value_t = 256)]
    pub latent: usize,
    /// Channel numerator.
    #[arg(long, default_value_t = 1024)]
    pub fmap_base: usize,
    /// Channel cap.
    #[arg(long, default_value_t = 256)]
    pub fmap_max: usize,
    /// Minibatch size (the same at every level).
    #[arg(long, default_value_t = 16)]
    pub minibatch: usize,
    /// Timed steps per level (after two warm-up steps).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Train on this pack's images (as training does: shuffled, mirrored) instead of random
    /// reals.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print one JSON line with all rows as well.
    #[arg(long)]
    pub json: bool,
    /// Then train three steps of a small model on this backend and on flex from the same
    /// weights and inputs, and print how far apart they end (a GPU backend only).
    #[arg(long)]
    pub check: bool,
    /// Data-parallel over this many devices of the backend, as `train --devices`.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// The share of the minibatch the gradient penalty is taken on, as `train --gp-fraction`.
    #[arg(long, default_value_t = 1.0)]
    pub gp_fraction: f64,
}

/// One measured level.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Resolution.
    pub resolution: usize,
    /// Minibatch size.
    pub minibatch: usize,
    /// Images per second over the timed steps (critic step + generator step + EMA).
    pub img_per_s: f64,
    /// Milliseconds per step.
    pub ms_per_step: f64,
    /// The process's peak resident memory so far, in MiB (Linux): with the levels measured
    /// from the bottom up, that of this level's steps (weights, Adam, activations).
    pub peak_mib: Option<f64>,
}

/// The vector instruction set the CPU kernels use on this CPU, for the first line: AVX-512 only
/// where the CPU has it and the binary has its kernels (feature `avx512`, on by default).
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        if avx512 && cfg!(feature = "avx512") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return if avx512 {
                "AVX2 (AVX-512 CPU, binary built without AVX-512 kernels)"
            } else {
                "AVX2"
            };
        }
        "SSE2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        std::env::consts::ARCH
    }
}

/// Times full training steps (critic with penalty, generator, EMA; the paper's settings) at
/// every level from `min_resolution` up.
pub fn bench(o: &BenchOptions) -> Result<Vec<BenchRow>> {
    let config = ModelConfig::new()
        .with_resolution(o.resolution)
        .with_latent_size(o.latent)
        .with_fmap_base(o.fmap_base)
        .with_fmap_max(o.fmap_max);
    config.validate()?;
    if o.minibatch == 0 || o.steps == 0 {
        bail!("--minibatch and --steps must be at least 1");
    }
    crate::loss::check_gp_fraction(o.gp_fraction)?;
    let backend = o.backend.resolve();
    if o.check && backend == BackendKind::Flex {
        bail!(
            "--check compares a GPU backend with flex, and this run is on flex; name a GPU --backend"
        );
    }
    let plain = backend.device()?;
    let devices = backend.devices(o.devices.max(1))?;
    crate::step::shard_group(config.mbstd_group_size, o.minibatch, devices.len())?;
    let device = plain.clone().autodiff();
    let mut sampler = match &o.data {
        Some(path) => {
            let pack = Pack::open(path)?;
            if pack.header.resolution < o.resolution {
                bail!(
                    "{} goes up to {r}×{r}; --resolution {} needs a larger pack",
                    path.display(),
                    o.resolution,
                    r = pack.header.resolution
                );
            }
            Some(RealSampler::new(
                pack,
                0,
                DataCursor::default(),
                SplitMix64::new(3),
                true,
            )?)
        }
        None => None,
    };
    let mut nets = Networks::new(&config, &mut SplitMix64::new(1), &device);
    let mut settings = StepSettings::default();
    settings.wgan.gp_fraction = o.gp_fraction;
    let (mut latent_rng, mut mix_rng, mut reals_rng) =
        (SplitMix64::new(4), SplitMix64::new(5), SplitMix64::new(6));
    let hardware = crate::sessions::hardware_description(
        backend.name(),
        BackendKind::adapter_name(&plain).as_deref(),
    );
    println!(
        "pggan bench: {hardware}{}, {}; G {} params, D {} params, channels {:?}, latent {}, minibatch {}, penalty on {} of the minibatch, reals {}",
        if devices.len() > 1 {
            format!(" ×{} devices", devices.len())
        } else {
            String::new()
        },
        instruction_set(),
        nets.g.num_params(),
        nets.d.num_params(),
        (0..config.num_levels())
            .map(|l| config.channels(l))
            .collect::<Vec<_>>(),
        o.latent,
        o.minibatch,
        settings.wgan.gp_fraction,
        o.data
            .as_ref()
            .map_or("random".to_string(), |p| p.display().to_string()),
    );
    let mut rows = Vec::new();
    for level in 0..config.num_levels() {
        let r = ModelConfig::level_resolution(level);
        if r < o.min_resolution {
            continue;
        }
        let n = o.minibatch;
        nets.adam_g.reset();
        nets.adam_d.reset();
        let mut timed = |nets: Networks, steps: usize| -> Result<(Networks, f64)> {
            let start = Instant::now();
            let mut nets = nets;
            for _ in 0..steps {
                let reals: Tensor<4> = match sampler.as_mut() {
                    Some(s) => {
                        let batch = s.next_batch(n, r, 1.0, &device)?;
                        s.prefetch(n, r)?;
                        batch
                    }
                    None => {
                        tensor_from_f32(reals_rng.normals_f32(n * 3 * r * r), [n, 3, r, r], &device)
                    }
                };
                let random = StepRandom {
                    latents: &mut latent_rng,
                    mix: &mut mix_rng,
                };
                let losses;
                (nets, losses) =
                    nets.step_sharded(reals, level, 1.0, random, &settings, &devices)?;
                // Reading a value waits for every queued kernel.
                let _ = tensor_to_f32(losses.critic);
            }
            plain.sync().ok();
            Ok((nets, start.elapsed().as_secs_f64()))
        };
        (nets, _) = timed(nets, 2)?; // warm-up
        let secs;
        (nets, secs) = timed(nets, o.steps)?;
        let row = BenchRow {
            resolution: r,
            minibatch: n,
            img_per_s: (n * o.steps) as f64 / secs,
            ms_per_step: secs * 1000.0 / o.steps as f64,
            peak_mib: crate::memory::peak_resident_mib(),
        };
        println!(
            "{:>4}×{:<4} minibatch {:>3}  {:>8.2} img/s  {:>9.1} ms/step  peak {}",
            r,
            r,
            n,
            row.img_per_s,
            row.ms_per_step,
            row.peak_mib
                .map_or("?".to_string(), |m| format!("{m:.0} MiB"))
        );
        rows.push(row);
    }
    if o.json {
        println!("{}", serde_json::to_string(&rows)?);
    }
    if o.check {
        let parity = crate::parity::standard_check(&plain, &BackendKind::Flex.device()?);
        println!("check against flex: {}", parity.describe());
        if !parity.agrees() {
            bail!("{} and flex disagree beyond the bounds", backend.name());
        }
    }
    Ok(rows)
}
