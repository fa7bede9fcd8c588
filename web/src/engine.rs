//! The generator on a Burn device: WebGPU when the browser has an adapter, else the `flex` CPU
//! backend; the final generator at once, the growth stages when the page asks for them; images
//! returned as RGBA bytes.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuBackend;
use pggan_model::manifest::Manifest;
use pggan_model::tensor::tensor_from_f32;
use pggan_model::weights::generator_from_bytes;
use pggan_model::{Generator, ModelConfig};
use wasm_bindgen::JsCast;

/// Which backend the page asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackendChoice {
    /// WebGPU when available, else CPU.
    Auto,
    /// The CPU fallback, even where WebGPU exists.
    Cpu,
}

impl BackendChoice {
    /// `"cpu"` forces the CPU; anything else is automatic.
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("cpu") {
            Self::Cpu
        } else {
            Self::Auto
        }
    }
}

/// A device and what to tell the visitor about it.
pub struct ChosenDevice {
    /// The Burn device.
    pub device: Device,
    /// `"webgpu"` or `"cpu"`.
    pub backend: &'static str,
    /// A one-line notice when the page fell back to the CPU.
    pub notice: Option<String>,
}

thread_local! {
    // The WebGPU runtime can be initialised once per worker; keep the device.
    static WEBGPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) };
}

fn browser_has_webgpu() -> bool {
    let navigator = js_sys::global()
        .unchecked_into::<web_sys::WorkerGlobalScope>()
        .navigator();
    js_sys::Reflect::get(&navigator, &"gpu".into())
        .map(|g| !g.is_undefined() && !g.is_null())
        .unwrap_or(false)
}

/// Picks the device: WebGPU first (unless `choice` is CPU), the CPU when WebGPU is missing or
/// fails to start.
pub async fn choose_device(choice: BackendChoice) -> ChosenDevice {
    let cpu = |notice: Option<String>| ChosenDevice {
        device: Device::flex(),
        backend: "cpu",
        notice,
    };
    if choice == BackendChoice::Cpu {
        return cpu(Some(
            "Running on the CPU, as the link asked (?backend=cpu).".into(),
        ));
    }
    if !browser_has_webgpu() {
        return cpu(Some(
            "This browser has no WebGPU; running on the CPU (slower).".into(),
        ));
    }
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return ChosenDevice {
            device,
            backend: "webgpu",
            notice: None,
        };
    }
    match Device::wgpu_options()
        .graphics_api(WgpuBackend::WebGpu)
        .init_async()
        .await
    {
        Ok(device) => {
            WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
            ChosenDevice {
                device,
                backend: "webgpu",
                notice: None,
            }
        }
        Err(e) => {
            let detail = e.to_string();
            let notice = if detail.contains("No adapter")
                || detail.contains("No suitable graphics adapter")
            {
                "This browser offers WebGPU but no adapter for it; running on the CPU (slower)."
                    .to_string()
            } else {
                format!(
                    "WebGPU did not start ({}); running on the CPU (slower).",
                    detail.chars().take(160).collect::<String>()
                )
            };
            cpu(Some(notice))
        }
    }
}

/// One loaded generator and the level/α it samples at by default.
pub struct Slot {
    /// The generator.
    pub generator: Generator,
    /// Its top level.
    pub level: usize,
    /// Default fade weight.
    pub alpha: f64,
}

/// The model: the final generator, and the growth stages once they are loaded.
pub struct Engine {
    /// Where it runs.
    pub device: Device,
    /// `"webgpu"` or `"cpu"`.
    pub backend: &'static str,
    /// The model's files (its folder URL and version), where the growth stages are fetched from.
    pub files: crate::fetch::ModelFiles,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The final generator.
    pub final_slot: Rc<Slot>,
    /// The stages of `manifest.stages`, by index, as they are loaded.
    pub stages: RefCell<Vec<Option<Rc<Slot>>>>,
    /// The fade-in snapshots of `manifest.fades`, by index, as they are loaded.
    pub fades: RefCell<Vec<Option<Rc<Slot>>>>,
    /// The face-edit directions (`manifest.directions`), loaded with the model.
    pub directions: Vec<EditDirection>,
}

/// A named unit direction in latent space (one entry of `directions.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EditDirection {
    /// `age`, `gender`, `sefa1`, ….
    pub name: String,
    /// Unit vector, one entry per latent dimension.
    pub vector: Vec<f32>,
}

/// Reads `directions.json` (written by `pggan directions`) and checks every direction is a unit
/// vector of the model's latent size.
pub fn parse_directions(
    bytes: &[u8],
    file: &str,
    latent_size: usize,
) -> Result<Vec<EditDirection>, String> {
    #[derive(serde::Deserialize)]
    struct File {
        directions: Vec<EditDirection>,
    }
    let parsed: File = serde_json::from_slice(bytes)
        .map_err(|e| format!("{file} is not a directions file: {e}"))?;
    for d in &parsed.directions {
        let norm = d
            .vector
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if d.vector.len() != latent_size || (norm - 1.0).abs() > 1e-3 {
            return Err(format!(
                "{file}: direction “{}” is not a unit vector of {latent_size} numbers",
                d.name
            ));
        }
    }
    Ok(parsed.directions)
}

