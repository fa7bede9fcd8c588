//! The 3×3 "same" convolution (and, through it, its transpose) computed straight from the
//! `[B, C, H, W]` input with AVX-512: no im2col block and no packing. The weight gradient's
//! direct kernels are in [`super::conv3x3_direct_weight_grad`].
//!
//! The batch's positions, image by image in raster order, are cut into vectors of 16 (a quarter
//! row at 64×64, two rows at 8×8, a whole image at 4×4), and [`VECTORS`] consecutive vectors make
//! one unit of work. Shifting a run of positions by a tap `(dy, dx)` is shifting it by
//! `dy·W + dx` in memory, so for every input channel and tap the kernel loads each vector of the
//! shifted input plane directly — a masked load zeroes the lanes whose tap falls outside the image
//! — and multiplies them into [`ROWS`] output channels at a time, `ROWS × VECTORS` accumulators
//! held in registers. The im2col block that [`super::conv3x3_kernels`] builds for every tile, and
//! the copy of it that the matrix product packs, were about a fifth of a 128×128 training step
//! (`perf` on the run: im2col and its copies 11%, `gemm`'s packing 8%).
//!
//! Only where the CPU has AVX-512 (checked at run time) and the build has AVX-512 kernels (the
//! trainer's `avx512` feature, on by default); elsewhere [`conv3x3`] returns `None` and the im2col
//! kernels run, so a build without it measures an AVX2 machine as before.

use super::conv3x3_kernels::Conv3x3Shape;

/// Positions per vector (16 f32 lanes).
const LANES: usize = 16;

/// Vectors per unit of work.
const VECTORS: usize = 4;

/// Output channels per pass of the inner kernel: with [`VECTORS`], 24 of the 32 vector registers
/// hold accumulators.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
const ROWS: usize = 6;

/// Whether [`conv3x3`] takes this shape: images of whole vectors, a batch of whole units.
pub fn fits(s: &Conv3x3Shape) -> bool {
    let plane = s.height * s.width;
    plane.is_multiple_of(LANES) && (s.batch * plane / LANES).is_multiple_of(VECTORS)
}

/// Whether this build and this CPU run the direct kernel.
pub fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        false
    }
}

