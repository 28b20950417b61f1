"""Training a generator: distillation to the model, an l2 sparsity term, early stopping and
checkpoints.

Per batch x (Lin et al. 2023: knowledge distillation plus an l2 sparsity term):

- the model runs at x (onnxruntime): its logits z and every gate's output h;
- the generator reads the h and gives per gate its scores and DAQ's soft mask m (in [0, 1]);
- the *pathway network*, the model with each gate's output multiplied by its m, runs at x
  (:class:`~pathonnx.learn.autograd.PathwayNetwork`): logits z^p;
- loss = KD + μ·B + λ·S. KD = T²·KL(softmax(z/T) ‖ softmax(z^p/T)), averaged over the batch;
  S = mean_l mean(m_l²), the l2 term over each gate's masks and then over the gates (λ is
  ``sparsity``; the paper's l2 norm, divided by the number of masks so that λ does not depend
  on the model's width). The sparsity each input gets is its own, not a global quota.
- B, the *baseline term* (weight μ, ``baseline``; ours, not the paper's): the same pathway
  network (x's masks) run at the baseline input x̃ = 0, distilled towards the model's own
  output at x̃. Without it (μ = 0, the paper's loss) the generator learnt, on the shipped
  ResNet, a pathway that reproduces the model's logits without seeing the input: it kept one
  channel of the first two gates (none, before every gate had to keep its top channel, see
  :mod:`.generator`), and the class reached the logits through the masks of the gates above,
  which the generator decides from the full network's activations, and the biases they let
  through. The pathway's W^p·x then carried under 1% of its logit. With B, a pathway whose
  output does not depend on the input costs as much at x̃ as it gains at x.

After each epoch the held-out inputs are measured with the *hard* masks, the ones an
explanation uses: their KD loss, baseline term, l2 term (the share of masks kept) and the
share of the model's units kept. Training stops when the validation loss, KD + μ·B + λ·S,
has not improved for
``patience`` epochs, and the generator of the best epoch is kept. (The KD loss alone would
stop at once: it is smallest where every unit is kept, which is where training starts.)

A checkpoint, written atomically after every epoch, holds everything a run needs to go on
(the generator, Adam's state, the best epoch so far, the history): a run started again with
the same model, data and settings resumes after the last finished epoch, and ends as the
uninterrupted run would have (every draw is derived from ``seed`` and the epoch). ``epochs``
and ``patience`` may differ on resuming, so a finished run can be extended.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io import atomic_write_bytes, read_bytes
from .autograd import pathway_logits
from .data import Examples, split
from .generator import GenCNP, soft
from .settings import Settings, check_gates

#: What a checkpoint file says it is.
CHECKPOINT_FORMAT = "pathonnx.gencnp.checkpoint/1"
#: Inputs whose gate outputs set the generator's per-channel input scales.
CALIBRATION = 256


@dataclass
class Trained:
    """A trained generator (``generator``, the best epoch's weights, in eval mode), its
    ``settings``, the ``history`` (one dict per epoch: training and validation losses), the
    ``best_epoch`` (1-based), whether it ``stopped_early``, the epoch a checkpoint let it
    resume after (``resumed_from``, 0 for a fresh run) and the ``seconds`` this run took."""

    generator: GenCNP
    settings: Settings
    history: list[dict]
    best_epoch: int
    stopped_early: bool
    resumed_from: int
    seconds: float
    split: dict = field(default_factory=dict)

    @property
    def losses(self) -> dict:
        """The best epoch's record (what the generator file records as its final losses)."""
        return dict(self.history[self.best_epoch - 1]) if self.history else {}


def _activations(model, fwd) -> list[torch.Tensor]:
    return [torch.from_numpy(np.array(fwd.activations[g.name], np.float32)) for g in model.gates]


def distillation(teacher: np.ndarray, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)) per sample (N,) (Hinton et al. 2015)."""
    t = torch.from_numpy(np.array(teacher, np.float32)).to(student.dtype) / temperature
    log_p, log_q = F.log_softmax(t, dim=1), F.log_softmax(student / temperature, dim=1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(dim=1)


def l2_term(masks: list[torch.Tensor]) -> torch.Tensor:
    """mean over gates of mean(m²) over each gate's masks, per sample (N,)."""
    return torch.stack([(m**2).flatten(1).mean(dim=1) for m in masks]).mean(dim=0)


