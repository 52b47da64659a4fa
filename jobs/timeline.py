"""What ``star plot`` draws for one video: its detections, ground truth, classes and duration.

Detections come from the lake's ``detections`` partitions (one model version: the requested
one, else the one whose detections of the video are newest; within it the newest run), ground
truth from the latest version of a dataset that holds the video.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from star_core.data import Detection, VideoLabels
from star_core.io import detections as detio
from star_core.io import datasets, feature_store
from star_core.io.lake import Lake


@dataclass
class TimelineInputs:
    video_id: str
    detections: list[Detection]
    ground_truth: VideoLabels | None
    classes: list[str]
    duration_s: float | None
    model: str | None  # partition name, e.g. "star-v3"
    dataset: str | None  # "name vN" the ground truth came from


def _model_filter(model_version: str) -> pc.Expression:
    """``star-v3`` -> the partition; ``3`` or ``v3`` -> any model name at that version."""
    m = re.fullmatch(r"v?(\d+)", model_version.strip())
    if m:
        return pc.field("model_version") == m.group(1)
    return pc.field("model") == model_version.strip()


def video_detections(lake: Lake, video_id: str, model_version: str | None = None) -> tuple[pa.Table, str | None]:
    """Detection rows of ``video_id`` from one model version and its newest run, and that model's partition name."""
    from jobs.query import detections_dataset

    lake.fs.invalidate_cache()
    ds = detections_dataset(lake)
    expr = pc.field("video_id") == video_id
    if model_version:
        expr = expr & _model_filter(model_version)
    rows = ds.to_table(filter=expr) if isinstance(ds, pads.Dataset) else ds.filter(expr)
    if rows.num_rows == 0:
        return rows, None
    # newest detections decide the model, then the newest run within it
    newest = rows.sort_by([("detected_at", "descending")])
    model = newest.column("model")[0].as_py()
    rows = rows.filter(pc.equal(rows.column("model"), model))
    run = rows.sort_by([("detected_at", "descending")]).column("run_id")[0].as_py()
    if run is not None:
        rows = rows.filter(pc.equal(rows.column("run_id"), run))
    return rows, model


def check_model_version(lake: Lake, model_version: str) -> None:
    """Raise KeyError naming the known models when the lake has no detections of ``model_version``."""
    from jobs.query import detections_dataset

    ds = detections_dataset(lake)
    models = ds.to_table(columns=["model", "model_version"]) if isinstance(ds, pads.Dataset) else ds.select(["model", "model_version"])
    if models.filter(_model_filter(model_version)).num_rows == 0:
        known = sorted(set(models.column("model").to_pylist()))
        raise KeyError(f"lake {lake.uri}: no detections of model {model_version!r} (models with detections: {', '.join(known) or 'none'})")


def find_ground_truth(lake: Lake, video_id: str, dataset: str | None = None) -> tuple[VideoLabels | None, tuple[str, ...], str | None]:
    """(labels, classes, "name vN") of the video in ``dataset`` (or the first dataset holding it)."""
    names = [dataset] if dataset else sorted({d["name"] for d in datasets.list_datasets(lake)})
    for name in names:
        ds = datasets.load_dataset(lake, name)
        for v in ds.videos:
            if v.video_id == video_id:
                return v, ds.classes, f"{name} v{ds.version}"
    if dataset:
        raise KeyError(f"dataset {dataset!r} has no video {video_id!r}")
    return None, (), None


def feature_duration_s(lake: Lake, video_id: str) -> float | None:
    for fs in feature_store.list_feature_sets(lake):
        index = feature_store.feature_index(lake, fs)
        hit = index.filter(pc.equal(index.column("video_id"), video_id))
        if hit.num_rows:
            return hit.column("duration_s")[0].as_py()
    return None


def timeline_inputs(lake: Lake, video_id: str, model_version: str | None = None, dataset: str | None = None) -> TimelineInputs:
    """Everything needed to draw ``video_id``'s timeline.

    Raises:
        KeyError: the lake has neither detections nor ground truth for the video.
    """
    rows, model = video_detections(lake, video_id, model_version)
    if model_version and rows.num_rows == 0:
        check_model_version(lake, model_version)
    gt, classes, source = find_ground_truth(lake, video_id, dataset)
    if rows.num_rows == 0 and gt is None:
        which = f" from model {model_version}" if model_version else ""
        raise KeyError(f"lake {lake.uri}: no detections{which} and no ground truth for video {video_id!r}")
    dets = detio.table_to_detections(rows)
    extra = sorted({d.label for d in dets} - set(classes))
    duration_s = (gt.duration_s if gt is not None else None) or feature_duration_s(lake, video_id)
    return TimelineInputs(video_id, dets, gt, list(classes) + extra, duration_s, model, source)
