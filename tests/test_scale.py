"""Many sources on one machine (issue 17, item 4): 16 sources of split small_cnn, one
process each, train a few steps with no message lost and each source's private memory under
a bound taken from measurement (benchmarks/scale_bench.py runs the same experiment)."""
from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from scale_bench import mem_available_mb, measure  # noqa: E402

pytestmark = pytest.mark.integration

# USS (private pages) at the end of a small_cnn source with PyPI's torch 2.14 (CUDA build):
# ~290 MB is torch's import, ~80 MB more its optimizer's first step (which imports
# torch._dynamo); measured 440-480 MB for the whole source on a loaded 2-core machine.
SOURCE_USS_BOUND_MB = 600


def test_sixteen_sources_lose_no_message_and_stay_under_the_memory_bound(tmp_path):
    row = measure(16, steps=2, runs=tmp_path, timeout_s=900)
    assert row["ok"], row["message"]
    assert row["lost_messages"] == 0
    assert 0 < row["source_uss_mb_max"] < SOURCE_USS_BOUND_MB, row
    assert row["link_rss_mb_max"] < 200, row  # the relay holds no torch


def test_the_memory_guard_stops_a_run_before_the_machine_runs_out(tmp_path):
    floor = mem_available_mb() + 1e6  # already below: the guard stops the roles at once
    row = measure(2, steps=2, runs=tmp_path, timeout_s=300, memory_floor_mb=floor)
    assert not row["ok"] and row["message"].startswith("stopped by the memory guard"), row
