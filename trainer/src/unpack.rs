//! `pggan unpack`: one split of a dataset pack, at one resolution, as a tar (or .tar.gz) of JPEG
//! (or PNG) files.
//!
//! A pack holds raw pixels at every level (UTKFace at 64×64: 349 MB), too much to carry to a
//! machine with file-size limits. The top level of the training split as JPEGs is a fraction of
//! that, and `pggan prepare` turns the tar back into a pack there (`--padded keep`: the images are
//! already cropped).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, RgbImage};
use rayon::prelude::*;

use crate::fsutil::AtomicFile;
use crate::labels::ImageLabels;
use crate::pack::{Pack, Split};

/// Image format of the unpacked files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpackFormat {
    /// Lossy, small: JPEG at this quality (1–100).
    Jpeg(u8),
    /// Lossless.
    Png,
}

/// Options of `pggan unpack`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnpackOptions {
    /// Pack to read.
    #[arg(long)]
    pub data: PathBuf,
    /// Tar file to write, gzipped if it ends in .gz (default: beside the pack, e.g.
    /// `utk64-train64.tar.gz`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Which split.
    #[arg(long, value_enum, default_value = "train")]
    pub split: Split,
    /// Which level (default: the pack's top).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// JPEG quality (1–100).
    #[arg(long, default_value_t = 90)]
    pub quality: u8,
    /// Lossless PNG files instead of JPEG.
    #[arg(long)]
    pub png: bool,
}

impl UnpackOptions {
    /// The format of the files.
    pub fn format(&self) -> UnpackFormat {
        if self.png {
            UnpackFormat::Png
        } else {
            UnpackFormat::Jpeg(self.quality)
        }
    }
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UnpackReport {
    /// The file written.
    pub out: PathBuf,
    /// Images written.
    pub images: usize,
    /// Their resolution.
    pub resolution: usize,
    /// Size of the tar file.
    pub bytes: u64,
}

/// Writes the images of one split and level into a tar (`split/000000.jpg`, …), atomically.
pub fn unpack(o: &UnpackOptions) -> Result<UnpackReport> {
    let format = o.format();
    if let UnpackFormat::Jpeg(q) = format
        && !(1..=100).contains(&q)
    {
        bail!("--quality {q} is not a JPEG quality (1–100)");
    }
    let pack = Pack::open(&o.data)?;
    let resolution = o.resolution.unwrap_or(pack.header.resolution);
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| default_out(&o.data, o.split, resolution));
    pack.level(o.split, resolution)?;
    let count = pack.count(o.split);
    if count == 0 {
        bail!("{} has no {} images", o.data.display(), split_name(o.split));
    }
    let extension = match format {
        UnpackFormat::Jpeg(_) => "jpg",
        UnpackFormat::Png => "png",
    };

    // Gzip when the name asks for it: it removes the tar's padding and the tables every JPEG repeats.
    let gzip = out
        .to_str()
        .is_some_and(|n| n.ends_with(".gz") || n.ends_with(".tgz"));
    let write = || -> Result<()> {
        let file = AtomicFile::create(&out)?;
        let file = if gzip {
            let gz = GzEncoder::new(file, Compression::default());
            write_tar(gz, &pack, o.split, resolution, format, extension)?.finish()?
        } else {
            write_tar(file, &pack, o.split, resolution, format, extension)?
        };
        file.commit()?;
        Ok(())
    };
    write().with_context(|| format!("writing {}", out.display()))?;
    let bytes = std::fs::metadata(&out)?.len();
    Ok(UnpackReport {
        out,
        images: count,
        resolution,
        bytes,
    })
}

/// A tar of one split's images at `resolution`, encoded as `extension` files, written into
/// `sink`, which is returned. A chunk of images at a time: read, encoded on every core, appended.
fn write_tar<W: Write>(
    sink: W,
    pack: &Pack,
    split: Split,
    resolution: usize,
    format: UnpackFormat,
    extension: &str,
) -> Result<W> {
    const CHUNK: usize = 256;
    let per = resolution * resolution * 3;
    let count = pack.count(split);
    let mut tar = tar::Builder::new(sink);
    for first in (0..count).step_by(CHUNK) {
        let n = CHUNK.min(count - first);
        let pixels = pack.read_images(split, resolution, first, n)?; // [n, r, r, 3]
        let files: Vec<Vec<u8>> = pixels
            .par_chunks(per)
            .map(|rgb| encode(rgb, resolution, format))
            .collect::<Result<_>>()?;
        for (k, bytes) in files.iter().enumerate() {
            let i = first + k;
            // Labels ride in the name as UTKFace writes them, so `prepare` reads them back.
            let name = match pack.labels(split).map(|l| l.get(i)) {
                Some(ImageLabels {
                    age: Some(age),
                    gender: Some(gender),
                    race,
                }) => format!(
                    "{}/{age}_{gender}_{}_{i:06}.{extension}",
                    split_name(split),
                    race.unwrap_or(9)
                ),
                _ => format!("{}/{i:06}.{extension}", split_name(split)),
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0); // the same pack gives the same tar
            header.set_cksum();
            tar.append_data(&mut header, name, bytes.as_slice())?;
        }
    }
    Ok(tar.into_inner()?)
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Holdout => "holdout",
    }
}

