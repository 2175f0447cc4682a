"""Datasets as uint8 image tensors, and their partitions across sources."""

from .datasets import DatasetMissing, ImageData, ImageMeta, dataset_meta, load_dataset
from .partition import partition

__all__ = ["DatasetMissing", "ImageData", "ImageMeta", "dataset_meta", "load_dataset", "partition"]
