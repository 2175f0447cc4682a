"""One registry per concept (registry.py; profiles in benchmarks/*.yaml): every list of names
that validation, the CRD, the CLI, the report and the docs show is read from it, and a name
added to it shows up in all of them with no other edit."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import typing

import pytest

from splitbench import registry, spec
from splitbench.cli.main import parser_for
from splitbench.crd import crd
from support import ROOT


def _crd_props():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]


def test_spec_reads_the_registries():
    assert spec.MODEL_NAMES == tuple(registry.MODELS)
    assert spec.DATASET_NAMES == tuple(registry.DATASETS)
    assert typing.get_args(spec.ModelSpec.model_fields["name"].annotation) == tuple(registry.MODELS)
    assert typing.get_args(spec.DatasetSpec.model_fields["name"].annotation) == tuple(registry.DATASETS)
    assert list(spec.PARADIGM_MODELS) == list(registry.PARADIGMS)
    for name, model in spec.PARADIGM_MODELS.items():
        assert typing.get_args(model.model_fields["name"].annotation) == (name,)


def test_crd_lists_what_the_registries_hold():
    props = _crd_props()
    assert props["paradigm"]["properties"]["name"]["enum"] == list(registry.PARADIGMS)
    assert props["model"]["properties"]["name"]["enum"] == list(registry.MODELS)
    assert props["dataset"]["properties"]["name"]["enum"] == list(registry.DATASETS)
    assert props["network"]["properties"]["profile"]["enum"] == list(registry.network_profiles())
    for role in ("sources", "server", "aggregator"):
        assert props[role]["properties"]["device"]["properties"]["profile"]["enum"] == list(registry.device_profiles())


def test_cli_choices_read_the_registries():
    args = parser_for(["profile"]).parse_args(["profile", "small_cnn"])
    assert args.model == "small_cnn"
    profile_choices = _choices(parser_for(["profile"]), "profile", "model")
    assert sorted(profile_choices) == sorted(registry.MODELS)
    for kind, names in registry.names().items():
        assert _choices(parser_for(["registry"]), "registry", kind, "name") == names, kind


def _choices(parser, *path):
    """The choices of the positional argument at the end of a subcommand path."""
    for name in path[:-1]:
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = sub.choices[name]
    return list(next(a for a in parser._actions if a.dest == path[-1]).choices)


def test_each_paradigm_class_is_the_one_its_entry_names():
    for name, info in registry.PARADIGMS.items():
        cls = info.load()
        assert cls.name == name
        assert bool(cls.aggregates) == info.aggregates, name
        if info.params:
            assert info.params in vars(spec), f"{name}: spec.py has no class {info.params}"
    for name, info in registry.MODELS.items():
        assert callable(info.build), name


def test_docs_tables_are_generated_from_the_registries():
    assert (ROOT / "docs" / "registries.md").read_text() == registry.markdown(), (
        "regenerate with: splitbench registry --markdown > docs/registries.md"
    )
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| paradigm | what crosses the wire |") :]
    table = table[: table.index("\n\n")]
    for name in re.findall(r"^\| `(\w+)`", table, flags=re.M):
        assert name in registry.PARADIGMS, name
        assert registry.PARADIGMS[name].summary in table, f"README's line for {name} differs from the registry's"


def test_unknown_profiles_are_rejected_with_the_known_names():
    with pytest.raises(ValueError, match="known: ethernet-1g"):
        spec.NetworkSpec(profile="carrier-pigeon")
    with pytest.raises(ValueError, match="known: paper-source"):
        spec.DeviceSpec(profile="toaster")


# Runs in a fresh interpreter: the spec reads the paradigm registry once, at import, as it
# would read an edited registry.py. The network profile is added to a copy of benchmarks/.
ADD_AND_SHOW = textwrap.dedent("""
    import shutil, sys, yaml
    from pathlib import Path
    tmp, root = Path(sys.argv[1]), Path(sys.argv[2])
    shutil.copytree(root / "benchmarks", tmp / "benchmarks")
    nets = yaml.safe_load((tmp / "benchmarks/networks.yaml").read_text())
    nets["profiles"]["satellite"] = {"medium": "dedicated", "source": "a GEO satellite hop",
                                     "uplink": {"rateMbit": 5, "delayMs": 300}, "downlink": {"rateMbit": 20, "delayMs": 300}}
    (tmp / "benchmarks/networks.yaml").write_text(yaml.safe_dump(nets))
    import os; os.environ["SPLITBENCH_BENCHMARKS"] = str(tmp / "benchmarks")

    from splitbench import registry
    registry.PARADIGMS["split_twin"] = registry.ParadigmInfo("what split sends, under another name",
                                                             "split:Split", "SplitParadigm")
    from splitbench import spec
    doc = {"apiVersion": spec.API_VERSION, "kind": "Experiment", "metadata": {"name": "twin"},
           "spec": {"model": {"name": "small_cnn"}, "dataset": {"name": "synthetic"},
                    "paradigm": {"name": "split_twin", "splitAfter": 2}, "network": {"profile": "satellite"}}}
    exp = spec.Experiment.model_validate(doc)
    assert exp.spec.paradigm.split_after == 2
    from splitbench.link import resolve_network
    assert resolve_network(exp.spec.network).up.delay_s == 0.3
    print("validation ok")

    from splitbench.crd import crd
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "split_twin" in props["paradigm"]["properties"]["name"]["enum"]
    assert "satellite" in props["network"]["properties"]["profile"]["enum"]
    print("crd ok")

    from splitbench.cli.main import parser_for
    assert parser_for(["registry"]).parse_args(["registry", "networks", "satellite"]).name == "satellite"
    assert parser_for(["registry"]).parse_args(["registry", "paradigms", "split_twin"]).name == "split_twin"
    print("cli ok")

    import pandas as pd
    from splitbench.report.build import names_table
    from splitbench.report.summary import summarize
    from splitbench.record import read_run
    sys.path.insert(0, str(root / "tests"))
    from support.report_fixtures import fake_run
    d = fake_run(tmp / "runs", "twin", 1, 0.05, 0.8, network="satellite")
    text = (d / "spec.yaml").read_text().replace("name: split\\n", "name: split_twin\\n")
    (d / "spec.yaml").write_text(text)
    row = summarize(read_run(d).record, spec.load_experiment(d / "spec.yaml"), 0.7, "ok")
    names = names_table(pd.DataFrame([row]))
    what = dict(zip(names["name"], names["what"]))
    assert what["satellite"] == "a GEO satellite hop", what
    assert what["split_twin"] == "what split sends, under another name", what
    print("report ok")
""")


def test_a_name_added_to_the_registry_shows_everywhere(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", ADD_AND_SHOW, str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["validation", "ok", "crd", "ok", "cli", "ok", "report", "ok"]


def test_no_module_imports_another_modules_private_names():
    """A name starting with _ is its module's own: the relay reads a header's kind through
    wire.peek_kind, not through wire's header layout."""
    pattern = re.compile(r"^\s*from \S+ import (\([^)]*\)|.*)", re.M)
    offenders = []
    for base in (ROOT / "workload", ROOT / "operator"):
        for p in base.rglob("*.py"):
            for m in pattern.finditer(p.read_text()):
                names = re.split(r"[\s,()]+", m.group(1))
                offenders += [
                    f"{p.relative_to(ROOT)}: {n}" for n in names if n.startswith("_") and not n.startswith("__")
                ]
    assert offenders == []
