"""Resolve a NetworkSpec (a profile name, explicit fields, or both) into one LinkConfig."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..resources import benchmarks_dir, load_profiles
from ..spec import DirectionSpec, NetworkSpec, SpecError


@dataclass(frozen=True)
class Direction:
    rate_bps: float | None  # None = unlimited
    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0


@dataclass(frozen=True)
class LinkConfig:
    name: str
    medium: str  # dedicated | shared | none
    up: Direction
    down: Direction
    trace: tuple[tuple[float, float], ...] = ()  # (time_s, bits/s), replaces both rates
    outages: tuple[tuple[float, float], ...] = ()  # (start_s, end_s) after training begins: nothing moves

    @property
    def emulated(self) -> bool:
        return self.medium != "none"


def _direction(d: DirectionSpec | dict | None) -> Direction:
    d = DirectionSpec.model_validate(d or {}) if not isinstance(d, DirectionSpec) else d
    return Direction(d.rate_mbit * 1e6 if d.rate_mbit else None, d.delay_ms / 1e3, d.jitter_ms / 1e3, d.loss)


TRACE_DIR_ENV = "SPLITBENCH_TRACE_DIR"  # set by --trace-dir; os.pathsep-separated folders
MAX_TRACE_BYTES = 4 << 20


def trace_dirs() -> list[Path]:
    """Where network.trace files may come from: benchmarks/traces/, and folders named with
    --trace-dir (SPLITBENCH_TRACE_DIR). Nothing else on disk is read."""
    dirs = [benchmarks_dir() / "traces"]
    dirs += [Path(d) for d in os.environ.get(TRACE_DIR_ENV, "").split(os.pathsep) if d]
    return [d.resolve() for d in dirs]


def _locate_trace(path: str | Path) -> Path:
    p, dirs = Path(path), trace_dirs()
    candidates = (
        [p]
        if p.is_absolute()
        else [Path.cwd() / p, benchmarks_dir() / p, *(d / p for d in dirs), *(d / p.name for d in dirs)]
    )
    for c in candidates:
        r = c.resolve()  # links resolved first: a link out of an allowed folder is outside it
        if any(r.is_relative_to(d) for d in dirs) and r.is_file():
            return r
    raise SpecError(
        f"network.trace: {str(path)[:200]!r} is not a file in {', '.join(map(str, dirs))}; "
        "name its folder with --trace-dir"
    )


def load_trace(path: str | Path) -> tuple[tuple[float, float], ...]:
    """Errors name the file and line, never the file's content."""
    p = _locate_trace(path)
    try:
        if p.stat().st_size > MAX_TRACE_BYTES:
            raise SpecError(f"network.trace: {p.name} is larger than {MAX_TRACE_BYTES >> 20} MiB")
        lines = p.read_text(errors="replace").splitlines()
    except OSError as err:
        raise SpecError(f"network.trace: cannot read {p.name}: {err.strerror}") from None
    points = []
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip().strip("[]").replace(",", " ")
        if not line:
            continue
        try:
            t, rate = (float(v) for v in line.split())
        except ValueError:
            raise SpecError(f"network.trace: {p.name}:{n}: expected 'time_s Mbit/s' (two numbers)") from None
        if not (math.isfinite(t) and math.isfinite(rate)) or rate <= 0 or (points and t <= points[-1][0]):
            raise SpecError(f"network.trace: {p.name}:{n}: rates must be finite and positive, times increasing")
        points.append((t, rate * 1e6))
    if not points or points[0][0] != 0:
        raise SpecError(f"network.trace: {p.name}: the first point must be at time 0")
    return tuple(points)


def resolve_network(spec: NetworkSpec) -> LinkConfig:
    base: dict = {}
    name = spec.profile or "custom"
    if spec.profile:
        profiles = load_profiles("networks.yaml")
        if spec.profile not in profiles:
            raise SpecError(f"network.profile: unknown profile {spec.profile!r}; known: {', '.join(profiles)}")
        base = profiles[spec.profile]
    medium = spec.medium or base.get("medium", "dedicated")
    up = spec.uplink or base.get("uplink")
    down = spec.downlink or base.get("downlink")
    trace = load_trace(spec.trace) if spec.trace else ()
    if spec.outages and medium == "none":
        raise SpecError(f"network.outages: profile {name!r} has no emulated link (medium none) to take down")
    outages = tuple((o.at_s, o.at_s + o.for_s) for o in spec.outages)
    return LinkConfig(name, medium, _direction(up), _direction(down), trace, outages)
