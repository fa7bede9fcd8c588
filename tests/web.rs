//! The built page in headless Chromium, on WebGPU (SwiftShader here) and on the CPU fallback,
//! with a small model made by the trainer: faces are drawn, links round-trip, a seed gives the
//! image `pggan generate` gives, the stage stepper and the blend change the picture, and bad links
//! or models show a message. Screenshots go to `$PGGAN_ARTIFACTS` (default
//! `target/test-artifacts`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pggan_e2e::browser::Browser;
use pggan_e2e::server::Server;
use pggan_e2e::{
    Lcg, Scratch, max_abs_diff, mean_abs_diff, mean_pairwise_difference, pggan_ok, read_rgb,
    web_dist,
};
use serde_json::Value;

const LOAD: Duration = Duration::from_secs(120);

/// The trained test model (exported), made once per test binary.
fn model() -> &'static Path {
    static MODEL: OnceLock<(Scratch, PathBuf)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = Scratch::new("web-model");
            std::fs::create_dir_all(dir.path("images")).unwrap();
            let mut rng = Lcg(11);
            for i in 0..40 {
                let (a, b, c) = (rng.next_f64(), rng.next_f64(), rng.next_f64());
                image::RgbImage::from_fn(16, 16, |x, y| {
                    let d = ((x as f64 - 7.5).powi(2) + (y as f64 - 7.5).powi(2)).sqrt() / 10.6;
                    image::Rgb([
                        (255.0 * a * (1.0 - d)) as u8,
                        (255.0 * b * d) as u8,
                        (255.0 * c) as u8,
                    ])
                })
                .save(dir.path(&format!("images/{i:02}.png")))
                .unwrap();
            }
            pggan_ok(&[
                "prepare",
                &dir.arg("images"),
                "--out",
                &dir.arg("d.pack"),
                "--resolution",
                "16",
                "--holdout",
                "4",
            ]);
            pggan_ok(&[
                "train",
                "--data",
                &dir.arg("d.pack"),
                "--run",
                &dir.arg("run"),
                "--latent",
                "32",
                "--fmap-base",
                "128",
                "--fmap-max",
                "32",
                "--minibatch",
                "8",
                "--stabilize-kimg",
                "0.2",
                "--fade-kimg",
                "0.2",
                "--total-kimg",
                "1.2",
                "--tick-kimg",
                "0.2",
                "--grid",
                "2",
                "--metrics-kimg",
                "0",
            ]);
            pggan_ok(&[
                "export",
                "--run",
                &dir.arg("run"),
                "--out",
                &dir.arg("e2e"),
                "--reference",
                &dir.arg("d.pack"),
                "--eval-count",
                "4",
            ]);
            // The export carries its evaluation against the held-out images, and the floor.
            let m: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.path("e2e/manifest.json")).unwrap(),
            )
            .unwrap();
            let e = &m["training"]["evaluation"];
            assert_eq!(e["count"], 4, "{e}");
            for side in ["model", "reals_floor"] {
                assert!(
                    e[side]["swd"]["16"].as_f64().unwrap() > 0.0
                        && e[side]["swd"]["avg"].as_f64().is_some(),
                    "{e}"
                );
                assert!(e[side]["ms_ssim"].as_f64().is_some());
            }
            let path = dir.path("e2e");
            (dir, path)
        })
        .1
}

/// One browser at a time: each is several processes on a 2-core machine.
static BROWSER: Mutex<()> = Mutex::new(());

struct Page {
    browser: Browser,
    server: Server,
}

fn artifacts() -> PathBuf {
    std::env::var_os("PGGAN_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("test-artifacts")
        })
}

impl Page {
    fn open(webgpu: bool, extra_mounts: Vec<(String, PathBuf)>) -> Page {
        Page::open_at(&web_dist(), webgpu, extra_mounts)
    }

    /// The page served from `root` (a copy of the built page, say).
    fn open_at(root: &Path, webgpu: bool, extra_mounts: Vec<(String, PathBuf)>) -> Page {
        let mut mounts = vec![("/models/e2e/".to_string(), model().to_path_buf())];
        mounts.extend(extra_mounts);
        let server = Server::start(root, mounts);
        let mut page = Page {
            browser: Browser::launch(webgpu),
            server,
        };
        if webgpu {
            // A page of the same origin (a secure context) that is not the app: its 404.
            page.goto("/adapter-probe");
            page.browser.require_webgpu_adapter();
        }
        page
    }

    fn goto(&mut self, path: &str) {
        let url = self.server.url(path);
        self.browser.goto("about:blank");
        self.browser.goto(&url);
    }

    fn wait_ready(&mut self) {
        let state = self.browser.wait_for("document.body && ['ready','error'].includes(document.body.dataset.state) && document.body.dataset.state", LOAD);
        assert_eq!(state, "ready", "page failed: {}", self.text("error"));
        // The grid is drawn, every face of it (on the CPU they come one by one).
        self.browser
            .wait_for("document.body.dataset.grid === 'done'", LOAD);
    }

    /// Opens `path` (a page address with a bad link) and checks the page refuses the link: a
    /// message that it names no face and says `says`, the grid drawn, no face opened.
    fn refuses_link(&mut self, path: &str, says: &str) {
        self.goto(path);
        self.wait_ready();
        self.browser
            .wait_for("!document.getElementById('error').hidden", LOAD);
        let error = self.text("error");
        assert!(
            error.contains("does not name a face") && error.contains(says),
            "{path:.60}: {error}"
        );
        check_faces_drawn(self);
        assert!(!self.visible("detail"), "{path:.60}: no face opened");
    }

