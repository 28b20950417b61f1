"""GEN-CNP's generator: gate outputs in, one binary pathway per gate out.

The paper's summary (arXiv 2309.09887) names the parts; their sizes and wiring are ours,
chosen to train on two CPU cores in minutes for 32×32 models:

- **RFE**, Recursive Feature Embedder, one per gate. A gate's output (C, H, W) is divided by
  a per-channel scale (the root mean square of that channel over the first training
  samples: the gates' magnitudes differ by orders of magnitude), brought to ``embed`` channels
  by a 1×1 convolution, then halved in resolution by *one* strided 3×3 convolution applied
  recursively (shared weights) until it is ``size``×``size`` (bilinear resizing finishes a
  size that is not a power of two times ``size``). A dense gate (C,) goes through a linear
  layer to ``embed``×``size``×``size``. Every gate ends as one (embed, size, size) map.
- **PDN**, Pathway Distillation Network, shared by all gates. The embeddings of *all* gates
  are stacked on the channel axis and mixed by two 3×3 convolutions into a context of
  ``width`` channels, so deep gates inform shallow ones (the paper's class-relevant
  semantics, Mechanism 1). Each gate's features are then one 1×1 convolution, shared by all
  gates, of its own embedding and the context, plus a learned per-gate vector (which gate
  this is).
- **RPD**, Recursive Pathway Decoder, one per gate: the gate's features become one score per
  channel (a linear layer on the flattened features; granularity "channel", the default) or
  per unit (granularity "unit": one transposed stride-2 convolution applied recursively back
  to H×W, then a 1×1 convolution to C channels). The last layer's bias starts at
  ``INITIAL_SCORE``: every unit kept at first, so that training starts from the model itself
  and the sparsity term removes units.
- **DAQ**, Distance Aware Quantization (Zhou et al., ICCV 2021) onto the levels {0, 1}: the
  score's sigmoid u is assigned to each level q with the weight softmax_q(−|u − q| / T), and
  the soft mask is Σ_q q·weight (for two levels, sigmoid((2u − 1)/T)). T falls during training
  (``Settings``: from ``daq_start`` by ``daq_decay`` per epoch to ``daq_end``), so the soft mask
  approaches the hard one; at inference the mask is the nearest level, [u > 1/2] = [score > 0].
- Every gate keeps at least its top-scoring channel (unit), in training and at inference, as
  the pathwise method keeps a gate's most important unit when none passes. Without it the
  generator learnt, on the shipped ResNet, to remove its first two gates whole: the network
  left then sees nothing of the input, yet its logits still follow the class, because the
  masks of the gates above (decided from the full network's activations) carry it through
  the biases. The pathway's W^p was 0 there and its b^p the whole logit.

Sizes (defaults ``embed=16``, ``size=4``, ``width=32``): about 100 k parameters for the
shipped shapes_vgg (six gates), most of them in the channel decoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The decoders' starting bias: sigmoid(4) = 0.98, a unit kept.
INITIAL_SCORE = 4.0
#: DAQ's levels: a unit removed (0) or kept (1).
LEVELS = (0.0, 1.0)


def halvings(height: int, width: int, size: int) -> int:
    """How often a stride-2 convolution (kernel 3, padding 1) halves (H, W) towards ``size``."""
    steps = 0
    while height > size and width > size:
        height, width, steps = (height + 1) // 2, (width + 1) // 2, steps + 1
    return steps


def daq(scores: torch.Tensor, temperature: float, levels=LEVELS) -> torch.Tensor:
    """Distance Aware Quantization's soft assignment: sigmoid(scores) weighted onto
    ``levels`` by softmax(−distance / temperature); the soft mask, shaped like ``scores``."""
    u = torch.sigmoid(scores)
    q = torch.tensor(levels, dtype=scores.dtype)
    weights = torch.softmax(-(u.unsqueeze(-1) - q).abs() / temperature, dim=-1)
    return (weights * q).sum(-1)


def top(scores: torch.Tensor) -> torch.Tensor:
    """Per sample, the gate's highest score (channel or unit), bool shaped like ``scores``."""
    axes = tuple(range(1, scores.dim()))
    return scores >= torch.amax(scores, dim=axes, keepdim=True)


def hard(scores: torch.Tensor) -> torch.Tensor:
    """DAQ at inference: the nearest level of sigmoid(scores), [score > 0], as bool; and
    every gate keeps at least its top-scoring channel (unit)."""
    return (scores > 0) | top(scores)


