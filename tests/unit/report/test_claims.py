"""The paper-vs-measured table: each claim's own tolerance, three verdicts, excluded runs,
spread over repeats, prune's speedup per budget and on-air ratios."""
import math

import pandas as pd
import pytest

from splitbench.report.claims import claims_table
from splitbench.spec import PaperClaim


def claim(**kw):
    return PaperClaim.model_validate({"claim": "c", "source": "s", "tolerance": 0.2,
                                      "toleranceSource": "stated", **kw})


SUMMARY = pd.DataFrame([
    {"experiment": "x-split-s4", "status": "ok", "bytes_per_sample_up": 1000.0, "bytes_per_sample_down": 1000.0,
     "train_time_s": 10.0},
    {"experiment": "x-cs-b4", "status": "ok", "bytes_per_sample_up": 60.0, "bytes_per_sample_down": 20.0,
     "train_time_s": 8.0},
    {"experiment": "x-prune", "status": "ok", "bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0,
     "train_time_s": 1.0},
    {"experiment": "x-fixed-b4", "status": "ok", "bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0,
     "train_time_s": 1.0},
    {"experiment": "x-broken", "status": "failed", "bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0,
     "train_time_s": 1.0},
])


def test_verdicts_tolerances_and_prune_speedup():
    budgets = pd.DataFrame([{"experiment": "x-prune", "budget": 128, "speedup_vs_scratch": math.nan},
                            {"experiment": "x-prune", "budget": 4, "speedup_vs_scratch": 3.0},
                            {"experiment": "x-prune", "budget": 8, "speedup_vs_scratch": math.nan,
                             "final_accuracy": 0.5, "scratch_accuracy": 0.9}])
    table = claims_table(SUMMARY, [
        claim(paper=25, metric="bytes_per_sample", numerator="split-s4", denominator="cs-b4"),
        claim(paper=2, metric="train_time_s", numerator="split-s4", denominator="cs-b4", ifDiffers="a reason"),
        claim(paper=5, metric="speedup_vs_scratch", budget=4, numerator="prune", denominator="fixed-b4"),
        claim(paper=5, metric="speedup_vs_scratch", budget=16, numerator="prune", denominator="fixed-b4"),
        claim(paper=5, metric="speedup_vs_scratch", budget=8, numerator="prune", denominator="fixed-b4",
              ifDiffers="a cause"),
        claim(paper=1.3, metric="train_time_s", numerator="split-s4", denominator="cs-b4", tolerance=0.01),
        claim(paper=1.3, metric="train_time_s", numerator="split-s4", denominator="cs-b4", tolerance=0.5),
    ], budgets=budgets)
    assert set(table["verdict"]) <= {"agrees", "differs", "not measured"}
    assert table["measured"].iloc[0] == 25.0 and table["verdict"].iloc[0] == "agrees"
    assert table["measured"].iloc[1] == 1.25 and table["verdict"].iloc[1] == "differs"
    assert table["explanation"].iloc[1] == "ours is 0.62x the paper's figure; a reason"
    assert table["measured"].iloc[2] == 3.0 and "0.60x" in table["explanation"].iloc[2]
    assert "no known cause" in table["explanation"].iloc[2]
    assert math.isnan(table["measured"].iloc[3]) and table["verdict"].iloc[3] == "not measured"
    assert table["explanation"].iloc[4] == ("not reached: the stage ended at 0.500, below the from-scratch run's 0.900; "
                                            "a cause")
    # the same measurement, judged by each claim's own band
    assert table["verdict"].iloc[5] == "differs" and table["verdict"].iloc[6] == "agrees"
    assert table["tolerance"].iloc[6] == "+-50%" and table["tolerance_source"].iloc[6] == "stated"


