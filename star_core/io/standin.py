"""Write the THUMOS'14 stand-in benchmark in the W-TALC file layout (so it goes through the same importer).

``build_standin(out_dir, scale, seed)`` reads the real W-TALC annotation files shipped in
``data/thumos14/``, generates two-stream features for every selected video with
:mod:`star_core.synth`, and writes::

    <out_dir>/Thumos14reduced-I3D-JOINTFeatures.npy          object array of [T_i, 2D] float32
    <out_dir>/Thumos14reduced-Annotations/*.npy               the real annotations (subset for "small")
    <out_dir>/Thumos14reduced-Annotations/Ambiguous_test.txt
    <out_dir>/Thumos14reduced-Annotations/synth.json          provenance: generator, scale, seed, config

Scales: ``full`` = all 412 videos (200 validation to train, 212 test), D = 1024 per stream;
``small`` = 12 videos of 4 classes (2 validation + 1 test video each), D = 64, for tests and the demo.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from star_core.io import fs as fsmod
from star_core.io.atomic import write_atomic
from star_core.io.wtalc_import import WtalcAnnotations, read_wtalc_annotations, wtalc_labels
from star_core.io.npy import object_array
from star_core.synth import World, difficulty_config, generate_video

FEATURES_FILE = "Thumos14reduced-I3D-JOINTFeatures.npy"
ANNOTATIONS_DIR = "Thumos14reduced-Annotations"
SMALL_CLASSES = (
    "BaseballPitch",
    "Billiards",
    "CricketShot",
    "HighJump",
)  # one venue shared with nothing, one indoor, one sibling, one stadium
SCALES = ("small", "full")


def default_annotations_dir() -> str:
    """The W-TALC annotations committed in the repository (``data/thumos14/``)."""
    path = Path(__file__).resolve().parents[2] / "data" / "thumos14" / "wtalc_Thumos14reduced-Annotations"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the THUMOS'14 annotations are not here; pass annotations_dir (a W-TALC *-Annotations directory)")
    return str(path)


def select_videos(ann: WtalcAnnotations, scale: str) -> tuple[list[int], list[str]]:
    """Indices of the videos and the class list of a scale.

    ``small``: for each of :data:`SMALL_CLASSES`, the 2 shortest validation and the shortest test
    video whose intervals are all of that class and which last 60-240 s.
    """
    if scale == "full":
        return list(range(len(ann.video_ids))), list(ann.classes)
    if scale != "small":
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    chosen = []
    for cls in SMALL_CLASSES:
        for subset, k in (("validation", 2), ("test", 1)):
            pool = [
                i
                for i in range(len(ann.video_ids))
                if ann.subsets[i] == subset
                and ann.segment_labels[i]
                and set(ann.segment_labels[i]) == {cls}
                and 60.0 <= ann.durations_s[i] <= 240.0
            ]
            pool.sort(key=lambda i: (ann.durations_s[i], ann.video_ids[i]))
            if len(pool) < k:
                raise ValueError(f"small stand-in: only {len(pool)} {subset} videos of {cls} qualify")
            chosen += pool[:k]
    return sorted(chosen), [c for c in ann.classes if c in SMALL_CLASSES]


def _write(fs, path: str, data: bytes | np.ndarray) -> None:
    """Write bytes, or an array as ``.npy``, atomically (:mod:`star_core.io.atomic`)."""

    def dump(fh) -> None:
        if isinstance(data, np.ndarray):
            np.save(fh, data, allow_pickle=bool(data.dtype.hasobject))  # streams; no second in-memory copy
        else:
            fh.write(data)

    write_atomic(fs, path, dump)


def write_annotations(fs, directory: str, ann: WtalcAnnotations, idx: list[int], classes: list[str], marker: dict) -> None:
    """Write the W-TALC annotation arrays of videos ``idx`` (same dtypes as the public files)."""
    keep = set(classes)

    def pick(values):
        return [values[i] for i in idx]

    files = {
        "videoname": np.array([v.encode() for v in pick(ann.video_ids)], dtype="S24"),
        "subset": np.array([s.encode() for s in pick(ann.subsets)], dtype="S10"),
        "classlist": np.array([c.encode() for c in classes], dtype="S17"),
        "labels_all": object_array([[lab for lab in ann.labels_all[i] if lab in keep] for i in idx]),
        "segments": object_array([[[s, e] for (s, e), lab in zip(ann.segments[i], ann.segment_labels[i]) if lab in keep] for i in idx]),
        "labels": object_array([[lab for lab in ann.segment_labels[i] if lab in keep] for i in idx]),
        "duration": np.array(pick(ann.durations_s), dtype=np.float64).reshape(-1, 1),
    }
    for name, arr in files.items():
        _write(fs, f"{directory}/{name}.npy", arr)
    # W-TALC's parser splits on single spaces and reads fields 2 and 3: keep the double space.
    lines = [f"{vid}  {a:.1f} {b:.1f}" for vid in pick(ann.video_ids) for a, b in ann.ambiguous.get(vid, [])]
    _write(fs, f"{directory}/Ambiguous_test.txt", ("\n".join(lines) + "\n").encode() if lines else b"")
    _write(fs, f"{directory}/synth.json", json.dumps(marker, indent=2, sort_keys=True).encode())


def build_standin(
    out_dir: str,
    scale: str = "full",
    seed: int = 0,
    annotations_dir: str | None = None,
    feat_dim: int | None = None,
    on_progress: Callable[[int, int, int], None] | None = None,
    difficulty: str = "standard",
) -> dict:
    """Generate the stand-in and write it in the W-TALC layout under ``out_dir``.

    Args:
        out_dir: output folder (local path or fsspec URI).
        scale: ``"full"`` (412 videos, D=1024) or ``"small"`` (12 videos, D=64).
        seed: seeds the world and every video (same seed, same bytes).
        annotations_dir: real W-TALC annotations (default: the repository's ``data/thumos14`` copy).
        feat_dim: override the per-stream feature dimension of the scale.
        on_progress: called with (videos done, total, segments of the last video).
        difficulty: a named setting of ``star_core.synth.DIFFICULTIES`` (issue 14 protocol).

    Returns:
        The provenance record also written to ``synth.json`` (paths, scale, seed, feature set, counts).
    """
    ann = read_wtalc_annotations(annotations_dir or default_annotations_dir())
    idx, classes = select_videos(ann, scale)
    cfg = difficulty_config(difficulty, seed=seed, feat_dim=feat_dim or (64 if scale == "small" else 1024))
    world = World(classes, cfg)
    labels = wtalc_labels(ann, exclude_videos=())
    features = []
    for k, i in enumerate(idx):
        video = labels[i]
        kept = [inst for inst in video.instances if inst.label in world.class_index]
        video = dataclasses.replace(video, instances=tuple(kept), labels=tuple(lab for lab in video.labels if lab in world.class_index))
        sv = generate_video(world, video)
        features.append(np.concatenate([sv.rgb, sv.flow], axis=1))  # (N, 2D): RGB then flow
        if on_progress:
            on_progress(k + 1, len(idx), sv.rgb.shape[0])
    fs, root = fsmod.resolve(out_dir)
    marker = {
        "generator": "star_core.synth",
        "scale": scale,
        "seed": seed,
        "feat_dim": cfg.feat_dim,
        "n_videos": len(idx),
        "n_segments": int(sum(f.shape[0] for f in features)),
        "classes": classes,
        "difficulty": difficulty,
        "feature_set": f"standin-{scale}-d{cfg.feat_dim}-s{seed}" + ("" if difficulty == "standard" else f"-{difficulty}"),
        "config": dataclasses.asdict(cfg),
        "features": f"{out_dir.rstrip('/')}/{FEATURES_FILE}",
        "annotations": f"{out_dir.rstrip('/')}/{ANNOTATIONS_DIR}",
    }
    _write(fs, f"{root}/{FEATURES_FILE}", object_array(features))
    write_annotations(fs, f"{root}/{ANNOTATIONS_DIR}", ann, idx, classes, marker)
    return marker
