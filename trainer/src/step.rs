//! One training step — the critic step with its gradient penalty, the generator step, Adam for
//! both, the EMA generator — with one settings record. `pggan train` and `pggan bench` both run
//! [`Networks::step`], so the benchmark measures the step that trains.

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor};
use pggan_model::layers::mbstd_group;
use pggan_model::tensor::tensor_from_f32;
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};

use crate::adam::{Adam, AdamParams, GradMap, GradSource};
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
                gp_fraction: 1.0,
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

    /// [`Self::step`] data-parallel over `devices` (plain devices; the first is where the
    /// networks live): the minibatch is cut into one shard per device, each a set of whole
    /// minibatch-stddev groups; every shard's critic and generator losses are computed on its
    /// device against a copy of the networks; the gradients are summed onto the first device
    /// (each shard's loss is a mean over `n / k` images, so each is weighted `1 / k`), one Adam
    /// step is taken there, and the next step copies the new weights out again — the scheme of
    /// Burn's `MultiDevice` strategy. The latents and mixing weights are drawn for the whole
    /// minibatch as in [`Self::step`], so the step is the same up to the order of float sums.
    /// One device is exactly [`Self::step`]. A device may repeat (the CPU backend runs the shards
    /// one after another).
    pub fn step_sharded(
        self,
        reals: Tensor<4>,
        level: usize,
        alpha: f64,
        random: StepRandom<'_>,
        settings: &StepSettings,
        devices: &[Device],
    ) -> Result<(Networks, StepLosses)> {
        let k = devices.len();
        if k <= 1 {
            return Ok(self.step(reals, level, alpha, random, settings));
        }
        let Networks {
            g,
            mut d,
            ema,
            mut adam_g,
            mut adam_d,
        } = self;
        let device = reals.device();
        let [n, ..] = reals.dims();
        let group = shard_group(d.mbstd_group_size, n, k)?;
        let latent_size = g.latent_size;
        let latents = |rng: &mut SplitMix64| {
            tensor_from_f32(rng.normals_f32(n * latent_size), [n, latent_size], &device)
        };
        let shards = Shards {
            devices,
            group,
            plain: reals.clone().inner().device(),
        };

        // Critic step.
        let z = latents(random.latents); // [n, latent]
        let mix: Vec<f32> = (0..n).map(|_| random.mix.uniform_f64() as f32).collect();
        let mix = tensor_from_f32(mix, [n, 1, 1, 1], &device);
        let (mut grads, stats) =
            shards.critic_grads(&g, &d, &reals, &z, &mix, level, alpha, settings);
        d = adam_d.step_from(d, GradSource::ByPath(&mut grads), settings.adam);

        // Generator step.
        let z = latents(random.latents); // [n, latent]
        let (mut grads, gen_loss) = shards.generator_grads(&g, &d, &z, level, alpha, settings);
        let g = adam_g.step_from(g, GradSource::ByPath(&mut grads), settings.adam);
        let ema = update_ema(ema, &g, ema_beta(settings.ema_beta, settings.ema_kimg, n));

        let losses = StepLosses {
            critic: stats,
            generator: gen_loss,
        };
        let nets = Networks {
            g,
            d,
            ema,
            adam_g,
            adam_d,
        };
        Ok((nets, losses))
    }
}

/// The minibatch-stddev group of a minibatch of `n` cut into `k` shards of whole groups
/// (`preferred`: the model's group size), or why it cannot be cut so.
pub fn shard_group(preferred: usize, n: usize, k: usize) -> Result<usize> {
    let group = mbstd_group(preferred, n);
    if !n.is_multiple_of(group * k) || mbstd_group(preferred, n / k) != group {
        bail!(
            "a minibatch of {n} does not split over {k} devices into whole groups of {group} (the minibatch-stddev group): use a minibatch that is a multiple of {}",
            group * k
        );
    }
    Ok(group)
}

