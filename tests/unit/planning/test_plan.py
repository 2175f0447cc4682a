"""The runtime model's arithmetic on inputs where every term is known, and the plan command."""

import subprocess
import sys

import pytest

from splitbench.link.profiles import Direction, LinkConfig
from splitbench.planning.epoch_time import HEADER, Inputs, choose, full_cloud_s, memory_bytes, predict


def inputs(rate_bps=8e6, medium="dedicated", sources=1, edge=1.0):
    link = LinkConfig("t", medium, Direction(rate_bps, 0.01), Direction(rate_bps, 0.01))
    # 3 blocks; each 1 s forward, 2 s backward on the edge (x edge); 0.1 / 0.2 s on the cloud
    return Inputs(
        edge_fwd=[1.0 * edge] * 3,
        edge_bwd=[2.0 * edge] * 3,
        cloud_fwd=[0.1] * 3,
        cloud_bwd=[0.2] * 3,
        out_numel=[1000, 250, 10],
        params=[100, 100_000, 300],
        head_fwd=[0.5] * 3,
        head_bwd=[0.5] * 3,
        head_params=[10] * 3,
        input_numel=3000,
        batch=10,
        batches_per_epoch=4,
        epochs=2,
        label_bytes=1,
        link=link,
        sources=sources,
    )


def test_hierarchical_split_and_full_cloud_times():
    i = inputs()
    p = predict(i, 1)
    up = 8 * (10 * (4000 + 1) + HEADER) / 8e6 + 0.01  # features + labels + header, plus delay
    e_f, e_b, c_f, c_b = 1.5, 2.5, 0.2, 0.4
    assert p.hierarchical_s == pytest.approx(4 * (e_f + max(e_b, up + c_f) + c_b))
    assert p.hierarchical_pipelined_s == pytest.approx(
        4 * max(e_f + e_b, up, c_f + c_b) + (e_f + max(e_b, up + c_f) + c_b)
    )
    down = 8 * (10 * 4000 + HEADER) / 8e6 + 0.01
    assert p.split_s == pytest.approx(4 * (1.0 + up + c_f + c_b + down + 2.0))
    raw = 8 * (10 * (3000 + 1) + HEADER) / 8e6 + 0.01
    assert full_cloud_s(i, 1, True) == pytest.approx(4 * raw + 4 * 0.9)
    assert full_cloud_s(i, 1, False) == pytest.approx(4 * raw / 2 + 4 * 0.9)


def test_a_shared_medium_is_divided_among_sources():
    alone, shared = predict(inputs(rate_bps=1e6), 1), predict(inputs(rate_bps=1e6, medium="shared", sources=4), 1)
    transfer = 8 * (10 * 4001 + HEADER) / 1e6 + 8 * (10 * 4000 + HEADER) / 1e6  # up + down per batch, alone
    assert shared.split_s - alone.split_s == pytest.approx(4 * 3 * transfer)  # 4 batches, 3 more sources' turns


def test_one_cloud_server_is_shared_by_the_sources():
    fast = inputs(rate_bps=1e12, sources=20, edge=0.001)  # edge and link negligible: the cloud bounds
    p = predict(fast, 1)
    cloud = 20 * (0.2 + 0.4)  # blocks 2 and 3 for each of 20 sources' batches
    assert p.hierarchical_s == pytest.approx(4 * cloud)
    assert p.split_s == pytest.approx(4 * cloud)
    assert full_cloud_s(fast, 4, True) == pytest.approx(4 * 20 * 0.9)


def test_the_best_cut_must_fit_the_edge_memory():
    fast_edge_slow_link = inputs(rate_bps=1e5, edge=0.001)
    rows, best = choose(fast_edge_slow_link, None)
    assert [r.cut for r in rows] == [1, 2]
    assert best.cut == 2  # 250 values per sample upload far faster than 1000 on a slow link
    small = rows[0].edge_memory_bytes  # block 2's weights make the deeper cut heavier
    assert rows[1].edge_memory_bytes > small
    _, best = choose(fast_edge_slow_link, small)
    assert best.cut == 1
    assert choose(inputs(), small - 1)[1] is None
    assert memory_bytes("1Gi") == 2**30 and memory_bytes("512Mi") == 2**29 and memory_bytes(None) is None


def test_plan_command_prints_every_cut_and_a_choice(write_spec):
    from support import experiment_doc

    path = write_spec(
        experiment_doc(paradigm={"name": "early_exit", "splitAfter": 2}, network={"profile": "low-bitrate"})
    )
    r = subprocess.run(
        [sys.executable, "-m", "splitbench", "plan", str(path)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(1 for l in lines if l.strip()[:1].isdigit()) == 5  # small_cnn: 6 blocks, 5 cuts
    assert "best cut" in r.stdout and "sent every epoch" in r.stdout
