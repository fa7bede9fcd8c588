//! Writes a small critic, fixed inputs, its WGAN-GP loss and the loss's parameter gradients to a
//! folder, so `bench/crosscheck_critic.py` can recompute them with PyTorch's double backprop.
//!
//!     cargo run --release -p pggan-model --example critic_loss_dump -- /tmp/crosscheck

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, FloatDType, Gradients, Tensor, TensorData};
use pggan_model::weights::{NamedTensor, WeightDtype, collect_tensors, encode};
use pggan_model::{Critic, ModelConfig, SplitMix64};

struct Grads<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.dims().to_vec();
        let values = match param.val().grad(self.grads) {
            Some(g) => g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap(),
            None => vec![0.0; shape.iter().product()],
        };
        self.out.push(NamedTensor {
            name: self.path.join("."),
            shape,
            values,
        });
    }
}

fn main() {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "crosscheck".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let mut dev = Device::flex();
    dev.configure(FloatDType::F64).unwrap();
    let device = dev.autodiff();
    let config = ModelConfig::new()
        .with_resolution(16)
        .with_latent_size(8)
        .with_fmap_base(64)
        .with_fmap_max(16);
    let (level, alpha, n) = (2usize, 0.6f64, 8usize);
    let critic = Critic::new(&config, &mut SplitMix64::new(1), &device);
    let mut rng = SplitMix64::new(2);
    // Values exactly representable in f32, so the files carry them without rounding.
    let mut data =
        |len: usize| -> Vec<f64> { (0..len).map(|_| rng.normal_f64() as f32 as f64).collect() };
    let (reals, fakes) = (data(n * 3 * 16 * 16), data(n * 3 * 16 * 16));
    let mix: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
    let t = |v: &[f64], shape: [usize; 4]| {
        Tensor::<4>::from_data(TensorData::new(v.to_vec(), shape), &device)
    };
    let (r, f, u) = (
        t(&reals, [n, 3, 16, 16]),
        t(&fakes, [n, 3, 16, 16]),
        t(&mix, [n, 1, 1, 1]),
    );
    let real_scores = critic.forward(r.clone(), level, alpha);
    let fake_scores = critic.forward(f.clone(), level, alpha);
    let mixed = r.clone() + (f - r) * u;
    let (norms, _) = critic.input_gradient_norms(mixed, level, alpha);
    let penalty = (norms - 1.0).square().mean().mul_scalar(10.0);
    let loss = fake_scores.mean() - real_scores.clone().mean()
        + penalty.clone()
        + real_scores.square().mean().mul_scalar(0.001);
    let grads = loss.backward();
    let mut g = Grads {
        grads: &grads,
        path: vec![],
        out: vec![],
    };
    critic.visit(&mut g);
    let f64s = |t: Tensor<1>| t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0];
    let inputs = vec![
        NamedTensor {
            name: "reals".into(),
            shape: vec![n, 3, 16, 16],
            values: reals.iter().map(|&v| v as f32).collect(),
        },
        NamedTensor {
            name: "fakes".into(),
            shape: vec![n, 3, 16, 16],
            values: fakes.iter().map(|&v| v as f32).collect(),
        },
        NamedTensor {
            name: "mix".into(),
            shape: vec![n],
            values: mix.iter().map(|&v| v as f32).collect(),
        },
    ];
    let meta = BTreeMap::from([
        ("loss".to_string(), format!("{:.12e}", f64s(loss))),
        ("penalty".to_string(), format!("{:.12e}", f64s(penalty))),
        ("level".to_string(), level.to_string()),
        ("alpha".to_string(), alpha.to_string()),
        (
            "config".to_string(),
            serde_json::to_string(&config).unwrap(),
        ),
    ]);
    std::fs::write(
        out.join("critic.safetensors"),
        encode(&collect_tensors(&critic), WeightDtype::F32, &meta).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("inputs.safetensors"),
        encode(&inputs, WeightDtype::F32, &BTreeMap::new()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("grads.safetensors"),
        encode(&g.out, WeightDtype::F32, &BTreeMap::new()).unwrap(),
    )
    .unwrap();
    println!(
        "wrote {}: loss {} penalty {}",
        out.display(),
        meta["loss"],
        meta["penalty"]
    );
}
