"""docs/adding-a-paradigm.md, followed literally: its blocks are applied to a copy of the
repository (file=PATH: a new file; append=PATH: added at the end), its shell lines are run
there, and the tiny experiment it runs must finish and send what the page says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from support import ROOT

DOC = ROOT / "docs" / "adding-a-paradigm.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
COPY = ("workload", "operator", "benchmarks", "helm", "docs", "examples", "README.md")


def blocks():
    return [(lang, info.strip(), body) for lang, info, body in BLOCK.findall(DOC.read_text())]


def test_the_page_has_every_kind_of_step():
    infos = [info for _, info, _ in blocks()]
    assert "file=workload/splitbench/paradigms/split_fp16.py" in infos
    assert infos.count("append=workload/splitbench/registry.py") == 2  # the paradigm and the model
    assert "append=benchmarks/networks.yaml" in infos
    assert any(lang == "sh" and "splitbench run" in body for lang, _, body in blocks())


@pytest.mark.integration
def test_following_the_page_adds_a_paradigm_model_and_profile_that_run(tmp_path):
    repo = tmp_path / "repo"
    for name in COPY:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    env = {
        **os.environ,
        "PYTHONPATH": f"{repo / 'workload'}{os.pathsep}{repo / 'operator'}",
        "SPLITBENCH_BENCHMARKS": str(repo / "benchmarks"),
    }
    for lang, info, body in blocks():
        if info.startswith("file="):
            path = repo / info.removeprefix("file=")
            assert not path.exists(), f"{path} exists already: the page would overwrite it"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif info.startswith("append="):
            path = repo / info.removeprefix("append=")
            path.write_text(path.read_text().rstrip("\n") + "\n" + body)
        elif lang == "sh":
            for line in filter(None, (x.strip() for x in body.splitlines())):
                cmd = line.replace("splitbench ", f"{sys.executable} -m splitbench ", 1)
                r = subprocess.run(cmd, shell=True, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
                assert r.returncode == 0, f"{line}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    # what the page says shows up: the CRD and the registry's page list the new names
    crd = (repo / "helm/splitbench/crds/experiments.splitbench.dev.yaml").read_text()
    assert "- split_fp16" in crd and "- tiny_cnn" in crd and "- fixed-wireless" in crd
    page = (repo / "docs/registries.md").read_text()
    assert "`split_fp16`" in page and "`tiny_cnn`" in page and "`fixed-wireless`" in page
    run = repo / "runs" / "walkthrough" / "split-fp16"
    assert (run / "status.txt").read_text().startswith("ok"), (run / "status.txt").read_text()
    rec = pd.read_parquet(run / "record.parquet")
    steps = rec[(rec["event"] == "step") & (rec["role"] == "source")]
    assert len(steps) == 2
    assert (steps["up_activation_bytes"] / steps["samples"] == 8 * 14 * 14 * 2).all()  # float16: 2 bytes a value
