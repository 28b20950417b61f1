"""Training data for a generator: inputs, their labels, and the held-out validation split.

Inputs come from image files (read batch by batch with the model's preprocessing, so the
set need not fit in memory) and .npy arrays (held in memory), or from an array. Labels are,
in order: given; the names of DATA's sub-folders, when every image lies in one (``circle/``,
``square/``..., matched to the model's class names or indices); else the model's predictions.
Every input is read once at the start (the model's logits over all of them), so that a bad
file stops the run before training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import as_batch
from ..errors import InputError
from ..images import collect, load_inputs

#: Bytes of decoded images kept in memory after their first read (epochs then read them
#: there); beyond it, images are decoded again each time.
CACHE_BYTES = 1 << 30


@dataclass
class Examples:
    """``sources`` (one name per input), ``labels`` (N,) int64, ``label_source``
    ("folders", "predictions" or "given"), the model's ``logits`` (N, K) on every input,
    and ``fingerprint``, which a checkpoint records to resume only on the same data.
    :meth:`batch` reads inputs by index (images decoded once, up to :data:`CACHE_BYTES`)."""

    sources: list[str]
    labels: np.ndarray
    label_source: str
    logits: np.ndarray
    fingerprint: str
    _arrays: list  # per input: its array, or None (read from ``_files`` when needed)
    _files: list
    _preprocess: object = None
    _input_shape: tuple = ()
    _grey_ok: bool = False
    _cached: int = 0

    def __len__(self) -> int:
        return len(self.sources)

    def batch(self, index) -> np.ndarray:
        """The inputs at ``index`` (int array) as float32 (n, *input_shape)."""
        out = []
        for i in np.asarray(index, np.int64):
            x = self._arrays[i]
            if x is None:
                (sample,) = load_inputs(self._files[i], self._preprocess, self._input_shape,
                                        self._grey_ok)  # fmt: skip
                x = sample.x
                if self._cached + x.nbytes <= CACHE_BYTES:
                    self._arrays[i], self._cached = x, self._cached + x.nbytes
            out.append(x)
        return np.stack(out).astype(np.float32)

    @property
    def agreement(self) -> float:
        """The share of inputs whose label is the model's prediction (1 for predictions)."""
        return float((self.logits.argmax(axis=1) == self.labels).mean())

    @classmethod
    def from_arrays(cls, model, x, labels=None, batch: int = 64) -> Examples:
        """Inputs already in the model's input space, (N, *input_shape); labels given or
        the model's predictions."""
        x = as_batch(x, model.input_shape, "the training inputs")
        logits = model.logits(x, batch)
        source = "predictions" if labels is None else "given"
        labels = logits.argmax(axis=1) if labels is None else model.check_target(labels, len(x))
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        digest.update(np.asarray(labels, np.int64).tobytes())
        return cls([f"x[{i}]" for i in range(len(x))], np.asarray(labels, np.int64), source,
                   logits, digest.hexdigest(), list(x), [None] * len(x))  # fmt: skip

    @classmethod
    def from_folder(cls, model, data, preprocess, class_names: list[str], grey_ok: bool = False,
                    batch: int = 64, progress=None) -> Examples:  # fmt: skip
        """The images and .npy arrays under ``data`` (folders, recursively, or files), read
        with ``preprocess`` (:class:`~pathonnx.images.Preprocess`, None for arrays only);
        labels from the sub-folders of a single folder given, named after ``class_names``
        (the model's labels, in logit order) or class indices, else the model's predictions.
        ``progress(done, total)`` hears the first read."""
        data = [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)]
        files = collect(data)
        folder_labels = _folder_labels(data, files, class_names)
        arrays, names, owners = [], [], []
        for path in files:
            if path.suffix.lower() == ".npy":
                for sample in load_inputs(path, preprocess, model.input_shape, grey_ok):
                    arrays.append(sample.x)
                    names.append(sample.source)
                    owners.append(path)
            else:
                arrays.append(None)
                names.append(str(path))
                owners.append(path)
        examples = cls(names, np.zeros(len(names), np.int64), "predictions",
                       np.zeros((len(names), model.num_outputs), np.float32), "", arrays, owners,
                       preprocess, tuple(model.input_shape), grey_ok)  # fmt: skip
        logits = []
        for lo in range(0, len(names), batch):
            index = np.arange(lo, min(lo + batch, len(names)))
            logits.append(model.logits(examples.batch(index), batch))
            if progress is not None:
                progress(int(index[-1]) + 1, len(names))
        examples.logits = np.concatenate(logits)
        if folder_labels is not None:
            examples.labels = np.array([folder_labels[p] for p in owners], np.int64)
            examples.label_source = "folders"
        else:
            examples.labels = examples.logits.argmax(axis=1).astype(np.int64)
        digest = hashlib.sha256()
        for name, owner, label in zip(names, owners, examples.labels):
            size = owner.stat().st_size
            digest.update(f"{name}\0{size}\0{int(label)}\n".encode())
        examples.fingerprint = digest.hexdigest()
        return examples


def _folder_labels(data: list[Path], files: list[Path], class_names: list[str]) -> dict | None:
    """File -> class index from the sub-folder of ``data`` (one folder) that holds it, when
    every file lies in a sub-folder; None otherwise (labels are then the predictions)."""
    if len(data) != 1 or not data[0].is_dir():
        return None
    root = data[0]
    parts = [f.relative_to(root).parts for f in files]
    if any(len(p) < 2 for p in parts):
        return None  # an image directly in DATA: no labels from folders
    index = {name: i for i, name in enumerate(class_names)}
    found, unknown = {}, []
    for path, part in zip(files, parts):
        name = part[0]
        if name in index:
            found[path] = index[name]
        elif name.isdigit() and int(name) < len(class_names):
            found[path] = int(name)
        elif name not in unknown:
            unknown.append(name)
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5])
        known = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
        raise InputError(
            f"{root}: sub-folder(s) {shown} name no class of the model ({known}) nor a class "
            "index; name the sub-folders after the classes (--labels gives the names), or put "
            "the images directly in the folder to label them by the model's predictions"
        )
    return found


def split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: round(``share``·N) inputs held out (at least one, and at
    least one left to train on), shared among the classes in proportion to their sizes
    (largest remainders first), each class's drawn with ``seed``."""
    n = len(labels)
    if n < 2:
        raise InputError(f"the training data holds {n} input(s); give at least 2 (one to train "
                         "on, one to validate with)")  # fmt: skip
    total = min(max(1, int(round(share * n))), n - 1)
    classes, counts = np.unique(labels, return_counts=True)
    exact = total * counts / n
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: total - quota.sum()]:
        quota[i] += 1
    rng = np.random.default_rng([seed, 1])
    held = []
    for c, k in zip(classes, quota):
        held += rng.permutation(np.flatnonzero(labels == c))[:k].tolist()
    val = np.sort(np.asarray(held, np.int64))
    train = np.setdiff1d(np.arange(n), val)
    return train, val
