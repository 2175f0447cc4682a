"""HFSL split selection: Grad-CAM candidates and the Q-learning agent."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from splitbench.models import build_model
from splitbench.planning.hfsl import Candidate, QAgent, block_importance, local_maxima


def test_local_maxima_of_the_cui_curve_are_the_candidates():
    assert local_maxima([0.1, 0.5, 0.2, 0.9, 0.3, float("nan")]) == [2, 4]
    assert local_maxima([0.9, 0.5, 0.2, float("nan")]) == [1]  # a maximum at the first block counts
    assert local_maxima([0.1, 0.2, 0.3, 0.0]) == [3]  # ... and at the last cut
    assert local_maxima([float("nan"), 0.2, 0.2, 1.0]) == [2]  # the classifier is never a cut


def test_grad_cam_importance_is_defined_for_spatial_blocks_only():
    torch.manual_seed(0)
    model = build_model("small_cnn")
    x, y = torch.randn(20, 1, 28, 28), torch.arange(20) % 10
    curve = block_importance(model, x, y)
    assert len(curve) == len(model)
    assert all(v >= 0 for v in curve[:4]) and any(v > 0 for v in curve[:4])  # ReLU(...) maps
    assert all(v != v for v in curve[4:])  # fully connected blocks: no map
    assert model.training  # left as found


def test_the_agent_learns_to_offload_from_a_weak_low_device():
    heavy_low = Candidate(cut=8, name="late", importance=1, low_gflop=1.0, medium_gflop=0.1, out_bytes=1000)
    light_low = Candidate(cut=2, name="early", importance=1, low_gflop=0.1, medium_gflop=1.0, out_bytes=1000)
    agent = QAgent([heavy_low, light_low], rate_bytes_s=1e6, seed=1).train(4000)
    assert agent.choose(0.05, 9.5).cut == 2  # little power on the low device: keep W_l small
    assert agent.rewards(0.05, 9.5)[1] > agent.rewards(0.05, 9.5)[0]
    again = QAgent([heavy_low, light_low], rate_bytes_s=1e6, seed=1).train(4000)
    assert np.array_equal(agent.q, again.q)  # deterministic for a seed


@pytest.mark.slow
def test_plan_for_hfsl_prints_candidates_q_table_and_is_deterministic(write_spec):
    from support import experiment_doc

    path = write_spec(
        experiment_doc(
            paradigm={"name": "hfsl", "splitAfter": 4},
            server={"replicas": 2, "device": {"profile": "medium"}},
            sources={"replicas": 2, "device": {"profile": "low"}},
        )
    )
    cmd = [sys.executable, "-m", "splitbench", "plan", str(path), "--warmup-steps", "10", "--q-steps", "500"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "candidate cut" in out and "Q-table" in out and "for this spec's devices (low 0.5, medium 5 GFLOPS)" in out
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout == out
