//! # pggan-web
//!
//! The browser demo's Web Worker. The page (`www/app.js`) sends it requests; it loads the exported
//! model (manifest and f16 safetensors, with download progress), runs the generator with Burn on
//! WebGPU or, without it, on the `flex` CPU backend, and answers with RGBA pixels. Generation never
//! runs on the page's main thread.
//!
//! The page posts `{id, request: {<op>: {…fields}}}`, decoded into [`Request`] (serde, through
//! `serde-wasm-bindgen`); every reply is `{op: "reply", id, …}` with the same `id` and either its
//! results or `error` (a sentence for the visitor). Besides replies the worker posts
//! `{op: "progress", what, loaded, total, file}` while downloading (`what`: `model`, `stages` or
//! `fades`)
//! and `{op: "progress", what: "warmup", backend}` as the first generation starts (it compiles the
//! GPU kernels), `{op: "alive"}` once started, and `{op: "panic", message}` if it dies, after which the page
//! starts a fresh worker on the CPU.
//!
//! | request | fields | reply |
//! |---|---|---|
//! | `init` | `model` (folder URL), `backend` (`"auto"`/`"cpu"`) | `backend`, `notice`, `warmupMs`, `model` (summary) |
//! | `load-stages` | — | (the growth stages, from the model's folder, are loaded) |
//! | `load-fades` | `level` | (that level's fade-in snapshots are loaded) |
//! | `generate` | `stage` (index into the manifest's stages, −1 = final) or `fade` (index into its fade-in snapshots), `latents` (Float32Array), `truncation` (ψ 0 … 1, default 1) | `pixels`, `count`, `size`, `ms` |
//! | `latents` | `seeds` (decimal strings) | `latents` |
//! | `parse-link` | `hash` | `kind` (`empty`/`seed`/`latent`), `seed`, `latent`, `truncation` (when the link has `&psi=`), `edits` (`[[name, amount], …]`, each a direction of this model) |
//! | `make-link` | `seed` or `latent`, `truncation`, `edits` (optional) | `link` (with `&psi=` below 1, `&edit=` for edits not 0), and `latent` as the link stores it |
//! | `blend` | `a`, `b`, `t` | `latent` |
//! | `edit` | `latent`, `edits` (`[[name, amount], …]`, amounts −3…3) | `latent` (on the sphere) |
//! | `walk` | `seed`, `frames`, `sigma` | `latents` |
#![cfg(target_arch = "wasm32")]

mod engine;
mod fetch;

use std::cell::RefCell;
use std::rc::Rc;

use gloo_utils::format::JsValueSerdeExt;
use js_sys::{Array, Float32Array, Object, Reflect, Uint8ClampedArray};
use pggan_model::latent::{blend_latents, edit_latent, latent_for_seed, smooth_walk};
use pggan_model::link::{
    LinkTarget, MAX_EDIT, edits_suffix, latent_link, parse_full_link, parse_link, seed_link,
    truncation_suffix,
};
use pggan_model::manifest::Manifest;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use engine::{BackendChoice, Engine, Which, choose_device, load_slot};
use fetch::{ModelFiles, fetch_fresh};

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

/// A message from the page: `{id, request}`; the id (read as it is) goes back with the reply.
#[derive(Deserialize)]
struct Message {
    request: Request,
}

/// What the page can ask (see the table above).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Request {
    /// Load the model in the folder `model` on the `backend` asked for.
    Init {
        model: String,
        #[serde(default)]
        backend: String,
    },
    /// Load the growth stages.
    LoadStages {},
    /// Load the snapshots taken while `level` faded in.
    LoadFades { level: usize },
    /// Draw `latents` (`[count, latent]`) with stage `stage` (−1: the final generator), or with
    /// the fade-in snapshot `fade`; each at the fade weight it was taken at.
    Generate {
        #[serde(default = "final_stage")]
        stage: i64,
        fade: Option<usize>,
        latents: F32s,
        /// The truncation ψ (0 … 1; absent: 1, none).
        truncation: Option<f64>,
    },
    /// The latents of `seeds` (decimal strings).
    Latents { seeds: Vec<String> },
    /// Read a link's `#…` part.
    ParseLink { hash: String },
    /// The link of a seed or of an exact latent.
    MakeLink {
        seed: Option<String>,
        latent: Option<F32s>,
        /// The truncation ψ the face is drawn with (kept in the link below 1).
        truncation: Option<f64>,
        /// Edits of the face (kept in the link when not 0).
        #[serde(default)]
        edits: Vec<(String, f64)>,
    },
    /// The blend of latents `a` and `b` at `t`.
    Blend { a: F32s, b: F32s, t: f64 },
    /// `latent` moved along the model's named directions by the given amounts.
    Edit {
        latent: F32s,
        edits: Vec<(String, f64)>,
    },
    /// The paper's looping walk from `seed`.
    Walk {
        seed: String,
        frames: f64,
        sigma: f64,
    },
}

