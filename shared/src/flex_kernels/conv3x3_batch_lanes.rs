//! The 3×3 "same" convolution of small images (4×4 and 8×8) with AVX-512, the batch in the
//! vector lanes, computing only the taps that fall inside the image.
//!
//! With positions in the lanes ([`super::conv3x3_direct`]) a vector holds a whole 4×4 image or
//! two rows of an 8×8 one, so no tap is wholly outside a vector's image and every tap is
//! multiplied, zeros included: 144 products per output channel and input channel of a 4×4
//! image where only 100 are inside it, 576 where 484 are at 8×8. oneDNN's convolution (the
//! PyTorch twin's) does not multiply them: timed by itself at 4×4 it does more "products" per
//! second than the CPU's peak (docs/performance.md), and that was the twin's lead at 8×8.
//!
//! Here the lanes hold 16 images of the batch at one position, so each position reads only its
//! in-image taps. Positions are grouped by which taps they have (a corner, an edge, the
//! interior), and [`POSITIONS`] positions of one group by [`OUT_CHANNELS`] output channels make
//! a block: per input channel and tap, one vector of the input at each position and one
//! broadcast weight per output channel, `OUT_CHANNELS · POSITIONS` accumulators in registers.
//! The batch is copied into this layout (`[B/16, H·W, C, 16]`, a position's channels
//! together, so that the loop over channels reads memory in order) and the output copied back.
//!
//! Only with AVX-512 (checked at run time) in builds with the `avx512` feature, for batches of
//! whole vectors (a multiple of 16 images) and output channels in whole blocks; elsewhere
//! [`conv3x3`] and [`conv3x3_transpose`] return `None`.

use super::conv3x3_kernels::Conv3x3Shape;

/// Images per vector (16 f32 lanes).
const LANES: usize = 16;

/// Output channels per block.
const OUT_CHANNELS: usize = 8;

/// At most this many positions per block: with [`OUT_CHANNELS`], 24 of the 32 vector registers
/// hold accumulators.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
const POSITIONS: usize = 3;

/// The largest image (in positions) the kernel takes: 8×8. From 16×16 up the taps outside the
/// image are under a tenth of the products, and the position-lane kernel was the faster at
/// 16×16 (`conv_speed 16`, three runs: 204–222 against 175–205 GFLOP/s forward).
const MAX_PLANE: usize = 64;

/// Whether [`conv3x3`] takes this shape (its CPU check aside): images of at most
/// [`MAX_PLANE`] positions, a batch of whole vectors, output channels in whole blocks.
pub fn fits(c_out: usize, s: &Conv3x3Shape) -> bool {
    s.height * s.width <= MAX_PLANE
        && s.batch.is_multiple_of(LANES)
        && c_out.is_multiple_of(OUT_CHANNELS)
}

/// `conv(x, w·scale)` with padding 1, `x` `[B, C_in, H, W]` and `w` `[C_out, C_in, 3, 3]` →
/// `[B, C_out, H, W]`; `None` where the kernel does not run (no AVX-512 in the CPU or the build,
/// or a shape [`fits`] refuses). `c_in` and `c_out` are given apart from the shape, as
/// [`super::conv3x3_direct::conv3x3`] takes them.
pub fn conv3x3(
    x: &[f32],
    w: &[f32],
    scale: f32,
    c_in: usize,
    c_out: usize,
    s: &Conv3x3Shape,
) -> Option<Vec<f32>> {
    if !(super::conv3x3_direct::available() && fits(c_out, s)) {
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
        let layout = WeightLayout {
            out_stride: c_in * 9,
            in_stride: 9,
            flipped: false,
        };
        Some(avx512::convolve(x, w, layout, scale, c_in, c_out, s))
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        let _ = scale;
        None
    }
}

