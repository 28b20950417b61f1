"""Baseline attributions against Captum (cosine ≥ 0.999), and critical pathways from the paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zoo
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Saliency,
)
from oracle import GATES, TorchOracle

import pathonnx

ARCHS = ["vgg_bn", "resnet", "mobilenetv2", "inception"]
TARGETS = np.array([3, 8])


def cosine(a, b) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def setup(arch, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=9)
    oracle = TorchOracle(module)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    return model, x, oracle.module, xt


def captum(method, xt, **kwargs) -> np.ndarray:
    out = method.attribute(xt, target=torch.as_tensor(TARGETS), **kwargs)
    return out.detach().numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_baselines_match_captum(arch, exported):
    model, x, module, xt = setup(arch, exported)
    expected = {
        "saliency": captum(Saliency(module), xt, abs=False),
        "input_x_gradient": captum(InputXGradient(module), xt),
        "integrated_gradients": captum(IntegratedGradients(module), xt, n_steps=50),
        "guided_backprop": captum(GuidedBackprop(module), xt),
        "deconvnet": captum(Deconvolution(module), xt),
    }
    for name, reference in expected.items():
        got = pathonnx.attribute(model, x, TARGETS, method=name)
        assert got.shape == x.shape
        assert cosine(got, reference).min() >= 0.999, name


@pytest.mark.parametrize("arch", ARCHS)
def test_gradcam_matches_captum(arch, exported):
    model, x, module, xt = setup(arch, exported)
    spatial_gates = [g for g in model.gates if len(g.shape) >= 3]
    layers = [m for m in module.modules() if isinstance(m, GATES)]
    # the last spatial gate is the torch activation module called at that position
    calls = []
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in layers]
    module(xt)
    for h in hooks:
        h.remove()
    layer = calls[model.gates.index(spatial_gates[-1])]
    cam = captum(LayerGradCam(module, layer), xt)
    reference = LayerAttribution.interpolate(torch.tensor(cam), x.shape[2:]).numpy()
    got = pathonnx.attribute(model, x, TARGETS, method="gradcam")
    assert cosine(got[:, :1], reference).min() >= 0.999


PRIME = (1 << 31) - 1


def _hash(x):
    """SmoothGrad's counter hash: five rounds of x ← (x² + k) mod p, x ← (x + ⌊x/2¹³⌋) mod p."""
    x = np.asarray(x, np.int64) % PRIME
    for k in (0x2545F491, 0x1B873593, 0x68E31DA4, 0x3C6EF372, 0x7F4A7C15):
        x = (x * x + k) % PRIME
        x = (x + x // (1 << 13)) % PRIME
    return x


def test_smoothgrad_is_the_mean_gradient_over_its_noise(exported):
    model, x, module, _ = setup("resnet", exported)
    got = pathonnx.attribute(model, x, TARGETS, method="smoothgrad", samples=8, stdev=0.2, seed=3)
    # the noise of copy j at element e, from the hash as pathonnx.graph.noise states it,
    # here in numpy (int64, then Box–Muller in float64); the same for both samples
    elements = int(np.prod(x.shape[1:]))
    counter = np.arange(8 * elements, dtype=np.int64).reshape(8, 1, *x.shape[1:])
    key = _hash(np.int64(3))
    u1, u2 = ((_hash(2 * counter + key + i) + 0.5) / PRIME for i in (0, 1))
    noise = 0.2 * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    grads = []
    for sample in noise:
        xt = torch.tensor(x + sample, dtype=torch.float64, requires_grad=True)  # both samples
        out = module(xt)[torch.arange(2), torch.as_tensor(TARGETS)].sum()
        grads.append(torch.autograd.grad(out, xt)[0].numpy())
    assert cosine(got, np.mean(grads, axis=0)).min() >= 0.999


def test_mct_critical_pathway(exported):
    path, module = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=2)
    pathway = pathonnx.critical_pathway(model, x, TARGETS, sparsity=0.9)
    # from the paper: c = |a ⊙ ∂y/∂a| over all units of all gates, kept above the 90th percentile
    oracle = TorchOracle(module)
    outputs = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o))
        for m in oracle.module.modules()
        if isinstance(m, GATES)
    ]
    logits = oracle.module(torch.tensor(x, dtype=torch.float64, requires_grad=True))
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(logits[torch.arange(2), torch.as_tensor(TARGETS)].sum(), outputs)
    scores = [(o * g).abs().detach().numpy().reshape(2, -1) for o, g in zip(outputs, grads)]
    threshold = np.percentile(np.concatenate(scores, axis=1), 90, axis=1)
    kept = sum(int((pathway.masks[g.name]).sum()) for g in model.gates)
    expected = sum(int((s > threshold[:, None]).sum()) for s in scores)
    assert abs(kept - expected) <= 0.002 * expected
    for gate, score in zip(model.gates, scores):
        ref = (score > threshold[:, None]).reshape(pathway.masks[gate.name].shape)
        assert (pathway.masks[gate.name] != ref).mean() <= 0.002
    for share in pathway.stats["dead_share"].values():  # MCT never keeps a dead unit
        assert (share == 0).all()
    ordered = [pathway.masks[g.name] for g in model.gates]
    grad = oracle.gradient(x, TARGETS, ordered)
    assert cosine(pathway.linear.W, grad).min() >= 0.9999
    assert pathonnx.jaccard(pathway, pathway).tolist() == [1.0, 1.0]


