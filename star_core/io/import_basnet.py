"""Import the BaS-Net per-video feature layout (BaS-Net, ACM-Net, UM) into the lake.

``features/{train,test}/{rgb,flow}/<video>.npy`` (``[T_i, 1024]`` each, 16 frames at 25 fps per
step) plus an ActivityNet-style ``gt.json``. The lake receives the same features table and dataset
version as :func:`star_core.io.wtalc_import.import_wtalc` writes (splits, THUMOS'14 protocol, weak
labels with counts, evaluation-only intervals); see that module's docstring.
"""

from __future__ import annotations

import json
import logging
from typing import Sequence

from star_core.data import Instance, VideoFeatures
from star_core.io import fs as fsmod
from star_core.io.wtalc_import import (
    DEFAULT_BASNET_FEATURE_SET,
    FPS,
    SEGMENT_FRAMES,
    FeatureImportResult,
    ProgressFn,
    _as_lake,
    _finish,
    _join,
    _protocol,
    check_length,
    check_stream,
    protocol_split,
    split_of,
    video_labels,
)
from star_core.io.lake import Lake
from star_core.io.npy import read_npy
from star_core.metrics import THUMOS14_EXCLUDED, parse_ambiguous

log = logging.getLogger(__name__)


def _read_text(fs, path: str, display: str) -> str:
    if not fs.exists(path):
        raise FileNotFoundError(f"{display}: file not found")
    with fs.open(path, "rb") as fh:
        return fh.read().decode()


