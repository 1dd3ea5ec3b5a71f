"""``revsnn.train.fit``: a model and map-style data sets of the user's own, with the config,
run folder, checkpoints and bitwise resume of ``revsnn train`` (data-parallel training with two
gloo processes: tests/test_train_ddp.py)."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from revsnn.data import load_dataset
from revsnn.train import fit, load_checkpoint
from test_train_tiny import Tiny

CONFIG = dict(T=2, epochs=2, batch_size=32, lr=3e-3, max_steps=3, progress=False,
              measure_memory=False, optimizer="adamw", warmup_epochs=0.5, crop_padding=1,
              hflip=True, random_erase=0.3, ema_decay=0.9)


def _digits():
    """The digits splits as plain TensorDatasets (not revsnn's own set type)."""
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    return TensorDataset(tr.images, tr.labels), TensorDataset(te.images, te.labels)


def _model():
    torch.manual_seed(0)
    return Tiny(num_classes=10, T=2, in_channels=1, norm="bn", dropout=0.2)


def test_fit_trains_checkpoints_and_resumes_bitwise(tmp_path):
    train, test = _digits()
    full = _model()
    s_full = fit(full, train, test, out=str(tmp_path / "full"), log=lambda s: None, **CONFIG)
    assert s_full["status"] == "finished" and s_full["global_step"] == 6
    assert s_full["model"] == "Tiny" and 0 <= s_full["final_test_acc"] <= 100
    saved = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert saved["final_test_acc"] == s_full["final_test_acc"]

    half = _model()
    fit(half, train, test, out=str(tmp_path / "cut"), log=lambda s: None,
        **{**CONFIG, "epochs": 1})
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    resumed = _model()  # fresh weights: resume must load everything from the checkpoint
    s_res = fit(resumed, train, test, resume=str(tmp_path / "cut"), log=lambda s: None,
                **CONFIG)
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert s_res["final_test_acc"] == s_full["final_test_acc"]
    # resuming the finished run: nothing to do, the model gets the checkpoint's weights
    again = _model()
    s_again = fit(again, train, test, resume=str(tmp_path / "full"), log=lambda s: None,
                  **CONFIG)
    assert s_again["already_complete"]
    for k, v in full.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_fit_without_test_data_and_with_bad_input(tmp_path):
    train, _ = _digits()
    s = fit(_model(), train, out=str(tmp_path / "r"), log=lambda s: None,
            **{**CONFIG, "epochs": 1})
    assert s["final_test_acc"] is None and s["final_train_loss"] > 0
    with pytest.raises(TypeError, match="nn.Module"):
        fit("not a model", train)
    with pytest.raises(ValueError, match=r"\[C, H, W\] \(image\) or \[T, C, H, W\]"):
        fit(_model(), TensorDataset(torch.zeros(40, 8), torch.zeros(40, dtype=torch.long)))
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        fit(_model(), train, epoch=3)
