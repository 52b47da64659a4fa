"""The lake's features table: one row per video of a feature set (``features/<feature_set>/part-*.parquet``).

Converts between Arrow rows (``schemas.FEATURES``) and :class:`star_core.data.VideoFeatures`
(the one decoder of a feature row: :func:`row_to_video`), writes shards, and reads them back
through a small deduplicated index.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from star_core.data import VideoFeatures
from star_core.io import schemas
from star_core.io.lake import Lake
from star_core.io.stamps import digest_of, utc_now


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


def feature_streams(table: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Flat float32 values and int64 offsets of the ``rgb`` and ``flow`` columns (zero copy when possible)."""
    out = {}
    for stream in ("rgb", "flow"):
        col = table.column(stream).combine_chunks()
        out[stream] = (col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy(zero_copy_only=False))
    return out


def row_to_video(table: pa.Table, i: int, streams: dict[str, tuple[np.ndarray, np.ndarray]], where: str | None = None) -> VideoFeatures:
    """Row ``i`` of a features table as :class:`VideoFeatures` (``streams``: :func:`feature_streams` of the table).

    Raises:
        ValueError: the row is corrupt (stream length is not ``n_segments * feat_dim``, NaN or Inf);
            the message names the video (and ``where``, the file, when given).
    """
    prefix = f"{where}: " if where else ""
    video_id = table.column("video_id")[i].as_py()
    n, d = table.column("n_segments")[i].as_py(), table.column("feat_dim")[i].as_py()
    arrays = {}
    for name, (values, offsets) in streams.items():
        flat = values[offsets[i] : offsets[i + 1]]  # (n * d,)
        if n is None or d is None or n <= 0 or d <= 0 or flat.size != n * d:
            raise ValueError(f"{prefix}video {video_id!r}: {name} holds {flat.size} floats, expected n_segments*feat_dim = {n}*{d}")
        arr = flat.reshape(n, d)  # (N, D)
        if not np.isfinite(arr).all():
            raise ValueError(f"{prefix}video {video_id!r}: {name} features contain NaN or Inf")
        arrays[name] = arr
    return VideoFeatures(
        video_id=video_id,
        rgb=arrays["rgb"],
        flow=arrays["flow"],
        fps=table.column("fps")[i].as_py(),
        segment_frames=table.column("segment_frames")[i].as_py(),
        duration_s=table.column("duration_s")[i].as_py(),
        source_uri=table.column("source_uri")[i].as_py(),
    )


def table_to_features(table: pa.Table, where: str = "features") -> Iterator[VideoFeatures]:
    """Yield one :class:`VideoFeatures` per row; a malformed row raises ValueError naming ``where`` and the video."""
    streams = feature_streams(table)
    for i in range(table.num_rows):
        yield row_to_video(table, i, streams, where)


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
