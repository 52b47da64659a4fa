"""Detections in the lake: rows of ``schemas.DETECTIONS`` and the per-model partitions.

Layout: ``detections/model=<name>-v<version>/date=YYYY-MM-DD/part-<run_id>-<shard>.parquet``.
Each file is written once, atomically, by one detection run (``jobs.detect``); the file name
is deterministic in (run, shard), so a retried write replaces rather than duplicates.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from star_core.data import Detection
from star_core.io import schemas
from star_core.io.lake import Lake, check_name


def shard_path(lake: Lake, model_name: str, model_version: str | int, date: str, run_id: str, shard_idx: int) -> str:
    """Path of one run shard's detections file."""
    check_name("run id", run_id)
    return f"{lake.detections_dir(model_name, model_version, date)}/part-{run_id}-{int(shard_idx):05d}.parquet"


def detections_to_table(
    detections: Sequence[Detection],
    *,
    model_name: str,
    model_version: str | int,
    model_uri: str | None,
    run_id: str | None,
    feature_set: str | None,
    detected_at: dt.datetime,
) -> pa.Table:
    """Arrow table (``schemas.DETECTIONS``) of ``detections`` from one model and run."""
    n = len(detections)
    cols = {
        "video_id": [d.video_id for d in detections],
        "label": [d.label for d in detections],
        "t_start_s": [float(d.t_start_s) for d in detections],
        "t_end_s": [float(d.t_end_s) for d in detections],
        "score": [float(d.score) for d in detections],
        "model_name": [model_name] * n,
        "model_version": [str(model_version)] * n,
        "model_uri": [model_uri] * n,
        "run_id": [run_id] * n,
        "feature_set": [feature_set] * n,
        "detected_at": [detected_at] * n,
    }
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in schemas.DETECTIONS}, schema=schemas.DETECTIONS)


def write_detections(lake: Lake, path: str, table: pa.Table) -> str:
    """Atomically write one detections file (schema-checked); returns its path."""
    lake.write_table(path, table, schemas.DETECTIONS)
    return path


def model_files(lake: Lake, model_name: str, model_version: str | int) -> list[str]:
    """Every detections file of one model version, across all dates."""
    return lake.list_files(lake.detections_dir(model_name, model_version))


def detected_video_ids(lake: Lake, model_name: str, model_version: str | int) -> set[str]:
    """Video ids that already have detections from this model version (any date, any run)."""
    done: set[str] = set()
    for path in model_files(lake, model_name, model_version):
        col = lake.read_table(path, schemas.DETECTIONS, columns=["video_id"]).column("video_id")
        done.update(pc.unique(col).to_pylist())
    return done


def read_detections(lake: Lake, paths: Iterable[str], video_id: str | None = None) -> pa.Table:
    """Rows of the given detections files (only ``video_id``'s when given)."""
    parts = []
    for path in paths:
        t = lake.read_table(path, schemas.DETECTIONS)
        if video_id is not None:
            t = t.filter(pc.equal(t.column("video_id"), video_id))
        parts.append(t)
    return pa.concat_tables(parts) if parts else schemas.DETECTIONS.empty_table()


def table_to_detections(table: pa.Table) -> list[Detection]:
    cols = [table.column(c).to_pylist() for c in ("video_id", "label", "t_start_s", "t_end_s", "score")]
    return [Detection(v, lab, s, e, sc) for v, lab, s, e, sc in zip(*cols)]
