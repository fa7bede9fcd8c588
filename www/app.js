// The page: controls and drawing on the main thread; the model runs in a Web Worker (the
// `pggan-web` WebAssembly crate), so generating never blocks the page. Links are parsed by the
// worker's Rust code, as numbers only.

const WORKER_URL = 'engine-loader.js';
const ENGINE_URL = 'pggan-web_bg.wasm';
const ENGINE_VERSION_URL = 'engine.json';
// The page's cache in the browser's Cache Storage: the engine here, the model's files from the
// worker (web/src/fetch.rs), each under a URL that names its version.
const CACHE_NAME = 'pggan-v1';
const GRID_FACES = 16;
// On the CPU the grid is shared by a pool of workers, one per core (this many at most): each
// draws one face at a time, so faces appear as they are ready. WebGPU draws the grid as one batch.
const CPU_WORKERS_MAX = 4;
const WALK_FRAMES = 240;
const WALK_SIGMA_FRAMES = 8;
const MODEL_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const BACKENDS = ['auto', 'cpu', 'webgpu'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  engine: null,
  backend: null,
  model: null,
  current: null,   // { latent: Float32Array, seed: string | null }
  a: null,
  b: null,
  mixLatent: null,
  stage: 0,
  fadesLoaded: new Set(), // levels whose fade-in snapshots the worker holds
  playing: false,
  msPerFace: null,
  opener: null,    // the control that opened the face shown, to give focus back to
  editBase: null,  // the opened face before edits: { face, latent, link, label }
  engineModule: null, // Promise<WebAssembly.Module>: the engine, downloaded and compiled once
  models: null,    // the shipped models (models/index.json) and the default
  truncation: 1,   // ψ of every face drawn (1: none), kept in links as &psi=
  helpers: [],     // more CPU workers that share the grid with state.engine
  gridJob: null,   // the grid being drawn: helpers that get ready meanwhile join it
};

// ---------------------------------------------------------------- messages

function showError(text) {
  const el = $('error');
  el.textContent = text;
  el.hidden = !text;
}

function showNotice(text) {
  const el = $('notice');
  el.textContent = text;
  el.hidden = !text;
}

// The backend to start on. A software WebGPU adapter (SwiftShader, `isFallbackAdapter`) is no
// GPU: it draws a face many times slower than the page's own CPU path, so the CPU runs instead,
// saying why; `?backend=webgpu` takes any adapter, `?backend=cpu` the CPU.
async function chooseBackend() {
  const asked = params.get('backend');
  if (asked === 'cpu') return { backend: 'cpu', notice: null };
  if (asked === 'webgpu' || !navigator.gpu) return { backend: 'auto', notice: null };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    const fallback = adapter && (adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter);
    if (fallback) {
      return {
        backend: 'cpu',
        notice: 'This browser offers WebGPU only through a software adapter (no GPU), slower than the page’s own CPU path: running on the CPU. (?backend=webgpu uses it anyway.)',
      };
    }
  } catch {
    // The worker asks again and says what went wrong.
  }
  return { backend: 'auto', notice: null };
}

// What the page says of a `?backend=` it does not know (it then chooses by itself).
function backendNotice() {
  const asked = params.get('backend');
  if (asked === null || BACKENDS.includes(asked)) return '';
  return `“?backend=${asked}” is not a backend this page knows (${BACKENDS.join(' or ')}); it chose one itself.`;
}

function setStatus() {
  const workers = state.backend === 'cpu' ? 1 + readyHelpers().length : 1;
  const name = state.backend === 'webgpu'
    ? 'WebGPU (your GPU)'
    : `the CPU (WebAssembly${workers > 1 ? `, ${workers} workers` : ''})`;
  const speed = state.msPerFace == null ? '' : ` · ${state.msPerFace.toFixed(1)} ms per face`;
  $('status').textContent = `Running on ${name}${speed}`;
  $('where').textContent = state.backend === 'webgpu' ? ', on your GPU through WebGPU' : ', on your CPU';
  document.body.dataset.backend = state.backend;
  if (state.msPerFace != null) document.body.dataset.msPerFace = state.msPerFace.toFixed(2);
}

// ---------------------------------------------------------------- the worker

// The error of a request that a stopped worker can no longer answer. Its death has its own
// message (a notice and a restart on the CPU, or an error), so callers do not report it again.
function stopped(reason) {
  const err = new Error(reason);
  err.stopped = true;
  return err;
}

// Shows `err` with `prefix`, unless it only says that the worker stopped.
function report(prefix, err) {
  if (!err.stopped) showError(`${prefix}${err.message}`);
}

// The first line of a worker error (Rust errors carry their causes and a backtrace below).
function firstLine(text) {
  return String(text).split('\n')[0];
}

class Engine {
  constructor(onDeath) {
    this.pending = new Map();
    this.nextId = 1;
    this.onProgress = () => {};
    this.onDeath = onDeath;
    this.dead = false;
  }

  // Resolves once the worker's WebAssembly is running and listening. `onPhase(what, loaded,
  // total)` hears the engine's download and compilation.
  async start(onPhase) {
    const module = await compiledEngine(onPhase);
    if (this.dead) throw stopped('the generator has stopped');
    return new Promise((resolve, reject) => {
      this.worker = new Worker(WORKER_URL);
      this.worker.onmessage = (event) => {
        const msg = event.data;
        if (msg.op === 'alive') resolve();
        else if (msg.op === 'progress') this.onProgress(msg);
        else if (msg.op === 'panic') this.die(msg.message);
        else if (msg.op === 'reply') this.settle(msg);
      };
      this.worker.onerror = (event) => {
        const reason = event.message || 'the generator could not start';
        reject(new Error(reason));
        this.die(reason);
      };
      this.worker.postMessage({ module });
    });
  }

  settle(msg) {
    const waiter = this.pending.get(msg.id);
    if (!waiter) return;
    this.pending.delete(msg.id);
    clearTimeout(waiter.timer);
    if (msg.error !== undefined) waiter.reject(new Error(msg.error));
    else waiter.resolve(msg);
  }

  // `deadlineMs`: a request unanswered by then means the worker is stuck (a lost GPU device
  // leaves WebGPU work waiting forever), so the worker is stopped as dead.
  request(op, fields = {}, transfer = [], deadlineMs = 0) {
    if (this.dead) return Promise.reject(stopped('the generator has stopped'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = deadlineMs > 0
        ? setTimeout(() => this.die(`no answer from the GPU in ${Math.round(deadlineMs / 1000)} s; its device may have been lost`), deadlineMs)
        : undefined;
      this.pending.set(id, { resolve, reject, timer });
      this.worker.postMessage({ id, request: { [op]: fields } }, transfer);
    });
  }

