//! `pggan bench`: training throughput (img/s) per resolution for a model size and backend.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use pggan_model::layers::tensor_from_f32;
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};

use crate::adam::{Adam, AdamParams};
use crate::backend::BackendKind;
use crate::ema::{plain_copy, update_ema};
use crate::loss::{LossKind, WganParams, critic_loss, fakes_for_critic, generator_loss};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Backend.
    pub backend: BackendKind,
    /// Final resolution: every level up to it is measured.
    pub resolution: usize,
    /// Latent size.
    pub latent: usize,
    /// Channel numerator.
    pub fmap_base: usize,
    /// Channel cap.
    pub fmap_max: usize,
    /// Minibatch size (same at every level).
    pub minibatch: usize,
    /// Timed steps per level (after two warm-up steps).
    pub steps: usize,
    /// Only measure levels at or above this resolution.
    pub min_resolution: usize,
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
}

/// Times full WGAN-GP training steps (critic with penalty, generator, EMA) at every level.
pub fn bench(o: &BenchOptions) -> Result<Vec<BenchRow>> {
    let config = ModelConfig::new()
        .with_resolution(o.resolution)
        .with_latent_size(o.latent)
        .with_fmap_base(o.fmap_base)
        .with_fmap_max(o.fmap_max);
    config.validate()?;
    let plain = o.backend.device()?;
    let device = plain.clone().autodiff();
    let mut rng = SplitMix64::new(1);
    let mut g = Generator::new(&config, &mut rng, &device);
    let mut d = Critic::new(&config, &mut rng, &device);
    let mut ema = plain_copy(&g);
    let adam = AdamParams {
        lr: 1e-3,
        beta1: 0.0,
        beta2: 0.99,
        eps: 1e-8,
    };
    let wgan = WganParams {
        gp_lambda: 10.0,
        gp_target: 1.0,
        drift: 0.001,
    };
    println!(
        "pggan bench: backend {}{}, G {} params, D {} params, channels {:?}, latent {}, minibatch {}",
        o.backend.name(),
        BackendKind::adapter_name(&plain)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        g.num_params(),
        d.num_params(),
        (0..config.num_levels())
            .map(|l| config.channels(l))
            .collect::<Vec<_>>(),
        o.latent,
        o.minibatch
    );
    let mut rows = Vec::new();
    for level in 0..config.num_levels() {
        let r = ModelConfig::level_resolution(level);
        if r < o.min_resolution {
            continue;
        }
        let n = o.minibatch;
        let (mut adam_g, mut adam_d) = (Adam::default(), Adam::default());
        let mut step = |g: Generator, d: Critic, ema: Generator, rng: &mut SplitMix64| {
            let reals = tensor_from_f32(rng.normals_f32(n * 3 * r * r), [n, 3, r, r], &device);
            let z = tensor_from_f32(rng.normals_f32(n * o.latent), [n, o.latent], &device);
            let fakes = fakes_for_critic(&g, z, level, 1.0);
            let mix = tensor_from_f32(
                (0..n).map(|_| rng.uniform_f64() as f32).collect(),
                [n, 1, 1, 1],
                &device,
            );
            let closs = critic_loss(LossKind::WganGp, &d, reals, fakes, mix, level, 1.0, wgan);
            let mut grads = closs.loss.backward();
            let d = adam_d.step(d, &mut grads, adam);
            let z = tensor_from_f32(rng.normals_f32(n * o.latent), [n, o.latent], &device);
            let gl = generator_loss(
                LossKind::WganGp,
                &d.clone().no_grad(),
                g.forward(z, level, 1.0),
                level,
                1.0,
            );
            let mut grads = gl.backward();
            let g = adam_g.step(g, &mut grads, adam);
            let ema = update_ema(ema, &g, 0.999);
            // Reading a value forces every queued kernel to finish.
            let _ = pggan_model::layers::tensor_to_f32(closs.stats.inner());
            (g, d, ema)
        };
        for _ in 0..2 {
            (g, d, ema) = step(g, d, ema, &mut rng);
        }
        let start = Instant::now();
        for _ in 0..o.steps {
            (g, d, ema) = step(g, d, ema, &mut rng);
        }
        plain.sync().ok();
        let secs = start.elapsed().as_secs_f64();
        let row = BenchRow {
            resolution: r,
            minibatch: n,
            img_per_s: (n * o.steps) as f64 / secs,
            ms_per_step: secs * 1000.0 / o.steps as f64,
        };
        println!(
            "{:>4}×{:<4} minibatch {:>3}  {:>8.2} img/s  {:>9.1} ms/step",
            r, r, n, row.img_per_s, row.ms_per_step
        );
        rows.push(row);
    }
    Ok(rows)
}
