//! 3×3 "same" convolutions (stride 1, padding 1) on plain slices, as matrix products.
//!
//! Output positions (`B·H·W`) are taken in tiles of [`TILE`]. A tile's im2col block
//! `[C·9, TILE]` — row `c·9 + k` holds input channel `c` shifted by tap `k` — is copied straight
//! from the `[B, C, H, W]` input (whole rows of an image in one copy, a partial row on its own),
//! with zeros where a tap reads past the border; it stays in cache, and one matrix product `[O, C·9] × [C·9, TILE]` (the weight
//! as stored, no repacking) computes the tile. When the tiles fall within single images
//! (`H·W` a multiple of [`TILE`]: 16×16 and up) the product writes `[B, O, H, W]` directly;
//! smaller images go through a `[O, B·H·W]` buffer. The input gradient is the same convolution of
//! the output gradient with the weight flipped and transposed; the weight gradient is
//! `Σ_tiles G_tile · im2colᵀ`, accumulated per thread.
//!
//! Matrix products use the `gemm` crate (the one Burn's CPU backend uses); tiles run in parallel
//! on rayon's pool.

use rayon::prelude::*;

use super::{
    Float, conv3x3_batch_lanes, conv3x3_direct, conv3x3_direct_weight_grad, conv3x3_winograd,
};

/// Output positions per tile: of 96, 128, 256 and 512, 128 was fastest on the shapes that
/// `trainer/examples/conv_speed.rs` times (a 32×32 model's layers, batch 16), and its im2col
/// block (`C·9·128` floats, 1.2 MB at 256 channels) stays near a core's L2 cache.
const TILE: usize = 128;

/// Sizes of one convolution: batch, input and output channels, height and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3x3Shape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

/// One image-row run of a tile: positions `x0..x0 + len` of row `y` of image `b`, at column
/// `dst` of the tile.
#[derive(Clone, Copy)]
struct Run {
    b: usize,
    y: usize,
    x0: usize,
    len: usize,
    dst: usize,
}

/// The tiling of `B·H·W` output positions.
#[derive(Clone, Copy)]
struct Tiling {
    height: usize,
    width: usize,
    /// `H·W`.
    image: usize,
    /// `B·H·W`.
    positions: usize,
}

impl Tiling {
    fn new(s: &Conv3x3Shape) -> Self {
        let image = s.height * s.width;
        Self {
            height: s.height,
            width: s.width,
            image,
            positions: s.batch * image,
        }
    }

    fn tiles(&self) -> usize {
        self.positions.div_ceil(TILE)
    }

    /// Whether every tile lies inside one image.
    fn tiles_within_images(&self) -> bool {
        self.image.is_multiple_of(TILE)
    }

