"""The role plan is the one source of every executor's roles: for every experiment of every
shipped suite, the local processes, the docker containers and the operator's pods run the
same roles with the same commands, environment and quotas."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from splitbench.executors.docker import ContainerImages, container_args, container_options
from splitbench.executors.local import LocalExecutor
from splitbench.roleplan import plan_roles, role_name, routing_id
from splitbench.spec import load_suite
from splitbench_operator import builders
from support import ROOT

SUITES = sorted((ROOT / "benchmarks" / "suites").glob("*.yaml"))
PATHS = ("--spec", "--run-dir", "--metrics-port", "--metrics-addr", "--bind", "--cpu-limit")


def experiments():
    for suite in SUITES:
        for exp in load_suite(suite).experiments():
            yield pytest.param(exp, id=f"{suite.stem}/{exp.name}")


def normalize(args: list[str], names: dict[str, str]) -> list[str]:
    """Drop what only says where (paths, ports, how the quota is enforced) and write each
    peer's address as its role name."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in PATHS:
            skip = True
            continue
        for address, name in names.items():
            a = a.replace(address, name)
        out.append(a)
    return out


def local_view(exp, tmp_path: Path) -> dict:
    procs = LocalExecutor(tmp_path, metrics=True).processes(exp, tmp_path)
    names = {}
    for role, argv in procs:
        if "--bind" in argv:
            names[argv[argv.index("--bind") + 1]] = role.name
    return {role.name: (normalize(argv[3:], names), dict(role.env), role.cpu, role.memory) for role, argv in procs}


def docker_view(exp, tmp_path: Path) -> dict:
    plan = plan_roles(exp)
    args = container_args(plan, "run1")
    names = {f"tcp://sb-run1-{r.name}:5555": r.name for r in plan}
    out = {}
    for r in plan:
        o = container_options(r, ContainerImages(), "run1", exp, args[r.name], tmp_path, "net")
        cpu = o.get("nano_cpus", 0) / 1e9 or None
        out[r.name] = (normalize(o["command"], names), o["environment"], cpu, r.memory if o.get("mem_limit") else None)
    return out


def kube_view(exp) -> dict:
    objs = builders.build(exp, "uid", "ns")
    plan = plan_roles(exp)
    names = {builders._address(exp, builders.suffix(r), "ns"): r.name for r in plan}
    out = {}
    for o in objs:
        if o["kind"] == "Pod":
            containers = [o["spec"]["containers"][0]]
            instances = [None]
        elif o["kind"] == "Job":
            containers = [o["spec"]["template"]["spec"]["containers"][0]] * o["spec"]["completions"]
            instances = list(range(o["spec"]["completions"]))
        else:
            continue
        for c, i in zip(containers, instances):
            args = [a.replace("$(SOURCE_INDEX)", str(i)) for a in c["args"]] if i is not None else list(c["args"])
            if i is not None:
                args = [a.replace("$(SERVER_ADDRESS)", role_name("server", i)) for a in args]
            # where a pod's events and keys are is the translation's (pod logs, a mounted Secret)
            env = {
                e["name"]: e["value"]
                for e in c["env"]
                if "value" in e and e["name"] not in ("SPLITBENCH_EVENTS_STDOUT", "SERVER_ADDRESS", "SPLITBENCH_KEYS")
            }
            limits = c.get("resources", {}).get("limits", {})
            cpu = int(limits["cpu"][:-1]) / 1000 if "cpu" in limits else None
            kind, index = args[1], (int(args[3]) if args[2:3] == ["--index"] else 0)
            out[role_name(kind, index)] = (normalize(args, names), env, cpu, limits.get("memory"))
    return out


@pytest.mark.parametrize("exp", list(experiments()))
def test_every_executor_runs_the_same_roles(exp, tmp_path):
    local, docker, kube = local_view(exp, tmp_path), docker_view(exp, tmp_path), kube_view(exp)
    assert list(local) == plan_roles(exp).names
    assert local == docker
    assert local == kube


def test_routing_ids_and_role_names_have_one_home():
    assert routing_id("source-2") == "source-2" and routing_id("source-2", "aggregator") == "source-2>aggregator"
    sources = ROOT / "workload" / "splitbench"
    pattern = re.compile(r"""f["'](source|server|aggregator|link)-\{""")
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources.rglob("*.py")
        if p.name != "roleplan.py" and pattern.search(p.read_text())
    ]
    offenders += [str(p.relative_to(ROOT)) for p in (ROOT / "operator").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == [], "role names are built in roleplan.role_name only"


def test_profiles_are_resolved_once_in_the_plan(monkeypatch):
    """The network and device profiles are resolved in roleplan.resolve_profiles alone, once
    per plan; roles, executors and planners read them from the plan."""
    pattern = re.compile(r"\bresolve_(network|device)\(")
    homes = {"roleplan.py", "profiles.py", "devices.py"}  # the plan, and the two resolvers' definitions
    offenders = [
        str(p.relative_to(ROOT))
        for base in (ROOT / "workload", ROOT / "operator")
        for p in base.rglob("*.py")
        if p.name not in homes and pattern.search(p.read_text())
    ]
    assert offenders == [], "read the profiles from roleplan.plan_roles(exp) (plan.network, plan.device(kind))"
    from splitbench import roleplan

    calls = []
    for name in ("resolve_network", "resolve_device"):
        real = getattr(roleplan, name)
        monkeypatch.setattr(roleplan, name, lambda spec, real=real, name=name: calls.append(name) or real(spec))
    exp = next(p.values[0] for p in experiments() if p.values[0].spec.paradigm.name == "hfsl")
    plan = plan_roles(exp)
    assert calls.count("resolve_network") == 1 and calls.count("resolve_device") == 3  # sources, server, aggregator
    assert plan.network.name == exp.spec.network.profile
    assert plan["source-0"].cpu == plan.device("source").cpu and plan["server-0"].cpu == plan.device("server").cpu
    assert plan.first_hop("source-0") == ("link-0" if plan.network.emulated else "server-0")


def test_a_users_glibc_tunables_are_kept_beside_the_roles():
    from splitbench.roleplan import MALLOC_TUNABLES, ROLE_ENV, role_environ

    env = role_environ({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"})
    assert env["GLIBC_TUNABLES"] == f"{MALLOC_TUNABLES}:glibc.rtld.optional_static_tls=2048"
    assert env["PATH"] == "/bin" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert role_environ(env) == env  # applied twice (an executor, then the fork server): the same
    assert role_environ({})["GLIBC_TUNABLES"] == MALLOC_TUNABLES == dict(ROLE_ENV)["GLIBC_TUNABLES"]
