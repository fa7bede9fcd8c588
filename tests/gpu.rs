//! The GPU path end to end (feature `gpu`: `pggan` built with `wgpu`, and a GPU driver; on a
//! machine without a GPU, Mesa's software ones, llvmpipe): `pggan train --backend wgpu` across a
//! fade, stopped and resumed, its memory flat from tick to tick; `export`; and `generate` on the
//! GPU drawing the picture flex draws. Kept tiny: autotuning makes the first steps slow.
//!
//! The graphics API is `PGGAN_WGPU_API`'s, OpenGL when it is unset: CubeCL 0.11.3 compiles some
//! kernels to invalid SPIR-V on a Vulkan device without `VK_KHR_workgroup_memory_explicit_layout`
//! (llvmpipe's Vulkan among them), which crashes the driver; through OpenGL the kernels are WGSL.

use std::process::Output;

use pggan_e2e::{Scratch, describe, metrics, pggan, read_rgb};

/// The graphics API of these tests.
fn api() -> String {
    std::env::var("PGGAN_WGPU_API").unwrap_or_else(|_| "gl".into())
}

/// `pggan` with a software driver allowed (the tests run where there may be no GPU).
fn pggan_gpu(args: &[&str]) -> Output {
    pggan(args)
        .env("PGGAN_ALLOW_SOFTWARE_GPU", "1")
        .env("PGGAN_WGPU_API", api())
        .output()
        .expect("run pggan")
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 4×4 for 0.032 kimg, the fade to 8×8 over 0.032, 8×8 to 0.16: 20 steps of 8, a tick per step.
fn train_args<'a>(data: &'a str, run: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--run",
        run,
        "--backend",
        "wgpu",
        "--minibatch",
        "8",
        "--latent",
        "8",
        "--fmap-base",
        "32",
        "--fmap-max",
        "8",
        "--stabilize-kimg",
        "0.032",
        "--fade-kimg",
        "0.032",
        "--tick-kimg",
        "0.008",
        "--grid",
        "2",
        "--metrics-kimg",
        "0",
        "--total-kimg",
        "0.16",
    ]
}

#[test]
fn train_resume_export_and_generate_on_the_gpu() {
    let dir = Scratch::new("gpu");
    pggan_e2e::tiny_pack(&dir, 5);
    let (data, run) = (dir.arg("p.pack"), dir.arg("run"));

    // Into the fade and stopped there, then resumed to the end.
    let mut first = train_args(&data, &run);
    first.extend(["--stop-kimg", "0.048"]);
    let said = ok(pggan_gpu(&first), "train --backend wgpu");
    assert!(said.contains("backend wgpu"), "{said}");
    let mut again = train_args(&data, &run);
    again.push("--resume");
    ok(pggan_gpu(&again), "train --backend wgpu --resume");

    let lines = metrics(dir.path("run").as_path());
    assert_eq!(lines.len(), 20, "a tick per step");
    assert!(
        lines
            .iter()
            .any(|l| l["alpha"].as_f64().unwrap() > 0.0 && l["alpha"].as_f64().unwrap() < 1.0),
        "a tick inside the fade"
    );
    for l in &lines {
        for key in ["loss_d", "loss_g", "penalty"] {
            assert!(l[key].as_f64().unwrap().is_finite(), "{key}: {l}");
        }
    }
    // The run records the backend and the adapter, for both sessions.
    let sessions = std::fs::read_to_string(dir.path("run/sessions.jsonl")).unwrap();
    let sessions: Vec<serde_json::Value> = sessions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sessions.len(), 2);
    let adapter = sessions[0]["hardware"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for s in &sessions {
        assert_eq!(s["backend"], "wgpu", "{s}");
        let hardware = s["hardware"].as_str().unwrap_or_default();
        assert!(
            hardware.starts_with("wgpu: ")
                && (hardware.contains("(GPU)") || hardware.contains("(software renderer)")),
            "{s}"
        );
    }

    // Memory is flat: CubeCL's pools live on the training thread only. After the resumed
    // session's first ticks (autotuning, first allocations at each size), neither the process's resident memory (on a
    // software driver also the device's) nor what the GPU allocator reserves keeps growing.
    for (key, bound) in [("rss_mib", 24.0), ("device_reserved_mib", 8.0)] {
        let values: Vec<f64> = lines[9..]
            .iter()
            .map(|l| {
                l[key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{key} in every tick: {l}"))
            })
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            hi - lo < bound,
            "{key} moved by {:.1} MiB over the last ticks: {values:?}",
            hi - lo
        );
    }

    // Export, then the same faces on the GPU and on flex.
    ok(
        pggan(&["export", "--run", &run, "--out", &dir.arg("export")])
            .output()
            .unwrap(),
        "export",
    );
    for backend in ["wgpu", "flex"] {
        ok(
            pggan_gpu(&[
                "generate",
                "--model",
                &dir.arg("export"),
                "--seed",
                "3",
                "--count",
                "4",
                "--backend",
                backend,
                "--out",
                &dir.arg(&format!("{backend}.png")),
            ]),
            "generate",
        );
    }
    let (gpu, cpu) = (
        read_rgb(&dir.path("wgpu.png")),
        read_rgb(&dir.path("flex.png")),
    );
    assert_eq!(gpu.dimensions(), cpu.dimensions());
    let worst = gpu
        .as_raw()
        .iter()
        .zip(cpu.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 2,
        "GPU and flex pictures differ by up to {worst}/255"
    );
    let spread = cpu.as_raw().iter().max().unwrap() - cpu.as_raw().iter().min().unwrap();
    assert!(spread > 20, "the picture is flat ({spread})");

    // Without being allowed, a software driver is refused, naming it and the way out.
    if adapter.contains("software renderer") {
        let out = pggan(&train_args(&data, &dir.arg("refused")))
            .env("PGGAN_WGPU_API", api())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("software renderer")
                && err.contains("--backend flex")
                && err.contains("PGGAN_ALLOW_SOFTWARE_GPU"),
            "{}",
            describe(&out)
        );
        assert!(!dir.path("refused/checkpoint.safetensors").exists());
    }
}
