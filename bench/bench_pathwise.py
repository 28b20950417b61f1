"""Benchmark: pathwise explanation in one K-row sweep against the paper's per-gate recomputation.

Model: the pathwise paper's VGG-16 (features + a 25088-256-64-10 head), random weights, 224×224,
batch 1. The reference, in torch and in the same run, is Algorithm 1 as the public code runs
it: at every visited gate, K backward passes recompute the Jacobian of the K logits w.r.t. the
gate's output through the upper gates, masked with the units already chosen. pathonnx runs one
sweep of K cotangent rows, cut after each visited gate. Also: integrated gradients (50 steps)
against Captum's. Settings follow the issue: unlimited width over all gates, depth 5, width 64.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Device, machine, measure, pathwise_vgg, providers_report  # noqa: E402

import pathonnx  # noqa: E402

SETTINGS = {
    "unlimited width, all gates": {},
    "depth 5 (the paper's)": {"depth": 5},
    "width 64": {"width": 64},
}


def masked_forward(module, relus, x: torch.Tensor, masks: list):
    """Forward pass whose ReLU outputs pass gradients only through their mask (when set).

    Returns the input (requiring grad), the logits and every ReLU output, in call order."""
    outputs = []

    def hook(module, inputs, output):
        index = len(outputs)
        outputs.append(output)
        if masks[index] is not None:
            output.register_hook(lambda g, m=masks[index]: g * m)

    handles = [r.register_forward_hook(hook) for r in relus]
    try:
        xg = x.detach().requires_grad_(True)  # parameters are frozen
        return xg, module(xg), outputs
    finally:
        for h in handles:
            h.remove()


def torch_pathwise(module, relus, x: torch.Tensor, target: int, depth=None, width=None):
    """Algorithm 1, recomputing the K-row Jacobian at every gate (float32, as the public code)."""
    k = 10
    masks = [None] * len(relus)
    depth = len(relus) if depth is None else depth
    for level in range(len(relus) - 1, len(relus) - 1 - depth, -1):
        _, logits, outputs = masked_forward(module, relus, x, masks)
        h = outputs[level]
        rows = [torch.autograd.grad(logits[0, c], h, retain_graph=True)[0] for c in range(k)]
        contribution = (torch.stack(rows, 1) * h.detach()[:, None]).reshape(k, -1)
        importance = torch.softmax(contribution, dim=0)[target]
        order = torch.sort(importance, descending=True, stable=True).indices[:width]
        chosen = order[importance[order] > 1.0 / k]
        mask = torch.zeros_like(importance)
        mask[chosen if len(chosen) else order[:1]] = 1.0
        masks[level] = mask.reshape(h.shape)
    # and the pathway's gradient W^p, as pathonnx returns it
    xg, logits, _ = masked_forward(module, relus, x, masks)
    torch.autograd.grad(logits[0, target], xg)
    return masks


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per cell")
    parser.add_argument("--quick", action="store_true", help="64x64, few repeats")
    parser.add_argument("--json", type=Path)
    Device.add_arguments(parser)
    args = parser.parse_args(argv)
    device = Device.from_args(args)
    if args.quick:
        args.size, args.budget = 64, 1.0
    print(f"bench_pathwise: {machine()}")
    print(f"VGG-16 + 25088-256-64-10 head (pathwise paper), {args.size}x{args.size}, batch 1, K=10")
    print(device.describe())
    module, relus, x, model, target = pathwise_vgg(args.size, device)
    xt = torch.from_numpy(x).to(device.torch)
    rows = []
    for label, params in SETTINGS.items():
        ours = pathonnx.pathwise(model, x, target, **params)
        ref = torch_pathwise(module, relus, xt, target, params.get("depth"), params.get("width"))
        agree = np.mean([
            (ours.masks[g.name][0] == (m[0].cpu().numpy() > 0)).mean()
            for g, m in zip(model.gates, ref) if m is not None
        ])  # fmt: skip
        t_ours = measure(lambda p=params: pathonnx.pathwise(model, x, target, **p),
                         args.budget, min_repeats=3)  # fmt: skip
        t_ref = measure(
            device.synced(lambda p=params: torch_pathwise(module, relus, xt, target,
                                                          p.get("depth"), p.get("width"))),
            args.budget, min_repeats=3,
        )  # fmt: skip
        rows.append((label, t_ref[0], t_ours[0], agree))
        print(f"  {label}: torch {t_ref[0]:.2f} s, pathonnx {t_ours[0]:.2f} s", flush=True)
    ig_ours = measure(
        lambda: pathonnx.attribute(model, x, target, "integrated_gradients", batch=16),
        args.budget, min_repeats=3,
    )  # fmt: skip
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(module)
    ig_ref = measure(
        device.synced(lambda: ig.attribute(xt, target=target, n_steps=50,
                                           internal_batch_size=16)),
        args.budget, min_repeats=3,
    )  # fmt: skip
    report = providers_report(model)
    head = f"{'setting':28} {'torch per-gate':>15} {'pathonnx':>10} {'speed-up':>9} {'agree':>12}"
    print()
    print(head)
    print("-" * len(head))
    for label, ref, ours, agree in rows:
        print(f"{label:28} {ref:>13.2f} s {ours:>8.2f} s {ref / ours:>8.1f}x {agree:>12.4f}")
    print(
        f"{'integrated gradients (50)':28} {ig_ref[0]:>13.2f} s {ig_ours[0]:>8.2f} s "
        f"{ig_ref[0] / ig_ours[0]:>8.1f}x {'(Captum)':>12}"
    )
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
