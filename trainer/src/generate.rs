//! `pggan generate`: reproducible images from seeds.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use pggan_model::latent::latents_for_seeds;
use pggan_model::link::LinkTarget;
use pggan_model::weights::generator_from_bytes;

use crate::images::{grid, save_png};
use crate::loader::{LoadedModel, draw, load_model, read_manifest};

/// What `pggan generate` draws from, and how.
pub struct Source<'a> {
    /// Exported model folder, run folder, or generator file.
    pub model: &'a Path,
    /// Truncation ψ (1: none).
    pub truncation: f64,
    /// Where to run the generator.
    pub device: &'a Device,
}

impl Source<'_> {
    fn load(&self) -> Result<LoadedModel> {
        let mut loaded = load_model(self.model, self.device)?;
        loaded.truncation = self.truncation;
        Ok(loaded)
    }
}

/// Writes images for seeds `seed … seed + count − 1`: one PNG per seed in a folder, or one PNG
/// (a grid when `count > 1`, its cells scaled (nearest) to `cell` pixels when given) when `out`
/// ends in `.png`. Returns the files written.
pub fn generate(
    source: &Source,
    seed: u64,
    count: usize,
    out: &Path,
    cell: Option<u32>,
    edit: Option<&str>,
) -> Result<Vec<std::path::PathBuf>> {
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    let model = source.model;
    let loaded = source.load()?;
    let l = loaded.config.latent_size;
    let mut latents = latents_for_seeds(seed, count, l);
    if let Some(edit) = edit {
        latents = edited(model, latents, l, &crate::directions::parse_edits(edit)?)?;
    }
    write_images(&loaded, &latents, seed, out, cell)
}

/// `latents` (`[n, l]`) moved along the named directions of the model's `directions.json` — the
/// same numbers as the page's sliders: `z + Σ amount·direction`, onto the sphere.
fn edited(model: &Path, latents: Vec<f32>, l: usize, edits: &[(String, f64)]) -> Result<Vec<f32>> {
    let directions = crate::directions::Directions::load(model)?;
    anyhow::ensure!(
        directions.latent_size == l,
        "{}/directions.json is for latents of {}, the model's are {l}",
        model.display(),
        directions.latent_size
    );
    let pairs = edits
        .iter()
        .map(|(name, amount)| Ok((directions.get(name)?, *amount)))
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::directions::apply_edits(&latents, l, &pairs))
}

/// The face a page link names (`#seed=5&psi=0.7&edit=age:2.5`, or `#z=…`), drawn as the page
/// draws it — its truncation and edits included — into `out` (a `.png` file, or a folder that
/// gets `face.png`). Returns the file written.
pub fn generate_link(source: &Source, link: &str, out: &Path) -> Result<std::path::PathBuf> {
    let mut loaded = source.load()?;
    let l = loaded.config.latent_size;
    // The whole address of the page, or only what follows its `#`.
    let link = link.rsplit_once('#').map_or(link, |(_, hash)| hash);
    let link =
        pggan_model::link::parse_full_link(link, l).map_err(|e| anyhow::anyhow!("--link: {e}"))?;
    let latent = match link.target {
        LinkTarget::Seed(seed) => latents_for_seeds(seed, 1, l),
        LinkTarget::Latent(z) => z,
        LinkTarget::Empty => bail!("--link names no face (give #seed=… or #z=…)"),
    };
    if let Some(psi) = link.truncation {
        loaded.truncation = psi;
    }
    let latent = if link.edits.is_empty() {
        latent
    } else {
        edited(source.model, latent, l, &link.edits)?
    };
    let file = if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        out.to_path_buf()
    } else {
        out.join("face.png")
    };
    write_images(&loaded, &latent, 0, &file, None)?;
    Ok(file)
}

/// Draws `latents` and writes them: one PNG (a grid of several, cells `cell` pixels) when `out`
/// ends in `.png`, else a folder of `seedNNNNNN.png` numbered from `first_seed`.
fn write_images(
    loaded: &LoadedModel,
    latents: &[f32],
    first_seed: u64,
    out: &Path,
    cell: Option<u32>,
) -> Result<Vec<std::path::PathBuf>> {
    let mut images = loaded.images(latents);
    let count = images.len();
    let mut written = Vec::new();
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let picture = if count == 1 {
            images.remove(0)
        } else {
            let cols = (count as f64).sqrt().ceil() as usize;
            grid(&images, cols, cell.unwrap_or(images[0].width()))
        };
        save_png(&picture, out)?;
        written.push(out.to_path_buf());
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (i, img) in images.iter().enumerate() {
            let path = out.join(format!("seed{:06}.png", first_seed + i as u64));
            save_png(img, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Faces of seeds `seed … seed + count − 1` edited along the direction `name` of the model's
/// `directions.json` by −3, −1.5, 0, 1.5 and 3 units: one picture, a row per amount.
pub fn generate_sweep(
    source: &Source,
    seed: u64,
    count: usize,
    name: &str,
    out: &Path,
    cell: Option<u32>,
) -> Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&count),
        "--count must be 1–64 for a sweep"
    );
    let model = source.model;
    let loaded = source.load()?;
    let l = loaded.config.latent_size;
    let directions = crate::directions::Directions::load(model)?;
    let direction = directions.get(name)?;
    let latents = latents_for_seeds(seed, count, l);
    let mut images = Vec::new();
    for amount in [-3.0, -1.5, 0.0, 1.5, 3.0] {
        let edited = crate::directions::apply_edits(&latents, l, &[(direction, amount)]);
        images.extend(loaded.images(&edited));
    }
    let picture = grid(&images, count, cell.unwrap_or(images[0].width()));
    save_png(&picture, out)
}

/// The growth stages of an exported model as one picture: a row per stage (4×4, 8×8, …, then the
/// final generator when it is not the last stage), a column per seed `seed … seed + count − 1`,
/// every cell scaled (nearest) to `cell` pixels (default: the final resolution).
pub fn generate_stages(
    source: &Source,
    seed: u64,
    count: usize,
    out: &Path,
    cell: Option<u32>,
) -> Result<()> {
    anyhow::ensure!(count >= 1, "--count must be at least 1");
    let (model, device) = (source.model, source.device);
    anyhow::ensure!(
        out.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png")),
        "--stages writes one picture: give --out FILE.png"
    );
    let Some(manifest) = read_manifest(model)? else {
        bail!(
            "--stages needs an exported model folder with a manifest.json (make one with `pggan export`); {} has none",
            model.display()
        );
    };
    // (file, level, alpha) of every row.
    let mut rows: Vec<(String, usize, f64)> = manifest
        .stages
        .iter()
        .map(|s| (s.file.clone(), s.level, 1.0))
        .collect();
    if rows
        .last()
        .is_none_or(|(file, _, _)| *file != manifest.generator)
    {
        rows.push((manifest.generator.clone(), manifest.level, manifest.alpha));
    }
    let z = latents_for_seeds(seed, count, manifest.latent_size);
    let mut images = Vec::with_capacity(rows.len() * count);
    for (file, level, alpha) in &rows {
        let bytes = std::fs::read(model.join(file))
            .with_context(|| format!("reading {}", model.join(file).display()))?;
        let (generator, _, _) =
            generator_from_bytes(&bytes, device).with_context(|| format!("loading {file}"))?;
        images.extend(draw(&generator, *level, *alpha, source.truncation, &z));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    save_png(
        &grid(&images, count, cell.unwrap_or(manifest.resolution as u32)),
        out,
    )
}
