"""Label import: every format, every validation error, versioning, feature coverage, S3 sources."""

from __future__ import annotations

import gzip
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from star_core.data import Instance, VideoFeatures
from star_core.io import datasets, feature_store
from star_core.io.labels_import import describe_datasets, detect_format, import_labels, read_label_rows, video_resolver
from star_core.io.lake import Lake, video_id_from_uri
from star_core.labels import ImportOptions, LabelsError, assign_splits

CSV = """video,labels,split,counts,intervals,duration_s
clips/a.mp4,Run|Jump,train,Run:2|Jump:1,Run:1-3|Run:5-6|Jump:2-4,10
clips/b.mp4,Jump,test,1,Jump:1-2,10
s3://archive/2026/c.mkv,Swim,val,,,
d,Swim|Run,train,,,
"""


def _write(path, text: str):
    path.write_text(text)
    return str(path)


def _import(tmp_path, text: str, name="labels.csv", opts=None, **kw):
    lake = kw.pop("lake", None) or Lake(str(tmp_path / "lake"))
    return import_labels(_write(tmp_path / name, text), lake, "mine", opts or ImportOptions(), **kw), lake


def _problems(exc: pytest.ExceptionInfo) -> list[str]:
    assert isinstance(exc.value, LabelsError)
    return exc.value.problems


# ----- formats ---------------------------------------------------------------------------------
def test_csv_round_trip_fields(tmp_path):
    result, lake = _import(tmp_path, CSV)
    assert (result.version, result.created, result.format) == (1, True, "csv")
    assert result.classes == ["Jump", "Run", "Swim"]  # sorted when not given
    assert result.splits == {"test": 1, "train": 2, "val": 1}
    ds = datasets.load_dataset(lake, "mine")
    by_id = {v.video_id: v for v in ds.videos}
    assert sorted(by_id) == ["a", "b", "c", "d"]
    a = by_id["a"]
    assert a.labels == ("Jump", "Run")  # class order, counts re-aligned
    assert a.counts == (1, 2)
    assert a.instances == (Instance("Run", 1.0, 3.0), Instance("Jump", 2.0, 4.0), Instance("Run", 5.0, 6.0))
    assert a.duration_s == 10.0
    assert a.source_uri == str(tmp_path / "clips" / "a.mp4")  # relative to the label file
    assert by_id["b"].counts == (1,)
    assert by_id["c"].source_uri == "s3://archive/2026/c.mkv"
    assert by_id["d"].source_uri is None and by_id["d"].counts is None and by_id["d"].labels == ("Run", "Swim")
    assert ds.classes == ("Jump", "Run", "Swim")


def test_tsv_semicolon_csv_and_gzip(tmp_path):
    tsv = "video\tlabels\na\tX|Y\nb\tY\n"
    r1, _ = _import(tmp_path, tsv, name="l.tsv")
    assert r1.format == "tsv" and r1.n_videos == 2
    semi = "video;labels\na;X\n"
    r2, _ = _import(tmp_path / "..", semi, name="semi.csv", lake=Lake(str(tmp_path / "lake2")))
    assert r2.n_videos == 1
    gz = tmp_path / "l.csv.gz"
    gz.write_bytes(gzip.compress(b"video,labels\na,X\nb,Y\n"))
    r3 = import_labels(str(gz), Lake(str(tmp_path / "lake3")), "g")
    assert r3.format == "csv" and r3.classes == ["X", "Y"]


