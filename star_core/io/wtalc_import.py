"""Import public two-stream feature releases into the lake (features table + a dataset version).

Two layouts used by weakly-supervised temporal action localization (WTAL) codebases:

* **W-TALC** (W-TALC, CO2-Net, DELU, P-MIL, DDG-Net): one ``*-I3D-JOINTFeatures.npy`` object array
  of ``[T_i, 2048]`` float32 (RGB columns 0:1024, then flow 1024:2048), one step = 16 frames at
  25 fps = 0.64 s, aligned by index with the annotation ``.npy`` files (``videoname``, ``subset``,
  ``classlist``, ``labels_all``, ``segments``, ``labels``, ``duration``) and ``Ambiguous_*.txt``.
* **BaS-Net** (BaS-Net, ACM-Net, UM): ``features/{train,test}/{rgb,flow}/<video>.npy`` of
  ``[T_i, 1024]`` each plus an ActivityNet-style ``gt.json``.

What lands in the lake (see ``docs/benchmark.md``):

* features: one row per video in feature set ``feature_set`` with ``fps=25``, ``segment_frames=16``
  and the video's true duration;
* a dataset version with splits ``train`` (THUMOS validation videos), ``test`` (test videos) and
  ``excluded``: the THUMOS'14 protocol drops ``video_test_0000270`` and ``video_test_0001496``
  (mis-annotated) from evaluation. They are kept in the dataset under the split name ``excluded``
  so no consumer of the ``test`` split can evaluate on them by accident, and the list is also
  recorded in ``dataset.json`` (``source.protocol.exclude_videos``) for evaluators that take it.
* video-level labels and per-class instance counts (the only things training reads); ground-truth
  intervals and ``Ambiguous`` segments are stored for evaluation only.

The BaS-Net layout lives in :mod:`star_core.io.import_basnet` (same helpers, same result).
All inputs are read through fsspec, so they may live on S3 as well as on local disk. Object
``.npy`` files are read with the restricted unpickler of :mod:`star_core.io.npy` (see its trust
note), never with ``np.load(allow_pickle=True)``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from star_core.data import Instance, VideoFeatures, VideoLabels, split_of_name
from star_core.io import fs as fsmod
from star_core.io import datasets, feature_store
from star_core.io.lake import Lake
from star_core.io.npy import read_npy
from star_core.metrics import THUMOS14_EXCLUDED, parse_ambiguous

log = logging.getLogger(__name__)

FPS = 25.0  # frame rate of the public I3D grids
SEGMENT_FRAMES = 16  # frames per feature step (0.64 s)
DEFAULT_FEATURE_SET = "wtalc-i3d-25fps-16f"
DEFAULT_BASNET_FEATURE_SET = "basnet-i3d-25fps-16f"
# The THUMOS'14 weakly-supervised protocol: models train on the *validation* subset and are tested on
# the test subset. Keys are splits as named by data.SPLIT_ALIASES ("validation" -> "val"), values the
# split a video of that subset lands in. A protocol decision, not a name: elsewhere "validation" means val.
THUMOS14_PROTOCOL_SPLITS = {"val": "train", "train": "train", "test": "test"}
EXCLUDED_SPLIT = "excluded"
MARKER_FILE = "synth.json"  # written by star_core.synth next to stand-in annotations (provenance)
LABEL_SOURCES = ("instances", "labels_all")

ProgressFn = Callable[[int, int], None]  # (videos written so far, total)


@dataclass(frozen=True)
class FeatureImportResult:
    """What an import of a public feature release (W-TALC, BaS-Net) wrote."""

    dataset: str
    version: int
    created: bool  # False: the same dataset content was already stored (no new version)
    feature_set: str
    splits: dict[str, int]
    n_videos: int
    n_segments: int
    feat_dim: int  # per stream
    feature_files: tuple[str, ...] = ()


@dataclass
class WtalcAnnotations:
    """The W-TALC annotation arrays, decoded and aligned by index."""

    video_ids: list[str]
    subsets: list[str]  # "validation" | "test"
    classes: list[str]
    labels_all: list[list[str]]  # video-level label lists as shipped
    segments: list[list[tuple[float, float]]]  # ground-truth intervals (s)
    segment_labels: list[list[str]]  # one class per interval
    durations_s: list[float]
    ambiguous: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    provenance: dict | None = None  # contents of synth.json for stand-in data


# ----- small readers ---------------------------------------------------------------------------
def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _read_npy_file(fs, path: str, display: str) -> np.ndarray:
    if not fs.exists(path):
        raise FileNotFoundError(f"{display}: file not found")
    with fs.open(path, "rb") as fh:
        return read_npy(fh, display)


def _decode(values: Iterable) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_wtalc_annotations(annotations_dir: str) -> WtalcAnnotations:
    """Read a W-TALC ``*-Annotations`` directory (local path or any fsspec URI).

    Args:
        annotations_dir: directory holding ``videoname.npy``, ``subset.npy``, ``classlist.npy``,
            ``labels_all.npy``, ``segments.npy``, ``labels.npy``, ``duration.npy`` and optionally
            ``Ambiguous_*.txt`` and ``synth.json``.

    Returns:
        The decoded annotations.

    Raises:
        FileNotFoundError: a required file is missing.
        ValueError: arrays of different lengths, an unknown class, a malformed interval.
    """
    fs, root = fsmod.resolve(annotations_dir)
    arrays = {}
    for name in ("videoname", "subset", "classlist", "labels_all", "segments", "labels", "duration"):
        arrays[name] = _read_npy_file(fs, _join(root, f"{name}.npy"), f"{annotations_dir}/{name}.npy")
    video_ids = _decode(arrays["videoname"])
    n = len(video_ids)
    for name, arr in arrays.items():
        if name != "classlist" and len(arr) != n:
            raise ValueError(f"{annotations_dir}/{name}.npy holds {len(arr)} entries, videoname.npy holds {n} videos")
    if len(set(video_ids)) != n:
        dup = [v for v, c in Counter(video_ids).items() if c > 1]
        raise ValueError(f"{annotations_dir}/videoname.npy: duplicate videos {dup[:5]}")
    classes = _decode(arrays["classlist"])
    known = set(classes)
    durations = np.asarray(arrays["duration"], dtype=np.float64).reshape(n, -1)[:, 0]
    segments, seg_labels, labels_all = [], [], []
    for i, vid in enumerate(video_ids):
        segs = [tuple(float(x) for x in s) for s in arrays["segments"][i]]
        labs = _decode(arrays["labels"][i])
        if len(segs) != len(labs) or any(len(s) != 2 for s in segs):
            raise ValueError(
                f"{annotations_dir}: video {vid!r}: {len(segs)} segments but {len(labs)} segment labels (or a segment is not [start, end])"
            )
        for (s, e), lab in zip(segs, labs):
            if lab not in known:
                raise ValueError(f"{annotations_dir}: video {vid!r}: label {lab!r} is not in classlist.npy")
            if not (np.isfinite(s) and np.isfinite(e)) or e < s:
                raise ValueError(f"{annotations_dir}: video {vid!r}: bad interval [{s}, {e}] for {lab}")
        video_labels = _decode(arrays["labels_all"][i])
        unknown = [lab for lab in video_labels if lab not in known]
        if unknown:
            raise ValueError(f"{annotations_dir}: video {vid!r}: labels_all has classes {unknown} not in classlist.npy")
        if not np.isfinite(durations[i]) or durations[i] <= 0:
            raise ValueError(f"{annotations_dir}: video {vid!r}: duration {durations[i]} is not a positive number")
        segments.append(segs)
        seg_labels.append(labs)
        labels_all.append(video_labels)
    ambiguous: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(fs.glob(_join(root, "Ambiguous_*.txt"))):
        name = path.rsplit("/", 1)[-1]
        with fs.open(path, "rb") as fh:
            for vid, spans in parse_ambiguous(fh.read().decode(), f"{annotations_dir}/{name}").items():
                ambiguous.setdefault(vid, []).extend(spans)
    provenance = None
    marker = _join(root, MARKER_FILE)
    if fs.exists(marker):
        with fs.open(marker, "rb") as fh:
            provenance = json.loads(fh.read())
    return WtalcAnnotations(
        video_ids=video_ids,
        subsets=_decode(arrays["subset"]),
        classes=classes,
        labels_all=labels_all,
        segments=segments,
        segment_labels=seg_labels,
        durations_s=[float(d) for d in durations],
        ambiguous=ambiguous,
        provenance=provenance,
    )


# ----- labels ----------------------------------------------------------------------------------
def protocol_split(subset: str, video_id: str) -> str:
    """The split a THUMOS video of ``subset`` lands in under the protocol (validation -> train, test -> test)."""
    split = THUMOS14_PROTOCOL_SPLITS.get(split_of_name(subset) or "")
    if split is None:
        raise ValueError(f"video {video_id!r}: unknown subset {subset!r} (expected validation or test)")
    return split


def split_of(subset: str, video_id: str, exclude_videos: Sequence[str]) -> str:
    """Dataset split of a THUMOS video: :func:`protocol_split`, or ``excluded`` for the protocol's exclusions."""
    if video_id in exclude_videos:
        return EXCLUDED_SPLIT
    return protocol_split(subset, video_id)


