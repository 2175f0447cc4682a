"""What federated paradigms share: a model's state as one flat tensor on the wire, the
weighted average (FedAvg: n_k / n), and one round's exchange with the aggregator."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..transport import Kind, Message, Traffic
from .base import Call


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Everything averaged: parameters and batch-norm running statistics (the HFSL paper's
    complete weight sharing); integer counters such as num_batches_tracked stay local."""
    return [t for t in module.state_dict().values() if t.is_floating_point()]


def flatten(module: nn.Module) -> torch.Tensor:
    """One float32 vector: one frame on the wire however many tensors the model has."""
    return torch.cat([t.detach().reshape(-1).float() for t in state_tensors(module)])


def load_flat(module: nn.Module, flat: torch.Tensor) -> None:
    tensors = state_tensors(module)
    expected = sum(t.numel() for t in tensors)
    if flat.dtype != torch.float32 or flat.ndim != 1 or flat.numel() != expected:
        raise ValueError(
            f"aggregated weights: expected {expected} float32 values, got {flat.numel()} "
            f"{flat.dtype} in {flat.ndim} dimension(s)"
        )
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def weighted_average(vectors: list[torch.Tensor], samples: list[int]) -> torch.Tensor:
    """FedAvg: sum_k (n_k / n) w_k."""
    if len({v.numel() for v in vectors}) != 1:
        raise ValueError(f"contributions differ in size: {sorted({v.numel() for v in vectors})}")
    n = sum(samples)
    if n <= 0:
        raise ValueError("no samples behind the contributions")
    out = torch.zeros_like(vectors[0], dtype=torch.float64)
    for v, k in zip(vectors, samples):
        out += v.double() * (k / n)
    return out.float()


def exchange(
    aggregate: Call, module: nn.Module, partition: str, samples: int, round_: int, power: float | None = None
) -> tuple[dict[str, float], Message]:
    """Send this round's weights of one partition with the samples behind them (and, for a
    split that may move, the device's remaining computational power); return the round's
    phases in seconds and the aggregator's reply (the average, and the cut it chose)."""
    t0 = time.perf_counter()
    msg = Message(Kind.TRAIN, epoch=round_).add(f"w_{partition}", flatten(module), Traffic.WEIGHTS)
    msg.add("n", torch.tensor([samples], dtype=torch.int64), Traffic.CONTROL)
    if power is not None:
        msg.add("power", torch.tensor([power], dtype=torch.float32), Traffic.CONTROL)
    t1 = time.perf_counter()
    reply, _, _ = aggregate(msg)
    if f"w_{partition}" not in reply.tensors:
        raise ValueError(f"the aggregator's reply has no w_{partition}")
    return {"encode": t1 - t0, "aggregate": time.perf_counter() - t1}, reply


def round_ends(setup, epoch: int) -> bool:
    return (epoch + 1) % setup.spec.paradigm.local_epochs == 0
