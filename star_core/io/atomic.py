"""Atomic file writes: a reader sees the previous file or the new one, never a partial one.

The one implementation used by the lake (:meth:`star_core.io.lake.Lake.write_bytes`), the
stand-in data writer, plots and JSON reports. Locally the data goes to a temporary file in the
target's directory (named ``_tmp-*``, which lake listings skip), is fsynced and renamed over the
target; a write that raises removes its temporary file and leaves the target untouched. Object
stores receive one put, which becomes visible only when complete.
"""

from __future__ import annotations

import io
import os
import uuid
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator

import fsspec

from star_core.io import fs as fsmod

TMP_PREFIX = "_tmp-"  # temporary files of in-flight writes (never listed as lake files)


@contextmanager
def atomic_local_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A temporary path next to local ``path`` for the block to write; renamed over ``path`` when the block succeeds.

    Args:
        path: the local file to create or replace (its directory is created).
        suffix: ending of the temporary name (for writers that infer the format from it, e.g. ``.png``).

    Yields:
        The temporary path. The file created there gets the mode ``open()`` gives (umask applies).
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TMP_PREFIX}{uuid.uuid4().hex}{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # atomic on POSIX; overwrites a previous version
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` on ``fs`` with ``write(file_object)``, atomically (see the module docstring)."""
    if fsmod.is_local(fs):
        with atomic_local_path(path) as tmp, open(tmp, "wb") as fh:
            write(fh)
        return
    buf = io.BytesIO()
    write(buf)
    fs.pipe_file(path, buf.getvalue())  # one put: visible only when complete


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` on ``fs`` atomically."""
    write_atomic(fs, path, lambda fh: fh.write(data))
