"""CPU quotas for emulated devices.

Order of preference: a limit already imposed from outside (Kubernetes' limits.cpu shows up
as this process's cgroup quota), a cgroup v1 or v2 quota we create, and else a time-slice
throttle: a watchdog process that stops and continues us with SIGSTOP/SIGCONT so that we
run for quota x period out of every period. The mechanism in force is recorded.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .resources import load_profiles
from .spec import DeviceSpec, SpecError, cpu_cores

CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


@dataclass(frozen=True)
class Device:
    profile: str | None
    cpu: float | None  # cores; None = unlimited
    memory: str | None
    tier: str | None = None
    gflops: float | None = None  # nominal computational power (HFSL's ETOPS), where the profile gives it


def resolve_device(spec: DeviceSpec) -> Device:
    base: dict = {}
    if spec.profile:
        profiles = load_profiles("devices.yaml")
        if spec.profile not in profiles:
            raise SpecError(f"device.profile: unknown profile {spec.profile!r}; known: {', '.join(profiles)}")
        base = profiles[spec.profile]
    cpu = spec.cpu if spec.cpu is not None else base.get("cpu")
    return Device(spec.profile, cpu_cores(cpu), spec.memory or base.get("memory"), base.get("tier"), base.get("gflops"))


def set_torch_threads(cores: float | None) -> int:
    """torch's intra-op threads follow the quota, not the host's core count."""
    import torch  # here, not at import: the role plan reads device profiles without torch

    n = max(1, math.floor(cores)) if cores else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def _existing_quota() -> float | None:
    """A quota set on our cgroup by someone else (kubelet, docker --cpus). Inside a
    container the hierarchy is often mounted at our own cgroup, so /proc/self/cgroup's path
    does not exist there: the mount's root is our cgroup then."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            for base in (CGROUP_V2 / path.lstrip("/"), CGROUP_V2):
                try:
                    quota, period = (base / "cpu.max").read_text().split()
                except (OSError, ValueError):
                    continue
                if quota != "max":
                    return int(quota) / int(period)
                break
        elif "cpu" in controllers.split(","):
            for base in (CGROUP_V1_CPU / path.lstrip("/"), CGROUP_V1_CPU):
                try:
                    quota = int((base / "cpu.cfs_quota_us").read_text())
                    period = int((base / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if quota > 0:
                    return quota / period
                break
    return None


def _cgroup_v1(name: str, cores: float) -> str | None:
    group = CGROUP_V1_CPU / "splitbench" / name
    try:
        group.mkdir(parents=True, exist_ok=True)
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(cores * PERIOD_US))))
        (group / "cgroup.procs").write_text(str(os.getpid()))
        return f"cgroup-v1:{group}"
    except OSError:
        return None


def _cgroup_v2(name: str, cores: float) -> str | None:
    group = CGROUP_V2 / "splitbench" / name
    try:
        if not (CGROUP_V2 / "cgroup.controllers").exists():
            return None
        (CGROUP_V2 / "splitbench").mkdir(exist_ok=True)
        (CGROUP_V2 / "splitbench" / "cgroup.subtree_control").write_text("+cpu")
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text(f"{max(1000, int(cores * PERIOD_US))} {PERIOD_US}")
        (group / "cgroup.procs").write_text(str(os.getpid()))
        return f"cgroup-v2:{group}"
    except OSError:
        return None


_THROTTLE = r"""
import os, signal, sys, time
pid, run_s, stop_s = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
signal.signal(signal.SIGTERM, lambda *a: (os.kill(pid, signal.SIGCONT), sys.exit(0)))
try:
    while True:
        time.sleep(run_s)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(stop_s)
        os.kill(pid, signal.SIGCONT)
        if os.getppid() != pid:
            break
except ProcessLookupError:
    pass
"""


def _throttle(cores: float, threads: int = 1) -> str:
    # A duty cycle d lets `threads` busy threads use d x min(threads, host cores) cores: one torch
    # thread (a source) runs at d = cores; a group's k threads need d = cores / min(k, host cores).
    share = min(cores / max(1, min(threads, os.cpu_count() or 1)), 1.0)
    period = PERIOD_US / 1e6
    subprocess.Popen(
        [sys.executable, "-c", _THROTTLE, str(os.getpid()), str(share * period), str((1 - share) * period)],
        start_new_session=False,
    )
    return "sigstop-throttle"


def apply_cpu_limit(cores: float | None, name: str, mode: str = "auto", threads: int = 1) -> str:
    """Enforce the quota on this process; return the mechanism now in force.
    mode: auto (cgroup, else throttle), cgroup (or fail), throttle, off (no quota at all).
    threads: how many threads of this process compute at once (the throttle's duty cycle)."""
    if not cores:
        return "none"
    if mode == "off":
        return "off"
    outside = _existing_quota()
    if outside is not None and outside <= cores * 1.01:
        return f"inherited-quota:{outside:.2f}"
    if mode in ("auto", "cgroup"):
        for attempt in (_cgroup_v1, _cgroup_v2):
            got = attempt(name, cores)
            if got:
                return got
        if mode == "cgroup":
            raise RuntimeError("a cgroup CPU quota was required but no writable cgroup hierarchy was found")
    if cores >= (os.cpu_count() or 1):
        return "none (quota exceeds host cores)"
    return _throttle(cores, threads)


def change_cpu_limit(mechanism: str, cores: float) -> str:
    """Move a quota already in force to `cores` (a device's load changed). Only a cgroup
    quota can move; what is in force otherwise is returned unchanged, and the caller
    records that the change was not enforced."""
    kind, _, path = mechanism.partition(":")
    try:
        if kind == "cgroup-v1":
            Path(path, "cpu.cfs_quota_us").write_text(str(max(1000, int(cores * PERIOD_US))))
            return mechanism
        if kind == "cgroup-v2":
            Path(path, "cpu.max").write_text(f"{max(1000, int(cores * PERIOD_US))} {PERIOD_US}")
            return mechanism
    except OSError:
        pass
    return f"unchanged ({kind or mechanism})"


def busy_share(device_load, round_: int) -> float:
    """The share of the device other work takes in this round (the last step that began)."""
    busy = 0.0
    for step in sorted(device_load, key=lambda s: s.from_round):
        if step.from_round <= round_:
            busy = step.busy
    return busy


def remove_cgroups(names: list[str]) -> None:
    """Best effort: drop the (now empty) cgroups of finished roles."""
    for root in (CGROUP_V1_CPU / "splitbench", CGROUP_V2 / "splitbench"):
        for n in names:
            try:
                (root / n).rmdir()
            except OSError:
                pass
