"""tIoU and ActivityNet-style mAP against small hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from star_core.data import Detection, Instance, VideoFeatures, VideoLabels
from star_core.metrics import (
    MapResult,
    evaluate_detections,
    interpolated_ap,
    load_activitynet_gt,
    load_ambiguous,
    parse_ambiguous,
    tiou,
    tiou_matrix,
)


def _gt(video_id, *instances, ambiguous=()):
    labels = tuple(dict.fromkeys(i[0] for i in instances))
    return VideoLabels(video_id, "test", labels, instances=tuple(Instance(*i) for i in instances), ambiguous=tuple(ambiguous))


def test_tiou_hand_computed():
    assert tiou(0, 10, 5, 15) == pytest.approx(5 / 15)
    assert tiou(0, 10, 0, 10) == 1.0
    assert tiou(0, 10, 10, 20) == 0.0  # touching
    assert tiou(0, 10, 20, 30) == 0.0
    assert tiou(2, 4, 0, 10) == pytest.approx(0.2)
    assert tiou(3, 3, 0, 10) == 0.0  # zero-length detection inside a GT
    assert tiou(3, 3, 3, 3) == 0.0  # zero-length union is defined as 0
    m = tiou_matrix(np.array([[0.0, 10.0], [3.0, 3.0]]), np.array([[5.0, 15.0], [3.0, 3.0]]))
    np.testing.assert_allclose(m, [[5 / 15, 0.0], [0.0, 0.0]])


def test_interpolated_ap_hand_computed():
    # TP, FP, TP with 3 positives: precision 1, 1/2, 2/3; recall 1/3, 1/3, 2/3
    # envelope: 1 at r=1/3, 2/3 at r=2/3 -> AP = 1/3*1 + 1/3*2/3 = 5/9
    assert interpolated_ap(np.array([1, 0, 1]), np.array([0, 1, 0]), 3) == pytest.approx(5 / 9)
    assert interpolated_ap(np.array([]), np.array([]), 2) == 0.0
    assert math.isnan(interpolated_ap(np.array([1]), np.array([0]), 0))
    # FP first: precision 0, 1/2 at recall 0, 1/1 -> AP = 1 * 1/2
    assert interpolated_ap(np.array([0, 1]), np.array([1, 0]), 1) == pytest.approx(0.5)


def test_map_hand_computed_two_classes():
    gt = [_gt("v1", ("A", 0, 10), ("A", 20, 30), ("B", 40, 50)), _gt("v2", ("A", 0, 10))]
    dets = [
        Detection("v1", "A", 0, 10, 0.9),  # TP (tIoU 1)
        Detection("v1", "A", 1, 9, 0.8),  # duplicate of the matched GT: FP at every threshold
        Detection("v2", "A", 2, 12, 0.7),  # tIoU 8/12 = 0.667: TP up to 0.6, FP at 0.7
        Detection("v1", "B", 40, 45, 0.5),  # tIoU 0.5: TP up to 0.5
    ]
    r = evaluate_detections(dets, gt, ["A", "B"])
    # class A at 0.5: TP FP TP over 3 GT -> 5/9; at 0.7: TP FP FP -> 1/3
    assert r.per_class["A"]["0.5"] == pytest.approx(100 * 5 / 9)
    assert r.per_class["A"]["0.7"] == pytest.approx(100 / 3)
    assert r.per_class["B"]["0.5"] == pytest.approx(100.0)
    assert r.per_class["B"]["0.6"] == pytest.approx(0.0)
    assert r.map["0.5"] == pytest.approx((100 * 5 / 9 + 100) / 2)
    assert r.map["0.7"] == pytest.approx((100 / 3 + 0) / 2)
    assert list(r.map) == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    assert r.avg_0_1_0_5 == pytest.approx(np.mean([r.map[k] for k in ["0.1", "0.2", "0.3", "0.4", "0.5"]]))
    assert r.avg_0_1_0_7 == pytest.approx(np.mean(list(r.map.values())))
    js = r.to_json()
    assert set(js) == {"map", "avg_0.1_0.5", "avg_0.1_0.7"} and js["map"]["0.5"] == r.map["0.5"]
    assert "avg0.1:0.5" in r.table() and f"{r.map['0.5']:.2f}" in r.table()


def test_best_tiou_unmatched_gt_is_chosen():
    # one detection overlaps two GTs; it must take the better one, leaving the other for the next detection
    gt = [_gt("v", ("A", 0, 10), ("A", 8, 20))]
    dets = [Detection("v", "A", 7, 20, 0.9), Detection("v", "A", 0, 9, 0.8)]
    r = evaluate_detections(dets, gt, ["A"], tiou_thresholds=(0.5,))
    assert r.map["0.5"] == pytest.approx(100.0)


def test_ties_keep_input_order():
    gt = [_gt("v", ("A", 0, 10))]
    tp, fp = Detection("v", "A", 0, 10, 0.5), Detection("v", "A", 50, 60, 0.5)
    assert evaluate_detections([tp, fp], gt, ["A"], tiou_thresholds=(0.5,)).map["0.5"] == pytest.approx(100.0)
    assert evaluate_detections([fp, tp], gt, ["A"], tiou_thresholds=(0.5,)).map["0.5"] == pytest.approx(50.0)


def test_zero_length_detection_and_empty_inputs():
    gt = [_gt("v1", ("A", 0, 10)), _gt("v2", ("B", 0, 5))]
    r = evaluate_detections([Detection("v1", "A", 5, 5, 0.9)], gt, ["A", "B"])
    assert r.map["0.1"] == 0.0
    r = evaluate_detections([], gt, ["A", "B"])  # videos with no detections at all
    assert all(v == 0.0 for v in r.map.values())


def test_classes_without_ground_truth_are_not_averaged():
    gt = [_gt("v1", ("A", 0, 10))]
    dets = [Detection("v1", "A", 0, 10, 0.9), Detection("v1", "C", 0, 10, 0.95)]
    r = evaluate_detections(dets, gt, ["A", "B", "C"])
    assert r.map["0.5"] == pytest.approx(100.0)
    assert math.isnan(r.per_class["B"]["0.5"]) and math.isnan(r.per_class["C"]["0.5"])
    with pytest.raises(ValueError, match="no instances"):
        evaluate_detections(dets[:1], [_gt("v1")], ["A"])


def test_excluded_videos_and_unknown_videos():
    gt = [_gt("v1", ("A", 0, 10)), _gt("bad", ("A", 0, 10))]
    dets = [Detection("v1", "A", 0, 10, 0.9), Detection("bad", "A", 50, 60, 0.99), Detection("other", "A", 0, 1, 1.0)]
    r = evaluate_detections(dets, gt, ["A"], exclude_videos=["bad"])
    assert r.map["0.5"] == pytest.approx(100.0)
    assert r.unknown_video_detections == 1 and r.n_ground_truth == 1
    r = evaluate_detections(dets, gt, ["A"])
    # bad's GT unmatched, its FP ranks first: FP, TP over 2 GT -> 1/2 * 1/2
    assert r.map["0.5"] == pytest.approx(25.0)


def test_ambiguous_segments_drop_false_positives_only():
    gt = [_gt("v", ("A", 0, 10), ambiguous=[(30, 40)])]
    fp_amb = Detection("v", "A", 35, 45, 0.99)  # would be a FP, overlaps Ambiguous: ignored
    tp = Detection("v", "A", 0, 10, 0.5)
    assert evaluate_detections([fp_amb, tp], gt, ["A"], tiou_thresholds=(0.5,)).map["0.5"] == pytest.approx(100.0)
    assert evaluate_detections([fp_amb, tp], gt, ["A"], tiou_thresholds=(0.5,), ignore_ambiguous=False).map["0.5"] == pytest.approx(50.0)
    # a true positive that also touches an Ambiguous segment still counts
    gt2 = [_gt("v", ("A", 0, 10), ambiguous=[(9, 12)])]
    assert evaluate_detections([Detection("v", "A", 0, 10, 0.5)], gt2, ["A"]).map["0.5"] == pytest.approx(100.0)


def test_bad_labels_are_rejected():
    gt = [_gt("v", ("A", 0, 10))]
    with pytest.raises(ValueError, match="'Z' is not in the class list"):
        evaluate_detections([Detection("v", "Z", 0, 1, 0.5)], gt, ["A"])
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_detections([Detection("v", "A", 0, 1, float("nan"))], gt, ["A"])


def test_load_activitynet_gt_real_file(data_dir):
    videos = load_activitynet_gt(data_dir / "thumos14" / "activitynet_style" / "gt.json")
    assert len(videos) == 412
    by_id = {v.video_id: v for v in videos}
    v = by_id["video_test_0000896"]
    assert v.split == "test" and v.labels == ("HighJump",) and v.counts == (7,)
    assert v.instances[0] == Instance("HighJump", 18.6, 24.8)
    assert sum(len(v.instances) for v in videos if v.split == "val") == 3007
    # a perfect detector scores 100 at every threshold on the real ground truth
    test = [v for v in videos if v.split == "test"]
    classes = sorted({i.label for v in test for i in v.instances})
    dets = [Detection(v.video_id, i.label, i.t_start_s, i.t_end_s, 1.0) for v in test for i in v.instances]
    r = evaluate_detections(dets, test, classes)
    assert all(val == pytest.approx(100.0) for val in r.map.values())


def test_load_activitynet_gt_errors(tmp_path):
    p = tmp_path / "gt.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_activitynet_gt(p)
    p.write_text(json.dumps({"database": {"v": {"annotations": [{"label": "A"}]}}}))
    with pytest.raises(ValueError, match="'v' has a malformed annotation"):
        load_activitynet_gt(p)


def test_load_ambiguous_real_file(data_dir):
    amb = load_ambiguous(data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations" / "Ambiguous_test.txt")
    assert sum(len(v) for v in amb.values()) == 99 and len(amb) == 37
    assert all(s <= e for segs in amb.values() for s, e in segs)


def test_parse_ambiguous_groups_by_video_and_names_the_bad_line():
    amb = parse_ambiguous("v1  1.5 2.0\n\nv2 3 4\nv1 7 8.25\n", "Ambiguous_test.txt")
    assert amb == {"v1": [(1.5, 2.0), (7.0, 8.25)], "v2": [(3.0, 4.0)]}
    with pytest.raises(ValueError, match=r"Ambiguous_x.txt:2: expected 'video start end'"):
        parse_ambiguous("v1 1 2\nv2 3\n", "Ambiguous_x.txt")
    with pytest.raises(ValueError, match=r"Ambiguous_x.txt:1: start and end must be numbers"):
        parse_ambiguous("v1 one 2\n", "Ambiguous_x.txt")


def test_nms_and_evaluation_share_one_tiou():
    from star_core.localize import nms_1d

    # tIoU([0, 10], [5, 15]) = 1/3: suppressed above a 0.3 threshold, kept at 0.4
    assert tiou_matrix(np.array([[0.0, 10.0]]), np.array([[5.0, 15.0]]))[0, 0] == pytest.approx(1 / 3)
    assert nms_1d(np.array([0.0, 5.0]), np.array([10.0, 15.0]), np.array([0.9, 0.8]), 0.3) == [0]
    assert nms_1d(np.array([0.0, 5.0]), np.array([10.0, 15.0]), np.array([0.9, 0.8]), 0.4) == [0, 1]


def test_mapresult_json_roundtrip():
    r = MapResult(map={"0.1": 50.0, "0.5": 10.0, "0.7": 0.0})
    assert json.loads(json.dumps(r.to_json()))["avg_0.1_0.5"] == pytest.approx(30.0)


def test_evaluate_detector_batches_a_stream_and_scores_it():
    from star_core.metrics import evaluate_detector

    gt = [_gt(f"v{i}", ("Run", 1.0 + i, 3.0 + i)) for i in range(5)] + [_gt("excluded", ("Run", 0.0, 1.0))]

    class Oracle:
        """Detects each video's ground truth (and one false positive in ``v0``); records batch sizes."""

        def __init__(self) -> None:
            self.batches: list[int] = []

        def detect_batch(self, videos, cfg=None):
            self.batches.append(len(videos))
            by_id = {v.video_id: v for v in gt}
            out = [[Detection(v.video_id, i.label, i.t_start_s, i.t_end_s, 0.9) for i in by_id[v.video_id].instances] for v in videos]
            if videos[0].video_id == "v0":
                out[0].append(Detection("v0", "Run", 50.0, 60.0, 0.1))
            return out

    def stream():  # features are produced one at a time, as a lake reader yields them
        for v in gt:
            yield VideoFeatures(v.video_id, np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32))

    oracle = Oracle()
    ev = evaluate_detector(oracle, stream(), gt, ["Run"], exclude_videos=["excluded"], batch_videos=4)
    assert oracle.batches == [4, 2]
    assert ev.n_detections == 7 and set(ev.detections_by_video) == {f"v{i}" for i in range(5)} | {"excluded"}
    assert ev.result.map["0.5"] == pytest.approx(100.0)  # the low-scored false positive comes after every hit
    assert ev.result.n_ground_truth == 5 and ev.detect_s >= 0.0
