"""Shared fixtures: torch exports of the zoo, made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(arch, exporter, opset)`` -> (path, torch module); each export is made once."""
    import zoo

    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[tuple[str, str, int], tuple[Path, object]] = {}

    def get(arch: str, exporter: str = "legacy", opset: int = 13):
        key = (arch, exporter, opset)
        if key not in cache:
            path = folder / f"{arch}-{exporter}-{opset}.onnx"
            module, _ = zoo.export(arch, path, exporter, opset)
            cache[key] = (path, module)
        return cache[key]

    return get