/// A list of numbers from the page: a `Float32Array` (copied out whole) or an array of numbers.
/// serde-wasm-bindgen would read a typed array element by element through the JavaScript
/// iterator protocol, which measured 60 ms for one latent of 128 numbers; this reads it in one
/// copy.
struct F32s(Vec<f32>);

impl<'de> Deserialize<'de> for F32s {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let value: JsValue = serde_wasm_bindgen::preserve::deserialize(de)?;
        if let Some(typed) = value.dyn_ref::<Float32Array>() {
            return Ok(F32s(typed.to_vec()));
        }
        if let Some(list) = value.dyn_ref::<Array>() {
            return list
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .map(F32s)
                .ok_or_else(|| {
                    serde::de::Error::custom("a list holds something that is not a number")
                });
        }
        Err(serde::de::Error::custom(
            "expected a Float32Array or an array of numbers",
        ))
    }
}

fn final_stage() -> i64 {
    -1
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now_ms() -> f64 {
    scope()
        .performance()
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &key.into(), &value.into());
}

fn parse_seed(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("“{text}” is not a seed (a whole number 0 … 2^64−1)"))
}

fn post(message: &JsValue, transfer: Option<&JsValue>) {
    let scope = scope();
    let _ = match transfer {
        Some(buffer) => scope.post_message_with_transfer(message, &Array::of1(buffer)),
        None => scope.post_message(message),
    };
}

fn engine() -> Result<Rc<Engine>, String> {
    ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the model is not loaded yet".to_string())
}

/// Starts the worker: installs the message handler and a panic reporter, then says it is alive.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = Object::new();
        set(&message, "op", "panic");
        set(&message, "message", info.to_string());
        post(&message, None);
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        wasm_bindgen_futures::spawn_local(handle(event.data()));
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let alive = Object::new();
    set(&alive, "op", "alive");
    post(&alive, None);
}

async fn handle(data: JsValue) {
    let reply = Object::new();
    set(&reply, "op", "reply");
    set(
        &reply,
        "id",
        Reflect::get(&data, &"id".into()).unwrap_or(JsValue::NULL),
    );
    let mut transfer = None;
    let outcome = match serde_wasm_bindgen::from_value::<Message>(data) {
        Err(e) => Err(format!("a request the worker does not understand: {e}")),
        Ok(Message { request }) => match request {
            Request::Init { model, backend } => init(model, &backend, &reply).await,
            Request::LoadStages {} => load_stages().await,
            Request::LoadFades { level } => load_fades(level).await,
            Request::Generate {
                stage,
                fade,
                latents,
                truncation,
            } => generate(
                match (fade, stage) {
                    (Some(i), _) => Which::Fade(i),
                    (None, s) if s < 0 => Which::Final,
                    (None, s) => Which::Stage(s as usize),
                },
                latents.0,
                truncation.unwrap_or(1.0),
                &reply,
            )
            .await
            .map(|buffer| transfer = Some(buffer)),
            Request::Latents { seeds } => latents(&seeds, &reply),
            Request::ParseLink { hash } => link_parse(&hash, &reply),
            Request::MakeLink {
                seed,
                latent,
                truncation,
                edits,
            } => link_make(seed, latent.map(|z| z.0), truncation, &edits, &reply),
            Request::Blend { a, b, t } => blend(&a.0, &b.0, t, &reply),
            Request::Edit { latent, edits } => edit(&latent.0, &edits, &reply),
            Request::Walk {
                seed,
                frames,
                sigma,
            } => walk(&seed, frames, sigma, &reply),
        },
    };
    if let Err(message) = outcome {
        set(&reply, "error", message);
        transfer = None;
    }
    post(&reply, transfer.as_ref());
}

