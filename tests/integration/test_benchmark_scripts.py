"""`make benchmarks` runs these scripts; each runs here in a short form so that none of them
rots unnoticed (the link benchmark once stopped at its first relay after the relay began
checking experiment ids and keys). The figures they print are not asserted: timing lives in
the benchmarks themselves; only that each finishes, and that its CSV holds a row for every
setting it was given."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def bench(script: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_link_bench_measures_every_rate_and_delay_through_the_relay(tmp_path):
    out = tmp_path / "link.csv"
    done = bench(
        "link_bench.py", "--rates", "50", "--delays", "10", "--seconds", "0.5", "--pings", "5", "--csv", str(out)
    )
    got = {(r["what"], float(r["configured"])): float(r["measured"]) for r in rows(out)}
    assert set(got) == {("rate_mbit", 50), ("relay_delay_ms", 10), ("end_to_end_delay_ms", 10)}, done.stdout
    # the emulator holds the rate: a relay that did not pace would deliver at loopback speed
    # (thousands of Mbit/s); the bound is loose because a 0.5 s stream on a busy host is short
    assert 25 < got["rate_mbit", 50] < 100, done.stdout
    # the relay's own record of the delay it applied: never less than configured
    assert got["relay_delay_ms", 10] >= 10, done.stdout


def test_transport_bench_compares_every_mode_at_a_size(tmp_path):
    out = tmp_path / "transport.csv"
    done = bench("transport_bench.py", "--seconds", "2", "--max-seconds", "2", "--sizes", "64K", "--csv", str(out))
    (row,) = rows(out)
    assert int(row["bytes"]) == 64 << 10, done.stdout
    for mode in ("raw", "framed", "ours", "curve"):
        assert float(row[f"{mode}_MBps"]) > 0, (mode, done.stdout)
    # not a timing goal: a bound that only a broken mode (a lost message, a reply timeout) breaks
    assert 0.3 < float(row["ours_over_raw"]) < 3, done.stdout


def test_overhead_bench_breaks_a_split_step_down(tmp_path):
    out = tmp_path / "overhead.csv"
    done = bench("overhead_bench.py", "--models", "small_cnn", "--steps", "8", "--rounds", "1", "--csv", str(out))
    table = {r["paradigm"]: r for r in rows(out)}
    assert set(table) == {"split", "full_offload"}, done.stdout
    for paradigm, r in table.items():
        assert int(r["steps"]) == 8 - 3, (paradigm, r)  # 3 warm-up steps dropped
        assert float(r["transport_ms"]) > 0, (paradigm, r)  # the breakdown has the wire in it
        assert 0 < float(r["own_share"]) < 0.9, (paradigm, r)  # most of a step is compute
    # who computes what: the split's edge trains its half; full offload's source only sends
    assert float(table["split"]["edge_ms"]) > float(table["full_offload"]["edge_ms"]) * 5, table
    assert float(table["full_offload"]["server_ms"]) > float(table["split"]["server_ms"]), table
