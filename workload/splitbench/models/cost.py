"""Per-block cost of a model: parameters, FLOPs (torch's FlopCounterMode) and activation size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class BlockProfile:
    index: int  # cut after this block = keep blocks 1..index on the edge
    name: str
    params: int
    flops: int  # forward FLOPs per sample (multiply-add = 2)
    out_shape: tuple[int, ...]
    out_bytes: int  # float32 activation bytes per sample leaving this block


def profile_model(model: nn.Sequential, input_shape: tuple[int, int, int]) -> list[BlockProfile]:
    rows = []
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for i, (name, block) in enumerate(model.named_children(), start=1):
            counter = FlopCounterMode(display=False)
            with counter:
                x = block(x)
            rows.append(
                BlockProfile(
                    index=i,
                    name=name,
                    params=sum(p.numel() for p in block.parameters()),
                    flops=int(counter.get_total_flops()),
                    out_shape=tuple(x.shape[1:]),
                    out_bytes=x[0].numel() * 4,
                )
            )
    model.train(was_training)
    return rows


def edge_cost(rows: list[BlockProfile], split_after: int | None) -> tuple[int, int]:
    """Parameters and forward FLOPs per sample that the source holds for a given cut."""
    kept = rows[:split_after] if split_after else []
    return sum(r.params for r in kept), sum(r.flops for r in kept)


def as_dicts(rows: list[BlockProfile]) -> list[dict]:
    return [asdict(r) for r in rows]
