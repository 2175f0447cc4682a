"""Fashion-MNIST (Debian's files or torchvision's download), CIFAR-10 (torchvision) and a
synthetic learnable set.

Images stay uint8 (N, C, H, W) in memory: that is what a camera hands a source, what
full offload may send, and normalization happens where the model runs.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..spec import DatasetSpec

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetMissing(RuntimeError):
    """The dataset's files are not where we looked; the message says how to get them."""


@dataclass(frozen=True)
class ImageMeta:
    """What a role needs to run a model on this data without holding the data."""
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x_uint8.float() / 255.0 - mean) / std


def dataset_meta(spec: DatasetSpec) -> ImageMeta:
    if spec.name == "fashion_mnist":
        return ImageMeta((1, 28, 28), 10, (0.2860,), (0.3530,))
    if spec.name == "cifar10":
        return ImageMeta((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    c = spec.channels or 1
    return ImageMeta((c, spec.image_size or 28, spec.image_size or 28), 10, (0.5,) * c, (0.29,) * c)


@dataclass
class ImageData:
    meta: ImageMeta
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor


def cache_dir() -> Path:
    return Path(os.environ.get("SPLITBENCH_CACHE", Path.home() / ".cache" / "splitbench"))


def load_dataset(spec: DatasetSpec, seed: int = 0) -> ImageData:
    if spec.name == "fashion_mnist":
        return _fashion_mnist(spec)
    if spec.name == "cifar10":
        return _cifar10(spec)
    meta = dataset_meta(spec)
    return synthetic(meta, seed=seed, train=max(2000, (spec.samples_per_source or 500) * 16),
                     test=spec.test_samples)


def _fashion_mnist(spec: DatasetSpec) -> ImageData:
    from torchvision.datasets import FashionMNIST

    given = Path(spec.root) if spec.root else DEBIAN_FASHION_MNIST
    if all((given / f"{f}.gz").exists() or (given / f).exists() for f in _FASHION_FILES):
        # torchvision reads FashionMNIST/raw/<file> uncompressed; unpack Debian's .gz there once.
        root = cache_dir() / "fashion-mnist"
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for f in _FASHION_FILES:
            if not (raw / f).exists():
                src = given / f
                tmp = raw / f".{f}.{os.getpid()}.tmp"  # several roles may extract at once
                if src.exists():
                    shutil.copyfile(src, tmp)
                else:
                    with gzip.open(given / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                tmp.rename(raw / f)
        download = False
    elif spec.download:
        root = Path(spec.root) if spec.root else cache_dir() / "fashion-mnist"
        download = True
    else:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {given} (need {_FASHION_FILES[0]}[.gz] and its 3 siblings); "
            "install it with 'apt-get install dataset-fashion-mnist', point dataset.root at the files, "
            "or set dataset.download: true where there is internet")
    train = FashionMNIST(str(root), train=True, download=download)
    test = FashionMNIST(str(root), train=False, download=download)
    return ImageData(dataset_meta(spec), train.data.unsqueeze(1).contiguous(), train.targets.long(),
                     test.data.unsqueeze(1).contiguous(), test.targets.long())


def _cifar10(spec: DatasetSpec) -> ImageData:
    from torchvision.datasets import CIFAR10

    root = Path(spec.root) if spec.root else cache_dir() / "cifar10"
    try:
        train = CIFAR10(str(root), train=True, download=spec.download)
        test = CIFAR10(str(root), train=False, download=spec.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise DatasetMissing(
            f"CIFAR-10 not found in {root} ({err}); set dataset.download: true on a machine with internet, "
            "or put torchvision's cifar-10-batches-py folder there and set dataset.root") from None
    except OSError as err:
        raise DatasetMissing(f"CIFAR-10 could not be downloaded to {root}: {err}") from None

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()

    return ImageData(dataset_meta(spec), chw(train.data), torch.tensor(train.targets), chw(test.data),
                     torch.tensor(test.targets))


def synthetic(meta: ImageMeta, train: int = 4000, test: int = 1000, seed: int = 0,
              noise: float = 60.0) -> ImageData:
    """Each class is a random smooth prototype; samples are noisy, shifted copies.

    Learnable in a few hundred steps by any of our models, yet not trivially separable
    from one pixel, so accuracy curves mean something in fast tests.
    """
    channels, size, _ = meta.input_shape
    num_classes = meta.num_classes
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, max(2, size // 4), max(2, size // 4), generator=g)
    protos = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = protos[y] + noise * torch.randn(n, channels, size, size, generator=g)
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, shifts=shift, dims=(2, 3))
        return x.clamp(0, 255).to(torch.uint8), y

    tx, ty = draw(train)
    vx, vy = draw(test)
    return ImageData(meta, tx, ty, vx, vy)