def video_labels(
    video_id: str,
    split: str,
    instances: Sequence[Instance],
    classes: Sequence[str],
    duration_s: float,
    ambiguous: Sequence[tuple[float, float]] = (),
    labels_all: Sequence[str] | None = None,
    source_uri: str | None = None,
) -> VideoLabels:
    """Weak labels of one video from its ground truth.

    Video-level labels are the classes with at least one instance (``labels_all is None``), in
    class-list order, with their instance counts (RAM supervision, Eq. 18). With ``labels_all``
    the shipped video-level list is used instead (W-TALC trains on it; it disagrees with the
    intervals in 28 THUMOS videos), and a listed class without intervals gets count 0.
    """
    per_class = Counter(inst.label for inst in instances)
    chosen = set(per_class) if labels_all is None else set(labels_all)
    labels = tuple(c for c in classes if c in chosen)
    return VideoLabels(
        video_id=video_id,
        split=split,
        labels=labels,
        counts=tuple(int(per_class.get(c, 0)) for c in labels),
        instances=tuple(instances),
        ambiguous=tuple((float(a), float(b)) for a, b in ambiguous),
        duration_s=float(duration_s),
        source_uri=source_uri,
    )


def wtalc_labels(
    ann: WtalcAnnotations, exclude_videos: Sequence[str] = THUMOS14_EXCLUDED, labels_from: str = "instances"
) -> list[VideoLabels]:
    """One :class:`VideoLabels` per annotated video (see :func:`video_labels`)."""
    if labels_from not in LABEL_SOURCES:
        raise ValueError(f"labels_from must be one of {LABEL_SOURCES}, got {labels_from!r}")
    out = []
    for i, vid in enumerate(ann.video_ids):
        instances = [Instance(lab, s, e) for (s, e), lab in zip(ann.segments[i], ann.segment_labels[i])]
        out.append(
            video_labels(
                vid,
                split_of(ann.subsets[i], vid, exclude_videos),
                instances,
                ann.classes,
                ann.durations_s[i],
                ann.ambiguous.get(vid, ()),
                labels_all=ann.labels_all[i] if labels_from == "labels_all" else None,
            )
        )
    return out