def test_jsonl_lists_and_mappings(tmp_path):
    lines = [
        {
            "video": "a",
            "labels": ["Run", "Jump"],
            "counts": {"Jump": 1, "Run": 3},
            "split": "train",
            "intervals": [{"label": "Run", "start": 0, "end": 1.5}],
        },
        {
            "video": "b",
            "labels": "Jump",
            "counts": [2],
            "split": "TEST",
            "intervals": [["Jump", 1, 2], {"label": "Jump", "segment": [3, 4]}],
        },
        {"video": "c", "labels": ["Run"]},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    result, lake = _import(tmp_path, text, name="l.jsonl")
    assert result.format == "jsonl"
    by_id = {v.video_id: v for v in datasets.load_dataset(lake, "mine").videos}
    assert by_id["a"].counts == (1, 3) and by_id["a"].split == "train"
    assert by_id["b"].split == "test" and len(by_id["b"].instances) == 2
    assert by_id["c"].counts is None


def test_parquet_list_and_map_columns(tmp_path):
    table = pa.table(
        {
            "video_id": ["a", "b"],
            "labels": [["X", "Y"], ["Y"]],
            "counts": pa.array([[("X", 2), ("Y", 1)], None], pa.map_(pa.string(), pa.int64())),
            "subset": ["train", None],
        }
    )
    path = tmp_path / "l.parquet"
    pq.write_table(table, path)
    result = import_labels(str(path), Lake(str(tmp_path / "lake")), "p")
    assert result.format == "parquet" and result.n_videos == 2
    ds = datasets.load_dataset(Lake(str(tmp_path / "lake")), "p")
    a = next(v for v in ds.videos if v.video_id == "a")
    assert a.counts == (2, 1)


def test_parquet_row_numbers_in_errors(tmp_path):
    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"video": ["a", "b", "c"], "labels": [["X"], [], ["X"]]}), path)
    with pytest.raises(LabelsError) as exc:
        import_labels(str(path), Lake(str(tmp_path / "lake")), "p")
    assert _problems(exc) == ["row 2: empty labels: every video needs at least one label"]


def test_json_array_of_rows(tmp_path):
    text = json.dumps([{"video": "a", "labels": "X"}, {"video": "b", "labels": ["X", "Y"], "split": "val"}])
    result, _ = _import(tmp_path, text, name="rows.json")
    assert result.format == "json" and result.splits.get("val") == 1


def test_activitynet_json(tmp_path):
    doc = {
        "version": "x",
        "taxonomy": [],
        "database": {
            "v1": {
                "subset": "validation",
                "duration": 30.0,
                "annotations": [{"segment": [1, 2], "label": "A"}, {"segment": [5, 7], "label": "A"}, {"segment": [3, 4], "label": "B"}],
            },
            "v2": {"subset": "test", "duration": 20.0, "annotations": [{"segment": [10, 12.5], "label": "B"}]},
        },
    }
    opts = ImportOptions(split_map={"validation": "train", "test": "test"})
    result, lake = _import(tmp_path, json.dumps(doc), name="gt.json", opts=opts)
    assert result.splits == {"test": 1, "train": 1}
    v1 = next(v for v in datasets.load_dataset(lake, "mine").videos if v.video_id == "v1")
    assert v1.labels == ("A", "B") and v1.counts == (2, 1)  # counts from the annotations
    assert [i.t_start_s for i in v1.instances] == [1.0, 3.0, 5.0]
    with pytest.raises(ValueError, match="--column does not apply"):
        import_labels(str(tmp_path / "gt.json"), lake, "mine", column_map={"video": "x"})


def test_thumos14_activitynet_gt_finds_its_known_bad_annotations(tmp_path, data_dir):
    """The real THUMOS'14 gt.json: known-wrong annotations are rows with errors; --skip-invalid imports the rest."""
    gt = str(data_dir / "thumos14" / "activitynet_style" / "gt.json")
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(LabelsError) as exc:
        import_labels(gt, lake, "thumos14")
    bad = {p.split("'")[1] for p in _problems(exc)}
    assert "video_test_0000270" in bad  # annotations up to 537 s past the end (a known-wrong video)
    assert all("past the video's duration" in p for p in _problems(exc))
    opts = ImportOptions(split_map={"validation": "train", "test": "test"}, skip_invalid=True)
    result = import_labels(gt, lake, "thumos14", opts)
    assert len(result.classes) == 20 and result.n_videos == 412 - len(bad)
    assert result.splits["train"] + result.splits["test"] == result.n_videos
    assert len(result.skipped) == len(bad)
    assert len(datasets.load_dataset(lake, "thumos14").classes) == 20


