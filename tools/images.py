"""Build the edge and GPU images through the Docker Engine API (the `docker` SDK), here and
anywhere: Docker, or podman's API service (tools/container_engine.py starts one).

    python tools/images.py [--edge] [--gpu] [--tag latest] [--base auto|IMAGE] [--force]

Base image: the official python:3.11-slim where it can be pulled; else a Debian bookworm
base built here with mmdebstrap and imported as localhost/splitbench-base:bookworm (about
90 s once). Torch: from the CPU wheel index where it is reachable; else from a wheelhouse
that this host fills with `pip download -r requirements.lock` (build/wheelhouse) and serves
to the build on loopback (host networking), so no wheel enters the build context or a
layer. An image whose inputs have not changed is not rebuilt: the hash of every file that
goes into it is a label on it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import container_engine  # noqa: E402

OFFICIAL_BASE = "python:3.11-slim"
LOCAL_BASE = "localhost/splitbench-base:bookworm"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HASH_LABEL = "splitbench.dev/inputs"
WHEELHOUSE = ROOT / "build" / "wheelhouse"
DATASETS = ROOT / "build" / "datasets"
FASHION = Path("/usr/share/datasets/fashion-mnist")
WHEELHOUSE_PORT = 47381
INPUTS = [
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "workload",
    "operator",
    "benchmarks",
    ".dockerignore",
    "build/datasets",
]


def say(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def reachable(url: str, timeout: float = 5) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True  # it answered (a registry says 401 to anonymous HEAD)
    except Exception:
        return False


def inputs_hash(dockerfile: str, build_args: dict) -> str:
    h = hashlib.sha256()
    files = [ROOT / dockerfile]
    for name in INPUTS:
        p = ROOT / name
        files += sorted(f for f in p.rglob("*") if f.is_file() and not _ignored(f)) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    h.update(repr(sorted(build_args.items())).encode())
    return h.hexdigest()[:16]


def _ignored(f: Path) -> bool:
    """Files .dockerignore keeps out of the build (bytecode, install metadata)."""
    return any(part == "__pycache__" or part.endswith(".egg-info") for part in f.parts)


def ensure_base(client, base: str) -> str:
    if base != "auto":
        return base
    try:
        client.images.get(OFFICIAL_BASE)
        return OFFICIAL_BASE
    except Exception:
        pass
    if reachable("https://registry-1.docker.io/v2/"):
        try:
            say(f"pulling {OFFICIAL_BASE}")
            client.images.pull(OFFICIAL_BASE)
            return OFFICIAL_BASE
        except Exception as err:
            say(f"cannot pull {OFFICIAL_BASE} ({type(err).__name__}); building a local base")
    try:
        client.images.get(LOCAL_BASE)
        return LOCAL_BASE
    except Exception:
        pass
    if not shutil.which("mmdebstrap"):
        raise SystemExit(
            f"images: {OFFICIAL_BASE} cannot be pulled and mmdebstrap is missing to build "
            f"{LOCAL_BASE} (apt-get install mmdebstrap)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "base.tar"
        say(f"building {LOCAL_BASE} with mmdebstrap (Debian bookworm, about 90 s)")
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                str(tar),
            ],
            check=True,
        )
        repo, tag = LOCAL_BASE.rsplit(":", 1)
        # an imported image has no PATH of its own: without one nothing is found
        client.api.import_image(
            src=str(tar), repository=repo, tag=tag, changes=["ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        )
    try:
        client.images.get(LOCAL_BASE)
    except Exception:  # podman's Docker API imports as <repo>:latest whatever tag it is given
        client.images.get(f"{repo}:latest").tag(repo, tag)
    return LOCAL_BASE


def fill_wheelhouse(use_index: bool) -> None:
    """Offline wheels for the build where the CPU index is unreachable (else leave it empty)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    if use_index:
        for w in WHEELHOUSE.glob("*.whl"):
            w.unlink()
        return
    stamp = WHEELHOUSE / ".lock"
    lock = (ROOT / "requirements.lock").read_text()
    if stamp.exists() and stamp.read_text() == lock:
        return
    say("the CPU wheel index is unreachable: filling build/wheelhouse with `pip download` (PyPI's torch)")
    for w in WHEELHOUSE.glob("*.whl"):
        w.unlink()
    # wheels for the base image's Python (bookworm's and python:3.11-slim's: 3.11), whatever this host runs
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--python-version",
            "3.11",
            "--only-binary=:all:",
            "-r",
            str(ROOT / "requirements.lock"),
            "-d",
            str(WHEELHOUSE),
        ],
        check=True,
    )
    stamp.write_text(lock)


