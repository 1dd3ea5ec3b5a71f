"""``revsnn bench``: a tiny sweep writes its table, CSV and (with matplotlib) plots; memory is
flat in depth for the reversible mode and rising for "none"."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import revsnn
from revsnn.bench import report
from revsnn.bench.cli import main
from revsnn.models.base import SpikingModel
from revsnn.models.registry import Family
from revsnn.reversible import RevCoupling, ReversibleSequence
from revsnn.spiking import IF


class _Branch(nn.Module):
    """F or G: conv + IF over [T, B, C, H, W] (time folded into the batch for the conv)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.neuron = IF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.conv(x.flatten(0, 1))  # [T*B, C, H, W]
        return self.neuron(y.view(T, B, *y.shape[1:]))  # [T, B, C, H, W]


class _TinyRev(SpikingModel):
    """stem conv -> IF -> `depth` reversible couplings -> mean -> linear."""

    def __init__(self, depth: int, num_classes: int = 10, T: int = 2, in_channels: int = 3,
                 memory_mode: str = "none", c: int = 4) -> None:
        super().__init__(num_classes, T, in_channels, memory_mode)
        self.depth = depth
        self.stem = nn.Conv2d(3, 2 * c, 3, padding=1, bias=False)
        self.neuron = IF()
        self.body = ReversibleSequence(
            [RevCoupling(_Branch(c), _Branch(c)) for _ in range(depth)], memory_mode=memory_mode
        )
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        z = self.stem(x).unsqueeze(0).expand(self.T, -1, -1, -1, -1)  # [T, B, 2C, H, W]
        s = self.neuron(z.contiguous())
        y = self.body(s)
        return self.head(y.mean(dim=(0, 3, 4)).view(B, -1))


_TEST = Family("bench_test", "none", "tiny reversible nets for the bench tests")
revsnn.register_model("bench_test_rev1", _TinyRev, _TEST, "1 coupling", image_size=5, depth=1)
revsnn.register_model("bench_test_rev4", _TinyRev, _TEST, "4 couplings", image_size=5, depth=4)


COMMON = ["--batch", "2", "--image-size", "5", "--num-classes", "3"]


