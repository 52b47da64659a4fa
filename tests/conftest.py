"""Session fixtures: real services on loopback, started once and only when a test asks for them.

- ``s3``: moto's S3 server (threaded, loopback); AWS_* variables point every client at it.
- ``ray_address``: a `ray start --head` cluster (2 CPUs); RAY_ADDRESS is exported.
- ``mlflow_server``: `mlflow server` with SQLite backend and artifacts on the moto S3 server.
- ``prefect_server``: `prefect server start` with its own PREFECT_HOME.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from tests import services

# Quiet, deterministic, offline defaults for every test (set before any service starts).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.pop("MLFLOW_TRACKING_URI", None)


def _is_pytest_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("_pytest")  # pytest adds and removes its own around each phase


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """Each test leaves the root logger's handlers and level as it found them.

    Prefect configures logging on its first import in a process: with only pytest's handlers on the
    root logger it puts its console handler there, writing to the ``sys.stderr`` of that moment. In
    a test (``star run-flow`` under ``capsys``) that stream is closed after the test, and every later
    warning in the session would print ``--- Logging error ---`` and a traceback to stderr.
    """
    root = logging.getLogger()
    before, level = [h for h in root.handlers if not _is_pytest_handler(h)], root.level
    yield
    for handler in [h for h in root.handlers if not _is_pytest_handler(h) and h not in before]:
        root.removeHandler(handler)
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3(services_dir):
    """Endpoint URL of a moto S3 server with buckets ``star`` and ``mlflow-artifacts``."""
    server, endpoint = services.start_moto(services_dir)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("star", "mlflow-artifacts"):
        client.create_bucket(Bucket=bucket)
    yield endpoint
    services.stop_moto()  # the server now serving (a chaos test may have restarted it)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_lake_uri(s3, request) -> str:
    """A fresh, empty lake prefix on the moto S3 server."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return f"s3://star/{safe}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def ray_address(services_dir, s3):
    """GCS address of a local 2-CPU Ray cluster started with `ray start --head`.

    Started after ``s3``: like a real cluster's pods, its workers get the object store's endpoint
    and keys from their own environment (drivers forward endpoints only: jobs/worker_env.py)."""
    address, dashboard = services.start_ray_head(services_dir)
    old = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    os.environ["STAR_TEST_RAY_DASHBOARD"] = dashboard
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    services.stop_ray()
    if old is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = old


@pytest.fixture(scope="session")
def mlflow_server(services_dir, s3):
    """Tracking URI of an MLflow server (SQLite backend, artifacts on moto S3)."""
    svc = services.start_mlflow(services_dir / "mlflow", s3)
    uri = f"http://127.0.0.1:{svc.url.rsplit(':', 1)[1].split('/')[0]}"
    yield uri
    svc.stop()


@pytest.fixture(scope="session")
def prefect_server(services_dir):
    """The Prefect server Service (``.env`` holds PREFECT_API_URL and PREFECT_HOME for clients)."""
    svc = services.start_prefect(services_dir / "prefect")
    yield svc
    svc.stop()


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Reference data committed in the repo (data/: THUMOS'14 annotations, DeepMind's sample clip, KubeRay CRDs)."""
    return REPO / "data"
