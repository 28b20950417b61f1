"""Pathwise explanation against the paper's per-gate recomputation in torch (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import zoo
from oracle import TorchOracle, pathwise_reference

import pathonnx
from pathonnx.methods.selection import select_units

CASES = [
    ("mlp", {}),
    ("vgg_bn", {}),
    ("vgg_bn", {"width": 1}),
    ("resnet", {"depth": 5}),
    ("resnet", {"width": 4}),
    ("mobilenetv2", {"depth": 3, "width": 16}),
    ("densenet", {"depth": 1, "width": "5%"}),
    ("inception", {"depth": 4}),
    ("leaky_prelu", {}),
    ("hardsigmoid", {}),
]


@pytest.mark.parametrize(("arch", "params"), CASES, ids=lambda c: str(c))
def test_pathwise_matches_per_gate_recomputation(arch, params, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=4)
    pathway = pathonnx.pathwise(model, x, **params)
    width = params.get("width")
    if isinstance(width, str):  # the reference takes a count: 5% of the top gate, rounded up
        width = int(np.ceil(model.gates[-1].units * 0.05))
    oracle = TorchOracle(module)
    reference = pathwise_reference(oracle, x, pathway.target, params.get("depth"), width)
    chosen = [g for g in model.gates if g.name in pathway.masks]
    assert len(chosen) == params.get("depth", len(model.gates))
    for gate, ref in zip(model.gates, reference):
        if ref is None:
            assert gate.name not in pathway.masks
            continue
        got = pathway.masks[gate.name]
        # float32 against float64 may swap near-ties; anything more is a bug
        assert (got != ref).mean() <= 0.01, gate.name
    # W^p of the one-sweep result is the masked gradient through the chosen units
    ordered = [pathway.masks.get(g.name) for g in model.gates]
    grad = oracle.gradient(x, pathway.target, ordered)
    cos = (pathway.linear.W * grad).reshape(2, -1).sum(1) / (
        np.linalg.norm(pathway.linear.W.reshape(2, -1), axis=1)
        * np.linalg.norm(grad.reshape(2, -1), axis=1)
    )
    assert cos.min() >= 0.9999
    again = model.linearize(x, pathway.target, pathway.masks)
    np.testing.assert_allclose(pathway.linear.W, again.W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pathway.linear.b, again.b, rtol=1e-5, atol=1e-6)


def test_select_units_rule():
    importance = np.array([[0.3, 0.5, 0.5, 0.05, 0.2]])
    # ties keep the lower index first; width 2 keeps units 1 and 2
    assert select_units(importance, 2, 0.1).nonzero()[1].tolist() == [1, 2]
    # of the first 4, only those above alpha
    assert select_units(importance, 4, 0.25).nonzero()[1].tolist() == [0, 1, 2]
    # none above alpha: the single most important
    assert select_units(importance, 5, 0.9).nonzero()[1].tolist() == [1]


def test_unlimited_pathway_over_all_gates_keeps_no_dead_units(exported):
    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=1)
    pathway = pathonnx.pathwise(model, x)
    for name, share in pathway.stats["dead_share"].items():
        assert (share == 0).all(), name


def test_bad_parameters(exported):
    path, _ = exported("mlp")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("mlp", batch=1)
    with pytest.raises(pathonnx.InputError, match="depth"):
        pathonnx.pathwise(model, x, depth=99)
    with pytest.raises(pathonnx.InputError, match="width"):
        pathonnx.pathwise(model, x, width=0)
    with pytest.raises(pathonnx.InputError, match="width"):
        pathonnx.pathwise(model, x, width="200%")


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet"])
def test_decomposition_seeds_and_paths(arch, exported):
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=7)
    target = np.array([2, 6])
    paths = pathonnx.decompose(model, x, target, paths=3, depth=4, width=6)
    top = model.gates[-1]
    oracle = TorchOracle(module)
    # the seeds are the top gate's units of largest h·∂logit[target]/∂h, in order
    fwd = model.forward(x)
    grads = pathonnx.engine.gate_cotangents(model, fwd, target)[top.name]
    contribution = (fwd.activations[top.name] * grads).reshape(2, -1)
    expected = np.argsort(-contribution, axis=1, kind="stable")[:, :3]
    for m, pathway in enumerate(paths):
        seed = pathway.masks[top.name].reshape(2, -1)
        assert seed.sum(1).tolist() == [1, 1]
        assert seed.argmax(1).tolist() == expected[:, m].tolist()
        # below the seed, Algorithm 1 as the paper's per-gate recomputation runs it
        reference = pathwise_reference(
            oracle, x, target, depth=4, width=6, forced_top=pathway.masks[top.name]
        )
        for gate, ref in zip(model.gates, reference):
            if ref is not None:
                assert (pathway.masks[gate.name] != ref).mean() <= 0.01, gate.name
        again = model.linearize(x, target, pathway.masks)
        np.testing.assert_allclose(pathway.linear.W, again.W, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(paths[0].masks[top.name], paths[1].masks[top.name])


def test_decomposition_takes_the_classes_approximation(exported):
    """The decomposition gets the pathwise parameters from the registry, classes included."""
    path, module = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=7)
    target = np.array([2, 6])
    paths = pathonnx.decompose(model, x, target, paths=2, depth=4, width=6, classes=3)
    oracle = TorchOracle(module)
    top = model.gates[-1]
    for pathway in paths:
        assert pathway.params["classes"] == 3
        reference = pathwise_reference(oracle, x, target, depth=4, width=6, classes=3,
                                       forced_top=pathway.masks[top.name])  # fmt: skip
        for gate, ref in zip(model.gates, reference):
            if ref is not None:
                assert (pathway.masks[gate.name] != ref).mean() <= 0.01, gate.name
    exact = pathonnx.decompose(model, x, target, paths=2, depth=4, width=6)
    assert any(
        not np.array_equal(a.masks[g], b.masks[g]) for a, b in zip(paths, exact) for g in a.masks
    )


def test_classes_approximation_agrees_with_the_exact_selection(exported):
    """``classes=k`` (softmax over the k top logits + the target) against all K outputs."""
    path, _ = exported("resnet")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("resnet", batch=4, seed=12)
    target = np.array([0, 3, 5, 9])  # some targets outside the top logits, too
    exact = pathonnx.pathwise(model, x, target, depth=4, width=16)
    agreement = {}
    for k in (3, 6, 9):
        approx = pathonnx.pathwise(model, x, target, depth=4, width=16, classes=k)
        agreement[k] = np.mean([
            (approx.masks[g] & exact.masks[g]).sum() / exact.masks[g].sum() for g in exact.masks
        ])  # fmt: skip
        again = model.linearize(x, target, approx.masks)
        np.testing.assert_allclose(approx.linear.W, again.W, rtol=1e-5, atol=1e-7)
    # the share of the exact selection that the approximation keeps (measured on this random
    # model with width 16: 0.55 at k = 3, 0.75 at k = 6, 0.90 at k = 9)
    print("classes=k agreement with the exact selection:", agreement)
    assert agreement[9] >= 0.85 and agreement[6] >= 0.7 and agreement[3] >= 0.4, agreement
    all_k = pathonnx.pathwise(model, x, target, depth=4, width=16, classes=10)
    assert all(np.array_equal(all_k.masks[g], exact.masks[g]) for g in exact.masks)
    # without a width, the default alpha 1/R keeps no unit that contributes nothing: no dead
    # unit (with alpha 1/K, every unit would pass the approximation's softmax over R < K rows)
    free = pathonnx.pathwise(model, x, target, classes=3)
    for name, share in free.stats["dead_share"].items():
        assert (share == 0).all(), name
        assert (free.stats["units_kept"][name] < np.prod(free.masks[name].shape[1:])).all()


@pytest.mark.parametrize("arch", ["resnet", "vgg_bn"])
def test_sweep_under_a_tiny_memory_budget_gives_the_same_pathway(arch, exported):
    # A budget of one byte walks one row at a time and never stores the rows at a cut, so
    # every gate's rows are recomputed from the top through the masks fixed so far.
    path, _ = exported(arch)
    x = zoo.example_input(arch, batch=2, seed=7)
    model = pathonnx.load(path, device="cpu")
    whole = pathonnx.pathwise(model, x, width=8)
    model.engine.memory_budget = model.engine.store_budget = 1
    chunked = pathonnx.pathwise(model, x, width=8)
    assert whole.masks.keys() == chunked.masks.keys()
    for name, mask in whole.masks.items():
        assert (mask != chunked.masks[name]).mean() <= 0.001, name
    np.testing.assert_allclose(chunked.linear.W, whole.linear.W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked.linear.b, whole.linear.b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "params"),
    [("vgg_bn", {"width": 1}), ("vgg_bn", {"width": 3}), ("mlp", {"width": 2}),
     ("vgg_bn", {"width": "1%", "depth": 4}), ("leaky_prelu", {"width": 2}),
     ("mobilenetv2", {"width": 2}), ("hardsigmoid", {"width": 2})],
)  # fmt: skip
def test_sparse_walk_below_narrow_gates_equals_the_dense_walk(arch, params, exported, monkeypatch):
    from pathonnx.engine.sparse import SparseWalker
    from pathonnx.methods import pathwise as pathways

    path, _ = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=2, seed=11)
    calls = []
    walk = SparseWalker.walk
    monkeypatch.setattr(SparseWalker, "walk", lambda self, *a: calls.append(1) or walk(self, *a))
    fast = pathonnx.pathwise(model, x, **params)
    assert calls or arch == "mobilenetv2"  # every stage of a plain chain is walked sparse
    monkeypatch.setattr(pathways, "_narrow", lambda *a, **k: False)
    dense = pathonnx.pathwise(model, x, **params)
    for name, mask in dense.masks.items():
        assert (mask != fast.masks[name]).mean() <= 0.001, name
    np.testing.assert_allclose(fast.linear.W, dense.linear.W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.linear.b, dense.linear.b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(40))
def test_sparse_selection_is_the_rule_on_the_full_scores(seed):
    from pathonnx.methods.selection import select_sparse

    rng = np.random.default_rng(seed)
    units, k = int(rng.integers(5, 40)), int(rng.integers(2, 6))
    fill = np.float32(1) / np.float32(k)
    idx = np.sort(rng.choice(units, int(rng.integers(0, units + 1)), replace=False))
    imp = rng.choice([fill, fill / 2, fill * 1.5, 0.9], len(idx)).astype(np.float32)
    alpha = float(rng.choice([fill, fill * 0.5, 0.5, 0.95]))
    width = int(rng.integers(1, units + 1))
    full = np.full(units, fill, np.float32)
    full[idx] = imp
    want = select_units(full[None], width, alpha)[0]
    np.testing.assert_array_equal(select_sparse(imp, idx, units, width, alpha, fill), want)


@pytest.mark.parametrize("limit", [1, 200, 1 << 24])
def test_sparse_walk_falls_back_to_dense_when_the_cotangent_spreads(limit, exported, monkeypatch):
    # depth 2 leaves the gates below unmasked, so the final walk spreads the few entries out;
    # past SparseWalker.limit the stage runs dense, with the same result
    from pathonnx.methods import pathwise as pathways

    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=13)
    model.engine.sparse_walker.limit = limit
    fast = pathonnx.pathwise(model, x, depth=2, width=1)
    monkeypatch.setattr(pathways, "_narrow", lambda *a, **k: False)
    dense = pathonnx.pathwise(model, x, depth=2, width=1)
    for name, mask in dense.masks.items():
        np.testing.assert_array_equal(mask, fast.masks[name])
    np.testing.assert_allclose(fast.linear.W, dense.linear.W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast.linear.b, dense.linear.b, rtol=1e-4, atol=1e-5)


def test_sparse_choice_scores_only_the_units_with_a_cotangent(exported):
    # below a narrow gate the choice is made on the few units with a cotangent, scored by the
    # device graphs; a sample with none left chooses as the rule does on uniform scores
    from pathonnx.methods.pathwise import _Sparse

    path, _ = exported("vgg_bn")
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input("vgg_bn", batch=2, seed=3)
    fwd, gate, r = model.forward(x), model.gates[-2], 4
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(gate.units, 7, replace=False))
    vals = rng.standard_normal((r, 7)).astype(np.float32)
    entries = [(idx, vals), (np.empty(0, np.int64), np.empty((r, 0), np.float32))]
    sparse = _Sparse(0, entries, np.zeros((2, r)), r)
    row, alpha = np.array([1, 2]), np.full(2, 0.25)
    mask = sparse.select(model.engine, fwd, gate, row, None, 3, alpha)
    # the same choice made dense, every other unit at the uniform 1/R
    dense = np.zeros((2, r, gate.units), np.float32)
    dense[0][:, idx] = vals
    h = fwd.activations[gate.name].reshape(2, -1)
    part = h[:, None] * dense
    e = np.exp(part - part.max(axis=1, keepdims=True))
    imp = (e / e.sum(axis=1, keepdims=True))[np.arange(2), row]
    imp[1] = np.float32(1) / np.float32(r)
    want = select_units(imp.astype(np.float32), 3, 0.25)
    assert (mask == want).all()
    assert mask[1].sum() == 1 and mask[1][0]  # nothing passes 1/R: the first unit


def test_a_store_that_fits_part_of_the_rows_moves_those_on_and_walks_the_others_again(
    exported, monkeypatch
):
    # One row per call, and a store that holds about half of the rows at the largest cut: at
    # the large cuts some chunks move on and the others are walked again from where they are.
    from pathonnx.engine import sweep

    path, _ = exported("vgg_bn")
    x = zoo.example_input("vgg_bn", batch=2, seed=7)
    model = pathonnx.load(path, device="cpu")
    model.engine.memory_budget = 1
    lagging, stored = [], []
    advance = sweep.RowStore.advance

    def watched(self, stop, masks):
        yield from advance(self, stop, masks)
        lagging.append(sum(start != self.start for _, _, start in self.chunks))
        stored.append(sum(self._bytes(c) for c, _, _ in self.chunks))

    monkeypatch.setattr(sweep.RowStore, "advance", watched)
    whole = pathonnx.pathwise(model, x)
    assert max(lagging) == 0
    model.engine.store_budget = int(0.6 * max(stored))
    lagging.clear()
    mixed = pathonnx.pathwise(model, x)
    assert 0 < max(lagging) < model.num_outputs, lagging  # some moved on, some stayed
    for name, mask in whole.masks.items():
        np.testing.assert_array_equal(mask, mixed.masks[name], err_msg=name)
    np.testing.assert_allclose(mixed.linear.W, whole.linear.W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mixed.linear.b, whole.linear.b, rtol=1e-5, atol=1e-6)
