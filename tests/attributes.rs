//! Labels through ingest and the attribute predictor: `prepare` keeps the labels in UTKFace-style
//! file names, `pggan attributes train` learns age and gender from them and beats the trivial
//! baselines on the held-out images.

use pggan_e2e::{Lcg, Scratch, pggan_ok};

#[test]
fn the_predictor_learns_age_and_gender_from_labelled_names() {
    let dir = Scratch::new("attributes");
    std::fs::create_dir_all(dir.path("faces")).unwrap();
    let mut rng = Lcg(23);
    // Gender shows as the hue, age as the brightness, plus noise; a few names carry no labels.
    for i in 0..480 {
        let gender = (rng.next_f64() < 0.5) as u8;
        let age = 5 + (rng.next_f64() * 75.0) as u32;
        let base = 40.0 + age as f64 * 2.2;
        let mut noise = Lcg(1000 + i);
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            let n = (noise.next_f64() - 0.5) * 40.0;
            let shade = base + n + (x as f64 - y as f64);
            let (r, b) = if gender == 1 {
                (shade + 30.0, shade - 30.0)
            } else {
                (shade - 30.0, shade + 30.0)
            };
            image::Rgb([
                r.clamp(0.0, 255.0) as u8,
                shade.clamp(0.0, 255.0) as u8,
                b.clamp(0.0, 255.0) as u8,
            ])
        });
        let name = if i % 40 == 0 {
            format!("faces/unlabelled{i}.png")
        } else {
            format!("faces/{age}_{gender}_0_2017{i:06}.jpg.chip.png")
        };
        img.save(dir.path(&name)).unwrap();
    }
    let said = pggan_ok(&[
        "prepare",
        &dir.arg("faces"),
        "--out",
        &dir.arg("f.pack"),
        "--resolution",
        "16",
        "--holdout",
        "120",
    ]);
    assert!(said.contains("\"none\": 12"), "{said}");
    let said = pggan_ok(&[
        "attributes",
        "train",
        "--data",
        &dir.arg("f.pack"),
        "--out",
        &dir.arg("predictor"),
        "--resolution",
        "16",
        "--epochs",
        "30",
        "--minibatch",
        "32",
        "--lr",
        "0.003",
    ]);
    println!("{said}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path("predictor/attributes.json")).unwrap(),
    )
    .unwrap();
    let r = &report["report"];
    let f = |k: &str| r[k].as_f64().unwrap();
    assert!(
        r["train_images"].as_u64().unwrap() + r["holdout_images"].as_u64().unwrap() == 468,
        "{r}"
    );
    assert!(
        f("age_mae_years") < 0.5 * f("age_mae_baseline_years"),
        "age: {r}"
    );
    assert!(
        f("gender_accuracy") > 0.9 && f("gender_accuracy_baseline") < 0.7,
        "gender: {r}"
    );
    assert!(dir.path("predictor/attributes.safetensors").exists());
    // A pack without labels is refused with what to do.
    pggan_e2e::tiny_pack(&dir, 3);
    pggan_e2e::pggan_fails(
        &[
            "attributes",
            "train",
            "--data",
            &dir.arg("p.pack"),
            "--out",
            &dir.arg("none"),
        ],
        &["has no labels"],
    );
}
