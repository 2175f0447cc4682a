"""A Docker Engine API for this machine: the one named by DOCKER_HOST or Docker's socket,
else podman's API service started here (`podman system service`), set up for hosts where
podman's defaults fail.

Facts measured on a Debian 12 host with cgroups v1 (podman 4.3): crun fails on that cgroup
setup, so the engine runs runc; the default ulimits cannot be applied without
CAP_SYS_RESOURCE, so they are set to values that can. Both go into a containers.conf of the
project's own (CONTAINERS_CONF), never into /etc.

    python tools/container_engine.py start   # prints DOCKER_HOST=...; the service runs on
    python tools/container_engine.py stop
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / "build" / "podman"
CONF = STATE / "containers.conf"
SOCKET = STATE / "podman.sock"
PIDFILE = STATE / "service.pid"
PACKAGES = ["podman", "runc", "uidmap", "mmdebstrap"]
CONF_TEXT = """\
# written by tools/container_engine.py: what podman needs on this kind of host
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
"""


class NoEngine(RuntimeError):
    """Neither a Docker Engine API nor podman is available (one line: why)."""


def _reachable(host: str) -> bool:
    try:
        import docker

        docker.DockerClient(base_url=host, timeout=5).ping()
        return True
    except Exception:
        return False


def install_podman() -> None:
    """apt-get the engine where we may (root on Debian or Ubuntu); else say what to run."""
    missing = [p for p in ("podman", "runc", "mmdebstrap") if not shutil.which(p)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise NoEngine(
            f"no container engine: install {' '.join(PACKAGES)} (sudo apt-get install {' '.join(PACKAGES)}) or Docker"
        )
    print(f"installing {' '.join(PACKAGES)} (Debian packages) for the container tests", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env, stdout=subprocess.DEVNULL)


def podman_env() -> dict[str, str]:
    STATE.mkdir(parents=True, exist_ok=True)
    if not CONF.exists() or CONF.read_text() != CONF_TEXT:
        CONF.write_text(CONF_TEXT)
    return {**os.environ, "CONTAINERS_CONF": str(CONF)}


def start() -> str:
    """A reachable DOCKER_HOST: the one already set, Docker's socket, or a podman service
    started here (left running; stop() ends it)."""
    for host in filter(None, [os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"]):
        if (not host.startswith("unix://") or Path(host[7:]).exists()) and _reachable(host):
            return host
    install_podman()
    host = f"unix://{SOCKET}"
    if PIDFILE.exists() and SOCKET.exists() and _reachable(host):
        return host
    SOCKET.unlink(missing_ok=True)
    env = podman_env()
    log = open(STATE / "service.log", "ab")
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", host],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PIDFILE.write_text(str(proc.pid))
    for _ in range(100):  # bounded: 20 s
        if SOCKET.exists() and _reachable(host):
            return host
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop()
    raise NoEngine(f"podman system service did not answer on {SOCKET} (see {STATE / 'service.log'})")


def stop() -> None:
    """End the podman service this module started (by its recorded process id)."""
    if not PIDFILE.exists():
        return
    try:
        pid = int(PIDFILE.read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, ValueError):
        pass
    PIDFILE.unlink(missing_ok=True)
    SOCKET.unlink(missing_ok=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    try:
        if command == "start":
            print(f"DOCKER_HOST={start()}")
        elif command == "stop":
            stop()
        else:
            raise SystemExit("usage: container_engine.py start|stop")
    except NoEngine as err:
        raise SystemExit(str(err))