  die(reason) {
    if (this.dead) return;
    this.dead = true;
    if (this.worker) this.worker.terminate();
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(stopped(reason));
    }
    this.pending.clear();
    this.onDeath(reason);
  }
}

// The engine (the worker's WebAssembly), downloaded with progress and compiled on the page once per
// visit: a worker restarted on the CPU reuses it. A failed attempt is forgotten, so a retry fetches
// again.
function compiledEngine(onPhase) {
  if (!state.engineModule) {
    state.engineModule = (async () => {
      const { version, bytes: size } = await engineVersion();
      const url = version ? `${ENGINE_URL}?v=${version}` : ENGINE_URL;
      const kept = version ? await fromCache(url) : null;
      if (kept) {
        onPhase('engine', kept.byteLength, kept.byteLength);
        onPhase('compile', 0, 0);
        return WebAssembly.compile(kept);
      }
      const response = await fetch(url);
      if (!response.ok) throw new Error(`the engine (${ENGINE_URL}) could not be downloaded: HTTP ${response.status}`);
      // The engine's own size from engine.json: a compressing server's Content-Length counts
      // the compressed bytes, not the ones the page receives.
      const total = size || Number(response.headers.get('Content-Length')) || 0;
      const reader = response.body.getReader();
      const chunks = [];
      let loaded = 0;
      onPhase('engine', 0, total);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        loaded += value.length;
        onPhase('engine', loaded, Math.max(total, loaded));
      }
      onPhase('compile', 0, 0);
      const bytes = await new Blob(chunks).arrayBuffer();
      if (version) toCache(url, bytes); // not awaited: compiling need not wait for the disk
      return WebAssembly.compile(bytes);
    })();
    state.engineModule.catch(() => { state.engineModule = null; });
  }
  return state.engineModule;
}

// The engine's version and size from engine.json (always asked of the server, never the HTTP
// cache); nulls when there is none (a page built without it): the engine is then simply
// downloaded.
async function engineVersion() {
  try {
    const response = await fetch(ENGINE_VERSION_URL, { cache: 'no-cache' });
    if (!response.ok) return { version: null, bytes: null };
    const { version, bytes } = await response.json();
    return {
      version: typeof version === 'string' && /^[0-9a-f]{1,64}$/.test(version) ? version : null,
      bytes: Number.isInteger(bytes) && bytes > 0 ? bytes : null,
    };
  } catch {
    return { version: null, bytes: null };
  }
}

// The bytes kept in Cache Storage under `url`, or null (none kept, or no Cache Storage here: an
// insecure origin).
async function fromCache(url) {
  try {
    const response = await (await caches.open(CACHE_NAME)).match(url);
    return response ? await response.arrayBuffer() : null;
  } catch {
    return null;
  }
}

// Keeps `bytes` under `url` and drops the other versions of the same file; failures only mean a
// download next time.
async function toCache(url, bytes) {
  try {
    const cache = await caches.open(CACHE_NAME);
    await cache.put(url, new Response(bytes));
    const kept = new URL(url, location.href);
    for (const request of await cache.keys()) {
      const other = new URL(request.url);
      if (other.pathname === kept.pathname && other.href !== kept.href) await cache.delete(request);
    }
  } catch {
    // nothing kept
  }
}

// What the loading bar says: each phase of a start with its own progress (`total` 0: no measure).
function showPhase(what, loaded, total, file = '') {
  const bar = $('progress');
  if (total > 0) {
    bar.max = total;
    bar.value = loaded;
  } else {
    bar.removeAttribute('value'); // indeterminate: the bar moves without a measure
  }
  const mb = (n) => (n / 1e6).toFixed(1);
  const label = {
    engine: () => `Downloading the engine: ${mb(loaded)} of ${mb(total)} MB`,
    compile: () => 'Compiling the engine…',
    model: () => `Downloading the model: ${mb(loaded)} of ${mb(total)} MB (${file})`,
    warmup: () => (file === 'webgpu'
      ? 'Warming up: the first face compiles the generator for your GPU…'
      : 'Warming up: the first face on the CPU…'),
  }[what];
  if (label) {
    $('progress-label').textContent = label();
    $('loading').dataset.phase = what;
  }
}

function modelUrl() {
  const asked = params.get('model');
  if (asked !== null) {
    if (MODEL_NAME.test(asked)) return `models/${asked}/`;
    throw new Error('“?model=” takes a model folder name (letters, digits, - and _)');
  }
  const chosen = state.models && state.models.default;
  return chosen ? `models/${chosen}/` : `${document.body.dataset.model}/`;
}

// The shipped models (models/index.json: the default and a label for each), always asked of the
// server; null without a usable list (the page's own default then).
async function shippedModels() {
  try {
    const response = await fetch('models/index.json', { cache: 'no-cache' });
    if (!response.ok) return null;
    const index = await response.json();
    const models = (Array.isArray(index.models) ? index.models : [])
      .filter((m) => m && typeof m.name === 'string' && MODEL_NAME.test(m.name))
      .map((m) => ({ name: m.name, label: typeof m.label === 'string' ? m.label : m.name }));
    if (!models.length) return null;
    const named = typeof index.default === 'string' && models.some((m) => m.name === index.default);
    return { models, default: named ? index.default : models[0].name };
  } catch {
    return null;
  }
}

// With more than one shipped model, a choice between them; choosing one opens the page on it.
function offerModels() {
  const list = state.models;
  const pick = $('model-pick');
  if (!list || list.models.length < 2) {
    pick.hidden = true;
    return;
  }
  const current = params.get('model') || list.default;
  const select = $('model-choice');
  select.replaceChildren(...list.models.map((m) => {
    const option = document.createElement('option');
    option.value = m.name;
    option.textContent = m.label;
    option.selected = m.name === current;
    return option;
  }));
  if (!list.models.some((m) => m.name === current)) {
    const option = document.createElement('option');
    option.value = current;
    option.textContent = current;
    option.selected = true;
    select.prepend(option);
  }
  pick.hidden = false;
}

function switchModel(name) {
  const url = new URL(location.href);
  if (name === (state.models && state.models.default)) url.searchParams.delete('model');
  else url.searchParams.set('model', name);
  url.hash = '';
  location.assign(url.href);
}