def _calibrate(generator: GenCNP, model, examples: Examples, index: np.ndarray, batch: int):
    """Set the generator's input scales from the RMS of each channel over ``index``."""
    sums = [torch.zeros(g.shape[0], dtype=torch.float64) for g in model.gates]
    count = 0
    for lo in range(0, len(index), batch):
        fwd = model.forward(examples.batch(index[lo : lo + batch]))
        for i, h in enumerate(_activations(model, fwd)):
            per_channel = (h.double() ** 2).transpose(0, 1).reshape(h.shape[1], -1)
            sums[i] += per_channel.mean(dim=1) * len(h)
        count += len(fwd.x)
    generator.set_scales([(s / count).sqrt().float() for s in sums])


def _baseline_term(model, x: np.ndarray, masks, settings: Settings) -> torch.Tensor:
    """The baseline term per sample (N,): the pathway network of x's masks run at the
    baseline input x̃ = 0 (the model's input space, the deletion metrics' baseline),
    distilled towards the model's own output at x̃."""
    zeros = np.zeros_like(x)
    teacher = np.broadcast_to(model.logits(zeros[:1]), (len(x), model.num_outputs))
    logits = pathway_logits(model, zeros, masks, settings.granularity)
    return distillation(teacher, logits, settings.temperature)


def _validate(generator: GenCNP, model, examples: Examples, index: np.ndarray,
              settings: Settings) -> dict:  # fmt: skip
    """The held-out inputs with the hard masks: KD, l2 (share of masks kept), loss, share of
    the model's units kept, and agreement of the pathway network's prediction with the
    model's."""
    units = np.array([g.units for g in model.gates], np.float64)
    per_mask = np.array([g.units / g.shape[0] if settings.granularity == "channel" else 1.0
                         for g in model.gates])  # fmt: skip
    kd, base, l2, kept, agree = [], [], [], [], []
    with torch.no_grad():
        for lo in range(0, len(index), settings.batch):
            x = examples.batch(index[lo : lo + settings.batch])
            fwd = model.forward(x)
            masks = [m.float() for m in generator(*_activations(model, fwd))]
            logits = pathway_logits(model, x, masks, settings.granularity)
            kd += distillation(fwd.logits, logits, settings.temperature).tolist()
            if settings.baseline > 0:
                base += _baseline_term(model, x, masks, settings).tolist()
            l2 += l2_term(masks).tolist()
            counts = np.stack([m.flatten(1).sum(dim=1).numpy() for m in masks], axis=1)
            kept += ((counts * per_mask).sum(axis=1) / units.sum()).tolist()
            agree += (logits.argmax(dim=1).numpy() == fwd.logits.argmax(axis=1)).tolist()
    out = {"val_kd": float(np.mean(kd)), "val_baseline": float(np.mean(base or [0.0])),
           "val_l2": float(np.mean(l2))}  # fmt: skip
    out["val_loss"] = (out["val_kd"] + settings.baseline * out["val_baseline"]
                       + settings.sparsity * out["val_l2"])  # fmt: skip
    out["val_units_kept"] = float(np.mean(kept))
    out["val_agreement"] = float(np.mean(agree))
    return out


def _fingerprint(model, examples: Examples, settings: Settings) -> dict:
    return {"model_sha256": model.sha256(), "data": examples.fingerprint,
            "settings": settings.resumable_key()}  # fmt: skip


