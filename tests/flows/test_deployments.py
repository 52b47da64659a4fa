"""The flagship integration test: Prefect server + process worker + moto S3 + MLflow server + Ray.

What a user does, with real components on loopback:
1. ``prefect work-pool create star-local --type process``; ``prefect --no-prompt deploy --all``;
2. a process worker polls the pool (started from another directory: code comes from the package);
3. ``prefect deployment run star/train --watch`` on tiny features on ``s3://`` -> Completed, the
   model is registered in the MLflow server with its alias, the run's artifact has the mAP table;
4. ``prefect deployment run star/nightly-detect --watch`` -> detections Parquet on ``s3://`` for
   every video; one new video's features are added; a second nightly run processes only that one.
On failure the server, worker and flow-run logs are printed. Everything is torn down at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests import services
from tests.star_core.synthetic import make_videos

# Minutes on an idle 2-core box; the timeout only guards against a hang on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(services.BIN / "prefect")
DATASET = "toy"
# Tiny model and data so training takes seconds on 2 CPUs.
OVERRIDES = ["model.hidden_dim=32", "model.attn_dim=16", "model.label_embed_dim=8", "train.batch_size=4", "train.sample_segments=0"]
EPOCHS = 3


def _write_lake(lake_uri: str) -> tuple[list, list]:
    """Features + a train/test dataset of synthetic videos in the lake; returns (classes, pairs) of a held-back video."""
    from star_core.io import datasets, feature_store
    from star_core.io.lake import Lake

    classes, pairs = make_videos(n_videos=11, n_classes=3, feat_dim=16, n_segments=(30, 40), seed=3)
    lake = Lake(lake_uri)
    stored, held = pairs[:10], pairs[10:]
    labels = []
    for i, (feats, lab) in enumerate(stored):
        lab.split = "test" if i >= 7 else "train"
        labels.append(lab)
    feature_store.write_features(lake, "synth16", [f for f, _ in stored])
    datasets.save_dataset(lake, DATASET, classes, labels, source={"generator": "tests.star_core.synthetic"})
    return classes, held


class Stack:
    """The CLI environment of a user pointed at the test services, plus the worker and its log."""

    def __init__(self, prefect_server, mlflow_uri: str, workdir: Path) -> None:
        self.server = prefect_server
        self.workdir = workdir
        self.env = {
            **os.environ,
            **prefect_server.env,
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick scheduled runs up quickly
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        self.worker: subprocess.Popen | None = None
        self.worker_log = workdir / "worker.log"
        self.flow_run_ids: list[str] = []

    def cli(self, *args: str, timeout_s: float = 120, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([PREFECT, "--no-prompt", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        if check and out.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} exited {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
        return out

    def start_worker(self) -> None:
        # From a directory outside the checkout: the worker imports the flow from the installed package.
        fh = open(self.worker_log, "wb")
        self.worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "star-local", "--name", "test-worker"],
            cwd=self.workdir, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()

    def run_deployment(self, name: str, params: dict, timeout_s: float) -> str:
        """``prefect deployment run NAME --watch`` with ``--param k=<json>``; returns the flow run id."""
        args = ["deployment", "run", name, "--watch", "--watch-timeout", str(int(timeout_s))]
        for k, v in params.items():
            args += ["--param", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        out = self.cli(*args, timeout_s=timeout_s + 60, check=False)
        m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
        if m:
            self.flow_run_ids.append(m.group(1))
        if out.returncode != 0:
            raise AssertionError(f"{name} run did not complete (exit {out.returncode})\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}")
        assert m, out.stdout
        return m.group(1)

    def flow_run(self, flow_run_id: str):
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.server.env["PREFECT_API_URL"]}):
            with get_client(sync_client=True) as client:
                return client.read_flow_run(flow_run_id)

    def artifacts(self, flow_run_id: str) -> dict[str, object]:
        """The run's artifacts by key: table rows (list of dicts) or markdown (str)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.server.env["PREFECT_API_URL"]}):
            with get_client(sync_client=True) as client:
                found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        out: dict[str, object] = {}
        for a in found:
            data = a.data
            if a.type == "table" and isinstance(data, str):
                data = json.loads(data)
            out[a.key] = data
        return out

    def log_lines(self, flow_run_id: str) -> list[str]:
        """Messages the flow run logged to the server (Prefect's and the jobs' ``star`` loggers)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        from prefect.client.schemas.sorting import LogSort
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.server.env["PREFECT_API_URL"]}):
            with get_client(sync_client=True) as client:
                logs = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, sort=LogSort.TIMESTAMP_DESC
                )
        return [f"{entry.name}: {entry.message}" for entry in logs]

    def diagnostics(self) -> str:
        parts = [f"--- prefect server log ---\n{self.server.log_tail(4000)}"]
        if self.worker_log.exists():
            parts.append(f"--- worker log ---\n{self.worker_log.read_text(errors='replace')[-12000:]}")
        for fr in self.flow_run_ids:
            out = self.cli("flow-run", "logs", fr, check=False)
            parts.append(f"--- flow run {fr} logs ---\n{out.stdout[-8000:]}")
        return "\n".join(parts)


def _detected_ids(lake_uri: str, model_name: str, version: str) -> dict[str, int]:
    """Detection rows per video in the model version's partitions on S3 (read back from Parquet)."""
    from star_core.io import detections
    from star_core.io.lake import Lake

    lake = Lake(lake_uri)
    files = detections.model_files(lake, model_name, version)
    table = detections.read_detections(lake, files)
    counts: dict[str, int] = {}
    for vid in table.column("video_id").to_pylist():
        counts[vid] = counts.get(vid, 0) + 1
    return counts


