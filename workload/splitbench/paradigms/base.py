"""What a paradigm is: which roles exist and what each does in one step.

A paradigm gives a SourceWorker (runs on each data source) and a ServerWorker (runs on
the server). The role runtimes own sockets, timing, accounting and logging; workers only
compute and say what crosses the wire.
"""

from __future__ import annotations

import time
from functools import lru_cache
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageMeta
from ..models import build_model
from ..registry import PARADIGMS
from ..spec import Experiment, TrainingSpec
from ..transport import Kind, Message, Traffic

# The source runtime's round trip: send a message, return (reply, t_sent, t_received) in
# wall-clock seconds; raises on an ERROR reply or a silent peer.
Call = Callable[[Message], tuple[Message, float, float]]


@dataclass
class Setup:
    experiment: Experiment
    meta: ImageMeta
    out_dir: Path | None = None  # where a worker may write checkpoints (the run folder)
    instance: str = ""  # the role instance running this worker, e.g. "source-2"
    steps_per_epoch: int | None = None  # a source's batches per epoch (rounds end on them)

    @property
    def spec(self):
        return self.experiment.spec


@dataclass
class StepOutcome:
    loss: float
    correct: int
    samples: int
    phases: dict[str, float] = field(default_factory=dict)  # seconds


@dataclass
class ServerOutcome:
    reply: Message | None  # None: nothing goes back (early exit trains without replies)
    loss: float = float("nan")
    correct: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0


def whole_model(setup: Setup) -> nn.Sequential:
    """The full model, initialized from the experiment's seed: every role that builds it
    starts from identical weights."""
    torch.manual_seed(setup.spec.seed)
    return build_model(setup.spec.model.name, setup.spec.model.num_classes, setup.meta.input_shape)


def make_optimizer(params, training: TrainingSpec) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.SGD(params, lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay)


@lru_cache(maxsize=16)
def _lr_table(lr: float, epochs: int, schedule: str) -> tuple[float, ...]:
    """The lr of each epoch, read off torch's scheduler stepped once per epoch on a
    throwaway optimizer: the lr is then a function of the epoch alone, so sources and
    servers agree on it without talking, and a restarted role picks it up mid-run."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if schedule == "cosine" else None
    table = []
    for _ in range(epochs):
        table.append(opt.param_groups[0]["lr"])
        opt.step()  # (no gradients: changes nothing; torch expects it before the scheduler's step)
        if sched is not None:
            sched.step()
    return tuple(table)


def lr_at(training: TrainingSpec, epoch: int) -> float:
    """The lr in force during `epoch` under training.schedule (the last epoch's past the end)."""
    table = _lr_table(training.lr, training.epochs, training.schedule)
    return table[min(max(epoch, 0), len(table) - 1)]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def follow_schedule(opt: torch.optim.Optimizer, training: TrainingSpec, epoch: int) -> None:
    """Put the optimizer at the epoch's lr: every role that trains calls it before a step."""
    set_lr(opt, lr_at(training, epoch))


def label_dtype(num_classes: int) -> torch.dtype:
    """The narrowest integer that holds every label: labels are bytes on the wire too."""
    return torch.uint8 if num_classes <= 256 else torch.int16 if num_classes <= 32767 else torch.int32


def correct_count(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


def train_on_server(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor | tuple, y: torch.Tensor, reply: Message | None = None
) -> ServerOutcome:
    """One timed server step: forward and loss, then backward and optimizer step.
    x is the model's input, or a tuple of its inputs."""
    t0 = time.perf_counter()
    out = model(*x) if isinstance(x, tuple) else model(x)
    loss = F.cross_entropy(out, y)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    t2 = time.perf_counter()
    return ServerOutcome(
        reply or Message(Kind.TRAIN_REPLY), float(loss.detach()), correct_count(out, y), t1 - t0, t2 - t1
    )


def evaluation_reply(model: nn.Module, x: torch.Tensor | tuple, y: torch.Tensor) -> ServerOutcome:
    """Summed loss and correct count of a held-out batch, in eval mode, as an EVAL_REPLY."""
    model.eval()
    with torch.no_grad():
        out = model(*x) if isinstance(x, tuple) else model(x)
        result = torch.tensor(
            [float(F.cross_entropy(out, y, reduction="sum")), correct_count(out, y)], dtype=torch.float64
        )
    model.train()
    return ServerOutcome(Message(Kind.EVAL_REPLY).add("result", result, Traffic.EVAL))


def ask_evaluation(call: Call, msg: Message) -> tuple[float, int]:
    """Send an EVAL message and read the (summed loss, correct) that evaluation_reply wrote."""
    reply, _, _ = call(msg)
    loss_sum, correct = reply.tensors["result"].tolist()
    return loss_sum, int(correct)


class SourceWorker(ABC):
    @abstractmethod
    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, ids: torch.Tensor | None = None
    ) -> StepOutcome:
        """x: uint8 images as captured; y: int64 labels; ids: the samples' dataset indices."""

    @abstractmethod
    def eval_batch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> tuple[float, int]:
        """(summed loss, correct) on held-out samples."""

    def eval_local(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int] | None:
        """(summed loss, correct) of an exit the source holds itself, or None if it has none."""
        return None

    def lr(self) -> float | None:
        """The lr of this worker's optimizer now (recorded with each step); None where the
        source trains nothing itself."""
        opt = getattr(self, "opt", None)
        return None if opt is None else opt.param_groups[0]["lr"]

    def tags(self, epoch: int) -> dict:
        """Extra columns for this worker's step and eval records (e.g. the budget in force)."""
        return {}

    def after_epoch(self, epoch: int) -> dict[str, float] | None:
        """Work between epochs that crosses the wire (a federated round's weight exchange):
        its phases in seconds, recorded as a `round` event, or None when there was none."""
        return None

    def finish(self) -> None:
        """Called once after the last epoch (e.g. to save the last model)."""


class ServerWorker(ABC):
    @abstractmethod
    def train(self, msg: Message) -> ServerOutcome: ...

    @abstractmethod
    def evaluate(self, msg: Message) -> ServerOutcome: ...

    def after_train(self, msg: Message) -> dict[str, float] | None:
        """Like SourceWorker.after_epoch, once a training request has been answered."""
        return None

    def tags(self, epoch: int) -> dict:
        """Extra columns for this worker's round records."""
        return {}

    def finish(self) -> None:
        """Called once after every source said goodbye."""


class Paradigm(ABC):
    name: ClassVar[str]  # its key in registry.PARADIGMS, which says which roles it needs
    # "all": every source evaluates its own model; "first": one shared model, source 0 evaluates.
    evaluators: ClassVar[str] = "all"
    # model partitions averaged by an aggregator role after every round (none: no aggregator)
    aggregates: ClassVar[tuple[str, ...]] = ()

    def __init__(self, setup: Setup):
        self.setup = setup

    def edge_blocks(self) -> int | None:
        """How many model blocks the source runs (None: none)."""
        return None

    @property
    def uses_server(self) -> bool:
        return PARADIGMS[self.name].uses_server

    def servers(self) -> int:
        """How many server processes; each serves sources / servers of the sources."""
        return self.setup.spec.server_count if self.uses_server else 0

    @abstractmethod
    def source(
        self, call: Call, send: Callable[[Message], None] | None = None, aggregate: Call | None = None
    ) -> SourceWorker:
        """`call` sends and waits for the reply; `send` only sends (for paradigms that never
        wait); `aggregate` is a call to the aggregator (paradigms that average weights)."""

    @abstractmethod
    def server(self, aggregate: Call | None = None) -> ServerWorker: ...
