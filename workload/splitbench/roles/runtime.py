"""What every role process has: its experiment, event log, metrics, CPU limit, and a
clean end (on success, on an error, or on SIGTERM/SIGINT) that keeps what was recorded."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from ..devices import Device, apply_cpu_limit, busy_share, change_cpu_limit, set_torch_threads
from ..metrics import RoleMetrics
from ..record import EventLog
from ..roleplan import plan_roles
from ..spec import load_experiment


class RoleFailed(RuntimeError):
    """An error this role can name in one line; it ends the role with a non-zero code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def terminate(signum, frame):
    """SIGTERM ends a role through its clean end (Runtime.run, or a source group's), as an exit would."""
    raise SystemExit(128 + signum)


def process_age_s() -> float | None:
    """Seconds since this process started (the kernel's start time, so the interpreter's
    start-up and imports count): what a role costs before it can work."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory since it exec'd its program (VmHWM, KiB). Not
    getrusage's ru_maxrss: that keeps the high-water mark of the image before exec, and an
    executor forks each role from itself (Popen with preexec_fn), so a role started by a
    process holding torch would report that process's size as its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """A process's resident memory now, in MB (/proc/<pid>/smaps_rollup): rss, pss (shared
    pages divided among the processes that map them: what limits how many roles fit) and uss
    (pages no other process maps). Empty where the kernel does not say (gone, not Linux)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            kb[name] = int(value[0])
    return {
        "rss": kb.get("Rss", 0) / 1024,
        "pss": kb.get("Pss", 0) / 1024,
        "uss": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024,
    }


HEAVY_MODULES = ("torch", "torchvision", "pandas", "pyarrow", "matplotlib", "scipy")


def heavy_modules() -> list[str]:
    """The large libraries this process has imported (a role imports only what it needs)."""
    return [m for m in HEAVY_MODULES if m in sys.modules]


def footprint() -> dict[str, float | None]:
    """What the record says of a role's cost when it is ready (and at its end): seconds since
    the process started, peak RSS, and RSS/PSS/USS now."""
    now = memory_mb()
    return {"ready_s": process_age_s(), "rss_mb": peak_rss_mb(), **{f"{k}_now_mb": round(v, 1) for k, v in now.items()}}


