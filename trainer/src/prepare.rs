//! Dataset ingest: a folder or a .tar (or .tar.gz) of images → a pack at every power-of-two resolution.
//!
//! Every file is decoded in memory (nothing from a tar is ever written to disk, so `..` paths and
//! links cannot escape), centre-cropped to a square, resized to the target with Lanczos3, and
//! box-filtered down to 4×4. A file that cannot be used is skipped and counted with its reason;
//! none stops the run.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, Limits, RgbImage};
use pggan_model::SplitMix64;
use rayon::prelude::*;
use serde::Serialize;

use indicatif::{ProgressBar, ProgressStyle};

use crate::labels::{ImageLabels, LabelCounts, PackLabels, SplitLabels};
use crate::pack::{Split, write_pack_with};

/// What to do with an image that has a flat padded strip along one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum PaddedPolicy {
    /// Cut the strip off, then centre-crop what remains.
    Crop,
    /// Leave the image out.
    Skip,
    /// Use the image as it is.
    Keep,
}

/// Options of `pggan prepare`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareOptions {
    /// Top resolution (power of two).
    #[arg(long, default_value_t = 64)]
    pub resolution: usize,
    /// Images held out for metrics.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// What to do with images that have a flat padded strip at one edge.
    #[arg(long, value_enum, default_value = "crop")]
    pub padded: PaddedPolicy,
    /// Seed of the held-out selection.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
}

/// Why a file was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Not an image format we know.
    NotAnImage,
    /// A known format that failed to decode (truncated, corrupt).
    Undecodable,
    /// Smaller than the target resolution.
    TooSmall,
    /// Larger than the pixel limit.
    TooLarge,
    /// A padded strip, with `--padded skip`.
    Padded,
}

/// Counts of what `prepare` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrepareReport {
    /// Files read (regular files of the input).
    pub read: usize,
    /// Images written to the pack.
    pub written: usize,
    /// Of them, in the training split.
    pub train: usize,
    /// Of them, held out.
    pub holdout: usize,
    /// Files skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// Greyscale images converted to RGB.
    pub greyscale_converted: usize,
    /// Images found with a flat padded strip at one edge.
    pub padded_found: usize,
    /// Of them, cropped.
    pub padded_cropped: usize,
    /// Images written whose file names gave each label (UTKFace's `age_gender_race_date`).
    pub labels: LabelCounts,
}

pub(crate) enum Outcome {
    Image {
        rgb: Vec<u8>,
        grey: bool,
        padded: bool,
        cropped: bool,
    },
    Skip(SkipReason),
}

/// Width in pixels of a flat strip along each edge (top, bottom, left, right).
fn flat_strips(img: &RgbImage) -> [u32; 4] {
    let (w, h) = img.dimensions();
    let flat_line = |pixels: &mut dyn Iterator<Item = [u8; 3]>| {
        let mut lo = [255u8; 3];
        let mut hi = [0u8; 3];
        for p in pixels {
            for c in 0..3 {
                lo[c] = lo[c].min(p[c]);
                hi[c] = hi[c].max(p[c]);
            }
        }
        (0..3).all(|c| hi[c].saturating_sub(lo[c]) <= 12)
    };
    // A strip reaching the middle means a flat image, not a padded one: report 0.
    let count = |n: u32, line: &dyn Fn(u32) -> bool| {
        let c = (0..n / 2).take_while(|&i| line(i)).count() as u32;
        if c >= n / 2 { 0 } else { c }
    };
    let row = |y: u32| flat_line(&mut (0..w).map(|x| img.get_pixel(x, y).0));
    let col = |x: u32| flat_line(&mut (0..h).map(|y| img.get_pixel(x, y).0));
    [
        count(h, &|i| row(i)),
        count(h, &|i| row(h - 1 - i)),
        count(w, &|i| col(i)),
        count(w, &|i| col(w - 1 - i)),
    ]
}

fn is_greyscale(img: &DynamicImage) -> bool {
    use image::ColorType::*;
    match img.color() {
        L8 | La8 | L16 | La16 => true,
        _ => img
            .to_rgb8()
            .pixels()
            .all(|p| p[0].abs_diff(p[1]) <= 3 && p[1].abs_diff(p[2]) <= 3),
    }
}

