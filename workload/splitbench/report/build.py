"""Assemble report/: report.html, the tables as CSV and all of them in report.json.

Runs are grouped by setting (the suite's matrix point); each metric is the mean over the
setting's finished repeats with a 95% interval; failed and degraded runs are left out and
listed. Tables are narrow (traffic, time, accuracy, cost model) and in human units; a value
that cannot be measured reads 'n/a' with the reason beside the table."""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from .. import registry
from ..environment import timing_key
from ..atomic import write_atomic
from ..model_cost_record import MISSING_NOTE, read_model_cost, read_model_figures
from ..record import read_environment, read_run, run_status
from ..spec import Experiment, PaperClaim, SpecError, load_experiment
from . import figures, units
from .budgets import budget_table
from .claims import claims_table
from .faults import degraded_table, fault_table
from .predicted import prediction_table
from .summary import RANKED, RANKING_NOTE, aggregate, ranking, round_table, summarize


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def find_runs(root: Path) -> list[Path]:
    """Run folders (spec.yaml beside record.parquet or events) under root, or root itself."""
    root = Path(root)
    if (root / "spec.yaml").exists():
        return [root]
    return sorted(p.parent for p in root.rglob("spec.yaml"))


# (column, header, formatter) per narrow table; spread columns come from aggregate().
TRAFFIC = [("bytes_per_sample_up", "up per sample", units.size), ("bytes_per_sample_down", "down per sample",
                                                                      units.size)]
TIME = [("samples_per_s_per_source", "samples/s per source", units.number), ("step_time_s", "step", units.duration),
        ("compute_s", "compute", units.duration), ("communication_s", "communication", units.duration),
        ("waiting_s", "waiting", units.duration), ("train_time_s", "training", units.duration),
        ("setup_s", "setup", units.duration)]
ACCURACY = [("final_accuracy", "final accuracy", units.percent),
            ("final_accuracy_early_exit", "early exit accuracy", units.percent),
            ("time_to_target_s", "time to target", units.duration), ("epoch_time_s", "per epoch", units.duration)]
COST = [("edge_params", "edge parameters", units.number), ("edge_mflops_per_sample", "edge MFLOP/sample",
                                                           units.number),
        ("predicted_epoch_s", "predicted per epoch", units.duration), ("epoch_time_s", "measured per epoch",
                                                                       units.duration)]

WHY_NA = {
    "time_to_target_s": "time to target n/a: the mean held-out accuracy never reached the target in some repeat",
    "final_accuracy_early_exit": "early exit accuracy n/a: the paradigm has no early exit",
    "predicted_epoch_s": "predicted n/a: the runtime model covers split, early exit and full offload only, and "
                         "needs the run's recorded model cost",
    "bytes_per_sample_up": "bytes n/a: the run recorded no training step",
    "edge_params": "edge n/a: the run recorded no model cost",
}


def _links(runs: pd.DataFrame, setting: str, out: Path) -> str:
    rows = runs[runs["setting"] == setting]
    return " ".join(f"<a href='{html.escape(os.path.relpath(r.run_dir, out))}/'>r{r.repeat}</a>"
                    + ("" if r.status == "ok" else f" ({html.escape(r.status)})") for r in rows.itertuples())


def _table(summary: pd.DataFrame, runs: pd.DataFrame, cols, out: Path, spread: bool = True) -> str:
    names = figures.short_names(summary["experiment"])
    head = ["setting", "runs"] + [h for _, h, _ in cols]
    body, nas = [], set()
    for _, row in summary.iterrows():
        cells = [html.escape(names[row["experiment"]]), _links(runs, row["experiment"], out)]
        for c, _, fmt in cols:
            v = row.get(c, math.nan)
            text = (units.with_spread(fmt, v, row.get(f"{c}_ci_low"), row.get(f"{c}_ci_high"), row.get(f"{c}_n"))
                    if spread else (fmt(v) if not isinstance(v, str) else v))
            if text == "n/a":
                nas.add(c)
            cells.append(html.escape(text))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = [WHY_NA.get(c, f"{c} n/a: not recorded by this paradigm") for c in cols_in(cols) if c in nas]
    return ("<div class='scroll'><table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>"
            + ("<p class='note'>" + "; ".join(html.escape(n) for n in notes) + ".</p>" if notes else ""))


