//! The 3×3 "same" convolution by Winograd's minimal filtering, F(2×2, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016): each 2×2 block of outputs comes
//! from a 4×4 block of inputs with 16 multiplications per channel pair instead of 36, so the
//! matrix products do 2.25× fewer multiply-adds than the im2col form of [`super::conv3x3_kernels`].
//!
//! With `Bᵀ`, `G`, `Aᵀ` the transforms below, for each input channel `c` and output channel `o`
//! `U = G·w·Gᵀ` (the 3×3 weight to 4×4, once per call), for each 2×2 output tile and input
//! channel `V = Bᵀ·d·B` (the tile's 4×4 input patch, zero past the border), then for each of the
//! 16 transformed positions `ξ` one matrix product `M[ξ] = U[ξ] · V[ξ]` (`[O, C] × [C, tiles]`),
//! and the output tile `Y = Aᵀ·M·A`. Tiles are taken in chunks that keep `V` and `M` near a
//! core's cache; chunks run in parallel on rayon's pool.
//!
//! Needs an even height and width (every layer of the paper's networks: 4×4 and up).
//! [`super::conv3x3_kernels`] takes it for the forward convolution and its transpose where it
//! [`pays`].

use core::mem::MaybeUninit;

use rayon::prelude::*;

use super::Float;
use super::conv3x3_kernels::{Conv3x3Shape, SendPtr, thread_ranges};

/// Output tiles (2×2 each) per chunk, about: the chunk's transformed input `[16, C, TILES]` is
/// 1 MB at 128 channels.
const TILES: usize = 128;

/// Floats between two transformed positions' matrices beyond their size (a cache line): a tile
/// row's transforms write (and read) all 16 at once, and at a multiple of 4 KB apart they would
/// fall in the same sets of the L1 cache and evict each other.
const SKEW: usize = 16;

/// The narrowest images on which [`pays`] takes the Winograd form natively: below it a chunk's
/// products are too small for `gemm` (`trainer/examples/conv_speed.rs`, 256 channels, batch
/// 16: at 4×4 0.6–1.2× im2col with AVX2 and 0.5–0.7× the batch-lane kernel with AVX-512; at
/// 8×8 1.1–1.3× im2col with AVX2, about level with the AVX-512 direct kernels, which take 4×4
/// and 8×8 first where they run; from 16×16 on 1.2–2.2× either).
const MIN_NATIVE_WIDTH: usize = 8;

/// Whether the Winograd form can compute convolutions of this shape.
pub fn fits(s: &Conv3x3Shape) -> bool {
    s.height >= 2 && s.width >= 2 && s.height.is_multiple_of(2) && s.width.is_multiple_of(2)
}

/// Whether the Winograd form is the fastest kernel for this shape: every shape it fits in
/// WebAssembly (the page's CPU fallback: 5.8× the im2col form there, `bash
/// bench/wasm-conv.sh`), images 8 wide and up natively.
pub fn pays(s: &Conv3x3Shape) -> bool {
    fits(s) && (cfg!(target_arch = "wasm32") || s.width >= MIN_NATIVE_WIDTH)
}

/// Whether [`weight_grad`] is the fastest weight gradient for this shape: natively, images 32
/// and 64 wide (the page does not train). `trainer/examples/conv_speed.rs`, batch 16, against
/// the direct weight gradient, AVX-512 and AVX2: 0.9–1.0× at 16×16 (128 and 256 channels),
/// 1.25–1.3× at 32×32, 1.3–1.4× at 64×64, 1.0–1.2× at 128×128 — where whole 128×128 steps
/// did not gain from it (`pggan bench`, 3 runs: 0.96×).
pub fn weight_grad_pays(s: &Conv3x3Shape) -> bool {
    fits(s) && !cfg!(target_arch = "wasm32") && (32..=64).contains(&s.width)
}

