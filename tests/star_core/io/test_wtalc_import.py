"""Importers of public feature layouts, on the real THUMOS'14 annotations with small random features."""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np
import pytest

from star_core.io import datasets, feature_store, wtalc_import
from star_core.io.import_basnet import import_basnet
from star_core.io.lake import Lake
from star_core.io.npy import UnsafePickleError, npy_bytes, object_array, read_npy

D = 4  # per-stream feature dim of the test features


def _wtalc_dir(data_dir, tmp_path):
    src = data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations"
    dst = tmp_path / "annotations"
    shutil.copytree(src, dst)
    return dst


def _wtalc_features(ann_dir, seed=0, width=2 * D):
    """One [T_i, width] array per video, T_i from the true duration on the 0.64 s grid."""
    rng = np.random.default_rng(seed)
    durations = np.load(ann_dir / "duration.npy")[:, 0]
    return [rng.random((max(1, int(d * 25 / 16)), width), dtype=np.float32) for d in durations]


def _save(path, arrays):
    path.write_bytes(npy_bytes(object_array(arrays)))
    return path


@pytest.fixture(scope="module")
def wtalc(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wtalc")
    ann = _wtalc_dir(data_dir, tmp)
    arrays = _wtalc_features(ann)
    feats = _save(tmp / "feats.npy", arrays)
    lake = Lake(str(tmp / "lake"))
    result = wtalc_import.import_wtalc(str(feats), str(ann), lake, "th14")
    return ann, arrays, feats, lake, result


def test_wtalc_import_splits_labels_and_protocol(wtalc):
    ann, arrays, _, lake, result = wtalc
    assert result.created and result.version == 1
    assert result.splits == {"train": 200, "test": 210, "excluded": 2}
    assert result.n_videos == 412 and result.feat_dim == D and result.feature_set == wtalc_import.DEFAULT_FEATURE_SET
    ds = datasets.load_dataset(lake, "th14")
    assert len(ds.classes) == 20 and ds.classes[0] == "BaseballPitch"
    by_id = {v.video_id: v for v in ds.videos}
    assert {v.video_id for v in ds.split("excluded")} == set(wtalc_import.THUMOS14_EXCLUDED)
    # Instance counts match the official per-class files (evaluation-only intervals kept intact).
    n_val = sum(len(v.instances) for v in ds.split("train"))
    n_test = sum(len(v.instances) for v in ds.split("test"))
    assert (n_val, n_test) == (3007, 3311)  # SOURCE.md: non-ambiguous instances (CliffDiving also as Diving)
    # A CliffDiving video carries both labels, counts equal instances per label.
    cliff = [v for v in ds.videos if "CliffDiving" in v.labels]
    assert cliff and all("Diving" in v.labels for v in cliff)
    for v in ds.videos[:50]:
        assert v.counts == tuple(sum(i.label == lab for i in v.instances) for lab in v.labels)
        assert all(c > 0 for c in v.counts)
    # Ambiguous test segments: 99 in 37 videos (SOURCE.md), 3 of them in video_test_0001292, which
    # has no other annotation and is not in the dataset; the rest are stored for evaluation.
    amb = [v for v in ds.videos if v.ambiguous]
    assert sum(len(v.ambiguous) for v in amb) == 96 and len(amb) == 36
    # True durations from duration.npy (the 25 fps video would be wrong with frames/30).
    assert by_id["video_validation_0000311"].duration_s == pytest.approx(699.0, abs=0.2)
    src = datasets.dataset_source(lake, "th14")
    assert src["protocol"]["exclude_videos"] == list(wtalc_import.THUMOS14_EXCLUDED) and src["feature_set"] == result.feature_set


def test_wtalc_features_roundtrip(wtalc, data_dir):
    ann, arrays, _, lake, result = wtalc
    names = [n.decode() for n in np.load(ann / "videoname.npy")]
    want = {names[i]: arrays[i] for i in (0, 150, 300, 411)}
    got = {f.video_id: f for f in feature_store.read_features(lake, result.feature_set, want)}
    for vid, joint in want.items():
        f = got[vid]
        np.testing.assert_array_equal(f.rgb, joint[:, :D])
        np.testing.assert_array_equal(f.flow, joint[:, D:])
        assert (f.fps, f.segment_frames) == (25.0, 16)
        starts, ends = f.segment_bounds_s()
        assert starts[1] == pytest.approx(0.64)
    assert feature_store.feature_index(lake, result.feature_set).num_rows == 412


def test_wtalc_reimport_is_noop_and_labels_all_option(wtalc, tmp_path):
    ann, _, feats, lake, _ = wtalc
    again = wtalc_import.import_wtalc(str(feats), str(ann), lake, "th14")
    assert not again.created and again.version == 1
    alt = wtalc_import.import_wtalc(str(feats), str(ann), lake, "th14-la", labels_from="labels_all")
    ds = {v.video_id: v for v in datasets.load_dataset(lake, "th14-la").videos}
    # labels_all disagrees with the intervals here: CricketShot instances, only CricketBowling listed.
    assert ds["video_validation_0000171"].labels == ("CricketBowling",)
    assert alt.created


def test_wtalc_on_object_store_lake(wtalc):
    ann, _, feats, _, _ = wtalc
    lake = Lake("memory://importer-test")
    small = wtalc_import.import_wtalc(str(feats), str(ann), lake, "th14", feature_set="mem-set", shard_videos=100)
    assert small.n_videos == 412 and len(small.feature_files) == 5
    assert feature_store.feature_index(lake, "mem-set").num_rows == 412


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: a[:-3], "holds 409 feature arrays.*lists 412 videos; first video without features: 'video_test_0001\\d+'"),
        (lambda a: a[:7] + [np.zeros((a[7].shape[0], 2 * D + 2), np.float32)] + a[8:], "video_validation_0000058.*dimension 10"),
        (lambda a: a[:5] + [a[5][: max(1, len(a[5]) // 3)]] + a[6:], "video_validation_0000056.*lengths do not match"),
        (
            lambda a: a[:2] + [np.where(np.arange(a[2].size).reshape(a[2].shape) == 3, np.nan, a[2]).astype(np.float32)] + a[3:],
            "video_validation_0000053.*NaN",
        ),
        (lambda a: a[:1] + [np.zeros(5, np.float32)] + a[2:], "video_validation_0000052.*shape \\(5,\\)"),
    ],
    ids=["missing-videos", "wrong-dim", "length-mismatch", "nan", "not-2d"],
)
def test_wtalc_bad_features_name_the_video(wtalc, tmp_path, mutate, message):
    ann, arrays, _, _, _ = wtalc
    names = [n.decode() for n in np.load(ann / "videoname.npy")]
    assert names[7] == "video_validation_0000058" and names[5] == "video_validation_0000056"
    bad = _save(tmp_path / "bad.npy", mutate(list(arrays)))
    with pytest.raises(ValueError, match=message):
        wtalc_import.import_wtalc(str(bad), str(ann), Lake(str(tmp_path / "lake")), "bad")
    assert not (tmp_path / "lake" / "labels").exists()  # nothing half-imported


def test_wtalc_odd_width_and_missing_annotation_file(wtalc, tmp_path):
    ann, arrays, _, _, _ = wtalc
    odd = _save(tmp_path / "odd.npy", [a[:, :7] for a in arrays])
    with pytest.raises(ValueError, match="video_validation_0000051.*odd width 7"):
        wtalc_import.import_wtalc(str(odd), str(ann), str(tmp_path / "lake"), "bad")
    partial = tmp_path / "ann"
    shutil.copytree(ann, partial)
    os.remove(partial / "segments.npy")
    with pytest.raises(FileNotFoundError, match="segments.npy"):
        wtalc_import.read_wtalc_annotations(str(partial))


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    buf = io.BytesIO()
    np.save(buf, object_array([Evil()]), allow_pickle=True)
    buf.seek(0)
    with pytest.raises(UnsafePickleError, match="system"):
        read_npy(buf, "evil.npy")
    assert not (tmp_path / "pwned").exists()


def test_python2_annotation_pickles_decode_to_str(data_dir):
    ann = wtalc_import.read_wtalc_annotations(str(data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations"))
    assert ann.video_ids[0] == "video_validation_0000051" and ann.subsets[-1] == "test"
    assert all(isinstance(lab, str) for labs in ann.segment_labels for lab in labs)
    assert ann.ambiguous["video_test_0000278"][0] == (0.0, 1.4)


# ----- BaS-Net layout ---------------------------------------------------------------------------
BASNET_VIDEOS = [
    "video_validation_0000051",
    "video_validation_0000311",
    "video_validation_0000171",
    "video_test_0000004",
    "video_test_0000278",
]


@pytest.fixture
def basnet(data_dir, tmp_path):
    gt = json.loads((data_dir / "thumos14" / "activitynet_style" / "gt.json").read_text())
    info = json.loads((data_dir / "thumos14" / "original" / "TH14_video_info.json").read_text())
    root = tmp_path / "THUMOS14"
    db = {v: gt["database"][v] for v in BASNET_VIDEOS}
    root.mkdir()
    (root / "gt.json").write_text(json.dumps({"version": "TH14", "database": db}))
    rng = np.random.default_rng(1)
    for vid, entry in db.items():
        folder = "train" if entry["subset"] == "validation" else "test"
        n = int(info[vid]["duration"] * 25 / 16)
        for stream in ("rgb", "flow"):
            (root / "features" / folder / stream).mkdir(parents=True, exist_ok=True)
            np.save(root / "features" / folder / stream / f"{vid}.npy", rng.random((n, 6), dtype=np.float32))
    return root


def test_basnet_import(basnet, data_dir, tmp_path):
    amb = data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations" / "Ambiguous_test.txt"
    lake = Lake(str(tmp_path / "lake"))
    result = import_basnet(str(basnet), lake, "bas", ambiguous=str(amb))
    assert result.splits == {"train": 3, "test": 2} and result.feat_dim == 6
    ds = {v.video_id: v for v in datasets.load_dataset(lake, "bas").videos}
    # gt.json says 582.5 s (frames/30) for this 25 fps video: the feature grid wins.
    assert ds["video_validation_0000311"].duration_s == pytest.approx(int(699.0 * 25 / 16) * 0.64)
    assert ds["video_validation_0000171"].labels == ("CricketBowling", "CricketShot")
    assert ds["video_test_0000278"].ambiguous[0] == (0.0, 1.4)
    # With TH14_video_info.json the true duration is used.
    info = data_dir / "thumos14" / "original" / "TH14_video_info.json"
    import_basnet(str(basnet), lake, "bas2", video_info=str(info))
    ds2 = {v.video_id: v for v in datasets.load_dataset(lake, "bas2").videos}
    assert ds2["video_validation_0000311"].duration_s == pytest.approx(699.0)


def test_basnet_missing_stream_names_video(basnet, tmp_path):
    os.remove(basnet / "features" / "test" / "flow" / "video_test_0000004.npy")
    with pytest.raises(ValueError, match="video_test_0000004.*missing flow"):
        import_basnet(str(basnet), str(tmp_path / "lake"), "bas")


def test_basnet_mismatched_lengths_name_video(basnet, tmp_path):
    p = basnet / "features" / "train" / "flow" / "video_validation_0000051.npy"
    np.save(p, np.load(p)[:-2])
    with pytest.raises(ValueError, match="video_validation_0000051.*mismatched lengths"):
        import_basnet(str(basnet), str(tmp_path / "lake"), "bas")


def test_basnet_wrong_dim_names_video(basnet, tmp_path):
    p = basnet / "features" / "test" / "rgb" / "video_test_0000278.npy"
    np.save(p, np.zeros((np.load(p).shape[0], 5), np.float32))
    with pytest.raises(ValueError, match="video_test_0000278.*dimension 5"):
        import_basnet(str(basnet), str(tmp_path / "lake"), "bas")


def test_cli_import_and_bad_input(wtalc, basnet, tmp_path, capsys):
    from star_cli.cli import main

    ann, _, feats, _, _ = wtalc
    lake = str(tmp_path / "cli-lake")
    assert main(["import", "basnet", "--root", str(basnet), "--lake", lake, "--dataset", "b"]) == 0
    assert "dataset b v1 created: 5 videos" in capsys.readouterr().out
    assert (
        main(["import", "wtalc", "--features", str(tmp_path / "nope.npy"), "--annotations", str(ann), "--lake", lake, "--dataset", "w"])
        == 2
    )
    err = capsys.readouterr().err
    assert "nope.npy: file not found" in err and "Traceback" not in err


def test_validation_means_val_except_under_the_thumos_protocol():
    from star_core.data import split_of_name

    names = ("validation", "Validation", "valid", "training", "testing", "dev")
    assert [split_of_name(n) for n in names] == ["val", "val", "val", "train", "test", None]
    assert wtalc_import.protocol_split("validation", "v") == "train" and wtalc_import.protocol_split("test", "v") == "test"
    assert wtalc_import.split_of("test", "video_test_0000270", wtalc_import.THUMOS14_EXCLUDED) == "excluded"
    with pytest.raises(ValueError, match="video 'v': unknown subset 'dev'"):
        wtalc_import.protocol_split("dev", "v")
