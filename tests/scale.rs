//! Data larger than memory: `prepare` streams a large input into a pack, and `train` reads only
//! the images each step needs, so neither holds a level of the set in memory.

use pggan_e2e::{Lcg, Scratch, pggan_ok};

/// Images of the generated set: a 128×128 level of 5,000 × 48 KiB = 234 MiB, a pack of 312 MiB.
const IMAGES: usize = 5000;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[test]
fn a_pack_larger_than_memory_is_prepared_and_trained_on_without_holding_it() {
    let dir = Scratch::new("scale");
    std::fs::create_dir_all(dir.path("images")).unwrap();
    let mut rng = Lcg(17);
    for i in 0..IMAGES {
        let (a, b) = (rng.next_f64(), rng.next_f64());
        let mut noise = Lcg(i as u64);
        let img = image::RgbImage::from_fn(128, 128, |x, y| {
            let n = (noise.next_f64() * 40.0) as u8;
            image::Rgb([
                (x as f64 * a * 1.5) as u8 + n,
                (y as f64 * b * 1.5) as u8 + n,
                90 + n,
            ])
        });
        img.save(dir.path(&format!("images/{i:05}.png"))).unwrap();
    }
    let said = pggan_ok(&[
        "prepare",
        &dir.arg("images"),
        "--out",
        &dir.arg("big.pack"),
        "--resolution",
        "128",
        "--holdout",
        "16",
    ]);
    let pack_mib = mib(std::fs::metadata(dir.path("big.pack")).unwrap().len());
    let top_level_mib = mib((IMAGES - 16) as u64 * 128 * 128 * 3);
    assert!(!dir.path("big.pack.spool").exists(), "the spool is removed");
    let peak: f64 = said
        .lines()
        .find_map(|l| l.strip_prefix("peak memory ")?.strip_suffix(" MiB"))
        .unwrap_or_else(|| panic!("no peak memory in: {said}"))
        .parse()
        .unwrap();
    println!("prepare: pack {pack_mib:.0} MiB, peak resident memory {peak:.0} MiB");
    assert!(
        peak < pack_mib / 2.0,
        "prepare held {peak:.0} MiB for a {pack_mib:.0} MiB pack"
    );

    // A small network that reaches 128×128 after a few steps, then trains there.
    pggan_ok(&[
        "train",
        "--data",
        &dir.arg("big.pack"),
        "--run",
        &dir.arg("run"),
        "--backend",
        "flex",
        "--latent",
        "8",
        "--fmap-base",
        "32",
        "--fmap-max",
        "4",
        "--minibatch",
        "4",
        "--stabilize-kimg",
        "0.016",
        "--fade-kimg",
        "0",
        "--tick-kimg",
        "0.016",
        "--total-kimg",
        "0.3",
        "--grid",
        "1",
        "--metrics-kimg",
        "0",
    ]);
    let lines = pggan_e2e::metrics(&dir.path("run"));
    let rss = |l: &serde_json::Value| l["rss_mib"].as_f64().expect("rss_mib in every tick");
    let first = rss(&lines[0]);
    let at_top: Vec<f64> = lines
        .iter()
        .filter(|l| l["resolution"] == 128)
        .map(rss)
        .collect();
    assert!(at_top.len() >= 10, "{} ticks at 128×128", at_top.len());
    let most = at_top.iter().cloned().fold(f64::MIN, f64::max);
    println!(
        "train: resident {first:.0} MiB at the first tick, at most {most:.0} MiB over {} ticks at 128×128 (the level is {top_level_mib:.0} MiB)",
        at_top.len()
    );
    // Reading the level whole (as before) would add all of it; the network itself takes about
    // 60–100 MiB at 128×128.
    assert!(
        most - first < top_level_mib / 2.0,
        "memory grew by {:.0} MiB for a {top_level_mib:.0} MiB level",
        most - first
    );
}
