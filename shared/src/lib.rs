#![warn(missing_docs)]
//! # pggan-model
//!
//! The model of *Progressive Growing of GANs for Improved Quality, Stability, and Variation*
//! (Karras et al., ICLR 2018), shared by the native trainer and the browser demo:
//!
//! - [`Generator`] and [`Critic`]: nearest 2× up / 2×2 average down, toRGB/fromRGB 1×1, fade-in
//!   weight α, equalised learning rate, pixelwise feature normalisation, minibatch stddev;
//! - [`Critic::input_gradient`]: the critic's hand-written input gradient for WGAN-GP;
//! - [`latent`]: seeded latents that are the same numbers on every platform;
//! - [`weights`]: the safetensors weight format (f32 or f16) with the architecture inside;
//! - [`link`]: shareable latent links; [`manifest`]: an exported model's `manifest.json`.
//!
//! Level 0 is 4×4; level `l` is `4·2^l` pixels. Images are `[n, 3, h, w]` in `[-1, 1]`.

pub mod config;
pub mod critic;
pub mod critic_grad;
#[cfg(feature = "flex-kernels")]
pub mod flex_kernels;
pub mod generator;
pub mod latent;
pub mod layers;
pub mod link;
pub mod manifest;
pub mod rng;
pub mod tensor;
pub mod weights;

pub use config::{ConfigError, ModelConfig};
pub use critic::{Critic, CriticTape};
pub use generator::Generator;
pub use rng::SplitMix64;
