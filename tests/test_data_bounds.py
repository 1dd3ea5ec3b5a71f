"""Readers bound their work before allocating and refuse bad files with one DataError naming the
file: CIFAR pickles, gzip IDX, image folders, event recordings and their labels."""

import gzip
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from revsnn.data import events_to_frames, load_dataset, read_aedat4, read_aedat31, read_idx
from revsnn.data.cifar import load_cifar
from revsnn.data.limits import DataError
from revsnn.data.static import load_idx_split
from test_data_events import random_events, write_aedat4, write_aedat31, write_nmnist
from test_data_static import write_cifar, write_idx, write_mnist_dir


def _one_line(err, path):
    msg = str(err.value)
    assert isinstance(err.value, DataError) and "\n" not in msg and str(path) in msg, msg
    return msg


def _peak_mib(fn):
    """(result or exception, peak MiB traced while fn ran)."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - returned for the caller to check
            out = err
        return out, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------ CIFAR pickles
def _batch_file(tmp_path, payload: bytes, name="cifar10"):
    write_cifar(tmp_path, name)
    f = tmp_path / ("cifar-10-batches-py/test_batch" if name == "cifar10" else
                    "cifar-100-python/test")
    f.write_bytes(payload)
    return f


def test_cifar_rows_repeated_by_reference_are_refused_before_conversion(tmp_path):
    row = list(range(256)) * 12  # 3072 pixels
    payload = pickle.dumps({b"data": [row] * 3000, b"labels": [1] * 3000}, protocol=2)
    assert len(payload) < 20_000  # 3000 x 3072 pixels described by ~10 KB
    f = _batch_file(tmp_path, payload)
    err, peak = _peak_mib(lambda: load_cifar("cifar10", tmp_path, "test"))
    assert isinstance(err, DataError) and str(f) in str(err) and "by reference" in str(err)
    assert peak < 4, f"{peak:.1f} MiB allocated before refusing"


def test_cifar_huge_declared_string_and_random_bytes_are_one_line(tmp_path):
    # protocol-4 BINBYTES8 declaring 10^12 bytes, followed by 6 bytes
    f = _batch_file(tmp_path, b"\x80\x04\x8e" + struct.pack("<Q", 10**12) + b"abcdef")
    err, peak = _peak_mib(lambda: load_cifar("cifar10", tmp_path, "test"))
    assert isinstance(err, DataError) and str(f) in str(err) and peak < 4
    rng = np.random.default_rng(0)
    for seed in range(20):
        f.write_bytes(b"\x80\x02" + rng.bytes(200 + seed * 37))
        with pytest.raises(DataError) as e:
            load_cifar("cifar10", tmp_path, "test")
        _one_line(e, f)


def test_cifar_codec_payloads_other_than_latin1_are_refused(tmp_path):
    # _codecs.encode(..., 'hex') doubles its input: chained, a few bytes would describe GBs
    payload = (b"\x80\x02}q\x00(X\x04\x00\x00\x00dataq\x01c_codecs\nencode\nq\x02X\x02\x00\x00"
               b"\x00abX\x03\x00\x00\x00hex\x86R" + b"u.")
    f = _batch_file(tmp_path, payload)
    with pytest.raises(DataError, match="refusing _codecs.encode with encoding 'hex'") as e:
        load_cifar("cifar10", tmp_path, "test")
    _one_line(e, f)


@pytest.mark.parametrize("bad", [255, -1, float("nan"), 10, 2.5])
def test_cifar_labels_outside_the_classes_are_refused_at_load(tmp_path, bad):
    x = np.zeros((3, 3072), dtype=np.uint8)
    f = _batch_file(tmp_path, pickle.dumps({b"data": x, b"labels": [0, bad, 1]}, protocol=2))
    with pytest.raises(DataError, match="label 1 is") as e:
        load_cifar("cifar10", tmp_path, "test")
    _one_line(e, f)


def test_cifar_float_pixels_with_nan_are_refused(tmp_path):
    x = np.zeros((2, 3072), dtype=np.float32)
    x[1, 5] = np.nan
    f = _batch_file(tmp_path, pickle.dumps({b"data": x, b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match=r"pixel \(1, 5\) is nan") as e:
        load_cifar("cifar10", tmp_path, "test")
    _one_line(e, f)


# ------------------------------------------------------------------------------ IDX
def test_gzip_idx_inflates_no_more_than_its_header_declares(tmp_path):
    head = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28)
    body = head + bytes(10 * 28 * 28) + bytes(64 << 20)  # 64 MiB beyond the declared size
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(body, 9))
    assert f.stat().st_size < 200_000
    err, peak = _peak_mib(lambda: read_idx(f))
    assert isinstance(err, DataError) and "more than the" in str(err) and str(f) in str(err)
    assert peak < 8, f"{peak:.1f} MiB inflated"
    f.write_bytes(gzip.compress(bytes([0, 0, 8, 0]) + bytes(64 << 20), 9))  # 0-d: one value
    err, peak = _peak_mib(lambda: read_idx(f))
    assert isinstance(err, DataError) and "more than the 5 bytes" in str(err) and peak < 8


def test_gzip_idx_header_beyond_what_deflate_can_hold_is_refused_unread(tmp_path):
    f = tmp_path / "big.gz"
    f.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 2800, 2800)))
    err, peak = _peak_mib(lambda: read_idx(f))
    assert isinstance(err, DataError) and "can hold" in str(err) and peak < 1


def test_corrupt_gzip_body_is_one_line(tmp_path):
    f = tmp_path / "c.gz"
    raw = bytearray(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 5000) + bytes(5000)))
    raw[len(raw) // 2 : len(raw) // 2 + 8] = b"\xff" * 8
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        read_idx(f)
    _one_line(e, f)


def test_idx_dimensions_whose_product_wraps_are_refused(tmp_path):
    f = tmp_path / "wrap"
    # 2^16 ^ 4 = 2^64: np.prod wraps this to 0 in int64
    f.write_bytes(bytes([0, 0, 8, 4]) + struct.pack(">4I", 1 << 16, 1 << 16, 1 << 16, 1 << 16))
    with pytest.raises(DataError, match="truncated IDX file") as e:
        read_idx(f)
    _one_line(e, f)


def test_float_idx_images_with_nan_and_labels_out_of_range_are_refused(tmp_path):
    write_mnist_dir(tmp_path, gz=False)
    x = np.zeros((12, 28, 28), dtype=">f4")
    x[3, 4, 5] = np.nan
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    with pytest.raises(DataError, match=r"pixel \(3, 4, 5\) is nan") as e:
        load_idx_split("mnist", tmp_path, "train")
    _one_line(e, tmp_path / "train-images-idx3-ubyte")
    write_mnist_dir(tmp_path, gz=False)
    y = (np.arange(12) % 10).astype(np.uint8)
    y[7] = 255
    write_idx(tmp_path / "train-labels-idx1-ubyte", y)
    with pytest.raises(DataError, match=r"label 7 is 255; labels must lie in \[0, 9\]") as e:
        load_idx_split("mnist", tmp_path, "train")
    _one_line(e, tmp_path / "train-labels-idx1-ubyte")


# ------------------------------------------------------------------------------ image folder
def _folder(tmp_path, Image, size=(40, 30)):
    for split in ("train", "val"):
        d = tmp_path / split / "cat"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 10, 10)).save(d / "a.png")
    return tmp_path / "val" / "cat" / "a.png"


def test_decompression_bomb_is_one_line_naming_the_image(tmp_path, monkeypatch):
    Image = pytest.importorskip("PIL.Image", reason="imagefolder needs Pillow (vision extra)")
    f = _folder(tmp_path, Image, size=(100, 100))
    ds = load_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10^4 pixels: above twice the limit
    with pytest.raises(DataError, match="DecompressionBomb") as e:
        ds[0]
    _one_line(e, f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # above the limit (PIL only warns)
    with pytest.raises(DataError, match="DecompressionBombWarning") as e:
        ds[0]


def test_truncated_image_names_the_file(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="imagefolder needs Pillow (vision extra)")
    f = _folder(tmp_path, Image)
    im = Image.effect_noise((64, 64), 60).convert("RGB")
    im.save(f)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    ds = load_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    with pytest.raises(DataError) as e:
        ds[0]
    _one_line(e, f)


# ------------------------------------------------------------------------------ events
def test_aedat4_of_only_its_magic_and_corrupt_lz4_are_one_line(tmp_path):
    f = tmp_path / "m.aedat4"
    f.write_bytes(b"#!AER-DAT4.0\r\n")
    with pytest.raises(DataError, match="ends after its magic line") as e:
        read_aedat4(f)
    _one_line(e, f)
    pytest.importorskip("lz4.frame", reason="LZ4 packets need the events extra (lz4)")
    write_aedat4(f, [random_events(40, 32, 24)], compress=True)
    raw = bytearray(f.read_bytes())
    at = raw.index(b"\x04\x22\x4d\x18")  # the LZ4 frame magic of the first packet
    raw[at + 12 : at + 40] = b"\xee" * 28
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="LZ4") as e:
        read_aedat4(f)
    _one_line(e, f)


def test_events_outside_the_sensor_and_empty_recordings_name_the_file(tmp_path):
    for split in ("Train", "Test"):
        for d in range(10):
            (tmp_path / split / str(d)).mkdir(parents=True)
            write_nmnist(tmp_path / split / str(d) / "0.bin", random_events(30, 34, 34, d))
    wide = random_events(30, 34, 34)
    wide["x"][4] = 200
    bad = tmp_path / "Test" / "3" / "0.bin"
    write_nmnist(bad, wide)
    ds = load_dataset("nmnist", "test", root=tmp_path, T=2)
    with pytest.raises(DataError, match="outside the sensor") as e:
        ds[3]
    _one_line(e, bad)
    empty = tmp_path / "Test" / "5" / "0.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="no events") as e:
        ds[5]
    _one_line(e, empty)
    assert ds[0][0].sum() == 30  # the good ones still read


def test_aedat31_overflow_counter_near_2_31_bins_exactly(tmp_path):
    ev = random_events(50, 128, 128, seed=5)
    f = tmp_path / "u.aedat"
    write_aedat31(f, ev, overflow=2**31 - 1, extra_packets=False)
    late = read_aedat31(f)
    assert np.array_equal(late["t"], ev["t"] + ((2**31 - 1) << 31))
    early = random_events(30, 128, 128, seed=6)
    both = np.concatenate([early, late])  # spans 2^62 µs: (t - t0) * T overflows int64
    frames = events_to_frames(both, 10, (128, 128), "time")
    assert frames[0].sum() == 30 and frames[9].sum() == 50 and frames[1:9].sum() == 0
    # exact against Python integers on random int64 timestamps spanning the full range
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(-(2**63), 2**63 - 1, 400, dtype=np.int64))
    evs = random_events(400, 8, 8, seed=7)
    evs["t"] = t
    f7 = events_to_frames(evs, 7, (8, 8), "time")
    t0, span = int(t[0]), int(t[-1]) - int(t[0]) + 1
    want = np.bincount([(int(v) - t0) * 7 // span for v in t], minlength=7)
    assert np.array_equal(f7.sum(axis=(1, 2, 3)), want)


def test_aedat31_negative_overflow_counter_is_refused(tmp_path):
    f = tmp_path / "n.aedat"
    write_aedat31(f, random_events(5, 128, 128), overflow=-3)
    with pytest.raises(DataError, match="overflow -3") as e:
        read_aedat31(f)
    _one_line(e, f)


@pytest.mark.parametrize("row", ["1,inf,2000", "3,10,nan", "2,1e400,5", "1,5,2", "x,1,2"])
def test_gesture_label_rows_that_are_not_whole_numbers_name_file_and_line(tmp_path, row):
    from revsnn.data import read_dvs_gesture_labels

    f = tmp_path / "user01_led_labels.csv"
    f.write_text(f"class,startTime_usec,endTime_usec\n1,0,100\n{row}\n")
    with pytest.raises(DataError) as e:
        read_dvs_gesture_labels(f)
    assert f"{f}:3" in _one_line(e, f)


def test_image_set_refuses_labels_outside_its_classes():
    from revsnn.data import ImageSet

    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.tensor([0, 10]), 10, (0.0,), (1.0,))


def test_a_bad_file_read_by_a_loader_worker_is_still_one_line(tmp_path):
    from revsnn.data import Loader

    for split in ("Train", "Test"):
        for d in range(10):
            (tmp_path / split / str(d)).mkdir(parents=True)
            write_nmnist(tmp_path / split / str(d) / "0.bin", random_events(30, 34, 34, d))
    empty = tmp_path / "Test" / "0" / "0.bin"
    empty.write_bytes(b"")
    ds = load_dataset("nmnist", "test", root=tmp_path, T=2)
    with pytest.raises(DataError) as e:
        list(Loader(ds, 4, train=False, num_workers=1))
    assert str(e.value).startswith(f"{empty}: no events"), str(e.value)
    _one_line(e, empty)


def test_loader_refuses_a_label_outside_the_classes_of_a_map_data_set():
    from revsnn.data import Loader
    from revsnn.data.tonic_sets import MapDataset

    items = [(torch.zeros(1, 4, 4), y) for y in (0, 1, 2, 255)]
    ds = MapDataset(items, num_classes=3)
    with pytest.raises(DataError, match=r"sample 3 has label 255; labels must lie in \[0, 2\]"):
        list(Loader(ds, 2, train=False))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_scan_accepts_every_protocol_and_refuses_lengths_past_the_end(protocol):
    from revsnn.data.cifar import scan_pickle

    value = {b"data": np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072), "s": "a\nb" * 300,
             "b": b"\0" * 70000, "n": [1, -5, 2**70, 1.5, None, True], "t": (1, "x")}
    raw = pickle.dumps(value, protocol=protocol)
    scan_pickle(raw)  # no error on any valid pickle
    for cut in (1, len(raw) // 3, len(raw) - 1):
        with pytest.raises(ValueError):
            scan_pickle(raw[:cut])
    with pytest.raises(ValueError, match="declares 1000000000000 bytes"):
        scan_pickle(b"\x80\x04\x8e" + struct.pack("<Q", 10**12) + b"abc.")