@contextlib.contextmanager
def serve_wheelhouse():
    """The wheelhouse as a find-links URL on loopback, for the length of a build. The port is
    fixed: the URL is a build argument, and a new one would void the cached install layer."""
    handler = functools.partial(_QuietHandler, directory=str(WHEELHOUSE))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError as err:
        raise SystemExit(
            f"images: cannot serve build/wheelhouse on 127.0.0.1:{WHEELHOUSE_PORT} ({err.strerror}); "
            "free that port or run with the CPU wheel index reachable"
        ) from None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def copy_datasets() -> None:
    DATASETS.mkdir(parents=True, exist_ok=True)
    if FASHION.is_dir() and not (DATASETS / FASHION.name).exists():
        shutil.copytree(FASHION, DATASETS / FASHION.name)


def up_to_date(client, tag: str, digest: str) -> bool:
    try:
        return client.images.get(tag).labels.get(HASH_LABEL) == digest
    except Exception:
        return False


def build(client, dockerfile: str, tag: str, build_args: dict, digest: str) -> tuple[str, float]:
    """(image id, seconds) of one image, its build log streamed as progress lines."""
    say(f"{tag}: building {dockerfile} ({', '.join(f'{k}={v}' for k, v in build_args.items())})")
    t0 = time.time()
    stream = client.api.build(
        path=str(ROOT),
        dockerfile=dockerfile,
        tag=tag,
        buildargs=build_args,
        labels={HASH_LABEL: digest},
        rm=True,
        forcerm=True,
        decode=True,
        network_mode="host" if "WHEELS_URL" in build_args else None,
    )
    image_id, tail = None, []
    for chunk in stream:
        if "error" in chunk:
            print("\n".join(tail[-20:]), file=sys.stderr)
            raise SystemExit(f"images: {tag}: {chunk['error'].strip()}")
        line = chunk.get("stream", "").rstrip()
        if line and not line.startswith("WARNING: Location"):
            tail.append(line)
        if line.startswith(("STEP", "Step", "[", "--> Using cache")):
            say(f"{tag}: {line[:120]}")
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    image = client.images.get(tag)
    return image_id or image.id, time.time() - t0


def image_size(client, tag: str) -> int:
    return int(client.images.get(tag).attrs.get("Size", 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edge", action="store_true")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--tag", default="latest")
    p.add_argument("--base", default="auto", help="base image of both (auto: python:3.11-slim, else a local one)")
    p.add_argument("--force", action="store_true", help="rebuild even if the inputs have not changed")
    args = p.parse_args(argv)
    which = [n for n in ("edge", "gpu") if getattr(args, n)] or ["edge", "gpu"]
    import docker

    client = docker.DockerClient(base_url=container_engine.start(), timeout=3600)
    copy_datasets()
    failed = []
    for name in which:
        if name == "gpu" and not _gpu_base_available(client):
            say(
                "splitbench-gpu: its CUDA base image cannot be pulled from here (no registry reachable); "
                "skipped: build it where Docker Hub is reachable"
            )
            failed.append(name)
            continue
        tag = f"splitbench-{name}:{args.tag}"
        use_index, build_args = True, {}
        if name == "edge":
            use_index = reachable(CPU_INDEX + "/")
            build_args = {"BASE": ensure_base(client, args.base)}
            if use_index:
                build_args["TORCH_INDEX"] = CPU_INDEX
        digest = inputs_hash(f"Dockerfile.{name}", build_args)
        if not args.force and up_to_date(client, tag, digest):
            say(f"{tag}: up to date (inputs {digest}), {image_size(client, tag) / 2**30:.2f} GiB")
            continue
        if name == "edge":
            fill_wheelhouse(use_index)
        with serve_wheelhouse() if name == "edge" and not use_index else contextlib.nullcontext() as url:
            if url:
                build_args["WHEELS_URL"] = url
            _, seconds = build(client, f"Dockerfile.{name}", tag, build_args, digest)
        say(f"{tag}: {image_size(client, tag) / 2**30:.2f} GiB, built in {seconds:.0f} s")
        # the image this one replaced, now untagged: gigabytes of disk otherwise
        client.images.prune(filters={"dangling": True, "label": HASH_LABEL})
    return 1 if "edge" in failed or (failed and len(which) == 1) else 0


def _gpu_base_available(client) -> bool:
    base = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
    try:
        client.images.get(base)
        return True
    except Exception:
        return reachable("https://registry-1.docker.io/v2/")


if __name__ == "__main__":
    sys.exit(main())
