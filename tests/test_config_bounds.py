"""Config values: every range checked with the allowed range in the message; YAML read with the
core schema and bounded in size, alias expansion, depth and cycles before a value is built."""

import tracemalloc

import pytest

from revsnn.train.config import (
    TrainConfig,
    apply_overrides,
    load_config_file,
    parse_set,
    validate_config,
)
from revsnn.train.config_ranges import LISTS, RANGES

pytest.importorskip("yaml", reason="config files need PyYAML (train extra)")


def _check(*items):
    validate_config(apply_overrides(TrainConfig(), parse_set(list(items))))


@pytest.mark.parametrize("item, message", [
    ("random_erase=2", "random_erase must be >= 0 and <= 1 (a probability), got 2.0"),
    ("crop_padding=-5", "crop_padding must be >= 0 and <= 4096 (pixels), got -5"),
    ("warmup_epochs=-3", "warmup_epochs must be >= 0 (epochs of linear warm-up), got -3.0"),
    ("mix_prob=5", "mix_prob must be >= 0 and <= 1 (a probability), got 5.0"),
    ("max_steps=-1", "max_steps must be >= 1 and <= 1000000000000"),
    ("max_steps=0", "max_steps must be >= 1"),
    ("betas=[]", "betas must be a list of 2 values, each >= 0 and < 1; got []"),
    ("betas=[0.9, 1.0]", "betas[1] must be >= 0 and < 1, got 1.0"),
    ("lr=.nan", "lr must be > 0 (peak learning rate), got nan"),
    ("min_lr=.nan", "min_lr must be >= 0, got nan"),
    ("momentum=-.inf", "momentum must be >= 0 and < 1, got -inf"),
    ("label_smoothing=1", "label_smoothing must be >= 0 and < 1, got 1.0"),
    ("ema_decay=1", "ema_decay must be >= 0 and < 1 (per step; 0 = off), got 1.0"),
    ("gamma=0", "gamma must be > 0 and <= 1 (step decay factor), got 0.0"),
    ("seed=-1", "seed must be >= 0 and <= 4294967295, got -1"),
    ("T=10000000", "T must be >= 1 and <= 100000 (time steps), got 10000000"),
    ("milestones=[0, 5]", "milestones[0] must be a whole number >= 1"),
    ("frame_size=[32.5, 32]", "frame_size[0] must be a whole number >= 1"),
    ("memory_batches=[4, 4]", "memory_batches must hold at least 2 distinct batch sizes"),
    ("randaugment=[2, 11, 0.5]", "randaugment magnitude must be >= 0 and <= 10"),
    ("randaugment=[2]", "randaugment must be [ops, magnitude, magnitude_std]"),
    ("frame_mode=fast", "frame_mode must be count or time"),
    ("grad_clip=-1", "grad_clip must be >= 0 (0 = off), got -1.0"),
])
def test_out_of_range_values_are_refused_with_the_range(item, message):
    with pytest.raises(ValueError) as err:
        _check(item)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("item", ["epochs=0x10", "epochs=020", "epochs=1_6", "epochs=1:30",
                                  "hflip=yes", "amp=on", "data_dir=2001-01-01x"])
def test_yaml_11_number_and_bool_spellings_are_not_silently_converted(item):
    key, text = item.split("=", 1)
    if key == "data_dir":  # a date-like string stays a string (not a datetime)
        assert parse_set([item]) == {"data_dir": "2001-01-01x"}
        assert parse_set(["data_dir=2001-01-01"]) == {"data_dir": "2001-01-01"}
        return
    assert parse_set([item]) == {key: text}  # stays the string
    with pytest.raises(ValueError, match=f"config key '{key}' expects"):
        _check(item)


def test_decimal_numbers_and_core_booleans_still_parse():
    got = parse_set(["epochs=16", "lr=1e-3", "min_lr=2.5E-6", "hflip=true", "amp=False",
                     "image_size=null", "milestones=[100, 150]", "momentum=-.5"])
    assert got == {"epochs": 16, "lr": 1e-3, "min_lr": 2.5e-6, "hflip": True, "amp": False,
                   "image_size": None, "milestones": [100, 150], "momentum": -0.5}


def test_every_range_and_the_defaults_and_shipped_configs_are_valid():
    from pathlib import Path

    validate_config(TrainConfig())
    for f in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        validate_config(apply_overrides(TrainConfig(), load_config_file(f)))
    cfg = TrainConfig()
    assert set(RANGES) | set(LISTS) <= set(cfg.to_dict())


def _bomb(levels: int, width: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['1.0e-5'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + f"\nlr: *a{levels - 1}\n"


def test_nested_anchor_yaml_is_refused_before_it_expands(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(_bomb(7, 8))  # 8^7 = 2 million values from a few hundred bytes
    assert f.stat().st_size < 500
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="expands to more than 100000 values") as err:
            load_config_file(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(f) in str(err.value) and peak < 2 << 20, peak
    flow = [f"&a0 [{', '.join(['1'] * 8)}]"]  # the same bomb as one --set value
    flow += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 7)]
    with pytest.raises(ValueError, match="--set milestones: expands to more than"):
        parse_set(["milestones=[" + ", ".join(flow) + "]"])


@pytest.mark.parametrize("text, message", [
    ("lr: &a [1, *a]\n", "refers to its own anchor"),
    ("lr: " + "[" * 3000 + "]" * 3000 + "\n", "nest"),
    ("lr: " + "[" * 80 + "]" * 80 + "\n", "nest deeper than 64"),
])
def test_recursive_and_deep_yaml_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config_file(f)
    assert str(f) in str(err.value)


def test_oversized_config_file_is_refused_unread(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text("# " + "x" * (1 << 20) + "\nlr: 0.1\n")
    with pytest.raises(ValueError, match="more than a config may hold"):
        load_config_file(f)


def test_cli_turns_a_recursive_config_and_a_bad_data_file_into_one_line(tmp_path, capsys):
    from revsnn.cli import main as revsnn_main

    f = tmp_path / "r.yaml"
    f.write_text("lr: &a [1, *a]\n")
    fast = ["--model", "trevsnn_test", "--T", "2", "--epochs", "1", "--batch-size", "4",
            "--set", "max_steps=1", "--set", "measure_memory=false"]
    rc = revsnn_main(["train", *fast, "--config", str(f), "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and str(f) in lines[0], lines
    assert not (tmp_path / "run").exists()
    data = tmp_path / "mnist"
    data.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (data / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(60)))
    rc = revsnn_main(["train", *fast, "--data", "mnist", "--data-dir", str(data),
                      "--out", str(tmp_path / "run2")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert str(data / "train-images-idx3-ubyte.gz") in lines[0] and "gzip" in lines[0], lines
