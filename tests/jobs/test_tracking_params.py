"""MLflow params record what the run actually used (jobs.tracking.log_config), on the embedded SQLite store."""

from __future__ import annotations

import json

from jobs import tracking
from star_core.config import StarConfig
from star_core.io.lake import Lake


def test_storage_lake_uri_param_is_the_lake_the_job_used(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake = Lake(str(tmp_path / "elsewhere"))  # not the config's default ./star-lake
    uri = tracking.tracking_uri(lake)
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, "params", tracking.artifact_location(lake, uri)), "p")
    cfg = StarConfig()
    assert cfg.storage.lake_uri != lake.uri
    tracking.log_config(uri, run_id, cfg, extra={"job.lake_uri": lake.uri, "job.dataset": "d"})
    params = tracking.client(uri).get_run(run_id).data.params
    assert params["storage.lake_uri"] == lake.uri == params["job.lake_uri"]
    config_json = tracking.client(uri).download_artifacts(run_id, "config.json", str(tmp_path))
    assert json.loads(open(config_json).read())["config"]["storage"]["lake_uri"] == lake.uri
