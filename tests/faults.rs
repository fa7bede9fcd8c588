//! Interruptions and numerical faults: Ctrl-C saves and exits, a NaN stops the run with the last
//! good checkpoint intact, nonsense options are refused up front.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pggan_e2e::{Scratch, describe, metrics, pggan, pggan_ok};

fn pack(dir: &Scratch) -> String {
    pggan_e2e::tiny_pack(dir, 11);
    dir.arg("p.pack")
}

const SMALL: [&str; 12] = [
    "--latent",
    "8",
    "--fmap-base",
    "32",
    "--fmap-max",
    "8",
    "--minibatch",
    "8",
    "--tick-kimg",
    "0.05",
    "--grid",
    "2",
];

/// `pggan train` on `data` into `run`: `extra`, then the small test model.
fn small_train<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", data, "--run", run];
    args.extend(extra);
    args.extend(SMALL);
    args
}

/// `pggan` with `args`, running in the background once `run` has logged `ticks` ticks.
fn spawn_until_ticks(args: &[&str], run: &Path, ticks: usize) -> std::process::Child {
    let child = pggan(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while metrics(run).len() < ticks {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no tick within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_finishes() {
    let dir = Scratch::new("ctrlc");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(
        &data,
        &run,
        &["--stabilize-kimg", "100", "--fade-kimg", "100"],
    );
    let child = spawn_until_ticks(&args, &dir.path("run"), 2);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Interrupted"),
        "{}",
        describe(&out)
    );
    let stopped_at = metrics(&dir.path("run")).last().unwrap()["kimg"]
        .as_f64()
        .unwrap();
    // The checkpoint is whole: resume to a little further and finish.
    let total = format!("{:.3}", stopped_at + 0.1);
    let resume = small_train(&data, &run, &["--resume", "--stop-kimg", &total]);
    let out = pggan(&resume).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Resuming"));
    let log = metrics(&dir.path("run"));
    let end = log.last().unwrap()["kimg"].as_f64().unwrap();
    assert!(end >= stopped_at + 0.1 - 1e-9);
    for pair in log.windows(2) {
        assert_eq!(
            pair[1]["tick"].as_u64().unwrap(),
            pair[0]["tick"].as_u64().unwrap() + 1,
            "ticks are numbered once each: {pair:?}"
        );
    }
}

#[test]
fn a_pack_truncated_under_a_running_trainer_stops_it_and_keeps_the_checkpoint() {
    let dir = Scratch::new("truncated");
    let data = pack(&dir);
    let whole = std::fs::read(&data).unwrap();
    let run = dir.arg("run");
    let args = small_train(&data, &run, &["--stabilize-kimg", "100"]);
    let child = spawn_until_ticks(&args, &dir.path("run"), 2);
    // Cut the images off, keeping the header: the pack opened fine, the next batch cannot be read.
    let header = 16 + u64::from_le_bytes(whole[8..16].try_into().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(header)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the last checkpoint is intact")
            && stderr.contains(&data)
            && stderr.contains("truncated or changed after it was opened"),
        "{stderr}"
    );
    // The checkpoint is whole, and with the pack back the run goes on.
    let ck = std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap();
    pggan_model::weights::decode(&ck).expect("checkpoint is whole");
    std::fs::write(&data, &whole).unwrap();
    let stopped_at = metrics(&dir.path("run")).last().unwrap()["kimg"]
        .as_f64()
        .unwrap();
    let further = format!("{:.3}", stopped_at + 0.1);
    pggan_ok(&small_train(
        &data,
        &run,
        &["--resume", "--stop-kimg", &further],
    ));
}

#[test]
fn a_nan_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let dir = Scratch::new("nan");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(
        &data,
        &run,
        &[
            "--stabilize-kimg",
            "1",
            "--fade-kimg",
            "1",
            "--debug-nan-at-kimg",
            "0.12",
        ],
    );
    let out = pggan(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NaN or infinite") && stderr.contains("last good checkpoint"),
        "{stderr}"
    );
    // The checkpoint is the last good tick's and still generates finite images.
    let ck = std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap();
    let (tensors, meta) =
        pggan_model::weights::decode(&ck).expect("checkpoint is whole and finite");
    assert!(!tensors.is_empty());
    let state: serde_json::Value = serde_json::from_str(&meta["state"]).unwrap();
    assert!(
        state["nimg"].as_u64().unwrap() < 120 && state["nimg"].as_u64().unwrap() >= 50,
        "{state}"
    );
    pggan_ok(&["generate", "--model", &run, "--out", &dir.arg("ok.png")]);
}

#[test]
fn nonsense_options_are_refused_with_what_is_allowed() {
    let dir = Scratch::new("options");
    let data = pack(&dir);
    let cases: [(&[&str], &str); 11] = [
        (
            &["--fade-kimg", "5", "--total-kimg", "2"],
            "longer than the whole run",
        ),
        (&["--stop-kimg", "0"], "--stop-kimg"),
        (&["--backend", "tpu"], "possible values"),
        (&["--metrics-kimg=-5"], "--metrics-kimg"),
        (&["--resolution", "12"], "power of two"),
        (&["--resolution", "16"], "above the pack"),
        (&["--minibatch", "0"], "at least 1"),
        (&["--fade-kimg=-1"], "--fade-kimg"),
        (&["--backend", "cuda"], "not compiled"),
        (&["--tick-kimg", "0"], "--tick-kimg"),
        (&["--gp-fraction", "0"], "--gp-fraction must be in (0, 1]"),
    ];
    for (i, (extra, expect)) in cases.iter().enumerate() {
        let run = dir.arg(&format!("run{i}"));
        let mut args = vec!["train", "--data", &data, "--run", &run];
        args.extend(*extra);
        pggan_e2e::pggan_fails(&args, &[expect]);
    }
    let out = pggan(&[
        "train",
        "--data",
        &dir.arg("missing.pack"),
        "--run",
        &dir.arg("r"),
    ])
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pack"));
    std::fs::write(dir.path("fake.pack"), b"PK\x03\x04 a zip file").unwrap();
    let out = pggan(&[
        "train",
        "--data",
        &dir.arg("fake.pack"),
        "--run",
        &dir.arg("r2"),
    ])
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a dataset pack"),
        "{}",
        describe(&out)
    );
}

