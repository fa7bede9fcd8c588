//! The same training steps on two devices, compared: a GPU backend against flex, from identical
//! weights, reals, latents and penalty mixes. `pggan bench --check` prints it; the GPU tests
//! assert on it.

use burn::tensor::{Device, Tensor};
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::weights::{NamedTensor, collect_tensors};
use pggan_model::{ModelConfig, SplitMix64};

use crate::step::{Networks, StepRandom, StepSettings};

/// How far apart two devices' training steps ended.
#[derive(Debug, Clone)]
pub struct StepParity {
    /// Largest difference between the losses of any step (critic loss, Wasserstein estimate,
    /// penalty, drift, generator loss).
    pub loss_diff: f32,
    /// Largest loss magnitude on the reference device.
    pub loss_scale: f32,
    /// Largest difference of any parameter of G, D or the EMA after the steps.
    pub param_diff: f32,
    /// Where that difference is (`"D blocks.1.conv0.weight"`).
    pub worst_param: String,
    /// Parameters compared.
    pub params: usize,
    /// Largest move of any critic parameter from its initial value on the reference device
    /// (that the steps trained at all).
    pub moved: f32,
}

/// Random reals in [-1, 1], `[batch, 3, r, r]` at `level`.
fn reals(batch: usize, level: usize, seed: u64, device: &Device) -> Tensor<4> {
    let r = ModelConfig::level_resolution(level);
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f32> = (0..batch * 3 * r * r)
        .map(|_| (rng.uniform_f64() * 2.0 - 1.0) as f32)
        .collect();
    tensor_from_f32(v, [batch, 3, r, r], device) // [batch, 3, r, r]
}

/// Trains `steps` (level, alpha) from fixed seeds on `device`, each minibatch cut into `shards`
/// ([`Networks::step_sharded`]; 1: [`Networks::step`]): the losses of every step and the networks
/// after them.
fn train_steps(
    device: &Device,
    config: &ModelConfig,
    minibatch: usize,
    steps: &[(usize, f64)],
    shards: usize,
) -> (Vec<f32>, Networks) {
    let devices = vec![device.clone(); shards];
    let device = device.clone().autodiff();
    let mut nets = Networks::new(config, &mut SplitMix64::new(11), &device);
    let (mut latents, mut mix) = (SplitMix64::new(12), SplitMix64::new(13));
    let settings = StepSettings::default();
    let mut losses = Vec::new();
    for (i, &(level, alpha)) in steps.iter().enumerate() {
        let x = reals(minibatch, level, 100 + i as u64, &device);
        let random = StepRandom {
            latents: &mut latents,
            mix: &mut mix,
        };
        let (next, step_losses) = nets
            .step_sharded(x, level, alpha, random, &settings, &devices)
            .expect("a minibatch that splits into whole groups");
        losses.extend(tensor_to_f32(step_losses.critic));
        losses.extend(tensor_to_f32(step_losses.generator));
        nets = next;
    }
    (losses, nets)
}

/// Largest absolute difference between two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every tensor of the three networks, named `G …`, `D …`, `EMA …`.
fn all_tensors(nets: &Networks) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for (prefix, tensors) in [
        ("G", collect_tensors(&nets.g)),
        ("D", collect_tensors(&nets.d)),
        ("EMA", collect_tensors(&nets.ema)),
    ] {
        out.extend(tensors.into_iter().map(|mut t| {
            t.name = format!("{prefix} {}", t.name);
            t
        }));
    }
    out
}

/// Trains the same `steps` on `device` and on `reference` and says how far apart they ended.
pub fn compare_steps(
    device: &Device,
    reference: &Device,
    config: &ModelConfig,
    minibatch: usize,
    steps: &[(usize, f64)],
) -> StepParity {
    compare_runs(
        train_steps(device, config, minibatch, steps, 1),
        train_steps(reference, config, minibatch, steps, 1),
        train_steps(reference, config, minibatch, &[], 1).1,
    )
}

/// Trains the same `steps` on `device` with each minibatch in `shards` and whole, and says how
/// far apart they ended: data-parallel training's check, on one device.
#[cfg(test)]
pub fn compare_shards(
    device: &Device,
    config: &ModelConfig,
    minibatch: usize,
    steps: &[(usize, f64)],
    shards: usize,
) -> StepParity {
    compare_runs(
        train_steps(device, config, minibatch, steps, shards),
        train_steps(device, config, minibatch, steps, 1),
        train_steps(device, config, minibatch, &[], 1).1,
    )
}

/// How far apart two trainings ended (`(losses, networks)`, the second the reference), and how
/// far the reference critic moved from `fresh`.
fn compare_runs(
    (losses, nets): (Vec<f32>, Networks),
    (ref_losses, ref_nets): (Vec<f32>, Networks),
    fresh: Networks,
) -> StepParity {
    let (tensors, ref_tensors) = (all_tensors(&nets), all_tensors(&ref_nets));
    let mut parity = StepParity {
        loss_diff: max_diff(&losses, &ref_losses),
        loss_scale: ref_losses.iter().map(|v| v.abs()).fold(0.0, f32::max),
        param_diff: 0.0,
        worst_param: String::new(),
        params: 0,
        moved: 0.0,
    };
    for (t, r) in tensors.iter().zip(&ref_tensors) {
        debug_assert_eq!(t.name, r.name);
        let diff = max_diff(&t.values, &r.values);
        if diff >= parity.param_diff {
            parity.param_diff = diff;
            parity.worst_param = t.name.clone();
        }
        parity.params += t.values.len();
    }
    for (r, f) in collect_tensors(&ref_nets.d)
        .iter()
        .zip(&collect_tensors(&fresh.d))
    {
        parity.moved = parity.moved.max(max_diff(&r.values, &f.values));
    }
    parity
}

