"""The query layer (`star query`, jobs.query) and `star plot` on a local lake (fast: no Ray, no servers)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import query as q
from star_cli.cli import main as star
from jobs.timeline import timeline_inputs
from star_core.data import Detection, Instance, VideoFeatures, VideoLabels
from star_core.io import detections as detio
from star_core.io import datasets, feature_store
from star_core.io.lake import Lake

TODAY = dt.datetime.now(dt.timezone.utc).date()
RECENT = (TODAY - dt.timedelta(days=2)).isoformat()  # inside "last week"
OLD = (TODAY - dt.timedelta(days=20)).isoformat()  # outside it


def _video(video_id: str, n: int = 6, d: int = 4) -> VideoFeatures:
    rng = np.random.default_rng(abs(hash(video_id)) % 2**32)
    return VideoFeatures(
        video_id,
        rng.random((n, d), dtype=np.float32),
        rng.random((n, d), dtype=np.float32),
        duration_s=n * 0.64,
        source_uri=f"s3://archive/{video_id}.mp4",
    )


def _write(lake: Lake, model_version: int, date: str, run_id: str, dets: list[Detection]) -> str:
    table = detio.detections_to_table(
        dets,
        model_name="star",
        model_version=model_version,
        model_uri=f"models:/star/{model_version}",
        run_id=run_id,
        feature_set="fs-test",
        detected_at=dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc),
    )
    return detio.write_detections(lake, detio.shard_path(lake, "star", model_version, date, run_id, 0), table)


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    feature_store.write_features(lake, "fs-test", [_video(f"v{i}") for i in range(3)])
    gt = VideoLabels(
        "v0",
        "test",
        ("CricketShot", "CricketBowling"),
        (1, 1),
        (Instance("CricketShot", 0.5, 2.0), Instance("CricketBowling", 2.2, 3.0)),
        duration_s=3.84,
    )
    datasets.save_dataset(lake, "toy", ["CricketBowling", "CricketShot"], [gt])
    # a second version: the labels view must show only this one
    datasets.save_dataset(
        lake, "toy", ["CricketBowling", "CricketShot"], [gt, VideoLabels("v1", "train", ("CricketShot",), (1,), duration_s=3.84)]
    )
    _write(lake, 1, OLD, "run-old", [Detection("v0", "CricketShot", 0.0, 3.0, 0.9), Detection("v1", "CricketShot", 0.0, 1.0, 0.4)])
    _write(
        lake,
        2,
        RECENT,
        "run-new",
        [
            Detection("v0", "CricketShot", 0.64, 1.92, 0.8),
            Detection("v0", "CricketBowling", 1.92, 3.2, 0.7),
            Detection("v1", "CricketShot", 0.0, 2.56, 0.6),
            Detection("v2", "CricketShot", 1.28, 1.92, 0.3),
        ],
    )
    return lake


def test_detections_view_has_rows_and_partition_columns(lake):
    got = q.query(lake, "SELECT model, date, typeof(date) AS t, count(*) AS n FROM detections GROUP BY ALL ORDER BY model")
    assert got.to_pylist() == [
        {"model": "star-v1", "date": dt.date.fromisoformat(OLD), "t": "DATE", "n": 2},
        {"model": "star-v2", "date": dt.date.fromisoformat(RECENT), "t": "DATE", "n": 4},
    ]
    # the same rows as the Parquet files themselves
    direct = sum(pq.read_table(p).num_rows for p in lake.list_files(lake.detections_dir("star")))
    assert q.query(lake, "SELECT count(*) AS n FROM detections").column("n")[0].as_py() == direct == 6


def test_readme_example_queries(lake):
    longest = q.query(lake, q_example("longest"))
    # only last week's CricketShot rows, longest first (the 20-day-old 3 s one is excluded)
    assert [(r["video_id"], round(r["length_s"], 2)) for r in longest.to_pylist()] == [("v1", 2.56), ("v0", 1.28), ("v2", 0.64)]
    per_day = q.query(lake, q_example("per_day")).to_pylist()
    assert [(str(r["date"]), r["label"], r["detections"]) for r in per_day] == [
        (OLD, "CricketShot", 2),
        (RECENT, "CricketBowling", 1),
        (RECENT, "CricketShot", 3),
    ]


def q_example(name: str) -> str:
    """The example queries of docs/querying.md (kept in one place: the docs quote these)."""
    return q.EXAMPLES[name]


def test_features_view_is_metadata_only(lake):
    got = q.query(lake, "SELECT * FROM features ORDER BY video_id")
    assert got.num_rows == 3
    assert "rgb" not in got.column_names and "flow" not in got.column_names
    assert got.column("n_segments").to_pylist() == [6, 6, 6]
    assert got.column("feature_set").to_pylist() == ["fs-test"] * 3


def test_labels_view_is_latest_version_with_dataset_column(lake):
    got = q.query(lake, "SELECT dataset, dataset_version, video_id, labels FROM labels ORDER BY video_id").to_pylist()
    assert got == [
        {"dataset": "toy", "dataset_version": 2, "video_id": "v0", "labels": ["CricketShot", "CricketBowling"]},
        {"dataset": "toy", "dataset_version": 2, "video_id": "v1", "labels": ["CricketShot"]},
    ]
    # joins across views: detections of videos labelled CricketShot
    n = q.query(lake, "SELECT count(*) AS n FROM detections d JOIN labels l USING (video_id) WHERE list_contains(l.labels, d.label)")
    assert n.column("n")[0].as_py() == 5


def test_empty_lake_has_empty_views(tmp_path):
    lake = Lake(str(tmp_path / "empty"))
    for view in q.VIEWS:
        assert q.query(lake, f"SELECT count(*) AS n FROM {view}").column("n")[0].as_py() == 0
    assert "date" in q.query(lake, "SELECT * FROM detections").column_names


def test_cli_formats_and_errors(lake, capsys):
    sql = "SELECT video_id, label, score FROM detections WHERE model = 'star-v2' ORDER BY score DESC"
    assert star(["query", sql, "--lake", lake.uri, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["video_id"] for r in rows] == ["v0", "v0", "v1", "v2"]
    assert rows[0]["score"] == pytest.approx(0.8)
    assert star(["query", sql, "--lake", lake.uri, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "video_id,label,score" and lines[1].startswith("v0,CricketShot,0.8") and len(lines) == 5
    assert star(["query", sql, "--lake", lake.uri]) == 0
    out = capsys.readouterr().out
    assert "CricketBowling" in out and "(4 rows)" in out
    assert star(["query", "SELECT nope FROM detections", "--lake", lake.uri]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and "nope" in err


def test_timeline_inputs_and_plot_command(lake, tmp_path, capsys):
    inputs = timeline_inputs(lake, "v0")
    assert inputs.model == "star-v2"  # newest detections win
    assert sorted((d.label, d.t_start_s) for d in inputs.detections) == [("CricketBowling", 1.92), ("CricketShot", 0.64)]
    assert inputs.ground_truth is not None and len(inputs.ground_truth.instances) == 2 and inputs.dataset == "toy v2"
    assert inputs.classes == ["CricketBowling", "CricketShot"] and inputs.duration_s == pytest.approx(3.84)
    old = timeline_inputs(lake, "v0", model_version="star-v1")
    assert [d.score for d in old.detections] == [pytest.approx(0.9)]
    assert len(timeline_inputs(lake, "v0", model_version="1").detections) == 1
    # v2 has detections but no ground truth
    assert timeline_inputs(lake, "v2").ground_truth is None

    out = tmp_path / "v0.png"
    assert star(["plot", "v0", "--lake", lake.uri, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert "2 detections of star-v2" in capsys.readouterr().out
    assert star(["plot", "nosuchvideo", "--lake", lake.uri, "--out", str(tmp_path / "x.png")]) == 2
    assert "no detections" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


# ----- sandbox: one read-only statement over the views, no file or network access (issue 17) --------------
# {outside}: a directory outside the lake; {junk}: a new file in a feature set of the lake; {part}: a lake file
ESCAPES = {
    "copy_to": "COPY (SELECT 1 AS x) TO '{outside}/out.csv'",
    "copy_junk_into_features": "COPY (SELECT 'junk' AS video_id) TO '{junk}' (FORMAT parquet)",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "parquet_by_path": "SELECT * FROM '{part}'",
    "attach": "ATTACH '{outside}/new.db' AS other",
    "multi_statement": "SELECT 1; COPY (SELECT 1 AS x) TO '{outside}/second.csv'",
    "unlock": "SET enable_external_access = true",
    "install": "INSTALL httpfs",
    "drop_view": "DROP VIEW detections",
    "spill_dir": "COPY (SELECT 1 AS x) TO '{outside}/.tmp/spill.csv'",
}


@pytest.mark.parametrize("name", ESCAPES)
def test_query_escapes_are_refused(lake, tmp_path, monkeypatch, name, capsys):
    outside = tmp_path / "outside"
    (outside / ".tmp").mkdir(parents=True)
    monkeypatch.chdir(outside)  # DuckDB's default spill directory is ./.tmp, which it allow-lists
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    sql = ESCAPES[name].format(
        outside=outside, junk=lake.path("features/fs-test/part-junk.parquet"), part=lake.list_files(lake.path("features"))[0]
    )
    with pytest.raises(ValueError) as err:
        q.query(lake, sql)
    assert str(err.value).startswith("query")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written anywhere, the lake included
    # the same through the CLI: exit 2, a one-line reason, no traceback
    assert star(["query", sql, "--lake", lake.uri]) == 2
    captured = capsys.readouterr()
    assert "query" in captured.err and "Traceback" not in captured.err and captured.out == ""
    # and the lake still answers plainly afterwards
    assert q.query(lake, "SELECT count(*) AS n FROM features").column("n")[0].as_py() == 3


def test_query_reasons_name_the_problem(lake):
    with pytest.raises(ValueError, match="one statement per call, got 2"):
        q.query(lake, "SELECT 1; SELECT 2")
    with pytest.raises(ValueError, match="only read-only SELECT.*got a COPY statement"):
        q.query(lake, "COPY (SELECT 1) TO 'x.csv'")
    with pytest.raises(ValueError, match="disabled by configuration"):
        q.query(lake, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(ValueError, match="empty SQL"):
        q.query(lake, "-- only a comment")
    # read-only forms of SELECT still work
    assert q.query(lake, "SELECT 1 AS one;").column("one").to_pylist() == [1]
    assert "column_name" in q.query(lake, "DESCRIBE detections").column_names
    assert q.query(lake, "WITH d AS (FROM detections) SELECT count(*) AS n FROM d").column("n")[0].as_py() == 6


def test_query_on_an_s3_lake_is_sandboxed_and_still_reads(s3_lake_uri):
    lake = Lake(s3_lake_uri)
    feature_store.write_features(lake, "fs-test", [_video(f"v{i}") for i in range(2)])
    _write(lake, 1, RECENT, "run-s3", [Detection("v0", "CricketShot", 0.0, 1.0, 0.5)])
    assert q.query(lake, "SELECT count(*) AS n FROM features").column("n")[0].as_py() == 2
    assert q.query(lake, "SELECT video_id, model FROM detections").to_pylist() == [{"video_id": "v0", "model": "star-v1"}]
    with pytest.raises(ValueError, match="disabled by configuration|only read-only"):
        q.query(lake, f"SELECT * FROM read_parquet('{lake.path('features')}/**/*.parquet')")
    with pytest.raises(ValueError):
        q.query(lake, f"COPY (SELECT 1 AS x) TO '{lake.path('features/fs-test/part-junk.parquet')}' (FORMAT parquet)")
    assert len(lake.list_files(lake.path("features"))) == 1


def test_plot_rejects_unknown_model_version_and_non_finite_min_score(lake, tmp_path, capsys):
    out = tmp_path / "v0.png"
    assert star(["plot", "v0", "--lake", lake.uri, "--model-version", "star-v9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no detections of model 'star-v9'" in err and "star-v1, star-v2" in err and not out.exists()
    assert star(["plot", "v0", "--lake", lake.uri, "--model-version", "7", "--out", str(out)]) == 2
    assert "no detections of model '7'" in capsys.readouterr().err
    assert star(["plot", "v0", "--lake", lake.uri, "--model-version", "1", "--out", str(out)]) == 0
    assert "1 detections of star-v1" in capsys.readouterr().out
    for bad in ("nan", "inf", "-inf", "abc"):
        with pytest.raises(SystemExit) as exit_:
            star(["plot", "v0", "--lake", lake.uri, "--min-score", bad, "--out", str(out)])
        assert exit_.value.code == 2
        assert "--min-score" in capsys.readouterr().err
