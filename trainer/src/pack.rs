//! The dataset pack: every image at every power-of-two resolution, as raw RGB bytes, in one file.
//!
//! Layout: the 8-byte magic `PGGANPK1`, a little-endian `u64` header length, a JSON header
//! ([`PackHeader`]), then the image data. Each split (`train`, `holdout`) stores, per level, its
//! images one after another as `[h, w, 3]` `u8`. Lower levels are 2×2 box-filtered from the level
//! above, like the official dataset tool.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::fsutil::AtomicFile;
use crate::labels::{PackLabels, SplitLabels};

/// Magic bytes at the start of every pack.
pub const MAGIC: &[u8; 8] = b"PGGANPK1";

/// One level of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelEntry {
    /// Resolution in pixels.
    pub resolution: usize,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Length in bytes (`count · resolution² · 3`).
    pub bytes: u64,
}

/// One split of the pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitEntry {
    /// Number of images.
    pub count: usize,
    /// Levels from 4×4 up.
    pub levels: Vec<LevelEntry>,
}

/// The JSON header of a pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackHeader {
    /// Format version (1).
    pub version: u32,
    /// Top resolution.
    pub resolution: usize,
    /// Training images.
    pub train: SplitEntry,
    /// Held-out images for metrics.
    pub holdout: SplitEntry,
    /// What `prepare` did: counts by outcome.
    pub report: serde_json::Value,
    /// Labels read from the file names, by image of each split (packs made before labels were
    /// kept, and sets without them, have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PackLabels>,
}

/// A box-filtered 2× reduction of an `[r, r, 3]` image.
pub fn box_down(img: &[u8], res: usize) -> Vec<u8> {
    let half = res / 2;
    let mut out = vec![0u8; half * half * 3];
    for y in 0..half {
        for x in 0..half {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| img[(yy * res + xx) * 3 + c] as u32;
                let sum = at(2 * y, 2 * x)
                    + at(2 * y, 2 * x + 1)
                    + at(2 * y + 1, 2 * x)
                    + at(2 * y + 1, 2 * x + 1);
                out[(y * half + x) * 3 + c] = ((sum + 2) / 4) as u8;
            }
        }
    }
    out
}

/// Where each level of a split of `count` images goes, bottom level first, from `offset` on;
/// returns the entry and the offset after it.
fn split_layout(resolution: usize, count: usize, mut offset: u64) -> (SplitEntry, u64) {
    let levels = resolution.trailing_zeros() as usize - 1;
    let entries = (0..levels)
        .map(|level| {
            let r = 4usize << level;
            let bytes = (count * r * r * 3) as u64;
            let entry = LevelEntry {
                resolution: r,
                offset,
                bytes,
            };
            offset += bytes;
            entry
        })
        .collect();
    (
        SplitEntry {
            count,
            levels: entries,
        },
        offset,
    )
}

/// Writes a pack from top-resolution images (`[r, r, 3]` each) split into train and holdout.
#[cfg(test)]
pub fn write_pack(
    path: &Path,
    resolution: usize,
    train: &[Vec<u8>],
    holdout: &[Vec<u8>],
    report: serde_json::Value,
) -> Result<()> {
    write_pack_with(
        path,
        resolution,
        [train.len(), holdout.len()],
        report,
        None,
        |split, i| {
            Ok(match split {
                Split::Train => train[i].clone(),
                Split::Holdout => holdout[i].clone(),
            })
        },
        |_| {},
    )
}