    fn text(&mut self, id: &str) -> String {
        self.browser
            .eval(&format!("document.getElementById('{id}').textContent"))
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn visible(&mut self, id: &str) -> bool {
        self.browser
            .eval(&format!("!document.getElementById('{id}').hidden"))
            == Value::Bool(true)
    }

    /// RGB bytes of a canvas (alpha dropped).
    fn pixels(&mut self, selector: &str) -> Vec<u8> {
        let v = self.browser.eval(&format!(
            "(() => {{ const c = document.querySelector('{selector}'); return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }})()"
        ));
        v.as_array()
            .unwrap()
            .chunks(4)
            .flat_map(|p| p[..3].iter().map(|x| x.as_u64().unwrap() as u8))
            .collect()
    }

    fn rendered(&mut self, selector: &str) -> u64 {
        self.browser
            .eval(&format!(
                "Number(document.querySelector('{selector}').dataset.rendered || 0)"
            ))
            .as_u64()
            .unwrap()
    }

    /// Runs `action` (JavaScript) and waits until `selector` has been drawn again.
    fn redraw(&mut self, selector: &str, action: &str) -> Vec<u8> {
        let before = self.rendered(selector);
        self.browser.eval(action);
        self.browser.wait_for(
            &format!(
                "Number(document.querySelector('{selector}').dataset.rendered || 0) > {before}"
            ),
            LOAD,
        );
        self.pixels(selector)
    }

    /// Runs `action` and waits until `selector` says it shows `shows` (its `data-shows`).
    fn redraw_to(&mut self, selector: &str, action: &str, shows: &str) -> Vec<u8> {
        self.browser.eval(action);
        self.browser.wait_for(
            &format!("document.querySelector('{selector}').dataset.shows === '{shows}'"),
            LOAD,
        );
        self.pixels(selector)
    }

    fn shot(&mut self, name: &str) {
        self.browser
            .screenshot(&artifacts().join(format!("{name}.png")));
    }
}

fn std_dev(v: &[u8]) -> f64 {
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// What `pggan generate` draws for `seed`, as RGB bytes.
fn native_face(seed: u64) -> Vec<u8> {
    let dir = Scratch::new(&format!("web-native-{seed}"));
    pggan_ok(&[
        "generate",
        "--model",
        &model().to_string_lossy(),
        "--seed",
        &seed.to_string(),
        "--out",
        &dir.arg("face.png"),
    ]);
    read_rgb(&dir.path("face.png")).into_raw()
}

fn check_faces_drawn(page: &mut Page) {
    let count = page
        .browser
        .eval("document.querySelectorAll('#grid canvas[data-rendered]').length")
        .as_u64()
        .unwrap();
    assert_eq!(count, 16, "all 16 faces drawn");
    let faces: Vec<Vec<u8>> = (1..=3)
        .map(|i| page.pixels(&format!("#grid div:nth-child({i}) canvas")))
        .collect();
    for f in &faces {
        assert!(
            std_dev(f) > 8.0,
            "a face is (nearly) uniform: std {}",
            std_dev(f)
        );
        assert!(f.iter().any(|&x| x > 20), "a face is blank");
    }
    assert!(
        mean_abs_diff(&faces[0], &faces[1]) > 2.0,
        "two faces of different seeds look the same"
    );
}

/// Both backends: faces drawn, backend reported, a seed link matches `pggan generate`, and a
/// latent link reproduces the same pixels on the same backend and, within tolerance, on the other.
#[test]
fn faces_links_and_backends() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let native = native_face(1234);
    let mut latent_link_pixels: Option<(String, Vec<u8>)> = None;
    for (webgpu, query, expect) in [
        (true, "?model=e2e&backend=webgpu", "webgpu"),
        (true, "?model=e2e", "cpu"),
        (false, "?model=e2e", "cpu"),
        (true, "?model=e2e&backend=cpu", "cpu"),
    ] {
        let mut page = Page::open(webgpu, vec![]);
        page.goto(&format!("/{query}#seed=1234"));
        page.wait_ready();
        let backend = page.browser.eval("document.body.dataset.backend");
        assert_eq!(backend, expect, "{query} with webgpu={webgpu}");
        assert!(
            page.text("status").contains("ms per face"),
            "status: {}",
            page.text("status")
        );
        if expect == "cpu" {
            assert!(page.visible("notice"), "the CPU fallback is announced");
        }
        if webgpu && query == "?model=e2e" {
            // SwiftShader is WebGPU without a GPU: the page runs on the CPU and says why.
            assert!(
                page.text("notice").contains("software adapter"),
                "{}",
                page.text("notice")
            );
        }
        check_faces_drawn(&mut page);

        // The seed link opened that face; it is the image `pggan generate` makes.
        page.browser.wait_for(
            "document.getElementById('detail-canvas').dataset.rendered",
            LOAD,
        );
        let face = page.pixels("#detail-canvas");
        let (mean, max) = (mean_abs_diff(&face, &native), max_abs_diff(&face, &native));
        assert!(
            mean < 1.0 && max <= 6,
            "{expect}: seed 1234 differs from pggan generate by mean {mean:.3}, max {max}"
        );
        assert!(page.text("detail-label").contains("1234"));
        page.shot(&format!(
            "page-{expect}-{}",
            if webgpu {
                "gpu-browser"
            } else {
                "no-gpu-browser"
            }
        ));

        // A latent link (from a blend) round-trips.
        match &latent_link_pixels {
            None => {
                page.browser
                    .eval("document.getElementById('use-a').click()");
                page.browser
                    .eval("document.querySelector('#grid div:nth-child(2) button').click()");
                page.browser.wait_for("document.getElementById('detail-label').textContent.startsWith('Seed') && !document.getElementById('detail-label').textContent.includes('1234')", LOAD);
                page.browser
                    .eval("document.getElementById('use-b').click()");
                page.browser
                    .wait_for("!document.getElementById('mix').disabled", LOAD);
                page.redraw_to("#canvas-mix", "(() => { const m = document.getElementById('mix'); m.value = '0.3'; m.dispatchEvent(new Event('input')); })()", "blend 0.30");
                let mix = page.redraw(
                    "#detail-canvas",
                    "document.getElementById('open-mix').click()",
                );
                let link = page
                    .browser
                    .eval("location.hash")
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(
                    link.starts_with("#z="),
                    "a blend's link holds its latent: {link}"
                );
                let shared = page
                    .browser
                    .eval("document.getElementById('link-text').value");
                let shared = shared.as_str().unwrap();
                assert!(
                    shared.ends_with(&link)
                        && shared.contains("model=e2e")
                        && !shared.contains("backend"),
                    "the link to share: {shared}"
                );
                // The same link in a fresh page, same backend: the same pixels.
                page.goto(&format!("/{query}{link}"));
                page.wait_ready();
                page.browser.wait_for(
                    "document.getElementById('detail-canvas').dataset.rendered",
                    LOAD,
                );
                let again = page.pixels("#detail-canvas");
                assert_eq!(
                    max_abs_diff(&mix, &again),
                    0,
                    "latent link on the same backend"
                );
                latent_link_pixels = Some((link, mix));
            }
            Some((link, pixels)) => {
                let link = link.clone();
                page.goto(&format!("/{query}{link}"));
                page.wait_ready();
                page.browser.wait_for(
                    "document.getElementById('detail-canvas').dataset.rendered",
                    LOAD,
                );
                let here = page.pixels("#detail-canvas");
                let (mean, max) = (mean_abs_diff(&here, pixels), max_abs_diff(&here, pixels));
                assert!(
                    mean < 1.0 && max <= 6,
                    "latent link on {expect} vs webgpu: mean {mean:.3}, max {max}"
                );
            }
        }
    }
}

/// The stage stepper, the fade slider and the blend slider change the picture.
#[test]
fn stages_and_blending_change_the_picture() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // The same weights, exported as if mid-fade: the model card says so.
    let scratch = Scratch::new("web-fading-model");
    let fading = copy_model(&scratch, "fading");
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(fading.join("manifest.json")).unwrap())
            .unwrap();
    m["alpha"] = serde_json::json!(0.4);
    // …and as exported before the trainer kept fade-in snapshots.
    m.as_object_mut().unwrap().remove("fades");
    std::fs::write(fading.join("manifest.json"), m.to_string()).unwrap();
    let mut page = Page::open(true, vec![("/models/fading/".into(), fading)]);
    page.goto("/?model=fading");
    page.wait_ready();
    let card = page.text("model-card");
    assert!(
        card.contains("16×16 pixels (the 16×16 level still fading in, α 0.40)"),
        "{card}"
    );
    let lede = page
        .browser
        .eval("document.querySelector('.lede').textContent")
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        lede.starts_with("A generator grown from 4×4 pixels to 16×16, as in"),
        "{lede}"
    );
    // Without fade-in snapshots there is nothing true to replay: no slider, and a note why.
    page.browser
        .eval("document.getElementById('load-stages').click()");
    page.browser.wait_for(
        "document.getElementById('stage-canvas').dataset.shows === 'stage 2 alpha 1.00'",
        LOAD,
    );
    assert!(!page.visible("fade-controls"));
    assert!(page.visible("fade-note"));
    assert!(
        page.text("fade-note")
            .contains("exported without snapshots from its fade-ins"),
        "{}",
        page.text("fade-note")
    );

    page.goto("/?model=e2e#seed=77");
    page.wait_ready();
    // The model card: size, images shown, time and hardware from the manifest; no fade.
    let card = page.text("model-card");
    assert!(card.starts_with("Model “e2e”: 16×16 pixels, latent of 32 numbers, 3 growth stages, 1 thousand images shown in 0.0 hours of training on flex (CPU): "), "{card}");
    // …and the export's evaluation, read from its manifest.
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("manifest.json")).unwrap())
            .unwrap();
    let e = &m["training"]["evaluation"];
    let expected = format!(
        " Against 4 held-out photographs: SWD ×10³ {:.2} (photographs among themselves: {:.2}, lower is closer), MS-SSIM {:.3} (photographs: {:.3}).",
        e["model"]["swd"]["avg"].as_f64().unwrap(),
        e["reals_floor"]["swd"]["avg"].as_f64().unwrap(),
        e["model"]["ms_ssim"].as_f64().unwrap(),
        e["reals_floor"]["ms_ssim"].as_f64().unwrap()
    );
    assert!(
        card.ends_with(&expected),
        "{card}\nexpected the end: {expected}"
    );
    // The stages load on request.
    assert_eq!(
        page.browser
            .eval("document.querySelectorAll('#stages canvas').length"),
        0
    );
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.rendered",
        LOAD,
    );
    page.browser.eval(
        "(() => { const b = document.getElementById('load-stages'); b.focus(); b.click(); })()",
    );
    page.browser.wait_for(
        "document.getElementById('stage-canvas').dataset.shows === 'stage 2 alpha 1.00'",
        LOAD,
    );
    // Focus went to the chosen stage, not to the page's body.
    assert_eq!(
        page.browser
            .eval("document.activeElement.getAttribute('aria-label')"),
        "Stage 3: 16×16"
    );
    let stages = page
        .browser
        .eval("document.querySelectorAll('#stages canvas').length")
        .as_u64()
        .unwrap();
    assert_eq!(stages, 3, "4×4, 8×8 and 16×16 stages");
    let widths = page
        .browser
        .eval("Array.from(document.querySelectorAll('#stages canvas')).map(c => c.width)");
    assert_eq!(widths, serde_json::json!([4, 8, 16]));
    // Stepping back shows the 8×8 stage: another size, another picture.
    let last = page.pixels("#stage-canvas");
    assert_eq!(last.len(), 16 * 16 * 3);
    let prev = page.redraw_to(
        "#stage-canvas",
        "(() => { const b = document.getElementById('stage-prev'); b.focus(); b.click(); })()",
        "stage 1 alpha 1.00",
    );
    assert_eq!(prev.len(), 8 * 8 * 3);
    assert!(
        page.text("stage-label").contains("8×8"),
        "{}",
        page.text("stage-label")
    );
    // ◀ at the first stage disables itself and hands focus to ▶.
    page.redraw_to(
        "#stage-canvas",
        "document.getElementById('stage-prev').click()",
        "stage 0 alpha 1.00",
    );
    assert_eq!(page.browser.eval("document.activeElement.id"), "stage-next");
    assert!(page.visible("fade-note"), "4×4 has no fade-in");
    page.redraw_to(
        "#stage-canvas",
        "document.getElementById('stage-next').click()",
        "stage 1 alpha 1.00",
    );
    page.redraw_to(
        "#stage-canvas",
        "document.getElementById('stage-next').click()",
        "stage 2 alpha 1.00",
    );
    // The fade-in replay: the trainer's snapshots of the 16×16 fade (α 0 … 1), then the stage.
    let fades: Vec<f64> = m["fades"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["level"] == 2)
        .map(|f| f["alpha"].as_f64().unwrap())
        .collect();
    assert_eq!(fades.len(), 5, "{}", m["fades"]);
    assert!(page.visible("fade-controls") && !page.visible("fade-note"));
    assert_eq!(
        page.browser.eval("document.getElementById('alpha').max"),
        "5"
    );
    let set_fade = |at: usize| {
        format!(
            "(() => {{ const a = document.getElementById('alpha'); a.value = '{at}'; a.dispatchEvent(new Event('input')); }})()"
        )
    };
    let at0 = page.redraw_to("#stage-canvas", &set_fade(0), "stage 2 fade 0.00");
    assert_eq!(at0.len(), last.len());
    // At α = 0 the network draws the previous stage's picture, upsampled: every 2×2 block is
    // the 8×8 stage's pixel (the stage ended at the step the fade started).
    let mut worst = 0u8;
    for y in 0..16 {
        for x in 0..16 {
            for c in 0..3 {
                let d = at0[(y * 16 + x) * 3 + c].abs_diff(prev[((y / 2) * 8 + x / 2) * 3 + c]);
                worst = worst.max(d);
            }
        }
    }
    assert!(
        worst <= 2,
        "α = 0 is {worst}/255 away from the 8×8 stage upsampled"
    );
    assert!(
        mean_abs_diff(&at0, &last) > 1.0,
        "α = 0 looks like the finished stage"
    );
    assert!(
        page.text("stage-label").contains("fading in"),
        "{}",
        page.text("stage-label")
    );
    let mid_shows = format!("stage 2 fade {:.2}", fades[2]);
    let mid = page.redraw_to("#stage-canvas", &set_fade(2), &mid_shows);
    assert!(mean_abs_diff(&mid, &at0) > 0.5, "the fade moves");
    let done = page.redraw_to("#stage-canvas", &set_fade(5), "stage 2 alpha 1.00");
    assert!(
        max_abs_diff(&done, &last) <= 1,
        "the last position is the stage"
    );
    page.shot("stages-fade");

    // Blending starts with the grid's first two faces (no empty boxes) …
    let first_two = page.browser.eval(
        "[...document.querySelectorAll('#grid button')].slice(0, 2).map(b => b.dataset.seed)",
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('canvas-mix').dataset.shows"),
        "blend 0.50",
        "the blend of the grid's first two faces ({first_two})"
    );
    assert!(std_dev(&page.pixels("#canvas-a")) > 1.0 && std_dev(&page.pixels("#canvas-b")) > 1.0);
    // … and A at t = 0, B at t = 1, something else between.
    let a = page.redraw("#canvas-a", "document.getElementById('use-a').click()");
    let label_a = page.text("detail-label");
    assert!(label_a.contains("77"), "{label_a}");
    page.browser
        .eval("document.querySelector('#grid div:nth-child(1) button').click()");
    // Another face is open (its seed is random: compare the whole label, not a digit pair).
    let label_a_js = serde_json::to_string(&label_a).unwrap();
    page.browser.wait_for(
        &format!("document.getElementById('detail-label').textContent !== {label_a_js}"),
        LOAD,
    );
    page.browser
        .eval("document.getElementById('use-b').click()");
    page.browser
        .wait_for("!document.getElementById('mix').disabled", LOAD);
    let set_mix = |t: &str| {
        format!(
            "(() => {{ const m = document.getElementById('mix'); m.value = '{t}'; m.dispatchEvent(new Event('input')); }})()"
        )
    };
    let at0 = page.redraw_to("#canvas-mix", &set_mix("0"), "blend 0.00");
    let at1 = page.redraw_to("#canvas-mix", &set_mix("1"), "blend 1.00");
    let mid = page.redraw_to("#canvas-mix", &set_mix("0.5"), "blend 0.50");
    let b = page.pixels("#canvas-b");
    assert!(max_abs_diff(&at0, &a) <= 2, "blend at 0 is A");
    assert!(max_abs_diff(&at1, &b) <= 2, "blend at 1 is B");
    assert!(
        mean_abs_diff(&mid, &a) > 0.5 && mean_abs_diff(&mid, &b) > 0.5,
        "the middle is neither end"
    );
    // Play moves the blend from A to B and back, the slider with it.
    page.browser.eval("document.getElementById('play').click()");
    let first = page.redraw("#canvas-mix", "void 0");
    let later = page.redraw("#canvas-mix", "void 0");
    assert!(mean_abs_diff(&first, &later) > 0.0, "play does not move");
    let shows = page
        .browser
        .eval("document.getElementById('canvas-mix').dataset.shows");
    let slider = page
        .browser
        .eval("Number(document.getElementById('mix').value).toFixed(2)");
    assert!(
        shows.as_str().unwrap().starts_with("play ") && slider.as_str().unwrap() != "0.50",
        "{shows} {slider}"
    );
    // Stopped, the blend the slider says is drawn, where Play left it.
    page.browser.eval("document.getElementById('play').click()");
    page.browser.wait_for(
        "document.getElementById('canvas-mix').dataset.shows === 'blend ' + Number(document.getElementById('mix').value).toFixed(2)",
        LOAD,
    );
    assert_eq!(page.text("play"), "Play A ↔ B");
    // The random walk is its own button; stopped, the slider's blend comes back.
    let set_back = set_mix("0.5");
    page.redraw_to("#canvas-mix", &set_back, "blend 0.50");
    page.browser.eval("document.getElementById('walk').click()");
    page.browser.wait_for(
        "(document.getElementById('canvas-mix').dataset.shows || '').startsWith('walk ')",
        LOAD,
    );
    let after_stop = page.redraw_to(
        "#canvas-mix",
        "document.getElementById('walk').click()",
        "blend 0.50",
    );
    assert!(
        max_abs_diff(&after_stop, &mid) <= 2,
        "the blend at 0.50 again"
    );
    page.shot("blend");
}

