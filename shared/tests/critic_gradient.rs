//! The hand-written critic input gradient against Burn's autodiff, and the gradient penalty's
//! parameter gradients against central finite differences — all in f64.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, FloatDType, Gradients, Tensor};
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::weights::{NamedTensor, apply_tensors, collect_tensors};
use pggan_model::{Critic, ModelConfig, SplitMix64};

/// The flex device with f64 as its float type (configured once per test binary).
fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut d = Device::flex();
            d.configure(FloatDType::F64).expect("flex supports f64");
            d
        })
        .clone()
        .autodiff()
}

fn small_config() -> ModelConfig {
    ModelConfig::new()
        .with_resolution(32)
        .with_latent_size(8)
        .with_fmap_base(32)
        .with_fmap_max(6)
}

fn to_f64<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn images(batch: usize, res: usize, seed: u64) -> Tensor<4> {
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f64> = (0..batch * 3 * res * res)
        .map(|_| rng.normal_f64())
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(v, [batch, 3, res, res]),
        &device(),
    )
}

/// A critic whose biases are non-zero too (so every term of the gradient is exercised).
fn critic(seed: u64) -> Critic {
    let c = Critic::new(&small_config(), &mut SplitMix64::new(seed), &device());
    let mut rng = SplitMix64::new(seed + 100);
    let tensors: Vec<NamedTensor> = collect_tensors(&c)
        .into_iter()
        .map(|mut t| {
            if t.name.ends_with("bias") {
                t.values
                    .iter_mut()
                    .for_each(|v| *v = 0.1 * rng.normal_f64() as f32);
            }
            t
        })
        .collect();
    apply_tensors(c, tensors).unwrap()
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn check_input_gradient(level: usize, alpha: f64, batch: usize) {
    let c = critic(1);
    let res = 4 << level;
    let x = images(batch, res, 2).require_grad();
    // Burn's own dD/dx of the summed scores.
    let scores = c.forward(x.clone(), level, alpha);
    let grads = scores.sum().backward();
    let autodiff = to_f64(x.grad(&grads).expect("input gradient"));
    // The hand-written VJP.
    let (scores, tape) = c.forward_taped(x.detach(), level, alpha);
    let hand = to_f64(c.input_gradient(&tape, scores.ones_like()));
    let err = max_rel_err(&hand, &autodiff);
    // f64: rounding alone stays near 1e-10 (the stddev's groups are sums of slices); a wrong term
    // would be off by far more than 1e-9.
    assert!(
        err < 1e-9,
        "level {level} alpha {alpha} batch {batch}: relative error {err:e}"
    );
    assert!(
        autodiff.iter().any(|v| v.abs() > 1e-6),
        "gradient is not trivially zero"
    );
}

#[test]
fn input_gradient_matches_autodiff_at_4x4() {
    check_input_gradient(0, 1.0, 8);
}

#[test]
fn input_gradient_matches_autodiff_while_fading_in() {
    check_input_gradient(1, 0.3, 8);
    check_input_gradient(2, 0.75, 4);
    check_input_gradient(3, 0.2, 4);
}

#[test]
fn input_gradient_matches_autodiff_when_stable() {
    check_input_gradient(2, 1.0, 8);
    check_input_gradient(3, 1.0, 4);
}

#[test]
fn input_gradient_matches_autodiff_with_odd_group() {
    // Batch 6 → stddev groups of 3.
    check_input_gradient(1, 0.5, 6);
}

/// λ·mean((‖∇ₓD(x)‖ − 1)²), the WGAN-GP penalty.
fn penalty(c: &Critic, x: Tensor<4>, level: usize, alpha: f64) -> Tensor<1> {
    let (norms, _) = c.input_gradient_norms(x, level, alpha);
    (norms - 1.0).square().mean().mul_scalar(10.0)
}

struct GradCollector<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    out: BTreeMap<String, Vec<f64>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.insert(self.path.join("."), to_f64(g));
        }
    }
}

