//! Checkpoints: generator, critic, EMA generator, both Adam states and the training state, in one
//! safetensors file written atomically (temporary file, fsync, rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use pggan_model::weights::{
    NamedTensor, WeightDtype, apply_tensors, collect_tensors, config_from_metadata, decode, encode,
};
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::data::DataCursor;

/// Everything besides weights that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Images shown so far.
    pub nimg: u64,
    /// Ticks done.
    pub tick: u64,
    /// Latents of the training steps.
    pub latent_rng: SplitMix64,
    /// Penalty mixing weights.
    pub mix_rng: SplitMix64,
    /// Mirror flips.
    pub mirror_rng: SplitMix64,
    /// Position in the data order.
    pub cursor: DataCursor,
    /// Adam steps of the generator since its last reset.
    pub adam_g_step: u64,
    /// Adam steps of the critic since its last reset.
    pub adam_d_step: u64,
    /// (level, fading) the optimisers were last reset for.
    pub optimizer_phase: Option<(usize, bool)>,
    /// Levels whose stage snapshot is written.
    pub stages_done: Vec<usize>,
    /// Seconds spent training, over all sessions of the run.
    pub train_seconds: f64,
    /// Metric evaluations done (`floor(kimg / metrics_kimg)` at the last one).
    #[serde(default)]
    pub metrics_done: u64,
    /// Best SWD average at the final resolution so far (`best.safetensors`).
    #[serde(default)]
    pub best_swd: Option<f64>,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// Generator (on the autodiff device).
    pub generator: Generator,
    /// Critic (on the autodiff device).
    pub critic: Critic,
    /// EMA generator (plain device).
    pub ema: Generator,
    /// Adam state of the generator.
    pub adam_g: Adam,
    /// Adam state of the critic.
    pub adam_d: Adam,
    /// Training state.
    pub state: TrainState,
}

/// Path of a run's checkpoint.
pub fn checkpoint_path(run: &Path) -> PathBuf {
    run.join("checkpoint.safetensors")
}

/// Writes the checkpoint of a run atomically; the previous one stays valid until the rename.
#[allow(clippy::too_many_arguments)]
pub fn save(
    run: &Path,
    config: &ModelConfig,
    options_json: &str,
    g: &Generator,
    d: &Critic,
    ema: &Generator,
    adam_g: &Adam,
    adam_d: &Adam,
    state: &TrainState,
) -> Result<()> {
    let mut tensors: Vec<NamedTensor> = Vec::new();
    for (prefix, list) in [
        ("g.", collect_tensors(g)),
        ("d.", collect_tensors(d)),
        ("ema.", collect_tensors(ema)),
    ] {
        tensors.extend(list.into_iter().map(|mut t| {
            t.name = format!("{prefix}{}", t.name);
            t
        }));
    }
    tensors.extend(adam_g.to_tensors("adam_g."));
    tensors.extend(adam_d.to_tensors("adam_d."));
    let mut meta = BTreeMap::new();
    meta.insert(
        "format".to_string(),
        pggan_model::weights::FORMAT.to_string(),
    );
    meta.insert("kind".to_string(), "checkpoint".to_string());
    meta.insert("config".to_string(), serde_json::to_string(config)?);
    meta.insert("state".to_string(), serde_json::to_string(state)?);
    meta.insert("options".to_string(), options_json.to_string());
    let bytes = encode(&tensors, WeightDtype::F32, &meta)
        .context("a weight is NaN or infinite; not overwriting the last good checkpoint")?;
    let path = checkpoint_path(run);
    let tmp = run.join("checkpoint.safetensors.tmp");
    write_synced(&tmp, &bytes).with_context(|| {
        format!(
            "writing {} (the previous checkpoint is untouched)",
            tmp.display()
        )
    })?;
    // Test hook: widen the window between write and rename, so fault tests can kill in it.
    if let Some(ms) = std::env::var("PGGAN_DEBUG_CHECKPOINT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    std::fs::rename(&tmp, &path).with_context(|| {
        format!(
            "moving {} into place (the previous checkpoint is untouched)",
            path.display()
        )
    })?;
    Ok(())
}

