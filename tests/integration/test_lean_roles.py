"""Lean roles (issue 17, item 3): each role imports only what it needs (the link emulator no
torch, no role pandas, small_cnn no torchvision), datasets are decoded once into the cache
and mapped read-only, and every role records what it cost before it could work."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support import experiment_doc
from splitbench.data import DatasetMissing, load_dataset
from splitbench.spec import DatasetSpec, Experiment
from splitbench.transport.wire import Kind, WireError, decode, encode, error_message


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_the_relay_checks_and_answers_without_torch():
    probe = (
        "import sys\n"
        "from splitbench.roles import link\n"
        "from splitbench.transport.wire import WireError, decode, encode, error_message\n"
        "frames = encode(error_message('no route', 'exp', 'link-0'))\n"
        "msg = decode(frames, tensors=False)\n"
        "assert msg.kind.name == 'ERROR' and msg.sender == 'link-0' and list(msg.traffic) == ['error']\n"
        "try:\n    decode(frames[:1], tensors=False)\nexcept WireError:\n    pass\n"
        "else:\n    raise AssertionError('a missing frame passed')\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'pandas') if m in sys.modules))"
    )
    assert _python(probe) == "[]"


def test_a_headers_only_decode_runs_every_check():
    frames = encode(error_message("bad act", "exp", "server-0"))
    full, header = decode(frames), decode(frames, tensors=False)
    assert (
        (header.kind, header.sender, header.experiment)
        == (full.kind, full.sender, full.experiment)
        == (Kind.ERROR, "server-0", full.experiment)
    )
    assert header.tensors == {} and header.traffic == full.traffic and full.error_text() == "bad act"
    with pytest.raises(WireError, match="7 bytes, frame has 3"):
        decode([frames[0], b"bad"], tensors=False)


def test_the_relay_message_cap_comes_from_a_child_and_then_from_the_cache(tmp_path, monkeypatch):
    from splitbench.roles.checks import message_cap

    monkeypatch.setenv("SPLITBENCH_CACHE", str(tmp_path))
    spec = Experiment.model_validate(experiment_doc()).spec
    assert message_cap(spec, torch_free=True) == message_cap(spec)
    assert len(list((tmp_path / "message-caps").iterdir())) == 1

    def no_child(*args, **kwargs):
        raise AssertionError("the cached cap was not used")

    monkeypatch.setattr(subprocess, "run", no_child)
    assert message_cap(spec, torch_free=True) == message_cap(spec)


def _idx(path, array: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Four IDX files of a 6-image Fashion-MNIST under an allowed data root, and an empty cache."""
    root = tmp_path / "fmnist"
    root.mkdir()
    monkeypatch.setenv("SPLITBENCH_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("SPLITBENCH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28))
    _idx(root / "train-images-idx3-ubyte.gz", images)
    _idx(root / "train-labels-idx1-ubyte.gz", np.arange(6) % 10)
    _idx(root / "t10k-images-idx3-ubyte.gz", images[:2])
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.array([3, 4]))
    return root, images


def test_a_dataset_is_decoded_once_and_mapped_read_only(tiny_fashion, tmp_path):
    root, images = tiny_fashion
    first = load_dataset(DatasetSpec(name="fashion_mnist", root=str(root)))
    assert first.train_x.shape == (6, 1, 28, 28) and first.train_y.tolist() == [0, 1, 2, 3, 4, 5]
    assert (first.train_x[:, 0].numpy() == images).all() and first.test_y.tolist() == [3, 4]
    entries = list((tmp_path / "cache" / "datasets").iterdir())
    assert [e.name.startswith("fashion_mnist-") for e in entries] == [True]
    assert sorted(p.name for p in entries[0].iterdir()) == ["test_x.npy", "test_y.npy", "train_x.npy", "train_y.npy"]
    again = load_dataset(DatasetSpec(name="fashion_mnist", root=str(root)))
    assert str(entries[0] / "train_x.npy") in Path("/proc/self/maps").read_text()  # a map, not a copy
    assert (again.train_x.numpy() == first.train_x.numpy()).all()
    # new source files (another size or time) are another entry, never a stale one
    _idx(root / "t10k-labels-idx1-ubyte.gz", np.array([7, 8]))
    assert load_dataset(DatasetSpec(name="fashion_mnist", root=str(root))).test_y.tolist() == [7, 8]
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


def test_an_unwritable_cache_still_loads_the_dataset(tiny_fashion, tmp_path):
    root, images = tiny_fashion
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    data = load_dataset(DatasetSpec(name="fashion_mnist", root=str(root)))
    assert (data.train_x[:, 0].numpy() == images).all()


def test_a_damaged_dataset_file_is_named(tiny_fashion):
    root, _ = tiny_fashion
    with gzip.open(root / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 6) + b"\x01\x02")
    with pytest.raises(DatasetMissing, match="train-labels-idx1-ubyte.gz: 2 data bytes, its header says \\[6\\]"):
        load_dataset(DatasetSpec(name="fashion_mnist", root=str(root)))


@pytest.mark.integration
def test_each_role_imports_only_what_it_needs_and_records_its_footprint(tmp_path):
    from splitbench.executors import LocalExecutor

    doc = experiment_doc(
        name="lean", training={"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": 2, "replyTimeoutS": 60}
    )
    result = LocalExecutor(tmp_path / "runs", quiet=True, timeout_s=240).run(Experiment.model_validate(doc))
    assert result.ok, result.message
    rec = pd.read_parquet(result.run_dir / "record.parquet")
    sessions = rec[rec["event"] == "session"]
    ends = sessions[sessions["status"] == "ok"].set_index("instance")
    assert sorted(ends.index) == ["link-0", "server-0", "source-0", "source-1"]
    imports = {i: set(filter(None, str(v).split(","))) for i, v in ends["imports"].items()}
    assert imports["link-0"] == set()  # no torch, no pandas: it forwards frames
    for role in ("server-0", "source-0", "source-1"):  # small_cnn on synthetic data: torch alone
        assert imports[role] == {"torch"}, role
    ready = sessions[sessions["status"].isin(["limited", "listening"]) & sessions["ready_s"].notna()]
    assert sorted(ready["instance"]) == ["link-0", "server-0", "source-0", "source-1"]
    assert (ready["ready_s"] > 0).all() and (ready["pss_now_mb"] > 0).all()
    assert (ready["uss_now_mb"] <= ready["rss_now_mb"]).all()