def test_train_and_nightly_deployments(prefect_server, s3, mlflow_server, ray_address, s3_lake_uri, tmp_path):
    t0 = time.monotonic()
    classes, held = _write_lake(s3_lake_uri)
    model_name = f"star-flow-{uuid.uuid4().hex[:6]}"  # the MLflow server is shared by the session
    stack = Stack(prefect_server, mlflow_server, tmp_path)
    try:
        stack.cli("work-pool", "create", "star-local", "--type", "process", "--overwrite")
        out = stack.cli("deploy", "--all", timeout_s=180)
        assert "star/train" in out.stdout and "star/nightly-detect" in out.stdout, out.stdout
        stack.start_worker()
        t_setup = time.monotonic()

        # --- star/train -------------------------------------------------------------------------
        common = {"lake_uri": s3_lake_uri, "model_name": model_name, "feature_set": "synth16", "overrides": OVERRIDES}
        train_id = stack.run_deployment(
            "star/train", {**common, "dataset": DATASET, "epochs": EPOCHS, "resources": {"workers": 1, "actors": 1}}, timeout_s=600
        )
        t_train = time.monotonic()
        assert stack.flow_run(train_id).state.type.value == "COMPLETED"
        arts = stack.artifacts(train_id)
        summary_md = arts["star-train-summary"]
        assert f"`{model_name}` version 1" in summary_md and "`@champion` moved to this version" in summary_md, summary_md
        assert "| mAP@0.1 |" in summary_md, summary_md  # the evaluation's mAP table
        assert "features extracted by this run: 0" in summary_md  # the lake already had them

        from mlflow import MlflowClient

        mv = MlflowClient(tracking_uri=mlflow_server).get_model_version_by_alias(model_name, "champion")
        assert mv.version == "1"

        # --- star/nightly-detect, twice ---------------------------------------------------------
        night1 = stack.run_deployment("star/nightly-detect", common, timeout_s=600)
        counts1 = {r["step"]: r for r in stack.artifacts(night1)["star-nightly-detect-counts"]}
        assert counts1["detect"]["done"] == 10 and counts1["detect"]["failed"] == 0, counts1
        # The job's own progress and summary lines reach the flow run's logs (UI, `prefect flow-run logs`).
        assert any(line.startswith("star.detect: detection run ") for line in stack.log_lines(night1)), stack.log_lines(night1)[-20:]
        detected = _detected_ids(s3_lake_uri, model_name, "1")
        assert set(detected) <= {f"video_{i:03d}" for i in range(10)}

        # One new video arrives (its features), then the next night runs.
        from star_core.io import feature_store, manifests
        from star_core.io.lake import Lake

        feature_store.write_features(Lake(s3_lake_uri), "synth16", [held[0][0]])
        night2 = stack.run_deployment("star/nightly-detect", common, timeout_s=600)
        t_end = time.monotonic()
        counts2 = {r["step"]: r for r in stack.artifacts(night2)["star-nightly-detect-counts"]}
        assert counts2["detect"]["done"] == 1 and counts2["detect"]["skipped"] == 10, counts2
        detected2 = _detected_ids(s3_lake_uri, model_name, "1")
        # Earlier rows untouched (no duplicates), the new video's rows added if the model found actions.
        assert {k: v for k, v in detected2.items() if k != held[0][0].video_id} == detected

        manifest_rows = manifests.read_manifests(Lake(s3_lake_uri), "detect")
        done = [r["input"] for r in manifest_rows.to_pylist() if r["status"] == "done"]
        assert sorted(done) == sorted([f"video_{i:03d}" for i in range(10)] + [held[0][0].video_id])  # each video done exactly once
        print(
            f"timings: setup {t_setup - t0:.1f} s, train run {t_train - t_setup:.1f} s, two nightly runs {t_end - t_train:.1f} s, total "
            f"{t_end - t0:.1f} s"
        )
    except BaseException:
        print(stack.diagnostics(), file=sys.stderr)
        raise
    finally:
        stack.stop_worker()