// Starts the worker and loads the model; `notice` (a restart's reason) replaces the worker's own.
async function boot(backend, notice = null) {
  document.body.dataset.state = 'loading';
  document.body.dataset.grid = 'pending'; // drawn again once this start is done
  setControls(false);
  stopHelpers();
  const engine = new Engine((reason) => onEngineDeath(engine, reason));
  state.engine = engine;
  engine.onProgress = ({ what, loaded, total, file, backend: on }) => {
    if (what === 'stages' || what === 'fades') {
      $('stages-progress').max = Math.max(total, 1);
      $('stages-progress').value = loaded;
      return;
    }
    if (what === 'warmup') showPhase('warmup', 0, 0, on);
    else showPhase('model', loaded, Math.max(total, 1), file);
  };
  $('loading').hidden = false;
  try {
    await engine.start(showPhase);
    showPhase('model', 0, 1, 'manifest.json');
    const model = modelUrl();
    const info = await engine.request('init', { model, backend });
    engine.backend = info.backend;
    state.backend = info.backend;
    state.model = info.model;
    const said = [notice || info.notice, backendNotice()].filter(Boolean).join(' ');
    if (said) showNotice(said);
    showError(''); // what a dead worker's requests reported is answered by this restart
    $('loading').hidden = true;
    setStatus();
    describeModel(info.model);
    buildEdits();
    state.stagesLoaded = false;
    state.fadesLoaded = new Set();
    $('stages').replaceChildren();
    $('stages-load').hidden = false;
    $('stage-view').hidden = true;
    const mb = (info.model.stageBytes / 1e6).toFixed(1);
    $('load-stages').textContent = info.model.stageBytes > 0 ? `Show the growth stages (${mb} MB more)` : 'Show the growth stages';
    setControls(true);
    document.body.dataset.state = 'ready';
    if (info.backend === 'cpu') startHelpers(model);
  } catch (err) {
    if (engine.dead && engine !== state.engine) return; // replaced by a CPU restart
    $('loading').hidden = true;
    $('status').textContent = 'Not running';
    showError(`Could not load the model: ${err.message}`);
    if (params.has('model')) {
      // A way back: the page's own model.
      const back = new URL(location.href);
      back.searchParams.delete('model');
      back.hash = '';
      const a = document.createElement('a');
      a.id = 'default-model';
      a.href = back.href;
      a.textContent = 'Open the default model instead';
      $('error').append(' ', a);
    }
    document.body.dataset.state = 'error';
    return;
  }
  // A shared link's face first, in view (on a phone it is below the grid), then the grid.
  buildGrid();
  if (location.hash && location.hash !== '#') {
    await followLink();
    await showGrid();
  } else {
    await showGrid();
  }
  // A restart on the CPU redraws the face that was open when WebGPU failed.
  if (notice && state.current && !$('detail').hidden && !location.hash) await openFace(state.current, { focus: false });
}

// Downloads the growth stages (on request: they are several times the final generator's size).
async function loadStages() {
  $('load-stages').disabled = true;
  $('stages-progress').hidden = false;
  try {
    await state.engine.request('load-stages');
    state.stagesLoaded = true;
    $('stages-load').hidden = true;
    $('stage-view').hidden = false;
    buildStages();
    // Until a face is chosen, the stages show the first face of the grid.
    const first = document.querySelector('#grid button');
    if (!state.current && first && first.face) state.current = first.face;
    await showStages();
    // Focus stays with the visitor's place: the chosen stage, where the button was.
    const chosen = $('stages').querySelector('button[aria-current="true"]');
    if (chosen) chosen.focus();
  } catch (err) {
    report('Could not load the growth stages: ', err);
    $('load-stages').disabled = false;
  } finally {
    $('stages-progress').hidden = true;
  }
}

function onEngineDeath(engine, reason) {
  if (engine !== state.engine) return;
  state.playing = false;
  if (state.backend === 'webgpu') {
    const notice = `WebGPU stopped working (${reason}); continuing on the CPU.`;
    showNotice(notice);
    boot('cpu', notice);
  } else {
    showError(`The generator stopped: ${reason}. Reload the page to try again.`);
    document.body.dataset.state = 'error';
    setControls(false);
  }
}

// More CPU workers for the grid, one per core beyond the first (the engine is compiled once and
// shared). Each joins the grid being drawn as soon as it is ready; one that fails just leaves.
function startHelpers(model) {
  const cores = navigator.hardwareConcurrency || 1;
  const count = Math.min(CPU_WORKERS_MAX, cores) - 1;
  for (let i = 0; i < count; i++) {
    const helper = new Engine(() => {
      if (!state.helpers.includes(helper)) return; // stopped with its pool
      state.helpers = state.helpers.filter((h) => h !== helper);
      document.body.dataset.workers = String(1 + readyHelpers().length);
      setStatus();
    });
    helper.name = `cpu-${i + 2}`;
    state.helpers.push(helper);
    helper.start(() => {})
      .then(() => helper.request('init', { model, backend: 'cpu' }))
      .then((info) => {
        helper.backend = info.backend;
        document.body.dataset.workers = String(1 + readyHelpers().length);
        setStatus();
        if (state.gridJob) state.gridJob.join(helper);
      })
      .catch((err) => helper.die(err.message));
  }
}

function readyHelpers() {
  return state.helpers.filter((h) => h.backend && !h.dead);
}

function stopHelpers() {
  const helpers = state.helpers;
  state.helpers = [];
  for (const h of helpers) h.die('replaced');
  delete document.body.dataset.workers;
}

function setControls(on) {
  for (const id of ['new-faces', 'walk', 'load-stages', 'truncation', 'play-growth']) $(id).disabled = !on;
  $('play').disabled = !on || !(state.a && state.b);
  $('record').disabled = !on || !(state.a && state.b) || Boolean(state.recording);
}

function describeModel(m) {
  $('final-size').textContent = `to ${m.resolution}×${m.resolution}`;
  const t = m.training || {};
  const size = `${m.resolution}×${m.resolution} pixels`;
  // An export taken mid-fade: the top level is only partly blended in.
  const fading = typeof m.alpha === 'number' && m.alpha < 1
    ? ` (the ${m.resolution}×${m.resolution} level still fading in, α ${m.alpha.toFixed(2)})` : '';
  const kimg = typeof t.kimg === 'number' ? `, ${Math.round(t.kimg)} thousand images shown` : '';
  const hours = typeof t.train_seconds === 'number' ? ` in ${(t.train_seconds / 3600).toFixed(1)} hours of training` : '';
  const hw = t.hardware ? ` on ${t.hardware}` : '';
  const s = scores(t.evaluation);
  const measured = s.swd && s.ssim
    ? ` Against ${s.count} held-out photographs: SWD ×10³ ${s.swd.model.toFixed(2)} (photographs among themselves: ${s.swd.floor.toFixed(2)}, lower is closer), MS-SSIM ${s.ssim.model.toFixed(3)} (photographs: ${s.ssim.floor.toFixed(3)}).`
    : '';
  $('model-card').textContent =
    `Model “${m.name}”: ${size}${fading}, latent of ${m.latentSize} numbers, ${m.stages.length} growth stages${kimg}${kimg ? hours + hw : ''}.${measured}`;
  $('model-words').textContent = modelInWords(m);
}

