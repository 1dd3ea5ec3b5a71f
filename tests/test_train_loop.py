"""Training loop: run folder contents, bitwise resume, NaN handling, eval of a checkpoint."""

import csv
import json

import pytest
import torch

from revsnn.train import TrainConfig, TrainingDiverged, load_checkpoint, run_training
from revsnn.train.checkpoint import CheckpointError
from revsnn.train.cli import evaluate_checkpoint
from revsnn.train.run_folder import RunFolderError
from test_train_tiny import tiny_factory


def _cfg(tmp_path, name, **kw):
    base = dict(
        model="tiny", data="digits", T=2, epochs=2, batch_size=32, lr=3e-3, max_steps=3,
        progress=False, measure_memory=False, out=str(tmp_path / name),
        model_kwargs={"norm": "bn", "dropout": 0.2},
    )
    base.update(kw)
    return TrainConfig(**base)


class _Interrupt(Exception):
    pass


def _interrupt_after_epoch(k):
    def log(line):
        if line.startswith(f"epoch {k:3d}/"):
            raise _Interrupt  # the checkpoint of epoch k is written before this line
    return log


def test_resume_gives_bitwise_equal_weights(tmp_path):
    # Every RNG consumer is on: dropout, crop, flip, erase, mixup; AdamW + warm-up/cosine + EMA.
    kw = dict(optimizer="adamw", warmup_epochs=0.5, ema_decay=0.9, crop_padding=1, hflip=True,
              random_erase=0.5, mixup=0.4, cutmix=1.0, agc_clip=0.05)
    full, m_full = run_training(_cfg(tmp_path, "full", **kw), tiny_factory, log=lambda s: None)
    with pytest.raises(_Interrupt):
        run_training(_cfg(tmp_path, "cut", **kw), tiny_factory, log=_interrupt_after_epoch(1))
    ck = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ck["epoch"] == 1 and ck["global_step"] == 3
    resumed, m_res = run_training(
        _cfg(tmp_path, "cut", resume=str(tmp_path / "cut"), **kw), tiny_factory,
        log=lambda s: None,
    )
    a, b = m_full.state_dict(), m_res.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = load_checkpoint(tmp_path / "full")["ema"]
    ema_b = load_checkpoint(tmp_path / "cut")["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert resumed["final_test_acc"] == full["final_test_acc"]
    with open(tmp_path / "cut" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_run_folder_holds_config_metrics_summary_checkpoints(tmp_path):
    cfg = _cfg(tmp_path, "r", epochs=1, measure_memory=True)
    summary, model = run_training(cfg, tiny_factory, log=lambda s: None)
    out = tmp_path / "r"
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml", "metrics.csv", "summary.json", "checkpoint.pt", "best.pt"}
    saved = json.loads((out / "summary.json").read_text())
    assert saved["params"] == sum(p.numel() for p in model.parameters())
    assert saved["memory_mib_per_image"] > 0 and saved["memory_method"] == "dispatch-tracker"
    assert saved["final_test_acc"] == saved["best_test_acc"]
    assert len(saved["epoch_times_s"]) == 1 and saved["status"] == "finished"
    from revsnn.train.config import load_config_file

    assert TrainConfig.from_dict(load_config_file(out / "config.yaml")) == cfg
    # Running again into the same folder without --resume would overwrite it: refused.
    with pytest.raises(RunFolderError, match="--resume"):
        run_training(cfg, tiny_factory, log=lambda s: None)


def test_eval_checkpoint_reproduces_the_final_accuracy(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "e", epochs=1, model="trevsnn_test", model_kwargs={}, T=2)
    summary, _ = run_training(cfg, log=lambda s: None)
    res = evaluate_checkpoint(str(tmp_path / "e"), device="cpu")
    assert res["test_acc"] == pytest.approx(summary["final_test_acc"])
    assert res["n"] == 360


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, "n", epochs=3, model_kwargs={"nan_after": 4})  # NaN at epoch 2, step 2
    with pytest.raises(TrainingDiverged) as err:
        run_training(cfg, tiny_factory, log=lambda s: None)
    msg = str(err.value)
    assert "nan" in msg and "epoch 2, step 2" in msg and "checkpoint.pt is kept" in msg
    ck = load_checkpoint(tmp_path / "n" / "checkpoint.pt")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    summary = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs_done"] == 1


def test_corrupted_and_mismatched_checkpoints_name_the_file(tmp_path):
    run_training(_cfg(tmp_path, "c", epochs=1), tiny_factory, log=lambda s: None)
    path = tmp_path / "c" / "checkpoint.pt"
    # another model shape: a clear mismatch naming the file and a key
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt does not match .*shape"):
        run_training(_cfg(tmp_path, "c", resume=str(path), model_kwargs={"width": 6}),
                     tiny_factory, log=lambda s: None)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*checkpoint\.pt"):
        load_checkpoint(path)