/// Face edits: a model with directions gets a slider per direction in the opened face; a slider
/// changes the picture, the link then holds the edited latent and opens to the same pixels, and
/// Reset brings the face back. A model without directions shows no sliders.
#[test]
fn edit_sliders_change_the_face_and_links_keep_the_edit() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("web-edits-model");
    let edits = copy_model(&scratch, "edits");
    let unit = |k: usize| {
        let mut v = vec![0f32; 32];
        v[k] = 1.0;
        v
    };
    let file = serde_json::json!({
        "format": "pggan-rs-directions/1", "latent_size": 32, "fitted_on": 0, "measured_on": 0,
        "directions": [
            {"name": "age", "kind": "supervised", "vector": unit(0), "years_per_unit": 5.0, "female_per_unit": 0.0, "monotonic": 1.0, "pixels_per_half_unit": 1.0},
            {"name": "gender", "kind": "supervised", "vector": unit(1), "years_per_unit": 0.0, "female_per_unit": 0.2, "monotonic": 1.0, "pixels_per_half_unit": 1.0},
            {"name": "sefa1", "kind": "unsupervised", "vector": unit(2), "years_per_unit": 0.0, "female_per_unit": 0.0, "monotonic": 0.5, "pixels_per_half_unit": 1.0}
        ]
    })
    .to_string();
    std::fs::write(edits.join("directions.json"), &file).unwrap();
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(edits.join("manifest.json")).unwrap())
            .unwrap();
    let summary = |name: &str, kind: &str| serde_json::json!({"name": name, "kind": kind, "years_per_unit": 0.0, "female_per_unit": 0.0, "monotonic": 1.0});
    m["directions"] = serde_json::json!({
        "file": "directions.json", "bytes": file.len(),
        "list": [summary("age", "supervised"), summary("gender", "supervised"), summary("sefa1", "unsupervised")]
    });
    std::fs::write(edits.join("manifest.json"), m.to_string()).unwrap();

    let mut page = Page::open(false, vec![("/models/edits/".into(), edits.clone())]);
    page.goto("/?model=edits#seed=77");
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.shows === 'unedited'",
        LOAD,
    );
    assert!(page.visible("edits"));
    let labels = page.browser.eval(
        "Array.from(document.querySelectorAll('#edit-sliders label')).map(l => l.textContent)",
    );
    assert_eq!(
        labels,
        serde_json::json!([
            "Age (younger ← → older)",
            "Gender (male ← → female)",
            "Unsupervised direction 1 (found without labels)"
        ])
    );
    let base = page.pixels("#detail-canvas");
    let base_link = page
        .browser
        .eval("document.getElementById('link-text').value");
    let edited = page.redraw_to(
        "#detail-canvas",
        "(() => { const a = document.getElementById('edit-age'); a.value = '2.5'; a.dispatchEvent(new Event('input')); })()",
        "edited age 2.5",
    );
    assert!(
        mean_abs_diff(&edited, &base) > 1.0,
        "the age slider changes the face"
    );
    let link = page
        .browser
        .eval("document.getElementById('link-text').value")
        .as_str()
        .unwrap()
        .to_string();
    // The link holds the face it started from and the edit.
    assert!(link.ends_with("#seed=77&edit=age:2.5"), "{link}");
    assert!(page.text("detail-label").ends_with(", edited"));
    // Reset: the face as opened, and its own link.
    let reset = page.redraw_to(
        "#detail-canvas",
        "document.getElementById('edit-reset').click()",
        "unedited",
    );
    assert!(max_abs_diff(&reset, &base) <= 1);
    assert_eq!(
        page.browser
            .eval("document.getElementById('link-text').value"),
        base_link
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('edit-age').value"),
        "0"
    );
    // The edited link opens the edited face, pixel for pixel.
    let path = &link[link.find("/?").expect("a page link")..];
    // (Same page, another hash: the page redraws without a reload, so forget the old state.)
    page.browser
        .eval("document.getElementById('detail-canvas').dataset.shows = ''");
    page.goto(path);
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.shows === 'edited age 2.5'",
        LOAD,
    );
    let reopened = page.pixels("#detail-canvas");
    assert!(
        max_abs_diff(&reopened, &edited) <= 1,
        "the shared edit opens as it was made"
    );
    assert_eq!(
        page.browser
            .eval("[document.getElementById('edit-age').value, document.getElementById('edit-gender').value]"),
        serde_json::json!(["2.5", "0"]),
        "the sliders show the link's edit"
    );
    // An edit of a blended or linked latent keeps that latent in the link.
    let z = pggan_model::link::latent_link(&pggan_model::latent::latent_for_seed(5, 32));
    page.browser
        .eval("document.getElementById('detail-canvas').dataset.shows = ''");
    page.goto(&format!("/?model=edits#{z}&edit=gender:-1.5,sefa1:0.5"));
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.shows === 'edited gender -1.5 sefa1 0.5'",
        LOAD,
    );
    assert_eq!(
        page.browser.eval("location.hash"),
        format!("#{z}&edit=gender:-1.5,sefa1:0.5")
    );
    // Links with edits out of range, unknown to the model or malformed: a message naming the
    // problem and the grid, not a broken face.
    for (bad, says) in [
        ("#seed=77&edit=age:9", "out of range"),
        (
            "#seed=77&edit=smile:1",
            "does not have (it has age, gender, sefa1)",
        ),
        ("#seed=77&edit=age:lots", "should look like age:2.5"),
    ] {
        page.refuses_link(&format!("/?model=edits{bad}"), says);
    }
    // A model without directions: no sliders.
    page.goto("/?model=e2e#seed=77");
    page.wait_ready();
    assert!(!page.visible("edits"));
    drop(page);

    // On WebGPU too: the slider redraws the face, the same edit within the two backends' rounding.
    let mut gpu = Page::open(true, vec![("/models/edits/".into(), edits)]);
    gpu.goto("/?model=edits&backend=webgpu#seed=77");
    gpu.wait_ready();
    assert_eq!(gpu.browser.eval("document.body.dataset.backend"), "webgpu");
    gpu.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.shows === 'unedited'",
        LOAD,
    );
    let on_gpu = gpu.redraw_to(
        "#detail-canvas",
        "(() => { const a = document.getElementById('edit-age'); a.value = '2.5'; a.dispatchEvent(new Event('input')); })()",
        "edited age 2.5",
    );
    let (mean, max) = (
        mean_abs_diff(&on_gpu, &edited),
        max_abs_diff(&on_gpu, &edited),
    );
    assert!(
        mean < 1.0 && max <= 6,
        "the edit on WebGPU against the CPU: mean {mean:.3}, max {max}"
    );
}