/// `conv(x, w·scale)` with padding 1, `x` `[B, C_in, H, W]` and `w` `[C_out, C_in, 3, 3]` →
/// `[B, C_out, H, W]`; `None` where the kernel does not run (see [`available`] and [`fits`]).
/// `c_in` and `c_out` are given apart from the shape because the input gradient runs through this
/// function with the two swapped.
pub fn conv3x3(
    x: &[f32],
    w: &[f32],
    scale: f32,
    c_in: usize,
    c_out: usize,
    s: &Conv3x3Shape,
) -> Option<Vec<f32>> {
    if !(available() && fits(s)) {
        return None;
    }
    assert_eq!(
        x.len(),
        s.batch * c_in * s.height * s.width,
        "conv3x3: input length"
    );
    assert_eq!(w.len(), c_out * c_in * 9, "conv3x3: weight length");
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        Some(avx512::conv3x3(x, w, scale, c_in, c_out, s))
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        let _ = scale;
        None
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use core::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use rayon::prelude::*;

    use super::super::conv3x3_kernels::{Conv3x3Shape, SendPtr, thread_ranges};
    use super::{LANES, ROWS, VECTORS};

    /// Where one unit's vectors read each tap — the offset in the input of channel 0 of the
    /// shifted vector's first lane, and which lanes fall inside the image — and where each vector
    /// writes output channel 0.
    struct Unit {
        offset: [[isize; VECTORS]; 9],
        mask: [[u16; VECTORS]; 9],
        out: [usize; VECTORS],
    }

    impl Unit {
        /// Unit `u` of a batch of `[·, channels, H, W]` inputs and `[·, c_out, H, W]` outputs.
        fn new(u: usize, channels: usize, c_out: usize, s: &Conv3x3Shape) -> Self {
            let width = s.width as isize;
            let plane = s.height * s.width;
            let mut unit = Unit {
                offset: [[0; VECTORS]; 9],
                mask: [[0; VECTORS]; 9],
                out: [0; VECTORS],
            };
            for v in 0..VECTORS {
                let first = (u * VECTORS + v) * LANES;
                let (b, p) = (first / plane, first % plane);
                unit.out[v] = b * c_out * plane + p;
                // The lanes with a row above and below, a column left and right, walking the
                // positions from the vector's first (a plane of whole vectors keeps them in one
                // image). One division per vector: a unit is made for every 64 positions, and
                // with a division per lane the 128×128 layers of 32 channels ran 3–10% slower
                // (docs/performance.md).
                let (mut y, mut x) = (p / s.width, p % s.width);
                let [mut up, mut down, mut left, mut right] = [0u16; 4];
                for lane in 0..LANES {
                    let bit = 1 << lane;
                    up |= if y > 0 { bit } else { 0 };
                    down |= if y + 1 < s.height { bit } else { 0 };
                    left |= if x > 0 { bit } else { 0 };
                    right |= if x + 1 < s.width { bit } else { 0 };
                    x += 1;
                    if x == s.width {
                        (x, y) = (0, y + 1);
                    }
                }
                let rows = [up, u16::MAX, down];
                let columns = [left, u16::MAX, right];
                for k in 0..9 {
                    let (dy, dx) = (k as isize / 3 - 1, k as isize % 3 - 1);
                    unit.offset[k][v] = (b * channels * plane + p) as isize + dy * width + dx;
                    unit.mask[k][v] = rows[k / 3] & columns[k % 3];
                }
            }
            unit
        }
    }

    pub(super) fn conv3x3(
        x: &[f32],
        w: &[f32],
        scale: f32,
        c_in: usize,
        c_out: usize,
        s: &Conv3x3Shape,
    ) -> Vec<f32> {
        let plane = s.height * s.width;
        let len_out = s.batch * c_out * plane;
        let mut out: Vec<f32> = Vec::with_capacity(len_out);
        let dst = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
        thread_ranges(s.batch * plane / (LANES * VECTORS))
            .into_par_iter()
            .for_each(|units| {
                // The whole `SendPtr` is captured (and sent to the thread), not its raw-pointer field.
                #[allow(clippy::redundant_locals)]
                let dst = dst;
                for u in units {
                    let unit = Unit::new(u, c_in, c_out, s);
                    let mut o = 0;
                    while o < c_out {
                        let rows = ROWS.min(c_out - o);
                        let weight = &w[o * c_in * 9..][..rows * c_in * 9];
                        let out = unit.out.map(|i| dst.0.wrapping_add(i + o * plane));
                        // SAFETY: `out`'s capacity holds [B, c_out, H·W]; this unit writes rows
                        // o..o + rows of its vectors' positions, which no other unit writes. The
                        // offsets and masks keep every read inside `x` ([B, c_in, H, W], checked
                        // by the caller). The CPU has AVX-512 (`available`).
                        unsafe {
                            match rows {
                                6 => unit_rows::<6>(x, c_in, weight, &unit, plane, out, scale),
                                5 => unit_rows::<5>(x, c_in, weight, &unit, plane, out, scale),
                                4 => unit_rows::<4>(x, c_in, weight, &unit, plane, out, scale),
                                3 => unit_rows::<3>(x, c_in, weight, &unit, plane, out, scale),
                                2 => unit_rows::<2>(x, c_in, weight, &unit, plane, out, scale),
                                _ => unit_rows::<1>(x, c_in, weight, &unit, plane, out, scale),
                            }
                        }
                        o += rows;
                    }
                }
            });
        // SAFETY: the units cover every position of every image, each for all c_out rows.
        unsafe { out.set_len(len_out) };
        out
    }

    /// `R` output channels of one unit: `out[r] = scale · Σ_{k,c} weight[r, c, k] · x[c]
    /// shifted by tap k`, for the unit's `LANES · VECTORS` positions. Tap by tap, so that the
    /// tap's offsets and masks stay in registers through the loop over channels; taps that fall
    /// wholly outside the image are skipped.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds the `channels` input channels of every image the unit's
    /// offsets name; `weight` holds `R` rows of `channels · 9`; each of `out` points at `R` rows
    /// `plane` apart with `LANES` writable floats each.
    #[target_feature(enable = "avx512f")]
    unsafe fn unit_rows<const R: usize>(
        x: &[f32],
        channels: usize,
        weight: &[f32],
        unit: &Unit,
        plane: usize,
        out: [*mut f32; VECTORS],
        scale: f32,
    ) {
        let row_len = channels * 9;
        debug_assert!(weight.len() >= R * row_len);
        let mut acc: [[__m512; VECTORS]; R] = [[_mm512_setzero_ps(); VECTORS]; R];
        for k in 0..9 {
            let mask = unit.mask[k];
            if mask.iter().all(|m| *m == 0) {
                continue;
            }
            let mut input = unit.offset[k].map(|offset| x.as_ptr().wrapping_offset(offset));
            let mut w = weight[k..].as_ptr();
            for _ in 0..channels {
                let mut xv = [_mm512_setzero_ps(); VECTORS];
                for v in 0..VECTORS {
                    // SAFETY: the lanes the mask keeps are in-image positions of the current
                    // channel's plane; masked-off lanes are not read (AVX-512 suppresses their
                    // faults), so the address may point before or past it.
                    xv[v] = unsafe { _mm512_maskz_loadu_ps(mask[v], input[v]) };
                    input[v] = input[v].wrapping_add(plane);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: weight[r, c, k] for the current channel c, inside `weight`'s R rows.
                    let wb = _mm512_set1_ps(unsafe { *w.add(r * row_len) });
                    for (acc, xv) in acc.iter_mut().zip(&xv) {
                        *acc = _mm512_fmadd_ps(wb, *xv, *acc);
                    }
                }
                w = w.wrapping_add(9);
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (r, acc) in acc.iter().enumerate() {
            for (out, acc) in out.iter().zip(acc) {
                // SAFETY: row r of this vector's output (the caller's guarantee).
                unsafe { _mm512_storeu_ps(out.add(r * plane), _mm512_mul_ps(*acc, scale)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The convolution by its definition, in f64, with `c_in` and `c_out` as given.
    fn naive(
        x: &[f32],
        w: &[f32],
        scale: f64,
        c_in: usize,
        c_out: usize,
        s: &Conv3x3Shape,
    ) -> Vec<f64> {
        let wide = |v: &[f32]| v.iter().map(|v| f64::from(*v)).collect::<Vec<_>>();
        let s = Conv3x3Shape { c_in, c_out, ..*s };
        let y = super::super::conv3x3_kernels::tests::naive(&wide(x), &wide(w), s);
        y.into_iter().map(|y| y * scale).collect()
    }

    /// Shapes the kernel takes: every row remainder of [`ROWS`] (1…6 channels left over),
    /// vectors of part of a row (64 and 32 wide), of one row (16), of two rows (8×8) and of a
    /// whole image (4×4, units spanning four images), a non-square image.
    const SHAPES: [Conv3x3Shape; 6] = [
        Conv3x3Shape {
            batch: 2,
            c_in: 3,
            c_out: 7,
            height: 16,
            width: 16,
        },
        Conv3x3Shape {
            batch: 1,
            c_in: 5,
            c_out: 11,
            height: 4,
            width: 64,
        },
        Conv3x3Shape {
            batch: 2,
            c_in: 4,
            c_out: 9,
            height: 8,
            width: 32,
        },
        Conv3x3Shape {
            batch: 3,
            c_in: 2,
            c_out: 4,
            height: 8,
            width: 8,
        },
        Conv3x3Shape {
            batch: 8,
            c_in: 3,
            c_out: 5,
            height: 4,
            width: 4,
        },
        Conv3x3Shape {
            batch: 1,
            c_in: 2,
            c_out: 3,
            height: 2,
            width: 32,
        },
    ];

    #[test]
    fn takes_batches_of_whole_units_only() {
        let shape = |batch, height, width| Conv3x3Shape {
            batch,
            c_in: 1,
            c_out: 1,
            height,
            width,
        };
        assert!(fits(&shape(1, 16, 16)) && fits(&shape(1, 8, 8)) && fits(&shape(4, 4, 4)));
        assert!(fits(&shape(2, 4, 8)) && fits(&shape(1, 1, 64)));
        assert!(!fits(&shape(1, 4, 4)) && !fits(&shape(3, 3, 3)) && !fits(&shape(1, 2, 16)));
        let x = vec![0.0; 4 * 4];
        assert!(conv3x3(&x, &[0.0; 9], 1.0, 1, 1, &shape(1, 4, 4)).is_none());
    }

    #[test]
    fn matches_the_definition_where_it_runs() {
        let mut rng = SplitMix64::new(3);
        for s in SHAPES {
            // Also with the channel counts swapped, as the input gradient calls it.
            for (c_in, c_out) in [(s.c_in, s.c_out), (s.c_out, s.c_in)] {
                let x = rng.normals_f32(s.batch * c_in * s.height * s.width);
                let w = rng.normals_f32(c_out * c_in * 9);
                let y = conv3x3(&x, &w, 0.5, c_in, c_out, &s);
                assert_eq!(
                    y.is_some(),
                    available(),
                    "{s:?}: runs exactly where AVX-512 is"
                );
                let Some(y) = y else { continue };
                let want = naive(&x, &w, 0.5, c_in, c_out, &s);
                let worst = y
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-4, "{s:?} {c_in}→{c_out}: off by {worst}");
            }
        }
    }
}
