"""SmoothGrad's noise (pathonnx.graph.noise): a hash of (seed, copy, element), checked against
a numpy statement of it, for its distribution, and for what it buys: the same map on every
run and in every batch."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from helpers import VGG, rand
from scipy import stats
from test_attribution import PRIME, _hash

import pathonnx
from pathonnx.graph.noise import noise_graph


def graph_noise(copies, seed: int, elements: int) -> np.ndarray:
    session = onnxruntime.InferenceSession(noise_graph(elements).SerializeToString(),
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    feeds = {"copy": np.asarray(copies, np.int64), "seed": np.array([seed], np.int64)}
    return session.run(["noise"], feeds)[0]


def numpy_noise(copies, seed: int, elements: int) -> np.ndarray:
    counter = np.asarray(copies, np.int64)[:, None] * elements + np.arange(elements)
    key = _hash(np.int64(seed))
    u1, u2 = ((_hash(2 * counter + key + i) + 0.5) / PRIME for i in (0, 1))
    return np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7])
def test_the_graph_computes_the_stated_hash(seed):
    got = graph_noise([0, 1, 5], seed, 3000)
    assert got.dtype == np.float32 and got.shape == (3, 3000)
    np.testing.assert_allclose(got, numpy_noise([0, 1, 5], seed, 3000), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_the_noise_is_standard_normal_and_uncorrelated(seed):
    z = graph_noise(np.arange(25), seed, 12288).astype(np.float64)  # 307,200 draws
    flat = z.ravel()
    bound = 4 / np.sqrt(flat.size)  # four standard errors
    assert abs(flat.mean()) < bound and abs(flat.std() - 1) < bound
    for lag in (1, 2, 3, 64, 12288):
        assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < bound
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    other = graph_noise(np.arange(25), seed + 1, 12288).ravel()
    assert abs(np.corrcoef(flat, other)[0, 1]) < bound  # another seed, other noise


def test_smoothgrad_is_the_same_on_every_run_and_in_every_batch():
    model = pathonnx.load(VGG, device="cpu")
    x = rand(3, *model.input_shape, seed=4)
    params = {"samples": 6, "stdev": 0.3, "seed": 9, "batch": 4}
    whole = pathonnx.attribute(model, x, [1, 2, 3], method="smoothgrad", **params)
    again = pathonnx.attribute(model, x, [1, 2, 3], method="smoothgrad", **params)
    np.testing.assert_array_equal(whole, again)
    alone = pathonnx.attribute(model, x[1:2], [2], method="smoothgrad", **params)
    np.testing.assert_allclose(alone[0], whole[1], rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    other = pathonnx.attribute(model, x, [1, 2, 3], method="smoothgrad", **{**params, "seed": 10})
    assert not np.allclose(other, whole)
