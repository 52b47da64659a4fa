"""``star evaluate --detections FILE --ground-truth FILE [--json OUT]``: detection mAP@tIoU.

Detections: CSV or Parquet (a file, or a directory of Parquet files such as a lake detections
folder) with columns video_id, label, t_start_s, t_end_s, score (extra columns are ignored).
Ground truth: ActivityNet-style JSON (e.g. ``data/thumos14/activitynet_style/gt.json``).
THUMOS'14 protocol: ``--subset test --exclude-videos video_test_0000270,video_test_0001496
--ambiguous data/thumos14/wtalc_Thumos14reduced-Annotations/Ambiguous_test.txt``.
Prints the mAP table and writes ``{"map": {"0.1": ...}, "avg_0.1_0.5": ..., "avg_0.1_0.7": ...}`` (percent).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
from pathlib import Path

from star_cli.cli import CommandError

log = logging.getLogger("star.evaluate")
COLUMNS = ("video_id", "label", "t_start_s", "t_end_s", "score")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detections", required=True, help="CSV or Parquet file (or a directory of Parquet files), local path or URI")
    parser.add_argument("--ground-truth", required=True, help="ActivityNet-style ground truth JSON")
    parser.add_argument("--json-out", metavar="FILE", help="write the result JSON to FILE")
    parser.add_argument(
        "--subset", help="evaluate only ground-truth videos of this subset (train/val/test; 'validation'/'testing' accepted)"
    )
    parser.add_argument(
        "--exclude-videos", default="", help="comma-separated video ids (or a text file, one per line) left out of the evaluation"
    )
    parser.add_argument(
        "--ambiguous", help="THUMOS'14 Ambiguous file (video start end): false positives overlapping these segments are ignored"
    )
    parser.add_argument("--tiou", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7", help="comma-separated tIoU thresholds; default %(default)s")
    parser.add_argument("--per-class", action="store_true", help="also print AP per class")


def _read_bytes(uri: str) -> bytes:
    from star_core.io.fs import resolve

    fs, path = resolve(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such file")
    with fs.open(path, "rb") as f:
        return f.read()


def _rows_from_csv(uri: str) -> list[dict]:
    text = _read_bytes(uri).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise CommandError(f"detections {uri}: missing column(s) {missing}; need {list(COLUMNS)}")
    return list(reader)


def _rows_from_parquet(uri: str) -> list[dict]:
    import pyarrow.dataset as pads

    from star_core.io.fs import resolve, to_arrow_fs

    fs, path = resolve(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such file or directory")
    ds = pads.dataset(path, filesystem=to_arrow_fs(fs), format="parquet", partitioning="hive")
    missing = [c for c in COLUMNS if c not in ds.schema.names]
    if missing:
        raise CommandError(f"detections {uri}: missing column(s) {missing}; need {list(COLUMNS)}")
    return ds.to_table(columns=list(COLUMNS)).to_pylist()


def read_detections(uri: str):
    """Detections from a CSV or Parquet file/directory, with row-numbered errors for bad values."""
    from star_core.data import Detection

    rows = _rows_from_csv(uri) if uri.lower().endswith((".csv", ".csv.gz")) else _rows_from_parquet(uri)
    out = []
    for n, row in enumerate(rows, 1):
        try:
            det = Detection(str(row["video_id"]), str(row["label"]), float(row["t_start_s"]), float(row["t_end_s"]), float(row["score"]))
        except (TypeError, ValueError):
            raise CommandError(f"detections {uri}, row {n}: times and score must be numbers, got {row}") from None
        if not all(math.isfinite(v) for v in (det.t_start_s, det.t_end_s, det.score)):
            raise CommandError(f"detections {uri}, row {n}: non-finite time or score ({row})")
        if det.t_end_s < det.t_start_s:
            raise CommandError(f"detections {uri}, row {n}: t_end_s {det.t_end_s} < t_start_s {det.t_start_s}")
        out.append(det)
    return out


def _excluded(value: str) -> list[str]:
    if not value:
        return []
    path = Path(value)
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [v.strip() for v in value.split(",") if v.strip()]


def run(args: argparse.Namespace) -> int:
    from star_core.data import split_of_name
    from star_core.metrics import evaluate_detections, load_activitynet_gt, load_ambiguous

    gt = load_activitynet_gt(args.ground_truth)
    if args.subset:
        split = split_of_name(args.subset) or args.subset.lower()
        gt = [v for v in gt if v.split == split]
        if not gt:
            raise CommandError(f"ground truth {args.ground_truth}: no videos in subset {args.subset!r}")
    if args.ambiguous:
        amb = load_ambiguous(args.ambiguous)
        gt = [dataclasses.replace(v, ambiguous=tuple(v.ambiguous) + tuple(amb.get(v.video_id, ()))) for v in gt]
    try:
        thresholds = tuple(float(t) for t in args.tiou.split(","))
    except ValueError:
        raise CommandError(f"--tiou must be comma-separated numbers, got {args.tiou!r}") from None
    detections = read_detections(args.detections)
    classes = sorted({i.label for v in gt for i in v.instances})
    unknown_labels = sorted({d.label for d in detections} - set(classes))
    if unknown_labels:
        raise CommandError(f"detections {args.detections}: labels not in the ground truth's classes: {unknown_labels[:10]}")
    result = evaluate_detections(detections, gt, classes, tiou_thresholds=thresholds, exclude_videos=_excluded(args.exclude_videos))
    print(f"{result.n_detections} detections, {result.n_ground_truth} ground-truth instances, {len(classes)} classes")
    if result.unknown_video_detections:
        print(f"note: {result.unknown_video_detections} detections of videos absent from the ground truth were ignored")
    averages = _covered_averages(result)
    print(_table(result.map, averages))
    if args.per_class:
        for c, aps in result.per_class.items():
            print(f"  {c:<24} " + " ".join(f"{v:6.2f}" for v in aps.values()))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(
            json.dumps({"map": dict(result.map), **{f"avg_{k.replace(':', '_')}": v for k, v in averages.items()}}, indent=2) + "\n"
        )
        tmp.replace(out)
        log.info("wrote %s", out)
    return 0


# Average columns, each shown only when every threshold it averages was evaluated (so
# `--tiou 0.5` prints the 0.5 column alone, not a "0.1:0.5 average" of one value).
AVERAGES = {"0.1:0.5": ("0.1", "0.2", "0.3", "0.4", "0.5"), "0.1:0.7": ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")}


def _covered_averages(result) -> dict[str, float]:
    return {name: sum(result.map[k] for k in keys) / len(keys) for name, keys in AVERAGES.items() if all(k in result.map for k in keys)}


def _table(maps: dict[str, float], averages: dict[str, float]) -> str:
    head = "tIoU      " + " ".join(f"{k:>6}" for k in maps) + "".join(f"  avg{k:>7}" for k in averages)
    row = "mAP (%)   " + " ".join(f"{v:6.2f}" for v in maps.values()) + "".join(f"  {v:10.2f}" for v in averages.values())
    return f"{head}\n{row}"