/// Where a sharded step runs: a device per shard (plain; the first holds the networks), the
/// minibatch-stddev group size the shards keep whole, and where the gradients are summed.
pub struct Shards<'a> {
    /// One plain device per shard.
    pub devices: &'a [Device],
    /// Members of each minibatch-stddev group.
    pub group: usize,
    /// The plain device of the networks, where the gradients are summed.
    pub plain: Device,
}

impl Shards<'_> {
    /// The autodiff device of shard `s`.
    fn device(&self, s: usize) -> Device {
        self.devices[s].clone().autodiff()
    }

    /// The critic's gradients, by path and summed over the shards (each shard's loss is a mean
    /// over its images, weighted by its share), and its loss statistics likewise, for reals,
    /// latents of the fakes and mixing weights of the whole minibatch (`[n, …]`).
    #[allow(clippy::too_many_arguments)]
    pub fn critic_grads(
        &self,
        g: &Generator,
        d: &Critic,
        reals: &Tensor<4>,
        z: &Tensor<2>,
        mix: &Tensor<4>,
        level: usize,
        alpha: f64,
        settings: &StepSettings,
    ) -> (GradMap, Tensor<1>) {
        let k = self.devices.len();
        self.sum_over_shards(|s, dev| {
            let (g_s, d_s) = if *dev == reals.device() {
                (g.clone(), d.clone())
            } else {
                (g.clone().to_device(dev), d.clone().fork(dev))
            };
            let part = |x: &Tensor<4>| shard(x, self.group, s, k).to_device(dev);
            let fakes = fakes_for_critic(
                &g_s,
                shard(z, self.group, s, k).to_device(dev),
                level,
                alpha,
            );
            let closs = critic_loss(
                settings.loss,
                &d_s,
                part(reals),
                fakes,
                part(mix),
                level,
                alpha,
                settings.wgan,
            );
            (d_s, closs.loss.backward(), closs.stats.inner())
        })
    }

    /// The generator's gradients against `d`, by path and summed over the shards, and its loss,
    /// for latents `z` of the whole minibatch (`[n, latent]`).
    pub fn generator_grads(
        &self,
        g: &Generator,
        d: &Critic,
        z: &Tensor<2>,
        level: usize,
        alpha: f64,
        settings: &StepSettings,
    ) -> (GradMap, Tensor<1>) {
        let k = self.devices.len();
        self.sum_over_shards(|s, dev| {
            let (g_s, d_s) = if *dev == z.device() {
                (g.clone(), d.clone())
            } else {
                (g.clone().fork(dev), d.clone().to_device(dev))
            };
            let fakes = g_s.forward(shard(z, self.group, s, k).to_device(dev), level, alpha);
            let gloss = generator_loss(settings.loss, &d_s.no_grad(), fakes, level, alpha);
            (g_s, gloss.backward(), gloss.detach().inner())
        })
    }

    /// Runs `shard_step(s, device)` for every shard — the trained module's copy on that device,
    /// its backward pass and its (detached) losses — and sums the gradients by parameter path and
    /// the losses onto the networks' device, each shard weighted by its share `1 / k`.
    fn sum_over_shards<M: Module>(
        &self,
        mut shard_step: impl FnMut(usize, &Device) -> (M, Gradients, Tensor<1>),
    ) -> (GradMap, Tensor<1>) {
        let weight = 1.0 / self.devices.len() as f64;
        let mut grads = GradMap::new();
        let mut losses: Option<Tensor<1>> = None;
        for s in 0..self.devices.len() {
            let (module, shard_grads, shard_losses) = shard_step(s, &self.device(s));
            gather_grads(&module, &shard_grads, weight, &self.plain, &mut grads);
            let share = shard_losses.to_device(&self.plain).mul_scalar(weight);
            losses = Some(losses.map_or(share.clone(), |t| t + share));
        }
        (grads, losses.expect("at least one shard"))
    }
}

