//! `pggan attributes train`: a small CNN that reads a face's age and gender, trained in Burn on a
//! pack's labelled training images and measured on its held-out ones beside the trivial
//! baselines. It scores generated faces for the latent directions of face edits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{leaky_relu, softplus};
use burn::tensor::{Device, Tensor};
use pggan_model::SplitMix64;
use pggan_model::layers::downsample2x;
use pggan_model::tensor::{tensor_from_f32, tensor_to_f32};
use pggan_model::weights::{WeightDtype, apply_tensors, collect_tensors, decode, encode};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::pack::{Pack, Split};

/// Ages are predicted in units of this many years (keeps the regression's scale near 1).
const AGE_UNIT: f64 = 50.0;

/// Options of `pggan attributes train`.
#[derive(Debug, Clone, clap::Args)]
pub struct AttributeOptions {
    /// A pack with labels (made by `pggan prepare` from labelled file names).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder for the predictor (`attributes.safetensors`, `attributes.json`).
    #[arg(long)]
    pub out: PathBuf,
    /// Resolution the predictor reads (a level of the pack).
    #[arg(long, default_value_t = 32)]
    pub resolution: usize,
    /// Passes over the labelled training images.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    pub minibatch: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initial weights and the order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The predictor's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeConfig {
    /// Input resolution (a power of two ≥ 8).
    pub resolution: usize,
    /// Channels of the convolutions, one stage per entry, each halving the resolution.
    pub channels: Vec<usize>,
}

/// Age (regression) and gender (a logit) from a face: 3×3 convolutions with leaky ReLU, each
/// stage followed by a 2× average pool, a global average, one dense layer.
#[derive(Module, Debug)]
pub struct AttributeNet {
    convs: Vec<Conv2d>,
    head: Linear,
}

impl AttributeNet {
    /// A new predictor on `device`.
    pub fn new(config: &AttributeConfig, device: &Device) -> Self {
        let mut convs = Vec::new();
        let mut c_in = 3;
        for &c in &config.channels {
            convs.push(
                Conv2dConfig::new([c_in, c], [3, 3])
                    .with_padding(PaddingConfig2d::Same)
                    .init(device),
            );
            c_in = c;
        }
        AttributeNet {
            convs,
            head: LinearConfig::new(c_in, 2).init(device),
        }
    }

    /// `[n, 2]`: age in units of [`AGE_UNIT`] years, and the logit of gender 1 (female), for
    /// faces `x` (`[n, 3, r, r]` in `[-1, 1]`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for conv in &self.convs {
            x = downsample2x(leaky_relu(conv.forward(x), 0.2)); // [n, c, r/2, r/2]
        }
        let [n, c, ..] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]); // [n, c]
        self.head.forward(pooled) // [n, 2]
    }
}

/// What the predictor reads for a set of faces: ages in years and P(gender 1).
pub struct Predictions {
    /// Predicted ages in years.
    pub age: Vec<f64>,
    /// Predicted probability of gender 1 (female).
    pub female: Vec<f64>,
}

/// A trained predictor, ready to score faces.
pub struct AttributePredictor {
    /// Its shape.
    pub config: AttributeConfig,
    net: AttributeNet,
    device: Device,
}

impl AttributePredictor {
    /// Loads `dir/attributes.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("attributes.safetensors");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (tensors, meta) =
            decode(&bytes).with_context(|| format!("reading {}", path.display()))?;
        let config: AttributeConfig = meta
            .get("config")
            .and_then(|c| serde_json::from_str(c).ok())
            .with_context(|| format!("{} has no predictor config", path.display()))?;
        let net = apply_tensors(AttributeNet::new(&config, device), tensors)
            .with_context(|| format!("loading {}", path.display()))?;
        Ok(Self {
            config,
            net,
            device: device.clone(),
        })
    }

    /// Scores faces given as `[n, 3, r, r]` values in `[-1, 1]` at any resolution ≥ the
    /// predictor's (box-filtered down to it), in batches.
    pub fn predict(&self, faces: Tensor<4>) -> Predictions {
        let mut x = faces;
        while x.dims()[2] > self.config.resolution {
            x = downsample2x(x);
        }
        let out = tensor_to_f32(self.net.forward(x.to_device(&self.device))); // [n, 2]
        Predictions {
            age: out.chunks(2).map(|p| p[0] as f64 * AGE_UNIT).collect(),
            female: out
                .chunks(2)
                .map(|p| 1.0 / (1.0 + (-(p[1] as f64)).exp()))
                .collect(),
        }
    }
}

