"""The Experiment CustomResourceDefinition, generated from the pydantic spec (one source of
truth): `splitbench crd` writes helm/splitbench/crds/experiments.splitbench.dev.yaml, and
a test fails when the committed file is out of date.

Kubernetes wants a structural schema: no $ref, one type per node, no `const`, nullability
as `nullable`. Pydantic's JSON schema is converted node by node. The paradigm union
(oneOf over discriminated variants) becomes one object whose `name` is an enum and whose
properties are all variants' fields: the API server checks types and names, and the
operator checks the rest with the same pydantic model (splitbench validate's rules).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .spec import API_VERSION, json_schema

GROUP, VERSION = API_VERSION.split("/")
PLURAL, KIND = "experiments", "Experiment"
# defaults are the operator's (pydantic fills them); titles and discriminators are not OpenAPI
_DROP = {"title", "$defs", "discriminator", "default"}


def _resolve(node: Any, defs: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _resolve({**target, **rest}, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _merge_variants(variants: list[dict]) -> dict:
    """A discriminated union as one object: `name` an enum of the variants' names."""
    props: dict[str, Any] = {}
    names = []
    for v in variants:
        for key, schema in v.get("properties", {}).items():
            if key == "name":
                names.append(schema.get("const"))
            elif key not in props:
                props[key] = schema
    props["name"] = {"type": "string", "enum": names}
    return {
        "type": "object",
        "required": ["name"],
        "properties": props,
        "description": "one of: " + ", ".join(names) + " (their fields: see `splitbench schema`)",
    }


def structural(node: Any) -> Any:
    """Pydantic's JSON schema node (refs resolved) -> a Kubernetes structural schema node."""
    if isinstance(node, list):
        return [structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "oneOf" in node and all("properties" in v for v in node["oneOf"]):
        node = {**{k: v for k, v in node.items() if k != "oneOf"}, **_merge_variants(node["oneOf"])}
    if "anyOf" in node:
        options = node.pop("anyOf")
        kept = [o for o in options if o.get("type") != "null"]
        nullable = {"nullable": True} if len(kept) < len(options) else {}
        if len(kept) == 1:
            node = {**kept[0], **node, **nullable}
        elif {o.get("type") for o in kept} <= {"string", "number", "integer"}:
            # a quantity such as cpu: "400m" or 2; give fractions as strings ("0.4") in a CRD
            node = {**node, "x-kubernetes-int-or-string": True, **nullable}
        else:
            raise ValueError(f"no structural form for a union of {[o.get('type') for o in kept]}")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[limit], node[bound] = node[bound], True  # OpenAPI 3.0: a flag beside the bound
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas prune unknown fields; the operator rejects them
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    return {k: structural(v) for k, v in node.items()}


def spec_schema() -> dict:
    schema = json_schema("Experiment")
    resolved = _resolve(schema["properties"]["spec"], schema.get("$defs", {}))
    return structural(resolved)


PHASES = ("Pending", "Running", "Succeeded", "Degraded", "Failed")
TERMINAL = PHASES[2:]
FINISHED = ("Succeeded", "Degraded")  # ended with a record (Degraded: without some sources)
# metav1.Condition, as `kubectl wait --for=condition=...` and controllers expect it
CONDITION = {
    "type": "object",
    "required": ["type", "status", "reason", "message", "lastTransitionTime"],
    "properties": {
        "type": {"type": "string", "maxLength": 316},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {
            "type": "string",
            "maxLength": 1024,
            "minLength": 1,
            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        },
        "message": {"type": "string", "maxLength": 32768},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
    },
}


def crd() -> dict:
    status = {
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "enum": list(PHASES),
                "description": "Degraded: the run finished without some of its sources",
            },
            "progress": {
                "type": "string",
                "description": "sources finished / sources (the trainer for centralized), e.g. 1/4",
            },
            "message": {"type": "string"},
            "children": {"type": "array", "items": {"type": "string"}},
            "records": {
                "type": "string",
                "description": "where the roles write the record: PersistentVolumeClaim/<name>, or pod logs",
            },
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
            "conditions": {
                "type": "array",
                "items": CONDITION,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "description": "Ready (finished with a record), Progressing, Degraded, Failed",
            },
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "experiment", "kind": KIND, "shortNames": ["sbx"]},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Paradigm", "type": "string", "jsonPath": ".spec.paradigm.name"},
                        {"name": "Network", "type": "string", "jsonPath": ".spec.network.profile"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    return "# Generated by `splitbench crd` from the pydantic spec; do not edit by hand.\n" + yaml.safe_dump(
        crd(), sort_keys=False, width=120
    )


def as_jsonschema(node: Any) -> Any:
    """An OpenAPI 3.0 schema node as draft-4 JSON schema (nullable, int-or-string), so that
    documents can be checked against the CRD without an API server."""
    if isinstance(node, list):
        return [as_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: as_jsonschema(v)
        for k, v in node.items()
        if k not in ("nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")
    }
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # what the API server would prune, a test should see
    return out
