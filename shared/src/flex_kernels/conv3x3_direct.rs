//! The 3×3 "same" convolution and its weight gradient computed straight from the `[B, C, H, W]`
//! input with AVX-512: no im2col block and no packing ([`conv3x3_weight_grad`] describes the
//! weight gradient's kernel).
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
//! trainer's `avx512` feature, on by default); elsewhere both functions return `None` and the
//! im2col kernels run, so a build without it measures an AVX2 machine as before.

use super::conv3x3_kernels::Conv3x3Shape;

/// Positions per vector (16 f32 lanes).
const LANES: usize = 16;

/// Vectors per unit of work.
const VECTORS: usize = 4;

/// Output channels per pass of the inner kernel: with [`VECTORS`], 24 of the 32 vector registers
/// hold accumulators.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
const ROWS: usize = 6;

/// The narrowest images [`conv3x3_weight_grad`] takes.
const MIN_WEIGHT_GRAD_WIDTH: usize = 16;

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

/// The gradient of [`conv3x3`] with respect to its weight (`scale` times that with respect to the
/// scaled weight): `x` `[B, C_in, H, W]`, `g` `[B, C_out, H, W]` → `[C_out, C_in, 3, 3]`; `None`
/// where the kernel does not run: no AVX-512, `C_out` not a multiple of 16, or images narrower
/// than 16, where the im2col kernel is the faster (`trainer/examples/conv_speed.rs`: at 8×8 with
/// 256 channels 109 GFLOP/s direct, 133 im2col; from 16×16 up direct is 1.1–1.8× as fast).
///
/// Each thread takes a few image rows at a time (a chunk), copies them with a zero border
/// (`[C_in, rows + 2, W + 2]`) and the output gradient's rows transposed (`[positions, C_out]`),
/// and accumulates `dwᵀ[c·9 + k, o] += Σ_p g[o, p] · x[c, p shifted by k]` with 16 output channels
/// to a vector: 4 vectors of output channels by 6 `(c, k)` pairs, 24 accumulators, one
/// broadcast input value per pair and position. No horizontal sums; the accumulators go back to
/// the thread's `dwᵀ` once per chunk.
pub fn conv3x3_weight_grad(x: &[f32], g: &[f32], scale: f32, s: &Conv3x3Shape) -> Option<Vec<f32>> {
    if s.width < MIN_WEIGHT_GRAD_WIDTH {
        return None;
    }
    weight_grad_any_width(x, g, scale, s)
}

