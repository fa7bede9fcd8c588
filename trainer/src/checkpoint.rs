//! Checkpoints: generator, critic, EMA generator, both Adam states, the training state and the
//! run's options, in one safetensors file written atomically (`fsutil`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use pggan_model::weights::{
    NamedTensor, WeightDtype, apply_tensors, collect_tensors, config_from_metadata, decode, encode,
};
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};
use serde::{Deserialize, Serialize};

use crate::adam::Adam;
use crate::data::DataCursor;
use crate::fsutil::{AtomicFile, write_atomic};
use crate::options::RunOptions;
use crate::schedule::schedule;
use crate::step::Networks;

/// Everything besides weights that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Images shown so far.
    pub nimg: u64,
    /// Level the run stands at (the schedule's at `nimg`).
    pub level: usize,
    /// Fade weight of that level.
    pub alpha: f64,
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

impl TrainState {
    /// The state of a new run with `seed`.
    pub fn new(seed: u64) -> TrainState {
        TrainState {
            nimg: 0,
            level: 0,
            alpha: 1.0,
            tick: 0,
            latent_rng: SplitMix64::derive(seed, "latents"),
            mix_rng: SplitMix64::derive(seed, "mix"),
            mirror_rng: SplitMix64::derive(seed, "mirror"),
            cursor: DataCursor::default(),
            adam_g_step: 0,
            adam_d_step: 0,
            optimizer_phase: None,
            stages_done: Vec::new(),
            train_seconds: 0.0,
            metrics_done: 0,
            best_swd: None,
        }
    }
}

/// A loaded checkpoint.
pub struct Checkpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// G and D (autodiff device), the EMA generator and both Adam states (plain device).
    pub networks: Networks,
    /// Training state.
    pub state: TrainState,
}

/// Path of a run's checkpoint.
pub fn checkpoint_path(run: &Path) -> PathBuf {
    run.join("checkpoint.safetensors")
}

/// Test hook: `PGGAN_DEBUG_CHECKPOINT_DELAY_MS` widens the window between a checkpoint's write
/// and its rename, so the fault tests can kill the process inside it.
fn debug_pause() -> Duration {
    let ms = std::env::var("PGGAN_DEBUG_CHECKPOINT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    Duration::from_millis(ms.unwrap_or(0))
}

/// Writes the checkpoint of a run atomically; the previous one stays valid until the rename.
/// `options` is the run's options record (JSON), kept inside so a resume never depends on
/// `options.json`.
pub fn save(
    run: &Path,
    config: &ModelConfig,
    options: &str,
    nets: &Networks,
    state: &TrainState,
) -> Result<()> {
    let mut tensors: Vec<NamedTensor> = Vec::new();
    for (prefix, list) in [
        ("g.", collect_tensors(&nets.g)),
        ("d.", collect_tensors(&nets.d)),
        ("ema.", collect_tensors(&nets.ema)),
    ] {
        tensors.extend(list.into_iter().map(|mut t| {
            t.name = format!("{prefix}{}", t.name);
            t
        }));
    }
    tensors.extend(nets.adam_g.to_tensors("adam_g."));
    tensors.extend(nets.adam_d.to_tensors("adam_d."));
    let mut meta = BTreeMap::new();
    meta.insert(
        "format".to_string(),
        pggan_model::weights::FORMAT.to_string(),
    );
    meta.insert("kind".to_string(), "checkpoint".to_string());
    meta.insert("config".to_string(), serde_json::to_string(config)?);
    meta.insert("state".to_string(), serde_json::to_string(state)?);
    meta.insert("options".to_string(), options.to_string());
    let bytes = encode(&tensors, WeightDtype::F32, &meta)
        .context("a weight is NaN or infinite; not overwriting the last good checkpoint")?;
    let write = || -> std::io::Result<()> {
        let mut file = AtomicFile::create(&checkpoint_path(run))?;
        file.write_all(&bytes)?;
        file.commit_after(debug_pause())
    };
    write().context("writing the checkpoint (the previous checkpoint is untouched)")
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

/// The training state and the options a checkpoint stores. A checkpoint written before the state
/// kept its level and α gets them from its options' schedule.
fn parse_meta(meta: &BTreeMap<String, String>, run: &Path) -> Result<(TrainState, RunOptions)> {
    let invalid = || {
        format!(
            "the checkpoint in {} has no valid training state",
            run.display()
        )
    };
    let options: RunOptions =
        serde_json::from_str(meta.get("options").map(String::as_str).unwrap_or(""))
            .with_context(|| format!("the checkpoint in {} has no valid options", run.display()))?;
    let mut state: serde_json::Value =
        serde_json::from_str(meta.get("state").map(String::as_str).unwrap_or(""))
            .with_context(invalid)?;
    if state.get("level").is_none() {
        let config = config_from_metadata(meta, "checkpoint")?;
        let nimg = state["nimg"].as_u64().with_context(invalid)?;
        let phase = schedule(nimg as f64 / 1000.0, &options.schedule_spec(&config));
        state["level"] = phase.level.into();
        state["alpha"] = phase.alpha.into();
    }
    Ok((
        serde_json::from_value(state).with_context(invalid)?,
        options,
    ))
}

/// The training state and the options stored in a run's checkpoint.
pub fn read_meta(run: &Path) -> Result<(TrainState, RunOptions)> {
    let (_, meta) = read_checkpoint(run)?;
    parse_meta(&meta, run)
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
    let (state, _) = parse_meta(&meta, run)?;
    let mut rng = SplitMix64::new(0);
    let g = apply_tensors(
        Generator::new(&config, &mut rng, device),
        take(&tensors, "g."),
    )
    .context("checkpoint generator")?;
    let d = apply_tensors(Critic::new(&config, &mut rng, device), take(&tensors, "d."))
        .context("checkpoint critic")?;
    let ema = apply_tensors(
        Generator::new(&config, &mut rng, plain),
        take(&tensors, "ema."),
    )
    .context("checkpoint EMA generator")?;
    let networks = Networks {
        g,
        d,
        ema,
        adam_g: Adam::from_tensors(state.adam_g_step, "adam_g.", &tensors, plain),
        adam_d: Adam::from_tensors(state.adam_d_step, "adam_d.", &tensors, plain),
    };
    Ok(Checkpoint {
        config,
        networks,
        state,
    })
}

/// Reads only the EMA generator of a run (for `generate` and `export`), with the state.
pub fn load_ema(run: &Path, device: &Device) -> Result<(Generator, ModelConfig, TrainState)> {
    let (tensors, meta) =
        read_checkpoint(run).with_context(|| format!("is {} a run folder?", run.display()))?;
    let config = config_from_metadata(&meta, "checkpoint")?;
    let (state, _) = parse_meta(&meta, run)?;
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
/// `sessions.jsonl`, the stage snapshots and those kept through each fade-in (the export ships
/// both): a run folder that `--resume` continues (not bit-exactly unless f32 with the optimiser).
/// For carrying a run between machines with file-size limits.
pub fn compact(
    run: &Path,
    out: &Path,
    dtype: WeightDtype,
    keep_optimizer: bool,
    max_file_bytes: u64,
) -> Result<CompactReport> {
    let (tensors, mut meta) = read_checkpoint(run)?;
    let (mut state, _) = parse_meta(&meta, run)?;
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
        write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
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
    // The growth-stage and fade snapshots, for the export.
    for folder in ["stages", "fades"] {
        let from_dir = run.join(folder);
        if !from_dir.is_dir() {
            continue;
        }
        std::fs::create_dir_all(out.join(folder))?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&from_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for from in names {
            let to = out
                .join(folder)
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
