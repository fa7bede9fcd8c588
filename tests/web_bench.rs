//! The page's benchmark, in headless Chromium on this machine, for each model the page ships
//! (`www/models/index.json`; or `--model NAME` under www/models, or `--model-dir` an export): time to first face; warm, a grid of 16 faces from the
//! click to its last face, per face ("grid ms/face", what a visitor waits), and the workers' own
//! time per face inside it; one opened face; on WebGPU and on the CPU fallback; the longest
//! main-thread task while generating; the first and a second visit (first face, full grid,
//! bytes downloaded: the second reads the engine and the model from Cache Storage); and the
//! bytes of a first visit (wasm and model, raw and gzip).
//!
//!     cargo run --release -p pggan-e2e --bin web-bench [-- --model utk64 --rounds 5 --only cpu]
//!     cargo run --release -p pggan-e2e --bin web-bench -- --model-dir path/to/export

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use pggan_e2e::browser::Browser;
use pggan_e2e::server::Server;
use pggan_e2e::web_dist;
use serde_json::json;

const LONG_TASKS: &str = "window.__longTasks = []; new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push([e.startTime, e.duration]); }).observe({ type: 'longtask', buffered: true });";

fn gzip_len(bytes: &[u8]) -> usize {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap().len()
}

/// One visit: first face (ms from navigation), the full grid (ms), bytes downloaded.
type Visit = (f64, f64, u64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model_dir = opt("--model-dir").map(std::path::PathBuf::from);
    let rounds: usize = opt("--rounds").and_then(|r| r.parse().ok()).unwrap_or(5);
    // `--only cpu` or `--only webgpu`: that backend's row alone.
    let only = opt("--only");
    if model_dir.is_some() {
        return bench("bench", model_dir, rounds, only.as_deref());
    }
    if let Some(model) = opt("--model") {
        return bench(&model, None, rounds, only.as_deref());
    }
    // Every model the page lists, its default first.
    let index = web_dist().join("models").join("index.json");
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&index)
            .unwrap_or_else(|e| panic!("reading {}: {e}", index.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", index.display()));
    let mut names: Vec<String> = index["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(String::from))
        .collect();
    names.sort_by_key(|n| Some(n.as_str()) != index["default"].as_str());
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("== model {name}");
        bench(name, None, rounds, only.as_deref());
    }
}

/// The benchmark for one model (`model` under www/models, or the export in `model_dir`).
fn bench(model: &str, model_dir: Option<PathBuf>, rounds: usize, only: Option<&str>) {
    let dist = web_dist();
    let mounts = model_dir
        .iter()
        .map(|d| ("/models/bench/".to_string(), d.clone()))
        .collect();
    let server = Server::start(&dist, mounts);
    let query = format!("model={model}&");
    let wait = Duration::from_secs(600);

    println!("page benchmark ({} rounds of 16 faces per backend)", rounds);
    println!(
        "{:<22} {:>14} {:>14} {:>16} {:>14} {:>16}",
        "backend",
        "first face ms",
        "grid ms/face",
        "worker ms/face",
        "one face ms",
        "longest task ms"
    );
    let total_sent = |server: &Server| server.bytes_sent().values().sum::<u64>();
    // Per row: (label, first visit, second visit).
    let mut visits: Vec<(&str, Visit, Visit)> = Vec::new();
    let marks = "[performance.getEntriesByName('first-face')[0].startTime, performance.getEntriesByName('first-grid')[0].startTime]";
    for (label, webgpu, backend) in [
        ("WebGPU (this machine)", true, "backend=webgpu"),
        ("the page's own choice", true, ""),
        ("CPU fallback", true, "backend=cpu"),
    ] {
        if only.is_some_and(|o| !backend.ends_with(o)) {
            continue;
        }
        let mut b = Browser::launch(webgpu);
        b.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": LONG_TASKS }),
        );
        let sent_before = total_sent(&server);
        b.goto(&server.url(&format!("/?{query}{backend}")));
        let state = b.wait_for("document.body && ['ready','error'].includes(document.body.dataset.state) && document.body.dataset.state", wait);
        assert_eq!(
            state,
            "ready",
            "the page did not load: {}",
            b.eval("document.getElementById('error').textContent")
        );
        b.wait_for("performance.getEntriesByName('first-face').length", wait);
        b.wait_for("document.body.dataset.grid === 'done'", wait);
        let first_visit = {
            let m = b.eval(marks);
            (
                m[0].as_f64().unwrap(),
                m[1].as_f64().unwrap(),
                total_sent(&server) - sent_before,
            )
        };
        let first = b
            .eval("performance.getEntriesByName('first-face')[0].startTime")
            .as_f64()
            .unwrap();
        let (mut batch, mut compute) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let before = b
                .eval("Number(document.querySelector('#grid canvas').dataset.rendered)")
                .as_f64()
                .unwrap();
            b.eval("document.getElementById('new-faces').click()");
            b.wait_for(
                &format!(
                    "Number(document.querySelector('#grid canvas').dataset.rendered) > {before} && document.body.dataset.grid === 'done'"
                ),
                wait,
            );
            batch.push(
                b.eval("Number(document.body.dataset.msPerFace)")
                    .as_f64()
                    .unwrap(),
            );
            compute.push(
                b.eval("Number(document.body.dataset.computeMsPerFace)")
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        if let Ok(expr) = std::env::var("WEB_BENCH_PRINT") {
            println!("{}", b.eval(&expr));
        }
        let mut single = Vec::new();
        for i in 0..rounds {
            let before = b
                .eval("Number(document.getElementById('detail-canvas').dataset.rendered || 0)")
                .as_f64()
                .unwrap();
            b.eval(&format!(
                "document.querySelector('#grid div:nth-child({}) button').click()",
                i % 16 + 1
            ));
            b.wait_for(&format!("Number(document.getElementById('detail-canvas').dataset.rendered || 0) > {before}"), wait);
            // The detail view renders one face; the stage strip follows with more requests.
            b.wait_for("document.body.dataset.lastCount === '1'", wait);
            std::thread::sleep(Duration::from_millis(200));
            single.push(
                b.eval("Number(document.body.dataset.lastMs)")
                    .as_f64()
                    .unwrap(),
            );
        }
        let longest = b
            .eval(&format!(
                "Math.max(0, ...window.__longTasks.filter(([t]) => t >= {first}).map(([, d]) => d))"
            ))
            .as_f64()
            .unwrap();
        let all_long = b.eval("window.__longTasks.length").as_u64().unwrap();
        // The observer works: a deliberate 120 ms task on the main thread is seen.
        b.eval("setTimeout(() => { const t = performance.now(); while (performance.now() - t < 120) {} }, 0); 0");
        std::thread::sleep(Duration::from_millis(300));
        let seen = b.eval("window.__longTasks.length").as_u64().unwrap();
        assert!(
            seen > all_long,
            "the long-task observer missed a deliberate 120 ms task"
        );
        println!(
            "{label:<22} {first:>14.0} {:>14.1} {:>16.1} {:>14.1} {longest:>16.0}",
            median(batch),
            median(compute),
            median(single)
        );
        println!(
            "{:<22} ({all_long} main-thread tasks over 50 ms in the whole visit, loading included)",
            ""
        );
        // A second visit in the same browser: what the page kept in Cache Storage is not
        // downloaded again.
        let sent_before = total_sent(&server);
        b.goto(&server.url(&format!("/?{query}{backend}")));
        b.wait_for("document.body && document.body.dataset.state === 'ready' && document.body.dataset.grid === 'done' && performance.getEntriesByName('first-grid').length", wait);
        let m = b.eval(marks);
        let second_visit = (
            m[0].as_f64().unwrap(),
            m[1].as_f64().unwrap(),
            total_sent(&server) - sent_before,
        );
        visits.push((label, first_visit, second_visit));
    }

    println!("\nvisits (from navigation): first face, the full grid of 16, bytes downloaded");
    println!(
        "{:<22} {:>28} {:>28}",
        "backend", "first visit", "second visit"
    );
    let cell = |(face, grid, bytes): Visit| {
        format!(
            "{face:>6.0} / {grid:>6.0} ms {:>6.2} MB",
            bytes as f64 / 1e6
        )
    };
    for (label, first, second) in &visits {
        println!("{label:<22} {:>28} {:>28}", cell(*first), cell(*second));
    }

    println!("\nbytes transferred for one page load (first visit):");
    let sent = server.bytes_sent();
    let (mut wasm, mut wasm_gz, mut model_raw, mut model_gz, mut other, mut other_gz) =
        (0, 0, 0, 0, 0, 0);
    let mut seen = std::collections::BTreeSet::new();
    for path in sent.keys() {
        let rel = path.trim_start_matches('/');
        let file = if rel.is_empty() {
            dist.join("index.html")
        } else {
            dist.join(rel)
        };
        let file = match (&model_dir, rel.strip_prefix("models/bench/")) {
            (Some(dir), Some(inside)) => dir.join(inside),
            _ => file,
        };
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        if !seen.insert(file.clone()) {
            continue;
        }
        let (raw, gz) = (bytes.len(), gzip_len(&bytes));
        if rel.ends_with(".wasm") {
            (wasm, wasm_gz) = (wasm + raw, wasm_gz + gz);
        } else if rel.starts_with("models/") {
            (model_raw, model_gz) = (model_raw + raw, model_gz + gz);
        } else {
            (other, other_gz) = (other + raw, other_gz + gz);
        }
    }
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "  wasm           {:>8.2} MB raw {:>8.2} MB gzip",
        mb(wasm),
        mb(wasm_gz)
    );
    println!(
        "  model          {:>8.2} MB raw {:>8.2} MB gzip",
        mb(model_raw),
        mb(model_gz)
    );
    println!(
        "  html, js, css  {:>8.2} MB raw {:>8.2} MB gzip",
        mb(other),
        mb(other_gz)
    );
    println!(
        "  total          {:>8.2} MB raw {:>8.2} MB gzip",
        mb(wasm + model_raw + other),
        mb(wasm_gz + model_gz + other_gz)
    );

    // The growth stages load only when the visitor asks for them.
    let model_root = model_dir.unwrap_or_else(|| dist.join("models").join(model));
    if let Ok(text) = std::fs::read_to_string(model_root.join("manifest.json")) {
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (mut raw, mut gz) = (0, 0);
        for s in m["stages"].as_array().into_iter().flatten() {
            if s["file"] == m["generator"] {
                continue;
            }
            let bytes = std::fs::read(model_root.join(s["file"].as_str().unwrap())).unwrap();
            (raw, gz) = (raw + bytes.len(), gz + gzip_len(&bytes));
        }
        println!(
            "  growth stages  {:>8.2} MB raw {:>8.2} MB gzip (on request)",
            mb(raw),
            mb(gz)
        );
    }
}
