import os
import stat

from hub.files import append_line, write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_atomic_with_a_mode_creates_it_so(tmp_path):
    path = tmp_path / "secret"
    (tmp_path / ".secret.tmp").write_text("a leftover of a crash")
    write_atomic(path, "s3cret\n", 0o600)
    assert path.read_text() == "s3cret\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_append_line(tmp_path):
    path = tmp_path / "log"
    append_line(path, "one")
    append_line(path, "two")
    assert path.read_text() == "one\ntwo\n"