def cols_in(cols) -> list[str]:
    return [c for c, _, _ in cols]


def _plain_table(df: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return units.number(v)
        return "n/a" if v is None else str(v)
    return "<div class='scroll'>" + df.to_html(index=False, formatters={c: fmt for c in df.columns},
                                               na_rep="n/a", escape=True) + "</div>"


def _environment_block(envs: dict[str, dict]) -> tuple[str, list[dict]]:
    """One table: each field with its value, or its values and how many runs had each. A
    warning when the fields that change speed (environment.TIMING_FIELDS) differ."""
    if not envs:
        return "<p>No environment.json in the run folders (records from before it was written).</p>", []
    fields = list(dict.fromkeys(k for env in envs.values() for k in env))
    rows, out = [], []
    for f in fields:
        counts: dict[str, int] = {}
        for env in envs.values():
            v = str(env.get(f, "unknown"))
            counts[v] = counts.get(v, 0) + 1
        if f == "date":
            dates = sorted(counts)
            text = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        else:
            text = next(iter(counts)) if len(counts) == 1 else "; ".join(f"{v} ({n} runs)" for v, n in counts.items())
        rows.append(f"<tr><th>{html.escape(f)}</th><td>{html.escape(text)}</td></tr>")
        out.append({"field": f, "value": text, "runs": len(envs)})
    keys = {timing_key(env) for env in envs.values()}
    warn = ("<p class='note'><b>The runs come from more than one environment (CPU, memory, kernel, cgroup, "
            "versions or executor differ): their times are not comparable.</b></p>" if len(keys) > 1 else "")
    return warn + f"<table class='env'>{''.join(rows)}<tr><th>runs</th><td>{len(envs)}</td></tr></table>", out


def _ranking_html(rank: pd.DataFrame) -> str:
    parts = [f"<p>{html.escape(RANKING_NOTE)} Values are mean ± half the 95% interval.</p>"]
    fmt = {"time_to_target_s": units.duration, "samples_per_s_per_source": units.number,
           "step_time_s": units.duration, "final_accuracy": units.percent, "bytes_per_sample": units.size}
    names = figures.short_names(rank["setting"]) if not rank.empty else {}
    for metric, higher, what in RANKED:
        r = rank[rank["metric"] == metric]
        if r.empty:
            continue
        rows = "".join(
            "<tr>" + "".join(f"<td{' class=l' if i in (1, 4, 5) else ''}>{html.escape(str(c))}</td>"
                             for i, c in enumerate((
                "n/a" if pd.isna(x.rank) else int(x.rank), names[x.setting],
                units.with_spread(fmt[metric], x.mean, x.ci_low, x.ci_high, x.n), x.n,
                ", ".join(names.get(s, s) for s in x.tied_with.split(", ") if s), x.note))) + "</tr>"
            for x in r.itertuples())
        parts.append(f"<h3>{html.escape(what)} ({'higher' if higher else 'lower'} is better)</h3>"
                     "<div class='scroll'><table><thead><tr><th>rank</th><th class=l>setting</th><th>mean</th><th>repeats</th>"
                     f"<th class=l>tied with</th><th class=l>note</th></tr></thead><tbody>{rows}</tbody></table></div>")
    return "".join(parts)


def ranking_text(rank: pd.DataFrame) -> str:
    """The ranking as plain text (printed by bench, written as ranking.txt)."""
    fmt = {"time_to_target_s": units.duration, "samples_per_s_per_source": units.number,
           "step_time_s": units.duration, "final_accuracy": units.percent, "bytes_per_sample": units.size}
    if rank.empty:
        return "no finished runs to rank\n"
    names = figures.short_names(rank["setting"])
    lines = [RANKING_NOTE, ""]
    for metric, higher, what in RANKED:
        r = rank[rank["metric"] == metric]
        lines.append(f"{what} ({'higher' if higher else 'lower'} is better):")
        for x in r.itertuples():
            rk = "n/a" if pd.isna(x.rank) else str(int(x.rank))
            tie = f"  tied with {', '.join(names.get(s, s) for s in x.tied_with.split(', '))}" if x.tied_with else ""
            lines.append(f"  {rk:>3}  {names[x.setting]:<34} {units.with_spread(fmt[metric], x.mean, x.ci_low, x.ci_high, x.n):>24}"
                         f"{tie}{'  ' + x.note if x.note else ''}")
    return "\n".join(lines) + "\n"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}"
         "table{border-collapse:collapse;font-size:12px;margin:4px 0}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
         "td:first-child,th:first-child{text-align:left}.env th{text-align:left;background:#f4f4f4}"
         ".env td{text-align:left;white-space:normal}td.l,th.l{text-align:left}.scroll{max-width:100%;overflow-x:auto}"
         "img{max-width:100%;height:auto;display:block}.note{font-size:12px;color:#444}")