#[test]
fn lsgan_trains_across_a_fade() {
    let dir = Scratch::new("lsgan");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(
        &data,
        &run,
        &[
            "--loss",
            "lsgan",
            "--stabilize-kimg",
            "0.1",
            "--fade-kimg",
            "0.1",
            "--total-kimg",
            "0.3",
        ],
    );
    pggan_ok(&args);
    let m = metrics(&dir.path("run"));
    assert!(
        m.iter().any(|l| l["alpha"].as_f64().unwrap() < 1.0),
        "crossed a fade"
    );
    // Least squares: both losses are means of squares, never negative (a Wasserstein critic's
    // loss may be negative), and the critic's is not stuck at zero.
    let losses = |key: &str| {
        m.iter()
            .map(|l| l[key].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        losses("loss_d")
            .iter()
            .chain(&losses("loss_g"))
            .all(|&v| v.is_finite() && v >= 0.0),
        "{m:?}"
    );
    assert!(losses("loss_d").iter().any(|&v| v > 0.0), "{m:?}");
    assert_eq!(m.last().unwrap()["level"], 1);
}

#[test]
fn repeated_sigkills_even_during_checkpoint_writes_lose_at_most_a_tick_each() {
    let dir = Scratch::new("killstorm");
    let data = pack(&dir);
    let run = dir.arg("run");
    let base = [
        "train",
        "--data",
        &data,
        "--run",
        &run,
        "--stabilize-kimg",
        "0.3",
        "--fade-kimg",
        "0.3",
        "--total-kimg",
        "1.0",
    ];
    let mut rng = pggan_e2e::Lcg(99);
    let mut kills_during_write = 0;
    let mut killed = 0;
    for round in 0..5 {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(SMALL);
        if round > 0 && dir.path("run/checkpoint.safetensors").exists() {
            args.push("--resume");
        }
        let mut child = pggan(&args)
            .env("PGGAN_DEBUG_CHECKPOINT_DELAY_MS", "150")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300 + (rng.next_f64() * 700.0) as u64));
        if child.try_wait().unwrap().is_some() {
            break; // finished before this kill
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed += 1;
        if dir.path("run/checkpoint.safetensors.tmp").exists() {
            kills_during_write += 1;
        }
        // Whatever the moment, the checkpoint in place is whole.
        if let Ok(bytes) = std::fs::read(dir.path("run/checkpoint.safetensors")) {
            pggan_model::weights::decode(&bytes).expect("the checkpoint in place is always whole");
        }
    }
    assert!(killed >= 3, "the run was killed {killed} times");
    assert!(
        kills_during_write >= 1,
        "at least one kill landed between a checkpoint's write and its rename"
    );
    let mut args: Vec<&str> = base.to_vec();
    args.extend(SMALL);
    args.push("--resume");
    let out = pggan(&args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let log = metrics(&dir.path("run"));
    for pair in log.windows(2) {
        assert_eq!(
            pair[1]["tick"].as_u64().unwrap(),
            pair[0]["tick"].as_u64().unwrap() + 1,
            "the log follows the checkpoints"
        );
    }
    assert!(log.last().unwrap()["kimg"].as_f64().unwrap() >= 1.0);
    assert!(
        dir.path("run/stages/level0-4x4.safetensors").exists()
            && dir.path("run/stages/level1-8x8.safetensors").exists()
    );
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_last_one() {
    let dir = Scratch::new("nowrite");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(
        &data,
        &run,
        &[
            "--stabilize-kimg",
            "1",
            "--fade-kimg",
            "1",
            "--stop-kimg",
            "0.1",
        ],
    );
    let out = pggan_ok(&args);
    assert!(out.contains("Paused at 0.104"), "{out}");
    let good = std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap();
    // The temporary file's place is taken (as by a full disk or a read-only folder, which root
    // would not feel): the next save cannot happen.
    std::fs::create_dir(dir.path("run/checkpoint.safetensors.tmp")).unwrap();
    let more = small_train(&data, &run, &["--resume", "--stop-kimg", "0.3"]);
    let out = pggan(&more).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("checkpoint.safetensors.tmp")
            && stderr.contains("previous checkpoint is untouched"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap(),
        good,
        "the last good checkpoint is intact"
    );
    std::fs::remove_dir(dir.path("run/checkpoint.safetensors.tmp")).unwrap();
    // A full disk: the temporary file leads to /dev/full, where every write fails with ENOSPC.
    #[cfg(unix)]
    if Path::new("/dev/full").exists() {
        std::os::unix::fs::symlink("/dev/full", dir.path("run/checkpoint.safetensors.tmp"))
            .unwrap();
        let out = pggan(&more).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("No space left on device")
                && stderr.contains("previous checkpoint is untouched"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap(),
            good,
            "the last good checkpoint is intact"
        );
        std::fs::remove_file(dir.path("run/checkpoint.safetensors.tmp")).unwrap();
    }
    let out = pggan(&more).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        metrics(&dir.path("run")).last().unwrap()["kimg"]
            .as_f64()
            .unwrap()
            >= 0.3
    );
}

#[test]
fn max_minutes_pauses_a_session_with_a_checkpoint() {
    let dir = Scratch::new("minutes");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(&data, &run, &["--max-minutes", "0.01"]);
    let start = Instant::now();
    let out = pggan_ok(&args);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "stopped after about 0.6 s of training"
    );
    assert!(out.contains("Paused at"), "{out}");
    assert!(dir.path("run/checkpoint.safetensors").exists());
}