/// Malformed or oversized links, and a missing or damaged model, show a clear message.
#[test]
fn bad_links_and_models_show_a_message() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    // A model whose weights are damaged, and one whose manifest does not match its weights.
    let bad = Scratch::new("web-bad-models");
    let copy = |name: &str| copy_model(&bad, name);
    let corrupt = copy("corrupt");
    let bytes = std::fs::read(corrupt.join("generator.safetensors")).unwrap();
    std::fs::write(
        corrupt.join("generator.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let mismatch = copy("mismatch");
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(mismatch.join("manifest.json")).unwrap())
            .unwrap();
    // Claim the final generator is the 8×8 stage's file.
    m["generator"] = m["stages"][1]["file"].clone();
    std::fs::write(mismatch.join("manifest.json"), m.to_string()).unwrap();

    let mut page = Page::open(
        false,
        vec![
            ("/models/corrupt/".into(), corrupt),
            ("/models/mismatch/".into(), mismatch),
        ],
    );
    let long = format!("#seed={}", "9".repeat(30_000));
    for (link, says) in [
        ("#seed=abc", "abc"),
        ("#z=!!!!", "not base64url"),
        ("#z=AAAA", "this model takes 32"),
        ("#hello", "should look like"),
        (long.as_str(), "characters long"),
    ] {
        page.refuses_link(&format!("/?model=e2e{link}"), says);
    }
    page.shot("bad-link");
    for (model, says) in [
        ("nope", "HTTP 404"),
        ("corrupt", "generator.safetensors"),
        ("mismatch", "does not match the manifest"),
        ("..%2Fx", "folder name"),
    ] {
        page.goto(&format!("/?model={model}"));
        page.browser.wait_for("document.body.dataset.state === 'error' || (document.body.dataset.state === 'ready' && !document.getElementById('error').hidden)", LOAD);
        let error = page.text("error");
        assert!(error.contains(says), "model {model}: {error}");
    }
    page.shot("bad-model");
    // A bad model is not a dead end: the error links back to the page's own model.
    page.goto("/?model=nope&backend=cpu");
    page.browser
        .wait_for("document.body.dataset.state === 'error'", LOAD);
    page.browser
        .eval("document.getElementById('default-model').click()");
    page.browser
        .wait_for("!location.search.includes('nope')", LOAD);
    page.wait_ready();
    assert!(!page.visible("error"), "{}", page.text("error"));
    // A link's error goes once the visitor moves on.
    page.goto("/?model=e2e#seed=abc");
    page.wait_ready();
    page.browser
        .wait_for("!document.getElementById('error').hidden", LOAD);
    page.redraw(
        "#grid canvas",
        "document.getElementById('new-faces').click()",
    );
    assert!(!page.visible("error"), "{}", page.text("error"));
}

/// A copy of the test model in `scratch/name`, to damage or edit.
fn copy_model(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path(name);
    copy_tree(model(), &dir);
    dir
}

/// Copies every file under `from` to the same place under `to`.
fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let dest = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dest).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// The worker dying on WebGPU (as on a lost device) restarts the generator on the CPU with a
/// notice, and the page keeps working.
#[test]
fn a_dead_webgpu_worker_falls_back_to_the_cpu() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(true, vec![]);
    page.browser.watch_workers();
    page.goto("/?model=e2e&backend=webgpu");
    page.wait_ready();
    assert_eq!(page.browser.eval("document.body.dataset.backend"), "webgpu");
    let before = page.pixels("#grid div:nth-child(1) canvas");
    // An uncaught error inside the worker, as a lost GPU device would raise.
    page.browser.eval_in_worker(
        "setTimeout(() => { throw new Error('simulated loss of the GPU device'); }, 0); 1",
    );
    page.browser.wait_for(
        "document.body.dataset.backend === 'cpu' && document.body.dataset.state === 'ready'",
        LOAD,
    );
    let notice = page.text("notice");
    assert!(
        notice.contains("WebGPU stopped working") && notice.contains("CPU"),
        "{notice}"
    );
    // New faces come from the CPU now.
    page.browser.wait_for(
        "document.querySelector('#grid canvas').dataset.rendered > 16 && document.body.dataset.grid === 'done'",
        LOAD,
    );
    let after = page.redraw(
        "#grid div:nth-child(1) canvas",
        "document.getElementById('new-faces').click()",
    );
    assert!(std_dev(&after) > 8.0 && mean_abs_diff(&before, &after) > 0.0);
    page.shot("webgpu-lost");
}

