//! The training loop: fetch reals, run the critic and generator steps, update the EMA, and once
//! per tick do the maintenance (log line, grid, metrics, checkpoint).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use pggan_model::latent::latents_for_seeds;
use pggan_model::layers::{tensor_from_f32, tensor_to_f32};
use pggan_model::weights::{WeightDtype, snapshot_to_bytes};
use pggan_model::{Critic, Generator, ModelConfig, SplitMix64};
use serde_json::json;

use crate::adam::Adam;
use crate::checkpoint::{self, TrainState, write_synced};
use crate::data::{DataCursor, RealSampler};
use crate::ema::{ema_beta, plain_copy, update_ema};
use crate::eval::evaluate;
use crate::images::{grid, save_png, to_rgb_images};
use crate::loss::{CRITIC_STATS, critic_loss, fakes_for_critic, generator_loss};
use crate::metrics::ImageSet;
use crate::options::TrainOptions;
use crate::pack::{Pack, Split};
use crate::schedule::{Phase, schedule};

/// How a call to [`train`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainOutcome {
    /// The run reached its total.
    Finished,
    /// Interrupted (Ctrl-C); a checkpoint was saved.
    Interrupted,
    /// Paused at `--stop-kimg` or after `--max-minutes`; a checkpoint was saved.
    Paused,
}

/// Statistics summed over a tick.
struct TickStats {
    critic: Option<Tensor<1>>,
    generator: Option<Tensor<1>>,
    steps: u64,
    images: u64,
    started: Instant,
}

impl TickStats {
    fn new() -> Self {
        Self {
            critic: None,
            generator: None,
            steps: 0,
            images: 0,
            started: Instant::now(),
        }
    }
}