def test_memory_uri_source(tmp_path):
    lake = Lake(f"memory://lake-{uuid.uuid4().hex[:8]}")
    src = f"memory://inbox-{uuid.uuid4().hex[:8]}/labels.csv"
    lake.fs.pipe_file(src.replace("memory://", "/"), b"video,labels\nvids/x.mp4,A\n")
    result = import_labels(src, lake, "m")
    vid = datasets.load_dataset(lake, "m").videos[0]
    assert result.n_videos == 1 and vid.video_id == "x"
    assert vid.source_uri == src.rsplit("/", 1)[0] + "/vids/x.mp4"


@pytest.mark.slow
def test_s3_file_into_s3_lake(s3, s3_lake_uri):
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3, key="testing", secret="testing")
    src = f"{s3_lake_uri}-inbox/labels.jsonl"
    fs.pipe(src, b'{"video": "clips/v1.mp4", "labels": "A|B", "counts": "A:1|B:2"}\n{"video": "v2.mp4", "labels": "B"}\n')
    lake = Lake(s3_lake_uri)
    result = import_labels(src, lake, "s3ds")
    assert (result.version, result.created, result.n_videos) == (1, True, 2)
    videos = {v.video_id: v for v in datasets.load_dataset(lake, "s3ds").videos}
    assert videos["v1"].source_uri == f"{s3_lake_uri}-inbox/clips/v1.mp4"
    assert videos["v1"].counts == (1, 2)
    again = import_labels(src, lake, "s3ds")
    assert (again.version, again.created) == (1, False)
    fs.pipe(src, b'{"video": "v1.mp4", "labels": "A"}\n')
    changed = import_labels(src, lake, "s3ds")
    assert (changed.version, changed.created) == (2, True)


# ----- validation errors -------------------------------------------------------------------------
def test_unknown_and_misspelled_columns(tmp_path):
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,lables,notes\na,X,hi\n")
    problems = _problems(exc)
    assert any("unknown column 'lables' (did you mean 'labels'?)" in p for p in problems)
    assert any("unknown column 'notes'" in p and "did you mean" not in p for p in problems)
    assert not any("missing required column 'labels'" in p for p in problems)  # the suggestion covers it
    result, _ = _import(tmp_path, "video,lables,notes\na,X,hi\n", column_map={"labels": "lables"}, ignore_columns=["notes"])
    assert result.classes == ["X"]


def test_missing_required_column_and_bad_mappings(tmp_path):
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,split\na,train\n")
    assert any("missing required column 'labels'" in p for p in _problems(exc))
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,labels\na,X\n", column_map={"lables": "labels", "split": "splt"})
    problems = _problems(exc)
    assert any("unknown field 'lables' (did you mean 'labels'?)" in p for p in problems)
    assert any("the file has no column 'splt'" in p for p in problems)
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,video_id,labels\na,a,X\n")
    assert any("both name the video" in p for p in _problems(exc))


def test_jsonl_unknown_key_names_its_line(tmp_path):
    text = '{"video": "a", "labels": "X"}\n{"video": "b", "labels": "X", "cuonts": "X:1"}\n'
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, text, name="l.jsonl")
    assert _problems(exc)[0].startswith("line 2: unknown column 'cuonts' (did you mean 'counts'?)")


