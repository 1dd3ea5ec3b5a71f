"""Event readers on the real recordings in ../shared/data/events and on small files in the real
formats written here; event -> frame integration; disjoint splits of the event data sets."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from revsnn.data import (
    events_to_frames,
    load_dataset,
    read_aedat2,
    read_aedat4,
    read_aedat31,
    read_nmnist,
)
from revsnn.data.events import make_events

_CANDIDATES = [p / "shared" / "data" / "events" for p in Path(__file__).resolve().parents[2:4]]
SHARED = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real recordings not found at {SHARED} (../shared is absent)"
)


# ------------------------------------------------------------------------------ writers
def write_nmnist(path, ev, overflow_at=None):
    """5 bytes per event: x, y, p<<7 | t[22:16], t[15:8], t[7:0]; y=240 marks an overflow."""
    rows = []
    for i, (t, x, y, p) in enumerate(zip(ev["t"], ev["x"], ev["y"], ev["p"])):
        if overflow_at is not None and i == overflow_at:
            rows.append([0, 240, 0, 0, 0])
        t = int(t) % (1 << 23)
        rows.append([int(x), int(y), (int(p) << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF])
    Path(path).write_bytes(np.array(rows, dtype=np.uint8).tobytes())


def random_events(n, W, H, seed=0, t0=0, span=100_000):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(t0, t0 + span, n))
    return make_events(t, rng.integers(0, W, n), rng.integers(0, H, n), rng.integers(0, 2, n))


def write_aedat31(path, ev, overflow=0, extra_packets=True):
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    body = b""
    if extra_packets:  # a special-event packet (type 0) that the reader must skip
        body += struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + struct.pack("<Ii", 7, 5)
    data = ((ev["x"].astype(np.uint32) << 17) | (ev["y"].astype(np.uint32) << 2)
            | (ev["p"].astype(np.uint32) << 1) | 1)
    n = len(ev)
    # one invalid event (valid bit 0) appended inside the packet: capacity n + 1
    pkt = struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, n + 1, n + 1, n)
    arr = np.empty(n + 1, dtype=[("d", "<u4"), ("t", "<i4")])
    arr["d"][:n], arr["t"][:n] = data, ev["t"] & 0x7FFFFFFF
    arr["d"][n], arr["t"][n] = 0, int(ev["t"][-1])
    Path(path).write_bytes(head + body + pkt + arr.tobytes())


def write_aedat2(path, ev):
    head = b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n"
    addr = ((ev["y"].astype(np.uint32) << 22) | (ev["x"].astype(np.uint32) << 12)
            | (ev["p"].astype(np.uint32) << 11))
    aps = np.array([(1 << 31) | 5], dtype=np.uint32)  # a non-DVS (APS) word to be skipped
    words = np.empty(len(ev) + 1, dtype=[("a", ">u4"), ("t", ">u4")])
    words["a"] = np.concatenate([addr, aps])
    words["t"] = np.concatenate([ev["t"], [ev["t"][-1]]])
    Path(path).write_bytes(head + words.tobytes())


def _fb_ioheader(compression, table_pos, xml):
    s = xml.encode()
    buf = struct.pack("<I4s", 20, b"IOHE") + struct.pack("<5H", 10, 20, 4, 12, 8) + b"\0\0"
    buf += struct.pack("<iiIq", 12, compression, 12, table_pos)  # table at 20, string at 40
    return buf + struct.pack("<I", len(s)) + s + b"\0"


def _fb_events(ev):
    st = np.zeros(len(ev), dtype={"names": ["t", "x", "y", "p"],
                                  "formats": ["<i8", "<i2", "<i2", "u1"],
                                  "offsets": [0, 8, 10, 12], "itemsize": 16})
    st["t"], st["x"], st["y"], st["p"] = ev["t"], ev["x"], ev["y"], ev["p"]
    inner = struct.pack("<I4s", 16, b"EVTS") + struct.pack("<3H", 6, 8, 4) + b"\0\0"
    inner += struct.pack("<iI", 8, 4) + struct.pack("<I", len(ev)) + st.tobytes()
    return struct.pack("<I", len(inner)) + inner  # size-prefixed, as DV writes it


def write_aedat4(path, chunks, size=(24, 32), compress=True):
    xml = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/o/0/"><attr key="typeIdentifier" type="string">EVTS</attr>'
        f'<node name="info" path="/o/0/info/"><attr key="sizeX" type="int">{size[1]}</attr>'
        f'<attr key="sizeY" type="int">{size[0]}</attr></node></node>'
        '<node name="1" path="/o/1/"><attr key="typeIdentifier" type="string">IMUS</attr>'
        "</node></node></dv>"
    )
    if compress:
        import lz4.frame

        pack = lz4.frame.compress
    else:
        def pack(b):
            return b
    packets = b""
    for ev in chunks:
        for sid, data in ((0, pack(_fb_events(ev))), (1, pack(b"IMU-DATA" * 3))):
            packets += struct.pack("<ii", sid, len(data)) + data
    magic = b"#!AER-DAT4.0\r\n"
    probe = _fb_ioheader(1 if compress else 0, 0, xml)
    table_pos = len(magic) + 4 + len(probe) + len(packets)
    header = _fb_ioheader(1 if compress else 0, table_pos, xml)
    Path(path).write_bytes(magic + struct.pack("<i", len(header)) + header + packets
                           + b"DATA-TABLE-NOT-A-PACKET")


def write_nmnist_tree(root, per_class=1):
    for split, seed in (("Train", 0), ("Test", 100)):
        for d in range(10):
            folder = Path(root) / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                write_nmnist(folder / f"{seed + 10 * d + i:05d}.bin",
                             random_events(50 + d, 34, 34, seed + 10 * d + i))
    return Path(root)


# ------------------------------------------------------------------------------ readers
def test_nmnist_reader_roundtrip_with_overflow(tmp_path):
    ev = random_events(200, 34, 34, span=1 << 23)
    ev["t"] = np.sort(ev["t"])
    write_nmnist(tmp_path / "a.bin", ev, overflow_at=150)
    got = read_nmnist(tmp_path / "a.bin")
    assert len(got) == 200
    assert np.array_equal(got["x"], ev["x"]) and np.array_equal(got["y"], ev["y"])
    assert np.array_equal(got["p"], ev["p"])
    assert np.array_equal(got["t"][:150], ev["t"][:150])
    assert np.array_equal(got["t"][150:], ev["t"][150:] + (1 << 23))
    (tmp_path / "b.bin").write_bytes(b"\0" * 7)
    with pytest.raises(ValueError, match="5 bytes per event"):
        read_nmnist(tmp_path / "b.bin")


def test_aedat31_roundtrip_skips_other_packets_and_invalid_events(tmp_path):
    ev = random_events(300, 128, 128, seed=1)
    write_aedat31(tmp_path / "u.aedat", ev, overflow=2)
    got = read_aedat31(tmp_path / "u.aedat")
    assert len(got) == 300
    for f in ("x", "y", "p"):
        assert np.array_equal(got[f], ev[f])
    assert np.array_equal(got["t"], ev["t"] + (2 << 31))
    raw = (tmp_path / "u.aedat").read_bytes()
    (tmp_path / "cut.aedat").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="corrupted packet header"):
        read_aedat31(tmp_path / "cut.aedat")


def test_aedat2_roundtrip_skips_aps_words(tmp_path):
    ev = random_events(100, 128, 128, seed=2)
    write_aedat2(tmp_path / "c.aedat", ev)
    got = read_aedat2(tmp_path / "c.aedat")
    assert len(got) == 100
    for f in ("t", "x", "y", "p"):
        assert np.array_equal(got[f], ev[f])


@pytest.mark.parametrize("compress", [False, True])
def test_aedat4_roundtrip(tmp_path, compress):
    if compress:
        pytest.importorskip("lz4.frame", reason="LZ4 packets need the events extra (lz4)")
    a, b = random_events(40, 32, 24, seed=3), random_events(25, 32, 24, seed=4, t0=10**6)
    write_aedat4(tmp_path / "s.aedat4", [a, b], compress=compress)
    got, size = read_aedat4(tmp_path / "s.aedat4", with_size=True)
    assert size == (24, 32) and len(got) == 65
    both = np.concatenate([a, b])
    for f in ("t", "x", "y", "p"):
        assert np.array_equal(got[f], both[f])


@needs_shared
def test_real_nmnist_recording():
    ev = read_nmnist(SHARED / "sample_nmnist.bin")
    assert len(ev) == (SHARED / "sample_nmnist.bin").stat().st_size // 5 == 4325
    assert ev["x"].max() < 34 and ev["y"].max() < 34 and set(np.unique(ev["p"])) == {0, 1}
    assert np.all(np.diff(ev["t"]) >= 0) and 250_000 < ev["t"][-1] < 400_000  # 3 saccades
    f = events_to_frames(ev, 3, (34, 34), "time")
    assert f.sum() == len(ev) and f.shape == (3, 2, 34, 34)
    assert (f.sum(axis=(1, 2, 3)) > 0).all()


@needs_shared
def test_real_aedat4_recording():
    pytest.importorskip("lz4.frame", reason="sample.aedat4 is LZ4-compressed (events extra)")
    ev, size = read_aedat4(SHARED / "sample.aedat4", with_size=True)
    assert size == (240, 320) and len(ev) == 111954
    assert ev["x"].max() < 320 and ev["y"].max() < 240 and np.all(np.diff(ev["t"]) >= 0)
    assert 0.4 < ev["p"].mean() < 0.6
    f = events_to_frames(ev, 10, size, "count", out_size=(60, 80))
    assert f.shape == (10, 2, 60, 80) and f.sum() == len(ev)
    assert np.abs(f.sum(axis=(1, 2, 3)) - len(ev) / 10).max() <= 1


# ------------------------------------------------------------------------------ frames
def test_frames_by_event_count_are_contiguous_equal_chunks():
    ev = random_events(103, 8, 6, seed=5)
    f = events_to_frames(ev, 4, (6, 8), "count")
    sizes = f.sum(axis=(1, 2, 3))
    assert sizes.tolist() == [26, 26, 26, 25]
    # the second frame holds exactly events 26..51
    ref = np.zeros((2, 6, 8), np.float32)
    np.add.at(ref, (ev["p"][26:52], ev["y"][26:52], ev["x"][26:52]), 1)
    assert np.array_equal(f[1], ref)


def test_frames_by_time_are_equal_bins():
    ev = make_events([0, 10, 49, 50, 99], [0, 1, 2, 3, 4], [0] * 5, [1, 0, 1, 1, 0])
    f = events_to_frames(ev, 2, (1, 5), "time")
    assert f[0].sum() == 3 and f[1].sum() == 2  # bins [0, 50) and [50, 100)
    assert f[0, 1, 0, 0] == 1 and f[0, 0, 0, 1] == 1 and f[1, 0, 0, 4] == 1
    with pytest.raises(ValueError, match="outside the sensor"):
        events_to_frames(ev, 2, (1, 4), "time")
    assert events_to_frames(ev[:0], 3, (2, 2)).shape == (3, 2, 2, 2)


# ------------------------------------------------------------------------------ data sets
def test_nmnist_set_splits_are_disjoint(tmp_path):
    root = write_nmnist_tree(tmp_path / "nm", per_class=2)
    tr = load_dataset("nmnist", "train", root=root, T=3)
    te = load_dataset("nmnist", "test", root=root, T=3)
    assert len(tr) == len(te) == 20 and not set(tr.files) & set(te.files)
    x, y = te[7]
    assert x.shape == (3, 2, 34, 34) and x.dtype == torch.float32 and y == 3
    assert float(x.sum()) == 50 + 3


def test_dvs_gesture_samples_are_labelled_windows_split_by_subject(tmp_path):
    root = tmp_path / "DvsGesture"
    root.mkdir()
    for user in (1, 2, 24):
        ev = random_events(400, 128, 128, seed=user, span=4_000)
        write_aedat31(root / f"user{user:02d}_led.aedat", ev)
        (root / f"user{user:02d}_led_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n1,0,1000\n11,2000,3500\n")
    tr = load_dataset("dvs_gesture", "train", root=tmp_path, T=2)
    te = load_dataset("dvs_gesture", "test", root=tmp_path, T=2)
    assert len(tr) == 4 and len(te) == 2 and not set(tr.files) & set(te.files)
    assert [s[1] for s in te.samples] == [0, 10]
    ev = read_aedat31(root / "user24_led.aedat")
    x, y = te[1]
    in_window = ((ev["t"] >= 2000) & (ev["t"] < 3500)).sum()
    assert y == 10 and x.shape == (2, 2, 128, 128) and float(x.sum()) == in_window
    # an explicit trial list overrides the by-subject rule
    (root / "trials_to_test.txt").write_text("user02_led.aedat\n")
    te2 = load_dataset("dvs_gesture", "test", root=tmp_path, T=2)
    assert [f.name for f in te2.files] == ["user02_led.aedat"]


def test_cifar10_dvs_split_is_disjoint_and_complete(tmp_path):
    from revsnn.data.event_sets import CIFAR10_DVS_CLASSES

    for c in CIFAR10_DVS_CLASSES:
        (tmp_path / c).mkdir()
        for i in range(10):
            write_aedat2(tmp_path / c / f"cifar10_{c}_{i}.aedat", random_events(20, 128, 128, i))
    tr = load_dataset("cifar10_dvs", "train", root=tmp_path, T=4, frame_size=(32, 32))
    te = load_dataset("cifar10_dvs", "test", root=tmp_path, T=4, frame_size=(32, 32))
    assert len(tr) == 90 and len(te) == 10
    assert not set(tr.files) & set(te.files) and len(set(tr.files) | set(te.files)) == 100
    assert all(f.stem.endswith("_9") for f in te.files)  # the last recording of each class
    x, y = te[3]
    assert x.shape == (4, 2, 32, 32) and float(x.sum()) == 20 and y == 3


def test_missing_event_directories_are_clear(tmp_path):
    from revsnn.data import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="Train"):
        load_dataset("nmnist", "train", root=tmp_path, T=2)
    with pytest.raises(DataNotFoundError, match="class folders"):
        load_dataset("cifar10_dvs", "train", root=tmp_path, T=2)
    with pytest.raises(DataNotFoundError, match="data_dir"):
        load_dataset("dvs_gesture", "train", T=2)
