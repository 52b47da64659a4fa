"""Run manifests: per-input status (done / failed / skipped, with reason) of one job run.

``manifests/<job>/<run_id>.parquet`` (``schemas.MANIFEST``), rewritten atomically as a run
progresses, so a killed run leaves a manifest of everything it finished.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from star_core.io import schemas
from star_core.io.lake import Lake, check_name
from star_core.io.stamps import utc_now


def manifest_row(
    job: str,
    run_id: str,
    input: str,
    status: str,
    reason: str | None = None,
    duration_s: float | None = None,
    n_segments: int | None = None,
    output: str | None = None,
) -> dict:
    """One manifest row (status ``done`` / ``failed`` / ``skipped``), stamped with the current time.

    Raises:
        ValueError: unknown status.
    """
    if status not in schemas.MANIFEST_STATUSES:
        raise ValueError(f"manifest status must be one of {schemas.MANIFEST_STATUSES}, got {status!r}")
    return {
        "job": job,
        "run_id": run_id,
        "input": input,
        "status": status,
        "reason": reason,
        "duration_s": duration_s,
        "n_segments": n_segments,
        "output": output,
        "finished_at": utc_now(),
    }


def write_manifest(lake: Lake, job: str, run_id: str, rows: Sequence[dict]) -> str:
    """Atomically write (or replace) the manifest of one job run.

    A long job may call this repeatedly with the rows so far: each call replaces the file, so
    a killed run leaves a manifest of everything it finished.

    Returns:
        The manifest's path (``manifests/<job>/<run_id>.parquet``).

    Raises:
        ValueError: a row has an unknown status.
    """
    bad = sorted({str(r.get("status")) for r in rows if r.get("status") not in schemas.MANIFEST_STATUSES})
    if bad:
        raise ValueError(f"manifest {job}/{run_id}: unknown status {bad}; use one of {schemas.MANIFEST_STATUSES}")
    path = lake.manifest_path(job, run_id)
    table = pa.Table.from_pylist(list(rows), schema=schemas.MANIFEST) if rows else schemas.MANIFEST.empty_table()
    lake.write_table(path, table, schemas.MANIFEST)
    return path


def read_manifest(lake: Lake, job: str, run_id: str) -> pa.Table:
    """The manifest of one run.

    Raises:
        FileNotFoundError: the run wrote no manifest.
    """
    path = lake.manifest_path(job, run_id)
    if not lake.exists(path):
        raise FileNotFoundError(f"no manifest for {job} run {run_id!r} at {lake.uri_of(path)}")
    return lake.read_table(path, schemas.MANIFEST)


def read_manifests(lake: Lake, job: str) -> pa.Table:
    """All manifests of a job, every run concatenated (run_id column tells them apart)."""
    return lake.read_tables(lake.list_files(lake.path("manifests", check_name("job", job))), schemas.MANIFEST)
