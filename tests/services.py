"""Real services on loopback for the tests: moto S3, a Ray head, an MLflow server, a Prefect server.

Each is started once per test session (see conftest.py), lazily: a test run that needs none of
them starts none. On failure to start, the service's log is included in the error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except Exception:
            time.sleep(0.5)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise RuntimeError(f"service at {url} did not come up in {timeout_s:.0f} s\n--- log ---\n{tail}")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    url: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n_chars:] if self.log.exists() else ""


def start_process(name: str, cmd: list[str], workdir: Path, health_url: str, timeout_s: float, env: dict | None = None) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, **(env or {})}, start_new_session=True
    )
    svc = Service(name, proc, log, health_url)
    try:
        wait_http(health_url, timeout_s, proc, log)
    except Exception:
        svc.stop()
        raise
    return svc


def start_moto(workdir: Path) -> tuple[object, str]:
    """moto in server mode on loopback (threaded, in this process); returns (server, endpoint)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    global _MOTO
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    _MOTO = server
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


_MOTO = None  # the moto server now serving (restart_moto replaces it)


def restart_moto(down_s: float) -> None:
    """Stop the moto server, keep it down ``down_s`` seconds, start it again on the same port.

    Like an S3 service restart: stored buckets and objects survive (moto keeps them in this process's
    backends), connections in flight are cut and requests in the gap are refused."""
    global _MOTO
    from moto.server import ThreadedMotoServer

    host, port = _MOTO.get_host_and_port()
    _MOTO.stop()
    time.sleep(down_s)
    _MOTO = ThreadedMotoServer(ip_address=host, port=port)
    _MOTO.start()
    wait_http(f"http://{host}:{port}/moto-api/", 30)


def stop_moto() -> None:
    if _MOTO is not None:
        _MOTO.stop()


_RAY_HEAD: Service | None = None  # the head this process started (stop_ray stops only it)


def start_ray_head(workdir: Path, _attempt: int = 1) -> tuple[str, str]:
    """`ray start --head --block` on this machine (2 CPUs); returns (gcs address, dashboard URL).

    ``--block`` keeps the head in a child process that shuts its own cluster down on SIGTERM,
    so stopping it never touches other Ray clusters on the machine (``ray stop`` kills them all).
    The temp dir is short: Ray's AF_UNIX socket paths under it must stay below 108 bytes, which
    ``/tmp/pytest-of-<user>/pytest-NN/...`` exceeds once NN has two digits.
    """
    global _RAY_HEAD
    import tempfile

    from ray._private.services import get_node_ip_address

    # Ray 2.60 drivers rewrite a 127.0.0.1 address to the machine's node IP before connecting,
    # so a head pinned to --node-ip-address=127.0.0.1 is unreachable: use the node IP Ray picks.
    node_ip = get_node_ip_address()
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cmd = [
        str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--temp-dir={temp_dir}", f"--node-ip-address={node_ip}",
        # Fixed agent ports: with dynamic ones the raylet waits ~15 s for the agents' port files and
        # exits ("Timed out waiting for file .../metrics_agent") when a loaded machine is slower.
        f"--dashboard-agent-grpc-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
    ]
    dashboard = f"http://127.0.0.1:{dash}"
    # Generous start-up timeouts: on a loaded 2-core box the Python agents and workers can take
    # longer than Ray's defaults to register, and a raylet that gives up on its agents exits.
    env = {"RAY_agent_register_timeout_ms": "180000", "RAY_worker_register_timeout_seconds": "180"}
    _RAY_HEAD = start_process("ray-head", cmd, workdir, f"{dashboard}/api/version", 180, env)
    # The dashboard answers before the node has registered its raylet; under load the node can
    # still give up ("timed out during startup": a fixed 30 s in Ray 2.60) and exit. Wait for
    # `ray start` to report success; if it exited instead, start a fresh head (new ports, dir).
    deadline = time.time() + 180
    while "Ray runtime started" not in _RAY_HEAD.log_tail(100_000) and _RAY_HEAD.proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    if _RAY_HEAD.proc.poll() is not None:
        tail = _RAY_HEAD.log_tail(1500)
        try:  # the GCS/dashboard it had started live on in its session (process group)
            os.killpg(_RAY_HEAD.proc.pid, 9)
        except OSError:
            pass
        _RAY_HEAD = None
        if _attempt < 3:
            return start_ray_head(workdir, _attempt + 1)
        raise RuntimeError(f"ray start --head exited during start-up (3 attempts)\n--- log ---\n{tail}")
    return f"{node_ip}:{port}", dashboard


def stop_ray() -> None:
    """Stop the head started by :func:`start_ray_head` (its raylet, GCS and workers with it)."""
    global _RAY_HEAD
    if _RAY_HEAD is not None:
        _RAY_HEAD.stop()
        _RAY_HEAD = None


def start_mlflow(workdir: Path, s3_endpoint: str, bucket: str = "mlflow-artifacts") -> Service:
    port = free_port()
    cmd = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow-server.db'}", "--artifacts-destination", f"s3://{bucket}",
    ]
    env = {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    global _MLFLOW
    # 300 s: on a loaded shared 2-core box the server took > 120 s to answer /health (measured).
    _MLFLOW = start_process("mlflow", cmd, workdir, f"http://127.0.0.1:{port}/health", 300, env)
    _MLFLOW.restart_args = (cmd, workdir, env)  # type: ignore[attr-defined]
    return _MLFLOW


_MLFLOW: Service | None = None  # the MLflow server of this session (restart_mlflow swaps its process)


def restart_mlflow(down_s: float, timeout_s: float = 300) -> float:
    """Stop the MLflow server (SIGTERM to its process group: the CLI and its uvicorn), keep it down
    ``down_s`` seconds, start it again with the same command: same port, SQLite backend store and
    artifact root. Returns the seconds it was unreachable (down_s plus its start-up).

    The session fixture's Service now holds the new process (its teardown stops that one)."""
    cmd, workdir, env = _MLFLOW.restart_args  # type: ignore[union-attr]
    t0 = time.monotonic()
    try:
        os.killpg(_MLFLOW.proc.pid, 15)
        _MLFLOW.proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(_MLFLOW.proc.pid, 9)
    port = int(_MLFLOW.url.rsplit(":", 1)[1].split("/")[0])
    while time.monotonic() - t0 < 30:  # the uvicorn child may outlive the CLI by a moment
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                break
        time.sleep(0.2)
    time.sleep(down_s)
    with open(_MLFLOW.log, "ab") as fh:
        fh.write(b"\n--- restarted by tests.services.restart_mlflow ---\n")
        fh.flush()
        _MLFLOW.proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir, env={**os.environ, **env}, start_new_session=True
        )
    wait_http(_MLFLOW.url, timeout_s, _MLFLOW.proc, _MLFLOW.log)
    return time.monotonic() - t0


def start_prefect(workdir: Path) -> Service:
    port = free_port()
    home = workdir / "prefect-home"
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    prefect = shutil.which("prefect", path=str(BIN)) or "prefect"
    svc = start_process(
        "prefect",
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        workdir,
        f"http://127.0.0.1:{port}/api/health",
        300,
        env,
    )  # > 180 s seen under load
    svc.env = env  # type: ignore[attr-defined]
    return svc
