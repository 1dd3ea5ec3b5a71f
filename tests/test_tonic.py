"""tonic data sets through revsnn: files in tonic's DVSGesture layout (written here: per-gesture
``.npy`` event arrays and the archive tonic checks for), tonic's own transforms, one training
epoch on the command line and through ``revsnn.train.fit``; tonic downloads nothing."""

import json
import tarfile

import numpy as np
import pytest
import torch

tonic = pytest.importorskip(
    "tonic", reason="tonic is not installed (pip install 'revsnn[tonic]'; the dev extra has it)")

from revsnn.data import load_dataset  # noqa: E402
from revsnn.data.static import DataNotFoundError  # noqa: E402
from revsnn.train.cli import main  # noqa: E402


def write_dvsgesture(root, users_train=10, users_test=10, events=300, seed=0):
    """tonic's DVSGesture layout: ``DVSGesture/ibmGesture{Train,Test}/user<NN>_<light>/<label>.npy``
    with int arrays ``[N, 4]`` = (x, y, p, t in ms), plus the ``.tar.gz`` archive tonic looks
    for before it would download. Label c puts its events around column 10 c (learnable)."""
    rng = np.random.default_rng(seed)
    base = root / "DVSGesture"
    for folder, users in (("ibmGestureTrain", range(1, users_train + 1)),
                          ("ibmGestureTest", range(30, 30 + users_test))):
        for u in users:
            d = base / folder / f"user{u:02d}_led"
            d.mkdir(parents=True)
            for c in range(11):
                x = np.clip(rng.normal(10 * c + 5, 3, events), 0, 127).astype(np.int64)
                y = rng.integers(0, 128, events)
                p = rng.integers(0, 2, events)
                t = np.sort(rng.integers(0, 1500, events))  # ms
                np.save(d / f"{c}.npy", np.stack([x, y, p, t], 1))
        with tarfile.open(base / f"{folder}.tar.gz", "w:gz") as tar:
            tar.add(base / folder, arcname=folder)
    return root


@pytest.fixture(scope="module")
def gesture_root(tmp_path_factory):
    return write_dvsgesture(tmp_path_factory.mktemp("tonic"))


def test_tonic_frames_equal_tonic_transform_and_split(gesture_root):
    train = load_dataset("tonic:DVSGesture", "train", root=gesture_root, T=3, frame_mode="time",
                         frame_size=(16, 16))
    test = load_dataset("tonic:DVSGesture", "test", root=gesture_root, T=3)
    assert len(train) == 110 and len(test) == 110
    assert train.kind == "frames" and train.num_classes == 11 and train.in_channels == 2
    assert train.image_size == (16, 16) and test.image_size == (128, 128)
    x, y = train[0]
    assert x.shape == (3, 2, 16, 16) and x.dtype == torch.float32
    # the same item through tonic by hand: Downsample then ToFrame(n_time_bins=T)
    t = tonic.transforms
    raw = tonic.datasets.DVSGesture(str(gesture_root), train=True, transform=t.Compose([
        t.Downsample(spatial_factor=(16 / 128, 16 / 128)),
        t.ToFrame(sensor_size=(16, 16, 2), n_time_bins=3)]))
    ref, label = raw[0]
    assert y == label and torch.equal(x, torch.from_numpy(ref).float())
    assert 0 < x.sum() <= 300  # (tonic's time bins may leave out the last event)
    # equal event count (frame_mode count): T frames of 100 events each
    counts = load_dataset("tonic:DVSGesture", "test", root=gesture_root, T=3)[5][0]
    assert counts.sum(dim=(1, 2, 3)).tolist() == [100.0, 100.0, 100.0]


def test_missing_files_never_download(tmp_path, capsys):
    with pytest.raises(DataNotFoundError, match="--set download=true"):
        load_dataset("tonic:DVSGesture", "train", root=tmp_path, T=2)
    assert not (tmp_path / "DVSGesture").exists() or not any((tmp_path / "DVSGesture").iterdir())
    rc = main(["--data", "tonic:DVSGestur", "--data-dir", str(tmp_path), "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "did you mean DVSGesture" in err[0]


def test_one_epoch_of_tonic_dvsgesture_on_the_command_line(gesture_root, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--data", "tonic:DVSGesture", "--data-dir", str(gesture_root),
               "--model", "trevsnn_test", "--set", "model_kwargs.stem=events", "--T", "2",
               "--epochs", "1", "--batch-size", "22",
               "--set", "frame_size=[16,16]", "--set", "frame_mode=time",
               "--set", "measure_memory=false", "--out", str(out), "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "finished" and s["data"] == "tonic:DVSGesture"
    assert s["epochs_done"] == 1 and s["global_step"] == 5  # 110 samples / batch 22
    assert 0.0 <= s["final_test_acc"] <= 100.0
    assert "on tonic:DVSGesture (110 train / 110 test)" in captured.out


def test_fit_takes_tonic_datasets_with_their_own_transforms(gesture_root, tmp_path):
    import revsnn
    from revsnn.train import fit

    t = tonic.transforms
    frames = t.Compose([t.Downsample(spatial_factor=0.125),
                        t.ToFrame(sensor_size=(16, 16, 2), n_time_bins=2)])
    train = tonic.datasets.DVSGesture(str(gesture_root), train=True, transform=frames)
    test = tonic.datasets.DVSGesture(str(gesture_root), train=False, transform=frames)
    torch.manual_seed(0)
    model = revsnn.create_model("trevsnn_test", num_classes=11, T=2, in_channels=2,
                                stem="events")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = fit(model, train, test, T=2, epochs=1, batch_size=22, out=str(tmp_path / "fit"),
            measure_memory=False, progress=False, log=lambda line: None)
    assert s["status"] == "finished" and s["global_step"] == 5 and s["data"] == "DVSGesture"
    assert s["final_test_acc"] is not None
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
