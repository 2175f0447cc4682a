"""Tensor round trips on loopback: splitbench's transport vs raw pyzmq, in one run.

The peer is a separate process. Three modes, interleaved over several rounds (medians):
  echo  raw pyzmq, the peer sends the received frames straight back: no tensor is ever
        made, so this is the ceiling of the socket path itself;
  raw   a raw pyzmq tensor round trip, as people hand-roll it without pickle: the tensor's
        buffer goes zero-copy, the peer wraps it as a tensor and sends a tensor back;
  ours  splitbench's Message: header frame + tensor frame, checked and counted on both
        sides, the peer decoding and re-encoding a reply as the server does;
  curve ours over CurveZMQ (transport.auth curve, the default since issue 14): the same
        messages encrypted and authenticated; curve/ours is the price of the security.
The target (issue 2) is ours >= 90% of raw at 1 MiB; ours/echo is printed too.

    python benchmarks/transport_bench.py [--rounds 5] [--seconds 0.4]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch
import zmq

from splitbench.transport import Endpoint, Kind, Message, Traffic

MODES = ("echo", "raw", "ours", "curve")
SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20]


def _security(keys: str, instance: str):
    from splitbench.transport import Security, load_keyring
    return Security("curve", load_keyring(keys, instance), domain="bench")


def peer(address: str, mode: str, keys: str = "") -> None:
    ctx = zmq.Context()
    if mode in ("echo", "raw"):
        sock = ctx.socket(zmq.ROUTER)
        sock.bind(address)
        while True:
            frames = sock.recv_multipart(copy=False)
            if len(frames) == 2 and frames[1].bytes == b"stop":
                break
            if mode == "echo":
                sock.send_multipart(frames, copy=False)
            else:
                t = torch.frombuffer(frames[1].buffer, dtype=torch.float32)
                sock.send_multipart([frames[0], memoryview(t.numpy()).cast("B")], copy=False)
    else:
        sec = None
        if mode == "curve":
            sec = _security(keys, "server-0")
            sec.start_authenticator(ctx)
        ep = Endpoint(ctx, zmq.ROUTER, address, bind=True, **({"security": sec} if sec else {}))
        while True:
            who, msg, _ = ep.recv()
            if msg.kind == Kind.BYE:
                break
            ep.send(Message(Kind.TRAIN_REPLY).add("grad", msg.tensors["act"], Traffic.GRADIENT), to=who)
    ctx.destroy(linger=0)


def measure(mode: str, size: int, seconds: float, ctx, addresses) -> float:
    """Payload throughput (MB/s, both directions) of back-to-back round trips."""
    data = torch.ones(size // 4)
    n, t0 = 0, time.perf_counter()
    if mode == "echo":
        sock = addresses["echo"]
        buf = memoryview(data.numpy()).cast("B")
        while time.perf_counter() - t0 < seconds:
            sock.send_multipart([buf], copy=False)
            sock.recv_multipart(copy=False)
            n += 1
    elif mode == "raw":
        sock = addresses["raw"]
        while time.perf_counter() - t0 < seconds:
            sock.send_multipart([memoryview(data.numpy()).cast("B")], copy=False)
            torch.frombuffer(sock.recv(copy=False).buffer, dtype=torch.float32)
            n += 1
    else:
        ep = addresses[mode]
        while time.perf_counter() - t0 < seconds:
            ep.send(Message(Kind.TRAIN, "bench", "source-0").add("act", data, Traffic.ACTIVATION))
            ep.recv()
            n += 1
    return 2 * n * size / (time.perf_counter() - t0) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.4, help="per size, mode and round")
    ap.add_argument("--csv", default="runs/benchmarks/transport.csv")
    args = ap.parse_args()
    ctx = zmq.Context()
    peers, socks = [], {}
    import tempfile

    from splitbench.transport import make_keys
    keys = tempfile.mkdtemp(prefix="splitbench-bench-keys-")
    make_keys(Path(keys), ["source-0", "server-0"])
    for mode in MODES:
        with zmq.Context().socket(zmq.ROUTER) as probe:
            port = probe.bind_to_random_port("tcp://127.0.0.1")
        address = f"tcp://127.0.0.1:{port}"
        p = mp.get_context("spawn").Process(target=peer, args=(address, mode, keys), daemon=True)
        p.start()
        peers.append(p)
        if mode in ("echo", "raw"):
            s = ctx.socket(zmq.DEALER)
            s.connect(address)
            socks[mode] = s
        elif mode == "ours":
            socks["ours"] = Endpoint(ctx, zmq.DEALER, address, bind=False, identity="source-0")
        else:
            socks["curve"] = Endpoint(ctx, zmq.DEALER, address, bind=False, identity="source-0",
                                      security=_security(keys, "source-0"), peer="server-0")
    for mode in MODES:  # warm up connections and allocators
        measure(mode, 1 << 20, 0.3, ctx, socks)
    results: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for size in SIZES:
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                results.setdefault((mode, size), []).append(measure(mode, size, args.seconds, ctx, socks))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    socks["raw"].send_multipart([b"stop"])
    socks["echo"].send_multipart([b"stop"])
    socks["ours"].send(Message(Kind.BYE))
    socks["curve"].send(Message(Kind.BYE))
    for p in peers:
        p.join(5)
    rows = []
    print(f"\n{'size':>8} {'echo MB/s':>10} {'raw MB/s':>10} {'ours MB/s':>10} {'ours/raw':>9} {'ours/echo':>10}"
          f" {'curve MB/s':>11} {'curve/ours':>11}   (medians of {args.rounds} rounds, loopback, payload both ways)")
    for size in SIZES:
        echo, raw, ours, curve = (statistics.median(results[(m, size)]) for m in MODES)
        rows.append((size, echo, raw, ours, ours / raw, ours / echo, curve, curve / ours))
        print(f"{size >> 10:>6}Ki {echo:>10.0f} {raw:>10.0f} {ours:>10.0f} {ours / raw:>9.3f} {ours / echo:>10.3f}"
              f" {curve:>11.0f} {curve / ours:>11.3f}")
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("bytes,echo_MBps,raw_MBps,ours_MBps,ours_over_raw,ours_over_echo,curve_MBps,curve_over_ours\n"
                   + "".join(",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + "\n" for r in rows))
    one_mib = next(r for r in rows if r[0] == 1 << 20)
    verdict = "meets" if one_mib[4] >= 0.9 else "MISSES"
    print(f"at 1 MiB ours reaches {100 * one_mib[4]:.1f}% of a raw pyzmq tensor round trip ({verdict} the 90% "
          f"target) and {100 * one_mib[5]:.1f}% of a bare frame echo; csv: {out}")
    import shutil
    shutil.rmtree(keys, ignore_errors=True)
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
