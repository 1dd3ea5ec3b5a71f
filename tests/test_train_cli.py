"""`revsnn train` / `revsnn eval` command lines: config precedence, bad input, the main job's
config file, and an end-to-end tiny run through `python -m revsnn.train`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revsnn.train.cli import build_parser, eval_main, main, resolve_config
from revsnn.train.config import TrainConfig, apply_overrides, load_config_file

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_precedence_defaults_config_flags_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr: 1e-4\nbatch_size: 16\nmilestones: [3, 5]\n")
    args = build_parser().parse_args(
        ["--config", str(f), "--epochs", "9", "--set", "lr=0.5", "--set", "amp=true",
         "--set", "model_kwargs.kernel=5"])
    cfg = resolve_config(args)
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.milestones) == (9, 0.5, 16, [3, 5])
    assert cfg.amp is True and cfg.model_kwargs == {"kernel": 5}
    assert cfg.model == TrainConfig().model  # untouched keys keep their defaults


def test_exponent_floats_survive_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 1e-4\nwarmup_lr: 5E-6\n")  # YAML 1.1 reads these as strings
    cfg = apply_overrides(TrainConfig(), load_config_file(f))
    assert cfg.lr == 1e-4 and cfg.warmup_lr == 5e-6


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    from revsnn.data import check_dataset_name
    from revsnn.models.registry import model_info

    cfg = apply_overrides(TrainConfig(), load_config_file(path))
    assert cfg.epochs >= 1 and cfg.optimizer in ("sgd", "adamw", "lamb")
    model_info(cfg.model)  # a registered model
    check_dataset_name(cfg.data)


def test_digits_config_mirrors_the_defaults():
    cfg = apply_overrides(TrainConfig(), load_config_file(REPO / "configs" / "digits_trevsnn.yaml"))
    assert cfg == TrainConfig()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "trevsnn_cifr"], "did you mean trevsnn_cifar"),
        (["--data", "fashion_mnst"], "did you mean fashion_mnist"),
        (["--set", "learning_rat=3"], "unknown config key 'learning_rat'"),
        (["--set", "epochs=ten"], "expects int"),
        (["--set", "optimizer=adam"], "expected sgd, adamw or lamb"),
        (["--batch-size", "0"], "batch_size must be >= 1"),
        (["--batch-size", "5000", "--set", "measure_memory=false"], "larger than the training set"),
    ],
)
def test_bad_input_is_a_clear_error(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_missing_data_directory_says_how_to_get_it(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    rc = main(["--data", "fashion_mnist", "--data-dir", str(missing), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and str(missing) in err and "does not exist" in err
    assert "apt-get install dataset-fashion-mnist" in err


def test_model_that_does_not_fit_the_data(tmp_path, capsys):
    # An image model on frame data: the fit check names model, data and input shape.
    from test_data_events import write_nmnist_tree

    root = write_nmnist_tree(tmp_path / "nmnist")
    rc = main(["--model", "trevsnn_test", "--data", "nmnist", "--data-dir", str(root),
               "--T", "2", "--batch-size", "4", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "model 'trevsnn_test' (T=2) cannot train on data 'nmnist'" in err
    assert "(2, 4, 2, 34, 34)" in err and "trevsnn_tiny_dvs" in err


def test_eval_of_a_missing_checkpoint(tmp_path, capsys):
    assert eval_main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_python_m_revsnn_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "revsnn.train", "--model", "trevsnn_test", "--T", "2",
           "--epochs", "1", "--batch-size", "16", "--out", str(out), "--threads", "1",
           "--set", "max_steps=2", "--set", "memory_batches=[2,4]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "done: test accuracy" in r.stdout and "MiB/image" in r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["memory_mib_per_image"] > 0 and summary["model"] == "trevsnn_test"
    rc = eval_main(["--checkpoint", str(out / "checkpoint.pt"), "--device", "cpu"])
    assert rc == 0
