"""`star labels import` and `star datasets` through the real CLI dispatcher."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from star_cli.cli import main
from star_core.data import VideoFeatures
from star_core.io import datasets, feature_store
from star_core.io.lake import Lake

CSV = "video,labels,split,counts\nclips/a.mp4,Run|Jump,train,Run:2|Jump:1\nclips/b.mp4,Jump,test,\nc,Swim,,\n"


def _star(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def labels_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    return str(path)


def test_import_prints_summary_then_no_op_then_new_version(tmp_path, labels_csv, capsys):
    lake = str(tmp_path / "lake")
    code, out, _ = _star(capsys, "labels", "import", labels_csv, "--lake", lake, "--dataset", "mine")
    assert code == 0
    assert "dataset mine v1: created" in out and "classes  3: Jump, Run, Swim" in out
    assert "3 video(s) have no features yet" in out and "a, b, c" in out
    code, out, _ = _star(capsys, "labels", "import", labels_csv, "--lake", lake, "--dataset", "mine")
    assert code == 0 and "dataset mine v1: unchanged" in out
    (tmp_path / "labels.csv").write_text(CSV + "d,Run,val,\n")
    code, out, _ = _star(capsys, "labels", "import", labels_csv, "--lake", lake, "--dataset", "mine", "--json")
    result = json.loads(out)
    assert (code, result["version"], result["created"], result["splits"]["val"]) == (0, 2, True, 1)
    assert [d["version"] for d in datasets.list_datasets(Lake(lake))] == [1, 2]


def test_errors_exit_2_with_row_numbers(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("video,lables\na,X\n")
    code, _, err = _star(capsys, "labels", "import", str(bad), "--lake", str(tmp_path / "lake"), "--dataset", "d")
    assert code == 2 and "unknown column 'lables' (did you mean 'labels'?)" in err
    bad.write_text("video,labels,counts\na,X|Y,X:1\na,X,\n")
    code, _, err = _star(capsys, "labels", "import", str(bad), "--lake", str(tmp_path / "lake"), "--dataset", "d")
    assert code == 2
    assert "line 2: counts give no number for label 'Y'" in err and "line 3: duplicate video 'a' (first on line 2)" in err
    code, _, err = _star(capsys, "labels", "import", str(tmp_path / "missing.csv"), "--lake", str(tmp_path / "lake"), "--dataset", "d")
    assert code == 2 and "does not exist" in err
    code, _, err = _star(
        capsys, "labels", "import", str(bad), "--lake", str(tmp_path / "lake"), "--dataset", "d", "--split-map", "dev=develop"
    )
    assert code == 2 and "split must be one of train, val, test" in err


def test_options_columns_delimiter_classes_split(tmp_path, capsys):
    src = tmp_path / "l.csv"
    src.write_text("file,tags,notes\nx.mp4,B;A,hello\ny.mp4,A,\nz.mp4,B,\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("B\nA\nC\n")
    lake = str(tmp_path / "lake")
    code, out, _ = _star(
        capsys,
        "labels",
        "import",
        str(src),
        "--lake",
        lake,
        "--dataset",
        "o",
        "--column",
        "labels=tags",
        "--ignore-column",
        "notes",
        "--label-delimiter",
        ";",
        "--classes",
        str(classes),
        "--test-fraction",
        "0.5",
        "--seed",
        "3",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["classes"] == ["B", "A", "C"] and result["n_videos"] == 3
    ds = datasets.load_dataset(Lake(lake), "o")
    assert next(v for v in ds.videos if v.video_id == "x").labels == ("B", "A")
    assert ds.videos[0].source_uri == str(tmp_path / "x.mp4")
    with pytest.raises(SystemExit) as exc:  # argparse rejects it before run()
        main(["labels", "import", str(src), "--lake", lake, "--dataset", "o", "--column", "labels"])
    assert exc.value.code == 2 and "expected NAME=VALUE, got 'labels'" in capsys.readouterr().err


def test_activitynet_with_split_map(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps({"database": {"v1": {"subset": "validation", "duration": 9, "annotations": [{"segment": [1, 2], "label": "A"}]}}})
    )
    code, out, _ = _star(
        capsys,
        "labels",
        "import",
        str(gt),
        "--lake",
        str(tmp_path / "lake"),
        "--dataset",
        "an",
        "--split-map",
        "validation=train",
        "--json",
    )
    assert code == 0 and json.loads(out)["splits"] == {"train": 1}


def test_datasets_lists_versions_classes_splits_and_features(tmp_path, labels_csv, capsys):
    lake_uri = str(tmp_path / "lake")
    code, out, _ = _star(capsys, "datasets", "--lake", lake_uri)
    assert code == 0 and "no datasets yet" in out
    lake = Lake(lake_uri)
    rng = np.random.default_rng(0)
    feature_store.write_features(
        lake, "i3d-x", [VideoFeatures("a", rng.random((4, 3), np.float32), rng.random((4, 3), np.float32), duration_s=2.6)]
    )
    assert _star(capsys, "labels", "import", labels_csv, "--lake", lake_uri, "--dataset", "mine")[0] == 0
    code, out, _ = _star(capsys, "datasets", "--lake", lake_uri)
    assert code == 0
    header, row = out.splitlines()[1:3]
    assert header.split() == ["dataset", "version", "videos", "train", "val", "test", "classes", "features:i3d-x"]
    assert row.split()[:3] == ["mine", "v1", "3"] and row.split()[-1] == "1"
    assert "mine v1 classes: Jump, Run, Swim" in out and "features i3d-x: train 1/" in out
    code, out, _ = _star(capsys, "datasets", "--lake", lake_uri, "--json")
    (info,) = json.loads(out)
    assert info["features"] == {"i3d-x": {"train": 1}} and info["n_videos"] == 3 and info["classes"] == ["Jump", "Run", "Swim"]
    code, _, err = _star(capsys, "datasets", "--lake", lake_uri, "--dataset", "nope")
    assert code == 2 and "no dataset named 'nope'" in err


@pytest.mark.slow
def test_s3_file_and_s3_lake_in_a_subprocess(s3, s3_lake_uri):
    """The installed `star` entry point against the moto S3 server (env carries endpoint and keys)."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, key="testing", secret="testing")
    src = f"{s3_lake_uri}-inbox/labels.csv"
    fs.pipe(src, CSV.encode())
    cmd = [sys.executable, "-m", "star_cli", "labels", "import", src, "--lake", s3_lake_uri, "--dataset", "s3ds", "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["source"] == src
    listed = subprocess.run(
        [sys.executable, "-m", "star_cli", "datasets", "--lake", s3_lake_uri, "--json"], capture_output=True, text=True, timeout=120
    )
    (info,) = json.loads(listed.stdout)
    assert info["source"] == src and info["n_videos"] == 3
    assert datasets.load_dataset(Lake(s3_lake_uri), "s3ds").videos[0].source_uri == f"{s3_lake_uri}-inbox/clips/a.mp4"
