import pandas as pd
from support import experiment_doc
from splitbench.spec import Experiment
from splitbench.report.summary import summarize

def test_a_run_stopped_before_its_first_step_summarizes_with_empty_figures():
    # what a run interrupted during start-up leaves: roles that said ready, no step, no accuracy
    record = pd.DataFrame([{"event": "ready", "role": "server", "t": 1.0},
                           {"event": "session", "role": "server", "t": 2.0, "status": "interrupted"}])
    exp = Experiment.model_validate(experiment_doc())
    row = summarize(record, exp, target_accuracy=0.5, status="failed")
    assert row["status"] == "failed" and row["samples_per_s_per_source"] != row["samples_per_s_per_source"]
