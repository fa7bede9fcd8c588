//! Directions in a generator's latent space for face edits: supervised ones fitted to the
//! attribute predictor's readings of generated faces (the InterFaceGAN procedure, with age and
//! gender made independent of each other), and unsupervised ones from the generator's own first
//! layer (SeFa), each measured on fresh faces. `pggan directions` writes them as
//! `directions.json` beside an exported generator; `pggan generate --edit` applies them.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use image::RgbImage;
use pggan_model::latent::{edit_latent, latents_for_seeds};
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use serde::{Deserialize, Serialize};

use pggan_model::manifest::{DirectionSummary, DirectionsEntry, Manifest};

use crate::attributes::{AttributePredictor, Predictions};
use crate::fsutil::write_atomic;
use crate::loader::LoadedModel;

/// Format tag of `directions.json`.
pub const DIRECTIONS_FORMAT: &str = "pggan-rs-directions/1";

/// Seeds of the faces the directions are fitted to, and of the fresh faces they are measured on.
const FIT_SEED: u64 = 1 << 40;
const MEASURE_SEED: u64 = 1 << 41;

/// One direction: a unit vector in latent space and how far an edit along it moves the
/// predictor's readings, per unit (one standard deviation of the latent along it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Direction {
    /// `age`, `gender`, or `sefa1`, `sefa2`, ….
    pub name: String,
    /// `supervised` (fitted to the predictor) or `unsupervised` (SeFa).
    pub kind: String,
    /// Unit vector, one entry per latent dimension.
    pub vector: Vec<f32>,
    /// Mean change of the predicted age per unit step, in years, on fresh faces.
    pub years_per_unit: f64,
    /// Mean change of the predicted probability of gender 1 (female) per unit step.
    pub female_per_unit: f64,
    /// Fraction of fresh faces whose reading moves monotonically over steps −2 … 2 (the age for
    /// `age`, P(female) for `gender`; the age for unsupervised ones).
    pub monotonic: f64,
    /// Mean absolute pixel change (0–255) of a face edited by 0.5 units.
    pub pixels_per_half_unit: f64,
}

/// `directions.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Directions {
    /// [`DIRECTIONS_FORMAT`].
    pub format: String,
    /// Latent size.
    pub latent_size: usize,
    /// Generated faces the supervised directions were fitted to.
    pub fitted_on: usize,
    /// Fresh faces each direction was measured on.
    pub measured_on: usize,
    /// The directions.
    pub directions: Vec<Direction>,
}

