//! Multi-scale sliced Wasserstein distance (Karras et al. 2018, section 5).
//!
//! Official procedure: a Laplacian pyramid (5×5 binomial filter, mirrored edges) from the full
//! resolution down to 16×16; 128 random 7×7×3 neighbourhoods per image per level; each level's
//! descriptors normalised per colour channel over the set; 4 repeats of 128 random unit
//! directions; both projections sorted, mean absolute difference; ×10³ per level, then averaged.

use burn::tensor::{Device, Tensor, TensorData};
use pggan_model::SplitMix64;
use rayon::prelude::*;

use super::ImageSet;

/// Side of a neighbourhood.
pub const NHOOD_SIZE: usize = 7;
/// Neighbourhoods drawn per image per level.
pub const NHOODS_PER_IMAGE: usize = 128;
/// Repeats of the random projection.
pub const DIR_REPEATS: usize = 4;
/// Directions per repeat.
pub const DIRS_PER_REPEAT: usize = 128;
/// Values in a descriptor (7·7·3).
pub const DESC_LEN: usize = NHOOD_SIZE * NHOOD_SIZE * 3;

/// The binomial filter [1 4 6 4 1]/16 (its outer product is the official 5×5 Gaussian).
const BINOMIAL: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Mirror index (scipy's `mode='mirror'`: `d c b | a b c d | c b a`).
fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut j = i.rem_euclid(period);
    if j >= n {
        j = period - j;
    }
    j as usize
}

/// Separable 5-tap convolution of an `h × w` plane with `taps` (times `gain`), mirrored edges.
fn convolve5(plane: &[f32], h: usize, w: usize, gain: f32) -> Vec<f32> {
    let mut tmp = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, t) in BINOMIAL.iter().enumerate() {
                s += t * plane[y * w + mirror(x as isize + k as isize - 2, w)];
            }
            tmp[y * w + x] = s;
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (k, t) in BINOMIAL.iter().enumerate() {
                s += t * tmp[mirror(y as isize + k as isize - 2, h) * w + x];
            }
            out[y * w + x] = s * gain;
        }
    }
    out
}

/// cv2.pyrDown: blur, keep even rows and columns.
pub fn pyr_down(plane: &[f32], h: usize, w: usize) -> Vec<f32> {
    let blurred = convolve5(plane, h, w, 1.0);
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![0f32; h2 * w2];
    for y in 0..h2 {
        for x in 0..w2 {
            out[y * w2 + x] = blurred[2 * y * w + 2 * x];
        }
    }
    out
}

/// cv2.pyrUp: zero-insert to twice the size, blur with 4× the filter.
pub fn pyr_up(plane: &[f32], h: usize, w: usize) -> Vec<f32> {
    let (h2, w2) = (2 * h, 2 * w);
    let mut up = vec![0f32; h2 * w2];
    for y in 0..h {
        for x in 0..w {
            up[2 * y * w2 + 2 * x] = plane[y * w + x];
        }
    }
    convolve5(&up, h2, w2, 4.0)
}

/// Laplacian pyramid of one square plane: band-pass levels from `r` down, the last level the
/// low-pass residual.
pub fn laplacian_pyramid(plane: &[f32], r: usize, levels: usize) -> Vec<Vec<f32>> {
    let mut pyramid = vec![plane.to_vec()];
    let mut size = r;
    for _ in 1..levels {
        let down = pyr_down(pyramid.last().unwrap(), size, size);
        let up = pyr_up(&down, size / 2, size / 2);
        let last = pyramid.last_mut().unwrap();
        for (v, u) in last.iter_mut().zip(&up) {
            *v -= u;
        }
        pyramid.push(down);
        size /= 2;
    }
    pyramid
}

/// Resolutions the SWD is reported at for images of side `r`: `r, r/2, …, 16`.
pub fn swd_resolutions(r: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut res = r;
    while res >= 16 {
        v.push(res);
        res /= 2;
    }
    v
}

