"""A fork server for the local executor's torch roles (issue 17, item 4).

Every training role is a full Python and torch process: with PyPI's CUDA build about 366 MB of
private memory before it trains, so 64 sources do not fit on a 24 GiB machine. Here one process
(the zygote) imports torch and the role modules once, and each role is forked from it: the
imported code and data are shared copy-on-write, and each role's private memory is what it
builds itself (its model, its optimizer, its buffers).

A forked role is the role it was before, started differently:

- its own argv (also its /proc/<pid>/cmdline, rewritten in place, so `ps`, the benchmarks and
  the tests that look for a role by its command line find it), environment, working folder,
  stdout and stderr (its log file), and a fresh seed for `random`, numpy's and torch's global
  generators, as a new process would have;
- it applies its own CPU quota (a cgroup it moves itself into, as before), dies with the zygote
  (which dies with the executor), and ends as `python -m splitbench role ...` would: the exit
  code of `splitbench.cli.main.main`, after the interpreter's normal shutdown;
- its pid is the executor's (kill faults, the memory guard, SIGINT/SIGTERM): the zygote reaps
  it and sends its exit code back (ForkedRole.poll and wait read it, as Popen's do).

Nothing in the zygote starts a Python thread or touches torch's thread pools before a fork
(it refuses to fork with a second Python thread alive); numpy's OpenBLAS pool is one native
thread that OpenBLAS itself stops and restarts around fork (pthread_atfork). What a forked role
inherits that a new process would not: the zygote's modules (shared, and already imported: a
role that imports them again pays nothing), its hash seed and its /proc/<pid>/environ (the
environment at the zygote's start; os.environ is the role's own).

Protocol, one JSON object a line over a socketpair: the executor sends {"argv", "env", "cwd",
"log"}; the zygote answers {"ready": ...} once, {"pid": N} or {"error": "..."} to each request
in order, and {"exit": pid, "code": c} when a role ends (c as Popen.returncode: -signal if
killed). The zygote ends when the executor closes its end.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# What a torch role imports before it trains; the optimizer's first step imports torch._dynamo
# (and sympy). Nothing here may import torchvision or pandas: a role records what it imported.
PRELOAD = (
    "torch",
    "torch._dynamo",
    "splitbench.cli.main",
    "splitbench.cli.role",
    "splitbench.roles.source",
    "splitbench.roles.server",
    "splitbench.roles.aggregator",
    "splitbench.roles.trainer",
    "splitbench.paradigms",
    "splitbench.models.small_cnn",
)
FORKED_KINDS = ("source", "server", "aggregator", "trainer")  # the relay (link) has no torch: spawned
_PR_SET_PDEATHSIG = 1


class ForkServerError(RuntimeError):
    """The fork server could not start, or could not fork a role (the executor then spawns it)."""


def _prctl_pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _cmdline_area() -> tuple[int, int] | None:
    """(address, length) of this process's argv strings (what /proc/self/cmdline reads)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
    except (OSError, ValueError, IndexError):
        return None
    return (start, end - start) if 0 < start < end else None


def set_cmdline(argv: list[str]) -> bool:
    """Make /proc/self/cmdline read argv: written over the argv strings the process started
    with (as setproctitle does; the zygote starts with room for the longest role's), padded
    with NULs. False (and nothing written) where it does not fit or the area is unknown."""
    area = _cmdline_area()
    data = b"\0".join(a.encode() for a in argv) + b"\0"
    if area is None or len(data) > area[1]:
        return False
    ctypes.memmove(area[0], data.ljust(area[1], b"\0"), area[1])
    return True


def cmdline_room(argvs: list[list[str]]) -> int:
    """Bytes of argv area the zygote needs so any of these command lines fits over its own."""
    return max((len(b"\0".join(a.encode() for a in argv)) + 1 for argv in argvs), default=0) + 64


# --- the executor's side -------------------------------------------------------------------


