"""Issue 14: validate refuses specs that would hurt the host or read what they should not."""

from __future__ import annotations

import pytest

from splitbench.spec import MAX_SUITE_RUNS, Experiment, SpecError, Suite, load_experiment
from support import experiment_doc


def refused(write_spec, match: str, **overrides) -> None:
    path = write_spec(experiment_doc(**overrides))
    with pytest.raises(SpecError, match=match) as err:
        load_experiment(path)
    assert "\n" not in str(err.value).strip() or str(err.value).count("\n") <= 1


@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf")])
def test_lr_must_be_finite_and_positive(write_spec, lr):
    refused(write_spec, "training.lr", training={"lr": lr})


@pytest.mark.parametrize("t", [0, -5, float("nan"), float("inf"), 1e9])
def test_reply_timeout_must_be_finite_positive_and_capped(write_spec, t):
    refused(write_spec, "training.replyTimeoutS", training={"replyTimeoutS": t})


def test_epochs_and_samples_are_capped(write_spec):
    refused(write_spec, "training.epochs", training={"epochs": 10**6})
    refused(write_spec, "dataset.samplesPerSource", dataset={"name": "synthetic", "samplesPerSource": 10**9})
    refused(write_spec, "dataset.testSamples", dataset={"name": "synthetic", "testSamples": 10**9})


def test_dataset_root_only_inside_allowed_roots(write_spec, monkeypatch, tmp_path):
    refused(write_spec, "outside the allowed data roots", dataset={"name": "fashion_mnist", "root": "/etc"})
    refused(write_spec, "outside the allowed data roots", dataset={"name": "fashion_mnist", "root": "/data/../etc"})
    assert Experiment.model_validate(experiment_doc(dataset={"name": "fashion_mnist", "root": "/data/fmnist"}))
    monkeypatch.setenv("SPLITBENCH_DATA_ROOTS", str(tmp_path))
    assert Experiment.model_validate(experiment_doc(dataset={"name": "fashion_mnist", "root": str(tmp_path / "x")}))


def test_transport_auth_defaults_to_curve():
    assert Experiment.model_validate(experiment_doc()).spec.transport.auth == "curve"
    assert Experiment.model_validate(experiment_doc(transport={"auth": "none"})).spec.transport.auth == "none"
    with pytest.raises(Exception):
        Experiment.model_validate(experiment_doc(transport={"auth": "tls"}))


def test_a_huge_suite_matrix_needs_allow_large(monkeypatch):
    base = experiment_doc()["spec"]
    suite = Suite.model_validate(
        {
            "apiVersion": "splitbench.dev/v1alpha1",
            "kind": "Suite",
            "metadata": {"name": "big"},
            "spec": {"base": base, "matrix": {"seed": list(range(MAX_SUITE_RUNS + 1))}},
        }
    )
    with pytest.raises(SpecError, match=f"{MAX_SUITE_RUNS + 1} runs, more than {MAX_SUITE_RUNS}"):
        suite.experiments()
    monkeypatch.setenv("SPLITBENCH_ALLOW_LARGE", "1")
    assert len(suite.experiments()) == MAX_SUITE_RUNS + 1


@pytest.mark.parametrize("cpu", ["1" + "0" * 400, "0.0001", 0.0001, "0m", "-1", 5000])
def test_cpu_must_be_a_sane_quantity(write_spec, cpu):
    refused(write_spec, "cpu", sources={"replicas": 1, "device": {"cpu": cpu}})


def test_cpu_quantities_parse_as_kubernetes_does():
    from splitbench.spec import cpu_cores

    assert cpu_cores("400m") == 0.4 and cpu_cores("2") == 2.0 and cpu_cores(0.5) == 0.5