/// `n` latents from the training RNG.
fn random_latents(rng: &mut SplitMix64, n: usize, latent: usize, device: &Device) -> Tensor<2> {
    tensor_from_f32(rng.normals_f32(n * latent), [n, latent], device)
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
    let path = dir.join(format!("level{level}-{res}x{res}.safetensors"));
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Keeps the run's checkpoint as `checkpoints/levelL-RxR.safetensors` for each of `levels` (and
/// empties it): the whole training state (both networks, EMA, Adam, data position) just after
/// that level finished stabilising, so a run
/// can be taken back there (copy it over `checkpoint.safetensors`, then `--resume`). A hard link
/// where the file system allows (the checkpoint is replaced, never rewritten, so it stays intact).
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

/// `--dry-run`: the whole options record, the networks and the schedule, and nothing else.
fn dry_run(opts: &TrainOptions, pack: &Pack) {
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
    let phase_kimg = spec.stabilize_kimg + spec.fade_kimg;
    for level in 0..config.num_levels() {
        let r = ModelConfig::level_resolution(level);
        let full = level as f64 * phase_kimg;
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
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(
            &tmp,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )?;
        std::fs::rename(&tmp, path).context("trimming metrics.jsonl to the checkpoint")?;
    }
    Ok(())
}

/// Runs (or resumes) training as the options say, until the total or an interrupt.
pub fn train(opts: &TrainOptions, stop: Arc<AtomicBool>) -> Result<TrainOutcome> {
    let run = opts.run.clone();
    let pack = Pack::open(&opts.data)?;
    opts.validate(pack.header.resolution)?;
    if opts.dry_run {
        dry_run(opts, &pack);
        return Ok(TrainOutcome::Finished);
    }
    std::fs::create_dir_all(run.join("grids"))
        .with_context(|| format!("creating run folder {}", run.display()))?;
    let plain = opts.backend.device()?;
    let device = plain.clone().autodiff();

    let (config, mut g, mut d, mut ema, mut adam_g, mut adam_d, mut state) = if opts.resume {
        let ck = checkpoint::load(&run, &device, &plain)?;
        (
            ck.config,
            ck.generator,
            ck.critic,
            ck.ema,
            ck.adam_g,
            ck.adam_d,
            ck.state,
        )
    } else {
        if checkpoint::has_checkpoint(&run) {
            bail!(
                "{} already holds a run; pass --resume to continue it or choose another --run",
                run.display()
            );
        }
        // A fresh run starts a fresh log (lines left by an attempt that never checkpointed go).
        let _ = std::fs::remove_file(run.join("metrics.jsonl"));
        let config = opts.model_config(pack.header.resolution);
        let mut init = SplitMix64::derive(opts.seed, "init");
        let g = Generator::new(&config, &mut init, &device);
        let d = Critic::new(&config, &mut init, &device);
        let ema = plain_copy(&g);
        let state = TrainState {
            nimg: 0,
            tick: 0,
            latent_rng: SplitMix64::derive(opts.seed, "latents"),
            mix_rng: SplitMix64::derive(opts.seed, "mix"),
            mirror_rng: SplitMix64::derive(opts.seed, "mirror"),
            cursor: DataCursor::default(),
            adam_g_step: 0,
            adam_d_step: 0,
            optimizer_phase: None,
            stages_done: Vec::new(),
            train_seconds: 0.0,
            metrics_done: 0,
            best_swd: None,
        };
        (config, g, d, ema, Adam::default(), Adam::default(), state)
    };
    let options_json = serde_json::to_string_pretty(opts)?;
    std::fs::write(run.join("options.json"), &options_json).with_context(|| format!("writing {}/options.json (is the run folder writable and the disk not full? the last checkpoint is untouched)", run.display()))?;

    let adapter = crate::backend::BackendKind::adapter_name(&plain);
    crate::sessions::record_session(
        &run,
        state.nimg as f64 / 1000.0,
        opts.backend.name(),
        adapter.as_deref(),
    )?;

    let spec = opts.schedule_spec(&config);
    let total_kimg = opts.total_kimg(&spec);
    let total_nimg = (total_kimg * 1000.0).round() as u64;
    let tick_nimg = ((opts.tick_kimg * 1000.0).round() as u64).max(1);
    let mut sampler = RealSampler::new(
        pack,
        opts.seed,
        state.cursor,
        state.mirror_rng.clone(),
        !opts.no_mirror,
    );
    let grid_count = opts.grid * opts.grid;
    let grid_latents = tensor_from_f32(
        latents_for_seeds(0, grid_count, config.latent_size),
        [grid_count, config.latent_size],
        &plain,
    );
    let top = config.num_levels() - 1;

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
        if opts.resume { "Resuming" } else { "Training" },
        run.display(),
        config.resolution,
        config.resolution,
        g.num_params(),
        d.num_params(),
        sampler.len(),
        opts.backend.name(),
        total_kimg
    ));
    if opts.resume {
        trim_metrics(&run.join("metrics.jsonl"), state.tick)?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.join("metrics.jsonl"))
        .context("opening metrics.jsonl")?;
    let mut ticker = Ticker {
        run: &run,
        metrics,
        grid_latents,
        grid_side: opts.grid,
        final_res: config.resolution,
        top_level: top,
        metrics_kimg: opts.metrics_kimg,
        metrics_count: opts.metrics_count,
        pack: Pack::open(&opts.data)?,
        config: config.clone(),
    };
    let mut next_tick = (state.nimg / tick_nimg + 1) * tick_nimg;
    // Levels whose end the next checkpoint will be kept for (`checkpoints/`).
    let mut levels_to_keep: Vec<usize> = Vec::new();
    let mut tick_stats = TickStats::new();
    let session_start = Instant::now();
    let seconds_before = state.train_seconds;
    let adam = opts.adam();
    let mut outcome = TrainOutcome::Finished;

    let stop_nimg = opts
        .stop_kimg
        .map_or(u64::MAX, |k| (k * 1000.0).round() as u64);
    while state.nimg < total_nimg {
        if stop.load(Ordering::SeqCst) {
            outcome = TrainOutcome::Interrupted;
            break;
        }
        if state.nimg >= stop_nimg
            || opts
                .max_minutes
                .is_some_and(|m| session_start.elapsed().as_secs_f64() >= m * 60.0)
        {
            outcome = TrainOutcome::Paused;
            break;
        }
        let kimg = state.nimg as f64 / 1000.0;
        let phase: Phase = schedule(kimg, &spec);
        let (level, alpha, n) = (phase.level, phase.alpha, phase.minibatch);
        // The paper resets Adam whenever the level or the fade starts or ends.
        let key = (level, phase.fading());
        if state.optimizer_phase != Some(key) {
            adam_g.reset();
            adam_d.reset();
            state.optimizer_phase = Some(key);
        }

        // Critic step.
        let mut reals = sampler.next_batch(n, phase.resolution(), alpha, &device)?; // [n, 3, r, r]
        if opts.debug_nan_at_kimg.is_some_and(|k| kimg >= k) {
            reals = reals.mul_scalar(f64::NAN);
        }
        let z = random_latents(&mut state.latent_rng, n, config.latent_size, &device);
        let fakes = fakes_for_critic(&g, z, level, alpha); // [n, 3, r, r]
        let mix: Vec<f32> = (0..n).map(|_| state.mix_rng.uniform_f64() as f32).collect();
        let mix = tensor_from_f32(mix, [n, 1, 1, 1], &device);
        let closs = critic_loss(opts.loss, &d, reals, fakes, mix, level, alpha, opts.wgan());
        let mut grads = closs.loss.backward();
        d = adam_d.step(d, &mut grads, adam);

        // Generator step.
        let z = random_latents(&mut state.latent_rng, n, config.latent_size, &device);
        let fakes = g.forward(z, level, alpha);
        let gloss = generator_loss(opts.loss, &d.clone().no_grad(), fakes, level, alpha);
        let mut grads = gloss.backward();
        g = adam_g.step(g, &mut grads, adam);
        ema = update_ema(ema, &g, ema_beta(opts.ema_beta, opts.ema_kimg, n));

        let before = state.nimg;
        state.nimg += n as u64;
        tick_stats.steps += 1;
        tick_stats.images += n as u64;
        let cs = closs.stats.inner();
        tick_stats.critic = Some(match tick_stats.critic.take() {
            Some(s) => s + cs,
            None => cs,
        });
        let gs = gloss.detach().inner();
        tick_stats.generator = Some(match tick_stats.generator.take() {
            Some(s) => s + gs,
            None => gs,
        });
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
                write_stage(&run, &ema, &config, l, state.nimg as f64 / 1000.0)
                    .with_context(|| format!("writing the stage snapshot of level {l} (if a weight is NaN, training diverged; the last checkpoint is intact)"))?;
                state.stages_done.push(l);
                levels_to_keep.push(l); // with the next checkpoint
            }
        }

        // Maintenance once per tick.
        if state.nimg >= next_tick || state.nimg >= total_nimg || state.nimg >= stop_nimg {
            next_tick = (state.nimg / tick_nimg + 1) * tick_nimg;
            state.tick += 1;
            state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
            ticker.tick(&mut tick_stats, &mut state, &phase, &ema, &say)?;
            state.cursor = sampler.cursor;
            state.mirror_rng = sampler.mirror_rng.clone();
            state.adam_g_step = adam_g.step;
            state.adam_d_step = adam_d.step;
            checkpoint::save(
                &run,
                &config,
                &options_json,
                &g,
                &d,
                &ema,
                &adam_g,
                &adam_d,
                &state,
            )?;
            keep_level_checkpoints(&run, &mut levels_to_keep)?;
        }
    }

    state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
    state.cursor = sampler.cursor;
    state.mirror_rng = sampler.mirror_rng.clone();
    state.adam_g_step = adam_g.step;
    state.adam_d_step = adam_d.step;
    if outcome == TrainOutcome::Finished && state.nimg as f64 / 1000.0 >= spec.growth_kimg() {
        write_stage(&run, &ema, &config, top, state.nimg as f64 / 1000.0)?;
        if !state.stages_done.contains(&top) {
            state.stages_done.push(top);
        }
    }
    if tick_stats.steps > 0 {
        // An interrupt mid-tick: check the partial tick's numbers before saving.
        state.tick += 1;
        let phase = schedule(state.nimg as f64 / 1000.0, &spec);
        ticker.tick(&mut tick_stats, &mut state, &phase, &ema, &say)?;
    }
    checkpoint::save(
        &run,
        &config,
        &options_json,
        &g,
        &d,
        &ema,
        &adam_g,
        &adam_d,
        &state,
    )?;
    keep_level_checkpoints(&run, &mut levels_to_keep)?;
    bar.finish_and_clear();
    match outcome {
        TrainOutcome::Finished => say(&format!(
            "Done: {:.1} kimg in {:.0} s. Checkpoint in {}",
            state.nimg as f64 / 1000.0,
            state.train_seconds,
            run.display()
        )),
        TrainOutcome::Interrupted => say(&format!(
            "Interrupted at {:.3} kimg; checkpoint saved. Continue with --resume.",
            state.nimg as f64 / 1000.0
        )),
        TrainOutcome::Paused => say(&format!(
            "Paused at {:.3} kimg of {total_kimg:.1}; checkpoint saved. Continue with --resume.",
            state.nimg as f64 / 1000.0
        )),
    }
    Ok(outcome)
}

