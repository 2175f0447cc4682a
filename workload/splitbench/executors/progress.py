"""Progress of a running experiment, read from the roles' event files as they grow."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class Progress:
    def __init__(self, name: str, run_dir: Path, stream=sys.stderr):
        self.name, self.run_dir, self.stream = name, run_dir, stream
        self.offsets: dict[Path, int] = {}
        self.planned: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.samples: dict[str, int] = {}  # per source: samples trained so far
        self.last_step: dict[str, int] = {}  # per source: the last step recorded
        self.cpu_limit: dict[str, str] = {}  # per role: the CPU quota mechanism in force
        self.first_step: float | None = None  # wall time training began (the first step's start)
        self.loss = self.acc = None
        self.up = self.down = 0
        self.started = time.time()
        self.last_print = 0.0
        self.tty = stream.isatty()

    def poll(self) -> None:
        for path in self.run_dir.glob("*.events.jsonl"):
            off = self.offsets.get(path, 0)
            with open(path) as f:
                f.seek(off)
                chunk = f.read()
            end = chunk.rfind("\n") + 1  # a half-written line waits for the next poll
            self.offsets[path] = off + end
            for line in chunk[:end].splitlines():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue
                inst = e.get("instance", "?")
                if e["event"] == "plan":
                    self.planned[inst] = e["planned_steps"]
                elif e["event"] == "step":
                    self.done[inst] = self.done.get(inst, 0) + 1
                    self.samples[inst] = self.samples.get(inst, 0) + int(e.get("samples") or 0)
                    self.last_step[inst] = e.get("step")
                    self.loss = e.get("loss", self.loss)
                    start = e["time"] - (e.get("duration_s") or 0)
                    self.first_step = start if self.first_step is None else min(self.first_step, start)
                elif e["event"] == "session" and e.get("status") == "limited":
                    self.cpu_limit[inst] = e.get("cpu_limit")
                if e["event"] in ("step", "round"):
                    self.up += sum(v for k, v in e.items() if k.startswith("up_") and k.endswith("_bytes"))
                    self.down += sum(v for k, v in e.items() if k.startswith("down_") and k.endswith("_bytes"))
                elif e["event"] == "eval":
                    self.acc = e.get("accuracy")

    def line(self) -> str:
        planned, done = sum(self.planned.values()), sum(self.done.values())
        pct = f"{100 * done / planned:5.1f}%" if planned else "  ...."
        loss = f"loss {self.loss:.3f}" if isinstance(self.loss, float) and self.loss == self.loss else "loss  -   "
        acc = f"acc {self.acc:.3f}" if self.acc is not None else "acc   -  "
        return (
            f"[{self.name}] {pct} steps {done}/{planned or '?'}  {loss}  {acc}  "
            f"up {self.up / 1e6:8.2f} MB  down {self.down / 1e6:8.2f} MB  {time.time() - self.started:6.1f} s"
        )

    def show(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_print < (0.5 if self.tty else 10):
            return
        self.last_print = now
        end = "\r" if self.tty and not force else "\n"
        print(self.line(), end=end, file=self.stream, flush=True)
