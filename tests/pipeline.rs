//! The whole pipeline on a small set made on the fly: prepare (with a corrupt, a greyscale and a
//! non-image file, from a folder and from a tar), train across one fade, SIGKILL, resume, export,
//! generate.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pggan_e2e::{Lcg, Scratch, describe, metrics, pggan, pggan_ok, read_rgb, tiny_pack};

/// Writes 48 smooth colour images of 20×16 (not square), a greyscale one, a truncated JPEG, an
/// empty file and a text file.
fn make_images(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("nested")).unwrap();
    let mut rng = Lcg(7);
    for i in 0..48 {
        let (a, b, c) = (rng.next_f64(), rng.next_f64(), rng.next_f64());
        let img = image::RgbImage::from_fn(20, 16, |x, y| {
            let t = x as f64 / 19.0;
            let s = y as f64 / 15.0;
            image::Rgb([
                (255.0 * (a * t + (1.0 - a) * s)) as u8,
                (255.0 * b * (1.0 - t)) as u8,
                (255.0 * c * s) as u8,
            ])
        });
        let sub = if i % 2 == 0 { "" } else { "nested/" };
        img.save(dir.join(format!("{sub}img{i:02}.png"))).unwrap();
    }
    image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 8 + y * 4) as u8]))
        .save(dir.join("grey.png"))
        .unwrap();
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(32, 32, image::Rgb([9, 99, 199]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(dir.join("corrupt.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

fn report(stdout: &str) -> serde_json::Value {
    let json_end = stdout.rfind('}').expect("report JSON");
    serde_json::from_str(&stdout[..=json_end]).expect("report parses")
}

#[test]
fn prepare_counts_what_it_skips_and_converts() {
    let dir = Scratch::new("prepare");
    make_images(&dir.path("images"));
    let r = report(&pggan_ok(&[
        "prepare",
        &dir.arg("images"),
        "--out",
        &dir.arg("a.pack"),
        "--resolution",
        "8",
        "--holdout",
        "5",
    ]));
    assert_eq!(r["read"], 52, "{r}");
    assert_eq!(r["written"], 49, "{r}");
    assert_eq!(r["train"], 44);
    assert_eq!(r["holdout"], 5);
    assert_eq!(r["skipped"]["undecodable"], 1, "{r}");
    assert_eq!(r["skipped"]["not_an_image"], 2, "{r}");
    assert_eq!(r["greyscale_converted"], 1, "{r}");

    // The same images from a tar (made by the system tar) give the same pack.
    let tar = std::process::Command::new("tar")
        .args(["-cf", &dir.arg("images.tar"), "-C", &dir.arg("images"), "."])
        .status()
        .unwrap();
    assert!(tar.success());
    let r2 = report(&pggan_ok(&[
        "prepare",
        &dir.arg("images.tar"),
        "--out",
        &dir.arg("b.pack"),
        "--resolution",
        "8",
        "--holdout",
        "5",
    ]));
    assert_eq!(r2["written"], 49);
    assert_eq!(r2["skipped"], r["skipped"]);

    // Too high a resolution skips everything, and says so.
    pggan_e2e::pggan_fails(
        &[
            "prepare",
            &dir.arg("images"),
            "--out",
            &dir.arg("c.pack"),
            "--resolution",
            "64",
        ],
        &["too_small"],
    );
}

#[test]
fn train_across_a_fade_kill_resume_export_generate() {
    let dir = Scratch::new("pipeline");
    make_images(&dir.path("images"));
    pggan_ok(&[
        "prepare",
        &dir.arg("images"),
        "--out",
        &dir.arg("d.pack"),
        "--resolution",
        "8",
        "--holdout",
        "4",
    ]);
    let run = dir.arg("run");
    let data = dir.arg("d.pack");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            &data,
            "--run",
            &run,
            "--latent",
            "16",
            "--fmap-base",
            "64",
            "--fmap-max",
            "16",
            "--minibatch",
            "8",
        ];
        args.extend([
            "--stabilize-kimg",
            "0.4",
            "--fade-kimg",
            "0.4",
            "--total-kimg",
            "1.2",
            "--tick-kimg",
            "0.05",
            "--grid",
            "2",
        ]);
        args.extend(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // Start, and SIGKILL it once the metrics show it is fading in.
    let mut child = pggan(&train(&[]).iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let m = metrics(&dir.path("run"));
        if m.iter().any(|l| l["alpha"].as_f64().unwrap() < 1.0) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before the fade"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no fade within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = metrics(&dir.path("run"));
    let last_kimg = before.last().unwrap()["kimg"].as_f64().unwrap();
    assert!(last_kimg < 1.2);

    // Resume: it continues from the checkpoint, at most one tick back.
    let out = pggan(
        &train(&["--resume"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let after = metrics(&dir.path("run"));
    // The log matches the checkpoint: ticks count up by one, kimg only grows, nothing repeated.
    for pair in after.windows(2) {
        assert_eq!(
            pair[1]["tick"].as_u64().unwrap(),
            pair[0]["tick"].as_u64().unwrap() + 1,
            "{pair:?}"
        );
        assert!(pair[1]["kimg"].as_f64().unwrap() > pair[0]["kimg"].as_f64().unwrap());
    }
    // At most one tick of work was lost to the kill.
    let kept = after
        .iter()
        .filter(|l| l["kimg"].as_f64().unwrap() <= last_kimg + 1e-9)
        .count();
    assert!(
        kept + 1 >= before.len(),
        "kept {kept} of {} ticks logged before the kill",
        before.len()
    );
    let end = after.last().unwrap();
    assert!(end["kimg"].as_f64().unwrap() >= 1.2);
    assert_eq!(end["level"], 1);
    assert_eq!(end["alpha"], 1.0);
    assert!(dir.path("run/stages/level0-4x4.safetensors").exists());
    assert!(dir.path("run/stages/level1-8x8.safetensors").exists());
    assert!(std::fs::read_dir(dir.path("run/grids")).unwrap().count() >= 1);
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("run/options.json")).unwrap())
            .unwrap();
    assert_eq!(options["fade_kimg"], 0.4);

    // Export for the web and generate from both the run and the export.
    pggan_ok(&["export", "--run", &run, "--out", &dir.arg("export")]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("export/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["resolution"], 8);
    assert_eq!(manifest["latent_size"], 16);
    assert_eq!(manifest["stages"].as_array().unwrap().len(), 2);
    // What it was trained on: every session's machine (two sessions here, one machine).
    let hardware = manifest["training"]["hardware"].as_array().unwrap();
    assert_eq!(hardware.len(), 1, "{hardware:?}");
    assert!(hardware[0].as_str().unwrap().starts_with("flex (CPU): "));
    assert_eq!(
        std::fs::read_to_string(dir.path("run/sessions.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    for s in manifest["stages"].as_array().unwrap() {
        assert!(
            dir.path("export")
                .join(s["file"].as_str().unwrap())
                .exists()
        );
    }
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("export"),
        "--seed",
        "5",
        "--count",
        "3",
        "--out",
        &dir.arg("from_export"),
    ]);
    pggan_ok(&[
        "generate",
        "--model",
        &run,
        "--seed",
        "5",
        "--count",
        "3",
        "--out",
        &dir.arg("from_run"),
    ]);
    // A manifest that names the wrong weights is refused, not half-used.
    let mut wrong = manifest.clone();
    wrong["generator"] = manifest["stages"][0]["file"].clone();
    std::fs::write(dir.path("export/manifest.json"), wrong.to_string()).unwrap();
    let out = pggan(&[
        "generate",
        "--model",
        &dir.arg("export"),
        "--out",
        &dir.arg("wrong.png"),
    ])
    .output()
    .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        describe(&out)
    );
    std::fs::write(dir.path("export/manifest.json"), manifest.to_string()).unwrap();
    pggan_ok(&[
        "generate",
        "--model",
        &run,
        "--seed",
        "6",
        "--out",
        &dir.arg("seed6.png"),
    ]);
    for seed in 5..8 {
        let a = read_rgb(&dir.path(&format!("from_export/seed{seed:06}.png")));
        let b = read_rgb(&dir.path(&format!("from_run/seed{seed:06}.png")));
        assert_eq!(a.dimensions(), (8, 8));
        // f16 export vs f32 run: the same face within rounding.
        let diff = a
            .pixels()
            .zip(b.pixels())
            .map(|(p, q)| (0..3).map(|c| p[c].abs_diff(q[c]) as u32).max().unwrap())
            .max()
            .unwrap();
        assert!(diff <= 8, "seed {seed}: export and run differ by {diff}");
    }
    // Image i is seed S + i: the single seed-6 image equals the second of the batch.
    assert_eq!(
        read_rgb(&dir.path("seed6.png")),
        read_rgb(&dir.path("from_run/seed000006.png"))
    );
    let a5 = read_rgb(&dir.path("from_run/seed000005.png"));
    assert_ne!(
        a5,
        read_rgb(&dir.path("from_run/seed000006.png")),
        "different seeds give different images"
    );

    // The growth stages in one picture: a row per stage, a column per seed, cells of 16 px.
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("export"),
        "--stages",
        "--seed",
        "5",
        "--count",
        "3",
        "--cell",
        "16",
        "--out",
        &dir.arg("stages.png"),
    ]);
    let stages = read_rgb(&dir.path("stages.png"));
    let rows = manifest["stages"].as_array().unwrap().len() as u32
        + u32::from(manifest["stages"][1]["file"] != manifest["generator"]);
    assert_eq!(stages.dimensions(), (48, 16 * rows));
    for c in 0..3u32 {
        // Row 0, the 4×4 stage: blocks of 4×4 pixels of one colour.
        for y in 0..16 {
            for x in 0..16 {
                assert_eq!(
                    stages[(c * 16 + x, y)],
                    stages[(c * 16 + x / 4 * 4, y / 4 * 4)],
                    "4×4 stage, seed {}, pixel {x},{y}",
                    5 + c
                );
            }
        }
        // The last row, the final generator: the export's own image of that seed, scaled 2×.
        let own = read_rgb(&dir.path(&format!("from_export/seed{:06}.png", 5 + c)));
        for y in 0..16 {
            for x in 0..16 {
                assert_eq!(
                    stages[(c * 16 + x, (rows - 1) * 16 + y)],
                    own[(x / 2, y / 2)],
                    "final row, seed {}",
                    5 + c
                );
            }
        }
    }
    // The run as it stood at the end of its 4×4 level: that stage snapshot as the final generator.
    pggan_ok(&[
        "export",
        "--run",
        &run,
        "--out",
        &dir.arg("at4"),
        "--stage",
        "0",
    ]);
    let at4: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("at4/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            at4["resolution"].as_u64(),
            at4["level"].as_u64(),
            at4["alpha"].as_f64()
        ),
        (Some(4), Some(0), Some(1.0)),
        "{at4}"
    );
    assert_eq!(at4["stages"].as_array().unwrap().len(), 1);
    assert_eq!(at4["stages"][0]["file"], "generator.safetensors");
    let stage_kimg = at4["stages"][0]["kimg"].as_f64().unwrap();
    assert_eq!(at4["training"]["kimg"].as_f64(), Some(stage_kimg));
    assert!(stage_kimg < manifest["training"]["kimg"].as_f64().unwrap());
    let seconds = at4["training"]["train_seconds"].as_f64().unwrap();
    assert!(
        seconds > 0.0 && seconds < manifest["training"]["train_seconds"].as_f64().unwrap(),
        "{seconds}"
    );
    // Its faces are the snapshot's own (f16 rounding aside), and 4×4.
    let snapshot = std::fs::read_dir(dir.path("run/stages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("level0"))
        .unwrap();
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("at4"),
        "--seed",
        "5",
        "--out",
        &dir.arg("at4.png"),
    ]);
    pggan_ok(&[
        "generate",
        "--model",
        &snapshot.to_string_lossy(),
        "--seed",
        "5",
        "--out",
        &dir.arg("snap4.png"),
    ]);
    let (a, b) = (
        read_rgb(&dir.path("at4.png")),
        read_rgb(&dir.path("snap4.png")),
    );
    assert_eq!(a.dimensions(), (4, 4));
    assert!(
        a.pixels()
            .zip(b.pixels())
            .all(|(p, q)| (0..3).all(|c| p[c].abs_diff(q[c]) <= 8)),
        "the export at 4×4 is not the 4×4 snapshot"
    );
    let out = pggan(&[
        "export",
        "--run",
        &run,
        "--out",
        &dir.arg("at64"),
        "--stage",
        "4",
    ])
    .output()
    .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("no stage snapshot of level 4 (it has levels: 0, 1)"),
        "{}",
        describe(&out)
    );

    // A grid with its cells scaled; --stages only for an export.
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("export"),
        "--seed",
        "5",
        "--count",
        "4",
        "--cell",
        "24",
        "--out",
        &dir.arg("grid24.png"),
    ]);
    assert_eq!(read_rgb(&dir.path("grid24.png")).dimensions(), (48, 48));
    let out = pggan(&[
        "generate",
        "--model",
        &run,
        "--stages",
        "--out",
        &dir.arg("x.png"),
    ])
    .output()
    .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("exported model folder"),
        "{}",
        describe(&out)
    );

    // Animations: the grids over training, and latent walks.
    let grids = std::fs::read_dir(dir.path("run/grids")).unwrap().count();
    pggan_ok(&[
        "timelapse",
        "--run",
        &run,
        "--out",
        &dir.arg("timelapse.gif"),
    ]);
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(dir.path("timelapse.gif")).unwrap(),
    ))
    .unwrap();
    use image::AnimationDecoder;
    assert_eq!(gif.into_frames().count(), grids, "one frame per grid");
    pggan_ok(&[
        "interpolate",
        "--model",
        &run,
        "--seed",
        "5",
        "--to",
        "7",
        "--seconds",
        "1",
        "--fps",
        "6",
        "--scale",
        "1",
        "--out",
        &dir.arg("blend"),
    ]);
    let first = read_rgb(&dir.path("blend/frame00000.png"));
    let last = read_rgb(&dir.path("blend/frame00005.png"));
    let close = |a: &image::RgbImage, b: &image::RgbImage| {
        a.pixels()
            .zip(b.pixels())
            .all(|(p, q)| (0..3).all(|c| p[c].abs_diff(q[c]) <= 1))
    };
    assert!(
        close(&first, &read_rgb(&dir.path("from_run/seed000005.png"))),
        "the blend starts at seed 5's face"
    );
    assert!(
        close(&last, &read_rgb(&dir.path("from_run/seed000007.png"))),
        "and ends at seed 7's"
    );
    pggan_ok(&[
        "interpolate",
        "--model",
        &run,
        "--seconds",
        "1",
        "--fps",
        "8",
        "--out",
        &dir.arg("walk.gif"),
    ]);
    assert!(std::fs::metadata(dir.path("walk.gif")).unwrap().len() > 100);
}

