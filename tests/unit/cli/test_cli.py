"""The command line: --help and --version load no heavy module, the internal `role` command
stays out of --help, the input flags reach the spec loader, exit statuses (0 ok, 1 a failed run
or check, 2 bad usage or spec), --set overrides and --format json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import ROOT, experiment_doc


def splitbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "splitbench", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_help_and_version_import_neither_torch_nor_pandas():
    probe = (
        "import sys; from splitbench.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'pandas', 'zmq') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "COMMAND" in out.stdout and "bench" in out.stdout
    assert "  role" not in out.stdout and "SUPPRESS" not in out.stdout  # internal: started by executors
    version = splitbench("--version")
    assert version.returncode == 0 and version.stdout.startswith("splitbench ")


def test_a_trace_outside_the_allowed_folders_needs_trace_dir(tmp_path):
    trace = tmp_path / "traces" / "t.txt"
    trace.parent.mkdir()
    trace.write_text("0 100\n1 50\n")
    doc = experiment_doc(name="traced")
    doc["spec"]["network"] = {"profile": "ethernet-1g", "trace": str(trace)}
    spec = tmp_path / "traced.yaml"
    spec.write_text(yaml.safe_dump(doc))
    refused = splitbench("validate", str(spec))
    assert refused.returncode != 0 and "--trace-dir" in refused.stderr and "100" not in refused.stderr
    accepted = splitbench("validate", str(spec), "--trace-dir", str(trace.parent))
    assert accepted.returncode == 0, accepted.stderr


class _FakeExecutor:
    """Stands in for an executor: records what it was asked to run, fails when told to."""

    def __init__(self, fail: bool = False):
        self.fail, self.ran = fail, []

    def run(self, exp):
        from splitbench.executors.base import RunResult

        self.ran.append(exp)
        return RunResult(exp.name, Path("/nonexistent") / exp.name, not self.fail, "fake", 0.0)


def test_exit_status_is_0_ok_1_failed_run_2_bad_usage_or_spec(tmp_path, write_spec, monkeypatch, capsys):
    from splitbench.cli import run as run_cmd
    from splitbench.cli.main import main

    spec = write_spec(experiment_doc(name="codes"))
    for fail, want in ((False, 0), (True, 1)):
        monkeypatch.setattr(run_cmd, "make_executor", lambda args, f=fail: _FakeExecutor(f))
        assert main(["run", str(spec)]) == want
    bad = write_spec(experiment_doc(name="codes", training={"epochs": 0}), "bad.yaml")
    assert main(["run", str(bad)]) == 2 and "training.epochs" in capsys.readouterr().err
    assert main(["validate", str(bad)]) == 2
    assert main(["validate", str(spec)]) == 0
    assert main(["bench", str(spec), "--repeats", "0"]) == 2
    assert "--repeats must be at least 1" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors
        main(["run"])
    assert usage.value.code == 2
    stale = tmp_path / "crd.yaml"
    stale.write_text("old\n")
    assert main(["crd", "--check", str(stale)]) == 1  # a check that finds a difference: 1, as a regression


def test_set_overrides_a_field_before_validation(write_spec, monkeypatch, capsys):
    from splitbench.cli import run as run_cmd
    from splitbench.cli.main import main

    fake = _FakeExecutor()
    monkeypatch.setattr(run_cmd, "make_executor", lambda args: fake)
    spec = write_spec(experiment_doc(name="over"))
    assert (
        main(
            [
                "run",
                str(spec),
                "--set",
                "spec.training.epochs=3",
                "--set",
                "spec.dataset.samples_per_source=64",
                "--set",
                "spec.network.profile=wifi6",
                "--set",
                "metadata.name=renamed",
            ]
        )
        == 0
    )
    (exp,) = fake.ran
    assert exp.spec.training.epochs == 3 and isinstance(exp.spec.training.epochs, int)  # a YAML scalar, not "3"
    assert exp.spec.dataset.samples_per_source == 64 and exp.spec.network.profile == "wifi6"
    assert exp.name == "renamed"
    # an unknown path: exit 2, one line naming it and the fields there
    assert main(["run", str(spec), "--set", "spec.trainig.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'trainig'" in err and "training" in err
    assert main(["run", str(spec), "--set", "spec.training.epochs.x=3"]) == 2
    assert main(["bench", str(spec), "--set", "noequals"]) == 2
    # the value is validated as if it had been written in the file
    assert main(["run", str(spec), "--set", "spec.training.epochs=-1"]) == 2
    assert "training.epochs" in capsys.readouterr().err
    assert len(fake.ran) == 1


def test_set_on_a_suite_holds_for_every_run_over_the_matrix():
    from splitbench.spec import load_suite

    suite = load_suite(
        ROOT / "benchmarks" / "suites" / "default.yaml",
        ["spec.network.profile=wifi6", "spec.training.epochs=1", "spec.repeats=1"],
    )
    runs = suite.runs()
    assert suite.spec.repeats == 1 and len(runs) == 4  # the network axis collapsed to wifi6: 4 paradigms
    assert all(r.spec.training.epochs == 1 for r in runs)
    assert {r.spec.network.profile for r in runs if r.spec.uses_network} == {"wifi6"}


@pytest.mark.slow
def test_format_json_prints_the_tables_as_json(tmp_path, capsys):
    from support.report_fixtures import fake_suite
    from splitbench.cli.main import main

    assert main(["profile", "small_cnn", "--format", "json"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["model"] == "small_cnn" and prof["params"] == sum(b["params"] for b in prof["blocks"])
    runs = tmp_path / "runs"
    fake_suite(runs)
    baseline = tmp_path / "baseline.json"
    assert main(["regress", "--runs", str(runs), "--baseline", str(baseline), "--update", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["updated"] is True
    assert main(["regress", "--runs", str(runs), "--baseline", str(baseline), "--format", "json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is True and verdict["bytes_changed"] == []
    doc = json.loads(baseline.read_text())
    key = next(iter(doc["bytes"]))
    doc["bytes"][key]["up_activation"] = doc["bytes"][key].get("up_activation", 0) + 1
    baseline.write_text(json.dumps(doc))
    assert main(["regress", "--runs", str(runs), "--baseline", str(baseline), "--format", "json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is False and [c["metric"] for c in verdict["bytes_changed"]] == ["up_activation"]
    assert main(["report", str(runs), "--out", str(tmp_path / "report"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_bench_format_json_prints_the_report_tables(tmp_path, write_spec, monkeypatch, capsys):
    from support.report_fixtures import fake_run
    from splitbench.cli import bench as bench_cmd
    from splitbench.cli.main import main
    from splitbench.executors.base import RunResult

    class Recorded:  # leaves a synthetic run folder (report_fixtures) for every run it is given
        def run(self, exp):
            d = fake_run(tmp_path / "made", exp.name, 1, 0.1, 0.8)
            return RunResult(exp.name, d, True, "synthetic", 0.0)

    monkeypatch.setattr(bench_cmd, "make_executor", lambda args: Recorded())
    spec = write_spec(experiment_doc(name="benchjson"))
    out = tmp_path / "report"
    assert main(["bench", str(spec), "--runs", str(tmp_path / "runs"), "--out", str(out), "--format", "json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out) == json.loads((out / "report.json").read_text())
    assert "report:" in printed.err and "report:" not in printed.out


def test_plan_format_json_and_set(write_spec, capsys):
    from splitbench.cli.main import main

    spec = write_spec(experiment_doc(name="planjson"))
    assert main(["plan", str(spec), "--format", "json", "--set", "spec.training.batchSize=16", "--memory", "1Gi"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["memory_budget_bytes"] == 2**30 and plan["best_cut"] in [c["cut"] for c in plan["cuts"]]
    assert all(c["fits"] for c in plan["cuts"]) and {"hierarchical_s", "split_s"} <= set(plan["cuts"][0])
    assert main(["plan", str(spec), "--memory", "12 apples"]) == 2
