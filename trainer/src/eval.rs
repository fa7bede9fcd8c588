//! `pggan eval`: the paper's SWD and MS-SSIM between generated or given images and reals.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use image::RgbImage;
use serde::Serialize;

use crate::loader::load_model;
use crate::metrics::ImageSet;
use crate::metrics::ms_ssim::ms_ssim_set;
use crate::metrics::swd::{swd, swd_resolutions};
use crate::pack::{Pack, Split};

/// Area-average resampling of one axis of an RGB image from `n_in` to `n_out` samples; `other`
/// is the length of the other axis (`along_rows`: `src` is `[other, n_in, 3]`, else
/// `[n_in, other, 3]`).
fn area_resample_axis(
    src: &[f32],
    n_in: usize,
    n_out: usize,
    other: usize,
    along_rows: bool,
) -> Vec<f32> {
    // along_rows: resample the x axis of an [other, n_in, 3] image; else the y axis of [n_in, other, 3].
    let scale = n_in as f64 / n_out as f64;
    let mut out = vec![0f32; n_out * other * 3];
    for o in 0..n_out {
        let (start, end) = (o as f64 * scale, (o + 1) as f64 * scale);
        let mut weights = Vec::new();
        let mut i = start.floor() as usize;
        while (i as f64) < end && i < n_in {
            let w = (end.min(i as f64 + 1.0) - start.max(i as f64)).max(0.0);
            weights.push((i, w));
            i += 1;
        }
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        for k in 0..other {
            for c in 0..3 {
                let mut s = 0.0;
                for &(i, w) in &weights {
                    let idx = if along_rows {
                        (k * n_in + i) * 3 + c
                    } else {
                        (i * other + k) * 3 + c
                    };
                    s += src[idx] as f64 * w;
                }
                let idx = if along_rows {
                    (k * n_out + o) * 3 + c
                } else {
                    (o * other + k) * 3 + c
                };
                out[idx] = (s / total) as f32;
            }
        }
    }
    out
}

/// Centre-crops to a square and box-filters (area-averages) to `r × r`; smaller images are
/// scaled up the same way.
pub fn to_resolution(img: &RgbImage, r: usize) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let sq = image::imageops::crop_imm(img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let side = side as usize;
    if side == r {
        return sq.into_raw();
    }
    let src: Vec<f32> = sq.into_raw().into_iter().map(|v| v as f32).collect();
    let rows = area_resample_axis(&src, side, r, side, true); // [side, r, 3]
    let both = area_resample_axis(&rows, side, r, r, false); // [r, r, 3]
    both.into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Loads `count` images at `r` drawn at random (seeded) from a pack (`split`, at its level `r`),
/// a folder or a tar. Returns the set and how many files were skipped as unreadable.
pub fn load_images(
    path: &Path,
    r: usize,
    count: usize,
    split: Split,
    seed: u64,
) -> Result<(ImageSet, usize)> {
    if path.is_file() && Pack::open(path).is_ok() {
        let pack = Pack::open(path)?;
        let split = if split == Split::Holdout && pack.count(Split::Holdout) == 0 {
            Split::Train
        } else {
            split
        };
        // Only the images drawn are read: a level of a large set need not fit in memory.
        let level = pack.level(split, r)?;
        let mut reader = pack.reader()?;
        let size = r * r * 3;
        let chosen = ImageSet::sample_indices(pack.count(split), count, seed);
        let mut data = vec![0u8; chosen.len() * size];
        for (image, &i) in data.chunks_exact_mut(size).zip(&chosen) {
            reader.read_image(level, i, image)?;
        }
        return Ok((
            ImageSet {
                resolution: r,
                data,
            },
            0,
        ));
    }
    let mut data = Vec::new();
    let mut skipped = 0;
    crate::prepare::for_each_chunk(path, 256, |entries| {
        use rayon::prelude::*;
        let decoded: Vec<Option<Vec<u8>>> = entries
            .par_iter()
            .map(|e| {
                image::load_from_memory(&e.bytes)
                    .ok()
                    .map(|img| to_resolution(&img.to_rgb8(), r))
            })
            .collect();
        for d in decoded {
            match d {
                Some(px) => data.extend(px),
                None => skipped += 1,
            }
        }
        Ok(())
    })?;
    Ok((
        ImageSet {
            resolution: r,
            data,
        }
        .sample(count, seed),
        skipped,
    ))
}

/// `count` images of the model from seeds `seed…`, at `r`.
pub fn generate_set(
    model: &Path,
    seed: u64,
    count: usize,
    r: usize,
    device: &Device,
) -> Result<ImageSet> {
    let data = load_model(model, device)?
        .images_for_seeds(seed, count)
        .iter()
        .flat_map(|img| to_resolution(img, r))
        .collect();
    Ok(ImageSet {
        resolution: r,
        data,
    })
}

/// What `pggan eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Resolution compared at.
    pub resolution: usize,
    /// Images per side.
    pub count: usize,
    /// SWD ×10³ by resolution (as strings "64", "32", …) and "avg".
    pub swd: serde_json::Map<String, serde_json::Value>,
    /// MS-SSIM of the evaluated images' pairs.
    pub ms_ssim: f64,
    /// MS-SSIM of the reference images' pairs.
    pub ms_ssim_reference: f64,
    /// Seconds spent on SWD.
    pub seconds_swd: f64,
    /// Seconds spent on MS-SSIM (both sets).
    pub seconds_ms_ssim: f64,
}

