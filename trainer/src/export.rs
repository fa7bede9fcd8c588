//! `pggan export`: a run's EMA generator and its growth stages for the web (f16 safetensors and a
//! `manifest.json`), and the export's evaluation against held-out reals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use pggan_model::weights::{
    NamedTensor, WeightDtype, apply_tensors, config_from_metadata, decode, encode,
    snapshot_to_bytes,
};
use pggan_model::{Generator, ModelConfig, SplitMix64};

use crate::checkpoint;
use crate::fsutil::write_atomic;

pub use pggan_model::manifest::{FadeEntry, MANIFEST_FORMAT, Manifest, StageEntry};

/// The lines of the run's `metrics.jsonl` logged at or before `kimg` (within `slack`), in order.
fn logged_until(run: &Path, kimg: f64, slack: f64) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kimg"].as_f64().is_some_and(|k| k <= kimg + slack))
        .collect()
}

/// The last metrics evaluation logged in the run's `metrics.jsonl` at or before `kimg` (kimg,
/// resolution, SWD per level, MS-SSIM and its real-pairs value), or null.
fn latest_metrics(run: &Path, kimg: f64) -> serde_json::Value {
    logged_until(run, kimg, 0.1)
        .into_iter()
        .rfind(|v| v.get("metrics").is_some())
        .map(|v| {
            let mut m = v["metrics"].clone();
            m["kimg"] = v["kimg"].clone();
            m["alpha"] = v["alpha"].clone();
            m
        })
        .unwrap_or(serde_json::Value::Null)
}

/// The `train_seconds` of the last tick logged at or before `kimg` (0 when none is).
fn train_seconds_at(run: &Path, kimg: f64) -> f64 {
    logged_until(run, kimg, 1e-6)
        .iter()
        .filter_map(|v| v["train_seconds"].as_f64())
        .next_back()
        .unwrap_or(0.0)
}

/// The generator snapshots (`.safetensors`) in `dir` of a run, in name order (none when the
/// folder is absent).
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "safetensors"));
    files.sort();
    files
}

/// A generator snapshot's tensors, metadata and architecture, checked to load.
fn read_snapshot(
    path: &Path,
    device: &Device,
) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>, ModelConfig)> {
    let (tensors, meta) = decode(&std::fs::read(path)?)
        .with_context(|| format!("reading the snapshot {}", path.display()))?;
    let config = config_from_metadata(&meta, "generator")
        .with_context(|| format!("in {}", path.display()))?;
    drop(
        apply_tensors(
            Generator::new(&config, &mut SplitMix64::new(0), device),
            tensors.clone(),
        )
        .with_context(|| format!("loading {}", path.display()))?,
    );
    Ok((tensors, meta, config))
}

/// Writes the EMA generator and its stage snapshots as f16 safetensors with a manifest: the
/// generator as it stands now, or with `at_stage = Some(level)` as it stood at the end of that
/// level's stabilisation (its stage snapshot) — to ship the last finished level while the next
/// one is still fading in. The snapshots the trainer kept through each fade-in (`fades/`) go
/// with it, up to the exported generator and for the nominal α in `fade_alphas` only.
pub fn export(
    run: &Path,
    out: &Path,
    at_stage: Option<usize>,
    fade_alphas: &[f64],
    device: &Device,
) -> Result<Manifest> {
    let mut snapshots = Vec::new(); // (level, config, tensors, metadata, kimg)
    for path in snapshot_files(&run.join("stages")) {
        let (tensors, meta, stage_config) = read_snapshot(&path, device)?;
        let stage_kimg: f64 = meta.get("kimg").and_then(|k| k.parse().ok()).unwrap_or(0.0);
        snapshots.push((
            stage_config.num_levels() - 1,
            stage_config,
            tensors,
            meta,
            stage_kimg,
        ));
    }

    // The final generator: (file bytes, config, level, alpha, kimg, train seconds).
    let (bytes, config, level, alpha, kimg, train_seconds) = match at_stage {
        None => {
            let (ema, config, state) = checkpoint::load_ema(run, device)?;
            let (level, alpha) = (state.level, state.alpha);
            let kimg = state.nimg as f64 / 1000.0;
            (
                snapshot_to_bytes(&ema, &config, level, alpha, kimg, WeightDtype::F16, &[])?,
                config,
                level,
                alpha,
                kimg,
                state.train_seconds,
            )
        }
        Some(stage) => {
            let Some((_, stage_config, tensors, meta, stage_kimg)) =
                snapshots.iter().find(|s| s.0 == stage)
            else {
                let have: Vec<String> = snapshots.iter().map(|s| s.0.to_string()).collect();
                bail!(
                    "{} has no stage snapshot of level {stage} (it has levels: {})",
                    run.display(),
                    if have.is_empty() {
                        "none".into()
                    } else {
                        have.join(", ")
                    }
                );
            };
            (
                encode(tensors, WeightDtype::F16, meta)?,
                stage_config.clone(),
                stage,
                1.0,
                *stage_kimg,
                train_seconds_at(run, *stage_kimg),
            )
        }
    };
    std::fs::create_dir_all(out.join("stages"))
        .with_context(|| format!("creating {}", out.display()))?;
    let res = ModelConfig::level_resolution(level);
    let gen_config = config.clone().with_resolution(res);
    write_atomic(&out.join("generator.safetensors"), &bytes)?;

    let mut stages = Vec::new();
    for (stage_level, stage_config, tensors, meta, stage_kimg) in &snapshots {
        if *stage_level > level || (*stage_level == level && alpha < 1.0) {
            continue; // later than the exported generator
        }
        // The exported level's own snapshot, when the generator is it, is the final generator:
        // one file serves both, so the page never downloads it twice.
        if *stage_level == level && (stage_kimg - kimg).abs() < 1e-9 {
            stages.push(StageEntry {
                level,
                resolution: res,
                file: "generator.safetensors".into(),
                kimg,
                bytes: Some(bytes.len() as u64),
            });
            continue;
        }
        let file = format!("stages/level{stage_level}.safetensors");
        let stage_bytes = encode(tensors, WeightDtype::F16, meta)?;
        write_atomic(&out.join(&file), &stage_bytes)?;
        stages.push(StageEntry {
            level: *stage_level,
            resolution: stage_config.resolution,
            file,
            kimg: *stage_kimg,
            bytes: Some(stage_bytes.len() as u64),
        });
    }
    stages.sort_by_key(|s| s.level);
    let fades = export_fades(run, out, level, kimg, fade_alphas, device)?;
    let (_, options) = checkpoint::read_meta(run)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        name: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
        resolution: res,
        level,
        alpha,
        latent_size: config.latent_size,
        channels: (0..=level).map(|l| config.channels(l)).collect(),
        config: gen_config,
        generator: "generator.safetensors".into(),
        generator_bytes: Some(bytes.len() as u64),
        stages,
        fades,
        directions: None,
        training: serde_json::json!({
            "kimg": kimg,
            "backend": crate::sessions::used(run, kimg, "backend").join(", "),
            "hardware": crate::sessions::used(run, kimg, "hardware"),
            "train_seconds": train_seconds,
            "latest_metrics": latest_metrics(run, kimg),
            "options": options,
        }),
    };
    manifest.check().context("the export's own manifest")?;
    write_atomic(
        &out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    Ok(manifest)
}

