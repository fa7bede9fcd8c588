"""The convolutions of trainer/examples/conv_speed.rs in PyTorch: forward, and forward + backward."""
import argparse
import time

import torch

SHAPES = [(16, 128, 64, 32), (16, 64, 64, 32), (16, 256, 128, 16), (16, 128, 128, 16), (16, 256, 256, 8)]
REPS = 5


def time_ms(f):
    f()
    start = time.perf_counter()
    for _ in range(REPS):
        f()
    return (time.perf_counter() - start) * 1000 / REPS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(parser.parse_args().threads)
    print(f"{'conv 3×3 [batch, in→out, res]':>28}  {'fwd ms':>9} {'GFLOP/s':>7}  {'fwd+bwd':>9} {'GFLOP/s':>7}")
    for b, c, o, r in SHAPES:
        x = torch.randn(b, c, r, r, requires_grad=True)
        w = torch.randn(o, c, 3, 3, requires_grad=True)
        g = torch.randn(b, o, r, r)

        def fwd():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, padding=1).sum().item()

        def both():
            y = torch.nn.functional.conv2d(x, w, padding=1)
            (y * g).sum().backward()
            x.grad.sum().item()
            w.grad.sum().item()
            x.grad = None
            w.grad = None

        f, fb = time_ms(fwd), time_ms(both)
        gflop = 2 * b * o * c * 9 * r * r / 1e9
        print(f"{f'[{b}, {c}→{o}, {r}×{r}]':>28}  {f:>9.2f} {gflop / f * 1e3:>7.0f}  {fb:>9.2f} {3 * gflop / fb * 1e3:>7.0f}")
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        ms = time_ms(lambda: (a @ b)[0, 0].item())
        print(f"{f'matmul {n}³':>28}  {ms:>9.2f} {2 * n**3 / ms / 1e6:>7.0f}")


if __name__ == "__main__":
    main()
