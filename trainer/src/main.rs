//! `pggan`: prepare data, train a progressive GAN, generate, export, benchmark.

mod adam;
mod animation;
mod attributes;
mod backend;
mod bench;
mod checkpoint;
mod data;
mod directions;
mod ema;
mod eval;
mod export;
mod fsutil;
mod generate;
#[cfg(all(test, feature = "wgpu"))]
mod gpu_parity;
mod images;
#[cfg(test)]
mod ingest_fuzz;
mod labels;
mod linalg;
mod loader;
mod loss;
mod memory;
mod metrics;
mod options;
mod pack;
mod parity;
mod prepare;
mod report;
mod rgb_fit;
mod schedule;
mod sessions;
mod step;
mod tick;
mod train;
mod unpack;

/// mimalloc keeps freed memory for reuse: a training step allocates and frees many buffers of
/// megabytes, which the system allocator returns to the OS and faults back in every time
/// (10–18% of a step on the 2-core machine, `pggan bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (`mimalloc.h`; `libmimalloc-sys` names
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to give freed memory back to the OS. By default it does so after a
/// second, and every step then faults those megabytes back in as fresh (zeroed) pages:
/// 44,000–60,000 page faults and 4–12% of the time of `pggan bench --resolution 32
/// --min-resolution 16 --steps 6`. A training step's working set is the same every step, so
/// keeping it costs nothing beyond the peak. Runs first in `main`, before any other thread.
fn keep_freed_memory() {
    // SAFETY: sets a plain option; mimalloc's option setters are not thread-safe, and no other
    // thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::backend::BackendKind;

/// `pggan attributes …`.
#[derive(Subcommand)]
enum AttributesCommand {
    /// Train a small CNN on a labelled pack's training images (age regression, gender
    /// classification) and measure it on its held-out images beside the trivial baselines.
    Train(attributes::AttributeOptions),
}

/// Progressive Growing of GANs (Karras et al., 2018) in Rust on Burn.
#[derive(Parser)]
#[command(name = "pggan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn a folder or .tar of images into a dataset pack at every power-of-two resolution.
    Prepare {
        /// Folder or .tar of images.
        input: PathBuf,
        /// Pack file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        options: prepare::PrepareOptions,
    },
    /// Train (or --resume) a run.
    Train(Box<options::TrainArgs>),
    /// Write reproducible images: image i from seed S + i.
    Generate {
        /// Exported model folder, run folder, or generator .safetensors.
        #[arg(long)]
        model: PathBuf,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Number of images.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Folder (one PNG per seed) or FILE.png (a grid when --count > 1).
        #[arg(long)]
        out: PathBuf,
        /// Scale a grid's cells (nearest) to this many pixels.
        #[arg(long)]
        cell: Option<u32>,
        /// One picture of the growth stages of an exported model: a row per stage, a column per seed.
        #[arg(long)]
        stages: bool,
        /// Edit the faces along the model's directions (`directions.json` in its folder, made by
        /// `pggan directions`): NAME=AMOUNT,… in standard deviations, like `age=+2,gender=-1`.
        #[arg(long, conflicts_with = "stages")]
        edit: Option<String>,
        /// The face of a page link, as the page draws it: the page's address or what follows its
        /// `#` (`seed=5&psi=0.7&edit=age:2.5`, or `z=…`), its truncation and edits included.
        #[arg(long, conflicts_with_all = ["seed", "count", "stages", "edit", "sweep", "truncation", "cell"])]
        link: Option<String>,
        /// One picture of the faces along a direction: a row per amount (−3, −1.5, 0, 1.5, 3
        /// standard deviations), a column per seed.
        #[arg(long, conflicts_with_all = ["stages", "edit"])]
        sweep: Option<String>,
        /// The truncation trick, ψ from 0 to 1: faces pulled towards the average face by this
        /// much (1: none, the default; lower: more typical faces, less variety). The page's
        /// slider and its links' `&psi=` are the same number.
        #[arg(long, default_value_t = 1.0)]
        truncation: f64,
        /// Backend.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendKind,
    },
    /// Export a run's EMA generator and growth stages for the web (f16 safetensors + manifest).
    Export {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Real images to evaluate the export against (a pack: its held-out split; the floor
        /// compares its train split with the same held-out images). Needs --eval-count.
        #[arg(long, requires = "eval_count")]
        reference: Option<PathBuf>,
        /// Images per side for that evaluation (SWD per level and MS-SSIM, written into the
        /// manifest's `training.evaluation`).
        #[arg(long, requires = "reference")]
        eval_count: Option<usize>,
        /// Export the generator as it stood at the end of this level's stabilisation (its stage
        /// snapshot) instead of as it stands now.
        #[arg(long)]
        stage: Option<usize>,
        /// Which of the snapshots kept through each fade-in to ship, by nominal α (the trainer
        /// keeps 0, 0.25, 0.5, 0.75 and 1): the page replays a fade from them.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0,0.25,0.5,0.75,1",
            conflicts_with = "no_fades"
        )]
        fade_alphas: Vec<f64>,
        /// Ship no fade snapshots.
        #[arg(long)]
        no_fades: bool,
        /// Also fit the face-edit directions with this attribute predictor (`pggan attributes
        /// train --out`), as `pggan directions` does with its defaults.
        #[arg(long)]
        attributes: Option<PathBuf>,
    },
    /// Write a run's checkpoint as parts of at most --max-file-mib each (half-precision weights,
    /// Adam's moments only with --keep-optimizer), with options.json, metrics.jsonl and the stage
    /// and fade snapshots: a small run folder to carry between machines and continue with `train
    /// --resume`.
    Compact {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Storage type of the weights.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: StoreDtype,
        /// Keep Adam's moments (f32); without them Adam restarts on resume.
        #[arg(long)]
        keep_optimizer: bool,
        /// Largest file to write, in MiB.
        #[arg(long, default_value_t = 16.0)]
        max_file_mib: f64,
    },
    /// One split of a pack, at one resolution, as a tar of JPEG (or PNG) files: a small file to
    /// carry the images to another machine, where `pggan prepare --padded keep` packs them again.
    Unpack(unpack::UnpackOptions),
    /// Directions for face edits in an exported model's latent space: age and gender fitted to
    /// an attribute predictor's readings of generated faces (InterFaceGAN, each independent of
    /// the other) and unsupervised ones (SeFa), each measured on fresh faces; written as
    /// `directions.json` in the model's folder.
    Directions {
        /// Exported model folder.
        #[arg(long)]
        model: PathBuf,
        /// The predictor's folder (`pggan attributes train --out`).
        #[arg(long)]
        attributes: PathBuf,
        /// Generated faces to fit to.
        #[arg(long, default_value_t = 10000)]
        count: usize,
        /// Fresh faces to measure each direction on.
        #[arg(long, default_value_t = 200)]
        measure: usize,
        /// Unsupervised (SeFa) directions to add.
        #[arg(long, default_value_t = 3)]
        sefa: usize,
    },
    /// An age and gender predictor for face edits, from a labelled pack.
    Attributes {
        #[command(subcommand)]
        command: AttributesCommand,
    },
    /// The paper's metrics: multi-scale SWD and MS-SSIM against real images.
    Eval {
        /// Exported model folder, run folder or generator file to sample from (seeds --seed…).
        #[arg(long, conflicts_with = "images")]
        model: Option<PathBuf>,
        /// Images to evaluate instead of a model: a folder, a .tar, or a pack (its train split).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Real images: a folder, a .tar, or a pack (its held-out split when it has one).
        #[arg(long)]
        reference: PathBuf,
        /// Images per side.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Resolution to compare at (images of another size are box-filtered to it).
        #[arg(long, default_value_t = 64)]
        resolution: usize,
        /// First seed of the generated images, and seed of the SWD's random draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The run's sample grids over training as an animation (GIF, or PNG frames in a folder).
    Timelapse {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// FILE.gif or a folder.
        #[arg(long)]
        out: PathBuf,
        /// Frames per second.
        #[arg(long, default_value_t = 8.0)]
        fps: f64,
        /// Longest side of a frame in pixels (larger grids are scaled down).
        #[arg(long, default_value_t = 512)]
        max_side: u32,
    },
    /// The paper's latent-space walk (or a two-face blend with --to) as an animation.
    Interpolate {
        /// Exported model folder, run folder or generator file.
        #[arg(long)]
        model: PathBuf,
        /// Seed of the walk (or the first face).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Blend from --seed to this seed instead of walking.
        #[arg(long)]
        to: Option<u64>,
        /// Length in seconds.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Frames per second.
        #[arg(long, default_value_t = 15.0)]
        fps: f64,
        /// Gaussian blur of the walk over time, σ in frames.
        #[arg(long, default_value_t = 6.0)]
        sigma_frames: f64,
        /// Nearest-neighbour upscaling of each frame.
        #[arg(long, default_value_t = 2)]
        scale: u32,
        /// FILE.gif or a folder of PNG frames.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure training img/s per resolution.
    Bench(bench::BenchOptions),
}

/// Storage precision of `pggan compact`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StoreDtype {
    /// bfloat16: f32's range, 8 bits of mantissa.
    Bf16,
    /// IEEE half: 11 bits of mantissa, a narrow range.
    F16,
    /// Exact.
    F32,
}

