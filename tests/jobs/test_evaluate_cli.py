"""`star evaluate` through the real CLI dispatcher, on CSV and Parquet detections."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from star_cli.cli import main
from star_core.metrics import load_activitynet_gt

GT = {
    "version": "t",
    "database": {
        "v1": {
            "subset": "test",
            "duration": 100.0,
            "annotations": [
                {"segment": [0.0, 10.0], "label": "A"},
                {"segment": [20.0, 30.0], "label": "A"},
                {"segment": [40.0, 50.0], "label": "B"},
            ],
        },
        "v2": {"subset": "test", "duration": 50.0, "annotations": [{"segment": [0.0, 10.0], "label": "A"}]},
        "v3": {"subset": "validation", "duration": 50.0, "annotations": [{"segment": [0.0, 10.0], "label": "B"}]},
    },
}
ROWS = [
    ("v1", "A", 0.0, 10.0, 0.9),
    ("v1", "A", 1.0, 9.0, 0.8),
    ("v2", "A", 2.0, 12.0, 0.7),
    ("v1", "B", 40.0, 45.0, 0.5),
]


@pytest.fixture
def gt_path(tmp_path):
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(GT))
    return str(p)


def _csv(tmp_path, rows, header="video_id,label,t_start_s,t_end_s,score"):
    p = tmp_path / "dets.csv"
    p.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(p)


def _star(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_and_parquet_give_the_hand_computed_map(tmp_path, gt_path, capsys):
    out_json = tmp_path / "out" / "map.json"
    code, out, _ = _star(
        capsys, "evaluate", "--detections", _csv(tmp_path, ROWS), "--ground-truth", gt_path, "--json-out", str(out_json), "--subset", "test"
    )
    assert code == 0
    res = json.loads(out_json.read_text())
    assert set(res) == {"map", "avg_0.1_0.5", "avg_0.1_0.7"}
    assert list(res["map"]) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    # hand-computed (see tests/star_core/test_metrics.py): A = 5/9 at 0.5, B = 1 at 0.5
    assert res["map"]["0.5"] == pytest.approx((100 * 5 / 9 + 100) / 2)
    assert res["map"]["0.7"] == pytest.approx(100 / 6)
    assert "mAP (%)" in out and f"{res['map']['0.5']:.2f}" in out

    table = pa.table({k: [r[i] for r in ROWS] for i, k in enumerate(["video_id", "label", "t_start_s", "t_end_s", "score"])})
    pdir = tmp_path / "dets_parquet" / "date=2024-01-01"
    pdir.mkdir(parents=True)
    pq.write_table(table.append_column("model_version", pa.array(["1"] * len(ROWS))), pdir / "part-0.parquet")
    out2 = tmp_path / "map2.json"
    code, _, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        str(tmp_path / "dets_parquet"),
        "--ground-truth",
        gt_path,
        "--json-out",
        str(out2),
        "--subset",
        "test",
    )
    assert code == 0 and json.loads(out2.read_text()) == res
    pq.write_table(table, tmp_path / "one.parquet")
    code, _, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        str(tmp_path / "one.parquet"),
        "--ground-truth",
        gt_path,
        "--json-out",
        str(out2),
        "--subset",
        "test",
    )
    assert code == 0 and json.loads(out2.read_text()) == res


def test_protocol_options(tmp_path, gt_path, capsys):
    amb = tmp_path / "amb.txt"
    amb.write_text("v1  60.0 70.0\n")
    rows = ROWS + [("v1", "B", 61.0, 69.0, 0.99), ("v2", "B", 0.0, 5.0, 0.98)]
    out = tmp_path / "m.json"
    code, _, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        _csv(tmp_path, rows),
        "--ground-truth",
        gt_path,
        "--json-out",
        str(out),
        "--subset",
        "test",
        "--ambiguous",
        str(amb),
        "--exclude-videos",
        "v2",
    )
    assert code == 0
    res = json.loads(out.read_text())
    # v2 excluded (its A GT and B FP gone); the B FP in the Ambiguous segment is ignored:
    # A: TP, FP over 2 GT -> 1/2 at 0.5; B: TP -> 1
    assert res["map"]["0.5"] == pytest.approx((50 + 100) / 2)


def test_bad_inputs_give_one_clear_line(tmp_path, gt_path, capsys):
    code, _, err = _star(
        capsys,
        "evaluate",
        "--detections",
        _csv(tmp_path, [("v1", "A", 0, 1)], header="video_id,label,t_start_s,t_end_s"),
        "--ground-truth",
        gt_path,
    )
    assert code == 2 and "missing column(s) ['score']" in err
    code, _, err = _star(capsys, "evaluate", "--detections", _csv(tmp_path, [("v1", "A", "x", 1, 0.5)]), "--ground-truth", gt_path)
    assert code == 2 and "row 1" in err
    code, _, err = _star(capsys, "evaluate", "--detections", _csv(tmp_path, [("v1", "Z", 0, 1, 0.5)]), "--ground-truth", gt_path)
    assert code == 2 and "'Z'" in err
    code, _, err = _star(capsys, "evaluate", "--detections", str(tmp_path / "nope.parquet"), "--ground-truth", gt_path)
    assert code == 2 and "nope.parquet" in err
    assert len(err.strip().splitlines()) == 1


def test_real_thumos_ground_truth_perfect_detections(tmp_path, data_dir, capsys):
    gt = data_dir / "thumos14" / "activitynet_style" / "gt.json"
    test = [v for v in load_activitynet_gt(gt) if v.split == "test"]
    rows = [(v.video_id, i.label, i.t_start_s, i.t_end_s, 1.0) for v in test for i in v.instances]
    out = tmp_path / "m.json"
    amb = data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations" / "Ambiguous_test.txt"
    code, _, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        _csv(tmp_path, rows),
        "--ground-truth",
        str(gt),
        "--json-out",
        str(out),
        "--subset",
        "test",
        "--exclude-videos",
        "video_test_0000270,video_test_0001496",
        "--ambiguous",
        str(amb),
    )
    assert code == 0
    res = json.loads(out.read_text())
    assert res["avg_0.1_0.7"] == pytest.approx(100.0)


def test_tiou_prints_only_what_was_asked(tmp_path, gt_path, capsys):
    out_json = tmp_path / "m.json"
    code, out, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        _csv(tmp_path, ROWS),
        "--ground-truth",
        gt_path,
        "--subset",
        "test",
        "--tiou",
        "0.5",
        "--json-out",
        str(out_json),
    )
    assert code == 0
    head, row = [line for line in out.splitlines() if line.startswith(("tIoU", "mAP"))]
    assert head.split() == ["tIoU", "0.5"] and "avg" not in out
    assert row.split()[-1] == f"{(100 * 5 / 9 + 100) / 2:.2f}"
    assert json.loads(out_json.read_text()) == {"map": {"0.5": pytest.approx((100 * 5 / 9 + 100) / 2)}}
    # the first five thresholds: the 0.1:0.5 average, not the 0.1:0.7 one
    code, out, _ = _star(
        capsys,
        "evaluate",
        "--detections",
        _csv(tmp_path, ROWS),
        "--ground-truth",
        gt_path,
        "--subset",
        "test",
        "--tiou",
        "0.1,0.2,0.3,0.4,0.5",
    )
    assert "avg0.1:0.5" in out and "0.1:0.7" not in out