def raise_open_files() -> int:
    """Lift this process's soft limit on open files to the hard one: a role with many peers
    (the link relay of 1,000 sources: a connection and a socket each way) needs thousands."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def zmq_context(sockets: int) -> zmq.Context:
    """The process's ZeroMQ context with room for `sockets` sockets (ZeroMQ's default is 1023;
    the context reads the limit when it makes its first socket, so call this before any)."""
    ctx = zmq.Context.instance()
    if sockets > ctx.get(zmq.MAX_SOCKETS):
        ctx.set(zmq.MAX_SOCKETS, sockets)
    return ctx


class Runtime:
    """`group`: the source group hosting this source (roles/source_group.py), whose process
    owns the CPU quota, the metrics port and the signal handlers; None for a role process."""

    def __init__(self, args: argparse.Namespace, role: str, instance: str, group=None):
        self.args, self.group = args, group
        self.experiment = group.experiment if group else load_experiment(args.spec)
        self.spec = self.experiment.spec
        self.role, self.instance = role, instance
        self.run_dir = Path(args.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # the profiles, resolved once: roles read them here
        self.plan = group.plan if group else plan_roles(self.experiment)
        network = self.plan.network.name if self.plan.network else "none"
        self.metrics = RoleMetrics(self.experiment.name, role, instance, self.spec.paradigm.name, network)
        if getattr(args, "metrics_port", None) and group is None:
            self.metrics.serve(args.metrics_port, addr=getattr(args, "metrics_addr", "127.0.0.1"))
        events = self.run_dir / f"{instance}.events.jsonl"
        self.restarted = events.exists()  # this role ran here before: its record is appended to, its peers told
        self.log = EventLog(events, self.experiment.name, role, instance)
        if group is None:
            signal.signal(signal.SIGTERM, terminate)
            raise_open_files()
        self.started = time.time()
        self.limits: dict = {}

    def limit(self, device: Device) -> None:
        """Enforce the device's CPU quota from here on (call it once setup is done: a real
        device already holds its data, so loading it is not part of what we measure). A
        group's source shares the quota its group set (and one torch thread per source)."""
        if self.group is not None:
            mechanism, threads = self.group.cpu_limit, 1
        else:
            mechanism = apply_cpu_limit(
                device.cpu, f"{self.experiment.name}-{self.instance}", getattr(self.args, "cpu_limit", "auto") or "auto"
            )
            threads = set_torch_threads(device.cpu)
            import torch  # here, not at import: the link emulator has a Runtime and no torch

            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # torch allows it only before its first parallel work; intra-op threads matter here
        self.limits = {
            "cpu_quota": device.cpu,
            "cpu_limit": mechanism,
            "torch_threads": threads,
            "device_profile": device.profile,
            **self.group_fields(),
        }
        self.device, self.busy = device, 0.0
        self.log.write("session", status="limited", **footprint(), **self.limits)

    def group_fields(self) -> dict:
        """What the record says of the process hosting this role: its source group, the group's
        size and the CPU quota its sources share; nothing for a role in its own process."""
        if self.group is None:
            return {}
        return {"group": self.group.name, "group_size": self.group.size, "group_cpu": self.group.cpu}

    def power_meter(self, load):
        """round -> this device's remaining computational power (GFLOPS): its profile's
        gflops times the share its load schedule leaves free (applying that schedule)."""

        def power(round_: int) -> float:
            if not self.device.gflops:
                raise RoleFailed(
                    f"{self.instance}: a moving hfsl split needs the device's computational power; "
                    "use a device profile with gflops (low, medium, high)",
                    code=2,
                )
            return self.load_for_round(load, round_) * self.device.gflops

        return power

    def load_for_round(self, load, round_: int) -> float:
        """Apply the device's load schedule for this round: other work takes `busy` of the
        device, so its quota shrinks to (1 - busy) of the device's. Returns the free share."""
        busy = busy_share(load, round_)
        if busy != self.busy:
            self.busy = busy
            enforced = "no quota to shrink"
            if self.device.cpu:
                enforced = change_cpu_limit(self.limits["cpu_limit"], self.device.cpu * (1 - busy))
            self.log.write(
                "load", round=round_, busy=busy, cpu_quota=(self.device.cpu or 0) * (1 - busy), cpu_limit=enforced
            )
        return 1 - busy

    def run(self, body) -> int:
        """Run the role's body; always leave a session record and a final metrics dump."""
        self.log.write("session", status="start")
        code, status, error = 0, "ok", None
        try:
            body()
        except RoleFailed as err:
            code, status, error = err.code, "failed", str(err)
        except (KeyboardInterrupt, SystemExit) as err:
            code = err.code if isinstance(err, SystemExit) and isinstance(err.code, int) else 130
            status, error = "stopped", "interrupted"
        except Exception as err:  # an unexpected crash: still one line, and a record
            code, status, error = 1, "failed", f"{type(err).__name__}: {err}"
        if getattr(self, "busy", 0.0) and self.device.cpu:  # the run is over: let the process exit at full quota
            change_cpu_limit(self.limits["cpu_limit"], self.device.cpu)
        # A second Ctrl-C or the executor's SIGTERM must not cut the final record short.
        if threading.current_thread() is threading.main_thread():  # a group's sources run in threads
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.log.write(
            "session",
            status=status,
            error=error,
            duration_s=time.time() - self.started,
            rss_peak_mb=peak_rss_mb(),
            **{f"{k}_end_mb": round(v, 1) for k, v in memory_mb().items()},
            imports=",".join(heavy_modules()),
            **self.limits,
        )
        self.metrics.dump(self.run_dir / f"{self.instance}.prom")
        self.log.close()
        if error and status == "failed":
            print(f"{self.instance}: {error}", file=sys.stderr, flush=True)
        return code
