"""How a generator is trained: :class:`Settings`, with the defaults that ``pathonnx learn``
shows, and which models it trains for (:func:`check_gates`). This module needs no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from ..methods.learned import GRANULARITIES


@dataclass(frozen=True)
class Settings:
    """How a generator is trained (defaults in brackets).

    ``granularity`` ["channel"]: one mask per channel of a gate, or per "unit" (small models);
    ``epochs`` [30], ``batch`` [64] inputs per step, ``lr`` [1e-3] (Adam), ``sparsity``
    [0.5] λ, the weight of the l2 term; ``baseline`` [1.0] μ, the weight of the baseline
    term (:mod:`.training`; 0 leaves the paper's loss); ``patience`` [5] epochs without a
    better validation loss before stopping; ``seed`` [0]; ``temperature`` [1.0] of the distillation;
    ``val_share`` [0.1] of the inputs held out (per class); ``embed`` [16], ``size`` [4] and
    ``width`` [32]: the generator's sizes (:mod:`.generator`); ``daq_start`` [0.2],
    ``daq_decay`` [0.8] per epoch and ``daq_end`` [0.02]: DAQ's temperature; ``steps``
    [None]: at most this many batches per epoch (None: all); ``min_delta`` [1e-3]: an epoch
    is better when its validation loss is below the best one by more than this share."""

    granularity: str = "channel"
    epochs: int = 30
    batch: int = 64
    lr: float = 1e-3
    sparsity: float = 0.5
    baseline: float = 1.0
    patience: int = 5
    seed: int = 0
    temperature: float = 1.0
    val_share: float = 0.1
    embed: int = 16
    size: int = 4
    width: int = 32
    daq_start: float = 0.2
    daq_decay: float = 0.8
    daq_end: float = 0.02
    steps: int | None = None
    min_delta: float = 1e-3

    #: Settings a resumed run may change.
    RESUMABLE = ("epochs", "patience", "min_delta")

    def check(self) -> Settings:
        """Raise InputError naming the first setting out of its range."""
        if self.granularity not in GRANULARITIES:
            raise InputError(f"granularity {self.granularity!r} is unknown; use "
                             f"{' or '.join(GRANULARITIES)}")  # fmt: skip
        counts = {"epochs": self.epochs, "batch": self.batch, "patience": self.patience,
                  "embed": self.embed, "size": self.size, "width": self.width}  # fmt: skip
        if self.steps is not None:
            counts["steps"] = self.steps
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r} must be a positive integer")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed={self.seed!r} must be an integer >= 0")
        positive = {"lr": self.lr, "temperature": self.temperature,
                    "daq_start": self.daq_start, "daq_end": self.daq_end}  # fmt: skip
        for name, value in positive.items():
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"{name}={value!r} must be a positive number")
        for name, value in (("sparsity", self.sparsity), ("baseline", self.baseline)):
            if not np.isfinite(value) or value < 0:
                raise InputError(f"{name}={value!r} must be a number >= 0")
        if not 0 < self.val_share < 1:
            raise InputError(f"val_share={self.val_share!r} must be in (0, 1)")
        if not 0 <= self.min_delta < 1:
            raise InputError(f"min_delta={self.min_delta!r} must be in [0, 1)")
        if not 0 < self.daq_decay <= 1:
            raise InputError(f"daq_decay={self.daq_decay!r} must be in (0, 1]")
        return self

    def daq_temperature(self, epoch: int) -> float:
        """DAQ's temperature in ``epoch`` (0-based): it depends on the epoch alone, so that a
        run extended with more epochs goes on as a longer one would have."""
        return max(self.daq_end, self.daq_start * self.daq_decay**epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    def resumable_key(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self.RESUMABLE}


def check_gates(model) -> None:
    """The generator reads gates of per-sample shape (C,) or (C, H, W): refuse others."""
    for gate in model.gates:
        if len(gate.shape) not in (1, 3):
            raise InputError(
                f"gate {gate.name!r} has per-sample shape {tuple(gate.shape)}; pathonnx learn "
                "handles gates of shape (C,) and (C, H, W)"
            )
    if not model.gates:
        raise InputError("the model has no gates: there is no pathway to learn")
