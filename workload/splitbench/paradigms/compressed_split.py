"""Compressed split learning (Mudvari et al., "Adaptive compression-aware split learning"):
split learning with the compression-decompression module between the parts.

The module (compression.module): `encoder_decoder` is the paper's (sec. 3.1, as VCCprune
builds it: convolutions around the filter); `bare_mask` is the filter alone, kept as a
labelled ablation (models/compression.py).

Per step the source runs its blocks and the Compressor, sends only the B channels the
filter ranks highest with their indices (B/phi of the activation, plus the index), and gets
back the gradient of those channels alone. The server puts them back in place, decompresses
and trains the rest.

totalLoss = Loss + epsilon * pruneLoss (equation 2). The task loss is computed on the server
and pruneLoss depends on f alone, so the source adds epsilon * pruneLoss's gradient to its
filter locally: the same gradient as the paper's server-side totalLoss (Loss does not
depend on pruneLoss), without sending f upstream every step.

Batch-norm recalibration (compression.bnRecalibrationBatches = N > 0): before each
evaluation every batch norm on both sides of the cut recomputes its running statistics from
the source's last N training batches, as torch.optim.swa_utils.update_bn does (statistics
reset, cumulative average, train-mode forward passes without gradients, weights untouched).
The source sends those passes to the server as EVAL messages marked `bn_pass` (eval
traffic, inside the evaluation's time). Why: the module's batch norms use VCCprune's
momentum 0.03, which in a run of a few hundred steps still holds much of its initial
running variance, so eval-mode accuracy reads chance while training accuracy is 1.0; with
CIFAR-10's thousands of steps per epoch VCCprune never meets this.

Schedules: fixed (one budget), deprune (algorithms 1-2: ascending budgets, selectLr raises
the lr by gamma for l_k epochs after each change) and prune (algorithm 3: from the full
budget down, resetprune between budgets). Each budget stage ends with a checkpoint of both
parts: one model per budget, in <run>/models/.
"""

from __future__ import annotations

import time
from collections import deque

import torch
from torch import nn

from ..atomic import atomic_path
from ..models import split
from ..models.compression import Compressor, Decompressor, encoded_hw, prune_loss
from ..spec import CompressionSpec, TrainingSpec
from ..transport import Kind, Message, Traffic
from .base import (
    Paradigm,
    ServerOutcome,
    ServerWorker,
    Setup,
    SourceWorker,
    StepOutcome,
    ask_evaluation,
    evaluation_reply,
    label_dtype,
    lr_at,
    make_optimizer,
    set_lr,
    train_on_server,
    whole_model,
)


class BudgetSchedule:
    """Which budget and learning rate are in force at an epoch; both sides compute it alike."""

    def __init__(self, comp: CompressionSpec, training: TrainingSpec):
        self.comp, self.training = comp, training
        self.starts = [sum(comp.epochs[:i]) for i in range(len(comp.epochs))]

    @property
    def total_epochs(self) -> int:
        return sum(self.comp.epochs)

    def stage(self, epoch: int) -> int:
        return max(i for i, s in enumerate(self.starts) if s <= epoch)

    def budget(self, epoch: int) -> int:
        return self.comp.budgets[self.stage(epoch)]

    def lr(self, epoch: int) -> float:
        """selectLr: after a budget change, the scheduled lr x gamma for the first l_k epochs."""
        stage = self.stage(epoch)
        lr = lr_at(self.training, epoch)
        if stage > 0 and epoch - self.starts[stage] < self.comp.lk:
            return lr * self.comp.gamma
        return lr


def cut_shape(setup: Setup, edge: nn.Module) -> tuple[int, int, int]:
    was = edge.training
    edge.eval()
    with torch.no_grad():
        shape = tuple(edge(torch.zeros(1, *setup.meta.input_shape)).shape[1:])
    edge.train(was)
    if len(shape) != 3:
        raise ValueError(
            f"compressed_split needs feature maps (C, H, W) at the cut, got shape {list(shape)}: "
            "cut before the classifier"
        )
    return shape  # type: ignore[return-value]


