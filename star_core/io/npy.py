"""Reading and writing ``.npy`` files, including the pickled object arrays of public WTAL releases.

W-TALC-style feature and annotation files are numpy object arrays (lists of arrays, lists of
strings), which ``np.save`` stores as a pickle. ``np.load(allow_pickle=True)`` would execute any
callable the pickle names, so a crafted file could run code on the importing machine.

Trust assumption: we read these files because the field publishes them, but we do not trust their
bytes. :func:`read_npy` therefore never calls ``np.load(allow_pickle=True)``; it unpickles object
arrays with :class:`RestrictedUnpickler`, which resolves only the handful of globals that numpy
itself writes for arrays, dtypes and scalars (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar`` and ``_codecs.encode`` used by
protocol-2 pickles of bytes). Anything else (``os.system``, ``builtins.eval``, ...) is refused with
:class:`UnsafePickleError`. Plain (non-object) arrays are read with ``allow_pickle=False``.

Python-2 pickles (the W-TALC annotation files) are read with ``encoding="latin1"``: it decodes
Python-2 ``str`` labels to ``str`` and is the encoding numpy documents for Python-2 array data.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import IO, Any

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]


class UnsafePickleError(ValueError):
    """An object ``.npy`` file references a global outside the numpy allow-list."""


# (module, name) -> object. Exactly what numpy writes when pickling arrays of arrays, lists,
# strings and numbers; nothing here can run arbitrary code.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's own array/dtype/scalar reconstructors."""

    def __init__(self, file: IO[bytes], *, where: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._where}: refusing to unpickle global {module}.{name} "
                "(only numpy arrays, dtypes and scalars are allowed in object .npy files)"
            ) from None


def read_npy(fh: IO[bytes], where: str) -> np.ndarray:
    """Read one ``.npy`` array from an open binary file, object arrays through the restricted unpickler.

    Args:
        fh: binary file positioned at the start of the ``.npy`` data (seekable).
        where: name of the file, used in error messages.

    Returns:
        The array (object arrays hold lists/arrays exactly as pickled).

    Raises:
        ValueError: not a ``.npy`` file, or a truncated one.
        UnsafePickleError: an object array references a non-numpy global.
    """
    start = fh.tell()
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise ValueError(f"{where}: not a .npy file ({exc})") from None
    if not dtype.hasobject:
        fh.seek(start)
        try:
            return np.lib.format.read_array(fh, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{where}: cannot read array: {exc}") from None
    try:
        array = RestrictedUnpickler(fh, where=where).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: cannot unpickle object array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{where}: pickle holds a {type(array).__name__}, expected a numpy array")
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"{where}: header says shape {shape}, pickle holds {array.shape}")
    return array


def npy_bytes(array: np.ndarray) -> bytes:
    """Serialise ``array`` to ``.npy`` bytes (object arrays are pickled, as numpy does)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=bool(array.dtype.hasobject))
    return buf.getvalue()


def object_array(items: list) -> np.ndarray:
    """1-D object array holding ``items`` as elements (never broadcast into a 2-D array)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out
