import json
import subprocess
import sys

import pytest

from splitbench.spec import Experiment, SpecError, cpu_cores, json_schema, load_document, load_suite
from support import ROOT, experiment_doc


def test_example_and_default_suite_are_valid():
    exp = load_document(ROOT / "examples" / "split-synthetic.yaml")
    assert isinstance(exp, Experiment)
    assert exp.spec.paradigm.split_after == 4
    suite = load_suite(ROOT / "benchmarks" / "suites" / "default.yaml")
    names = [e.name for e in suite.experiments()]
    # centralized uses no network, so it runs once, not once per network
    assert names == [
        "default-centralized",
        "default-full-offload-uint8-ethernet-1g",
        "default-full-offload-uint8-wifi6",
        "default-split-s4-ethernet-1g",
        "default-split-s4-wifi6",
        "default-early-exit-s4-ethernet-1g",
        "default-early-exit-s4-wifi6",
    ]
    assert suite.experiments()[0].spec.network.medium == "none"


def test_errors_name_the_field_and_reason(write_spec):
    doc = experiment_doc()
    doc["spec"]["training"]["batchSize"] = 0
    doc["spec"]["paradigm"] = {"name": "split"}
    doc["spec"]["sources"]["device"]["cpu"] = "lots"
    doc["spec"]["model"]["nmae"] = "typo"
    with pytest.raises(SpecError) as err:
        load_document(write_spec(doc))
    lines = str(err.value).splitlines()
    assert any("spec.training.batchSize: Input should be greater than or equal to 1" in l for l in lines), lines
    assert any("spec.paradigm.splitAfter: Field required" in l for l in lines), lines
    assert any("spec.sources.device.cpu" in l and "millicores" in l for l in lines), lines
    assert any("spec.model.nmae: Extra inputs are not permitted" in l for l in lines), lines
    assert len(lines) == 4


def test_unknown_paradigm_and_bad_yaml(write_spec, tmp_path):
    doc = experiment_doc()
    doc["spec"]["paradigm"] = {"name": "telepathy"}
    with pytest.raises(SpecError, match="spec.paradigm: Input tag 'telepathy'"):
        load_document(write_spec(doc))
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match=r"not valid YAML \(line"):
        load_document(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_document(tmp_path / "missing.yaml")


def test_validate_cli_prints_one_line_per_error_without_traceback(write_spec):
    doc = experiment_doc(name="Bad Name")
    doc["spec"]["network"] = {"profile": "carrier-pigeon"}
    path = write_spec(doc)
    r = subprocess.run([sys.executable, "-m", "splitbench", "validate", str(path)], capture_output=True, text=True)
    assert r.returncode == 2  # a bad spec: exit status 2, as bad usage
    assert "Traceback" not in r.stderr
    assert "metadata.name: Value error, must be lowercase" in r.stderr
    good = write_spec(experiment_doc(network={"profile": "carrier-pigeon"}), "good.yaml")
    r = subprocess.run([sys.executable, "-m", "splitbench", "validate", str(good)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown profile 'carrier-pigeon'" in r.stderr and "Traceback" not in r.stderr


def test_json_schema_is_exportable():
    schema = json_schema("Experiment")
    assert schema["properties"]["apiVersion"]["const"] == "splitbench.dev/v1alpha1"
    json.dumps(schema)  # serializable as is: the CRD generator will consume it
    r = subprocess.run([sys.executable, "-m", "splitbench", "schema"], capture_output=True, text=True, check=True)
    assert "splitAfter" in r.stdout


def test_cpu_quantities():
    assert cpu_cores("400m") == 0.4
    assert cpu_cores("2") == 2.0
    assert cpu_cores(0.5) == 0.5
    assert cpu_cores(None) is None


def test_long_run_names_stay_distinct_dns_labels():
    from splitbench.spec import Suite

    suite = Suite.model_validate(
        {
            "metadata": {"name": "a-rather-long-suite-name-for-testing"},
            "spec": {
                "base": experiment_doc()["spec"],
                "matrix": {
                    "paradigm": [
                        {
                            "name": "compressed_split",
                            "splitAfter": 4,
                            "compression": {"schedule": "deprune", "budgets": [4, 32, 128], "epochs": [1, 0 + 1, 1]},
                        }
                    ],
                    "training": [{"epochs": 3, "batchSize": 32}],
                    "network": [{"profile": "ethernet-100m"}, {"profile": "ethernet-1g"}],
                },
            },
        }
    )
    names = [e.name for e in suite.experiments()]
    assert len(names) == 2 and len(set(names)) == 2
    assert all(len(n) <= 63 for n in names)


def test_every_committed_suite_and_example_validates():
    """Suites a user may run (make bench SUITE=...) must at least be valid, profiles included."""
    from splitbench.cli.validate import check

    files = sorted((ROOT / "benchmarks" / "suites").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        assert check(str(f)), f


def _suite(**spec):
    from splitbench.spec import Suite

    base = experiment_doc()["spec"]
    return Suite.model_validate(
        {
            "apiVersion": "splitbench.dev/v1alpha1",
            "kind": "Suite",
            "metadata": {"name": "s"},
            "spec": {"base": base, **spec},
        }
    )


def test_cases_set_several_fields_together_and_cross_the_matrix():
    suite = _suite(
        cases=[
            {"model": {"name": "vgg16_bn"}, "paradigm": {"name": "early_exit", "splitAfter": 14}},
            {"model": {"name": "resnet18_imagenet_stem"}, "paradigm": {"name": "split", "splitAfter": 7}},
        ],
        matrix={"network": [{"profile": "wifi6"}, {"profile": "lte"}]},
    )
    runs = {e.name: e.spec for e in suite.experiments()}
    assert sorted(runs) == [
        "s-resnet18-inet-split-s7-lte",
        "s-resnet18-inet-split-s7-wifi6",
        "s-vgg16-bn-early-exit-s14-lte",
        "s-vgg16-bn-early-exit-s14-wifi6",
    ]
    vgg = runs["s-vgg16-bn-early-exit-s14-lte"]
    assert (vgg.model.name, vgg.paradigm.split_after, vgg.network.profile) == ("vgg16_bn", 14, "lte")


def test_a_paper_claim_must_name_exactly_one_run():
    claim = {
        "claim": "c",
        "source": "s",
        "paper": 2,
        "tolerance": 0.2,
        "toleranceSource": "stated",
        "metric": "bytes_per_sample",
        "numerator": "wifi6",
    }
    matrix = {"network": [{"profile": "wifi6"}, {"profile": "lte"}]}
    assert _suite(matrix=matrix, report={"paperClaims": [{**claim, "denominator": "lte"}]})
    with pytest.raises(ValueError, match="'split-s4' matches 0 runs"):
        _suite(matrix=matrix, report={"paperClaims": [{**claim, "denominator": "split-s4"}]})


def test_memory_quantities_follow_kubernetes_rules_everywhere():
    """One parser (kubernetes.utils.parse_quantity) for every memory quantity: the plan's edge
    budget and the docker executor's limits read '1Ei', '2P' and '1e9' as Kubernetes does."""
    from splitbench.executors.docker import memory_bytes as docker_bytes
    from splitbench.planning.epoch_time import memory_bytes as plan_bytes

    for parse in (plan_bytes, docker_bytes):
        assert parse("1Ei") == 2**60 and parse("2P") == 2 * 10**15 and parse("1e9") == 10**9
        assert parse("512Mi") == 2**29 and parse(None) is None
        with pytest.raises(SpecError, match="not a Kubernetes quantity"):
            parse("12 apples")
