"""Write to a temporary file beside the target, then rename it over the target: a reader, or
a crash at any moment, sees the old file or the new one, never half of one. Every file of a
run folder and of a report is written this way (the roles' events files are appended line
by line instead: record.EventLog)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (to_parquet,
    torch.save...). When the block ends without error its content is flushed to disk and
    renamed over `path`; after an error (or Ctrl-C) it is removed and `path` is untouched.
    The temporary name starts with a dot and ends with .tmp, so no reader of run folders
    (*.events.jsonl, spec.yaml, record.parquet) ever picks it up."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        # the data is on disk before the name points at it (else a power loss can leave an
        # empty file under the new name on ext4/xfs); a process crash needs only the rename
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replace `path` with `data` (text is written as UTF-8) in one step."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
