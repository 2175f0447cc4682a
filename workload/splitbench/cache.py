"""The on-disk cache (SPLITBENCH_CACHE, default ~/.cache/splitbench): what every role of
every run would otherwise recompute (decoded datasets, message caps). Entries are keyed
by what they were made from and written atomically, so roles that start together may all
miss, all write, and every reader still sees one whole entry or none."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    return Path(os.environ.get("SPLITBENCH_CACHE") or Path.home() / ".cache" / "splitbench")


def key_of(*parts: object, files: tuple[Path, ...] = ()) -> str:
    """A short hash of the parts and of each file's name, size and modification time."""
    h = hashlib.sha256(repr(parts).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def write_dir_atomic(final: Path, fill: Callable[[Path], None]) -> Path:
    """Create the folder `final` by fill(tmp) in a sibling temporary folder renamed into
    place; if another process got there first, keep its folder and drop ours."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
