//! The trainer really learns: a few hundred steps at 4×4 → 8×8 on three flat colours, after which
//! the generator's samples are near-flat images in those colours, covering all three, and an
//! untrained generator's are not.

use pggan_e2e::{Scratch, pggan_ok, read_rgb};

const COLOURS: [[f64; 3]; 3] = [
    [220.0, 40.0, 40.0],
    [40.0, 200.0, 60.0],
    [40.0, 60.0, 220.0],
];

/// Per-sample statistics of an 8×8 grid of 8×8 samples: mean per-pixel distance to the nearest
/// class colour, mean within-image standard deviation, and how many samples each colour is nearest.
fn judge(grid: &image::RgbImage) -> (f64, f64, [usize; 3]) {
    let cell = 8;
    let (mut dist, mut spread, mut classes) = (0.0, 0.0, [0usize; 3]);
    let cells = (grid.width() / cell) * (grid.height() / cell);
    for cy in 0..grid.height() / cell {
        for cx in 0..grid.width() / cell {
            let px: Vec<[f64; 3]> = (0..cell * cell)
                .map(|i| {
                    let p = grid.get_pixel(cx * cell + i % cell, cy * cell + i / cell).0;
                    [p[0] as f64, p[1] as f64, p[2] as f64]
                })
                .collect();
            let d = |a: &[f64; 3], b: &[f64; 3]| {
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
            };
            dist += px
                .iter()
                .map(|p| COLOURS.iter().map(|c| d(p, c)).fold(f64::MAX, f64::min))
                .sum::<f64>()
                / px.len() as f64;
            let mean = [0, 1, 2].map(|c| px.iter().map(|p| p[c]).sum::<f64>() / px.len() as f64);
            spread += [0, 1, 2]
                .map(|c| {
                    (px.iter().map(|p| (p[c] - mean[c]).powi(2)).sum::<f64>() / px.len() as f64)
                        .sqrt()
                })
                .iter()
                .sum::<f64>()
                / 3.0;
            let nearest = (0..3)
                .min_by(|&a, &b| d(&mean, &COLOURS[a]).total_cmp(&d(&mean, &COLOURS[b])))
                .unwrap();
            classes[nearest] += 1;
        }
    }
    (dist / cells as f64, spread / cells as f64, classes)
}

#[test]
fn learns_three_flat_colours_at_4x4_then_8x8() {
    let dir = Scratch::new("learning");
    std::fs::create_dir_all(dir.path("flat")).unwrap();
    for i in 0..96 {
        let c = COLOURS[i % 3];
        image::RgbImage::from_pixel(8, 8, image::Rgb([c[0] as u8, c[1] as u8, c[2] as u8]))
            .save(dir.path(&format!("flat/{i:03}.png")))
            .unwrap();
    }
    pggan_ok(&[
        "prepare",
        &dir.arg("flat"),
        "--out",
        &dir.arg("flat.pack"),
        "--resolution",
        "8",
    ]);
    let common = [
        "--data",
        &dir.arg("flat.pack"),
        "--latent",
        "16",
        "--fmap-base",
        "64",
        "--fmap-max",
        "32",
        "--minibatch",
        "16",
        "--grid",
        "8",
        "--seed",
        "3",
    ];
    // 750 steps: 4×4 for 4 kimg, fade over 2 kimg, 8×8 for 6 kimg.
    let mut trained: Vec<&str> = vec!["train", "--run"];
    let run = dir.arg("trained");
    trained.push(&run);
    trained.extend(common);
    trained.extend([
        "--stabilize-kimg",
        "4",
        "--fade-kimg",
        "2",
        "--total-kimg",
        "12",
        "--tick-kimg",
        "6",
        "--lr",
        "0.003",
        "--ema-kimg",
        "0.5",
    ]);
    pggan_ok(&trained);
    // One step straight at 8×8: an untrained generator.
    let mut untrained: Vec<&str> = vec!["train", "--run"];
    let run0 = dir.arg("untrained");
    untrained.push(&run0);
    untrained.extend(common);
    untrained.extend([
        "--stabilize-kimg",
        "0",
        "--fade-kimg",
        "0.001",
        "--total-kimg",
        "0.016",
        "--tick-kimg",
        "1",
    ]);
    pggan_ok(&untrained);

    pggan_ok(&[
        "generate",
        "--model",
        &run,
        "--seed",
        "1000",
        "--count",
        "64",
        "--out",
        &dir.arg("trained.png"),
    ]);
    pggan_ok(&[
        "generate",
        "--model",
        &run0,
        "--seed",
        "1000",
        "--count",
        "64",
        "--out",
        &dir.arg("untrained.png"),
    ]);
    let (dist, spread, classes) = judge(&read_rgb(&dir.path("trained.png")));
    let (dist0, spread0, classes0) = judge(&read_rgb(&dir.path("untrained.png")));
    eprintln!(
        "trained: distance {dist:.1}, spread {spread:.1}, classes {classes:?}; untrained: {dist0:.1}, {spread0:.1}, {classes0:?}"
    );
    assert!(
        dist < 0.65 * dist0,
        "trained samples are not nearer the colours: {dist:.1} vs untrained {dist0:.1}"
    );
    assert!(
        spread < 0.45 * spread0,
        "trained samples are not flatter: {spread:.1} vs untrained {spread0:.1}"
    );
    assert!(
        classes.iter().all(|&c| c >= 6),
        "a colour is missing from the samples: {classes:?}"
    );
    assert!(
        dist0 > 90.0,
        "the untrained baseline is already close ({dist0:.1}): the test would prove nothing"
    );
}
