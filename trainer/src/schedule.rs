//! The progressive schedule: a pure function of the images shown, like the official
//! `TrainingSchedule`. Everything else in the trainer asks it where training stands.
//!
//! Growth phase `p` (for every level `p` below the top) trains level `p` at full weight for
//! `stabilize_kimg(p)`, then fades level `p + 1` in over `fade_kimg(p + 1)` with α rising
//! linearly; the top level then trains at full weight until the run ends.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where training stands at a given number of images shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Level the networks run at (0 = 4×4).
    pub level: usize,
    /// Fade weight of that level: below 1 while it fades in, 1 once stable.
    pub alpha: f64,
    /// Minibatch size at this level.
    pub minibatch: usize,
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

/// Thousands of images for each level: one number for all, or one per level from a given level
/// up, the last repeating. On the command line `600` or `40,40,60,100`; in `options.json` a
/// number or a list.
#[derive(Debug, Clone, PartialEq)]
pub struct KimgByLevel(Vec<f64>);

impl KimgByLevel {
    /// The `i`-th entry; the last repeats.
    pub fn get(&self, i: usize) -> f64 {
        self.0[i.min(self.0.len() - 1)]
    }
}

impl FromStr for KimgByLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let values = s
            .split(',')
            .map(|v| {
                let k: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("“{v}” is not a number of kimg"))?;
                if k >= 0.0 && k.is_finite() {
                    Ok(k)
                } else {
                    Err(format!("{v} is not a finite number ≥ 0"))
                }
            })
            .collect::<Result<Vec<f64>, String>>()?;
        Ok(KimgByLevel(values))
    }
}

impl fmt::Display for KimgByLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for KimgByLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_f64(*one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for KimgByLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(f64),
            Many(Vec<f64>),
        }
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(k) => Ok(KimgByLevel(vec![k])),
            OneOrMany::Many(v) if !v.is_empty() => Ok(KimgByLevel(v)),
            OneOrMany::Many(_) => Err(serde::de::Error::custom("an empty list of kimg")),
        }
    }
}

/// The parameters of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Number of levels of the model (4×4 included).
    pub num_levels: usize,
    /// Thousands of images each level trains at full weight before the next fades in, from
    /// level 0 (4×4) up.
    pub stabilize_kimg: KimgByLevel,
    /// Thousands of images over which each new level fades in, from level 1 (8×8) up.
    pub fade_kimg: KimgByLevel,
    /// Minibatch size by level (index 0 = 4×4); the last entry repeats for higher levels.
    pub minibatch_by_level: Vec<usize>,
}

impl ScheduleSpec {
    /// Minibatch size at `level`.
    pub fn minibatch(&self, level: usize) -> usize {
        let i = level.min(self.minibatch_by_level.len().saturating_sub(1));
        self.minibatch_by_level.get(i).copied().unwrap_or(1)
    }

    /// Thousands of images `level` trains at full weight before the next fades in.
    pub fn stabilize(&self, level: usize) -> f64 {
        self.stabilize_kimg.get(level)
    }

    /// Thousands of images over which `level` (≥ 1) fades in.
    pub fn fade(&self, level: usize) -> f64 {
        self.fade_kimg.get(level.saturating_sub(1))
    }

    /// Thousands of images at which `level` first trains at full weight (its fade-in done).
    pub fn full_weight_kimg(&self, level: usize) -> f64 {
        // A fold from +0: an empty `sum` of floats is −0 (printed "-0.0").
        (0..level).fold(0.0, |kimg, q| kimg + self.stabilize(q) + self.fade(q + 1))
    }

    /// Thousands of images at which `level` ends its stabilisation (and the next starts fading
    /// in); for the top level, when it first reaches full weight.
    pub fn stage_end_kimg(&self, level: usize) -> f64 {
        if level + 1 >= self.num_levels {
            self.growth_kimg()
        } else {
            self.full_weight_kimg(level) + self.stabilize(level)
        }
    }