/// Keyboard use, the PNG download, and a phone-sized screen.
#[test]
fn keyboard_download_and_narrow_screen() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e");
    page.wait_ready();
    // Tab-reachable buttons: focus a face and press Enter to open it; Escape closes it.
    page.browser
        .eval("document.querySelector('#grid div:nth-child(3) button').focus()");
    page.browser.press("Enter", "Enter", 13);
    page.browser.wait_for("!document.getElementById('detail').hidden && document.getElementById('detail-canvas').dataset.rendered", LOAD);
    let seed = page
        .browser
        .eval("document.querySelector('#grid div:nth-child(3) button').dataset.seed")
        .as_str()
        .unwrap()
        .to_string();
    assert!(page.text("detail-label").contains(&seed));
    // Every control has a name a screen reader can read.
    let unnamed = page.browser.eval(
        "Array.from(document.querySelectorAll('button, input')).filter(e => !(e.textContent.trim() || e.getAttribute('aria-label') || (e.id && document.querySelector(`label[for=\"${e.id}\"]`)))).length",
    );
    assert_eq!(unnamed, 0, "controls without a label");

    // Download PNG saves the face, enlarged to 256×256.
    let downloads = Scratch::new("web-downloads");
    page.browser.call_browser(
        "Browser.setDownloadBehavior",
        serde_json::json!({"behavior": "allow", "downloadPath": downloads.0.to_string_lossy()}),
    );
    page.browser
        .eval("document.getElementById('download').click()");
    let file = downloads.path(&format!("face-seed{seed}.png"));
    let start = std::time::Instant::now();
    while !file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no download at {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let png = read_rgb(&file);
    assert_eq!(png.dimensions(), (256, 256));
    assert!(std_dev(png.as_raw()) > 8.0);

    // Focus went into the opened face (Close first), and Escape gives it back to the face's tile.
    assert_eq!(
        page.browser.eval("document.activeElement.id"),
        "close-detail",
        "focus moves into the opened face"
    );
    page.browser.press("Escape", "Escape", 27);
    page.browser
        .wait_for("document.getElementById('detail').hidden", LOAD);
    assert_eq!(
        page.browser.eval(
            "document.activeElement === document.querySelector('#grid div:nth-child(3) button')"
        ),
        true,
        "focus returns to the tile that opened the face"
    );

    // A phone-sized screen: nothing sticks out sideways.
    page.browser.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let fits = page
        .browser
        .eval("document.documentElement.scrollWidth <= window.innerWidth");
    assert_eq!(
        fits,
        Value::Bool(true),
        "the page is wider than a 390-pixel screen"
    );
    page.shot("narrow-screen");
}

/// The GPU failing mid-session, for real: the worker's own `GPUDevice` destroyed (a lost device),
/// and a GPU that stops answering (its buffer reads never complete). The page is served with an
/// instrumented worker loader that keeps a handle to every device the worker asks for and can
/// hold back buffer reads; the page's own code is unchanged. Either way the page notices — the
/// failed request, or its deadline — and carries on on the CPU with a notice, no error left.
#[test]
fn a_lost_or_hung_gpu_falls_back_to_the_cpu() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("web-gpu-faults");
    let root = scratch.path("dist");
    copy_tree(&web_dist(), &root);
    let loader = root.join("engine-loader.js");
    let original = std::fs::read_to_string(&loader).unwrap();
    assert!(
        original.contains("importScripts("),
        "the worker loader changed shape: {original}"
    );
    let instruments = "self.devices = []; self.hang = false; \
        const ask = GPUAdapter.prototype.requestDevice; \
        GPUAdapter.prototype.requestDevice = async function (...a) { const d = await ask.apply(this, a); self.devices.push(d); return d; }; \
        const map = GPUBuffer.prototype.mapAsync; \
        GPUBuffer.prototype.mapAsync = function (...a) { return self.hang ? new Promise(() => {}) : map.apply(this, a); };\n";
    std::fs::write(&loader, format!("{instruments}{original}")).unwrap();

    for (fault, says) in [
        ("self.devices.forEach((d) => d.destroy())", "device"),
        ("self.hang = true", "no answer from the GPU in 20 s"),
    ] {
        let mut page = Page::open_at(&root, true, vec![]);
        page.browser.watch_workers();
        page.goto("/?model=e2e&backend=webgpu");
        page.wait_ready();
        assert_eq!(page.browser.eval("document.body.dataset.backend"), "webgpu");
        assert_eq!(
            page.browser.eval_in_worker("self.devices.length")["result"]["value"],
            1
        );
        // The page idle (the first blend drawn), then the fault, then a face asked for.
        page.browser.wait_for(
            "document.getElementById('canvas-mix').dataset.shows === 'blend 0.50'",
            LOAD,
        );
        page.browser.eval_in_worker(fault);
        // Open a face: one face on the failed GPU.
        page.browser
            .eval("document.querySelector('#grid div:nth-child(1) button').click()");
        page.browser.wait_for(
            "document.body.dataset.backend === 'cpu' && document.body.dataset.state === 'ready'",
            LOAD,
        );
        let notice = page.text("notice");
        assert!(
            notice.starts_with("WebGPU stopped working")
                && notice.contains(says)
                && notice.contains("continuing on the CPU"),
            "{fault}: {notice}"
        );
        assert!(
            !page.visible("error"),
            "{fault}: an error is left showing: {}",
            page.text("error")
        );
        // The face that was being opened is drawn by the CPU.
        page.browser.wait_for(
            "document.getElementById('detail-canvas').dataset.rendered",
            LOAD,
        );
        let face = page.pixels("#detail-canvas");
        assert!(
            std_dev(&face) > 8.0,
            "{fault}: the open face is not drawn after the fallback"
        );
        // The CPU draws new faces on request (once its first grid is done).
        page.browser
            .wait_for("document.body.dataset.grid === 'done'", LOAD);
        let after = page.redraw(
            "#grid div:nth-child(1) canvas",
            "document.getElementById('new-faces').click()",
        );
        assert!(
            std_dev(&after) > 8.0,
            "{fault}: a blank face after the fallback"
        );
        page.shot(if says == "device" {
            "gpu-device-lost"
        } else {
            "gpu-hung"
        });
    }
}

#[test]
fn a_browser_without_a_webgpu_adapter_fails_the_webgpu_tests_at_once_naming_itself() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start(&web_dist(), vec![]);
    // Without the WebGPU flags, Chromium gives no adapter: what an unsuitable build looks like.
    let mut browser = Browser::launch(false);
    browser.goto(&server.url("/adapter-probe"));
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        browser.require_webgpu_adapter()
    }))
    .expect_err("no adapter must fail the check");
    let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("Chrome/")
            && message.contains("--enable-unsafe-webgpu --enable-unsafe-swiftshader")
            && message.contains("gives none"),
        "{message}"
    );
}

/// Served from a sub-folder, the page finds its stylesheet, its worker and its icon (every link is
/// relative), and a visit fetches nothing that is not there.
#[test]
fn the_page_works_from_a_sub_folder() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let empty = Scratch::new("web-root");
    let mounts = vec![
        ("/demo/".to_string(), web_dist()),
        ("/demo/models/e2e/".to_string(), model().to_path_buf()),
    ];
    let server = Server::start(&empty.0, mounts);
    let mut browser = Browser::launch(false);
    browser.goto(&server.url("/demo/?model=e2e"));
    let state = browser.wait_for(
        "document.body && ['ready','error'].includes(document.body.dataset.state) && document.body.dataset.state",
        LOAD,
    );
    assert_eq!(state, "ready");
    let styled = browser.eval(
        "[...document.styleSheets].some(s => { try { return s.cssRules.length > 0; } catch (e) { return false; } })",
    );
    assert_eq!(styled, true, "the stylesheet loaded");
    let icon = browser.eval(
        "(async () => (await fetch(document.querySelector('link[rel=icon]').href)).status)()",
    );
    assert_eq!(icon, 200, "the icon is there");
}

/// A link made on the forced CPU does not force the CPU on whoever opens it; an unknown
/// `?backend=` is said, not silently ignored.
#[test]
fn links_leave_the_backend_to_the_visitor_and_unknown_backends_are_said() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e&backend=cpu#seed=77");
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.rendered",
        LOAD,
    );
    let link = page
        .browser
        .eval("document.getElementById('link-text').value");
    let link = link.as_str().unwrap_or_default().to_string();
    assert!(
        link.contains("model=e2e") && link.ends_with("#seed=77") && !link.contains("backend"),
        "{link}"
    );
    page.goto("/?model=e2e&backend=nonsense");
    page.wait_ready();
    let notice = page.text("notice");
    assert!(
        page.visible("notice") && notice.contains("“?backend=nonsense” is not a backend"),
        "{notice}"
    );
}

