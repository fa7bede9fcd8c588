//! Times the two forms of the 3×3 convolution kernel (`conv3x3_kernels`: im2col and a general
//! matrix product; `conv3x3_winograd`) on plain slices in WebAssembly, for each layer shape of
//! the 128×128 demo generator at batch 1 (what a page worker draws).
#![cfg(target_arch = "wasm32")]

use pggan_model::flex_kernels::conv3x3_kernels::{self, Conv3x3Shape, Method};
use pggan_model::flex_kernels::conv3x3_winograd;
use pggan_model::rng::SplitMix64;
use wasm_bindgen::prelude::*;

/// `[in, out, resolution]` of the generator's 3×3 convolutions from 8×8 up.
const SHAPES: [[usize; 3]; 9] = [
    [128, 128, 8],
    [128, 128, 8],
    [128, 128, 16],
    [128, 128, 16],
    [128, 128, 32],
    [128, 128, 32],
    [128, 64, 64],
    [64, 64, 64],
    [64, 32, 128],
];

/// Mean milliseconds of `f` over `reps` runs after one warm-up.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let start = js_sys::Date::now();
    for _ in 0..reps {
        f();
    }
    (js_sys::Date::now() - start) / reps as f64
}

/// One line per convolution (the nine of `SHAPES` and the last, 32→32 at 128×128) with the
/// largest difference between the two forms, then the totals.
#[wasm_bindgen]
pub fn run(reps: usize) -> String {
    let mut out = format!(
        "{:>22} {:>10} {:>10} {:>12}\n",
        "[in→out, res]", "im2col ms", "Winograd ms", "max |diff|"
    );
    let (mut total_im2col, mut total_winograd) = (0.0, 0.0);
    let mut rng = SplitMix64::new(1);
    for [c_in, c_out, r] in SHAPES.into_iter().chain([[32, 32, 128]]) {
        let s = Conv3x3Shape {
            batch: 1,
            c_in,
            c_out,
            height: r,
            width: r,
        };
        let x = rng.normals_f32(c_in * r * r);
        let w = rng.normals_f32(c_out * c_in * 9);
        let scale = (2.0 / (c_in * 9) as f32).sqrt();
        let a = conv3x3_kernels::conv3x3_by(Method::Im2col, &x, &w, scale, s);
        let b = conv3x3_winograd::conv3x3(&x, &w, scale, s);
        let diff = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        let im2col = time_ms(reps, || {
            drop(conv3x3_kernels::conv3x3_by(
                Method::Im2col,
                &x,
                &w,
                scale,
                s,
            ))
        });
        let winograd = time_ms(reps, || drop(conv3x3_winograd::conv3x3(&x, &w, scale, s)));
        total_im2col += im2col;
        total_winograd += winograd;
        out += &format!(
            "{:>22} {im2col:>10.1} {winograd:>10.1} {diff:>12.2e}\n",
            format!("[{c_in}→{c_out}, {r}×{r}]")
        );
    }
    out += &format!(
        "{:>22} {total_im2col:>10.1} {total_winograd:>10.1}   ({:.2}× faster)\n",
        "all ten",
        total_im2col / total_winograd
    );
    out
}
