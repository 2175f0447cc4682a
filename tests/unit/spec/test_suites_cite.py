"""Every reproduction suite cites the source of each setting: the paper (section, table or
figure), the authors' public code where the paper is silent, or a stated choice ([ours], or
[reduced] where the suite departs from the paper to run here). A setting without its source
comment fails."""

import re

import pytest
import yaml

from support import ROOT

SUITES = sorted(
    p
    for p in (ROOT / "benchmarks" / "suites").glob("*.yaml")
    if p.stem.endswith("-paper") or p.stem.endswith("-reduced")
)
TAG = re.compile(r"#\s*(paper|code|ours|reduced)\b:?\s*\S")


def settings(node, path=()):
    """(dotted path, line number) of every scalar setting, and of every flow list of scalars."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            if isinstance(value, yaml.ScalarNode) or (
                isinstance(value, yaml.SequenceNode)
                and value.flow_style
                and all(isinstance(v, yaml.ScalarNode) for v in value.value)
            ):
                yield ".".join(sub), key.start_mark.line
            else:
                yield from settings(value, sub)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if isinstance(item, yaml.ScalarNode):
                yield ".".join(path + (str(i),)), item.start_mark.line
            else:
                yield from settings(item, path + (str(i),))


def uncited(text: str) -> list[str]:
    root = yaml.compose(text)
    spec = dict((k.value, v) for k, v in root.value)["spec"]
    lines = text.splitlines()
    out = []
    for key, value in spec.value:
        if key.value in ("base", "cases", "matrix"):
            out += [f"{p} (line {n + 1})" for p, n in settings(value, (key.value,)) if not TAG.search(lines[n])]
    return out


def test_there_are_reproduction_suites():
    assert {p.stem for p in SUITES} >= {
        "compressed-split-paper",
        "compressed-split-reduced",
        "compressed-split-prune-reduced",
        "early-exit-paper",
        "early-exit-reduced",
        "hfsl-paper",
        "hfsl-reduced",
    }


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_every_setting_cites_its_source(suite):
    missing = uncited(suite.read_text())
    assert not missing, f"{suite.name}: settings without a source comment: {', '.join(missing)}"


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.stem)
def test_every_claim_states_tolerance_and_why_it_may_differ(suite):
    from splitbench.spec import load_suite

    for c in load_suite(suite).spec.report.paper_claims:
        assert c.tolerance_source and c.if_differs, f"{suite.name}: {c.claim!r}"


def test_the_check_catches_a_missing_source():
    text = (
        "spec:\n  base:\n    model: {name: x}  # paper: sec. 1\n    training:\n      lr: 0.1  # ours: why\n"
        "      epochs: 3\n  matrix:\n    paradigm:\n      - name: split  # paper: sec. 2\n        splitAfter: 4\n"
    )
    assert uncited(text) == ["base.training.epochs (line 6)", "matrix.paradigm.0.splitAfter (line 10)"]
    assert (
        uncited(
            text.replace("epochs: 3", "epochs: 3  # code: train.py").replace(
                "splitAfter: 4", "splitAfter: 4  # reduced: fewer"
            )
        )
        == []
    )