    /// Thousands of images until the top level is reached at full weight.
    pub fn growth_kimg(&self) -> f64 {
        self.full_weight_kimg(self.num_levels.saturating_sub(1))
    }

    /// The default length of a run: growth, then the top level for one more stabilisation and
    /// fade's worth of images.
    pub fn default_total_kimg(&self) -> f64 {
        let top = self.num_levels.saturating_sub(1);
        self.growth_kimg() + self.stabilize(top) + self.fade(top.max(1))
    }
}

/// The fade weights at which the trainer keeps a snapshot of the generator while a level fades
/// in (`fades/` in the run): its start, three points between, its end. At α = 0 the picture is
/// the previous stage's, upsampled; the page replays a fade from these.
pub const FADE_SNAPSHOT_ALPHAS: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// One point of a fade-in at which a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FadePoint {
    /// The level fading in (≥ 1).
    pub level: usize,
    /// Its nominal fade weight, one of [`FADE_SNAPSHOT_ALPHAS`].
    pub alpha: f64,
    /// Images shown when the snapshot is due: the first step that reaches this count takes it.
    pub nimg: u64,
}

impl ScheduleSpec {
    /// Every fade snapshot of the run, in order of images shown: for each level from 1 up, the
    /// points [`FADE_SNAPSHOT_ALPHAS`] of its fade. A level without a fade (length 0) has none.
    pub fn fade_points(&self) -> Vec<FadePoint> {
        let mut points = Vec::new();
        for level in 1..self.num_levels {
            let (start, length) = (self.stage_end_kimg(level - 1), self.fade(level));
            if length <= 0.0 {
                continue;
            }
            for alpha in FADE_SNAPSHOT_ALPHAS {
                points.push(FadePoint {
                    level,
                    alpha,
                    nimg: ((start + alpha * length) * 1000.0).round() as u64,
                });
            }
        }
        points
    }
}

/// The phase at `kimg` thousand images shown.
pub fn schedule(kimg: f64, spec: &ScheduleSpec) -> Phase {
    let top = spec.num_levels.saturating_sub(1);
    let kimg = kimg.max(0.0);
    let mut start = 0.0;
    for level in 0..top {
        let (stable, fade) = (spec.stabilize(level), spec.fade(level + 1));
        if kimg < start + stable {
            return phase(spec, level, 1.0);
        }
        if kimg < start + stable + fade {
            let alpha = ((kimg - start - stable) / fade).clamp(0.0, 1.0);
            return phase(spec, level + 1, alpha);
        }
        start += stable + fade;
    }
    phase(spec, top, 1.0)
}

