//! A resumed run continues exactly where it stopped, mid-fade included: stopping halfway and
//! resuming ends with the same weights, EMA, optimiser state and data position as one straight run.

use pggan_e2e::{Scratch, pggan_ok};
use pggan_model::weights::decode;

/// The smallest model, and one big enough that its checkpoint splits into several 0.5 MiB parts.
const TINY: [&str; 6] = ["--latent", "8", "--fmap-base", "32", "--fmap-max", "8"];
const WIDE: [&str; 6] = ["--latent", "32", "--fmap-base", "256", "--fmap-max", "64"];

/// `pggan train` of `model` on the pack in `dir` into `dir/run`: the schedule every test here
/// shares (4×4, a fade to 8×8, 8×8; 0.6 kimg at minibatch 8).
fn train_args(dir: &Scratch, model: [&str; 6], run: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--data",
        &dir.arg("p.pack"),
        "--run",
        &dir.arg(run),
    ]
    .map(String::from)
    .to_vec();
    args.extend(model.map(String::from));
    args.extend(
        [
            "--minibatch",
            "8",
            "--stabilize-kimg",
            "0.2",
            "--fade-kimg",
            "0.2",
            "--tick-kimg",
            "0.1",
            "--grid",
            "2",
            "--total-kimg",
            "0.6",
        ]
        .map(String::from),
    );
    args
}

fn train_model(dir: &Scratch, model: [&str; 6], run: &str, stop: Option<&str>, resume: bool) {
    let owned = train_args(dir, model, run);
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    if let Some(k) = stop {
        args.extend(["--stop-kimg", k]);
    }
    if resume {
        args.push("--resume");
    }
    pggan_ok(&args);
}

fn train(dir: &Scratch, run: &str, stop: Option<&str>, resume: bool) {
    train_model(dir, TINY, run, stop, resume);
}

fn train_wide(dir: &Scratch, run: &str, stop: Option<&str>, resume: bool) {
    train_model(dir, WIDE, run, stop, resume);
}

