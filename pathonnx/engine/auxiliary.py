"""Auxiliary graphs run beside a model: a pathway generator's session, on the model's device."""

from __future__ import annotations

from ..graph import boundary
from ..graph.auxiliary import GraphFile
from .resident import Device
from .session import make_session, provider_names


class GraphRunner:
    """One auxiliary graph (:class:`~pathonnx.graph.auxiliary.GraphFile`) in an onnxruntime
    session on ``providers``. :meth:`run` binds OrtValues where they are (a model's
    activations on the device feed it without a copy) and returns OrtValues there."""

    def __init__(self, file: GraphFile, providers: list):
        self.file = file
        self.providers = providers
        first = provider_names(providers)[0]
        self.dev = Device("cuda" if first == "CUDAExecutionProvider" else "cpu")
        with boundary(file.source, "load it in onnxruntime"):
            self.session = make_session(file.proto, providers)

    def run(self, feeds: dict, outputs: list[str]) -> list:
        """The named ``outputs`` of one run on ``feeds`` (OrtValues or arrays), as OrtValues
        on the device (:meth:`~pathonnx.engine.resident.Device.host` brings them to numpy)."""
        return self.dev.run(self.session, feeds, outputs)