/// `U = G·w·Gᵀ·scale` for every `(o, c)`, laid out `[16, O, C]` (one `[O, C]` matrix per
/// transformed position). `G` = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
fn transform_weight<T: Float>(w: &[T], scale: T, c_in: usize, c_out: usize) -> Vec<T> {
    let half = T::from_f64(0.5) * scale;
    let plane = c_out * c_in;
    let mut u = vec![T::default(); 16 * plane];
    for (oc, g) in w.chunks_exact(9).enumerate() {
        // t = G·g: [4, 3], rows of g combined.
        let mut t = [[T::default(); 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0 * scale;
            t[1][j] = (g0 + g1 + g2) * half;
            t[2][j] = (g0 - g1 + g2) * half;
            t[3][j] = g2 * scale;
        }
        // U = t·Gᵀ: [4, 4], columns of t combined (the ½ and the scale applied once above).
        let point5 = T::from_f64(0.5);
        for (i, row) in t.iter().enumerate() {
            let (a, b, c) = (row[0], row[1], row[2]);
            let values = [a, (a + b + c) * point5, (a - b + c) * point5, c];
            for (j, v) in values.into_iter().enumerate() {
                u[(i * 4 + j) * plane + oc] = v;
            }
        }
    }
    u
}

/// One row of input transforms: for input channel plane `plane` (`height × width`) and tile
/// row `ty`, `Bᵀ·d·B` of every tile of the row, written to `v` at `v[ξ][t]` (`ξ` the 16
/// transformed positions, `stride` apart; `t` the tile's column). Rows are combined first
/// (`Bᵀ·d`, whole image rows at once), then columns (`·B`) from the combined rows split into
/// their odd and even columns, so every step runs along contiguous memory and vectorises.
/// `Bᵀ` = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].
#[inline(always)]
fn transform_input_row<T: Float>(
    plane: &[T],
    (height, width): (usize, usize),
    ty: usize,
    scratch: &mut Scratch<T>,
    v: &mut [T],
    stride: usize,
) {
    let tiles_x = width / 2;
    // Input rows 2·ty − 1 … 2·ty + 2, zero above and below the image.
    let zero = &scratch.zero[..width];
    let row = |y: isize| {
        if y < 0 || y >= height as isize {
            zero
        } else {
            &plane[y as usize * width..][..width]
        }
    };
    let y0 = 2 * ty as isize - 1;
    let (d0, d1, d2, d3) = (row(y0), row(y0 + 1), row(y0 + 2), row(y0 + 3));
    // Bᵀ·d, four rows combined in one pass.
    let [c0, c1, c2, c3] = scratch.combined.each_mut().map(|row| &mut row[..width]);
    for p in 0..width {
        c0[p] = d0[p] - d2[p];
        c1[p] = d1[p] + d2[p];
        c2[p] = d2[p] - d1[p];
        c3[p] = d1[p] - d3[p];
    }
    // Each combined row split by column parity: even[i][t] is column 2t − 1 (0 at t = 0),
    // odd[i][t] column 2t (0 at t = tiles_x).
    for (i, combined) in scratch.combined.iter().enumerate() {
        let (even, odd) = (&mut scratch.even[i], &mut scratch.odd[i]);
        even[0] = T::default();
        odd[tiles_x] = T::default();
        let pairs = combined[..2 * tiles_x].chunks_exact(2);
        for ((pair, odd), even) in pairs.zip(&mut odd[..tiles_x]).zip(&mut even[1..]) {
            (*odd, *even) = (pair[0], pair[1]);
        }
    }
    // (Bᵀ·d)·B along each combined row: columns a, b, c, e of a tile are even[t], odd[t],
    // even[t + 1], odd[t + 1].
    for i in 0..4 {
        let (even, odd) = (
            &scratch.even[i][..tiles_x + 1],
            &scratch.odd[i][..tiles_x + 1],
        );
        let [v0, v1, v2, v3] = four_rows(&mut v[i * 4 * stride..], stride, tiles_x);
        for t in 0..tiles_x {
            let (a, b, c, e) = (even[t], odd[t], even[t + 1], odd[t + 1]);
            v0[t] = a - c;
            v1[t] = b + c;
            v2[t] = c - b;
            v3[t] = b - e;
        }
    }
}

/// One row of output transforms: `Y = Aᵀ·m·A` for every tile of a row, `m[ξ][t]` read from `m`
/// (`stride` apart), written as the two output rows `top` and `bottom` (`width` long).
/// `Aᵀ` = [[1, 1, 1, 0], [0, 1, −1, −1]].
#[inline(always)]
fn transform_output_row<T: Float>(
    m: &[T],
    stride: usize,
    top: &mut [MaybeUninit<T>],
    bottom: &mut [MaybeUninit<T>],
) {
    let tiles_x = top.len() / 2;
    let at = |xi: usize| &m[xi * stride..][..tiles_x];
    let (m0, m1, m2, m3) = (at(0), at(1), at(2), at(3));
    let (m4, m5, m6, m7) = (at(4), at(5), at(6), at(7));
    let (m8, m9, m10, m11) = (at(8), at(9), at(10), at(11));
    let (m12, m13, m14, m15) = (at(12), at(13), at(14), at(15));
    let (top, bottom) = (&mut top[..2 * tiles_x], &mut bottom[..2 * tiles_x]);
    for t in 0..tiles_x {
        // Aᵀ·m: two rows of four.
        let s0 = [
            m0[t] + m4[t] + m8[t],
            m1[t] + m5[t] + m9[t],
            m2[t] + m6[t] + m10[t],
            m3[t] + m7[t] + m11[t],
        ];
        let s1 = [
            m4[t] - m8[t] - m12[t],
            m5[t] - m9[t] - m13[t],
            m6[t] - m10[t] - m14[t],
            m7[t] - m11[t] - m15[t],
        ];
        // ·A.
        top[2 * t] = MaybeUninit::new(s0[0] + s0[1] + s0[2]);
        top[2 * t + 1] = MaybeUninit::new(s0[1] - s0[2] - s0[3]);
        bottom[2 * t] = MaybeUninit::new(s1[0] + s1[1] + s1[2]);
        bottom[2 * t + 1] = MaybeUninit::new(s1[1] - s1[2] - s1[3]);
    }
}

/// One row of output-gradient transforms: `M̂ = A·ĝ·Aᵀ` of every 2×2 tile `ĝ` of the two
/// gradient rows `top` and `bottom` (`width` long), written to `out` at `out[ξ][t]` (`stride`
/// apart), as [`transform_input_row`] writes `V`. The adjoint of [`transform_output_row`].
#[inline(always)]
fn transform_gradient_row<T: Float>(
    top: &[T],
    bottom: &[T],
    scratch: &mut Scratch<T>,
    out: &mut [T],
    stride: usize,
) {
    let width = top.len();
    let tiles_x = width / 2;
    let bottom = &bottom[..width];
    // A·ĝ: rows ĝ0, ĝ0 + ĝ1, ĝ0 − ĝ1, −ĝ1, whole image rows at once.
    let [c0, c1, c2, c3] = scratch.combined.each_mut().map(|row| &mut row[..width]);
    for p in 0..width {
        c0[p] = top[p];
        c1[p] = top[p] + bottom[p];
        c2[p] = top[p] - bottom[p];
        c3[p] = T::default() - bottom[p];
    }
    // ·Aᵀ along each combined row: a tile's columns a, b (even[t], odd[t] here) become
    // a, a + b, a − b, −b.
    for (i, combined) in scratch.combined.iter().enumerate() {
        let (even, odd) = (
            &mut scratch.even[i][..tiles_x],
            &mut scratch.odd[i][..tiles_x],
        );
        let pairs = combined[..2 * tiles_x].chunks_exact(2);
        for ((pair, even), odd) in pairs.zip(even.iter_mut()).zip(odd.iter_mut()) {
            (*even, *odd) = (pair[0], pair[1]);
        }
        let [m0, m1, m2, m3] = four_rows(&mut out[i * 4 * stride..], stride, tiles_x);
        for t in 0..tiles_x {
            let (a, b) = (even[t], odd[t]);
            m0[t] = a;
            m1[t] = a + b;
            m2[t] = a - b;
            m3[t] = T::default() - b;
        }
    }
}

/// The first `len` values of four rows `stride` apart from the start of `rows`.
#[inline(always)]
fn four_rows<T>(rows: &mut [T], stride: usize, len: usize) -> [&mut [T]; 4] {
    let (r0, rest) = rows.split_at_mut(stride);
    let (r1, rest) = rest.split_at_mut(stride);
    let (r2, r3) = rest.split_at_mut(stride);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
    ]
}