fn check_penalty_gradients(level: usize, alpha: f64, batch: usize, params: &[&str]) {
    let c = critic(5);
    let res = 4 << level;
    let x = images(batch, res, 6);
    let grads = penalty(&c, x.clone(), level, alpha).backward();
    let mut collector = GradCollector {
        grads: &grads,
        path: vec![],
        out: BTreeMap::new(),
    };
    c.visit(&mut collector);
    let analytic = collector.out;
    let base = collect_tensors(&c);
    let h = 1e-6;
    let mut rng = SplitMix64::new(9);
    for name in params {
        let t = base.iter().find(|t| t.name == *name).unwrap();
        // A parameter off the penalty's path (e.g. a bias feeding only leaky-ReLU masks) has no
        // gradient entry: its true gradient is zero, and finite differences must agree.
        let zeros = vec![0.0; t.values.len()];
        let g = analytic.get(*name).unwrap_or(&zeros);
        for _ in 0..3 {
            let i = rng.below(t.values.len() as u64) as usize;
            let eval = |delta: f64| {
                // Perturb in f64 directly on the parameter tensor.
                let mut perturbed = c.clone();
                perturbed = perturb(perturbed, name, i, delta);
                let p = penalty(&perturbed, x.clone(), level, alpha);
                to_f64(p)[0]
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h);
            let an = g[i];
            let err = (fd - an).abs() / an.abs().max(fd.abs()).max(1e-4);
            assert!(
                err < 1e-5,
                "{name}[{i}] level {level} alpha {alpha}: analytic {an:e} vs finite difference {fd:e} (rel {err:e})"
            );
        }
    }
}

struct Perturb<'a> {
    name: &'a str,
    index: usize,
    delta: f64,
    path: Vec<String>,
}

impl burn::module::ModuleMapper for Perturb<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.path.join(".") != self.name {
            return param;
        }
        let (index, delta) = (self.index, self.delta);
        param.map(|t| {
            let dims = t.dims();
            let n: usize = dims.iter().product();
            let mut bump = vec![0.0f64; n];
            bump[index] = delta;
            let bump =
                Tensor::<1>::from_data(burn::tensor::TensorData::new(bump, [n]), &t.device())
                    .reshape(dims);
            (t.detach() + bump).detach()
        })
    }
}

fn perturb(c: Critic, name: &str, index: usize, delta: f64) -> Critic {
    c.map(&mut Perturb {
        name,
        index,
        delta,
        path: vec![],
    })
}

#[test]
fn penalty_gradients_match_finite_differences_at_4x4() {
    check_penalty_gradients(
        0,
        1.0,
        8,
        &[
            "from_rgb.0.weight",
            "conv4.weight",
            "dense0.weight",
            "dense1.weight",
            "conv4.bias",
            "from_rgb.0.bias",
        ],
    );
}

#[test]
fn penalty_gradients_match_finite_differences_while_fading_in() {
    check_penalty_gradients(
        2,
        0.4,
        8,
        &[
            "from_rgb.2.weight",
            "from_rgb.1.weight",
            "blocks.1.conv0.weight",
            "blocks.1.conv1.weight",
            "blocks.0.conv1.bias",
            "dense0.weight",
        ],
    );
}

#[test]
fn penalty_gradients_match_finite_differences_fading_in_at_32x32() {
    check_penalty_gradients(
        3,
        0.3,
        4,
        &[
            "from_rgb.3.weight",
            "from_rgb.3.bias",
            "from_rgb.2.weight",
            "blocks.2.conv0.weight",
            "blocks.2.conv1.weight",
            "blocks.1.conv0.bias",
            "conv4.weight",
        ],
    );
}

#[test]
fn penalty_gradients_match_finite_differences_with_stddev_groups_of_3() {
    check_penalty_gradients(
        1,
        1.0,
        6,
        &[
            "blocks.0.conv0.weight",
            "blocks.0.conv0.bias",
            "conv4.weight",
        ],
    );
}

#[test]
fn f32_helpers_work_on_f64_device() {
    let t = tensor_from_f32(vec![1.5, -2.0], [2], &device());
    assert_eq!(tensor_to_f32(t), vec![1.5, -2.0]);
}
