//! The training loop (`pggan train`), in the order of the official `train.py`: set up or resume
//! the run; then step after step — ask the schedule where training stands, fetch reals, run the
//! training step — and once per tick do the maintenance (log line, grid, metrics, checkpoint).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use indicatif::{ProgressBar, ProgressStyle};
use pggan_model::latent::latents_for_seeds;
use pggan_model::weights::{WeightDtype, snapshot_to_bytes};
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};

use crate::checkpoint::{self, TrainState};
use crate::data::RealSampler;
use crate::fsutil::write_atomic;
use crate::options::{RunOptions, SessionArgs, resume_options};
use crate::pack::{Pack, Split};
use crate::rgb_fit::{self, FadeRgbStart};
use crate::schedule::{FadePoint, ScheduleSpec, schedule};
use crate::step::{Networks, StepRandom};
use crate::tick::{TickStats, Ticker};

/// How a call to [`train`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOutcome {
    /// The run reached its total.
    Finished,
    /// Interrupted (Ctrl-C); a checkpoint was saved.
    Interrupted,
    /// Paused at `--stop-kimg` or after `--max-minutes`; a checkpoint was saved.
    Paused,
    /// `--dry-run`: nothing trained, nothing written.
    DryRun,
}

/// Runs (or resumes) training until the total, a session limit or an interrupt. `given` are the
/// run options of this command line and `given_on_cli` says which of them it named (on
/// `--resume` the checkpoint's own options win except for those, see
/// [`resume_options`]).
pub fn train(
    session: &SessionArgs,
    given: &RunOptions,
    given_on_cli: &dyn Fn(&str) -> bool,
    stop: Arc<AtomicBool>,
) -> Result<TrainOutcome> {
    // ---- Choose the options: this command line's, or the run's own on resume.
    session.validate()?;
    let run = session.run.as_path();
    let pack = Pack::open(&session.data)?;
    let resolution = pack.header.resolution;
    let opts = if session.resume {
        if !checkpoint::has_checkpoint(run) {
            bail!(
                "{} has no checkpoint to resume from ({} is missing)",
                run.display(),
                checkpoint::checkpoint_path(run).display()
            );
        }
        let (state, stored) = checkpoint::read_meta(run)?;
        resume_options(&stored, given, given_on_cli, state.nimg, resolution)?
    } else {
        given.clone()
    };
    opts.validate(resolution)?;
    if session.dry_run {
        dry_run(&opts, &pack, session.resume.then_some(run));
        return Ok(TrainOutcome::DryRun);
    }
    if !session.resume && checkpoint::has_checkpoint(run) {
        bail!(
            "{} already holds a run; pass --resume to continue it or choose another --run",
            run.display()
        );
    }

    // ---- Set up: networks, optimiser and state, new or from the checkpoint.
    std::fs::create_dir_all(run.join("grids"))
        .with_context(|| format!("creating run folder {}", run.display()))?;
    let plain = session.backend.device()?;
    let device = plain.clone().autodiff();
    let (config, mut nets, mut state) = if session.resume {
        let ck = checkpoint::load(run, &device, &plain)?;
        (ck.config, ck.networks, ck.state)
    } else {
        // A fresh run starts a fresh log (lines left by an attempt that never checkpointed go).
        let _ = std::fs::remove_file(run.join("metrics.jsonl"));
        let config = opts.model_config(resolution);
        let mut init = SplitMix64::derive(opts.seed, "init");
        let nets = Networks::new(&config, &mut init, &device);
        (config, nets, TrainState::new(opts.seed))
    };
    let options_json = serde_json::to_string_pretty(&opts)?;
    write_atomic(&run.join("options.json"), options_json.as_bytes()).with_context(|| {
        format!(
            "writing {}/options.json (is the run folder writable and the disk not full? the last checkpoint is untouched)",
            run.display()
        )
    })?;
    let adapter = crate::backend::BackendKind::adapter_name(&plain);
    let devices = session.backend.devices(session.devices as usize)?;

    let spec = opts.schedule_spec(&config);
    // Every level's minibatch must split over the devices; say so now, not at the level.
    if devices.len() > 1 {
        for level in 0..config.num_levels() {
            crate::step::shard_group(
                config.mbstd_group_size,
                spec.minibatch(level),
                devices.len(),
            )
            .with_context(|| {
                format!(
                    "--devices {} at {r}×{r}",
                    devices.len(),
                    r = ModelConfig::level_resolution(level)
                )
            })?;
        }
    }
    crate::sessions::record_session(
        run,
        state.nimg as f64 / 1000.0,
        session.backend.name(),
        adapter.as_deref(),
        devices.len(),
    )?;
    let settings = opts.step_settings();
    let total_kimg = opts.total_kimg(&spec);
    let total_nimg = (total_kimg * 1000.0).round() as u64;
    let tick_nimg = ((opts.tick_kimg * 1000.0).round() as u64).max(1);
    let stop_nimg = session
        .stop_kimg
        .map_or(u64::MAX, |k| (k * 1000.0).round() as u64);
    let mut sampler = RealSampler::new(
        pack,
        opts.seed,
        state.cursor,
        state.mirror_rng.clone(),
        !opts.no_mirror,
    )?;
    let top = config.num_levels() - 1;
    let saver = Saver {
        run,
        config: &config,
        options_json: &options_json,
        spec: &spec,
    };

    let bar = ProgressBar::new(total_nimg);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(state.nimg);
    let say = |line: &str| {
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
    };
    say(&format!(
        "{} {} at {}×{}: G {} params, D {} params, {} training images, backend {}, {:.1} kimg total",
        if session.resume {
            "Resuming"
        } else {
            "Training"
        },
        run.display(),
        config.resolution,
        config.resolution,
        nets.g.num_params(),
        nets.d.num_params(),
        sampler.len(),
        session.backend.name(),
        total_kimg
    ));
    if session.resume {
        trim_metrics(&run.join("metrics.jsonl"), state.tick)?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("metrics.jsonl"))
        .context("opening metrics.jsonl")?;
    let grid_count = opts.grid * opts.grid;
    let mut ticker = Ticker {
        run,
        metrics,
        grid_latents: latents_for_seeds(0, grid_count, config.latent_size),
        grid_side: opts.grid,
        config: config.clone(),
        metrics_kimg: opts.metrics_kimg,
        metrics_count: opts.metrics_count,
        pack: Pack::open(&session.data)?,
    };
    let mut next_tick = (state.nimg / tick_nimg + 1) * tick_nimg;
    let fade_points = spec.fade_points();
    // A run resumed exactly at a fade point (a level's kept checkpoint is the next fade's start)
    // takes that snapshot now: the steps below only see points they pass.
    for point in fade_points.iter().filter(|p| p.nimg == state.nimg) {
        write_fade_snapshot(run, &nets.ema, &config, point, state.nimg, &spec)?;
    }
    // Levels whose end the next checkpoint will be kept for (`checkpoints/`).
    let mut levels_to_keep: Vec<usize> = Vec::new();
    let mut tick_stats = TickStats::new();
    let session_start = Instant::now();
    let seconds_before = state.train_seconds;
    let mut unsaved = false;

    // ---- Train.
    let outcome = loop {
        let ending = if state.nimg >= total_nimg {
            Some(TrainOutcome::Finished)
        } else if stop.load(Ordering::SeqCst) {
            Some(TrainOutcome::Interrupted)
        } else if state.nimg >= stop_nimg
            || session
                .max_minutes
                .is_some_and(|m| session_start.elapsed().as_secs_f64() >= m * 60.0)
        {
            Some(TrainOutcome::Paused)
        } else {
            None
        };
        if let Some(outcome) = ending {
            // ---- Wrap up: the top level's snapshot, a partial tick, the last checkpoint.
            state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
            if outcome == TrainOutcome::Finished && state.nimg as f64 / 1000.0 >= spec.growth_kimg()
            {
                write_stage(run, &nets.ema, &config, top, state.nimg as f64 / 1000.0)?;
                if !state.stages_done.contains(&top) {
                    state.stages_done.push(top);
                    unsaved = true;
                }
            }
            if tick_stats.steps > 0 {
                // An interrupt mid-tick: check the partial tick's numbers before saving.
                state.tick += 1;
                let phase = schedule(state.nimg as f64 / 1000.0, &spec);
                ticker.tick(&mut tick_stats, &mut state, &phase, &nets.ema, &say)?;
            }
            if unsaved || !checkpoint::has_checkpoint(run) {
                saver.save(&nets, &mut state, &sampler)?;
            }
            keep_level_checkpoints(run, &mut levels_to_keep)?;
            break outcome;
        }

        // Choose the phase; the paper resets Adam whenever the level or the fade starts or ends.
        let phase = schedule(state.nimg as f64 / 1000.0, &spec);
        let (level, alpha, n) = (phase.level, phase.alpha, phase.minibatch);
        let key = (level, phase.fading());
        if state.optimizer_phase != Some(key) {
            // A fade-in beginning (the level below was the last one trained): its toRGB first.
            let fade_begins = phase.fading()
                && level > 0
                && state.optimizer_phase.is_some_and(|(l, _)| l + 1 == level);
            if fade_begins && opts.fade_rgb == FadeRgbStart::Fit {
                let r = phase.resolution();
                let (g, fit) = rgb_fit::fit_to_rgb(nets.g, level, opts.seed)?;
                let (ema, ema_fit) = rgb_fit::fit_to_rgb(nets.ema, level, opts.seed)?;
                (nets.g, nets.ema) = (g, ema);
                say(&format!(
                    "{r}×{r} fades in: its toRGB fitted to the {h}×{h} picture (root mean square difference {:.3} → {:.3}; EMA {:.3} → {:.3})",
                    fit.rms_before,
                    fit.rms_after,
                    ema_fit.rms_before,
                    ema_fit.rms_after,
                    h = r / 2
                ));
            }
            nets.adam_g.reset();
            nets.adam_d.reset();
            state.optimizer_phase = Some(key);
        }

        // Run the training step.
        let mut reals = sampler
            .next_batch(n, phase.resolution(), alpha, &device) // [n, 3, r, r]
            .context("the training images could not be read; the last checkpoint is intact")?;
        // The loader reads the next step's images while this one trains.
        let next = schedule((state.nimg + n as u64) as f64 / 1000.0, &spec);
        sampler.prefetch(next.minibatch, next.resolution())?;
        if session
            .debug_nan_at_kimg
            .is_some_and(|k| state.nimg as f64 / 1000.0 >= k)
        {
            reals = reals.mul_scalar(f64::NAN);
        }
        let random = StepRandom {
            latents: &mut state.latent_rng,
            mix: &mut state.mix_rng,
        };
        let losses;
        (nets, losses) = nets.step_sharded(reals, level, alpha, random, &settings, &devices)?;
        let before = state.nimg;
        state.nimg += n as u64;
        unsaved = true;
        tick_stats.add(losses, n);
        bar.set_position(state.nimg);
        bar.set_message(format!(
            "kimg {:.1} · {r}×{r} α {alpha:.2}",
            state.nimg as f64 / 1000.0,
            r = phase.resolution()
        ));

        // Stage snapshots at the end of each level's stabilisation (the top one at the end).
        for l in 0..top {
            let end = (spec.stage_end_kimg(l) * 1000.0).round() as u64;
            if before < end && state.nimg >= end && !state.stages_done.contains(&l) {
                write_stage(run, &nets.ema, &config, l, state.nimg as f64 / 1000.0)
                    .with_context(|| format!("writing the stage snapshot of level {l} (if a weight is NaN, training diverged; the last checkpoint is intact)"))?;
                state.stages_done.push(l);
                levels_to_keep.push(l); // with the next checkpoint
            }
        }

        // Snapshots through each fade-in, for the page's replay of it.
        for point in &fade_points {
            if before < point.nimg && state.nimg >= point.nimg {
                write_fade_snapshot(run, &nets.ema, &config, point, state.nimg, &spec)
                    .with_context(|| format!("writing the {}×{} fade-in snapshot at α {} (if a weight is NaN, training diverged; the last checkpoint is intact)", ModelConfig::level_resolution(point.level), ModelConfig::level_resolution(point.level), point.alpha))?;
            }
        }

        // Maintenance once per tick.
        if state.nimg >= next_tick || state.nimg >= total_nimg || state.nimg >= stop_nimg {
            next_tick = (state.nimg / tick_nimg + 1) * tick_nimg;
            state.tick += 1;
            state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
            ticker.tick(&mut tick_stats, &mut state, &phase, &nets.ema, &say)?;
            saver.save(&nets, &mut state, &sampler)?;
            unsaved = false;
            keep_level_checkpoints(run, &mut levels_to_keep)?;
        }
    };
    bar.finish_and_clear();
    let kimg = state.nimg as f64 / 1000.0;
    say(&match outcome {
        TrainOutcome::Finished => format!(
            "Done: {kimg:.1} kimg in {:.0} s. Checkpoint in {}",
            state.train_seconds,
            run.display()
        ),
        TrainOutcome::Interrupted => {
            format!("Interrupted at {kimg:.3} kimg; checkpoint saved. Continue with --resume.")
        }
        _ => format!(
            "Paused at {kimg:.3} kimg of {total_kimg:.1}; checkpoint saved. Continue with --resume."
        ),
    });
    Ok(outcome)
}

