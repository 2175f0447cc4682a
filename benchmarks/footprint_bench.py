"""What each role costs before it trains: memory and start-up time per role kind, over
repeated runs of one experiment (default: the default suite's split setting over
ethernet-1g), and each run's wall time.

Memory is sampled from outside (every --interval s, /proc/<pid>/smaps_rollup of every role
process of the run): the largest RSS, PSS (shared pages divided among the processes that
map them: what limits how many processes fit) and USS (pages no other process maps) each
role reached. Start-up is the record's `ready_s` (process start to ready to train; for the
link emulator, to listening). Prints medians and ranges over the repeats per role kind.

    python benchmarks/footprint_bench.py [--spec FILE] [--repeats 3] [--out build/footprint]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from splitbench.roles.runtime import memory_mb

DEFAULT_SPEC = """\
apiVersion: splitbench.dev/v1alpha1
kind: Experiment
metadata: {name: footprint-split}
spec:
  model: {name: small_cnn, numClasses: 10}
  dataset: {name: fashion_mnist, partition: {kind: iid}, samplesPerSource: 1024, testSamples: 1000}
  training: {epochs: 2, batchSize: 32, optimizer: sgd, lr: 0.01, momentum: 0.9}
  sources: {replicas: 4, device: {profile: paper-source}}
  paradigm: {name: split, splitAfter: 4}
  network: {profile: ethernet-1g}
  seed: 0
"""


def role_of(pid: int) -> str | None:
    """'source-2', 'server-0', 'link-0' for a role process (from its command line: a role
    forked from the fork server has its own), 'forkserver-0' for the fork server."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if "splitbench.executors.forkserver" in argv:
        return "forkserver-0"
    if "role" not in argv:
        return None
    kind = argv[argv.index("role") + 1]
    if "--group" in argv:  # a source group's process
        return f"{kind}-group-{argv[argv.index('--group') + 1]}"
    index = argv[argv.index("--index") + 1] if "--index" in argv else "0"
    return f"{kind}-{index}"


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def sample(root: int, peaks: dict, stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        for pid in descendants(root):
            name = role_of(pid)
            mem = memory_mb(pid) if name else None
            if mem:
                peak = peaks.setdefault(name, {"rss": 0.0, "pss": 0.0, "uss": 0.0})
                for k, v in mem.items():
                    peak[k] = max(peak[k], v)
        stop.wait(interval)


def ready_times(run_dir: Path) -> dict[str, float]:
    out = {}
    for p in run_dir.glob("*.events.jsonl"):
        for line in p.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("event") == "session" and row.get("ready_s") is not None:
                out.setdefault(row["instance"], row["ready_s"])
    return out


def one_run(spec: Path, runs: Path, interval: float, launch: str = "forkserver") -> dict:
    peaks: dict = {}
    stop = threading.Event()
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitbench", "run", str(spec), "--runs", str(runs), "--launch", launch],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = threading.Thread(target=sample, args=(proc.pid, peaks, stop, interval), daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.time() - t0
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"footprint: the run failed ({proc.returncode}): {out[-2000:]}")
    run_dir = max((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return {"wall_s": wall, "peaks": peaks, "ready": ready_times(run_dir)}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}..{max(values):.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=None, help="an Experiment YAML (default: the default suite's split)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    ap.add_argument("--out", default="build/footprint", help="folder for footprint.json")
    ap.add_argument(
        "--launch",
        choices=["forkserver", "spawn"],
        default="forkserver",
        help="roles forked from the local executor's fork server, or each its own process",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(args.spec) if args.spec else Path(tmp) / "footprint.yaml"
        if not args.spec:
            spec.write_text(DEFAULT_SPEC)
        for i in range(args.repeats):
            runs = Path(tmp) / f"runs-{i}"
            runs.mkdir()
            results.append(one_run(spec, runs, args.interval, args.launch))
            print(f"footprint: run {i + 1}/{args.repeats}: {results[-1]['wall_s']:.1f} s", file=sys.stderr)
    (out / "footprint.json").write_text(json.dumps(results, indent=1))
    print(f"launch: {args.launch}")
    print(f"{len(results)} runs; median [min..max] over runs of each kind's largest value in the run")
    print(f"wall time of one run (s): {summary([r['wall_s'] for r in results])}")
    kinds = sorted({name.rsplit("-", 1)[0] for r in results for name in r["peaks"]})
    print(f"{'role':8} {'RSS MB':>22} {'PSS MB':>22} {'USS MB':>22} {'ready s':>22}")
    for kind in kinds:
        cols = []
        for k in ("rss", "pss", "uss"):
            cols.append(
                summary([max(v[k] for n, v in r["peaks"].items() if n.rsplit("-", 1)[0] == kind) for r in results])
            )
        ready = [
            max([v for n, v in r["ready"].items() if n.rsplit("-", 1)[0] == kind] or [float("nan")]) for r in results
        ]
        cols.append(summary(ready))
        print(f"{kind:8} " + " ".join(f"{c:>22}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