/// A reader over `bytes` with its format sniffed from the content (names and extensions are not
/// trusted) and the allocation limit set; `None` when no known format matches.
fn sniffed_reader(bytes: &[u8], max_pixels: u64) -> Option<ImageReader<Cursor<&[u8]>>> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    reader.format()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels * 8);
    reader.limits(limits);
    Some(reader)
}

pub(crate) fn process(bytes: &[u8], opts: &PrepareOptions) -> Outcome {
    // The header first: a decompression bomb is refused before anything is decoded.
    let Some(reader) = sniffed_reader(bytes, opts.max_pixels) else {
        return Outcome::Skip(SkipReason::NotAnImage);
    };
    match reader.into_dimensions() {
        Ok((w, h)) if w as u64 * h as u64 > opts.max_pixels => {
            return Outcome::Skip(SkipReason::TooLarge);
        }
        Ok(_) => {}
        Err(image::ImageError::Limits(_)) => return Outcome::Skip(SkipReason::TooLarge),
        Err(_) => return Outcome::Skip(SkipReason::Undecodable),
    }
    let Some(reader) = sniffed_reader(bytes, opts.max_pixels) else {
        return Outcome::Skip(SkipReason::NotAnImage);
    };
    let img = match reader.decode() {
        Ok(img) => img,
        Err(image::ImageError::Limits(_)) => return Outcome::Skip(SkipReason::TooLarge),
        Err(_) => return Outcome::Skip(SkipReason::Undecodable),
    };
    let grey = is_greyscale(&img);
    let mut rgb = if grey {
        DynamicImage::ImageLuma8(img.to_luma8()).to_rgb8()
    } else {
        img.to_rgb8()
    };
    let (w, h) = rgb.dimensions();
    let strips = flat_strips(&rgb);
    let min_strip = ((w.min(h) as f64) * 0.02).ceil().max(2.0) as u32;
    let padded = strips.iter().any(|&s| s >= min_strip);
    let mut cropped = false;
    if padded {
        match opts.padded {
            PaddedPolicy::Skip => return Outcome::Skip(SkipReason::Padded),
            PaddedPolicy::Keep => {}
            PaddedPolicy::Crop => {
                let keep = |s: u32| if s >= min_strip { s } else { 0 };
                let (t, b, l, r) = (
                    keep(strips[0]),
                    keep(strips[1]),
                    keep(strips[2]),
                    keep(strips[3]),
                );
                // Crop only when what remains still covers the target resolution.
                if ((w - l - r).min(h - t - b) as usize) >= opts.resolution {
                    rgb = image::imageops::crop_imm(&rgb, l, t, w - l - r, h - t - b).to_image();
                    cropped = true;
                }
            }
        }
    }
    let (w, h) = rgb.dimensions();
    let side = w.min(h);
    if (side as usize) < opts.resolution {
        return Outcome::Skip(SkipReason::TooSmall);
    }
    let square =
        image::imageops::crop_imm(&rgb, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let r = opts.resolution as u32;
    let resized = if side == r {
        square
    } else {
        image::imageops::resize(&square, r, r, FilterType::Lanczos3)
    };
    Outcome::Image {
        rgb: resized.into_raw(),
        grey,
        padded,
        cropped,
    }
}

/// One file of the input: its name (its path inside the folder or archive) and bytes.
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
}