/// The input gradient of [`conv3x3`] (the transposed convolution with the scaled weight): `g`
/// `[B, C_out, H, W]`, `w` `[C_out, C_in, 3, 3]` → `[B, C_in, H, W]`, reading the weight where
/// it lies (no flipped copy); `None` where the kernel does not run.
pub fn conv3x3_transpose(g: &[f32], w: &[f32], scale: f32, s: &Conv3x3Shape) -> Option<Vec<f32>> {
    if !(super::conv3x3_direct::available() && fits(s.c_in, s)) {
        return None;
    }
    assert_eq!(
        g.len(),
        s.batch * s.c_out * s.height * s.width,
        "conv3x3: gradient length"
    );
    assert_eq!(w.len(), s.c_out * s.c_in * 9, "conv3x3: weight length");
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        let layout = WeightLayout {
            out_stride: 9,
            in_stride: s.c_in * 9,
            flipped: true,
        };
        Some(avx512::convolve(g, w, layout, scale, s.c_out, s.c_in, s))
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        let _ = scale;
        None
    }
}

/// Where the kernel reads the weight of its output channel `j`, input channel `c` and tap `k`:
/// at `j · out_stride + c · in_stride + k` (`8 − k` when flipped). A convolution's own weight
/// `[C_out, C_in, 3, 3]` is `(C_in · 9, 9, false)`; its transpose reads the same array as
/// `(9, C_in · 9, true)`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
struct WeightLayout {
    out_stride: usize,
    in_stride: usize,
    flipped: bool,
}

/// Positions of an image that have the same taps inside it.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
struct PositionBlock {
    /// Indices in the image's raster order, at most [`POSITIONS`].
    positions: Vec<usize>,
    /// The taps inside the image: `(k, shift)`.
    taps: Vec<(usize, isize)>,
}

