"""The developer checks run in `make test` (as `make lint` runs them): ruff's lint rules and
mypy on the typed core (spec, transport, record), both configured in pyproject.toml, and
ruff's format check."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_ruff_lint_passes():
    r = tool("ruff", "check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]


def test_mypy_passes_on_the_typed_core():
    r = tool("mypy", "--cache-dir", "/dev/null")  # files and options: [tool.mypy] in pyproject.toml
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    assert "no issues found in" in r.stdout


def test_ruff_format_check_passes():
    r = tool("ruff", "format", "--check", "--no-cache", ".")
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
