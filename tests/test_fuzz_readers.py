"""Fuzz every reader and the config with seeded damaged input, within a time and memory bound.

For each format a valid file is written (or a real recording taken from ../shared/data/events)
and damaged: zero-length, truncated at several points, random bytes, a wrong header, a few bytes
flipped, random bytes appended. Each damaged file must give either a valid data set (checked
below) or a one-line :class:`~revsnn.data.limits.DataError` naming the file -- never another
exception type, never more than :data:`BOUND_S` seconds or :data:`BOUND_MIB` MiB of traced
allocations (numpy arrays and Python objects) for one file. Random config values must validate
or give one ``ValueError`` line naming the key.
"""

import contextlib
import math
import pickle
import shutil
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from revsnn.data import events_to_frames, load_dataset, read_aedat4
from revsnn.data.event_sets import CIFAR10_DVS_CLASSES
from revsnn.data.limits import DataError
from revsnn.train.config import (
    FIELDS,
    TrainConfig,
    apply_overrides,
    parse_set,
    validate_config,
)
from test_data_events import (
    random_events,
    write_aedat2,
    write_aedat4,
    write_aedat31,
    write_nmnist,
)
from test_data_static import write_cifar, write_mnist_dir

SEED = 20250
BOUND_S = 10.0  # a runaway reader, not a speed goal: real work here takes milliseconds
BOUND_MIB = 96.0
_ROOT = Path(__file__).resolve().parents[1]
_SHARED = next((p for p in (_ROOT.parent / "shared", _ROOT.parents[1] / "shared")
                if (p / "data" / "events").is_dir()), None)