def test_registry_and_errors(exported):
    path, _ = exported("mlp")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mlp", batch=1)
    assert {"saliency", "integrated_gradients", "pathwise", "mct", "gradcam"} <= set(
        pathonnx.METHODS
    )
    with pytest.raises(pathonnx.InputError, match="unknown method"):
        pathonnx.attribute(model, x, method="nope")
    with pytest.raises(pathonnx.InputError, match="takes no parameter"):
        pathonnx.attribute(model, x, method="saliency", steps=3)
    pathway_map = pathonnx.attribute(model, x, 0, method="pathwise", width=2)
    assert pathway_map.shape == x.shape


def intgrad_reference(oracle: TorchOracle, x, target, steps):
    """NeuronIntGrad from the paper: for each gate, the network above it re-run on α·a."""
    gates = [m for m in oracle.module.modules() if isinstance(m, GATES)]
    alphas = (np.arange(steps) + 0.5) / steps
    x64 = torch.tensor(x, dtype=torch.float64)
    plain = []
    hooks = [g.register_forward_hook(lambda m, i, o: plain.append(o.detach())) for g in gates]
    with torch.no_grad():
        oracle.module(x64)
    for h in hooks:
        h.remove()
    scores = []
    for level, a in enumerate(plain):
        total = torch.zeros_like(a)
        for alpha in alphas:
            calls, scaled = [], []

            def hook(module, inputs, output, calls=calls, scaled=scaled, alpha=alpha, level=level):
                calls.append(module)
                if len(calls) - 1 == level:
                    scaled.append((output.detach() * alpha).requires_grad_(True))
                    return scaled[0]
                return None

            handles = [g.register_forward_hook(hook) for g in gates]
            logits = oracle.module(x64)
            for h in handles:
                h.remove()
            picked = logits[torch.arange(len(x)), torch.as_tensor(target)].sum()
            total += torch.autograd.grad(picked, scaled[0])[0]
        scores.append((a * total / steps).abs().numpy())
    return scores


@pytest.mark.parametrize("arch", ["resnet", "mlp"])
def test_neuron_intgrad_matches_the_paper(arch, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=5)
    scores = pathonnx.methods.critical._intgrad_scores(model, x, TARGETS, steps=6, batch=4)
    reference = intgrad_reference(TorchOracle(module), x, TARGETS, steps=6)
    for gate, ref in zip(model.gates, reference):
        got = model.engine.dev.host(scores[gate.name])
        assert np.abs(got - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-12), gate.name
    pathway = pathonnx.critical_pathway(model, x, TARGETS, method="intgrad", steps=6)
    everything = np.concatenate([r.reshape(2, -1) for r in reference], axis=1)
    threshold = np.percentile(everything, 90, axis=1)
    for gate, ref in zip(model.gates, reference):
        expected = ref.reshape(2, -1) > threshold[:, None]
        assert (pathway.masks[gate.name].reshape(2, -1) != expected).mean() <= 0.002
    attribution = pathonnx.attribute(model, x, TARGETS, method="intgrad", steps=6)
    np.testing.assert_allclose(attribution, pathway.linear.W, rtol=1e-5, atol=1e-7)
