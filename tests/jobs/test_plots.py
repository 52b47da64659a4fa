"""Timeline and loss-curve PNGs (jobs.plots): real files, real matplotlib (Agg)."""

from __future__ import annotations

import pytest

from jobs.plots import plot_loss_curves, plot_timeline
from star_core.data import Detection, Instance, VideoLabels

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gt() -> VideoLabels:
    return VideoLabels(
        "v1", "test", ("A", "B"), instances=(Instance("A", 1.0, 5.0), Instance("B", 10.0, 20.0)), ambiguous=((30.0, 32.0),), duration_s=40.0
    )


def test_timeline_writes_png(tmp_path):
    dets = [Detection("v1", "A", 1.5, 4.5, 0.9), Detection("v1", "B", 9.0, 18.0, 0.5), Detection("other", "A", 0.0, 1.0, 1.0)]
    out = plot_timeline("v1", dets, _gt(), ["A", "B", "C"], 40.0, tmp_path / "sub" / "v1.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000
    assert [p.name for p in out.parent.iterdir()] == ["v1.png"]  # no temp file left behind


def test_timeline_labels_the_strongest_detections_with_their_scores(tmp_path):
    dets = [Detection("v1", "A", 1.5, 14.5, 0.91), Detection("v1", "B", 9.0, 28.0, 0.47), Detection("v1", "B", 30.0, 30.5, 0.2)]
    labelled = plot_timeline("v1", dets, _gt(), ["A", "B"], 40.0, tmp_path / "scores.png").read_bytes()
    plain = plot_timeline("v1", dets, _gt(), ["A", "B"], 40.0, tmp_path / "plain.png", score_labels=0).read_bytes()
    assert labelled != plain  # the score text is drawn on the bars


def test_timeline_without_ground_truth_or_detections(tmp_path):
    assert plot_timeline("v1", [], None, ["A"], None, tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)


def test_timeline_rejects_unknown_label(tmp_path):
    with pytest.raises(ValueError, match="'Z' is not in the class list"):
        plot_timeline("v1", [Detection("v1", "Z", 0.0, 1.0, 0.5)], _gt(), ["A", "B"], 40.0, tmp_path / "x.png")


def test_loss_curves(tmp_path):
    history = [
        {"epoch": e, "rgb/total": 2.0 / e, "flow/total": 2.5 / e, "rgb/ram": 0.0, "flow/ram": 0.1, "test/map_0.1": 5.0} for e in (1, 2, 3)
    ]
    assert plot_loss_curves(history, tmp_path / "loss.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no '<stream>/<term>'"):
        plot_loss_curves([{"epoch": 1, "test/map_0.1": 1.0}], tmp_path / "none.png")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_png_mode_follows_the_umask(tmp_path, umask, mode):
    import os
    import stat

    old = os.umask(umask)
    try:
        out = plot_timeline("v1", [], _gt(), ["A", "B"], 40.0, tmp_path / "v1.png")
        curves = plot_loss_curves([{"epoch": 1, "rgb/total": 1.0}, {"epoch": 2, "rgb/total": 0.5}], tmp_path / "loss.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == mode and stat.S_IMODE(curves.stat().st_mode) == mode
