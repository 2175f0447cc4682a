"""The local executor: every role a process on this machine, on loopback.

Children die with us (PR_SET_PDEATHSIG), a crashed role stops the run with its own
one-line error, Ctrl-C stops everything cleanly, and the run record is merged whatever
happened, so nothing already recorded is lost. A source that dies does not stop the run:
it is recorded (source_gone) and the run goes on with the others and ends `degraded`;
`failed` is for a dead server, aggregator or link, or every source gone. spec.faults'
kills and slowdowns are performed here (executors/faults.py).

Role processes (launch): `forkserver` (the default) forks the torch roles from one process
that imported torch once (executors/forkserver.py), so they share its pages; `spawn` starts
each role as its own `python -m splitbench role ...`. The link emulator (no torch) is always
spawned. Which ran is `role_processes` in the run's environment.json, and forkserver.json holds
the fork server's own start-up and memory and which roles were forked.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_atomic
from ..model_cost_record import write_model_cost
from ..devices import remove_cgroups
from ..record import EventLog, merge, read_events_file
from ..roleplan import KEYS_DIR, SPEC_FILE, Role, plan_roles, role_environ, role_name, role_names
from ..transport import make_keys
from ..spec import Experiment
from .base import RunResult, status_line, uninterrupted
from .faults import FaultInjector, executor_log, source_gone
from .forkserver import FORKED_KINDS, ForkServer, ForkServerError, cmdline_room
from .progress import Progress

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_TAKEN: set[int] = set()

LAUNCHES = ("forkserver", "spawn")
LAUNCH_ENV = "SPLITBENCH_LAUNCH"  # the default launch where the caller gives none


def free_port() -> int:
    """A loopback port for a role to listen on, free now, below the kernel's ephemeral range
    and never handed out twice by this process: a port from bind(0) is an ephemeral one, which
    an outgoing connection (the relay's, say) may take before the role that was given it binds."""
    low = max(1024, _ephemeral_low() - 12000)
    for _ in range(200):  # bounded: a busy range still ends with a clear error
        port = random.randrange(low, _ephemeral_low())
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if len(_TAKEN) > 4096:  # long benches: ports of finished runs are free again
            _TAKEN.clear()
        _TAKEN.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {low}..{_ephemeral_low() - 1}")


class LocalExecutor:
    def __init__(
        self,
        out_dir: Path = Path("runs"),
        cpu_limit: str = "auto",
        metrics: bool = True,
        timeout_s: float | None = None,
        quiet: bool = False,
        launch: str | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.launch = launch or os.environ.get(LAUNCH_ENV) or "forkserver"
        if self.launch not in LAUNCHES:
            raise ValueError(f"launch {self.launch!r}: expected one of {', '.join(LAUNCHES)}")
        self.cpu_limit = cpu_limit
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.quiet = quiet

    def processes(self, exp: Experiment, run_dir: Path) -> list[tuple[Role, list[str]]]:
        """(role, argv) of every role process, in start order: the role plan, each
        listener on a free loopback port."""
        plan = plan_roles(exp)
        at = {r.name: f"tcp://127.0.0.1:{free_port()}" for r in plan if r.listens}
        out = []
        for r in plan:
            argv = r.args(
                at.__getitem__,
                bind=at.get(r.name, ""),
                spec_path=str(run_dir / SPEC_FILE),
                run_dir=str(run_dir),
                metrics_port=free_port() if self.metrics else None,
                extra=["--cpu-limit", self.cpu_limit],
            )
            out.append((r, [sys.executable, "-m", "splitbench", *argv]))
        return out

    def run(self, exp: Experiment) -> RunResult:
        run_dir = (self.out_dir / exp.name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_atomic(run_dir / SPEC_FILE, exp.to_yaml())
        write_model_cost(exp, run_dir)  # the report reads it, builds no model
        if exp.spec.transport.auth == "curve":  # one keypair per role, 0600, never in the record
            make_keys(run_dir / KEYS_DIR, role_names(exp.spec))
        t0 = time.time()
        procs: dict[str, subprocess.Popen] = {}
        logs = []
        progress = Progress(exp.name, run_dir)
        status, message, interrupted = "failed", "", False
        events = executor_log(exp, run_dir)  # what the executor saw and did: gone sources, faults
        faults = FaultInjector(exp, events)
        server: ForkServer | None = None
        launched: dict[str, str] = {}  # instance -> forked | spawned (its last start)
        fallback: list[str] = []  # why a role meant to be forked was spawned
        try:
            procs_plan = self.processes(exp, run_dir)
            write_targets(run_dir / "targets.json", procs_plan)
            plan = {role.name: (role, argv) for role, argv in procs_plan}
            if self.launch == "forkserver" and any(role.kind in FORKED_KINDS for role, _ in procs_plan):
                server = ForkServer(
                    str(run_dir),
                    cmdline_room([argv for _, argv in procs_plan]),
                    run_dir / "forkserver.log",
                    env=role_environ(os.environ),  # before its torch import: OpenMP and malloc read theirs then
                ).start()

            def start(instance: str) -> None:  # a restart appends to the role's log, as to its events
                role, argv = plan[instance]
                env = role_environ(os.environ, role.env)
                if server is not None and role.kind in FORKED_KINDS and server.dead is None:
                    try:
                        procs[instance] = server.spawn(argv, env, run_dir / f"{instance}.log")
                        launched[instance] = "forked"
                        return
                    except ForkServerError as err:  # the run goes on with plain processes, and says so
                        fallback.append(f"{instance}: {err}")
                        print(f"{exp.name}: {err}; {instance} and later roles spawned", file=sys.stderr, flush=True)
                log = open(run_dir / f"{instance}.log", "a")
                logs.append(log)
                procs[instance] = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
                )
                launched[instance] = "spawned"

            for instance in plan:
                start(instance)
            kinds = {role.name: role.kind for role, _ in procs_plan}
            groups = {role.name: role.members for role, _ in procs_plan if role.members}
            status, message = self._watch(
                procs, kinds, run_dir, progress, t0, events, faults, Restarts(exp.name, run_dir, plan, start), groups
            )
        except KeyboardInterrupt as err:
            interrupted = True
            message = f"stopped by {err or 'Ctrl-C'}: roles stopped, partial record kept"
            with uninterrupted():
                self._stop(procs, signal.SIGINT)  # as a terminal would: let each role write its last record
            raise
        finally:
            with uninterrupted():
                self._stop(procs)
                zygote = server.memory() if server is not None else {}
                if server is not None:
                    server.close()
                faults.close()
                events.close(status="interrupted" if interrupted else status, duration_s=time.time() - t0)
                for log in logs:
                    log.close()
                merge(run_dir, t0, executor="local")
                record_launch(run_dir, launched, server, zygote, fallback)
                remove_cgroups([f"{exp.name}-{i}" for i in procs])
                if not self.quiet:
                    progress.poll()
                    progress.show(force=True)
                write_atomic(run_dir / "status.txt", status_line(status, interrupted, message))
        return RunResult(exp.name, run_dir, status == "ok", message, time.time() - t0, status=status)

    def _watch(
        self,
        procs: dict[str, subprocess.Popen],
        kinds: dict[str, str],
        run_dir: Path,
        progress: Progress,
        t0: float,
        events,
        faults: FaultInjector,
        restarts: "Restarts",
        groups: dict[str, tuple[int, ...]] | None = None,
    ) -> tuple[str, str]:
        """(status, one line) once the run ends: ok, degraded (it went on without some
        sources) or failed. A dead role with a restart policy is started again first. A source
        group that exits with an error while some of its sources finished is not gone: those of
        its sources whose records end failed are (failed_members)."""
        sources = {n for n, k in kinds.items() if k == "source"}
        gone: dict[str, str] = {}
        lost_members: dict[str, list[str]] = {}  # a group that finished without some of its sources
        groups = groups or {}
        while True:
            time.sleep(0.25)
            progress.poll()
            if not self.quiet:
                progress.show()
            faults.tick(progress, kill=lambda name: _kill(procs.get(name)))
            for instance, p in procs.items():
                code = p.poll()
                if code in (None, 0) or instance in gone or instance in lost_members or restarts.handle(instance, code):
                    continue
                after = f" after {restarts.count[instance]} restart(s)" if restarts.count.get(instance) else ""
                why = f"{instance} exited with code {code}{after}: {_last_line(run_dir / f'{instance}.log')}"
                if instance not in sources:
                    return "failed", why
                failed = failed_members(run_dir, groups[instance]) if instance in groups else []
                if failed and len(failed) < len(groups[instance]):
                    lost_members[instance] = failed
                    for name in failed:
                        source_gone(events, progress, name, f"{why} ({name} failed in the group)", exit_code=code)
                    continue
                gone[instance] = why
                source_gone(events, progress, instance, why, exit_code=code, fault=instance in faults.killed or None)
                if sources <= set(gone):
                    return "failed", f"every source gone: {'; '.join(gone[s] for s in sorted(gone))}"
            restarts.start_due()
            working = [n for n in procs if kinds[n] != "link" and n not in gone and n not in lost_members]
            if not restarts.waiting and all(procs[n].poll() == 0 for n in working):
                if gone or lost_members:  # the link emulator would wait for the goodbye of a source that is gone
                    self._stop({n: p for n, p in procs.items() if kinds[n] == "link"})
                    lost = sorted([*gone, *(m for ms in lost_members.values() for m in ms)])
                    first = (
                        gone[min(gone)]
                        if gone
                        else f"{min(lost_members)}: {_last_line(run_dir / f'{min(lost_members)}.log')}"
                    )
                    return "degraded", f"finished in {time.time() - t0:.1f} s without {', '.join(lost)} ({first})"
                if all(p.poll() == 0 for p in procs.values()):
                    return "ok", f"finished in {time.time() - t0:.1f} s"
            if self.timeout_s and time.time() - t0 > self.timeout_s:
                return "failed", f"timed out after {self.timeout_s:.0f} s"

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


def _kill(p: subprocess.Popen | None) -> bool:
    """SIGKILL a role (a kill fault): no chance to write a last record, as a crash."""
    if p is None or p.poll() is not None:
        return False
    p.send_signal(signal.SIGKILL)
    return True


CONFIG_ERROR = 2  # RoleFailed(code=2): what a role's setup refuses


class Restarts:
    """The role plan's restart policy, as a kubelet applies it: a role with OnFailure that
    exits non-zero (or is killed) is started again with the same arguments after a doubling
    back-off, at most restart_limit times; each restart is a `restart` event in its record.
    Exit code 2 (its setup refused the spec, the data or a checkpoint) is not retried: the
    same start would fail the same way."""

    def __init__(self, experiment: str, run_dir: Path, plan: dict, start):
        self.experiment, self.run_dir, self.plan, self.start = experiment, run_dir, plan, start
        self.count: dict[str, int] = {}
        self.waiting: dict[str, float] = {}  # instance -> when to start it again

    def handle(self, instance: str, code: int) -> bool:
        """True when the dead role will be restarted (or already is about to be)."""
        if instance in self.waiting:
            return True
        role = self.plan[instance][0]
        n = self.count.get(instance, 0)
        if role.restart != "OnFailure" or n >= role.restart_limit or code == CONFIG_ERROR:
            return False
        delay = role.restart_delay(n)
        self.count[instance] = n + 1
        self.waiting[instance] = time.time() + delay
        log = EventLog(self.run_dir / f"{instance}.events.jsonl", self.experiment, role.kind, instance, echo=False)
        log.write("restart", attempt=n + 1, exit_code=code, backoff_s=delay)
        log.close()
        return True

    def start_due(self) -> None:
        now = time.time()
        for instance in [i for i, t in self.waiting.items() if t <= now]:
            del self.waiting[instance]
            self.start(instance)


def write_targets(path: Path, plan: list[tuple[Role, list[str]]]) -> None:
    """The roles' metrics endpoints as a Prometheus file_sd target list, so a Prometheus on
    this machine scrapes local runs as it would the operator's pods (file_sd_configs with
    files: [runs/<suite>/<experiment>/targets.json])."""
    targets = [
        {"targets": [f"127.0.0.1:{argv[argv.index('--metrics-port') + 1]}"]}
        for _, argv in plan
        if "--metrics-port" in argv
    ]
    write_atomic(path, json.dumps(targets, indent=1))


def record_launch(
    run_dir: Path, launched: dict[str, str], server: ForkServer | None, zygote: dict, fallback: list[str]
) -> None:
    """How the roles were started: environment.json's role_processes (forkserver: every torch
    role forked; spawn: none; mixed: the fork server failed for some, see forkserver.json), and
    forkserver.json: the fork server's start-up, its memory at the end, who was forked."""
    forked = sorted(i for i, how in launched.items() if how == "forked")
    mode = "spawn" if not forked else "mixed" if fallback else "forkserver"
    env_path = run_dir / "environment.json"
    try:
        env = json.loads(env_path.read_text())
    except (OSError, ValueError):
        env = {}
    env["role_processes"] = mode
    write_atomic(env_path, json.dumps(env, indent=1) + "\n")
    if server is None:
        return
    info = {
        "role_processes": mode,
        "forked": forked,
        "spawned": sorted(i for i, how in launched.items() if how == "spawned"),
        "fallback": fallback,
        "server": {
            **(server.info or {}),
            **{f"{k}_end_mb": round(v, 1) for k, v in zygote.items()},
            "ended": server.dead,
        },
    }
    write_atomic(run_dir / "forkserver.json", json.dumps(info, indent=1) + "\n")


def failed_members(run_dir: Path, members: tuple[int, ...]) -> list[str]:
    """The sources of a group whose own record does not end in an ok session (failed, stopped,
    or no record at all): the group's exit code says that some failed, their records say which."""
    failed = []
    for i in members:
        name = role_name("source", i)
        try:
            rows, _ = read_events_file(run_dir / f"{name}.events.jsonl")
        except OSError:
            rows = []
        sessions = [r for r in rows if r.get("event") == "session"]
        if not sessions or sessions[-1].get("status") != "ok":
            failed.append(name)
    return failed


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"