fn progress(loaded: u64, total: u64, file: &str, what: &str) {
    let message = Object::new();
    set(&message, "op", "progress");
    set(&message, "what", what);
    set(&message, "loaded", loaded as f64);
    set(&message, "total", total as f64);
    set(&message, "file", file);
    post(&message, None);
}

/// Downloads `file` under the model's folder, reporting progress against a running total.
async fn download(
    files: &ModelFiles,
    file: &str,
    what: &str,
    done: u64,
    total: &mut u64,
    size: Option<u64>,
) -> Result<Vec<u8>, String> {
    let mut counted = size.is_some();
    files
        .get(file, |loaded, length| {
            if !counted {
                *total += length.unwrap_or(0);
                counted = true;
            }
            progress(done + loaded, (*total).max(done + loaded), file, what);
        })
        .await
}

async fn init(base: String, backend: &str, reply: &Object) -> Result<(), String> {
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let choice = BackendChoice::parse(backend);

    let manifest_bytes = fetch_fresh(&format!("{base}manifest.json")).await?;
    let files = ModelFiles::new(base, &manifest_bytes);
    let text = String::from_utf8(manifest_bytes)
        .map_err(|_| "manifest.json is not UTF-8 text".to_string())?;
    let manifest = Manifest::parse(&text).map_err(|e| e.to_string())?;

    let chosen = choose_device(choice).await;
    // Only the final generator now: the growth stages load when the visitor asks for them.
    let mut total = manifest.generator_bytes.unwrap_or(0);
    let bytes = download(
        &files,
        &manifest.generator,
        "model",
        0,
        &mut total,
        manifest.generator_bytes,
    )
    .await?;
    let final_slot = load_slot(
        &bytes,
        &manifest.generator,
        &manifest,
        manifest.level,
        manifest.alpha,
        &chosen.device,
    )?;
    let directions = match &manifest.directions {
        Some(entry) => {
            let bytes = files.get(&entry.file, |_, _| {}).await?;
            engine::parse_directions(&bytes, &entry.file, manifest.latent_size)?
        }
        None => Vec::new(),
    };
    let stages = RefCell::new(vec![None; manifest.stages.len()]);
    let fades = RefCell::new(vec![None; manifest.fades.len()]);
    let engine = Engine {
        device: chosen.device,
        backend: chosen.backend,
        files,
        manifest,
        final_slot: Rc::new(final_slot),
        stages,
        fades,
        directions,
    };

    // Warm-up: the first pass compiles the GPU kernels (or faults in the CPU code).
    let warming = Object::new();
    set(&warming, "op", "progress");
    set(&warming, "what", "warmup");
    set(&warming, "backend", engine.backend);
    post(&warming, None);
    let started = now_ms();
    let warm = latent_for_seed(0, engine.manifest.latent_size);
    engine.generate(Which::Final, warm, 1.0).await?;
    let warmup_ms = now_ms() - started;

    set(reply, "backend", engine.backend);
    set(
        reply,
        "notice",
        chosen.notice.map(JsValue::from).unwrap_or(JsValue::NULL),
    );
    set(reply, "warmupMs", warmup_ms);
    set(reply, "model", model_summary(&engine)?);
    ENGINE.with(|e| *e.borrow_mut() = Some(Rc::new(engine)));
    Ok(())
}

async fn load_stages() -> Result<(), String> {
    let engine = engine()?;
    let (files, m) = (&engine.files, &engine.manifest);
    let todo: Vec<usize> = (0..m.stages.len())
        .filter(|&i| engine.stages.borrow()[i].is_none())
        .collect();
    let mut total: u64 = todo
        .iter()
        .filter(|&&i| m.stages[i].file != m.generator)
        .map(|&i| m.stages[i].bytes.unwrap_or(0))
        .sum();
    let mut done = 0;
    for i in todo {
        let s = &m.stages[i];
        let slot = if s.file == m.generator {
            // The final generator's own file (an export taken at the end of training).
            engine.final_slot.clone()
        } else {
            let bytes = download(files, &s.file, "stages", done, &mut total, s.bytes).await?;
            done += bytes.len() as u64;
            Rc::new(load_slot(&bytes, &s.file, m, s.level, 1.0, &engine.device)?)
        };
        engine.stages.borrow_mut()[i] = Some(slot);
    }
    Ok(())
}

