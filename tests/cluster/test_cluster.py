"""`make bench EXECUTOR=kubernetes` on a real cluster, when one is reachable. On kind:
    make cluster images load deploy && .venv/bin/python -m pytest -m cluster tests/cluster/test_cluster.py
Skipped, with the reason, where no cluster answers or the chart is not deployed."""

import os
import subprocess

import pandas as pd
import pytest

from support import ROOT
from support.cluster import why_no_cluster

pytestmark = pytest.mark.cluster


def test_make_bench_on_the_cluster_writes_the_same_report(tmp_path):
    why = why_no_cluster()
    if why:
        pytest.skip(why + " (on kind: make cluster images load deploy)")
    r = subprocess.run(
        [
            "make",
            "bench",
            "EXECUTOR=kubernetes",
            "ARGS=--quick --repeats 1",
            f"RUNS={tmp_path / 'runs'}",
            f"OUT={tmp_path / 'report'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert len(summary) == 7 and (summary["status"] == "ok").all(), summary[["experiment", "status"]]
    assert (summary.loc[summary["paradigm"] != "centralized", "bytes_per_sample_up"] > 0).all()
