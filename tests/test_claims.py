"""The paper-vs-measured table: ratios of summary metrics, and prune's speedup per budget."""
import math

import pandas as pd

from splitbench.report.claims import claims_table
from splitbench.spec import PaperClaim


def claim(**kw):
    return PaperClaim.model_validate({"claim": "c", "source": "s", **kw})


def test_ratios_verdicts_and_prune_speedup():
    summary = pd.DataFrame([
        {"experiment": "x-split-s4", "bytes_per_sample_up": 1000.0, "bytes_per_sample_down": 1000.0, "train_time_s": 10.0},
        {"experiment": "x-cs-b4", "bytes_per_sample_up": 60.0, "bytes_per_sample_down": 20.0, "train_time_s": 8.0},
        {"experiment": "x-prune", "bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0, "train_time_s": 1.0},
        {"experiment": "x-fixed-b4", "bytes_per_sample_up": 1.0, "bytes_per_sample_down": 1.0, "train_time_s": 1.0},
    ])
    budgets = pd.DataFrame([{"experiment": "x-prune", "budget": 128, "speedup_vs_scratch": math.nan},
                            {"experiment": "x-prune", "budget": 4, "speedup_vs_scratch": 3.0},
                            {"experiment": "x-prune", "budget": 8, "speedup_vs_scratch": math.nan,
                             "final_accuracy": 0.5, "scratch_accuracy": 0.9}])
    table = claims_table(summary, [
        claim(paper=25, metric="bytes_per_sample", numerator="split-s4", denominator="cs-b4"),
        claim(paper=2, metric="train_time_s", numerator="split-s4", denominator="cs-b4"),
        claim(paper=5, metric="speedup_vs_scratch", budget=4, numerator="prune", denominator="fixed-b4"),
        claim(paper=5, metric="speedup_vs_scratch", budget=16, numerator="prune", denominator="fixed-b4"),
        claim(paper=5, metric="speedup_vs_scratch", budget=8, numerator="prune", denominator="fixed-b4"),
    ], budgets=budgets)
    assert table["measured"].iloc[0] == 25.0 and table["verdict"].iloc[0].startswith("agrees")
    assert table["measured"].iloc[1] == 1.25 and table["verdict"].iloc[1] == "DIFFERS: ours is 0.62x the paper's figure"
    assert table["measured"].iloc[2] == 3.0 and "0.60x" in table["verdict"].iloc[2]
    assert math.isnan(table["measured"].iloc[3]) and table["verdict"].iloc[3].startswith("not measured")
    assert table["verdict"].iloc[4] == "not reached: the stage ended at 0.500, below the from-scratch run's 0.900"


def test_speedup_needs_a_budget():
    import pytest
    with pytest.raises(ValueError, match="needs a budget"):
        claim(paper=5, metric="speedup_vs_scratch", numerator="a", denominator="b")
