"""Where a run was measured, like pyperf's metadata: CPU, memory, kernel, cgroup, versions,
the project's commit and whether its tree was dirty, the executor and the date. Written next
to every run record (environment.json) by record.merge, so every executor gets it.

Timing figures compare only between runs of the same `timing_key` (the fields that change
speed); versions of pure-Python helpers or the date do not enter it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# Fields that decide whether two runs' times may be compared.
# (How the roles' quota was enforced is recorded beside them but is per paradigm: a centralized
# trainer has none while split's sources do, on the same machine.)
TIMING_FIELDS = (
    "cpu_model",
    "cpu_count",
    "cpu_affinity",
    "memory_total",
    "kernel",
    "python",
    "torch",
    "cgroup",
    "executor",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _cgroup() -> str:
    """The host's cgroup hierarchy and this process's CPU quota (cpu.max / cfs_quota_us)."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        version, quota = "v2", "unknown"
        try:
            rel = next(
                l.split("::", 1)[1] for l in Path("/proc/self/cgroup").read_text().splitlines() if l.startswith("0::")
            )
            f = Path("/sys/fs/cgroup") / rel.lstrip("/") / "cpu.max"
            quota = f.read_text().strip() if f.exists() else "max (no cpu.max here)"
        except (OSError, StopIteration):
            pass
        return f"{version}, cpu.max {quota}"
    if Path("/sys/fs/cgroup/cpu").exists():
        try:
            q = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            p = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
            return f"v1, cfs quota {q}/{p} us"
        except OSError:
            return "v1"
    return "none"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(root: Path) -> tuple[str, str]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return (commit or "unknown"), ("unknown" if not commit else ("dirty" if dirty else "clean"))


def collect(executor: str = "local", quota: str | None = None) -> dict[str, str]:
    """This machine's description. quota: how the roles' CPU quota was enforced (from the record)."""
    import zmq  # imported here: the report reads environment.json without needing pyzmq

    commit, tree = _git(Path(__file__).resolve().parent)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "cpu_affinity": str(affinity),
        "memory_total": _memory_total(),
        "kernel": f"{platform.system()} {platform.release()}",
        "cgroup": _cgroup(),
        "cpu_quota_enforced_by": quota or "none",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "splitbench": _version("splitbench"),
        "git_commit": commit,
        "git_tree": tree,
        "executor": executor,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def timing_key(env: dict) -> tuple:
    return tuple(env.get(f, "unknown") for f in TIMING_FIELDS)


def differences(a: dict, b: dict) -> list[str]:
    """'field: a vs b' for each timing field that differs."""
    return [
        f"{f}: {a.get(f, 'unknown')} vs {b.get(f, 'unknown')}"
        for f in TIMING_FIELDS
        if a.get(f, "unknown") != b.get(f, "unknown")
    ]
