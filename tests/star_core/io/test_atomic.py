"""Atomic writes (star_core.io.atomic): the target holds the old bytes or the new ones, never a part."""

from __future__ import annotations

import os
import stat
import uuid

import fsspec
import pytest

from star_core.io.atomic import atomic_local_path, write_atomic, write_bytes_atomic


class Boom(RuntimeError):
    pass


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_bytes_atomic(fsspec.filesystem("file"), str(target), b"old")

    def half_then_raise(fh) -> None:
        fh.write(b"new but cut")
        raise Boom("disk full")

    with pytest.raises(Boom):
        write_atomic(fsspec.filesystem("file"), str(target), half_then_raise)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_a_new_file_is_not_created_when_the_writer_raises(tmp_path):
    target = tmp_path / "new.png"
    with pytest.raises(Boom):
        with atomic_local_path(target, suffix=".png") as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
            open(tmp, "wb").write(b"partial")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_success_replaces_the_file_with_the_umask_mode(tmp_path):
    target = tmp_path / "a" / "b.bin"
    fs = fsspec.filesystem("file")
    write_bytes_atomic(fs, str(target), b"one")
    write_atomic(fs, str(target), lambda fh: fh.write(b"two"))
    assert target.read_bytes() == b"two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_object_store_gets_one_complete_put():
    fs = fsspec.filesystem("memory")
    path = f"/atomic-{uuid.uuid4().hex[:8]}/x.bin"
    with pytest.raises(Boom):
        write_atomic(fs, path, lambda fh: (fh.write(b"partial"), (_ for _ in ()).throw(Boom())))
    assert not fs.exists(path)
    write_atomic(fs, path, lambda fh: fh.write(b"whole"))
    assert fs.cat_file(path) == b"whole"
    fs.rm(path)