/// The nominal α of a fade snapshot's file name (`level3-32x32-a050.safetensors` → 0.5).
fn nominal_fade_alpha(path: &Path) -> Option<f64> {
    let stem = path.file_stem()?.to_str()?;
    let hundredths: u32 = stem.rsplit_once("-a")?.1.parse().ok()?;
    Some(f64::from(hundredths) / 100.0)
}

/// Writes the run's fade snapshots taken up to the exported generator (`level`, `kimg`) whose
/// nominal α is in `wanted`, as f16 `fades/levelL-aNNN.safetensors`, and lists them. Snapshots
/// taken at the same α (a fade shorter than a few minibatches passes several points in one step)
/// are the same network: only the first goes.
fn export_fades(
    run: &Path,
    out: &Path,
    level: usize,
    kimg: f64,
    wanted: &[f64],
    device: &Device,
) -> Result<Vec<FadeEntry>> {
    let mut fades: Vec<FadeEntry> = Vec::new();
    for path in snapshot_files(&run.join("fades")) {
        let Some(nominal) = nominal_fade_alpha(&path) else {
            continue; // not a file the trainer wrote
        };
        if !wanted.iter().any(|w| (w - nominal).abs() < 1e-6) {
            continue;
        }
        let (tensors, meta, config) = read_snapshot(&path, device)?;
        let number = |key: &str| -> Result<f64> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{} has no {key} in its metadata", path.display()))
        };
        let (fade_level, alpha, fade_kimg) =
            (config.num_levels() - 1, number("alpha")?, number("kimg")?);
        if fade_level > level || fade_kimg > kimg + 1e-9 {
            continue; // taken after the exported generator (a run exported mid-fade, or rewound)
        }
        if fades
            .iter()
            .any(|f| f.level == fade_level && f.alpha == alpha)
        {
            continue; // the same step's network as a snapshot already taken
        }
        let file = format!(
            "fades/level{fade_level}-a{:03}.safetensors",
            (nominal * 100.0).round() as u32
        );
        let bytes = encode(&tensors, WeightDtype::F16, &meta)?;
        std::fs::create_dir_all(out.join("fades"))?;
        write_atomic(&out.join(&file), &bytes)?;
        fades.push(FadeEntry {
            level: fade_level,
            resolution: config.resolution,
            alpha,
            kimg: fade_kimg,
            file,
            bytes: Some(bytes.len() as u64),
        });
    }
    fades.sort_by(|a, b| {
        (a.level, a.alpha)
            .partial_cmp(&(b.level, b.alpha))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(fades)
}

/// Evaluates an exported model against the held-out split of `reference` (a pack) with `count`
/// images per side, next to the floor (the pack's train split against the same held-out images),
/// and records both in the manifest as `training.evaluation`. Returns that record.
pub fn evaluate_export(
    out: &Path,
    reference: &Path,
    count: usize,
    device: &Device,
) -> Result<serde_json::Value> {
    use crate::eval::{evaluate, generate_set, load_images};
    use crate::pack::Split;
    anyhow::ensure!(count >= 2, "--eval-count must be at least 2");
    let path = out.join("manifest.json");
    let mut manifest = Manifest::parse(&std::fs::read_to_string(&path)?)?;
    let r = manifest.resolution;
    anyhow::ensure!(r >= 16, "the export is {r}×{r}; SWD needs at least 16×16");
    let (held_out, _) = load_images(reference, r, count, Split::Holdout, 1)
        .with_context(|| format!("loading {}", reference.display()))?;
    let (train, _) = load_images(reference, r, count, Split::Train, 2)
        .with_context(|| format!("loading {}", reference.display()))?;
    let fakes = generate_set(out, 0, count, r, device)?;
    let model = evaluate(&fakes, &held_out, 0)?;
    let floor = evaluate(&train, &held_out, 0)?;
    let record = serde_json::json!({
        "reference": reference.file_name().map(|n| n.to_string_lossy().into_owned()),
        "count": model.count,
        "resolution": r,
        "model": model,
        "reals_floor": floor,
    });
    manifest.training["evaluation"] = record.clone();
    write_atomic(&path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(record)
}
