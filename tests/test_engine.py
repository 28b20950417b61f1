"""The linear engine against an independent torch oracle (float64), on real torch exports."""

from __future__ import annotations

import numpy as np
import pytest
import zoo
from oracle import TorchOracle

import pathonnx
from pathonnx.engine import build_adjoint, make_session

# vgg_bn_softmax's torch output is probabilities; pathonnx explains its logits.
ARCHS = [name for name in zoo.ARCHITECTURES if name != "vgg_bn_softmax"]
DYNAMO = [(name, "dynamo", 18) for name in zoo.MAIN_ARCHITECTURES]
# The torch frozen-map oracle freezes nn.MaxPool2d modules; pad_maxpool pools functionally.
FROZEN_ORACLE = [name for name in ARCHS if name != "pad_maxpool"]
TARGETS = [1, 7]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def random_masks(model: pathonnx.Model, n: int, keep: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {g.name: rng.random((n, *g.shape)) < keep for g in model.gates}


def check_linear_model(path, module, arch: str):
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=5)
    linear = model.linearize(x, TARGETS)
    oracle = TorchOracle(module)
    grad = oracle.gradient(x, TARGETS)
    assert oracle.gate_calls == len(model.gates)
    assert cosine(linear.W, grad).min() >= 0.9999
    assert np.abs(linear.W - grad).max() <= 1e-4 * np.abs(grad).max()
    logits = oracle.logits(x)[np.arange(2), TARGETS]
    scale = np.abs(oracle.logits(x)).max()
    # completeness: Σ W⊙x + b is the logit (docs/ARCHITECTURE.md, 1e-4 relative)
    assert np.abs(linear.output(x) - logits).max() <= 1e-4 * scale
    # b against torch: on its linear region f(x) = ∇f·x + b
    b_torch = logits - (grad * x).reshape(2, -1).sum(1)
    assert np.abs(linear.b - b_torch).max() <= 1e-4 * scale


@pytest.mark.parametrize("arch", ARCHS)
def test_W_and_b_match_torch(arch, exported):
    check_linear_model(*exported(arch), arch)