/// Writes checkpoints: the one place where the training state is brought up to date with the
/// data position, the mirror flips, Adam's step counts and the schedule's phase.
struct Saver<'a> {
    run: &'a Path,
    config: &'a ModelConfig,
    options_json: &'a str,
    spec: &'a ScheduleSpec,
}

impl Saver<'_> {
    fn save(&self, nets: &Networks, state: &mut TrainState, sampler: &RealSampler) -> Result<()> {
        state.cursor = sampler.cursor;
        state.mirror_rng = sampler.mirror_rng.clone();
        state.adam_g_step = nets.adam_g.step;
        state.adam_d_step = nets.adam_d.step;
        let phase = schedule(state.nimg as f64 / 1000.0, self.spec);
        (state.level, state.alpha) = (phase.level, phase.alpha);
        checkpoint::save(self.run, self.config, self.options_json, nets, state)
    }
}

/// Writes the EMA generator cut down to `level` as a stage snapshot.
fn write_stage(
    run: &Path,
    ema: &Generator,
    config: &ModelConfig,
    level: usize,
    kimg: f64,
) -> Result<()> {
    let dir = run.join("stages");
    std::fs::create_dir_all(&dir)?;
    let res = ModelConfig::level_resolution(level);
    let bytes = snapshot_to_bytes(ema, config, level, 1.0, kimg, WeightDtype::F32, &[])?;
    write_atomic(
        &dir.join(format!("level{level}-{res}x{res}.safetensors")),
        &bytes,
    )?;
    Ok(())
}