/// [`conv3x3_weight_grad`] also for narrow images (the kernel is right for every size).
fn weight_grad_any_width(x: &[f32], g: &[f32], scale: f32, s: &Conv3x3Shape) -> Option<Vec<f32>> {
    if !(available() && s.c_out.is_multiple_of(LANES)) {
        return None;
    }
    let plane = s.height * s.width;
    assert_eq!(x.len(), s.batch * s.c_in * plane, "conv3x3: input length");
    assert_eq!(
        g.len(),
        s.batch * s.c_out * plane,
        "conv3x3: gradient length"
    );
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        Some(avx512::conv3x3_weight_grad(x, g, scale, s))
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
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps,
        _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    use rayon::prelude::*;

    use super::super::conv3x3_kernels::{Conv3x3Shape, SendPtr, thread_ranges};
    use super::super::par_vec;
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
                // per-lane divisions cost a third of a 32-channel layer's time.
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

    /// Output-gradient positions per chunk: the chunk's transposed gradient
    /// (`positions × C_out` floats) stays near 128 KB, within a core's L2 cache.
    const CHUNK_FLOATS: usize = 32 * 1024;

    /// `(c, k)` pairs per pass of [`pairs_block`].
    const PAIRS: usize = 6;

    /// Vectors of output channels per pass of [`pairs_block`].
    const OUT_VECTORS: usize = 4;

    pub(super) fn conv3x3_weight_grad(
        x: &[f32],
        g: &[f32],
        scale: f32,
        s: &Conv3x3Shape,
    ) -> Vec<f32> {
        let (c_in, c_out, width) = (s.c_in, s.c_out, s.width);
        let plane = s.height * width;
        let pairs = c_in * 9;
        // Whole rows per chunk, at least one, at most the image.
        let rows = (CHUNK_FLOATS / (c_out * width)).clamp(1, s.height);
        let chunks_per_image = s.height.div_ceil(rows);
        let padded_width = width + 2;
        let padded_plane = (rows + 2) * padded_width;
        let partials: Vec<Vec<f32>> = thread_ranges(s.batch * chunks_per_image)
            .into_par_iter()
            .map(|chunks| {
                let mut dwt = vec![0.0f32; pairs * c_out]; // [C·9, O]
                let mut gt = vec![0.0f32; rows * width * c_out]; // [positions, O]
                let mut padded = vec![0.0f32; c_in * padded_plane]; // [C, rows + 2, W + 2]
                for chunk in chunks {
                    let (b, y0) = (chunk / chunks_per_image, (chunk % chunks_per_image) * rows);
                    let chunk_rows = rows.min(s.height - y0);
                    let positions = chunk_rows * width;
                    let g_image = &g[b * c_out * plane..][..c_out * plane];
                    for (o, g_row) in g_image.chunks_exact(plane).enumerate() {
                        for (p, v) in g_row[y0 * width..][..positions].iter().enumerate() {
                            gt[p * c_out + o] = *v;
                        }
                    }
                    let x_image = &x[b * c_in * plane..][..c_in * plane];
                    for (x_plane, pad) in x_image
                        .chunks_exact(plane)
                        .zip(padded.chunks_exact_mut(padded_plane))
                    {
                        for (r, pad_row) in pad.chunks_exact_mut(padded_width).enumerate() {
                            let y = (y0 + r) as isize - 1;
                            pad_row.fill(0.0);
                            if r <= chunk_rows + 1 && y >= 0 && (y as usize) < s.height {
                                pad_row[1..=width]
                                    .copy_from_slice(&x_plane[y as usize * width..][..width]);
                            }
                        }
                    }
                    let mut pair = 0;
                    while pair < pairs {
                        let n = PAIRS.min(pairs - pair);
                        debug_assert!(n == PAIRS || n == 3, "9·C pairs leave 0 or 3 over");
                        // Where pair j reads the input of local position (0, 0).
                        let starts: [usize; PAIRS] = core::array::from_fn(|i| {
                            let (c, k) = ((pair + i.min(n - 1)) / 9, (pair + i.min(n - 1)) % 9);
                            c * padded_plane + (k / 3) * padded_width + k % 3
                        });
                        let mut o = 0;
                        while o < c_out {
                            let vectors = OUT_VECTORS.min((c_out - o) / LANES);
                            let block = Block {
                                gt: &gt[o..],
                                c_out,
                                padded: &padded,
                                starts,
                                rows: chunk_rows,
                                width,
                                dwt: &mut dwt[pair * c_out + o..],
                            };
                            // SAFETY: the CPU has AVX-512 (`available`); the block's reads and
                            // writes stay inside the slices it is given (see `pairs_block`).
                            unsafe {
                                match (vectors, n) {
                                    (4, 6) => pairs_block::<4, 6>(block),
                                    (3, 6) => pairs_block::<3, 6>(block),
                                    (2, 6) => pairs_block::<2, 6>(block),
                                    (1, 6) => pairs_block::<1, 6>(block),
                                    (4, _) => pairs_block::<4, 3>(block),
                                    (3, _) => pairs_block::<3, 3>(block),
                                    (2, _) => pairs_block::<2, 3>(block),
                                    _ => pairs_block::<1, 3>(block),
                                }
                            }
                            o += vectors * LANES;
                        }
                        pair += n;
                    }
                }
                dwt
            })
            .collect();
        // dw[o, c·9 + k] = scale · Σ_threads dwᵀ[c·9 + k, o]: the sum and the transpose in one
        // pass, a row of output channels per task.
        par_vec(c_out * pairs, pairs, |o, row| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = partials.iter().map(|dwt| dwt[j * c_out + o]).sum::<f32>() * scale;
            }
        })
    }

    /// One pass of the weight gradient over a chunk: `V` vectors of output channels by `P`
    /// `(c, k)` pairs.
    struct Block<'a> {
        /// The chunk's transposed output gradient from the block's first output channel:
        /// position p's values at `p · c_out`.
        gt: &'a [f32],
        c_out: usize,
        /// The chunk's input with its zero border, `[C, rows + 2, W + 2]`.
        padded: &'a [f32],
        /// For each pair, the index in `padded` that local position (0, 0) reads.
        starts: [usize; PAIRS],
        rows: usize,
        width: usize,
        /// `dwᵀ` from the block's first pair and output channel: pair i's row at `i · c_out`.
        dwt: &'a mut [f32],
    }

    /// `dwᵀ[pair i, o + 16v + lane] += Σ_p gt[p, o + 16v + lane] · padded[starts[i] + p's
    /// offset]` for the block's `V · 16` output channels and first `P` pairs.
    ///
    /// # Safety
    /// The CPU has AVX-512F. Every index reached is inside the block's slices: `gt` holds
    /// `rows · width` positions of `c_out` values with `V · 16` from its start, `dwt` holds `P`
    /// rows of `c_out` with `V · 16` from its start, and each `starts[i] + (rows + 1) · (width +
    /// 2) + width + 1` lies inside `padded`.
    #[target_feature(enable = "avx512f")]
    unsafe fn pairs_block<const V: usize, const P: usize>(block: Block<'_>) {
        let Block {
            gt,
            c_out,
            padded,
            starts,
            rows,
            width,
            dwt,
        } = block;
        debug_assert!(gt.len() >= (rows * width - 1) * c_out + V * LANES);
        debug_assert!(dwt.len() >= (P - 1) * c_out + V * LANES);
        let mut acc = [[_mm512_setzero_ps(); P]; V];
        for (v, acc) in acc.iter_mut().enumerate() {
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row i of `dwt`, lanes 16·v.. (the caller's guarantee).
                *acc = unsafe { _mm512_loadu_ps(dwt.as_ptr().add(i * c_out + v * LANES)) };
            }
        }
        let mut gp = gt.as_ptr();
        for y in 0..rows {
            let row = y * (width + 2);
            for x in 0..width {
                let mut gv = [_mm512_setzero_ps(); V];
                for (v, gv) in gv.iter_mut().enumerate() {
                    // SAFETY: position p's values for the block's channels (the caller's guarantee).
                    *gv = unsafe { _mm512_loadu_ps(gp.add(v * LANES)) };
                }
                gp = gp.wrapping_add(c_out);
                for i in 0..P {
                    // SAFETY: inside `padded` (the caller's guarantee on `starts`).
                    let xb = _mm512_set1_ps(unsafe { *padded.as_ptr().add(starts[i] + row + x) });
                    for (acc, gv) in acc.iter_mut().zip(&gv) {
                        acc[i] = _mm512_fmadd_ps(*gv, xb, acc[i]);
                    }
                }
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { _mm512_storeu_ps(dwt.as_mut_ptr().add(i * c_out + v * LANES), *acc) };
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

    /// The weight gradient by its definition, in f64: `dw[o, c, k] = scale · Σ g[b, o, p] ·
    /// x[b, c, p shifted by k]`.
    fn naive_weight_grad(x: &[f32], g: &[f32], scale: f64, s: &Conv3x3Shape) -> Vec<f64> {
        let (h, wd) = (s.height as isize, s.width as isize);
        let mut dw = vec![0.0; s.c_out * s.c_in * 9];
        for b in 0..s.batch {
            for o in 0..s.c_out {
                for c in 0..s.c_in {
                    for k in 0..9isize {
                        let mut sum = 0.0;
                        for y in 0..h {
                            for x0 in 0..wd {
                                let (iy, ix) = (y + k / 3 - 1, x0 + k % 3 - 1);
                                if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                    continue;
                                }
                                let gi = ((b * s.c_out + o) as isize * h + y) * wd + x0;
                                let xi = ((b * s.c_in + c) as isize * h + iy) * wd + ix;
                                sum += f64::from(g[gi as usize]) * f64::from(x[xi as usize]);
                            }
                        }
                        dw[(o * s.c_in + c) * 9 + k as usize] += sum * scale;
                    }
                }
            }
        }
        dw
    }

    #[test]
    fn weight_gradient_matches_the_definition_where_it_runs() {
        // 16…80 output channels (one to four vectors, and four then one), an odd number of
        // input channels (pairs left over), chunks of several rows, a last chunk cut short, images of
        // one row and of one column.
        let shapes = [
            Conv3x3Shape {
                batch: 2,
                c_in: 3,
                c_out: 16,
                height: 8,
                width: 8,
            },
            Conv3x3Shape {
                batch: 1,
                c_in: 2,
                c_out: 32,
                height: 5,
                width: 7,
            },
            Conv3x3Shape {
                batch: 3,
                c_in: 4,
                c_out: 48,
                height: 4,
                width: 4,
            },
            Conv3x3Shape {
                batch: 1,
                c_in: 1,
                c_out: 80,
                height: 3,
                width: 130,
            },
            Conv3x3Shape {
                batch: 2,
                c_in: 2,
                c_out: 16,
                height: 1,
                width: 9,
            },
            Conv3x3Shape {
                batch: 1,
                c_in: 3,
                c_out: 64,
                height: 6,
                width: 1,
            },
            Conv3x3Shape {
                batch: 1,
                c_in: 2,
                c_out: 16,
                height: 300,
                width: 16,
            },
        ];
        let mut rng = SplitMix64::new(5);
        for s in shapes {
            let plane = s.height * s.width;
            let x = rng.normals_f32(s.batch * s.c_in * plane);
            let g = rng.normals_f32(s.batch * s.c_out * plane);
            let dw = weight_grad_any_width(&x, &g, 0.5, &s);
            let taken = conv3x3_weight_grad(&x, &g, 0.5, &s);
            assert_eq!(taken.is_some(), dw.is_some() && s.width >= 16, "{s:?}");
            assert_eq!(
                dw.is_some(),
                available(),
                "{s:?}: runs exactly where AVX-512 is"
            );
            let Some(dw) = dw else { continue };
            let want = naive_weight_grad(&x, &g, 0.5, &s);
            let worst = dw
                .iter()
                .zip(&want)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-3, "{s:?}: off by {worst}");
        }
        let odd = Conv3x3Shape {
            batch: 1,
            c_in: 1,
            c_out: 24,
            height: 4,
            width: 4,
        };
        assert!(weight_grad_any_width(&[0.0; 16], &[0.0; 24 * 16], 1.0, &odd).is_none());
    }
}