def import_basnet(
    root: str,
    lake: Lake | str,
    dataset: str,
    feature_set: str | None = None,
    *,
    gt_json: str | None = None,
    video_info: str | None = None,
    ambiguous: str | None = None,
    exclude_videos: Sequence[str] = THUMOS14_EXCLUDED,
    length_tolerance: float | None = 0.1,
    shard_videos: int = 16,
    on_progress: ProgressFn | None = None,
) -> FeatureImportResult:
    """Import the BaS-Net per-video layout: ``features/{train,test}/{rgb,flow}/<video>.npy`` + ``gt.json``.

    Every video of ``gt.json`` must have both stream files under the folder of its subset
    (validation -> ``train``, test -> ``test``). Feature files of videos absent from ``gt.json``
    are ignored with a warning.

    Durations: ``gt.json``'s ``duration`` is ``frames/30`` for every video (wrong for the 13
    THUMOS videos at 24/25 fps). True durations come from ``video_info`` (``TH14_video_info.json``)
    when given; otherwise a ``gt.json`` duration that disagrees with the feature grid by more than
    ``length_tolerance`` is replaced by the grid duration ``T * 16 / 25`` with a warning.

    Args:
        root: folder holding ``features/`` and ``gt.json``.
        lake: the lake (or its URI).
        dataset: dataset name.
        feature_set: feature-set name (default ``basnet-i3d-25fps-16f``).
        gt_json: ground-truth file (default ``<root>/gt.json``).
        video_info: optional ``{video: {duration: s}}`` JSON of true durations.
        ambiguous: optional ``Ambiguous_test.txt`` (``video  start end`` lines).
        exclude_videos: videos moved to the ``excluded`` split (if present).
        length_tolerance: see :func:`check_length`; with ``video_info`` a mismatch is an error.
        shard_videos: videos per feature Parquet file.
        on_progress: called with (videos written, total) after each shard.

    Returns:
        An :class:`FeatureImportResult`.
    """
    lake = _as_lake(lake)
    feature_set = feature_set or DEFAULT_BASNET_FEATURE_SET
    fs, base = fsmod.resolve(root)
    gt_path = gt_json or f"{root.rstrip('/')}/gt.json"
    gfs, gpath = fsmod.resolve(gt_path)
    try:
        gt = json.loads(_read_text(gfs, gpath, gt_path))
        database = gt["database"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{gt_path}: not an ActivityNet-style ground-truth file with a 'database' object") from None
    info = {}
    if video_info:
        ifs, ipath = fsmod.resolve(video_info)
        info = json.loads(_read_text(ifs, ipath, video_info))
    amb: dict[str, list[tuple[float, float]]] = {}
    if ambiguous:
        afs, apath = fsmod.resolve(ambiguous)
        amb = parse_ambiguous(_read_text(afs, apath, ambiguous), ambiguous)
    classes = sorted({a["label"] for v in database.values() for a in v.get("annotations", [])})
    feats, labels, width = [], [], None
    listed = set()
    for vid in sorted(database):
        entry = database[vid]
        subset = entry.get("subset", "")
        split = split_of(subset, vid, exclude_videos)
        folder = protocol_split(subset, vid)  # features/{train,test}/: the protocol split, exclusions included
        listed.add((folder, vid))
        streams = {}
        for stream in ("rgb", "flow"):
            p = _join(base, "features", folder, stream, f"{vid}.npy")
            if not fs.exists(p):
                raise ValueError(f"video {vid!r}: missing {stream} features {root.rstrip('/')}/features/{folder}/{stream}/{vid}.npy")
            with fs.open(p, "rb") as fh:
                streams[stream] = check_stream(vid, stream, read_npy(fh, f"{vid}.npy"), width)
            width = streams[stream].shape[1]
        n_rgb, n_flow = streams["rgb"].shape[0], streams["flow"].shape[0]
        if n_rgb != n_flow:
            raise ValueError(f"video {vid!r}: rgb has {n_rgb} steps but flow has {n_flow} (mismatched lengths)")
        duration = _basnet_duration(vid, entry, info, n_rgb, length_tolerance)
        instances = [Instance(a["label"], float(a["segment"][0]), float(a["segment"][1])) for a in entry.get("annotations", [])]
        labels.append(video_labels(vid, split, instances, classes, duration, amb.get(vid, ())))
        feats.append(
            VideoFeatures(
                vid,
                streams["rgb"],
                streams["flow"],
                FPS,
                SEGMENT_FRAMES,
                duration,
                source_uri=f"{root.rstrip('/')}/features/{folder}/rgb/{vid}.npy",
            )
        )
    if not feats:
        raise ValueError(f"{gt_path}: no videos in 'database'")
    for folder in ("train", "test"):
        d = _join(base, "features", folder, "rgb")
        extra = [p.rsplit("/", 1)[-1][:-4] for p in (fs.glob(_join(d, "*.npy")) if fs.exists(d) else [])]
        extra = [v for v in extra if (folder, v) not in listed]
        if extra:
            log.warning(
                "%s/features/%s: %d feature files have no entry in %s and are skipped (e.g. %s)",
                root,
                folder,
                len(extra),
                gt_path,
                extra[:3],
            )
    source = {
        "format": "basnet",
        "root": str(root),
        "gt_json": str(gt_path),
        "video_info": video_info,
        "ambiguous": ambiguous,
        "feature_set": feature_set,
        "fps": FPS,
        "segment_frames": SEGMENT_FRAMES,
        "labels_from": "instances",
        "protocol": _protocol(exclude_videos),
    }
    return _finish(lake, dataset, classes, labels, feats, feature_set, source, shard_videos, on_progress)


def _basnet_duration(vid: str, entry: dict, info: dict, n_segments: int, tolerance: float | None) -> float:
    grid_s = n_segments * SEGMENT_FRAMES / FPS
    if vid in info:
        duration = float(info[vid]["duration"])
        check_length(vid, n_segments, duration, tolerance)
        return duration
    duration = entry.get("duration")
    if duration is None:
        return grid_s
    duration = float(duration)
    try:
        check_length(vid, n_segments, duration, tolerance)
    except ValueError:
        log.warning(
            "video %r: gt.json duration %.1f s disagrees with %d feature steps (%.1f s); using the feature grid",
            vid,
            duration,
            n_segments,
            grid_s,
        )
        return grid_s
    return duration
