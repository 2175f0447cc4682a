"""Real experiments through the local executor: processes, loopback, the link relay."""

from __future__ import annotations

import pandas as pd
import pytest

from splitbench.executors import LocalExecutor
from splitbench.model_cost_record import read_model_cost
from splitbench.record import BYTE_COLUMNS
from splitbench.report import build_report
from splitbench.spec import Experiment
from support import experiment_doc
from support.helpers import processes_mentioning, prom_samples

pytestmark = pytest.mark.integration

ACT = 32 * 64 * 7 * 7 * 4  # small_cnn cut after pool2, batch 32, float32


def run(tmp_path, **overrides):
    exp = Experiment.model_validate(experiment_doc(**overrides))
    result = LocalExecutor(tmp_path / "runs", quiet=True, timeout_s=240).run(exp)
    return exp, result, pd.read_parquet(result.run_dir / "record.parquet")


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split")
    return run(
        tmp, network={"profile": "wifi6"}, training={"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": 3}
    )


def test_split_sends_activations_up_and_gradients_down(split_run):
    _, result, rec = split_run
    assert result.ok, result.message
    steps = rec[rec["event"] == "step"]
    assert sorted(steps["instance"].unique()) == ["source-0", "source-1"]
    assert len(steps) == 6
    assert (steps["up_activation_bytes"] == ACT).all()
    assert (steps["up_label_bytes"] == 32).all()  # uint8 labels
    assert (steps["down_gradient_bytes"] == ACT).all()
    assert (steps["up_input_bytes"] == 0).all()
    for phase in ("edge_forward", "edge_backward", "uplink", "server_forward", "server_backward", "downlink"):
        assert (steps[f"phase_{phase}_s"] > 0).all(), phase
    # wifi6 is 2 ms one way: each direction takes at least that
    assert (steps["phase_uplink_s"] >= 0.002).all() and (steps["phase_downlink_s"] >= 0.002).all()
    evals = rec[rec["event"] == "eval"]
    assert len(evals) == 2 and evals["accuracy"].between(0, 1).all() and (evals["up_eval_bytes"] > 0).all()


def test_prometheus_totals_agree_with_the_run_record(split_run):
    _, result, rec = split_run
    sources = rec[rec["role"] == "source"]
    prom_total = {}
    for i in range(2):
        for s in prom_samples(result.run_dir / f"source-{i}.prom", "splitbench_wire_bytes"):
            if s.name.endswith("_total"):
                key = f"{s.labels['direction']}_{s.labels['kind']}_bytes"
                prom_total[key] = prom_total.get(key, 0) + s.value
    record_total = {c: int(sources[c].sum()) for c in BYTE_COLUMNS if sources[c].sum()}
    assert prom_total == record_total
    # the server counted the same bytes from its side, and so did the link relay
    server = {
        (s.labels["direction"], s.labels["kind"]): s.value
        for s in prom_samples(result.run_dir / "server-0.prom", "splitbench_wire_bytes")
        if s.name.endswith("_total")
    }
    assert sum(v for (d, _), v in server.items() if d == "up") == sum(
        v for k, v in record_total.items() if k.startswith("up_")
    )
    link = rec[rec["event"] == "link"]
    assert link.loc[link["direction"] == "up", "bytes"].sum() == sum(
        v for k, v in record_total.items() if k.startswith("up_")
    )
    assert link.loc[link["direction"] == "down", "bytes"].sum() == sum(
        v for k, v in record_total.items() if k.startswith("down_")
    )