fn phase(spec: &ScheduleSpec, level: usize, alpha: f64) -> Phase {
    Phase {
        level,
        alpha,
        minibatch: spec.minibatch(level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ScheduleSpec {
        ScheduleSpec {
            num_levels: 5,
            stabilize_kimg: "600.0".parse().unwrap(),
            fade_kimg: "600.0".parse().unwrap(),
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
        assert_eq!(spec().default_total_kimg(), 6000.0);
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
            stabilize_kimg: "0.2".parse().unwrap(),
            fade_kimg: "0.2".parse().unwrap(),
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
        assert!(s.full_weight_kimg(0).is_sign_positive(), "+0, not −0");
        assert_eq!(s.stage_end_kimg(1), 1800.0);
        assert_eq!(s.stage_end_kimg(4), 4800.0);
        assert_eq!(s.growth_kimg(), 4800.0);
        // Just before a stage end the level is still stable and the next has not started.
        assert_eq!(schedule(1799.0, &s).level, 1);
        assert!(schedule(1801.0, &s).fading());
    }

    #[test]
    fn fade_snapshots_span_each_fade() {
        let s = spec();
        let points = s.fade_points();
        assert_eq!(points.len(), 4 * 5, "levels 1–4, five points each");
        // Level 2 fades in over 1800→2400 kimg.
        let level2: Vec<(f64, u64)> = points
            .iter()
            .filter(|p| p.level == 2)
            .map(|p| (p.alpha, p.nimg))
            .collect();
        assert_eq!(
            level2,
            vec![
                (0.0, 1_800_000),
                (0.25, 1_950_000),
                (0.5, 2_100_000),
                (0.75, 2_250_000),
                (1.0, 2_400_000)
            ]
        );
        // Each point's α is the schedule's there, and the start is the previous stage's end.
        for p in &points {
            let phase = schedule(p.nimg as f64 / 1000.0, &s);
            if p.alpha < 1.0 {
                assert_eq!(phase.level, p.level);
                assert!((phase.alpha - p.alpha).abs() < 1e-9, "{p:?} {phase:?}");
            } else {
                assert_eq!((phase.level, phase.alpha), (p.level, 1.0));
            }
        }
        assert_eq!(points[0].nimg as f64, s.stage_end_kimg(0) * 1000.0);
        // No fade, no snapshots.
        let none = ScheduleSpec {
            fade_kimg: "0.0".parse().unwrap(),
            ..spec()
        };
        assert!(none.fade_points().is_empty());
    }

    #[test]
    fn no_fade_jumps_straight_up() {
        let s = ScheduleSpec {
            num_levels: 3,
            stabilize_kimg: "1.0".parse().unwrap(),
            fade_kimg: "0.0".parse().unwrap(),
            minibatch_by_level: vec![4],
        };
        assert_eq!(schedule(0.5, &s).level, 0);
        assert_eq!(schedule(1.5, &s).level, 1);
        assert_eq!(schedule(1.5, &s).alpha, 1.0);
    }

    #[test]
    fn lengths_per_level_with_the_last_repeating() {
        // 4×4 30, fade 8×8 20, 8×8 40, fade 16×16 50, 16×16 (and up) 60, fades 50 from then on.
        let s = ScheduleSpec {
            num_levels: 4,
            stabilize_kimg: "30,40,60".parse().unwrap(),
            fade_kimg: "20,50".parse().unwrap(),
            minibatch_by_level: vec![16],
        };
        assert_eq!(s.stage_end_kimg(0), 30.0);
        assert_eq!(s.stage_end_kimg(1), 30.0 + 20.0 + 40.0);
        assert_eq!(s.stage_end_kimg(2), 90.0 + 50.0 + 60.0);
        assert_eq!(s.growth_kimg(), 200.0 + 50.0);
        assert_eq!(s.default_total_kimg(), 250.0 + 60.0 + 50.0);
        let p = schedule(40.0, &s);
        assert_eq!(p.level, 1);
        assert!((p.alpha - 0.5).abs() < 1e-12);
        assert_eq!(schedule(89.9, &s).level, 1);
        let p = schedule(115.0, &s);
        assert_eq!(p.level, 2);
        assert!((p.alpha - 0.5).abs() < 1e-12);
        let p = schedule(225.0, &s);
        assert!((p.level, p.alpha) == (3, 0.5));
        assert_eq!(schedule(250.0, &s).alpha, 1.0);
    }

    #[test]
    fn kimg_lists_read_and_write_as_given() {
        let one: KimgByLevel = "600".parse().unwrap();
        assert_eq!(serde_json::to_string(&one).unwrap(), "600.0");
        let many: KimgByLevel = "30, 40,60".parse().unwrap();
        assert_eq!(many.get(0), 30.0);
        assert_eq!((many.get(2), many.get(9)), (60.0, 60.0));
        assert_eq!(many.to_string(), "30,40,60");
        assert_eq!(serde_json::to_string(&many).unwrap(), "[30.0,40.0,60.0]");
        for json in ["600.0", "600", "[30.0,40.0,60.0]"] {
            let back: KimgByLevel = serde_json::from_str(json).unwrap();
            assert_eq!(
                serde_json::to_string(&back).unwrap().replace(".0", ""),
                json.replace(".0", "")
            );
        }
        assert!(serde_json::from_str::<KimgByLevel>("[]").is_err());
        for bad in ["", "1,,2", "-1", "x", "inf"] {
            assert!(bad.parse::<KimgByLevel>().is_err(), "{bad}");
        }
    }
}