/// Rows of `U` and columns of `V` per register block of [`multiply`].
const BLOCK_ROWS: usize = 4;
const BLOCK_COLS: usize = 8;

/// `m[o, t] = Σ_c u[o, c] · v[c, t]` for `o < rows`, `t < cols`, `c < depth`; `u` row-major
/// `[rows, depth]`, `v` and `m` with rows `stride` apart. Blocks of 4 × 8 outputs are summed in
/// local arrays the compiler keeps in vector registers (WebAssembly SIMD in the browser, AVX
/// natively); the edges go element by element. These products are small (`depth` and `rows`
/// are channel counts, `cols` at most a chunk), where a general matrix product's packing costs
/// more than it saves.
fn multiply<T: Float>(
    (rows, cols, depth): (usize, usize, usize),
    u: &[T],
    v: &[T],
    m: &mut [T],
    stride: usize,
) {
    let full_rows = rows - rows % BLOCK_ROWS;
    let full_cols = cols - cols % BLOCK_COLS;
    for o in (0..full_rows).step_by(BLOCK_ROWS) {
        let u_rows: [&[T]; BLOCK_ROWS] = core::array::from_fn(|r| &u[(o + r) * depth..][..depth]);
        for t in (0..full_cols).step_by(BLOCK_COLS) {
            let mut acc = [[T::default(); BLOCK_COLS]; BLOCK_ROWS];
            for c in 0..depth {
                let vc: &[T; BLOCK_COLS] = v[c * stride + t..][..BLOCK_COLS]
                    .try_into()
                    .expect("a block of columns");
                for (acc_row, u_row) in acc.iter_mut().zip(&u_rows) {
                    let uc = u_row[c];
                    for (a, &x) in acc_row.iter_mut().zip(vc) {
                        *a += uc * x;
                    }
                }
            }
            for (r, acc_row) in acc.iter().enumerate() {
                m[(o + r) * stride + t..][..BLOCK_COLS].copy_from_slice(acc_row);
            }
        }
    }
    // Edges: the last rows (all columns) and the last columns (the blocked rows).
    let edge = |o: usize, t: usize, m: &mut [T]| {
        let mut sum = T::default();
        for c in 0..depth {
            sum += u[o * depth + c] * v[c * stride + t];
        }
        m[o * stride + t] = sum;
    };
    for o in 0..rows {
        let first = if o < full_rows { full_cols } else { 0 };
        for t in first..cols {
            edge(o, t, m);
        }
    }
}

