"""Distributed checkpoints of ``--parallel fsdp`` (DCP): two gloo processes stopped by Ctrl-C
inside an epoch resume bit for bit; a sharded checkpoint resumes in one process (2 -> 1) exactly
as its consolidated single file does; a one-process checkpoint loads into the shards (1 -> 2)
exactly; ``revsnn convert --consolidate`` writes a file that ``revsnn eval`` and one process's
``load_state_dict`` accept; bad input is one line, exit code 2, nothing written."""

import os

import pytest
import torch
import torch.multiprocessing as mp

import fsdp_run_helpers as H
from revsnn.train import load_checkpoint, run_training
from revsnn.train.cli import eval_main
from revsnn.train.cli import main as train_main
from revsnn.train.convert import main as convert_main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp_ck")
    # a one-process run (--parallel fsdp has nothing to shard: one checkpoint file) ...
    run_training(H.cfg(tmp / "C", epochs=1), log=lambda s: None)
    # ... resumed by the 2-process group along with the other runs
    mp.spawn(H.worker, args=(2, str(tmp / "rendezvous"), str(tmp)), nprocs=2, join=True)
    return tmp, torch.load(tmp / "results.pt", weights_only=False)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ctrl_c_inside_an_epoch_resumes_bit_for_bit(runs):
    tmp, res = runs
    assert "in epoch 2 after step 2/3" in res["B_stop"] and "checkpoint" in res["B_stop"]
    ck = load_checkpoint(tmp / "B-copy")
    assert ck["sharded"]["world"] == 2 and ck["model"] is None and ck["global_step"] == 5
    assert (tmp / "B-copy" / ck["sharded"]["dir"] / ".metadata").is_file()
    _same(res["B"], res["A"])  # model and buffers, bit for bit
    assert res["A_summary"]["parallel"] == "fsdp" and res["A_summary"]["global_step"] == 6


def test_two_to_one_equals_the_consolidated_file(runs, tmp_path):
    tmp, _ = runs
    target = tmp_path / "B.pt"
    assert convert_main(["--consolidate", str(tmp / "B-copy"), str(target)]) == 0
    _, from_shards = run_training(H.cfg(tmp_path / "s", resume=str(tmp / "B-copy")),
                                  log=lambda s: None)
    _, from_file = run_training(H.cfg(tmp_path / "f", resume=str(target)), log=lambda s: None)
    _same(from_shards.state_dict(), from_file.state_dict())


def test_one_to_two_loads_every_tensor_exactly(runs):
    _, res = runs
    assert res["one_to_two"] == {"model": True, "ema": True, "optimizer": True,
                                 "n": res["one_to_two"]["n"]} and res["one_to_two"]["n"] > 10
    assert res["C_summary"]["status"] == "finished" and res["C_summary"]["global_step"] == 6


def test_consolidated_checkpoint_loads_in_one_process_and_evaluates(runs, tmp_path, capsys):
    tmp, res = runs
    out = tmp_path / "A.pt"
    assert convert_main(["--consolidate", str(tmp / "A"), str(out)]) == 0
    ck = load_checkpoint(out)
    assert "sharded" not in ck and ck["global_step"] == 6
    model = H.build_model(H.cfg(tmp_path), type("I", (), {"num_classes": 10,
                                                          "in_channels": 1})())
    model.load_state_dict(ck["model"])
    _same(model.state_dict(), res["A"])
    # the EMA weights the run evaluated, from the file and straight from the shards
    for path in (out, tmp / "A"):
        capsys.readouterr()
        assert eval_main(["--checkpoint", str(path)]) == 0
        line = capsys.readouterr().out
        acc = float(line.split("accuracy ")[1].split("%")[0])
        assert "EMA weights" in line
        assert acc == pytest.approx(res["A_summary"]["final_test_acc"], abs=100 / 360 + 1e-9)


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    tmp, res = runs
    assert "divisible by the number of processes (2)" in res["odd_batch"]
    assert not res["odd_written"]
    assert "--parallel fsdp" in res["ddp_on_shards"]
    assert "another model" in res["other_model"]
    before = sorted(p.name for p in (tmp / "B-copy").iterdir())
    cases = [
        (["--parallel", "zero"], "--parallel: invalid choice: 'zero'"),
        (["--resume", str(tmp / "B-copy"), "--model", "pararevsnn_test"], "another model"),
    ]
    for argv, says in cases:
        capsys.readouterr()
        assert train_main(argv + ["--out", str(tmp_path / "x")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
        assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in (tmp / "B-copy").iterdir()) == before
    # several processes announced but no process group to join
    monkeypatch.setitem(os.environ, "WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delitem(os.environ, k, raising=False)
    assert train_main(["--model", H.MODEL, "--data", "digits", "--parallel", "fsdp",
                       "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torchrun" in err and not (tmp_path / "y").exists()
