"""Helpers for installing from the hash-locked requirement sets (standard library only: it runs
before the venv has anything in it).

  python3 tools/locks.py reachable URL        exit 0 when URL answers within 5 s (the torch CPU index)
  python3 tools/locks.py torch-pins LOCK [L]  'torch==V+L torchvision==W+L' for the versions in LOCK (L: cpu)
  python3 tools/locks.py without-torch LOCK   LOCK less torch, torchvision and the CUDA packages
                                              that only PyPI's torch wheel needs

requirements.lock is resolved against PyPI (`make lock`), whose Linux torch wheel pulls in the
CUDA libraries (several GB). Where the CPU index is reachable, `make` installs torch and
torchvision from it (same versions, +cpu) and everything else from the lock with its hashes."""

from __future__ import annotations

import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

# packages that come with PyPI's torch wheel only (its CUDA runtime), or are torch itself
TORCH_ONLY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def reachable(url: str, timeout: float = 5) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
        return True
    except urllib.error.HTTPError as err:
        return err.code < 500  # it answered
    except Exception:
        return False


def blocks(text: str) -> list[tuple[str | None, str]]:
    """(package name or None for comments, its lines) in file order; a requirement's block is
    its `name==version \\` line and the indented hash and `# via` lines under it."""
    out: list[tuple[str | None, str]] = []
    for line in text.splitlines(keepends=True):
        if line[:1].isspace() and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
            out.append((m.group(1).lower().replace("_", "-") if m else None, line))
    return out


def pins(text: str) -> dict[str, str]:
    return {name: re.search(r"==\s*([^\s;\\]+)", body).group(1) for name, body in blocks(text) if name}


def main(argv: list[str]) -> int:
    if (
        len(argv) not in (2, 3)
        or argv[0] not in ("reachable", "torch-pins", "without-torch")
        or (len(argv) == 3 and argv[0] != "torch-pins")
    ):
        print(__doc__, file=sys.stderr)
        return 2
    what, arg = argv[:2]
    label = argv[2] if len(argv) == 3 else "cpu"  # the wheel index's local version: cpu, cu126, ...
    if what == "reachable":
        return 0 if reachable(arg) else 1
    text = Path(arg).read_text()
    if what == "torch-pins":
        versions = pins(text)
        print(" ".join(f"{p}=={versions[p].split('+')[0]}+{label}" for p in ("torch", "torchvision")))
    else:
        sys.stdout.write("".join(body for name, body in blocks(text) if not (name and TORCH_ONLY.match(name))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
