"""The state-dict layouts that the papers' published code produces, written from its
architecture description (independently of revsnn's name rules) for any configuration, and
the reader of the layout files in ``<repo>/../shared/published/``.

``test_published.py`` first checks each generator against the real layout files (full-size
configurations), then uses it for tiny configurations filled with values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

Layout = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "published"

_F, _I = torch.float64, torch.int64


def read_tsv(path: Path) -> Tuple[Layout, List[List[str]], Dict[str, str]]:
    """(layout, shared groups, header values) of one layout file."""
    layout: Layout = {}
    groups: List[List[str]] = []
    header: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            body = line[1:].strip()
            if " = " in body:
                groups.append([n.strip() for n in body.split(" = ")])
            elif re.match(r"^[a-z_]+: ", body):
                key, value = body.split(": ", 1)
                header[key] = value
            continue
        if not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in re.findall(r"\d+", shape))
        layout[name] = (dims, getattr(torch, dtype))
    return layout, groups, header


def _bn(prefix: str, c: int) -> Layout:
    out: Layout = {f"{prefix}.{p}": ((c,), _F) for p in ("weight", "bias", "running_mean",
                                                           "running_var")}
    out[f"{prefix}.num_batches_tracked"] = ((), _I)
    return out


def _ws(prefix: str, cout: int, cin: int, k: int) -> Layout:
    """timm-style weight-standardised conv: weight, bias, gain."""
    return {f"{prefix}.weight": ((cout, cin, k, k), _F), f"{prefix}.bias": ((cout,), _F),
            f"{prefix}.gain": ((cout, 1, 1, 1), _F)}


def revsresnet(blocks: Sequence[int], widths: Sequence[int], classes: int, in_ch: int = 3,
               event: bool = False) -> Layout:
    """RevSResNet: conv1/bn1 stem (``.0`` inside Sequentials for the event model), reversible
    layers of F/G blocks ``conv{1,2}.{0: conv, 1: BN}``, ``ds{k}.1.{1: conv1x1, 2: BN}``, fc."""
    e = ".0" if event else ""
    out: Layout = {f"conv1{e}.weight": ((2 * widths[0], in_ch, 3, 3), _F)}
    out.update(_bn(f"bn1{e}", 2 * widths[0]))
    for s, (n, w) in enumerate(zip(blocks, widths), start=1):
        for b in range(n):
            for fg in "fg":
                for c in (1, 2):
                    pre = f"layer{s}.reversible_blocks.{b}.{fg}_block.conv{c}"
                    out[f"{pre}.0.weight"] = ((w, w, 3, 3), _F)
                    out.update(_bn(f"{pre}.1", w))
        if s < len(blocks):
            out[f"ds{s}.1.1.weight"] = ((2 * widths[s], 2 * w, 1, 1), _F)
            out.update(_bn(f"ds{s}.1.2", 2 * widths[s]))
    out["fc.weight"] = ((classes, 2 * widths[-1]), _F)
    out["fc.bias"] = ((classes,), _F)
    return out


def msresnet(blocks: Sequence[int], widths: Sequence[int], classes: int,
             in_ch: int = 3) -> Layout:
    """MS-ResNet: conv1/bn1, ``layer{s}.{b}.conv{1,2}.{0,1}``, ``downsample.1.{0,1}`` where the
    shape changes, fc."""
    out: Layout = {"conv1.weight": ((widths[0], in_ch, 3, 3), _F)}
    out.update(_bn("bn1", widths[0]))
    c = widths[0]
    for s, (n, w) in enumerate(zip(blocks, widths), start=1):
        for b in range(n):
            pre = f"layer{s}.{b}"
            out[f"{pre}.conv1.0.weight"] = ((w, c, 3, 3), _F)
            out.update(_bn(f"{pre}.conv1.1", w))
            out[f"{pre}.conv2.0.weight"] = ((w, w, 3, 3), _F)
            out.update(_bn(f"{pre}.conv2.1", w))
            if b == 0 and (s > 1 or c != w):
                out[f"{pre}.downsample.1.0.weight"] = ((w, c, 1, 1), _F)
                out.update(_bn(f"{pre}.downsample.1.1", w))
            c = w
    out["fc.weight"] = ((classes, c), _F)
    out["fc.bias"] = ((classes,), _F)
    return out


def revsformer(depth: int, D: int, classes: int, in_ch: int = 3, event: bool = False) -> Layout:
    """RevSFormer: tokenizer ``patch_embed.{block0..4 | proj, proj1..4}_{conv,bn}``, per block
    F = q/k/v/proj Conv1d (+ BatchNorm1d; proj with bias), G = mlp1/mlp2 1x1 Conv2d (bias) +
    BN, head Linear(2D -> classes)."""
    chans = [in_ch, D // 8, D // 4, D // 2, D, D]
    names = ["proj", "proj1", "proj2", "proj3", "proj4"] if event else [
        f"block{i}" for i in range(5)]
    out: Layout = {}
    for i, nm in enumerate(names):
        out[f"patch_embed.{nm}_conv.weight"] = ((chans[i + 1], chans[i], 3, 3), _F)
        out.update(_bn(f"patch_embed.{nm}_bn", chans[i + 1]))
    for b in range(depth):
        f = f"block.reversible_blocks.{b}.f_block"
        for x in ("q", "k", "v", "proj"):
            out[f"{f}.{x}_conv.weight"] = ((D, D, 1), _F)
            if x == "proj":
                out[f"{f}.proj_conv.bias"] = ((D,), _F)
            out.update(_bn(f"{f}.{x}_bn", D))
        g = f"block.reversible_blocks.{b}.g_block"
        for n, (co, ci) in ((1, (4 * D, D)), (2, (D, 4 * D))):
            out[f"{g}.mlp{n}_conv.weight"] = ((co, ci, 1, 1), _F)
            out[f"{g}.mlp{n}_conv.bias"] = ((co,), _F)
            out.update(_bn(f"{g}.mlp{n}_bn", co))
    out["head.weight"] = ((classes, 2 * D), _F)
    out["head.bias"] = ((classes,), _F)
    return out


def trevsnn(C: Sequence[int], T: int, kernel: int, classes: int, in_ch: int = 3,
            stem_kernels: Tuple[int, int] = (7, 3)) -> Tuple[Layout, List[List[str]]]:
    """T-RevSNN with intermediate supervision (T = 4 columns, one head each): WS stem, per
    column ``subnet{t}`` alphas, level fusion Down / Up (conv + BN), two ConvNeXt blocks (the
    second's pwconv2_reuse / dwconv2_reuse are one tensor per level, registered in every
    column), heads ``cls_blocks``. Returns the layout and the shared groups."""
    out: Layout = {}
    out.update(_ws("stem.down1.0", C[0], in_ch, stem_kernels[0]))
    out.update(_ws("stem.down2.0", C[0], C[0], stem_kernels[1]))
    groups: Dict[str, List[str]] = {}
    for t in range(T):
        for k in range(4):
            out[f"subnet{t}.alpha{k}"] = ((1, C[k], 1, 1), _F)
        for k in range(4):
            lv = f"subnet{t}.level{k}"
            if k > 0:
                ks = 3 if k < 3 else 1
                out[f"{lv}.fusion.down.encode_conv.weight"] = ((C[k], C[k - 1], ks, ks), _F)
                out.update(_bn(f"{lv}.fusion.down.encode_bn", C[k]))
            if t > 0 and k < 3:
                out[f"{lv}.fusion.up.encode_conv.weight"] = ((C[k], C[k + 1], 1, 1), _F)
                out.update(_bn(f"{lv}.fusion.up.encode_bn", C[k]))
            c, h = C[k], 4 * C[k]
            out[f"{lv}.blocks.0.gamma"] = ((1, c, 1, 1), _F)
            for j in (0, 1):
                bl = f"{lv}.blocks.{j}"
                out[f"{bl}.dwconv1.weight"] = ((c, 1, kernel, kernel), _F)
                out[f"{bl}.dwconv1.bias"] = ((c,), _F)
                out.update(_ws(f"{bl}.pwconv1", h, c, 1))
                suffix = "_reuse" if j == 1 else ""
                pw = _ws(f"{bl}.pwconv2{suffix}", c, h, 1)
                dw = {f"{bl}.dwconv2{suffix}.weight": ((c, 1, kernel, kernel), _F),
                      f"{bl}.dwconv2{suffix}.bias": ((c,), _F)}
                out.update(pw)
                out.update(dw)
                if j == 1:
                    for n in list(pw) + list(dw):
                        groups.setdefault(n.replace(f"subnet{t}.", "subnet*.", 1), []).append(n)
    for i in range(T - 1):
        out.update(_ws(f"cls_blocks.{i}.classifier.0", classes, C[3], 1))
    out.update(_ws(f"cls_blocks.{T - 1}.classifier1.0", classes, C[3], 1))
    out.update(_ws(f"cls_blocks.{T - 1}.classifier2", classes, classes, 1))
    return out, list(groups.values())


#: generator and our model for each layout file (the configuration the file names)
FULL_SIZE = {
    "revs_resnet21": lambda: (revsresnet((1, 1, 1, 1), (64, 128, 256, 448), 10), []),
    "revs_resnet37": lambda: (revsresnet((1, 2, 3, 2), (64, 128, 256, 448), 10), []),
    "revs_resnet24": lambda: (revsresnet((1, 2, 2), (16, 32, 48), 10, 2, event=True), []),
    "ms_resnet18": lambda: (msresnet((2, 2, 2, 2), (64, 128, 256, 512), 10), []),
    "ms_resnet34": lambda: (msresnet((3, 4, 6, 3), (64, 128, 256, 512), 10), []),
    "revsformer_2_384": lambda: (revsformer(2, 384, 10), []),
    "revsformer_4_384": lambda: (revsformer(4, 384, 10), []),
    "revsformer_2_256": lambda: (revsformer(2, 256, 11, 2, event=True), []),
    "trevsnn_tiny": lambda: trevsnn((64, 128, 256, 384), 4, 3, 1000),
}


def fill(layout: Layout, groups: Sequence[Sequence[str]] = (), dtype=torch.float64,
         seed: int = 0) -> Dict[str, torch.Tensor]:
    """A state dict with this layout: tensor j holds ``j + 1 + U(0, 0.5)`` values (each tensor
    identifiable by value), integer buffers ``j``; names in a shared group are one tensor."""
    g = torch.Generator().manual_seed(seed)
    state: Dict[str, torch.Tensor] = {}
    owner = {n: grp[0] for grp in groups for n in grp}
    for j, (name, (shape, dt)) in enumerate(layout.items()):
        if owner.get(name, name) in state and owner.get(name, name) != name:
            state[name] = state[owner[name]]  # one tensor under several names
            continue
        if dt.is_floating_point:
            state[name] = (j + 1 + 0.5 * torch.rand(shape, generator=g, dtype=torch.float64)).to(
                dtype)
        else:
            state[name] = torch.full(shape, j, dtype=dt)
    return state
