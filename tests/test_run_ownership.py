"""A run folder belongs to one run (revsnn.train.ownership): an exclusive lock while a run
writes, ``--out`` at a folder holding another run or other files refused, ``--resume X --out Y``
never mixes two runs, single-file outputs replaced only with ``--force``, and temporary files of
killed writes cleaned on the next start."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from revsnn.cli import main
from revsnn.train.ownership import FolderLock, clean_orphans, refuse_existing

FAST = ["train", "--model", "trevsnn_test", "--T", "2", "--epochs", "1", "--batch-size", "16",
        "--set", "max_steps=2", "--set", "measure_memory=false", "--set", "progress=false"]


def _train(capsys, *args):
    rc = main([*FAST, *args])
    out, err = capsys.readouterr()
    return rc, err.strip().splitlines()


def _snapshot(folder: Path):
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_out_at_a_folder_with_other_files_is_refused(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me\n")
    rc, err = _train(capsys, "--out", str(folder))
    assert rc == 2 and len(err) == 1, err
    assert "already holds other files (notes.txt)" in err[0]
    assert _snapshot(folder) == {"notes.txt": b"keep me\n"}


def test_a_locked_folder_or_a_started_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):  # as a run that is writing holds it
        rc, err = _train(capsys, "--out", str(out))
        assert rc == 2 and len(err) == 1, err
        assert f"run folder {out} is in use by another revsnn process" in err[0]
    assert not (out / ".revsnn-lock").exists()  # released
    # a run that started (config.yaml, metrics header) but saved no checkpoint yet
    (out / "config.yaml").write_text("model: trevsnn_test\n")
    (out / "metrics.csv").write_text("epoch\n")
    before = _snapshot(out)
    rc, err = _train(capsys, "--out", str(out))
    assert rc == 2 and "already holds another run (config.yaml, metrics.csv)" in err[0], err
    assert _snapshot(out) == before


def test_two_runs_cannot_share_a_folder_and_a_finished_run_holds_its_lock_no_more(
        tmp_path, capsys):
    out = tmp_path / "a"
    assert _train(capsys, "--out", str(out))[0] == 0
    assert not (out / ".revsnn-lock").exists()
    before = _snapshot(out)
    rc, err = _train(capsys, "--out", str(out))
    assert rc == 2 and "already holds a checkpoint" in err[0]
    assert _snapshot(out) == before


def test_resume_into_the_folder_of_another_run_is_refused(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _train(capsys, "--out", str(a))[0] == 0
    assert _train(capsys, "--out", str(b), "--seed", "1")[0] == 0
    before_a, before_b = _snapshot(a), _snapshot(b)
    rc, err = _train(capsys, "--resume", str(a), "--out", str(b), "--epochs", "2")
    assert rc == 2 and len(err) == 1, err
    assert f"--out {b} holds another run" in err[0] and f"--resume {b}" in err[0]
    assert _snapshot(b) == before_b
    # into a new folder: allowed, and the source run is left as it was
    assert _train(capsys, "--resume", str(a), "--out", str(c), "--epochs", "2")[0] == 0
    assert torch.load(c / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert _snapshot(a) == before_a


def test_orphaned_temporary_files_are_cleaned_on_the_next_start(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(capsys, "--out", str(out))[0] == 0
    dead = out / f"checkpoint.pt.tmp-{_dead_pid()}"
    dead.write_bytes(b"x" * 1000)
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = out / f"metrics.csv.tmp-{live_proc.pid}"
        live.write_bytes(b"y")
        assert _train(capsys, "--resume", str(out), "--epochs", "2")[0] == 0
        assert not dead.exists()  # its writer is dead: removed
        assert live.exists()  # its writer still runs: kept
    finally:
        live_proc.kill()
        live_proc.wait()
    assert clean_orphans(out) == [live]
    # a new run into a folder holding only a dead writer's temporary file
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / f"checkpoint.pt.tmp-{_dead_pid()}").write_bytes(b"z")
    assert _train(capsys, "--out", str(fresh))[0] == 0
    assert not list(fresh.glob("*.tmp-*"))


def test_convert_refuses_an_existing_output_or_a_directory(tmp_path, capsys):
    existing = tmp_path / "run" / "checkpoint.pt"
    existing.parent.mkdir()
    existing.write_bytes(b"a training checkpoint")
    for target, needle in [(existing, "already exists; pass --force to replace it"),
                           (existing.parent, "is a directory; give a file name")]:
        rc = main(["convert", "--published", str(tmp_path / "missing.pth"), "--model",
                   "trevsnn_test", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert existing.read_bytes() == b"a training checkpoint"
    with pytest.raises(ValueError, match="already exists"):
        refuse_existing(existing, force=False)
    assert refuse_existing(existing, force=True) == existing
