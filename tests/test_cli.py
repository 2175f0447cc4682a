"""The command line: --help and --version load no heavy module, the internal `role` command
stays out of --help, and the input flags reach the spec loader."""
from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import ROOT, experiment_doc


def splitbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitbench", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_help_and_version_import_neither_torch_nor_pandas():
    probe = ("import sys; from splitbench.cli.main import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'pandas', 'zmq') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "COMMAND" in out.stdout and "bench" in out.stdout
    assert "  role" not in out.stdout  # internal: started by executors, not listed
    version = splitbench("--version")
    assert version.returncode == 0 and version.stdout.startswith("splitbench ")


def test_a_trace_outside_the_allowed_folders_needs_trace_dir(tmp_path):
    trace = tmp_path / "traces" / "t.txt"
    trace.parent.mkdir()
    trace.write_text("0 100\n1 50\n")
    doc = experiment_doc(name="traced")
    doc["spec"]["network"] = {"profile": "ethernet-1g", "trace": str(trace)}
    spec = tmp_path / "traced.yaml"
    spec.write_text(yaml.safe_dump(doc))
    refused = splitbench("validate", str(spec))
    assert refused.returncode != 0 and "--trace-dir" in refused.stderr and "100" not in refused.stderr
    accepted = splitbench("validate", str(spec), "--trace-dir", str(trace.parent))
    assert accepted.returncode == 0, accepted.stderr
