"""The docker executor: every role of the plan a container, through the Docker Engine API.

Any engine that speaks that API works: Docker, or podman's `podman system service`
(DOCKER_HOST=unix:///run/podman/podman.sock). One user-defined network per experiment
(roles find each other by container name), the plan's CPU quota as `nano_cpus` and its
memory as `mem_limit`, GPUs as device requests, the run folder bind-mounted so that each
role writes its own record there, as on the local executor. Every container and the network
are removed at the end, after a failure and after Ctrl-C too; a role that dies ends the run
with one line naming it and its last log lines.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..model_cost_record import write_model_cost
from ..record import merge
from ..roleplan import METRICS_PORT, PORT, SPEC_FILE, Role, RolePlan, one_process_per_source, plan_roles, role_names
from ..transport import make_keys
from ..transport.keys import KEYS_ENV
from ..spec import Experiment
from .base import RunResult, status_line, uninterrupted
from .progress import Progress

RUN_DIR = "/var/run/splitbench"  # the run folder, inside every container
SPEC_PATH = f"/etc/splitbench/{SPEC_FILE}"  # the spec, read-only
KEYS_PATH = "/etc/splitbench-keys"  # the role's own keys, read-only (as on Kubernetes)
LABEL = "splitbench.dev/experiment"
RUN_LABEL = "splitbench.dev/run"
IMAGE_USER = "10001:10001"  # Dockerfile.edge's numeric non-root user
LAST_LINES = 5


class NoEngine(RuntimeError):
    """No Docker Engine API answers (one line, for the CLI)."""


@dataclass(frozen=True)
class ContainerImages:
    edge: str = os.environ.get("SPLITBENCH_EDGE_IMAGE", "splitbench-edge:latest")
    gpu: str = os.environ.get("SPLITBENCH_GPU_IMAGE", "splitbench-gpu:latest")


def engine():
    """A client of the engine named by DOCKER_HOST (or the default socket)."""
    import docker  # only this executor needs the SDK

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as err:  # the SDK raises several types for "nothing there"
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise NoEngine(
            f"no Docker Engine API at {where} ({type(err).__name__}); start Docker, or podman "
            "with `podman system service --time=0 unix:///run/podman/podman.sock` and set DOCKER_HOST"
        )
    return client


def memory_bytes(quantity: str | None) -> int | None:
    from ..spec import memory_bytes as parse  # the one parser of Kubernetes quantities

    return parse(quantity)


def run_id(exp: Experiment, started: float) -> str:
    """Short and unique per run: container and network names stay DNS labels."""
    return hashlib.sha256(f"{exp.name}/{started}/{os.getpid()}".encode()).hexdigest()[:10]


def container_name(run: str, role: Role) -> str:
    return f"sb-{run}-{role.name}"


def container_args(plan: RolePlan, run: str) -> dict[str, list[str]]:
    """role name -> the container's arguments (the image's entrypoint is `splitbench`)."""
    by_name = {r.name: r for r in plan}

    def address(name: str) -> str:
        return f"tcp://{container_name(run, by_name[name])}:{PORT}"

    return {
        r.name: r.args(
            address,
            bind=f"tcp://*:{PORT}",
            spec_path=SPEC_PATH,
            run_dir=RUN_DIR,
            metrics_port=METRICS_PORT,
            metrics_addr="0.0.0.0",
        )
        for r in plan
    }


def container_options(
    role: Role,
    images: ContainerImages,
    run: str,
    exp: Experiment,
    args: list[str],
    run_dir: Path,
    network: str,
    keys: Path | None = None,
) -> dict:
    """The keyword arguments of `containers.create` for one role (pure). `keys`: the role's
    own keys folder (its secret key and every public key), mounted read-only."""
    opts = {
        "image": images.gpu if role.image == "gpu" else images.edge,
        "command": args,
        "name": container_name(run, role),
        "hostname": role.name,
        "network": network,
        "labels": {LABEL: exp.name, RUN_LABEL: run, "splitbench.dev/role": role.name},
        "environment": {**dict(role.env), **({KEYS_ENV: KEYS_PATH} if keys else {})},
        "volumes": {
            str(run_dir): {"bind": RUN_DIR, "mode": "rw"},
            str(run_dir / SPEC_FILE): {"bind": SPEC_PATH, "mode": "ro"},
            **({str(keys): {"bind": KEYS_PATH, "mode": "ro"}} if keys else {}),
        },
        "user": IMAGE_USER if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}",
        "detach": True,
    }
    if role.cpu:
        opts["nano_cpus"] = int(round(role.cpu * 1e9))
    if role.memory:
        opts["mem_limit"] = memory_bytes(role.memory)
    if role.memory_request and role.memory_request != role.memory:
        opts["mem_reservation"] = memory_bytes(role.memory_request)
    if role.gpu:
        import docker

        opts["device_requests"] = [docker.types.DeviceRequest(count=role.gpu, capabilities=[["gpu"]])]
    return opts


class DockerExecutor:
    def __init__(
        self,
        out_dir: Path = Path("runs"),
        cpu_limit: str = "auto",
        metrics: bool = True,
        timeout_s: float | None = None,
        quiet: bool = False,
        images: ContainerImages | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.timeout_s = timeout_s  # cpu_limit: the engine's quota (nano_cpus) is the device's quota
        self.quiet = quiet
        self.images = images or ContainerImages()

    def run(self, exp: Experiment) -> RunResult:
        one_process_per_source(exp.spec, "docker")
        client = engine()
        run_dir = (self.out_dir / exp.name).resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_atomic(run_dir / SPEC_FILE, exp.to_yaml())
        write_model_cost(exp, run_dir)  # the report reads it, builds no model
        t0 = time.time()
        run = run_id(exp, t0)
        plan = plan_roles(exp)
        progress = Progress(exp.name, run_dir)
        containers: dict[str, object] = {}
        network = None
        ok, message, interrupted = False, "", False
        if os.getuid() == 0:  # the image's user writes the record; the folder is handed back at the end
            _chown_tree(run_dir, 10001, 10001)
        keys = tempfile.TemporaryDirectory(prefix=f"sb-{run}-keys-")
        try:
            role_keys = (
                per_role_keys(Path(keys.name), role_names(exp.spec)) if exp.spec.transport.auth == "curve" else {}
            )
            network = client.networks.create(f"sb-{run}", driver="bridge", labels={LABEL: exp.name, RUN_LABEL: run})
            args = container_args(plan, run)
            for role in plan:
                c = client.containers.create(
                    **container_options(
                        role, self.images, run, exp, args[role.name], run_dir, network.name, role_keys.get(role.name)
                    )
                )
                containers[role.name] = c
                c.start()
            ok, message = self._watch(containers, progress, t0)
        except KeyboardInterrupt as err:
            interrupted = True
            message = f"stopped by {err or 'Ctrl-C'}: containers stopped, partial record kept"
            with uninterrupted():
                self._stop(containers, "SIGINT")
            raise
        except Exception as err:
            message = f"docker: {type(err).__name__}: {err}".splitlines()[0]
        finally:
            # a second Ctrl-C or SIGTERM must not leave containers behind: clean up first, then let it through
            with uninterrupted():
                self._stop(containers, "SIGTERM")
                self._save_logs(containers, run_dir)
                remove_run(client, run)  # by label: also a container created just before an interrupt
                keys.cleanup()
                if os.getuid() == 0:
                    _chown_tree(run_dir, 0, 0)
                try:
                    merge(run_dir, t0, executor="docker")
                except Exception as err:  # the roles' own files stay; say why there is no merged record
                    message = f"{message}; record not merged: {type(err).__name__}: {err}".lstrip("; ")
                    ok = False
                if not self.quiet:
                    progress.poll()
                    progress.show(force=True)
                write_atomic(run_dir / "status.txt", status_line("ok" if ok else "failed", interrupted, message))
        return RunResult(exp.name, run_dir, ok, message, time.time() - t0)

    def _watch(self, containers: dict, progress: Progress, t0: float) -> tuple[bool, str]:
        while True:
            time.sleep(0.5)
            if not self.quiet:
                progress.poll()
                progress.show()
            done = 0
            for name, c in containers.items():
                c.reload()
                if c.status in ("exited", "dead"):
                    code = c.attrs["State"]["ExitCode"]
                    if code != 0:
                        return False, f"{name} exited with code {code}: {last_lines(c)}"
                    done += 1
            if done == len(containers):
                return True, f"finished in {time.time() - t0:.1f} s"
            if self.timeout_s and time.time() - t0 > self.timeout_s:
                return False, f"timed out after {self.timeout_s:.0f} s"

    @staticmethod
    def _stop(containers: dict, signal: str) -> None:
        """Signal every running role (so each writes its last record), wait up to 10 s, then kill."""
        live = []
        for c in containers.values():
            try:
                c.reload()
                if c.status == "running":
                    c.kill(signal=signal)
                    live.append(c)
            except Exception:
                pass
        deadline = time.time() + 10
        for c in live:
            try:
                c.wait(timeout=max(1, int(deadline - time.time())))
            except Exception:
                try:
                    c.kill()
                except Exception:
                    pass

    @staticmethod
    def _save_logs(containers: dict, run_dir: Path) -> None:
        for name, c in containers.items():
            try:
                write_atomic(run_dir / f"{name}.log", c.logs(stdout=True, stderr=True))
            except Exception:
                pass


def per_role_keys(root: Path, roles: list[str]) -> dict[str, Path]:
    """role -> a folder with only that role's secret key and every role's public key (what
    a Kubernetes pod sees of the Secret), readable by the image's user alone."""
    everything = make_keys(root / "all", roles)
    owner = (10001, 10001) if os.getuid() == 0 else (os.getuid(), os.getgid())
    out = {}
    for role in roles:
        folder = root / role
        folder.mkdir(mode=0o700)
        for f in [*everything.glob("*.pub"), everything / f"{role}.key"]:
            shutil.copyfile(f, folder / f.name)
            os.chmod(folder / f.name, 0o400)
            os.chown(folder / f.name, *owner)
        os.chown(folder, *owner)
        out[role] = folder
    shutil.rmtree(everything)
    return out


def remove_run(client, run: str) -> None:
    """Remove every container and network labelled with this run."""
    flt = {"label": f"{RUN_LABEL}={run}"}
    for c in client.containers.list(all=True, filters=flt):
        try:
            c.remove(force=True)
        except Exception:
            pass
    for n in client.networks.list(filters=flt):
        try:
            n.remove()
        except Exception:
            pass


def last_lines(container, n: int = LAST_LINES) -> str:
    """The container's last non-empty log lines, joined into one line."""
    try:
        text = container.logs(stdout=True, stderr=True, tail=50).decode(errors="replace")
    except Exception:
        return "(no log)"
    lines = [l.strip() for l in text.splitlines() if l.strip()][-n:]
    return " | ".join(lines) if lines else "(no output)"


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for path in [root, *root.rglob("*")]:
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except OSError:
            pass


def leftovers(client, experiment: str) -> list[str]:
    """Containers and networks still labelled with the experiment (a test checks none remain)."""
    flt = {"label": f"{LABEL}={experiment}"}
    return [c.name for c in client.containers.list(all=True, filters=flt)] + [
        n.name for n in client.networks.list(filters=flt)
    ]
