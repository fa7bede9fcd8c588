//! Property tests over the paths that read untrusted bytes: image decoding in `prepare`, tar and
//! folder input, and pack reading. Whatever the input, the result is a counted skip, a clear
//! error or a valid image — never a panic, never a file written outside the output.

use std::io::Cursor;
use std::path::Path;

use proptest::prelude::*;

use crate::pack::{Pack, Split, write_pack};
use crate::prepare::{Outcome, PaddedPolicy, PrepareOptions, SkipReason, prepare, process};

fn opts() -> PrepareOptions {
    PrepareOptions {
        resolution: 8,
        holdout: 0,
        padded: PaddedPolicy::Crop,
        seed: 0,
        max_pixels: 4_000_000,
    }
}

fn encoded(format: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 13) as u8, ((x + y) * 5) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn check(outcome: Outcome) {
    if let Outcome::Image { rgb, .. } = outcome {
        assert_eq!(
            rgb.len(),
            8 * 8 * 3,
            "a usable image comes out at the target size"
        );
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pggan-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(process(&bytes, &opts()));
    }

    #[test]
    fn damaged_png_and_jpeg_never_panic(
        jpeg in any::<bool>(),
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
    ) {
        let format = if jpeg { image::ImageFormat::Jpeg } else { image::ImageFormat::Png };
        let mut bytes = encoded(format, 24, 16);
        for (at, v) in flips {
            let i = (at * bytes.len() as f64) as usize % bytes.len();
            bytes[i] = v;
        }
        bytes.truncate((cut * bytes.len() as f64) as usize);
        check(process(&bytes, &opts()));
    }

    #[test]
    fn arbitrary_packs_are_refused_not_panicked_on(bytes in proptest::collection::vec(any::<u8>(), 0..4096), magic in any::<bool>()) {
        let dir = scratch("pack");
        let path = dir.join("x.pack");
        let mut data = bytes;
        if magic {
            // A right magic with a random rest, to reach the header parser.
            let mut m = b"PGGANPK1".to_vec();
            m.extend(data);
            data = m;
        }
        std::fs::write(&path, &data).unwrap();
        if let Ok(pack) = Pack::open(&path) {
            let _ = pack.read_level(Split::Train, 4);
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn truncated_or_bit_flipped_packs_are_refused(cut in 0.0f64..1.0, flip in 0.0f64..1.0, value in any::<u8>()) {
        let dir = scratch("pack2");
        let path = dir.join("p.pack");
        let imgs: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 * 40; 8 * 8 * 3]).collect();
        write_pack(&path, 8, &imgs, &imgs[..1], serde_json::json!({})).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        let i = (flip * len as f64) as usize % len;
        bytes[i] = value;
        bytes.truncate(((cut * len as f64) as usize).min(len - 1));
        std::fs::write(&path, &bytes).unwrap();
        let result = Pack::open(&path);
        prop_assert!(result.is_err(), "a truncated pack must be refused");
        let msg = format!("{:#}", result.unwrap_err());
        prop_assert!(msg.contains("p.pack"), "the error names the file: {}", msg);
        std::fs::remove_dir_all(dir).ok();
    }
}

/// A PNG whose header claims `w × h` pixels (valid CRC), with a tiny body.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = encoded(image::ImageFormat::Png, 2, 2);
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type).
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32fast::hash(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

#[test]
fn decompression_bombs_are_refused_by_their_header() {
    let start = std::time::Instant::now();
    for (w, h) in [(60_000, 60_000), (1 << 20, 4), (100_000, 100_000)] {
        assert!(
            matches!(
                process(&png_claiming(w, h), &opts()),
                Outcome::Skip(SkipReason::TooLarge)
            ),
            "{w}×{h}"
        );
    }
    assert!(start.elapsed().as_secs() < 5, "refused without decoding");
}

#[test]
fn names_do_not_matter_extensions_lie_and_odd_bytes_are_fine() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("names");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("photo.jpg"),
        encoded(image::ImageFormat::Png, 16, 16),
    )
    .unwrap(); // a PNG named .jpg
    std::fs::write(
        input.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-not-utf8.png")),
        encoded(image::ImageFormat::Png, 16, 16),
    )
    .unwrap();
    std::fs::write(input.join("empty.png"), b"").unwrap();
    let report = prepare(&input, &dir.join("o.pack"), &opts()).unwrap();
    assert_eq!((report.read, report.written), (3, 2));
    assert_eq!(report.skipped.get("not_an_image"), Some(&1));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tar_paths_and_links_never_escape() {
    let dir = scratch("tar");
    let tar_path = dir.join("evil.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let png = encoded(image::ImageFormat::Png, 16, 16);
        for name in ["../escaped.png", "/abs/escaped2.png", "ok/fine.png"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(png.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Write the raw name (the builder's own path checks would refuse `..`).
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, png.as_slice()).unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "link.png", "/etc/passwd").unwrap();
        b.finish().unwrap();
    }
    let out = dir.join("sub").join("o.pack");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let report = prepare(&tar_path, &out, &opts()).unwrap();
    assert_eq!(
        report.written, 3,
        "the three regular files are read in memory: {report:?}"
    );
    assert_eq!(report.read, 3, "the link is not followed");
    for p in [
        dir.join("escaped.png"),
        dir.parent().unwrap().join("escaped.png"),
        Path::new("/abs/escaped2.png").to_path_buf(),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let entries: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("o.pack")],
        "only the pack is written"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn empty_inputs_are_clear_errors() {
    let dir = scratch("empty");
    let err = prepare(&dir, &dir.join("o.pack"), &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable image"), "{err}");
    std::fs::write(dir.join("empty.tar"), b"").unwrap();
    let err = prepare(&dir.join("empty.tar"), &dir.join("o2.pack"), &opts())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no usable image") || err.contains("tar"),
        "{err}"
    );
    let err = prepare(&dir.join("missing"), &dir.join("o3.pack"), &opts())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
