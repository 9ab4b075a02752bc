"""golden/fileio.py: atomic writes that never replace a file without force, and `mcnn sim`'s
report hand-over (tb/cosim/commands.py) on a stand-in session (no co-simulation)."""
import argparse
import json
import os

import pytest

from golden.fileio import InputError, OutputExists, check_outputs, with_suffix_kept, write_atomic


def listing(d):
    return sorted(p.name for p in d.iterdir())


def test_write_new_and_refuse_existing(tmp_path):
    p = write_atomic(tmp_path / "sub" / "a.json", '{"x": 1}')
    assert p.read_text() == '{"x": 1}' and listing(p.parent) == ["a.json"]
    mtime = p.stat().st_mtime_ns
    with pytest.raises(OutputExists, match="a.json: exists, not overwritten"):
        write_atomic(p, b"other")
    assert p.read_text() == '{"x": 1}' and p.stat().st_mtime_ns == mtime and listing(p.parent) == ["a.json"]
    os.chmod(p, 0o640)
    write_atomic(p, b"new", force=True)
    assert p.read_bytes() == b"new" and (p.stat().st_mode & 0o777) == 0o640 and listing(p.parent) == ["a.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "w.npz"
    p.write_bytes(b"old")

    def half(f):
        f.write(b"half a file")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_atomic(p, half, force=True)
    assert p.read_bytes() == b"old" and listing(tmp_path) == ["w.npz"]


def test_no_clobber_when_the_file_appears_meanwhile(tmp_path):
    """Without force, a file created while the data was written is kept (hard-link rename)."""
    p = tmp_path / "r.json"

    def slow(f):
        p.write_text("someone else's")
        f.write(b"mine")
    with pytest.raises(OutputExists):
        write_atomic(p, slow)
    assert p.read_text() == "someone else's" and listing(tmp_path) == ["r.json"]


def test_check_outputs(tmp_path):
    (tmp_path / "f").write_text("x")
    check_outputs([tmp_path / "new" / "deeper" / "a.png"])
    with pytest.raises(InputError, match="is a directory"):
        check_outputs([tmp_path], force=True)
    with pytest.raises(InputError, match="is not a directory"):
        check_outputs([tmp_path / "f" / "a.json"])
    check_outputs([tmp_path / "f"], force=True)


def test_suffix_keeps_dots():
    assert str(with_suffix_kept("runs/model.v2", ".npz")) == "runs/model.v2.npz"
    assert str(with_suffix_kept("m", ".json")) == "m.json"


@pytest.mark.parametrize("force", [False, True])
def test_sim_report_handover(tmp_path, force):
    """The session writes a temporary report beside --report; it is then moved into place
    atomically (an existing report replaced only with --force) and the temporary file removed."""
    from tb.cosim import commands
    rep = tmp_path / "r.json"
    args = argparse.Namespace(report=rep, force=force)
    tmp = rep.with_name(".r.json.1.partial")
    r = commands._run_reported(args, tmp, lambda: tmp.write_text(json.dumps({"images": 3})))
    assert r == {"images": 3} and json.loads(rep.read_text()) == {"images": 3} and listing(tmp_path) == ["r.json"]
    if not force:
        with pytest.raises(OutputExists):
            commands._run_reported(args, tmp, lambda: tmp.write_text("{}"))
        assert json.loads(rep.read_text()) == {"images": 3} and listing(tmp_path) == ["r.json"]