/// A thread's working rows for [`transform_input_row`].
struct Scratch<T> {
    zero: Vec<T>,
    combined: [Vec<T>; 4],
    even: [Vec<T>; 4],
    odd: [Vec<T>; 4],
}

impl<T: Float> Scratch<T> {
    fn new(width: usize) -> Self {
        let half = vec![T::default(); width / 2 + 1];
        Self {
            zero: vec![T::default(); width],
            combined: core::array::from_fn(|_| vec![T::default(); width]),
            even: [half.clone(), half.clone(), half.clone(), half.clone()],
            odd: [half.clone(), half.clone(), half.clone(), half],
        }
    }
}

/// `y = conv(x, w·scale)` by F(2×2, 3×3): `x` `[B, C_in, H, W]`, `w` `[C_out, C_in, 3, 3]` →
/// `[B, C_out, H, W]`; `H` and `W` even (see [`fits`]).
pub fn convolve<T: Float>(
    x: &[T],
    w: &[T],
    scale: T,
    c_in: usize,
    c_out: usize,
    s: &Conv3x3Shape,
) -> Vec<T> {
    assert!(fits(s), "conv3x3 (Winograd): odd image size {s:?}");
    assert_eq!(
        x.len(),
        s.batch * c_in * s.height * s.width,
        "conv3x3: input length"
    );
    assert_eq!(w.len(), c_out * c_in * 9, "conv3x3: weight length");
    let len_out = s.batch * c_out * s.height * s.width;
    let mut out: Vec<T> = Vec::with_capacity(len_out);
    let pass = Pass::Forward {
        u: transform_weight(w, scale, c_in, c_out),
        out: SendPtr(out.spare_capacity_mut().as_mut_ptr()),
    };
    run(&Call {
        tiles: Tiles::new(s, c_in, c_out),
        x,
        pass,
    });
    // SAFETY: the chunks' tile rows cover every output row of every plane, each written whole.
    unsafe { out.set_len(len_out) };
    out
}

