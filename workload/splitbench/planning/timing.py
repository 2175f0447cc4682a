"""Forward and backward time of each block of a model, measured on this machine."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BlockTiming:
    name: str
    forward_s: float  # per batch
    backward_s: float  # per batch, the optimizer step excluded
    out_numel: int  # per sample


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def time_blocks(
    model: nn.Sequential, input_shape: tuple[int, ...], batch: int, threads: int = 1, repeats: int = 3
) -> list[BlockTiming]:
    """Median of `repeats` timed passes per block, each block fed its real input."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_shape)
        out = []
        model.train()
        for name, block in model.named_children():
            fwd, bwd = [], []
            for _ in range(repeats + 1):  # the first pass warms up
                inp = x.detach().requires_grad_()
                t0 = time.perf_counter()
                y = block(inp)
                t1 = time.perf_counter()
                y.backward(torch.ones_like(y))
                t2 = time.perf_counter()
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
            out.append(BlockTiming(name, _median(fwd[1:]), _median(bwd[1:]), y[0].numel()))
            x = y.detach()
        return out
    finally:
        torch.set_num_threads(saved)


def time_head(
    head: nn.Module, feature_shape: tuple[int, ...], batch: int, num_classes: int, threads: int = 1, repeats: int = 3
) -> tuple[float, float]:
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fwd, bwd = [], []
        y = torch.randint(0, num_classes, (batch,))
        for _ in range(repeats + 1):
            x = torch.randn(batch, *feature_shape)
            t0 = time.perf_counter()
            loss = F.cross_entropy(head(x), y)
            t1 = time.perf_counter()
            loss.backward()
            fwd.append(t1 - t0)
            bwd.append(time.perf_counter() - t1)
        return _median(fwd[1:]), _median(bwd[1:])
    finally:
        torch.set_num_threads(saved)
