"""PyTorch twin of pggan's network and training step, for side-by-side speed measurements.

The same generator and critic (equalised learning rate, pixel norm, minibatch stddev, nearest
up / average down, fade-in) and the same step: WGAN-GP critic step with drift (the penalty by
double backprop), generator step, EMA update, Adam(lr 1e-3, β1 0, β2 0.99, ε 1e-8).

    python bench/pggan_twin.py --resolution 32 --fmap-base 1024 --fmap-max 256 --latent 256 \
        --minibatch 16 --steps 5 --threads 2 [--device cuda]

prints img/s per resolution in the same format as `pggan bench`.
"""
import argparse
import os
import copy
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class EqConv(nn.Module):
    def __init__(self, cin, cout, k, gain=math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * k * k)
        self.pad = k // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


class EqDense(nn.Module):
    def __init__(self, cin, cout, gain=math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x):
        return x @ (self.weight * self.scale) + self.bias


def pixel_norm(x):
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def lrelu(x):
    return F.leaky_relu(x, 0.2)


def up(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def down(x):
    return F.avg_pool2d(x, 2)


def mbstd(x, group=4):
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # [M]
    y = y.reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
    return torch.cat([x, y], 1)


def nf(stage, base, cap):
    return max(1, min(base >> stage, cap))


class Generator(nn.Module):
    def __init__(self, levels, latent, base, cap):
        super().__init__()
        ch = [nf(l + 1, base, cap) for l in range(levels)]
        self.c0 = ch[0]
        self.dense = EqDense(latent, ch[0] * 16, gain=math.sqrt(2) / 4)
        self.conv4 = EqConv(ch[0], ch[0], 3)
        self.blocks = nn.ModuleList(nn.ModuleList([EqConv(ch[l - 1], ch[l], 3), EqConv(ch[l], ch[l], 3)]) for l in range(1, levels))
        self.to_rgb = nn.ModuleList(EqConv(c, 3, 1, gain=1.0) for c in ch)

    def forward(self, z, level, alpha=1.0):
        x = pixel_norm(z)
        x = pixel_norm(lrelu(self.dense(x).reshape(-1, self.c0, 4, 4)))
        x = pixel_norm(lrelu(self.conv4(x)))
        prev = None
        for i, (a, b) in enumerate(self.blocks[:level]):
            if alpha < 1 and i + 1 == level:
                prev = x
            x = pixel_norm(lrelu(a(up(x))))
            x = pixel_norm(lrelu(b(x)))
        img = self.to_rgb[level](x)
        if prev is not None:
            img = torch.lerp(up(self.to_rgb[level - 1](prev)), img, alpha)
        return img


class Critic(nn.Module):
    def __init__(self, levels, base, cap):
        super().__init__()
        ch = [nf(l + 1, base, cap) for l in range(levels)]
        self.c0 = ch[0]
        self.from_rgb = nn.ModuleList(EqConv(3, c, 1) for c in ch)
        self.blocks = nn.ModuleList(nn.ModuleList([EqConv(ch[l], ch[l], 3), EqConv(ch[l], ch[l - 1], 3)]) for l in range(1, levels))
        self.conv4 = EqConv(ch[0] + 1, ch[0], 3)
        self.dense0 = EqDense(ch[0] * 16, nf(0, base, cap))
        self.dense1 = EqDense(nf(0, base, cap), 1, gain=1.0)

    def forward(self, img, level, alpha=1.0):
        x = lrelu(self.from_rgb[level](img))
        for l in range(level, 0, -1):
            a, b = self.blocks[l - 1]
            x = down(lrelu(b(lrelu(a(x)))))
            if alpha < 1 and l == level:
                x = torch.lerp(lrelu(self.from_rgb[level - 1](down(img))), x, alpha)
        x = lrelu(self.conv4(mbstd(x)))
        x = lrelu(self.dense0(x.flatten(1)))
        return self.dense1(x)


def train_step(G, D, G_ema, opt_g, opt_d, reals, latent, level, alpha=1.0):
    n = reals.shape[0]
    dev = reals.device
    fakes = G(torch.randn(n, latent, device=dev), level, alpha).detach()
    real_scores = D(reals, level, alpha)
    fake_scores = D(fakes, level, alpha)
    u = torch.rand(n, 1, 1, 1, device=dev)
    mixed = (reals + (fakes - reals) * u).requires_grad_(True)
    grad, = torch.autograd.grad(D(mixed, level, alpha).sum(), mixed, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean() * 10.0
    loss_d = fake_scores.mean() - real_scores.mean() + penalty + 0.001 * real_scores.square().mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    for p in D.parameters():
        p.requires_grad_(False)
    loss_g = -D(G(torch.randn(n, latent, device=dev), level, alpha), level, alpha).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    for p in D.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p, 1 - 0.999)
    return float(loss_d.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--latent", type=int, default=256)
    ap.add_argument("--fmap-base", type=int, default=1024)
    ap.add_argument("--fmap-max", type=int, default=256)
    ap.add_argument("--minibatch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--min-resolution", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when there is one)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(a.device)
    torch.manual_seed(1)
    levels = int(math.log2(a.resolution)) - 1
    G = Generator(levels, a.latent, a.fmap_base, a.fmap_max).to(dev)
    D = Critic(levels, a.fmap_base, a.fmap_max).to(dev)
    G_ema = copy.deepcopy(G)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    chans = [nf(l + 1, a.fmap_base, a.fmap_max) for l in range(levels)]
    if dev.type == "cuda":
        where = torch.cuda.get_device_name(dev)
    else:
        # ATen's vector kernels; oneDNN (convolutions) and MKL (matrix products) follow their own
        # limits, ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS, when set.
        isa = torch.backends.cpu.get_cpu_capability()
        limits = ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ)
        where = f"CPU, threads {torch.get_num_threads()}, {isa}" + (f" ({limits})" if limits else "")
    print(f"pytorch twin {torch.__version__}: {where}, G {n_g} params, D {n_d} params, channels {chans}, latent {a.latent}, minibatch {a.minibatch}")
    rows = []
    for level in range(levels):
        r = 4 << level
        if r < a.min_resolution:
            continue
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
        n = a.minibatch
        for _ in range(2):
            train_step(G, D, G_ema, opt_g, opt_d, torch.randn(n, 3, r, r, device=dev), a.latent, level)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(a.steps):
            train_step(G, D, G_ema, opt_g, opt_d, torch.randn(n, 3, r, r, device=dev), a.latent, level)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        row = {"resolution": r, "minibatch": n, "img_per_s": n * a.steps / secs, "ms_per_step": secs * 1000 / a.steps}
        rows.append(row)
        print(f"{r:>4}×{r:<4} minibatch {n:>3}  {row['img_per_s']:>8.2f} img/s  {row['ms_per_step']:>9.1f} ms/step")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
