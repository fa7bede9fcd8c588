//! `pggan generate`: reproducible images from seeds.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::Device;
use pggan_model::latent::latents_for_seeds;
use pggan_model::layers::tensor_from_f32;

use crate::export::load_model;
use crate::images::{grid, save_png, to_rgb_images};

/// Writes images for seeds `seed … seed + count − 1`: one PNG per seed in a folder, or one PNG
/// (a grid when `count > 1`) when `out` ends in `.png`. Returns the files written.
pub fn generate(model: &Path, seed: u64, count: usize, out: &Path, device: &Device) -> Result<Vec<std::path::PathBuf>> {
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    let m = load_model(model, device)?;
    let latent = m.config.latent_size;
    let mut written = Vec::new();
    let mut images = Vec::with_capacity(count);
    for start in (0..count).step_by(64) {
        let n = (count - start).min(64);
        let z = tensor_from_f32(latents_for_seeds(seed + start as u64, n, latent), [n, latent], device);
        images.extend(to_rgb_images(m.generator.forward(z, m.level, m.alpha)));
    }
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let picture = if count == 1 {
            images.remove(0)
        } else {
            let cols = (count as f64).sqrt().ceil() as usize;
            grid(&images, cols, images[0].width())
        };
        save_png(&picture, out)?;
        written.push(out.to_path_buf());
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (i, img) in images.iter().enumerate() {
            let path = out.join(format!("seed{:06}.png", seed + i as u64));
            save_png(img, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}
