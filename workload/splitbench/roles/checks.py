"""Every received message is checked here before a role uses it.

Who sent it: the authenticated identity (transport/endpoint.py: the ZAP User-Id of the
CURVE key), or, when the relay (link-0) forwards it, the routing id the relay stamped after
checking it against the source's own key. A message's `sender` field is only compared with
that identity, never believed.

What it may carry, from the spec: the kinds that sender may send, every tensor's dtype and
shape, labels in [0, numClasses), sample counts in (0, partition size], epochs and steps
that move forward within the schedule, the compression budget in force. A message that
fails is a Rejected(reason, text): the role counts it
(splitbench_rejected_messages_total{role,reason}), logs one rate-limited line naming the
sender and the reason, answers ERROR where it can, and goes on.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import time
from pathlib import Path

from ..transport.wire import experiment_id
from ..transport import Kind, Message

RELAY = "link-0"
EVAL_BATCH = 256  # roles/source.py's evaluation batch


class _Dtypes:
    """torch dtypes by name: the link emulator uses this module without importing torch."""

    def __init__(self, *names: str):
        self.names = {f"torch.{n}" for n in names}

    def __contains__(self, dtype) -> bool:
        return str(dtype) in self.names


_FLOATS = _Dtypes("float32", "float16", "bfloat16", "float64")
_INTS = _Dtypes("uint8", "int8", "int16", "int32", "int64")
_TRAIN_SIZES = {"fashion_mnist": 60000, "cifar10": 50000}


class Rejected(ValueError):
    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


def identity_of(routing_id: bytes | None, user: str | None, curve: bool) -> str:
    """The instance a message is from. With CURVE: its key's instance; through the relay, the
    routing id the relay vouched for. Without: the routing id (unauthenticated)."""
    rid = (routing_id or b"").decode("utf-8", "replace")
    if not curve:
        return rid.split(">", 1)[0]
    if not user:
        raise Rejected("auth", "no authenticated key behind this message")
    if user == RELAY:
        return rid.split(">", 1)[0]
    return user


class Rejections:
    """Counting and one rate-limited log line per reason (at most one a second)."""

    def __init__(self, rt, interval_s: float = 1.0):
        self.rt, self.interval = rt, interval_s
        self.last: dict[str, float] = {}
        self.quiet: dict[str, int] = {}
        self.total = 0

    def __call__(self, sender: str, reason: str, text: str) -> None:
        self.total += 1
        self.rt.metrics.rejected.labels(**self.rt.metrics.base, reason=reason).inc()
        now = time.monotonic()
        if now - self.last.get(reason, -1e9) < self.interval:
            self.quiet[reason] = self.quiet.get(reason, 0) + 1
            return
        self.last[reason] = now
        self.rt.log.write(
            "session",
            status="rejected",
            reason=reason,
            sender=sender or "?",
            error=text[:300],
            suppressed=self.quiet.pop(reason, 0),
        )


@functools.lru_cache(maxsize=8)
def _train_size(dataset_name: str, samples_per_source: int | None) -> int:
    if dataset_name in _TRAIN_SIZES:
        return _TRAIN_SIZES[dataset_name]
    return max(2000, (samples_per_source or 500) * 16)  # data/datasets.py's synthetic set


class Limits:
    """What a role expects from the other roles of its experiment, derived from the spec."""

    def __init__(self, experiment):
        spec = experiment.spec
        # what a decoded header carries: the 16-byte experiment id in hex (transport/wire.py)
        self.experiment = experiment_id(experiment.name).hex()
        self.name = experiment.name
        self.spec = spec
        self.sources = spec.sources.replicas
        self.num_classes = spec.model.num_classes
        self.epochs = spec.training.epochs
        self.local_epochs = getattr(spec.paradigm, "local_epochs", 1)
        self.rounds = self.epochs // self.local_epochs
        self.max_batch = max(spec.training.batch_size, EVAL_BATCH)
        self.train_size = _train_size(spec.dataset.name, spec.dataset.samples_per_source)
        self.partition = min(self.train_size, spec.dataset.samples_per_source or self.train_size)
        per_epoch = self.partition
        if spec.training.max_steps_per_epoch:
            per_epoch = min(per_epoch, spec.training.max_steps_per_epoch * spec.training.batch_size)
        self.samples_per_round = per_epoch * self.local_epochs  # n_k of one contribution, at most
        self.steps = self.epochs * max(1, self.partition // spec.training.batch_size)
        self.budget = None
        comp = getattr(spec.paradigm, "compression", None)
        if comp is not None:
            from ..paradigms.compressed_split import BudgetSchedule

            self.budget = BudgetSchedule(comp, spec.training)


def common(limits: Limits, who: str, msg: Message) -> None:
    import torch

    if msg.experiment != limits.experiment:
        raise Rejected(
            "experiment",
            f"message for experiment id {msg.experiment[:64]!r}, this is {limits.name!r} ({limits.experiment})",
        )
    if msg.sender and msg.sender != who:
        raise Rejected("identity", f"{who} claims to be {msg.sender[:64]!r}")
    for name, t in msg.tensors.items():
        if t.dtype in _FLOATS and t.numel() and not bool(torch.isfinite(t).all()):
            raise Rejected("value", f"tensor {name[:32]} has non-finite values")


def _count(msg: Message, name: str, cap: int) -> int:
    t = msg.tensors.get(name)
    if t is None or t.dtype not in _INTS or tuple(t.shape) != (1,):
        raise Rejected("samples", f"{name} must be one integer")
    n = int(t[0])
    if not 0 < n <= cap:
        raise Rejected("samples", f"{name} = {n}, outside 1..{cap}")
    return n


def _labels(limits: Limits, msg: Message) -> int:
    y = msg.tensors.get("y")
    if y is None:
        raise Rejected("shape", "no labels (y)")
    if y.dtype not in _INTS or y.dim() != 1 or not 1 <= len(y) <= limits.max_batch:
        raise Rejected("shape", f"labels must be 1..{limits.max_batch} integers, got {y.dtype} {list(y.shape)}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= limits.num_classes:
        raise Rejected("label", f"label {lo if lo < 0 else hi} outside [0, {limits.num_classes})")
    return len(y)


class SourceStream:
    """Per sender: its epochs and steps must move forward; a replay cannot."""

    def __init__(self):
        self.step: dict[str, int] = {}
        self.epoch: dict[str, int] = {}

    def check(self, limits: Limits, who: str, msg: Message, train: bool) -> None:
        if msg.epoch >= limits.epochs:
            raise Rejected("step", f"epoch {msg.epoch} beyond the schedule's {limits.epochs}")
        if msg.epoch < self.epoch.get(who, 0):
            raise Rejected("step", f"epoch {msg.epoch} after epoch {self.epoch[who]}")
        if train:
            if msg.step > limits.steps:
                raise Rejected("step", f"step {msg.step} beyond the schedule's {limits.steps}")
            if msg.step <= self.step.get(who, -1):
                raise Rejected("step", f"step {msg.step} again or back (last {self.step[who]}): a replay")

    def accept(self, who: str, msg: Message, train: bool) -> None:
        self.epoch[who] = max(self.epoch.get(who, 0), msg.epoch)
        if train:
            self.step[who] = msg.step


def check_server_message(limits: Limits, sources: set[str], stream: SourceStream, who: str, msg: Message) -> None:
    """A message at a server: from one of its sources, HELLO/TRAIN/EVAL/BYE, content as the spec says."""
    import torch

    if who not in sources:
        raise Rejected("sender", f"{who[:64]!r} is not a source of this server")
    if msg.kind not in (Kind.HELLO, Kind.TRAIN, Kind.EVAL, Kind.BYE):
        raise Rejected("kind", f"{msg.kind.name} is not a message a source sends")
    common(limits, who, msg)
    if msg.kind == Kind.HELLO:
        if "samples" in msg.tensors:
            _count(msg, "samples", limits.partition)
        return
    if msg.kind == Kind.BYE:
        return
    train = msg.kind == Kind.TRAIN
    stream.check(limits, who, msg, train)
    allowed = {"act", "y", "idx", "x", "ids", "round_end"} | ({"bn_pass"} if not train else set())
    extra = set(msg.tensors) - allowed
    if extra:
        raise Rejected("shape", f"unexpected tensors {sorted(extra)[:4]}")
    n = _labels(limits, msg) if ("y" in msg.tensors or "ids" not in msg.tensors) else 0
    for name in ("act", "x"):
        t = msg.tensors.get(name)
        if t is None:
            continue
        if t.dim() < 2 or len(t) != n:
            raise Rejected("shape", f"{name} of shape {list(t.shape)[:8]} for {n} labels")
        if name == "act" and t.dtype not in _FLOATS:
            raise Rejected("dtype", f"act is {t.dtype}, not floating point")
        if name == "x" and (
            t.dtype not in (torch.uint8, torch.float32) or tuple(t.shape[1:]) != tuple(_input_shape(limits))
        ):
            raise Rejected("shape", f"x is {t.dtype} {list(t.shape)[:8]}, not (N, {_input_shape(limits)})")
    ids = msg.tensors.get("ids")
    if ids is not None:
        if ids.dtype not in _INTS or ids.dim() != 1 or not 1 <= len(ids) <= limits.max_batch:
            raise Rejected("shape", f"ids must be 1..{limits.max_batch} integers")
        if int(ids.min()) < 0 or int(ids.max()) >= limits.train_size:
            raise Rejected("value", f"sample ids outside 0..{limits.train_size - 1}")
    idx = msg.tensors.get("idx")
    if idx is not None:
        if idx.dtype not in _INTS or idx.dim() != 1:
            raise Rejected("shape", "idx must be integers")
        if limits.budget is not None and len(idx) != limits.budget.budget(msg.epoch):
            raise Rejected(
                "budget",
                f"{len(idx)} channels at epoch {msg.epoch}, the schedule's budget is {limits.budget.budget(msg.epoch)}",
            )
    if "round_end" in msg.tensors and tuple(msg.tensors["round_end"].shape) != (1,):
        raise Rejected("shape", "round_end must be one value")
    bn_pass = msg.tensors.get("bn_pass")  # compressed split's batch-norm recalibration: (pass, passes)
    if bn_pass is not None and (
        bn_pass.dtype not in _INTS or tuple(bn_pass.shape) != (2,) or not 0 <= int(bn_pass[0]) < int(bn_pass[1]) <= 64
    ):
        raise Rejected("shape", "bn_pass must be two integers (pass, passes), 0 <= pass < passes <= 64")


def _input_shape(limits: Limits) -> tuple[int, ...]:
    from ..data import dataset_meta

    return tuple(dataset_meta(limits.spec.dataset).input_shape)


def check_contribution(
    limits: Limits,
    partitions: dict[str, set[str]],
    sizes: dict[str, int],
    who: str,
    msg: Message,
    rounds_open: int,
    max_open: int,
) -> str:
    """A FedAvg contribution at the aggregator; returns its partition."""
    import torch

    names = [n for n in msg.tensors if n.startswith("w_")]
    part = names[0][2:] if len(names) == 1 else None
    if part not in partitions:
        raise Rejected(
            "shape", f"a contribution needs one w_<partition> tensor ({', '.join('w_' + p for p in partitions)}) and n"
        )
    if who not in partitions[part]:
        raise Rejected("sender", f"{who} does not train partition {part}")
    extra = set(msg.tensors) - {f"w_{part}", "n", "power"}
    if extra:
        raise Rejected("shape", f"unexpected tensors {sorted(extra)[:4]}")
    w = msg.tensors[f"w_{part}"]
    if w.dtype != torch.float32 or w.dim() != 1:
        raise Rejected("dtype", f"w_{part} must be a flat float32 vector, got {w.dtype} {list(w.shape)[:4]}")
    if part in sizes and w.numel() != sizes[part]:
        raise Rejected("shape", f"w_{part} has {w.numel()} values, this round's are {sizes[part]}")
    _count(msg, "n", limits.samples_per_round)
    if "power" in msg.tensors:
        p = msg.tensors["power"]
        if p.dtype not in _FLOATS or tuple(p.shape) != (1,) or not math.isfinite(float(p[0])) or float(p[0]) < 0:
            raise Rejected("value", "power must be one finite, non-negative number")
    if not 0 <= msg.epoch < limits.rounds:
        raise Rejected("step", f"round {msg.epoch} outside the schedule's 0..{limits.rounds - 1}")
    if rounds_open >= max_open:
        raise Rejected("busy", f"{rounds_open} rounds already open")
    return part


@functools.lru_cache(maxsize=16)
def _cap(model: str, num_classes: int, input_shape: tuple, batch: int) -> int:
    import torch

    from ..models import build_model

    net = build_model(model, num_classes, input_shape).eval()
    weights = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    largest = math.prod(input_shape)
    with torch.no_grad():
        x = torch.zeros(1, *input_shape)
        for block in net:
            x = block(x)
            largest = max(largest, x.numel())
    # float32 weights, or a batch of float32 activations/inputs; x2 and 1 MiB for headers and margin
    return int(max(weights * 4, batch * largest * 4) * 2) + (1 << 20)


def message_cap(spec, torch_free: bool = False) -> int:
    """MAXMSGSIZE for every socket of this experiment: twice its largest expected message
    (the whole model's weights, or a batch of the widest activation or input), plus 1 MiB.
    torch_free (the link emulator): the model is built by a short-lived child process, so
    this one never holds torch, and the figure is kept in the cache for the next run."""
    from ..data import dataset_meta

    meta = dataset_meta(spec.dataset)
    args = (spec.model.name, spec.model.num_classes, tuple(meta.input_shape), max(spec.training.batch_size, EVAL_BATCH))
    if not torch_free:
        return _cap(*args)
    from ..cache import cache_dir, key_of, write_text_atomic

    models = sorted((Path(__file__).parent.parent / "models").glob("*.py"))
    path = cache_dir() / "message-caps" / f"{args[0]}-{key_of(*args, files=tuple(models))}"
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        pass
    code = (
        "import sys; from splitbench.roles.checks import _cap; m, k, shape, b = sys.argv[1:]; "
        "print(_cap(m, int(k), tuple(int(v) for v in shape.split(',')), int(b)))"
    )
    argv = [args[0], str(args[1]), ",".join(map(str, args[2])), str(args[3])]
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"message cap of {args[0]}: {done.stderr.strip().splitlines()[-1:]}")
    cap = int(done.stdout)
    try:
        write_text_atomic(path, str(cap))
    except OSError:
        pass  # a read-only cache: the next run asks a child again
    return cap
