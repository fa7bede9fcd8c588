//! Turning generator output into pictures: PNG files and sample grids.

use std::path::Path;

use anyhow::{Context, Result};
use burn::tensor::Tensor;
use image::RgbImage;
use pggan_model::tensor::tensor_to_f32;

use crate::fsutil::write_atomic;

/// Images `[n, 3, r, r]` in `[-1, 1]` → `n` RGB images (clamped, rounded).
pub fn to_rgb_images(images: Tensor<4>) -> Vec<RgbImage> {
    let [n, _, h, w] = images.dims();
    let v = tensor_to_f32(images);
    (0..n)
        .map(|i| {
            let base = i * 3 * h * w;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let px = |c: usize| {
                    let f = v[base + c * h * w + y as usize * w + x as usize];
                    ((f + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
                };
                image::Rgb([px(0), px(1), px(2)])
            })
        })
        .collect()
}

/// Tiles images into a `cols`-wide grid, each scaled (nearest) to `cell` pixels.
pub fn grid(images: &[RgbImage], cols: usize, cell: u32) -> RgbImage {
    let rows = images.len().div_ceil(cols.max(1));
    let mut out = RgbImage::new(cols as u32 * cell, rows as u32 * cell);
    for (i, img) in images.iter().enumerate() {
        let scaled = if img.width() == cell {
            img.clone()
        } else {
            image::imageops::resize(img, cell, cell, image::imageops::FilterType::Nearest)
        };
        image::imageops::replace(
            &mut out,
            &scaled,
            (i % cols) as i64 * cell as i64,
            (i / cols) as i64 * cell as i64,
        );
    }
    out
}

/// Writes a PNG atomically.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, png.get_ref())?;
    Ok(())
}