/// The held-out figures of a trained predictor beside the trivial baselines.
#[derive(Debug, Clone, Serialize)]
pub struct AttributeReport {
    /// Labelled images trained on.
    pub train_images: usize,
    /// Labelled held-out images measured on.
    pub holdout_images: usize,
    /// Mean absolute error of the age, in years.
    pub age_mae_years: f64,
    /// The same when always predicting the training images' mean age.
    pub age_mae_baseline_years: f64,
    /// Fraction of genders right.
    pub gender_accuracy: f64,
    /// The same when always predicting the training images' majority gender.
    pub gender_accuracy_baseline: f64,
    /// Seconds of training.
    pub train_seconds: f64,
}

/// A split's images at `r` with both an age and a gender: `[3, r, r]` values in `[-1, 1]`
/// each, and the labels.
fn labelled(pack: &Pack, split: Split, r: usize) -> Result<(Vec<f32>, Vec<f64>, Vec<f64>)> {
    let Some(labels) = pack.labels(split) else {
        bail!(
            "{} has no labels: make it with `pggan prepare` from files named like UTKFace's (`age_gender_race_date.jpg`)",
            pack.path.display()
        );
    };
    let level = pack.level(split, r)?;
    let mut reader = pack.reader()?;
    let mut image = vec![0u8; r * r * 3];
    let (mut pixels, mut ages, mut genders) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pack.count(split) {
        let l = labels.get(i);
        let (Some(age), Some(gender)) = (l.age, l.gender) else {
            continue;
        };
        reader.read_image(level, i, &mut image)?; // [r, r, 3]
        let at = pixels.len();
        pixels.resize(at + 3 * r * r, 0.0);
        crate::data::to_planes(&image, r, false, &mut pixels[at..]); // [3, r, r]
        ages.push(age as f64);
        genders.push(gender as f64);
    }
    Ok((pixels, ages, genders))
}