/// Which generator to draw with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Which {
    /// The final generator.
    Final,
    /// The manifest's stage of this index.
    Stage(usize),
    /// The manifest's fade-in snapshot of this index.
    Fade(usize),
}

/// Loads one weight file and checks it against what the manifest says it is.
pub fn load_slot(
    bytes: &[u8],
    file: &str,
    manifest: &Manifest,
    level: usize,
    alpha: f64,
    device: &Device,
) -> Result<Slot, String> {
    let (generator, config, _) = generator_from_bytes(bytes, device)
        .map_err(|e| format!("{file} is not a usable generator: {e}"))?;
    let want_res = ModelConfig::level_resolution(level);
    if config.latent_size != manifest.latent_size || config.resolution != want_res {
        return Err(format!(
            "{file} does not match the manifest: it is a {r}×{r} generator with latents of {l}, the manifest says {want_res}×{want_res} and {ml}",
            r = config.resolution,
            l = config.latent_size,
            ml = manifest.latent_size
        ));
    }
    let channels: Vec<usize> = (0..=level).map(|l| config.channels(l)).collect();
    if channels[..] != manifest.channels[..=level] {
        return Err(format!(
            "{file} does not match the manifest: channels {channels:?}, the manifest says {:?}",
            &manifest.channels[..=level]
        ));
    }
    Ok(Slot {
        generator,
        level,
        alpha,
    })
}

impl Engine {
    /// The model's direction `name`; else what it has, as the end of a sentence that names the
    /// direction (“smile”, which this model does not have (it has age, gender)).
    pub fn direction(&self, name: &str) -> Result<&EditDirection, String> {
        self.directions
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.directions.iter().map(|d| d.name.as_str()).collect();
                if names.is_empty() {
                    format!("“{name}”, but this model has no edits")
                } else {
                    format!(
                        "“{name}”, which this model does not have (it has {})",
                        names.join(", ")
                    )
                }
            })
    }

    /// The generator to draw with, once loaded.
    pub fn slot(&self, which: Which) -> Result<Rc<Slot>, String> {
        let (list, index, what) = match which {
            Which::Final => return Ok(self.final_slot.clone()),
            Which::Stage(i) => (&self.stages, i, "stage"),
            Which::Fade(i) => (&self.fades, i, "fade-in snapshot"),
        };
        match list.borrow().get(index) {
            Some(Some(slot)) => Ok(slot.clone()),
            Some(None) => Err(format!("{what} {index} is not loaded yet")),
            None => Err(format!("there is no {what} {index}")),
        }
    }

    /// Images from `latents` (`[n, latent]`, row after row) through the generator `which`, at
    /// its level and with the fade weight it had when it was taken: RGBA bytes `[n, r, r, 4]` and
    /// `r`.
    pub async fn generate(
        &self,
        which: Which,
        latents: Vec<f32>,
        truncation: f64,
    ) -> Result<(Vec<u8>, usize), String> {
        let slot = self.slot(which)?;
        let latent = self.manifest.latent_size;
        if latents.is_empty() || latents.len() % latent != 0 || latents.len() / latent > 256 {
            return Err(format!(
                "{} latent values do not make 1–256 latents of {latent}",
                latents.len()
            ));
        }
        if latents.iter().any(|v| !v.is_finite()) {
            return Err("a latent holds a value that is not a finite number".into());
        }
        if !(0.0..=1.0).contains(&truncation) {
            return Err(format!(
                "the truncation ψ must be a number from 0 to 1, not {truncation}"
            ));
        }
        let n = latents.len() / latent;
        let alpha = slot.alpha.clamp(0.0, 1.0);
        let z = tensor_from_f32(latents, [n, latent], &self.device); // [n, latent]
        let img = slot
            .generator
            .forward_truncated(z, slot.level, alpha, truncation); // [n, 3, r, r] in [-1, 1]
        let r = img.dims()[2];
        let img = img
            .add_scalar(1.0)
            .mul_scalar(127.5)
            .clamp(0.0, 255.0)
            .permute([0, 2, 3, 1]); // [n, r, r, 3]
        let data = img
            .into_data_async()
            .await
            .map_err(|e| format!("reading the images back failed: {e:?}"))?;
        let values: Vec<f32> = data
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| format!("unexpected image data: {e:?}"))?;
        let mut rgba = Vec::with_capacity(n * r * r * 4);
        for px in values.chunks_exact(3) {
            rgba.extend(px.iter().map(|v| v.round() as u8));
            rgba.push(255);
        }
        Ok((rgba, r))
    }
}
