"""Benchmark: NeuronIntGrad critical pathways (50 steps) against the same algorithm in torch.

For each gate, NeuronIntGrad (Khakzar et al. 2021) re-evaluates the network above it on the
gate's activations scaled by α on a midpoint grid of 50 steps and averages the gradients. The
torch reference, run in the same process, does what a torch user writes: for each gate, one
batched forward pass of the 50 scaled copies (a forward hook swaps in α·a) and one backward
pass; pathonnx runs only the network above each gate (its suffix graph) and the adjoint stage
back to the gate, then both rank every unit network-wide. Model: the pathwise paper's VGG-16
(25088-256-64-10 head sized for the input), random weights; 64×64 by default because the
algorithm costs about 2 × 50 × (number of gates) partial passes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Device, machine, measure, pathwise_vgg, providers_report  # noqa: E402

import pathonnx  # noqa: E402


def torch_intgrad(module, relus, x: torch.Tensor, target: int, steps: int, sparsity: float):
    alphas = (torch.arange(steps, dtype=torch.float32, device=x.device) + 0.5) / steps
    with torch.no_grad():
        plain = []
        hooks = [r.register_forward_hook(lambda m, i, o: plain.append(o)) for r in relus]
        module(x)
        for h in hooks:
            h.remove()
    scores = []
    batch = x.expand(steps, *x.shape[1:])
    for level, relu in enumerate(relus):
        scaled = (plain[level] * alphas.view(-1, *[1] * (plain[level].dim() - 1))).requires_grad_()
        handle = relu.register_forward_hook(lambda m, i, o, s=scaled: s)
        logits = module(batch)
        handle.remove()
        (grad,) = torch.autograd.grad(logits[:, target].sum(), scaled)
        scores.append((plain[level][0] * grad.mean(0)).abs().flatten())
    everything = torch.cat(scores)
    threshold = torch.quantile(everything[:: max(1, len(everything) // 2**24)], sparsity)
    return [s > threshold for s in scores]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--budget", type=float, default=60.0)
    Device.add_arguments(parser)
    args = parser.parse_args(argv)
    device = Device.from_args(args)
    print(f"bench_intgrad: {machine()}")
    print(f"VGG-16 + 25088-256-64-10 head, {args.size}x{args.size}, batch 1, {args.steps} steps")
    print(device.describe())
    module, relus, x, model, target = pathwise_vgg(args.size, device)
    ours = measure(
        lambda: pathonnx.critical_pathway(model, x, target, "intgrad", 0.9, args.steps),
        args.budget, min_repeats=3,
    )  # fmt: skip
    xt = torch.from_numpy(x).to(device.torch)
    ref = measure(
        device.synced(lambda: torch_intgrad(module, relus, xt, target, args.steps, 0.9)),
        args.budget, min_repeats=3,
    )  # fmt: skip
    report = providers_report(model)
    print(f"{'torch (same algorithm)':24} {ref[0]:8.2f} s")
    print(f"{'pathonnx':24} {ours[0]:8.2f} s")
    print(f"{'ratio pathonnx / torch':24} {ours[0] / ref[0]:8.2f}")
    print(report)


if __name__ == "__main__":
    main()