/// Writes a file and flushes it to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn take(tensors: &BTreeMap<String, NamedTensor>, prefix: &str) -> Vec<NamedTensor> {
    tensors
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, t)| NamedTensor {
            name: k[prefix.len()..].to_string(),
            ..t.clone()
        })
        .collect()
}

/// Paths of a split (compact) checkpoint's parts, in order.
fn part_paths(run: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    parts.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("checkpoint-part") && n.ends_with(".safetensors"))
    });
    parts.sort();
    parts
}

/// Whether `run` holds a checkpoint (whole, or split into parts by `pggan compact`).
pub fn has_checkpoint(run: &Path) -> bool {
    checkpoint_path(run).exists() || !part_paths(run).is_empty()
}

/// Every tensor and the metadata of a run's checkpoint, whole or in parts.
fn read_checkpoint(
    run: &Path,
) -> Result<(BTreeMap<String, NamedTensor>, BTreeMap<String, String>)> {
    let whole = checkpoint_path(run);
    let files = if whole.exists() {
        vec![whole]
    } else {
        part_paths(run)
    };
    if files.is_empty() {
        bail!(
            "{} has no checkpoint ({} is missing)",
            run.display(),
            checkpoint_path(run).display()
        );
    }
    let mut tensors = BTreeMap::new();
    let mut meta: Option<BTreeMap<String, String>> = None;
    for path in &files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (list, m) = decode(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
        if let Some(first) = &meta
            && first.get("state") != m.get("state")
        {
            bail!(
                "{} belongs to another checkpoint than {}",
                path.display(),
                files[0].display()
            );
        }
        meta.get_or_insert(m);
        tensors.extend(list.into_iter().map(|t| (t.name.clone(), t)));
    }
    Ok((tensors, meta.unwrap_or_default()))
}

fn parse_state(meta: &BTreeMap<String, String>, run: &Path) -> Result<TrainState> {
    serde_json::from_str(meta.get("state").map(String::as_str).unwrap_or("")).with_context(|| {
        format!(
            "the checkpoint in {} has no valid training state",
            run.display()
        )
    })
}

/// Reads a run's checkpoint; `device` is the autodiff device for G and D, `plain` for the rest.
pub fn load(run: &Path, device: &Device, plain: &Device) -> Result<Checkpoint> {
    if !has_checkpoint(run) {
        bail!(
            "{} has no checkpoint to resume from ({} is missing)",
            run.display(),
            checkpoint_path(run).display()
        );
    }
    let (tensors, meta) = read_checkpoint(run)?;
    let config = config_from_metadata(&meta, "checkpoint")
        .with_context(|| format!("the checkpoint in {}", run.display()))?;
    let state = parse_state(&meta, run)?;
    let mut rng = SplitMix64::new(0);
    let generator = apply_tensors(
        Generator::new(&config, &mut rng, device),
        take(&tensors, "g."),
    )
    .context("checkpoint generator")?;
    let critic = apply_tensors(Critic::new(&config, &mut rng, device), take(&tensors, "d."))
        .context("checkpoint critic")?;
    let ema = apply_tensors(
        Generator::new(&config, &mut rng, plain),
        take(&tensors, "ema."),
    )
    .context("checkpoint EMA generator")?;
    let adam_g = Adam::from_tensors(state.adam_g_step, "adam_g.", &tensors, plain);
    let adam_d = Adam::from_tensors(state.adam_d_step, "adam_d.", &tensors, plain);
    Ok(Checkpoint {
        config,
        generator,
        critic,
        ema,
        adam_g,
        adam_d,
        state,
    })
}