pub(crate) fn for_each_chunk(
    input: &Path,
    chunk: usize,
    mut f: impl FnMut(Vec<Entry>) -> Result<()>,
) -> Result<()> {
    let meta =
        std::fs::metadata(input).with_context(|| format!("reading input {}", input.display()))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        collect_files(input, &mut files)?;
        files.sort();
        for names in files.chunks(chunk) {
            let entries = names
                .iter()
                .filter_map(|p| {
                    let name = p
                        .strip_prefix(input)
                        .unwrap_or(p)
                        .to_string_lossy()
                        .into_owned();
                    std::fs::read(p).ok().map(|bytes| Entry { name, bytes })
                })
                .collect();
            f(entries)?;
        }
        return Ok(());
    }
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut reader = std::io::BufReader::new(file);
    // A gzipped tar (`.tar.gz`, as `pggan unpack` writes) is known by its magic bytes.
    let gzipped = std::io::BufRead::fill_buf(&mut reader)
        .with_context(|| format!("reading {}", input.display()))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(reader);
    let mut batch = Vec::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a readable tar archive", input.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: damaged tar entry", input.display()))?;
        if !entry.header().entry_type().is_file() {
            continue; // directories, links, devices: never followed, never written
        }
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
        if entry.read_to_end(&mut bytes).is_err() {
            bytes.clear(); // counted as undecodable below
        }
        batch.push(Entry { name, bytes });
        if batch.len() == chunk {
            f(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        f(batch)?;
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect_files(&entry.path(), out)?;
        } else if ty.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Runs the ingest and writes the pack; returns what happened. It streams: each decoded image
/// goes to a spool file beside the pack (`OUT.spool`, removed at the end), so memory holds a
/// chunk of files at a time, whatever the size of the input; then the pack is written from the
/// spool in the stored order, each image once.
pub fn prepare(input: &Path, out: &Path, opts: &PrepareOptions) -> Result<PrepareReport> {
    if opts.resolution < 4 || !opts.resolution.is_power_of_two() {
        bail!("--resolution {} is not a power of two ≥ 4", opts.resolution);
    }
    let size = opts.resolution * opts.resolution * 3;
    let spool = Spool::create(out)?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, spool.file()?);
    let mut report = PrepareReport::default();
    let mut accepted = 0usize;
    let mut labels: Vec<ImageLabels> = Vec::new(); // by accepted image
    let bar = progress_bar(count_files(input), "decoding");
    for_each_chunk(input, 256, |entries| {
        report.read += entries.len();
        let outcomes: Vec<Outcome> = entries
            .par_iter()
            .map(|e| process(&e.bytes, opts))
            .collect();
        for (o, entry) in outcomes.into_iter().zip(&entries) {
            match o {
                Outcome::Image {
                    rgb,
                    grey,
                    padded,
                    cropped,
                } => {
                    report.greyscale_converted += grey as usize;
                    report.padded_found += padded as usize;
                    report.padded_cropped += cropped as usize;
                    writer
                        .write_all(&rgb)
                        .with_context(|| format!("writing {}", spool.path.display()))?;
                    labels.push(ImageLabels::from_file_name(&entry.name));
                    accepted += 1;
                }
                Outcome::Skip(reason) => {
                    if reason == SkipReason::Padded {
                        report.padded_found += 1;
                    }
                    let key = serde_json::to_value(reason)?
                        .as_str()
                        .unwrap_or("other")
                        .to_string();
                    *report.skipped.entry(key).or_default() += 1;
                }
            }
        }
        bar.set_position(report.read as u64);
        bar.set_message(format!("{accepted} usable"));
        Ok(())
    })?;
    bar.finish_and_clear();
    writer
        .flush()
        .with_context(|| format!("writing {}", spool.path.display()))?;
    drop(writer);
    if accepted == 0 {
        bail!(
            "{} holds no usable image ({} files read, skipped: {:?})",
            input.display(),
            report.read,
            report.skipped
        );
    }
    if opts.holdout >= accepted {
        bail!(
            "--holdout {} leaves no training images ({accepted} usable)",
            opts.holdout
        );
    }
    // Stored in a seeded random order, so that any prefix of either split is a fair sample
    // (file names often sort by label: UTKFace's start with the age).
    let mut order: Vec<usize> = (0..accepted).collect();
    SplitMix64::derive(opts.seed, "holdout").shuffle(&mut order);
    let (holdout, train) = order.split_at(opts.holdout);
    report.written = accepted;
    report.train = train.len();
    report.holdout = holdout.len();
    report.labels = LabelCounts::count(&labels);
    let pack_labels = labels.iter().any(ImageLabels::any).then(|| PackLabels {
        train: SplitLabels::of(train.iter().map(|&i| labels[i])),
        holdout: SplitLabels::of(holdout.iter().map(|&i| labels[i])),
    });
    let mut source = spool.file()?;
    let bar = progress_bar(Some(accepted), "writing the levels");
    write_pack_with(
        out,
        opts.resolution,
        [train.len(), holdout.len()],
        serde_json::to_value(&report)?,
        pack_labels,
        |split, i| {
            let at = match split {
                Split::Train => train[i],
                Split::Holdout => holdout[i],
            };
            let mut img = vec![0u8; size];
            source
                .seek(SeekFrom::Start((at * size) as u64))
                .and_then(|_| source.read_exact(&mut img))
                .with_context(|| format!("reading {}", spool.path.display()))?;
            Ok(img)
        },
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    Ok(report)
}

/// The decoded images of a `prepare`, at the top resolution one after another, beside the pack
/// it becomes; removed when dropped (at the end, or when anything fails).
struct Spool {
    path: PathBuf,
}

impl Spool {
    fn create(out: &Path) -> Result<Self> {
        let mut path = out.as_os_str().to_owned();
        path.push(".spool");
        let path = PathBuf::from(path);
        std::fs::File::create(&path)
            .with_context(|| format!("creating the spool file {}", path.display()))?;
        Ok(Self { path })
    }

    fn file(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The number of files under a folder (for the progress bar); `None` for an archive, whose
/// count is known only once it is read.
fn count_files(input: &Path) -> Option<usize> {
    let mut files = Vec::new();
    (input.is_dir() && collect_files(input, &mut files).is_ok()).then_some(files.len())
}

/// A bar over `total` items on stderr (a spinner when the total is unknown), drawn only on a
/// terminal.
fn progress_bar(total: Option<usize>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n as u64).with_style(
            ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix} {spinner} {pos} files {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.with_prefix(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PrepareOptions {
        PrepareOptions {
            resolution: 8,
            holdout: 0,
            padded: PaddedPolicy::Crop,
            seed: 0,
            max_pixels: 1 << 24,
        }
    }

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn noisy(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = SplitMix64::new(seed);
        RgbImage::from_fn(w, h, |_, _| {
            image::Rgb([
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ])
        })
    }

    #[test]
    fn classifies_bad_inputs() {
        assert!(matches!(
            process(b"hello world", &opts()),
            Outcome::Skip(SkipReason::NotAnImage)
        ));
        assert!(matches!(
            process(&[], &opts()),
            Outcome::Skip(SkipReason::NotAnImage)
        ));
        let good = png(&noisy(20, 20, 1));
        assert!(matches!(
            process(&good[..good.len() / 2], &opts()),
            Outcome::Skip(SkipReason::Undecodable)
        ));
        assert!(matches!(
            process(&png(&noisy(6, 6, 2)), &opts()),
            Outcome::Skip(SkipReason::TooSmall)
        ));
        let tight = PrepareOptions {
            max_pixels: 100,
            ..opts()
        };
        assert!(matches!(
            process(&good, &tight),
            Outcome::Skip(SkipReason::TooLarge)
        ));
    }

    #[test]
    fn crops_to_square_and_flags_greyscale() {
        match process(&png(&noisy(40, 20, 3)), &opts()) {
            Outcome::Image {
                rgb, grey, padded, ..
            } => {
                assert_eq!(rgb.len(), 8 * 8 * 3);
                assert!(!grey && !padded);
            }
            _ => panic!("should be usable"),
        }
        let g = DynamicImage::ImageRgb8(noisy(16, 16, 4)).to_luma8();
        let mut bytes = Cursor::new(Vec::new());
        g.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        match process(&bytes.into_inner(), &opts()) {
            Outcome::Image { rgb, grey, .. } => {
                assert!(grey);
                assert!(rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
            }
            _ => panic!("greyscale is usable"),
        }
    }

    #[test]
    fn detects_padded_strips() {
        let mut img = noisy(100, 100, 5);
        for y in 0..100 {
            for x in 90..100 {
                img.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        assert_eq!(flat_strips(&img), [0, 0, 0, 10]);
        match process(&png(&img), &opts()) {
            Outcome::Image {
                padded, cropped, ..
            } => assert!(padded && cropped),
            _ => panic!("cropped, not skipped"),
        }
        // At the target size already: kept whole rather than cropped below it.
        let mut small = noisy(8, 8, 9);
        for y in 0..8 {
            small.put_pixel(0, y, image::Rgb([0, 0, 0]));
            small.put_pixel(1, y, image::Rgb([0, 0, 0]));
        }
        match process(&png(&small), &opts()) {
            Outcome::Image {
                padded, cropped, ..
            } => assert!(padded && !cropped),
            _ => panic!("kept"),
        }
        let skip = PrepareOptions {
            padded: PaddedPolicy::Skip,
            ..opts()
        };
        assert!(matches!(
            process(&png(&img), &skip),
            Outcome::Skip(SkipReason::Padded)
        ));
        assert_eq!(flat_strips(&noisy(50, 50, 6)), [0, 0, 0, 0]);
        let flat = RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
        assert_eq!(
            flat_strips(&flat),
            [0, 0, 0, 0],
            "a flat image is not padded"
        );
    }

    /// Labels in the file names go into the pack by stored image, for both splits, with their
    /// counts in the report; images follow their labels through the shuffle; a pack without
    /// labels (as every pack made before) opens with none.
    #[test]
    fn labels_from_file_names_go_into_the_pack() {
        let dir = std::env::temp_dir().join(format!("pggan-labels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("in/sub")).unwrap();
        // Each image's colour encodes its file: image k is flat grey 20·k.
        let names = [
            "30_1_2_20170109.jpg.chip.png",
            "sub/39_1_20170116174525125.png",
            "plain.png",
            "4_0_0_2017.png",
            "71_0_4_2017.png",
        ];
        let want = [
            ImageLabels {
                age: Some(30),
                gender: Some(1),
                race: Some(2),
            },
            ImageLabels {
                age: Some(39),
                gender: Some(1),
                race: None,
            },
            ImageLabels::default(),
            ImageLabels {
                age: Some(4),
                gender: Some(0),
                race: Some(0),
            },
            ImageLabels {
                age: Some(71),
                gender: Some(0),
                race: Some(4),
            },
        ];
        for (k, name) in names.iter().enumerate() {
            let v = 20 * k as u8 + 10;
            std::fs::write(
                dir.join("in").join(name),
                png(&RgbImage::from_pixel(8, 8, image::Rgb([v, v, v]))),
            )
            .unwrap();
        }
        let out = dir.join("l.pack");
        let report = prepare(
            &dir.join("in"),
            &out,
            &PrepareOptions {
                holdout: 2,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(
            report.labels,
            LabelCounts {
                age: 4,
                gender: 4,
                race: 3,
                none: 1
            }
        );
        let pack = crate::pack::Pack::open(&out).unwrap();
        for split in [Split::Train, Split::Holdout] {
            let labels = pack.labels(split).expect("labelled");
            let images = pack.read_images(split, 8, 0, pack.count(split)).unwrap();
            assert_eq!(labels.len(), pack.count(split));
            for i in 0..pack.count(split) {
                let k = ((images[i * 8 * 8 * 3] - 10) / 20) as usize;
                assert_eq!(
                    labels.get(i),
                    want[k],
                    "{split:?} image {i} is {}",
                    names[k]
                );
            }
        }
        // Without labelled names: no labels in the pack, and the header has no `labels` at all.
        std::fs::create_dir_all(dir.join("plain")).unwrap();
        for k in 0..3 {
            std::fs::write(dir.join(format!("plain/{k}.png")), png(&noisy(8, 8, k))).unwrap();
        }
        prepare(&dir.join("plain"), &out, &opts()).unwrap();
        let pack = crate::pack::Pack::open(&out).unwrap();
        assert!(pack.labels(Split::Train).is_none());
        let bytes = std::fs::read(&out).unwrap();
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[16..16 + len]).unwrap();
        assert!(
            header.get("labels").is_none(),
            "as a pack made before labels"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
