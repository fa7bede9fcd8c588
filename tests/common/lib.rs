//! Helpers for the end-to-end tests: find and run the `pggan` binary, scratch folders, images.

pub mod browser;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pggan` binary: `$PGGAN_BIN`, or `pggan` in the target folder these tests were built in
/// (the test command builds it first).
pub fn pggan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PGGAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile folder");
    let bin = dir.join("pggan");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --release -p pggan-trainer`",
        bin.display()
    );
    bin
}

/// The root of the checkout under test. Cargo sets `CARGO_MANIFEST_DIR` when it runs a test, so
/// this is the checkout being tested even where its test binaries were built by another checkout
/// that shares the build folder (as CI's clone and a working copy on one machine do): cargo does
/// not rebuild a workspace member's tests for a checkout elsewhere whose files are older, and the
/// path compiled into them would be the other checkout's.
pub fn repo_root() -> PathBuf {
    let tests = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    tests
        .parent()
        .expect("the tests crate is a folder of the repository")
        .to_path_buf()
}

/// A `pggan` command with these arguments.
pub fn pggan(args: &[&str]) -> Command {
    let mut c = Command::new(pggan_bin());
    c.args(args);
    c
}

/// Runs `pggan` and returns its output, panicking with both streams if it failed.
pub fn pggan_ok(args: &[&str]) -> String {
    let out = pggan(args).output().expect("run pggan");
    assert!(
        out.status.success(),
        "pggan {args:?} failed:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `pggan`, which must fail with a message that contains every one of `expect` (bad input
/// gets a clear error naming the problem); returns that message.
pub fn pggan_fails(args: &[&str], expect: &[&str]) -> String {
    let out = pggan(args).output().expect("run pggan");
    assert!(!out.status.success(), "pggan {args:?} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for e in expect {
        assert!(
            stderr.contains(e),
            "pggan {args:?}: expected `{e}` in:\n{}",
            describe(&out)
        );
    }
    stderr
}

/// Both output streams of a finished command.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch folder removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh folder named after the test.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pggan-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside the folder, as a string argument.
    pub fn arg(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }

    /// A path inside the folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("PGGAN_KEEP_TEST_FILES").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Reads a PNG as RGB.
pub fn read_rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .to_rgb8()
}

/// Mean absolute difference of two pictures' bytes (per channel, 0–255).
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.len() as f64
}

/// Largest absolute difference of two pictures' bytes.
pub fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y)).max().unwrap()
}

/// How varied some pictures are: [`mean_abs_diff`] averaged over every pair of them.
pub fn mean_pairwise_difference(pictures: &[Vec<u8>]) -> f64 {
    let mut sum = 0.0;
    let mut pairs = 0.0;
    for (i, a) in pictures.iter().enumerate() {
        for b in &pictures[i + 1..] {
            sum += mean_abs_diff(a, b);
            pairs += 1.0;
        }
    }
    sum / pairs
}

/// Lines of a run's metrics.jsonl, parsed. A line still being written (no newline yet) is left
/// out; every complete line must be JSON.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("metrics line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// A small deterministic generator for test data.
pub struct Lcg(pub u64);

impl Lcg {
    /// Next value in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The built page: `$PGGAN_WEB_DIST`, else `www/dist` (the test command builds it).
pub fn web_dist() -> PathBuf {
    let dist = std::env::var_os("PGGAN_WEB_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("www/dist"));
    assert!(
        dist.join("index.html").exists(),
        "the page is not built at {}: run `bash scripts/test.sh`, or `source scripts/setup-web.sh; WEB_DIST=www/dist build_page`",
        dist.display()
    );
    dist
}

/// `dir/p.pack`: 24 random 8×8 images (red and green from `seed`, blue 128) made into a pack, for
/// the smallest runs.
pub fn tiny_pack(dir: &Scratch, seed: u64) {
    std::fs::create_dir_all(dir.path("images")).unwrap();
    let mut rng = Lcg(seed);
    for i in 0..24 {
        let img = image::RgbImage::from_fn(8, 8, |_, _| {
            image::Rgb([
                (rng.next_f64() * 255.0) as u8,
                (rng.next_f64() * 255.0) as u8,
                128,
            ])
        });
        img.save(dir.path(&format!("images/{i}.png"))).unwrap();
    }
    pggan_ok(&[
        "prepare",
        &dir.arg("images"),
        "--out",
        &dir.arg("p.pack"),
        "--resolution",
        "8",
    ]);
}
