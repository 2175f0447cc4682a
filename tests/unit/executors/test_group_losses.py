"""A source group that exits with an error while some of its sources finished: the executor
reads each member's own record to name the ones that were lost (the run is degraded, not
failed with every source gone)."""

import json

from splitbench.executors.local import failed_members


def _events(run_dir, name, *statuses, cut=False):
    lines = [json.dumps({"event": "step", "step": 0})]
    lines += [json.dumps({"event": "session", "status": s}) for s in statuses]
    text = "\n".join(lines) + "\n"
    if cut:
        text += '{"event": "session", "sta'  # the failure cut the last line
    (run_dir / f"{name}.events.jsonl").write_text(text)


def test_members_whose_record_does_not_end_ok_are_the_lost_ones(tmp_path):
    _events(tmp_path, "source-4", "started", "ok")
    _events(tmp_path, "source-5", "started", "failed")
    _events(tmp_path, "source-6", "started", "ok", cut=True)
    # source-7 wrote no record at all
    assert failed_members(tmp_path, (4, 5, 6, 7)) == ["source-5", "source-7"]


def test_a_group_whose_sources_all_finished_lost_none(tmp_path):
    for i in (0, 1):
        _events(tmp_path, f"source-{i}", "ok")
    assert failed_members(tmp_path, (0, 1)) == []