// The export's own evaluation against held-out photographs, beside the photographs' own floor:
// { count, swd: { model, floor } | null, ssim: { model, floor } | null }.
function scores(e) {
  const pair = (read) => {
    const model = e && e.model ? read(e.model) : undefined;
    const floor = e && e.reals_floor ? read(e.reals_floor) : undefined;
    return typeof model === 'number' && typeof floor === 'number' ? { model, floor } : null;
  };
  return {
    count: e && e.count,
    swd: pair((side) => side.swd && side.swd.avg),
    ssim: pair((side) => side.ms_ssim),
  };
}

// The model card for people: what it saw, for how long, and what its two scores mean beside the
// photographs' own.
function modelInWords(m) {
  const t = m.training || {};
  const said = [`This model draws faces of ${m.resolution}×${m.resolution} pixels from ${m.latentSize} random numbers each.`];
  if (typeof t.kimg === 'number') {
    const millions = t.kimg / 1000;
    const shown = millions >= 1 ? `${millions.toFixed(1)} million` : `${Math.round(t.kimg)} thousand`;
    const hours = typeof t.train_seconds === 'number' ? `, over ${(t.train_seconds / 3600).toFixed(1)} hours` : '';
    said.push(`In training it was shown ${shown} pictures${hours}.`);
  }
  const s = scores(t.evaluation);
  if (s.swd) {
    said.push(`How real do its faces look? One measure, the sliced Wasserstein distance, compares small patches of ${s.count} of its faces with patches of ${s.count} photographs it never saw, at several scales: 0 would be indistinguishable. It scores ${s.swd.model.toFixed(1)}; photographs compared with other photographs score ${s.swd.floor.toFixed(1)}, the best any model could hope for.`);
  }
  if (s.ssim) {
    const { model: a, floor: b } = s.ssim;
    const verdict = Math.abs(a - b) <= 0.03 ? 'about as varied as the photographs' : (a > b ? 'less varied than the photographs' : 'more varied than the photographs');
    said.push(`How varied are they? MS-SSIM says how alike two faces are (1 would be identical): pairs of its faces score ${a.toFixed(2)}, pairs of photographs ${b.toFixed(2)} — ${verdict}.`);
  }
  return said.join(' ');
}

// ---------------------------------------------------------------- generating and drawing

let renderCount = 0;

// How long a WebGPU generate request may take before the GPU counts as lost: generous (50× the
// measured time per face, at least 20 s), since a slow GPU must not be mistaken for a lost one.
const GPU_DEADLINE_MIN_MS = 20000;
const GPU_DEADLINE_FACTOR = 50;

// Draws `latents` with the final generator (stage −1), a growth stage, or — with `fade` — a
// snapshot taken while a level faded in; each runs at the fade weight it was taken at.
async function render(latents, stage = -1, fade = undefined, engine = state.engine) {
  const fields = fade === undefined ? { latents, stage } : { latents, fade };
  fields.truncation = state.truncation;
  const faces = Math.max(1, Math.round(latents.length / state.model.latentSize));
  // A worker still starting (a restart on the CPU) has no model yet: this drawing is dropped.
  if (!engine.backend) throw stopped('the generator is restarting');
  const deadline = engine.backend === 'webgpu'
    ? Math.max(GPU_DEADLINE_MIN_MS, GPU_DEADLINE_FACTOR * (state.msPerFace || 1000) * faces)
    : 0;
  let reply;
  try {
    reply = await engine.request('generate', fields, [], deadline);
  } catch (err) {
    // On WebGPU a failed generate means the GPU itself failed (a lost or poisoned device): the
    // same request on a good device does not fail. Stop this worker; its death restarts on the CPU.
    if (engine.backend === 'webgpu' && !engine.dead) engine.die(firstLine(err.message));
    throw engine.dead ? stopped(err.message) : err;
  }
  document.body.dataset.lastMs = reply.ms.toFixed(2);
  document.body.dataset.lastCount = String(reply.count);
  return reply;
}

// Draws face `index` of a reply; `shows` (if given) records what it is, e.g. a blend weight.
function draw(canvas, reply, index = 0, shows = undefined) {
  const { size, pixels } = reply;
  const per = size * size * 4;
  if (canvas.width !== size) canvas.width = size;
  if (canvas.height !== size) canvas.height = size;
  const image = new ImageData(pixels.slice(index * per, (index + 1) * per), size, size);
  canvas.getContext('2d').putImageData(image, 0, 0);
  canvas.dataset.rendered = String(++renderCount);
  if (shows !== undefined) canvas.dataset.shows = shows;
}

function latentRow(latents, i) {
  const n = state.model.latentSize;
  return latents.slice(i * n, (i + 1) * n);
}

function randomSeeds(count) {
  return Array.from(crypto.getRandomValues(new Uint32Array(count)), String);
}

// Runs `fn` with the latest arguments only: calls that arrive while one runs are coalesced.
function latest(fn) {
  let running = false;
  let queued = null;
  return async (...args) => {
    queued = args;
    if (running) return;
    running = true;
    try {
      while (queued) {
        const next = queued;
        queued = null;
        await fn(...next);
      }
    } catch (err) {
      report('', err);
    } finally {
      running = false;
    }
  };
}

// ---------------------------------------------------------------- the grid

// The grid's tiles, empty until drawn: made before a shared link's face opens, so the page's
// layout does not move under it when the grid fills in.
function buildGrid() {
  const grid = $('grid');
  if (grid.children.length) return;
  for (let i = 0; i < GRID_FACES; i++) {
    const item = document.createElement('div');
    item.setAttribute('role', 'listitem');
    const button = document.createElement('button');
    button.type = 'button';
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = state.model.resolution;
    button.append(canvas);
    button.addEventListener('click', () => {
      if (!button.face) return;
      showError('');
      markTile(button);
      state.opener = button; // focus comes back here on closing
      openFace(button.face, { step: true });
    });
    item.append(button);
    grid.append(item);
  }
}