/// The gradient of [`convolve`] with respect to `w` (`scale` times that with respect to the
/// scaled weight): `x` `[B, C_in, H, W]`, `g` `[B, C_out, H, W]` → `[C_out, C_in, 3, 3]`; `H`
/// and `W` even. The forward is `Y = Aᵀ·(U ⊙ V)·A` per tile with `U = G·w·Gᵀ`, so with `M̂ =
/// A·ĝ·Aᵀ` (each 2×2 tile `ĝ` of the output gradient taken to 4×4) `dU[ξ] = Σ_tiles M̂[ξ] ·
/// V[ξ]ᵀ` — one `[O, tiles] × [tiles, C]` product per transformed position and chunk, summed
/// per thread — and `dw = scale · Gᵀ·dU·G`: 16 products of `O·C` per tile where the definition
/// takes 36 per 2×2 outputs.
pub fn weight_grad<T: Float>(x: &[T], g: &[T], scale: T, s: &Conv3x3Shape) -> Vec<T> {
    assert!(fits(s), "conv3x3 (Winograd): odd image size {s:?}");
    let image = s.height * s.width;
    assert_eq!(x.len(), s.batch * s.c_in * image, "conv3x3: input length");
    assert_eq!(
        g.len(),
        s.batch * s.c_out * image,
        "conv3x3: gradient length"
    );
    let plane = s.c_out * s.c_in;
    let partials = run(&Call {
        tiles: Tiles::new(s, s.c_in, s.c_out),
        x,
        pass: Pass::WeightGrad { g },
    });
    // dw[o, c] = scale · Gᵀ·dU[·][o, c]·G, the threads' sums added first.
    let half = T::from_f64(0.5);
    let mut dw = vec![T::default(); plane * 9];
    for (oc, dw) in dw.chunks_exact_mut(9).enumerate() {
        let d: [T; 16] = core::array::from_fn(|xi| {
            partials
                .iter()
                .fold(T::default(), |sum, du| sum + du[xi * plane + oc])
        });
        // t = Gᵀ·d: [3, 4].
        let t: [[T; 4]; 3] = core::array::from_fn(|a| {
            core::array::from_fn(|j| {
                let (d0, d1, d2, d3) = (d[j], d[4 + j], d[8 + j], d[12 + j]);
                match a {
                    0 => d0 + (d1 + d2) * half,
                    1 => (d1 - d2) * half,
                    _ => (d1 + d2) * half + d3,
                }
            })
        });
        // dw = t·G · scale: [3, 3].
        for (a, row) in t.iter().enumerate() {
            let (t0, t1, t2, t3) = (row[0], row[1], row[2], row[3]);
            dw[a * 3] = (t0 + (t1 + t2) * half) * scale;
            dw[a * 3 + 1] = (t1 - t2) * half * scale;
            dw[a * 3 + 2] = ((t1 + t2) * half + t3) * scale;
        }
    }
    dw
}

/// How the tiles of one call are cut into chunks: whole rows of 2×2 tiles (of any image of the
/// batch), about [`TILES`] tiles each.
#[derive(Clone, Copy)]
struct Tiles {
    c_in: usize,
    c_out: usize,
    height: usize,
    width: usize,
    /// `B · H / 2`.
    tile_rows: usize,
    rows_per_chunk: usize,
    /// Tiles a chunk holds at most: the stride of `V`'s and `M`'s rows.
    capacity: usize,
}

impl Tiles {
    fn new(s: &Conv3x3Shape, c_in: usize, c_out: usize) -> Self {
        let rows_per_chunk = (TILES / (s.width / 2)).max(1);
        Tiles {
            c_in,
            c_out,
            height: s.height,
            width: s.width,
            tile_rows: s.batch * s.height / 2,
            rows_per_chunk,
            capacity: rows_per_chunk * (s.width / 2),
        }
    }

    /// The distances between `V`'s 16 matrices and between `M`'s.
    fn strides(&self) -> (usize, usize) {
        (
            self.c_in * self.capacity + SKEW,
            self.c_out * self.capacity + SKEW,
        )
    }

    /// The tile rows of chunk `chunk`.
    fn rows(&self, chunk: usize) -> core::ops::Range<usize> {
        let first = chunk * self.rows_per_chunk;
        first..(first + self.rows_per_chunk).min(self.tile_rows)
    }
}

/// What every chunk of one call shares.
struct Call<'a, T> {
    tiles: Tiles,
    /// The input, `[B, C_in, H, W]`.
    x: &'a [T],
    pass: Pass<'a, T>,
}

/// What a chunk does with its transformed input `V`.
enum Pass<'a, T> {
    /// The convolution: `M = U·V`, then the output rows.
    Forward {
        /// The transformed weight, `[16, O, C]`.
        u: Vec<T>,
        /// The output, `[B, O, H, W]`, written row pair by row pair.
        out: SendPtr<MaybeUninit<T>>,
    },
    /// The weight gradient: `M̂` from the output gradient, then `dU += M̂·Vᵀ`.
    WeightGrad {
        /// The output gradient, `[B, O, H, W]`.
        g: &'a [T],
    },
}