/// Shard `s` of `k` of a minibatch (`[n, …]`) whose minibatch-stddev groups have `group`
/// members: sample `i` is member `i / m` of group `i % m` (`m = n / group`), so the shard takes
/// groups `s·m/k … (s+1)·m/k − 1`, whole, laid out the same way (`[group · m/k, …]`).
pub fn shard<const D: usize>(x: &Tensor<D>, group: usize, s: usize, k: usize) -> Tensor<D> {
    let m = x.dims()[0] / group;
    let per = m / k;
    Tensor::cat(
        (0..group)
            .map(|j| x.clone().narrow(0, j * m + s * per, per))
            .collect(),
        0,
    )
}

/// Adds `module`'s gradients from one backward pass, times `weight`, into `into` by parameter
/// path, on `device`.
fn gather_grads<M: Module>(
    module: &M,
    grads: &Gradients,
    weight: f64,
    device: &Device,
    into: &mut GradMap,
) {
    struct Gather<'a> {
        grads: &'a Gradients,
        weight: f64,
        device: &'a Device,
        into: &'a mut GradMap,
        path: Vec<String>,
    }
    impl ModuleVisitor for Gather<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(grad) = param.val().grad(self.grads) else {
                return;
            };
            let n: usize = grad.dims().iter().product();
            let grad = grad
                .reshape([n])
                .to_device(self.device)
                .mul_scalar(self.weight); // [n]
            let name = self.path.join(".");
            let sum = match self.into.remove(&name) {
                Some(before) => before + grad,
                None => grad,
            };
            self.into.insert(name, sum);
        }
    }
    module.visit(&mut Gather {
        grads,
        weight,
        device,
        into,
        path: Vec::new(),
    });
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::loss::{LossKind, penalty_samples};
    use pggan_model::tensor::tensor_to_f32;

    /// The largest difference between the gradients `a` and `b` as a fraction of the largest
    /// gradient of the network (a sum of terms that cancel, like the critic's output bias —
    /// `1 − 1 + …` — keeps the terms' rounding, not a fraction of its own small size).
    fn relative_diff(a: &GradMap, b: &GradMap) -> f32 {
        assert_eq!(a.len(), b.len());
        let (mut diff, mut size) = (0f32, 1e-12f32);
        for (name, x) in a {
            let (x, y) = (tensor_to_f32(x.clone()), tensor_to_f32(b[name].clone()));
            size = x.iter().fold(size, |m, v| m.max(v.abs()));
            diff = diff.max(crate::parity::max_diff(&x, &y));
        }
        diff / size
    }

    /// The heart of data parallelism: the gradients of both networks — the critic's with the
    /// gradient penalty through the hand-written input gradient — summed over 2 or 4 shards equal
    /// the whole minibatch's to 1e-6 of the largest gradient (float rounding: measured 1.2e-7),
    /// stable and fading, for WGAN-GP and LSGAN.
    #[test]
    fn gradients_summed_over_shards_are_the_whole_minibatchs() {
        let config = crate::parity::small_config();
        let plain = Device::flex();
        let dev = plain.clone().autodiff();
        let nets = Networks::new(&config, &mut SplitMix64::new(11), &dev);
        let n = 16;
        let mut rng = SplitMix64::new(5);
        for loss in [LossKind::WganGp, LossKind::Lsgan] {
            let settings = StepSettings {
                loss,
                ..StepSettings::default()
            };
            for (level, alpha) in [(1, 1.0), (2, 0.4)] {
                let r = ModelConfig::level_resolution(level);
                let reals = tensor_from_f32(rng.normals_f32(n * 3 * r * r), [n, 3, r, r], &dev);
                let z = tensor_from_f32(rng.normals_f32(n * 16), [n, 16], &dev);
                let mix: Vec<f32> = (0..n).map(|_| rng.uniform_f64() as f32).collect();
                let mix = tensor_from_f32(mix, [n, 1, 1, 1], &dev);
                let grads = |k: usize| {
                    let devices = vec![plain.clone(); k];
                    let shards = Shards {
                        devices: &devices,
                        group: 4,
                        plain: plain.clone(),
                    };
                    let (d, stats) = shards
                        .critic_grads(&nets.g, &nets.d, &reals, &z, &mix, level, alpha, &settings);
                    let (g, loss) =
                        shards.generator_grads(&nets.g, &nets.d, &z, level, alpha, &settings);
                    (d, tensor_to_f32(stats), g, tensor_to_f32(loss))
                };
                let (d1, stats1, g1, loss1) = grads(1);
                assert!(!d1.is_empty() && !g1.is_empty());
                for k in [2, 4] {
                    let (dk, statsk, gk, lossk) = grads(k);
                    let (dd, dg) = (relative_diff(&dk, &d1), relative_diff(&gk, &g1));
                    let dl = crate::parity::max_diff(&statsk, &stats1)
                        .max(crate::parity::max_diff(&lossk, &loss1));
                    println!(
                        "{loss:?} level {level} α {alpha}, {k} shards: critic gradients {dd:.1e}, generator {dg:.1e} of their size, losses {dl:.1e}"
                    );
                    assert!(
                        dd < 1e-6 && dg < 1e-6 && dl < 1e-5,
                        "{loss:?} level {level} α {alpha}, {k} shards: {dd:e} {dg:e} {dl:e}"
                    );
                }
            }
        }
    }

    /// `gp_fraction`: the penalty on the minibatch's first `m` images (`m` a multiple of the
    /// stddev group), exactly as a minibatch of only those would have it; λ 0 skips it; the
    /// Wasserstein estimate and the drift stay those of the whole minibatch.
    #[test]
    fn the_penalty_may_run_on_part_of_the_minibatch() {
        assert_eq!(
            [
                penalty_samples(32, 1.0, 4),
                penalty_samples(32, 0.25, 4),
                penalty_samples(32, 0.2, 4),
                penalty_samples(16, 0.1, 4),
                penalty_samples(6, 0.5, 3),
            ],
            [32, 8, 8, 4, 3]
        );
        let config = crate::parity::small_config();
        let dev = Device::flex().autodiff();
        let nets = Networks::new(&config, &mut SplitMix64::new(11), &dev);
        let (n, level, r) = (16, 1, 8);
        let mut rng = SplitMix64::new(5);
        let reals = tensor_from_f32(rng.normals_f32(n * 3 * r * r), [n, 3, r, r], &dev);
        let fakes = tensor_from_f32(rng.normals_f32(n * 3 * r * r), [n, 3, r, r], &dev);
        let mix: Vec<f32> = (0..n).map(|_| rng.uniform_f64() as f32).collect();
        let mix = tensor_from_f32(mix, [n, 1, 1, 1], &dev);
        // [loss, Wasserstein estimate, penalty, drift] on the first `m` images.
        let stats = |m: usize, gp_lambda: f64, gp_fraction: f64| {
            let p = WganParams {
                gp_lambda,
                gp_fraction,
                ..StepSettings::default().wgan
            };
            let l = crate::loss::critic_loss(
                LossKind::WganGp,
                &nets.d,
                reals.clone().narrow(0, 0, m),
                fakes.clone().narrow(0, 0, m),
                mix.clone().narrow(0, 0, m),
                level,
                1.0,
                p,
            );
            tensor_to_f32(l.stats)
        };
        let (whole, quarter, first4, none) = (
            stats(n, 10.0, 1.0),
            stats(n, 10.0, 0.25),
            stats(4, 10.0, 1.0),
            stats(n, 0.0, 1.0),
        );
        println!("whole {whole:?}, a quarter {quarter:?}, first 4 {first4:?}, λ 0 {none:?}");
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * b.abs().max(1e-3);
        assert!(
            whole[2] > 1e-3 && !close(whole[2], first4[2]),
            "{whole:?} {first4:?}"
        );
        assert!(close(quarter[2], first4[2]), "{quarter:?} {first4:?}");
        assert_eq!(none[2], 0.0);
        for s in [&quarter, &none] {
            assert!(
                close(s[1], whole[1]) && close(s[3], whole[3]),
                "{s:?} {whole:?}"
            );
            assert!(close(s[0], -s[1] + s[2] + s[3]), "{s:?}");
        }
    }
}
