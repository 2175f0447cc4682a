"""The Experiment CRD: generated from the spec, valid for Kubernetes, and as strict as it can be."""

import copy
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from splitbench.crd import as_jsonschema, crd
from support import ROOT, experiment_doc

CRD_FILE = ROOT / "helm" / "splitbench" / "crds" / "experiments.splitbench.dev.yaml"
K8S = "1.35.0"  # the Kubernetes minor the manifests are checked against


def test_committed_crd_is_what_the_spec_generates():
    r = subprocess.run(
        [sys.executable, "-m", "splitbench", "crd", "--check", str(CRD_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), K8S, strict=True)
    version = crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Paradigm", "Network", "Phase", "Progress"]


def _structural(node, path="root"):
    """Kubernetes' structural rules that matter here: a type on every node (or an explicit
    escape), no $ref, const, anyOf/oneOf left over."""
    assert not {"$ref", "const", "anyOf", "oneOf", "allOf", "$defs"} & set(node), path
    assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
    for k, v in node.get("properties", {}).items():
        _structural(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        _structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural():
    _structural(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _validator():
    schema = as_jsonschema(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(path):
    _validator().validate(yaml.safe_load(path.read_text()))


def test_every_paradigm_is_accepted():
    from splitbench.spec import load_suite

    docs = [
        e.model_dump(by_alias=True, exclude_none=True, mode="json")
        for f in sorted((ROOT / "benchmarks" / "suites").glob("*.yaml"))
        for e in load_suite(f).experiments()
    ]
    assert {d["spec"]["paradigm"]["name"] for d in docs} >= {
        "centralized",
        "full_offload",
        "split",
        "compressed_split",
        "early_exit",
        "fedavg",
        "hfsl",
    }
    v = _validator()
    for d in docs:
        v.validate(d)


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda s: s.update(colour="blue"), "colour"),  # unknown field
        (lambda s: s["training"].update(epochs="ten"), "ten"),  # wrong type
        (lambda s: s["training"].update(epochs=0), "epochs"),  # below the minimum
        (lambda s: s["paradigm"].update(name="magic"), "magic"),  # no such paradigm
        (lambda s: s["model"].update(name="alexnet"), "alexnet"),  # no such model
        (lambda s: s["network"].update(uplink={"rateMbit": 0}), "rateMbit"),  # exclusive minimum
        (lambda s: s.pop("model"), "model"),  # required
    ],
)
def test_bad_experiments_are_rejected(change, where):
    doc = copy.deepcopy(experiment_doc())
    doc["spec"]["network"] = {"profile": "wifi6"}
    change(doc["spec"])
    with pytest.raises(jsonschema.ValidationError) as err:
        _validator().validate(doc)
    assert where in str(err.value)