/// Every chunk of `call` on rayon's threads; for the weight gradient, each thread's `dU`
/// (`[16, O, C]`), for the convolution nothing.
fn run<T: Float>(call: &Call<'_, T>) -> Vec<Vec<T>> {
    let tiles = call.tiles;
    let vectors = Vectors::here();
    let (stride_v, stride_m) = tiles.strides();
    let du_len = match call.pass {
        Pass::Forward { .. } => 0,
        Pass::WeightGrad { .. } => 16 * tiles.c_out * tiles.c_in,
    };
    thread_ranges(tiles.tile_rows.div_ceil(tiles.rows_per_chunk))
        .into_par_iter()
        .map(|range| {
            let mut scratch = Scratch::new(tiles.width);
            let mut du = vec![T::default(); du_len];
            // V: [16, C, capacity] and M: [16, O, capacity], each chunk's tiles in their first
            // columns; each written before it is read.
            T::with_scratch(16 * (stride_v + stride_m), |buffer| {
                let (v, m) = buffer.split_at_mut(16 * stride_v);
                for chunk in range {
                    // SAFETY: `vectors` are this CPU's (`Vectors::here`); each chunk runs once,
                    // so its output rows are its own; the buffers are as `run_chunk` needs.
                    unsafe { vectors.run_chunk(call, chunk, &mut scratch, (v, m), &mut du) };
                }
            });
            du
        })
        .collect()
}

/// The widest vectors this CPU and build have, for the transforms (`gemm` chooses its own):
/// compiled for the baseline x86-64 (SSE2) they took three quarters of the products' time in a
/// 128×128 step (`perf`: 18% of the step against 24%).
#[derive(Clone, Copy)]
enum Vectors {
    /// AVX-512F, in builds with the `avx512` feature.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// What the build targets (SIMD128 in WebAssembly).
    Baseline,
}

impl Vectors {
    fn here() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                return Vectors::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Vectors::Avx2;
            }
        }
        Vectors::Baseline
    }

    /// [`run_chunk`] compiled for these vectors.
    ///
    /// # Safety
    /// The CPU has them, and as [`run_chunk`].
    unsafe fn run_chunk<T: Float>(
        self,
        call: &Call<'_, T>,
        chunk: usize,
        scratch: &mut Scratch<T>,
        buffers: (&mut [T], &mut [T]),
        du: &mut [T],
    ) {
        // SAFETY: the caller's guarantee.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Vectors::Avx512 => x86::run_chunk_avx512(call, chunk, scratch, buffers, du),
                #[cfg(target_arch = "x86_64")]
                Vectors::Avx2 => x86::run_chunk_avx2(call, chunk, scratch, buffers, du),
                Vectors::Baseline => run_chunk(call, chunk, scratch, buffers, du),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Call, Float, Scratch, run_chunk};

    /// [`run_chunk`] with AVX-512 vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F, and as [`run_chunk`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_chunk_avx512<T: Float>(
        call: &Call<'_, T>,
        chunk: usize,
        scratch: &mut Scratch<T>,
        buffers: (&mut [T], &mut [T]),
        du: &mut [T],
    ) {
        // SAFETY: the caller's guarantee.
        unsafe { run_chunk(call, chunk, scratch, buffers, du) }
    }

    /// [`run_chunk`] with AVX2 vectors.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA, and as [`run_chunk`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_chunk_avx2<T: Float>(
        call: &Call<'_, T>,
        chunk: usize,
        scratch: &mut Scratch<T>,
        buffers: (&mut [T], &mut [T]),
        du: &mut [T],
    ) {
        // SAFETY: the caller's guarantee.
        unsafe { run_chunk(call, chunk, scratch, buffers, du) }
    }
}

