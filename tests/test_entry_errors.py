"""Expected failures at every entry point are one line on stderr, exit code 2, and leave no
half-made run folder: out of memory on the CPU, a full disk or a file-size limit, a size that
overflows, a checkpoint whose stored config is not a config or that lacks its training state,
a killed checkpoint write; ``revsnn eval`` uses no data directory or download the checkpoint
asks for and range-checks its stored config; ``plan --max-batch`` stops at the device's
memory."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revsnn.cli import main
from revsnn.plan.capacity import device_memory_bytes
from revsnn.train import TrainConfig, save_checkpoint

FAST = ["train", "--model", "trevsnn_test", "--T", "2", "--epochs", "1", "--batch-size", "16",
        "--set", "max_steps=2", "--set", "measure_memory=false", "--set", "progress=false"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _one_line(capsys, rc, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and needle in err[0], err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 4000000000000 bytes. Error code 12"),
    MemoryError(),
])
def test_cpu_out_of_memory_is_one_line_and_leaves_no_run_folder(tmp_path, capsys, monkeypatch,
                                                                error):
    def oom(*a, **k):
        raise error

    monkeypatch.setattr(torch.optim.AdamW, "step", oom)  # the first step runs out of memory
    out = tmp_path / "run"
    rc = main([*FAST, "--out", str(out)])
    _one_line(capsys, rc, "out of memory (CPU")
    assert not out.exists()


def _limited(cmd, cwd, limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": SRC, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, preexec_fn=pre,
                          env=env, timeout=300)


def test_a_file_size_limit_names_the_file_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    r = _limited([sys.executable, "-m", "revsnn.cli", *FAST, "--out", str(out)], tmp_path,
                 32 * 1024)  # config.yaml fits, the checkpoint does not
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"cannot write {out / 'checkpoint.pt'}: file too large" in lines[0]
    assert not out.exists()  # no checkpoint, no temporary file, no half-made folder


def test_a_killed_checkpoint_write_is_cleaned_on_the_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*FAST, "--out", str(out)]) == 0
    capsys.readouterr()
    script = (
        "import os, signal, torch, sys\n"
        "real = torch.save\n"
        "def dying(obj, f, *a, **k):\n"
        "    f.write(b'partial checkpoint bytes')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = dying\n"
        "from revsnn.cli import main\n"
        f"sys.exit(main({[*FAST, '--resume', str(out), '--epochs', '2']!r}))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       env={**os.environ, "PYTHONPATH": SRC}, timeout=300)
    assert r.returncode == -signal.SIGKILL
    left = list(out.glob("checkpoint.pt.tmp-*"))
    assert len(left) == 1  # what the killed write left
    assert main([*FAST, "--resume", str(out), "--epochs", "2"]) == 0
    assert not list(out.glob("*.tmp-*"))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("argv, needle", [
    ([*FAST, "--memory-budget", "1e400"], "'1e400' is not a finite number of bytes"),
    (["plan", "--model", "trevsnn_test", "--batch", "2", "--budget", "1e400"],
     "'1e400' is not a finite number of bytes"),
])
def test_sizes_that_overflow_are_one_line(tmp_path, capsys, argv, needle):
    if argv[0] == "train":
        argv = [*argv, "--out", str(tmp_path / "o")]
    _one_line(capsys, main(argv), needle)
    assert not (tmp_path / "o").exists()


def test_plan_max_batch_stops_at_the_device_memory(capsys):
    rc = main(["plan", "--model", "trevsnn_test", "--max-batch", "--budget", "1e300",
               "--no-measure", "--json", "--rounds", "1", "--profile-batch", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    have = device_memory_bytes(torch.device("cpu"))
    res = json.loads(out)
    assert res["budget_bytes"] <= have * 1.05  # available memory moves a little meanwhile
    assert res["predicted_peak_bytes"] <= res["budget_bytes"]
    assert "exceeds the memory cpu can allocate" in err


def _checkpoint(path, **entries):
    base = {"config": TrainConfig(model="trevsnn_test", T=2).to_dict(), "epoch": 1,
            "global_step": 2, "model": {}, "optimizer": {}, "best_acc": 0.0, "best_epoch": 1}
    base.update(entries)
    save_checkpoint(path, base)
    return str(path)


def test_a_checkpoint_with_a_bad_config_or_no_training_state_is_one_line(tmp_path, capsys):
    s = _checkpoint(tmp_path / "s.pt", config="model: trevsnn_test")
    _one_line(capsys, main(["eval", "--checkpoint", s]), "the stored config is a str")
    _one_line(capsys, main([*FAST, "--resume", s, "--out", str(tmp_path / "o")]),
              "the stored config is a str")
    g = tmp_path / "g.pt"
    _checkpoint(g)
    ck = torch.load(g, weights_only=True)
    del ck["global_step"]
    torch.save(ck, g)
    _one_line(capsys, main([*FAST, "--resume", str(g), "--out", str(tmp_path / "o")]),
              "lacks 'global_step', which resuming needs")
    t = _checkpoint(tmp_path / "t.pt", config=TrainConfig(model="trevsnn_test",
                                                          T=10_000_000).to_dict())
    line = _one_line(capsys, main(["eval", "--checkpoint", t]), "stored config")
    assert "T must be" in line and "10000000" in line
    assert not (tmp_path / "o").exists()


def test_eval_takes_no_data_dir_or_download_from_the_checkpoint(tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "run"
    assert main([*FAST, "--out", str(out)]) == 0
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    stored = tmp_path / "stored"
    ck["config"].update(data_dir=str(stored), download=True)
    torch.save(ck, out / "checkpoint.pt")
    import revsnn.train.build as build

    seen = []
    real = build.build_data

    def spy(cfg):
        seen.append((cfg.data_dir, cfg.download))
        return real(cfg)

    monkeypatch.setattr(build, "build_data", spy)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out)]) == 0
    assert main(["eval", "--checkpoint", str(out), "--data-dir", str(tmp_path)]) == 0
    assert seen == [(None, False), (str(tmp_path), False)]
    assert not stored.exists()


def test_convert_onto_a_directory_and_bad_flags_are_one_line(tmp_path, capsys):
    _one_line(capsys, main(["convert", "--published", "x.pth", "--model", "trevsnn_test",
                            str(tmp_path)]), "is a directory")
    _one_line(capsys, main(["convert", "--published", "x.pth", str(tmp_path / "o.pt")]),
              "the following arguments are required: --model")


@pytest.mark.parametrize("argv, needle", [
    (["models", "--bogus"], "revsnn models: unrecognized arguments: --bogus"),
    (["bench", "memory", "--models", "trevsnn_test", "--batch", "x"],
     "revsnn bench: argument --batch"),
    (["convert", "--published", "x.pth", "--model", "trevsnn_test"],
     "revsnn convert: the following arguments are required: OUT.pt"),
])
def test_bad_flags_of_every_command_are_one_line(capsys, argv, needle):
    _one_line(capsys, main(argv), needle)
