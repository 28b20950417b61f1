"""Pruning-objective pathway baselines against torch implementations written from the papers."""

from __future__ import annotations

import numpy as np
import pytest
import zoo
from oracle import TorchOracle, dgr_reference, greedy_pruning_reference

import pathonnx


def _flat(model, pathway, n):
    return [pathway.masks[g.name].reshape(n, -1) for g in model.gates]


@pytest.mark.parametrize("arch", ["mlp", "vgg_bn", "resnet"])
def test_greedy_pruning_matches_the_papers_algorithm(arch, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=3)
    pathway = pathonnx.pruned_pathway(model, x, method="greedy", sparsity=0.8, rounds=4)
    reference = greedy_pruning_reference(TorchOracle(module), x, pathway.target, 0.8, 4)
    got = _flat(model, pathway, 2)
    budget = int(np.floor(0.2 * sum(g.units for g in model.gates)))
    assert (sum(m.sum(1) for m in got) <= budget).all()
    # float32 against float64 may reorder near-ties, and a different removal then propagates
    differ = sum((a != b).sum() for a, b in zip(got, reference))
    assert differ <= 0.01 * sum(a.size for a in got)


def test_greedy_pruning_keeps_originally_dead_units_and_mct_does_not(exported):
    # The paper's point (Fig. 1): removing active units turns dead ones on, and greedy
    # pruning keeps them; a contribution-based pathway never does.
    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=3)
    greedy = pathonnx.pruned_pathway(model, x, method="greedy", sparsity=0.9, rounds=6)
    mct = pathonnx.critical_pathway(model, x, method="mct", sparsity=0.9)
    fwd = model.forward(x)
    dead = sum((greedy.masks[g.name] & ~(fwd.activations[g.name] > 0)).sum() for g in model.gates)
    assert dead > 0
    assert all((share == 0).all() for share in mct.stats["dead_share"].values())
    assert any((share > 0).any() for share in greedy.stats["dead_share"].values())
    assert 0 < pathonnx.jaccard(greedy, mct).min() < 1


@pytest.mark.parametrize(("arch", "init"), [("mlp", 1.0), ("vgg_bn", 1.0), ("mlp", "uniform")])
def test_dgr_matches_adam_on_the_distillation_loss_in_torch(arch, init, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=5)
    params = {"init": init, "steps": 15, "lr": 0.05, "gamma": 1e-3, "seed": 2}
    pathway = pathonnx.pruned_pathway(model, x, method="dgr", sparsity=0.7, **params)
    start = None
    if init == "uniform":  # the same draw as pathonnx's
        rng = np.random.default_rng(2)
        start = [rng.uniform(0.0, 1.0, (2, g.units)) for g in model.gates]
    reference = dgr_reference(TorchOracle(module), x, init, 15, 0.05, 1e-3, uniform=start)
    for gate, ref in zip(model.gates, reference):
        got = pathway.stats["gates"][gate.name]
        np.testing.assert_allclose(got, ref, atol=2e-3, err_msg=gate.name)
    # the distillation loss falls while λ is learned
    loss = pathway.stats["loss"]
    assert (loss[:, -1] < loss[:, 0]).all() or init == 1.0
    values = np.concatenate([r for r in reference], axis=1)
    kept = np.concatenate(_flat(model, pathway, 2), axis=1)
    threshold = np.percentile(values, 70, axis=1)
    agree = (kept == (values > threshold[:, None])).mean()
    assert agree >= 0.99


def test_scaled_forward_and_gradient_match_torch(exported):
    # The two pieces the pruning baselines stand on: the network with each gate's output
    # scaled, and the gradient of a loss at every gate through those scales.
    path, module = exported("resnet")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("resnet", batch=2, seed=8)
    rng = np.random.default_rng(0)
    scales = {g.name: rng.uniform(0, 2, (2, *g.shape)).astype(np.float32) for g in model.gates}
    fwd = model.engine.scaled_forward(x, scales)
    oracle = TorchOracle(module)
    import torch
    from oracle import _gated_run

    factors = [torch.tensor(scales[g.name], dtype=torch.float64) for g in model.gates]
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logits, _, after = _gated_run(oracle, x64, factors)
    np.testing.assert_allclose(fwd.logits, logits.detach().numpy(), rtol=1e-4, atol=1e-4)
    seeds = rng.standard_normal((2, model.num_outputs)).astype(np.float32)
    grads = pathonnx.engine.gate_cotangents(model, fwd, seeds=seeds, scales=scales)
    want = torch.autograd.grad((logits * torch.tensor(seeds).double()).sum(), after)
    for gate, ref in zip(model.gates, want):
        got = grads[gate.name]
        scale = np.abs(ref.numpy()).max()
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-4 * scale, err_msg=gate.name)


def test_bad_pruning_parameters(exported):
    path, _ = exported("mlp")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mlp", batch=1)
    with pytest.raises(pathonnx.InputError, match="unknown"):
        pathonnx.pruned_pathway(model, x, method="lottery")
    with pytest.raises(pathonnx.InputError, match="sparsity"):
        pathonnx.pruned_pathway(model, x, sparsity=1.0)
    with pytest.raises(pathonnx.InputError, match="init"):
        pathonnx.pruned_pathway(model, x, method="dgr", init="ones")