/// A fade-in shorter than a few minibatches passes several of its snapshot points in one step;
/// those snapshots are one network at one α, and the export keeps one of them (it failed with
/// "fade snapshots are not in order" before).
#[test]
fn a_fade_of_one_step_exports() {
    let dir = Scratch::new("pipeline-short-fade");
    tiny_pack(&dir, 3);
    let said = pggan_ok(&[
        "train",
        "--data",
        &dir.arg("p.pack"),
        "--run",
        &dir.arg("run"),
        "--latent",
        "16",
        "--fmap-base",
        "64",
        "--fmap-max",
        "16",
        "--minibatch",
        "8",
        "--stabilize-kimg",
        "0.016",
        "--fade-kimg",
        "0.008",
        "--total-kimg",
        "0.048",
        "--tick-kimg",
        "0.016",
        "--metrics-kimg",
        "0",
        "--backend",
        "flex",
    ]);
    // By default the new level's toRGB starts fitted to the old picture, and says how well.
    assert!(
        said.contains("8×8 fades in: its toRGB fitted to the 4×4 picture"),
        "{said}"
    );
    let written = std::fs::read_dir(dir.path("run/fades")).unwrap().count();
    assert!(written >= 2, "{written} fade snapshots written");
    pggan_ok(&[
        "export",
        "--run",
        &dir.arg("run"),
        "--out",
        &dir.arg("export"),
    ]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("export/manifest.json")).unwrap())
            .unwrap();
    let fades = manifest["fades"].as_array().unwrap();
    assert!(!fades.is_empty() && fades.len() < written, "{fades:?}");
    for pair in fades.windows(2) {
        assert!(
            pair[0]["alpha"].as_f64() < pair[1]["alpha"].as_f64(),
            "{fades:?}"
        );
    }
}