/// Compares `images` with `reference` (same size and resolution).
pub fn evaluate(images: &ImageSet, reference: &ImageSet, seed: u64) -> Result<EvalReport> {
    let r = images.resolution;
    if swd_resolutions(r).is_empty() {
        bail!("SWD needs images of at least 16×16 (got {r}×{r})");
    }
    let n = images.len().min(reference.len());
    if n < 2 {
        bail!(
            "need at least 2 images per side (have {} and {})",
            images.len(),
            reference.len()
        );
    }
    let (a, b) = (reference.clone().take(n), images.clone().take(n));
    let t = Instant::now();
    let dist = swd(&a, &b, seed);
    let seconds_swd = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ms = ms_ssim_set(&b);
    let ms_ref = ms_ssim_set(&a);
    let seconds_ms_ssim = t.elapsed().as_secs_f64();
    let mut swd_map = serde_json::Map::new();
    for (res, d) in swd_resolutions(r).iter().zip(&dist) {
        swd_map.insert(res.to_string(), (*d).into());
    }
    swd_map.insert("avg".into(), (*dist.last().unwrap()).into());
    Ok(EvalReport {
        resolution: r,
        count: n,
        swd: swd_map,
        ms_ssim: ms,
        ms_ssim_reference: ms_ref,
        seconds_swd,
        seconds_ms_ssim,
    })
}

/// Prints a report as a small table.
pub fn print_table(r: &EvalReport) {
    println!(
        "{} vs {} images at {}×{}",
        r.count, r.count, r.resolution, r.resolution
    );
    let mut levels: Vec<(&String, &serde_json::Value)> =
        r.swd.iter().filter(|(k, _)| *k != "avg").collect();
    levels.sort_by_key(|(k, _)| std::cmp::Reverse(k.parse::<usize>().unwrap_or(0)));
    let head: Vec<String> = levels
        .iter()
        .map(|(k, _)| format!("{:>8}", format!("{k}px")))
        .collect();
    let vals: Vec<String> = levels
        .iter()
        .map(|(_, v)| format!("{:>8.2}", v.as_f64().unwrap_or(f64::NAN)))
        .collect();
    println!("SWD ×1e3  {} {:>8}", head.join(" "), "avg");
    println!(
        "          {} {:>8.2}",
        vals.join(" "),
        r.swd["avg"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "MS-SSIM   evaluated {:.4}   reference {:.4}",
        r.ms_ssim, r.ms_ssim_reference
    );
    println!(
        "time      SWD {:.1} s, MS-SSIM {:.1} s",
        r.seconds_swd, r.seconds_ms_ssim
    );
}

/// Loads both sides for the command line.
pub fn load_sides(
    model: Option<&Path>,
    images: Option<&Path>,
    reference: &Path,
    count: usize,
    r: usize,
    seed: u64,
    device: &Device,
) -> Result<(ImageSet, ImageSet)> {
    let (reference_set, skipped) = load_images(reference, r, count, Split::Holdout, seed)
        .with_context(|| format!("loading reference images from {}", reference.display()))?;
    if skipped > 0 {
        eprintln!(
            "{} unreadable file(s) skipped in {}",
            skipped,
            reference.display()
        );
    }
    let set = match (model, images) {
        (Some(m), None) => generate_set(m, seed, count, r, device)?,
        (None, Some(p)) => {
            let (s, skipped) = load_images(p, r, count, Split::Train, seed.wrapping_add(1))
                .with_context(|| format!("loading images from {}", p.display()))?;
            if skipped > 0 {
                eprintln!("{} unreadable file(s) skipped in {}", skipped, p.display());
            }
            s
        }
        _ => bail!("give exactly one of --model and --images"),
    };
    if set.len() < count || reference_set.len() < count {
        eprintln!(
            "note: comparing {} images per side ({} asked)",
            set.len().min(reference_set.len()),
            count
        );
    }
    Ok((set, reference_set))
}
