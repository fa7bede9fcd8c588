//! `pggan eval`: SWD and MS-SSIM from the command line, on packs, folders and models.

use pggan_e2e::{Lcg, Scratch, pggan_ok};

/// 80 smooth random 16×16 images in `dir`.
fn images(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Lcg(21);
    for i in 0..80 {
        let (cx, cy, red, blue) = (
            rng.next_f64() * 16.0,
            rng.next_f64() * 16.0,
            rng.next_f64(),
            rng.next_f64(),
        );
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let v = (255.0 * (-d / 5.0).exp()) as u8;
            image::Rgb([(v as f64 * red) as u8, v / 2, (40.0 + 200.0 * blue) as u8])
        });
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["eval"];
    all.extend(args);
    all.push("--json");
    serde_json::from_str(pggan_ok(&all).trim()).expect("one JSON object")
}

#[test]
fn eval_compares_reals_images_and_models() {
    let dir = Scratch::new("eval");
    images(&dir.path("imgs"));
    pggan_ok(&[
        "prepare",
        &dir.arg("imgs"),
        "--out",
        &dir.arg("p.pack"),
        "--resolution",
        "16",
        "--holdout",
        "32",
    ]);
    let pack = dir.arg("p.pack");

    // Reals against reals: the floor.
    let floor = eval_json(&[
        "--images",
        &pack,
        "--reference",
        &pack,
        "--count",
        "32",
        "--resolution",
        "16",
    ]);
    assert_eq!(floor["count"], 32);
    assert_eq!(floor["resolution"], 16);
    let floor_swd = floor["swd"]["avg"].as_f64().unwrap();
    assert!(
        floor["swd"]["16"].as_f64().unwrap() == floor_swd,
        "one level at 16×16: {floor}"
    );
    let ms = floor["ms_ssim"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ms), "{floor}");

    // A folder of the same kind of images also works (resized by the loader when needed).
    let folder = eval_json(&[
        "--images",
        &dir.arg("imgs"),
        "--reference",
        &pack,
        "--count",
        "32",
        "--resolution",
        "16",
    ]);
    assert!(
        folder["swd"]["avg"].as_f64().unwrap() < 3.0 * floor_swd + 10.0,
        "{folder}"
    );

    // A barely trained generator is far from the reals.
    let run = dir.arg("run");
    pggan_ok(&[
        "train",
        "--data",
        &pack,
        "--run",
        &run,
        "--latent",
        "8",
        "--fmap-base",
        "32",
        "--fmap-max",
        "8",
        "--minibatch",
        "8",
        "--stabilize-kimg",
        "0",
        "--fade-kimg",
        "0.001",
        "--total-kimg",
        "0.016",
        "--tick-kimg",
        "1",
        "--grid",
        "2",
    ]);
    let model = eval_json(&[
        "--model",
        &run,
        "--reference",
        &pack,
        "--count",
        "32",
        "--resolution",
        "16",
    ]);
    let model_swd = model["swd"]["avg"].as_f64().unwrap();
    assert!(
        model_swd > 2.0 * floor_swd,
        "untrained generator {model_swd} vs reals floor {floor_swd}"
    );

    // The table form names the levels.
    let table = pggan_ok(&[
        "eval",
        "--images",
        &pack,
        "--reference",
        &pack,
        "--count",
        "16",
        "--resolution",
        "16",
    ]);
    assert!(
        table.contains("SWD") && table.contains("MS-SSIM") && table.contains("16px"),
        "{table}"
    );
}

#[test]
fn eval_refuses_what_it_cannot_measure() {
    let dir = Scratch::new("eval-bad");
    images(&dir.path("imgs"));
    pggan_e2e::pggan_fails(
        &[
            "eval",
            "--images",
            &dir.arg("imgs"),
            "--reference",
            &dir.arg("imgs"),
            "--resolution",
            "8",
        ],
        &["16"],
    );
    pggan_e2e::pggan_fails(
        &[
            "eval",
            "--images",
            &dir.arg("imgs"),
            "--reference",
            &dir.arg("nowhere"),
            "--resolution",
            "16",
        ],
        &["nowhere"],
    );
}

#[test]
fn training_measures_on_the_held_out_split_and_keeps_the_best() {
    let dir = Scratch::new("train-metrics");
    images(&dir.path("imgs"));
    pggan_ok(&[
        "prepare",
        &dir.arg("imgs"),
        "--out",
        &dir.arg("p.pack"),
        "--resolution",
        "16",
        "--holdout",
        "32",
    ]);
    let run = dir.arg("run");
    let out = pggan_ok(&[
        "train",
        "--data",
        &dir.arg("p.pack"),
        "--run",
        &run,
        "--latent",
        "8",
        "--fmap-base",
        "32",
        "--fmap-max",
        "8",
        "--minibatch",
        "8",
        "--stabilize-kimg",
        "0.1",
        "--fade-kimg",
        "0.1",
        "--total-kimg",
        "0.6",
        "--tick-kimg",
        "0.05",
        "--grid",
        "2",
        "--metrics-kimg",
        "0.1",
        "--metrics-count",
        "32",
    ]);
    assert!(out.contains("metrics at"), "{out}");
    let lines = pggan_e2e::metrics(&dir.path("run"));
    let measured: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.get("metrics").is_some())
        .collect();
    assert!(
        measured.len() >= 2,
        "metrics every 0.1 kimg once at 16×16: {lines:?}"
    );
    for l in &measured {
        assert_eq!(l["resolution"], 16);
        let m = &l["metrics"];
        assert!(m["swd"]["avg"].as_f64().unwrap() > 0.0);
        assert!((0.0..=1.0).contains(&m["ms_ssim"].as_f64().unwrap()));
        assert_eq!(m["count"], 32);
    }
    // No metrics below 16×16.
    assert!(
        lines
            .iter()
            .filter(|l| l["resolution"].as_u64().unwrap() < 16)
            .all(|l| l.get("metrics").is_none())
    );
    assert!(
        dir.path("run/best.safetensors").exists(),
        "best snapshot at the top level: {out}"
    );
    // The static report: six charts as inline SVG (SWD with a line per level), the latest grid.
    let report = std::fs::read_to_string(dir.path("run/report.html")).unwrap();
    assert_eq!(report.matches("<svg").count(), 6, "six charts");
    assert!(
        report.contains("Sliced Wasserstein")
            && report.contains("16px")
            && report.contains("MS-SSIM")
    );
    assert!(
        report.contains("src=\"grids/fakes"),
        "links the latest grid"
    );
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("run/best.safetensors"),
        "--out",
        &dir.arg("best.png"),
    ]);
    assert_eq!(
        pggan_e2e::read_rgb(&dir.path("best.png")).dimensions(),
        (16, 16)
    );
}
