"""What a user wants to see after a run: a markdown summary and a counts table (Prefect artifacts).

Pure functions over the flow's summary dict (plain JSON values), so they are tested without
Prefect; :func:`publish` turns them into artifacts of the current flow run.
"""

from __future__ import annotations

from typing import Any, Mapping

TIOU_KEYS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def map_table_markdown(map_by_tiou: Mapping[str, float], avg_0_1_0_5: float | None, avg_0_1_0_7: float | None) -> str:
    """One-row markdown table: mAP (%) at each tIoU and both averages (the paper's Table 2 layout)."""
    keys = [k for k in TIOU_KEYS if k in map_by_tiou] or sorted(map_by_tiou)
    head = "| " + " | ".join(f"mAP@{k}" for k in keys) + " | avg 0.1:0.5 | avg 0.1:0.7 |"
    rule = "|" + "---:|" * (len(keys) + 2)
    row = "| " + " | ".join(_fmt(float(map_by_tiou[k])) for k in keys) + f" | {_fmt(avg_0_1_0_5)} | {_fmt(avg_0_1_0_7)} |"
    return "\n".join([head, rule, row])


def counts_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{step, done, failed, skipped}`` for the table artifact (one per job step that ran)."""
    rows = []
    for step in ("extract", "detect"):
        part = summary.get(step)
        if part:
            rows.append({"step": step, "done": part.get("done", 0), "failed": part.get("failed", 0), "skipped": part.get("skipped", 0)})
    return rows


def _failures_markdown(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for step in ("extract", "detect"):
        part = summary.get(step) or {}
        for item in (part.get("failures") or [])[:20]:
            lines.append(f"- {step}: `{item.get('input')}`: {item.get('reason')}")
    return ["", "### Failures (first 20 per step)", *lines] if lines else []


def train_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown for a ``star/train`` run: data, features, the mAP table and the registered model."""
    ext = summary.get("extract") or {}
    model = summary.get("model") or {}
    lines = [
        f"## star/train: {summary.get('dataset')} v{_fmt(summary.get('dataset_version'))}",
        "",
        f"- lake: `{summary.get('lake_uri')}`",
        *(
            [
                f"- labels imported from `{li.get('source')}`: version {li.get('version')} "
                f"({'new' if li.get('created') else 'unchanged, no new version'})"
            ]
            if (li := summary.get("labels_import"))
            else []
        ),
        f"- feature set: `{summary.get('feature_set')}`",
        f"- videos in the dataset: {_fmt(summary.get('videos'))} (train {_fmt(summary.get('videos_train'))}, test "
        f"{_fmt(summary.get('videos_test'))})",
        f"- features extracted by this run: {ext.get('done', 0)} (failed {ext.get('failed', 0)}, already present "
        f"{summary.get('videos_with_features', '-')})",
        f"- model: `{model.get('name')}` version {_fmt(model.get('version'))}"
        + (
            f", alias `@{model.get('alias')}` {'moved to this version' if model.get('alias_set') else 'kept on the previous holder'}"
            if model.get("alias")
            else ""
        ),
        f"- MLflow run: `{_fmt(summary.get('mlflow_run_id'))}`; epochs {_fmt(summary.get('epochs'))}; train time "
        f"{_fmt(summary.get('train_s'))} s",
    ]
    if summary.get("map"):
        lines += ["", "### Test mAP (%)", "", map_table_markdown(summary["map"], summary.get("avg_0.1_0.5"), summary.get("avg_0.1_0.7"))]
    return "\n".join(lines + _failures_markdown(summary))


def detect_markdown(summary: Mapping[str, Any]) -> str:
    """Markdown for a ``star/nightly-detect`` run: videos, failures, detections and where they went."""
    ext = summary.get("extract") or {}
    det = summary.get("detect") or {}
    lines = [
        f"## star/nightly-detect: {summary.get('model_uri')}",
        "",
        f"- lake: `{summary.get('lake_uri')}`",
        f"- model: `{summary.get('model_name')}` version {_fmt(summary.get('model_version'))}",
        f"- new videos: {_fmt(summary.get('videos_uri'))}: extracted {ext.get('done', 0)}, failed {ext.get('failed', 0)}, already had "
        f"features {ext.get('skipped', 0)}",
        f"- detection: {det.get('done', 0)} videos processed, {det.get('failed', 0)} failed, {det.get('skipped', 0)} already done for this "
        "model version",
        f"- detections written: {det.get('detections', 0)}",
    ]
    outputs = det.get("outputs") or []
    if outputs:
        lines += ["", "### Written", *[f"- `{o}`" for o in outputs[:20]]]
    return "\n".join(lines + _failures_markdown(summary))


def publish(summary: Mapping[str, Any]) -> None:
    """Attach the summary of the current flow run as a markdown and a table artifact."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    mode = summary.get("mode", "train")
    markdown = train_markdown(summary) if mode == "train" else detect_markdown(summary)
    create_markdown_artifact(key=f"star-{mode}-summary", markdown=markdown, description=f"star {mode} run summary")
    rows = counts_rows(summary)
    if rows:
        create_table_artifact(key=f"star-{mode}-counts", table=rows, description=f"star {mode}: videos per step")
