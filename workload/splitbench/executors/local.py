"""The local executor: every role a process on this machine, on loopback.

Children die with us (PR_SET_PDEATHSIG), a crashed role stops the run with its own
one-line error, Ctrl-C stops everything cleanly, and the run record is merged whatever
happened, so nothing already recorded is lost.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..devices import remove_cgroups
from ..link import resolve_network
from ..record import merge
from ..spec import Experiment
from .base import RunResult
from .progress import Progress
from .topology import topology

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalExecutor:
    def __init__(self, out_dir: Path = Path("runs"), cpu_limit: str = "auto", metrics: bool = True,
                 timeout_s: float | None = None, quiet: bool = False):
        self.out_dir = Path(out_dir)
        self.cpu_limit = cpu_limit
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.quiet = quiet

    def plan(self, exp: Experiment, run_dir: Path) -> list[tuple[str, list[str]]]:
        """(instance, argv) of every role process, in start order."""
        spec_file = str(run_dir / "spec.yaml")
        common = ["--spec", spec_file, "--run-dir", str(run_dir), "--cpu-limit", self.cpu_limit]

        def role(name: str, *extra: str) -> list[str]:
            port = ["--metrics-port", str(free_port())] if self.metrics else []
            return [sys.executable, "-m", "splitbench", "role", name, *common, *port, *extra]

        if not exp.spec.uses_network:
            return [("trainer-0", role("trainer"))]
        top = topology(exp.spec)
        k = exp.spec.sources.replicas

        def address() -> str:
            return f"tcp://127.0.0.1:{free_port()}"

        procs = []
        aggregator = address() if top.aggregator else None
        if aggregator:
            procs.append(("aggregator-0", role("aggregator", "--bind", aggregator)))
        server_at = [address() for _ in range(top.servers)]
        direct = top.routes(k, server_at, aggregator)
        relay = address() if resolve_network(exp.spec.network).emulated else None
        if relay:
            procs.append(("link-0", role("link", "--bind", relay, "--connect", server_at[0] if server_at else aggregator,
                                         *[f"--route={rid}={addr}" for rid, addr in direct.items()])))
        for j in range(top.servers):
            via = ["--aggregator", relay or aggregator] if aggregator else []
            procs.append((f"server-{j}", role("server", "--index", str(j), "--bind", server_at[j], *via)))
        for i in range(k):
            via = ["--aggregator", relay or aggregator] if top.second_peer else []
            procs.append((f"source-{i}", role("source", "--index", str(i), "--connect", relay or direct[f"source-{i}"],
                                              *via)))
        return procs

    def run(self, exp: Experiment) -> RunResult:
        run_dir = (self.out_dir / exp.name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "spec.yaml").write_text(exp.to_yaml())
        if exp.spec.transport.auth == "curve":  # issue 14: one keypair per role, 0600, never in the record
            from ..roles.peer import role_instances
            from ..transport import make_keys
            make_keys(run_dir / "keys", role_instances(exp.spec))
        t0 = time.time()
        procs: dict[str, subprocess.Popen] = {}
        logs = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        progress = Progress(exp.name, run_dir)
        ok, message = False, ""
        try:
            plan = self.plan(exp, run_dir)
            write_targets(run_dir / "targets.json", plan)
            for instance, argv in plan:
                log = open(run_dir / f"{instance}.log", "w")
                logs.append(log)
                procs[instance] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                   preexec_fn=_die_with_parent)
            ok, message = self._watch(procs, run_dir, progress, t0)
        except KeyboardInterrupt:
            message = "interrupted (Ctrl-C): roles stopped, partial record kept"
            self._stop(procs, signal.SIGINT)  # as a terminal would: let each role write its last record
            raise
        finally:
            self._stop(procs)
            for log in logs:
                log.close()
            merge(run_dir, t0)
            remove_cgroups([f"{exp.name}-{i}" for i in procs])
            if not self.quiet:
                progress.poll()
                progress.show(force=True)
            (run_dir / "status.txt").write_text(("ok" if ok else "failed") + f": {message}\n")
        return RunResult(exp.name, run_dir, ok, message, time.time() - t0)

    def _watch(self, procs: dict[str, subprocess.Popen], run_dir: Path, progress: Progress,
               t0: float) -> tuple[bool, str]:
        while True:
            time.sleep(0.25)
            if not self.quiet:
                progress.poll()
                progress.show()
            for instance, p in procs.items():
                code = p.poll()
                if code not in (None, 0):
                    return False, f"{instance} exited with code {code}: {_last_line(run_dir / f'{instance}.log')}"
            if all(p.poll() == 0 for p in procs.values()):
                return True, f"finished in {time.time() - t0:.1f} s"
            if self.timeout_s and time.time() - t0 > self.timeout_s:
                return False, f"timed out after {self.timeout_s:.0f} s"

    @staticmethod
    def _stop(procs: dict[str, subprocess.Popen], sig: int = signal.SIGTERM) -> None:
        """Ask every live role to stop, wait up to 10 s, then kill what is left."""
        live = [p for p in procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(sig)
        deadline = time.time() + 10
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def write_targets(path: Path, plan: list[tuple[str, list[str]]]) -> None:
    """The roles' metrics endpoints as a Prometheus file_sd target list, so a Prometheus on
    this machine scrapes local runs as it would the operator's pods (file_sd_configs with
    files: [runs/<suite>/<experiment>/targets.json], and honor_labels: true)."""
    targets = [{"targets": [f"127.0.0.1:{argv[argv.index('--metrics-port') + 1]}"]}
               for _, argv in plan if "--metrics-port" in argv]
    path.write_text(json.dumps(targets, indent=1))


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"
