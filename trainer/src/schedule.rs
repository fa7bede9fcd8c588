//! The progressive schedule: a pure function of the images shown, like the official
//! `TrainingSchedule`. Everything else in the trainer asks it where training stands.

use serde::{Deserialize, Serialize};

/// Where training stands at a given number of images shown.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Level the networks run at (0 = 4×4).
    pub level: usize,
    /// Fade weight of that level: below 1 while it fades in, 1 once stable.
    pub alpha: f64,
    /// Minibatch size at this level.
    pub minibatch: usize,
    /// Index of the growth phase (one stabilisation plus one fade).
    pub phase_index: usize,
}

impl Phase {
    /// Resolution of the images at this phase, in pixels.
    pub fn resolution(&self) -> usize {
        4 << self.level
    }

    /// Whether a new level is fading in.
    pub fn fading(&self) -> bool {
        self.alpha < 1.0
    }
}

/// The parameters of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Number of levels of the model (4×4 included).
    pub num_levels: usize,
    /// Thousands of images each level trains for before the next fades in.
    pub stabilize_kimg: f64,
    /// Thousands of images over which each new level fades in.
    pub fade_kimg: f64,
    /// Minibatch size by level (index 0 = 4×4); the last entry repeats for higher levels.
    pub minibatch_by_level: Vec<usize>,
}

impl ScheduleSpec {
    /// Minibatch size at `level`.
    pub fn minibatch(&self, level: usize) -> usize {
        let i = level.min(self.minibatch_by_level.len().saturating_sub(1));
        self.minibatch_by_level.get(i).copied().unwrap_or(1)
    }

    /// Thousands of images at which `level` ends its stabilisation (and the next starts fading
    /// in); for the top level, when it first reaches full weight.
    pub fn stage_end_kimg(&self, level: usize) -> f64 {
        let phase = self.stabilize_kimg + self.fade_kimg;
        if level + 1 >= self.num_levels {
            level as f64 * phase
        } else {
            level as f64 * phase + self.stabilize_kimg
        }
    }

    /// Thousands of images until the top level is reached at full weight.
    pub fn growth_kimg(&self) -> f64 {
        (self.num_levels.saturating_sub(1)) as f64 * (self.stabilize_kimg + self.fade_kimg)
    }
}

/// The phase at `kimg` thousand images shown.
pub fn schedule(kimg: f64, spec: &ScheduleSpec) -> Phase {
    let top = spec.num_levels.saturating_sub(1);
    let phase_kimg_total = spec.stabilize_kimg + spec.fade_kimg;
    let (phase_index, into_phase) = if phase_kimg_total > 0.0 {
        let p = (kimg.max(0.0) / phase_kimg_total).floor();
        (p as usize, kimg - p * phase_kimg_total)
    } else {
        (top, 0.0)
    };
    let (level, alpha) = if phase_index >= top {
        (top, 1.0)
    } else if into_phase < spec.stabilize_kimg {
        (phase_index, 1.0)
    } else {
        let alpha = if spec.fade_kimg > 0.0 {
            ((into_phase - spec.stabilize_kimg) / spec.fade_kimg).clamp(0.0, 1.0)
        } else {
            1.0
        };
        (phase_index + 1, alpha)
    };
    Phase {
        level,
        alpha,
        minibatch: spec.minibatch(level),
        phase_index: phase_index.min(top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScheduleSpec {
        ScheduleSpec {
            num_levels: 5,
            stabilize_kimg: 600.0,
            fade_kimg: 600.0,
            minibatch_by_level: vec![128, 128, 128, 64, 32, 16],
        }
    }

    #[test]
    fn starts_stable_at_4x4() {
        let p = schedule(0.0, &spec());
        assert_eq!(
            (p.level, p.alpha, p.minibatch, p.resolution()),
            (0, 1.0, 128, 4)
        );
        assert_eq!(schedule(599.9, &spec()).level, 0);
    }

    #[test]
    fn fades_in_each_level_linearly() {
        let p = schedule(900.0, &spec());
        assert_eq!(p.level, 1);
        assert!((p.alpha - 0.5).abs() < 1e-12);
        assert!(p.fading());
        let p = schedule(1200.0, &spec());
        assert_eq!((p.level, p.alpha), (1, 1.0));
        let p = schedule(3600.0 + 600.0 + 150.0, &spec());
        assert_eq!(p.level, 4);
        assert!((p.alpha - 0.25).abs() < 1e-12);
        assert_eq!(p.minibatch, 32);
    }

    #[test]
    fn stays_at_the_top_level() {
        for kimg in [4800.0, 6000.0, 1e6] {
            let p = schedule(kimg, &spec());
            assert_eq!((p.level, p.alpha), (4, 1.0), "kimg {kimg}");
        }
    }

    #[test]
    fn level_and_alpha_never_go_back() {
        let mut last = (0usize, 0.0f64);
        for i in 0..=60_000 {
            let p = schedule(i as f64 * 0.1, &spec());
            let key = (p.level, p.alpha);
            assert!(
                key.0 > last.0 || (key.0 == last.0 && key.1 >= last.1),
                "went back at {i}: {last:?} → {key:?}"
            );
            last = key;
        }
    }

    #[test]
    fn fractional_kimg_for_tiny_runs() {
        let s = ScheduleSpec {
            num_levels: 2,
            stabilize_kimg: 0.2,
            fade_kimg: 0.2,
            minibatch_by_level: vec![8],
        };
        assert_eq!(schedule(0.1, &s).level, 0);
        let p = schedule(0.3, &s);
        assert_eq!(p.level, 1);
        assert!((p.alpha - 0.5).abs() < 1e-9);
        assert_eq!(p.minibatch, 8);
        assert_eq!(schedule(5.0, &s).alpha, 1.0);
    }

    #[test]
    fn stage_ends() {
        let s = spec();
        assert_eq!(s.stage_end_kimg(0), 600.0);
        assert_eq!(s.stage_end_kimg(1), 1800.0);
        assert_eq!(s.stage_end_kimg(4), 4800.0);
        assert_eq!(s.growth_kimg(), 4800.0);
        // Just before a stage end the level is still stable and the next has not started.
        assert_eq!(schedule(1799.0, &s).level, 1);
        assert!(schedule(1801.0, &s).fading());
    }

    #[test]
    fn no_fade_jumps_straight_up() {
        let s = ScheduleSpec {
            num_levels: 3,
            stabilize_kimg: 1.0,
            fade_kimg: 0.0,
            minibatch_by_level: vec![4],
        };
        assert_eq!(schedule(0.5, &s).level, 0);
        assert_eq!(schedule(1.5, &s).level, 1);
        assert_eq!(schedule(1.5, &s).alpha, 1.0);
    }
}