/// On a phone, a shared link's face is drawn first and scrolled into view, before the grid.
#[test]
fn a_shared_face_comes_first_and_in_view_on_a_phone() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.browser.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    page.goto("/?model=e2e#seed=77");
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.rendered",
        LOAD,
    );
    let order = page.browser.eval(
        "[document.getElementById('detail-canvas'), document.querySelector('#grid canvas')].map(c => Number(c.dataset.rendered))",
    );
    let (face, grid) = (order[0].as_f64().unwrap(), order[1].as_f64().unwrap());
    assert!(
        face < grid,
        "the face (draw {face}) before the grid (draw {grid})"
    );
    let top = page
        .browser
        .eval("document.getElementById('detail-canvas').getBoundingClientRect().top")
        .as_f64()
        .unwrap();
    assert!(
        (0.0..844.0).contains(&top),
        "the face is in view: its top at {top}"
    );
    page.shot("phone-shared-link");
}

/// Starting shows each phase with its own progress, in order: the engine's download (counted
/// against the wasm file's size, to the end), its compilation, the model's download (to the end),
/// and the warm-up on the backend that runs.
#[test]
fn the_loading_bar_shows_each_phase_of_a_start() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.browser.call(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": r#"
            window.__phases = [];
            new MutationObserver(() => {
                const loading = document.getElementById('loading');
                const bar = document.getElementById('progress');
                if (!loading || !bar || !loading.dataset.phase) return;
                const seen = {
                    phase: loading.dataset.phase,
                    value: bar.hasAttribute('value') ? bar.value : null,
                    max: bar.max,
                    label: document.getElementById('progress-label').textContent,
                };
                const last = window.__phases[window.__phases.length - 1];
                if (!last || JSON.stringify(last) !== JSON.stringify(seen)) window.__phases.push(seen);
            }).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
        "#}),
    );
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    let seen = page.browser.eval("window.__phases");
    let seen = seen.as_array().expect("phases recorded");
    let mut order: Vec<&str> = Vec::new();
    for s in seen {
        let phase = s["phase"].as_str().unwrap();
        if order.last() != Some(&phase) {
            order.push(phase);
        }
    }
    assert_eq!(
        order,
        ["engine", "compile", "model", "warmup"],
        "phases in order: {seen:#?}"
    );
    let wasm = std::fs::metadata(web_dist().join("pggan-web_bg.wasm"))
        .unwrap()
        .len() as f64;
    let of = |phase: &'static str| seen.iter().filter(move |s| s["phase"] == phase);
    assert!(
        of("engine").all(|s| s["max"].as_f64() == Some(wasm))
            && of("engine").any(|s| s["value"].as_f64() == Some(wasm))
            && of("engine").any(|s| s["value"].as_f64().is_some_and(|v| v < wasm)),
        "the engine's download counted from below to all of its {wasm} bytes: {seen:#?}"
    );
    let model_end = of("model").next_back().unwrap();
    assert!(
        model_end["value"].as_f64().is_some()
            && model_end["value"] == model_end["max"]
            && model_end["max"].as_f64().unwrap() > 1000.0,
        "the model's download to its end: {seen:#?}"
    );
    assert!(
        of("compile").all(|s| s["value"].is_null()) && of("warmup").all(|s| s["value"].is_null()),
        "compiling and warming up have no measure, so the bar says none: {seen:#?}"
    );
    let warm = of("warmup").next_back().unwrap()["label"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(warm.contains("CPU"), "{warm}");
}

/// On the CPU the grid is shared by a worker per core (three here, the page told of 3 cores):
/// faces come from several workers and appear one by one, not all at the end; a face drawn by a
/// helper is the very face the main worker draws for its seed; a helper that fails mid-grid hands
/// its face back, the grid is still drawn whole, and the pool goes on without it.
#[test]
fn the_cpu_grid_is_shared_by_a_worker_per_core_and_drawn_face_by_face() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.browser.watch_workers();
    page.browser.call(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": "Object.defineProperty(Navigator.prototype, 'hardwareConcurrency', { get: () => 3 });"}),
    );
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    page.browser
        .wait_for("document.body.dataset.workers === '3'", LOAD);
    assert!(
        page.text("status").contains("3 workers"),
        "{}",
        page.text("status")
    );
    page.browser.eval(
        "window.__draws = []; new MutationObserver((ms) => { for (const m of ms) window.__draws.push([performance.now(), m.target.dataset.worker]); }).observe(document.getElementById('grid'), { subtree: true, attributes: true, attributeFilter: ['data-rendered'] }); 0",
    );
    let redraw_grid = |page: &mut Page| -> f64 {
        let before = page
            .browser
            .eval("Math.max(...[...document.querySelectorAll('#grid canvas')].map((c) => Number(c.dataset.rendered)))")
            .as_f64()
            .unwrap();
        let clicked = page
            .browser
            .eval("window.__draws = []; document.getElementById('new-faces').click(); performance.now()")
            .as_f64()
            .unwrap();
        page.browser.wait_for(
            &format!("[...document.querySelectorAll('#grid canvas')].every((c) => Number(c.dataset.rendered) > {before}) && document.body.dataset.grid === 'done'"),
            LOAD,
        );
        clicked
    };

    // The first face, which the main worker draws first, is the large one.
    let widths = page.browser.eval(
        "[1, 2].map((i) => document.querySelector(`#grid div:nth-child(${i}) canvas`).getBoundingClientRect().width)",
    );
    let (big, small) = (widths[0].as_f64().unwrap(), widths[1].as_f64().unwrap());
    assert!(big > 2.5 * small, "tile widths {big} and {small}");
    // No face drawn yet is an empty black box: a new tile waits as a soft placeholder.
    let waiting = page.browser.eval(
        "(() => { const c = document.createElement('canvas'); document.getElementById('grid').append(c); const s = getComputedStyle(c); const r = [s.backgroundImage, s.animationName]; c.remove(); return r; })()",
    );
    assert!(
        waiting[0].as_str().unwrap().contains("gradient") && waiting[1] == "waiting",
        "{waiting}"
    );
    let clicked = redraw_grid(&mut page);
    let draws = page.browser.eval("window.__draws");
    let draws = draws.as_array().unwrap();
    assert_eq!(draws.len(), 16, "{draws:?}");
    let times: Vec<f64> = draws.iter().map(|d| d[0].as_f64().unwrap()).collect();
    let workers: std::collections::BTreeSet<&str> =
        draws.iter().map(|d| d[1].as_str().unwrap()).collect();
    assert!(
        workers.len() >= 2,
        "one worker drew the whole grid: {draws:?}"
    );
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        last - first >= 0.25 * (last - clicked),
        "faces appear one by one: the first at {:.0} ms, the last at {:.0} ms after the click",
        first - clicked,
        last - clicked
    );

    // A helper's face is the main worker's face for that seed, to the bit.
    let tile = page
        .browser
        .eval("[...document.querySelectorAll('#grid canvas')].findIndex((c) => c.dataset.worker !== 'main') + 1")
        .as_u64()
        .unwrap();
    assert!(tile >= 1);
    let from_helper = page.pixels(&format!("#grid div:nth-child({tile}) canvas"));
    let opened = page.redraw(
        "#detail-canvas",
        &format!("document.querySelector('#grid div:nth-child({tile}) button').click()"),
    );
    assert_eq!(max_abs_diff(&from_helper, &opened), 0);

    // The newest helper fails instead of answering its next face.
    page.browser.eval_in_worker(
        "const post = self.postMessage.bind(self); self.postMessage = (msg, t) => (msg && msg.pixels ? post({ op: 'panic', message: 'test: this helper stops' }) : post(msg, t));",
    );
    redraw_grid(&mut page);
    page.browser
        .wait_for("document.body.dataset.workers === '2'", LOAD);
    check_faces_drawn(&mut page);
    let draws = page.browser.eval("window.__draws.length").as_u64().unwrap();
    assert_eq!(
        draws, 16,
        "every face drawn once, the failed one by another worker"
    );
    assert!(page.text("error").is_empty(), "{}", page.text("error"));
    redraw_grid(&mut page);
    assert!(page.text("status").contains("2 workers"));
}

/// What `pggan generate` draws for `seed` of the shipped model at truncation `psi`, as RGB bytes.
fn native_shipped_face(seed: u64, psi: f64) -> Vec<u8> {
    let dir = Scratch::new(&format!("web-native-shipped-{seed}-{psi}"));
    let model = pggan_e2e::repo_root().join("www/models/utk64");
    pggan_ok(&[
        "generate",
        "--model",
        &model.to_string_lossy(),
        "--seed",
        &seed.to_string(),
        "--truncation",
        &psi.to_string(),
        "--out",
        &dir.arg("face.png"),
    ]);
    read_rgb(&dir.path("face.png")).into_raw()
}

