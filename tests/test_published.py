"""Loading the published code's checkpoints: name rules against the real state-dict layouts in
``<repo>/../shared/published/``, values landing where the rules say, wrappers, errors, and
``revsnn convert`` -> ``revsnn eval`` end to end; the DVS RevSFormer tokenizer as published."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest
import torch

import published_layouts as pl
import revsnn
from revsnn.models.published import (
    PublishedCheckpointError,
    match_published,
    published_num_classes,
    read_published,
)

LAYOUT_FILES = sorted(pl.SHARED_DIR.glob("*.tsv")) if pl.SHARED_DIR.is_dir() else []
needs_shared = pytest.mark.skipif(
    not LAYOUT_FILES, reason=f"published layouts not found: {pl.SHARED_DIR} (../shared absent)"
)
layout_files = pytest.mark.parametrize(
    "path", LAYOUT_FILES or [None], ids=[p.stem for p in LAYOUT_FILES] or ["absent"]
)


def _unique_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _meta_model(name: str, layout):
    with torch.device("meta"):
        return revsnn.create_model(
            name, num_classes=published_num_classes({k: s for k, (s, _) in layout.items()}))


# ------------------------------------------------------------------ the real published layouts
def test_every_layout_file_is_covered():
    if not LAYOUT_FILES:
        pytest.skip(f"published layouts not found: {pl.SHARED_DIR} (../shared absent)")
    assert {p.stem for p in LAYOUT_FILES} == set(pl.FULL_SIZE)


@needs_shared
@layout_files
def test_layout_generator_matches_published_file(path):
    """The test-side description of the published layout equals the file (names, shapes, dtypes,
    shared groups), so it can stand in for the published code at other sizes."""
    layout, groups, _ = pl.read_tsv(path)
    gen, gen_groups = pl.FULL_SIZE[path.stem]()
    assert gen == layout
    assert sorted(map(sorted, gen_groups)) == sorted(map(sorted, groups))


@needs_shared
@layout_files
def test_name_rules_fit_published_layout(path):
    """Every published name is used exactly once (a shared group counts once), shapes agree,
    nothing of ours is left unfilled, and the parameter count is the published one."""
    layout, groups, header = pl.read_tsv(path)
    model = _meta_model(path.stem, layout)
    plan = match_published(model, {k: s for k, (s, _) in layout.items()})
    used = [p for names in plan.sources.values() for p in names]
    assert sorted(used) == sorted(layout)  # each published name once
    assert set(plan.sources) == set(plan.alias.values())  # each tensor of ours filled
    multi = sorted(sorted(v) for v in plan.sources.values() if len(v) > 1)
    assert multi == sorted(map(sorted, groups))  # several names only for the shared groups
    own = model.state_dict()
    for canon, names in plan.sources.items():
        for p in names:
            s = layout[p][0]
            assert tuple(own[canon].shape) in (s, s + (1,)), (p, canon)
    assert _unique_params(model) == int(header["n_params_unique"])


# ------------------------------------------------------------------ values
TINY = {
    "revs_resnet_test": lambda: (pl.revsresnet((1, 2), (4, 8), 10), [], {}),
    "revs_resnet24": lambda: (pl.revsresnet((1, 2, 2), (16, 32, 48), 10, 2, event=True), [], {}),
    "ms_resnet_test": lambda: (pl.msresnet((1, 1), (4, 8), 10), [], {}),
    "ms_resnet18": lambda: (pl.msresnet((2, 2, 2, 2), (4, 8, 8, 8), 10), [], {
        "widths": (4, 8, 8, 8)}),
    "revsformer_test": lambda: (pl.revsformer(2, 16, 10), [], {}),
    "revsformer_test-events": lambda: (pl.revsformer(2, 16, 10, 2, event=True), [], {
        "tokenizer": "events", "in_channels": 2}),
    "trevsnn_test": lambda: (*pl.trevsnn((4, 8, 8, 8), 4, 3, 10, stem_kernels=(3, 3)), {"T": 4}),
}

# a few correspondences written out by hand, per model
SPOT = {
    "revs_resnet_test": {"ds1.1.1.weight": "downsamples.0.conv.weight",
                         "layer2.reversible_blocks.1.g_block.conv2.1.running_var":
                         "stages.1.blocks.1.g.conv2.1.running_var", "bn1.bias": "stem.bn.bias"},
    "revs_resnet24": {"conv1.0.weight": "stem.conv.weight", "ds2.1.2.weight":
                      "downsamples.1.bn.weight", "fc.bias": "head.fc.bias"},
    "ms_resnet18": {"layer3.1.conv2.0.weight": "layers.5.conv2.0.weight",
                    "layer4.0.downsample.1.1.running_mean": "layers.6.shortcut.1.running_mean"},
    "revsformer_test": {"patch_embed.block3_conv.weight": "tokenizer.stages.2.conv.0.weight",
                        "block.reversible_blocks.1.f_block.k_conv.weight":
                        "blocks.blocks.1.f.k.0.weight", "head.weight": "head.fc.weight"},
    "revsformer_test-events": {"patch_embed.proj_bn.bias": "tokenizer.stem.bn.bias",
                               "patch_embed.proj1_conv.weight": "tokenizer.stages.0.conv.0.weight"},
    "trevsnn_test": {
        "subnet2.alpha3": "columns.alpha.2.3",
        "subnet1.level0.fusion.up.encode_conv.weight": "columns.levels.1.0.up.conv.weight",
        "subnet3.level2.fusion.down.encode_bn.running_mean":
            "columns.levels.3.2.entry.2.running_mean",
        "subnet0.level1.blocks.1.pwconv1.gain": "columns.levels.0.1.block2.pw1.gain",
        "subnet3.level3.blocks.1.dwconv2_reuse.weight": "shared.3.dw2.weight",
        "stem.down1.0.gain": "stem.0.gain", "cls_blocks.3.classifier2.bias": "heads.3.conv2.bias",
    },
}


@pytest.mark.parametrize("key", list(TINY))
def test_values_land_where_the_rules_say(key):
    name = key.split("-")[0]
    layout, groups, kwargs = TINY[key]()
    state = pl.fill(layout, groups)
    model = revsnn.load_published(name, state, dtype=torch.float64, **kwargs)
    assert not model.training and model.num_classes == 10
    own = model.state_dict()
    plan = match_published(model, {k: v.shape for k, v in state.items()})
    inverse = {}
    for canon, names in plan.sources.items():
        for p in names:
            assert torch.equal(own[canon].reshape(state[p].shape), state[p]), (p, canon)
            inverse[p] = canon
    for alias, canon in plan.alias.items():  # every name of ours holds its canonical values
        assert torch.equal(own[alias], own[canon])
    # each of our tensors came from a distinct published one (values identify the source)
    firsts = [float(own[c].flatten()[0]) for c in plan.sources if own[c].is_floating_point()]
    assert len(set(firsts)) == len(firsts)
    for p, ours in SPOT.get(key, {}).items():
        assert plan.alias[ours] == inverse[p], (p, ours)
        assert torch.equal(own[ours].reshape(state[p].shape), state[p])


def test_shared_tensors_are_loaded_once_and_shared():
    layout, groups, kw = TINY["trevsnn_test"]()
    state = pl.fill(layout, groups)
    model = revsnn.load_published("trevsnn_test", state, **kw)
    for k in range(4):  # every column's block 2 uses the level's one pw2 / dw2
        pw2 = {id(model.columns.levels[t][k].block2.pw2.weight) for t in range(4)}
        assert pw2 == {id(model.shared[k].pw2.weight)}
    # the published names of one group may be separate copies, but must agree
    copied = {n: t.clone() for n, t in state.items()}
    revsnn.load_published("trevsnn_test", copied, **kw)
    copied["subnet2.level1.blocks.1.pwconv2_reuse.bias"] += 1
    with pytest.raises(PublishedCheckpointError, match="one shared tensor.*differ"):
        revsnn.load_published("trevsnn_test", copied, **kw)


# ------------------------------------------------------------------ wrappers and reading
def _tiny_state():
    layout, groups, kw = TINY["revs_resnet_test"]()
    return pl.fill(layout, groups), kw


def test_wrappers_prefixes_and_ema(tmp_path):
    state, kw = _tiny_state()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    ref = revsnn.load_published("revs_resnet_test", state, **kw).state_dict()
    ref_ema = revsnn.load_published("revs_resnet_test", ema, **kw).state_dict()

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    ddp = {"module." + k: v for k, v in state.items()}
    compiled = {"_orig_mod." + k: v for k, v in state.items()}
    for ck in (ddp, compiled, {"model": ddp}, {"state_dict": state, "epoch": 3}):
        assert same(revsnn.load_published("revs_resnet_test", ck, **kw).state_dict(), ref)
    both = {"model": state, "state_dict_ema": {"module." + k: v for k, v in ema.items()}}
    assert same(revsnn.load_published("revs_resnet_test", both, **kw).state_dict(), ref_ema)
    assert same(revsnn.load_published("revs_resnet_test", both, ema=False, **kw).state_dict(), ref)
    no_ema = {"model": state, "state_dict_ema": None}  # T-RevSNN saves None without EMA
    assert same(revsnn.load_published("revs_resnet_test", no_ema, **kw).state_dict(), ref)
    with pytest.raises(PublishedCheckpointError, match="no EMA state dict"):
        revsnn.load_published("revs_resnet_test", no_ema, ema=True, **kw)
    with pytest.raises(PublishedCheckpointError, match="no state dict"):
        read_published({"optimizer": {}, "epoch": 1})


def test_reads_files_with_the_training_scripts_extras_weights_only(tmp_path, monkeypatch):
    """The published scripts save an argparse.Namespace (RevSNN), a yacs CfgNode and the builtin
    ``input`` (T-RevSNN) next to the weights: read as inert data, nothing executed."""
    state, kw = _tiny_state()
    fake = types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    fake.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", types.ModuleType("yacs"))
    monkeypatch.setitem(sys.modules, "yacs.config", fake)
    cfg = CfgNode(MODEL=CfgNode(TYPE="tiny"), TRAIN=CfgNode(EPOCHS=300))
    path = tmp_path / "best.pth"
    torch.save({"model": state, "state_dict_ema": None, "config": cfg, "input": input,
                "args": argparse.Namespace(lr=1e-3, model="RevSResNet"), "epoch": 7}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")  # the reader does not have yacs
    monkeypatch.delitem(sys.modules, "yacs")
    model = revsnn.load_published("revs_resnet_test", path, **kw)
    ref = revsnn.load_published("revs_resnet_test", state, **kw)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref.state_dict().values()))
    # anything else pickled is refused with a clear message
    torch.save({"model": state, "hook": types.SimpleNamespace(a=1)}, tmp_path / "other.pth")
    with pytest.raises(PublishedCheckpointError, match="weights_only=True"):
        revsnn.load_published("revs_resnet_test", tmp_path / "other.pth", **kw)
    with pytest.raises(PublishedCheckpointError, match="does not exist"):
        revsnn.load_published("revs_resnet_test", tmp_path / "missing.pth", **kw)


# ------------------------------------------------------------------ errors
def test_misfits_are_listed():
    state, kw = _tiny_state()
    bad = dict(state)
    del bad["layer2.reversible_blocks.0.f_block.conv1.0.weight"]
    bad["layer9.extra.weight"] = torch.zeros(3)
    bad["ds1.1.1.weight"] = torch.zeros(16, 8, 3, 3)
    with pytest.raises(PublishedCheckpointError) as err:
        revsnn.load_published("revs_resnet_test", bad, **kw)
    msg = str(err.value)
    assert "layer9.extra.weight [3] (no rule)" in msg
    assert "ds1.1.1.weight [16, 8, 3, 3] -> downsamples.0.conv.weight [16, 8, 1, 1]" in msg
    assert ("left unfilled (2):\n    stages.1.blocks.0.f.conv1.0.weight [8, 8, 3, 3]\n"
            "    downsamples.0.conv.weight [16, 8, 1, 1]") in msg
    with pytest.raises(PublishedCheckpointError, match="checkpoint has 10 classes.*num_classes=10"):
        revsnn.load_published("revs_resnet_test", state, num_classes=100)
    # a CIFAR (static) RevSFormer checkpoint does not load into the event tokenizer
    layout, groups, _ = TINY["revsformer_test"]()
    with pytest.raises(PublishedCheckpointError, match="patch_embed.block0_conv.weight"):
        revsnn.load_published("revsformer_test", pl.fill(layout, groups), tokenizer="events")


@pytest.mark.parametrize("name", ["pararevsnn_test", "trevsnn_tiny_dvs", "trevsnn_cifar_bptt"])
def test_families_without_published_layout_refuse(name):
    with pytest.raises(PublishedCheckpointError, match="published"):
        revsnn.load_published(name, {"x.weight": torch.zeros(1)})


# ------------------------------------------------------------------ convert -> eval
def test_convert_then_eval_end_to_end(tmp_path, capsys):
    from revsnn.cli import main
    from revsnn.data import data_info, load_dataset
    from revsnn.train.build import build_model
    from revsnn.train.checkpoint import load_checkpoint, load_model_state
    from revsnn.train.config import TrainConfig

    layout, groups = pl.trevsnn((4, 8, 8, 8), 4, 3, 10, in_ch=1, stem_kernels=(3, 3))
    state = pl.fill(layout, groups, dtype=torch.float32)
    src = tmp_path / "ckpt_epoch_9.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}, "state_dict_ema": None,
                "epoch": 9, "max_accuracy": 0.0}, src)
    out = tmp_path / "converted.pt"
    rc = main(["convert", "--published", str(src), "--model", "trevsnn_test", "--data", "digits",
               "--T", "4", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "trevsnn_test" in capsys.readouterr().out
    ck = load_checkpoint(out)
    assert ck["config"]["model"] == "trevsnn_test" and ck["published"]["entry"] == "model"
    direct = revsnn.load_published("trevsnn_test", src, T=4)  # classes, channels: from src
    for k, v in direct.state_dict().items():
        assert torch.equal(ck["model"][k], v), k
    # the model `revsnn eval` builds from the stored config computes what load_published gives
    cfg = TrainConfig.from_dict(ck["config"])
    info = data_info("digits", load_dataset("digits", "test"))
    built = build_model(cfg, info)
    load_model_state(built, ck["model"], out)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(built.eval()(x), direct(x))
    assert main(["eval", "--checkpoint", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trevsnn_test on digits test: accuracy" in printed and "(360 images" in printed


def test_convert_reports_misfit(tmp_path, capsys):
    from revsnn.cli import main

    state, _ = _tiny_state()
    src = tmp_path / "c.pth"
    torch.save({"model": state}, src)
    rc = main(["convert", "--published", str(src), "--model", "ms_resnet_test",
               "--set", "memory_mode=none", str(tmp_path / "o.pt")])
    assert rc == 2
    assert "published names without a place in the model" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


# ------------------------------------------------------------------ the DVS tokenizer
def test_event_tokenizer_pools_before_every_stage():
    """Published DVS RevSFormer: 128x128 frames -> 8x8 tokens (max-pool before all four
    stages); the CIFAR tokenizer pools before the last two (32x32 -> 8x8)."""
    torch.manual_seed(0)
    ev = revsnn.create_model("revsformer_2_256", memory_mode="none").eval()
    assert ev.tokenizer.kind == "events"
    assert [s.pool is not None for s in ev.tokenizer.stages] == [True] * 4
    with torch.no_grad():
        tokens = ev.tokenizer(torch.rand(1, 1, 2, 128, 128), 1)
    assert tokens.shape == (1, 1, 256, 8, 8)
    static = revsnn.create_model("revsformer_test", memory_mode="none")
    assert [s.pool is not None for s in static.tokenizer.stages] == [False, False, True, True]
    with torch.no_grad():
        assert static.tokenizer(torch.rand(1, 3, 32, 32), 2).shape == (2, 1, 16, 8, 8)
    with pytest.raises(ValueError, match="unknown tokenizer 'dvs'"):
        revsnn.create_model("revsformer_test", tokenizer="dvs")


def test_event_tokenizer_modes_agree_float64():
    """The event tokenizer's pooled first stages are recomputed outside "none": values,
    gradients and BN buffers equal the oracle; the plain (non-lean) primitives agree."""
    from revsnn_model_helpers import assert_modes_agree, max_rel, rel, run_step

    torch.manual_seed(0)
    kw = dict(tokenizer="events", in_channels=2, memory_mode="none")
    m = revsnn.create_model("revsformer_test", **kw).double()
    x = torch.rand(2, 2, 2, 32, 32, dtype=torch.float64) * 4
    out = assert_modes_agree(m, x, ["checkpoint", "reversible"], tol=1e-10)
    rev = out["reversible"]["model"]
    assert [s.recompute_count for s in rev.tokenizer.stages] == [1, 1, 0, 0]
    plain = revsnn.create_model("revsformer_test", lean=False, **kw).double()
    plain.load_state_dict(m.state_dict())
    a, b = out["none"], run_step(plain, "none", x)
    assert torch.equal(a["y"], b["y"])
    assert max_rel(a["grads"], b["grads"]) < 1e-10 and rel(a["dx"], b["dx"]) < 1e-10


def test_dvs_configs_feed_the_published_frame_size():
    """The published event scripts feed full 128x128 sensor frames."""
    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*dvs*.yaml"))
    assert files
    for f in files:
        assert yaml.safe_load(f.read_text())["frame_size"] == [128, 128], f.name
