"""Find the lake files that block readers, and move them aside (``star lake check [--quarantine]``).

One unreadable Parquet file under ``features/`` makes every reader of that directory fail (the
feature index, ``star datasets``, the ``features`` view of ``star query``). :func:`check_lake`
reads every Parquet file under ``features/``, ``labels/``, ``detections/`` and ``manifests/``
(footer, schema, then every row group, one at a time, so memory stays flat) and every dataset
version's ``dataset.json``, and reports each file that a reader would trip over, with the reason.

:func:`quarantine` moves such a file to ``<lake>/quarantine/<its lake-relative path>``, where no
reader looks: locally by ``os.replace`` (atomic; the quarantine is inside the lake, so on the same
filesystem), on an object store by copying, then deleting (a killed move leaves both copies, and a
rerun moves the original again). A bad file of a dataset version quarantines the
whole version directory (``labels.parquet`` and its ``dataset.json`` marker), because a version whose
marker exists but whose labels are gone would still block every dataset listing.

Files written by another schema *version* of the same table are reported but never moved: they are
not damaged, the running ``star`` is older or newer than the one that wrote them.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq

from star_core.io import schemas
from star_core.io.lake import Lake

# Top-level lake directory -> the schema of every Parquet file under it.
CHECKED_DIRS: dict[str, pa.Schema] = {
    "features": schemas.FEATURES,
    "labels": schemas.LABELS,
    "detections": schemas.DETECTIONS,
    "manifests": schemas.MANIFEST,
}
QUARANTINE_DIR = "quarantine"
# Problem kinds: damaged or foreign files are quarantined; other-version files are only reported.
UNREADABLE, FOREIGN, OTHER_VERSION = "unreadable", "foreign", "other-version"


@dataclass(frozen=True)
class Problem:
    """One lake file a reader would fail on.

    Attributes:
        relative: the file's path relative to the lake root (``features/<set>/part-....parquet``).
        uri: the file, as users write it (local path or ``s3://...``).
        kind: ``unreadable`` (not Parquet/JSON, truncated, damaged data), ``foreign`` (a readable
            file that is not a star table of this directory) or ``other-version``.
        reason: what is wrong, in words.
        moved_to: where :func:`quarantine` put it (URI), or None.
    """

    relative: str
    uri: str
    kind: str
    reason: str
    moved_to: str | None = None

    @property
    def quarantinable(self) -> bool:
        return self.kind in (UNREADABLE, FOREIGN)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check_lake`: how many files were read and what was wrong with which."""

    n_checked: int
    problems: tuple[Problem, ...]


def _relative(lake: Lake, path: str) -> str:
    return path[len(lake.root):].lstrip("/")


def _parquet_problem(lake: Lake, path: str, expected: pa.Schema) -> Problem | None:
    rel = _relative(lake, path)
    uri = lake.url(rel)
    try:
        with lake.fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh, page_checksum_verification=True)  # verifies pages written with checksums
            meta = pf.schema_arrow.metadata or {}
            name = expected.metadata[schemas.SCHEMA_NAME_KEY]
            try:
                schemas.check_schema(pf.schema_arrow, expected, where=uri)
            except schemas.SchemaError as exc:
                same_table = meta.get(schemas.SCHEMA_NAME_KEY) == name
                other_version = same_table and meta.get(schemas.SCHEMA_VERSION_KEY) != expected.metadata[schemas.SCHEMA_VERSION_KEY]
                return Problem(rel, uri, OTHER_VERSION if other_version else FOREIGN, str(exc))
            for i in range(pf.num_row_groups):
                pf.read_row_group(i)  # decompress and decode: finds damage inside the file, not only at its end
    except (pa.ArrowException, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            return None  # removed since the listing (a concurrent rerun): nothing to repair
        return Problem(rel, uri, UNREADABLE, f"not a readable Parquet file ({type(exc).__name__}: {exc})")
    return None


def _marker_problem(lake: Lake, path: str) -> Problem | None:
    """A dataset version's ``dataset.json`` that does not parse as a JSON object with a class list."""
    rel = _relative(lake, path)
    uri = lake.url(rel)
    try:
        meta = json.loads(lake.read_bytes(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        return Problem(rel, uri, UNREADABLE, f"not a readable dataset.json ({exc})")
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        return Problem(rel, uri, FOREIGN, "dataset.json without a 'classes' list")
    return None


def check_lake(lake: Lake) -> CheckResult:
    """Read every table file of ``lake`` and list those a reader would fail on (sorted by URI)."""
    problems: list[Problem] = []
    n = 0
    for directory, expected in CHECKED_DIRS.items():
        for path in lake.list_files(lake.path(directory)):
            n += 1
            problem = _parquet_problem(lake, path, expected)
            if problem is not None:
                problems.append(problem)
    for path in lake.list_files(lake.path("labels"), suffix="/dataset.json"):
        n += 1
        problem = _marker_problem(lake, path)
        if problem is not None:
            problems.append(problem)
    return CheckResult(n, tuple(sorted(problems, key=lambda p: p.uri)))


def _still_bad(lake: Lake, problem: Problem) -> Problem | None:
    """Check ``problem``'s file again (just before moving it)."""
    path = lake.path(problem.relative)
    if problem.relative.endswith("/dataset.json"):
        return _marker_problem(lake, path)
    return _parquet_problem(lake, path, CHECKED_DIRS[problem.relative.split("/", 1)[0]])


def _moved_unit(relative: str) -> str:
    """What to move for a bad file: the file, or for ``labels/<ds>/v<N>/...`` the whole version directory."""
    parts = relative.split("/")
    if parts[0] == "labels" and len(parts) >= 4:
        return "/".join(parts[:3])
    return relative


def _move(lake: Lake, src: str, dst: str) -> None:
    if lake.is_local:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)  # atomic: both ends are inside the lake's directory tree
        return
    # Object store: copy everything, then delete. A dataset version's marker goes first, so a move
    # killed half-way leaves a version without marker, which readers treat as absent.
    lake.fs.invalidate_cache()
    files = lake.fs.find(src) if lake.fs.isdir(src) else [src]
    for f in files:
        lake.fs.copy(f, dst + f[len(src):])
    for f in sorted(files, key=lambda f: not f.endswith("/dataset.json")):
        lake.fs.rm(f)
    lake.fs.invalidate_cache()


def quarantine(lake: Lake, problems: tuple[Problem, ...] | list[Problem]) -> list[Problem]:
    """Move every damaged or foreign file of ``problems`` to ``<lake>/quarantine/<its path>``.

    Each file is read once more first; one that reads fine now (the first failure was a transient
    error of the store) stays in place.

    Returns:
        ``problems`` with ``moved_to`` set for the moved ones (other-version files stay put; a move
        that fails keeps ``moved_to`` None and adds the error to ``reason``). A
        destination that already exists (the same path quarantined before) gets a unique suffix,
        so nothing already in quarantine is overwritten.
    """
    out: list[Problem] = []
    moved: dict[str, str] = {}  # unit -> destination (several bad files of one dataset version move once)
    for p in problems:
        if not p.quarantinable:
            out.append(p)
            continue
        unit = _moved_unit(p.relative)
        if unit not in moved:
            src = lake.path(unit)
            dst = lake.path(QUARANTINE_DIR, unit)
            if lake.exists(dst):
                dst = f"{dst}.dup-{uuid.uuid4().hex[:8]}"
            if _still_bad(lake, p) is None:  # a transient read error (network) is no reason to move a file
                out.append(replace(p, reason=f"{p.reason}; readable on a second read, left in place"))
                continue
            try:
                if lake.exists(src):
                    _move(lake, src, dst)
                moved[unit] = lake.uri_of(dst)
            except OSError as exc:
                out.append(replace(p, reason=f"{p.reason}; could not quarantine it: {exc}"))
                continue
        out.append(replace(p, moved_to=moved[unit]))
    return out