#[test]
fn dry_run_prints_the_record_and_writes_nothing() {
    let dir = Scratch::new("dry");
    let data = pack(&dir);
    let run = dir.arg("run");
    let out = pggan_ok(&[
        "train",
        "--data",
        &data,
        "--run",
        &run,
        "--dry-run",
        "--stabilize-kimg",
        "10",
        "--fade-kimg",
        "5",
    ]);
    let json_end = out.find("\nmodel:").expect("options, then the model");
    let options: serde_json::Value =
        serde_json::from_str(&out[..json_end]).expect("the options record is JSON");
    assert_eq!(options["fade_kimg"], 5.0);
    assert!(
        out.contains("level 1 (8×8)") && out.contains("fade-in 10.0→15.0 kimg"),
        "{out}"
    );
    assert!(!dir.path("run").exists(), "a dry run writes nothing");
}

/// A run folder that became read-only: the resumed run stops with the reason and the last
/// checkpoint stays as it was. Root writes through permissions, so as root the run is started as
/// the unprivileged user `nobody` (with `setpriv`).
#[cfg(unix)]
#[test]
fn a_read_only_run_folder_stops_the_run_and_keeps_the_last_checkpoint() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("readonly");
    let data = pack(&dir);
    let run = dir.arg("run");
    let args = small_train(
        &data,
        &run,
        &[
            "--stabilize-kimg",
            "1",
            "--fade-kimg",
            "1",
            "--stop-kimg",
            "0.1",
        ],
    );
    pggan_ok(&args);
    let good = std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap();
    // `nobody` must reach the binary and the data; the run folder is then made read-only.
    let bin = dir.path("pggan");
    std::fs::copy(pggan_e2e::pggan_bin(), &bin).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path("run"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let more = small_train(&data, &run, &["--resume", "--stop-kimg", "0.3"]);
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let mut cmd = if is_root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        std::process::Command::new(&bin)
    };
    let out = cmd
        .args(&more)
        .output()
        .expect("run pggan as an unprivileged user");
    std::fs::set_permissions(dir.path("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Permission denied") && stderr.contains(&run),
        "the message names the folder and the reason: {stderr}"
    );
    assert_eq!(
        std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap(),
        good,
        "the last good checkpoint is intact"
    );
    // Writable again: the run continues.
    let out = pggan(&more).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        metrics(&dir.path("run")).last().unwrap()["kimg"]
            .as_f64()
            .unwrap()
            >= 0.3
    );
}