def test_speedups_of_repeats_pool_into_a_median_with_spread():
    """Run names of repeats end in -r<k> (Suite.runs): their speedups are pooled, not lost."""
    budgets = pd.DataFrame([{"experiment": f"x-prune-r{k}", "budget": 4, "speedup_vs_scratch": v}
                            for k, v in ((1, 2.0), (2, 3.0), (3, 10.0))])
    row = claims_table(SUMMARY, [claim(paper=3, metric="speedup_vs_scratch", budget=4, numerator="prune",
                                       denominator="fixed-b4")], budgets=budgets).iloc[0]
    assert row["measured"] == 3.0 and row["verdict"] == "agrees"
    assert row["spread"] == pytest.approx(pd.Series([2.0, 3.0, 10.0]).std(ddof=1))
    # a repeat that never reached the from-scratch accuracy ranks lowest, and is said
    short = {"experiment": "x-prune-r4", "budget": 4, "speedup_vs_scratch": math.nan, "final_accuracy": 0.4,
             "scratch_accuracy": 0.8}
    row = claims_table(SUMMARY, [claim(paper=3, metric="speedup_vs_scratch", budget=4, numerator="prune",
                                       denominator="fixed-b4")],
                       budgets=pd.concat([budgets, pd.DataFrame([short])])).iloc[0]
    assert row["measured"] == 2.5 and "not reached in 1 of 4 repeats" in row["explanation"]
    # another setting whose name ends alike is not pooled in
    other = pd.DataFrame([{"experiment": "x-deprune-r1", "budget": 4, "speedup_vs_scratch": 100.0}])
    row = claims_table(SUMMARY, [claim(paper=3, metric="speedup_vs_scratch", budget=4, numerator="prune",
                                       denominator="fixed-b4")], budgets=pd.concat([budgets, other])).iloc[0]
    assert row["measured"] == 3.0


def test_failed_runs_are_excluded_and_listed():
    table = claims_table(SUMMARY, [claim(paper=1, metric="train_time_s", numerator="broken", denominator="cs-b4")])
    assert table["verdict"].iloc[0] == "not measured"
    assert table["excluded_runs"].iloc[0] == "x-broken (failed)"
    assert "excluded: x-broken (failed)" in table["explanation"].iloc[0]


def test_repeats_give_a_spread():
    summary = pd.DataFrame([{"experiment": "a", "status": "ok", "train_time_s": v} for v in (9.0, 10.0, 11.0)]
                           + [{"experiment": "b", "status": "ok", "train_time_s": v} for v in (4.0, 5.0, 6.0)])
    row = claims_table(summary, [claim(paper=2, metric="train_time_s", numerator="a", denominator="b")]).iloc[0]
    assert row["measured"] == pytest.approx(2.0)
    assert row["spread"] == pytest.approx(2.0 * math.hypot(1 / 10, 1 / 5))


def test_onair_ratio_uses_each_runs_factor():
    onair = {"x-split-s4": 1.05, "x-cs-b4": 1.5}
    table = claims_table(SUMMARY, [claim(paper=25, metric="onair_bytes_per_sample", numerator="split-s4",
                                         denominator="cs-b4")], onair=onair)
    assert table["measured"].iloc[0] == pytest.approx(25 * 1.05 / 1.5)
    missing = claims_table(SUMMARY, [claim(paper=25, metric="onair_bytes_per_sample", numerator="split-s4",
                                           denominator="cs-b4")])
    assert missing["verdict"].iloc[0] == "not measured" and "on-air" in missing["explanation"].iloc[0]


def test_a_claim_states_its_tolerance_and_its_source():
    with pytest.raises(ValueError, match="tolerance"):
        PaperClaim.model_validate({"claim": "c", "source": "s", "paper": 1, "metric": "train_time_s",
                                   "numerator": "a", "denominator": "b"})
    with pytest.raises(ValueError, match="needs a budget"):
        claim(paper=5, metric="speedup_vs_scratch", numerator="a", denominator="b")


def test_model_claims_count_the_definition_at_the_stated_resolution(tmp_path):
    from splitbench.model_cost_record import read_model_figures, write_model_figures

    claims = [
        claim(paper=6.424e6, metric="model_params", model="efficientnet_b2s", tolerance=0.001),
        claim(paper=0.421e9, metric="model_ops_with_elementwise", model="efficientnet_b2s", inputSize=224,
              tolerance=0.01)]
    write_model_figures(claims, tmp_path)  # as splitbench bench does when it plans the suite
    table = claims_table(pd.DataFrame(), claims, figures=read_model_figures([tmp_path]))
    assert list(table["verdict"]) == ["agrees", "agrees"]
    unrecorded = claims_table(pd.DataFrame(), claims, figures={})  # the report builds no model for them
    assert list(unrecorded["verdict"]) == ["not measured"] * 2
    assert unrecorded["explanation"].str.contains("model figure not recorded").all()
    assert table["metric"].iloc[1] == "model_ops_with_elementwise: efficientnet_b2s at 224x224"
    with pytest.raises(ValueError, match="needs a model"):
        claim(paper=1, metric="model_mult_adds", model="efficientnet_b2s")


