//! One training step — the critic step with its gradient penalty, the generator step, Adam for
//! both, the EMA generator — with one settings record. `pggan train` and `pggan bench` both run
//! [`Networks::step`], so the benchmark measures the step that trains.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use pggan_model::tensor::tensor_from_f32;
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};

use crate::adam::{Adam, AdamParams};
use crate::ema::{ema_beta, update_ema};
use crate::loss::{LossKind, WganParams, critic_loss, fakes_for_critic, generator_loss};

/// How a step trains: the loss, Adam, and the generator average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepSettings {
    /// The GAN loss.
    pub loss: LossKind,
    /// WGAN-GP's penalty and drift weights.
    pub wgan: WganParams,
    /// Adam's parameters (both networks).
    pub adam: AdamParams,
    /// EMA β per step.
    pub ema_beta: f64,
    /// EMA half-life in kimg (overrides `ema_beta`).
    pub ema_kimg: Option<f64>,
}

impl Default for StepSettings {
    /// The paper's: WGAN-GP with λ 10 and drift 0.001, Adam lr 0.001, β 0 / 0.99, ε 1e-8, and an
    /// EMA β of 0.999.
    fn default() -> Self {
        StepSettings {
            loss: LossKind::WganGp,
            wgan: WganParams {
                gp_lambda: 10.0,
                gp_target: 1.0,
                drift: 0.001,
            },
            adam: AdamParams {
                lr: 1e-3,
                beta1: 0.0,
                beta2: 0.99,
                eps: 1e-8,
            },
            ema_beta: 0.999,
            ema_kimg: None,
        }
    }
}

/// What a run trains: both networks (on the autodiff device), the EMA generator (plain device)
/// and Adam's state for each network.
pub struct Networks {
    /// The generator.
    pub g: Generator,
    /// The critic.
    pub d: Critic,
    /// The exponential moving average of the generator.
    pub ema: Generator,
    /// Adam's state for the generator.
    pub adam_g: Adam,
    /// Adam's state for the critic.
    pub adam_d: Adam,
}

/// The random streams a step draws from.
pub struct StepRandom<'a> {
    /// Latents of the fakes (critic step, then generator step).
    pub latents: &'a mut SplitMix64,
    /// The penalty's mixing weights between reals and fakes.
    pub mix: &'a mut SplitMix64,
}

/// The losses of a step, detached, still on the device (reading them forces a sync).
pub struct StepLosses {
    /// `[critic loss, Wasserstein estimate, penalty, drift]`.
    pub critic: Tensor<1>,
    /// `[generator loss]`.
    pub generator: Tensor<1>,
}

impl Networks {
    /// New networks for `config` drawn from `init`, with a fresh EMA and optimiser.
    pub fn new(config: &ModelConfig, init: &mut SplitMix64, device: &Device) -> Networks {
        let g = Generator::new(config, init, device);
        let d = Critic::new(config, init, device);
        Networks {
            ema: g.valid(),
            g,
            d,
            adam_g: Adam::default(),
            adam_d: Adam::default(),
        }
    }

    /// One step on `reals` (`[n, 3, r, r]` at `level`, already cross-faded by `alpha`): the
    /// critic takes a step on its loss (WGAN-GP: with the penalty, through the critic's
    /// hand-written input gradient), then the generator on its loss against the updated critic,
    /// then the EMA follows the generator.
    pub fn step(
        self,
        reals: Tensor<4>,
        level: usize,
        alpha: f64,
        random: StepRandom<'_>,
        settings: &StepSettings,
    ) -> (Networks, StepLosses) {
        let Networks {
            g,
            mut d,
            ema,
            mut adam_g,
            mut adam_d,
        } = self;
        let device = reals.device();
        let [n, ..] = reals.dims();
        let latent_size = g.latent_size;
        let latents = |rng: &mut SplitMix64| {
            tensor_from_f32(rng.normals_f32(n * latent_size), [n, latent_size], &device)
        };

        // Critic step.
        let fakes = fakes_for_critic(&g, latents(random.latents), level, alpha); // [n, 3, r, r]
        let mix: Vec<f32> = (0..n).map(|_| random.mix.uniform_f64() as f32).collect();
        let mix = tensor_from_f32(mix, [n, 1, 1, 1], &device);
        let closs = critic_loss(
            settings.loss,
            &d,
            reals,
            fakes,
            mix,
            level,
            alpha,
            settings.wgan,
        );
        let mut grads = closs.loss.backward();
        d = adam_d.step(d, &mut grads, settings.adam);

        // Generator step.
        let fakes = g.forward(latents(random.latents), level, alpha); // [n, 3, r, r]
        let gloss = generator_loss(settings.loss, &d.clone().no_grad(), fakes, level, alpha);
        let mut grads = gloss.backward();
        let g = adam_g.step(g, &mut grads, settings.adam);
        let ema = update_ema(ema, &g, ema_beta(settings.ema_beta, settings.ema_kimg, n));

        let losses = StepLosses {
            critic: closs.stats.inner(),
            generator: gloss.detach().inner(),
        };
        let nets = Networks {
            g,
            d,
            ema,
            adam_g,
            adam_d,
        };
        (nets, losses)
    }
}
