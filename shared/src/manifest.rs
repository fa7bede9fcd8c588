//! `manifest.json` of an exported model: what the page loads and what the model card reports.
//!
//! Written by `pggan export`, read by the browser demo. [`Manifest::parse`] checks everything the
//! page relies on (sizes, levels, file names that stay inside the model folder) so a damaged or
//! mismatched manifest is refused with a message instead of half-working.

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;

/// Format tag of the manifests this crate writes and reads.
pub const MANIFEST_FORMAT: &str = "pggan-rs-export/1";

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A growth stage: the EMA generator as it stood at the end of one level.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageEntry {
    /// Level (0 = 4×4).
    pub level: usize,
    /// Resolution in pixels (`4·2^level`).
    pub resolution: usize,
    /// File name, relative to the manifest.
    pub file: String,
    /// Thousands of images shown when it was taken.
    pub kimg: f64,
    /// Size of the file in bytes (for the page's progress bar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A snapshot of the generator taken while a level faded in: the network as it was at that
/// point of training, run at the fade weight it had then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FadeEntry {
    /// The level fading in (≥ 1).
    pub level: usize,
    /// Resolution in pixels (`4·2^level`).
    pub resolution: usize,
    /// The fade weight when it was taken (0: the previous stage's picture, 1: the fade's end).
    pub alpha: f64,
    /// Thousands of images shown when it was taken.
    pub kimg: f64,
    /// File name, relative to the manifest.
    pub file: String,
    /// Size of the file in bytes (for the page's progress bar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One latent direction for face edits, as the model card and the page's sliders show it (the
/// vector itself is in the directions file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionSummary {
    /// `age`, `gender`, `sefa1`, ….
    pub name: String,
    /// `supervised` (fitted to an attribute predictor) or `unsupervised` (SeFa).
    pub kind: String,
    /// Mean change of the predicted age per unit, in years, on fresh faces.
    pub years_per_unit: f64,
    /// Mean change of the predicted probability of gender 1 (female) per unit.
    pub female_per_unit: f64,
    /// Fraction of fresh faces whose reading moves monotonically over −2 … 2 units.
    pub monotonic: f64,
}

/// The model's edit directions: their file and what each does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionsEntry {
    /// File name, relative to the manifest (`directions.json`).
    pub file: String,
    /// Size of the file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The directions, in the file's order.
    pub list: Vec<DirectionSummary>,
}

/// `manifest.json` of an exported model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format tag, [`MANIFEST_FORMAT`].
    pub format: String,
    /// Model name (the export folder's name).
    pub name: String,
    /// Output resolution of `generator`.
    pub resolution: usize,
    /// Level of `generator`.
    pub level: usize,
    /// Its fade weight (1 unless exported mid-fade).
    pub alpha: f64,
    /// Latent size.
    pub latent_size: usize,
    /// Channels by level.
    pub channels: Vec<usize>,
    /// The architecture of `generator`.
    pub config: ModelConfig,
    /// The final generator's file, relative to the manifest.
    pub generator: String,
    /// Size of the generator file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_bytes: Option<u64>,
    /// Snapshots at the end of each level, by level.
    pub stages: Vec<StageEntry>,
    /// Snapshots taken through the fade-ins, by level and then α (none in exports made before
    /// the trainer kept them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fades: Vec<FadeEntry>,
    /// Latent directions for face edits (`pggan directions`), if fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directions: Option<DirectionsEntry>,
    /// Training figures (images shown, time, hardware, options, metrics).
    pub training: serde_json::Value,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest.json is {0} bytes; at most {max} are accepted", max = MAX_MANIFEST_BYTES)]
    TooLarge(usize),
    /// Not JSON of the right shape.
    #[error("manifest.json is not a model manifest: {0}")]
    Json(String),
    /// Another format.
    #[error("manifest.json has format “{0}”; this version reads “{f}”", f = MANIFEST_FORMAT)]
    Format(String),
    /// Fields that contradict each other or the architecture.
    #[error("manifest.json is inconsistent: {0}")]
    Inconsistent(String),
    /// A file name that would leave the model folder or is not a plain relative path.
    #[error(
        "manifest.json names the file “{0}”; only plain relative names inside the model folder are allowed"
    )]
    FileName(String),
}