def batch_norms(*modules: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _Recalibration:
    """update_bn's bookkeeping for one side of the cut: reset the statistics and switch to a
    cumulative average (momentum None) at the first pass, restore the momenta after the last."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]):
        self.layers, self.momenta = layers, None

    def begin(self) -> None:
        self.momenta = [bn.momentum for bn in self.layers]
        for bn in self.layers:
            bn.reset_running_stats()
            bn.momentum = None

    def end(self) -> None:
        for bn, m in zip(self.layers, self.momenta or []):
            bn.momentum = m
        self.momenta = None


class _Stages:
    """Notices budget changes, and checkpoints each finished stage's model."""

    def __init__(self, setup: Setup, schedule: BudgetSchedule, name: str, modules: dict[str, nn.Module]):
        self.setup, self.schedule, self.name, self.modules = setup, schedule, name, modules
        self.current: int | None = None

    def enter(self, epoch: int) -> bool:
        """True when `epoch` starts a new budget stage (after the first)."""
        stage = self.schedule.stage(epoch)
        changed = self.current is not None and stage != self.current
        if changed:
            self.save(self.current)
        self.current = stage
        return changed

    def save(self, stage: int | None) -> None:
        if stage is None or self.setup.out_dir is None:
            return
        folder = self.setup.out_dir / "models"
        folder.mkdir(parents=True, exist_ok=True)
        budget = self.schedule.comp.budgets[stage]
        with atomic_path(folder / f"{self.name}-budget{budget}.pt") as tmp:
            torch.save({k: m.state_dict() for k, m in self.modules.items()}, tmp)


class CompressedSplitSource(SourceWorker):
    def __init__(self, paradigm: "CompressedSplit", call):
        setup = paradigm.setup
        self.p, self.call, self.setup = paradigm, call, setup
        self.comp_spec: CompressionSpec = setup.spec.paradigm.compression
        self.edge, _ = split(whole_model(setup), paradigm.edge_blocks())
        channels, _, _ = cut_shape(setup, self.edge)
        if max(self.comp_spec.budgets) > channels:
            raise ValueError(f"budget {max(self.comp_spec.budgets)} exceeds the {channels} channels at the cut")
        self.compressor = Compressor(channels, self.comp_spec.resolution, self.comp_spec.module)
        self.opt = make_optimizer([*self.edge.parameters(), *self.compressor.parameters()], setup.spec.training)
        self.schedule = BudgetSchedule(self.comp_spec, setup.spec.training)
        self.stages = _Stages(
            setup, self.schedule, setup.instance or "source", {"edge": self.edge, "compressor": self.compressor}
        )
        self.ydtype = label_dtype(setup.meta.num_classes)
        self.resets = 0
        # the last training batches (inputs as captured, labels), for batch-norm recalibration
        self.recent: deque = deque(maxlen=self.comp_spec.bn_recalibration_batches or None)
        self.recalibrated: int | None = None  # the epoch whose evaluation recalibrated last

    def _enter(self, epoch: int) -> None:
        if self.stages.enter(epoch) and self.comp_spec.schedule == "prune":
            self.resets += self.compressor.reset(torch.Generator().manual_seed(self.setup.spec.seed + epoch))
        set_lr(self.opt, self.schedule.lr(epoch))

    def train_step(self, x, y, epoch, step, ids=None):
        self._enter(epoch)
        budget = self.schedule.budget(epoch)
        t0 = time.perf_counter()
        lc, f = self.compressor(self.edge(self.setup.meta.normalize(x)))
        idx = self.compressor.keep(f, budget)
        sent = lc.index_select(1, idx)
        t1 = time.perf_counter()
        msg = Message(Kind.TRAIN, epoch=epoch, step=step)
        msg.add("act", sent.detach(), Traffic.ACTIVATION).add("idx", idx.to(torch.int16), Traffic.CONTROL)
        msg.add("y", y.to(self.ydtype), Traffic.LABEL)
        reply, _, _ = self.call(msg)
        grad = reply.tensors["grad"]
        if grad.shape != sent.shape:
            raise ValueError(f"server sent a gradient of shape {list(grad.shape)} for {list(sent.shape)}")
        t2 = time.perf_counter()
        c = self.comp_spec
        penalty = c.epsilon * prune_loss(f, budget, c.delta, c.lam, squared=c.regularizer == "sum_of_squares")
        self.opt.zero_grad(set_to_none=True)
        torch.autograd.backward([sent, penalty], [grad, None])
        self.opt.step()
        t3 = time.perf_counter()
        if self.comp_spec.bn_recalibration_batches:
            self.recent.append((x.clone(), y.clone()))
        return StepOutcome(float("nan"), 0, len(y), {"edge_forward": t1 - t0, "edge_backward": t3 - t2})

    def recalibrate(self, epoch: int) -> int:
        """update_bn across the cut on the last training batches: the source's batch norms
        here, the server's through `bn_pass` EVAL messages (pass i of n). Returns n."""
        passes = list(self.recent)
        if not passes:
            return 0
        local = _Recalibration(batch_norms(self.edge, self.compressor))
        local.begin()
        budget = self.schedule.budget(epoch)
        try:
            with torch.no_grad():  # train mode: batch norms update their statistics, nothing else changes
                for i, (x, y) in enumerate(passes):
                    lc, f = self.compressor(self.edge(self.setup.meta.normalize(x)))
                    idx = self.compressor.keep(f, budget)
                    msg = Message(Kind.EVAL, epoch=epoch).add("act", lc.index_select(1, idx), Traffic.EVAL)
                    msg.add("idx", idx.to(torch.int16), Traffic.EVAL).add("y", y.to(self.ydtype), Traffic.EVAL)
                    msg.add("bn_pass", torch.tensor([i, len(passes)], dtype=torch.int32), Traffic.EVAL)
                    self.call(msg)
        finally:
            local.end()
        return len(passes)

    def eval_batch(self, x, y, epoch):
        self._enter(epoch)
        if self.comp_spec.bn_recalibration_batches and self.recalibrated != epoch:
            self.recalibrate(epoch)  # once per evaluation (its first batch)
            self.recalibrated = epoch
        self.edge.eval()
        self.compressor.eval()
        with torch.no_grad():
            lc, f = self.compressor(self.edge(self.setup.meta.normalize(x)))
            idx = self.compressor.keep(f, self.schedule.budget(epoch))
            sent = lc.index_select(1, idx)
        self.edge.train()
        self.compressor.train()
        msg = (
            Message(Kind.EVAL, epoch=epoch).add("act", sent, Traffic.EVAL).add("idx", idx.to(torch.int16), Traffic.EVAL)
        )
        msg.add("y", y.to(self.ydtype), Traffic.EVAL)
        return ask_evaluation(self.call, msg)

    def tags(self, epoch):
        return {
            "budget": self.schedule.budget(epoch),
            "stage": self.schedule.stage(epoch),
            "kept_soft": float(self.compressor.filter.detach().sum()),
            "filter_resets": self.resets,
        }

    def finish(self):
        self.stages.save(self.stages.current)


class _ServerSide(nn.Module):
    """Decompression then the server's blocks, as one module of (kept channels, indices)."""

    def __init__(self, decompressor: Decompressor, part: nn.Module, out_hw: tuple[int, int]):
        super().__init__()
        self.decompressor, self.part, self.out_hw = decompressor, part, out_hw

    def forward(self, kept: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.part(self.decompressor(kept, idx, self.out_hw))


class CompressedSplitServer(ServerWorker):
    def __init__(self, paradigm: "CompressedSplit"):
        setup = paradigm.setup
        comp: CompressionSpec = setup.spec.paradigm.compression
        whole = whole_model(setup)
        edge, part = split(whole, paradigm.edge_blocks())
        channels, h, w = cut_shape(setup, edge)
        r = (comp.resolution or 1) if comp.module == "encoder_decoder" else None
        self.expected_hw = encoded_hw(h, w, r)
        self.model = _ServerSide(Decompressor(channels, r, comp.module), part, (h, w))
        self.opt = make_optimizer(self.model.parameters(), setup.spec.training)
        self.schedule = BudgetSchedule(comp, setup.spec.training)
        self.stages = _Stages(setup, self.schedule, "server", {"server": self.model})
        self.channels = channels
        self.bn = _Recalibration(batch_norms(self.model))

    def _inputs(self, msg: Message) -> tuple[torch.Tensor, torch.Tensor]:
        kept, idx = msg.tensors["act"], msg.tensors["idx"].long()
        if kept.dim() != 4 or tuple(kept.shape[2:]) != self.expected_hw or kept.shape[1] != idx.numel():
            raise ValueError(
                f"expected (N, {idx.numel()}, {self.expected_hw[0]}, {self.expected_hw[1]}) channels "
                f"for {idx.numel()} indices, got {list(kept.shape)}"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.channels):
            raise ValueError(f"channel indices must lie in 0..{self.channels - 1}")
        return kept, idx

    def train(self, msg):
        self.stages.enter(msg.epoch)
        set_lr(self.opt, self.schedule.lr(msg.epoch))
        kept, idx = self._inputs(msg)
        kept.requires_grad_()
        reply = Message(Kind.TRAIN_REPLY)
        outcome = train_on_server(self.model, self.opt, (kept, idx), msg.tensors["y"].long(), reply)
        reply.add("grad", kept.grad, Traffic.GRADIENT)  # only the channels that came
        return outcome

    def evaluate(self, msg):
        if "bn_pass" in msg.tensors:
            return self._bn_pass(msg)
        return evaluation_reply(self.model, self._inputs(msg), msg.tensors["y"].long())

    def _bn_pass(self, msg: Message) -> ServerOutcome:
        """Pass i of n of the source's batch-norm recalibration: statistics reset at the first,
        a train-mode forward without gradients, momenta restored after the last."""
        bn_pass = msg.tensors["bn_pass"]
        if bn_pass.numel() != 2:
            raise ValueError(f"bn_pass must be (pass, passes), got {list(bn_pass.shape)}")
        i, n = (int(v) for v in bn_pass.tolist())
        if not 0 <= i < n:
            raise ValueError(f"bn_pass {i} of {n}")
        kept, idx = self._inputs(msg)
        if i == 0 or self.bn.momenta is None:
            self.bn.begin()
        with torch.no_grad():
            self.model(kept, idx)
        if i == n - 1:
            self.bn.end()
        result = torch.zeros(2, dtype=torch.float64)  # nothing is scored: the reply only paces the source
        return ServerOutcome(Message(Kind.EVAL_REPLY).add("result", result, Traffic.EVAL))

    def finish(self):
        self.stages.save(self.stages.current)


class CompressedSplit(Paradigm):
    name = "compressed_split"

    def edge_blocks(self) -> int:
        return self.setup.spec.paradigm.split_after

    def source(self, call, send=None, aggregate=None):
        return CompressedSplitSource(self, call)

    def server(self, aggregate=None):
        return CompressedSplitServer(self)