/// Writes the EMA generator at `point` of a fade-in, cut down to the fading level, as
/// `fades/levelL-RxR-aNNN.safetensors` (NNN: the nominal α in hundredths); its metadata holds the
/// exact α at `nimg`, the images shown when it was taken. A resumed run that passes the point
/// again writes the same file again (training replays exactly).
fn write_fade_snapshot(
    run: &Path,
    ema: &Generator,
    config: &ModelConfig,
    point: &FadePoint,
    nimg: u64,
    spec: &ScheduleSpec,
) -> Result<()> {
    let dir = run.join("fades");
    std::fs::create_dir_all(&dir)?;
    let phase = schedule(nimg as f64 / 1000.0, spec);
    let alpha = match phase.level.cmp(&point.level) {
        std::cmp::Ordering::Equal => phase.alpha,
        std::cmp::Ordering::Greater => 1.0,
        std::cmp::Ordering::Less => 0.0,
    };
    let res = ModelConfig::level_resolution(point.level);
    let bytes = snapshot_to_bytes(
        ema,
        config,
        point.level,
        alpha,
        nimg as f64 / 1000.0,
        WeightDtype::F32,
        &[],
    )?;
    let name = format!(
        "level{}-{res}x{res}-a{:03}.safetensors",
        point.level,
        (point.alpha * 100.0).round() as u32
    );
    write_atomic(&dir.join(name), &bytes)?;
    Ok(())
}

