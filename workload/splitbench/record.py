"""The run record: every role appends its events to a JSON-lines file as they happen
(a crash loses nothing already written); the executor merges them into one Parquet table.

Events (column `event`):
  step     one training step of a source (or the centralized trainer)
  eval     held-out accuracy at the end of an epoch
  server   one request served by the server
  round    a federated round's weight exchange with the aggregator (a source's or a server's)
  aggregate  one partition's round averaged by the aggregator
  resplit  the aggregator moved hfsl's cut between rounds (from, to, the powers it saw)
  load     a device's other work changed (its load schedule), with the quota now in force
  link     one message through the link emulator
  control  a source's session messages (hello, bye): bytes outside steps and evals
  launch   when the executor started the roles
  session  role start/stop, limits in force, errors
  outage   the link emulator took the link down (state=down) or brought it back (state=up)
On Kubernetes a pod's files die with it, so each role also prints every event to its log,
one line each behind EVENT_PREFIX (SPLITBENCH_EVENTS_STDOUT=1, set by the operator's
builders); the Kubernetes executor reads the pods' logs back into the same files.
Column t is seconds since training began (the start of the first step), so times to an
accuracy compare paradigms, not process start-up; setup before that has negative t.
Bytes columns: up_<kind>_bytes / down_<kind>_bytes, kinds as in transport.Traffic.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .transport.wire import Traffic

if TYPE_CHECKING:  # pandas only where records are merged and read: no role imports it
    import pandas as pd

KINDS = [t.label for t in Traffic]
BYTE_COLUMNS = [f"{d}_{k}_bytes" for d in ("up", "down") for k in KINDS]
TRAINING_KINDS = [t.label for t in Traffic if t is not Traffic.EVAL]


EVENT_PREFIX = "@splitbench-event "


class EventLog:
    def __init__(self, path: Path, experiment: str, role: str, instance: str, echo: bool | None = None):
        self.path = path
        self.fixed = {"experiment": experiment, "role": role, "instance": instance}
        self._f = open(path, "a", buffering=1)
        self.echo = os.environ.get("SPLITBENCH_EVENTS_STDOUT") == "1" if echo is None else echo

    def write(self, event: str, **fields: Any) -> None:
        row = {"event": event, "time": time.time(), **self.fixed, **fields}
        line = json.dumps(row, default=_plain)
        self._f.write(line + "\n")
        if self.echo:
            print(EVENT_PREFIX + line, flush=True)

    def close(self) -> None:
        self._f.close()


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def events_from_log(text: str) -> str:
    """The event lines a role printed among its other output, as an events.jsonl text."""
    n = len(EVENT_PREFIX)
    return "".join(line[n:] + "\n" for line in text.splitlines() if line.startswith(EVENT_PREFIX))


def byte_fields(up: dict, down: dict) -> dict[str, int]:
    """Traffic->bytes counters for each direction, as record columns."""
    out = {}
    for direction, counts in (("up", up), ("down", down)):
        for t, n in counts.items():
            out[f"{direction}_{Traffic(t).label}_bytes"] = int(n)
    return out


def read_events(run_dir: Path) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for p in sorted(run_dir.glob("*.events.jsonl")):
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a role killed mid-line: keep everything before it
    df = pd.DataFrame(rows)
    for c in BYTE_COLUMNS:
        if c not in df:
            df[c] = 0
        df[c] = df[c].fillna(0).astype("int64")
    return df


def merge(run_dir: Path, launched_at: float | None = None, executor: str | None = None) -> pd.DataFrame:
    """Write run_dir/record.parquet from the roles' event files and return it, and
    run_dir/environment.json: where it was measured (environment.collect). executor: the
    executor's name; when not given, kubernetes if the roles' logs came from pods, else local."""
    import pandas as pd

    df = read_events(run_dir)
    write_environment(run_dir, df, executor)
    if launched_at is not None:
        df = pd.concat([df, pd.DataFrame([{"event": "launch", "time": launched_at}])], ignore_index=True)
        df[BYTE_COLUMNS] = df[BYTE_COLUMNS].fillna(0).astype("int64")
    if df.empty:
        return df
    steps = df[df["event"] == "step"]
    start = float((steps["time"] - steps["duration_s"]).min()) if not steps.empty else float(df["time"].min())
    df["t"] = df["time"] - start
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    df.to_parquet(run_dir / "record.parquet", index=False)
    return df


def write_environment(run_dir: Path, df: pd.DataFrame, executor: str | None = None) -> None:
    from .environment import collect

    quota = "none"
    if not df.empty and "cpu_limit" in df:
        mech = df.loc[(df["event"] == "session") & (df.get("status") == "limited"), ["role", "cpu_limit"]].dropna()
        quota = ", ".join(f"{role}: {m}" for role, m in sorted({(r, str(c).split(":")[0])
                                                               for r, c in mech.itertuples(index=False)})) or "none"
    if executor is None:
        executor = "kubernetes" if any(p.name.endswith(".log") and not (run_dir / "targets.json").exists()
                                       for p in run_dir.iterdir()) else "local"
    (run_dir / "environment.json").write_text(json.dumps(collect(executor, quota), indent=1) + "\n")


def read_environment(run_dir: Path) -> dict:
    p = Path(run_dir) / "environment.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def load(path: Path) -> pd.DataFrame:
    """A run record from a Parquet file or a run folder."""
    import pandas as pd

    p = Path(path)
    return pd.read_parquet(p / "record.parquet" if p.is_dir() else p)