needs_shared = pytest.mark.skipif(
    _SHARED is None, reason=f"real recordings not found in {_ROOT.parent / 'shared'} or "
    f"{_ROOT.parents[1] / 'shared'} (../shared is absent)")


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _bounded(what: str):
    """Fail when the body runs past BOUND_S seconds or traces more than BOUND_MIB MiB."""

    def alarm(signum, frame):
        raise _TooSlow(f"{what}: still running after {BOUND_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, BOUND_S)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        assert peak < BOUND_MIB, f"{what}: {peak:.0f} MiB traced"
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def mutants(valid: bytes, rng: np.random.Generator, n_flips: int = 6):
    """(name, bytes) of damaged versions of ``valid``."""
    out = [("empty", b""), ("random", rng.bytes(max(16, len(valid) // 4))),
           ("random-small", rng.bytes(int(rng.integers(1, 40))))]
    for frac in (0.02, 0.2, 0.5, 0.9):
        out.append((f"truncated-{frac}", valid[: max(1, int(len(valid) * frac))]))
    out.append(("truncated-1", valid[:-1]))
    out.append(("wrong-header", rng.bytes(16) + valid[16:]))
    out.append(("appended", valid + rng.bytes(37)))
    for i in range(n_flips):
        b = bytearray(valid)
        hot = min(len(b), 96 if i % 2 == 0 else len(b))  # half in the header region
        for j in rng.integers(0, hot, int(rng.integers(1, 6))):
            b[j] = int(rng.integers(0, 256))
        out.append((f"flipped-{i}", bytes(b)))
    return out


def _fuzz(target: Path, valid: bytes, load, check, seed: int) -> int:
    """Write every mutant of ``valid`` to ``target`` and run ``load()``; returns how many were
    refused (the others passed ``check``)."""
    rng = np.random.default_rng(seed)
    refused = 0
    for name, data in mutants(valid, rng):
        target.write_bytes(data)
        with _bounded(f"{target.name} ({name})"):
            try:
                result = load()
            except DataError as err:
                msg = str(err)
                assert "\n" not in msg and str(target) in msg, f"{name}: {msg}"
                refused += 1
                continue
        check(result)
    target.write_bytes(valid)
    return refused


def _check_images(ds):
    assert len(ds) > 0 and ds.images.dtype == torch.uint8 and ds.images.dim() == 4
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < ds.num_classes


def _check_frames(frames):
    assert frames.dim() == 4 and frames.shape[1] == 2
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.sum() > 0


# ------------------------------------------------------------------------------ static
@pytest.mark.parametrize("gz", [False, True])
def test_fuzz_idx(tmp_path, gz):
    write_mnist_dir(tmp_path, n_train=6, n_test=3, gz=gz)
    sfx = ".gz" if gz else ""
    refused = 0
    for i, stem in enumerate(("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        f = tmp_path / (stem + sfx)
        refused += _fuzz(f, f.read_bytes(), lambda: load_dataset("mnist", "test", root=tmp_path),
                         _check_images, SEED + i + 10 * gz)
    assert refused > 10


def test_fuzz_cifar_batches(tmp_path):
    write_cifar(tmp_path, "cifar10")
    f = tmp_path / "cifar-10-batches-py" / "test_batch"
    x = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    as_lists = pickle.dumps({b"data": x.tolist(), b"labels": [1, 2, 3]}, protocol=2)
    refused = 0
    for i, valid in enumerate((f.read_bytes(), as_lists)):
        refused += _fuzz(f, valid, lambda: load_dataset("cifar10", "test", root=tmp_path),
                         _check_images, SEED + 20 + i)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    refused += _fuzz(meta, meta.read_bytes(),
                     lambda: load_dataset("cifar10", "test", root=tmp_path), _check_images,
                     SEED + 25)
    assert refused > 20


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_fuzz_image_folder(tmp_path, fmt):
    Image = pytest.importorskip("PIL.Image", reason="imagefolder needs Pillow (vision extra)")
    pixels = np.random.default_rng(SEED + 31).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    for split in ("train", "val"):
        d = tmp_path / split / "c"
        d.mkdir(parents=True)
        Image.fromarray(pixels).save(d / f"a.{fmt.lower()}", fmt)
    f = tmp_path / "val" / "c" / f"a.{fmt.lower()}"
    ds = load_dataset("imagefolder", "test", root=tmp_path, image_size=8)

    def check(item):
        x, y = item
        assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y == 0

    assert _fuzz(f, f.read_bytes(), lambda: ds[0], check, SEED + 30) > 3


# ------------------------------------------------------------------------------ events
def test_fuzz_nmnist(tmp_path):
    for split in ("Train", "Test"):
        for d in range(10):
            (tmp_path / split / str(d)).mkdir(parents=True)
            write_nmnist(tmp_path / split / str(d) / "a.bin", random_events(20, 34, 34, d))
    f = tmp_path / "Test" / "4" / "a.bin"
    ds = load_dataset("nmnist", "test", root=tmp_path, T=3)
    assert _fuzz(f, f.read_bytes(), lambda: ds[4][0], _check_frames, SEED + 40) > 3
    for mode in ("time", "count"):
        ds = load_dataset("nmnist", "test", root=tmp_path, T=3, frame_mode=mode)
        assert _fuzz(f, f.read_bytes(), lambda ds=ds: ds[4][0], _check_frames, SEED + 41) > 3


def test_fuzz_aedat2_cifar10_dvs(tmp_path):
    for i, c in enumerate(CIFAR10_DVS_CLASSES):
        (tmp_path / c).mkdir()
        write_aedat2(tmp_path / c / "cifar10_0.aedat", random_events(30, 128, 128, i))
    f = tmp_path / "cat" / "cifar10_0.aedat"
    ds = load_dataset("cifar10_dvs", "train", root=tmp_path, T=2, frame_mode="time")
    assert _fuzz(f, f.read_bytes(), lambda: ds[3][0], _check_frames, SEED + 50) > 3


def test_fuzz_aedat31_dvs_gesture(tmp_path):
    f = tmp_path / "user01_led.aedat"
    write_aedat31(f, random_events(200, 128, 128, 3, span=10_000), overflow=1)
    labels = tmp_path / "user01_led_labels.csv"
    t0 = 1 << 31
    labels.write_text(f"class,startTime_usec,endTime_usec\n2,{t0},{t0 + 5000}\n"
                      f"5,{t0 + 5000},{t0 + 10_000}\n")

    def load():
        ds = load_dataset("dvs_gesture", "train", root=tmp_path, T=2, frame_mode="time")
        return [ds[i][0] for i in range(len(ds))]

    def check(samples):
        assert samples
        for frames in samples:
            _check_frames(frames)

    assert _fuzz(f, f.read_bytes(), load, check, SEED + 60) > 3
    assert _fuzz(labels, labels.read_bytes(), load, check, SEED + 61) > 3


def _aedat4_loader(f):
    def load():
        ev, size = read_aedat4(f, with_size=True)
        if not len(ev):
            raise DataError(f"{f}: no events")  # what a data set does with an empty recording
        return torch.from_numpy(events_to_frames(ev, 3, size or (24, 32), "time", source=f))
    return load


@pytest.mark.parametrize("compress", [False, True])
def test_fuzz_aedat4(tmp_path, compress):
    if compress:
        pytest.importorskip("lz4.frame", reason="LZ4 packets need the events extra (lz4)")
    f = tmp_path / "s.aedat4"
    write_aedat4(f, [random_events(30, 32, 24, 1), random_events(20, 32, 24, 2, t0=10**5)],
                 compress=compress)
    assert _fuzz(f, f.read_bytes(), _aedat4_loader(f), _check_frames, SEED + 70 + compress) > 5


@needs_shared
def test_fuzz_real_recordings(tmp_path):
    pytest.importorskip("lz4.frame", reason="sample.aedat4 is LZ4-compressed (events extra)")
    src = _SHARED / "data" / "events"
    f = tmp_path / "sample.aedat4"
    valid = (src / "sample.aedat4").read_bytes()
    assert _fuzz(f, valid, _aedat4_loader(f), _check_frames, SEED + 80) > 3
    for split in ("Train", "Test"):
        for d in range(10):
            (tmp_path / "nm" / split / str(d)).mkdir(parents=True)
            shutil.copyfile(src / "sample_nmnist.bin", tmp_path / "nm" / split / str(d) / "a.bin")
    g = tmp_path / "nm" / "Test" / "7" / "a.bin"
    ds = load_dataset("nmnist", "test", root=tmp_path / "nm", T=4, frame_mode="time")
    assert _fuzz(g, g.read_bytes(), lambda: ds[7][0], _check_frames, SEED + 81) > 3


# ------------------------------------------------------------------------------ config
_POOL = ["0", "1", "-1", "3", "0.5", "2", "-5", "1e400", "-1e400", ".nan", ".inf", "-.inf",
         "0x10", "020", "1_000", "1:30", "yes", "true", "false", "null", "~", "[]", "[1]",
         "[0.9, 0.999]", "[1, 2, 3]", "[[1, 2], 3]", "{a: 1}", "'text'", "cpu", "count",
         "99999999999999999999999", "1e-5", "[.nan, 1]", "&a [1, *a]", "[4, 8]", "[-3, 4]",
         "2.5", "'8GiB'", "'1e400'", "\"\"", "[", "{", "- 1", "]]", "!!python/object:os.system",
         "&x [1, 2] ", "[&x [1, 2], *x, *x]"]


def test_fuzz_config_values():
    rng = np.random.default_rng(SEED + 90)
    keys = [k for k in FIELDS if k != "tensorboard"]  # tensorboard=true imports a package
    accepted = refused = 0
    for _ in range(600):
        chosen = rng.choice(keys, int(rng.integers(1, 4)), replace=False)
        items = [f"{k}={_POOL[int(rng.integers(len(_POOL)))]}" for k in chosen]
        with _bounded(" ".join(items)):
            try:
                cfg = apply_overrides(TrainConfig(), parse_set(items))
                validate_config(cfg)
            except ValueError as err:
                msg = str(err)
                named = any(k in msg or k.replace("_", "-") in msg for k in chosen)
                assert "\n" not in msg and named, (items, msg)
                refused += 1
                continue
        accepted += 1
        for key in chosen:  # what was accepted is a value the key's range allows
            v = getattr(cfg, key)
            assert not (isinstance(v, float) and not math.isfinite(v)), (key, v)
    assert accepted >= 5 and refused > 300, (accepted, refused)


def test_fuzz_dvs_gesture_trial_list(tmp_path):
    write_aedat31(tmp_path / "user01_led.aedat", random_events(50, 128, 128, 4, span=10_000))
    (tmp_path / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n"
                                                     "3,0,10000\n")
    listed = tmp_path / "trials_to_train.txt"

    def load():
        return load_dataset("dvs_gesture", "train", root=tmp_path, T=2)[0][0]

    rng = np.random.default_rng(SEED + 95)
    for name, data in mutants(b"user01_led.aedat\n", rng):
        listed.write_bytes(data)
        with _bounded(f"trials_to_train.txt ({name})"):
            try:
                _check_frames(load())
            except DataError as err:  # not UTF-8 text
                assert str(listed) in str(err) and "\n" not in str(err)
            except FileNotFoundError as err:  # lists no recording that exists: names the folder
                assert str(tmp_path) in str(err) and "\n" not in str(err)