async fn load_fades(level: usize) -> Result<(), String> {
    let engine = engine()?;
    let (files, m) = (&engine.files, &engine.manifest);
    let todo: Vec<usize> = (0..m.fades.len())
        .filter(|&i| m.fades[i].level == level && engine.fades.borrow()[i].is_none())
        .collect();
    let mut total: u64 = todo.iter().map(|&i| m.fades[i].bytes.unwrap_or(0)).sum();
    let mut done = 0;
    for i in todo {
        let f = &m.fades[i];
        let bytes = download(files, &f.file, "fades", done, &mut total, f.bytes).await?;
        done += bytes.len() as u64;
        let slot = load_slot(&bytes, &f.file, m, f.level, f.alpha, &engine.device)?;
        engine.fades.borrow_mut()[i] = Some(Rc::new(slot));
    }
    Ok(())
}

fn model_summary(engine: &Engine) -> Result<JsValue, String> {
    let m = &engine.manifest;
    let mut stages: Vec<serde_json::Value> = m
        .stages
        .iter()
        .enumerate()
        .map(|(index, s)| serde_json::json!({"index": index, "level": s.level, "resolution": s.resolution, "kimg": s.kimg, "alpha": 1.0}))
        .collect();
    // An export taken before the last level finished: the final generator is the last stage.
    if m.stages.last().is_none_or(|s| s.level < m.level) {
        let kimg = m
            .training
            .get("kimg")
            .and_then(|k| k.as_f64())
            .unwrap_or(0.0);
        stages.push(serde_json::json!({"index": -1, "level": m.level, "resolution": m.resolution, "kimg": kimg, "alpha": m.alpha}));
    }
    let stage_bytes: u64 = m
        .stages
        .iter()
        .filter(|s| s.file != m.generator)
        .map(|s| s.bytes.unwrap_or(0))
        .sum();
    let summary = serde_json::json!({
        "name": m.name,
        "resolution": m.resolution,
        "latentSize": m.latent_size,
        "level": m.level,
        "alpha": m.alpha,
        "channels": m.channels,
        "stages": stages,
        "stageBytes": stage_bytes,
        "directions": m.directions.as_ref().map(|d| d.list.clone()).unwrap_or_default(),
        "fades": m
            .fades
            .iter()
            .enumerate()
            .map(|(index, f)| serde_json::json!({"index": index, "level": f.level, "resolution": f.resolution, "alpha": f.alpha, "kimg": f.kimg, "bytes": f.bytes.unwrap_or(0)}))
            .collect::<Vec<_>>(),
        "training": m.training,
    });
    JsValue::from_serde(&summary).map_err(|e| e.to_string())
}

async fn generate(
    which: Which,
    latents: Vec<f32>,
    truncation: f64,
    reply: &Object,
) -> Result<JsValue, String> {
    let engine = engine()?;
    let count = latents.len() / engine.manifest.latent_size.max(1);
    let started = now_ms();
    let (rgba, size) = engine.generate(which, latents, truncation).await?;
    let ms = now_ms() - started;
    let pixels = Uint8ClampedArray::new_with_length(rgba.len() as u32);
    pixels.copy_from(&rgba);
    set(reply, "pixels", &pixels);
    set(reply, "count", count as f64);
    set(reply, "size", size as f64);
    set(reply, "ms", ms);
    Ok(pixels.buffer().into())
}

fn latent_size() -> Result<usize, String> {
    Ok(engine()?.manifest.latent_size)
}

fn latents(seeds: &[String], reply: &Object) -> Result<(), String> {
    let n = latent_size()?;
    if seeds.len() > 256 {
        return Err("`seeds` must be a list of at most 256 seeds".into());
    }
    let mut out = Vec::with_capacity(seeds.len() * n);
    for seed in seeds {
        out.extend(latent_for_seed(parse_seed(seed)?, n));
    }
    set(reply, "latents", Float32Array::from(out.as_slice()));
    Ok(())
}

