"""Training configuration: one flat dataclass, YAML files and ``key=value`` overrides.

Precedence (later wins): the defaults below (the main job: T-RevSNN on the embedded digits),
``--config FILE.yaml``, the command-line flags (``--epochs`` ...), then ``--set key=value``.
Values of ``--set`` are parsed as YAML (``--set milestones=[100,150]``, ``--set amp=true``);
``model_kwargs.NAME=VALUE`` sets one keyword argument of the model builder. Unknown keys are an
error that suggests the closest known key. The resolved config is saved as ``config.yaml`` in the
run folder and inside every checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = [
    "validate_config",
    "TrainConfig", "apply_overrides", "config_text", "load_config_file", "parse_set", "parse_value",
    "save_config",
]


@dataclass
class TrainConfig:
    """Every knob of ``revsnn train``; defaults = the main job (configs/digits_trevsnn.yaml)."""

    # what to train
    model: str = "trevsnn_cifar"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_dir: Optional[str] = None
    T: int = 4
    memory_mode: str = "reversible"
    # per-part memory modes chosen by revsnn.plan to fit this much device memory per process
    # (e.g. "8GiB"; replaces memory_mode); max_batch: also the largest batch size that fits
    memory_budget: Optional[str] = None
    max_batch: bool = False
    # schedule
    epochs: int = 10
    batch_size: int = 64
    lr: float = 8e-3
    optimizer: str = "adamw"  # sgd | adamw | lamb
    momentum: float = 0.9
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.05
    scheduler: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    milestones: List[int] = field(default_factory=list)  # step decay epochs
    gamma: float = 0.1
    # loss and regularisation
    label_smoothing: float = 0.1
    mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0 = off
    mix_prob: float = 1.0
    # augmentation (batch-wise on the training device)
    crop_padding: int = 0
    hflip: bool = False
    random_erase: float = 0.0
    randaugment: Optional[List[float]] = None  # [ops, magnitude 0..10, magnitude std]
    normalize: bool = True
    image_size: Optional[int] = None  # imagefolder only: resize + centre crop (null = 224)
    # event data
    frames: Optional[int] = None  # frames per sample; default T
    frame_mode: str = "count"  # count (equal event count) | time (equal time bins)
    frame_size: Optional[List[int]] = None  # [H, W] to bin events into; default sensor size
    download: bool = False  # tonic:NAME only: let tonic download missing files
    # optimiser extras
    ema_decay: float = 0.0  # per step, e.g. 0.9992; 0 = no EMA
    eval_ema: bool = True  # evaluate the EMA weights when EMA is on
    agc_clip: float = 0.0  # adaptive gradient clipping factor; 0 = off
    grad_clip: float = 0.0  # global norm clipping; 0 = off
    amp: bool = False
    # torch.compile the model in place (revsnn.models.compile); compile time reported apart
    compile: bool = False
    amp_dtype: str = "auto"  # auto (bfloat16 on CPU, float16 on CUDA) | bfloat16 | float16
    # system
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    # CPU threads (torch.set_num_threads) on a CPU device; null/0 = torch's default. One thread
    # by default: the small per-op tensors of these models gain little from intra-op threads,
    # and when cores are shared, spinning OpenMP threads slow a step down by 10-100x (measured).
    threads: Optional[int] = 1
    num_workers: int = 0
    data_on_device: bool = True
    sync_bn: bool = False
    # several processes (torchrun): "ddp" replicates the model, "fsdp" shards parameters,
    # gradients and optimiser state (FSDP2; checkpoints with DCP); one process ignores it.
    # fsdp_param_dtype (CUDA): gather and compute in bfloat16/float16, reduce in
    # fsdp_reduce_dtype
    parallel: str = "ddp"
    fsdp_param_dtype: Optional[str] = None
    fsdp_reduce_dtype: str = "float32"
    out: Optional[str] = None  # run folder; default runs/<data>_<model>_<time>
    resume: Optional[str] = None
    tensorboard: bool = False
    progress: bool = True
    max_steps: Optional[int] = None  # cap on steps per epoch (smoke tests)
    measure_memory: bool = True
    memory_batches: List[int] = field(default_factory=lambda: [4, 8])
    # checkpoint.pt is written at the end of every epoch and, with save_every = N > 0, also
    # every N optimiser steps inside an epoch (a resumed run continues from that step)
    save_every: int = 0
    # optimiser steps whose loss or gradients are NaN/inf that may be skipped (optimiser state
    # untouched, buffers restored); 0 = stop at the first one (see revsnn.train.finite)
    skip_nonfinite: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        return apply_overrides(cls(), d)


_HINTS = typing.get_type_hints(TrainConfig)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _fix_numbers(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-5`` as a string; turn such strings into floats."""
    if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_fix_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _fix_numbers(v) for k, v in value.items()}
    return value