/// A stopped run and its checkpoint's bytes.
fn stopped_run(dir: &Scratch, data: &str) -> (String, Vec<u8>) {
    let run = dir.arg("run");
    let first = small_train(
        data,
        &run,
        &[
            "--stabilize-kimg",
            "0.1",
            "--fade-kimg",
            "0.1",
            "--total-kimg",
            "0.4",
            "--stop-kimg",
            "0.1",
        ],
    );
    pggan_ok(&first);
    let checkpoint = std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap();
    (run, checkpoint)
}

#[test]
fn resume_with_dry_run_prints_where_the_run_stands_and_trains_nothing() {
    let dir = Scratch::new("resume-dry");
    let data = pack(&dir);
    let (run, checkpoint) = stopped_run(&dir, &data);
    let log = std::fs::read(dir.path("run/metrics.jsonl")).unwrap();
    let out = pggan_ok(&small_train(&data, &run, &["--resume", "--dry-run"]));
    assert!(
        out.contains("stands at 0.104 kimg") && out.contains("dry run"),
        "{out}"
    );
    let options: serde_json::Value =
        serde_json::from_str(&out[..out.find("\nmodel:").unwrap()]).unwrap();
    assert_eq!(options["total_kimg"], 0.4, "the run's own options");
    assert_eq!(
        std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap(),
        checkpoint,
        "nothing trained"
    );
    assert_eq!(std::fs::read(dir.path("run/metrics.jsonl")).unwrap(), log);
}

#[test]
fn resume_takes_the_options_that_may_change_and_refuses_the_runs_own() {
    let dir = Scratch::new("resume-options");
    let data = pack(&dir);
    let (run, checkpoint) = stopped_run(&dir, &data);
    // The run's own options: refused before anything is touched, naming them.
    for extra in [["--latent", "16"], ["--seed", "5"]] {
        let mut args = vec!["train", "--data", &data, "--run", &run, "--resume"];
        args.extend(extra);
        let out = pggan(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} accepted");
        assert!(
            stderr.contains(extra[0]) && stderr.contains("cannot change on --resume"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(dir.path("run/checkpoint.safetensors")).unwrap(),
            checkpoint
        );
    }
    // Options that may change take effect, and the run records them.
    pggan_ok(&small_train(
        &data,
        &run,
        &["--resume", "--lr", "0.0005", "--stop-kimg", "0.2"],
    ));
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("run/options.json")).unwrap())
            .unwrap();
    assert_eq!(options["lr"], 0.0005);
    // Resumed without it, the run keeps its new value.
    pggan_ok(&["train", "--data", &data, "--run", &run, "--resume"]);
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("run/options.json")).unwrap())
            .unwrap();
    assert_eq!(
        (options["lr"].as_f64(), options["latent"].as_u64()),
        (Some(0.0005), Some(8))
    );
    assert_eq!(metrics(&dir.path("run")).last().unwrap()["kimg"], 0.4);
}

#[test]
fn a_damaged_options_json_does_not_stop_a_resume() {
    let dir = Scratch::new("resume-damaged-options");
    let data = pack(&dir);
    let (run, _) = stopped_run(&dir, &data);
    // As a kill in the middle of writing it would have left it.
    std::fs::write(
        dir.path("run/options.json"),
        b"{\n  \"latent\": 8,\n  \"fmap_b",
    )
    .unwrap();
    pggan_ok(&["train", "--data", &data, "--run", &run, "--resume"]);
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("run/options.json")).unwrap())
            .expect("written whole again");
    assert_eq!(options["fmap_base"], 32);
    assert_eq!(metrics(&dir.path("run")).last().unwrap()["kimg"], 0.4);
}