fn main() {
    keep_freed_memory();
    backend::private_runtime_dir();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Directions {
            model,
            attributes,
            count,
            measure,
            sefa,
        } => {
            anyhow::ensure!(
                model.join("manifest.json").is_file(),
                "--model {} is not an exported model folder (no manifest.json)",
                model.display()
            );
            anyhow::ensure!(
                count >= 100 && measure >= 10,
                "--count must be at least 100 and --measure at least 10"
            );
            let device = BackendKind::Flex.device()?;
            let loaded = loader::load_model(&model, &device)?;
            let predictor = attributes::AttributePredictor::load(&attributes, &device)?;
            let d = directions::fit(&loaded, &predictor, count, measure, sefa, &|l| {
                eprintln!("{l}")
            })?;
            directions::save(&model, &d)?;
            for x in &d.directions {
                println!(
                    "{:<8} {:<12} {:+6.2} years, {:+.3} P(female) per unit; monotonic for {:.0}% of faces; 0.5 units move pixels by {:.1}/255",
                    x.name,
                    x.kind,
                    x.years_per_unit,
                    x.female_per_unit,
                    100.0 * x.monotonic,
                    x.pixels_per_half_unit
                );
            }
            println!("wrote {}", model.join("directions.json").display());
        }
        Command::Attributes {
            command: AttributesCommand::Train(options),
        } => {
            let r = attributes::train(&options, &|line| eprintln!("{line}"))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!(
                "held out ({} images): age within {:.1} years on average (always the mean age: {:.1}), gender {:.1}% right (always the majority: {:.1}%); written to {}",
                r.holdout_images,
                r.age_mae_years,
                r.age_mae_baseline_years,
                100.0 * r.gender_accuracy,
                100.0 * r.gender_accuracy_baseline,
                options.out.display()
            );
        }
        Command::Unpack(options) => {
            let report = unpack::unpack(&options)?;
            println!(
                "wrote {out}: {} images at {r}×{r}, {:.1} MB; pack them again with: pggan prepare {out} --out PACK --resolution {r} --padded keep",
                report.images,
                report.bytes as f64 / 1e6,
                out = report.out.display(),
                r = report.resolution
            );
        }
        Command::Prepare {
            input,
            out,
            options,
        } => {
            let report = prepare::prepare(&input, &out, &options)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            println!(
                "wrote {} ({} train, {} held out) at {r}×{r} and below",
                out.display(),
                report.train,
                report.holdout,
                r = options.resolution
            );
            if let Some(peak) = memory::peak_resident_mib() {
                println!("peak memory {peak:.0} MiB");
            }
        }
        Command::Train(args) => {
            let options::TrainArgs { mut session, run } = *args;
            let named = matches
                .subcommand_matches("train")
                .context("the train command's arguments")?;
            let given_on_cli = |id: &str| named.value_source(id) == Some(ValueSource::CommandLine);
            // The run records the backend it really used.
            session.backend = session.backend.resolve();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || {
                if flag.swap(true, Ordering::SeqCst) {
                    std::process::exit(130); // second Ctrl-C: leave now
                }
                eprintln!(
                    "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)"
                );
            })
            .context("installing the Ctrl-C handler")?;
            let outcome = train::train(&session, &run, &given_on_cli, stop)?;
            if outcome == train::TrainOutcome::Interrupted {
                std::process::exit(130);
            }
        }
        Command::Generate {
            model,
            seed,
            count,
            out,
            cell,
            stages,
            edit,
            link,
            sweep,
            truncation,
            backend,
        } => {
            anyhow::ensure!(
                cell.is_none_or(|c| (1..=4096).contains(&c)),
                "--cell must be 1–4096 pixels"
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&truncation),
                "--truncation must be a number from 0 to 1 (1: none), not {truncation}"
            );
            let device = backend.device()?;
            let source = generate::Source {
                model: &model,
                truncation,
                device: &device,
            };
            if let Some(link) = link {
                let file = generate::generate_link(&source, &link, &out)?;
                println!("wrote the linked face to {}", file.display());
            } else if let Some(name) = sweep {
                generate::generate_sweep(&source, seed, count, &name, &out, cell)?;
                println!(
                    "wrote seeds {seed}–{} along “{name}” (−3 … +3) to {}",
                    seed + count as u64 - 1,
                    out.display()
                );
            } else if stages {
                generate::generate_stages(&source, seed, count, &out, cell)?;
                println!(
                    "wrote the growth stages of seeds {seed}–{} to {}",
                    seed + count as u64 - 1,
                    out.display()
                );
            } else {
                let files = generate::generate(&source, seed, count, &out, cell, edit.as_deref())?;
                println!("wrote {} image file(s) to {}", files.len(), out.display());
            }
        }
        Command::Export {
            run,
            out,
            reference,
            eval_count,
            stage,
            fade_alphas,
            no_fades,
            attributes,
        } => {
            let device = BackendKind::Flex.device()?;
            let fade_alphas = if no_fades { Vec::new() } else { fade_alphas };
            let m = export::export(&run, &out, stage, &fade_alphas, &device)?;
            println!(
                "exported {}×{} generator (level {}, alpha {}), {} stage(s) and {} fade snapshot(s) to {}",
                m.resolution,
                m.resolution,
                m.level,
                m.alpha,
                m.stages.len(),
                m.fades.len(),
                out.display()
            );
            if let (Some(reference), Some(count)) = (reference, eval_count) {
                let e = export::evaluate_export(&out, &reference, count, &device)?;
                println!("{}", serde_json::to_string_pretty(&e)?);
            }
            if let Some(attributes) = attributes {
                let loaded = loader::load_model(&out, &device)?;
                let predictor = attributes::AttributePredictor::load(&attributes, &device)?;
                let d =
                    directions::fit(&loaded, &predictor, 10_000, 200, 3, &|l| eprintln!("{l}"))?;
                directions::save(&out, &d)?;
                println!(
                    "fitted {} edit directions into {}",
                    d.directions.len(),
                    out.join("directions.json").display()
                );
            }
        }
        Command::Compact {
            run,
            out,
            dtype,
            keep_optimizer,
            max_file_mib,
        } => {
            anyhow::ensure!(
                max_file_mib >= 0.5 && max_file_mib.is_finite(),
                "--max-file-mib must be at least 0.5"
            );
            let dtype = match dtype {
                StoreDtype::Bf16 => pggan_model::weights::WeightDtype::BF16,
                StoreDtype::F16 => pggan_model::weights::WeightDtype::F16,
                StoreDtype::F32 => pggan_model::weights::WeightDtype::F32,
            };
            let report = checkpoint::compact(
                &run,
                &out,
                dtype,
                keep_optimizer,
                (max_file_mib * (1 << 20) as f64) as u64,
            )?;
            for (path, bytes) in &report.files {
                println!(
                    "{:>10.2} MiB  {}",
                    *bytes as f64 / (1 << 20) as f64,
                    path.display()
                );
            }
            println!(
                "continue with: pggan train --data PACK --run {} --resume{}",
                out.display(),
                if report.optimizer_kept {
                    ""
                } else {
                    "   (Adam restarts: its moments were not kept)"
                }
            );
        }
        Command::Eval {
            model,
            images,
            reference,
            count,
            resolution,
            seed,
            json,
        } => {
            anyhow::ensure!(
                resolution >= 16 && resolution.is_power_of_two(),
                "--resolution must be a power of two ≥ 16 (SWD's coarsest level is 16×16)"
            );
            anyhow::ensure!(count >= 2, "--count must be at least 2");
            let device = BackendKind::Flex.device()?;
            let (set, reference) = eval::load_sides(
                model.as_deref(),
                images.as_deref(),
                &reference,
                count,
                resolution,
                seed,
                &device,
            )?;
            let report = eval::evaluate(&set, &reference, seed)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                eval::print_table(&report);
            }
        }
        Command::Timelapse {
            run,
            out,
            fps,
            max_side,
        } => {
            let frames = animation::timelapse_frames(&run, max_side)?;
            animation::write_frames(&frames, fps, &out)?;
            println!("wrote {} frames to {}", frames.len(), out.display());
        }
        Command::Interpolate {
            model,
            seed,
            to,
            seconds,
            fps,
            sigma_frames,
            scale,
            out,
        } => {
            anyhow::ensure!(
                seconds > 0.0 && fps > 0.0 && seconds * fps <= 10_000.0,
                "--seconds × --fps must give 1 to 10,000 frames"
            );
            anyhow::ensure!((1..=16).contains(&scale), "--scale must be 1 to 16");
            let device = BackendKind::Flex.device()?;
            let frames_n = ((seconds * fps).round() as usize).max(1);
            let model = loader::load_model(&model, &device)?;
            let latent = model.config.latent_size;
            let latents =
                animation::interpolation_latents(seed, to, frames_n, latent, sigma_frames);
            let frames = animation::render(&model, &latents, scale);
            animation::write_frames(&frames, fps, &out)?;
            println!("wrote {} frames to {}", frames.len(), out.display());
        }
        Command::Bench(options) => {
            bench::bench(&options)?;
        }
    }
    Ok(())
}