/// `pggan bench` names the instruction set its CPU kernels use on this machine in its first line
/// (AVX-512 where the CPU has it: the tests' `pggan` is built with its default `avx512`
/// feature), measures every level up to `--resolution`, and refuses what it cannot measure.
#[test]
fn bench_names_its_instruction_set_and_measures_each_level() {
    let said = pggan_ok(&[
        "bench",
        "--backend",
        "flex",
        "--resolution",
        "8",
        "--latent",
        "16",
        "--fmap-base",
        "64",
        "--fmap-max",
        "16",
        "--minibatch",
        "4",
        "--steps",
        "1",
        "--json",
    ]);
    let first = said.lines().next().unwrap();
    #[cfg(target_arch = "x86_64")]
    {
        let expected = if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "AVX2"
        } else {
            "SSE2"
        };
        assert!(
            first.starts_with("pggan bench: ") && first.contains(&format!(", {expected};")),
            "{first}"
        );
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(said.lines().last().unwrap()).expect("the --json line");
    let resolutions: Vec<u64> = rows
        .iter()
        .map(|r| r["resolution"].as_u64().unwrap())
        .collect();
    assert_eq!(resolutions, [4, 8], "{said}");
    assert!(
        rows.iter().all(|r| r["img_per_s"].as_f64().unwrap() > 0.0),
        "{said}"
    );
    pggan_e2e::pggan_fails(
        &["bench", "--backend", "flex", "--minibatch", "0"],
        &["--minibatch and --steps must be at least 1"],
    );
    pggan_e2e::pggan_fails(
        &["bench", "--backend", "flex", "--gp-fraction", "1.5"],
        &["--gp-fraction must be in (0, 1]"],
    );
}
