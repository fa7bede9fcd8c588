//! Loading a generator for every command that samples one — from an exported folder
//! (`manifest.json`), a run folder (its checkpoint's EMA generator) or one generator
//! `.safetensors` file — and drawing images from a generator for given latents.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use image::RgbImage;
use pggan_model::Generator;
use pggan_model::ModelConfig;
use pggan_model::latent::latents_for_seeds;
use pggan_model::manifest::Manifest;
use pggan_model::tensor::tensor_from_f32;
use pggan_model::weights::generator_from_bytes;

use crate::checkpoint;
use crate::images::to_rgb_images;

/// Images drawn per forward pass.
const CHUNK: usize = 64;

/// A generator ready to sample, with where it stands.
pub struct LoadedModel {
    /// The (EMA) generator.
    pub generator: Generator,
    /// Its architecture.
    pub config: ModelConfig,
    /// Level to sample at.
    pub level: usize,
    /// Fade weight to sample with.
    pub alpha: f64,
    /// Truncation ψ to sample with (1: none; see `Generator::forward_truncated`).
    pub truncation: f64,
}

impl LoadedModel {
    /// The images of latents `[count, latent_size]` (row after row).
    pub fn images(&self, latents: &[f32]) -> Vec<RgbImage> {
        draw(
            &self.generator,
            self.level,
            self.alpha,
            self.truncation,
            latents,
        )
    }

    /// The images of seeds `first_seed … first_seed + count − 1`.
    pub fn images_for_seeds(&self, first_seed: u64, count: usize) -> Vec<RgbImage> {
        self.images(&latents_for_seeds(
            first_seed,
            count,
            self.config.latent_size,
        ))
    }
}

/// The images `generator` draws at `level` and `alpha`, truncated by `psi` (1: none), for latents
/// `[count, latent_size]`, in passes of at most 64.
pub fn draw(
    generator: &Generator,
    level: usize,
    alpha: f64,
    psi: f64,
    latents: &[f32],
) -> Vec<RgbImage> {
    let latent = generator.latent_size;
    let device = generator.dense.weight.val().device();
    let mut images = Vec::with_capacity(latents.len() / latent.max(1));
    for chunk in latents.chunks(CHUNK * latent) {
        let n = chunk.len() / latent;
        let z = tensor_from_f32(chunk.to_vec(), [n, latent], &device);
        images.extend(to_rgb_images(
            generator.forward_truncated(z, level, alpha, psi),
        )); // [n, 3, r, r]
    }
    images
}

/// The manifest of an exported model folder, checked; `None` when `model` has no
/// `manifest.json`.
pub fn read_manifest(model: &Path) -> Result<Option<Manifest>> {
    let path = model.join("manifest.json");
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(
        Manifest::parse(&text).with_context(|| format!("in {}", model.display()))?,
    ))
}

/// Loads `model`: an exported folder (with `manifest.json`), a run folder (with a checkpoint), or
/// one generator `.safetensors` file.
pub fn load_model(model: &Path, device: &Device) -> Result<LoadedModel> {
    if let Some(manifest) = read_manifest(model)? {
        let bytes = std::fs::read(model.join(&manifest.generator))
            .with_context(|| format!("reading {}", manifest.generator))?;
        let (generator, config, _) = generator_from_bytes(&bytes, device)?;
        if config.latent_size != manifest.latent_size || config.resolution != manifest.resolution {
            bail!(
                "{} does not match {}/manifest.json: a {r}×{r} generator with latents of {l}, the manifest says {mr}×{mr} and {ml}",
                manifest.generator,
                model.display(),
                r = config.resolution,
                l = config.latent_size,
                mr = manifest.resolution,
                ml = manifest.latent_size
            );
        }
        return Ok(LoadedModel {
            level: manifest.level,
            alpha: manifest.alpha,
            truncation: 1.0,
            generator,
            config,
        });
    }
    if checkpoint::has_checkpoint(model) {
        let (generator, config, state) = checkpoint::load_ema(model, device)?;
        return Ok(LoadedModel {
            generator,
            config,
            level: state.level,
            alpha: state.alpha,
            truncation: 1.0,
        });
    }
    if model.is_file() {
        let bytes = std::fs::read(model)?;
        let (generator, config, meta) = generator_from_bytes(&bytes, device)
            .with_context(|| format!("loading {}", model.display()))?;
        let level = meta
            .get("level")
            .and_then(|l| l.parse().ok())
            .unwrap_or(config.num_levels() - 1);
        let alpha = meta
            .get("alpha")
            .and_then(|a| a.parse().ok())
            .unwrap_or(1.0);
        return Ok(LoadedModel {
            generator,
            config,
            level,
            alpha,
            truncation: 1.0,
        });
    }
    bail!(
        "{} is neither an exported model (manifest.json), a run folder (checkpoint.safetensors) nor a generator file",
        model.display()
    )
}