/// Mean absolute difference over every pair of the grid's first `n` faces.
fn grid_variety(page: &mut Page, n: usize) -> f64 {
    let faces: Vec<Vec<u8>> = (1..=n)
        .map(|i| page.pixels(&format!("#grid div:nth-child({i}) canvas")))
        .collect();
    mean_pairwise_difference(&faces)
}

/// The truncation slider (the shipped 64×64 model, on the CPU): a link's `&psi=` sets it and
/// draws its face as `pggan generate --truncation` does; lower ψ draws the same faces of the grid
/// more alike, higher more varied; the opened face's link follows the slider; a bad ψ in a link
/// is named.
#[test]
fn the_truncation_slider_trades_variety_for_typical_faces_and_links_keep_it() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let native = native_shipped_face(1234, 0.5);
    let mut page = Page::open(false, vec![]);
    page.goto("/?backend=cpu#seed=1234&psi=0.5");
    page.wait_ready();
    page.browser.wait_for(
        "document.getElementById('detail-canvas').dataset.rendered",
        LOAD,
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('truncation').value"),
        "0.5"
    );
    let face = page.pixels("#detail-canvas");
    let (mean, max) = (mean_abs_diff(&face, &native), max_abs_diff(&face, &native));
    assert!(
        mean < 1.0 && max <= 6,
        "seed 1234 at ψ 0.5 differs from pggan generate by mean {mean:.3}, max {max}"
    );
    let link = page
        .browser
        .eval("document.getElementById('link-text').value");
    assert!(
        link.as_str().unwrap().ends_with("#seed=1234&psi=0.5"),
        "{link}"
    );

    // The same grid faces at ψ 0.5, then 1, then 0.3.
    let at_half = grid_variety(&mut page, 6);
    let set = |page: &mut Page, psi: &str| {
        let before = page.rendered("#grid div:nth-child(6) canvas");
        page.browser.eval(&format!(
            "(() => {{ const t = document.getElementById('truncation'); t.value = '{psi}'; t.dispatchEvent(new Event('input')); }})()"
        ));
        page.browser.wait_for(
            &format!("Number(document.querySelector('#grid div:nth-child(6) canvas').dataset.rendered) > {before} && document.body.dataset.grid === 'done'"),
            LOAD,
        );
    };
    set(&mut page, "1");
    let at_one = grid_variety(&mut page, 6);
    let link = page.browser.eval("location.hash");
    assert_eq!(link, "#seed=1234", "ψ 1 is left out of links");
    set(&mut page, "0.3");
    let at_low = grid_variety(&mut page, 6);
    assert!(
        at_one > at_half && at_half > at_low,
        "variety between faces: ψ 1 {at_one:.1}, ψ 0.5 {at_half:.1}, ψ 0.3 {at_low:.1}"
    );
    assert_eq!(page.browser.eval("location.hash"), "#seed=1234&psi=0.3");

    page.goto("/?backend=cpu#seed=1&psi=7");
    page.wait_ready();
    page.browser
        .wait_for("!document.getElementById('error').hidden", LOAD);
    let error = page.text("error");
    assert!(
        error.contains("psi=7") && error.contains("0 to 1"),
        "{error}"
    );
}

/// The page keeps the engine and the model in the browser's Cache Storage: a second visit
/// downloads neither (only the small files that say their versions); a new export of the model
/// in the same place (its manifest changed) is downloaded afresh, not served from the cache.
#[test]
fn a_second_visit_downloads_nothing_and_a_new_export_is_not_served_stale() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("web-cache");
    let dir = copy_model(&scratch, "cached");
    let mut page = Page::open(false, vec![("/models/cached/".to_string(), dir.clone())]);
    let generator = "/models/cached/generator.safetensors";
    let visit = |page: &mut Page| -> (u64, u64, String) {
        let before = page.server.bytes_sent();
        page.goto("/?model=cached&backend=cpu");
        page.wait_ready();
        let after = page.server.bytes_sent();
        let delta = |path: &str| after.get(path).unwrap_or(&0) - before.get(path).unwrap_or(&0);
        (
            delta("/pggan-web_bg.wasm"),
            delta(generator),
            page.text("model-card"),
        )
    };
    let wasm_len = std::fs::metadata(web_dist().join("pggan-web_bg.wasm"))
        .unwrap()
        .len();
    let gen_len = std::fs::metadata(dir.join("generator.safetensors"))
        .unwrap()
        .len();

    let (wasm, model, _) = visit(&mut page);
    assert_eq!(
        (wasm, model),
        (wasm_len, gen_len),
        "the first visit downloads the engine and the model"
    );
    let (wasm, model, card) = visit(&mut page);
    assert_eq!((wasm, model), (0, 0), "the second visit downloads neither");
    assert!(card.contains("“e2e”"), "{card}");

    // A new export in the same place: its manifest says so, and the page takes the new files.
    let manifest_path = dir.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["name"] = Value::from("e2e-retrained");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let (wasm, model, card) = visit(&mut page);
    assert_eq!(
        (wasm, model),
        (0, gen_len),
        "a new export: the model again, the engine still kept"
    );
    assert!(card.contains("“e2e-retrained”"), "{card}");
    // Only the current version is kept: the old one is gone from the cache.
    let kept = page.browser.eval(
        "(async () => (await (await caches.open('pggan-v1')).keys()).map((r) => r.url).filter((u) => u.includes('generator.safetensors')))()",
    );
    assert_eq!(kept.as_array().map(Vec::len), Some(1), "{kept}");
}

/// "Play the growth" loads the stages and steps one face through every stage in order — each
/// from the start of its fade-in (the snapshots kept in training) to its end — then stops; the
/// page explains what it shows, with the model's scores in words beside the photographs'.
#[test]
fn play_the_growth_steps_through_every_stage_and_the_page_explains_itself() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    let words = page.text("model-words");
    assert!(
        words.contains("thousand pictures")
            && words.contains("photographs compared with other photographs")
            && words.contains("pairs of photographs"),
        "{words}"
    );
    assert!(page.text("about").contains("Progressive growing"));
    page.browser.eval(
        "window.__labels = []; new MutationObserver(() => { const t = document.getElementById('stage-label').textContent; if (window.__labels[window.__labels.length - 1] !== t) window.__labels.push(t); }).observe(document.getElementById('stage-label'), { childList: true, characterData: true, subtree: true }); document.getElementById('play-growth').click(); 0",
    );
    page.browser.wait_for(
        "document.getElementById('play-growth').getAttribute('aria-pressed') === 'true'",
        LOAD,
    );
    page.browser.wait_for(
        "document.getElementById('play-growth').getAttribute('aria-pressed') === 'false'",
        LOAD,
    );
    let labels: Vec<String> = page
        .browser
        .eval("window.__labels")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let stages = page
        .browser
        .eval("document.querySelectorAll('#stages button').length")
        .as_u64()
        .unwrap() as usize;
    assert!(stages >= 2, "{stages} stages");
    // Every stage shown, in order, each finished before the next begins.
    let mut next = 1;
    for label in &labels {
        let prefix = format!("Stage {next} of {stages}");
        if label.starts_with(&prefix) && !label.contains("fading in") {
            next += 1;
        }
    }
    assert_eq!(next, stages + 1, "{labels:#?}");
    assert!(
        labels.iter().any(|l| l.contains("fading in")),
        "the fade-ins replayed: {labels:#?}"
    );
    assert!(page.text("error").is_empty(), "{}", page.text("error"));
}