fn link_parse(hash: &str, reply: &Object) -> Result<(), String> {
    let link = parse_full_link(hash, latent_size()?).map_err(|e| e.to_string())?;
    if let Some(psi) = link.truncation {
        set(reply, "truncation", psi);
    }
    if !link.edits.is_empty() {
        let engine = engine()?;
        let list = Array::new();
        for (name, amount) in &link.edits {
            engine
                .direction(name)
                .map_err(|e| format!("the link edits {e}"))?;
            list.push(&Array::of2(
                &JsValue::from_str(name),
                &JsValue::from_f64(*amount),
            ));
        }
        set(reply, "edits", list);
    }
    match link.target {
        LinkTarget::Empty => set(reply, "kind", "empty"),
        LinkTarget::Seed(seed) => {
            set(reply, "kind", "seed");
            set(reply, "seed", seed.to_string());
        }
        LinkTarget::Latent(z) => {
            set(reply, "kind", "latent");
            set(reply, "latent", Float32Array::from(z.as_slice()));
        }
    }
    Ok(())
}

fn link_make(
    seed: Option<String>,
    latent: Option<Vec<f32>>,
    truncation: Option<f64>,
    edits: &[(String, f64)],
    reply: &Object,
) -> Result<(), String> {
    let link = match (seed, latent) {
        (Some(seed), _) => seed_link(parse_seed(&seed)?),
        (None, Some(z)) => {
            if z.len() != latent_size()? {
                return Err(format!(
                    "a latent of {} values; this model takes {}",
                    z.len(),
                    latent_size()?
                ));
            }
            let link = latent_link(&z);
            // The latent as the link stores it (half precision), so what the page shows is
            // exactly what the link reproduces.
            if let Ok(LinkTarget::Latent(stored)) = parse_link(&link, z.len()) {
                set(reply, "latent", Float32Array::from(stored.as_slice()));
            }
            link
        }
        (None, None) => return Err("make-link needs a `seed` or a `latent`".into()),
    };
    let suffix = truncation.map(truncation_suffix).unwrap_or_default();
    set(
        reply,
        "link",
        format!("{link}{suffix}{}", edits_suffix(edits)),
    );
    Ok(())
}

fn blend(a: &[f32], b: &[f32], t: f64, reply: &Object) -> Result<(), String> {
    let n = latent_size()?;
    if a.len() != n || b.len() != n {
        return Err(format!("blend needs two latents of {n} values"));
    }
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } as f32;
    set(
        reply,
        "latent",
        Float32Array::from(blend_latents(a, b, t).as_slice()),
    );
    Ok(())
}

fn edit(latent: &[f32], edits: &[(String, f64)], reply: &Object) -> Result<(), String> {
    let engine = engine()?;
    let n = engine.manifest.latent_size;
    if latent.len() != n {
        return Err(format!("an edit needs a latent of {n} values"));
    }
    let mut pairs = Vec::new();
    for (name, amount) in edits {
        let direction = engine
            .direction(name)
            .map_err(|e| format!("an edit along {e}"))?;
        if !amount.is_finite() || amount.abs() > MAX_EDIT {
            return Err(format!(
                "an edit of {amount} along “{name}” is outside −{MAX_EDIT} … {MAX_EDIT}"
            ));
        }
        pairs.push((direction.vector.as_slice(), *amount));
    }
    set(
        reply,
        "latent",
        Float32Array::from(edit_latent(latent, &pairs).as_slice()),
    );
    Ok(())
}

fn walk(seed: &str, frames: f64, sigma: f64, reply: &Object) -> Result<(), String> {
    let seed = parse_seed(seed)?;
    if !(frames.is_finite() && sigma.is_finite()) {
        return Err("`frames` and `sigma` must be numbers".into());
    }
    let frames = frames.clamp(2.0, 2048.0) as usize;
    let sigma = sigma.clamp(0.0, 512.0);
    set(
        reply,
        "latents",
        Float32Array::from(smooth_walk(seed, frames, sigma, latent_size()?).as_slice()),
    );
    Ok(())
}
