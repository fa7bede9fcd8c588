"""Cross-check of the critic and its WGAN-GP loss against PyTorch's double backprop.

    cargo run --release -p pggan-model --example critic_loss_dump -- /tmp/crosscheck
    python bench/crosscheck_critic.py /tmp/crosscheck

The Rust side (hand-written input gradient, f64) writes a small critic (16×16, fading in level 2
at α 0.6), fixed reals/fakes/mixing weights, its loss and every parameter gradient; this script
loads the same weights into the PyTorch twin, recomputes the loss with autograd's
create_graph=True, and prints the largest relative differences.
"""
import sys

import torch
from safetensors.torch import load_file
from safetensors import safe_open

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from pggan_twin import Critic  # noqa: E402

folder = sys.argv[1] if len(sys.argv) > 1 else "crosscheck"
with safe_open(f"{folder}/critic.safetensors", "pt") as f:
    meta = f.metadata()
import json  # noqa: E402

config = json.loads(meta["config"])
level, alpha = int(meta["level"]), float(meta["alpha"])
levels = config["resolution"].bit_length() - 2  # log2(resolution) - 1
D = Critic(levels, config["fmap_base"], config["fmap_max"]).double()


def twin_name(name):
    parts = name.split(".")
    if parts[0] == "blocks":
        parts[2] = {"conv0": "0", "conv1": "1"}[parts[2]]
    return ".".join(parts)


weights = {twin_name(k): v.double() for k, v in load_file(f"{folder}/critic.safetensors").items()}
D.load_state_dict(weights, strict=True)
inputs = {k: v.double() for k, v in load_file(f"{folder}/inputs.safetensors").items()}
reals, fakes, mix = inputs["reals"], inputs["fakes"], inputs["mix"].reshape(-1, 1, 1, 1)

real_scores = D(reals, level, alpha)
fake_scores = D(fakes, level, alpha)
mixed = (reals + (fakes - reals) * mix).requires_grad_(True)
grad, = torch.autograd.grad(D(mixed, level, alpha).sum(), mixed, create_graph=True)
penalty = (grad.flatten(1).norm(dim=1) - 1).square().mean() * 10.0
loss = fake_scores.mean() - real_scores.mean() + penalty + 0.001 * real_scores.square().mean()
loss.backward()

rust = {twin_name(k): v.double() for k, v in load_file(f"{folder}/grads.safetensors").items()}
print(f"loss: rust {float(meta['loss']):.10e}  pytorch {loss.item():.10e}")
print(f"penalty: rust {float(meta['penalty']):.10e}  pytorch {penalty.item():.10e}")
worst = 0.0
for name, p in D.named_parameters():
    g = p.grad if p.grad is not None else torch.zeros_like(p)
    r = rust[name]
    rel = ((g - r).abs().max() / g.abs().max().clamp_min(1e-30)).item()
    worst = max(worst, rel)
    print(f"{name:28s} max |grad| {g.abs().max().item():.3e}  relative difference {rel:.2e}")
print(f"largest relative gradient difference: {worst:.2e}")
sys.exit(0 if worst < 1e-5 and abs(loss.item() - float(meta["loss"])) < 1e-6 * max(1.0, abs(loss.item())) else 1)
