"""Live Prometheus metrics of one role. Names start with splitbench_ and end with their unit
(_seconds, _bytes, _ratio; counters are exposed with _total); every series carries experiment,
role and role_instance labels, which Grafana's variables select on. The label is role_instance,
not instance: Prometheus owns `instance` (the scrape target), so the PodMonitor needs no
honorLabels and a pod cannot overwrite another pod's series. The process collector adds the
standard process_* series (CPU seconds, resident memory, open files); dashboards join them to
a role through splitbench_role_info on the target's instance label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)

from .atomic import write_atomic

_LABELS = ("experiment", "role", "role_instance")
_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RoleMetrics:
    def __init__(self, experiment: str, role: str, instance: str, paradigm: str = "", network: str = ""):
        self.registry = CollectorRegistry()
        self.base = {"experiment": experiment, "role": role, "role_instance": instance}
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.info = Gauge(
            "splitbench_role_info", "Constant 1; labels describe the run", [*_LABELS, "paradigm", "network"], registry=r
        )
        self.info.labels(**self.base, paradigm=paradigm, network=network).set(1)
        self.wire_bytes = Counter(
            "splitbench_wire_bytes",
            "Bytes on the wire by direction and kind",
            [*_LABELS, "direction", "kind"],
            registry=r,
        )
        self._wire_children: dict[tuple[str, str], Any] = {}
        self.samples = Counter("splitbench_samples", "Training samples processed", _LABELS, registry=r)
        self.steps = Counter("splitbench_steps", "Training steps completed", _LABELS, registry=r)
        self.phase = Histogram(
            "splitbench_phase_seconds", "Time per step phase", [*_LABELS, "phase"], buckets=_STEP_BUCKETS, registry=r
        )
        self.loss = Gauge("splitbench_loss", "Latest training loss", [*_LABELS, "exit"], registry=r)
        self.accuracy = Gauge(
            "splitbench_accuracy_ratio", "Latest held-out accuracy (0 to 1)", [*_LABELS, "exit"], registry=r
        )
        self.epoch = Gauge("splitbench_epoch", "Current epoch", _LABELS, registry=r)
        self.rejected = Counter(
            "splitbench_rejected_messages",
            "Received messages refused before use, by reason",
            [*_LABELS, "reason"],
            registry=r,
        )
        self.transport_bytes = Counter(
            "splitbench_transport_bytes",
            "All bytes on the wire including CURVE's per-frame overhead",
            [*_LABELS, "direction", "auth"],
            registry=r,
        )
        self.duplicates = Counter(
            "splitbench_duplicates_dropped",
            "Re-sent requests already served: answered again, never trained on twice",
            _LABELS,
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "splitbench_checkpoint_seconds", "Time to write one checkpoint", _LABELS, buckets=_STEP_BUCKETS, registry=r
        )
        self.link_queue = Histogram(
            "splitbench_link_queue_seconds",
            "Time a message waited for its channel",
            [*_LABELS, "direction"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )

    def add_bytes(self, direction: str, kind: str, n: int) -> None:
        """Called for every message and traffic kind: each series' child is looked up once
        (labels() checks and hashes its arguments, microseconds per message otherwise)."""
        child = self._wire_children.get((direction, kind))
        if child is None:
            child = self._wire_children[direction, kind] = self.wire_bytes.labels(
                **self.base, direction=direction, kind=kind
            )
        child.inc(n)

    def step(self, samples: int, phases: dict[str, float], loss: float | None, exit_name: str = "final") -> None:
        self.samples.labels(**self.base).inc(samples)
        self.steps.labels(**self.base).inc()
        for name, seconds in phases.items():
            self.phase.labels(**self.base, phase=name).observe(seconds)
        if loss is not None:
            self.loss.labels(**self.base, exit=exit_name).set(loss)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def dump(self, path: Path) -> None:
        """The exposition text a final scrape would see, kept beside the run record."""
        write_atomic(path, generate_latest(self.registry))