@pytest.mark.parametrize("case", DYNAMO, ids=lambda c: c[0])
def test_W_and_b_match_torch_dynamo_exports(case, exported):
    check_linear_model(*exported(*case), case[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_masked_Wp_and_bp_match_torch(arch, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=6)
    masks = random_masks(model, 2, keep=0.7, seed=1)
    linear = model.linearize(x, TARGETS, masks)
    oracle = TorchOracle(module)
    ordered = [masks[g.name] for g in model.gates]
    grad = oracle.gradient(x, TARGETS, ordered)
    assert cosine(linear.W, grad).min() >= 0.9999
    scale = np.abs(oracle.logits(x)).max()
    # b^p is the masked frozen map at 0: pathonnx's frozen graph evaluates it as a forward pass
    fwd = model.forward(x)
    at_zero = model.engine.frozen_logits(fwd, np.zeros_like(x), masks)[np.arange(2), TARGETS]
    assert np.abs(linear.b - at_zero).max() <= 1e-5 * scale
    if arch in FROZEN_ORACLE:
        frozen = oracle.frozen(x, np.zeros_like(x), ordered)[np.arange(2), TARGETS]
        assert np.abs(linear.b - frozen).max() <= 1e-4 * scale
        # and the pathway's linear model is the masked frozen map itself, at x
        at_x = oracle.frozen(x, x, ordered)[np.arange(2), TARGETS]
        assert np.abs(linear.output(x) - at_x).max() <= 1e-4 * scale


def test_frozen_graph_without_masks_reproduces_the_model(exported):
    path, _ = exported("mobilenetv2")  # Clip gates: slope and saturation offsets
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mobilenetv2", batch=3, seed=2) * 4  # drive units into saturation
    fwd = model.forward(x)
    np.testing.assert_allclose(model.engine.frozen_logits(fwd, x), fwd.logits, atol=1e-5)
    clip = next(g for g in model.gates if g.kind == "clip")
    assert (fwd.activations[clip.name] == 6.0).any()


# resnet's 3x3/2 max-pool is transposed by ScatterElements (overlapping windows add), vgg_bn's
# and ceil_pool's by MaxUnpool (disjoint windows), whose rows need their own index offsets.
@pytest.mark.parametrize(
    "arch, unpool", [("resnet", "ScatterElements"), ("vgg_bn", "MaxUnpool"),
                     ("ceil_pool", "MaxUnpool")]
)  # fmt: skip
def test_all_targets_at_once_equal_one_at_a_time(arch, unpool, exported):
    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    ops = {node.op_type for node in model.engine.adjoint_graph.graph.node}
    assert ops & {"ScatterElements", "MaxUnpool"} == {unpool}
    x = zoo.example_input(arch, batch=2, seed=3)
    fwd = model.forward(x)
    seeds = np.broadcast_to(np.eye(10, dtype=np.float32), (2, 10, 10))
    grad, bias = model.engine.vjp(fwd, seeds)
    for k in (0, 4, 9):
        single = model.linearize(x, k)
        np.testing.assert_allclose(grad[:, k], single.W, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(bias[:, k], single.b, rtol=1e-5, atol=1e-6)
    # rows are chunked under a small memory budget with the same result
    model.engine.memory_budget = 1
    chunked, _ = model.engine.vjp(fwd, seeds)
    np.testing.assert_array_equal(chunked, grad)


def test_scatter_transpose_of_disjoint_pools_equals_maxunpool(exported):
    # Where MaxUnpool is not used (the CUDA provider lacks it) the same pools go through
    # ScatterElements, with the same cotangents.
    path, _ = exported("ceil_pool")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("ceil_pool", batch=2, seed=4)
    fwd = model.forward(x)
    seeds = np.broadcast_to(np.eye(10, dtype=np.float32), (2, 10, 10)).reshape(20, 10)
    masks = model.engine.masks(random_masks(model, 2, 0.7, seed=1), 2)
    grads = {}
    for maxunpool in (True, False):
        proto = build_adjoint(model.canonical, maxunpool=maxunpool)
        ops = {node.op_type for node in proto.graph.node}
        assert ("MaxUnpool" in ops) == maxunpool and ("ScatterElements" in ops) != maxunpool
        session = make_session(proto, ["CPUExecutionProvider"])
        feeds = model.engine._feeds(session, fwd, masks)
        grads[maxunpool] = session.run(["grad"], {**feeds, "seed": seeds})[0]
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-6, atol=1e-7)
    assert np.abs(grads[True]).max() > 0


def test_masks_are_validated(exported):
    path, _ = exported("mlp")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mlp", batch=2)
    gate = model.gates[0]
    with pytest.raises(pathonnx.InputError, match="unknown gate"):
        model.linearize(x, 0, {"nope": np.ones(gate.shape, bool)})
    with pytest.raises(pathonnx.InputError, match="has shape"):
        model.linearize(x, 0, {gate.name: np.ones((3, *gate.shape), bool)})
    with pytest.raises(pathonnx.InputError, match="out of range"):
        model.linearize(x, 10)
    # a mask of gate.shape applies to every sample; an all-ones mask changes nothing
    full = model.linearize(x, 0)
    same = model.linearize(x, 0, {gate.name: np.ones(gate.shape, bool)})
    np.testing.assert_array_equal(full.W, same.W)


@pytest.mark.parametrize("arch", ["resnet", "densenet", "inception", "pad_maxpool"])
def test_staged_walk_between_gates_equals_the_whole_walk(arch, exported):
    """The walk cut after every gate (where the pathwise method selects units) and chained stage
    by stage gives the same W and b as one sweep: residual and concat cotangents cross cuts."""
    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=8)
    fwd = model.forward(x)
    masks = random_masks(model, 2, keep=0.8, seed=3)
    seeds = np.zeros((2, 3, 10), np.float32)
    seeds[:, [0, 1, 2], [2, 5, 9]] = 1.0
    whole, whole_bias = model.engine.vjp(fwd, seeds, masks)
    cuts = model.engine.gate_cuts()
    assert len(cuts) == len(model.gates)
    cotangents, bias, start = {"seed": seeds.reshape(6, 10)}, 0.0, None
    for stop in [*reversed(cuts), 0]:
        cotangents, part = model.engine.stage(fwd, cotangents, start, stop, masks)
        bias, start = bias + part, stop
    np.testing.assert_allclose(cotangents["grad"].reshape(whole.shape), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.reshape(2, 3), whole_bias, rtol=1e-5, atol=1e-5)


def test_large_models_share_one_copy_of_their_weights(monkeypatch, exported):
    """Above SHARE_ABOVE every session reads the model's weights in place (add_initializer):
    the graphs carry stubs, no session falls back to its own copy, and the results stay exact."""
    from pathonnx.graph import weights

    monkeypatch.setattr(weights, "SHARE_ABOVE", 0)

    def no_copies(self, proto):
        raise AssertionError("a session took its own copy of the weights")

    path, module = exported("resnet")
    model = pathonnx.load(path, device="cpu")
    monkeypatch.setattr(weights.Weights, "inflate", no_copies)
    x = zoo.example_input("resnet", batch=2, seed=5)
    linear = model.linearize(x, [1, 7])
    fwd = model.forward(x)
    grads = model.engine.stage(fwd, {"seed": np.eye(10, dtype=np.float32)[[1, 7]]}, None, 0)[0]
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fwd.logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(linear.output(x), fwd.logits[[0, 1], [1, 7]], rtol=1e-4)
    np.testing.assert_allclose(grads["grad"], linear.W, rtol=1e-4, atol=1e-6)
    stubbed = [t for t in model.graph.proto.graph.initializer if weights.stub_key(t)]
    assert stubbed and model.graph.weights.nbytes >= sum(np.prod(t.dims) * 4 for t in stubbed)
    assert all(weights.has_stubs(proto) for proto, _ in model.engine._sessions.values()
               if proto.graph.initializer)  # fmt: skip
