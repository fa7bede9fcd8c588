//! The architecture of a generator/critic pair: resolution, latent size and channel schedule.

use burn::config::Config;

/// Shape of a progressive GAN, shared by its generator and critic.
///
/// Levels count resolutions from the bottom: level 0 is 4×4, level `l` is `4·2^l` pixels square.
/// The channel count of level `l` follows the official code, `nf(l + 1)` with
/// `nf(stage) = min(fmap_base / 2^stage, fmap_max)`.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// Final (largest) resolution in pixels, a power of two ≥ 4.
    #[config(default = 64)]
    pub resolution: usize,
    /// Length of the latent code.
    #[config(default = 512)]
    pub latent_size: usize,
    /// Numerator of the channel schedule.
    #[config(default = 8192)]
    pub fmap_base: usize,
    /// Largest channel count of any layer.
    #[config(default = 512)]
    pub fmap_max: usize,
    /// Colour channels of the images.
    #[config(default = 3)]
    pub image_channels: usize,
    /// Preferred group size of the critic's minibatch-stddev layer (a divisor of the batch is used
    /// when the batch is not a multiple of it).
    #[config(default = 4)]
    pub mbstd_group_size: usize,
}

/// A model configuration that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The resolution is not a power of two of at least 4.
    #[error("resolution {0} is not a power of two ≥ 4 (allowed: 4, 8, 16, 32, 64, 128, 256, …)")]
    Resolution(usize),
    /// A size that must be positive is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl ModelConfig {
    /// Checks that the configuration describes a buildable model.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.resolution < 4 || !self.resolution.is_power_of_two() || self.resolution > 4096 {
            return Err(ConfigError::Resolution(self.resolution));
        }
        for (name, v) in [
            ("latent size", self.latent_size),
            ("fmap_base", self.fmap_base),
            ("fmap_max", self.fmap_max),
            ("image channels", self.image_channels),
            ("mbstd group size", self.mbstd_group_size),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }

    /// Number of levels, 4×4 included: `log2(resolution) − 1`.
    pub fn num_levels(&self) -> usize {
        self.resolution.trailing_zeros() as usize - 1
    }

    /// Resolution of `level` in pixels.
    pub fn level_resolution(level: usize) -> usize {
        4 << level
    }

    /// The official `nf(stage)`: `min(fmap_base / 2^stage, fmap_max)`, at least 1.
    pub fn nf(&self, stage: usize) -> usize {
        (self.fmap_base >> stage.min(63)).clamp(1, self.fmap_max)
    }

    /// Feature channels at `level` (its convolutions' width).
    pub fn channels(&self, level: usize) -> usize {
        self.nf(level + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_schedule_matches_official_defaults() {
        let c = ModelConfig::new().with_resolution(128);
        let chans: Vec<usize> = (0..c.num_levels()).map(|l| c.channels(l)).collect();
        assert_eq!(chans, vec![512, 512, 512, 512, 256, 128]);
        assert_eq!(c.nf(0), 512);
        let small = ModelConfig::new()
            .with_resolution(32)
            .with_fmap_base(1024)
            .with_fmap_max(256);
        let chans: Vec<usize> = (0..small.num_levels()).map(|l| small.channels(l)).collect();
        assert_eq!(chans, vec![256, 256, 128, 64]);
    }

    #[test]
    fn levels_and_resolutions() {
        assert_eq!(ModelConfig::new().with_resolution(4).num_levels(), 1);
        assert_eq!(ModelConfig::new().with_resolution(64).num_levels(), 5);
        assert_eq!(ModelConfig::level_resolution(4), 64);
    }

    #[test]
    fn rejects_bad_resolutions() {
        for r in [0, 2, 3, 48, 100] {
            assert_eq!(
                ModelConfig::new().with_resolution(r).validate(),
                Err(ConfigError::Resolution(r))
            );
        }
        assert!(ModelConfig::new().with_latent_size(0).validate().is_err());
        assert!(ModelConfig::new().validate().is_ok());
    }
}
