//! Animations: the training timelapse of sample grids, and the paper's latent-space walks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage};
use pggan_model::latent::{blend_latents, latent_for_seed, smooth_walk};

use crate::images::save_png;
use crate::loader::LoadedModel;

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

/// Frames of `model` for the given latents (each `[latent_size]`), scaled up `scale`× (nearest).
pub fn render(model: &LoadedModel, latents: &[Vec<f32>], scale: u32) -> Vec<RgbImage> {
    let flat: Vec<f32> = latents.iter().flatten().copied().collect();
    model
        .images(&flat)
        .into_iter()
        .map(|img| {
            if scale > 1 {
                let (w, h) = (img.width() * scale, img.height() * scale);
                image::imageops::resize(&img, w, h, image::imageops::FilterType::Nearest)
            } else {
                img
            }
        })
        .collect()
}

/// Latents for `pggan interpolate`: the paper's random walk from `seed` (the page's walk for the
/// same seed, [`smooth_walk`]), or a straight blend from seed
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
        None => smooth_walk(seed, frames, sigma_frames, latent)
            .chunks(latent)
            .map(<[f32]>::to_vec)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pggan_model::latent::normalize_latent;

    #[test]
    fn two_face_mode_starts_and_ends_at_the_seeds() {
        let l = interpolation_latents(5, Some(9), 10, 16, 3.0);
        assert_eq!(l[0], normalize_latent(&latent_for_seed(5, 16)));
        let last = normalize_latent(&latent_for_seed(9, 16));
        assert!(l[9].iter().zip(&last).all(|(a, b)| (a - b).abs() < 1e-6));
    }
}
