//! The 3×3 convolutions of a 32×32 PGGAN training step on Burn's flex CPU backend: forward, and
//! forward + backward (input and weight gradients), in ms and GFLOP/s, through Burn's own
//! `conv2d` and through the model crate's `conv3x3` (the kernels the trainer uses); then each
//! of the model crate's kernels by itself, im2col beside direct.
//! `bench/conv.sh` runs it beside the same measurement in PyTorch (`bench/conv_twin.py`).
use std::time::Instant;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use pggan_model::flex_kernels::conv3x3::conv3x3;
use pggan_model::flex_kernels::conv3x3_direct;
use pggan_model::flex_kernels::conv3x3_kernels::{self as kernels, Conv3x3Shape, Method};
use pggan_model::flex_kernels::conv3x3_winograd;
use pggan_model::rng::SplitMix64;

/// `[batch, in, out, resolution]` of the measured convolutions.
const SHAPES: [[usize; 4]; 5] = [
    [16, 128, 64, 32],
    [16, 64, 64, 32],
    [16, 256, 128, 16],
    [16, 128, 128, 16],
    [16, 256, 256, 8],
];
const REPS: usize = 5;

/// The 64×64 and 128×128 levels of the faces issue's 128×128 network (`--fmap-base 2048
/// --fmap-max 128`), generator and critic.
const RUN_128: [[usize; 4]; 4] = [
    [16, 128, 64, 64],
    [16, 64, 64, 64],
    [16, 64, 32, 128],
    [16, 32, 32, 128],
];

/// Mean milliseconds of `f` over `REPS` runs after one warm-up.
fn time_ms(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..REPS {
        f();
    }
    start.elapsed().as_secs_f64() * 1000.0 / REPS as f64
}

