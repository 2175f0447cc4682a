"""The report reads only run records: a model's cost (parameters, FLOPs, activation bytes,
predicted times) is computed when the run is planned (model_cost.json) and the report
builds no model and imports no torch."""
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from splitbench.model_cost_record import FILE, MISSING_NOTE, model_blocks, read_model_cost
from splitbench.models import build_model
from splitbench.models.cost import edge_cost, profile_model
from splitbench.report import figures
from splitbench.spec import load_experiment
from support import ROOT
from support.report_fixtures import fake_run

PATH = f"{ROOT / 'workload'}:{ROOT / 'operator'}"


def _no_torch(code: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter that then says whether torch got imported."""
    return subprocess.run([sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": PATH},
                          timeout=300)


def test_importing_the_report_imports_no_torch():
    got = _no_torch("import splitbench.report.build")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "False"


def test_building_a_report_from_run_folders_imports_no_torch(tmp_path):
    dirs = [fake_run(tmp_path / "runs", "nt-split", r, 0.1, 0.8) for r in (1, 2)]
    got = _no_torch("from pathlib import Path\nfrom splitbench.report.build import build_report\n"
                    f"build_report([Path(p) for p in {[str(d) for d in dirs]!r}], Path({str(tmp_path / 'out')!r}))")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "False"
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    cost = read_model_cost(dirs[0])
    assert summary.loc[0, "edge_params"] == cost["edge_params"]
    assert summary.loc[0, "predicted_epoch_s"] == pytest.approx(cost["predicted"]["epoch_s"])


def test_the_record_holds_the_models_cost_at_the_cut(tmp_path):
    d = fake_run(tmp_path, "mc-split", 1, 0.1, 0.8)
    cost = json.loads((d / FILE).read_text())
    exp = load_experiment(d / "spec.yaml")
    shape = tuple(cost["input_shape"])
    rows = profile_model(build_model("small_cnn", 10, shape), shape)
    assert [b["flops"] for b in cost["blocks"]] == [r.flops for r in rows]
    assert [b["out_bytes"] for b in cost["blocks"]] == [r.out_bytes for r in rows]
    assert (cost["edge_params"], cost["edge_flops"]) == edge_cost(rows, exp.spec.paradigm.split_after)
    assert cost["model"] == "small_cnn" and "FlopCounterMode" in cost["convention"]
    assert cost["predicted"]["model_of"] == "split learning [ours]" and cost["predicted"]["epoch_s"] > 0


def test_a_run_without_model_cost_gets_a_note_not_a_model(tmp_path):
    old = fake_run(tmp_path / "runs", "old-split", 1, 0.1, 0.8)
    (old / FILE).unlink()  # recorded before runs carried their model cost
    new = fake_run(tmp_path / "runs", "new-split", 1, 0.1, 0.8)
    from splitbench.report import build_report
    summary = build_report([old, new], tmp_path / "out").set_index("experiment")
    assert math.isnan(summary.loc["old-split", "edge_params"])
    assert math.isnan(summary.loc["old-split", "predicted_epoch_s"])
    assert summary.loc["new-split", "edge_params"] == read_model_cost(new)["edge_params"]
    page = (tmp_path / "out" / "report.html").read_text()
    assert f"{MISSING_NOTE}: old-split-r1" in page
    predicted = pd.read_csv(tmp_path / "out" / "predicted.csv").set_index("experiment")
    assert predicted.loc["old-split", "note"] == MISSING_NOTE


def test_the_reference_models_file_matches_the_models():
    for m in figures.reference_models():
        assert m == model_blocks(m["model"], m["num_classes"], tuple(m["input_shape"]))



def test_a_suites_model_claims_are_read_from_the_record_not_computed(tmp_path):
    """A model-definition claim (EfficientNet-B2s' parameters) is judged from the figures the
    suite's plan recorded beside its runs; building the report still imports no torch."""
    from splitbench.model_cost_record import write_model_figures
    from splitbench.spec import PaperClaim

    doc = {"claim": "B2s parameters", "source": "HFSL paper, table 2", "paper": 6.424598e6, "tolerance": 0.001,
           "toleranceSource": "a parameter count is exact",
           "metric": "model_params", "model": "efficientnet_b2s"}
    dirs = [fake_run(tmp_path / "runs", "mf-split", 1, 0.1, 0.8)]
    write_model_figures([PaperClaim.model_validate(doc)], tmp_path / "runs")
    got = _no_torch("from pathlib import Path\nfrom splitbench.report.build import build_report\n"
                    "from splitbench.spec import PaperClaim\n"
                    f"build_report([Path({str(dirs[0])!r})], Path({str(tmp_path / 'out')!r}), "
                    f"claims=[PaperClaim.model_validate({doc!r})])")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "False"
    table = pd.read_csv(tmp_path / "out" / "paper_vs_measured.csv")
    assert table.loc[0, "verdict"] == "agrees" and table.loc[0, "measured"] == 6424598
