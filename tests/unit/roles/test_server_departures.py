"""A server records a source's goodbye in a small file beside its checkpoint, not by writing its
whole state again: with 1,000 sources each goodbye rewrote 104 MB (the pending replies of all)."""

from types import SimpleNamespace

from splitbench.roles.server import Server


def _server(tmp_path, said_bye):
    def never(*args, **kwargs):
        raise AssertionError("a goodbye must not write the whole checkpoint")

    path = tmp_path / "checkpoints" / "server-0.pt"  # no checkpoint yet: the folder is not there
    return SimpleNamespace(
        ckpt=SimpleNamespace(every=1, path=path, save=never, due=lambda *a: True),
        byes_path=path.with_suffix(".left.json"),
        said_bye=set(said_bye),
        mine={"source-0", "source-1", "source-2"},
    )


def test_a_goodbye_writes_who_left_and_a_restart_reads_it(tmp_path):
    srv = _server(tmp_path, {"source-2", "source-0"})
    Server.save(srv, epoch=1, step=7, bye=True)
    assert not srv.ckpt.path.exists()
    assert Server.left_before(srv) == {"source-0", "source-2"}


def test_no_file_or_a_damaged_one_means_nobody_left(tmp_path):
    srv = _server(tmp_path, set())
    assert Server.left_before(srv) == set()
    srv.byes_path.parent.mkdir()
    srv.byes_path.write_text("{not json")
    assert Server.left_before(srv) == set()
    srv.byes_path.write_text('["source-9", "source-1"]')  # a name not this server's is ignored
    assert Server.left_before(srv) == {"source-1"}


def test_without_checkpoints_who_left_is_still_written(tmp_path):
    """A server restarts (restart policy) whether or not it checkpoints: it must not wait for
    sources that finished before it died."""
    srv = _server(tmp_path, {"source-1"})
    srv.ckpt.every = "none"
    Server.save(srv, epoch=0, step=0, bye=True)
    assert Server.left_before(srv) == {"source-1"}
    assert not srv.ckpt.path.exists()
