"""PNG figures shared by the jobs and the CLI: detection timelines and training loss curves.

`plot_timeline` draws one video like the paper's Fig. 5: one row per action class, the
ground-truth instances as a grey band above the detections, detections shaded by score.
`plot_loss_curves` draws each loss term of Eq. 15 per stream over the epochs. Both render
with matplotlib's Agg backend (no display needed) and write the PNG atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from star_core.data import Detection, Instance, VideoLabels
from star_core.io.atomic import atomic_local_path

# Distinct colours for class rows (tab10 then tab20 when there are many classes).
_GT_COLOR = "#4d4d4d"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # never needs a display; a no-op if Agg is already active
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path) -> Path:
    """Write the figure to ``out_png`` atomically (:mod:`star_core.io.atomic`)."""
    out = Path(out_png)
    with atomic_local_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return out


def _instances_of(ground_truth: VideoLabels | Sequence[Instance] | None) -> tuple[tuple[Instance, ...], tuple[tuple[float, float], ...]]:
    if ground_truth is None:
        return (), ()
    if isinstance(ground_truth, VideoLabels):
        return tuple(ground_truth.instances), tuple(ground_truth.ambiguous)
    return tuple(ground_truth), ()


def plot_timeline(
    video_id: str,
    detections: Sequence[Detection],
    ground_truth: VideoLabels | Sequence[Instance] | None,
    classes: Sequence[str],
    duration_s: float | None,
    out_png: str | Path,
    min_score: float = 0.0,
    score_labels: int = 8,
    max_per_class: int = 20,
) -> Path:
    """Timeline of one video's detections against its ground truth (paper Fig. 5 style).

    Args:
        video_id: the video drawn (detections of other videos are ignored).
        detections: detections (any videos; filtered to ``video_id`` and ``min_score``).
        ground_truth: the video's labels (instances and ambiguous spans) or a list of instances;
            None draws detections only.
        classes: the model's class list; rows follow this order and only classes present in the
            ground truth or the detections get a row.
        duration_s: video length for the x axis; None uses the latest end time drawn.
        out_png: where to write the PNG (parent directories are created).
        min_score: detections below this score are not drawn.
        score_labels: the strongest detections of each class labelled with their score.
        max_per_class: only the highest-scoring detections per class are drawn.

    Returns:
        The path written.

    Raises:
        ValueError: a detection or ground-truth label is not in ``classes``.
    """
    plt = _pyplot()
    dets = [d for d in detections if d.video_id == video_id and d.score >= min_score]
    instances, ambiguous = _instances_of(ground_truth)
    known = set(classes)
    for label in [d.label for d in dets] + [i.label for i in instances]:
        if label not in known:
            raise ValueError(f"plot_timeline: video {video_id!r}: label {label!r} is not in the class list")
    present = {d.label for d in dets} | {i.label for i in instances}
    rows = [c for c in classes if c in present]
    end_s = max([duration_s or 0.0] + [d.t_end_s for d in dets] + [i.t_end_s for i in instances] + [1.0])

    height = 1.0 + 0.55 * max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(10, height))
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    max_score = max([d.score for d in dets] + [1e-9])
    for row_idx, label in enumerate(rows):
        y = len(rows) - 1 - row_idx  # first class on top
        color = cmap(row_idx % cmap.N)
        # Ground truth: thin grey band in the upper part of the row.
        gt = [(i.t_start_s, i.t_end_s - i.t_start_s) for i in instances if i.label == label]
        if gt:
            ax.broken_barh(gt, (y + 0.55, 0.3), facecolors=_GT_COLOR)
        # Detections: lower part of the row, opacity proportional to the (relative) score.
        mine = sorted((d for d in dets if d.label == label), key=lambda d: -d.score)[:max_per_class]
        for d in reversed(mine):  # strongest drawn last (on top)
            alpha = 0.25 + 0.75 * (d.score / max_score)
            ax.broken_barh(
                [(d.t_start_s, max(d.t_end_s - d.t_start_s, 1e-3))], (y + 0.1, 0.4), facecolors=color, alpha=alpha, edgecolor=color
            )
        for d in mine[:score_labels]:  # the strongest detections carry their score, where the bar is wide enough
            if d.t_end_s - d.t_start_s >= 0.03 * end_s:
                ax.text((d.t_start_s + d.t_end_s) / 2, y + 0.3, f"{d.score:.2f}", ha="center", va="center", fontsize=7, color="black")
    for a, b in ambiguous:
        ax.axvspan(a, b, color="#bbbbbb", alpha=0.25, lw=0)
    ax.set_yticks([len(rows) - 1 - i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels(rows)
    ax.set_ylim(0, max(len(rows), 1))
    ax.set_xlim(0, end_s)
    ax.set_xlabel("time (s)")
    n_gt = len(instances)
    ax.set_title(
        f"{video_id}: ground truth (grey, top) vs detections (colour, bottom, score on the bar) | {n_gt} instances, {len(dets)} detections",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    try:
        return _save(fig, out_png)
    finally:
        plt.close(fig)


def plot_loss_curves(history: Sequence[Mapping[str, float]], out_png: str | Path, title: str = "training losses") -> Path:
    """One panel per loss term (Eq. 15), one line per stream, loss against epoch.

    Args:
        history: per-epoch metric dicts in epoch order, keys ``"<stream>/<term>"`` (e.g.
            ``"rgb/total"``, ``"flow/coverage"``); an ``"epoch"`` key gives the x value
            (else the position + 1). Other keys (mAP, timings) are ignored.
        out_png: where to write the PNG.
        title: figure title.

    Returns:
        The path written.

    Raises:
        ValueError: ``history`` holds no ``stream/term`` values.
    """
    plt = _pyplot()
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}  # term -> stream -> [(epoch, value)]
    for pos, row in enumerate(history):
        x = float(row.get("epoch", pos + 1))
        for key, value in row.items():
            if "/" not in key or value is None:
                continue
            stream, term = key.split("/", 1)
            if stream not in ("rgb", "flow"):
                continue
            series.setdefault(term, {}).setdefault(stream, []).append((x, float(value)))
    if not series:
        raise ValueError("plot_loss_curves: history has no '<stream>/<term>' loss values")
    order = ["total", "classification", "sparsity", "coverage", "ram"]
    terms = sorted(series, key=lambda t: (order.index(t) if t in order else len(order), t))
    cols = min(3, len(terms))
    n_rows = (len(terms) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 3.0 * n_rows), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for stream, points in sorted(series[term].items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", ms=3, label=stream)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("epoch")
        # Regularisers live on very different scales; log scale when all positive.
        if all(v > 0 for pts in series[term].values() for _, v in pts):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        return _save(fig, out_png)
    finally:
        plt.close(fig)
