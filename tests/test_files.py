"""Atomic writes: a reader sees the old file or the new one, never half of one."""

import pytest

from demo.files import atomic_write


def test_the_new_file_replaces_the_old_only_when_written_whole(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
    with atomic_write(path) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == path.parent  # same folder: the rename is atomic
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
