//! The GPU code path against the CPU one (tests, in a build with the `wgpu` feature): one whole
//! WGAN-GP step — critic step with the hand-written penalty gradient, generator step, Adam, EMA —
//! from identical weights, reals and latents on Vulkan and on flex, stable and while a level fades
//! in; and the critic's hand-written input gradient against Burn's autodiff on Vulkan.
//!
//! On a machine without a GPU these run on Mesa's software Vulkan driver (llvmpipe), with fusion
//! and autotuning on as in a GPU build. They fail, naming the problem, when no Vulkan adapter is
//! found: `bash scripts/test.sh --gpu` installs Mesa's drivers for them.

use burn::cubecl::wgpu::{WgpuBackend, WgpuDevice};
use burn::tensor::{Device, DeviceType, Tensor};
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::{Critic, ModelConfig, SplitMix64};

use crate::parity::{max_diff, small_config, standard_check};

/// The GPU device of these tests (any adapter, software renderers included), or a clear failure:
/// wgpu on the graphics API of `PGGAN_WGPU_API`, OpenGL when it is unset.
fn gpu() -> Device {
    crate::backend::keep_gpu_caches();
    assert!(
        !Device::enumerate(DeviceType::Wgpu).into_vec().is_empty(),
        "no GPU adapter: these tests need a Vulkan or OpenGL driver (on Debian: apt-get install \
         mesa-vulkan-drivers libgl1-mesa-dri libegl-mesa0, which give the software ones, llvmpipe)"
    );
    let api = if std::env::var_os(crate::backend::WGPU_API).is_some() {
        crate::backend::wgpu_api().unwrap()
    } else {
        WgpuBackend::Gl
    };
    Device::new(WgpuDevice::default().on(api))
}

/// One forward pass of G and D agrees, stable and fading (the first thing to fail if a kernel is
/// wrong).
#[test]
fn forward_passes_on_the_gpu_equal_flex() {
    let config = small_config();
    for (level, alpha) in [(0, 1.0), (1, 1.0), (2, 0.5)] {
        let mut outs = Vec::new();
        for device in [gpu(), Device::flex()] {
            let g = pggan_model::Generator::new(&config, &mut SplitMix64::new(3), &device);
            let d = Critic::new(&config, &mut SplitMix64::new(4), &device);
            let z = tensor_from_f32(SplitMix64::new(5).normals_f32(8 * 16), [8, 16], &device);
            let images = g.forward(z, level, alpha); // [8, 3, r, r]
            let scores = d.forward(images.clone(), level, alpha); // [8, 1]
            outs.push((tensor_to_f32(images), tensor_to_f32(scores)));
        }
        let diff = max_diff;
        let (gi, gs) = &outs[0];
        let (ci, cs) = &outs[1];
        assert!(
            diff(gi, ci) < 1e-4,
            "level {level}: images differ by {}",
            diff(gi, ci)
        );
        assert!(
            diff(gs, cs) < 1e-4,
            "level {level}: scores differ by {}: {gs:?} vs {cs:?}",
            diff(gs, cs)
        );
    }
}

#[test]
fn training_steps_on_the_gpu_equal_the_steps_on_flex() {
    let parity = standard_check(&gpu(), &Device::flex());
    assert!(parity.params > 10_000, "{parity:?}");
    assert!(parity.agrees(), "{}", parity.describe());
}

/// The critic's hand-written input gradient equals Burn's autodiff of its scores on the GPU,
/// stable and fading, in f32 (within 1e-4 of the gradient's size).
#[test]
fn the_critic_input_gradient_matches_autodiff_on_the_gpu() {
    let device = gpu().autodiff();
    let config = small_config();
    let critic = Critic::new(&config, &mut SplitMix64::new(5), &device);
    for (level, alpha) in [(0, 1.0), (1, 0.3), (2, 0.75), (2, 1.0)] {
        let r = ModelConfig::level_resolution(level);
        let mut rng = SplitMix64::new(7);
        let x: Tensor<4> = tensor_from_f32(rng.normals_f32(8 * 3 * r * r), [8, 3, r, r], &device);
        let x = x.require_grad();
        let scores = critic.forward(x.clone(), level, alpha);
        let grads = scores.sum().backward();
        let autodiff = tensor_to_f32(x.grad(&grads).expect("input gradient"));
        let (scores, tape) = critic.forward_taped(x.detach(), level, alpha);
        let hand = tensor_to_f32(critic.input_gradient(&tape, scores.ones_like()));
        let scale = autodiff.iter().map(|v| v.abs()).fold(0.0, f32::max);
        let diff = max_diff(&hand, &autodiff);
        assert!(scale > 1e-6, "level {level}: the gradient is zero");
        assert!(
            diff <= 1e-4 * scale,
            "level {level} alpha {alpha}: hand-written and autodiff differ by {diff:e} (size {scale:e})"
        );
    }
}