/// Trains a predictor on `o.data`'s labelled training images, measures it on the held-out ones,
/// and writes it to `o.out`.
pub fn train(o: &AttributeOptions, say: &dyn Fn(&str)) -> Result<AttributeReport> {
    let pack = Pack::open(&o.data)?;
    let r = o.resolution;
    if r < 8 || !r.is_power_of_two() {
        bail!("--resolution {r} is not a power of two ≥ 8");
    }
    let (pixels, ages, genders) = labelled(&pack, Split::Train, r)?;
    let (hold_pixels, hold_ages, hold_genders) = labelled(&pack, Split::Holdout, r)?;
    let n = ages.len();
    if n < o.minibatch || hold_ages.is_empty() {
        bail!(
            "{} has {n} labelled training and {} labelled held-out images: too few to train and measure a predictor (minibatch {})",
            o.data.display(),
            hold_ages.len(),
            o.minibatch
        );
    }
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    let stages = (r.trailing_zeros() as usize).saturating_sub(2).min(4);
    let config = AttributeConfig {
        resolution: r,
        channels: [16, 32, 64, 128][..stages].to_vec(),
    };
    burn::tensor::Device::seed(&device, o.seed);
    let mut net = AttributeNet::new(&config, &device);
    let mut optim = AdamConfig::new().init();
    let size = 3 * r * r;
    let started = std::time::Instant::now();
    let mut rng = SplitMix64::derive(o.seed, "attributes");
    let mut order: Vec<usize> = (0..n).collect();
    for epoch in 0..o.epochs {
        rng.shuffle(&mut order);
        let mut total = 0.0;
        let steps = n / o.minibatch;
        for step in 0..steps {
            let batch = &order[step * o.minibatch..(step + 1) * o.minibatch];
            let mut x = Vec::with_capacity(batch.len() * size);
            for &i in batch {
                let img = &pixels[i * size..(i + 1) * size]; // [3, r, r]
                if rng.below(2) == 1 {
                    // Mirrored: a face's age and gender do not change.
                    for row in img.chunks(r) {
                        x.extend(row.iter().rev());
                    }
                } else {
                    x.extend_from_slice(img);
                }
            }
            let x = tensor_from_f32(x, [batch.len(), 3, r, r], &device);
            let age: Vec<f32> = batch.iter().map(|&i| (ages[i] / AGE_UNIT) as f32).collect();
            let female: Vec<f32> = batch.iter().map(|&i| genders[i] as f32).collect();
            let age = tensor_from_f32(age, [batch.len()], &device);
            let female = tensor_from_f32(female, [batch.len()], &device);
            let out = net.forward(x); // [n, 2]
            let predicted_age = out.clone().narrow(1, 0, 1).reshape([batch.len()]);
            let logit = out.narrow(1, 1, 1).reshape([batch.len()]);
            // Squared error on age (in 50-year units), and the logistic loss on gender.
            let loss = (predicted_age - age).square().mean()
                + (softplus(logit.clone(), 1.0) - logit * female).mean();
            total += tensor_to_f32(loss.clone().detach())[0] as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(o.lr, net, grads);
        }
        say(&format!(
            "epoch {}/{}: loss {:.4}",
            epoch + 1,
            o.epochs,
            total / steps.max(1) as f64
        ));
    }
    let train_seconds = started.elapsed().as_secs_f64();

    // Written, then read back and measured on the held-out images as any later use reads it.
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let meta = [("config".to_string(), serde_json::to_string(&config)?)].into();
    write_atomic(
        &o.out.join("attributes.safetensors"),
        &encode(&collect_tensors(&net.valid()), WeightDtype::F32, &meta)?,
    )?;
    let predictor = AttributePredictor::load(&o.out, &plain)?;
    let m = hold_ages.len();
    let (mut age_err, mut right) = (0.0, 0usize);
    for first in (0..m).step_by(256) {
        let k = 256.min(m - first);
        let x = tensor_from_f32(
            hold_pixels[first * size..(first + k) * size].to_vec(),
            [k, 3, r, r],
            &plain,
        );
        let p = predictor.predict(x);
        for j in 0..k {
            age_err += (p.age[j] - hold_ages[first + j]).abs();
            right += ((p.female[j] >= 0.5) == (hold_genders[first + j] >= 0.5)) as usize;
        }
    }
    let mean_age = ages.iter().sum::<f64>() / n as f64;
    let majority = (genders.iter().sum::<f64>() / n as f64 >= 0.5) as u8 as f64;
    let report = AttributeReport {
        train_images: n,
        holdout_images: m,
        age_mae_years: age_err / m as f64,
        age_mae_baseline_years: hold_ages.iter().map(|a| (a - mean_age).abs()).sum::<f64>()
            / m as f64,
        gender_accuracy: right as f64 / m as f64,
        gender_accuracy_baseline: hold_genders.iter().filter(|&&g| g == majority).count() as f64
            / m as f64,
        train_seconds,
    };

    write_atomic(
        &o.out.join("attributes.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "data": o.data.file_name().map(|n| n.to_string_lossy().into_owned()),
            "config": config,
            "epochs": o.epochs,
            "minibatch": o.minibatch,
            "lr": o.lr,
            "seed": o.seed,
            "report": report,
        }))?
        .as_bytes(),
    )?;
    Ok(report)
}