def test_row_errors_are_numbered_and_all_reported(tmp_path):
    text = (
        "video,labels,split,counts,intervals,duration_s\n"
        "a,Run|Jump,train,Run:2,,10\n"  # line 2: counts lack Jump
        "b,,train,,,\n"  # line 3: empty labels
        'a,"Run",tran,,,\n'  # line 4: duplicate + unknown split
        "c,Run|Run,train,,,\n"  # line 5: label twice
        "d,Run,train,,Run:8-12,10\n"  # line 6: past duration
        "e,Run,train,,Walk:8-9,10\n"  # line 7: interval label not a label
        "f,Run,train,,Run:5-4,\n"  # line 8: start >= end
        "g,Run|Jump,train,3,,\n"  # line 9: 1 count for 2 labels
        "h,Run,train,Run:0,,\n"  # line 10: count 0
        "i,Run,train,Run:1.5,,\n"  # line 11: fractional count
        "j,Run,train,Jog:1,,\n"  # line 12: counts name another label
        "k,Run|,train,,,\n"  # line 13: trailing delimiter
        "l,Run,train,,Run:-1-2,\n"  # line 14: negative start
        "m,Run,train,,,-5\n"  # line 15: negative duration
    )
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, text)
    problems = _problems(exc)
    assert [p.split(":", 1)[0] for p in problems] == [f"line {n}" for n in range(2, 16)]
    expected = {
        2: "counts give no number for label 'Jump'",
        3: "empty labels",
        5: "label 'Run' listed more than once",
        6: "1 interval(s) end past the video's duration 10.00 s",
        7: "interval label 'Walk' is not among the video's labels",
        8: "has start >= end",
        9: "1 count(s) (3) for 2 labels (Run, Jump)",
        10: "must be a whole number >= 1",
        11: "must be a whole number >= 1",
        12: "counts name 'Jog', which is not among the labels",
        13: "empty label in 'Run|'",
        14: "starts before 0 s",
        15: "must be > 0",
    }
    for line, text_ in expected.items():
        assert text_ in problems[line - 2], (line, problems[line - 2])
    assert "duplicate video 'a' (first on line 2)" in problems[2] and "unknown split 'tran' (did you mean 'train'?)" in problems[2]
    assert str(exc.value).startswith(f"{tmp_path / 'labels.csv'}: 14 problems:")
    assert not Lake(str(tmp_path / "lake")).exists(str(tmp_path / "lake" / "labels"))  # nothing written


def test_quoted_multiline_cell_keeps_line_numbers(tmp_path):
    text = 'video,labels\na,"X|\nY"\nb,\n'
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, text)
    assert _problems(exc) == ["line 4: empty labels: every video needs at least one label"]


def test_duplicate_video_from_two_uris_with_the_same_file_name(tmp_path):
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,labels\ns3://b/x/cam.mp4,A\ns3://b/y/cam.mp4,A\n")
    assert _problems(exc) == ["line 3: duplicate video 'cam' (first on line 2)"]


def test_given_class_list_keeps_order_and_rejects_unknown_labels(tmp_path):
    result, lake = _import(tmp_path, "video,labels\na,Run|Jump\nb,Swim\n", opts=ImportOptions(classes=("Swim", "Run", "Jump", "Walk")))
    assert result.classes == ["Swim", "Run", "Jump", "Walk"]
    assert any("classes without any video: ['Walk']" in w for w in result.warnings)
    assert next(v for v in datasets.load_dataset(lake, "mine").videos if v.video_id == "a").labels == ("Run", "Jump")
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, "video,labels\na,Runn\n", opts=ImportOptions(classes=("Run",)))
    assert "label 'Runn' is not in the class list (did you mean 'Run'?)" in _problems(exc)[0]


def test_skip_invalid_keeps_the_good_rows(tmp_path):
    result, _ = _import(tmp_path, "video,labels\na,X\nb,\nc,Y\n", opts=ImportOptions(skip_invalid=True))
    assert result.n_videos == 2 and result.skipped == ["line 3: empty labels: every video needs at least one label"]


