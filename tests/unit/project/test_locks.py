"""The dependency sets: requirements*.in name the direct dependencies, requirements*.lock pin
every package with hashes (uv, `make lock`), the test lock agrees with the runtime lock, the CPU
torch path keeps the lock's hashes for everything but torch, and only the targets that need
helm install it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))
import locks  # noqa: E402  (tools/ is not a package)

LOCKS = {"requirements.lock": "requirements.in", "requirements-test.lock": "requirements-test.in"}


def direct_pins(path) -> dict[str, str]:
    out = {}
    for line in (ROOT / path).read_text().splitlines():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_with_hashes_and_the_inputs_are_kept(lock):
    blocks = [(name, body) for name, body in locks.blocks((ROOT / lock).read_text()) if name]
    assert len(blocks) > 10
    for name, body in blocks:
        assert re.match(rf"{re.escape(name)}==[^\s;]+", body.lower().replace("_", "-")), body.splitlines()[0]
        assert "--hash=sha256:" in body, f"{lock}: {name} has no hash"
    pinned = locks.pins((ROOT / lock).read_text())
    for name, version in direct_pins(LOCKS[lock]).items():
        assert pinned.get(name) == version, f"{LOCKS[lock]} asks for {name}=={version}, {lock} has {pinned.get(name)}"


def test_the_test_lock_agrees_with_the_runtime_lock_and_has_no_runtime_only_package():
    runtime = locks.pins((ROOT / "requirements.lock").read_text())
    test = locks.pins((ROOT / "requirements-test.lock").read_text())
    assert {n: v for n, v in test.items() if n in runtime and runtime[n] != v} == {}
    assert "torch" not in test and "pytest" not in runtime and "ruff" not in runtime


def test_the_cpu_torch_path_keeps_every_other_package_with_its_hashes():
    text = (ROOT / "requirements.lock").read_text()
    rest = locks.pins(
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "locks.py"), "without-torch", str(ROOT / "requirements.lock")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    full = locks.pins(text)
    dropped = set(full) - set(rest)
    assert {"torch", "torchvision"} <= dropped and all(locks.TORCH_ONLY.match(n) for n in dropped)
    assert any(n.startswith("nvidia-") for n in dropped)  # PyPI's torch brings CUDA; the CPU wheel does not
    assert {"numpy", "sympy", "filelock", "pydantic"} <= set(rest)  # torch's own deps stay locked
    assert locks.main(["torch-pins", str(ROOT / "requirements.lock")]) == 0


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_only_test_and_deploy_install_helm(tmp_path):
    def dry(target: str) -> str:
        r = subprocess.run(
            ["make", "-n", target, f"VENV={tmp_path / 'venv'}", "PYTHON=python3"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return r.stdout + r.stderr

    assert "install_helm" not in dry("bench")
    assert "install_helm" in dry("test") or shutil.which("helm")
    bench = dry("bench")
    assert "--require-hashes" in bench and "tools/locks.py reachable https://download.pytorch.org/whl/cpu" in bench
