//! The gradient of the 3×3 "same" convolution with respect to its weight, computed straight from
//! the `[B, C, H, W]` input and output gradient with AVX-512 or AVX2: no im2col block and no
//! packing.
//!
//! Each thread takes a few image rows at a time (a chunk), copies them with a zero border
//! (`[C_in, rows + 2, W + 2]`) and the output gradient's rows transposed (`[positions, C_out]`),
//! and accumulates `dwᵀ[c·9 + k, o] += Σ_p g[o, p] · x[c, p shifted by k]` with the output
//! channels in the lanes: a block of vectors of output channels by 6 `(c, k)` pairs, one
//! broadcast input value per pair and position, no horizontal sums; the accumulators go back to
//! the thread's `dwᵀ` once per chunk. With AVX-512, 4 vectors of 16 channels (24 of the 32
//! registers hold sums); with AVX2, 2 vectors of 8 (12 of the 16).
//!
//! The AVX-512 kernels run only in builds with the `avx512` feature (the trainer's default), so a
//! build without it measures an AVX2 machine; the AVX2 kernels run on every x86-64 CPU with AVX2
//! and FMA, checked at run time.

use super::conv3x3_kernels::Conv3x3Shape;

/// The narrowest images [`conv3x3_weight_grad`] takes: below 16 wide the im2col kernel is the
/// faster (`trainer/examples/conv_speed.rs`: at 8×8 with 256 channels 109 GFLOP/s direct, 133
/// im2col with AVX-512).
const MIN_WIDTH: usize = 16;

/// The direct weight gradient's kernel sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16 output channels to a vector; builds with the `avx512` feature on CPUs with AVX-512.
    Avx512,
    /// 8 output channels to a vector; CPUs with AVX2 and FMA.
    Avx2,
}

impl Kernel {
    /// Every kernel set, the faster first.
    pub const ALL: [Kernel; 2] = [Kernel::Avx512, Kernel::Avx2];

    /// Whether this build and this CPU run it.
    pub fn runs(self) -> bool {
        match self {
            Kernel::Avx512 => super::conv3x3_direct::available(),
            Kernel::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
        }
    }

    /// Output channels to a vector (each instruction set's `Lanes::LANES`, checked where it is
    /// defined).
    fn lanes(self) -> usize {
        match self {
            Kernel::Avx512 => 16,
            Kernel::Avx2 => 8,
        }
    }

    /// Vectors of output channels per block.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn out_vectors(self) -> usize {
        match self {
            Kernel::Avx512 => 4,
            Kernel::Avx2 => 2,
        }
    }

    /// One block: `vectors` vectors of output channels (1 to [`Kernel::out_vectors`]) by
    /// `pairs` `(c, k)` pairs (6 or 3).
    ///
    /// # Safety
    /// The kernel runs on this CPU ([`Kernel::runs`]) and `block` satisfies its kernel's
    /// requirements for these counts (`x86::Block`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn pairs_block(self, vectors: usize, pairs: usize, block: x86::Block<'_>) {
        match self {
            Kernel::Avx512 => {
                #[cfg(feature = "avx512")]
                // SAFETY: the caller's guarantee.
                unsafe {
                    match (vectors, pairs) {
                        (4, 6) => avx512::pairs_block::<4, 6>(block),
                        (3, 6) => avx512::pairs_block::<3, 6>(block),
                        (2, 6) => avx512::pairs_block::<2, 6>(block),
                        (1, 6) => avx512::pairs_block::<1, 6>(block),
                        (4, _) => avx512::pairs_block::<4, 3>(block),
                        (3, _) => avx512::pairs_block::<3, 3>(block),
                        (2, _) => avx512::pairs_block::<2, 3>(block),
                        _ => avx512::pairs_block::<1, 3>(block),
                    }
                }
                #[cfg(not(feature = "avx512"))]
                unreachable!("the AVX-512 kernels do not run without the avx512 feature")
            }
            // SAFETY: the caller's guarantee.
            Kernel::Avx2 => unsafe {
                match (vectors, pairs) {
                    (2, 6) => avx2::pairs_block::<2, 6>(block),
                    (1, 6) => avx2::pairs_block::<1, 6>(block),
                    (2, _) => avx2::pairs_block::<2, 3>(block),
                    _ => avx2::pairs_block::<1, 3>(block),
                }
            },
        }
    }
}