/// The positions of an `height × width` image grouped by which taps fall inside it, each group
/// cut into blocks of at most [`POSITIONS`], a tap as its index
/// `k` (`3·(dy + 1) + dx + 1`) and its shift `dy·W + dx` in positions.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(dead_code))]
fn blocks(height: usize, width: usize) -> Vec<PositionBlock> {
    let inside = |p: usize, k: usize| {
        let (y, x) = ((p / width) as isize, (p % width) as isize);
        let (dy, dx) = (k as isize / 3 - 1, k as isize % 3 - 1);
        (0..height as isize).contains(&(y + dy)) && (0..width as isize).contains(&(x + dx))
    };
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for p in 0..height * width {
        let taps = (0..9)
            .filter(|&k| inside(p, k))
            .fold(0u16, |m, k| m | 1 << k);
        match groups.iter_mut().find(|(t, _)| *t == taps) {
            Some((_, positions)) => positions.push(p),
            None => groups.push((taps, vec![p])),
        }
    }
    let mut out = Vec::new();
    for (taps, positions) in groups {
        let taps: Vec<(usize, isize)> = (0..9)
            .filter(|k| taps & 1 << k != 0)
            .map(|k| {
                (
                    k,
                    (k as isize / 3 - 1) * width as isize + k as isize % 3 - 1,
                )
            })
            .collect();
        for block in positions.chunks(POSITIONS) {
            out.push(PositionBlock {
                positions: block.to_vec(),
                taps: taps.clone(),
            });
        }
    }
    out
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use core::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use rayon::prelude::*;

    use super::super::conv3x3_kernels::{Conv3x3Shape, SendPtr, thread_ranges};
    use super::super::par_vec;
    use super::{LANES, OUT_CHANNELS, POSITIONS, PositionBlock, WeightLayout, blocks};

    /// `[B, c_in, H, W]` → `[B, c_out, H, W]` with the weight read by `layout` (its length
    /// checked by the caller).
    pub(super) fn convolve(
        x: &[f32],
        w: &[f32],
        layout: WeightLayout,
        scale: f32,
        c_in: usize,
        c_out: usize,
        s: &Conv3x3Shape,
    ) -> Vec<f32> {
        let plane = s.height * s.width;
        let chunks = s.batch / LANES;
        let xt = to_lanes(x, c_in, plane);
        let blocks = blocks(s.height, s.width);
        let channel_blocks = c_out / OUT_CHANNELS;
        let len_out = chunks * c_out * plane * LANES;
        // yt[chunk, o, p, lane], every element written by one block.
        let mut yt: Vec<f32> = Vec::with_capacity(len_out);
        let dst = SendPtr(yt.spare_capacity_mut().as_mut_ptr().cast::<f32>());
        thread_ranges(chunks * channel_blocks * blocks.len())
            .into_par_iter()
            .for_each(|items| {
                // The whole `SendPtr` is captured (and sent to the thread), not its raw-pointer field.
                #[allow(clippy::redundant_locals)]
                let dst = dst;
                for item in items {
                    let (chunk_ob, b) = (item / blocks.len(), item % blocks.len());
                    let (chunk, ob) = (chunk_ob / channel_blocks, chunk_ob % channel_blocks);
                    let PositionBlock { positions, taps } = &blocks[b];
                    let job = Block {
                        xt: &xt[chunk * c_in * plane * LANES..][..c_in * plane * LANES],
                        w,
                        first: ob * OUT_CHANNELS * layout.out_stride,
                        layout,
                        channels: c_in,
                        plane,
                        positions,
                        taps,
                        out: dst
                            .0
                            .wrapping_add((chunk * c_out + ob * OUT_CHANNELS) * plane * LANES),
                        scale,
                    };
                    // SAFETY: the CPU has AVX-512 (`available`); the block reads inside `xt`
                    // (its positions' taps are in the image) and `w`, and writes its own
                    // positions of its 8 output channels of `yt`, which no other block writes.
                    unsafe {
                        match positions.len() {
                            3 => block::<3>(job),
                            2 => block::<2>(job),
                            _ => block::<1>(job),
                        }
                    }
                }
            });
        // SAFETY: the blocks cover every position of every chunk, each for all c_out channels.
        unsafe { yt.set_len(len_out) };
        // Back to [B, C_out, H, W].
        par_vec(s.batch * c_out * plane, plane, |i, dst| {
            let (b, o) = (i / c_out, i % c_out);
            let src = &yt[((b / LANES) * c_out + o) * plane * LANES..][..plane * LANES];
            for (p, v) in dst.iter_mut().enumerate() {
                *v = src[p * LANES + b % LANES];
            }
        })
    }

    /// `[B, C, H·W]` with 16 images to a vector, a position's channels together:
    /// `out[chunk, p, c, lane] = x[16·chunk + lane, c, p]`.
    fn to_lanes(x: &[f32], channels: usize, plane: usize) -> Vec<f32> {
        par_vec(x.len(), channels * LANES, |i, dst| {
            let (chunk, p) = (i / plane, i % plane);
            let images = &x[chunk * LANES * channels * plane..][..LANES * channels * plane];
            for (c, dst) in dst.chunks_exact_mut(LANES).enumerate() {
                for (lane, v) in dst.iter_mut().enumerate() {
                    *v = images[(lane * channels + c) * plane + p];
                }
            }
        })
    }

    /// One block: [`OUT_CHANNELS`] output channels at up to [`POSITIONS`] positions of one
    /// chunk of 16 images.
    struct Block<'a> {
        /// The chunk's input, `[H·W, C, 16]`.
        xt: &'a [f32],
        /// The whole weight.
        w: &'a [f32],
        /// Where the block's first output channel's weights start in `w`.
        first: usize,
        layout: WeightLayout,
        channels: usize,
        plane: usize,
        /// The positions (indices in the image's raster order).
        positions: &'a [usize],
        /// The taps inside the image at every one of the positions: `(k, shift)`.
        taps: &'a [(usize, isize)],
        /// The chunk's output at the block's first output channel, `[8, H·W, 16]` from here.
        out: *mut f32,
        scale: f32,
    }

    /// `out[j, p] = scale · Σ_{c, k} w[j, c, k] · xt[c, p + shift_k]` for the block's `P`
    /// positions and 8 output channels (the weight read by the block's layout), the 16 images
    /// of the chunk in the lanes. Tap by tap, through every input channel (channel by channel
    /// with the taps inside ran at about two thirds of the speed at 8×8).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `positions` has `P` entries; every `p + shift` of the block's
    /// positions and taps is a position of the image; the layout keeps every weight of the
    /// block's 8 output channels and `channels` input channels inside `w`; `out` points at 8
    /// channels of `plane · 16` writable floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const P: usize>(job: Block<'_>) {
        let Block {
            xt,
            w,
            first,
            layout,
            channels,
            plane,
            positions,
            taps,
            out,
            scale,
        } = job;
        debug_assert_eq!(positions.len(), P);
        debug_assert_eq!(xt.len(), channels * plane * LANES);
        debug_assert!(
            first + (OUT_CHANNELS - 1) * layout.out_stride + (channels - 1) * layout.in_stride + 8
                < w.len()
        );
        // Where each tap of each position reads, from the chunk's start (channel 0), and the tap's index
        // in the weight.
        let mut reads = [[0usize; P]; 9];
        let mut tap_weight = [0usize; 9];
        for ((reads, tap_weight), (k, shift)) in reads.iter_mut().zip(&mut tap_weight).zip(taps) {
            for (read, p) in reads.iter_mut().zip(positions) {
                *read = (*p as isize + shift) as usize * channels * LANES;
            }
            *tap_weight = if layout.flipped { 8 - k } else { *k };
        }
        let reads = &reads[..taps.len()];
        let (out_stride, in_stride) = (layout.out_stride, layout.in_stride);
        let mut acc = [[_mm512_setzero_ps(); P]; OUT_CHANNELS];
        for (reads, k) in reads.iter().zip(tap_weight) {
            let mut input = reads.map(|read| xt.as_ptr().wrapping_add(read));
            let mut weight = w.as_ptr().wrapping_add(first + k);
            for _ in 0..channels {
                // SAFETY: each position's tap is inside the image, so the vector is one of the
                // current channel's positions in `xt`.
                let xv: [__m512; P] =
                    core::array::from_fn(|i| unsafe { _mm512_loadu_ps(input[i]) });
                for (j, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: the weight of (j, c, k) for the current channel c, inside `w` by
                    // the layout.
                    let wb = _mm512_set1_ps(unsafe { *weight.add(j * out_stride) });
                    for (acc, xv) in acc.iter_mut().zip(&xv) {
                        *acc = _mm512_fmadd_ps(wb, *xv, *acc);
                    }
                }
                for input in &mut input {
                    *input = input.wrapping_add(LANES);
                }
                weight = weight.wrapping_add(in_stride);
            }
        }
        let scale = _mm512_set1_ps(scale);
        for (j, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: channel j, position positions[i] of the block's output.
                unsafe {
                    _mm512_storeu_ps(
                        out.add((j * plane + positions[i]) * LANES),
                        _mm512_mul_ps(*acc, scale),
                    )
                };
            }
        }
    }

    // `POSITIONS` bounds the match in `convolve`.
    const _: () = assert!(POSITIONS == 3);
}