def test_report_from_the_record(split_run, tmp_path):
    _, result, rec = split_run
    summary = build_report([result.run_dir], tmp_path / "report", 0.5)
    row = summary.iloc[0]
    steps = rec[rec["event"] == "step"]
    up = steps.filter(regex=r"^up_(?!eval).*_bytes$").sum().sum()
    assert row["bytes_per_sample_up"] == pytest.approx(up / steps["samples"].sum())
    assert ACT / 32 < row["bytes_per_sample_up"] < ACT / 32 + 10  # activations + 1 B label + small header share
    assert row["cpu_limit"] != "none"
    # the executor recorded the model's cost when it planned the run; the report took it from there
    cost = read_model_cost(result.run_dir)
    assert cost is not None and cost["model"] == "small_cnn" and cost["split_after"] == 4
    assert row["edge_params"] == cost["edge_params"] > 0
    assert row["predicted_epoch_s"] == pytest.approx(cost["predicted"]["epoch_s"]) and row["predicted_epoch_s"] > 0
    for f in ("summary.csv", "ranking.csv", "crossover.csv", "report.html"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("<img") == 6 and "Cumulative bytes" in html


@pytest.mark.parametrize("encoding, per_pixel", [("uint8", 1), ("float32", 4)])
def test_full_offload_sends_raw_inputs_and_only_an_ack_back(tmp_path, encoding, per_pixel):
    _, result, rec = run(
        tmp_path,
        paradigm={"name": "full_offload", "inputEncoding": encoding},
        training={"epochs": 1, "batchSize": 32, "maxStepsPerEpoch": 2},
        sources={"replicas": 1, "device": {"cpu": "500m"}},
    )
    assert result.ok, result.message
    steps = rec[rec["event"] == "step"]
    assert (steps["up_input_bytes"] == 32 * 28 * 28 * per_pixel).all()
    down = steps.filter(regex=r"^down_.*_bytes$")
    assert (down.drop(columns="down_control_bytes").sum() == 0).all()  # never an input gradient
    assert (steps["down_control_bytes"] < 200).all()
    assert steps["loss"].notna().all()


def test_centralized_uses_no_network(tmp_path):
    _, result, rec = run(
        tmp_path,
        paradigm={"name": "centralized"},
        network={"medium": "none"},
        training={"epochs": 2, "batchSize": 32, "maxStepsPerEpoch": 3, "schedule": "cosine"},
    )
    assert result.ok, result.message
    assert set(rec["role"].dropna()) == {"trainer"}
    assert (rec["event"] == "launch").sum() == 1 and rec.loc[rec["event"] == "launch", "t"].iloc[0] < 0
    steps = rec[rec["event"] == "step"]
    assert len(steps) == 12  # 2 epochs of the union of 2 sources' data: their step caps add up
    assert list(steps["lr"]) == pytest.approx([0.01] * 6 + [0.005] * 6)  # cosine over 2 epochs
    assert rec[BYTE_COLUMNS].sum().sum() == 0
    assert rec[rec["event"] == "eval"]["accuracy"].notna().all()


def test_a_crashed_source_is_reported_and_nothing_is_left_running(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITBENCH_DATA_ROOTS", str(tmp_path))  # dataset.root must be under an allowed root
    _, result, rec = run(tmp_path, dataset={"name": "fashion_mnist", "root": str(tmp_path / "nowhere")})
    assert not result.ok and result.status == "failed"  # every source crashed: nothing can go on
    assert result.message.startswith("every source gone: source-") and "exited with code 2" in result.message
    assert "Fashion-MNIST not found" in result.message
    assert (result.run_dir / "record.parquet").exists()
    failed = rec[(rec["event"] == "session") & (rec["status"] == "failed")]
    assert failed["error"].str.contains("apt-get install dataset-fashion-mnist").any()
    assert processes_mentioning(str(result.run_dir)) == []


def test_early_exit_sends_nothing_back_and_the_edge_never_waits(tmp_path):
    exp, result, rec = run(
        tmp_path,
        paradigm={"name": "early_exit", "splitAfter": 4},
        network={"medium": "dedicated", "uplink": {"rateMbit": 5}, "downlink": {"rateMbit": 5}},
        dataset={"name": "synthetic", "samplesPerSource": 128, "testSamples": 64},
        training={"epochs": 1, "batchSize": 32, "lr": 0.01, "maxStepsPerEpoch": 3},
    )
    assert result.ok, result.message
    steps = rec[rec["event"] == "step"]
    assert len(steps) == 6 and (steps["up_activation_bytes"] == ACT).all()
    assert steps.filter(regex=r"^down_.*_bytes$").sum().sum() == 0  # no gradient, not even an ack
    # each step's features take 8 x 401,408 B / 5 Mbit/s = 0.64 s on this link: an edge that waited
    # for them to cross could not step faster than that (the bound is the link's, not a timing goal)
    assert steps["duration_s"].median() < 0.64
    assert (rec["event"] == "server").sum() == 6  # and the cloud trained on every batch
    evals = rec[rec["event"] == "eval"]
    assert sorted(evals["exit"].unique()) == ["early", "final"]
    assert evals.loc[evals["exit"] == "early", "up_eval_bytes"].sum() == 0  # the early exit is local
    row = build_report([result.run_dir], tmp_path / "report", 0.5).iloc[0]
    assert 0 <= row["final_accuracy_early_exit"] <= 1 and 0 <= row["final_accuracy"] <= 1


def test_when_the_link_drops_the_edge_keeps_training_and_classifying(tmp_path):
    """A 2 s outage 1 s into training: the edge's steps go on through it at their usual
    pace, nothing reaches the cloud until the link is back, then the cloud trains on the
    backlog; the early exit is evaluated without the link."""
    _, result, rec = run(
        tmp_path,
        paradigm={"name": "early_exit", "splitAfter": 4},
        network={
            "medium": "dedicated",
            "uplink": {"rateMbit": 200},
            "downlink": {"rateMbit": 200},
            "outages": [{"atS": 1.0, "forS": 2.0}],
        },
        dataset={"name": "synthetic", "samplesPerSource": 1280, "testSamples": 64},
        training={
            "epochs": 2,
            "batchSize": 32,
            "lr": 0.01,
            "maxStepsPerEpoch": 40,
            "evaluate": "end",
            "replyTimeoutS": 60,
        },
        sources={"replicas": 1, "device": {"cpu": "250m"}},
    )
    assert result.ok, result.message
    out = rec[rec["event"] == "outage"].sort_values("t")
    assert list(out["state"]) == ["down", "up"]
    down, up = out["t"].tolist()
    assert up - down == pytest.approx(2.0, abs=0.3)
    steps = rec[rec["event"] == "step"]
    during = steps[(steps["t"] - steps["duration_s"] > down) & (steps["t"] < up)]
    assert len(during) >= 5, f"only {len(during)} edge steps inside the outage"
    assert during["duration_s"].max() < 1.0  # no step waited out the 2 s outage
    delivered = rec[(rec["event"] == "link") & (rec["direction"] == "up")]
    assert delivered[(delivered["t"] > down + 0.1) & (delivered["t"] < up)].empty
    served = rec[rec["event"] == "server"]
    assert len(served) == len(steps) == 80 and (served["t"] > up).any()  # the backlog, trained after
    evals = rec[rec["event"] == "eval"]
    assert sorted(evals["exit"]) == ["early", "final"] and evals["epoch"].eq(1).all()  # evaluate: end


def test_full_offload_with_cached_inputs_sends_only_ids_after_the_first_epoch(tmp_path):
    _, result, rec = run(
        tmp_path,
        paradigm={"name": "full_offload", "cacheInputs": True},
        dataset={"name": "synthetic", "samplesPerSource": 64, "testSamples": 64},
        training={"epochs": 2, "batchSize": 32, "lr": 0.01},
        sources={"replicas": 1, "device": {"cpu": "500m"}},
    )
    assert result.ok, result.message
    steps = rec[rec["event"] == "step"]
    first, second = steps[steps["epoch"] == 0], steps[steps["epoch"] == 1]
    assert (first["up_input_bytes"] == 32 * 28 * 28 + 32 * 4).all() and (first["up_label_bytes"] == 32).all()
    assert (second["up_input_bytes"] == 32 * 4).all() and (second["up_label_bytes"] == 0).all()
    assert second["loss"].notna().all()  # the server still trains, from its cache


@pytest.fixture(scope="module")
def federated_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("federated")
    common = dict(
        dataset={"name": "synthetic", "samplesPerSource": 128, "testSamples": 128},
        training={"epochs": 2, "batchSize": 32, "lr": 0.01, "schedule": "cosine", "replyTimeoutS": 60},
        network={"profile": "wifi6"},
    )
    fed = run(tmp, paradigm={"name": "fedavg", "localEpochs": 1}, **common)
    hfsl = run(
        tmp / "h",
        paradigm={"name": "hfsl", "splitAfter": 4, "localEpochs": 1},
        server={"device": {"profile": "medium"}},
        **common,
    )
    return fed, hfsl


def test_fedavg_sends_weights_each_round_and_hfsl_splits_them_by_tier(federated_runs):
    (fexp, fres, frec), (hexp, hres, hrec) = federated_runs
    assert fres.ok, fres.message
    assert hres.ok, hres.message
    from splitbench.models import build_model, split

    model = build_model("small_cnn")
    floats = lambda m: sum(t.numel() for t in m.state_dict().values() if t.is_floating_point())
    low, medium = split(model, 4)
    # FedAvg: per round, every source sends and receives the whole model's state as float32
    frounds = frec[frec["event"] == "round"]
    assert len(frounds) == 4 and (frounds["role"] == "source").all()
    assert (frounds["up_weights_bytes"] == 4 * floats(model)).all()
    assert (frounds["down_weights_bytes"] == 4 * floats(model)).all()
    assert frec.loc[frec["event"] == "step"].filter(regex="_bytes$").sum().sum() == 0  # local steps: nothing sent
    # HFSL: low devices trade W_l, medium devices W_m, with the one aggregator
    hrounds = hrec[hrec["event"] == "round"]
    assert set(hrounds["instance"]) == {"source-0", "source-1", "server-0", "server-1"}
    assert (hrounds.loc[hrounds["role"] == "source", "up_weights_bytes"] == 4 * floats(low)).all()
    assert (hrounds.loc[hrounds["role"] == "server", "up_weights_bytes"] == 4 * floats(medium)).all()
    agg = hrec[hrec["event"] == "aggregate"]
    assert sorted(zip(agg["partition"], agg["round"])) == [("low", 0), ("low", 1), ("medium", 0), ("medium", 1)]
    assert (agg["contributors"] == 2).all() and (agg["samples"] == 2 * 128).all()  # n = sum of n_k
    # each source is served by its own medium device
    served = hrec[hrec["event"] == "server"]
    assert served.groupby("instance")["source"].unique().map(len).eq(1).all() and served["instance"].nunique() == 2


def test_every_source_trains_its_last_epoch_at_the_cosine_lr(federated_runs):
    """The record's lr is the optimizer's at each step: 0.01 in epoch 0, then the cosine's
    0.01 x (1 + cos(pi / 2)) / 2 = 0.005 in the last of 2 epochs, on every source of both
    runs (the medium devices follow it too: hfsl equals fedavg loss for loss, next test)."""
    for _, result, rec in federated_runs:
        assert result.ok, result.message
        steps = rec[(rec["event"] == "step") & (rec["role"] == "source")]
        assert steps.groupby("epoch")["lr"].unique().map(list).to_dict() == {0: [0.01], 1: [pytest.approx(0.005)]}


def test_hfsl_with_one_medium_device_per_source_trains_exactly_as_fedavg(federated_runs):
    """Split training of W_l + W_m with one medium device per low device is the whole model's
    training cut in two; averaging both partitions is averaging the whole model. So the
    two paradigms must agree, loss for loss: a check that no partition is lost or mixed up."""
    (_, _, frec), (_, _, hrec) = federated_runs
    key = ["instance", "step"]
    f = frec[frec["event"] == "step"].sort_values(key)
    h = hrec[hrec["event"] == "step"].sort_values(key)
    assert list(f["instance"]) == list(h["instance"]) and len(f) == 16
    assert f["loss"].to_numpy() == pytest.approx(h["loss"].to_numpy(), rel=1e-3, abs=1e-4)
    fe, he = frec[frec["event"] == "eval"], hrec[hrec["event"] == "eval"]
    assert list(fe["epoch"]) == list(he["epoch"]) == [0, 1]
    assert fe["accuracy"].to_numpy() == pytest.approx(he["accuracy"].to_numpy(), abs=1 / 128)


def test_hfsl_moves_its_split_when_the_medium_devices_get_busy(tmp_path):
    """The cut starts after block 2 (the agent's choice for idle low and medium devices) and
    stays there after round 0; from round 2 other work takes 90% of both medium devices
    (their quota shrinks), they report 0.5 GFLOPS left, and the aggregator's agent moves
    the cut to block 4, keeping less on them. Every device follows; the record shows it."""
    _, result, rec = run(
        tmp_path,
        paradigm={"name": "hfsl", "splitAfter": 2, "candidates": [2, 4]},
        dataset={"name": "synthetic", "samplesPerSource": 64, "testSamples": 32},
        training={"epochs": 3, "batchSize": 32, "lr": 0.01, "replyTimeoutS": 60},
        sources={"replicas": 2, "device": {"profile": "low"}},
        server={"device": {"profile": "medium", "load": [{"fromRound": 2, "busy": 0.9}]}},
        network={"profile": "wifi6"},
    )
    assert result.ok, result.message
    moves = rec[rec["event"] == "resplit"]
    assert len(moves) == 1
    move = moves.iloc[0]
    assert (move["round"], move["from_cut"], move["to_cut"]) == (1, 2, 4)  # decided at round 1's end, for round 2
    assert move["power_low"] == pytest.approx(0.5) and move["power_medium"] == pytest.approx(0.5)
    loads = rec[rec["event"] == "load"]
    assert sorted(loads["instance"]) == ["server-0", "server-1"] and (loads["busy"] == 0.9).all()
    steps = rec[rec["event"] == "step"]
    assert set(steps.loc[steps["epoch"] < 2, "split_after"]) == {2} and set(
        steps.loc[steps["epoch"] == 2, "split_after"]
    ) == {4}
    assert set(steps.loc[steps["epoch"] == 2, "up_activation_bytes"]) == {32 * 64 * 7 * 7 * 4}  # pool2's output
    low = rec[(rec["event"] == "aggregate") & (rec["partition"] == "low")].sort_values("round")
    assert low["values"].iloc[2] > low["values"].iloc[0]  # W_l grew to conv1..pool2
    rounds = rec[(rec["event"] == "round") & (rec["role"] == "server")]
    assert set(rounds.loc[rounds["epoch"] == 2, "split_after"]) == {4}  # the medium devices followed
