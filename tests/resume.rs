//! A resumed run continues exactly where it stopped, mid-fade included: stopping halfway and
//! resuming ends with the same weights, EMA, optimiser state and data position as one straight run.

use pggan_e2e::{Scratch, pggan_ok};
use pggan_model::weights::decode;

fn tiny_pack(dir: &Scratch) {
    std::fs::create_dir_all(dir.path("images")).unwrap();
    let mut rng = pggan_e2e::Lcg(3);
    for i in 0..24 {
        let img = image::RgbImage::from_fn(8, 8, |_, _| image::Rgb([(rng.next_f64() * 255.0) as u8, (rng.next_f64() * 255.0) as u8, 128]));
        img.save(dir.path(&format!("images/{i}.png"))).unwrap();
    }
    pggan_ok(&["prepare", &dir.arg("images"), "--out", &dir.arg("p.pack"), "--resolution", "8"]);
}

fn train(dir: &Scratch, run: &str, stop: Option<&str>, resume: bool) {
    let data = dir.arg("p.pack");
    let run = dir.arg(run);
    let mut args = vec!["train", "--data", &data, "--run", &run, "--latent", "8", "--fmap-base", "32", "--fmap-max", "8", "--minibatch", "8"];
    args.extend(["--stabilize-kimg", "0.2", "--fade-kimg", "0.2", "--tick-kimg", "0.1", "--grid", "2", "--total-kimg", "0.6"]);
    if let Some(k) = stop {
        args.extend(["--stop-kimg", k]);
    }
    if resume {
        args.push("--resume");
    }
    pggan_ok(&args);
}

#[test]
fn stop_and_resume_mid_fade_equals_one_straight_run() {
    let dir = Scratch::new("resume");
    tiny_pack(&dir);
    train(&dir, "straight", None, false);
    // Paused at 0.304 kimg, inside the fade (0.2 … 0.4).
    train(&dir, "halves", Some("0.3"), false);
    let half: Vec<serde_json::Value> = pggan_e2e::metrics(&dir.path("halves"));
    let alpha = half.last().unwrap()["alpha"].as_f64().unwrap();
    assert!(alpha > 0.0 && alpha < 1.0, "stopped mid-fade (alpha {alpha})");
    train(&dir, "halves", None, true);

    let (a, meta_a) = decode(&std::fs::read(dir.path("straight/checkpoint.safetensors")).unwrap()).unwrap();
    let (b, meta_b) = decode(&std::fs::read(dir.path("halves/checkpoint.safetensors")).unwrap()).unwrap();
    assert_eq!(a.len(), b.len());
    let mut max_diff = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.shape, y.shape);
        for (p, q) in x.values.iter().zip(&y.values) {
            max_diff = max_diff.max((p - q).abs());
        }
    }
    assert!(a.iter().any(|t| t.name.starts_with("adam_d.")), "optimiser state is checkpointed");
    assert!(a.iter().any(|t| t.name.starts_with("ema.")), "EMA is checkpointed");
    assert_eq!(max_diff, 0.0, "resumed weights differ from the straight run by {max_diff}");
    let sa: serde_json::Value = serde_json::from_str(&meta_a["state"]).unwrap();
    let sb: serde_json::Value = serde_json::from_str(&meta_b["state"]).unwrap();
    for key in ["nimg", "latent_rng", "mix_rng", "mirror_rng", "cursor", "adam_g_step", "adam_d_step", "stages_done"] {
        assert_eq!(sa[key], sb[key], "state `{key}` differs");
    }
}