#[cfg(test)]
mod tests {
    use super::super::conv3x3_kernels::tests::naive;
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn blocks_cover_every_position_once_with_exactly_its_inside_taps() {
        for (h, w) in [(4, 4), (8, 8), (2, 3), (1, 1)] {
            let mut seen = vec![0; h * w];
            for PositionBlock { positions, taps } in blocks(h, w) {
                assert!((1..=POSITIONS).contains(&positions.len()));
                for p in positions {
                    seen[p] += 1;
                    let (y, x) = ((p / w) as isize, (p % w) as isize);
                    let inside: Vec<usize> = (0..9)
                        .filter(|k| {
                            let (dy, dx) = (*k as isize / 3 - 1, *k as isize % 3 - 1);
                            (0..h as isize).contains(&(y + dy))
                                && (0..w as isize).contains(&(x + dx))
                        })
                        .collect();
                    assert_eq!(taps.iter().map(|t| t.0).collect::<Vec<_>>(), inside);
                    for (k, shift) in &taps {
                        let (dy, dx) = (*k as isize / 3 - 1, *k as isize % 3 - 1);
                        assert_eq!(*shift, dy * w as isize + dx);
                    }
                }
            }
            assert!(seen.iter().all(|n| *n == 1), "{h}×{w}: {seen:?}");
        }
        // 8×8: 4 corners alone, 4 edges of 6 in blocks of 3, the 36 inside in 12 blocks.
        assert_eq!(blocks(8, 8).len(), 4 + 4 * 2 + 12);
    }

