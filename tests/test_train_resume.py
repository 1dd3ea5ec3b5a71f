"""Resume and interrupts: a finished run is never rewritten, Ctrl-C saves at the interrupt
point, step checkpoints (save_every) resume bit for bit, memory is measured for the mode that
runs."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from revsnn.train import TrainConfig, load_checkpoint, run_training
from revsnn.train.cli import main
from revsnn.train.interrupt import TrainingInterrupted
from test_train_tiny import tiny_factory

RNG_ON = dict(optimizer="adamw", warmup_epochs=0.5, ema_decay=0.9, crop_padding=1, hflip=True,
              random_erase=0.5, mixup=0.4, agc_clip=0.05)


def _cfg(tmp_path, name, **kw):
    base = dict(model="tiny", data="digits", T=2, epochs=2, batch_size=32, lr=3e-3, max_steps=3,
                progress=False, measure_memory=False, out=str(tmp_path / name),
                model_kwargs={"norm": "bn", "dropout": 0.2})
    base.update(kw)
    return TrainConfig(**base)


class _Boom(Exception):
    pass


def _factory_acting_at(call: int, action):
    """tiny_factory whose stem runs ``action()`` at its ``call``-th training forward."""

    def factory(cfg, info):
        m = tiny_factory(cfg, info)
        count = [0]

        def hook(mod, inp, out):
            if mod.training and torch.is_grad_enabled():
                count[0] += 1
                if count[0] == call:
                    action()

        m.stem.register_forward_hook(hook)
        return m

    return factory


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    cfg = _cfg(tmp_path, "done", epochs=1)
    run_training(cfg, tiny_factory, log=lambda s: None)
    before = _snapshot(tmp_path / "done")
    assert json.loads(before["summary.json"])["final_test_acc"] is not None
    lines = []
    summary, _ = run_training(_cfg(tmp_path, "done", epochs=1, resume=str(tmp_path / "done")),
                              tiny_factory, log=lines.append)
    assert summary["already_complete"] and summary["final_test_acc"] is not None
    assert "already complete (1 of 1 epochs done" in lines[0]
    assert f"revsnn train --resume {tmp_path / 'done'} --epochs 2" in lines[0]
    assert _snapshot(tmp_path / "done") == before  # byte for byte
    # the command line: exit 0, the same message, files untouched
    rc = main(["--model", "trevsnn_test", "--resume", str(tmp_path / "done")])
    assert rc == 0 and "is already complete" in capsys.readouterr().out
    assert _snapshot(tmp_path / "done") == before


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler while the test runs (a background job starts with SIGINT
    ignored), and the caller's handler back after it."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_ctrl_c_saves_at_the_interrupt_point_and_resume_is_bitwise(tmp_path, default_sigint):
    full, m_full = run_training(_cfg(tmp_path, "full", **RNG_ON), tiny_factory,
                                log=lambda s: None)
    # SIGINT during the 5th step (epoch 2, step 2 of 3): that step finishes, then it stops
    sigint = _factory_acting_at(5, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(TrainingInterrupted) as err:
        run_training(_cfg(tmp_path, "cut", **RNG_ON), sigint, log=lambda s: None)
    assert "in epoch 2 after step 2/3" in str(err.value)
    assert err.value.resume == f"revsnn train --resume {tmp_path / 'cut'}"
    ck = load_checkpoint(tmp_path / "cut")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 2, 5)
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["global_step"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    resumed, m_res = run_training(_cfg(tmp_path, "cut", resume=str(tmp_path / "cut"), **RNG_ON),
                                  tiny_factory, log=lambda s: None)
    _assert_same_weights(m_full, m_res)
    ema_a = load_checkpoint(tmp_path / "full")["ema"]
    ema_b = load_checkpoint(tmp_path / "cut")["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert resumed["final_train_loss"] == full["final_train_loss"]  # epoch sums carried over
    assert resumed["final_test_acc"] == full["final_test_acc"]


def test_save_every_steps_then_a_crash_resumes_bitwise(tmp_path):
    _, m_full = run_training(_cfg(tmp_path, "full", **RNG_ON), tiny_factory, log=lambda s: None)

    def boom():
        raise _Boom

    with pytest.raises(_Boom):  # a hard crash in step 6 (the last of epoch 2)
        run_training(_cfg(tmp_path, "crash", save_every=2, **RNG_ON), _factory_acting_at(6, boom),
                     log=lambda s: None)
    ck = load_checkpoint(tmp_path / "crash")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (1, 1, 4)  # step 4 of 6
    _, m_res = run_training(_cfg(tmp_path, "crash", resume=str(tmp_path / "crash"), **RNG_ON),
                            tiny_factory, log=lambda s: None)
    _assert_same_weights(m_full, m_res)


def test_memory_is_measured_for_the_mode_that_runs(tmp_path):
    cfg = _cfg(tmp_path, "m", epochs=1, measure_memory=True, memory_batches=[2, 4],
               memory_mode="reversible")
    first, _ = run_training(cfg, tiny_factory, log=lambda s: None)
    rev = first["memory"]
    assert rev["memory_mode"] == "reversible" and rev["none_mib_per_image"] > rev["mib_per_image"]
    again, _ = run_training(_cfg(tmp_path, "m", epochs=2, measure_memory=True,
                                 memory_batches=[2, 4], memory_mode="checkpoint",
                                 resume=str(tmp_path / "m")), tiny_factory, log=lambda s: None)
    ck = again["memory"]
    assert again["memory_mode"] == "checkpoint" and ck["memory_mode"] == "checkpoint"
    assert ck["mib_per_image"] != rev["mib_per_image"]  # measured anew, not the stored figure
    assert ck["none_mib_per_image"] == rev["none_mib_per_image"]  # the same oracle, same bytes


def test_ctrl_c_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "revsnn.train", "--model", "trevsnn_test", "--T", "2",
           "--epochs", "200", "--batch-size", "16", "--out", str(out), "--threads", "1",
           "--set", "measure_memory=false"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    header = p.stdout.readline()  # printed once training is about to start
    assert header.startswith("revsnn train: trevsnn_test"), header + p.stderr.read()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    assert f"Continue with: revsnn train --resume {out}" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert load_checkpoint(out)["global_step"] == summary["global_step"] >= 1
