"""Runtime models of one epoch for each candidate cut, and the choice of the cut.

The hierarchical-training equations are [ours] (the paper's were not available): they
follow ../shared/papers/hierarchical-training-early-exit-method.md section 3, whose symbols
they use. Per-block times are measured here (planning/timing.py): edge times on one thread,
scaled by the edge's CPU quota; cloud times with all threads. A shared medium (Wi-Fi) is
divided among the sources, and so is the one cloud server: each source's batch cycle is
at least the cloud's work for every source's batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..link.profiles import LinkConfig

BYTES = 4  # float32 features and gradients
HEADER = 140  # bytes of header and framing per message, about (transport/wire.py)


@dataclass(frozen=True)
class Inputs:
    edge_fwd: list[float]  # per block, per batch, on the edge device
    edge_bwd: list[float]
    cloud_fwd: list[float]  # per block, per batch, on the cloud
    cloud_bwd: list[float]
    out_numel: list[int]  # per block, per sample
    params: list[int]  # per block
    head_fwd: list[float]  # early-exit head at each cut, on the edge
    head_bwd: list[float]
    head_params: list[int]
    input_numel: int
    batch: int
    batches_per_epoch: int
    epochs: int
    label_bytes: int
    link: LinkConfig
    sources: int


@dataclass(frozen=True)
class CutPrediction:
    cut: int
    feature_bytes: int  # per sample
    edge_params: int
    edge_memory_bytes: int
    hierarchical_s: float  # per epoch, phases of a batch in sequence (Fig. 1 literally)
    hierarchical_pipelined_s: float
    split_s: float  # per epoch, standard split learning


def _up_s(inputs: Inputs, nbytes: float) -> float:
    """Seconds to upload one batch of nbytes, with one-way delay; a shared medium is
    divided among the sources (they all upload at once)."""
    rate = inputs.link.up.rate_bps
    share = inputs.sources if inputs.link.medium == "shared" else 1
    return (8 * nbytes * share / rate if rate else 0.0) + inputs.link.up.delay_s


def _down_s(inputs: Inputs, nbytes: float) -> float:
    rate = inputs.link.down.rate_bps
    share = inputs.sources if inputs.link.medium == "shared" else 1
    return (8 * nbytes * share / rate if rate else 0.0) + inputs.link.down.delay_s


def edge_memory(inputs: Inputs, cut: int, optimizer_copies: int = 3) -> int:
    """Weights + gradients + optimizer state of blocks 1..cut and the head, plus the
    activations kept for backward and the send buffer, at the batch size."""
    params = sum(inputs.params[:cut]) + inputs.head_params[cut - 1]
    activations = sum(inputs.out_numel[:cut]) * inputs.batch * BYTES
    return params * BYTES * optimizer_copies + activations + inputs.out_numel[cut - 1] * inputs.batch * BYTES


def predict(inputs: Inputs, cut: int) -> CutPrediction:
    i = cut
    nb = inputs.batches_per_epoch
    feat = inputs.out_numel[i - 1] * BYTES
    d_s = inputs.batch * (feat + inputs.label_bytes) + HEADER
    e_f = sum(inputs.edge_fwd[:i]) + inputs.head_fwd[i - 1]
    e_b = sum(inputs.edge_bwd[:i]) + inputs.head_bwd[i - 1]
    c_f, c_b = sum(inputs.cloud_fwd[i:]), sum(inputs.cloud_bwd[i:])
    u = _up_s(inputs, d_s)
    cloud_share = inputs.sources * (c_f + c_b)  # the server trains every source's batch
    hier = max(e_f + max(e_b, u + c_f) + c_b, cloud_share)
    pipe = max(e_f + e_b, u, cloud_share)
    sl = max(
        sum(inputs.edge_fwd[:i])
        + u
        + c_f
        + c_b
        + _down_s(inputs, inputs.batch * feat + HEADER)
        + sum(inputs.edge_bwd[:i]),
        cloud_share,
    )
    return CutPrediction(
        cut,
        feat,
        sum(inputs.params[:i]) + inputs.head_params[i - 1],
        edge_memory(inputs, cut),
        nb * hier,
        nb * pipe + hier,
        nb * sl,
    )


def full_cloud_s(inputs: Inputs, input_bytes_per_value: int, resend_every_epoch: bool) -> float:
    """Per epoch: raw inputs up (every epoch, or once amortized over the epochs) and the
    whole model trained on the cloud."""
    d_x = inputs.batch * (inputs.input_numel * input_bytes_per_value + inputs.label_bytes) + HEADER
    upload = _up_s(inputs, d_x)
    if not resend_every_epoch:
        upload /= inputs.epochs
    compute = sum(inputs.cloud_fwd) + sum(inputs.cloud_bwd)
    return inputs.batches_per_epoch * max(upload + compute, inputs.sources * compute)


def choose(inputs: Inputs, memory_budget: int | None) -> tuple[list[CutPrediction], CutPrediction | None]:
    """Predictions for every cut that leaves a block to the cloud, and the fastest
    (pipelined) one that fits the edge's memory."""
    rows = [predict(inputs, c) for c in range(1, len(inputs.edge_fwd))]
    fits = [r for r in rows if memory_budget is None or r.edge_memory_bytes <= memory_budget]
    best = min(fits, key=lambda r: r.hierarchical_pipelined_s) if fits else None
    return rows, best


def memory_bytes(quantity: str | None) -> int | None:
    """'1Gi' -> 1073741824; None stays None (Kubernetes' own parser: spec.memory_bytes)."""
    from ..spec import memory_bytes as parse

    return parse(quantity)
