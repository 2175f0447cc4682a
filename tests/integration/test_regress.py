"""splitbench regress: bytes per sample pinned exactly per paradigm and message kind, both ways;
time ratios within the repeats' spread; renaming an experiment changes no byte."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitbench.cli.main import main
from splitbench.cli.regress import BYTE_METRICS, change_table, check_timing, compare, measure_run
from splitbench.data.datasets import DEBIAN_FASHION_MNIST
from splitbench.transport.wire import Kind, Message, Traffic, encode
from support import ROOT

import torch

SUITES = {"default": 7, "compressed-split-reduced": 10, "hfsl-reduced": 11}
# one setting per paradigm (each stage of the staged ones), perturbed in every message kind
PER_PARADIGM = {
    "default": [
        "default-centralized",
        "default-full-offload-uint8-wifi6",
        "default-split-s4-wifi6",
        "default-early-exit-s4-wifi6",
    ],
    "compressed-split-reduced": [
        "compressed-split-reduced-wifi6-cs-s4-fixed-b4",
        "compressed-split-reduced-wifi6-cs-s4-deprune-b4-128@",
    ],
    "hfsl-reduced": ["hfsl-reduced-fedavg-wifi6", "hfsl-reduced-hfsl-s2-wifi6", "hfsl-reduced-hfsl-moving-wifi6@"],
}


def test_any_change_either_way_fails_with_a_table_and_zero_baselines_work():
    base = {"a": {"up_activation": 1000.0, "down_gradient": 0.0}}
    assert compare({"a": dict(base["a"])}, base) == []
    for metric in base["a"]:
        for delta in (+1, -1, +1e-6):
            moved = {"a": {**base["a"], metric: base["a"][metric] + delta}}
            rows = compare(moved, base)
            assert [(k, m) for k, m, _, _ in rows] == [("a", metric)], (metric, delta)
    rows = compare({"b": {"up_activation": 1.0}}, base)
    assert {(k, m) for k, m, _, _ in rows} == {("a", "up_activation"), ("a", "down_gradient"), ("b", "up_activation")}
    table = change_table(compare({"a": {"up_activation": 999.0, "down_gradient": 0.0}}, base))
    assert "up_activation" in table and "-1" in table and "1,000" in table


def test_timing_fails_only_beyond_the_spread_of_the_repeats():
    base = {"reference": "ref", "ratios": {"s": {"step_time": {"mean": 2.0, "std": 0.1, "n": 3}}}}
    fails, lines = check_timing({"s": {"step_time": [2.05, 1.98, 2.1]}}, base)
    assert fails == [] and "within" in lines[0]
    fails, lines = check_timing({"s": {"step_time": [4.0, 4.1, 3.9]}}, base)
    assert len(fails) == 1 and "BEYOND" in fails[0]
    fails, lines = check_timing(
        {"s": {"step_time": [9.0]}}, {"ratios": {"s": {"step_time": {"mean": 2.0, "std": math.nan, "n": 1}}}}
    )
    assert fails == [] and "not checked" in lines[0]


def test_the_header_carries_a_fixed_size_id_whatever_the_name():
    def size(name):
        m = Message(Kind.TRAIN, name, "source-0", 1, 2).add("x", torch.zeros(4, 3), Traffic.ACTIVATION)
        return sum(len(bytes(f)) for f in encode(m))

    assert size("a") == size("a-much-longer-experiment-name-of-sixty-three-characters-xxxxxxx") == size("")


def _run_suite(tmp_path, suite):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "splitbench",
            "regress",
            "--suite",
            str(ROOT / "benchmarks" / "suites" / f"{suite}.yaml"),
            "--quick",
            "--cpu-limit",
            "off",
            "--runs",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )


@pytest.fixture(scope="module", params=list(SUITES))
def suite_runs(request, tmp_path_factory):
    suite = request.param
    if suite in ("default", "hfsl-reduced") and not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the {suite} suite needs Debian's dataset-fashion-mnist (make test installs it as root)")
    existing = os.environ.get("SPLITBENCH_REGRESS_RUNS")  # reuse runs/<suite>/ of an earlier regress --suite
    if existing:
        runs = Path(existing) / suite
        return (
            suite,
            runs,
            subprocess.run(
                [sys.executable, "-m", "splitbench", "regress", "--runs", str(runs)],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=ROOT,
            ),
        )
    tmp = tmp_path_factory.mktemp(suite)
    return suite, tmp / suite, _run_suite(tmp, suite)


@pytest.mark.integration
@pytest.mark.slow
def test_suite_bytes_per_sample_match_the_committed_baseline(suite_runs):
    """A short run of every paradigm of the suite: bytes per sample do not depend on the
    number of steps (per budget stage and per cut for staged runs), so it checks the same
    numbers the full suite would produce."""
    suite, _, r = suite_runs
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{SUITES[suite]} experiments checked" in r.stdout and ": ok" in r.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_every_one_byte_perturbation_fails_and_the_baseline_passes(suite_runs, tmp_path, capsys):
    """For one setting of each paradigm (every stage of staged ones) and every message kind in
    both directions (and weights per round): the committed baseline +1 and -1 byte per sample
    fails `splitbench regress`; the baseline itself passes."""
    suite, runs, r = suite_runs
    assert r.returncode == 0, r.stdout + r.stderr
    committed = json.loads((ROOT / "benchmarks" / "baselines" / f"{suite}.json").read_text())
    path = tmp_path / "baseline.json"

    def regress(doc) -> int:
        path.write_text(json.dumps(doc))
        return main(["regress", "--runs", str(runs), "--baseline", str(path)])

    assert regress(committed) == 0
    keys = [
        k
        for k in committed["bytes"]
        for want in PER_PARADIGM[suite]
        if k == want or (want.endswith("@") and k.startswith(want))
    ]
    assert len(keys) >= len(PER_PARADIGM[suite])
    if suite == "hfsl-reduced":
        assert {k.split("@")[1] for k in keys if "@" in k} == {"split2", "split4"}  # the split moved
    checked = 0
    for key in keys:
        metrics = committed["bytes"][key]
        assert set(BYTE_METRICS) <= set(metrics)
        for metric in metrics:
            for delta in (+1, -1):
                doc = json.loads(json.dumps(committed))
                doc["bytes"][key][metric] += delta
                capsys.readouterr()
                assert regress(doc) == 1, (key, metric, delta)
                err = capsys.readouterr().err
                assert key in err and metric in err, err
                checked += 1
    assert checked >= 2 * 12 * len(PER_PARADIGM[suite])


@pytest.mark.integration
@pytest.mark.slow
def test_renaming_an_experiment_leaves_its_bytes_per_sample_unchanged(tmp_path, write_spec):
    from support import experiment_doc

    measured = []
    for name in ("a", "a-renamed-to-something-much-longer-than-before-0123456789"):
        spec = write_spec(
            experiment_doc(name, training={"epochs": 1, "batchSize": 16, "maxStepsPerEpoch": 2}), f"{name}.yaml"
        )
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "splitbench",
                "run",
                str(spec),
                "--runs",
                str(tmp_path / name),
                "--cpu-limit",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        (values,) = measure_run(tmp_path / name / name).values()
        measured.append(values)
    assert measured[0] == measured[1] and measured[0]["up_activation"] > 0 and measured[0]["up_control"] > 0
