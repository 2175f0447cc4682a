"""Fashion-MNIST (Debian's files or torchvision's download), CIFAR-10 (torchvision) and a
synthetic learnable set.

Images stay uint8 (N, C, H, W) in memory: that is what a camera hands a source, what
full offload may send, and normalization happens where the model runs.

Each dataset is decoded once into the cache (cache.py) as .npy files, keyed by the source
files' names, sizes and modification times (the synthetic set by its parameters), and every
role maps them read-only: the pages of one decoded set are shared by all processes of all
runs, and a source only ever reads the rows of its partition (and the test rows it scores).
torch and torchvision are imported only where they are needed: torchvision only to
download, or to read CIFAR-10's batches on a cache miss.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..cache import cache_dir, key_of, write_dir_atomic
from ..registry import DATASETS
from ..spec import DatasetSpec

if TYPE_CHECKING:
    import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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
        import torch

        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x_uint8.float() / 255.0 - mean) / std


def dataset_meta(spec: DatasetSpec) -> ImageMeta:
    """The dataset's shape and normalization, from the registry (registry.DATASETS)."""
    info = DATASETS[spec.name]
    if info.input_shape is not None:
        return ImageMeta(info.input_shape, info.num_classes, info.mean, info.std)
    c = spec.channels or 1  # synthetic: the spec gives its shape
    return ImageMeta(
        (c, spec.image_size or 28, spec.image_size or 28), info.num_classes, info.mean[:1] * c, info.std[:1] * c
    )


@dataclass
class ImageData:
    meta: ImageMeta
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor


_PARTS = ("train_x", "train_y", "test_x", "test_y")
Arrays = dict[str, np.ndarray]  # _PARTS -> uint8 images (N, C, H, W) / int64 labels (N,)


def load_dataset(spec: DatasetSpec, seed: int = 0) -> ImageData:
    """The dataset as torch tensors over the cache's read-only memory maps (decoded on a miss)."""
    meta = dataset_meta(spec)
    if spec.name == "fashion_mnist":
        arrays = _fashion_mnist(spec)
    elif spec.name == "cifar10":
        arrays = _cifar10(spec)
    else:
        train, test = max(2000, (spec.samples_per_source or 500) * 16), spec.test_samples
        key = key_of("synthetic", meta, seed, train, test, _SYNTHETIC_VERSION, _torch_version())
        arrays = _cached(f"synthetic-{key}", lambda: _arrays(synthetic(meta, train=train, test=test, seed=seed)))
    import torch

    with warnings.catch_warnings():  # read-only maps: nothing here writes into a dataset
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return ImageData(meta, *(torch.from_numpy(arrays[p]) for p in _PARTS))


def _cached(name: str, decode: Callable[[], Arrays]) -> Arrays:
    """cache/datasets/<name>/<part>.npy, mapped read-only; decode() fills it on a miss."""
    folder = cache_dir() / "datasets" / name
    if not all((folder / f"{p}.npy").exists() for p in _PARTS):
        arrays = decode()

        def fill(tmp: Path) -> None:
            for p in _PARTS:
                np.save(tmp / f"{p}.npy", np.ascontiguousarray(arrays[p]))

        try:
            write_dir_atomic(folder, fill)
        except OSError:  # a cache we cannot write: this process keeps its own decoded copy
            return arrays
    return {p: np.load(folder / f"{p}.npy", mmap_mode="r") for p in _PARTS}


def _arrays(data: ImageData) -> Arrays:
    return {p: getattr(data, p).numpy() for p in _PARTS}


def _torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "?"


def _fashion_mnist(spec: DatasetSpec) -> Arrays:
    given = Path(spec.root) if spec.root else DEBIAN_FASHION_MNIST
    files = _idx_files(given)
    if files is None and spec.download:
        # torchvision downloads into root/FashionMNIST/raw, uncompressed; we read those files
        from torchvision.datasets import FashionMNIST

        given = Path(spec.root) if spec.root else cache_dir() / "fashion-mnist"
        FashionMNIST(str(given), train=True, download=True)
        given = given / "FashionMNIST" / "raw"
        files = _idx_files(given)
    if files is None:
        raise DatasetMissing(
            f"Fashion-MNIST not found in {given} (need {_FASHION_FILES[0]}[.gz] and its 3 siblings); "
            "install it with 'apt-get install dataset-fashion-mnist', point dataset.root at the files, "
            "or set dataset.download: true where there is internet"
        )

    def decode() -> Arrays:
        x, y, tx, ty = (_read_idx(f) for f in files)
        return {
            "train_x": x[:, None],
            "train_y": y.astype(np.int64),
            "test_x": tx[:, None],
            "test_y": ty.astype(np.int64),
        }

    return _cached(f"fashion_mnist-{key_of('fashion_mnist', files=files)}", decode)


def _idx_files(folder: Path) -> tuple[Path, ...] | None:
    """The 4 IDX files in folder (each plain or .gz), or None if one is missing."""
    found = []
    for f in _FASHION_FILES:
        path = next((p for p in (folder / f, folder / f"{f}.gz") if p.exists()), None)
        if path is None:
            return None
        found.append(path)
    return tuple(found)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format: magic, dims, data, big-endian)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DatasetMissing(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DatasetMissing(f"{path}: {len(data) - offset} data bytes, its header says {list(dims)}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _cifar10(spec: DatasetSpec) -> Arrays:
    root = Path(spec.root) if spec.root else cache_dir() / "cifar10"
    batches = root / "cifar-10-batches-py"
    files = tuple(sorted(batches.glob("*_batch*"))) if batches.is_dir() else ()
    if files:
        return _cached(f"cifar10-{key_of('cifar10', files=files)}", lambda: _decode_cifar10(root, spec.download))
    arrays = _decode_cifar10(root, spec.download)  # downloads, or says what is missing
    files = tuple(sorted(batches.glob("*_batch*")))
    return _cached(f"cifar10-{key_of('cifar10', files=files)}", lambda: arrays)


def _decode_cifar10(root: Path, download: bool) -> Arrays:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted..."
        raise DatasetMissing(
            f"CIFAR-10 not found in {root} ({err}); set dataset.download: true on a machine with internet, "
            "or put torchvision's cifar-10-batches-py folder there and set dataset.root"
        ) from None
    except OSError as err:
        raise DatasetMissing(f"CIFAR-10 could not be downloaded to {root}: {err}") from None
    return {
        "train_x": train.data.transpose(0, 3, 1, 2),
        "train_y": np.asarray(train.targets, dtype=np.int64),
        "test_x": test.data.transpose(0, 3, 1, 2),
        "test_y": np.asarray(test.targets, dtype=np.int64),
    }


_SYNTHETIC_VERSION = 1  # raise when synthetic() below draws differently: cached sets are keyed by it


def synthetic(meta: ImageMeta, train: int = 4000, test: int = 1000, seed: int = 0, noise: float = 60.0) -> ImageData:
    """Each class is a random smooth prototype; samples are noisy, shifted copies.

    Learnable in a few hundred steps by any of our models, yet not trivially separable
    from one pixel, so accuracy curves mean something in fast tests.
    """
    import torch

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