/// Whether `name` is a plain relative path inside the model folder (`stages/level2.safetensors`).
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(text.len()));
        }
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// Checks the fields against each other and the architecture.
    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |msg: String| Err(ManifestError::Inconsistent(msg));
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(
                self.format.chars().take(40).collect(),
            ));
        }
        self.config
            .validate()
            .map_err(|e| ManifestError::Inconsistent(e.to_string()))?;
        if self.config.latent_size != self.latent_size || self.latent_size > 8192 {
            return bad(format!(
                "latent size {} vs the architecture's {}",
                self.latent_size, self.config.latent_size
            ));
        }
        if self.resolution != self.config.resolution
            || self.resolution != ModelConfig::level_resolution(self.level)
        {
            return bad(format!(
                "resolution {} does not match level {} or the architecture",
                self.resolution, self.level
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad(format!("alpha {} is outside [0, 1]", self.alpha));
        }
        let want: Vec<usize> = (0..=self.level).map(|l| self.config.channels(l)).collect();
        if self.channels != want {
            return bad(format!(
                "channels {:?} but the architecture has {:?}",
                self.channels, want
            ));
        }
        for name in std::iter::once(&self.generator)
            .chain(self.stages.iter().map(|s| &s.file))
            .chain(self.fades.iter().map(|f| &f.file))
            .chain(self.directions.iter().map(|d| &d.file))
        {
            if !is_safe_file_name(name) {
                return Err(ManifestError::FileName(name.chars().take(60).collect()));
            }
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.level > self.level || s.resolution != ModelConfig::level_resolution(s.level) {
                return bad(format!(
                    "stage {i} has level {} and resolution {}",
                    s.level, s.resolution
                ));
            }
            if i > 0 && self.stages[i - 1].level >= s.level {
                return bad("stages are not in increasing level order".into());
            }
        }
        for (i, f) in self.fades.iter().enumerate() {
            if f.level == 0
                || f.level > self.level
                || f.resolution != ModelConfig::level_resolution(f.level)
                || !(0.0..=1.0).contains(&f.alpha)
            {
                return bad(format!(
                    "fade snapshot {i} has level {}, resolution {} and α {}",
                    f.level, f.resolution, f.alpha
                ));
            }
            if i > 0 && (self.fades[i - 1].level, self.fades[i - 1].alpha) >= (f.level, f.alpha) {
                return bad("fade snapshots are not in order of level and α".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let config = ModelConfig::new()
            .with_resolution(16)
            .with_latent_size(32)
            .with_fmap_base(64)
            .with_fmap_max(32);
        Manifest {
            format: MANIFEST_FORMAT.into(),
            name: "tiny".into(),
            resolution: 16,
            level: 2,
            alpha: 1.0,
            latent_size: 32,
            channels: (0..3).map(|l| config.channels(l)).collect(),
            config,
            generator: "generator.safetensors".into(),
            generator_bytes: Some(1000),
            stages: (0..3)
                .map(|l| StageEntry {
                    level: l,
                    resolution: 4 << l,
                    file: format!("stages/level{l}.safetensors"),
                    kimg: l as f64,
                    bytes: None,
                })
                .collect(),
            fades: [(1, 0.0), (1, 0.5), (1, 1.0), (2, 0.0), (2, 1.0)]
                .into_iter()
                .map(|(level, alpha)| FadeEntry {
                    level,
                    resolution: 4 << level,
                    alpha,
                    kimg: level as f64 + alpha,
                    file: format!(
                        "fades/level{level}-a{:03}.safetensors",
                        (alpha * 100.0) as u32
                    ),
                    bytes: Some(900),
                })
                .collect(),
            directions: Some(DirectionsEntry {
                file: "directions.json".into(),
                bytes: Some(100),
                list: vec![DirectionSummary {
                    name: "age".into(),
                    kind: "supervised".into(),
                    years_per_unit: 5.0,
                    female_per_unit: 0.0,
                    monotonic: 0.9,
                }],
            }),
            training: serde_json::json!({"kimg": 3.0}),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        let text = serde_json::to_string_pretty(&m).unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn refuses_damage_with_a_reason() {
        let text = |m: &Manifest| serde_json::to_string(m).unwrap();
        assert!(matches!(Manifest::parse("{"), Err(ManifestError::Json(_))));
        assert!(matches!(
            Manifest::parse("[1,2]"),
            Err(ManifestError::Json(_))
        ));
        let mut m = sample();
        m.format = "other/9".into();
        assert_eq!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Format("other/9".into()))
        );
        let mut m = sample();
        m.latent_size = 64;
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut m = sample();
        m.resolution = 32;
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut m = sample();
        m.channels[0] += 1;
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut m = sample();
        m.fades.swap(0, 1);
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(e)) if e.contains("fade snapshots are not in order")
        ));
        let mut m = sample();
        m.fades[0].level = 0;
        m.fades[0].resolution = 4;
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(e)) if e.contains("fade snapshot 0 has level 0")
        ));
        let mut m = sample();
        m.fades[4].alpha = 1.5;
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut m = sample();
        m.directions.as_mut().unwrap().file = "/etc/passwd".into();
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::FileName(_))
        ));
        let mut m = sample();
        m.fades[2].file = "../x".into();
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::FileName(_))
        ));
        let mut m = sample();
        m.stages.swap(0, 1);
        assert!(matches!(
            Manifest::parse(&text(&m)),
            Err(ManifestError::Inconsistent(_))
        ));
        for evil in [
            "../secret",
            "/etc/passwd",
            "https://x.example/a",
            "a//b",
            "stages/../../x",
            "",
        ] {
            let mut m = sample();
            m.generator = evil.into();
            assert!(
                matches!(Manifest::parse(&text(&m)), Err(ManifestError::FileName(_))),
                "{evil}"
            );
        }
        let huge = " ".repeat(MAX_MANIFEST_BYTES + 1);
        assert_eq!(
            Manifest::parse(&huge),
            Err(ManifestError::TooLarge(huge.len()))
        );
    }

    #[test]
    fn older_manifests_without_sizes_still_parse() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("generator_bytes");
        v.as_object_mut().unwrap().remove("fades");
        v.as_object_mut().unwrap().remove("directions");
        let m = Manifest::parse(&v.to_string()).unwrap();
        assert_eq!(m.generator_bytes, None);
        assert!(
            m.fades.is_empty(),
            "no fade snapshots before the trainer kept them"
        );
    }
}
