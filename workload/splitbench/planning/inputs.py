"""Build the runtime model's inputs for an experiment: block timings measured here, the
edge's quota, the link, and how many batches an epoch has."""

from __future__ import annotations

import functools
import os

import torch

from ..data import dataset_meta
from ..models import build_model
from ..models.cost import profile_model
from ..paradigms.base import label_dtype
from ..paradigms.early_exit import early_exit_head
from ..roleplan import plan_roles
from ..spec import Experiment, SpecError
from .epoch_time import Inputs
from .timing import time_blocks, time_head

TRAIN_SIZES = {"fashion_mnist": 60000, "cifar10": 50000}


def batches_per_epoch(exp: Experiment) -> int:
    spec = exp.spec
    n = spec.dataset.samples_per_source or TRAIN_SIZES.get(spec.dataset.name, 4000) // spec.sources.replicas
    steps = max(1, n // spec.training.batch_size)
    cap = spec.training.max_steps_per_epoch
    return min(steps, cap) if cap else steps


@functools.lru_cache(maxsize=32)
def _measured(
    model_name: str, num_classes: int, input_shape: tuple, batch: int, quota: float | None, seed: int, repeats: int
) -> dict:
    """Block and early-exit-head timings: the slow part, shared by experiments that differ
    only in network or paradigm (a report predicts many runs of one model)."""
    torch.manual_seed(seed)
    model = build_model(model_name, num_classes, input_shape)
    edge = time_blocks(model, input_shape, batch, threads=1, repeats=repeats)
    scale = 1 / min(quota, 1.0) if quota else 1.0  # one thread at a fraction of a core
    cloud = time_blocks(model, input_shape, batch, threads=os.cpu_count() or 1, repeats=repeats)
    prof = profile_model(model, input_shape)
    head_fwd, head_bwd, head_params = [], [], []
    for r in prof:
        if len(r.out_shape) == 3:
            head = early_exit_head(r.out_shape[0], num_classes)
        else:
            head = torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(int(torch.tensor(r.out_shape).prod()), num_classes)
            )
        f, bw = time_head(head, r.out_shape, batch, num_classes, threads=1, repeats=repeats)
        head_fwd.append(f * scale)
        head_bwd.append(bw * scale)
        head_params.append(sum(p.numel() for p in head.parameters()))
    return dict(
        edge_fwd=[t.forward_s * scale for t in edge],
        edge_bwd=[t.backward_s * scale for t in edge],
        cloud_fwd=[t.forward_s for t in cloud],
        cloud_bwd=[t.backward_s for t in cloud],
        out_numel=[t.out_numel for t in edge],
        params=[r.params for r in prof],
        head_fwd=head_fwd,
        head_bwd=head_bwd,
        head_params=head_params,
    )


def build_inputs(exp: Experiment, repeats: int = 3) -> Inputs:
    spec = exp.spec
    meta = dataset_meta(spec.dataset)
    plan = plan_roles(exp)  # the profiles, resolved once
    if plan.network is None:
        raise SpecError(f"{exp.name}: {spec.paradigm.name} uses no network: there is nothing to plan")
    quota = plan.device("source").cpu
    measured = _measured(
        spec.model.name,
        spec.model.num_classes,
        tuple(meta.input_shape),
        spec.training.batch_size,
        quota,
        spec.seed,
        repeats,
    )
    return Inputs(
        **measured,
        input_numel=int(torch.tensor(meta.input_shape).prod()),
        batch=spec.training.batch_size,
        batches_per_epoch=batches_per_epoch(exp),
        epochs=spec.training.epochs,
        label_bytes=torch.empty((), dtype=label_dtype(spec.model.num_classes)).element_size(),
        link=plan.network,
        sources=spec.sources.replicas,
    )
