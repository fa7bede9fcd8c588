//! Generator and critic shapes, the fade-in, and the weight file format.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use pggan_model::latent::latents_for_seeds;
use pggan_model::layers::{downsample2x, upsample2x};
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::weights::{
    WeightDtype, WeightsError, apply_tensors, collect_tensors, decode, generator_from_bytes,
    snapshot_to_bytes, truncate_to_level,
};
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};

fn dev() -> Device {
    Device::flex()
}

fn config() -> ModelConfig {
    ModelConfig::new()
        .with_resolution(32)
        .with_latent_size(16)
        .with_fmap_base(64)
        .with_fmap_max(16)
}

fn latents(n: usize) -> Tensor<2> {
    tensor_from_f32(latents_for_seeds(0, n, 16), [n, 16], &dev())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn generator_outputs_every_level() {
    let g = Generator::new(&config(), &mut SplitMix64::new(1), &dev());
    assert_eq!(g.num_levels(), 4);
    for level in 0..4 {
        let img = g.forward(latents(3), level, 1.0);
        assert_eq!(img.dims(), [3, 3, 4 << level, 4 << level]);
        let v = tensor_to_f32(img);
        assert!(v.iter().all(|x| x.is_finite()));
        assert!(v.iter().map(|x| x.abs()).sum::<f32>() > 0.0);
    }
}

#[test]
fn generator_fade_blends_old_and_new_outputs() {
    let g = Generator::new(&config(), &mut SplitMix64::new(2), &dev());
    let old = tensor_to_f32(upsample2x(g.forward(latents(2), 1, 1.0)));
    let new = tensor_to_f32(g.forward(latents(2), 2, 1.0));
    assert!(max_abs_diff(&tensor_to_f32(g.forward(latents(2), 2, 0.0)), &old) < 1e-5);
    let mid = tensor_to_f32(g.forward(latents(2), 2, 0.25));
    let expect: Vec<f32> = old
        .iter()
        .zip(&new)
        .map(|(o, n)| o + (n - o) * 0.25)
        .collect();
    assert!(max_abs_diff(&mid, &expect) < 1e-5);
    assert!(max_abs_diff(&old, &new) > 1e-2, "the two levels differ");
}

#[test]
fn critic_fade_at_zero_equals_previous_level_on_pooled_images() {
    let c = Critic::new(&config(), &mut SplitMix64::new(3), &dev());
    let mut rng = SplitMix64::new(4);
    let x = tensor_from_f32(rng.normals_f32(4 * 3 * 16 * 16), [4, 3, 16, 16], &dev());
    let at_zero = tensor_to_f32(c.forward(x.clone(), 2, 0.0));
    let lower = tensor_to_f32(c.forward(downsample2x(x.clone()), 1, 1.0));
    assert!(
        max_abs_diff(&at_zero, &lower) < 1e-4,
        "{at_zero:?} vs {lower:?}"
    );
    let full = tensor_to_f32(c.forward(x.clone(), 2, 1.0));
    assert!(max_abs_diff(&full, &lower) > 1e-3);
    assert_eq!(c.forward(x, 2, 0.6).dims(), [4, 1]);
}

#[test]
fn minibatch_stddev_makes_scores_depend_on_the_group() {
    let c = Critic::new(&config(), &mut SplitMix64::new(5), &dev());
    let mut rng = SplitMix64::new(6);
    let a = rng.normals_f32(4 * 3 * 4 * 4);
    let mut b = a.clone();
    // Change only sample 3; sample 0 shares no group with it at group 4? It does: 4 samples, one group.
    for v in &mut b[3 * 48..] {
        *v += 1.0;
    }
    let sa = tensor_to_f32(c.forward(tensor_from_f32(a, [4, 3, 4, 4], &dev()), 0, 1.0));
    let sb = tensor_to_f32(c.forward(tensor_from_f32(b, [4, 3, 4, 4], &dev()), 0, 1.0));
    assert!(
        (sa[0] - sb[0]).abs() > 1e-6,
        "sample 0's score must see its group's spread"
    );
}

#[test]
fn weights_round_trip_in_f32_exactly_and_f16_closely() {
    let cfg = config();
    let g = Generator::new(&cfg, &mut SplitMix64::new(7), &dev());
    let top = cfg.num_levels() - 1;
    let save = |dtype| snapshot_to_bytes(&g, &cfg, top, 1.0, 12.5, dtype, &[]).unwrap();
    let bytes = save(WeightDtype::F32);
    let (g2, cfg2, meta2) = generator_from_bytes(&bytes, &dev()).unwrap();
    assert_eq!(cfg2, cfg);
    assert_eq!(meta2.get("kimg").map(String::as_str), Some("12.500"));
    assert_eq!(collect_tensors(&g), collect_tensors(&g2));
    let a = tensor_to_f32(g.forward(latents(2), 3, 1.0));
    assert_eq!(a, tensor_to_f32(g2.forward(latents(2), 3, 1.0)));

    let bf = save(WeightDtype::BF16);
    let (g_bf, _, _) = generator_from_bytes(&bf, &dev()).unwrap();
    let out_bf = tensor_to_f32(g_bf.forward(latents(2), 3, 1.0));
    // bf16 keeps 8 mantissa bits: the output moves by well under a tenth of its spread.
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let err: Vec<f32> = a.iter().zip(&out_bf).map(|(x, y)| x - y).collect();
    assert!(
        rms(&err) < 0.1 * rms(&a),
        "bf16 output drifted: rms error {} vs rms {}",
        rms(&err),
        rms(&a)
    );
    let half = save(WeightDtype::F16);
    assert!(half.len() < bytes.len() * 6 / 10);
    let (g3, _, _) = generator_from_bytes(&half, &dev()).unwrap();
    let c = tensor_to_f32(g3.forward(latents(2), 3, 1.0));
    let scale = a.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(max_abs_diff(&a, &c) < 0.02 * scale, "f16 output drifted");
}

#[test]
fn stage_snapshots_load_as_smaller_generators() {
    let cfg = config();
    let g = Generator::new(&cfg, &mut SplitMix64::new(8), &dev());
    let kept = truncate_to_level(collect_tensors(&g), 1);
    let small_cfg = cfg.clone().with_resolution(8);
    let small = apply_tensors(
        Generator::new(&small_cfg, &mut SplitMix64::new(0), &dev()),
        kept,
    )
    .unwrap();
    let a = tensor_to_f32(g.forward(latents(2), 1, 1.0));
    assert_eq!(a, tensor_to_f32(small.forward(latents(2), 1, 1.0)));
}

#[test]
fn bad_weight_files_are_refused_with_reasons() {
    let cfg = config();
    let g = Generator::new(&cfg, &mut SplitMix64::new(9), &dev());
    assert!(matches!(
        decode(b"not a safetensors file"),
        Err(WeightsError::Format(_))
    ));
    let top = cfg.num_levels() - 1;
    let bytes = snapshot_to_bytes(&g, &cfg, top, 1.0, 0.0, WeightDtype::F32, &[]).unwrap();
    assert!(matches!(
        decode(&bytes[..bytes.len() / 2]),
        Err(WeightsError::Format(_))
    ));
    // A model of another shape.
    let other = Generator::new(
        &cfg.clone().with_fmap_max(8),
        &mut SplitMix64::new(0),
        &dev(),
    );
    let err = apply_tensors(other, collect_tensors(&g)).unwrap_err();
    assert!(matches!(err, WeightsError::Shape { .. }), "{err}");
    // Missing and extra tensors.
    let mut fewer = collect_tensors(&g);
    fewer.retain(|t| t.name != "conv4.bias");
    let err =
        apply_tensors(Generator::new(&cfg, &mut SplitMix64::new(0), &dev()), fewer).unwrap_err();
    assert!(err.to_string().contains("conv4.bias"), "{err}");
    let small = Generator::new(
        &cfg.clone().with_resolution(8),
        &mut SplitMix64::new(0),
        &dev(),
    );
    assert!(matches!(
        apply_tensors(small, collect_tensors(&g)),
        Err(WeightsError::Unexpected(_))
    ));
    // Non-finite weights are never written.
    let mut poisoned = collect_tensors(&g);
    poisoned[0].values[0] = f32::NAN;
    assert!(matches!(
        pggan_model::weights::encode(&poisoned, WeightDtype::F16, &BTreeMap::new()),
        Err(WeightsError::NotFinite(_))
    ));
}