/// Descriptors of every level: `[level][n · 128 · 147]`, each descriptor ordered (channel, y, x).
pub fn descriptors(images: &ImageSet, rng: &mut SplitMix64) -> Vec<Vec<f32>> {
    let r = images.resolution;
    let levels = swd_resolutions(r).len();
    // Patch positions drawn up front (sequentially, so the result does not depend on threads).
    let half = NHOOD_SIZE / 2;
    let positions: Vec<Vec<(usize, usize)>> = (0..images.len())
        .map(|_| {
            (0..levels)
                .flat_map(|l| {
                    let size = r >> l;
                    (0..NHOODS_PER_IMAGE)
                        .map(|_| {
                            (
                                half + rng.below((size - 2 * half) as u64) as usize,
                                half + rng.below((size - 2 * half) as u64) as usize,
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    let per_image: Vec<Vec<Vec<f32>>> = (0..images.len())
        .into_par_iter()
        .map(|i| {
            let planes = images.planes(i);
            let r2 = r * r;
            let pyramids: Vec<Vec<Vec<f32>>> = (0..3)
                .map(|c| laplacian_pyramid(&planes[c * r2..(c + 1) * r2], r, levels))
                .collect();
            (0..levels)
                .map(|l| {
                    let size = r >> l;
                    let mut out = Vec::with_capacity(NHOODS_PER_IMAGE * DESC_LEN);
                    for &(y0, x0) in &positions[i][l * NHOODS_PER_IMAGE..(l + 1) * NHOODS_PER_IMAGE]
                    {
                        for pyr in &pyramids {
                            let plane = &pyr[l];
                            for dy in 0..NHOOD_SIZE {
                                let row = (y0 + dy - half) * size;
                                for dx in 0..NHOOD_SIZE {
                                    out.push(plane[row + x0 + dx - half]);
                                }
                            }
                        }
                    }
                    out
                })
                .collect()
        })
        .collect();
    (0..levels)
        .map(|l| {
            per_image
                .iter()
                .flat_map(|d| d[l].iter().copied())
                .collect()
        })
        .collect()
}

/// Normalises descriptors per colour channel: mean 0, standard deviation 1 over the whole set.
pub fn normalize_descriptors(desc: &mut [f32]) {
    let per_channel = NHOOD_SIZE * NHOOD_SIZE;
    for c in 0..3 {
        let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
        for d in desc.chunks(DESC_LEN) {
            for &v in &d[c * per_channel..(c + 1) * per_channel] {
                sum += v as f64;
                sq += v as f64 * v as f64;
                n += 1.0;
            }
        }
        let mean = sum / n.max(1.0);
        let std = (sq / n.max(1.0) - mean * mean).max(0.0).sqrt();
        let inv = if std > 0.0 { 1.0 / std } else { 1.0 };
        for d in desc.chunks_mut(DESC_LEN) {
            for v in &mut d[c * per_channel..(c + 1) * per_channel] {
                *v = ((*v as f64 - mean) * inv) as f32;
            }
        }
    }
}

/// Sorts `f32`s by an LSD radix sort on their order-preserving bit patterns.
fn radix_sort(values: &mut [f32]) {
    let key = |v: f32| {
        let b = v.to_bits();
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
    };
    let mut keys: Vec<u32> = values.iter().map(|&v| key(v)).collect();
    let mut tmp = vec![0u32; keys.len()];
    for shift in [0u32, 8, 16, 24] {
        let mut counts = [0usize; 257];
        for &k in &keys {
            counts[((k >> shift) & 0xff) as usize + 1] += 1;
        }
        for i in 0..256 {
            counts[i + 1] += counts[i];
        }
        for &k in &keys {
            let b = ((k >> shift) & 0xff) as usize;
            tmp[counts[b]] = k;
            counts[b] += 1;
        }
        std::mem::swap(&mut keys, &mut tmp);
    }
    for (v, k) in values.iter_mut().zip(keys) {
        let b = if k >> 31 == 1 { k & 0x7fff_ffff } else { !k };
        *v = f32::from_bits(b);
    }
}

/// Projections of descriptors (`[m, 147]`) on directions (`[dirs, 147]`): `[dirs][m]`.
fn project(desc: &[f32], dirs: &[f32], n_dirs: usize, device: &Device) -> Vec<Vec<f32>> {
    let m = desc.len() / DESC_LEN;
    let a = Tensor::<2>::from_data(TensorData::new(desc.to_vec(), [m, DESC_LEN]), device); // [m, 147]
    let d = Tensor::<2>::from_data(TensorData::new(dirs.to_vec(), [n_dirs, DESC_LEN]), device); // [dirs, 147]
    let p = d.matmul(a.transpose()); // [dirs, m]
    let flat = pggan_model::tensor::tensor_to_f32(p);
    flat.chunks(m).map(|c| c.to_vec()).collect()
}

/// Sliced Wasserstein distance between two equally sized descriptor sets: for `repeats` sets of
/// `dirs_per_repeat` random unit directions, the mean absolute difference of the sorted
/// projections, averaged.
pub fn sliced_wasserstein(
    a: &[f32],
    b: &[f32],
    repeats: usize,
    dirs_per_repeat: usize,
    rng: &mut SplitMix64,
    device: &Device,
) -> f64 {
    assert_eq!(a.len(), b.len(), "descriptor sets must be the same size");
    let dim = DESC_LEN;
    let mut results = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let mut dirs: Vec<f32> = (0..dirs_per_repeat * dim)
            .map(|_| rng.normal_f64() as f32)
            .collect();
        for d in dirs.chunks_mut(dim) {
            let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt();
            d.iter_mut().for_each(|v| *v /= norm);
        }
        let pa = project(a, &dirs, dirs_per_repeat, device);
        let pb = project(b, &dirs, dirs_per_repeat, device);
        let total: f64 = pa
            .into_par_iter()
            .zip(pb)
            .map(|(mut x, mut y)| {
                radix_sort(&mut x);
                radix_sort(&mut y);
                x.iter()
                    .zip(&y)
                    .map(|(p, q)| (p - q).abs() as f64)
                    .sum::<f64>()
            })
            .sum();
        results.push(total / (dirs_per_repeat * (a.len() / dim)) as f64);
    }
    results.iter().sum::<f64>() / repeats as f64
}

/// SWD between two image sets of the same size and resolution: `×10³` per level (full
/// resolution first) and their average last.
pub fn swd(reals: &ImageSet, fakes: &ImageSet, seed: u64) -> Vec<f64> {
    assert_eq!(
        reals.resolution, fakes.resolution,
        "both sets at one resolution"
    );
    assert_eq!(reals.len(), fakes.len(), "both sets the same size");
    let device = Device::flex();
    let mut rng = SplitMix64::derive(seed, "swd");
    let mut da = descriptors(reals, &mut rng);
    let mut db = descriptors(fakes, &mut rng);
    let mut dist: Vec<f64> = Vec::new();
    for (a, b) in da.iter_mut().zip(db.iter_mut()) {
        normalize_descriptors(a);
        normalize_descriptors(b);
        dist.push(sliced_wasserstein(a, b, DIR_REPEATS, DIRS_PER_REPEAT, &mut rng, &device) * 1e3);
    }
    let mean = dist.iter().sum::<f64>() / dist.len().max(1) as f64;
    dist.push(mean);
    dist
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8×8 test image of the reference values (`(x²·3 + 7y + (xy mod 5)·11) mod 256`).
    fn test_plane() -> Vec<f32> {
        (0..8)
            .flat_map(|y| {
                (0..8).map(move |x| ((x * x * 3 + y * 7 + (x * y) % 5 * 11) % 256) as f32)
            })
            .collect()
    }

    #[test]
    fn mirror_matches_scipy() {
        let idx: Vec<usize> = (-3..7).map(|i| mirror(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn laplacian_pyramid_matches_reference() {
        // Reference: the official generate_laplacian_pyramid with scipy.ndimage.convolve(mode='mirror').
        let p = laplacian_pyramid(&test_plane(), 8, 2);
        let band_row0 = [
            -23.77417, -25.88232, -29.07947, -30.23828, -29.01538, -25.06738, -10.58447, 22.24316,
        ];
        let band_row5 = [
            -19.81738, -21.48242, -23.52612, -22.99707, -20.93896, -18.39551, -5.80591, 26.39062,
        ];
        let low = [
            [14.4375, 34.60156, 72.0625, 120.36719],
            [31.35156, 52.58984, 85.32422, 137.92578],
            [46.8125, 63.32422, 92.79297, 151.19531],
            [53.49219, 74.30078, 109.57031, 160.02344],
        ];
        for x in 0..8 {
            assert!(
                (p[0][x] - band_row0[x]).abs() < 1e-3,
                "band row 0: {:?}",
                &p[0][..8]
            );
            assert!(
                (p[0][40 + x] - band_row5[x]).abs() < 1e-3,
                "band row 5: {:?}",
                &p[0][40..48]
            );
        }
        for y in 0..4 {
            for x in 0..4 {
                assert!(
                    (p[1][y * 4 + x] - low[y][x]).abs() < 1e-3,
                    "low-pass: {:?}",
                    p[1]
                );
            }
        }
    }

    #[test]
    fn constant_image_has_empty_bands() {
        let p = laplacian_pyramid(&vec![77.0; 64 * 64], 64, 3);
        assert!(p[0].iter().chain(&p[1]).all(|v| v.abs() < 1e-3));
        assert!(p[2].iter().all(|v| (v - 77.0).abs() < 1e-3));
    }

    #[test]
    fn radix_sort_sorts_like_total_order() {
        let mut rng = SplitMix64::new(4);
        let mut v: Vec<f32> = (0..10_000)
            .map(|_| (rng.normal_f64() * 100.0) as f32)
            .collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, f32::MAX, f32::MIN]);
        let mut expect = v.clone();
        expect.sort_by(f32::total_cmp);
        radix_sort(&mut v);
        assert_eq!(v, expect);
    }

    #[test]
    fn sliced_wasserstein_of_a_shift_is_the_projected_shift() {
        // B is A shifted by t along every component; along a unit direction u the sorted
        // projections differ by t·Σu, so the distance is t·mean|Σu| over the directions.
        let mut rng = SplitMix64::new(5);
        let a: Vec<f32> = (0..500 * DESC_LEN)
            .map(|_| rng.normal_f64() as f32)
            .collect();
        let b: Vec<f32> = a.iter().map(|v| v + 0.5).collect();
        let mut dir_rng = SplitMix64::new(6);
        let got = sliced_wasserstein(&a, &b, 1, 16, &mut dir_rng.clone(), &Device::flex());
        let mut expect = 0.0;
        for _ in 0..16 {
            let d: Vec<f64> = (0..DESC_LEN)
                .map(|_| dir_rng.normal_f64() as f32 as f64)
                .collect();
            let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            expect += 0.5 * (d.iter().sum::<f64>() / norm).abs();
        }
        expect /= 16.0;
        assert!(
            (got - expect).abs() < 1e-4 * expect.max(1.0),
            "{got} vs {expect}"
        );
        assert_eq!(
            sliced_wasserstein(&a, &a, 2, 8, &mut SplitMix64::new(1), &Device::flex()),
            0.0
        );
    }

    #[test]
    fn normalisation_gives_unit_moments_per_channel() {
        let mut rng = SplitMix64::new(7);
        let mut d: Vec<f32> = (0..200 * DESC_LEN)
            .map(|i| (rng.normal_f64() * (1 + i % 3) as f64 + 5.0) as f32)
            .collect();
        normalize_descriptors(&mut d);
        for c in 0..3 {
            let vals: Vec<f64> = d
                .chunks(DESC_LEN)
                .flat_map(|x| x[c * 49..(c + 1) * 49].iter().map(|&v| v as f64))
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3);
        }
    }

    /// `n` random 32×32 images: a few soft colour blobs over a gradient, with fine texture.
    fn blobs(n: usize, seed: u64) -> ImageSet {
        let mut rng = SplitMix64::new(seed);
        let r = 32;
        let mut data = Vec::with_capacity(n * r * r * 3);
        for _ in 0..n {
            let blobs: Vec<[f64; 6]> = (0..4)
                .map(|_| {
                    [
                        rng.uniform_f64() * 32.0,
                        rng.uniform_f64() * 32.0,
                        2.0 + rng.uniform_f64() * 6.0,
                        rng.uniform_f64(),
                        rng.uniform_f64(),
                        rng.uniform_f64(),
                    ]
                })
                .collect();
            for y in 0..r {
                for x in 0..r {
                    for c in 0..3 {
                        let mut v = 40.0 + 3.0 * y as f64;
                        for b in &blobs {
                            let d2 = (x as f64 - b[0]).powi(2) + (y as f64 - b[1]).powi(2);
                            v += 160.0 * b[3 + c] * (-d2 / (2.0 * b[2] * b[2])).exp();
                        }
                        v += 20.0 * (rng.uniform_f64() - 0.5);
                        data.push(v.round().clamp(0.0, 255.0) as u8);
                    }
                }
            }
        }
        ImageSet {
            resolution: r,
            data,
        }
    }

    fn map_images(set: &ImageSet, f: impl Fn(&[u8]) -> Vec<u8>) -> ImageSet {
        ImageSet {
            resolution: set.resolution,
            data: (0..set.len()).flat_map(|i| f(set.image(i))).collect(),
        }
    }

    fn blur(img: &[u8]) -> Vec<u8> {
        // 2×2 box down, nearest up: a 2× blur.
        let r = 32;
        let mut out = vec![0u8; img.len()];
        for y in 0..r {
            for x in 0..r {
                for c in 0..3 {
                    let (by, bx) = (y / 2 * 2, x / 2 * 2);
                    let s: u32 = [(by, bx), (by, bx + 1), (by + 1, bx), (by + 1, bx + 1)]
                        .iter()
                        .map(|&(yy, xx)| img[(yy * r + xx) * 3 + c] as u32)
                        .sum();
                    out[(y * r + x) * 3 + c] = ((s + 2) / 4) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn swd_is_near_zero_for_a_set_against_itself_and_grows_with_distortion() {
        let a = blobs(96, 1);
        let b = blobs(96, 2);
        let same = swd(&a, &a, 3);
        let floor = swd(&a, &b, 3);
        let blurred = swd(&a, &map_images(&a, blur), 3);
        // A colour shift: blue inverted, so blobs change hue against the gradient.
        let shifted = swd(
            &a,
            &map_images(&a, |img| {
                img.chunks(3)
                    .flat_map(|p| [p[0], p[1], 255 - p[2]])
                    .collect()
            }),
            3,
        );
        eprintln!("same {same:?} floor {floor:?} blurred {blurred:?} colour-shifted {shifted:?}");
        assert_eq!(same.len(), 3, "levels 32, 16 and the average");
        assert!(
            same[2] < 0.7 * floor[2],
            "a set against itself ({}) must sit below two independent sets ({})",
            same[2],
            floor[2]
        );
        assert!(
            blurred[0] > 2.0 * floor[0],
            "blur shows at the finest level: {} vs floor {}",
            blurred[0],
            floor[0]
        );
        assert!(
            shifted[2] > 2.0 * floor[2],
            "a colour change raises SWD: {} vs floor {}",
            shifted[2],
            floor[2]
        );
    }

    #[test]
    fn resolutions_down_to_16() {
        assert_eq!(swd_resolutions(64), vec![64, 32, 16]);
        assert_eq!(swd_resolutions(16), vec![16]);
        assert!(swd_resolutions(8).is_empty());
    }
}
