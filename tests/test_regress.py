import subprocess
import sys

import pytest

from splitbench.cli.regress import compare
from splitbench.data.datasets import DEBIAN_FASHION_MNIST
from conftest import ROOT

BASE = {"a": {"bytes_per_sample_up": 1000.0, "bytes_per_sample_down": 10.0}}


def test_growth_past_tolerance_fails_and_shrinking_is_noted():
    same = {"a": {"bytes_per_sample_up": 1000.0, "bytes_per_sample_down": 10.0}}
    assert compare(same, BASE, 0.01) == ([], [])
    assert compare({"a": {"bytes_per_sample_up": 1009.0, "bytes_per_sample_down": 10.0}}, BASE, 0.01)[0] == []
    failures, _ = compare({"a": {"bytes_per_sample_up": 1011.0, "bytes_per_sample_down": 10.0}}, BASE, 0.01)
    assert failures == ["a: bytes_per_sample_up grew +1.10% (1,000.000 -> 1,011.000)"]
    failures, notes = compare({"a": {"bytes_per_sample_up": 500.0, "bytes_per_sample_down": 10.0}}, BASE, 0.01)
    assert failures == [] and "shrank -50.00%" in notes[0]
    failures, _ = compare({"b": {"bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0}}, BASE, 0.01)
    assert failures == ["a: in the baseline but not measured", "b: measured but has no baseline; run "
                        "'splitbench regress --update'"]


@pytest.mark.integration
@pytest.mark.parametrize("suite, checked", [("default", 7), ("compressed-split-reduced", 10), ("hfsl-reduced", 9)])
def test_suite_bytes_per_sample_match_the_committed_baseline(tmp_path, suite, checked):
    """A short run of every paradigm of the suite: bytes per sample do not depend on the
    number of steps (per budget stage for multi-budget schedules), so it checks the same
    numbers the full suite would produce."""
    if suite in ("default", "hfsl-reduced") and not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the {suite} suite needs Debian's dataset-fashion-mnist (make test installs it as root)")
    r = subprocess.run([sys.executable, "-m", "splitbench", "regress", "--suite",
                        str(ROOT / "benchmarks" / "suites" / f"{suite}.yaml"), "--quick", "--cpu-limit", "off",
                        "--runs", str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{checked} experiments checked" in r.stdout and ": ok" in r.stdout


def test_weights_per_round_are_pinned_too():
    base = {"f": {"bytes_per_sample_up": 0.0, "bytes_per_sample_down": 0.0, "weights_bytes_per_round_up": 100.0}}
    same = {"f": dict(base["f"])}
    assert compare(same, base, 0.01) == ([], [])
    grown = {"f": {**base["f"], "weights_bytes_per_round_up": 120.0}}
    assert compare(grown, base, 0.01)[0] == ["f: weights_bytes_per_round_up grew +20.00% (100.000 -> 120.000)"]
    assert "could not be measured" in compare({"f": {"bytes_per_sample_up": 0.0, "bytes_per_sample_down": 0.0}},
                                              base, 0.01)[0][0]