/// Writes a pack image by image, never holding more than one: `image(split, i)` gives the `i`-th
/// top-resolution image (`[r, r, 3]`) of a split with `counts = [train, holdout]` images; each is
/// box-filtered down once and every level's copy written to its place. `written(n)` is told the
/// images written so far. The file appears whole or not at all.
pub fn write_pack_with(
    path: &Path,
    resolution: usize,
    counts: [usize; 2],
    report: serde_json::Value,
    labels: Option<PackLabels>,
    mut image: impl FnMut(Split, usize) -> Result<Vec<u8>>,
    mut written: impl FnMut(usize),
) -> Result<()> {
    let (train, end) = split_layout(resolution, counts[0], 0);
    let (holdout, _) = split_layout(resolution, counts[1], end);
    let header = PackHeader {
        version: 1,
        resolution,
        train,
        holdout,
        report,
        labels,
    };
    let json = serde_json::to_vec(&header)?;
    let data_start = 16 + json.len() as u64;
    let mut write = || -> Result<()> {
        let mut f = AtomicFile::create(path)?;
        f.write_all(MAGIC)?;
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        f.flush()?;
        let tmp = crate::fsutil::temp_path(path);
        let mut done = 0;
        for (split, entry) in [
            (Split::Train, &header.train),
            (Split::Holdout, &header.holdout),
        ] {
            // One writer per level, each at its level's place: one pass over the images.
            let mut levels = entry
                .levels
                .iter()
                .map(|level| -> std::io::Result<_> {
                    let mut file = std::fs::OpenOptions::new().write(true).open(&tmp)?;
                    file.seek(SeekFrom::Start(data_start + level.offset))?;
                    Ok(std::io::BufWriter::with_capacity(1 << 20, file))
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            for i in 0..entry.count {
                let mut img = image(split, i)?;
                if img.len() != resolution * resolution * 3 {
                    bail!(
                        "image {i} has {} bytes; a {resolution}×{resolution} RGB image has {}",
                        img.len(),
                        resolution * resolution * 3
                    );
                }
                let mut r = resolution;
                for level in levels.iter_mut().rev() {
                    if r < resolution {
                        img = box_down(&img, r * 2);
                    }
                    level.write_all(&img)?;
                    r /= 2;
                }
                done += 1;
                written(done);
            }
            for level in levels {
                level
                    .into_inner()
                    .map_err(|e| e.into_error())?
                    .sync_data()?;
            }
        }
        f.commit()?;
        Ok(())
    };
    write().with_context(|| format!("writing the pack {}", path.display()))
}

/// An open pack: its header and where its data starts.
#[derive(Debug)]
pub struct Pack {
    /// Path of the file.
    pub path: PathBuf,
    /// Its header.
    pub header: PackHeader,
    data_start: u64,
}

/// Which images of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Training images.
    Train,
    /// Held-out images (read by the metrics).
    Holdout,
}

impl Pack {
    /// Opens a pack and checks its header against the file's size.
    pub fn open(path: &Path) -> Result<Self> {
        let mut f =
            File::open(path).with_context(|| format!("opening dataset pack {}", path.display()))?;
        let file_len = f.metadata()?.len();
        let mut magic = [0u8; 8];
        if f.read_exact(&mut magic).is_err() || &magic != MAGIC {
            bail!(
                "{} is not a dataset pack (no PGGANPK1 magic); make one with `pggan prepare`",
                path.display()
            );
        }
        let mut len = [0u8; 8];
        f.read_exact(&mut len)
            .with_context(|| format!("{} is truncated (no header length)", path.display()))?;
        let len = u64::from_le_bytes(len);
        if len > 64 << 20 || 16 + len > file_len {
            bail!(
                "{} is truncated or damaged (header of {len} bytes in a {file_len}-byte file)",
                path.display()
            );
        }
        let mut json = vec![0u8; len as usize];
        f.read_exact(&mut json)?;
        let header: PackHeader = serde_json::from_slice(&json)
            .with_context(|| format!("{} has a damaged header", path.display()))?;
        if header.version != 1 {
            bail!(
                "{} is pack version {}, this build reads version 1",
                path.display(),
                header.version
            );
        }
        if let Some(labels) = &header.labels {
            for (name, l, count) in [
                ("train", &labels.train, header.train.count),
                ("holdout", &labels.holdout, header.holdout.count),
            ] {
                if [l.age.len(), l.gender.len(), l.race.len()] != [count; 3] {
                    bail!(
                        "{} has a damaged header: labels for {} {name} images, but {count} images",
                        path.display(),
                        l.len()
                    );
                }
            }
        }
        let data_start = 16 + len;
        for split in [&header.train, &header.holdout] {
            for level in &split.levels {
                let expect = split.count as u64 * (level.resolution * level.resolution * 3) as u64;
                if level.bytes != expect || data_start + level.offset + level.bytes > file_len {
                    bail!(
                        "{} is truncated or damaged: level {}×{} needs bytes {}..{} of a {file_len}-byte file",
                        path.display(),
                        level.resolution,
                        level.resolution,
                        data_start + level.offset,
                        data_start + level.offset + level.bytes
                    );
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            data_start,
        })
    }

    /// Number of images in a split.
    pub fn count(&self, split: Split) -> usize {
        self.split(split).count
    }

    fn split(&self, split: Split) -> &SplitEntry {
        match split {
            Split::Train => &self.header.train,
            Split::Holdout => &self.header.holdout,
        }
    }

    /// The labels of `split`'s images, by stored index, if the pack has any.
    pub fn labels(&self, split: Split) -> Option<&SplitLabels> {
        let labels = self.header.labels.as_ref()?;
        Some(match split {
            Split::Train => &labels.train,
            Split::Holdout => &labels.holdout,
        })
    }

    /// The place of `split`'s images at `resolution`.
    pub fn level(&self, split: Split, resolution: usize) -> Result<&LevelEntry> {
        self.split(split)
            .levels
            .iter()
            .find(|l| l.resolution == resolution)
            .with_context(|| {
                format!(
                    "{} has no {resolution}×{resolution} level (top is {})",
                    self.path.display(),
                    self.header.resolution
                )
            })
    }

    /// All images of a split at `resolution`, as one `[n, r, r, 3]` byte array.
    #[cfg(test)]
    pub fn read_level(&self, split: Split, resolution: usize) -> Result<Vec<u8>> {
        self.read_images(split, resolution, 0, self.count(split))
    }

    /// Images `first .. first + count` of a split at `resolution` (`[count, r, r, 3]`): a
    /// metric's sample without reading the whole level.
    pub fn read_images(
        &self,
        split: Split,
        resolution: usize,
        first: usize,
        count: usize,
    ) -> Result<Vec<u8>> {
        let entry = self.level(split, resolution)?;
        let size = resolution * resolution * 3;
        if first + count > self.count(split) {
            bail!(
                "{} has {} images in that split; asked for {first}..{}",
                self.path.display(),
                self.count(split),
                first + count
            );
        }
        let mut reader = self.reader()?;
        let mut buf = vec![0u8; count * size];
        reader.read_at(entry.offset + (first * size) as u64, &mut buf)?;
        Ok(buf)
    }

    /// A reader of the pack's images for one thread.
    pub fn reader(&self) -> Result<PackReader> {
        Ok(PackReader {
            file: File::open(&self.path)
                .with_context(|| format!("opening dataset pack {}", self.path.display()))?,
            path: self.path.clone(),
            data_start: self.data_start,
        })
    }
}

/// Reads image data from a pack's file by position, a few images at a time: nothing is kept.
pub struct PackReader {
    file: File,
    path: PathBuf,
    data_start: u64,
}

impl PackReader {
    /// Fills `buf` from `offset` bytes into the data section. A file that has become shorter
    /// (replaced or truncated under a running trainer) is an error naming it.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(self.data_start + offset))
            .and_then(|_| self.file.read_exact(buf))
            .with_context(|| {
                format!(
                    "reading {} bytes at {} of the dataset pack {}: it was truncated or changed after it was opened",
                    buf.len(),
                    self.data_start + offset,
                    self.path.display()
                )
            })
    }

    /// Image `index` of `level` (`[r, r, 3]`) into `buf`.
    pub fn read_image(&mut self, level: &LevelEntry, index: usize, buf: &mut [u8]) -> Result<()> {
        let size = level.resolution * level.resolution * 3;
        self.read_at(level.offset + (index * size) as u64, &mut buf[..size])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(res: usize, v: u8) -> Vec<u8> {
        (0..res * res * 3)
            .map(|i| v.wrapping_add(i as u8))
            .collect()
    }

    #[test]
    fn box_filter_averages_blocks() {
        let img: Vec<u8> = vec![0, 0, 0, 10, 10, 10, 20, 20, 20, 31, 31, 31];
        assert_eq!(box_down(&img, 2), vec![15, 15, 15]);
    }

    #[test]
    fn pack_round_trip_and_truncation() {
        let dir = std::env::temp_dir().join(format!("pggan-pack-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.pack");
        let train = vec![image(16, 1), image(16, 50)];
        let hold = vec![image(16, 99)];
        write_pack(&path, 16, &train, &hold, serde_json::json!({"read": 3})).unwrap();
        let pack = Pack::open(&path).unwrap();
        assert_eq!(pack.count(Split::Train), 2);
        assert_eq!(pack.count(Split::Holdout), 1);
        assert_eq!(pack.read_level(Split::Train, 16).unwrap(), train.concat());
        assert_eq!(pack.read_level(Split::Holdout, 16).unwrap(), hold[0]);
        let eight = pack.read_level(Split::Train, 8).unwrap();
        assert_eq!(&eight[..8 * 8 * 3], box_down(&train[0], 16).as_slice());
        assert_eq!(
            pack.read_level(Split::Train, 4).unwrap().len(),
            2 * 4 * 4 * 3
        );
        assert!(pack.read_level(Split::Train, 32).is_err());

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = Pack::open(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&path, b"GIF89a not a pack").unwrap();
        let err = Pack::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a dataset pack"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