/// One chunk of tile rows: its input transforms into `v`, then for the convolution the 16
/// products into `m` and its output transforms into the output, for the weight gradient its
/// output-gradient transforms into `m` and `du[ξ] += M̂[ξ] · V[ξ]ᵀ`. Inlined into a function per
/// vector width.
///
/// # Safety
/// No other thread writes this chunk's output rows at the same time (each chunk is run once);
/// `v` and `m` hold `16 ·` [`Tiles::strides`] values, `du` `16 · C_out · C_in` for the weight
/// gradient.
#[inline(always)]
unsafe fn run_chunk<T: Float>(
    call: &Call<'_, T>,
    chunk: usize,
    scratch: &mut Scratch<T>,
    (v, m): (&mut [T], &mut [T]),
    du: &mut [T],
) {
    let Call { tiles, x, ref pass } = *call;
    let Tiles {
        c_in,
        c_out,
        height,
        width,
        capacity,
        ..
    } = tiles;
    let (tiles_y, tiles_x, image) = (height / 2, width / 2, height * width);
    let (stride_v, stride_m) = tiles.strides();
    let rows = tiles.rows(chunk);
    let len = rows.len() * tiles_x;
    // Channel by channel, the chunk's tile rows of each plane in order: its rows are read as
    // one run (each row but the first and last two shared by two tile rows).
    for c in 0..c_in {
        for (k, tile_row) in rows.clone().enumerate() {
            let (b, ty) = (tile_row / tiles_y, tile_row % tiles_y);
            let plane = &x[(b * c_in + c) * image..][..image];
            let at = c * capacity + k * tiles_x;
            transform_input_row(plane, (height, width), ty, scratch, &mut v[at..], stride_v);
        }
    }
    match pass {
        Pass::Forward { u, out } => {
            // M[ξ] = U[ξ] · V[ξ]: [O, C] × [C, len].
            for xi in 0..16 {
                product(
                    (c_out, len, c_in),
                    &u[xi * c_out * c_in..][..c_out * c_in],
                    &v[xi * stride_v..][..stride_v],
                    &mut m[xi * stride_m..][..stride_m],
                    capacity,
                );
            }
            // Y = Aᵀ·M·A: two output rows per tile row and output channel.
            for (k, tile_row) in rows.enumerate() {
                let (b, ty) = (tile_row / tiles_y, tile_row % tiles_y);
                for o in 0..c_out {
                    let base = (b * c_out + o) * image + 2 * ty * width;
                    // SAFETY: rows 2·ty and 2·ty + 1 of plane (b, o) of the output, inside its
                    // capacity and written by this chunk only (the caller's guarantee).
                    let (top, bottom) = unsafe {
                        (
                            core::slice::from_raw_parts_mut(out.0.add(base), width),
                            core::slice::from_raw_parts_mut(out.0.add(base + width), width),
                        )
                    };
                    transform_output_row(&m[o * capacity + k * tiles_x..], stride_m, top, bottom);
                }
            }
        }
        Pass::WeightGrad { g } => {
            for o in 0..c_out {
                for (k, tile_row) in rows.clone().enumerate() {
                    let (b, ty) = (tile_row / tiles_y, tile_row % tiles_y);
                    let pair = &g[(b * c_out + o) * image + 2 * ty * width..][..2 * width];
                    let (top, bottom) = pair.split_at(width);
                    let at = o * capacity + k * tiles_x;
                    transform_gradient_row(top, bottom, scratch, &mut m[at..], stride_m);
                }
            }
            // dU[ξ] += M̂[ξ] · V[ξ]ᵀ: [O, len] × [len, C].
            let plane = c_out * c_in;
            for xi in 0..16 {
                let (mg, vx) = (&m[xi * stride_m..], &v[xi * stride_v..]);
                let dst = &mut du[xi * plane..][..plane];
                assert!(
                    mg.len() >= (c_out - 1) * capacity + len
                        && vx.len() >= (c_in - 1) * capacity + len
                );
                // SAFETY: `M̂[ξ]` is `c_out` rows of `len` values `capacity` apart inside `mg`,
                // `V[ξ]` `c_in` such rows inside `vx` (read transposed), `dst` `[O, C]`; checked
                // above, and `dst` aliases neither.
                unsafe {
                    super::conv3x3_kernels::matmul(
                        (c_out, c_in, len),
                        dst.as_mut_ptr(),
                        (c_in, 1),
                        true,
                        mg.as_ptr(),
                        (capacity, 1),
                        vx.as_ptr(),
                        (1, capacity),
                        T::ONE,
                    );
                }
            }
        }
    }
}

/// `m[o, t] = Σ_c u[o, c] · v[c, t]` (see [`multiply`]): natively by `gemm`, whose packed
/// kernels run these products at several times the speed of [`multiply`]; in WebAssembly by
/// [`multiply`], where `gemm`'s generic kernels were the slower.
fn product<T: Float>(
    (rows, cols, depth): (usize, usize, usize),
    u: &[T],
    v: &[T],
    m: &mut [T],
    stride: usize,
) {
    if cfg!(target_arch = "wasm32") {
        multiply((rows, cols, depth), u, v, m, stride);
        return;
    }
    assert!(u.len() >= rows * depth && cols <= stride);
    assert!(v.len() >= (depth.max(1) - 1) * stride + cols);
    assert!(m.len() >= (rows.max(1) - 1) * stride + cols);
    // SAFETY: the shapes and strides stay inside the three slices (checked above), and `m`
    // aliases neither input.
    unsafe {
        super::conv3x3_kernels::matmul(
            (rows, cols, depth),
            m.as_mut_ptr(),
            (stride, 1),
            false,
            u.as_ptr(),
            (depth, 1),
            v.as_ptr(),
            (stride, 1),
            T::ONE,
        );
    }
}

