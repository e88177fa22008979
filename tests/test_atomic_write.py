"""dva.utils atomic writes: the old or the new file after a failure, and the umask's mode, not 0600."""
from __future__ import annotations

import os

import pytest

from dva.utils import atomic_write_bytes, atomic_writer


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "new.json", b"{}")
        (tmp_path / "old.json").write_bytes(b"x")
        os.chmod(tmp_path / "old.json", 0o600)
        atomic_write_bytes(tmp_path / "old.json", b"y")  # a replaced file gets the mode of a new one
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "old.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "new.json").read_bytes() == b"{}" and (tmp_path / "old.json").read_bytes() == b"y"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_writer(target) as f:
            f.write(b"half of the new")
            assert len(list(target.parent.glob(".data.bin.*.tmp"))) == 1  # written beside, hidden
            raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]