/// The check `pggan bench --check` and the GPU tests run: three steps of a small three-level
/// model, minibatch 8 — one stable at 8×8, two fading in 16×16.
pub fn standard_check(device: &Device, reference: &Device) -> StepParity {
    compare_steps(device, reference, &small_config(), 8, &STANDARD_STEPS)
}

/// The small model of the checks: three levels (to 16×16), 16 channels, latent 16.
pub fn small_config() -> ModelConfig {
    ModelConfig::new()
        .with_resolution(16)
        .with_latent_size(16)
        .with_fmap_base(64)
        .with_fmap_max(16)
}

/// The (level, alpha) of [`standard_check`]'s steps.
pub const STANDARD_STEPS: [(usize, f64); 3] = [(1, 1.0), (2, 0.4), (2, 0.6)];

/// Bounds [`standard_check`] must meet: every loss within 1e-4 of its size, every parameter within
/// 1e-4. Adam's first steps move each weight by about the learning rate (1e-3) whatever the size
/// of its gradient, so a weight whose gradient sign differed between the backends would be off by
/// ~2e-3: the bound says the backends' gradients agree in sign and (through the later steps'
/// normalisation) in size, for every weight. (wgpu on Mesa's software OpenGL driver agrees with
/// flex to 5e-7 in the losses and 3e-7 in the parameters; the bound leaves room for a GPU's own
/// rounding.)
pub const LOSS_TOLERANCE: f32 = 1e-4;
/// See [`LOSS_TOLERANCE`].
pub const PARAM_TOLERANCE: f32 = 1e-4;

impl StepParity {
    /// Whether the bounds hold (and the steps trained at all).
    pub fn agrees(&self) -> bool {
        self.loss_diff <= LOSS_TOLERANCE * self.loss_scale.max(1.0)
            && self.param_diff <= PARAM_TOLERANCE
            && self.moved > 1e-4
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "{} steps ({} parameters of G, D, EMA): losses differ by up to {:.2e} (of {:.3}; bound {:.0e} of that), parameters by up to {:.2e} at {} (bound {:.0e}); {}",
            STANDARD_STEPS.len(),
            self.params,
            self.loss_diff,
            self.loss_scale,
            LOSS_TOLERANCE,
            self.param_diff,
            self.worst_param,
            PARAM_TOLERANCE,
            if self.agrees() { "agree" } else { "DISAGREE" }
        )
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// Data-parallel training's proof without GPUs, end to end: a minibatch of 16 in 2 or 4
    /// shards (whole minibatch-stddev groups of 4), computed one after another on the CPU and
    /// combined by the code that combines GPUs, trains the same three steps (critic with the
    /// gradient penalty, generator, Adam, EMA; one stable, two fading) as the whole minibatch.
    /// The losses agree to float rounding (measured 9.5e-7); the parameters to 3.3e-4: Adam
    /// divides each gradient by its own running size, so where a gradient is near zero the
    /// rounding of a sum in another order moves that weight by up to the learning rate (1e-3)
    /// — a few dozen of 39,515 weights (the bound, 5e-3, allows a few such steps on another CPU's
    /// rounding); the gradients themselves agree to 1e-6 of the largest
    /// (measured ≤ 2.6e-7, `step::tests`).
    #[test]
    fn a_minibatch_in_shards_takes_the_step_of_the_whole() {
        for shards in [2, 4] {
            let p = compare_shards(
                &Device::flex(),
                &small_config(),
                16,
                &STANDARD_STEPS,
                shards,
            );
            println!("{shards} shards: {}", p.describe());
            assert!(
                p.loss_diff <= LOSS_TOLERANCE * p.loss_scale.max(1.0),
                "{shards} shards: {}",
                p.describe()
            );
            assert!(
                p.param_diff <= 5e-3 && p.moved > 1e-4,
                "{shards} shards: {}",
                p.describe()
            );
        }
        // A minibatch that does not split into whole groups is refused, naming the multiple.
        let nets = Networks::new(
            &small_config(),
            &mut SplitMix64::new(1),
            &Device::flex().autodiff(),
        );
        let x = reals(8, 1, 1, &Device::flex().autodiff());
        let (mut a, mut b) = (SplitMix64::new(1), SplitMix64::new(2));
        let random = StepRandom {
            latents: &mut a,
            mix: &mut b,
        };
        let err = nets
            .step_sharded(
                x,
                1,
                1.0,
                random,
                &StepSettings::default(),
                &vec![Device::flex(); 4],
            )
            .err()
            .expect("8 images do not make 4 shards of whole groups of 4");
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }
}