    /// First position and length of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize) {
        let start = t * TILE;
        (start, TILE.min(self.positions - start))
    }

    /// The row runs of positions `start..start + len`; consecutive whole rows of one image make
    /// one run (`x0` 0, `len` a multiple of the width).
    fn runs(&self, start: usize, len: usize, runs: &mut Vec<Run>) {
        runs.clear();
        let mut p = start;
        while p < start + len {
            let (b, i) = (p / self.image, p % self.image);
            let (y, x0) = (i / self.width, i % self.width);
            let run = (self.width - x0).min(start + len - p);
            let whole_row = x0 == 0 && run == self.width;
            match runs.last_mut() {
                Some(last)
                    if whole_row
                        && last.b == b
                        && last.x0 == 0
                        && last.len.is_multiple_of(self.width) =>
                {
                    last.len += run
                }
                _ => runs.push(Run {
                    b,
                    y,
                    x0,
                    len: run,
                    dst: p - start,
                }),
            }
            p += run;
        }
    }

    /// The im2col block of a tile from `[B, C, H, W]` input, zero where a tap reads past the border.
    fn im2col<T: Float>(&self, x: &[T], channels: usize, runs: &[Run], len: usize, col: &mut [T]) {
        let (h, w) = (self.height as isize, self.width as isize);
        for c in 0..channels {
            for k in 0..9 {
                let (dy, dx) = ((k / 3) as isize - 1, (k % 3) as isize - 1);
                let row = &mut col[(c * 9 + k) * TILE..][..len];
                for r in runs {
                    let dst = &mut row[r.dst..r.dst + r.len];
                    let plane = &x[(r.b * channels + c) * self.image..][..self.image];
                    if r.x0 == 0 && r.len.is_multiple_of(self.width) {
                        self.shift_rows(plane, r.y, r.len / self.width, (dy, dx), dst);
                        continue;
                    }
                    let sy = r.y as isize + dy;
                    if sy < 0 || sy >= h {
                        dst.fill(T::default());
                        continue;
                    }
                    let sx0 = r.x0 as isize + dx;
                    let lo = (-sx0).max(0) as usize; // leading columns left of the image
                    let hi = (w - sx0).min(r.len as isize).max(lo as isize) as usize; // end of the in-image part
                    let base = sy as usize * self.width;
                    let src = (sx0 + lo as isize) as usize;
                    dst[..lo].fill(T::default());
                    dst[lo..hi].copy_from_slice(&plane[base + src..base + src + (hi - lo)]);
                    dst[hi..].fill(T::default());
                }
            }
        }
    }

    /// Rows `y0..y0 + rows` of one channel plane shifted by tap `(dy, dx)`, zero past the
    /// border, into `dst` (`rows · W` long): one contiguous copy of the rows that stay inside
    /// the image (a shift by `dx` moves a row's end into the next row's start, overwritten
    /// below), zero rows above or below it, then the one border column that `dx` exposes.
    fn shift_rows<T: Float>(
        &self,
        plane: &[T],
        y0: usize,
        rows: usize,
        (dy, dx): (isize, isize),
        dst: &mut [T],
    ) {
        let (h, w) = (self.height as isize, self.width);
        let first = (y0 as isize).max(-dy); // first row whose source row is inside
        let end = (y0 as isize + rows as isize).min(h - dy); // end of those rows
        if first >= end {
            dst.fill(T::default());
            return;
        }
        let (a, e) = (
            (first - y0 as isize) as usize * w,
            (end - y0 as isize) as usize * w,
        );
        dst[..a].fill(T::default());
        dst[e..].fill(T::default());
        // The source of dst[a..e]: plane positions from (first + dy)·W + dx, which may start one
        // before the plane or end one past it; those elements lie in the border column.
        let src = (first + dy) * w as isize + dx;
        let lead = (-src).max(0) as usize;
        let trail = (src + (e - a) as isize - self.image as isize).max(0) as usize;
        let from = (src + lead as isize) as usize;
        dst[a + lead..e - trail].copy_from_slice(&plane[from..from + (e - a - lead - trail)]);
        let column = match dx {
            -1 => 0,
            1 => w - 1,
            _ => return,
        };
        for i in (a + column..e).step_by(w) {
            dst[i] = T::default();
        }
    }
}

/// `[B, C, H·W]` ↔ `[C, B, H·W]`: swaps the first two axes of a batch of channel planes.
fn swap_batch_and_channels<T: Float>(x: &[T], first: usize, second: usize, plane: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(x.len());
    let dst = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<T>());
    (0..first * second).into_par_iter().for_each(|ji| {
        // The whole `SendPtr` is captured (and sent to the thread), not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let dst = dst;
        let (j, i) = (ji / first, ji % first);
        let src = &x[(i * second + j) * plane..][..plane];
        // SAFETY: plane `ji` of `out`'s capacity, written by this iteration alone.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.0.add(ji * plane), plane) };
    });
    // SAFETY: the `first · second` planes cover all of it.
    unsafe { out.set_len(x.len()) };
    out
}