// Draws the grid: new random faces, or with `keep` the faces it shows (after the truncation
// changed).
async function showGrid({ keep = false } = {}) {
  const grid = $('grid');
  buildGrid();
  $('new-faces').disabled = true;
  document.body.dataset.grid = 'drawing';
  try {
    const buttons = [...grid.querySelectorAll('button')];
    const kept = keep && buttons.every((b) => b.face);
    const seeds = kept ? buttons.map((b) => b.face.seed) : randomSeeds(GRID_FACES);
    const { latents } = await state.engine.request('latents', { seeds });
    const started = performance.now();
    const replies = await drawGrid(latents, (i, reply, at, engine) => {
      const button = buttons[i];
      button.face = { latent: latentRow(latents, i), seed: seeds[i] };
      button.setAttribute('aria-label', `Face of seed ${seeds[i]}; open it`);
      button.dataset.seed = seeds[i];
      button.firstChild.dataset.worker = engine.name || 'main';
      draw(button.firstChild, reply, at);
      if (!performance.getEntriesByName('first-face').length) performance.mark('first-face');
    });
    // The visitor's measure: the grid's time from asking to its last face, per face; beside it,
    // the workers' own time per face (without messages and waiting).
    state.msPerFace = (performance.now() - started) / GRID_FACES;
    if (!performance.getEntriesByName('first-grid').length) performance.mark('first-grid');
    const computeMs = replies.reduce((sum, { reply }) => sum + reply.ms / reply.count, 0);
    document.body.dataset.computeMsPerFace = (computeMs / GRID_FACES).toFixed(2);
    setStatus();
    // Blend two faces starts with the first two of the grid, never with empty boxes.
    if (!state.a && !state.b && buttons.length >= 2) {
      [state.a, state.b] = [buttons[0].face, buttons[1].face];
      draw($('canvas-a'), replies[0].reply, replies[0].at);
      draw($('canvas-b'), replies[1].reply, replies[1].at);
      $('mix').disabled = false;
      $('play').disabled = false;
      $('record').disabled = false;
      mix(Number($('mix').value)).catch((err) => err.stopped || report('Could not blend: ', err));
    }
  } catch (err) {
    report('Could not make faces: ', err);
  } finally {
    $('new-faces').disabled = false;
    document.body.dataset.grid = 'done';
  }
}

// Draws the grid's `latents`, calling `place(i, reply, at, engine)` as each face is ready (face
// `i` is face `at` of `reply`). WebGPU draws them as one batch; on the CPU every ready worker
// takes one face at a time, and helpers that get ready meanwhile join. A helper that fails
// hands its face back. Resolves with every face's { reply, at }.
function drawGrid(latents, place) {
  const faces = Math.round(latents.length / state.model.latentSize);
  const done = new Array(faces);
  if (state.backend !== 'cpu') {
    return render(latents).then((reply) => {
      for (let i = 0; i < faces; i++) {
        place(i, reply, i, state.engine);
        done[i] = { reply, at: i };
      }
      return done;
    });
  }
  return new Promise((resolve, reject) => {
    const queue = [...Array(faces).keys()];
    let left = faces;
    let failed = false;
    const working = new Set();
    const job = {
      join(engine) {
        if (working.has(engine) || failed) return;
        working.add(engine);
        work(engine);
      },
    };
    async function work(engine) {
      while (queue.length && !failed) {
        const i = queue.shift();
        try {
          const reply = await render(latentRow(latents, i), -1, undefined, engine);
          if (failed) return;
          place(i, reply, 0, engine);
          done[i] = { reply, at: 0 };
          if (--left === 0) {
            state.gridJob = null;
            resolve(done);
          }
        } catch (err) {
          queue.unshift(i);
          working.delete(engine);
          if (engine === state.engine) {
            failed = true;
            state.gridJob = null;
            reject(err);
          } else {
            job.join(state.engine); // the face handed back is drawn even if the rest are done
          }
          return;
        }
      }
      working.delete(engine);
    }
    state.gridJob = job;
    job.join(state.engine);
    for (const h of readyHelpers()) job.join(h);
  });
}

// ---------------------------------------------------------------- one face

// Closes the opened face and gives the keyboard focus back to what opened it.
// A face opened from the page is a step in the browser's history: Back closes it, as Close does
// (which goes back itself, so Back does not reopen it).
function closeDetail() {
  if (history.state && history.state.face) {
    history.back(); // the hash change then closes it
    return;
  }
  hideDetail();
  if (location.hash && location.hash !== '#') history.replaceState(null, '', location.pathname + location.search);
}

function hideDetail() {
  $('detail').hidden = true;
  markTile(null);
  const back = state.opener && state.opener.isConnected ? state.opener : $('new-faces');
  state.opener = null;
  back.focus();
}