/// The once-per-tick maintenance: log line, JSONL metrics, sample grid, and every
/// `--metrics-kimg` the paper's metrics on the held-out split.
struct Ticker<'a> {
    run: &'a Path,
    metrics: std::fs::File,
    grid_latents: Tensor<2>,
    grid_side: usize,
    final_res: usize,
    top_level: usize,
    metrics_kimg: f64,
    metrics_count: usize,
    pack: Pack,
    config: ModelConfig,
}

impl Ticker<'_> {
    /// Checks the tick's numbers, then logs, draws the grid and (when due) measures.
    fn tick(
        &mut self,
        stats: &mut TickStats,
        state: &mut TrainState,
        phase: &Phase,
        ema: &Generator,
        say: &dyn Fn(&str),
    ) -> Result<()> {
        let run = self.run;
        let steps = stats.steps.max(1) as f32;
        let critic: Vec<f32> = stats
            .critic
            .take()
            .map(tensor_to_f32)
            .unwrap_or_else(|| vec![0.0; CRITIC_STATS]);
        let gen_loss = stats
            .generator
            .take()
            .map(tensor_to_f32)
            .map(|v| v[0])
            .unwrap_or(0.0)
            / steps;
        let [loss_d, wdist, penalty, drift] = [
            critic[0] / steps,
            critic[1] / steps,
            critic[2] / steps,
            critic[3] / steps,
        ];
        if [loss_d, wdist, penalty, drift, gen_loss]
            .iter()
            .any(|v| !v.is_finite())
        {
            bail!(
                "training diverged before {:.3} kimg: a loss is NaN or infinite (D {loss_d}, G {gen_loss}, penalty {penalty}); \
                 stopped without saving — the last good checkpoint in {} is intact (try a lower --lr)",
                state.nimg as f64 / 1000.0,
                run.display()
            );
        }
        let secs = stats.started.elapsed().as_secs_f64();
        let img_s = stats.images as f64 / secs.max(1e-9);
        let kimg = state.nimg as f64 / 1000.0;
        say(&format!(
            "tick {:<4} kimg {:<9.3} level {} ({}×{}) alpha {:.3} minibatch {:<4} {:>7.1} img/s {:>8.2} sec/kimg  D {:+.4} G {:+.4} W {:+.4} gp {:.4}",
            state.tick,
            kimg,
            phase.level,
            phase.resolution(),
            phase.resolution(),
            phase.alpha,
            phase.minibatch,
            img_s,
            1000.0 / img_s.max(1e-9),
            loss_d,
            gen_loss,
            wdist,
            penalty
        ));
        let mut line = json!({
            "tick": state.tick, "kimg": kimg, "level": phase.level, "resolution": phase.resolution(), "alpha": phase.alpha,
            "minibatch": phase.minibatch, "img_per_s": img_s, "sec_per_kimg": 1000.0 / img_s.max(1e-9),
            "loss_d": loss_d, "loss_g": gen_loss, "wasserstein": wdist, "penalty": penalty, "drift": drift,
            "train_seconds": state.train_seconds,
        });
        let due = self.metrics_kimg > 0.0
            && (kimg / self.metrics_kimg).floor() as u64 > state.metrics_done;
        if due {
            state.metrics_done = (kimg / self.metrics_kimg).floor() as u64;
            if let Some(m) = self.measure(state, phase, ema, say)? {
                line["metrics"] = m;
            }
        }
        // One write per line, so a reader (or a kill) never sees half of one.
        self.metrics.write_all(format!("{line}\n").as_bytes())?;
        self.metrics.flush()?;
        let fakes = ema.forward(self.grid_latents.clone(), phase.level, phase.alpha); // [g², 3, r, r]
        let picture = grid(&to_rgb_images(fakes), self.grid_side, self.final_res as u32);
        save_png(
            &picture,
            &run.join("grids")
                .join(format!("fakes{:06}.png", kimg.floor() as u64)),
        )?;
        crate::report::write_report(run)?;
        *stats = TickStats::new();
        Ok(())
    }

    /// SWD and MS-SSIM of the EMA generator against the held-out split at the current
    /// resolution; keeps `best.safetensors` when the top level, fully faded in, improves.
    fn measure(
        &mut self,
        state: &mut TrainState,
        phase: &Phase,
        ema: &Generator,
        say: &dyn Fn(&str),
    ) -> Result<Option<serde_json::Value>> {
        let r = phase.resolution();
        let held = self.pack.count(Split::Holdout);
        if r < 16 || held < 2 {
            return Ok(None); // SWD starts at 16×16; without a held-out split there is nothing to compare
        }
        let n = self.metrics_count.min(held);
        let reference = ImageSet {
            resolution: r,
            data: self.pack.read_level(Split::Holdout, r)?,
        }
        .take(n);
        let device = self.grid_latents.device();
        let latent = self.config.latent_size;
        let mut data = Vec::with_capacity(n * r * r * 3);
        for start in (0..n).step_by(64) {
            let k = (n - start).min(64);
            // Fixed seeds far from the grid's, so every evaluation sees the same latents.
            let z = tensor_from_f32(
                latents_for_seeds(1_000_000 + start as u64, k, latent),
                [k, latent],
                &device,
            );
            for img in to_rgb_images(ema.forward(z, phase.level, phase.alpha)) {
                data.extend(img.into_raw());
            }
        }
        let fakes = ImageSet {
            resolution: r,
            data,
        };
        let report = evaluate(&fakes, &reference, 0)?;
        let avg = report.swd["avg"].as_f64().unwrap_or(f64::NAN);
        say(&format!(
            "metrics at {:.1} kimg, {r}×{r}, {n} images: SWD×1e3 avg {avg:.2} ({}), MS-SSIM {:.4} (reals {:.4})",
            state.nimg as f64 / 1000.0,
            report
                .swd
                .iter()
                .filter(|(k, _)| *k != "avg")
                .map(|(k, v)| format!("{k}px {:.2}", v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(", "),
            report.ms_ssim,
            report.ms_ssim_reference
        ));
        if phase.level == self.top_level
            && !phase.fading()
            && state.best_swd.is_none_or(|b| avg < b)
        {
            state.best_swd = Some(avg);
            let kimg = state.nimg as f64 / 1000.0;
            let bytes = snapshot_to_bytes(
                ema,
                &self.config,
                phase.level,
                1.0,
                kimg,
                WeightDtype::F32,
                &[("swd_avg", format!("{avg:.4}"))],
            )?;
            let path = self.run.join("best.safetensors");
            write_synced(&path.with_extension("tmp"), &bytes)?;
            std::fs::rename(path.with_extension("tmp"), &path)?;
            say(&format!("new best SWD {avg:.2}: saved {}", path.display()));
        }
        Ok(Some(serde_json::to_value(&report)?))
    }
}