/// Reads only the EMA generator of a run (for `generate` and `export`), with the state.
pub fn load_ema(run: &Path, device: &Device) -> Result<(Generator, ModelConfig, TrainState)> {
    let (tensors, meta) =
        read_checkpoint(run).with_context(|| format!("is {} a run folder?", run.display()))?;
    let config = config_from_metadata(&meta, "checkpoint")?;
    let state = parse_state(&meta, run)?;
    let ema = apply_tensors(
        Generator::new(&config, &mut SplitMix64::new(0), device),
        take(&tensors, "ema."),
    )
    .context("checkpoint EMA generator")?;
    Ok((ema, config, state))
}

/// What `pggan compact` wrote.
pub struct CompactReport {
    /// Files written, with their sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
    /// Whether Adam's moments were kept.
    pub optimizer_kept: bool,
}

/// Writes a run's checkpoint into `out` as parts of at most `max_file_bytes` each, the weights in
/// `dtype`, Adam's moments (f32) only if `keep_optimizer`, with `options.json`, `metrics.jsonl`,
/// `sessions.jsonl` and the stage snapshots: a run folder that `--resume` continues (not
/// bit-exactly unless f32 with the optimiser). For carrying a run between machines with file-size
/// limits.
pub fn compact(
    run: &Path,
    out: &Path,
    dtype: WeightDtype,
    keep_optimizer: bool,
    max_file_bytes: u64,
) -> Result<CompactReport> {
    let (tensors, mut meta) = read_checkpoint(run)?;
    let mut state = parse_state(&meta, run)?;
    if !keep_optimizer {
        state.adam_g_step = 0;
        state.adam_d_step = 0;
    }
    meta.insert("state".to_string(), serde_json::to_string(&state)?);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if out.canonicalize()? == run.canonicalize()? {
        bail!("--out must be another folder than the run");
    }
    for old in part_paths(out) {
        std::fs::remove_file(old)?;
    }
    // Greedy packing in name order: weights in `dtype`, moments in f32.
    let mut parts: Vec<(WeightDtype, Vec<NamedTensor>, u64)> = Vec::new();
    for (name, t) in tensors {
        let is_moment = name.starts_with("adam_");
        if is_moment && !keep_optimizer {
            continue;
        }
        let d = if is_moment { WeightDtype::F32 } else { dtype };
        let size = t.values.len() as u64 * if d == WeightDtype::F32 { 4 } else { 2 };
        if size + 64 * 1024 > max_file_bytes {
            bail!(
                "tensor {name} alone takes {:.1} MiB, more than --max-file-mib allows",
                size as f64 / (1 << 20) as f64
            );
        }
        match parts.last_mut() {
            Some((pd, list, bytes)) if *pd == d && *bytes + size + 64 * 1024 <= max_file_bytes => {
                list.push(t);
                *bytes += size;
            }
            _ => parts.push((d, vec![t], size)),
        }
    }
    let mut files = Vec::new();
    for (i, (d, list, _)) in parts.iter().enumerate() {
        let path = out.join(format!("checkpoint-part{i:03}.safetensors"));
        let bytes = encode(list, *d, &meta)?;
        write_synced(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        files.push((path, bytes.len() as u64));
    }
    let _ = std::fs::remove_file(checkpoint_path(out));
    for name in ["options.json", "metrics.jsonl", "sessions.jsonl"] {
        if run.join(name).exists() {
            std::fs::copy(run.join(name), out.join(name))
                .with_context(|| format!("copying {name}"))?;
            files.push((out.join(name), std::fs::metadata(out.join(name))?.len()));
        }
    }
    // The growth-stage snapshots, for the export.
    let stages = run.join("stages");
    if stages.is_dir() {
        std::fs::create_dir_all(out.join("stages"))?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&stages)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for from in names {
            let to = out
                .join("stages")
                .join(from.file_name().expect("a file name"));
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            files.push((to.clone(), std::fs::metadata(&to)?.len()));
        }
    }
    Ok(CompactReport {
        files,
        optimizer_kept: keep_optimizer,
    })
}
