//! The losses: WGAN-GP with drift (the paper's) and LSGAN.
//!
//! WGAN-GP's penalty needs `∇ₓD(x̂)`, which comes from the critic's hand-written input gradient
//! ([`pggan_model::Critic::input_gradient`]), so one `backward()` over the whole critic loss gives
//! every critic gradient.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Tensor;
use clap::ValueEnum;
use pggan_model::layers::mbstd_group;
use pggan_model::{Critic, Generator};
use serde::{Deserialize, Serialize};

/// Which GAN loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Wasserstein loss with gradient penalty and drift term (the paper's).
    WganGp,
    /// Least-squares GAN.
    Lsgan,
}

/// Weights of the WGAN-GP terms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WganParams {
    /// λ of the gradient penalty (10).
    pub gp_lambda: f64,
    /// Target gradient norm (1).
    pub gp_target: f64,
    /// The share of the minibatch the penalty is taken on (1, the paper's: all of it).
    pub gp_fraction: f64,
    /// ε of the drift term `ε·D(real)²` (0.001).
    pub drift: f64,
}

/// Number of entries of [`CriticLoss::stats`].
pub const CRITIC_STATS: usize = 4;

/// A critic loss and its parts, for the logs.
pub struct CriticLoss {
    /// What `backward()` runs on.
    pub loss: Tensor<1>,
    /// `[loss, Wasserstein estimate, penalty, drift]`, detached.
    pub stats: Tensor<1>,
}

/// Fakes for the critic step: the generator run without recording a graph (its gradient is not
/// needed there), then placed back on the training device as constants. `z` is `[n, latent]`.
pub fn fakes_for_critic(g: &Generator, z: Tensor<2>, level: usize, alpha: f64) -> Tensor<4> {
    let device = z.device();
    let fakes = g.valid().forward(z.inner(), level, alpha); // [n, 3, r, r]
    Tensor::from_inner(fakes).to_device(&device)
}

/// The critic's loss on a minibatch of reals and (detached) fakes.
///
/// WGAN-GP: `mean D(fake) − mean D(real) + λ·mean((‖∇D(x̂)‖ − 1)²) + ε·mean D(real)²`, with
/// `x̂ = real + (fake − real)·mix` and `mix` (`[n, 1, 1, 1]`) uniform in `[0, 1)` per sample;
/// the penalty's mean is over the first [`penalty_samples`] of them (all, the paper's, unless
/// `p.gp_fraction` is below 1).
/// LSGAN: `mean (D(real) − 1)² + mean D(fake)²`.
#[allow(clippy::too_many_arguments)]
pub fn critic_loss(
    kind: LossKind,
    critic: &Critic,
    reals: Tensor<4>,
    fakes: Tensor<4>,
    mix: Tensor<4>,
    level: usize,
    alpha: f64,
    p: WganParams,
) -> CriticLoss {
    let real_scores = critic.forward(reals.clone(), level, alpha); // [n, 1]
    let fake_scores = critic.forward(fakes.clone(), level, alpha); // [n, 1]
    let wdist = real_scores.clone().mean() - fake_scores.clone().mean(); // [1]
    match kind {
        LossKind::WganGp => {
            // The penalty on the first m images (λ 0: none, and none of its passes run).
            let [n, ..] = reals.dims();
            let m = penalty_samples(n, p.gp_fraction, mbstd_group(critic.mbstd_group_size, n));
            let penalty = if p.gp_lambda == 0.0 {
                wdist.zeros_like()
            } else {
                let (reals, fakes, mix) = if m < n {
                    (
                        reals.narrow(0, 0, m),
                        fakes.narrow(0, 0, m),
                        mix.narrow(0, 0, m),
                    )
                } else {
                    (reals, fakes, mix)
                };
                let mixed = reals.clone() + (fakes - reals) * mix; // [m, 3, r, r]
                let (norms, _) = critic.input_gradient_norms(mixed.detach(), level, alpha); // [m]
                (norms - p.gp_target)
                    .square()
                    .mean()
                    .mul_scalar(p.gp_lambda / (p.gp_target * p.gp_target))
            };
            let drift = real_scores.square().mean().mul_scalar(p.drift);
            let loss = -wdist.clone() + penalty.clone() + drift.clone();
            let stats = Tensor::cat(vec![loss.clone(), wdist, penalty, drift], 0).detach();
            CriticLoss { loss, stats }
        }
        LossKind::Lsgan => {
            let loss = (real_scores - 1.0).square().mean() + fake_scores.square().mean();
            let zero = loss.zeros_like();
            let stats = Tensor::cat(vec![loss.clone(), wdist, zero.clone(), zero], 0).detach();
            CriticLoss { loss, stats }
        }
    }
}

/// Refuses a `--gp-fraction` outside (0, 1], naming it (`train` and `bench` both take it).
pub fn check_gp_fraction(fraction: f64) -> Result<()> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        bail!(
            "--gp-fraction must be in (0, 1] (1: the penalty on the whole minibatch; got {fraction})"
        );
    }
    Ok(())
}

/// How many of a minibatch of `n` images the penalty is taken on: `fraction` of them, rounded up
/// to whole minibatch-stddev groups of `group`, at least one group and at most all.
pub fn penalty_samples(n: usize, fraction: f64, group: usize) -> usize {
    let group = group.clamp(1, n.max(1));
    let m = (n as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize;
    (m.div_ceil(group) * group).clamp(group, n.max(1))
}

/// The generator's loss on its fakes as judged by `critic`: `−mean D(fake)` (WGAN) or
/// `mean (D(fake) − 1)²` (LSGAN).
pub fn generator_loss(
    kind: LossKind,
    critic: &Critic,
    fakes: Tensor<4>,
    level: usize,
    alpha: f64,
) -> Tensor<1> {
    let scores = critic.forward(fakes, level, alpha); // [n, 1]
    match kind {
        LossKind::WganGp => -scores.mean(),
        LossKind::Lsgan => (scores - 1.0).square().mean(),
    }
}