def test_memory_depth_sweep_writes_files_and_reversible_is_flat(tmp_path, capsys):
    out = tmp_path / "depth"
    rc = main(["memory", "--models", "bench_test_rev1,bench_test_rev4", "--sweep", "depth",
               "--memory-modes", "none,reversible", "--T", "2", *COMMON, "--ranges", "1,2 2,4",
               "--out", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert ("| model | depth | T | memory_mode | mib_1_2 | mib_2_4 | fixed_1_2 | fixed_2_4 |"
            in stdout)
    rows = report.read_csv(out / "memory.csv")
    assert len(rows) == 4
    for r in rows:
        for key in ("device", "torch", "dtype", "batch", "image_size", "T", "depth", "commit"):
            assert r[key] != "", key
        assert r["torch"] == torch.__version__ and r["dtype"] == "float32"
        # the headline column is the first range's slope
        assert float(r["mib_per_image"]) == float(r["mib_1_2"])
    mem = {(int(r["depth"]), r["memory_mode"]): float(r["mib_2_4"]) for r in rows}
    # none stores every block's activations: grows with depth; reversible keeps only the output
    assert mem[(4, "none")] > mem[(1, "none")] * 1.5
    assert mem[(4, "reversible")] < mem[(4, "none")]
    assert mem[(4, "reversible")] == pytest.approx(mem[(1, "reversible")], rel=0.25)
    assert (out / "memory.md").read_text().startswith("| model |")
    if report.plots_available():
        assert (out / "memory_per_image_vs_depth.png").stat().st_size > 0


def test_speed_and_energy_over_a_T_sweep(tmp_path):
    out = tmp_path / "T"
    assert main(["speed", "--models", "bench_test_rev1", "--memory-modes", "checkpoint,none",
                 "--repeats", "5", "--warmup", "1", "--T", "1", *COMMON, "--out", str(out)]) == 0
    speed = report.read_csv(out / "speed.csv")
    assert [r["memory_mode"] for r in speed] == ["checkpoint", "none"]
    assert all(r["ratio_baseline"] == "none" and r["clock"] == "cpu" for r in speed)
    assert float(speed[1]["train_time_ratio"]) == 1.0
    ratio = float(speed[0]["train_ms_per_step"]) / float(speed[1]["train_ms_per_step"])
    assert float(speed[0]["train_time_ratio"]) == pytest.approx(ratio)

    base = ["--models", "bench_test_rev1", "--sweep", "T", "--values", "1,2", *COMMON,
            "--out", str(out)]
    assert main(["energy", "--memory-modes", "reversible", *base]) == 0
    energy = report.read_csv(out / "energy.csv")
    layers = report.read_csv(out / "energy_layers.csv")
    assert [r["T"] for r in energy] == ["1", "2"]
    # the stem sees real-valued pixels: MACs only; this model runs it once per image
    stem = [r for r in layers if r["layer"] == "stem"]
    assert all(float(r["acs_per_image"]) == 0 and float(r["macs_per_image"]) > 0 for r in stem)
    assert stem[0]["macs_per_image"] == stem[1]["macs_per_image"]  # independent of T
    # branch convs see spikes: ACs only, and the T=2 network does more of them
    acs = {r["T"]: float(r["acs_per_image"]) for r in energy}
    assert acs["2"] > acs["1"] > 0
    total = sum(float(r["energy_mj_per_image"]) for r in layers if r["T"] == "2")
    assert total == pytest.approx(float(energy[1]["energy_mj_per_image"]), rel=1e-6)
    if report.plots_available():
        assert (out / "step_time.png").exists()
        assert (out / "energy_layers_bench_test_rev1_T2.png").exists()


def test_bad_options_give_clear_errors(capsys):
    assert main(["memory", "--models", "no_such_model", *COMMON]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["memory", "--models", "bench_test_rev1", "--sweep", "T", *COMMON]) == 2
    assert "--sweep T needs --values" in capsys.readouterr().err
    assert main(["memory", "--models", "bench_test_rev1", "--memory-modes", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown memory mode 'fast'" in err[0], err


def test_python_dash_m_entry_point_prints_help():
    r = subprocess.run([sys.executable, "-m", "revsnn.bench", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "--memory-modes" in r.stdout and "{memory,speed,energy}" in r.stdout


def test_time_steps_records_both_clocks_of_the_same_steps_and_never_trains_the_model():
    from revsnn.bench.timing import ratios, time_steps

    torch.manual_seed(0)
    m = _TinyRev(depth=1, num_classes=3, T=1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x, y = torch.randn(2, 3, 4, 4), torch.tensor([0, 2])
    order = []

    class _Spy(nn.Module):  # records the order in which the set-ups run
        def __init__(self, name: str, inner: nn.Module) -> None:
            super().__init__()
            self.name, self.inner = name, inner

        def forward(self, x):
            order.append(self.name)
            return self.inner(x)

    r = time_steps({"a": _Spy("a", m), "b": _Spy("b", m)}, (x, y), warmup=1, repeats=5)
    # interleaved step by step: a, b, a, b, ... (1 warm-up + 5 timed each)
    assert order == ["a", "b"] * 6
    for name in ("a", "b"):
        assert len(r[name]["wall_ms"]) == len(r[name]["cpu_ms"]) == 5
        assert r[name]["median_cpu_ms"] == sorted(r[name]["cpu_ms"])[2]
        assert r[name]["clock"] == "cpu_ms" and r[name]["ms"] == r[name]["median_cpu_ms"]
        assert r[name]["ms_per_image"] == pytest.approx(r[name]["ms"] / 2)
        assert "cuda_ms" not in r[name]
    # the timed copies trained; the given model did not
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())
    inf = time_steps({"m": m}, (x, y), train=False, warmup=0, repeats=5)["m"]
    assert inf["train"] is False and inf["batch"] == 2
    with pytest.raises(ValueError, match=">= 5"):
        time_steps({"m": m}, (x, y), repeats=3)
    assert ratios({"none": 2.0, "reversible": 3.0}, "none") == {"none": 1.0, "reversible": 1.5}
    with pytest.raises(ValueError, match="baseline"):
        ratios({"none": 2.0}, "checkpoint")


def test_energy_spike_input_convention(tmp_path):
    """T-RevSNN's pw1 reads dw1's real-valued output: MACs under strict, ACs when chained."""
    rows = {}
    for rule in ("strict", "linear_chain"):
        out = tmp_path / rule
        assert main(["energy", "--models", "trevsnn_test", "--memory-modes", "reversible",
                     "--batch", "2", "--image-size", "8", "--num-classes", "3",
                     "--spike-input", rule, "--out", str(out)]) == 0
        energy = report.read_csv(out / "energy.csv")
        assert energy[0]["spike_input"] == rule
        rows[rule] = (energy[0], report.read_csv(out / "energy_layers.csv"))
    strict, chained = rows["strict"], rows["linear_chain"]

    def real_fed_pw1(layer_rows):
        # pw1 layers whose input (dw1's output) was real-valued; in an untrained network in eval
        # mode the deeper levels can be silent (all-zero spikes, so dw1's output is all zero)
        return [r for r in layer_rows
                if r["layer"].endswith("pw1") and r["spiking_input"] == "False"]

    pw1 = real_fed_pw1(chained[1])
    assert pw1 and all(r["chained"] == "True" and float(r["macs_per_image"]) == 0 for r in pw1)
    pw1_strict = real_fed_pw1(strict[1])
    assert [r["layer"] for r in pw1_strict] == [r["layer"] for r in pw1]
    assert all(float(r["macs_per_image"]) > 0 and float(r["acs_per_image"]) == 0
               for r in pw1_strict)
    assert float(chained[0]["energy_mj_per_image"]) < float(strict[0]["energy_mj_per_image"])
