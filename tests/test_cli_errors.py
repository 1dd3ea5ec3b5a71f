"""Every error a user can cause at the command line: one line on stderr naming what and where,
exit code 2, no traceback, no half-made run folder."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revsnn.cli import main as revsnn_main

# a run that would be quick if it got that far: the errors below must stop it before training
FAST = ["--model", "trevsnn_test", "--T", "2", "--epochs", "1", "--batch-size", "16",
        "--set", "max_steps=1", "--set", "measure_memory=false"]


def _files(tmp):
    bad = tmp / "random.pt"
    bad.write_bytes(os.urandom(4096))
    a_file = tmp / "a_file"
    a_file.write_text("not a folder\n")
    yaml_bad = tmp / "bad.yaml"
    yaml_bad.write_text("epochs: [1, 2\nlr: 0.1\n")
    return {"RANDOM": str(bad), "FILE": str(a_file), "BADYAML": str(yaml_bad),
            "MISSING": str(tmp / "missing"), "OUT": str(tmp / "run")}


CASES = [
    # (argv with placeholders, text the one line must contain)
    (["train", "--device", "tpu"], "unknown device 'tpu'; expected auto, cpu, cuda or cuda:N"),
    (["train", "--out", "FILE"], "is a file, not a folder; choose another --out"),
    (["train", "--out", "FILE/sub/run"], "which is a file, not a folder; choose another --out"),
    (["train", "--out", "/sys/revsnn-test-run"],
     "cannot write the run folder /sys/revsnn-test-run"),
    (["train", "--resume", "RANDOM"], "is corrupted, truncated or not a revsnn checkpoint"),
    (["train", "--resume", "MISSING"], "missing does not exist; pass a run folder that holds"),
    (["train", "--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
    (["train", "--memory-mode", "fast"], "argument --memory-mode: invalid choice: 'fast'"),
    (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["train", "--config", "MISSING"], "config file"),
    (["train", "--config", "BADYAML"], "is not valid YAML (line"),
    (["train", "--set", "lr"], "--set expects key=value, got 'lr'"),
    (["train", "--set", "learning_rat=3"], "unknown config key 'learning_rat'"),
    (["train", "--model", "trevsnn_cifr"], "did you mean trevsnn_cifar"),
    (["train", "--data", "fashion_mnst"], "did you mean fashion_mnist"),
    (["train", "--batch-size", "0"], "batch_size must be >= 1"),
    (["train", "--lr", "-1"], "lr must be > 0"),
    (["train", "--save-every", "-3"], "save_every must be >= 0"),
    (["train", "--data", "fashion_mnist", "--data-dir", "MISSING"], "does not exist"),
    (["eval", "--checkpoint", "RANDOM"], "is corrupted, truncated or not a revsnn checkpoint"),
    (["eval", "--checkpoint", "MISSING"], "does not exist"),
    (["eval"], "the following arguments are required: --checkpoint"),
    (["frobnicate"], "unknown command 'frobnicate'"),
]
if not torch.cuda.is_available():
    CASES.append((["train", "--device", "cuda"], "CUDA is not available here; use --device cpu"))


@pytest.mark.parametrize("argv, needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    files = _files(tmp_path)
    argv = [files.get(a, a) for a in argv]
    argv = [a.replace("FILE/", files["FILE"] + "/") for a in argv]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", files["OUT"]]
    if argv[0] == "train":
        argv = ["train", *FAST, *argv[1:]]  # the case's own flags come last and win
    rc = revsnn_main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err and "weights_only" not in err
    assert not Path(files["OUT"]).exists()  # no half-made run folder
    assert not Path(files["FILE"] + "/sub").exists()


def test_tensorboard_without_the_package_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out = tmp_path / "run"
    rc = revsnn_main(["train", "--tensorboard", "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "--tensorboard needs the tensorboard package: pip install 'revsnn[bench]'" in err[0]
    assert not out.exists()


def test_read_only_file_system(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({r.stderr.strip()})")
    try:
        rc = revsnn_main(["train", "--out", str(ro / "runs" / "a"), *FAST])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert f"cannot write the run folder {ro / 'runs' / 'a'}: Read-only file system" in err[0]
        assert list(ro.iterdir()) == []
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_console_script_bad_device(capsys):
    exe = Path(sys.executable).with_name("revsnn")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "revsnn.cli"]
    r = subprocess.run([*cmd, "train", "--device", "tpu"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "unknown device 'tpu'" in r.stderr


def test_bare_revsnn_prints_usage_instead_of_training(capsys):
    assert revsnn_main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: revsnn <command>") and "epoch" not in out