def test_unreadable_files(tmp_path):
    with pytest.raises(LabelsError, match="line 2: not valid JSON"):
        _import(tmp_path, '{"video": "a", "labels": "X"}\n{"video": \n', name="l.jsonl")
    with pytest.raises(LabelsError, match="line 2: 3 fields but the header has 2"):
        _import(tmp_path, "video,labels\na,X,extra\n")
    with pytest.raises(LabelsError, match="no rows"):
        _import(tmp_path, "video,labels\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_labels(str(tmp_path / "nope.csv"), Lake(str(tmp_path / "lake")), "x")
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format("labels.xlsx")
    with pytest.raises(ValueError, match="invalid dataset name"):
        import_labels(_write(tmp_path / "ok.csv", "video,labels\na,X\n"), Lake(str(tmp_path / "lake")), "../evil")


# ----- splits, versions, features ---------------------------------------------------------------
def test_seeded_split_is_deterministic_stable_and_near_the_fraction():
    ids = [f"v{i:04d}" for i in range(2000)]
    a = assign_splits(ids, 0.2, seed=0)
    assert a == assign_splits(list(reversed(ids)), 0.2, seed=0)
    assert 0.17 < sum(s == "test" for s in a.values()) / len(ids) < 0.23
    more = assign_splits(ids + [f"w{i}" for i in range(100)], 0.2, seed=0)
    assert all(more[v] == a[v] for v in ids)  # adding videos moves none
    assert assign_splits(ids, 0.2, seed=1) != a
    assert list(assign_splits(["x", "y"], 0.2, 0).values()).count("test") == 1  # tiny sets still get a test video
    assert set(assign_splits(ids[:50], 0.0, 0).values()) == {"train"}
    with pytest.raises(ValueError, match="test fraction"):
        assign_splits(ids, 1.0, 0)


def test_reimport_is_a_no_op_and_changes_make_versions(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    r1, _ = _import(tmp_path, CSV, lake=lake)
    meta_path = f"{lake.labels_dir('mine', 1)}/dataset.json"
    before = lake.read_bytes(meta_path)
    r2, _ = _import(tmp_path, CSV, lake=lake)
    assert (r2.version, r2.created) == (1, False)
    # the same content reordered (rows and labels within a cell) is the same dataset
    lines = CSV.strip().split("\n")
    reordered = "\n".join([lines[0], *reversed(lines[1:])]).replace("Swim|Run", "Run|Swim") + "\n"
    r3, _ = _import(tmp_path, reordered, name="other.csv", lake=lake)
    assert (r3.version, r3.created) == (1, False)
    # a changed file makes version 2 and leaves version 1 as it was
    r4, _ = _import(tmp_path, CSV.replace("d,Swim|Run", "d,Swim"), lake=lake)
    assert (r4.version, r4.created) == (2, True)
    assert lake.read_bytes(meta_path) == before
    assert datasets.load_dataset(lake, "mine", 1).split("train")[1].labels == ("Run", "Swim")
    assert datasets.load_dataset(lake, "mine").version == 2
    # a different seed changes the split of rows without one: a new version too
    r5, _ = _import(tmp_path, "video,labels\n" + "".join(f"v{i},A\n" for i in range(20)), name="s.csv", lake=Lake(str(tmp_path / "l2")))
    r6, _ = _import(
        tmp_path,
        "video,labels\n" + "".join(f"v{i},A\n" for i in range(20)),
        name="s.csv",
        lake=Lake(str(tmp_path / "l2")),
        opts=ImportOptions(seed=7),
    )
    assert (r5.version, r6.version, r6.created) == (1, 2, True)


def _features(video_id: str, n_segments: int, duration_s: float) -> VideoFeatures:
    rng = np.random.default_rng(0)
    return VideoFeatures(video_id, rng.random((n_segments, 4), np.float32), rng.random((n_segments, 4), np.float32), duration_s=duration_s)


def test_feature_coverage_and_decoded_durations(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    feature_store.write_features(lake, "i3d-a", [_features("a", 10, 12.0), _features("b", 5, 6.0)])
    feature_store.write_features(lake, "i3d-b", [_features("a", 10, 12.0)])
    text = "video,labels,intervals,duration_s,split\na,X,X:1-11.9,20,train\nb,X,,,test\nc,X,,,train\n"
    result, _ = _import(tmp_path, text, lake=lake)
    assert result.with_features == {"i3d-a": 2, "i3d-b": 1}
    assert result.without_features == ["c"]  # listed, not fatal
    assert any("declares duration 20.00 s but its decoded features span 12.00 s" in w for w in result.warnings)
    ds = {v.video_id: v for v in datasets.load_dataset(lake, "mine").videos}
    assert ds["a"].duration_s == 12.0 and ds["b"].duration_s == 6.0
    # the decoded duration is what intervals are checked against
    with pytest.raises(LabelsError, match="past the video's duration 6.00 s"):
        _import(tmp_path, "video,labels,intervals,duration_s\nb,X,X:1-7,100\n", lake=lake)
    only_b = import_labels(_write(tmp_path / "c.csv", text), lake, "other", feature_sets=["i3d-b", "nope"])
    assert only_b.with_features == {"i3d-b": 1, "nope": 0} and only_b.without_features == ["b", "c"]
    assert any("feature set 'nope' has no features" in w for w in only_b.warnings)
    info = describe_datasets(lake)
    assert [(d["name"], d["version"]) for d in info] == [("mine", 1), ("other", 1)]
    assert info[0]["features"] == {"i3d-a": {"test": 1, "train": 1}, "i3d-b": {"train": 1}}
    assert info[0]["splits"] == {"test": 1, "train": 2} and info[0]["classes"] == ["X"]
    with pytest.raises(KeyError, match="no dataset named 'zzz'"):
        describe_datasets(lake, "zzz")


# ----- helpers ----------------------------------------------------------------------------------
def test_video_ids_and_resolver(tmp_path):
    assert video_id_from_uri("s3://bucket/a/cam_01.mp4") == "cam_01"
    assert video_id_from_uri("/data/v.x.avi") == "v.x"
    assert video_id_from_uri("https://h/p/v.mp4?sig=1#t") == "v"
    with pytest.raises(ValueError, match="no file name"):
        video_id_from_uri("s3://bucket/dir/")
    resolve = video_resolver("s3://bkt/labels/l.csv")
    assert resolve("../videos/a.mp4") == ("a", "s3://bkt/videos/a.mp4")
    assert resolve("video_test_0000001") == ("video_test_0000001", None)
    assert resolve("b.avi") == ("b", "s3://bkt/labels/b.avi")
    assert video_resolver(str(tmp_path / "l.csv"))("/abs/c.mp4") == ("c", "/abs/c.mp4")


def test_read_label_rows_reports_columns(tmp_path):
    rows = read_label_rows(_write(tmp_path / "x.jsonl", '{"video": "a", "labels": "X"}\n{"video": "b", "labels": "X", "split": "train"}\n'))
    assert rows.columns == {"video": "line 1", "labels": "line 1", "split": "line 2"}
    assert [r.where for r in rows.rows] == ["line 1", "line 2"]


def test_dot_video_ids_and_formula_labels_are_rejected(tmp_path):
    text = "video,labels\n.,Run\n..,Run\n=HYPERLINK(1),Run\ngood,=cmd|' /C calc'!A0\nok,+SUM(1)\nfine,@x\n-dash,Run\n"
    with pytest.raises(LabelsError) as exc:
        _import(tmp_path, text)
    problems = _problems(exc)
    assert problems[0].startswith("line 2: video id '.' is not allowed")
    assert problems[1].startswith("line 3: video id '..' is not allowed")
    assert problems[2].startswith("line 4: video id '=HYPERLINK") and "formula" in problems[2]
    assert problems[3].startswith("line 5: label '=cmd' starts with '='") and "formula" in problems[3]
    assert "line 6: label '+SUM(1)'" in problems[4] and "line 7: label '@x'" in problems[5]
    assert len(problems) == 6  # a video id may start with '-' (YouTube ids do)


def test_a_label_holding_a_likely_separator_is_a_warning(tmp_path):
    result, _ = _import(tmp_path, "video,labels\na,Run;Jump\nb,Run\nc,\"Swim, Dive\"\n")
    assert result.classes == ["Run", "Run;Jump", "Swim, Dive"]
    assert len(result.warnings) == 2
    assert "label 'Run;Jump' (line 2) holds ';'" in result.warnings[0] and "--label-delimiter" in result.warnings[0]
    assert "label 'Swim, Dive' (line 4) holds ','" in result.warnings[1]
    # the delimiter in use is not a warning
    result, _ = _import(tmp_path, "video,labels\na,Run;Jump\n", opts=ImportOptions(label_delimiter=";"))
    assert result.classes == ["Jump", "Run"] and result.warnings == []
