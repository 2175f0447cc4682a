import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splitbench.data import DatasetMissing, dataset_meta, load_dataset, partition
from splitbench.data.datasets import DEBIAN_FASHION_MNIST, synthetic
from splitbench.models import build_model
from splitbench.spec import DatasetSpec


@pytest.mark.skipif(
    not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (make test installs it as root)",
)
def test_fashion_mnist_from_debian_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITBENCH_CACHE", str(tmp_path))
    d = load_dataset(DatasetSpec(name="fashion_mnist"))
    assert d.train_x.shape == (60000, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10000, 1, 28, 28)
    assert sorted(d.train_y.unique().tolist()) == list(range(10))
    assert d.meta == dataset_meta(DatasetSpec(name="fashion_mnist"))


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITBENCH_DATA_ROOTS", str(tmp_path))  # dataset.root must be under an allowed root
    with pytest.raises(DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DatasetSpec(name="fashion_mnist", root=str(tmp_path)))
    with pytest.raises(DatasetMissing, match="CIFAR-10 not found.*download: true"):
        load_dataset(DatasetSpec(name="cifar10", root=str(tmp_path)))


def test_iid_partition_is_disjoint_and_balanced():
    y = torch.arange(1000) % 10
    parts = partition(y, 4, "iid", seed=0)
    assert [len(p) for p in parts] == [250] * 4
    assert len(np.unique(np.concatenate(parts))) == 1000
    assert partition(y, 4, "iid", seed=0, cap=100)[2].tolist() == parts[2][:100].tolist()


def test_dirichlet_partition_skews_labels():
    y = torch.arange(10000) % 10
    skewed = partition(y, 5, "dirichlet", alpha=0.1, seed=0)
    even = partition(y, 5, "dirichlet", alpha=1000.0, seed=0)
    assert len(np.unique(np.concatenate(skewed))) == 10000

    def spread(parts):  # mean over sources of the largest class share
        return np.mean([np.bincount(y[p].numpy(), minlength=10).max() / max(1, len(p)) for p in parts])

    assert spread(skewed) > 0.3 > 0.15 > spread(even)


@pytest.mark.slow
def test_synthetic_data_is_learnable():
    meta = dataset_meta(DatasetSpec(name="synthetic"))
    d = synthetic(meta, train=2000, test=500, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, meta.input_shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(60):
        idx = torch.arange(i * 32, (i + 1) * 32) % 2000
        loss = F.cross_entropy(model(meta.normalize(d.train_x[idx])), d.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(meta.normalize(d.test_x)).argmax(1) == d.test_y).float().mean().item()
    assert acc > 0.6, acc