def names_table(runs: pd.DataFrame) -> pd.DataFrame:
    """kind, name, what it is: the registry's line for every name the runs use."""
    rows = []
    for kind in ("paradigm", "model", "dataset", "network"):
        for name in sorted(set(runs[kind].dropna().astype(str))) if kind in runs else []:
            rows.append({"kind": kind, "name": name, "what": registry.label(kind, name)})
    return pd.DataFrame(rows, columns=["kind", "name", "what"])


def build_report(run_dirs: list[Path], out: Path, target_accuracy: float = 0.7, title: str = "splitbench report",
                 extra_sections: list[tuple[str, str]] | None = None,
                 claims: list[PaperClaim] | None = None) -> pd.DataFrame:
    """Write the report of these run folders; return the per-setting summary (means)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[tuple[str, int], pd.DataFrame] = {}
    by_name: dict[str, pd.DataFrame] = {}
    experiments: dict[str, Experiment] = {}
    costs: dict[str, dict | None] = {}  # setting -> its first recorded model_cost.json
    no_cost: list[str] = []  # runs whose folder has none (recorded before it was)
    rows, envs = [], {}
    damaged = []  # one row per damaged or missing file of a run folder
    for d in run_dirs:
        d = Path(d).resolve()
        try:
            exp = load_experiment(d / "spec.yaml")
        except (OSError, SpecError) as err:
            damaged.append({"experiment": d.name, "run_dir": str(d), "record": "",
                            "problem": f"spec.yaml: {str(err).splitlines()[0]}: run left out"})
            continue
        got = read_run(d)
        damaged += [{"experiment": exp.name, "run_dir": str(d), "record": got.source, "problem": line}
                    for line in got.damage]
        if got.record is None:
            continue
        rec = got.record
        cost = read_model_cost(d)
        if cost is None:
            no_cost.append(exp.name)
        row = summarize(rec, exp, target_accuracy, run_status(d).split(":")[0], cost=cost)
        row["run_dir"] = str(d)
        row["record"] = got.source
        rows.append(row)
        records[(row["setting"], row["repeat"])] = rec
        by_name[exp.name] = rec
        experiments.setdefault(row["setting"], exp)
        if costs.get(row["setting"]) is None:  # the first run of the setting that recorded one
            costs[row["setting"]] = cost
        envs[exp.name] = read_environment(d)
    for x in damaged:  # one line each on stderr (stdout may carry the report as JSON)
        print(f"{x['run_dir']}/{x['problem']}", file=sys.stderr)
    runs = pd.DataFrame(rows)
    summary = aggregate(runs) if not runs.empty else pd.DataFrame()
    if no_cost:  # on stderr: stdout may carry the report as JSON
        print(f"{MISSING_NOTE}: {', '.join(no_cost)}", file=sys.stderr)
    predicted = (prediction_table(summary, costs, {s: e.spec.paradigm.name for s, e in experiments.items()})
                 if not summary.empty else pd.DataFrame())
    if not predicted.empty:
        summary = summary.merge(predicted[["experiment", "predicted_epoch_s"]], on="experiment", how="left")
    rank = ranking(runs) if not runs.empty else pd.DataFrame()
    env_html, env_rows = _environment_block(envs)

    names = names_table(runs)
    tables: dict[str, pd.DataFrame] = {"runs": runs, "summary": summary, "ranking": rank,
                                       "environment": pd.DataFrame(env_rows), "names": names}
    if not predicted.empty:
        tables["predicted"] = predicted
    if damaged:
        tables["damaged"] = pd.DataFrame(damaged)
    # the runs' models as recorded, one per model and input shape, then the reference models
    by_model = {(c["model"], tuple(c["input_shape"])): c for c in costs.values() if c is not None}
    models = [by_model[k] for k in sorted(by_model)]
    models += [m for m in figures.reference_models() if (m["model"], tuple(m["input_shape"])) not in by_model]
    cross = figures.crossover_table(models)
    tables["crossover"] = cross
    sections = list(extra_sections or [])
    rounds = pd.concat([round_table(rec).assign(experiment=name) for name, rec in by_name.items()],
                       ignore_index=True) if by_name else pd.DataFrame()
    if not rounds.empty:
        rounds = rounds[["experiment"] + [c for c in rounds.columns if c != "experiment"]]
        tables["rounds"] = rounds
        sections.insert(0, ("Federated rounds",
                            "<p>Per run, round and tier (source = the paradigm's data-holding device, hfsl's low "
                            "tier; server = hfsl's medium tier): weight bytes exchanged with the aggregator, the "
                            "median exchange time and the round's time.</p>" + _plain_table(rounds)))
    exp_by_name = {n: load_experiment(Path(r) / "spec.yaml") for n, r in zip(runs.get("experiment", []),
                                                                             runs.get("run_dir", []))}
    budgets = budget_table(by_name, exp_by_name) if by_name else pd.DataFrame()
    if not budgets.empty:
        tables["budgets"] = budgets
        sections.insert(0, ("Compressed split learning per budget",
                            "<p>One row per run and budget stage: bytes per training sample, accuracy at the end "
                            "of the stage, and where the suite also trained that budget from scratch, the time "
                            "this stage took to reach that accuracy.</p>" + _plain_table(budgets)))
    for key, df, heading, intro in (
            ("faults", fault_table(runs, exp_by_name, by_name) if by_name else pd.DataFrame(), "Faults",
             "Each fault injected (the spec's faults), when it ran (seconds since training began; hatched on the "
             "time figures) and what it cost: the run's training time and final accuracy minus the mean of the "
             "clean runs of the same setting without faults, whose mean and standard deviation are beside it (n/a "
             "where the suite has none)."),
            ("degraded", degraded_table(runs, by_name) if by_name else pd.DataFrame(), "Degraded runs",
             "Runs that went on without some sources (a source that died or stopped answering within "
             "sources.deadline). They are left out of the means and the ranking: with fewer devices and less data "
             "they answer another question than a clean run. Here is what each lost: the source, when it stopped "
             "(s since training began), its last step and the samples it trained.")):
        if not df.empty:
            tables[key] = df
            sections.insert(0, (heading, f"<p>{html.escape(intro)}</p>" + _plain_table(df)))
    if claims:
        model_figs = read_model_figures({Path(d).resolve().parent for d in run_dirs})  # the suite's runs folder
        table = claims_table(runs, claims, budgets=budgets, figures=model_figs)  # per run: spread from the repeats
        tables["paper_vs_measured"] = table
        sections.insert(0, ("Paper vs measured",
                            "<p>Each headline figure of the paper beside ours (means over repeats; speedups: medians). Nothing is "
                            "tuned to match.</p>" + _plain_table(table)))

    for name, df in tables.items():
        write_atomic(out / f"{name}.csv", df.to_csv(index=False))
    write_atomic(out / "ranking.txt", ranking_text(rank))
    write_atomic(out / "report.json", json.dumps(
        {name: json.loads(df.to_json(orient="records")) for name, df in tables.items()}, indent=1) + "\n")

    left_out = runs[runs["status"] != "ok"] if not runs.empty else runs
    repeats = sorted(set(summary["repeats"])) if not summary.empty else []
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(summary)} settings, {len(runs)} runs ({', '.join(map(str, repeats)) or 0} finished repeats "
             f"per setting); target accuracy {target_accuracy:.2f}; sources hosted as "
             f"{html.escape(', '.join(sorted(set(runs.get('source_processes', ['processes'])))))} (a process each, "
             "or sources.groupSize per process). Built from the run records (record.parquet); "
             "tables as CSV and report.json beside this page.</p>",
             "<h2>Environment</h2>", env_html]
    if not names.empty:
        parts += ["<h2>What the names mean</h2><p>Each paradigm, model, dataset and profile the runs name, as "
                  "the registry (registry.py, benchmarks/networks.yaml and devices.yaml) describes it.</p>",
                  _plain_table(names)]
    if not left_out.empty:
        parts.append("<p class='note'><b>Left out of means and rankings:</b> " + "; ".join(
            html.escape(f"{r.experiment}: {r.status}") for r in left_out.itertuples()) + "</p>")
    if damaged:
        parts.append("<h2>Damaged records</h2><p class='note'>Files of run folders that are cut short, unreadable "
                     "or missing, and what the report did: used the whole record.parquet, rebuilt it from whole "
                     "events files, or left the run out.</p><ul class='note'>" + "".join(
                         f"<li>{html.escape(x['experiment'])}: {html.escape(x['problem'])}</li>" for x in damaged)
                     + "</ul>")
    if not summary.empty:
        parts += ["<h2>Ranking</h2>", _ranking_html(rank),
                  "<h2>Traffic</h2><p>Training bytes per training sample (inputs, activations, gradients, labels, "
                  "weights, per-message control; evaluation excluded). Exact: the same for every repeat.</p>",
                  _table(summary, runs, TRAFFIC, out),
                  "<h2>Time</h2><p>Medians per step, mean ± half the 95% interval over repeats. Communication = "
                  "uplink + downlink, waiting = queued at the server; training = first step to the last training "
                  "work; setup = launch to the first step.</p>", _table(summary, runs, TIME, out),
                  "<h2>Accuracy</h2><p>Held-out accuracy at the end of training; time to target from the first "
                  "training step.</p>", _table(summary, runs, ACCURACY, out),
                  "<h2>Cost model</h2><p>Edge parameters and FLOPs are computed from the model at the cut; the "
                  "predicted time per epoch is our runtime model's (planning/epoch_time.py), block times measured "
                  "when the run was planned. Both are read from each run's model_cost.json.</p>",
                  _table(summary, runs, COST, out, spread=True)]
        if no_cost:
            parts.append("<p class='note'>" + html.escape(f"{MISSING_NOTE}: {', '.join(no_cost)}") + "</p>")
    for name, body in sections:
        parts += [f"<h2>{html.escape(name)}</h2>", body]
    if records:
        figs = [("Accuracy over time", figures.accuracy_over_time(records, target_accuracy)),
                ("Cumulative bytes over time", figures.cumulative_bytes(records)),
                ("Throughput per source", figures.throughput(summary)),
                ("Bytes vs accuracy", figures.bytes_vs_accuracy(summary)),
                ("Where a step's time goes", figures.step_breakdown(summary)),
                ("Bytes at each cut vs raw input (computed from the models)", figures.crossover(models))]
        for name, fig in figs:
            parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                         f"src='data:image/png;base64,{_png(fig)}'>")
    cut = cross[cross["vs_raw_float32"] >= 1]
    parts += ["<h3>Split points and raw input</h3>",
              "<p>A cut whose activations exceed the raw input sends more than full offload would. "
              f"{len(cut)} of {len(cross)} cuts listed send at least as much as the raw float32 input.</p>",
              _plain_table(cross)]
    page = ("<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    write_atomic(out / "report.html", page)
    return summary