def _dump(value: Any) -> str:
    """JSON flow style that PyYAML reads back to the same value (floats keep a dot)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[repr(value)]
        r = repr(value)
        if "e" in r and "." not in r.split("e")[0]:
            r = r.replace("e", ".0e", 1)
        return r
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def parse_value(text: str, where: str = "--set value") -> Any:
    """Parse one ``--set`` value: YAML when available (bounded, core schema: see
    :mod:`revsnn.train.config_yaml`), else JSON, else the plain string."""
    try:
        import yaml  # noqa: F401 - the train extra

        from .config_yaml import YAMLBoundError, load_yaml
    except ImportError:
        pass
    else:
        try:
            value = load_yaml(text, where)
        except YAMLBoundError:  # alias expansion, depth or size: say so
            raise
        except Exception:  # noqa: BLE001 - not YAML: the plain string
            return text
        return _fix_numbers(value)
    try:
        return json.loads(text)
    except ValueError:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("null", "none", "~"):
            return None
        return text


def _coerce(key: str, value: Any) -> Any:
    hint = _HINTS[key]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    nullable = origin is Union and type(None) in args
    if nullable:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    base = origin or hint
    ok = True
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        ok = isinstance(value, list)
    elif base in (dict, Dict):
        ok = isinstance(value, dict)
    if not ok:
        want = getattr(hint, "__name__", str(hint))
        raise ValueError(
            f"config key {key!r} expects {want}{' or null' if nullable else ''}, "
            f"got {value!r} ({type(value).__name__})"
        )
    return value


def _unknown(key: str) -> ValueError:
    close = difflib.get_close_matches(key, FIELDS, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown config key {key!r}{hint}")


def apply_overrides(cfg: TrainConfig, values: Dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with ``values`` set (keys checked, values type-checked).

    ``model_kwargs.NAME`` keys set one entry of ``model_kwargs``.
    """
    d = cfg.to_dict()
    for key, value in values.items():
        if key.startswith("model_kwargs."):
            d["model_kwargs"] = dict(d["model_kwargs"])
            d["model_kwargs"][key.split(".", 1)[1]] = value
            continue
        if key not in _HINTS:
            raise _unknown(key)
        d[key] = _coerce(key, value)
    return TrainConfig(**d)


def parse_set(items: Sequence[str]) -> Dict[str, Any]:
    """``["lr=0.1", "amp=true"] -> {"lr": 0.1, "amp": True}``."""
    out: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        out[key.strip()] = parse_value(text, f"--set {key.strip()}")
    return out


def load_config_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a YAML config (a mapping of config keys); needs PyYAML (``train`` extra)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    from .config_yaml import MAX_CONFIG_BYTES, load_yaml

    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {path} has {path.stat().st_size} bytes, more than a "
                         f"config may hold ({MAX_CONFIG_BYTES})")
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            f"reading {path} needs PyYAML: pip install 'revsnn[train]'"
        ) from err
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"{path} is not valid YAML{where}: {what}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read config file {path}: {err}") from None
    if data is None:
        return {}
    data = _fix_numbers(data)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    for key in data:
        if key not in _HINTS:
            raise ValueError(f"{path}: {_unknown(str(key))}")
    return data


def config_text(cfg: TrainConfig) -> str:
    """``cfg`` as YAML (one ``key: value`` line per field; values in JSON flow style, which
    YAML reads back unchanged; no PyYAML needed)."""
    return "\n".join(f"{k}: {_dump(v)}" for k, v in cfg.to_dict().items()) + "\n"


def save_config(cfg: TrainConfig, path: Union[str, Path]) -> None:
    """Write :func:`config_text` to ``path``."""
    Path(path).write_text(config_text(cfg))


@contextlib.contextmanager
def _naming(key: str):
    """Re-raise a ``ValueError`` that does not name ``key`` as ``"key: message"``."""
    try:
        yield
    except ValueError as err:
        if key in str(err):
            raise
        raise ValueError(f"{key}: {err}") from None


def validate_config(cfg: TrainConfig, registry_model: bool = True,
                    registry_data: bool = True) -> None:
    """Cheap checks of a config before anything is built (names, ranges, options)."""
    from ..data import check_dataset_name
    from ..models.registry import model_info
    from ..reversible.mode import MemoryMode
    from .distributed import parse_device

    if registry_data:
        check_dataset_name(cfg.data)
    if registry_model:
        model_info(cfg.model)  # unknown name -> ValueError with suggestions
    with _naming("memory_mode"):
        MemoryMode.parse(cfg.memory_mode)
    if cfg.memory_budget is not None:
        from ..units import parse_bytes

        with _naming("memory_budget"):
            try:
                parse_bytes(cfg.memory_budget)
            except OverflowError:
                raise ValueError(f"{cfg.memory_budget!r} is not a finite size") from None
    elif cfg.max_batch:
        raise ValueError("--max-batch needs --memory-budget SIZE (the memory the batch must fit)")
    with _naming("device"):
        parse_device(cfg.device)
    from .config_ranges import check_ranges

    check_ranges(cfg)
    if cfg.parallel not in ("ddp", "fsdp"):
        raise ValueError(f"--parallel {cfg.parallel!r}: expected one of ddp, fsdp")
    for key in ("fsdp_param_dtype", "fsdp_reduce_dtype"):
        value = getattr(cfg, key)
        if value is not None and value not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"{key} {value!r}: expected one of float32, bfloat16, float16")
    if cfg.optimizer.lower() not in ("sgd", "adamw", "lamb"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected sgd, adamw or lamb")
    if cfg.scheduler.lower() not in ("cosine", "step", "constant"):
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected cosine, step or constant")
    if cfg.frame_mode not in ("count", "time"):
        raise ValueError(f"frame_mode must be count or time, got {cfg.frame_mode!r}")
    if cfg.amp_dtype not in ("auto", "bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be auto, bfloat16 or float16, got {cfg.amp_dtype!r}")
    if cfg.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ImportError(
                "--tensorboard needs the tensorboard package: pip install 'revsnn[bench]' "
                "(or pip install tensorboard), or drop --tensorboard"
            ) from None
