"""A server records a source's goodbye in a small file beside its checkpoint, not by writing its
whole state again: with 1,000 sources each goodbye rewrote 104 MB (the pending replies of all)."""

from types import SimpleNamespace

from splitbench.roles.server import Server


def _server(tmp_path, said_bye, steps=None):
    def never(*args, **kwargs):
        raise AssertionError("a goodbye must not write the whole checkpoint")

    path = tmp_path / "checkpoints" / "server-0.pt"  # no checkpoint yet: the folder is not there
    steps = steps or {}
    srv = SimpleNamespace(
        ckpt=SimpleNamespace(every=1, path=path, save=never, due=lambda *a: True),
        byes_path=path.with_suffix(".left.json"),
        said_bye=set(said_bye),
        departed={who: steps.get(who) for who in said_bye},
        mine={"source-0", "source-1", "source-2"},
    )
    srv.write_departed = lambda: Server.write_departed(srv)
    return srv


class _Log:
    def __init__(self):
        self.events = []

    def write(self, event, **fields):
        self.events.append((event, fields))


def test_a_goodbye_writes_who_left_and_a_restart_reads_it(tmp_path):
    srv = _server(tmp_path, {"source-2", "source-0"})
    Server.save(srv, epoch=1, step=7, bye=True)
    assert not srv.ckpt.path.exists()
    assert set(Server.left_before(srv)) == {"source-0", "source-2"}


def test_no_file_or_a_damaged_one_means_nobody_left(tmp_path):
    srv = _server(tmp_path, set())
    assert Server.left_before(srv) == {}
    srv.byes_path.parent.mkdir()
    srv.byes_path.write_text("{not json")
    assert Server.left_before(srv) == {}
    srv.byes_path.write_text('["source-9", "source-1"]')  # an older server's list; not this server's: ignored
    assert Server.left_before(srv) == {"source-1": None}
    srv.byes_path.write_text('{"source-9": 3, "source-1": 12, "source-2": "x"}')
    assert Server.left_before(srv) == {"source-1": 12, "source-2": None}


def test_without_checkpoints_who_left_is_still_written(tmp_path):
    """A server restarts (restart policy) whether or not it checkpoints: it must not wait for
    sources that finished before it died."""
    srv = _server(tmp_path, {"source-1"})
    srv.ckpt.every = "none"
    Server.save(srv, epoch=0, step=0, bye=True)
    assert set(Server.left_before(srv)) == {"source-1"}
    assert not srv.ckpt.path.exists()


def _restarted(tmp_path, left, resumed):
    srv = _server(tmp_path, set())
    srv.byes_path.parent.mkdir(parents=True, exist_ok=True)
    srv.byes_path.write_text(left)
    srv.resumed, srv.notices_done, srv.rt = resumed, set(), SimpleNamespace(log=_Log())
    srv.departed = Server.left_before(srv)  # as resume() does
    srv.write_departed = lambda: Server.write_departed(srv)
    return srv


def test_a_source_that_left_after_the_checkpoint_counts_its_lost_updates(tmp_path):
    """source-0 trained steps 6 to 9 after the checkpoint (which has it at 5) and said goodbye
    before the server died: it sends no step again, so its 4 lost updates are counted at the
    restart. source-1 left before the checkpoint (in its said_bye): nothing of it is lost."""
    srv = _restarted(tmp_path, '{"source-0": 9, "source-1": 4}', resumed={"source-0": 5, "source-1": 4})
    Server.count_departed(srv, Server.left_before(srv), in_checkpoint={"source-1"})
    assert srv.rt.log.events == [
        ("resume", {"source": "source-0", "step": 9, "lost_updates": 4, "departed": True}),
    ]
    assert srv.notices_done == {"source-0"}


def test_a_departed_sources_loss_is_counted_once_over_restarts(tmp_path):
    """The next life may restore the same checkpoint (it died before writing a newer one):
    the updates counted by the life before must not be counted again."""
    srv = _restarted(tmp_path, '{"source-0": 9}', resumed={"source-0": 5})
    Server.count_departed(srv, Server.left_before(srv), in_checkpoint=set())
    assert [f["lost_updates"] for _, f in srv.rt.log.events] == [4]
    again = _restarted(tmp_path, srv.byes_path.read_text(), resumed={"source-0": 5})
    Server.count_departed(again, Server.left_before(again), in_checkpoint=set())
    assert again.rt.log.events == []
    assert set(Server.left_before(again)) == {"source-0"}  # still known to have left


def test_without_a_checkpoint_every_step_of_a_departed_source_is_lost(tmp_path):
    srv = _restarted(tmp_path, '{"source-2": 7, "source-1": null}', resumed={})
    Server.count_departed(srv, Server.left_before(srv), in_checkpoint=set())
    assert srv.rt.log.events == [
        ("resume", {"source": "source-2", "step": 7, "lost_updates": 8, "departed": True}),
    ]  # source-1: an older file named it without its step, so there is nothing to count


def test_a_first_life_counts_nothing(tmp_path):
    srv = _restarted(tmp_path, '{"source-0": 9}', resumed=None)
    Server.count_departed(srv, Server.left_before(srv), in_checkpoint=set())
    assert srv.rt.log.events == []