/// The gradient of the convolution `conv(x, w·scale)` with respect to `w` (`scale` times that
/// with respect to the scaled weight): `x` `[B, C_in, H, W]`, `g` `[B, C_out, H, W]` →
/// `[C_out, C_in, 3, 3]`, by the first kernel set that runs here and takes `C_out` (a multiple
/// of its lanes); `None` where none does, or for images narrower than 16 (where im2col is the
/// faster).
pub fn conv3x3_weight_grad(x: &[f32], g: &[f32], scale: f32, s: &Conv3x3Shape) -> Option<Vec<f32>> {
    if s.width < MIN_WIDTH {
        return None;
    }
    let kernel = Kernel::ALL
        .into_iter()
        .find(|kernel| kernel.runs() && s.c_out.is_multiple_of(kernel.lanes()))?;
    conv3x3_weight_grad_by(kernel, x, g, scale, s)
}

/// [`conv3x3_weight_grad`] by the given kernel set, for images of any size; `None` where it
/// does not run here or does not take `C_out`.
pub fn conv3x3_weight_grad_by(
    kernel: Kernel,
    x: &[f32],
    g: &[f32],
    scale: f32,
    s: &Conv3x3Shape,
) -> Option<Vec<f32>> {
    if !(kernel.runs() && s.c_out.is_multiple_of(kernel.lanes())) {
        return None;
    }
    let plane = s.height * s.width;
    assert_eq!(x.len(), s.batch * s.c_in * plane, "conv3x3: input length");
    assert_eq!(
        g.len(),
        s.batch * s.c_out * plane,
        "conv3x3: gradient length"
    );
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::weight_grad(kernel, x, g, scale, s))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = scale;
        None
    }
}