    #[test]
    fn matches_the_definition_where_it_runs() {
        let mut rng = SplitMix64::new(17);
        // [batch, c_in, c_out, h, w]: both sizes it takes, two chunks of images, a channel count
        // of one block, odd input channels, a non-square image.
        for [b, c_in, c_out, h, w] in [
            [16, 5, 8, 4, 4],
            [32, 3, 24, 8, 8],
            [16, 16, 16, 8, 8],
            [16, 7, 8, 2, 6],
        ] {
            let s = Conv3x3Shape {
                batch: b,
                c_in,
                c_out,
                height: h,
                width: w,
            };
            let x = rng.normals_f32(b * c_in * h * w);
            let wt = rng.normals_f32(c_out * c_in * 9);
            let got = conv3x3(&x, &wt, 0.5, c_in, c_out, &s);
            assert_eq!(got.is_some(), super::super::conv3x3_direct::available());
            let Some(got) = got else { continue };
            let wide = |v: &[f32]| {
                v.iter()
                    .map(|v| f64::from(*v) * 0.5f64.sqrt())
                    .collect::<Vec<_>>()
            };
            let want = naive(&wide(&x), &wide(&wt), s);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!((f64::from(*g) - r).abs() < 1e-4, "{s:?} at {i}: {g} vs {r}");
            }
        }
    }

    #[test]
    fn transpose_matches_the_definition_where_it_runs() {
        let mut rng = SplitMix64::new(19);
        // The input gradient is the convolution with the flipped weight, channels swapped.
        for [b, c_in, c_out, h, w] in [[16, 8, 5, 4, 4], [32, 24, 3, 8, 8], [16, 16, 32, 3, 5]] {
            let s = Conv3x3Shape {
                batch: b,
                c_in,
                c_out,
                height: h,
                width: w,
            };
            let g = rng.normals_f32(b * c_out * h * w);
            let wt = rng.normals_f32(c_out * c_in * 9);
            let got = conv3x3_transpose(&g, &wt, 0.5, &s);
            assert_eq!(got.is_some(), super::super::conv3x3_direct::available());
            let Some(got) = got else { continue };
            let mut flipped = vec![0.0; wt.len()]; // [C_in, C_out, 3, 3]
            for o in 0..c_out {
                for c in 0..c_in {
                    for k in 0..9 {
                        flipped[(c * c_out + o) * 9 + k] =
                            f64::from(wt[(o * c_in + c) * 9 + 8 - k]);
                    }
                }
            }
            let swapped = Conv3x3Shape {
                c_in: c_out,
                c_out: c_in,
                ..s
            };
            let g64: Vec<f64> = g.iter().map(|v| f64::from(*v) * 0.5).collect();
            let want = naive(&g64, &flipped, swapped);
            assert_eq!(got.len(), want.len());
            for (i, (a, r)) in got.iter().zip(&want).enumerate() {
                assert!((f64::from(*a) - r).abs() < 1e-4, "{s:?} at {i}: {a} vs {r}");
            }
        }
    }

    #[test]
    fn takes_small_images_of_whole_vectors_of_the_batch() {
        let shape = |batch, c_out, side| Conv3x3Shape {
            batch,
            c_in: 8,
            c_out,
            height: side,
            width: side,
        };
        assert!(fits(256, &shape(16, 256, 8)));
        assert!(fits(256, &shape(32, 256, 4)));
        assert!(!fits(256, &shape(8, 256, 8)), "half a vector of images");
        assert!(!fits(256, &shape(24, 256, 8)), "a vector and a half");
        assert!(
            !fits(12, &shape(16, 12, 8)),
            "a block and a half of channels"
        );
        assert!(
            !fits(256, &shape(16, 256, 16)),
            "16×16: the position kernel's"
        );
        let x = vec![0.0; 8 * 8 * 8 * 8];
        let w = vec![0.0; 8 * 8 * 9];
        assert!(conv3x3(&x, &w, 1.0, 8, 8, &shape(8, 8, 8)).is_none());
    }
}
