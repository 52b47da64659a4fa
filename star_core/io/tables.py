"""Typed reads and writes of the lake's tables: features, datasets (labels), manifests.

Converts between Arrow tables and the plain records of ``star_core.data``. Detections are
written by ``jobs.detect`` through :func:`write_detections`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from star_core.data import Dataset, Instance, VideoFeatures, VideoLabels
from star_core.io import schemas
from star_core.io.lake import Lake, check_name


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def digest_of(items: Iterable[str], n: int = 16) -> str:
    h = hashlib.sha1()
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


# ----- features ------------------------------------------------------------------------------
def features_to_table(videos: Sequence[VideoFeatures], feature_set: str, extractor_digest: str | None = None) -> pa.Table:
    now = utc_now()
    rows = {
        "video_id": [v.video_id for v in videos],
        "source_uri": [v.source_uri for v in videos],
        "feature_set": [feature_set] * len(videos),
        "fps": [float(v.fps) for v in videos],
        "segment_frames": [int(v.segment_frames) for v in videos],
        "n_segments": [v.n_segments for v in videos],
        "feat_dim": [v.feat_dim for v in videos],
        "duration_s": [None if v.duration_s is None else float(v.duration_s) for v in videos],
        "extractor_digest": [extractor_digest] * len(videos),
        "created_at": [now] * len(videos),
    }
    arrays = {k: pa.array(val, type=schemas.FEATURES.field(k).type) for k, val in rows.items()}
    for stream in ("rgb", "flow"):
        flat = [np.ascontiguousarray(getattr(v, stream), dtype=np.float32).reshape(-1) for v in videos]
        offsets = np.zeros(len(flat) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([f.size for f in flat])
        values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float32))
        arrays[stream] = pa.LargeListArray.from_arrays(pa.array(offsets), values)
    return pa.table([arrays[f.name] for f in schemas.FEATURES], schema=schemas.FEATURES)


def table_to_features(table: pa.Table, where: str = "features") -> Iterator[VideoFeatures]:
    """Yield one :class:`VideoFeatures` per row; a malformed row raises ValueError naming the video."""
    cols = {name: table.column(name).to_pylist() for name in ("video_id", "source_uri", "fps", "segment_frames", "n_segments", "feat_dim", "duration_s")}
    for i, video_id in enumerate(cols["video_id"]):
        n, d = cols["n_segments"][i], cols["feat_dim"][i]
        streams = {}
        for stream in ("rgb", "flow"):
            values = table.column(stream)[i].values.to_numpy(zero_copy_only=False)
            if values.size != n * d:
                raise ValueError(f"{where}: video {video_id!r}: {stream} holds {values.size} floats, expected n_segments*feat_dim = {n}*{d}")
            arr = values.reshape(n, d)
            if not np.isfinite(arr).all():
                raise ValueError(f"{where}: video {video_id!r}: {stream} features contain NaN or Inf")
            streams[stream] = arr
        yield VideoFeatures(
            video_id=video_id,
            rgb=streams["rgb"],
            flow=streams["flow"],
            fps=cols["fps"][i],
            segment_frames=cols["segment_frames"][i],
            duration_s=cols["duration_s"][i],
            source_uri=cols["source_uri"][i],
        )


def write_features(lake: Lake, feature_set: str, videos: Sequence[VideoFeatures], extractor_digest: str | None = None) -> str:
    """Write one shard of feature rows atomically.

    The file name is a digest of the shard's sorted video ids, so a retried or rerun shard
    overwrites its earlier file instead of adding a duplicate.

    Args:
        lake: the lake.
        feature_set: name of the feature set (``FeatureConfig.feature_set(...)``).
        videos: the shard's videos (distinct ids).
        extractor_digest: digest of the extractor weights, stored with each row.

    Returns:
        The path of the written shard.

    Raises:
        ValueError: no videos, or a video id appears twice.
    """
    if not videos:
        raise ValueError("write_features: no videos")
    ids = [v.video_id for v in videos]
    dupes = sorted(vid for vid, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"write_features: duplicate video ids in one shard: {dupes[:10]}")
    name = f"part-{digest_of(sorted(ids))}.parquet"
    path = f"{lake.features_dir(feature_set)}/{name}"
    lake.write_table(path, features_to_table(videos, feature_set, extractor_digest), schemas.FEATURES)
    return path


def feature_index(lake: Lake, feature_set: str) -> pa.Table:
    """Small table (video_id, n_segments, duration_s, created_at, path) of every stored video, deduplicated.

    When two shards hold the same video (a rerun that sharded differently), the newest row wins
    (ties: the later path, so the choice is deterministic). Only the small columns are read.

    Args:
        lake: the lake.
        feature_set: name of the feature set.

    Returns:
        One row per video id, sorted by video id; empty when the feature set has no shards.
    """
    cols = ["video_id", "n_segments", "duration_s", "created_at"]
    parts = []
    for path in lake.list_files(lake.features_dir(feature_set)):
        t = lake.read_table(path, schemas.FEATURES, columns=cols)
        parts.append(t.append_column("path", pa.array([path] * t.num_rows, pa.string())))
    if not parts:
        return pa.table({c: pa.array([], schemas.FEATURES.field(c).type) for c in cols} | {"path": pa.array([], pa.string())})
    table = pa.concat_tables(parts).sort_by([("video_id", "ascending"), ("created_at", "descending"), ("path", "descending")])
    ids = table.column("video_id").to_pylist()
    keep = [i for i, vid in enumerate(ids) if i == 0 or ids[i - 1] != vid]
    return table.take(pa.array(keep, pa.int64()))


def read_features(lake: Lake, feature_set: str, video_ids: Iterable[str] | None = None) -> Iterator[VideoFeatures]:
    """Stream the features of ``video_ids`` (all when None), one file at a time (memory stays flat)."""
    index = feature_index(lake, feature_set)
    if video_ids is not None:
        wanted = list(dict.fromkeys(video_ids))
        have = set(index.column("video_id").to_pylist())
        missing = [v for v in wanted if v not in have]
        if missing:
            raise KeyError(f"feature set {feature_set!r} has no features for {len(missing)} video(s): {missing[:10]}")
        index = index.filter(pc.is_in(index.column("video_id"), pa.array(wanted)))
    by_path: dict[str, set[str]] = {}
    for vid, path in zip(index.column("video_id").to_pylist(), index.column("path").to_pylist()):
        by_path.setdefault(path, set()).add(vid)
    for path, ids in by_path.items():
        table = lake.read_table(path, schemas.FEATURES)
        table = table.filter(pc.is_in(table.column("video_id"), pa.array(sorted(ids))))
        yield from table_to_features(table, where=lake.uri_of(path))


def list_feature_sets(lake: Lake) -> list[str]:
    base = lake.path("features")
    if not lake.exists(base):
        return []
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(base, detail=False) if lake.fs.isdir(p))


# ----- datasets (labels) ---------------------------------------------------------------------
def labels_to_table(videos: Sequence[VideoLabels]) -> pa.Table:
    rows = {
        "video_id": [v.video_id for v in videos],
        "split": [v.split for v in videos],
        "labels": [list(v.labels) for v in videos],
        "counts": [None if v.counts is None else [int(c) for c in v.counts] for v in videos],
        "instances": [[{"label": i.label, "t_start_s": i.t_start_s, "t_end_s": i.t_end_s} for i in v.instances] for v in videos],
        "ambiguous": [[{"t_start_s": a, "t_end_s": b} for a, b in v.ambiguous] for v in videos],
        "duration_s": [v.duration_s for v in videos],
        "source_uri": [v.source_uri for v in videos],
    }
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in schemas.LABELS}, schema=schemas.LABELS)


def table_to_labels(table: pa.Table) -> list[VideoLabels]:
    out = []
    for row in table.to_pylist():
        out.append(
            VideoLabels(
                video_id=row["video_id"],
                split=row["split"],
                labels=tuple(row["labels"]),
                counts=None if row["counts"] is None else tuple(row["counts"]),
                instances=tuple(Instance(i["label"], i["t_start_s"], i["t_end_s"]) for i in row["instances"] or []),
                ambiguous=tuple((a["t_start_s"], a["t_end_s"]) for a in row["ambiguous"] or []),
                duration_s=row["duration_s"],
                source_uri=row["source_uri"],
            )
        )
    return out


def dataset_digest(classes: Sequence[str], videos: Sequence[VideoLabels]) -> str:
    """Content digest of a dataset version (class order included): equal digests mean equal data."""
    table = labels_to_table(sorted(videos, key=lambda v: v.video_id))
    return digest_of([json.dumps(list(classes)), json.dumps(table.to_pylist(), sort_keys=True, default=str)])


def dataset_versions(lake: Lake, name: str) -> list[int]:
    base = lake.labels_dir(name)
    if not lake.exists(base):
        return []
    found = []
    for p in lake.fs.ls(base, detail=False):
        leaf = p.rstrip("/").rsplit("/", 1)[-1]
        if leaf.startswith("v") and leaf[1:].isdigit() and lake.exists(f"{p.rstrip('/')}/dataset.json"):
            found.append(int(leaf[1:]))
    return sorted(found)


def save_dataset(lake: Lake, name: str, classes: Sequence[str], videos: Sequence[VideoLabels], source: dict | None = None) -> tuple[int, bool]:
    """Store a dataset version; returns (version, created).

    Saving the same content again is a no-op that returns the latest version; changed content
    makes a new version, so a model trained on version k always finds version k unchanged.
    The ``dataset.json`` marker is written last: a version without it does not exist.
    """
    check_name("dataset", name)
    classes = list(classes)
    seen: set[str] = set()
    for v in videos:
        if v.video_id in seen:
            raise ValueError(f"dataset {name!r}: duplicate video {v.video_id!r}")
        seen.add(v.video_id)
        unknown = [lab for lab in v.labels if lab not in classes]
        if unknown:
            raise ValueError(f"dataset {name!r}: video {v.video_id!r} has labels {unknown} not in the class list")
    digest = dataset_digest(classes, videos)
    versions = dataset_versions(lake, name)
    if versions:
        latest = lake.read_json(f"{lake.labels_dir(name, versions[-1])}/dataset.json")
        if latest.get("digest") == digest:
            return versions[-1], False
    version = (versions[-1] + 1) if versions else 1
    directory = lake.labels_dir(name, version)
    lake.write_table(f"{directory}/labels.parquet", labels_to_table(list(videos)), schemas.LABELS)
    splits: dict[str, int] = {}
    for v in videos:
        splits[v.split] = splits.get(v.split, 0) + 1
    meta = {
        "name": name,
        "version": version,
        "classes": classes,
        "digest": digest,
        "n_videos": len(videos),
        "splits": splits,
        "created_at": utc_now().isoformat(),
        "source": source or {},
    }
    lake.write_json(f"{directory}/dataset.json", meta)
    return version, True


def load_dataset(lake: Lake, name: str, version: int | None = None) -> Dataset:
    """Load a dataset version (the latest when ``version`` is None)."""
    versions = dataset_versions(lake, name)
    if not versions:
        raise KeyError(f"lake {lake.uri}: no dataset named {name!r}")
    version = versions[-1] if version is None else int(version)
    if version not in versions:
        raise KeyError(f"dataset {name!r} has no version {version} (versions: {versions})")
    directory = lake.labels_dir(name, version)
    meta = lake.read_json(f"{directory}/dataset.json")
    videos = table_to_labels(lake.read_table(f"{directory}/labels.parquet", schemas.LABELS))
    return Dataset(name=name, version=version, classes=tuple(meta["classes"]), videos=videos)


def list_datasets(lake: Lake) -> list[dict]:
    base = lake.path("labels")
    if not lake.exists(base):
        return []
    out = []
    for p in sorted(lake.fs.ls(base, detail=False)):
        name = p.rstrip("/").rsplit("/", 1)[-1]
        for version in dataset_versions(lake, name):
            out.append(lake.read_json(f"{lake.labels_dir(name, version)}/dataset.json"))
    return out


# ----- manifests -----------------------------------------------------------------------------
def manifest_row(job: str, run_id: str, input: str, status: str, reason: str | None = None, duration_s: float | None = None, n_segments: int | None = None, output: str | None = None) -> dict:
    """One manifest row (status ``done`` / ``failed`` / ``skipped``), stamped with the current time.

    Raises:
        ValueError: unknown status.
    """
    if status not in schemas.MANIFEST_STATUSES:
        raise ValueError(f"manifest status must be one of {schemas.MANIFEST_STATUSES}, got {status!r}")
    return {"job": job, "run_id": run_id, "input": input, "status": status, "reason": reason, "duration_s": duration_s, "n_segments": n_segments, "output": output, "finished_at": utc_now()}


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
