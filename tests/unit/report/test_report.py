"""The report built from run folders: spread, ties, units, links, environment, CSV/JSON, make report."""
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from support.report_fixtures import fake_suite
from splitbench.report import build_report
from support import ROOT


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = fake_suite(root / "fake")
    out = root / "report"
    summary = build_report(dirs, out, target_accuracy=0.7, title="fake suite")
    return root, dirs, out, summary


def test_noise_is_a_tie_and_a_slower_link_is_ranked_apart(built):
    _, _, out, _ = built
    rank = pd.read_csv(out / "ranking.csv")
    rank["tied_with"] = rank["tied_with"].fillna("")
    tp = rank[rank["metric"] == "samples_per_s_per_source"].set_index("setting")
    assert tp.at["fake-split-eth-a", "rank"] == tp.at["fake-split-eth-b", "rank"] == 1
    assert "fake-split-eth-b" in tp.at["fake-split-eth-a", "tied_with"]
    assert tp.at["fake-split-lowrate", "rank"] == 3 and tp.at["fake-split-lowrate", "tied_with"] == ""
    acc = rank[rank["metric"] == "final_accuracy"].set_index("setting")
    assert acc.at["fake-split-eth-a", "rank"] == acc.at["fake-split-eth-b", "rank"] == 1
    assert acc.at["fake-split-lowrate", "rank"] == 3
    text = (out / "ranking.txt").read_text()
    assert "Welch" in text and "tied with" in text


def test_summary_has_mean_spread_and_interval_without_the_failed_run(built):
    _, _, out, summary = built
    low = summary.set_index("experiment").loc["fake-split-lowrate"]
    assert low["repeats"] == 3 and low["seeds"] == "0 1 2" and "failed" in low["left_out"]
    assert low["status"] == "3 ok, 1 failed" and summary.set_index("experiment").at["fake-split-eth-a", "status"] == "ok"
    rates = [32 / 0.30, 32 / 0.31, 32 / 0.29]
    assert low["samples_per_s_per_source"] == pytest.approx(sum(rates) / 3)
    assert low["samples_per_s_per_source_ci_low"] < low["samples_per_s_per_source"] < \
        low["samples_per_s_per_source_ci_high"]
    assert low["bytes_per_sample_up_std"] == 0  # exact: the same every repeat
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 10 and set(runs["seed"]) >= {0, 1, 2, 101, 102, 103}


def test_html_reads_like_a_paper(built):
    root, dirs, out, _ = built
    page = (out / "report.html").read_text()
    visible = re.sub(r"<[^>]+>", " ", re.sub(r"src='data:[^']+'", "", page))
    assert not re.search(r"\bnan\b", visible, re.I), "a NaN cell"
    assert not re.search(r"\d\.\d+e[+-]\d", visible), "scientific notation"
    assert "KiB" in visible and " ms" in visible and "n/a" in visible
    assert "±" in visible
    for header in ("Environment", "Ranking", "Traffic", "Time", "Accuracy", "Cost model"):
        assert f"<h2>{header}</h2>" in page
    assert "cpu_model" in page and "git_commit" in page and "libzmq" in page
    assert "Left out of means" in page and "fake-split-lowrate-r4: failed" in page
    for row in re.findall(r"<tr>.*?</tr>", page, re.S):
        assert row.count("<th") + row.count("<td") <= 10, "a table wider than 10 columns"
    links = re.findall(r"href='([^']+)'", page)
    assert len(links) >= 10 * 4
    for link in links:
        assert (out / link / "spec.yaml").exists(), link
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 6
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_json_and_csv_hold_the_same_tables(built, tmp_path):
    root, _, out, _ = built
    data = json.loads((out / "report.json").read_text())
    for name in ("runs", "summary", "ranking", "environment"):
        assert len(data[name]) == len(pd.read_csv(out / f"{name}.csv")), name
    assert data["environment"][0]["runs"] == 10 and data["environment"][0]["field"] == "cpu_model"
    r = subprocess.run([sys.executable, "-m", "splitbench", "report", str(root / "fake"), "--out",
                        str(tmp_path / "r"), "--format", "json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {row["setting"] for row in json.loads(r.stdout)["summary"]} == {
        "fake-split-eth-a", "fake-split-eth-b", "fake-split-lowrate"}


def test_report_names_a_folder_without_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "splitbench", "report", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "no run folders" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_make_report_rebuilds_from_runs(tmp_path):
    venv = Path(sys.executable).parent.parent
    if subprocess.run(["make", "-q", "deps", f"VENV={venv}"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip(f"{venv} is not the installed venv make expects (run make deps)")
    fake_suite(tmp_path / "runs" / "fake")
    suite = tmp_path / "fake.yaml"
    suite.write_text("apiVersion: splitbench.dev/v1alpha1\nkind: Suite\nmetadata: {name: fake}\nspec:\n"
                     "  base: {model: {name: small_cnn}, dataset: {name: synthetic}, paradigm: {name: split, "
                     "splitAfter: 4}}\n  report: {targetAccuracy: 0.7}\n")
    r = subprocess.run(["make", "report", f"VENV={venv}", f"SUITE={suite}", f"RUNS={tmp_path / 'runs'}",
                        f"OUT={tmp_path / 'report'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "from 10 runs" in r.stdout
    assert "suite fake" in (tmp_path / "report" / "report.html").read_text()


def test_repeats_get_their_own_seed_name_and_labels_in_repeat_major_order():
    from splitbench.spec import REPEAT_LABEL, SETTING_LABEL, load_suite
    suite = load_suite(ROOT / "benchmarks" / "suites" / "default.yaml")
    assert suite.spec.repeats == 3
    runs = suite.runs()
    settings = [e.name for e in suite.experiments()]
    assert len(runs) == 3 * len(settings) == 21
    assert [r.metadata.labels[SETTING_LABEL] for r in runs[:len(settings)]] == settings  # one repeat of all first
    split = [r for r in runs if r.metadata.labels[SETTING_LABEL] == "default-split-s4-wifi6"]
    assert [(r.name, r.spec.seed, r.metadata.labels[REPEAT_LABEL]) for r in split] == [
        ("default-split-s4-wifi6-r1", 0, "1"), ("default-split-s4-wifi6-r2", 1, "2"), ("default-split-s4-wifi6-r3", 2, "3")]
    assert [r.name for r in suite.runs(1)] == settings  # one repeat keeps the setting's name
    assert all(len(r.name) <= 63 for s in ROOT.joinpath("benchmarks", "suites").glob("*.yaml")
               for r in load_suite(s).runs(12))


def test_the_page_is_headed_by_the_suite_title(built):
    _, _, out, _ = built
    page = (out / "report.html").read_text()
    assert page.count("<h1>") == 1 and "<h1>fake suite</h1>" in page  # no section's heading takes its place
