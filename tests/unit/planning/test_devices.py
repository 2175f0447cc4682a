import math
import os
import subprocess
import sys

import pytest

from splitbench.devices import remove_cgroups, resolve_device
from splitbench.spec import DeviceSpec, SpecError

_PROBE = r"""
import sys, time, torch
from splitbench.devices import apply_cpu_limit, set_torch_threads
mech = apply_cpu_limit(0.25, "pytest-probe-" + sys.argv[1], mode=sys.argv[1])
threads = set_torch_threads(0.25)
t, c = time.time(), time.process_time()
while time.time() - t < 2.0:
    pass
print(mech, threads, (time.process_time() - c) / (time.time() - t))
"""


def test_profiles_and_explicit_quotas():
    assert resolve_device(DeviceSpec(profile="paper-source")).cpu == 0.4
    assert resolve_device(DeviceSpec(profile="paper-source", cpu="1")).cpu == 1.0
    assert resolve_device(DeviceSpec()).cpu is None
    assert resolve_device(DeviceSpec(profile="low")).tier == "low"
    with pytest.raises(ValueError, match="unknown profile 'toaster'"):  # the spec checks the registry
        DeviceSpec(profile="toaster")
    with pytest.raises(SpecError, match="unknown profile 'toaster'"):
        resolve_device(DeviceSpec.model_construct(profile="toaster"))


@pytest.mark.parametrize("mode", ["throttle", "cgroup"])
def test_quota_is_enforced_and_threads_follow_it(mode):
    if mode == "cgroup" and not (os.geteuid() == 0 and os.access("/sys/fs/cgroup/cpu", os.W_OK)):
        pytest.skip("no writable cgroup v1 cpu hierarchy (needs root)")
    # generous: a cold `import torch` on a shared, loaded machine can take a minute; the
    # assertion is on the CPU share measured after it, not on wall time
    r = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=300)
    remove_cgroups(["pytest-probe-cgroup"])
    assert r.returncode == 0, r.stderr
    mech, threads, share = r.stdout.split()
    assert mech.startswith("cgroup" if mode == "cgroup" else "sigstop-throttle")
    assert threads == "1"
    # a busy loop under a 0.25-core quota gets about a quarter of a core; unlimited it gets ~1
    assert float(share) < 0.5, share


def test_off_means_no_limit_at_all():
    from splitbench.devices import apply_cpu_limit
    import os

    def children() -> set[str]:  # this process's children (a session fixture may have started some)
        found = set()
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and open(f"/proc/{p}/stat").read().split()[3] == str(os.getpid()):
                    found.add(p)
            except OSError:  # gone meanwhile
                continue
        return found

    before = [l for l in open("/proc/self/cgroup").read().splitlines()]
    kids = children()
    assert apply_cpu_limit(0.25, "pytest-off", mode="off") == "off"
    assert open("/proc/self/cgroup").read().splitlines() == before  # not moved into a cgroup
    assert children() - kids == set()  # and no throttle watchdog started


def test_the_throttle_duty_cycle_counts_the_threads_that_compute(monkeypatch):
    """Without a writable cgroup the quota is a SIGSTOP/SIGCONT duty cycle: a source group's k
    busy threads would use k times a one-thread duty cycle, so theirs is divided by them (at
    most by the host's cores, the most they can run at once)."""
    from splitbench import devices

    started = []
    monkeypatch.setattr(devices.subprocess, "Popen", lambda argv, **kw: started.append(argv))
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    period = devices.PERIOD_US / 1e6
    for threads, share in ((1, 0.4), (4, 0.2), (2, 0.2)):
        assert devices._throttle(0.4, threads) == "sigstop-throttle"
        on, off = float(started[-1][-2]), float(started[-1][-1])
        assert math.isclose(on, share * period) and math.isclose(off, (1 - share) * period), (threads, on, off)