/// `dst[m, n] (+)= scale · lhs[m, k] · rhs[k, n]` with element strides (row, column) for each matrix.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul<T: Float>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_strides: (usize, usize),
    accumulate: bool,
    lhs: *const T,
    lhs_strides: (usize, usize),
    rhs: *const T,
    rhs_strides: (usize, usize),
    scale: T,
) {
    // SAFETY: the caller guarantees every index reached by the shapes and strides is in bounds
    // and that `dst` does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            accumulate,
            lhs,
            lhs_strides.1 as isize,
            lhs_strides.0 as isize,
            rhs,
            rhs_strides.1 as isize,
            rhs_strides.0 as isize,
            T::ONE,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A raw pointer that may cross to rayon's threads; each thread writes disjoint columns.
#[derive(Clone, Copy)]
pub(super) struct SendPtr<T>(pub(super) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Splits `0..tiles` into one contiguous range per rayon thread (tiles are equal work).
pub(super) fn thread_ranges(tiles: usize) -> Vec<core::ops::Range<usize>> {
    let threads = rayon::current_num_threads().max(1);
    let per_thread = tiles.div_ceil(threads).max(1);
    (0..tiles.div_ceil(per_thread))
        .map(|i| i * per_thread..((i + 1) * per_thread).min(tiles))
        .collect()
}

/// `y = w[O, C·9] · im2col(x)`: `[B, C, H, W]` → `[B, O, H, W]`, tile by tile.
fn convolve<T: Float>(
    x: &[T],
    weight: &[T],
    scale: T,
    c_in: usize,
    c_out: usize,
    s: &Conv3x3Shape,
) -> Vec<T> {
    let tiling = Tiling::new(s);
    let direct = tiling.tiles_within_images();
    let len_out = c_out * tiling.positions;
    let mut out: Vec<T> = Vec::with_capacity(len_out);
    let dst = SendPtr(out.spare_capacity_mut().as_mut_ptr().cast::<T>());
    thread_ranges(tiling.tiles())
        .into_par_iter()
        .for_each(|tiles| {
            T::with_scratch(c_in * 9 * TILE, |col| {
                let mut runs = Vec::new();
                for t in tiles {
                    let (start, len) = tiling.tile(t);
                    tiling.runs(start, len, &mut runs);
                    tiling.im2col(x, c_in, &runs, len, col);
                    // Direct: tile t is columns i0.. of image b in [B, O, H·W]; else columns start.. of
                    // [O, B·H·W]. Either way each tile writes its own columns only.
                    let (offset, row_stride) = if direct {
                        let (b, i0) = (start / tiling.image, start % tiling.image);
                        (b * c_out * tiling.image + i0, tiling.image)
                    } else {
                        (start, tiling.positions)
                    };
                    // The whole `SendPtr` is captured (and sent to the thread), not its raw-pointer field.
                    #[allow(clippy::redundant_locals)]
                    let dst = dst;
                    // SAFETY: the weight is [c_out, c_in·9] row-major, the column block [c_in·9, TILE];
                    // the destination block is c_out rows of `len` inside `out`'s capacity. gemm does not
                    // read the destination when not accumulating.
                    unsafe {
                        matmul(
                            (c_out, len, c_in * 9),
                            dst.0.add(offset),
                            (row_stride, 1),
                            false,
                            weight.as_ptr(),
                            (c_in * 9, 1),
                            col.as_ptr(),
                            (TILE, 1),
                            scale,
                        );
                    }
                }
            })
        });
    // SAFETY: the tiles cover every position of every output row, so all `len_out` elements
    // were written above.
    unsafe { out.set_len(len_out) };
    if direct {
        out
    } else {
        swap_batch_and_channels(&out, c_out, s.batch, tiling.image)
    }
}

fn check_lengths<T>(input: &[T], input_channels: usize, weight: &[T], s: &Conv3x3Shape) {
    assert_eq!(
        input.len(),
        s.batch * input_channels * s.height * s.width,
        "conv3x3: input length"
    );
    assert_eq!(weight.len(), s.c_out * s.c_in * 9, "conv3x3: weight length");
}

/// Which kernels compute a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The fastest kernel that takes the shape, what the model uses: the batch-lane kernel
    /// ([`conv3x3_batch_lanes`], AVX-512 only) for 4×4 and 8×8 images, else Winograd's form
    /// ([`conv3x3_winograd`]) where it pays (8 wide and up natively), else the position-lane
    /// direct kernel ([`conv3x3_direct`], AVX-512 only), else im2col; for the forward
    /// convolution and its transpose. Weight gradients: Winograd's on images 32 and 64 wide
    /// ([`conv3x3_winograd::weight_grad_pays`]), else the direct kernels
    /// ([`conv3x3_direct_weight_grad`]) where they run, else im2col.
    Fastest,
    /// The position-lane direct kernels where they run, im2col elsewhere: [`Method::Fastest`]
    /// without Winograd's form and the batch-lane kernel (to compare).
    PositionLanes,
    /// Winograd's form wherever it fits (any even size), else as [`Method::PositionLanes`] (to
    /// compare).
    Winograd,
    /// im2col tiles and `gemm` only, as without AVX-512 (to compare).
    Im2col,
}

/// [`convolve`], through a direct kernel where `method` allows it and one runs.
fn convolve_by<T: Float>(
    method: Method,
    x: &[T],
    weight: &[T],
    scale: T,
    (c_in, c_out): (usize, usize),
    s: &Conv3x3Shape,
) -> Vec<T> {
    // The batch-lane kernel first where it runs (4×4 and 8×8 with AVX-512), then Winograd's
    // form, then the position-lane kernel, then im2col.
    let batch_lanes = on_f32(
        method == Method::Fastest,
        x,
        weight,
        scale,
        |x, w, scale| conv3x3_batch_lanes::conv3x3(x, w, scale, c_in, c_out, s),
    );
    if let Some(y) = batch_lanes {
        return y;
    }
    let winograd = match method {
        Method::Fastest => conv3x3_winograd::pays(s),
        Method::Winograd => conv3x3_winograd::fits(s),
        Method::PositionLanes | Method::Im2col => false,
    };
    if winograd {
        return conv3x3_winograd::convolve(x, weight, scale, c_in, c_out, s);
    }
    let direct = on_f32(method != Method::Im2col, x, weight, scale, |x, w, scale| {
        conv3x3_direct::conv3x3(x, w, scale, c_in, c_out, s)
    });
    direct.unwrap_or_else(|| convolve(x, weight, scale, c_in, c_out, s))
}

/// `kernel(a, b, scale)` where `allowed` and `T` is `f32` (the direct kernels' type), its result
/// as `T`; `None` otherwise or where the kernel does not run.
fn on_f32<T: Float>(
    allowed: bool,
    a: &[T],
    b: &[T],
    scale: T,
    kernel: impl FnOnce(&[f32], &[f32], f32) -> Option<Vec<f32>>,
) -> Option<Vec<T>> {
    allowed
        .then(|| T::as_f32(a).zip(T::as_f32(b)))
        .flatten()
        .and_then(|(a, b)| kernel(a, b, scale.to_f32()))
        .and_then(T::from_f32)
}

/// `y = conv(x, w·scale)`: `x` `[B, C_in, H, W]`, `w` `[C_out, C_in, 3, 3]` → `[B, C_out, H, W]`.
pub fn conv3x3<T: Float>(x: &[T], w: &[T], scale: T, s: Conv3x3Shape) -> Vec<T> {
    conv3x3_by(Method::Fastest, x, w, scale, s)
}

/// [`conv3x3`] by the given kernels.
pub fn conv3x3_by<T: Float>(method: Method, x: &[T], w: &[T], scale: T, s: Conv3x3Shape) -> Vec<T> {
    check_lengths(x, s.c_in, w, &s);
    convolve_by(method, x, w, scale, (s.c_in, s.c_out), &s)
}

/// The input gradient of [`conv3x3`] (a transposed convolution with the scaled weight): `g` `[B, C_out, H, W]`,
/// `w` `[C_out, C_in, 3, 3]` → `[B, C_in, H, W]`.
pub fn conv3x3_transpose<T: Float>(g_out: &[T], w: &[T], scale: T, s: Conv3x3Shape) -> Vec<T> {
    conv3x3_transpose_by(Method::Fastest, g_out, w, scale, s)
}

/// [`conv3x3_transpose`] by the given kernels.
pub fn conv3x3_transpose_by<T: Float>(
    method: Method,
    g_out: &[T],
    w: &[T],
    scale: T,
    s: Conv3x3Shape,
) -> Vec<T> {
    check_lengths(g_out, s.c_out, w, &s);
    let direct = on_f32(method == Method::Fastest, g_out, w, scale, |g, w, scale| {
        conv3x3_batch_lanes::conv3x3_transpose(g, w, scale, &s)
    });
    if let Some(dx) = direct {
        return dx;
    }
    // Flip the taps and swap the channel axes: [C_in, C_out, 3, 3].
    let mut flipped = vec![T::default(); w.len()];
    flipped
        .par_chunks_mut(s.c_out * 9)
        .enumerate()
        .for_each(|(c, dst)| {
            for (o, taps) in dst.chunks_exact_mut(9).enumerate() {
                let src = &w[(o * s.c_in + c) * 9..][..9];
                for (k, t) in taps.iter_mut().enumerate() {
                    *t = src[8 - k];
                }
            }
        });
    convolve_by(method, g_out, &flipped, scale, (s.c_out, s.c_in), &s)
}

/// The gradient of [`conv3x3`] with respect to `w` (`scale` times that with respect to the scaled
/// weight): `x` `[B, C_in, H, W]`, `g` `[B, C_out, H, W]` → `[C_out, C_in, 3, 3]`.
pub fn conv3x3_weight_grad<T: Float>(x: &[T], g_out: &[T], scale: T, s: Conv3x3Shape) -> Vec<T> {
    conv3x3_weight_grad_by(Method::Fastest, x, g_out, scale, s)
}

/// [`conv3x3_weight_grad`] by the given kernels.
pub fn conv3x3_weight_grad_by<T: Float>(
    method: Method,
    x: &[T],
    g_out: &[T],
    scale: T,
    s: Conv3x3Shape,
) -> Vec<T> {
    assert_eq!(
        x.len(),
        s.batch * s.c_in * s.height * s.width,
        "conv3x3: input length"
    );
    assert_eq!(
        g_out.len(),
        s.batch * s.c_out * s.height * s.width,
        "conv3x3: gradient length"
    );
    let winograd = match method {
        Method::Fastest => conv3x3_winograd::weight_grad_pays(&s),
        Method::Winograd => conv3x3_winograd::fits(&s),
        Method::PositionLanes | Method::Im2col => false,
    };
    if winograd {
        return conv3x3_winograd::weight_grad(x, g_out, scale, &s);
    }
    let direct = on_f32(method != Method::Im2col, x, g_out, scale, |x, g, scale| {
        conv3x3_direct_weight_grad::conv3x3_weight_grad(x, g, scale, &s)
    });
    if let Some(dw) = direct {
        return dw;
    }
    let tiling = Tiling::new(&s);
    let direct = tiling.tiles_within_images();
    // [C_out, B·H·W] when tiles cross images; the gradient itself otherwise.
    let g_rows = if direct {
        Vec::new()
    } else {
        swap_batch_and_channels(g_out, s.batch, s.c_out, tiling.image)
    };
    let k = s.c_in * 9;
    let partials: Vec<Vec<T>> = thread_ranges(tiling.tiles())
        .into_par_iter()
        .map(|tiles| {
            T::with_scratch(k * TILE, |col| {
                // Written whole by the first tile's product (which does not read it), summed into after.
                let mut dw: Vec<T> = Vec::with_capacity(s.c_out * k);
                let mut runs = Vec::new();
                let mut first = true;
                for t in tiles {
                    let (start, len) = tiling.tile(t);
                    tiling.runs(start, len, &mut runs);
                    tiling.im2col(x, s.c_in, &runs, len, col);
                    let (g, row_stride) = if direct {
                        let (b, i0) = (start / tiling.image, start % tiling.image);
                        (&g_out[b * s.c_out * tiling.image + i0..], tiling.image)
                    } else {
                        (&g_rows[start..], tiling.positions)
                    };
                    // SAFETY: dw is [c_out, k] row-major within its capacity; the gradient tile is
                    // c_out rows of `len` with the given row stride inside `g`; the im2col block is
                    // read transposed.
                    unsafe {
                        matmul(
                            (s.c_out, k, len),
                            dw.spare_capacity_mut().as_mut_ptr().cast::<T>(),
                            (k, 1),
                            !first,
                            g.as_ptr(),
                            (row_stride, 1),
                            col.as_ptr(),
                            (1, TILE),
                            scale,
                        );
                    }
                    first = false;
                }
                if first {
                    dw.resize(s.c_out * k, T::default());
                } else {
                    // SAFETY: the first product wrote all c_out·k elements.
                    unsafe { dw.set_len(s.c_out * k) };
                }
                dw
            })
        })
        .collect();
    let mut total = partials.into_iter();
    let mut dw = total
        .next()
        .unwrap_or_else(|| vec![T::default(); s.c_out * k]);
    for part in total {
        dw.par_chunks_mut(k)
            .zip(part.par_chunks(k))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += *b));
    }
    dw
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The convolution by its definition.
    pub(in crate::flex_kernels) fn naive(x: &[f64], w: &[f64], s: Conv3x3Shape) -> Vec<f64> {
        let (h, wd) = (s.height as isize, s.width as isize);
        let mut y = vec![0.0; s.batch * s.c_out * s.height * s.width];
        for b in 0..s.batch {
            for o in 0..s.c_out {
                for oy in 0..h {
                    for ox in 0..wd {
                        let mut sum = 0.0;
                        for c in 0..s.c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                                    if iy < 0 || ix < 0 || iy >= h || ix >= wd {
                                        continue;
                                    }
                                    let xi = ((b * s.c_in + c) as isize * h + iy) * wd + ix;
                                    sum += x[xi as usize]
                                        * w[((o * s.c_in + c) * 3 + ky as usize) * 3 + kx as usize];
                                }
                            }
                        }
                        y[((b * s.c_out + o) as isize * h * wd + oy * wd + ox) as usize] = sum;
                    }
                }
            }
        }
        y
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn normals(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
        rng.normals_f32(n).into_iter().map(f64::from).collect()
    }

    /// Shapes with more positions than one tile, non-square images, 1×1 images, and images of
    /// exactly one and two tiles (written directly), tiles that end inside a row of tiny images,
    /// and one-pixel-wide images.
    const SHAPES: [Conv3x3Shape; 8] = [
        Conv3x3Shape {
            batch: 2,
            c_in: 3,
            c_out: 2,
            height: 8,
            width: 16,
        },
        Conv3x3Shape {
            batch: 3,
            c_in: 2,
            c_out: 3,
            height: 16,
            width: 16,
        },
        Conv3x3Shape {
            batch: 2,
            c_in: 5,
            c_out: 3,
            height: 6,
            width: 7,
        },
        Conv3x3Shape {
            batch: 3,
            c_in: 4,
            c_out: 6,
            height: 13,
            width: 9,
        },
        Conv3x3Shape {
            batch: 4,
            c_in: 2,
            c_out: 2,
            height: 1,
            width: 1,
        },
        Conv3x3Shape {
            batch: 1,
            c_in: 7,
            c_out: 4,
            height: 4,
            width: 4,
        },
        Conv3x3Shape {
            batch: 30,
            c_in: 2,
            c_out: 3,
            height: 2,
            width: 3,
        },
        Conv3x3Shape {
            batch: 3,
            c_in: 3,
            c_out: 2,
            height: 5,
            width: 1,
        },
    ];

    #[test]
    fn forward_matches_the_definition() {
        let mut rng = SplitMix64::new(1);
        for s in SHAPES {
            let x = normals(s.batch * s.c_in * s.height * s.width, &mut rng);
            let w = normals(s.c_out * s.c_in * 9, &mut rng);
            assert!(
                max_diff(&conv3x3(&x, &w, 1.0, s), &naive(&x, &w, s)) < 1e-12,
                "{s:?}"
            );
        }
    }

    /// The transpose and the weight gradient are the adjoints of the forward:
    /// ⟨g, conv(x, w)⟩ = ⟨conv_t(g, w), x⟩ = ⟨w_grad(x, g), w⟩.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        let mut rng = SplitMix64::new(2);
        for s in SHAPES {
            let x = normals(s.batch * s.c_in * s.height * s.width, &mut rng);
            let w = normals(s.c_out * s.c_in * 9, &mut rng);
            let g = normals(s.batch * s.c_out * s.height * s.width, &mut rng);
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let reference = dot(&g, &naive(&x, &w, s));
            let via_input = dot(&conv3x3_transpose(&g, &w, 1.0, s), &x);
            let via_weight = dot(&conv3x3_weight_grad(&x, &g, 1.0, s), &w);
            assert!(
                (reference - via_input).abs() < 1e-9 * (1.0 + reference.abs()),
                "{s:?}"
            );
            assert!(
                (reference - via_weight).abs() < 1e-9 * (1.0 + reference.abs()),
                "{s:?}"
            );
            // Element by element too: one-hot probes of the input and the weight.
            let dx = conv3x3_transpose(&g, &w, 1.0, s);
            let dw = conv3x3_weight_grad(&x, &g, 1.0, s);
            for i in [0, x.len() / 2, x.len() - 1] {
                let mut e = vec![0.0; x.len()];
                e[i] = 1.0;
                assert!(
                    (dot(&g, &naive(&e, &w, s)) - dx[i]).abs() < 1e-10,
                    "{s:?} dx[{i}]"
                );
            }
            for i in [0, w.len() / 3, w.len() - 1] {
                let mut e = vec![0.0; w.len()];
                e[i] = 1.0;
                assert!(
                    (dot(&g, &naive(&x, &e, s)) - dw[i]).abs() < 1e-10,
                    "{s:?} dw[{i}]"
                );
            }
        }
    }

    /// The im2col blocks live in each thread's reused scratch buffer: whatever an earlier
    /// kernel left there (NaN here, on every thread of rayon's pool) must not reach a result.
    #[test]
    fn a_reused_scratch_buffer_leaves_no_trace() {
        let mut rng = SplitMix64::new(4);
        for s in SHAPES {
            let poison = || {
                rayon::broadcast(|_| f64::with_scratch(1 << 16, |b| b.fill(f64::NAN)));
            };
            let x = normals(s.batch * s.c_in * s.height * s.width, &mut rng);
            let w = normals(s.c_out * s.c_in * 9, &mut rng);
            let g = normals(s.batch * s.c_out * s.height * s.width, &mut rng);
            poison();
            let y = conv3x3(&x, &w, 1.0, s);
            assert!(max_diff(&y, &naive(&x, &w, s)) < 1e-12, "{s:?}");
            poison();
            let dx = conv3x3_transpose(&g, &w, 1.0, s);
            poison();
            let dw = conv3x3_weight_grad(&x, &g, 1.0, s);
            assert!(dx.iter().chain(&dw).all(|v| v.is_finite()), "{s:?}");
            let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let reference = dot(&g, &y);
            assert!(
                (reference - dot(&dw, &w)).abs() < 1e-9 * (1.0 + reference.abs()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let s = SHAPES[1];
        let mut rng = SplitMix64::new(3);
        let x = normals(s.batch * s.c_in * s.height * s.width, &mut rng);
        let w = normals(s.c_out * s.c_in * 9, &mut rng);
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let y32: Vec<f64> = conv3x3(&x32, &w32, 1.0, s)
            .into_iter()
            .map(f64::from)
            .collect();
        assert!(max_diff(&y32, &naive(&x, &w, s)) < 1e-4);
    }
}