/// [`convolve`] with the shape's channel counts.
pub fn conv3x3<T: Float>(x: &[T], w: &[T], scale: T, s: Conv3x3Shape) -> Vec<T> {
    convolve(x, w, scale, s.c_in, s.c_out, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex_kernels::conv3x3_kernels::tests::naive;
    use crate::rng::SplitMix64;

    fn normals(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        rng.normals_f32(n).into_iter().map(f64::from).collect()
    }

    /// Even shapes: one tile per image, several chunks, chunks that end inside an image,
    /// non-square images, and images of a single 2×2 tile; in f64 and in f32, against the
    /// convolution's definition.
    #[test]
    fn matches_the_definition() {
        let shapes = [
            (1, 7, 4, 4, 4),
            (2, 3, 5, 8, 16),
            (3, 6, 2, 18, 10),
            (300, 2, 3, 2, 2),
            (1, 16, 8, 32, 32),
        ];
        let mut rng = SplitMix64::new(4);
        for (batch, c_in, c_out, height, width) in shapes {
            let s = Conv3x3Shape {
                batch,
                c_in,
                c_out,
                height,
                width,
            };
            let x = normals(batch * c_in * height * width, &mut rng);
            let w = normals(c_out * c_in * 9, &mut rng);
            let b: Vec<f64> = naive(&x, &w, s).into_iter().map(|y| y * 0.7).collect();
            let a = conv3x3(&x, &w, 0.7, s);
            let diff = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-12, "{s:?}: {diff}");
            // And in f32, within its rounding.
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            let a32 = conv3x3(&x32, &w32, 0.7, s);
            let diff = a32
                .iter()
                .zip(&b)
                .map(|(p, q)| (f64::from(*p) - q).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-4, "{s:?} f32: {diff}");
        }
    }

    /// The weight gradient on the same shapes, against its definition: `dw[o, c, k] = scale ·
    /// Σ g[b, o, p] · x[b, c, p shifted by k]`.
    #[test]
    fn weight_gradient_matches_the_definition() {
        let shapes = [
            (1, 7, 4, 4, 4),
            (2, 3, 5, 8, 16),
            (3, 6, 2, 18, 10),
            (300, 2, 3, 2, 2),
            (1, 16, 8, 32, 32),
        ];
        let mut rng = SplitMix64::new(6);
        for (batch, c_in, c_out, height, width) in shapes {
            let s = Conv3x3Shape {
                batch,
                c_in,
                c_out,
                height,
                width,
            };
            let x = normals(batch * c_in * height * width, &mut rng);
            let g = normals(batch * c_out * height * width, &mut rng);
            let (h, wd) = (height as isize, width as isize);
            let mut want = vec![0.0; c_out * c_in * 9];
            for b in 0..batch {
                for o in 0..c_out {
                    for c in 0..c_in {
                        for k in 0..9isize {
                            let (dy, dx) = (k / 3 - 1, k % 3 - 1);
                            for y in 0..h {
                                for x0 in 0..wd {
                                    let (iy, ix) = (y + dy, x0 + dx);
                                    if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                        continue;
                                    }
                                    let gi = ((b * c_out + o) as isize * h + y) * wd + x0;
                                    let xi = ((b * c_in + c) as isize * h + iy) * wd + ix;
                                    want[(o * c_in + c) * 9 + k as usize] +=
                                        0.7 * g[gi as usize] * x[xi as usize];
                                }
                            }
                        }
                    }
                }
            }
            let got = weight_grad(&x, &g, 0.7, &s);
            let diff = got
                .iter()
                .zip(&want)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-10, "{s:?}: {diff}");
            let narrow = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let got32 = weight_grad(&narrow(&x), &narrow(&g), 0.7, &s);
            let diff = got32
                .iter()
                .zip(&want)
                .map(|(p, q)| (f64::from(*p) - q).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-3, "{s:?} f32: {diff}");
        }
    }

    #[test]
    fn odd_sizes_do_not_fit() {
        let s = |height, width| Conv3x3Shape {
            batch: 1,
            c_in: 1,
            c_out: 1,
            height,
            width,
        };
        assert!(fits(&s(4, 4)) && fits(&s(2, 6)));
        assert!(!fits(&s(5, 4)) && !fits(&s(4, 1)) && !fits(&s(1, 1)));
    }
}