def test_onair_factor_reads_the_relays_training_messages():
    from splitbench.report.onair import onair_factor
    rec = pd.DataFrame([
        {"event": "link", "msg_kind": 3, "bytes": 1000, "onair_bytes": 1100},   # TRAIN
        {"event": "link", "msg_kind": 4, "bytes": 1000, "onair_bytes": 1200},   # TRAIN_REPLY
        {"event": "link", "msg_kind": 5, "bytes": 5000, "onair_bytes": 9000},   # EVAL: not training
        {"event": "step", "msg_kind": None, "bytes": None, "onair_bytes": None},
    ])
    assert onair_factor(rec) == pytest.approx(2300 / 2000)
    assert math.isnan(onair_factor(rec.drop(columns="onair_bytes")))


def test_per_run_rows_of_a_setting_give_the_ratio_its_spread():
    """The report hands the per-run table (one row per repeat, named by `setting`): the ratio
    is of the means, its spread propagated from the repeats; a failed repeat is left out."""
    runs = pd.DataFrame([
        {"experiment": "s-a-r1", "setting": "s-a", "status": "ok", "train_time_s": 1.0},
        {"experiment": "s-a-r2", "setting": "s-a", "status": "ok", "train_time_s": 3.0},
        {"experiment": "s-a-r3", "setting": "s-a", "status": "failed", "train_time_s": 100.0},
        {"experiment": "s-b-r1", "setting": "s-b", "status": "ok", "train_time_s": 2.0},
        {"experiment": "s-b-r2", "setting": "s-b", "status": "ok", "train_time_s": 2.0},
    ])
    table = claims_table(runs, [claim(paper=1.0, metric="train_time_s", numerator="a", denominator="b")])
    assert table["measured"].iloc[0] == 1.0 and table["verdict"].iloc[0] == "agrees"
    assert table["spread"].iloc[0] == pytest.approx(math.sqrt(2) / 2)  # std 1.414 over mean 2
    assert table["excluded_runs"].iloc[0] == "s-a-r3 (failed)"


def test_each_repeat_of_a_transferred_stage_is_timed_against_its_own_from_scratch_run():
    """With repeats, prune-rK's stage is compared with scratch-rK (the same seed), not with
    whichever from-scratch repeat came last."""
    from splitbench.report.budgets import budget_table
    from splitbench.spec import REPEAT_LABEL, Experiment
    from support import experiment_doc

    def exp(name, schedule, budgets, epochs, repeat):
        doc = experiment_doc(name, paradigm={"name": "compressed_split", "splitAfter": 4, "compression": {
            "schedule": schedule, "budgets": budgets, "epochs": epochs, "gamma": 1}},
            training={"epochs": sum(epochs), "batchSize": 16, "lr": 0.01})
        doc["metadata"]["labels"] = {REPEAT_LABEL: str(repeat)}
        return Experiment.model_validate(doc)

    def record(budgets, accuracies):
        rows = [{"event": "step", "epoch": e, "budget": b, "samples": 16, "t": float(e + 1), "duration_s": 1.0,
                 "kept_soft": 1.0} for e, b in enumerate(budgets)]
        rows += [{"event": "eval", "epoch": e, "budget": b, "accuracy": a, "t": float(e + 1)}
                 for e, (b, a) in enumerate(zip(budgets, accuracies))]
        return pd.DataFrame(rows)

    exps = {"scratch-r1": exp("scratch-r1", "fixed", [4], [4], 1),  # best 0.8 first reached after 4 s
            "scratch-r2": exp("scratch-r2", "fixed", [4], [4], 2),  # best 0.8 after 2 s
            "prune-r1": exp("prune-r1", "prune", [8, 4], [2, 2], 1),
            "prune-r2": exp("prune-r2", "prune", [8, 4], [2, 2], 2)}
    records = {"scratch-r1": record([4] * 4, [0.2, 0.4, 0.6, 0.8]), "scratch-r2": record([4] * 4, [0.2, 0.8, 0.8, 0.8]),
               "prune-r1": record([8, 8, 4, 4], [0.5, 0.6, 0.8, 0.8]), "prune-r2": record([8, 8, 4, 4], [0.5, 0.6, 0.8, 0.8])}
    table = budget_table(records, exps).set_index(["experiment", "budget"])
    assert table.loc[("prune-r1", 4), "scratch_time_s"] == 4.0 and table.loc[("prune-r2", 4), "scratch_time_s"] == 2.0
    assert table.loc[("prune-r1", 4), "speedup_vs_scratch"] == 4.0
    assert table.loc[("prune-r2", 4), "speedup_vs_scratch"] == 2.0
