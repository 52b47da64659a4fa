"""The lake's datasets: versioned label tables (``labels/<dataset>/v<NNNN>/labels.parquet`` + ``dataset.json``).

Converts between Arrow rows (``schemas.LABELS``) and :class:`star_core.data.VideoLabels`, and
stores a dataset version only when its content changed (``dataset.json`` is written last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from star_core.data import Dataset, Instance, VideoLabels
from star_core.io import schemas
from star_core.io.lake import Lake, check_name
from star_core.io.stamps import digest_of, utc_now


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


def save_dataset(
    lake: Lake, name: str, classes: Sequence[str], videos: Sequence[VideoLabels], source: dict | None = None
) -> tuple[int, bool]:
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


def _existing_version(lake: Lake, name: str, version: int | None) -> int:
    """``version`` of dataset ``name`` (the latest when None); KeyError when there is no such dataset or version."""
    versions = dataset_versions(lake, name)
    if not versions:
        raise KeyError(f"lake {lake.uri}: no dataset named {name!r}")
    version = versions[-1] if version is None else int(version)
    if version not in versions:
        raise KeyError(f"dataset {name!r} has no version {version} (versions: {versions})")
    return version


def dataset_source(lake: Lake, name: str, version: int | None = None) -> dict[str, Any]:
    """The ``source`` record stored with a dataset version (format, feature set, ``protocol``; ``{}`` without one).

    The one reader of ``dataset.json``'s ``source``: training, benchmarks and flows take the
    feature set and the evaluation protocol (:class:`SplitProtocol`) from it.

    Raises:
        KeyError: no such dataset or version.
    """
    version = _existing_version(lake, name, version)
    return lake.read_json(f"{lake.labels_dir(name, version)}/dataset.json").get("source") or {}


@dataclass(frozen=True)
class SplitProtocol:
    """Which splits of a dataset train and test a model, and which videos evaluation leaves out."""

    train_split: str = "train"
    test_split: str = "test"
    exclude_videos: tuple[str, ...] = ()  # never evaluated (e.g. THUMOS'14's two mis-annotated test videos)

    @classmethod
    def of(cls, source: dict[str, Any]) -> "SplitProtocol":
        """The protocol recorded in a dataset's ``source`` (defaults for what it does not say)."""
        protocol = source.get("protocol") or {}
        return cls(
            train_split=protocol.get("train_split", "train"),
            test_split=protocol.get("test_split", "test"),
            exclude_videos=tuple(protocol.get("exclude_videos", ())),
        )


def load_dataset(lake: Lake, name: str, version: int | None = None) -> Dataset:
    """Load a dataset version (the latest when ``version`` is None)."""
    version = _existing_version(lake, name, version)
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