/// The chunks, their copies and the sums over threads, the same for both kernel sets.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use rayon::prelude::*;

    use super::super::conv3x3_kernels::{Conv3x3Shape, thread_ranges};
    use super::super::par_vec;
    use super::Kernel;

    /// Output-gradient positions per chunk: the chunk's transposed gradient
    /// (`positions × C_out` floats) stays near 128 KB, within a core's L2 cache.
    const CHUNK_FLOATS: usize = 32 * 1024;

    /// `(c, k)` pairs per pass of a block kernel.
    const PAIRS: usize = 6;

    /// `kernel`'s weight gradient; the shape and lengths are checked by the caller, and `kernel`
    /// runs on this CPU and takes `s.c_out`.
    pub(super) fn weight_grad(
        kernel: Kernel,
        x: &[f32],
        g: &[f32],
        scale: f32,
        s: &Conv3x3Shape,
    ) -> Vec<f32> {
        let lanes = kernel.lanes();
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
                            let vectors = kernel.out_vectors().min((c_out - o) / lanes);
                            let block = Block {
                                gt: &gt[o..],
                                c_out,
                                padded: &padded,
                                starts,
                                rows: chunk_rows,
                                width,
                                dwt: &mut dwt[pair * c_out + o..],
                            };
                            // SAFETY: the kernel runs on this CPU (the caller's guarantee); the
                            // block's reads and writes stay inside the slices it is given (see
                            // `Block`), `vectors` of the kernel's lanes from `o`.
                            unsafe { kernel.pairs_block(vectors, n, block) };
                            o += vectors * lanes;
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
    pub(super) struct Block<'a> {
        /// The chunk's transposed output gradient from the block's first output channel:
        /// position p's values at `p · c_out`.
        pub(super) gt: &'a [f32],
        pub(super) c_out: usize,
        /// The chunk's input with its zero border, `[C, rows + 2, W + 2]`.
        pub(super) padded: &'a [f32],
        /// For each pair, the index in `padded` that local position (0, 0) reads.
        pub(super) starts: [usize; PAIRS],
        pub(super) rows: usize,
        pub(super) width: usize,
        /// `dwᵀ` from the block's first pair and output channel: pair i's row at `i · c_out`.
        pub(super) dwt: &'a mut [f32],
    }

    /// One instruction set's vector of output channels, as [`pairs_block`] uses it.
    ///
    /// # Safety
    /// Every function may be called only where the CPU has the instruction set (the kernel that
    /// inlines them is compiled for it); `load` and `store` take `LANES` floats at the pointer.
    pub(super) trait Lanes {
        type Vector: Copy;
        /// Floats to a vector.
        const LANES: usize;
        unsafe fn zero() -> Self::Vector;
        unsafe fn load(from: *const f32) -> Self::Vector;
        unsafe fn store(to: *mut f32, v: Self::Vector);
        unsafe fn splat(value: f32) -> Self::Vector;
        /// `a · b + c`, fused.
        unsafe fn mul_add(a: Self::Vector, b: Self::Vector, c: Self::Vector) -> Self::Vector;
    }

    /// `dwᵀ[pair i, o + L·v + lane] += Σ_p gt[p, o + L·v + lane] · padded[starts[i] + p's
    /// offset]` for the block's `V · L` output channels (`L` = `S::LANES`) and first `P` pairs.
    /// Inlined into each instruction set's `pairs_block`, which is compiled for it.
    ///
    /// # Safety
    /// The CPU has `S`'s instruction set. Every index reached is inside the block's slices:
    /// `gt` holds `rows · width` positions of `c_out` values with `V · L` from its start, `dwt`
    /// holds `P` rows of `c_out` with `V · L` from its start, and each `starts[i] + (rows + 1) ·
    /// (width + 2) + width + 1` lies inside `padded`.
    #[inline(always)]
    pub(super) unsafe fn pairs_block<S: Lanes, const V: usize, const P: usize>(block: Block<'_>) {
        let Block {
            gt,
            c_out,
            padded,
            starts,
            rows,
            width,
            dwt,
        } = block;
        debug_assert!(gt.len() >= (rows * width - 1) * c_out + V * S::LANES);
        debug_assert!(dwt.len() >= (P - 1) * c_out + V * S::LANES);
        // SAFETY (every `S::` call below): the CPU has S's instruction set (the caller's
        // guarantee).
        let mut acc = [[unsafe { S::zero() }; P]; V];
        for (v, acc) in acc.iter_mut().enumerate() {
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row i of `dwt`, lanes L·v.. (the caller's guarantee).
                *acc = unsafe { S::load(dwt.as_ptr().add(i * c_out + v * S::LANES)) };
            }
        }
        let mut gp = gt.as_ptr();
        for y in 0..rows {
            let row = y * (width + 2);
            for x in 0..width {
                let mut gv = [unsafe { S::zero() }; V];
                for (v, gv) in gv.iter_mut().enumerate() {
                    // SAFETY: position p's values for the block's channels (the caller's guarantee).
                    *gv = unsafe { S::load(gp.add(v * S::LANES)) };
                }
                gp = gp.wrapping_add(c_out);
                for i in 0..P {
                    // SAFETY: inside `padded` (the caller's guarantee on `starts`).
                    let xb = unsafe { S::splat(*padded.as_ptr().add(starts[i] + row + x)) };
                    for (acc, gv) in acc.iter_mut().zip(&gv) {
                        acc[i] = unsafe { S::mul_add(*gv, xb, acc[i]) };
                    }
                }
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: as the loads above.
                unsafe { S::store(dwt.as_mut_ptr().add(i * c_out + v * S::LANES), *acc) };
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
mod avx512 {
    use core::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };

    use super::x86::{Block, Lanes};

    /// 16 output channels to a vector.
    pub(super) struct Avx512;

    impl Lanes for Avx512 {
        type Vector = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            // SAFETY: the CPU has AVX-512F (the trait's contract).
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(from: *const f32) -> __m512 {
            // SAFETY: the CPU has AVX-512F; 16 floats readable at `from` (the contract).
            unsafe { _mm512_loadu_ps(from) }
        }
        #[inline(always)]
        unsafe fn store(to: *mut f32, v: __m512) {
            // SAFETY: the CPU has AVX-512F; 16 floats writable at `to` (the contract).
            unsafe { _mm512_storeu_ps(to, v) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> __m512 {
            // SAFETY: the CPU has AVX-512F (the contract).
            unsafe { _mm512_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: the CPU has AVX-512F (the contract).
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
    }

    /// [`super::x86::pairs_block`] compiled for AVX-512: `V` (1 to 4) vectors by `P` pairs, at
    /// most 24 sums in the 32 registers.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and `block` is as `x86::pairs_block` requires.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pairs_block<const V: usize, const P: usize>(block: Block<'_>) {
        // SAFETY: the caller's guarantee.
        unsafe { super::x86::pairs_block::<Avx512, V, P>(block) }
    }

    // `Kernel::lanes` splits the output channels by this width.
    const _: () = assert!(Avx512::LANES == 16);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::x86::{Block, Lanes};

    /// 8 output channels to a vector.
    pub(super) struct Avx2;

    impl Lanes for Avx2 {
        type Vector = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            // SAFETY: the CPU has AVX2 and FMA (the trait's contract).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn load(from: *const f32) -> __m256 {
            // SAFETY: the CPU has AVX2; 8 floats readable at `from` (the contract).
            unsafe { _mm256_loadu_ps(from) }
        }
        #[inline(always)]
        unsafe fn store(to: *mut f32, v: __m256) {
            // SAFETY: the CPU has AVX2; 8 floats writable at `to` (the contract).
            unsafe { _mm256_storeu_ps(to, v) }
        }
        #[inline(always)]
        unsafe fn splat(value: f32) -> __m256 {
            // SAFETY: the CPU has AVX2 (the contract).
            unsafe { _mm256_set1_ps(value) }
        }
        #[inline(always)]
        unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: the CPU has FMA (the contract).
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
    }

    /// [`super::x86::pairs_block`] compiled for AVX2: `V` (1 or 2) vectors by `P` pairs, at most
    /// 12 sums, two loaded vectors and a broadcast in the 16 registers.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and `block` is as `x86::pairs_block` requires.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pairs_block<const V: usize, const P: usize>(block: Block<'_>) {
        // SAFETY: the caller's guarantee.
        unsafe { super::x86::pairs_block::<Avx2, V, P>(block) }
    }

    // `Kernel::lanes` splits the output channels by this width.
    const _: () = assert!(Avx2::LANES == 8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

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
        // 16…80 output channels (one to four AVX-512 vectors and four then one; AVX2's in blocks
        // of two and one), an odd number of
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
            let taken = conv3x3_weight_grad(&x, &g, 0.5, &s);
            let runs = Kernel::ALL.iter().any(|kernel| kernel.runs());
            assert_eq!(taken.is_some(), runs && s.width >= 16, "{s:?}");
            let want = naive_weight_grad(&x, &g, 0.5, &s);
            for kernel in Kernel::ALL {
                let dw = conv3x3_weight_grad_by(kernel, &x, &g, 0.5, &s);
                assert_eq!(
                    dw.is_some(),
                    kernel.runs(),
                    "{s:?}: {kernel:?} runs exactly where the CPU and build have it"
                );
                let Some(dw) = dw else { continue };
                let worst = dw
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (f64::from(*a) - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-3, "{s:?} {kernel:?}: off by {worst}");
            }
        }
        // Output channels that fill no whole vector: AVX2 takes 24 (three of its vectors, its
        // blocks of two then one), AVX-512 not; neither takes 20.
        for (c_out, takers) in [(24, [false, true]), (20, [false, false])] {
            let s = Conv3x3Shape {
                batch: 1,
                c_in: 2,
                c_out,
                height: 4,
                width: 16,
            };
            let x = rng.normals_f32(2 * 64);
            let g = rng.normals_f32(c_out * 64);
            let want = naive_weight_grad(&x, &g, 1.0, &s);
            for (kernel, takes) in Kernel::ALL.into_iter().zip(takers) {
                let dw = conv3x3_weight_grad_by(kernel, &x, &g, 1.0, &s);
                assert_eq!(dw.is_some(), takes && kernel.runs(), "{c_out} {kernel:?}");
                if let Some(dw) = dw {
                    let worst = dw
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (f64::from(*a) - b).abs())
                        .fold(0.0, f64::max);
                    assert!(worst < 1e-3, "{c_out} {kernel:?}: off by {worst}");
                }
            }
        }
    }
}
