"""Static data readers on small files in the real formats (IDX, CIFAR pickles, image folders)
and the embedded digits split."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from revsnn.data import DataNotFoundError, load_dataset, read_idx
from revsnn.data.cifar import load_cifar
from revsnn.data.static import load_idx_split


def write_idx(path, array, gz=False):
    """IDX: 00 00 <dtype code> <ndim>, big-endian uint32 dims, data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    a = np.ascontiguousarray(array)
    raw = bytes([0, 0, codes[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist_dir(root, n_train=12, n_test=6, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        sfx = ".gz" if gz else ""
        write_idx(root / f"{split}-images-idx3-ubyte{sfx}", x, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{sfx}", y, gz)
        data[split] = (x, y)
    return data


def test_digits_split_is_fixed_stratified_disjoint_and_scaled():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert tr.images.shape == (1437, 1, 8, 8) and te.images.shape == (360, 1, 8, 8)
    assert 0.0 <= float(tr.images.min()) and float(tr.images.max()) == 1.0
    # stratified: every class has ~20 % of its images in the test split
    counts_te = torch.bincount(te.labels, minlength=10).float()
    counts_all = counts_te + torch.bincount(tr.labels, minlength=10).float()
    assert torch.allclose(counts_te / counts_all, torch.full((10,), 0.2), atol=0.01)
    # disjoint and complete: every source image is in exactly one split, with its own pixels
    from sklearn.datasets import load_digits

    src = load_digits()
    a, b = set(tr.indices.tolist()), set(te.indices.tolist())
    assert not a & b and len(a | b) == 1797
    assert np.array_equal(te.images[:, 0].numpy(), src.images[te.indices.numpy()] / 16.0)
    assert np.array_equal(te.labels.numpy(), src.target[te.indices.numpy()])
    assert torch.equal(load_dataset("digits", "test").images, te.images)  # fixed split


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_reads_what_was_written(tmp_path, gz):
    data = write_mnist_dir(tmp_path / "fm", gz=gz)
    s = load_idx_split("fashion_mnist", tmp_path / "fm", "train")
    assert s.images.dtype == torch.uint8 and s.images.shape == (12, 1, 28, 28)
    assert np.array_equal(s.images[:, 0].numpy(), data["train"][0])
    assert np.array_equal(s.labels.numpy(), data["train"][1])
    t = load_idx_split("mnist", tmp_path / "fm", "test")
    assert np.array_equal(t.images[:, 0].numpy(), data["t10k"][0])


def test_idx_reader_other_dtypes_and_bad_files(tmp_path):
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    write_idx(tmp_path / "a.idx", a)
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 4), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_idx_missing_files_and_directory_say_how_to_get_them(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_idx_split("fashion_mnist", tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte"):
        load_idx_split("mnist", tmp_path / "empty", "train")


def write_cifar(root, name="cifar10", n=4, seed=0):
    """Batches in the real format: pickled dicts with bytes keys, data [N, 3072] uint8."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    key = b"labels" if name == "cifar10" else b"fine_labels"
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]) if name == "cifar10" \
        else ["train", "test"]
    out = {}
    for f in files:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = list(rng.integers(0, 10, n).tolist())
        with open(folder / f, "wb") as fh:
            pickle.dump({b"batch_label": b"x", key: y, b"data": x}, fh, protocol=2)
        out[f] = (x, y)
    meta = "batches.meta" if name == "cifar10" else "meta"
    names_key = b"label_names" if name == "cifar10" else b"fine_label_names"
    with open(folder / meta, "wb") as fh:
        pickle.dump({names_key: [f"c{i}".encode() for i in range(10)]}, fh, protocol=2)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle_batches(tmp_path, name):
    written = write_cifar(tmp_path, name)
    tr = load_cifar(name, tmp_path, "train")
    te = load_cifar(name, tmp_path, "test")
    n_train = 20 if name == "cifar10" else 4
    assert tr.images.shape == (n_train, 3, 32, 32) and te.images.shape == (4, 3, 32, 32)
    first = "data_batch_1" if name == "cifar10" else "train"
    x, y = written[first]
    # rows are the R, G, B planes of 32x32 in order
    assert np.array_equal(tr.images[0, 1].numpy().ravel(), x[0, 1024:2048])
    assert tr.labels[:4].tolist() == y
    assert tr.classes[:2] == ["c0", "c1"] and tr.num_classes == (10 if name == "cifar10" else 100)


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_cifar("cifar10", tmp_path, "test")
    with pytest.raises(DataNotFoundError, match="data_batch_1"):
        load_cifar("cifar10", tmp_path / "nowhere", "train")


def test_imagefolder_decodes_resizes_and_labels(tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="imagefolder needs Pillow (vision extra)")
    for split in ("train", "val"):
        for c, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            Image.new("RGB", (40, 30), colour).save(d / "a.png")
    ds = load_dataset("imagefolder", "test", root=tmp_path, image_size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 1
    assert x[2].float().mean() > 250 and x[0].float().mean() < 5  # blue dog
