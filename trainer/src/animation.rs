//! Animations: the training timelapse of sample grids, and the paper's latent-space walks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage};
use pggan_model::SplitMix64;
use pggan_model::latent::{blend_latents, latent_for_seed, normalize_latent};
use pggan_model::layers::tensor_from_f32;

use crate::export::load_model;
use crate::images::{save_png, to_rgb_images};

/// Writes frames as an animated GIF (`.gif`) or as numbered PNGs in a folder.
pub fn write_frames(frames: &[RgbImage], fps: f64, out: &Path) -> Result<()> {
    if frames.is_empty() {
        bail!("no frames to write");
    }
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gif"))
    {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut encoder = GifEncoder::new_with_speed(std::io::BufWriter::new(file), 10);
        encoder.set_repeat(Repeat::Infinite)?;
        let delay = Delay::from_numer_denom_ms((1000.0 / fps.max(0.1)).round() as u32, 1);
        for f in frames {
            let rgba = image::DynamicImage::ImageRgb8(f.clone()).to_rgba8();
            encoder
                .encode_frame(Frame::from_parts(rgba, 0, 0, delay))
                .with_context(|| format!("encoding {}", out.display()))?;
        }
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (i, f) in frames.iter().enumerate() {
            save_png(f, &out.join(format!("frame{i:05}.png")))?;
        }
    }
    Ok(())
}

/// The run's sample grids in training order, scaled so the longer side is at most `max_side`.
pub fn timelapse_frames(run: &Path, max_side: u32) -> Result<Vec<RgbImage>> {
    let dir = run.join("grids");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{} has no grids/ folder (is it a run folder?)",
                run.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("fakes") && n.ends_with(".png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no sample grids yet", dir.display());
    }
    files
        .iter()
        .map(|p| {
            let img = image::open(p)
                .with_context(|| format!("reading {}", p.display()))?
                .to_rgb8();
            let side = img.width().max(img.height());
            Ok(if side > max_side {
                let (w, h) = (
                    img.width() * max_side / side,
                    img.height() * max_side / side,
                );
                image::imageops::resize(
                    &img,
                    w.max(1),
                    h.max(1),
                    image::imageops::FilterType::Triangle,
                )
            } else {
                img
            })
        })
        .collect()
}

/// The paper's latent walk: one random latent per frame, blurred over time by a Gaussian of
/// `sigma_frames` (wrapping around, so the loop is seamless), each frame renormalised onto the
/// hypersphere.
pub fn latent_walk(seed: u64, frames: usize, latent: usize, sigma_frames: f64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    let raw: Vec<Vec<f64>> = (0..frames)
        .map(|_| (0..latent).map(|_| rng.normal_f64()).collect())
        .collect();
    let radius = (4.0 * sigma_frames).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma_frames.max(1e-6).powi(2))).exp())
        .collect();
    let ksum: f64 = kernel.iter().sum();
    (0..frames)
        .map(|f| {
            let mut z = vec![0f64; latent];
            for (k, w) in kernel.iter().enumerate() {
                let src = (f as isize + k as isize - radius).rem_euclid(frames as isize) as usize;
                for (acc, v) in z.iter_mut().zip(&raw[src]) {
                    *acc += w / ksum * v;
                }
            }
            normalize_latent(&z.iter().map(|&v| v as f32).collect::<Vec<_>>())
        })
        .collect()
}

/// Frames of `model` for the given latents, scaled up `scale`× (nearest).
pub fn render(
    model: &Path,
    latents: &[Vec<f32>],
    scale: u32,
    device: &Device,
) -> Result<Vec<RgbImage>> {
    let m = load_model(model, device)?;
    let latent = m.config.latent_size;
    let mut frames = Vec::with_capacity(latents.len());
    for chunk in latents.chunks(32) {
        let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
        let z = tensor_from_f32(flat, [chunk.len(), latent], device);
        for img in to_rgb_images(m.generator.forward(z, m.level, m.alpha)) {
            frames.push(if scale > 1 {
                image::imageops::resize(
                    &img,
                    img.width() * scale,
                    img.height() * scale,
                    image::imageops::FilterType::Nearest,
                )
            } else {
                img
            });
        }
    }
    Ok(frames)
}

/// Latents for `pggan interpolate`: the random walk from `seed`, or a straight blend from seed
/// `seed` to seed `to` (renormalised onto the hypersphere).
pub fn interpolation_latents(
    seed: u64,
    to: Option<u64>,
    frames: usize,
    latent: usize,
    sigma_frames: f64,
) -> Vec<Vec<f32>> {
    match to {
        Some(b) => {
            let (za, zb) = (latent_for_seed(seed, latent), latent_for_seed(b, latent));
            (0..frames)
                .map(|i| blend_latents(&za, &zb, i as f32 / (frames.max(2) - 1) as f32))
                .collect()
        }
        None => latent_walk(seed, frames, latent, sigma_frames),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_is_smooth_seamless_and_on_the_sphere() {
        let w = latent_walk(3, 60, 32, 4.0);
        assert_eq!(w.len(), 60);
        let step = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        let max_step = (0..60)
            .map(|i| step(&w[i], &w[(i + 1) % 60]))
            .fold(0f32, f32::max);
        // Unblurred neighbours differ by ~√(2·32) ≈ 8; blurred ones by far less, the wrap included.
        assert!(max_step < 2.5, "largest frame-to-frame step {max_step}");
        for z in &w {
            let rms = (z.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
            assert!((rms - 1.0).abs() < 1e-4);
        }
        let far = step(&w[0], &w[30]);
        assert!(far > 2.0 * max_step, "the walk moves: {far}");
    }

    #[test]
    fn two_face_mode_starts_and_ends_at_the_seeds() {
        let l = interpolation_latents(5, Some(9), 10, 16, 3.0);
        assert_eq!(l[0], normalize_latent(&latent_for_seed(5, 16)));
        let last = normalize_latent(&latent_for_seed(9, 16));
        assert!(l[9].iter().zip(&last).all(|(a, b)| (a - b).abs() < 1e-6));
    }
}
