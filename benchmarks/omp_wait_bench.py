"""Why every role runs with OMP_WAIT_POLICY=PASSIVE (roleplan.ROLE_ENV): a split step's edge
part, timed in two processes that hand the cut back and forth as a source and its server do,
with libgomp's default wait policy (threads spin at a barrier for a while) or passive (they sleep).

A pair of processes: the "source" runs small_cnn's first four blocks forward, sends the cut
over a pipe, gets the gradient back and runs its backward; the "server" runs the rest. Both
use 2 intra-op threads, as a role without a CPU quota does on this 2-core machine. Optionally
`--busy N` other processes spin in pure Python beside them (bounded in time), standing for the
other roles and jobs of a shared host. Policies are interleaved (order reversed every round,
fresh processes each time: libgomp reads its policy when torch loads). The figure is the
median edge time per policy and the median of per-round ratios with a 95% interval.

    python benchmarks/omp_wait_bench.py [--rounds 6] [--steps 40] [--busy 0,2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

from splitbench.report.stats import median_ci

POLICIES = ("default", "PASSIVE")  # default: libgomp's, unset (threads spin a while at a barrier, then sleep)
WARMUP = 5


def _server(conn) -> None:
    import torch

    from splitbench.models.small_cnn import small_cnn

    torch.set_num_threads(2)
    part = small_cnn()[4:]
    opt = torch.optim.SGD(part.parameters(), lr=0.01)
    y = torch.zeros(32, dtype=torch.long)
    while (act := conn.recv()) is not None:
        act.requires_grad_()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(part(act), y).backward()
        opt.step()
        conn.send(act.grad)


def pair(steps: int) -> float:
    """Median seconds of the edge's forward + backward over `steps` split steps."""
    import torch

    from splitbench.models.small_cnn import small_cnn

    ours, theirs = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_server, args=(theirs,))
    server.start()
    torch.set_num_threads(2)
    edge = small_cnn()[:4]
    opt = torch.optim.SGD(edge.parameters(), lr=0.01)
    x = torch.randn(32, 1, 28, 28)
    times = []
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        act = edge(x)
        t1 = time.perf_counter()
        ours.send(act.detach())
        grad = ours.recv()
        t2 = time.perf_counter()
        opt.zero_grad()
        act.backward(grad)
        opt.step()
        if i >= WARMUP:
            times.append(t1 - t0 + time.perf_counter() - t2)
    ours.send(None)
    server.join(30)
    return statistics.median(times)


def run_pair(policy: str, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run(
        [sys.executable, __file__, "--pair", str(steps)], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode:
        raise SystemExit(f"pair under {policy} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.split()[-1])


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--busy", default="0,2", help="other busy processes beside the pair, one setting each")
    ap.add_argument("--pair", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pair is not None:
        print(pair(args.pair))
        return 0
    print("small_cnn split after block 4, batch 32, 2 threads per process; edge forward + backward per step")
    for n_busy in (int(b) for b in args.busy.split(",")):
        others = [mp.Process(target=busy, args=(600.0,), daemon=True) for _ in range(n_busy)]
        for p in others:
            p.start()
        try:
            edge: dict[str, list[float]] = {p: [] for p in POLICIES}
            ratios = []
            for r in range(args.rounds):
                order = POLICIES if r % 2 == 0 else POLICIES[::-1]
                got = {p: run_pair(p, args.steps) for p in order}
                for p in POLICIES:
                    edge[p].append(got[p])
                ratios.append(got["default"] / got["PASSIVE"])
        finally:
            for p in others:
                p.terminate()
                p.join()
        med, lo, hi = median_ci(ratios)
        cells = "  ".join(f"{p.lower()} {statistics.median(edge[p]) * 1e3:7.1f} ms" for p in POLICIES)
        print(f"  beside {n_busy} busy processes: {cells}  default/passive x{med:.2f} [{lo:.2f}, {hi:.2f}]")
    print(f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.rounds} rounds per setting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
