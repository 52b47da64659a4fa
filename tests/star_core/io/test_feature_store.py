"""The features table (star_core.io.feature_store) on every backend: shards, index, rows -> VideoFeatures."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from star_core.io import feature_store, schemas
from star_core.io.schemas import SchemaError
from tests.star_core.io.conftest import make_video

FS = "i3d-farneback-25fps-16f-test"


# ----- features ------------------------------------------------------------------------------
def test_features_round_trip_exactly(lake):
    videos = [make_video("a", 3, seed=1), make_video("b", 5, seed=2)]
    path = feature_store.write_features(lake, FS, videos, extractor_digest="abc")
    assert path.startswith(lake.features_dir(FS) + "/part-") and path.endswith(".parquet")
    back = {v.video_id: v for v in feature_store.read_features(lake, FS)}
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
    assert feature_store.list_feature_sets(lake) == [FS]


def test_rewriting_a_shard_overwrites_it(lake):
    videos = [make_video("b", seed=1), make_video("a", seed=2)]
    first = feature_store.write_features(lake, FS, videos)
    second = feature_store.write_features(lake, FS, list(reversed(videos)))  # same ids, other order: same name
    assert first == second
    assert lake.list_files(lake.features_dir(FS)) == [first]
    assert feature_store.feature_index(lake, FS).column("video_id").to_pylist() == ["a", "b"]
    assert len(list(feature_store.read_features(lake, FS))) == 2


def test_resharded_videos_are_not_duplicated_and_newest_wins(lake):
    old_b = make_video("b", seed=1)
    feature_store.write_features(lake, FS, [make_video("a", seed=0), old_b])
    new_b = make_video("b", n_segments=4, seed=9)
    newer = feature_store.write_features(lake, FS, [new_b, make_video("c", seed=3)])
    index = feature_store.feature_index(lake, FS)
    assert index.column("video_id").to_pylist() == ["a", "b", "c"]
    assert index.filter(pc.equal(index.column("video_id"), "b")).column("path").to_pylist() == [newer]
    got = {v.video_id: v for v in feature_store.read_features(lake, FS)}
    assert len(got) == 3
    np.testing.assert_array_equal(got["b"].rgb, new_b.rgb)


def test_read_features_selects_and_reports_missing(lake):
    feature_store.write_features(lake, FS, [make_video("a"), make_video("b")])
    feature_store.write_features(lake, FS, [make_video("c")])
    assert [v.video_id for v in feature_store.read_features(lake, FS, ["c", "a", "c"])] == ["a", "c"]
    with pytest.raises(KeyError, match=r"no features for 2 video\(s\): \['x', 'y'\]"):
        list(feature_store.read_features(lake, FS, ["a", "x", "y"]))
    assert feature_store.feature_index(lake, "empty-set").num_rows == 0
    assert list(feature_store.read_features(lake, "empty-set")) == []


def test_write_features_rejects_bad_shards(lake):
    with pytest.raises(ValueError, match="no videos"):
        feature_store.write_features(lake, FS, [])
    with pytest.raises(ValueError, match=r"duplicate video ids in one shard: \['a'\]"):
        feature_store.write_features(lake, FS, [make_video("a"), make_video("a", seed=3)])
    with pytest.raises(ValueError, match="invalid feature set name"):
        feature_store.write_features(lake, "../escape", [make_video("a")])
    assert lake.list_files(lake.path("features")) == []


def test_malformed_feature_rows_name_the_video(lake):
    table = feature_store.features_to_table([make_video("a", 3), make_video("bad", 3)], FS)
    n_seg = table.column("n_segments").to_pylist()
    n_seg[1] = 4  # claims more segments than it stores
    wrong_shape = table.set_column(table.schema.get_field_index("n_segments"), "n_segments", pa.array(n_seg, pa.int32()))
    path = lake.path("features", FS, "part-x.parquet")
    lake.write_table(path, wrong_shape, schemas.FEATURES)
    with pytest.raises(ValueError, match=r"part-x.parquet: video 'bad': rgb holds 12 floats, expected n_segments\*feat_dim = 4\*4"):
        list(feature_store.read_features(lake, FS))
    nan = make_video("nan")
    nan.flow[1, 2] = np.nan
    lake.write_table(path, feature_store.features_to_table([nan], FS), schemas.FEATURES)
    with pytest.raises(ValueError, match="video 'nan': flow features contain NaN or Inf"):
        list(feature_store.read_features(lake, FS))


def test_a_shard_of_another_schema_version_is_rejected_on_read(lake):
    table = feature_store.features_to_table([make_video("a")], FS)
    meta = dict(table.schema.metadata)
    meta[schemas.SCHEMA_VERSION_KEY] = b"99"
    path = lake.path("features", FS, "part-future.parquet")
    lake.write_table(path, table.replace_schema_metadata(meta))
    with pytest.raises(
        SchemaError, match="part-future.parquet: expected a 'features' table of schema version 1, found schema 'features' version '99'"
    ):
        feature_store.feature_index(lake, FS)


def test_row_to_video_decodes_one_row_and_rejects_a_missing_shape():
    videos = [make_video("a", 3), make_video("b", 5, seed=1)]
    table = feature_store.features_to_table(videos, FS)
    streams = feature_store.feature_streams(table)
    b = feature_store.row_to_video(table, 1, streams)
    assert b.video_id == "b" and np.array_equal(b.rgb, videos[1].rgb) and np.array_equal(b.flow, videos[1].flow)
    no_dim = table.set_column(table.schema.get_field_index("feat_dim"), "feat_dim", pa.array([4, None], pa.int32()))
    with pytest.raises(ValueError, match=r"^video 'b': rgb holds 20 floats, expected n_segments\*feat_dim = 5\*None"):
        feature_store.row_to_video(no_dim, 1, feature_store.feature_streams(no_dim))
