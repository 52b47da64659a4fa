"""`lake_check`: real damaged files (truncated, junk, foreign, other schema version) on memory://, local and moto S3."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from star_core.data import VideoLabels
from star_core.io import datasets, feature_store, lake_check, manifests, schemas
from star_core.io.schemas import SchemaError
from tests.star_core.io.conftest import make_video


def _truncate(lake, path: str) -> bytes:
    """Cut ``path`` to half its size (a write killed mid-upload, a full disk); returns the original bytes."""
    data = lake.read_bytes(path)
    lake.fs.pipe_file(path, data[: len(data) // 2])
    return data


def _labels(*ids: str) -> list[VideoLabels]:
    return [VideoLabels(v, "test", ("a",), (1,)) for v in ids]


def test_a_clean_lake_has_no_problems(lake):
    feature_store.write_features(lake, "fs", [make_video("v0")])
    datasets.save_dataset(lake, "toy", ["a"], _labels("v0"))
    manifests.write_manifest(lake, "extract", "r1", [manifests.manifest_row("extract", "r1", "v0.mp4", "done")])
    result = lake_check.check_lake(lake)
    # features part, labels.parquet, dataset.json, manifest
    assert result.n_checked == 4 and result.problems == ()


def test_a_truncated_feature_file_is_found_quarantined_and_readers_go_on(lake):
    feature_store.write_features(lake, "fs", [make_video("v0")])
    bad = feature_store.write_features(lake, "fs", [make_video("v1", seed=1)])
    original = _truncate(lake, bad)
    with pytest.raises(SchemaError, match=r"not a readable Parquet file.*star lake check --lake .* --quarantine") as info:
        feature_store.feature_index(lake, "fs")
    assert lake.uri_of(bad) in str(info.value)

    (problem,) = lake_check.check_lake(lake).problems
    rel = bad[len(lake.root) + 1:]
    assert (problem.kind, problem.relative, problem.uri) == (lake_check.UNREADABLE, rel, lake.uri_of(bad))
    assert "not a readable Parquet file" in problem.reason

    (moved,) = lake_check.quarantine(lake, [problem])
    assert moved.moved_to == lake.uri_of(lake.path("quarantine", rel))
    assert not lake.exists(bad)
    assert lake.read_bytes(lake.path("quarantine", rel)) == original[: len(original) // 2]  # moved, not rewritten
    assert feature_store.feature_index(lake, "fs").column("video_id").to_pylist() == ["v0"]
    assert lake_check.check_lake(lake).problems == ()  # quarantine/ is not checked or read


def test_a_damaged_page_header_is_unreadable(lake):
    bad = feature_store.write_features(lake, "fs", [make_video("v0", n_segments=30, feat_dim=16)])
    data = bytearray(lake.read_bytes(bad))
    data[200:264] = b"\xff" * 64  # inside the first data page's header, footer intact
    lake.fs.pipe_file(bad, bytes(data))
    (problem,) = lake_check.check_lake(lake).problems
    assert problem.kind == lake_check.UNREADABLE
    with pytest.raises(SchemaError, match="cannot read its Parquet data.*star lake check"):
        list(feature_store.read_features(lake, "fs"))


def test_foreign_and_other_version_files(lake):
    feature_store.write_features(lake, "fs", [make_video("v0")])
    # a readable Parquet that is not a features table (junk copied in)
    foreign = lake.path("features", "fs", "junk.parquet")
    lake.write_table(foreign, pa.table({"x": [1]}))
    # a features table stamped with a future schema version: not damage, never moved
    future = lake.path("features", "fs", "future.parquet")
    meta = {schemas.SCHEMA_NAME_KEY: b"features", schemas.SCHEMA_VERSION_KEY: b"99"}
    lake.write_table(future, schemas.FEATURES.empty_table().replace_schema_metadata(meta))
    with pytest.raises(SchemaError, match="found schema None.*star lake check"):
        lake.read_table(foreign, schemas.FEATURES)
    problems = {p.relative.rsplit("/", 1)[-1]: p for p in lake_check.check_lake(lake).problems}
    assert {k: p.kind for k, p in problems.items()} == {"junk.parquet": lake_check.FOREIGN, "future.parquet": lake_check.OTHER_VERSION}
    moved = {p.relative.rsplit("/", 1)[-1]: p.moved_to for p in lake_check.quarantine(lake, list(problems.values()))}
    assert moved["future.parquet"] is None and lake.exists(future)
    assert moved["junk.parquet"] and not lake.exists(foreign)
    with pytest.raises(SchemaError, match="version '99'") as info:
        feature_store.feature_index(lake, "fs")
    assert "star lake check" not in str(info.value)  # another version is not damage: no quarantine advice


def test_a_bad_dataset_version_is_quarantined_whole_and_the_previous_version_remains(lake):
    datasets.save_dataset(lake, "toy", ["a"], _labels("v0"))
    datasets.save_dataset(lake, "toy", ["a"], _labels("v0", "v1"))
    _truncate(lake, f"{lake.labels_dir('toy', 2)}/labels.parquet")
    with pytest.raises(SchemaError, match="star lake check"):
        datasets.load_dataset(lake, "toy")
    problems = lake_check.quarantine(lake, lake_check.check_lake(lake).problems)
    assert [p.moved_to for p in problems] == [lake.uri_of(lake.path("quarantine", "labels", "toy", "v0002"))], problems
    assert lake.exists(lake.path("quarantine", "labels", "toy", "v0002", "dataset.json"))
    assert datasets.dataset_versions(lake, "toy") == [1]
    assert [v.video_id for v in datasets.load_dataset(lake, "toy").videos] == ["v0"]


def test_a_broken_dataset_marker_is_found(lake):
    datasets.save_dataset(lake, "toy", ["a"], _labels("v0"))
    lake.fs.pipe_file(f"{lake.labels_dir('toy', 1)}/dataset.json", b'{"name": "toy", ')
    (problem,) = lake_check.check_lake(lake).problems
    assert problem.kind == lake_check.UNREADABLE and problem.relative == "labels/toy/v0001/dataset.json"


def test_a_second_quarantine_of_the_same_path_keeps_the_first(lake):
    path = feature_store.write_features(lake, "fs", [make_video("v0")])
    _truncate(lake, path)
    (first,) = lake_check.quarantine(lake, lake_check.check_lake(lake).problems)
    feature_store.write_features(lake, "fs", [make_video("v0")])
    _truncate(lake, path)
    (second,) = lake_check.quarantine(lake, lake_check.check_lake(lake).problems)
    assert first.moved_to != second.moved_to and ".dup-" in second.moved_to
    assert lake.exists(lake.path("quarantine", first.relative))


def test_a_file_that_reads_on_the_second_try_stays(lake):
    path = feature_store.write_features(lake, "fs", [make_video("v0")])
    good = _truncate(lake, path)
    (problem,) = lake_check.check_lake(lake).problems
    lake.fs.pipe_file(path, good)  # the store answers correctly now (a transient read error before)
    (kept,) = lake_check.quarantine(lake, [problem])
    assert kept.moved_to is None and "left in place" in kept.reason and lake.exists(path)


def test_detections_and_manifests_are_checked(lake):
    detections = lake.path("detections", "model=star-v1", "date=2026-01-01", "part-r-00000.parquet")
    manifest = manifests.write_manifest(lake, "extract", "r1", [manifests.manifest_row("extract", "r1", "v0.mp4", "done")])
    lake.write_bytes(detections, b"PAR1 not parquet")
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"t": [dt.datetime(2026, 1, 1)]}), buf)
    lake.fs.pipe_file(manifest, buf.getvalue().to_pybytes())
    kinds = {p.relative.split("/", 1)[0]: p.kind for p in lake_check.check_lake(lake).problems}
    assert kinds == {"detections": lake_check.UNREADABLE, "manifests": lake_check.FOREIGN}