def _load_checkpoint(path: Path, fingerprint: dict) -> dict | None:
    """The checkpoint at ``path`` if there is one, checked to be of this run; None if the
    file does not exist. Not recorded as an input: the run writes it again."""
    if not path.exists():
        return None
    data = read_bytes(path, "the checkpoint", None, note=False)
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
        assert isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT
    except Exception:
        raise InputError(f"{path}: not a checkpoint of pathonnx learn (or a damaged one); "
                         "delete it, or pass another --checkpoint") from None  # fmt: skip
    theirs = state["fingerprint"]
    for key, what in (("model_sha256", "another model"), ("data", "other data"),
                      ("settings", "other settings")):  # fmt: skip
        if theirs.get(key) != fingerprint[key]:
            detail = ""
            if key == "settings":
                changed = sorted(k for k in fingerprint[key]
                                 if theirs[key].get(k) != fingerprint[key][k])  # fmt: skip
                detail = f": {', '.join(changed)}"
            raise InputError(f"{path}: the checkpoint is of a run on {what}{detail}; delete it "
                             "to start afresh, or pass another --checkpoint")  # fmt: skip
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train(model, examples: Examples, settings: Settings | None = None,
          checkpoint: str | Path | None = None,
          progress: Callable[[dict], None] | None = None) -> Trained:  # fmt: skip
    """Train a GEN-CNP generator for ``model`` on ``examples`` (see the module docstring).

    ``checkpoint``: a file to resume from when it exists and to write after every epoch.
    ``progress(event)`` hears every step (``{"phase": "step", "epoch", "epochs", "step",
    "steps", "kd", "baseline", "l2", "loss", "temperature"}``, running means over the
    epoch) and every epoch's end (``"phase": "epoch"`` with the validation terms).
    Deterministic for a seed."""
    settings = (settings or Settings()).check()
    check_gates(model)
    started = time.perf_counter()
    train_index, val_index = split(examples.labels, settings.val_share, settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        generator = GenCNP([g.shape for g in model.gates], settings.granularity,
                           settings.embed, settings.size, settings.width)  # fmt: skip
    _calibrate(generator, model, examples, train_index[:CALIBRATION], settings.batch)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings.lr)
    fingerprint = _fingerprint(model, examples, settings)
    path = None if checkpoint is None else Path(checkpoint)
    state = None if path is None else _load_checkpoint(path, fingerprint)
    if state is None:
        state = {"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": 0,
                 "best_epoch": 0, "best_loss": float("inf"), "best": None, "stale": 0,
                 "stopped": False, "history": []}  # fmt: skip
    else:
        generator.load_state_dict(state["generator"])
        optimizer.load_state_dict(state["optimizer"])
    resumed = int(state["epoch"])
    lam, batch = settings.sparsity, settings.batch
    for epoch in range(resumed, settings.epochs):
        if state["stopped"]:
            break
        generator.train()
        temperature = settings.daq_temperature(epoch)
        order = np.random.default_rng([settings.seed, 2, epoch]).permutation(train_index)
        batches = [order[lo : lo + batch] for lo in range(0, len(order), batch)]
        batches = batches[: settings.steps] if settings.steps is not None else batches
        sums = {"kd": 0.0, "baseline": 0.0, "l2": 0.0, "loss": 0.0}
        for step, index in enumerate(batches, 1):
            x = examples.batch(index)
            fwd = model.forward(x)
            masks = [soft(s, temperature) for s in generator.scores(_activations(model, fwd))]
            logits = pathway_logits(model, x, masks, settings.granularity)
            kd = distillation(fwd.logits, logits, settings.temperature).mean()
            base = torch.zeros(())
            if settings.baseline > 0:
                base = _baseline_term(model, x, masks, settings).mean()
            l2 = l2_term(masks).mean()
            loss = kd + settings.baseline * base + lam * l2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in (("kd", kd), ("baseline", base), ("l2", l2), ("loss", loss)):
                sums[key] += float(value.detach())
            if progress is not None:
                progress({"phase": "step", "epoch": epoch + 1, "epochs": settings.epochs,
                          "step": step, "steps": len(batches), "temperature": temperature,
                          **{k: v / step for k, v in sums.items()}})  # fmt: skip
        generator.eval()
        record = {"epoch": epoch + 1, "temperature": temperature,
                  **{k: v / max(len(batches), 1) for k, v in sums.items()},
                  **_validate(generator, model, examples, val_index, settings)}  # fmt: skip
        state["history"].append(record)
        if record["val_loss"] < state["best_loss"] * (1 - settings.min_delta):
            state.update(best_loss=record["val_loss"], best_epoch=epoch + 1, stale=0,
                         best=copy.deepcopy(generator.state_dict()))  # fmt: skip
        else:
            state["stale"] += 1
        state["stopped"] = state["stale"] >= settings.patience
        state.update(epoch=epoch + 1, generator=generator.state_dict(),
                     optimizer=optimizer.state_dict())  # fmt: skip
        if path is not None:
            _save_checkpoint(path, state)
        if progress is not None:
            progress({"phase": "epoch", "epochs": settings.epochs, "stopped": state["stopped"],
                      "best_epoch": state["best_epoch"], **record})  # fmt: skip
    if state["best"] is not None:
        generator.load_state_dict(state["best"])
    generator.eval()
    return Trained(generator, settings, list(state["history"]), int(state["best_epoch"]),
                   bool(state["stopped"]), resumed, time.perf_counter() - started,
                   {"train": len(train_index), "validation": len(val_index)})  # fmt: skip
