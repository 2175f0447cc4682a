"""Assemble report/: summary.csv, ranking.csv, crossover.csv, figures and report.html."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..data import dataset_meta
from ..record import load
from ..spec import Experiment, load_experiment
from . import figures
from ..spec import PaperClaim
from .budgets import budget_table
from .claims import claims_table
from .predicted import prediction_table
from .summary import rank, round_table, summarize

_COLUMNS_HELP = {
    "bytes_per_sample_up/down": "training bytes on the wire per training sample (inputs, activations, "
                                "gradients, labels, weights, per-message control); evaluation traffic excluded",
    "samples_per_s_per_source": "median over sources of samples / time spent in training steps",
    "step_time_s, compute_s, communication_s, waiting_s": "medians per step; communication = uplink + downlink "
                                                         "(from both sides' clocks), waiting = queued at the server",
    "time_to_target_s": "time from the first training step until the mean held-out accuracy first reached the "
                        "target (process start-up and data loading excluded: see setup_s)",
    "setup_s, train_wall_s": "launch to first step (imports, data loading, connections); first step to last event",
    "train_time_s, epoch_time_s": "first step to the end of the last training work on any role (a source's step "
                                  "or the server's training of a batch); median per epoch of the same, evaluation "
                                  "between epochs excluded. Evaluation after every epoch still shares the link with "
                                  "training: suites comparing times use training.evaluate: end",
    "edge_params, edge_mflops_per_sample": "computed from the model definition for the cut (not measured)",
    "predicted_epoch_s": "the runtime model's time per epoch [ours], block times measured when the report is built",
    "cpu_limit": "what enforced the sources' CPU quota (cgroup-v1/v2, sigstop-throttle, inherited-quota, none)",
}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _status(run_dir: Path) -> str:
    p = run_dir / "status.txt"
    return p.read_text().strip() if p.exists() else "unknown"


def build_report(run_dirs: list[Path], out: Path, target_accuracy: float = 0.7, title: str = "splitbench report",
                 extra_sections: list[tuple[str, str]] | None = None,
                 claims: list[PaperClaim] | None = None) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, pd.DataFrame] = {}
    experiments: dict[str, Experiment] = {}
    rows = []
    for d in run_dirs:
        exp = load_experiment(d / "spec.yaml")
        try:
            rec = load(d)
        except (FileNotFoundError, OSError):
            continue
        records[exp.name], experiments[exp.name] = rec, exp
        rows.append(summarize(rec, exp, target_accuracy, _status(d).split(":")[0]))
    summary = pd.DataFrame(rows)
    predicted = prediction_table(summary, experiments) if not summary.empty else pd.DataFrame()
    if not predicted.empty:
        summary = summary.merge(predicted[["experiment", "predicted_epoch_s"]], on="experiment", how="left")
        predicted.to_csv(out / "predicted.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    ranking = rank(summary) if not summary.empty else summary
    ranking.to_csv(out / "ranking.csv", index=False)

    models = sorted({(e.spec.model.name, dataset_meta(e.spec.dataset).input_shape) for e in experiments.values()})
    models += [m for m in figures.REFERENCE_MODELS if m not in models]
    cross = figures.crossover_table(models)
    cross.to_csv(out / "crossover.csv", index=False)

    if not predicted.empty:
        extra_sections = [("Predicted beside measured time per epoch",
                           "<p>The runtime model is ours (planning/runtime.py; the hierarchical-training paper's "
                           "equations were not available). Its block times are measured on this machine when the "
                           "report is built, the edge's scaled to its CPU quota; measured is epoch_time_s. A ratio "
                           "far from 1 says what the model leaves out (per-message overhead, contention between "
                           "roles on this host), not a tuned fit.</p>"
                           + predicted.to_html(index=False, float_format=lambda v: f"{v:,.4g}"))] + (extra_sections or [])
    rounds = pd.concat([round_table(rec).assign(experiment=name) for name, rec in records.items()],
                       ignore_index=True)
    if not rounds.empty:
        rounds = rounds[["experiment"] + [c for c in rounds.columns if c != "experiment"]]
        rounds.to_csv(out / "rounds.csv", index=False)
        extra_sections = [("Federated rounds",
                           "<p>Per round and tier (source = the paradigm's data-holding device, hfsl's low tier; "
                           "server = hfsl's medium tier): weight bytes exchanged with the aggregator, the median "
                           "exchange time (including the wait for the slowest device), and the round's time from "
                           "the first step of the round to the last exchange.</p>"
                           + rounds.to_html(index=False, float_format=lambda v: f"{v:,.4g}"))] + (extra_sections or [])
    budgets = budget_table(records, experiments)
    if not budgets.empty:
        budgets.to_csv(out / "budgets.csv", index=False)
        extra_sections = [("Compressed split learning per budget",
                           "<p>One row per budget stage: bytes per training sample, accuracy at the end of the "
                           "stage, and where the suite also trained that budget from scratch (schedule fixed), the "
                           "time this stage took to reach that accuracy (the paper: prune trains 4-6x faster).</p>"
                           + budgets.to_html(index=False, float_format=lambda v: f"{v:,.4g}"))] + (extra_sections or [])

    if claims:
        table = claims_table(summary, claims, budgets=budgets)
        table.to_csv(out / "paper_vs_measured.csv", index=False)
        extra_sections = [("Paper vs measured",
                           "<p>Each headline figure of the paper beside ours, from the runs of this suite. Where they "
                           "differ the table says so; nothing is tuned to match.</p>"
                           + table.to_html(index=False, float_format=lambda v: f"{v:,.4g}"))] + (extra_sections or [])
    figs = [
        ("Cumulative bytes over time", figures.cumulative_bytes(records)),
        ("Throughput per source over time", figures.throughput_per_source(records)),
        ("Accuracy over time", figures.accuracy_over_time(records, target_accuracy)),
        ("Bytes vs accuracy", figures.bytes_vs_accuracy(summary)),
        ("Where a step's time goes", figures.step_breakdown(summary)),
        ("Bytes at each cut vs raw input (computed from the models)", figures.crossover(models)),
    ]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(summary)} experiments; target accuracy {target_accuracy:.2f}. Built from run records "
             "(record.parquet), except the crossover section (computed from the model definitions) and the predicted times (block times measured when the report is built).</p>",
             "<h2>Ranking</h2>", ranking.to_html(index=False, float_format=lambda v: f"{v:,.4g}"),
             "<h2>Summary</h2>", summary.to_html(index=False, float_format=lambda v: f"{v:,.4g}"),
             "<h3>Columns</h3><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                             for k, v in _COLUMNS_HELP.items()) + "</ul>"]
    for name, body in extra_sections or []:
        parts += [f"<h2>{html.escape(name)}</h2>", body]
    for name, fig in figs:
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{_png(fig)}'>")
    cut = cross[cross["vs_raw_float32"] >= 1]
    parts += ["<h3>Split points and raw input</h3>",
              "<p>A cut whose activations exceed the raw input sends more than full offload would. "
              f"{len(cut)} of {len(cross)} cuts listed send at least as much as the raw float32 input.</p>",
              cross.to_html(index=False, float_format=lambda v: f"{v:,.4g}")]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
            "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>")
    (out / "report.html").write_text(page)
    return summary