// Marks the grid's tile of the opened face (or none).
function markTile(button) {
  for (const b of $('grid').querySelectorAll('button')) {
    if (b === button) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
}

// ---------------------------------------------------------------- face edits

// A label for each direction: the supervised ones by their attribute, the others as found.
function directionLabel(d) {
  if (d.name === 'age') return 'Age (younger ← → older)';
  if (d.name === 'gender') return 'Gender (male ← → female)';
  const k = d.name.replace(/^sefa/, '');
  return `Unsupervised direction ${k} (found without labels)`;
}

// One slider per direction of the model (−3 … 3 standard deviations), or nothing without any.
function buildEdits() {
  const list = state.model.directions || [];
  const box = $('edit-sliders');
  box.replaceChildren();
  $('edits').hidden = !list.length;
  for (const d of list) {
    const row = document.createElement('div');
    row.className = 'edit-row';
    const label = document.createElement('label');
    label.htmlFor = `edit-${d.name}`;
    label.textContent = directionLabel(d);
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', id: `edit-${d.name}`, min: '-3', max: '3', step: '0.1', value: '0' });
    input.dataset.direction = d.name;
    const out = document.createElement('output');
    out.htmlFor = input.id;
    out.textContent = '0.0';
    input.addEventListener('input', () => {
      out.textContent = Number(input.value).toFixed(1);
      applyEdits();
    });
    row.append(label, input, out);
    box.append(row);
  }
}

// Sets the sliders to `edits` (`[[name, amount], …]`), the others to 0.
function setEditSliders(edits) {
  const amounts = new Map(edits);
  for (const input of $('edit-sliders').querySelectorAll('input')) {
    input.value = String(amounts.get(input.dataset.direction) ?? 0);
    input.nextElementSibling.textContent = Number(input.value).toFixed(1);
  }
}

// The link of `face` (a seed's, or a latent's) as drawn now, with `edits` when given.
function makeLink(face, edits = []) {
  const what = face.seed != null ? { seed: face.seed } : { latent: face.latent };
  return state.engine.request('make-link', { ...what, truncation: state.truncation, edits });
}

// Redraws the opened face moved along every slider's direction; its link holds the face it
// started from and the edits (`#seed=5&edit=age:2.5`), so a shared edit opens as it was made,
// sliders and all.
const applyEdits = latest(async () => {
  if (!state.editBase) return;
  const edits = Array.from($('edit-sliders').querySelectorAll('input'))
    .map((i) => [i.dataset.direction, Number(i.value)])
    .filter(([, amount]) => amount !== 0);
  let latent = state.editBase.latent;
  let link = state.editBase.link;
  if (edits.length) {
    ({ latent } = await state.engine.request('edit', { latent, edits }));
    // The base as its own link stores it (a seed, or a latent already in half precision).
    ({ link } = await makeLink(state.editBase.face, edits));
  }
  state.current = edits.length ? { latent, seed: null } : state.editBase.face;
  draw($('detail-canvas'), await render(latent), 0, edits.length ? `edited ${edits.map(([n, a]) => `${n} ${a.toFixed(1)}`).join(' ')}` : 'unedited');
  $('detail-label').textContent = edits.length ? `${state.editBase.label}, edited` : state.editBase.label;
  history.replaceState(history.state, '', `#${link}`);
  $('link-text').value = shareableLink(link);
});

// Opens `face`; `step`: as a new step in the browser's history (a visitor's click), so that Back
// closes it.
async function openFace(face, { focus = true, step = false, keepEdits = false } = {}) {
  const wasOpen = !$('detail').hidden;
  // Keyboard focus moves into the opened face (its Close button first), and back on closing.
  const from = document.activeElement;
  if (focus && !state.opener && from && from !== document.body && !$('detail').contains(from)) state.opener = from;
  // A latent's link holds it in half precision: show the face as the link will reproduce it.
  const made = await makeLink(face);
  if (face.seed == null) face = { latent: made.latent, seed: null };
  state.current = face;
  $('detail').hidden = false;
  $('detail-label').textContent = face.seed != null ? `Seed ${face.seed}` : 'A latent from a blend or a link';
  // Edits start from this face.
  state.editBase = { face, latent: face.latent, link: made.link, label: $('detail-label').textContent };
  if (!keepEdits) setEditSliders([]);
  const reply = await render(face.latent);
  draw($('detail-canvas'), reply, 0, 'unedited');
  if (step && !wasOpen) history.pushState({ face: true }, '', `#${made.link}`);
  else history.replaceState(history.state, '', `#${made.link}`);
  $('link-text').value = shareableLink(made.link);
  if (focus) {
    // The face in view: on a phone the section sits below the grid.
    const seen = $('detail-canvas').getBoundingClientRect();
    if (seen.top < 0 || seen.bottom > window.innerHeight) $('detail').scrollIntoView({ block: 'start' });
    $('close-detail').focus({ preventScroll: true });
  }
  await showStages();
}

async function followLink() {
  const hash = location.hash;
  if (!hash || hash === '#') return;
  try {
    const parsed = await state.engine.request('parse-link', { hash });
    if (parsed.truncation !== undefined) setTruncation(parsed.truncation);
    // A link's edits set the sliders (the face opens with them applied).
    const edits = parsed.edits || [];
    if (edits.length) setEditSliders(edits);
    const options = { keepEdits: edits.length > 0 };
    if (parsed.kind === 'seed') {
      const { latents } = await state.engine.request('latents', { seeds: [parsed.seed] });
      await openFace({ latent: latents, seed: parsed.seed }, options);
    } else if (parsed.kind === 'latent') {
      await openFace({ latent: parsed.latent, seed: null }, options);
    }
    if (edits.length) await applyEdits();
    showError('');
  } catch (err) {
    if (err.stopped) return;
    showError(`This link does not name a face: ${err.message}. Showing new faces instead.`);
  }
}

function download() {
  if (!state.current) return;
  const out = document.createElement('canvas');
  out.width = out.height = 256;
  const ctx = out.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage($('detail-canvas'), 0, 0, 256, 256);
  out.toBlob((blob) => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = state.current.seed != null ? `face-seed${state.current.seed}.png` : 'face.png';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }, 'image/png');
}

// The face's link for others: this page and model, without `?backend=` (which would force the
// visitor's choice of backend on everyone who opens it).
function shareableLink(link) {
  const url = new URL(location.href);
  url.searchParams.delete('backend');
  url.hash = link;
  return url.href;
}

async function copyLink() {
  const text = $('link-text').value;
  try {
    await navigator.clipboard.writeText(text);
    $('copy-link').textContent = 'Copied';
  } catch {
    $('link-text').select();
    $('copy-link').textContent = 'Press Ctrl+C';
  }
  setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 1500);
}

// ---------------------------------------------------------------- blending

async function setEnd(which) {
  if (!state.current) return;
  state[which] = state.current;
  const reply = await render(state.current.latent);
  draw($(`canvas-${which}`), reply);
  const ready = state.a && state.b;
  $('mix').disabled = !ready;
  $('play').disabled = !ready;
  $('record').disabled = !ready || Boolean(state.recording);
  if (ready) await mix(Number($('mix').value));
}

const mix = latest(async (t) => {
  if (!state.a || !state.b || !state.engine.backend) return;
  $('mix-value').textContent = t.toFixed(2);
  const { latent } = await state.engine.request('blend', { a: state.a.latent, b: state.b.latent, t });
  state.mixLatent = latent;
  draw($('canvas-mix'), await render(latent), 0, `blend ${t.toFixed(2)}`);
  $('open-mix').disabled = false;
});

// One loop at a time: Play (A ↔ B along the slider) or the random walk; either button stops it.
async function animate(button, frames) {
  if (state.playing) {
    state.playing = false;
    return;
  }
  state.playing = button;
  const label = $(button).textContent;
  $(button).textContent = 'Stop';
  $(button).setAttribute('aria-pressed', 'true');
  try {
    await frames();
  } catch (err) {
    report('Playing stopped: ', err);
  } finally {
    state.playing = false;
    if (state.recording) {
      // Stopped before the loop ended: the video holds what was drawn.
      const r = state.recording;
      state.recording = null;
      r.recorder.stop();
    }
    $(button).textContent = label;
    $(button).setAttribute('aria-pressed', 'false');
    // A walk drew over the blend: show the blend the slider says again.
    if (state.a && state.b && !state.engine.dead) mix(Number($('mix').value));
  }
}

// ---------------------------------------------------------------- videos

const VIDEO_SIZE = 256;

