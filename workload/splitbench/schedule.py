"""Which samples each source trains on, and in which batches: one definition shared by
sources, the centralized trainer and the executor's progress bar."""

from __future__ import annotations

import numpy as np
import torch

from .data import ImageData, partition
from .spec import ExperimentSpec


def source_indices(spec: ExperimentSpec, data: ImageData) -> list[np.ndarray]:
    d = spec.dataset
    return partition(
        data.train_y, spec.sources.replicas, d.partition.kind, d.partition.alpha, spec.seed, d.samples_per_source
    )


def steps_per_epoch(samples: int, spec: ExperimentSpec, cap_scale: int = 1) -> int:
    """Full batches only (drop_last): every step carries batch_size samples, so bytes per
    sample does not depend on how many steps a run takes."""
    b = spec.training.batch_size
    if samples < b:
        raise ValueError(
            f"{samples} training samples, fewer than one batch of {b}: lower "
            "training.batchSize or raise dataset.samplesPerSource"
        )
    steps = samples // b
    cap = spec.training.max_steps_per_epoch
    return min(steps, cap * cap_scale) if cap else steps


def batches(indices: np.ndarray, spec: ExperimentSpec, epoch: int, stream: int, steps: int):
    """Yield (step_in_epoch, index array) for one epoch, reshuffled per epoch and stream."""
    rng = np.random.default_rng([spec.seed, stream, epoch])
    order = rng.permutation(indices)
    b = spec.training.batch_size
    for s in range(steps):
        yield s, order[s * b : (s + 1) * b]


def test_subset(spec: ExperimentSpec, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(spec.dataset.test_samples, len(data.test_y))
    return data.test_x[:n], data.test_y[:n]


def evaluation_due(spec: ExperimentSpec, epoch: int) -> bool:
    """After this epoch, evaluate? Every epoch (every round for federated paradigms), or
    (training.evaluate: end) only after the last one, and after the last epoch of every
    budget stage of a compressed schedule, whose per-budget accuracy is a result in itself."""
    local = getattr(spec.paradigm, "local_epochs", None)
    if local is not None and (epoch + 1) % local:
        return False  # federated: only the aggregated model after a round is worth evaluating
    if spec.training.evaluate == "every_epoch":
        return True
    ends = {spec.training.epochs - 1}
    comp = getattr(spec.paradigm, "compression", None)
    if comp is not None:
        ends |= {int(e) - 1 for e in np.cumsum(comp.epochs)}
    return epoch in ends
