"""Which videos a detection run processes, skips or retries.

Incremental: a video is processed only if this model version has neither detections for it
(any date) nor a ``done`` manifest entry pointing into its partition (a video where the model
found no action has no detection rows but is done all the same). A video whose latest attempt
failed is retried only when its features were rewritten after the failure (or when asked to):
the same features would fail the same way.

:func:`plan_videos` and :func:`prior_outcomes` are pure functions over the feature index and
the manifest table; the other functions read the lake to feed them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.detect.inputs import DetectInputs
from star_core.io import detections as detio
from star_core.io import datasets, feature_store, manifests
from star_core.io.lake import Lake

JOB = "detect"


@dataclass(frozen=True)
class DetectPlan:
    """The input selection split by what happens to each video."""

    selected: frozenset[str]  # every video of the selection
    missing: tuple[str, ...]  # selected videos without features in the feature set (sorted)
    n_done: int  # selected videos this model version has already processed
    n_stale_failures: int  # selected videos that failed before on the features they still have
    todo: pa.Table  # rows of the feature index (video_id, path, ...) to detect on, sorted by video id

    @property
    def todo_ids(self) -> list[str]:
        return self.todo.column("video_id").to_pylist()


def plan_videos(
    index: pa.Table,
    selection: list[str] | None,
    done: set[str],
    failed_before: dict[str, dt.datetime],
    retry_failed: bool = False,
) -> DetectPlan:
    """Split the selection into videos to process, already done, failed before, and without features.

    Args:
        index: the feature index (``feature_store.feature_index``): ``video_id``, ``path``, ``created_at``, ...
        selection: video ids of the input selection; None: every video of the index.
        done: videos this model version has processed (:func:`processed_before`).
        failed_before: videos whose latest attempt failed -> when it failed.
        retry_failed: retry failed videos even when their features did not change since.
    """
    ids = index.column("video_id").to_pylist()
    have = set(ids)
    selected = have if selection is None else set(selection)
    created = dict(zip(ids, index.column("created_at").to_pylist()))
    stale = set() if retry_failed else {vid for vid, at in failed_before.items() if vid in created and created[vid] <= at}
    todo_ids = sorted((selected & have) - done - stale)
    todo = index.filter(pc.is_in(index.column("video_id"), pa.array(todo_ids, pa.string())))
    return DetectPlan(
        selected=frozenset(selected),
        missing=tuple(sorted(selected - have)),
        n_done=len(selected & have & done),
        n_stale_failures=len(selected & stale),
        todo=todo,
    )


def prior_outcomes(manifests: pa.Table, partition_prefix: str) -> tuple[set[str], dict[str, dt.datetime]]:
    """Videos done, and videos whose latest attempt failed (-> when), among manifest rows pointing under ``partition_prefix``."""
    done: set[str] = set()
    failed: dict[str, dt.datetime] = {}
    if not manifests.num_rows:
        return done, failed
    mine = manifests.filter(pc.starts_with(pc.fill_null(manifests.column("output"), ""), partition_prefix))
    mine = mine.sort_by([("finished_at", "ascending")])
    for vid, status, at in zip(mine.column("input").to_pylist(), mine.column("status").to_pylist(), mine.column("finished_at").to_pylist()):
        if status == "done":
            done.add(vid)
            failed.pop(vid, None)
        elif status == "failed":
            failed[vid] = at
    return done, failed


def processed_before(lake: Lake, model_name: str, model_version: str) -> tuple[set[str], dict[str, dt.datetime]]:
    """What this model version has already seen.

    Returns:
        ``(done, failed)``: ``done`` holds videos with detections (any date, any run) or a
        ``done`` manifest entry in the model's partitions (a video where the model found no
        action has no rows but is done all the same); ``failed`` maps videos whose latest
        attempt failed to the time of that failure.
    """
    done = detio.detected_video_ids(lake, model_name, model_version)
    prefix = lake.uri_of(lake.detections_dir(model_name, model_version)) + "/"
    done_in_manifests, failed = prior_outcomes(manifests.read_manifests(lake, JOB), prefix)
    done |= done_in_manifests
    return done, {vid: at for vid, at in failed.items() if vid not in done}


def choose_feature_set(lake: Lake, requested: str | None) -> str:
    """The feature set to read: the requested one, or the lake's only one."""
    found = feature_store.list_feature_sets(lake)
    if requested:
        if requested not in found:
            raise ValueError(f"lake {lake.uri}: no feature set {requested!r} (found: {', '.join(found) or 'none'})")
        return requested
    if len(found) != 1:
        what = "no feature sets" if not found else f"several feature sets ({', '.join(found)})"
        raise ValueError(f"lake {lake.uri}: {what}; name one with --feature-set")
    return found[0]


def select_videos(lake: Lake, inputs: DetectInputs) -> tuple[list[str] | None, dict[str, Any]]:
    """Video ids of the input selection (None: the whole feature set), and the ground truth by video."""
    if inputs.dataset:
        ds = datasets.load_dataset(lake, inputs.dataset, inputs.dataset_version)
        videos = [v for v in ds.videos if inputs.split is None or v.split == inputs.split]
        if not videos:
            raise ValueError(
                f"dataset {inputs.dataset!r} v{ds.version} has no videos{f' in split {inputs.split!r}' if inputs.split else ''}"
            )
        return [v.video_id for v in videos], {v.video_id: v for v in videos}
    if inputs.videos:
        from star_core.io.inputs import list_inputs, video_id_from_uri

        return [video_id_from_uri(u) for u in list_inputs(inputs.videos)], {}
    return None, {}


def selection_text(inputs: DetectInputs) -> str:
    """The input selection in one line (an MLflow param)."""
    if inputs.dataset:
        version = f" version={inputs.dataset_version}" if inputs.dataset_version else ""
        return f"dataset={inputs.dataset}" + version + (f" split={inputs.split}" if inputs.split else "")
    if inputs.videos:
        return f"videos={inputs.videos}"
    return "all features"