/// Keeps the run's checkpoint as `checkpoints/levelL-RxR.safetensors` for each of `levels` (and
/// empties it): the whole training state (both networks, EMA, Adam, data position) just after
/// that level finished stabilising, so a run can be taken back there (copy it over
/// `checkpoint.safetensors`, then `--resume`). A hard link where the file system allows (the
/// checkpoint is replaced, never rewritten, so it stays intact).
fn keep_level_checkpoints(run: &Path, levels: &mut Vec<usize>) -> Result<()> {
    for level in levels.drain(..) {
        let dir = run.join("checkpoints");
        std::fs::create_dir_all(&dir)?;
        let res = ModelConfig::level_resolution(level);
        let kept = dir.join(format!("level{level}-{res}x{res}.safetensors"));
        let _ = std::fs::remove_file(&kept);
        let current = checkpoint::checkpoint_path(run);
        if std::fs::hard_link(&current, &kept).is_err() {
            std::fs::copy(&current, &kept)
                .with_context(|| format!("keeping the checkpoint at the end of level {level}"))?;
        }
    }
    Ok(())
}

/// `--dry-run`: the whole options record, the networks and the schedule (with where a resumed
/// run stands), and nothing else.
fn dry_run(opts: &RunOptions, pack: &Pack, resumed: Option<&Path>) {
    let config = opts.model_config(pack.header.resolution);
    let spec = opts.schedule_spec(&config);
    let mut rng = SplitMix64::new(0);
    let plain = burn::tensor::Device::flex();
    let g = Generator::new(&config, &mut rng, &plain);
    let d = Critic::new(&config, &mut rng, &plain);
    println!("{}", serde_json::to_string_pretty(opts).unwrap_or_default());
    println!(
        "model: {}×{}, latent {}, channels {:?}; G {} params, D {} params",
        config.resolution,
        config.resolution,
        config.latent_size,
        (0..config.num_levels())
            .map(|l| config.channels(l))
            .collect::<Vec<_>>(),
        g.num_params(),
        d.num_params()
    );
    println!(
        "data: {} training and {} held-out images",
        pack.count(Split::Train),
        pack.count(Split::Holdout)
    );
    let total = opts.total_kimg(&spec);
    for level in 0..config.num_levels() {
        let r = ModelConfig::level_resolution(level);
        let full = spec.full_weight_kimg(level);
        let fade = if level == 0 {
            String::from("no fade")
        } else {
            format!(
                "fade-in {:.1}→{full:.1} kimg",
                spec.stage_end_kimg(level - 1)
            )
        };
        let stable_end = if level + 1 == config.num_levels() {
            total
        } else {
            spec.stage_end_kimg(level)
        };
        println!(
            "level {level} ({r}×{r}): minibatch {:>3}, {fade}, stable {full:.1}→{stable_end:.1} kimg",
            spec.minibatch(level)
        );
    }
    if let Some(run) = resumed
        && let Ok((state, _)) = checkpoint::read_meta(run)
    {
        println!(
            "the run in {} stands at {:.3} kimg (level {}, α {:.3}); resuming would continue from there",
            run.display(),
            state.nimg as f64 / 1000.0,
            state.level,
            state.alpha
        );
    }
    println!("total: {total:.1} kimg (dry run: nothing trained, nothing written)");
}

/// On resume, drops the log lines of ticks after the checkpoint (work that is being redone) and
/// a half-written last line left by a kill, so the log matches the checkpoint.
fn trim_metrics(path: &Path, last_tick: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["tick"].as_u64())
                .is_some_and(|t| t <= last_tick)
        })
        .collect();
    if kept.len() != text.lines().count() {
        let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
        write_atomic(path, text.as_bytes()).context("trimming metrics.jsonl to the checkpoint")?;
    }
    Ok(())
}
