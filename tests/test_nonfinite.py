"""Non-finite training (revsnn.train.finite): a NaN/inf batch is refused naming its sample; a
non-finite loss, gradient, parameter or BatchNorm statistic stops the run as ``diverged``
naming the tensor and the step; no checkpoint ever holds a non-finite value; NaN
hyper-parameters are refused before anything runs; ``skip_nonfinite=N`` skips such steps
without touching the optimiser state."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revsnn.data import Loader, load_dataset
from revsnn.data.static import ImageSet
from revsnn.models.registry import model_info
from revsnn.train import TrainingDiverged, fit, load_checkpoint, save_checkpoint
from revsnn.train.checkpoint import CheckpointError
from revsnn.train.finite import NonFiniteData, StepGuard, nonfinite_in

BASE = dict(T=2, batch_size=16, lr=3e-3, progress=False, measure_memory=False)


def _digits():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    return tr, te


def _poisoned(ds: ImageSet, index: int, value: float) -> ImageSet:
    images = ds.images.clone()
    if value != value:
        images[index, 0, 3, 4] = value  # one NaN pixel
    else:
        images[index] *= value  # the whole image scaled
    return ImageSet(images, ds.labels, ds.num_classes, ds.mean, ds.std, ds.classes, ds.indices)


def _model(name: str, mode: str):
    torch.manual_seed(0)
    return model_info(name).build(num_classes=10, T=2, in_channels=1, memory_mode=mode)


def _sample_at_step(n: int, batch: int, step: int, seed: int = 0) -> int:
    """A training-set index the first epoch's ``step``-th batch holds (the loader's order)."""
    return int(Loader(range(n), batch, True, seed).plan()[step][0][0])


def _all_finite(path: Path) -> bool:
    ck = torch.load(path, weights_only=True)
    return nonfinite_in({k: ck.get(k) for k in ("model", "ema", "optimizer")}) is None


def test_nan_pixel_is_refused_naming_the_sample(tmp_path):
    tr, te = _digits()
    k = _sample_at_step(len(tr), 16, 1)
    bad = _poisoned(tr, k, float("nan"))
    with pytest.raises(NonFiniteData, match=rf"NaN values: sample {k} \(row "):
        fit(_model("revs_resnet_test", "reversible"), bad, te, out=str(tmp_path / "r"),
            epochs=1, max_steps=3, log=lambda s: None, **BASE)
    assert not (tmp_path / "r").exists()  # nothing saved: no half-made run folder


@pytest.mark.parametrize("name, mode", [("revs_resnet_test", "reversible"),
                                        ("revs_resnet_test", "checkpoint"),
                                        ("pararevsnn_test", "none")])
def test_huge_inputs_stop_as_diverged_keeping_only_finite_checkpoints(tmp_path, name, mode):
    tr, te = _digits()
    k = _sample_at_step(len(tr), 16, 2)  # steps 1 and 2 are fine and saved
    bad = _poisoned(tr, k, 1e30)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        fit(_model(name, mode), bad, te, out=str(out), epochs=2, max_steps=4, save_every=1,
            log=lambda s: None, **BASE)
    msg = str(err.value)
    assert "epoch 1, step 3 (global step 3" in msg and "is not finite" in msg, msg
    assert "checkpoint.pt is kept" in msg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    ck = load_checkpoint(out / "checkpoint.pt")  # loading checks finiteness too
    assert ck["global_step"] == 2
    for f in out.glob("*.pt"):
        assert _all_finite(f), f


def test_skip_nonfinite_skips_the_step_and_leaves_optimiser_state(tmp_path):
    tr, te = _digits()
    k = _sample_at_step(len(tr), 16, 1)
    bad = _poisoned(tr, k, 1e30)
    lines = []
    model = _model("revs_resnet_test", "reversible")
    s = fit(model, bad, te, out=str(tmp_path / "s"), epochs=1, max_steps=4,
            skip_nonfinite=2, log=lines.append, **BASE)
    assert s["status"] == "finished" and s["skipped_nonfinite_steps"] == 1
    assert any("step skipped (1 of skip_nonfinite=2)" in line for line in lines), lines
    ck = load_checkpoint(tmp_path / "s")
    assert ck["global_step"] == 4 and ck["skipped_nonfinite"] == 1
    # AdamW counts its own steps: 3 taken, the skipped one left no trace
    steps = {float(st["step"]) for st in ck["optimizer"]["state"].values()}
    assert steps == {3.0}
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()
               if v.is_floating_point())


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "revsnn.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


FAST = ["train", "--model", "revs_resnet_test", "--T", "2", "--epochs", "2", "--batch-size",
        "16", "--set", "max_steps=4", "--set", "measure_memory=false", "--set", "progress=false"]


def test_huge_lr_keeps_no_inf_batchnorm_statistics(tmp_path):
    out = tmp_path / "lr"
    r = _cli([*FAST, "--lr", "1e10", "--set", "save_every=1", "--out", str(out)], tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "training diverged" in lines[0] and "is not finite" in lines[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    for f in out.glob("*.pt"):
        assert _all_finite(f), f


@pytest.mark.parametrize("args, key, values", [
    (["--set", "min_lr=.nan"], "min_lr", {"min_lr": float("nan")}),
    (["--set", "optimizer=sgd", "--set", "momentum=.nan"], "momentum",
     {"optimizer": "sgd", "momentum": float("nan")}),
    (["--set", "optimizer=sgd", "--lr", "nan"], "lr", {"optimizer": "sgd", "lr": float("nan")}),
    (["--set", "optimizer=lamb", "--lr", "nan"], "lr", {"optimizer": "lamb",
                                                        "lr": float("nan")}),
])
def test_nan_hyperparameters_are_refused(tmp_path, capsys, args, key, values):
    from revsnn.cli import main
    from revsnn.train import TrainConfig, apply_overrides
    from revsnn.train.finite import check_hyperparameters

    with pytest.raises(ValueError, match=f"config key '{key}' must be a finite number"):
        check_hyperparameters(apply_overrides(TrainConfig(), values))
    rc = main([*FAST, *args, "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert key in err[0] and "nan" in err[0].lower(), err[0]  # names the key and the value
    assert not (tmp_path / "h").exists()


def test_a_nonfinite_checkpoint_is_refused_on_load(tmp_path, capsys):
    model = _model("revs_resnet_test", "reversible")
    state = model.state_dict()
    name = next(k for k in state if k.endswith("running_var"))
    state[name][0] = float("inf")
    from revsnn.train import TrainConfig

    save_checkpoint(tmp_path / "ck.pt", {"config": TrainConfig(model="revs_resnet_test").to_dict(),
                                         "epoch": 1, "global_step": 3, "model": state})
    with pytest.raises(CheckpointError, match=rf"holds non-finite values \(model\.{name}"):
        load_checkpoint(tmp_path / "ck.pt")
    from revsnn.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path / "ck.pt")]) == 2
    assert "holds non-finite values" in capsys.readouterr().err


def test_guard_takes_huge_finite_gradients_as_finite():
    lin = torch.nn.Linear(4, 4)
    lin.weight.grad = torch.full_like(lin.weight, 3e38)  # its 2-norm overflows float32
    lin.bias.grad = torch.zeros_like(lin.bias)
    guard = StepGuard(lin)
    assert float(guard.grads_ok(torch.tensor(1.0))) == 1.0
    lin.bias.grad[2] = float("nan")
    assert float(guard.grads_ok(torch.tensor(1.0))) == 0.0
    assert "gradient of bias (1 of 4 values NaN)" in guard.describe_grads(torch.tensor(1.0))


def test_a_nonfinite_sample_is_named_with_its_file():
    from revsnn.train.finite import check_batch

    class Files:  # a data set that knows its files (image folder, event recordings)
        samples = [(Path(f"data/{i}.png"), i % 2) for i in range(4)]

    x = torch.zeros(2, 1, 2, 2)
    assert float(check_batch(x, torch.tensor([3, 1]), Files())) == 1.0
    x[1, 0, 1, 0] = float("inf")
    with pytest.raises(NonFiniteData, match=r"inf values: sample 1 \(file data/1\.png\)"):
        check_batch(x, torch.tensor([3, 1]), Files())