// Saves the blend as a WebM video made in the page (MediaRecorder): the next loop of what
// plays — a walk's WALK_FRAMES frames, or Play's A → B → A — starting Play when nothing does.
// Each frame drawn in the middle box is scaled up and handed to the recorder.
async function recordVideo() {
  if (state.recording || !state.a || !state.b) return;
  if (typeof MediaRecorder === 'undefined') {
    showError('This browser cannot make videos (no MediaRecorder).');
    return;
  }
  const type = ['video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm'].find((t) => MediaRecorder.isTypeSupported(t));
  if (!type) {
    showError('This browser cannot make WebM videos.');
    return;
  }
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = VIDEO_SIZE;
  const stream = canvas.captureStream(0);
  const recorder = new MediaRecorder(stream, { mimeType: type });
  const chunks = [];
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  const what = state.playing === 'walk' ? 'walk' : 'blend';
  const frames = what === 'walk' ? WALK_FRAMES : 2 * 45;
  const done = new Promise((resolve) => { recorder.onstop = resolve; });
  state.recording = { canvas, track: stream.getVideoTracks()[0], left: frames, recorder };
  $('record').disabled = true;
  $('record').textContent = 'Recording…';
  recorder.start();
  const startedPlay = !state.playing;
  if (startedPlay) play();
  await done;
  if (startedPlay && state.playing === 'play') state.playing = false; // Play was only for the video
  const blob = new Blob(chunks, { type: 'video/webm' });
  const link = $('video-link');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = `${what}.webm`;
  link.textContent = `Download the video (WebM, ${(blob.size / 1e6).toFixed(1)} MB)`;
  // What was made, for a look from outside (the page's policy keeps blob: URLs from fetch);
  // written before the link shows, so whoever sees the link sees them.
  const head = new Uint8Array(await blob.slice(0, 4).arrayBuffer());
  link.dataset.bytes = String(blob.size);
  link.dataset.head = Array.from(head, (b) => b.toString(16).padStart(2, '0')).join('');
  link.hidden = false;
  $('record').textContent = 'Save as a video';
  $('record').disabled = false;
  link.focus();
}

// Hands the middle box's new frame to the recorder, if one is recording.
function recordFrame() {
  const r = state.recording;
  if (!r) return;
  const ctx = r.canvas.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage($('canvas-mix'), 0, 0, VIDEO_SIZE, VIDEO_SIZE);
  r.track.requestFrame();
  if (--r.left <= 0) {
    state.recording = null;
    r.recorder.stop();
  }
}

// At most 30 frames a second; always yield to the page between frames.
function nextFrame(started) {
  const wait = Math.max(0, 1000 / 30 - (performance.now() - started));
  return new Promise((resolve) => setTimeout(resolve, wait));
}

// Play: the blend walks from A to B and back, the slider moving with it.
function play() {
  return animate('play', async () => {
    const step = 1 / 45; // 1.5 s each way at 30 frames a second
    let t = Number($('mix').value);
    let direction = t >= 1 ? -1 : 1;
    while (state.playing) {
      const started = performance.now();
      t = Math.min(1, Math.max(0, t + direction * step));
      if (t === 0 || t === 1) direction = -direction;
      $('mix').value = String(t);
      $('mix-value').textContent = t.toFixed(2);
      const { latent } = await state.engine.request('blend', { a: state.a.latent, b: state.b.latent, t });
      const reply = await render(latent);
      if (!state.playing) break;
      state.mixLatent = latent;
      draw($('canvas-mix'), reply, 0, `play ${t.toFixed(2)}`);
      recordFrame();
      await nextFrame(started);
    }
  });
}

// The paper's random walk: a looping, smooth path through latent space.
function walk() {
  return animate('walk', async () => {
    const [seed] = randomSeeds(1);
    const { latents } = await state.engine.request('walk', { seed, frames: WALK_FRAMES, sigma: WALK_SIGMA_FRAMES });
    for (let frame = 0; state.playing; frame = (frame + 1) % WALK_FRAMES) {
      const started = performance.now();
      const latent = latentRow(latents, frame);
      const reply = await render(latent);
      if (!state.playing) break;
      state.mixLatent = latent;
      draw($('canvas-mix'), reply, 0, `walk ${frame}`);
      recordFrame();
      $('open-mix').disabled = false;
      await nextFrame(started);
    }
  });
}

// ---------------------------------------------------------------- growth stages

function buildStages() {
  const strip = $('stages');
  strip.replaceChildren();
  const stages = state.model.stages;
  if (!stages.length) {
    strip.textContent = 'This model was exported without its growth stages.';
    return;
  }
  for (const s of stages) {
    const item = document.createElement('div');
    item.setAttribute('role', 'listitem');
    const button = document.createElement('button');
    button.type = 'button';
    button.setAttribute('aria-label', `Stage ${stages.indexOf(s) + 1}: ${s.resolution}×${s.resolution}`);
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = s.resolution;
    const caption = document.createElement('span');
    caption.textContent = `${s.resolution}×${s.resolution}`;
    button.append(canvas, caption);
    button.addEventListener('click', () => selectStage(stages.indexOf(s)));
    item.append(button);
    strip.append(item);
  }
  state.stage = stages.length - 1;
}

async function showStages() {
  const stages = state.model.stages;
  if (!state.stagesLoaded || !state.current || !stages.length) return;
  const buttons = $('stages').querySelectorAll('button');
  for (const [i, s] of stages.entries()) {
    draw(buttons[i].firstChild, await render(state.current.latent, s.index));
  }
  await selectStage(state.stage);
}

