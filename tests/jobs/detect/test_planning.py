"""The detection plan (jobs.detect.planning): pure rules over the feature index and the manifests."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from jobs.detect.planning import plan_videos, prior_outcomes
from star_core.io import schemas

T0 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


def index(created: dict[str, dt.datetime]) -> pa.Table:
    ids = sorted(created)
    return pa.table(
        {
            "video_id": ids,
            "created_at": pa.array([created[v] for v in ids], pa.timestamp("us", tz="UTC")),
            "path": [f"/lake/features/fs/part-{v}.parquet" for v in ids],
        }
    )


def test_plan_splits_selection_into_todo_done_stale_and_missing():
    idx = index({"a": T0, "b": T0, "c": T0, "d": T0 + 2 * HOUR, "e": T0})
    failed_before = {"c": T0 + HOUR, "d": T0 + HOUR}  # c failed on the features it still has; d's were rewritten since
    plan = plan_videos(idx, ["a", "b", "c", "d", "zz"], done={"b"}, failed_before=failed_before)
    assert plan.todo_ids == ["a", "d"]
    assert plan.todo.column("path").to_pylist() == ["/lake/features/fs/part-a.parquet", "/lake/features/fs/part-d.parquet"]
    assert (plan.n_done, plan.n_stale_failures, plan.missing) == (1, 1, ("zz",))
    assert plan.selected == {"a", "b", "c", "d", "zz"}


def test_plan_without_selection_takes_the_whole_index_and_retry_failed_retries():
    idx = index({"a": T0, "c": T0})
    plan = plan_videos(idx, None, done=set(), failed_before={"c": T0 + HOUR}, retry_failed=True)
    assert plan.todo_ids == ["a", "c"]
    assert (plan.n_done, plan.n_stale_failures, plan.missing) == (0, 0, ())


def test_prior_outcomes_keeps_the_latest_attempt_under_the_prefix():
    part, other = "s3://lake/detections/model=star-v1/", "s3://lake/detections/model=star-v10/"

    def row(vid: str, status: str, output: str | None, at: dt.datetime) -> dict:
        return {"job": "detect", "run_id": "r", "input": vid, "status": status, "reason": None, "duration_s": None,
                "n_segments": None, "output": output, "finished_at": at}

    manifests = pa.Table.from_pylist(
        [
            row("flaky", "done", part + "date=x/", T0 + HOUR),  # listed first, but the latest attempt
            row("flaky", "failed", part + "date=x/", T0),
            row("broken", "done", part, T0),
            row("broken", "failed", part, T0 + HOUR),
            row("other", "done", other, T0),  # another model version
            row("nowhere", "skipped", None, T0),
        ],
        schema=schemas.MANIFEST,
    )
    done, failed = prior_outcomes(manifests, part)
    assert done == {"flaky", "broken"}  # done once stays done for the caller (processed_before drops it from failed)
    assert failed == {"broken": T0 + HOUR}
    assert prior_outcomes(schemas.MANIFEST.empty_table(), part) == (set(), {})
