"""Checkpoints: what a killed role needs to resume (issue 15).

One file per role, <run>/checkpoints/<instance>.pt, holding only tensors, numbers, strings,
lists and dicts: a worker's modules, optimizers and schedulers (every such attribute it
has), its plain counters, the role's own counters and cursor, and the RNG states (torch,
numpy, python). It is written to a temporary file and renamed over the previous one (a crash
mid-write leaves the last checkpoint whole) and read back with torch.load(weights_only=True),
which refuses anything but tensors and plain containers: nothing in a run folder, which a
peer's pod could share, is ever unpickled as code.

Writing is timed and recorded (a `checkpoint` event with checkpoint_s and bytes) outside any
step's duration: it is overhead the user should see, not training time.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHECKPOINTS_DIR = "checkpoints"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; str() is one line naming the file and why."""


def path_for(run_dir: Path, instance: str) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"{instance}.pt"


def _is_scheduler(v) -> bool:
    return isinstance(v, torch.optim.lr_scheduler.LRScheduler)


def worker_state(worker) -> dict:
    """Every module, optimizer and scheduler a worker holds as an attribute, and its plain
    counters (fedavg's samples since the last round): what its next step depends on."""
    out: dict[str, dict] = {"modules": {}, "optimizers": {}, "schedulers": {}, "numbers": {}}
    for name, v in vars(worker).items():
        if isinstance(v, nn.Module):
            out["modules"][name] = v.state_dict()
        elif isinstance(v, torch.optim.Optimizer):
            out["optimizers"][name] = v.state_dict()
        elif _is_scheduler(v):
            out["schedulers"][name] = v.state_dict()
        elif type(v) in (int, float, bool):
            out["numbers"][name] = v
    return out


def load_worker_state(worker, state: dict) -> None:
    for group in ("modules", "optimizers", "schedulers"):
        for name, sd in state.get(group, {}).items():
            target = getattr(worker, name, None)
            if target is None:
                raise CheckpointError(f"the checkpoint has {group[:-1]} {name!r}, this worker has none")
            target.load_state_dict(sd)
    for name, v in state.get("numbers", {}).items():
        setattr(worker, name, v)


def rng_state() -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss_next},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(w) for w in p["words"].tolist()), p["gauss"]))


def save(path: Path, state: dict) -> int:
    """Write atomically (temporary file, fsync, rename); returns the file's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def load(path: Path, experiment: str, instance: str) -> dict | None:
    """The checkpoint at path, or None when there is none; CheckpointError when it is not a
    weights-only checkpoint of this experiment's role."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever the unpickler says, the answer is one line
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: not a weights-only checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a splitbench checkpoint (format {FORMAT})")
    if (state.get("experiment"), state.get("instance")) != (experiment, instance):
        raise CheckpointError(
            f"{path}: written by {state.get('instance')!r} of {state.get('experiment')!r}, "
            f"not {instance!r} of {experiment!r}"
        )
    return state


class Checkpointer:
    """One role's checkpoints: when they are due, writing them (timed, recorded), reading
    the last one back at start-up."""

    def __init__(self, rt, every: int | str):
        self.rt, self.every = rt, every
        self.path = path_for(rt.run_dir, rt.instance)

    def due(self, count: int, epoch_ended: bool) -> bool:
        """count: steps (or rounds) done; epoch_ended: an epoch (or round) has just ended."""
        if self.every == "none":
            return False
        if self.every == "epoch":
            return epoch_ended
        return count % self.every == 0

    def save(self, state: dict, **where) -> None:
        t0 = time.perf_counter()
        state = {
            "format": FORMAT,
            "experiment": self.rt.experiment.name,
            "instance": self.rt.instance,
            "rng": rng_state(),
            **state,
        }
        nbytes = save(self.path, state)
        seconds = time.perf_counter() - t0
        self.rt.metrics.checkpoint_seconds.labels(**self.rt.metrics.base).observe(seconds)
        self.rt.log.write("checkpoint", checkpoint_s=seconds, bytes=nbytes, **where)

    def restore(self, worker, state: dict) -> None:
        """Put a checkpoint's worker state back; one that does not fit this role's model
        (another spec wrote it) ends the role with one line."""
        from .roles.runtime import RoleFailed  # late: roles import this module

        try:
            load_worker_state(worker, state["worker"])
        except (CheckpointError, RuntimeError, KeyError, ValueError) as err:
            raise RoleFailed(
                f"{self.path}: does not fit {self.rt.instance}'s model: {str(err).splitlines()[0]}", code=2
            ) from None

    def load(self) -> dict | None:
        """The last checkpoint (its RNG states applied), or None. A file that is not a
        weights-only checkpoint ends the role with one line (RoleFailed, code 2)."""
        from .roles.runtime import RoleFailed  # late: roles import this module

        t0 = time.perf_counter()
        try:
            state = load(self.path, self.rt.experiment.name, self.rt.instance)
        except CheckpointError as err:
            raise RoleFailed(str(err), code=2) from None
        if state is not None:
            set_rng_state(state["rng"])
            self.rt.log.write("session", status="resumed", checkpoint=str(self.path), load_s=time.perf_counter() - t0)
        return state
