"""Every panel of dashboards/*.json, run against a real Prometheus that scraped a real
local run (file-based discovery of the run's targets.json, on loopback): each query must
return data, and the dashboards' variables must find the run's paradigm and experiment."""

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from support import ROOT

from splitbench.executors import LocalExecutor
from splitbench.spec import Experiment
from support import experiment_doc

DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="needs a Prometheus server: apt-get install prometheus (make test installs it when run as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        out = json.load(r)
    assert out["status"] == "success", out
    return out["data"]


@pytest.fixture(scope="module")
def scraped_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    runs = tmp / "runs"
    runs.mkdir()
    (tmp / "prometheus.yml").write_text(
        json.dumps(
            {  # YAML is a superset of JSON
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                # no honor_labels: the roles' labels do not clash with Prometheus' own (instance, job)
                "scrape_configs": [
                    {
                        "job_name": "splitbench",
                        "scrape_interval": "500ms",
                        "file_sd_configs": [
                            {
                                "files": [str(runs / "dash" / "*.json")],  # globs: file names only
                                "refresh_interval": "1s",
                            }
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "prometheus.log", "w"),
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert prom.poll() is None and time.time() < deadline, (tmp / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        # early exit over an emulated link: both exits, a link queue, bytes both ways; 1280 samples
        # a source, so that the run outlasts target discovery (file_sd, refreshed every 1 s) and a
        # few scrapes: with 320 an idle machine trained in 1.5 s and no role was scraped at all
        exp = Experiment.model_validate(
            experiment_doc(
                name="dash",
                paradigm={"name": "early_exit", "splitAfter": 4},
                network={"profile": "wifi4"},
                dataset={"name": "synthetic", "samplesPerSource": 1280, "testSamples": 64},
                training={"epochs": 2, "batchSize": 32, "lr": 0.01, "replyTimeoutS": 60},
            )
        )
        t0 = time.time()
        result = LocalExecutor(runs, quiet=True, timeout_s=180).run(exp)
        assert result.ok, result.message
        time.sleep(1.5)  # the last scrapes land
        yield base, exp, t0, time.time()
    finally:
        prom.terminate()
        prom.wait(10)


def queries(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_returns_data_for_the_run(scraped_run, path):
    base, exp, start, end = scraped_run
    dashboard = json.loads(path.read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"experiment", "paradigm"}
    empty = []
    for title, expr in queries(dashboard):
        promql = expr.replace("$experiment", exp.name).replace("$paradigm", ".*").replace("$__rate_interval", "3s")
        data = api(base, "/api/v1/query_range", query=promql, start=start, end=end, step="0.5")
        values = [float(v) for series in data["result"] for _, v in series["values"]]
        if not any(v == v for v in values):  # no sample, or only NaN
            empty.append(f"{title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_variables_find_the_runs_paradigm_and_experiment(scraped_run):
    base, exp, start, end = scraped_run
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            metric, label = var["definition"].removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
            metric = metric.replace("$paradigm", ".*")
            found = api(base, f"/api/v1/label/{label}/values", **{"match[]": metric, "start": start, "end": end})
            assert {"paradigm": "early_exit", "experiment": exp.name}[label] in found, (path.name, var["name"], found)
