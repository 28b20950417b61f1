"""GEN-CNP (issue 16): the pathway network's gradient against torch autograd, a generator
trained for a few steps on a handful of shapes images, its ONNX export, the gencnp method,
checkpoints and bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLES, VGG, invoke
from PIL import Image

import pathonnx
from pathonnx.images import resolve_preprocess
from pathonnx.learn import Settings
from pathonnx.methods.learned import GATES_KEY, GRANULARITY_KEY, MODEL_KEY, load_generator

torch = pytest.importorskip("torch")  # in the test extra: CI has it

import zoo  # noqa: E402
from oracle import TorchOracle, _gated_run  # noqa: E402

from pathonnx.learn import (  # noqa: E402
    Examples,
    daq,
    export_generator,
    pathway_logits,
    train,
)
from pathonnx.learn.generator import hard  # noqa: E402

#: A generator trained for a few steps: enough to test the plumbing, not the explanations.
TINY = {"epochs": 2, "batch": 8, "embed": 4, "width": 8, "seed": 3}


# -- the pathway network against torch autograd -------------------------------------------------


@pytest.mark.parametrize("granularity", ["channel", "unit"])
@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "mlp"])
def test_pathway_network_gradient_matches_torch(arch, granularity, exported):
    # The network with each gate's output scaled, run by onnxruntime, differentiated by
    # pathonnx's adjoint; the oracle: the torch module in float64 whose gates' outputs are
    # multiplied by the same scales in forward hooks.
    path, module = exported(arch)
    model = pathonnx.load(path, device="cpu")
    x = zoo.example_input(arch, batch=3, seed=4)
    rng = np.random.default_rng(1)
    per = [(g.shape[0],) if granularity == "channel" else g.shape for g in model.gates]
    values = [rng.uniform(0.0, 1.5, (3, *shape)) for shape in per]
    scales = [torch.tensor(v, requires_grad=True) for v in values]
    logits = pathway_logits(model, x, scales, granularity)
    weights = torch.tensor(rng.standard_normal(tuple(logits.shape)))
    (logits * weights).sum().backward()

    reference = [torch.tensor(v, requires_grad=True) for v in values]
    factors = [r.reshape(3, -1, *[1] * (len(g.shape) - 1)) if granularity == "channel" else r
               for r, g in zip(reference, model.gates)]  # fmt: skip
    want, _, _ = _gated_run(TorchOracle(module), torch.tensor(x, dtype=torch.float64), factors)
    (want * weights).sum().backward()

    assert logits.dtype == torch.float64
    np.testing.assert_allclose(logits.detach(), want.detach(), rtol=1e-4, atol=1e-5)
    for gate, got, ref in zip(model.gates, scales, reference):
        scale = float(ref.grad.abs().max())
        assert float((got.grad - ref.grad).abs().max()) <= 1e-4 * scale, gate.name


def test_daq_assigns_by_distance_and_rounds_at_inference():
    scores = torch.linspace(-6, 6, 25, dtype=torch.float64)
    u = torch.sigmoid(scores)
    for temperature in (1.0, 0.2, 0.02):
        # two levels {0, 1}: softmax(-|u - q| / T) weighs 1 by sigmoid((2u - 1) / T)
        soft = daq(scores, temperature)
        torch.testing.assert_close(soft, torch.sigmoid((2 * u - 1) / temperature))
    assert torch.equal(daq(scores, 1e-4) > 0.5, scores > 0)  # the hard mask at T -> 0


# -- a generator trained for a few steps ---------------------------------------------------------


def shapes_module():
    spec = importlib.util.spec_from_file_location("pathonnx_sample_shapes", SAMPLES / "shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A handful of shapes images (not the models' training or test seeds) in class folders."""
    shapes = shapes_module()
    folder = tmp_path_factory.mktemp("shapes") / "train"
    made = shapes.generate(24, 32, seed=11)
    for i, (image, label) in enumerate(zip(made.images, made.labels)):
        (folder / shapes.CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / shapes.CLASSES[label] / f"{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def vgg():
    return pathonnx.load(VGG, device="cpu")


@pytest.fixture(scope="module")
def examples(vgg, data):
    pre = resolve_preprocess(vgg.input_shape, vgg.metadata)
    names = json.loads(vgg.metadata["pathonnx.labels"])
    return Examples.from_folder(vgg, data, pre, names)


@pytest.fixture(scope="module")
def trained(vgg, examples, tmp_path_factory):
    """(Trained, generator file) for shapes_vgg; a sparsity weight that removes units fast."""
    result = train(vgg, examples, Settings(**TINY, sparsity=5.0, lr=0.02))
    path = tmp_path_factory.mktemp("gen") / "vgg.gencnp.onnx"
    export_generator(result, vgg, path)
    return result, path


def test_labels_come_from_the_folders(examples):
    assert examples.label_source == "folders" and len(examples) == 24
    assert set(examples.labels) <= set(range(6))
    shapes = shapes_module()
    made = shapes.generate(24, 32, seed=11)
    by_name = dict(zip(examples.sources, examples.labels))
    for i, label in enumerate(made.labels):
        assert any(s.endswith(f"/{shapes.CLASSES[label]}/{i:02d}.png") for s in by_name)
        found = [v for s, v in by_name.items() if s.endswith(f"/{i:02d}.png")]
        assert found == [label]


def test_training_records_each_epoch_and_the_file_says_what_it_is(trained, vgg):
    result, path = trained
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    for record in result.history:
        terms = ("kd", "baseline", "l2", "val_kd", "val_baseline", "val_l2")
        assert np.isfinite([record[k] for k in terms]).all()
        want = record["val_kd"] + record["val_baseline"] + 5.0 * record["val_l2"]
        assert record["val_loss"] == pytest.approx(want)
        assert 0 <= record["val_units_kept"] <= 1 and 0 <= record["val_agreement"] <= 1
    assert result.split == {"train": 22, "validation": 2}  # 10%, rounded
    generator = load_generator(path, vgg)
    meta = generator.file.metadata
    assert json.loads(meta[GATES_KEY]) == [g.name for g in vgg.gates]
    assert meta[GRANULARITY_KEY] == "channel" and meta[MODEL_KEY] == vgg.sha256()
    assert meta["pathonnx.version"] == pathonnx.__version__
    assert generator.settings["sparsity"] == 5.0
    assert generator.losses["best_epoch"] == result.best_epoch
    assert generator.mismatch(vgg) is None


def test_the_onnx_generator_gives_torchs_hard_masks(trained, vgg, examples):
    result, path = trained
    x = examples.batch(np.arange(12))
    fwd = vgg.forward(x)
    activations = [torch.from_numpy(np.array(fwd.activations[g.name])) for g in vgg.gates]
    with torch.no_grad():
        scores = result.generator.scores(activations)
    masks = load_generator(path, vgg).masks(vgg, fwd)
    removed = 0
    for gate, s in zip(vgg.gates, scores):
        decided = s.abs() > 1e-4  # exactly at 0 the two may round apart
        got = masks[gate.name].reshape(12, gate.shape[0], -1)
        assert (got == got[:, :, :1]).all()  # a channel's decision over all its positions
        want = hard(s).numpy()  # score > 0, and the gate's top channel
        assert np.array_equal(got[:, :, 0][decided], want[decided]), gate.name
        assert got[:, :, 0].any(axis=1).all()  # every gate keeps a channel
        removed += int((~got[:, :, 0]).sum())
    assert removed > 0  # the sparsity term has removed channels


def test_gencnp_is_a_pathway_whose_linear_map_is_complete(trained, vgg, examples):
    _, path = trained
    x = examples.batch(np.arange(6))
    method = pathonnx.METHODS["gencnp"]
    assert method.attribution == "gradient" and method.family == "learned"
    attribution, pathway = method.with_pathway(vgg, x, vgg.forward(x).prediction,
                                               generator=str(path))  # fmt: skip
    np.testing.assert_array_equal(attribution, pathway.linear.W)
    np.testing.assert_array_equal(
        pathonnx.attribute(vgg, x, method="gencnp", generator=str(path)), attribution
    )
    fwd = vgg.forward(x)
    assert pathway.masks.keys() == {g.name for g in vgg.gates}
    # completeness: W^p·x + b^p is the target logit of the network frozen at x's pattern
    # with the removed units passing nothing
    frozen = vgg.engine.frozen_logits(fwd, x, pathway.masks)[np.arange(6), pathway.target]
    np.testing.assert_allclose(pathway.linear.output(x), frozen, rtol=1e-4, atol=1e-4)
    # all units kept: the model's own linear model and logit
    full = {g.name: np.ones((6, *g.shape), bool) for g in vgg.gates}
    whole = vgg.linearize(x, pathway.target, full, fwd=fwd)
    np.testing.assert_allclose(whole.output(x), fwd.logits[np.arange(6), pathway.target],
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    for gate in vgg.gates:
        kept = pathway.masks[gate.name].reshape(6, -1)
        assert (pathway.stats["units_kept"][gate.name] == kept.sum(axis=1)).all()
        dead = kept & ~(fwd.activations[gate.name].reshape(6, -1) > 0)
        share = dead.sum(axis=1) / np.maximum(kept.sum(axis=1), 1)
        np.testing.assert_allclose(pathway.stats["dead_share"][gate.name], share)
    total = sum(g.units for g in vgg.gates)
    kept_all = sum(pathway.masks[g.name].reshape(6, -1).sum(axis=1) for g in vgg.gates)
    np.testing.assert_allclose(pathway.stats["share_kept"], kept_all / total)


def test_explain_with_the_generator_on_the_command_line(trained, data, tmp_path):
    _, path = trained
    image = next(data.rglob("*.png"))
    result = invoke("explain", VGG, image, "--method", "gencnp", "-p", f"generator={path}",
                    "-o", tmp_path, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["method"] == "gencnp" and report["params"] == {"generator": str(path)}


def test_checkpoint_resume_ends_as_the_uninterrupted_run(vgg, examples, tmp_path):
    settings = Settings(**{**TINY, "epochs": 3}, sparsity=5.0, lr=0.02)
    whole = train(vgg, examples, settings, tmp_path / "whole.ckpt")

    class Killed(Exception):
        pass

    def kill_after_first_epoch(event):
        if event["phase"] == "epoch" and event["epoch"] == 1:
            raise Killed  # after the epoch's checkpoint was written

    with pytest.raises(Killed):
        train(vgg, examples, settings, tmp_path / "cut.ckpt", kill_after_first_epoch)
    resumed = train(vgg, examples, settings, tmp_path / "cut.ckpt")
    assert resumed.resumed_from == 1 and whole.resumed_from == 0
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    theirs = whole.generator.state_dict()
    for key, value in resumed.generator.state_dict().items():
        assert torch.equal(value, theirs[key]), key
    # a finished run resumed with more epochs goes on where it stopped
    longer = train(vgg, examples, Settings(**{**TINY, "epochs": 4}, sparsity=5.0, lr=0.02),
                   tmp_path / "cut.ckpt")  # fmt: skip
    assert longer.resumed_from == 3 and longer.history[:3] == whole.history
    assert len(longer.history) == 4
    # another setting, or another model, is refused in one line
    with pytest.raises(pathonnx.InputError, match="other settings: lr"):
        train(vgg, examples, Settings(**TINY, sparsity=5.0, lr=0.1), tmp_path / "cut.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(pathonnx.InputError, match="not a checkpoint of pathonnx learn"):
        train(vgg, examples, settings, tmp_path / "junk.ckpt")


def test_unit_granularity_on_dense_and_spatial_gates(exported, tmp_path):
    for arch in ("mlp", "vgg_bn"):
        path, _ = exported(arch)
        model = pathonnx.load(path, device="cpu")
        x = zoo.example_input(arch, batch=10, seed=2)
        examples = Examples.from_arrays(model, x)
        assert examples.label_source == "predictions" and examples.agreement == 1.0
        result = train(model, examples, Settings(**{**TINY, "epochs": 1}, granularity="unit"))
        file = tmp_path / f"{arch}.onnx"
        export_generator(result, model, file)
        fwd = model.forward(x)
        activations = [torch.from_numpy(np.array(fwd.activations[g.name])) for g in model.gates]
        with torch.no_grad():
            scores = result.generator.scores(activations)
        masks = load_generator(file, model).masks(model, fwd)
        for gate, s in zip(model.gates, scores):
            assert tuple(s.shape) == (10, *gate.shape)
            decided = (s.abs() > 1e-4).numpy()
            assert np.array_equal(masks[gate.name][decided], hard(s).numpy()[decided])
        pathway = pathonnx.METHODS["gencnp"].fn(model, x, None, str(file))
        frozen = model.engine.frozen_logits(fwd, x, pathway.masks)[np.arange(10), pathway.target]
        np.testing.assert_allclose(pathway.linear.output(x), frozen, rtol=1e-4, atol=1e-4)


# -- the command line ---------------------------------------------------------------------------


def test_learn_on_the_command_line_writes_a_generator_and_resumes(data, tmp_path):
    out = tmp_path / "gen.onnx"
    args = ["learn", VGG, data, "-o", out, "--epochs", "1", "--batch", "8", "--json"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["labels"] == "folders" and summary["inputs"] == 24
    assert summary["epochs_run"] == 1 and summary["resumed_after_epoch"] == 0
    assert summary["checkpoint"] == f"{out}.ckpt" and (tmp_path / "gen.onnx.ckpt").is_file()
    classes = tmp_path / "gen.classes.npz"  # the class pathways, beside the generator
    assert summary["class_pathways"] == [str(classes)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.classes.npz", "gen.onnx",
                                                          "gen.onnx.ckpt"]  # fmt: skip
    # the learn -> explain path: a training image explained with its class's pathway
    image = sorted(Path(data).rglob("*.png"))[0]
    explained = invoke("explain", VGG, image, "-o", tmp_path / "ex", "--method",
                       "class_pathway", "-p", f"pathways={classes}", "--json")  # fmt: skip
    assert explained.exit_code == 0, explained.output
    # ... and evaluate: GEN-CNP's pathways against the class pathways, with the cnp metrics
    evaluated = invoke("evaluate", VGG, data, "-o", tmp_path / "ev", "--methods",
                       "gencnp,class_pathway", "-p", f"gencnp.generator={out}",
                       "-p", f"class_pathway.pathways={classes}", "--metrics", "pathway,cnp",
                       "--limit", "6", "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads(evaluated.stdout)["summary"]
    assert summary["class_pathway"]["acIOU"]["mean"] == pytest.approx(1.0)  # one per class
    assert 0 <= summary["gencnp"]["mDC"]["mean"] <= 1
    again = invoke(*args)  # the generator exists: refused without --force
    assert again.exit_code == 2 and "--force" in again.stderr
    longer = invoke(*args[:5], "--epochs", "2", "--batch", "8", "--json", "--force")
    assert longer.exit_code == 0, longer.output
    summary = json.loads(longer.stdout)
    assert summary["resumed_after_epoch"] == 1 and summary["epochs_run"] == 2
    text = invoke("learn", VGG, data, "-o", tmp_path / "b.onnx", "--epochs", "1", "--steps", "1")
    assert text.exit_code == 0, text.output
    assert "explain with: pathonnx explain" in text.stdout and "epoch 1/1" in text.stderr


def test_learn_runs_in_a_fresh_process(data, tmp_path):
    out = tmp_path / "gen.onnx"
    done = subprocess.run([sys.executable, "-m", "pathonnx_cli.main", "learn", str(VGG),
                           str(data), "-o", str(out), "--epochs", "1", "--steps", "1"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.is_file() and f"wrote {out}" in done.stdout


def test_learn_help_has_an_example():
    result = invoke("learn", "--help")
    assert result.exit_code == 0 and "Example" in result.stdout
    assert "pathonnx[learn]" in result.stdout


def one_line(result, words: str, code: int = 2) -> None:
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("pathonnx: error: "), result.stderr
    assert words in lines[0], lines[0]


def test_bad_input_is_one_line(trained, data, tmp_path):
    _, path = trained
    image = next(data.rglob("*.png"))
    out = tmp_path / "out"
    # gencnp without its generator, with a generator of another model, with a model file
    one_line(invoke("explain", VGG, image, "--method", "gencnp", "-o", out),
             "gencnp needs generator")  # fmt: skip
    resnet = SAMPLES / "shapes_resnet.onnx"
    one_line(invoke("explain", resnet, image, "--method", "gencnp", "-p", f"generator={path}",
                    "-o", out), "was trained for another model")  # fmt: skip
    one_line(invoke("explain", VGG, image, "--method", "gencnp", "-p", f"generator={VGG}",
                    "-o", out), "not a pathway generator")  # fmt: skip
    one_line(invoke("explain", VGG, image, "--method", "gencnp", "-p",
                    f"generator={tmp_path / 'none.onnx'}", "-o", out), "no such file")  # fmt: skip
    assert not out.exists()  # refused before any work
    # learn: an empty folder, sub-folders that name no class, a checkpoint of another model
    (tmp_path / "empty").mkdir()
    one_line(invoke("learn", VGG, tmp_path / "empty", "-o", tmp_path / "g.onnx"), "no images")
    odd = tmp_path / "odd" / "dogs"
    odd.mkdir(parents=True)
    odd.joinpath("a.png").write_bytes(image.read_bytes())
    one_line(invoke("learn", VGG, tmp_path / "odd", "-o", tmp_path / "g.onnx"),
             "sub-folder(s) 'dogs' name no class")  # fmt: skip
    ckpt = tmp_path / "vgg.ckpt"
    assert invoke("learn", VGG, data, "-o", tmp_path / "v.onnx", "--epochs", "1", "--steps", "1",
                  "--checkpoint", ckpt).exit_code == 0  # fmt: skip
    one_line(invoke("learn", resnet, data, "-o", tmp_path / "r.onnx", "--checkpoint", ckpt),
             "the checkpoint is of a run on another model")  # fmt: skip
    one_line(invoke("learn", VGG, data, "-o", tmp_path / "g.onnx", "--epochs", "0"),
             "Invalid value for '--epochs'")  # fmt: skip
    one_line(invoke("learn", VGG, data, "-o", tmp_path / "g.onnx", "--checkpoint",
                    tmp_path / "g.onnx"), "is the generator's path")  # fmt: skip
    one_line(invoke("learn", VGG, data, "-o", VGG, "--force"), "would overwrite the input")
    assert not (tmp_path / "g.onnx").exists()


def test_without_torch_learn_says_what_to_install(monkeypatch, data, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    one_line(invoke("learn", VGG, data, "-o", tmp_path / "g.onnx"),
             "pip install 'pathonnx[learn]'")  # fmt: skip
    assert not (tmp_path / "g.onnx").exists()


def test_the_core_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import pathonnx, pathonnx.learn, pathonnx_cli.main\n"
        "assert 'gencnp' in pathonnx.METHODS and pathonnx.learn.Settings().epochs > 0\n"
        "try:\n    pathonnx.learn.train\nexcept pathonnx.InputError as err:\n    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "pip install 'pathonnx[learn]'" in done.stdout
