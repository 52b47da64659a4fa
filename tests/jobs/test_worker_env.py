"""Credentials never travel through Ray (jobs.worker_env; policy in docs/operations.md, "Credentials").

Quick: what is forwarded. Slow: `star train` in a fresh process that starts its own local Ray
(workers inherit the driver's environment), on a moto S3 lake, tracked by the MLflow server, with
recognisable secret values: training works, and the secrets appear nowhere under Ray's temp dir,
in the lake, in the MLflow run, or in the command's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from jobs import worker_env
from tests.jobs.test_train_job import TINY_MODEL, make_tiny_dataset

REPO = Path(__file__).resolve().parents[2]


def test_only_endpoints_and_region_are_forwarded():
    environ = {
        "AWS_ENDPOINT_URL": "http://s3.local:9000", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "",
        "AWS_ACCESS_KEY_ID": "AKIA-canary", "AWS_SECRET_ACCESS_KEY": "canary", "AWS_SESSION_TOKEN": "canary",
        "MLFLOW_S3_ENDPOINT_URL": "http://s3.local:9000", "MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "canary",
        "MLFLOW_TRACKING_TOKEN": "canary", "RAY_AUTH_TOKEN": "canary", "HOME": "/root",
    }
    assert worker_env.forwarded_env(environ) == {
        "AWS_ENDPOINT_URL": "http://s3.local:9000", "AWS_DEFAULT_REGION": "eu-west-1", "MLFLOW_S3_ENDPOINT_URL": "http://s3.local:9000",
    }
    assert not [k for k in worker_env.FORWARDED_ENV if worker_env.is_credential(k)]
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "RAY_AUTH_TOKEN",
    ):
        assert worker_env.is_credential(name), name


def _files_containing(root: Path, needles: tuple[str, ...]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:  # sockets, files removed while walking
                continue
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


@pytest.mark.slow
def test_train_on_local_ray_and_s3_leaks_no_secret(s3_lake_uri, mlflow_server, tmp_path):
    from jobs import tracking
    from star_core.io.lake import Lake

    make_tiny_dataset(s3_lake_uri, n_train=6, n_test=3)
    secret, password = f"aws-secret-canary-{uuid.uuid4().hex}", f"mlflow-password-canary-{uuid.uuid4().hex}"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the driver starts its own local Ray
    env.update(
        AWS_SECRET_ACCESS_KEY=secret,  # moto accepts any key: the workers can only have it by inheritance
        MLFLOW_TRACKING_URI=mlflow_server,
        MLFLOW_TRACKING_USERNAME="star",
        MLFLOW_TRACKING_PASSWORD=password,
        RAY_TMPDIR=str(ray_tmp),
        PYTHONPATH=str(REPO),
    )
    overrides = [f"{k}={v}" for k, v in TINY_MODEL.items() if k != "train.epochs"]
    cmd = [
        sys.executable,
        "-m",
        "star_cli",
        "train",
        "--lake",
        s3_lake_uri,
        "--dataset",
        "tiny",
        "--workers",
        "1",
        "--epochs",
        "2",
        "--model-name",
        "",
        "--experiment",
        "secret-test",
        "--run-name",
        "canary",
        "--max-failures",
        "0",
        *overrides,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert "epochs: 2" in proc.stdout  # the workers read the S3 lake with the inherited credentials
        needles = (secret, password)
        assert not [n for n in needles if n in output]
        assert list(ray_tmp.rglob("runtime_env_agent.log")), "Ray's session logs are where the test looks"
        assert _files_containing(ray_tmp, needles) == []
        lake = Lake(s3_lake_uri)
        lake.fs.invalidate_cache()
        files = lake.fs.find(lake.root)
        assert any("checkpoints" in f for f in files)
        assert [f for f in files if any(n.encode() in lake.fs.cat_file(f) for n in needles)] == []
        run_id = next(line.split("MLflow run ")[1].split()[0] for line in proc.stdout.splitlines() if "MLflow run " in line)
        run = tracking.client(mlflow_server).get_run(run_id)
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert run.data.params and not [n for n in needles if n in recorded]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