class ForkServer:
    """The zygote, seen from the executor: start() it early (its imports take as long as one
    role's), spawn() each role, close() at the end. Used from one thread."""

    def __init__(
        self,
        title: str,
        room: int,
        log: Path,
        env: dict[str, str] | None = None,
        preload: tuple[str, ...] = PRELOAD,
        ready_timeout_s: float = 600,
    ):
        self.title, self.room, self.log_path, self.preload = title, room, Path(log), preload
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.info: dict | None = None  # the zygote's ready message: pid, ready_s, preloaded
        self.dead: str | None = None  # why it can no longer fork
        self.roles: dict[int, ForkedRole] = {}
        self._buf = b""
        self._replies: list[dict] = []

    def start(self) -> "ForkServer":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log = open(self.log_path, "a")
        try:
            argv = [
                sys.executable,
                "-c",
                "from splitbench.executors.forkserver import main; main()",
                str(theirs.fileno()),
                self.title,
                ",".join(self.preload),
                "." * max(self.room, 1),
            ]
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                env=self.env,
                preexec_fn=_prctl_pdeathsig,
            )
        finally:
            theirs.close()
            log.close()
        self.sock = ours
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def ready(self) -> dict:
        """Wait for the zygote's imports; its ready message. ForkServerError if it died or hung."""
        deadline = time.time() + self.ready_timeout_s
        while self.info is None and self.dead is None:
            if time.time() > deadline:
                self._died(f"not ready after {self.ready_timeout_s:.0f} s")
                break
            self.pump(timeout=min(1.0, max(0.0, deadline - time.time())))
        if self.info is None:
            raise ForkServerError(f"fork server: {self.dead}")
        return self.info

    def spawn(self, argv: list[str], env: dict[str, str], log: Path, cwd: str | None = None) -> "ForkedRole":
        """Fork a role: argv as `python -m splitbench role ...` would have it."""
        self.ready()
        request = {"argv": argv, "env": env, "cwd": cwd or os.getcwd(), "log": str(log)}
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as err:
            self._died(f"lost ({err})")
            raise ForkServerError(f"fork server: {self.dead}") from err
        while not self._replies and self.dead is None:
            self.pump(timeout=1.0)
        if not self._replies:
            raise ForkServerError(f"fork server: {self.dead}")
        reply = self._replies.pop(0)
        if "error" in reply:
            raise ForkServerError(f"fork server: {reply['error']}")
        role = ForkedRole(self, reply["pid"], argv)
        self.roles[role.pid] = role
        return role

    def pump(self, timeout: float = 0.0) -> None:
        """Read what the zygote said (up to timeout s for the first of it)."""
        if self.sock is None or self.dead is not None:
            return
        readable, _, _ = select.select([self.sock], [], [], timeout)
        while readable:
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError as err:
                self._died(f"lost ({err})")
                return
            if not chunk:
                code = self.proc.wait() if self.proc else None
                self._died(f"exited with code {code}: {_last_line(self.log_path)}")
                return
            self._buf += chunk
            readable, _, _ = select.select([self.sock], [], [], 0)
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            msg = json.loads(line)
            if "exit" in msg:
                role = self.roles.pop(msg["exit"], None)
                if role is not None:
                    role.returncode = msg["code"]
            elif "ready" in msg:
                self.info = msg["ready"]
            else:
                self._replies.append(msg)

    def _died(self, why: str) -> None:
        """The zygote is gone: its roles die with it (SIGTERM); each is seen to end once its pid is gone."""
        self.dead = why
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def memory(self) -> dict[str, float]:
        from ..roles.runtime import memory_mb  # no torch there

        return memory_mb(self.pid) if self.pid and self.dead is None else {}

    def close(self) -> None:
        """End the zygote (closing its socket) and wait for it; roles still alive get SIGTERM."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dead is None:
            self.dead = "closed"


class ForkedRole:
    """A forked role, with the part of Popen's interface the executor uses."""

    def __init__(self, server: ForkServer, pid: int, args: list[str]):
        self.server, self.pid, self.args = server, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.pump()
            if self.returncode is None and self.server.dead is not None and not _alive(self.pid):
                self.returncode = -signal.SIGTERM  # what the zygote's end sent it; its exit code is lost
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if self.server.dead is None:
                self.server.pump(timeout=0.1 if deadline is None else max(0.0, min(0.1, deadline - time.time())))
            else:
                time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not known to have ended (its pid is not yet another's)
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _last_line(path: Path) -> str:
    try:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(no output)"


# --- the zygote ----------------------------------------------------------------------------


class _RoleDone(BaseException):
    """Raised in a forked child once its role has ended: unwinds the zygote's frames (none of
    which catches it) so the child ends as a `python -m splitbench` process does."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def main() -> None:
    """The zygote: python -c '...main()' FD TITLE PRELOAD PADDING (ForkServer.start)."""
    fd, title, preload = int(sys.argv[1]), sys.argv[2], [m for m in sys.argv[3].split(",") if m]
    t0 = time.time()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the executor and the roles
    set_cmdline([sys.executable, "-m", "splitbench.executors.forkserver", title])
    sock = socket.socket(fileno=fd)
    for name in preload:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()  # the imported objects out of the collector's reach: its passes would dirty their pages
    from ..roles.runtime import memory_mb, process_age_s

    _send(
        sock,
        {
            "ready": {
                "pid": os.getpid(),
                "ready_s": process_age_s(),
                "import_s": round(time.time() - t0, 2),
                "preloaded": preload,
                **{f"{k}_mb": round(v, 1) for k, v in memory_mb().items()},
            }
        },
    )
    try:
        _serve(sock)
    except _RoleDone as done:  # only ever in a child
        code = done.code
    else:
        return
    raise SystemExit(code)


def _send(sock: socket.socket, msg: dict) -> None:
    sock.sendall(json.dumps(msg).encode() + b"\n")


def _serve(sock: socket.socket) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a handler, so the wakeup fd hears it
    buf = b""
    while True:
        try:
            readable, _, _ = select.select([sock, wake_r], [], [], 1.0)
        except InterruptedError:
            readable = []
        if wake_r in readable:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(sock)
        if sock in readable:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return  # the executor closed its end: the run is over
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = _fork(request, sock, (wake_r, wake_w))
                _send(sock, {"pid": pid} if isinstance(pid, int) else {"error": pid})


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _fork(request: dict, sock: socket.socket, wake: tuple[int, int]) -> int | str:
    """The child's pid, or why there is none."""
    if threading.active_count() > 1:  # a Python thread may hold a lock the child would wait on forever
        return f"refusing to fork: {threading.active_count()} Python threads in the fork server"
    try:
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as err:
        return f"cannot open {request['log']}: {err}"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as err:
        os.close(log_fd)
        return f"fork failed: {err}"
    if pid == 0:
        _child(request, log_fd, sock, wake)  # raises _RoleDone, never returns
    os.close(log_fd)
    return pid


def _child(request: dict, log_fd: int, sock: socket.socket, wake: tuple[int, int]) -> None:
    code = 1
    try:
        zygote = os.getppid()
        _prctl_pdeathsig()
        if os.getppid() != zygote:  # the zygote died between fork and prctl
            os._exit(128 + signal.SIGTERM)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        set_cmdline(argv)
        if sys.path and sys.path[0] == "":  # the zygote ran `python -c`; `python -m` puts the folder itself
            sys.path[0] = request["cwd"]
        _reseed()
        from ..cli.main import main as splitbench_main

        args = argv[argv.index("splitbench") + 1 :]
        sys.argv = [str(Path(splitbench_main.__code__.co_filename).parent.parent / "__main__.py"), *args]
        code = splitbench_main(args)
    except SystemExit as done:
        code = done.code
    except BaseException:  # as the interpreter would: the traceback on stderr, exit code 1
        sys.excepthook(*sys.exc_info())
        code = 1
    raise _RoleDone(code)


def _reseed() -> None:
    """Fresh seeds for the global generators, as a new process gets (roles seed what they
    must reproduce; this keeps forked siblings from drawing the same 'random' numbers)."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