#[test]
fn stop_and_resume_mid_fade_equals_one_straight_run() {
    let dir = Scratch::new("resume");
    pggan_e2e::tiny_pack(&dir, 3);
    train(&dir, "straight", None, false);
    // Paused at 0.304 kimg, inside the fade (0.2 … 0.4).
    train(&dir, "halves", Some("0.3"), false);
    let half: Vec<serde_json::Value> = pggan_e2e::metrics(&dir.path("halves"));
    let alpha = half.last().unwrap()["alpha"].as_f64().unwrap();
    assert!(
        alpha > 0.0 && alpha < 1.0,
        "stopped mid-fade (alpha {alpha})"
    );
    train(&dir, "halves", None, true);

    let (a, meta_a) =
        decode(&std::fs::read(dir.path("straight/checkpoint.safetensors")).unwrap()).unwrap();
    let (b, meta_b) =
        decode(&std::fs::read(dir.path("halves/checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(a.len(), b.len());
    let mut max_diff = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.shape, y.shape);
        for (p, q) in x.values.iter().zip(&y.values) {
            max_diff = max_diff.max((p - q).abs());
        }
    }
    assert!(
        a.iter().any(|t| t.name.starts_with("adam_d.")),
        "optimiser state is checkpointed"
    );
    assert!(
        a.iter().any(|t| t.name.starts_with("ema.")),
        "EMA is checkpointed"
    );
    assert_eq!(
        max_diff, 0.0,
        "resumed weights differ from the straight run by {max_diff}"
    );
    let sa: serde_json::Value = serde_json::from_str(&meta_a["state"]).unwrap();
    let sb: serde_json::Value = serde_json::from_str(&meta_b["state"]).unwrap();
    for key in [
        "nimg",
        "latent_rng",
        "mix_rng",
        "mirror_rng",
        "cursor",
        "adam_g_step",
        "adam_d_step",
        "stages_done",
    ] {
        assert_eq!(sa[key], sb[key], "state `{key}` differs");
    }
}

#[test]
fn a_compacted_run_carries_in_small_files_and_resumes() {
    let dir = Scratch::new("compact");
    pggan_e2e::tiny_pack(&dir, 3);
    train_wide(&dir, "straight", None, false);
    train_wide(&dir, "first", Some("0.3"), false);

    // Exact form: f32 with the optimiser, split into parts of at most 0.5 MiB.
    let out = pggan_ok(&[
        "compact",
        "--run",
        &dir.arg("first"),
        "--out",
        &dir.arg("carried"),
        "--dtype",
        "f32",
        "--keep-optimizer",
        "--max-file-mib",
        "0.5",
    ]);
    let parts: Vec<_> = std::fs::read_dir(dir.path("carried"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("checkpoint-part"))
        .collect();
    assert!(parts.len() >= 3, "split into parts: {out}");
    for p in &parts {
        assert!(
            std::fs::metadata(p).unwrap().len() <= 512 * 1024,
            "{} over 0.5 MiB",
            p.display()
        );
    }
    for name in ["options.json", "metrics.jsonl", "sessions.jsonl"] {
        assert!(
            dir.path(&format!("carried/{name}")).exists(),
            "{name} not carried"
        );
    }
    // The growth-stage snapshots and those of the fade-in travel too (the export ships them).
    let snapshots = |d: &str, folder: &str| -> Vec<(std::ffi::OsString, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.path(&format!("{d}/{folder}")))
            .map(|r| {
                r.map(|e| {
                    let e = e.unwrap();
                    (e.file_name(), std::fs::read(e.path()).unwrap())
                })
                .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    for folder in ["stages", "fades"] {
        assert!(
            !snapshots("first", folder).is_empty(),
            "the test run, stopped inside a fade, should have a snapshot in {folder}/"
        );
        assert_eq!(
            snapshots("first", folder),
            snapshots("carried", folder),
            "{folder}/"
        );
    }
    train_wide(&dir, "carried", None, true);
    let (a, _) =
        decode(&std::fs::read(dir.path("straight/checkpoint.safetensors")).unwrap()).unwrap();
    let (b, _) =
        decode(&std::fs::read(dir.path("carried/checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(
        a, b,
        "an f32 compact with the optimiser resumes bit-exactly"
    );

    // Small form: bf16 weights, no optimiser — half the size or less, and it still resumes.
    pggan_ok(&[
        "compact",
        "--run",
        &dir.arg("first"),
        "--out",
        &dir.arg("small"),
        "--max-file-mib",
        "0.5",
    ]);
    let size = |d: &str| -> u64 {
        std::fs::read_dir(dir.path(d))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("checkpoint-part"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    assert!(
        size("small") * 4 < size("carried"),
        "bf16 without moments: {} vs {} bytes",
        size("small"),
        size("carried")
    );
    pggan_ok(&[
        "generate",
        "--model",
        &dir.arg("small"),
        "--out",
        &dir.arg("small.png"),
    ]);
    train_wide(&dir, "small", None, true);
    let log = pggan_e2e::metrics(&dir.path("small"));
    assert!(log.last().unwrap()["kimg"].as_f64().unwrap() >= 0.6);
}

/// `scripts/carry-run.sh`: a run packed for another machine (binary, images, run in parts), trained
/// there by its `train-here.sh` (here with `flex` standing in for the GPU), brought back, and
/// continued at home.
#[test]
fn carry_run_takes_a_run_away_and_back() {
    let dir = Scratch::new("carry-run");
    pggan_e2e::tiny_pack(&dir, 3);
    train(&dir, "home", Some("0.3"), false);
    let script = pggan_e2e::repo_root().join("scripts/carry-run.sh");
    let sh = |args: &[&str], tmp: Option<&str>| {
        let mut cmd = std::process::Command::new("bash");
        cmd.args(args).env("PGGAN_BIN", pggan_e2e::pggan_bin());
        if let Some(t) = tmp {
            cmd.env("TMPDIR", dir.path(t));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            pggan_e2e::describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = script.to_string_lossy().into_owned();
    sh(
        &[
            &script,
            "out",
            "--run",
            &dir.arg("home"),
            "--data",
            &dir.arg("p.pack"),
            "--to",
            &dir.arg("carry"),
            "--features",
            "flex",
        ],
        None,
    );
    for f in [
        "pggan.gz.00",
        "train.tar.gz",
        "train-here.sh",
        "run/checkpoint-part000.safetensors",
        "run/options.json",
        "run/stages-at-home.txt",
        "run/fades-at-home.txt",
    ] {
        let len = std::fs::metadata(dir.path(&format!("carry/{f}")))
            .unwrap_or_else(|e| panic!("carry/{f}: {e}"))
            .len();
        assert!(len < 16 << 20, "carry/{f} is {len} bytes");
    }
    for entry in std::fs::read_dir(dir.path("carry")).unwrap() {
        let entry = entry.unwrap();
        let len = entry.metadata().unwrap().len();
        assert!(len < 16 << 20, "{:?} is {len} bytes", entry.path());
    }
    assert!(
        !dir.path("carry/run/stages").exists() && !dir.path("carry/run/fades").exists(),
        "the stage and fade snapshots stay at home"
    );
    // "The other machine": only the carried folder, the run finished there.
    std::fs::create_dir_all(dir.path("tmp")).unwrap();
    let here = dir.arg("carry/train-here.sh");
    sh(&[&here, "1", &dir.arg("back"), "flex"], Some("tmp"));
    sh(
        &[
            &script,
            "back",
            "--from",
            &dir.arg("back/run-back.tar.gz"),
            "--run",
            &dir.arg("home"),
        ],
        None,
    );
    assert!(
        dir.path("home/checkpoint-before-carry.safetensors")
            .exists()
            && !dir.path("home/checkpoint.safetensors").exists()
    );
    let log = pggan_e2e::metrics(&dir.path("home"));
    assert!(
        (log.last().unwrap()["kimg"].as_f64().unwrap() - 0.6).abs() < 0.05,
        "the run came back finished: {log:?}"
    );
    // The 8×8 stage was made away and came back alone; the 4×4 one stayed at home throughout.
    let back = std::process::Command::new("tar")
        .args(["tzf", &dir.arg("back/run-back.tar.gz")])
        .output()
        .unwrap();
    let back = String::from_utf8_lossy(&back.stdout);
    assert!(
        back.contains("stages/level1-8x8.safetensors") && !back.contains("level0"),
        "{back}"
    );
    assert!(
        dir.path("home/stages/level1-8x8.safetensors").exists()
            && dir.path("home/stages/level0-4x4.safetensors").exists()
    );
    // So did the fade's snapshots: its end made away, its start (before 0.3 kimg) at home.
    assert!(
        back.contains("fades/level1-8x8-a100.safetensors")
            && !back.contains("fades/level1-8x8-a000"),
        "{back}"
    );
    assert!(
        dir.path("home/fades/level1-8x8-a100.safetensors").exists()
            && dir.path("home/fades/level1-8x8-a000.safetensors").exists()
    );
    let sessions = std::fs::read_to_string(dir.path("home/sessions.jsonl")).unwrap();
    assert_eq!(sessions.lines().count(), 2, "{sessions}");
    // Home again: it resumes from the returned checkpoint and exports.
    let done = pggan_ok(&[
        "train",
        "--data",
        &dir.arg("p.pack"),
        "--run",
        &dir.arg("home"),
        "--resume",
    ]);
    assert!(done.contains("Done: 0.6 kimg"), "{done}");
    pggan_ok(&[
        "export",
        "--run",
        &dir.arg("home"),
        "--out",
        &dir.arg("export"),
    ]);
}

/// The checkpoint just after each level ends is kept (`checkpoints/`); putting it back and
/// resuming retraces the run exactly.
#[test]
fn a_run_rewinds_to_the_end_of_a_level() {
    let dir = Scratch::new("rewind");
    pggan_e2e::tiny_pack(&dir, 3);
    train(&dir, "straight", None, false);
    let kept = dir.path("straight/checkpoints/level0-4x4.safetensors");
    let (_, meta) = decode(&std::fs::read(&kept).unwrap()).unwrap();
    let state: serde_json::Value = serde_json::from_str(&meta["state"]).unwrap();
    let kimg = state["nimg"].as_f64().unwrap() / 1000.0;
    // The level ends at 0.2 kimg; the kept checkpoint is the first one after (ticks of 0.1 kimg).
    assert!((0.2..=0.301).contains(&kimg), "kept at {kimg} kimg");
    // Rewind a copy of the run to it and train on: the same end as the straight run.
    std::fs::create_dir_all(dir.path("rewound")).unwrap();
    for name in ["options.json", "metrics.jsonl", "sessions.jsonl"] {
        std::fs::copy(
            dir.path(&format!("straight/{name}")),
            dir.path(&format!("rewound/{name}")),
        )
        .unwrap();
    }
    std::fs::copy(&kept, dir.path("rewound/checkpoint.safetensors")).unwrap();
    train(&dir, "rewound", None, true);
    let (a, _) =
        decode(&std::fs::read(dir.path("straight/checkpoint.safetensors")).unwrap()).unwrap();
    let (b, _) =
        decode(&std::fs::read(dir.path("rewound/checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(a, b, "rewound and retrained equals the straight run");
    let log = pggan_e2e::metrics(&dir.path("rewound"));
    let ticks: Vec<u64> = log.iter().filter_map(|v| v["tick"].as_u64()).collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "the log was trimmed to the kept checkpoint: {ticks:?}"
    );
}

/// `--devices 2` (data-parallel; on the CPU backend the two shards take turns) trains across a
/// fade, checkpoints, and the run resumes on one device; a minibatch that cannot be split into
/// whole minibatch-stddev groups is refused up front.
#[test]
fn a_run_trains_on_two_devices_and_resumes_on_one() {
    let dir = Scratch::new("devices");
    pggan_e2e::tiny_pack(&dir, 5);
    let owned = train_args(&dir, TINY, "run");
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let two = [args.clone(), vec!["--devices", "2", "--stop-kimg", "0.3"]].concat();
    pggan_ok(&two);
    let half = pggan_e2e::metrics(&dir.path("run"));
    assert!(
        half.iter().any(|l| l["alpha"].as_f64().unwrap() < 1.0),
        "trained into the fade"
    );
    let resumed = [args.clone(), vec!["--resume"]].concat();
    pggan_ok(&resumed);
    let all = pggan_e2e::metrics(&dir.path("run"));
    let last = all.last().unwrap();
    assert!(
        (last["kimg"].as_f64().unwrap() - 0.6).abs() < 1e-9,
        "{last}"
    );
    assert!(
        all.iter()
            .all(|l| l["loss_d"].as_f64().unwrap().is_finite())
    );
    let sessions = std::fs::read_to_string(dir.path("run/sessions.jsonl")).unwrap();
    let devices: Vec<u64> = sessions
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["devices"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(devices, vec![2, 1], "{sessions}");
    // The data-parallel steps are the whole minibatch's steps (`parity::tests`): the run lands
    // near one trained on one device throughout.
    let (a, _) = decode(&std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap()).unwrap();
    train(&dir, "single", None, false);
    let (b, _) =
        decode(&std::fs::read(dir.path("single/checkpoint.safetensors")).unwrap()).unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .filter(|(x, _)| x.name.starts_with("g.") || x.name.starts_with("ema."))
        .flat_map(|(x, y)| x.values.iter().zip(&y.values).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max);
    println!("two devices then one vs one throughout: generator weights within {worst:.2e}");
    // (Measured 4.8e-7 here; float order differs between the two, so a loose bound.)
    assert!(worst < 1e-2, "{worst}");
    // 8 images do not split into 3 shards of whole groups of 4.
    let three = [args, vec!["--devices", "3", "--resume"]].concat();
    pggan_e2e::pggan_fails(&three, &["multiple of 12"]);
}
