//! Labels read from file names at ingest, kept in the pack for both splits.
//!
//! UTKFace names its files `[age]_[gender]_[race]_[date].jpg.chip.jpg` (age in years; gender 0
//! male, 1 female; race 0 white, 1 black, 2 asian, 3 indian, 4 other). Some names are malformed
//! (`39_1_20170116174525125.jpg.chip.jpg` has no race), so each label is optional on its own. A
//! name that does not start `<number>_<number>_` carries no labels at all (other data sets).

use serde::{Deserialize, Serialize};

/// The labels of one image; `None` where its name does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageLabels {
    /// Age in years (0–120).
    pub age: Option<u16>,
    /// Gender: 0 male, 1 female.
    pub gender: Option<u8>,
    /// Race: 0 white, 1 black, 2 asian, 3 indian, 4 other (kept for measurement only).
    pub race: Option<u8>,
}

impl ImageLabels {
    /// The labels in a UTKFace file name (its last path component is used).
    pub fn from_file_name(path: &str) -> ImageLabels {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let fields: Vec<&str> = name.split('_').collect();
        let number = |i: usize| -> Option<u32> {
            let f = fields.get(i)?;
            (!f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()))
                .then(|| f.parse().ok())
                .flatten()
        };
        // Labelled names start with two numbers and go on after them.
        if fields.len() < 3 || number(0).is_none() || number(1).is_none() {
            return ImageLabels::default();
        }
        ImageLabels {
            age: number(0).filter(|&a| a <= 120).map(|a| a as u16),
            gender: number(1).filter(|&g| g <= 1).map(|g| g as u8),
            // The race is the third field only when a fourth (the date) follows it.
            race: number(2)
                .filter(|&r| r <= 4 && fields.len() >= 4)
                .map(|r| r as u8),
        }
    }

    /// Whether any label is known.
    pub fn any(&self) -> bool {
        self.age.is_some() || self.gender.is_some() || self.race.is_some()
    }
}

/// The labels of one split of a pack, by image in stored order (`null` where unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitLabels {
    /// Ages in years.
    pub age: Vec<Option<u16>>,
    /// Genders (0 male, 1 female).
    pub gender: Vec<Option<u8>>,
    /// Races (0 white, 1 black, 2 asian, 3 indian, 4 other).
    pub race: Vec<Option<u8>>,
}

impl SplitLabels {
    /// The labels of `images`, in that order.
    pub fn of(images: impl IntoIterator<Item = ImageLabels>) -> SplitLabels {
        let mut out = SplitLabels::default();
        for l in images {
            out.age.push(l.age);
            out.gender.push(l.gender);
            out.race.push(l.race);
        }
        out
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.age.len()
    }

    /// Image `i`'s labels.
    pub fn get(&self, i: usize) -> ImageLabels {
        ImageLabels {
            age: self.age.get(i).copied().flatten(),
            gender: self.gender.get(i).copied().flatten(),
            race: self.race.get(i).copied().flatten(),
        }
    }
}

/// The labels of both splits of a pack.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackLabels {
    /// Of the training split.
    pub train: SplitLabels,
    /// Of the held-out split.
    pub holdout: SplitLabels,
}

/// How many images had each label, for `prepare`'s report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelCounts {
    /// With an age.
    pub age: usize,
    /// With a gender.
    pub gender: usize,
    /// With a race.
    pub race: usize,
    /// With no label at all.
    pub none: usize,
}

impl LabelCounts {
    /// Counts `labels`.
    pub fn count<'a>(labels: impl IntoIterator<Item = &'a ImageLabels>) -> LabelCounts {
        let mut c = LabelCounts::default();
        for l in labels {
            c.age += l.age.is_some() as usize;
            c.gender += l.gender.is_some() as usize;
            c.race += l.race.is_some() as usize;
            c.none += !l.any() as usize;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(age: Option<u16>, gender: Option<u8>, race: Option<u8>) -> ImageLabels {
        ImageLabels { age, gender, race }
    }

    #[test]
    fn reads_utkface_names_and_their_malformed_kinds() {
        let read = ImageLabels::from_file_name;
        assert_eq!(
            read("utkface-aligned/100_1_0_20170110183726390.jpg.chip.jpg"),
            labels(Some(100), Some(1), Some(0))
        );
        assert_eq!(
            read("24_0_1_20170116220224657 .jpg.chip.jpg"),
            labels(Some(24), Some(0), Some(1))
        );
        assert_eq!(
            read("55_0_0_20170116232725357jpg.chip.jpg"),
            labels(Some(55), Some(0), Some(0))
        );
        // No race field: the date follows the gender.
        assert_eq!(
            read("39_1_20170116174525125.jpg.chip.jpg"),
            labels(Some(39), Some(1), None)
        );
        // Out of range values are unknown, the others kept.
        assert_eq!(read("130_1_2_x.jpg"), labels(None, Some(1), Some(2)));
        assert_eq!(read("30_7_9_x.jpg"), labels(Some(30), None, None));
        // Other data sets' names carry nothing.
        for name in [
            "000123.jpg",
            "img_0001.png",
            "a/b/c.jpg",
            "12.jpg",
            "",
            "1_2",
        ] {
            assert_eq!(read(name), ImageLabels::default(), "{name}");
        }
    }

    #[test]
    fn split_labels_keep_order_and_gaps() {
        let images = [
            labels(Some(3), Some(0), Some(2)),
            ImageLabels::default(),
            labels(Some(70), Some(1), None),
        ];
        let split = SplitLabels::of(images);
        assert_eq!(split.len(), 3);
        for (i, l) in images.iter().enumerate() {
            assert_eq!(split.get(i), *l);
        }
        let json = serde_json::to_string(&split).unwrap();
        assert_eq!(
            json,
            r#"{"age":[3,null,70],"gender":[0,null,1],"race":[2,null,null]}"#
        );
        let c = LabelCounts::count(&images);
        assert_eq!((c.age, c.gender, c.race, c.none), (2, 2, 1, 1));
    }
}