/// Link previews: the built page names a title, a description and a 1200×630 picture of
/// generated faces, relative to the page; `scripts/page-urls.sh` (run by the page's build when
/// `PGGAN_PUBLIC_URL` or `PGGAN_SOURCE_URL` is set) makes the picture absolute for the address
/// the page is served at, or names where the source is published (the page then links to it),
/// and refuses an address it cannot put in the page safely, leaving the page as it was.
#[test]
fn link_previews_show_generated_faces_and_the_page_can_link_its_source() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dist = web_dist();
    let index = std::fs::read_to_string(dist.join("index.html")).unwrap();
    for tag in [
        r#"<meta property="og:title" content="Progressive GAN faces">"#,
        r#"<meta property="og:image" content="og-image.jpg">"#,
        r#"<meta name="twitter:card" content="summary_large_image">"#,
    ] {
        assert!(index.contains(tag), "{tag}");
    }
    let picture = image::open(dist.join("og-image.jpg")).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), (1200, 630));
    assert!(
        std_dev(picture.as_raw()) > 30.0,
        "a picture, not a flat field"
    );

    let scratch = Scratch::new("page-urls");
    let root = scratch.path("dist");
    copy_tree(&dist, &root);
    let page_file = root.join("index.html");
    let script = pggan_e2e::repo_root().join("scripts/page-urls.sh");
    let run = |kind: &str, url: &str| {
        std::process::Command::new("bash")
            .arg(&script)
            .arg(&page_file)
            .args([kind, url])
            .output()
            .unwrap()
    };
    for (kind, bad) in [
        ("public", "javascript:alert(1)"),
        ("public", "https://x.org/a&b"),
        ("source", "https://x.org/\"><script>"),
        ("elsewhere", "https://x.org/"),
    ] {
        let out = run(kind, bad);
        assert!(!out.status.success(), "{kind} {bad} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error:"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&page_file).unwrap(),
            index,
            "{bad} changed the page"
        );
    }
    assert!(run("public", "https://example.org/faces/").status.success());
    assert!(run("source", "https://example.org/pggan").status.success());
    let made = std::fs::read_to_string(&page_file).unwrap();
    assert!(
        made.contains(
            r#"<meta property="og:image" content="https://example.org/faces/og-image.jpg">"#
        ) && made.contains(r#"<meta property="og:url" content="https://example.org/faces/">"#)
            && made.contains(r#"<meta name="pggan-source" content="https://example.org/pggan">"#),
        "{made}"
    );

    // The page links its source when told where it is, and says it is not when not.
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    assert!(page.text("source-note").contains("not published"));
    drop(page);
    let mut page = Page::open_at(&root, false, vec![]);
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    assert_eq!(
        page.browser
            .eval("document.querySelector('#source-note a').href"),
        "https://example.org/pggan"
    );
}

/// An opened face is a step in the browser's history: its grid tile is marked, Back closes it
/// and gives the keyboard focus back to the tile; Close does the same (by going back itself, so
/// the face is not left behind as a step to return to).
#[test]
fn back_closes_an_opened_face() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    let open = |page: &mut Page, tile: usize| {
        page.redraw(
            "#detail-canvas",
            &format!("document.querySelector('#grid div:nth-child({tile}) button').click()"),
        );
        page.browser
            .wait_for("location.hash.startsWith('#seed=')", LOAD);
        assert_eq!(
            page.browser.eval(&format!(
                "document.querySelector('#grid div:nth-child({tile}) button').getAttribute('aria-current')"
            )),
            "true"
        );
    };
    open(&mut page, 3);
    page.browser.eval("history.back(); 0");
    page.browser
        .wait_for("document.getElementById('detail').hidden", LOAD);
    assert_eq!(page.browser.eval("location.hash"), "");
    assert_eq!(
        page.browser.eval(
            "document.activeElement === document.querySelector('#grid div:nth-child(3) button')"
        ),
        true,
        "focus back on the tile"
    );
    assert_eq!(
        page.browser
            .eval("document.querySelectorAll('#grid button[aria-current]').length"),
        0
    );

    open(&mut page, 5);
    page.browser
        .eval("document.getElementById('close-detail').click(); 0");
    page.browser.wait_for(
        "document.getElementById('detail').hidden && location.hash === ''",
        LOAD,
    );
    assert_eq!(
        page.browser
            .eval("document.querySelectorAll('#grid button[aria-current]').length"),
        0
    );
    assert_eq!(
        page.browser.eval(
            "document.activeElement === document.querySelector('#grid div:nth-child(5) button')"
        ),
        true,
        "focus back on the tile"
    );
}

/// With more than one shipped model (`models/index.json`), the page offers a choice, starts on the
/// list's default, and choosing another opens the page on it; with one (as shipped today) there
/// is no choice to make.
#[test]
fn the_page_offers_a_choice_between_shipped_models() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut single = Page::open(false, vec![]);
    single.goto("/?model=e2e&backend=cpu");
    single.wait_ready();
    assert!(
        !single.visible("model-pick"),
        "one shipped model: no choice"
    );
    drop(single);

    let scratch = Scratch::new("web-models");
    let root = scratch.path("dist");
    copy_tree(&web_dist(), &root);
    std::fs::write(
        root.join("models/index.json"),
        r#"{"default": "e2e", "models": [{"name": "utk64", "label": "Faces, 64×64"}, {"name": "e2e", "label": "The test model"}]}"#,
    )
    .unwrap();
    let mut page = Page::open_at(&root, false, vec![]);
    page.goto("/?backend=cpu");
    page.wait_ready();
    assert!(page.visible("model-pick"));
    assert!(
        page.text("model-card").contains("“e2e”"),
        "the list's default"
    );
    assert_eq!(
        page.browser.eval("[...document.getElementById('model-choice').options].map((o) => o.textContent + (o.selected ? ' *' : '')).join(' | ')"),
        "Faces, 64×64 | The test model *"
    );
    page.browser.eval("(() => { const s = document.getElementById('model-choice'); s.value = 'utk64'; s.dispatchEvent(new Event('change')); })()");
    page.browser
        .wait_for("location.search.includes('model=utk64')", LOAD);
    page.wait_ready();
    assert!(
        page.text("model-card").contains("“utk64”"),
        "{}",
        page.text("model-card")
    );
    assert!(
        page.browser
            .eval("location.search")
            .as_str()
            .unwrap()
            .contains("backend=cpu"),
        "the other settings kept"
    );
}

/// "Save as a video" records one loop of the blend (Play A → B → A, started for it and stopped
/// after) into a WebM file made in the page, offered as a download.
#[test]
fn the_blend_saves_as_a_webm_video() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut page = Page::open(false, vec![]);
    page.goto("/?model=e2e&backend=cpu");
    page.wait_ready();
    page.browser
        .wait_for("!document.getElementById('record').disabled", LOAD);
    page.browser
        .eval("document.getElementById('record').click(); 0");
    page.browser
        .wait_for("!document.getElementById('video-link').hidden", LOAD);
    let bytes = page
        .browser
        .eval("Number(document.getElementById('video-link').dataset.bytes)")
        .as_u64()
        .unwrap();
    assert!(bytes > 2000, "a video of {bytes} bytes");
    assert_eq!(
        page.browser
            .eval("document.getElementById('video-link').dataset.head"),
        "1a45dfa3",
        "a WebM (EBML) file"
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('video-link').download"),
        "blend.webm"
    );
    assert_eq!(
        page.browser
            .eval("document.getElementById('play').getAttribute('aria-pressed')"),
        "false",
        "Play, started for the video, stopped after it"
    );
}

/// A raw HTTP GET of `path` from `origin` (`127.0.0.1:port`): the response's headers (lower
/// case) and body.
fn http_get(origin: &str, path: &str, gzip: bool) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(origin).unwrap();
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {origin}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&raw[..split]).to_lowercase(),
        raw[split + 4..].to_vec(),
    )
}

/// The demo's server (`scripts/serve.py`): the engine travels gzip-compressed to a browser that
/// accepts it (as it is to one that does not), pictures as they are, and the page works through
/// it — its loading bar counting the engine to its full size, not the compressed one.
#[test]
fn the_demo_server_compresses_and_the_page_works_through_it() {
    use std::io::{BufRead, Read};
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let dist = web_dist();
    let script = pggan_e2e::repo_root().join("scripts/serve.py");
    /// The server, stopped however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Stop(
        std::process::Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--dir"])
            .arg(&dist)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let origin = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    let wasm = std::fs::read(dist.join("pggan-web_bg.wasm")).unwrap();
    let (head, body) = http_get(&origin, "/pggan-web_bg.wasm", true);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(body.len() < wasm.len() / 3, "{} bytes sent", body.len());
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert!(unpacked == wasm, "the engine, unpacked, is the file");
    let (head, body) = http_get(&origin, "/pggan-web_bg.wasm", false);
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(body == wasm);
    let (head, _) = http_get(&origin, "/og-image.jpg", true);
    assert!(
        !head.contains("content-encoding"),
        "a JPEG is sent as it is: {head}"
    );

    let mut b = Browser::launch(false);
    b.call(
        "Page.addScriptToEvaluateOnNewDocument",
        serde_json::json!({"source": "window.__engineMax = 0; new MutationObserver(() => { const l = document.getElementById('loading'); const p = document.getElementById('progress'); if (l && p && l.dataset.phase === 'engine') window.__engineMax = Math.max(window.__engineMax, p.max); }).observe(document, { subtree: true, attributes: true });"}),
    );
    b.goto(&format!("{url}?backend=cpu"));
    let state = b.wait_for("document.body && ['ready','error'].includes(document.body.dataset.state) && document.body.dataset.state", LOAD);
    assert_eq!(state, "ready");
    b.wait_for("document.body.dataset.grid === 'done'", LOAD);
    assert_eq!(
        b.eval("window.__engineMax").as_u64(),
        Some(wasm.len() as u64),
        "the loading bar counts the engine's own size"
    );
    drop(server);
}
