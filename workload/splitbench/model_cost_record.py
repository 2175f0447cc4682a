"""A run's model cost, computed when the run is planned and recorded beside its spec
(model_cost.json), so that the report reads it and never builds a model.

What it holds: the model's name, classes and input shape, the counting convention, per block
the parameters, forward FLOPs per sample and the activation leaving it (models/cost.py:
profile_model), the source's share at the spec's cut, and the runtime model's predicted time
per epoch (planning/epoch_time.py, block times measured here when the run is planned).

Writing needs torch (imported inside the functions); reading does not: the report imports
only `read_model_cost` and `MISSING_NOTE`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import write_atomic

if TYPE_CHECKING:
    from .spec import Experiment

FILE = "model_cost.json"
VERSION = 1
CONVENTION = (
    "params: trainable and frozen parameters per block; flops: forward FLOPs per sample counted by "
    "torch.utils.flop_counter.FlopCounterMode (a multiply-add counts 2); out_bytes: float32 activation "
    "bytes per sample leaving the block"
)
MISSING_NOTE = "model cost not recorded: rerun with this version"
# paradigms the runtime model covers, and which of its figures each is compared with
MODELLED = {"split": "split learning", "early_exit": "hierarchical, pipelined", "full_offload": "full cloud"}


def _predicted(exp: Experiment) -> dict:
    """The runtime model's time per epoch for this run (block times measured now)."""
    from .planning.epoch_time import full_cloud_s, predict
    from .planning.inputs import build_inputs

    p = exp.spec.paradigm
    if p.name not in MODELLED:
        return {
            "model_of": None,
            "epoch_s": None,
            "note": "the runtime model covers split, early exit and full offload only",
        }
    try:
        inputs = build_inputs(exp)
    except Exception as err:  # the run goes on; the report says why there is no prediction
        return {
            "model_of": MODELLED[p.name] + " [ours]",
            "epoch_s": None,
            "note": f"not predicted: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
        }
    if p.name == "split":
        s = predict(inputs, p.split_after).split_s
    elif p.name == "early_exit":
        s = predict(inputs, p.split_after).hierarchical_pipelined_s
    else:
        s = full_cloud_s(inputs, 1 if p.input_encoding == "uint8" else 4, not p.cache_inputs)
    return {
        "model_of": MODELLED[p.name] + " [ours]",
        "epoch_s": float(s),
        "block_times": "measured when the run was planned, on the machine that planned it",
    }


def model_blocks(name: str, num_classes: int, input_shape: tuple[int, ...]) -> dict:
    """A model's per-block cost as JSON values (also the report's reference models,
    report/reference_models.json)."""
    from .models import build_model
    from .models.cost import as_dicts, profile_model

    shape = tuple(input_shape)
    blocks = profile_model(build_model(name, num_classes, shape), shape)
    return {
        "model": name,
        "num_classes": num_classes,
        "input_shape": list(shape),
        "convention": CONVENTION,
        "blocks": [{**b, "out_shape": list(b["out_shape"])} for b in as_dicts(blocks)],
    }


def model_cost(exp: Experiment) -> dict:
    """Everything the report needs from the run's model, as plain JSON values."""
    from .data import dataset_meta

    spec = exp.spec
    doc = model_blocks(spec.model.name, spec.model.num_classes, tuple(dataset_meta(spec.dataset).input_shape))
    split_after = getattr(spec.paradigm, "split_after", None)
    kept = doc["blocks"][:split_after] if split_after else []
    edge_params, edge_flops = sum(b["params"] for b in kept), sum(b["flops"] for b in kept)
    return {
        "version": VERSION,
        "experiment": exp.name,
        **doc,
        "split_after": split_after,
        "edge_params": int(edge_params),
        "edge_flops": int(edge_flops),
        "predicted": _predicted(exp),
    }


def write_model_cost(exp: Experiment, run_dir: Path) -> Path:
    """model_cost.json in the run folder (atomically); called by every executor beside spec.yaml."""
    path = Path(run_dir) / FILE
    write_atomic(path, json.dumps(model_cost(exp), indent=1, allow_nan=False) + "\n")
    return path


def read_model_cost(run_dir: Path) -> dict | None:
    """The run's recorded model cost, or None for a folder without one (an older record) or
    with an unreadable one."""
    try:
        doc = json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("version") == VERSION else None


def predicted_epoch_s(cost: dict | None) -> float:
    pred = (cost or {}).get("predicted") or {}
    s = pred.get("epoch_s")
    return float(s) if s is not None else math.nan


# A suite's model-definition claims (parameters, operations per sample at a stated input size)
# name models that no run may train: `splitbench bench` computes their figures when it plans the
# suite and records them in the suite's runs folder, so the report's claims table reads a file.
FIGURES_FILE = "model_figures.json"
FIGURES_MISSING = "model figure not recorded: run `splitbench bench` on the suite (it records them when it plans)"


def figure_key(model: str, input_size: int | None, metric: str) -> str:
    return f"{model}@{input_size or 224}:{metric}"


def model_figures(claims) -> dict[str, float]:
    """The figure of each `model_*` claim: parameters, or operations per sample at the claim's
    input size under its counting convention (models/efficientnet.py: operation_counts)."""
    from .models import build_model
    from .models.efficientnet import operation_counts

    figures: dict[str, float] = {}
    for c in claims:
        if not c.metric.startswith("model_"):
            continue
        size = c.input_size or 224
        model = build_model(c.model, 1000, (3, size, size))
        if c.metric == "model_params":
            value = sum(p.numel() for p in model.parameters())
        else:
            value = operation_counts(model, size)["mult_adds" if c.metric == "model_mult_adds" else "with_elementwise"]
        figures[figure_key(c.model, size, c.metric)] = float(value)
    return figures


def write_model_figures(claims, folder: Path) -> None:
    """Record the claims' model figures in `folder` (nothing when the suite has none)."""
    figures = model_figures(claims or [])
    if figures:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(folder) / FIGURES_FILE, json.dumps({"version": VERSION, "figures": figures}, indent=1))


def read_model_figures(folders) -> dict[str, float]:
    """The recorded model figures found in any of `folders` (a suite's runs folder); {} if none."""
    figures: dict[str, float] = {}
    for folder in folders:
        try:
            figures.update(json.loads((Path(folder) / FIGURES_FILE).read_text())["figures"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return figures
