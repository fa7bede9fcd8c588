//! The 3×3 convolutions of a 32×32 PGGAN training step on Burn's flex CPU backend: forward, and
//! forward + backward (input and weight gradients), in ms and GFLOP/s, through Burn's own
//! `conv2d` and through the model crate's `conv3x3` (the kernels the trainer uses); then each
//! of the model crate's kernels by itself, im2col beside the direct ones (GFLOP/s always counts
//! all nine taps, so a kernel that skips the taps outside the image can show more than the CPU's
//! peak).
//! `bench/conv.sh` runs it beside the same measurement in PyTorch (`bench/conv_twin.py`).
use std::time::Instant;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use pggan_model::flex_kernels::conv3x3::conv3x3;
use pggan_model::flex_kernels::conv3x3_direct;
use pggan_model::flex_kernels::conv3x3_kernels::{self as kernels, Conv3x3Shape, Method};
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

/// The trainer's allocator, set as in `pggan` (`trainer/src/main.rs`): the system allocator hands
/// the 32 MB buffers of a 128×128 batch back to the OS and faults them in again on every call,
/// which took up to a third of these kernels' time there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e`, as in `trainer/src/main.rs`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

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
    // SAFETY: sets a plain option before any other thread exists (as `pggan` does).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // `conv_speed 8`: only the kernel table, only its shapes of at most 8×8.
    let only_up_to: Option<usize> = match std::env::args().nth(1) {
        None => None,
        Some(arg) => match arg.parse() {
            Ok(resolution) => Some(resolution),
            Err(_) => {
                eprintln!("conv_speed: {arg:?} is not a resolution (usage: conv_speed [RES])");
                std::process::exit(2);
            }
        },
    };
    if only_up_to.is_none() {
        burn_beside_pggan();
    }
    kernels_by_method(only_up_to.unwrap_or(usize::MAX));
}

/// Burn's `conv2d` beside the model crate's `conv3x3`, forward and forward + backward.
fn burn_beside_pggan() {
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
}

/// Each of the model crate's kernels by itself, on shapes of at most `max_resolution`.
fn kernels_by_method(max_resolution: usize) {
    // The kernels on plain slices: im2col with a general matrix product, the direct AVX-512
    // kernels with positions in the lanes and (4×4 and 8×8, batches of 16) with images in the
    // lanes (where the CPU has AVX-512), and Winograd's F(2×2, 3×3) (its matrix products by
    // `gemm`; the page's hand-written ones in WebAssembly); the training shapes and the page's generator (batch 1). The kernels of a cell are timed
    // alternately, three rounds, and the best round of each kept, so the machine's drift
    // favours none of them.
    let direct = conv3x3_direct::available();
    println!(
        "{:>28}  {:>26}  {:>26}  {:>16}",
        "kernel [batch, in→out, res]", "forward", "input gradient", "weight gradient"
    );
    println!(
        "{:>28}  {:>26}  {:>26}  {:>16}",
        "GFLOP/s", "im2col / pos. / Wino. / all", "im2col / pos. / Wino. / all", "im2col / direct"
    );
    let page = [
        [1, 128, 128, 32],
        [1, 128, 64, 64],
        [1, 64, 32, 128],
        [1, 32, 32, 128],
    ];
    let best_of = |runs: &[&dyn Fn()]| {
        let mut best = vec![f64::MAX; runs.len()];
        for _ in 0..3 {
            for (best, run) in best.iter_mut().zip(runs) {
                *best = best.min(time_ms(run));
            }
        }
        best
    };
    let small = [[16, 256, 256, 4], [32, 256, 256, 8]];
    for [b, c, o, r] in SHAPES.into_iter().chain(small).chain(RUN_128).chain(page) {
        if r > max_resolution {
            continue;
        }
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
        let (x, w, g) = (&x, &w, &g);
        let gflop = 2.0 * (b * o * c * 9 * r * r) as f64 / 1e9;
        let rates = |ms: Vec<f64>| {
            ms.iter()
                .map(|ms| format!("{:.0}", gflop / ms * 1e3))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        const ALL: [Method; 4] = [
            Method::Im2col,
            Method::PositionLanes,
            Method::Winograd,
            Method::Fastest,
        ];
        let forward = ALL.map(|m| move || drop(kernels::conv3x3_by(m, x, w, 1.0, s)));
        let input_grad = ALL.map(|m| move || drop(kernels::conv3x3_transpose_by(m, g, w, 1.0, s)));
        let weight_grad =
            ALL.map(|m| move || drop(kernels::conv3x3_weight_grad_by(m, x, g, 1.0, s)));
        let forward = best_of(&forward.each_ref().map(|f| f as &dyn Fn()));
        let input_grad = best_of(&input_grad.each_ref().map(|f| f as &dyn Fn()));
        let weight_grad = best_of(&weight_grad.each_ref().map(|f| f as &dyn Fn()));
        println!(
            "{:>28}  {:>26}  {:>26}  {:>26}",
            format!("[{b}, {c}→{o}, {r}×{r}]"),
            rates(forward),
            rates(input_grad),
            rates(weight_grad),
        );
    }
    if !direct {
        println!("(no AVX-512 here, or a build without it: \"pos.\" is im2col; the direct weight");
        println!(" gradient is AVX2's where the CPU has it)");
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