fn main() {
    let device = Device::flex().autodiff();
    let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    println!(
        "{:>28}  {:>9} {:>7}  {:>9} {:>7}  {:>9} {:>7}  {:>9} {:>7}",
        "conv 3×3 [batch, in→out, res]",
        "flex fwd",
        "GFLOP/s",
        "fwd+bwd",
        "GFLOP/s",
        "pggan fwd",
        "GFLOP/s",
        "fwd+bwd",
        "GFLOP/s"
    );
    let burn_conv = |x: Tensor<4>, w: Tensor<4>| conv2d(x, w, None, options());
    let fast_conv = |x: Tensor<4>, w: Tensor<4>| conv3x3(x, w, 1.0).expect("flex, f32");
    let convs: [&dyn Fn(Tensor<4>, Tensor<4>) -> Tensor<4>; 2] = [&burn_conv, &fast_conv];
    for [b, c, o, r] in SHAPES {
        let x = Tensor::<4>::random([b, c, r, r], Distribution::Normal(0.0, 1.0), &device)
            .require_grad(); // [b, c, r, r]
        let w = Tensor::<4>::random([o, c, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad(); // [o, c, 3, 3]
        let g = Tensor::<4>::random([b, o, r, r], Distribution::Normal(0.0, 1.0), &device); // [b, o, r, r]
        let gflop = 2.0 * (b * o * c * 9 * r * r) as f64 / 1e9;
        let mut line = format!("{:>28}", format!("[{b}, {c}→{o}, {r}×{r}]"));
        for conv in convs {
            let fwd = time_ms(|| {
                let y = conv(x.clone().detach(), w.clone().detach());
                let _ = y.sum().into_scalar::<f32>();
            });
            let both = time_ms(|| {
                let y = conv(x.clone(), w.clone());
                let grads = (y * g.clone()).sum().backward();
                let _ = x
                    .grad(&grads)
                    .expect("input gradient")
                    .sum()
                    .into_scalar::<f32>();
                let _ = w
                    .grad(&grads)
                    .expect("weight gradient")
                    .sum()
                    .into_scalar::<f32>();
            });
            line += &format!(
                "  {fwd:>9.2} {:>7.0}  {both:>9.2} {:>7.0}",
                gflop / fwd * 1e3,
                3.0 * gflop / both * 1e3
            );
        }
        println!("{line}");
    }
    // The kernels on plain slices: im2col with a general matrix product, the direct AVX-512
    // kernels (where the CPU has AVX-512), and Winograd's F(2×2, 3×3) (forward only, the page's);
    // the training shapes and the page's generator (batch 1). Each pair is timed alternately,
    // three rounds, and the best round kept, so the machine's drift favours neither side.
    let direct = conv3x3_direct::available();
    println!(
        "{:>28}  {:>24}  {:>24}  {:>24}  {:>9}",
        "kernel [batch, in→out, res]",
        "forward im2col / direct",
        "input grad im2col / dir.",
        "weight grad im2col / dir.",
        "Winograd"
    );
    println!(
        "{:>28}  {:>24}  {:>24}  {:>24}  {:>9}",
        "GFLOP/s", "", "", "", ""
    );
    let page = [
        [1, 128, 128, 32],
        [1, 128, 64, 64],
        [1, 64, 32, 128],
        [1, 32, 32, 128],
    ];
    let best_of = |a: &dyn Fn(), b: &dyn Fn()| {
        let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            best_a = best_a.min(time_ms(a));
            best_b = best_b.min(time_ms(b));
        }
        (best_a, best_b)
    };
    for [b, c, o, r] in SHAPES.into_iter().chain(RUN_128).chain(page) {
        let s = Conv3x3Shape {
            batch: b,
            c_in: c,
            c_out: o,
            height: r,
            width: r,
        };
        let mut rng = SplitMix64::new(1);
        let x = rng.normals_f32(b * c * r * r);
        let w = rng.normals_f32(o * c * 9);
        let g = rng.normals_f32(b * o * r * r);
        let gflop = 2.0 * (b * o * c * 9 * r * r) as f64 / 1e9;
        let rate = |(im2col, direct): (f64, f64)| {
            format!(
                "{:>11.0} / {:>10.0}",
                gflop / im2col * 1e3,
                gflop / direct * 1e3
            )
        };
        let forward = best_of(
            &|| drop(kernels::conv3x3_by(Method::Im2col, &x, &w, 1.0, s)),
            &|| drop(kernels::conv3x3_by(Method::Fastest, &x, &w, 1.0, s)),
        );
        let input_grad = best_of(
            &|| {
                drop(kernels::conv3x3_transpose_by(
                    Method::Im2col,
                    &g,
                    &w,
                    1.0,
                    s,
                ))
            },
            &|| {
                drop(kernels::conv3x3_transpose_by(
                    Method::Fastest,
                    &g,
                    &w,
                    1.0,
                    s,
                ))
            },
        );
        let weight_grad = best_of(
            &|| {
                drop(kernels::conv3x3_weight_grad_by(
                    Method::Im2col,
                    &x,
                    &g,
                    1.0,
                    s,
                ))
            },
            &|| {
                drop(kernels::conv3x3_weight_grad_by(
                    Method::Fastest,
                    &x,
                    &g,
                    1.0,
                    s,
                ))
            },
        );
        let winograd = time_ms(|| drop(conv3x3_winograd::conv3x3(&x, &w, 1.0, s)));
        println!(
            "{:>28}  {}  {}  {}  {:>9.0}",
            format!("[{b}, {c}→{o}, {r}×{r}]"),
            rate(forward),
            rate(input_grad),
            rate(weight_grad),
            gflop / winograd * 1e3
        );
    }
    if !direct {
        println!("(no AVX-512 here, or a build without it: both columns of a pair are im2col)");
    }
    // The matrix product under it, for scale.
    let plain = Device::flex();
    for n in [1024usize, 2048] {
        let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &plain);
        let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), &plain);
        let ms = time_ms(|| {
            let _ = a
                .clone()
                .matmul(b.clone())
                .slice([0..1, 0..1])
                .into_scalar::<f32>();
        });
        println!(
            "{:>28}  {ms:>9.2} {:>7.0}",
            format!("matmul {n}³"),
            2.0 * (n * n * n) as f64 / ms / 1e6
        );
    }
}