impl Directions {
    /// Reads and checks `dir/directions.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("directions.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (make it with `pggan directions`)",
                path.display()
            )
        })?;
        let d: Directions = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a directions file", path.display()))?;
        if d.format != DIRECTIONS_FORMAT {
            bail!(
                "{} has format “{}”; this version reads “{DIRECTIONS_FORMAT}”",
                path.display(),
                d.format
            );
        }
        for dir in &d.directions {
            let norm = dir
                .vector
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            if dir.vector.len() != d.latent_size || (norm - 1.0).abs() > 1e-3 {
                bail!(
                    "{}: direction “{}” is not a unit vector of {} numbers",
                    path.display(),
                    dir.name,
                    d.latent_size
                );
            }
        }
        Ok(d)
    }

    /// The direction called `name`.
    pub fn get(&self, name: &str) -> Result<&Direction> {
        self.directions
            .iter()
            .find(|d| d.name == name)
            .with_context(|| {
                format!(
                    "no direction “{name}”; this model has: {}",
                    self.directions
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Reads `--edit age=+2,gender=-1`: names and amounts (units: standard deviations, |a| ≤ 10).
pub fn parse_edits(text: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, amount)) = part.split_once('=') else {
            bail!("--edit: “{part}” is not NAME=AMOUNT (like age=+2)");
        };
        let amount: f64 = amount
            .trim()
            .trim_start_matches('+')
            .parse()
            .ok()
            .filter(|a: &f64| a.is_finite() && a.abs() <= 10.0)
            .with_context(|| format!("--edit: “{amount}” is not an amount between −10 and 10"))?;
        out.push((name.trim().to_string(), amount));
    }
    if out.is_empty() {
        bail!("--edit: nothing to edit (give NAME=AMOUNT, like age=+2)");
    }
    Ok(out)
}

/// `latents` (`[n, L]`, row after row) with `edits` applied to each.
pub fn apply_edits(latents: &[f32], latent_size: usize, edits: &[(&Direction, f64)]) -> Vec<f32> {
    let pairs: Vec<(&[f32], f64)> = edits
        .iter()
        .map(|(d, a)| (d.vector.as_slice(), *a))
        .collect();
    latents
        .chunks(latent_size)
        .flat_map(|z| edit_latent(z, &pairs))
        .collect()
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-30);
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The unit normal of the least-squares plane `score ≈ w·z + b` over `(z, score)` pairs (`zs`:
/// `[n, L]`), with a little ridge: InterFaceGAN's separating direction, as a regression.
pub fn fit_direction(zs: &[f64], scores: &[f64], latent_size: usize) -> Vec<f64> {
    let l = latent_size + 1; // the intercept last
    let mut a = vec![0.0; l * l];
    let mut rhs = vec![0.0; l];
    for (z, &y) in zs.chunks(latent_size).zip(scores) {
        let x: Vec<f64> = z.iter().copied().chain([1.0]).collect();
        for i in 0..l {
            rhs[i] += x[i] * y;
            for j in 0..l {
                a[i * l + j] += x[i] * x[j];
            }
        }
    }
    for i in 0..latent_size {
        a[i * l + i] += 1e-3 * scores.len() as f64;
    }
    let w = crate::linalg::solve(a, rhs, l);
    unit(&w[..latent_size])
}

/// `a` with its component along the unit vector `b` removed, as a unit vector: an edit of `a`
/// that leaves `b`'s reading alone (InterFaceGAN's conditional manipulation).
pub fn project_out(a: &[f64], b: &[f64]) -> Vec<f64> {
    let k = dot(a, b);
    unit(&a.iter().zip(b).map(|(x, y)| x - k * y).collect::<Vec<_>>())
}

/// The `count` leading eigenvectors of the symmetric `m` (`n × n`), by subspace iteration.
pub fn leading_eigenvectors(m: &[f64], n: usize, count: usize) -> Vec<Vec<f64>> {
    let mut rng = pggan_model::SplitMix64::new(7);
    let mut basis: Vec<Vec<f64>> = (0..count)
        .map(|_| rng.normals_f32(n).into_iter().map(f64::from).collect())
        .collect();
    for _ in 0..500 {
        for v in basis.iter_mut() {
            *v = (0..n).map(|i| dot(&m[i * n..(i + 1) * n], v)).collect();
        }
        // Gram–Schmidt keeps them apart, in order of eigenvalue.
        for i in 0..count {
            for j in 0..i {
                let k = dot(&basis[i], &basis[j]);
                let bj = basis[j].clone();
                for (x, y) in basis[i].iter_mut().zip(&bj) {
                    *x -= k * y;
                }
            }
            basis[i] = unit(&basis[i]);
        }
    }
    basis
}

/// Faces as `[n, 3, r, r]` values in `[-1, 1]` for the predictor.
fn faces_tensor(images: &[RgbImage], device: &Device) -> burn::tensor::Tensor<4> {
    let r = images[0].width() as usize;
    let mut v = Vec::with_capacity(images.len() * 3 * r * r);
    for img in images {
        for c in 0..3 {
            v.extend(img.pixels().map(|p| p[c] as f32 / 127.5 - 1.0));
        }
    }
    tensor_from_f32(v, [images.len(), 3, r, r], device)
}

/// The predictor's readings of the faces of `latents`.
fn read(
    model: &LoadedModel,
    predictor: &AttributePredictor,
    latents: &[f32],
) -> (Predictions, Vec<RgbImage>) {
    let images = model.images(latents);
    let mut p = Predictions {
        age: Vec::new(),
        female: Vec::new(),
    };
    for chunk in images.chunks(128) {
        let q = predictor.predict(faces_tensor(chunk, &Device::flex()));
        p.age.extend(q.age);
        p.female.extend(q.female);
    }
    (p, images)
}

/// How an edit along `vector` moves fresh faces (see [`Direction`]).
fn measure(
    model: &LoadedModel,
    predictor: &AttributePredictor,
    name: &str,
    kind: &str,
    vector: Vec<f64>,
    count: usize,
) -> Direction {
    let l = model.config.latent_size;
    let fresh = latents_for_seeds(MEASURE_SEED, count, l);
    let vector: Vec<f32> = vector.iter().map(|&v| v as f32).collect();
    let probe = Direction {
        name: name.into(),
        kind: kind.into(),
        vector,
        years_per_unit: 0.0,
        female_per_unit: 0.0,
        monotonic: 0.0,
        pixels_per_half_unit: 0.0,
    };
    let steps = [-2.0, -1.0, 0.0, 1.0, 2.0];
    let readings: Vec<(Predictions, Vec<RgbImage>)> = steps
        .iter()
        .map(|&a| read(model, predictor, &apply_edits(&fresh, l, &[(&probe, a)])))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let slope = |f: &dyn Fn(&Predictions) -> f64| (f(&readings[4].0) - f(&readings[0].0)) / 4.0;
    let years_per_unit = slope(&|p| mean(&p.age));
    let female_per_unit = slope(&|p| mean(&p.female));
    let watched = |p: &Predictions, i: usize| {
        if name == "gender" {
            p.female[i]
        } else {
            p.age[i]
        }
    };
    let sign = if name == "gender" {
        female_per_unit.signum()
    } else {
        years_per_unit.signum()
    };
    let monotonic = (0..count)
        .filter(|&i| {
            readings
                .windows(2)
                .all(|w| sign * (watched(&w[1].0, i) - watched(&w[0].0, i)) >= 0.0)
        })
        .count() as f64
        / count as f64;
    let half = read(model, predictor, &apply_edits(&fresh, l, &[(&probe, 0.5)])).1;
    let base = &readings[2].1;
    let pixels = base
        .iter()
        .zip(&half)
        .map(|(a, b)| {
            a.as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(x, y)| (*x as f64 - *y as f64).abs())
                .sum::<f64>()
                / a.as_raw().len() as f64
        })
        .sum::<f64>()
        / count as f64;
    Direction {
        years_per_unit,
        female_per_unit,
        monotonic,
        pixels_per_half_unit: pixels,
        ..probe
    }
}

/// Fits and measures the directions of `model` with `predictor`: age and gender (each with the
/// other projected out) from `fit_count` generated faces, and `sefa` unsupervised ones; each
/// measured on `measure_count` fresh faces.
pub fn fit(
    model: &LoadedModel,
    predictor: &AttributePredictor,
    fit_count: usize,
    measure_count: usize,
    sefa: usize,
    say: &dyn Fn(&str),
) -> Result<Directions> {
    let l = model.config.latent_size;
    let latents = latents_for_seeds(FIT_SEED, fit_count, l);
    say(&format!("reading {fit_count} generated faces…"));
    let (p, _) = read(model, predictor, &latents);
    let zs: Vec<f64> = latents.iter().map(|&v| v as f64).collect();
    let age = fit_direction(&zs, &p.age, l);
    let logit: Vec<f64> = p
        .female
        .iter()
        .map(|&q| (q.clamp(1e-3, 1.0 - 1e-3) / (1.0 - q.clamp(1e-3, 1.0 - 1e-3))).ln())
        .collect();
    let gender = fit_direction(&zs, &logit, l);
    say(&format!(
        "age and gender directions: cosine {:.3} before they are made independent",
        dot(&age, &gender)
    ));
    let mut directions = vec![
        measure(
            model,
            predictor,
            "age",
            "supervised",
            project_out(&age, &gender),
            measure_count,
        ),
        measure(
            model,
            predictor,
            "gender",
            "supervised",
            project_out(&gender, &age),
            measure_count,
        ),
    ];
    // SeFa: the leading eigenvectors of WᵀW for the first layer's weight W (latent → 4×4).
    let w = model.generator.dense.weight.val();
    let dims = w.dims();
    let values: Vec<f64> = tensor_to_f32(w).into_iter().map(f64::from).collect();
    let (rows, cols) = (dims[0], dims[1]);
    let mut m = vec![0.0; l * l];
    for i in 0..l {
        for j in 0..l {
            m[i * l + j] = if rows == l {
                (0..cols)
                    .map(|k| values[i * cols + k] * values[j * cols + k])
                    .sum()
            } else {
                (0..rows)
                    .map(|k| values[k * cols + i] * values[k * cols + j])
                    .sum()
            };
        }
    }
    for (k, v) in leading_eigenvectors(&m, l, sefa).into_iter().enumerate() {
        directions.push(measure(
            model,
            predictor,
            &format!("sefa{}", k + 1),
            "unsupervised",
            v,
            measure_count,
        ));
    }
    Ok(Directions {
        format: DIRECTIONS_FORMAT.into(),
        latent_size: l,
        fitted_on: fit_count,
        measured_on: measure_count,
        directions,
    })
}

/// Writes `dir/directions.json` and names it, with what each direction does, in the folder's
/// `manifest.json` (when it has one).
pub fn save(dir: &Path, d: &Directions) -> Result<()> {
    let bytes = serde_json::to_string_pretty(d)?;
    write_atomic(&dir.join("directions.json"), bytes.as_bytes())?;
    let path = dir.join("manifest.json");
    if path.is_file() {
        let mut manifest = Manifest::parse(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("reading {}", path.display()))?;
        manifest.directions = Some(DirectionsEntry {
            file: "directions.json".into(),
            bytes: Some(bytes.len() as u64),
            list: d
                .directions
                .iter()
                .map(|x| DirectionSummary {
                    name: x.name.clone(),
                    kind: x.kind.clone(),
                    years_per_unit: x.years_per_unit,
                    female_per_unit: x.female_per_unit,
                    monotonic: x.monotonic,
                })
                .collect(),
        });
        write_atomic(&path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_direction_is_found_and_projections_are_independent() {
        let l = 16;
        let mut rng = pggan_model::SplitMix64::new(3);
        let truth = unit(
            &rng.normals_f32(l)
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>(),
        );
        let zs: Vec<f64> = rng
            .normals_f32(4000 * l)
            .into_iter()
            .map(f64::from)
            .collect();
        let scores: Vec<f64> = zs
            .chunks(l)
            .map(|z| 30.0 + 7.0 * dot(z, &truth) + 0.5 * rng.normals_f32(1)[0] as f64)
            .collect();
        let found = fit_direction(&zs, &scores, l);
        assert!(
            dot(&found, &truth) > 0.999,
            "cosine {}",
            dot(&found, &truth)
        );
        let other = unit(
            &rng.normals_f32(l)
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>(),
        );
        let p = project_out(&found, &other);
        assert!(dot(&p, &other).abs() < 1e-12 && (dot(&p, &p) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn subspace_iteration_finds_the_leading_eigenvectors() {
        // diag(5, 3, 1, 0.5) rotated: the leading two are the rotated first two axes.
        let n = 4;
        let c = std::f64::consts::FRAC_1_SQRT_2;
        let q = [
            [c, c, 0.0, 0.0],
            [-c, c, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let d = [5.0, 3.0, 1.0, 0.5];
        let mut m = vec![0.0; 16];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] = (0..n).map(|k| q[k][i] * d[k] * q[k][j]).sum();
            }
        }
        let v = leading_eigenvectors(&m, n, 2);
        for (k, vk) in v.iter().enumerate() {
            assert!(dot(vk, &q[k]).abs() > 1.0 - 1e-9, "{k}: {vk:?}");
        }
    }

    #[test]
    fn edits_parse_with_clear_errors() {
        assert_eq!(
            parse_edits("age=+2, gender=-1").unwrap(),
            vec![("age".into(), 2.0), ("gender".into(), -1.0)]
        );
        for bad in ["age", "age=x", "age=20", "", "age=nan"] {
            assert!(parse_edits(bad).is_err(), "{bad}");
        }
    }
}