# ----- features --------------------------------------------------------------------------------
def check_length(video_id: str, n_segments: int, duration_s: float, tolerance: float | None) -> None:
    """Raise when a feature sequence's length disagrees with the video's duration on the 0.64 s grid.

    ``tolerance`` is relative (0.1 = 10 %), with at least 8 steps of slack for rounding and
    trailing-frame conventions; None disables the check.
    """
    if tolerance is None:
        return
    expected = duration_s * FPS / SEGMENT_FRAMES
    if abs(n_segments - expected) > max(8.0, tolerance * expected):
        raise ValueError(
            f"video {video_id!r}: {n_segments} feature steps, but its duration {duration_s:.1f} s "
            f"is {expected:.0f} steps of {SEGMENT_FRAMES} frames at {FPS:g} fps (lengths do not match)"
        )


def check_stream(video_id: str, name: str, arr: np.ndarray, feat_dim: int | None) -> np.ndarray:
    """Validate one (T, D) stream array of ``video_id``; returns it as float32."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"video {video_id!r}: {name} features have shape {arr.shape}, expected (T, D) with T > 0")
    if feat_dim is not None and arr.shape[1] != feat_dim:
        raise ValueError(f"video {video_id!r}: {name} features have dimension {arr.shape[1]}, expected {feat_dim} like the other videos")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"video {video_id!r}: {name} features have dtype {arr.dtype}, expected float")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"video {video_id!r}: {name} features contain NaN or Inf")
    return arr


def write_feature_shards(
    lake: Lake, feature_set: str, videos: Sequence[VideoFeatures], shard_videos: int = 16, on_progress: ProgressFn | None = None
) -> list[str]:
    """Write ``videos`` as feature shards of ``shard_videos`` rows (deterministic names; reruns overwrite)."""
    paths = []
    for start in range(0, len(videos), shard_videos):
        chunk = videos[start : start + shard_videos]
        paths.append(feature_store.write_features(lake, feature_set, chunk, extractor_digest=feature_set))
        if on_progress:
            on_progress(start + len(chunk), len(videos))
    return paths


def _as_lake(lake: Lake | str) -> Lake:
    return lake if isinstance(lake, Lake) else Lake(lake)


def _finish(
    lake: Lake,
    dataset: str,
    classes: Sequence[str],
    labels: list[VideoLabels],
    feats: list[VideoFeatures],
    feature_set: str,
    source: dict,
    shard_videos: int,
    on_progress: ProgressFn | None,
) -> FeatureImportResult:
    paths = write_feature_shards(lake, feature_set, feats, shard_videos, on_progress)
    version, created = datasets.save_dataset(lake, dataset, classes, labels, source=source)
    splits = dict(Counter(v.split for v in labels))
    return FeatureImportResult(
        dataset=dataset,
        version=version,
        created=created,
        feature_set=feature_set,
        splits=splits,
        n_videos=len(feats),
        n_segments=sum(f.n_segments for f in feats),
        feat_dim=feats[0].feat_dim,
        feature_files=tuple(paths),
    )


def _protocol(exclude_videos: Sequence[str]) -> dict:
    return {
        "name": "thumos14",
        "train_split": "train",
        "test_split": "test",
        "exclude_videos": list(exclude_videos),
        "excluded_split": EXCLUDED_SPLIT,
        "ignore_ambiguous": True,
        "tiou_thresholds": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    }


def import_wtalc(
    features_npy: str,
    annotations_dir: str,
    lake: Lake | str,
    dataset: str,
    feature_set: str | None = None,
    *,
    exclude_videos: Sequence[str] = THUMOS14_EXCLUDED,
    labels_from: str = "instances",
    length_tolerance: float | None = 0.1,
    shard_videos: int = 16,
    on_progress: ProgressFn | None = None,
) -> FeatureImportResult:
    """Import a W-TALC feature file and its annotation directory into ``lake``.

    Args:
        features_npy: the ``[T_i, 2D]`` object-array ``.npy`` (RGB 0:D, flow D:2D), local or fsspec URI.
        annotations_dir: the matching ``*-Annotations`` directory.
        lake: the lake (or its URI).
        dataset: dataset name to create or update (a new version only when content changed).
        feature_set: feature-set name; default: the stand-in's declared set when ``synth.json`` is
            present, else ``wtalc-i3d-25fps-16f``.
        exclude_videos: videos moved to the ``excluded`` split (THUMOS'14 protocol by default).
        labels_from: ``"instances"`` (classes that have intervals) or ``"labels_all"`` (as shipped).
        length_tolerance: relative tolerance of the feature length against the duration; None: no check.
        shard_videos: videos per feature Parquet file.
        on_progress: called with (videos written, total) after each shard.

    Returns:
        An :class:`FeatureImportResult`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: naming the video, for missing features, wrong dimensions, lengths that do not
            match the duration, non-finite values.
    """
    lake = _as_lake(lake)
    ann = read_wtalc_annotations(annotations_dir)
    labels = wtalc_labels(ann, exclude_videos, labels_from)
    orphans = sorted(set(ann.ambiguous) - set(ann.video_ids))
    if orphans:
        log.info("%s: Ambiguous segments of %d video(s) without annotations are ignored: %s", annotations_dir, len(orphans), orphans[:5])
    if feature_set is None:
        feature_set = (ann.provenance or {}).get("feature_set") or DEFAULT_FEATURE_SET
    fs, path = fsmod.resolve(features_npy)
    arrays = _read_npy_file(fs, path, features_npy)
    if arrays.ndim == 3 and arrays.dtype != object:  # all videos of equal length: numpy stored a plain 3-D array
        arrays = list(arrays)
    elif arrays.ndim != 1:
        raise ValueError(f"{features_npy}: expected a 1-D object array of [T_i, 2D] arrays, got shape {arrays.shape}")
    if len(arrays) != len(ann.video_ids):
        first_missing = ann.video_ids[len(arrays)] if len(arrays) < len(ann.video_ids) else None
        hint = f"; first video without features: {first_missing!r}" if first_missing else ""
        raise ValueError(
            f"{features_npy} holds {len(arrays)} feature arrays but {annotations_dir}/videoname.npy lists {len(ann.video_ids)} videos{hint}"
        )
    width = None
    feats = []
    for i, vid in enumerate(ann.video_ids):
        joint = check_stream(vid, "joint", arrays[i], width)
        if width is None:
            width = joint.shape[1]
            if width % 2:
                raise ValueError(f"video {vid!r}: joint features have odd width {width}; expected RGB and flow halves")
        check_length(vid, joint.shape[0], ann.durations_s[i], length_tolerance)
        d = width // 2
        feats.append(
            VideoFeatures(
                video_id=vid,
                rgb=np.ascontiguousarray(joint[:, :d]),
                flow=np.ascontiguousarray(joint[:, d:]),
                fps=FPS,
                segment_frames=SEGMENT_FRAMES,
                duration_s=ann.durations_s[i],
                source_uri=f"{features_npy}#{i}",
            )
        )
        arrays[i] = None  # let the joint array go once split (halves are copies): memory stays ~1x the file
    source = {
        "format": "wtalc",
        "features": str(features_npy),
        "annotations": str(annotations_dir),
        "feature_set": feature_set,
        "fps": FPS,
        "segment_frames": SEGMENT_FRAMES,
        "labels_from": labels_from,
        "protocol": _protocol(exclude_videos),
        "provenance": ann.provenance,
    }
    return _finish(lake, dataset, ann.classes, labels, feats, feature_set, source, shard_videos, on_progress)
