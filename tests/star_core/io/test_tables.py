"""Typed tables on every backend: features shards, datasets (labels), manifests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from star_core.data import Instance, VideoLabels
from star_core.io import schemas, tables
from star_core.io.schemas import SchemaError
from tests.star_core.io.conftest import make_video

FS = "i3d-farneback-25fps-16f-test"


# ----- features ------------------------------------------------------------------------------
def test_features_round_trip_exactly(lake):
    videos = [make_video("a", 3, seed=1), make_video("b", 5, seed=2)]
    path = tables.write_features(lake, FS, videos, extractor_digest="abc")
    assert path.startswith(lake.features_dir(FS) + "/part-") and path.endswith(".parquet")
    back = {v.video_id: v for v in tables.read_features(lake, FS)}
    assert sorted(back) == ["a", "b"]
    for v in videos:
        got = back[v.video_id]
        np.testing.assert_array_equal(got.rgb, v.rgb)
        np.testing.assert_array_equal(got.flow, v.flow)
        assert got.rgb.dtype == np.float32 and got.rgb.shape == (v.n_segments, 4)
        assert (got.fps, got.segment_frames, got.duration_s, got.source_uri) == (v.fps, v.segment_frames, v.duration_s, v.source_uri)
    raw = lake.read_table(path, schemas.FEATURES)
    assert raw.column("extractor_digest").to_pylist() == ["abc", "abc"]
    assert raw.column("feature_set").to_pylist() == [FS, FS]
    assert tables.list_feature_sets(lake) == [FS]


def test_rewriting_a_shard_overwrites_it(lake):
    videos = [make_video("b", seed=1), make_video("a", seed=2)]
    first = tables.write_features(lake, FS, videos)
    second = tables.write_features(lake, FS, list(reversed(videos)))  # same ids, other order: same name
    assert first == second
    assert lake.list_files(lake.features_dir(FS)) == [first]
    assert tables.feature_index(lake, FS).column("video_id").to_pylist() == ["a", "b"]
    assert len(list(tables.read_features(lake, FS))) == 2


def test_resharded_videos_are_not_duplicated_and_newest_wins(lake):
    old_b = make_video("b", seed=1)
    tables.write_features(lake, FS, [make_video("a", seed=0), old_b])
    new_b = make_video("b", n_segments=4, seed=9)
    newer = tables.write_features(lake, FS, [new_b, make_video("c", seed=3)])
    index = tables.feature_index(lake, FS)
    assert index.column("video_id").to_pylist() == ["a", "b", "c"]
    assert index.filter(pc.equal(index.column("video_id"), "b")).column("path").to_pylist() == [newer]
    got = {v.video_id: v for v in tables.read_features(lake, FS)}
    assert len(got) == 3
    np.testing.assert_array_equal(got["b"].rgb, new_b.rgb)


def test_read_features_selects_and_reports_missing(lake):
    tables.write_features(lake, FS, [make_video("a"), make_video("b")])
    tables.write_features(lake, FS, [make_video("c")])
    assert [v.video_id for v in tables.read_features(lake, FS, ["c", "a", "c"])] == ["a", "c"]
    with pytest.raises(KeyError, match=r"no features for 2 video\(s\): \['x', 'y'\]"):
        list(tables.read_features(lake, FS, ["a", "x", "y"]))
    assert tables.feature_index(lake, "empty-set").num_rows == 0
    assert list(tables.read_features(lake, "empty-set")) == []


def test_write_features_rejects_bad_shards(lake):
    with pytest.raises(ValueError, match="no videos"):
        tables.write_features(lake, FS, [])
    with pytest.raises(ValueError, match=r"duplicate video ids in one shard: \['a'\]"):
        tables.write_features(lake, FS, [make_video("a"), make_video("a", seed=3)])
    with pytest.raises(ValueError, match="invalid feature set name"):
        tables.write_features(lake, "../escape", [make_video("a")])
    assert lake.list_files(lake.path("features")) == []


def test_malformed_feature_rows_name_the_video(lake):
    table = tables.features_to_table([make_video("a", 3), make_video("bad", 3)], FS)
    n_seg = table.column("n_segments").to_pylist()
    n_seg[1] = 4  # claims more segments than it stores
    wrong_shape = table.set_column(table.schema.get_field_index("n_segments"), "n_segments", pa.array(n_seg, pa.int32()))
    path = lake.path("features", FS, "part-x.parquet")
    lake.write_table(path, wrong_shape, schemas.FEATURES)
    with pytest.raises(ValueError, match=r"part-x.parquet: video 'bad': rgb holds 12 floats, expected n_segments\*feat_dim = 4\*4"):
        list(tables.read_features(lake, FS))
    nan = make_video("nan")
    nan.flow[1, 2] = np.nan
    lake.write_table(path, tables.features_to_table([nan], FS), schemas.FEATURES)
    with pytest.raises(ValueError, match="video 'nan': flow features contain NaN or Inf"):
        list(tables.read_features(lake, FS))


def test_a_shard_of_another_schema_version_is_rejected_on_read(lake):
    table = tables.features_to_table([make_video("a")], FS)
    meta = dict(table.schema.metadata)
    meta[schemas.SCHEMA_VERSION_KEY] = b"99"
    path = lake.path("features", FS, "part-future.parquet")
    lake.write_table(path, table.replace_schema_metadata(meta))
    with pytest.raises(SchemaError, match="part-future.parquet: expected a 'features' table of schema version 1, found schema 'features' version '99'"):
        tables.feature_index(lake, FS)


# ----- datasets ------------------------------------------------------------------------------
def _labels(extra: str = "") -> list[VideoLabels]:
    return [
        VideoLabels("v1", "train", ("Run", "Jump"), (2, 1), duration_s=10.0),
        VideoLabels("v2", "test", ("Jump",), None, instances=(Instance("Jump", 1.0, 2.5),), ambiguous=((4.0, 5.0),), duration_s=8.0, source_uri="s3://a/v2.mp4" + extra),
    ]


def test_datasets_are_versioned_by_content(lake):
    classes = ["Jump", "Run"]
    assert tables.save_dataset(lake, "toy", classes, _labels(), source={"from": "test"}) == (1, True)
    assert tables.save_dataset(lake, "toy", classes, list(reversed(_labels()))) == (1, False)  # same content
    assert tables.save_dataset(lake, "toy", classes, _labels("?changed")) == (2, True)
    assert tables.save_dataset(lake, "toy", ["Run", "Jump"], _labels("?changed")) == (3, True)  # class order matters
    latest = tables.load_dataset(lake, "toy")
    assert (latest.version, latest.classes) == (3, ("Run", "Jump"))
    first = tables.load_dataset(lake, "toy", 1)
    assert first.videos == _labels()
    assert [d["version"] for d in tables.list_datasets(lake)] == [1, 2, 3]
    with pytest.raises(KeyError, match=r"has no version 7 \(versions: \[1, 2, 3\]\)"):
        tables.load_dataset(lake, "toy", 7)
    with pytest.raises(KeyError, match="no dataset named 'nope'"):
        tables.load_dataset(lake, "nope")


def test_bad_datasets_are_rejected(lake):
    with pytest.raises(ValueError, match="duplicate video 'v1'"):
        tables.save_dataset(lake, "toy", ["Jump", "Run"], _labels() + [_labels()[0]])
    with pytest.raises(ValueError, match=r"video 'v1' has labels \['Run'\] not in the class list"):
        tables.save_dataset(lake, "toy", ["Jump"], _labels())
    assert tables.list_datasets(lake) == []


# ----- manifests -----------------------------------------------------------------------------
def test_manifests_round_trip_and_concatenate(lake):
    rows = [
        tables.manifest_row("extract", "r1", "s3://a/v1.mp4", "done", duration_s=1.5, n_segments=7, output="features/x/part-1.parquet"),
        tables.manifest_row("extract", "r1", "s3://a/v2.mp4", "failed", reason="VideoDecodeError: no video stream"),
        tables.manifest_row("extract", "r1", "s3://a/v3.mp4", "skipped", reason="features exist"),
    ]
    path = tables.write_manifest(lake, "extract", "r1", rows)
    assert path == lake.manifest_path("extract", "r1")
    back = tables.read_manifest(lake, "extract", "r1")
    assert back.column("status").to_pylist() == ["done", "failed", "skipped"]
    assert back.column("reason").to_pylist()[1] == "VideoDecodeError: no video stream"
    assert back.column("n_segments").to_pylist() == [7, None, None]
    tables.write_manifest(lake, "extract", "r2", [])
    assert tables.read_manifest(lake, "extract", "r2").num_rows == 0
    tables.write_manifest(lake, "extract", "r1", rows[:2])  # a later checkpoint of the same run replaces it
    everything = tables.read_manifests(lake, "extract")
    assert everything.num_rows == 2 and set(everything.column("run_id").to_pylist()) == {"r1"}
    with pytest.raises(FileNotFoundError, match="no manifest for extract run 'r9'"):
        tables.read_manifest(lake, "extract", "r9")


def test_manifest_status_is_checked(lake):
    with pytest.raises(ValueError, match="status must be one of"):
        tables.manifest_row("extract", "r1", "x", "ok")
    row = tables.manifest_row("extract", "r1", "x", "done")
    with pytest.raises(ValueError, match=r"unknown status \['ok'\]"):
        tables.write_manifest(lake, "extract", "r1", [row | {"status": "ok"}])