def soft(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """DAQ during training (:func:`daq`), with each gate's top-scoring channel (unit) kept."""
    return torch.where(top(scores), torch.ones_like(scores), daq(scores, temperature))


class Embedder(nn.Module):
    """RFE: one gate's output -> (embed, size, size)."""

    def __init__(self, shape: tuple[int, ...], embed: int, size: int):
        super().__init__()
        self.shape, self.embed, self.size = tuple(shape), embed, size
        self.register_buffer("inv_scale", torch.ones(shape[0]))
        if len(shape) == 1:
            self.dense = nn.Linear(shape[0], embed * size * size)
        else:
            self.stem = nn.Conv2d(shape[0], embed, 1)
            self.down = nn.Conv2d(embed, embed, 3, stride=2, padding=1)
            self.steps = halvings(shape[1], shape[2], size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if len(self.shape) == 1:
            e = F.relu(self.dense(h * self.inv_scale))
            return e.reshape(-1, self.embed, self.size, self.size)
        e = F.relu(self.stem(h * self.inv_scale.reshape(1, -1, 1, 1)))
        for _ in range(self.steps):  # recursive: the same convolution each time
            e = F.relu(self.down(e))
        if tuple(e.shape[2:]) != (self.size, self.size):
            e = F.interpolate(e, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)  # fmt: skip
        return e


class Distiller(nn.Module):
    """PDN: every gate's embedding -> per gate (width, size, size) features, each informed by
    all gates through a shared context."""

    def __init__(self, gates: int, embed: int, width: int):
        super().__init__()
        self.context = nn.Sequential(
            nn.Conv2d(gates * embed, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.mix = nn.Conv2d(embed + width, width, 1)  # shared by every gate
        self.which = nn.Parameter(torch.zeros(gates, width))

    def forward(self, embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
        context = self.context(torch.cat(embeddings, dim=1))
        return [
            F.relu(self.mix(torch.cat([e, context], dim=1)) + self.which[i].reshape(1, -1, 1, 1))
            for i, e in enumerate(embeddings)
        ]


class Decoder(nn.Module):
    """RPD: one gate's features -> its scores, (C,) per channel or gate.shape per unit."""

    def __init__(self, shape: tuple[int, ...], width: int, size: int, granularity: str):
        super().__init__()
        self.shape = tuple(shape)
        self.per_unit = granularity == "unit" and len(shape) > 1
        if self.per_unit:
            self.up = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
            self.steps = halvings(shape[1], shape[2], size)
            self.head = nn.Conv2d(width, shape[0], 1)
        else:
            self.head = nn.Linear(width * size * size, shape[0])
        nn.init.constant_(self.head.bias, INITIAL_SCORE)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if not self.per_unit:
            return self.head(f.flatten(1))
        for _ in range(self.steps):  # recursive: the same transposed convolution each time
            f = F.relu(self.up(f))
        if tuple(f.shape[2:]) != self.shape[1:]:
            f = F.interpolate(f, size=self.shape[1:], mode="bilinear", align_corners=False)
        return self.head(f)


class GenCNP(nn.Module):
    """The generator for gates of per-sample ``shapes`` ((C,) or (C, H, W), in the model's
    gate order). :meth:`scores` gives each gate's scores (N, C) or (N, *shape);
    :meth:`forward` (what is exported) the hard masks, bool."""

    def __init__(self, shapes, granularity: str = "channel", embed: int = 16, size: int = 4,
                 width: int = 32):  # fmt: skip
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.granularity = granularity
        self.embedders = nn.ModuleList(Embedder(s, embed, size) for s in self.shapes)
        self.distiller = Distiller(len(self.shapes), embed, width)
        self.decoders = nn.ModuleList(Decoder(s, width, size, granularity) for s in self.shapes)

    def scores(self, activations) -> list[torch.Tensor]:
        embeddings = [rfe(h) for rfe, h in zip(self.embedders, activations)]
        features = self.distiller(embeddings)
        return [rpd(f) for rpd, f in zip(self.decoders, features)]

    def forward(self, *activations) -> tuple[torch.Tensor, ...]:
        return tuple(hard(s) for s in self.scores(activations))

    def set_scales(self, rms: list[torch.Tensor]) -> None:
        """Each gate's per-channel input scale: 1 / RMS, floored at 1e-3 of the gate's
        largest channel RMS (a channel that never fires keeps a finite scale)."""
        with torch.no_grad():
            for rfe, r in zip(self.embedders, rms):
                floor = max(float(r.max()) * 1e-3, 1e-12)
                rfe.inv_scale.copy_(1.0 / r.clamp(min=floor))
