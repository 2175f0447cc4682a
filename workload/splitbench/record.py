"""The run record: every role appends its events to a JSON-lines file as they happen
(a crash loses nothing already written); the executor merges them into one Parquet table.
Every other file of a run folder is replaced in one step (atomic.write_atomic); a reader of
a damaged or partly written run (read_run) gets what was completed and one line per file
that is damaged or missing.

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
  source_gone  a source the run went on without: from the executor (it saw the process end: exit
           code, last step, samples trained) or a server/the aggregator (it fell silent past
           sources.deadline)
  fault    an injected fault (spec.faults) began (state=start), ended (state=end) or never came
           (state=missed), written by the executor
  checkpoint  a role wrote its checkpoint (checkpoint_s, bytes; checkpoint.py)
  restart  the executor started a dead role again (attempt, exit_code, backoff_s)
  resend   a source sent a request again after its peer's restart notice
  redo     a resumed source trained again a step it had recorded after its last checkpoint
           (the same batch and result; its bytes are here, the step is counted once)
  duplicate  a server or aggregator dropped a request it had already served (answered again)
  resume   a restarted server's first step from a source (lost_updates: steps it trained
           after its last checkpoint, whose updates died with it); for a source that had said
           goodbye before the restart, at start-up (departed: true, step: its last)
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_path, write_atomic
from .transport.wire import Traffic

if TYPE_CHECKING:  # pandas only where records are merged and read: no role imports it
    import pandas as pd

KINDS = [t.label for t in Traffic]
BYTE_COLUMNS = [f"{d}_{k}_bytes" for d in ("up", "down") for k in KINDS]
TRAINING_KINDS = [t.label for t in Traffic if t is not Traffic.EVAL]


EVENT_PREFIX = "@splitbench-event "


class EventLog:
    """A role's events, one JSON line each. Line-buffered: each line reaches the kernel as it
    is written, so a SIGKILL loses at most the line being written. No fsync per line (about
    4 ms each on this ext4, against under a microsecond without: it would slow the relay,
    which writes a line per message); the file is synced once when the role closes it."""

    def __init__(self, path: Path, experiment: str, role: str, instance: str, echo: bool | None = None):
        self.path = path
        self.fixed = {"experiment": experiment, "role": role, "instance": instance}
        self._f = open(path, "a", buffering=1)
        if self._f.tell() and not _ends_with_newline(path):  # a restarted role after one killed mid-line:
            self._f.write("\n")  # its first event must not be glued to the cut line
        self.echo = os.environ.get("SPLITBENCH_EVENTS_STDOUT") == "1" if echo is None else echo

    def write(self, event: str, **fields: Any) -> None:
        row = {"event": event, "time": time.time(), **self.fixed, **fields}
        line = json.dumps(row, default=_plain)
        self._f.write(line + "\n")
        if self.echo:
            print(EVENT_PREFIX + line, flush=True)

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def events_from_log(text: str) -> str:
    """The event lines a role printed among its other output, as an events.jsonl text."""
    n = len(EVENT_PREFIX)
    return "".join(line[n:] + "\n" for line in text.splitlines() if line.startswith(EVENT_PREFIX))


def last_step(path: Path) -> int:
    """The highest step a role's events file records (-1: none): what a resumed source
    already recorded, so that a step it trains again is not counted twice."""
    last = -1
    try:
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if row.get("event") == "step":
                    last = max(last, int(row["step"]))
    except OSError:
        pass
    return last


def byte_fields(up: dict, down: dict) -> dict[str, int]:
    """Traffic->bytes counters for each direction, as record columns."""
    out = {}
    for direction, counts in (("up", up), ("down", down)):
        for t, n in counts.items():
            out[f"{direction}_{Traffic(t).label}_bytes"] = int(n)
    return out


def read_events_file(path: Path) -> tuple[list[dict], str | None]:
    """The events of one file, and what is wrong with it (None: whole). Unreadable lines are
    skipped (a role killed mid-line: everything before it is kept). Whole means every line
    reads and the last is the role's closing session event, so a file cut exactly at a line
    end is told from a finished one."""
    data = path.read_bytes()
    rows, bad = [], []
    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last newline: empty unless the file was cut mid-line
    for i, line in enumerate(lines + [tail], 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad.append(i)
    problems = []
    if bad and bad[-1] == len(lines) + 1:
        problems.append(f"last line cut short ({len(tail)} bytes, at byte {len(data)})")
        bad.pop()
    if bad:
        problems.append(f"{len(bad)} unreadable line(s), first line {bad[0]}")
    if not rows or not _closes(rows[-1]):
        problems.append(
            f"{len(rows)} events and no closing session event after them "
            "(the role was stopped before it finished, or the file was cut)"
        )
    return rows, "; ".join(problems) or None


def _closes(row: dict) -> bool:
    """The last event a role writes (roles.runtime: the session's end, with its duration)."""
    return row.get("event") == "session" and "duration_s" in row


def read_events(run_dir: Path) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for p in sorted(run_dir.glob("*.events.jsonl")):
        rows += read_events_file(p)[0]
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

    df = read_events(run_dir)
    write_environment(run_dir, df, executor)
    df = build_record(df, launched_at)
    if not df.empty:
        with atomic_path(run_dir / "record.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    return df


def build_record(df: pd.DataFrame, launched_at: float | None = None) -> pd.DataFrame:
    """The run record from the roles' events (read_events): with the launch time, t, sorted."""
    import pandas as pd

    if launched_at is not None:
        df = pd.concat([df, pd.DataFrame([{"event": "launch", "time": launched_at}])], ignore_index=True)
        df[BYTE_COLUMNS] = df[BYTE_COLUMNS].fillna(0).astype("int64")
    if df.empty:
        return df
    steps = df[df["event"] == "step"]
    start = float((steps["time"] - steps["duration_s"]).min()) if not steps.empty else float(df["time"].min())
    df["t"] = df["time"] - start
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def write_environment(run_dir: Path, df: pd.DataFrame, executor: str | None = None) -> None:
    from .environment import collect

    quota = "none"
    if not df.empty and "cpu_limit" in df:
        mech = df.loc[(df["event"] == "session") & (df.get("status") == "limited"), ["role", "cpu_limit"]].dropna()
        quota = (
            ", ".join(
                f"{role}: {m}"
                for role, m in sorted({(r, str(c).split(":")[0]) for r, c in mech.itertuples(index=False)})
            )
            or "none"
        )
    if executor is None:
        executor = (
            "kubernetes"
            if any(p.name.endswith(".log") and not (run_dir / "targets.json").exists() for p in run_dir.iterdir())
            else "local"
        )
    write_atomic(run_dir / "environment.json", json.dumps(collect(executor, quota), indent=1) + "\n")


def read_environment(run_dir: Path) -> dict:
    p = Path(run_dir) / "environment.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def run_status(run_dir: Path) -> str:
    """The executor's one line (status.txt: '<ok|degraded|failed|interrupted>: what happened')."""
    try:
        return (Path(run_dir) / "status.txt").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@dataclass
class RunRecord:
    """What a reader can use of one run folder: the record (None: nothing usable), where it came
    from ('record.parquet', or 'events' when rebuilt from them) and one line per file that is
    damaged or missing, saying what is wrong and what was done about it."""

    record: pd.DataFrame | None
    source: str
    damage: list[str]


def read_run(run_dir: Path) -> RunRecord:
    """The run's record, checked against the roles' events files. A whole record.parquet is
    used even where an events file was damaged after the merge (the damage is still named).
    An unreadable or missing record.parquet is rebuilt from the events when every events file
    is whole (the executor's launch time is not in them: setup time reads n/a); otherwise the
    run has no usable record."""
    import pandas as pd

    run_dir = Path(run_dir)
    events = {p: read_events_file(p) for p in sorted(run_dir.glob("*.events.jsonl"))}
    damage = [f"{p.name}: {problem}" for p, (_, problem) in events.items() if problem]
    try:
        rec = pd.read_parquet(run_dir / "record.parquet")
    except FileNotFoundError:
        rec, why = None, "missing"
    except Exception as err:  # pyarrow raises several types for a cut or garbled file
        rec, why = None, f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if rec is not None:
        counts = rec["instance"].value_counts() if "instance" in rec else pd.Series(dtype=int)
        for p, (rows, problem) in events.items():
            instances = {r.get("instance") for r in rows} or {p.name.removesuffix(".events.jsonl")}
            merged = int(sum(counts.get(i, 0) for i in instances))
            if len(rows) < merged and not problem:
                damage.append(f"{p.name}: {len(rows)} events, record.parquet has {merged} of its role: cut short")
        if damage:
            damage = [f"{d}; record.parquet is whole and was used" for d in damage]
        return RunRecord(rec, "record.parquet", damage)
    if events and not damage:
        rebuilt = build_record(read_events(run_dir))
        return RunRecord(
            rebuilt,
            "events",
            [
                f"record.parquet: {why}; rebuilt from {len(events)} whole events "
                "files (no launch time in them: setup n/a)"
            ],
        )
    why_not = "no events files" if not events else "events files not whole"
    return RunRecord(None, "", [f"record.parquet: {why}, and {why_not}: run left out"] + damage)


def load(path: Path) -> pd.DataFrame:
    """A run record from a Parquet file or a run folder."""
    import pandas as pd

    p = Path(path)
    return pd.read_parquet(p / "record.parquet" if p.is_dir() else p)