def test_bare_deployment_runs_after_the_quickstart(prefect_server, ray_address, tmp_path):
    """``star demo`` in a directory, then the README's Prefect steps from it: the bare commands
    ``prefect deployment run star/train`` and ``star/nightly-detect`` (no parameters, no STAR_LAKE_URI,
    no MLflow server) train and detect on ``./star-lake`` of the worker's directory."""
    from star_core.io import datasets, feature_store
    from star_core.io.lake import Lake

    quickstart = tmp_path / "quickstart"
    lake = Lake(str(quickstart / "star-lake"))  # what `star demo` leaves behind (tiny stand-in)
    classes, pairs = make_videos(n_videos=6, n_classes=2, feat_dim=16, n_segments=(20, 30), seed=5)
    for i, (_, lab) in enumerate(pairs):
        lab.split = "test" if i >= 4 else "train"
    feature_store.write_features(lake, "demo16", [f for f, _ in pairs])
    datasets.save_dataset(lake, "demo", classes, [lab for _, lab in pairs], source={"feature_set": "demo16"})
    # The worker is started from the quickstart directory by a shell (PWD), with the user's plain environment.
    stack = Stack(prefect_server, "", tmp_path)
    stack.workdir, stack.worker_log = quickstart, tmp_path / "bare-worker.log"
    stack.env = {k: v for k, v in stack.env.items() if not k.startswith("MLFLOW_TRACKING") and k != "STAR_LAKE_URI"}
    stack.env |= {"PWD": str(quickstart)}
    try:
        stack.cli("work-pool", "create", "star-local", "--type", "process", "--overwrite")
        stack.cli("deploy", "--all", timeout_s=180)
        stack.start_worker()
        train_id = stack.run_deployment("star/train", {}, timeout_s=900)
        logs = stack.log_lines(train_id)
        assert any(f"star train on lake {lake.uri} (no lake_uri parameter: ./star-lake where the worker started)" in x for x in logs), logs[
            -30:
        ]
        assert any(f"training on dataset 'demo' (the only dataset in {lake.uri})" in x for x in logs), logs[-30:]
        from jobs import tracking

        uri = f"sqlite:///{quickstart / 'star-lake' / 'mlflow.db'}"
        assert str(tracking.client(uri).get_model_version_by_alias("star", "champion").version) == "1"
        night = stack.run_deployment("star/nightly-detect", {}, timeout_s=600)
        counts = {r["step"]: r for r in stack.artifacts(night)["star-nightly-detect-counts"]}
        assert counts["detect"]["done"] == 6 and counts["detect"]["failed"] == 0, counts
    except BaseException:
        print(stack.diagnostics(), file=sys.stderr)
        raise
    finally:
        stack.stop_worker()