// The fade-in snapshots of the level a stage belongs to, in order of α.
function fadesOf(s) {
  return (state.model.fades || []).filter((f) => f.level === s.level);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Steps through every stage, each from the start of its fade-in to its end, then the next; a
// second press stops it. The growth stages (and each level's fade snapshots) load on the way.
async function playGrowth() {
  const button = $('play-growth');
  if (state.growthPlaying) {
    state.growthPlaying = false;
    return;
  }
  state.growthPlaying = true;
  button.setAttribute('aria-pressed', 'true');
  button.textContent = 'Stop';
  try {
    if (!state.stagesLoaded) await loadStages();
    if (!state.stagesLoaded) return; // loading failed, and said so
    const stages = state.model.stages;
    for (let i = 0; i < stages.length && state.growthPlaying; i++) {
      const fades = fadesOf(stages[i]);
      await selectStage(i, 0);
      await sleep(fades.length ? 400 : 800);
      for (let at = 1; at <= fades.length && state.growthPlaying; at++) {
        $('alpha').value = String(at);
        await fade(at);
        await sleep(at === fades.length ? 800 : 400);
      }
    }
  } catch (err) {
    report('Could not play the growth: ', err);
  } finally {
    state.growthPlaying = false;
    button.setAttribute('aria-pressed', 'false');
    button.textContent = 'Play the growth';
  }
}

async function selectStage(index, at = undefined) {
  const stages = state.model.stages;
  if (!state.stagesLoaded || !stages.length) return;
  state.stage = Math.max(0, Math.min(stages.length - 1, index));
  const s = stages[state.stage];
  $('stages').querySelectorAll('button').forEach((b, i) => b.setAttribute('aria-current', String(i === state.stage)));
  // A stepper button that disables itself hands focus to its twin instead of dropping it.
  for (const [id, twin, end] of [['stage-prev', 'stage-next', state.stage === 0], ['stage-next', 'stage-prev', state.stage === stages.length - 1]]) {
    const had = document.activeElement === $(id);
    $(id).disabled = end;
    if (had && end && !$(twin).disabled) $(twin).focus();
  }
  // The slider steps through the snapshots kept while this level faded in, then the stage itself.
  const fades = fadesOf(s);
  const slider = $('alpha');
  slider.max = String(fades.length);
  slider.value = String(fades.length);
  slider.disabled = !fades.length || !state.current;
  $('fade-controls').hidden = !fades.length;
  const note = $('fade-note');
  note.hidden = fades.length > 0;
  note.textContent = s.level === 0
    ? 'Training starts at 4×4: nothing fades in here.'
    : 'This model was exported without snapshots from its fade-ins (it was trained before the trainer kept them), so its fade-in cannot be replayed.';
  const shown = at === undefined ? fades.length : Math.min(at, fades.length);
  slider.value = String(shown);
  await fade(shown);
}

// Shows position `at` of the chosen stage's slider: a fade-in snapshot, or (last) the stage.
const fade = latest(async (at) => {
  const s = state.model.stages[state.stage];
  if (!s) return;
  const fades = fadesOf(s);
  const f = at < fades.length ? fades[at] : null;
  const alpha = f ? f.alpha : s.alpha;
  $('alpha-value').textContent = f ? `α ${alpha.toFixed(2)}` : (s.alpha < 1 ? `α ${alpha.toFixed(2)}` : 'done');
  $('alpha').setAttribute('aria-valuetext', f ? `fading in, α ${alpha.toFixed(2)}, after ${f.kimg.toFixed(1)} kimg` : 'the finished stage');
  const label = `Stage ${state.stage + 1} of ${state.model.stages.length}: ${s.resolution}×${s.resolution}`;
  $('stage-label').textContent = f
    ? `${label} fading in over ${s.resolution / 2}×${s.resolution / 2}, α ${alpha.toFixed(2)} after ${f.kimg.toFixed(1)} kimg`
    : `${label} after ${Math.round(s.kimg)} kimg${s.alpha < 1 ? `, still fading in (α ${s.alpha.toFixed(2)})` : ''}`;
  if (!state.current) return;
  if (f && !state.fadesLoaded.has(s.level)) {
    $('stages-progress').hidden = false;
    try {
      await state.engine.request('load-fades', { level: s.level });
      state.fadesLoaded.add(s.level);
    } catch (err) {
      report('Could not load the fade-in snapshots: ', err);
      return;
    } finally {
      $('stages-progress').hidden = true;
    }
  }
  const pixels = f ? await render(state.current.latent, undefined, f.index) : await render(state.current.latent, s.index);
  draw($('stage-canvas'), pixels, 0, f ? `stage ${state.stage} fade ${alpha.toFixed(2)}` : `stage ${state.stage} alpha ${alpha.toFixed(2)}`);
});

// ---------------------------------------------------------------- wiring

// ---------------------------------------------------------------- truncation

// Sets ψ for every face drawn from now on (the slider follows, e.g. from a link).
function setTruncation(psi) {
  state.truncation = Math.min(1, Math.max(0, psi));
  $('truncation').value = String(state.truncation);
  $('truncation-value').textContent = `ψ ${state.truncation.toFixed(2)}`;
  document.body.dataset.truncation = state.truncation.toFixed(2);
}

// Redraws what is on show with the new ψ: the grid's faces, the opened face (and its link), the
// blend's ends and middle.
const redrawAll = latest(async () => {
  if (!state.model) return;
  if (!$('detail').hidden && state.editBase) {
    // The opened face again, with its edits.
    await openFace(state.editBase.face, { focus: false, keepEdits: true });
    const edited = [...$('edit-sliders').querySelectorAll('input')].some((i) => Number(i.value) !== 0);
    if (edited) await applyEdits();
  }
  if (state.a && state.b) {
    draw($('canvas-a'), await render(state.a.latent));
    draw($('canvas-b'), await render(state.b.latent));
    await mix(Number($('mix').value));
  }
  if (document.body.dataset.grid !== 'drawing') await showGrid({ keep: true });
});

function wire() {
  $('new-faces').addEventListener('click', () => {
    showError(''); // the visitor has moved on from whatever went wrong before
    showGrid();
  });
  $('close-detail').addEventListener('click', closeDetail);
  $('download').addEventListener('click', download);
  $('copy-link').addEventListener('click', copyLink);
  $('use-a').addEventListener('click', () => setEnd('a'));
  $('use-b').addEventListener('click', () => setEnd('b'));
  $('mix').addEventListener('input', (e) => mix(Number(e.target.value)));
  $('open-mix').addEventListener('click', () => state.mixLatent && openFace({ latent: state.mixLatent, seed: null }, { step: true }));
  $('play').addEventListener('click', play);
  $('record').addEventListener('click', recordVideo);
  $('walk').addEventListener('click', walk);
  $('edit-reset').addEventListener('click', () => {
    setEditSliders([]);
    applyEdits();
  });
  $('load-stages').addEventListener('click', loadStages);
  $('stage-prev').addEventListener('click', () => selectStage(state.stage - 1));
  $('stage-next').addEventListener('click', () => selectStage(state.stage + 1));
  $('play-growth').addEventListener('click', playGrowth);
  $('model-choice').addEventListener('change', (e) => switchModel(e.target.value));
  $('alpha').addEventListener('input', (e) => fade(Number(e.target.value)));
  $('truncation').addEventListener('input', (e) => {
    setTruncation(Number(e.target.value));
    redrawAll();
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('detail').hidden) closeDetail();
  });
  window.addEventListener('hashchange', () => {
    if (!state.model) return;
    // Back past an opened face (or a link emptied by hand) closes it; another link opens its face.
    if (!location.hash || location.hash === '#') {
      if (!$('detail').hidden) hideDetail();
    } else {
      followLink();
    }
  });
}

// The link to this project's source, when the page's build was told where it is published.
function showSourceLink() {
  const meta = document.querySelector('meta[name="pggan-source"]');
  const url = meta && meta.content;
  if (!url || !/^https?:\/\//.test(url)) return;
  const a = document.createElement('a');
  a.href = url;
  a.textContent = 'Its source code';
  $('source-note').replaceChildren(a, ' is published, with the model card and the measurements.');
}

wire();
showSourceLink();
// What a click handler did not catch: a stopped worker is reported by its death, anything else here.
window.addEventListener('unhandledrejection', (event) => {
  event.preventDefault();
  report('', event.reason instanceof Error ? event.reason : new Error(String(event.reason)));
});
Promise.all([chooseBackend(), shippedModels()]).then(([{ backend, notice }, models]) => {
  state.models = models;
  offerModels();
  boot(backend, notice);
});
