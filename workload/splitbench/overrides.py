"""`--set path.to.field=value`: change a field of an Experiment or Suite document on the command
line, applied to the YAML document before the spec model validates it (so the usual checks and
error lines apply to the result).

A path names fields of the document as written (camelCase or snake_case, list items by index):
`spec.training.epochs=1`, `spec.network.profile=wifi6`, `spec.faults.0.atS=5`,
`metadata.name=quick`. The value is read as one YAML scalar (or flow collection): `1` is an int,
`0.5` a float, `true` a bool, `null` None, `[1, 2]` a list, anything else a string.

For a Suite, a path into the experiment spec (`spec.training.epochs`, as for an Experiment)
holds for every run the suite makes: it is set in the suite's base and wins over the matrix and
the cases (a matrix axis or case that sets the same field gets the value too). The suite's own
fields (`spec.repeats`, `spec.report.targetAccuracy`, `spec.matrix...`) are set as they are.
A path that names no field of the spec raises SpecError in one line."""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Union

import yaml
from pydantic import BaseModel

from .spec import Experiment, ExperimentSpec, SpecError, Suite, SuiteSpec


def parse(item: str) -> tuple[list[str], Any]:
    """'a.b.c=v' -> (['a', 'b', 'c'], YAML value of v)."""
    path, sep, text = item.partition("=")
    parts = path.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise SpecError(f"--set {item!r}: expected path.to.field=value (e.g. spec.training.epochs=1)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML: take it as the string it is
    return [p.strip() for p in parts], value


def apply(doc: dict, items: list[str] | tuple[str, ...]) -> dict:
    """A copy of the document with every `path=value` of items set, in order."""
    if not items:
        return doc
    doc = copy.deepcopy(doc)
    kind = doc.get("kind")
    for item in items:
        parts, value = parse(item)
        if kind == "Suite" and parts[0] == "spec" and len(parts) > 1 and not _field(SuiteSpec, parts[1]):
            if not _field(ExperimentSpec, parts[1]):
                fields = sorted({f.alias or n for m in (ExperimentSpec, SuiteSpec) for n, f in m.model_fields.items()})
                raise SpecError(
                    f"--set {item}: a suite's spec has no field {parts[1]!r} (fields of every run's spec "
                    f"and of the suite: {', '.join(fields)})"
                )
            _set_in_suite(doc, parts[1:], value, item)
        else:
            root = Suite if kind == "Suite" else Experiment
            keys = _resolve(root, parts, item, "")
            _set(doc, parts, keys, value, item)
    return doc


def _set_in_suite(doc: dict, parts: list[str], value: Any, item: str) -> None:
    """An experiment field of every run of the suite: in the base, in each matrix value of its
    axis and in each case that sets it."""
    spec = doc.setdefault("spec", {})
    keys = _resolve(ExperimentSpec, parts, item, "spec")
    base = spec.setdefault("base", {})
    _set(base, parts, keys, value, item)
    top = (parts[0], keys[0])
    matrix = spec.get("matrix") or {}
    for axis in top:
        if axis in matrix:
            if len(parts) == 1:
                matrix[axis] = [copy.deepcopy(value)]  # one value for every run: the axis collapses
            else:
                for v in matrix[axis]:
                    if isinstance(v, dict):
                        _set(v, parts[1:], keys[1:], value, item)
    for case in spec.get("cases") or []:
        for name in top:
            if isinstance(case, dict) and name in case:
                if len(parts) == 1:
                    case[name] = copy.deepcopy(value)
                elif isinstance(case[name], dict):
                    _set(case[name], parts[1:], keys[1:], value, item)


def _set(node: Any, parts: list[str], keys: list[str], value: Any, item: str) -> None:
    """Set value at parts (keys: the same path with each field's camelCase alias), creating
    mappings on the way; an existing key spelled either way is reused."""
    for i, (part, key) in enumerate(zip(parts, keys)):
        last = i == len(parts) - 1
        if isinstance(node, list):
            idx = int(part)
            if not -len(node) <= idx < len(node):
                raise SpecError(f"--set {item}: the list has {len(node)} item(s), no item {part}")
            if last:
                node[idx] = copy.deepcopy(value)
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise SpecError(f"--set {item}: {'.'.join(parts[:i]) or 'the document'} is not a mapping")
        name = part if part in node else key
        if last:
            node[name] = copy.deepcopy(value)
        else:
            if node.get(name) is None:
                node[name] = [] if parts[i + 1].lstrip("-").isdigit() else {}
            node = node[name]


def _resolve(model: Any, parts: list[str], item: str, prefix: str) -> list[str]:
    """The path with each field written as its alias; SpecError naming the first part that is no
    field (and the fields there are) otherwise."""
    keys: list[str] = []
    types_here = [model]
    for i, part in enumerate(parts):
        where = ".".join([p for p in (prefix, *parts[:i]) if p]) or "the document"
        models = [t for t in types_here if isinstance(t, type) and issubclass(t, BaseModel)]
        if any(_is_list(t) for t in types_here) and part.lstrip("-").isdigit():
            keys.append(part)
            types_here = [a for t in types_here if _is_list(t) for a in typing.get_args(t)[:1]]
            types_here = [u for t in types_here for u in _unwrap(t)]
            continue
        if any(_is_dict(t) or t is Any for t in types_here):
            keys.append(part)  # free-form keys (labels, a suite's base): no schema to check
            types_here = [Any]
            continue
        hits = [(m, f) for m in models if (f := _field(m, part))]
        if not models:
            raise SpecError(f"--set {item or '.'.join(parts)}: {where} is a value, it has no field {part!r}")
        if not hits:
            fields = sorted({f.alias or n for m in models for n, f in m.model_fields.items()})
            known = f" (fields: {', '.join(fields)})" if fields else ""
            raise SpecError(f"--set {item or '.'.join(parts)}: {where} has no field {part!r}{known}")
        name = hits[0][1]
        info = hits[0][0].model_fields[name]
        keys.append(info.alias or name)
        types_here = [u for m, n in hits for u in _unwrap(m.model_fields[n].annotation)]
    return keys


def _field(model: type[BaseModel], part: str) -> str | None:
    """The Python name of the field that part names (by alias or by name), or None."""
    for name, info in model.model_fields.items():
        if part in (name, info.alias):
            return name
    return None


def _unwrap(t: Any) -> list[Any]:
    """The types a value of annotation t may have: unions and Annotated opened, None dropped."""
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin in (Union, types.UnionType):
        return [u for a in typing.get_args(t) if a is not type(None) for u in _unwrap(a)]
    return [t]


def _is_list(t: Any) -> bool:
    return typing.get_origin(t) in (list, tuple)


def _is_dict(t: Any) -> bool:
    return t is dict or typing.get_origin(t) is dict