fn encode(rgb: &[u8], resolution: usize, format: UnpackFormat) -> Result<Vec<u8>> {
    let image = RgbImage::from_raw(resolution as u32, resolution as u32, rgb.to_vec())
        .context("image size")?;
    let mut out = Cursor::new(Vec::new());
    match format {
        UnpackFormat::Jpeg(quality) => {
            JpegEncoder::new_with_quality(&mut out, quality).encode_image(&image)?
        }
        UnpackFormat::Png => image.write_to(&mut out, ImageFormat::Png)?,
    }
    Ok(out.into_inner())
}

/// Where `unpack` writes for `pack`, by default: beside it, named after split and level.
fn default_out(pack: &Path, split: Split, resolution: usize) -> PathBuf {
    let stem = pack.file_stem().and_then(|s| s.to_str()).unwrap_or("pack");
    pack.with_file_name(format!("{stem}-{}{resolution}.tar.gz", split_name(split)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::{PaddedPolicy, PrepareOptions, prepare};
    use pggan_model::SplitMix64;

    /// Sorted images of a split: `prepare` shuffles, so packs are compared as sets of images.
    fn sorted_images(pack: &Path, split: Split, resolution: usize) -> Vec<Vec<u8>> {
        let pack = Pack::open(pack).unwrap();
        let mut images: Vec<Vec<u8>> = pack
            .read_level(split, resolution)
            .unwrap()
            .chunks(resolution * resolution * 3)
            .map(<[u8]>::to_vec)
            .collect();
        images.sort();
        images
    }

    #[test]
    fn unpacked_images_prepare_back_into_the_same_pack() {
        let dir = std::env::temp_dir().join(format!("pggan-unpack-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("images")).unwrap();
        // Smooth pictures (JPEG keeps those well): 12 images of 32×32.
        let mut rng = SplitMix64::new(3);
        for i in 0..12 {
            let (a, b, c) = (
                rng.below(256) as f64,
                rng.below(256) as f64,
                rng.below(256) as f64,
            );
            RgbImage::from_fn(32, 32, |x, y| {
                image::Rgb([
                    (a * x as f64 / 31.0) as u8,
                    (b * y as f64 / 31.0) as u8,
                    c as u8,
                ])
            })
            .save(dir.join(format!("images/{i:02}.png")))
            .unwrap();
        }
        let opts = PrepareOptions {
            resolution: 16,
            holdout: 3,
            padded: PaddedPolicy::Keep,
            seed: 0,
            max_pixels: 1 << 24,
        };
        prepare(&dir.join("images"), &dir.join("a.pack"), &opts).unwrap();

        // PNG: lossless, so the training images come back exactly, every level included.
        let png = UnpackOptions {
            data: dir.join("a.pack"),
            out: Some(dir.join("train.tar")),
            split: Split::Train,
            resolution: None,
            quality: 90,
            png: true,
        };
        let report = unpack(&png).unwrap();
        assert_eq!((report.images, report.resolution), (9, 16));
        assert!(!dir.join("train.tar.tmp").exists());
        let back = PrepareOptions {
            holdout: 0,
            ..opts.clone()
        };
        prepare(&dir.join("train.tar"), &dir.join("b.pack"), &back).unwrap();
        for r in [4, 8, 16] {
            assert_eq!(
                sorted_images(&dir.join("a.pack"), Split::Train, r),
                sorted_images(&dir.join("b.pack"), Split::Train, r),
                "level {r}"
            );
        }

        // JPEG at quality 95: the same images within a few levels, and the held-out split on request.
        // Gzipped, as the name asks.
        let jpeg = UnpackOptions {
            split: Split::Holdout,
            out: Some(dir.join("holdout.tar.gz")),
            quality: 95,
            png: false,
            ..png.clone()
        };
        assert_eq!(unpack(&jpeg).unwrap().images, 3);
        assert_eq!(
            &std::fs::read(dir.join("holdout.tar.gz")).unwrap()[..2],
            &[0x1f, 0x8b]
        );
        prepare(&dir.join("holdout.tar.gz"), &dir.join("c.pack"), &back).unwrap();
        let original = sorted_images(&dir.join("a.pack"), Split::Holdout, 16);
        let lossy = Pack::open(&dir.join("c.pack"))
            .unwrap()
            .read_level(Split::Train, 16)
            .unwrap();
        for img in lossy.chunks(16 * 16 * 3) {
            let nearest = original
                .iter()
                .map(|o| {
                    o.iter()
                        .zip(img)
                        .map(|(a, b)| (*a as f64 - *b as f64).abs())
                        .sum::<f64>()
                        / img.len() as f64
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                nearest < 3.0,
                "a JPEG image is {nearest} levels from every original"
            );
        }

        // Bad requests name the problem.
        let err = unpack(&UnpackOptions {
            quality: 0,
            png: false,
            ..png.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("quality"), "{err}");
        let err = unpack(&UnpackOptions {
            resolution: Some(64),
            ..png.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("no 64×64 level"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
