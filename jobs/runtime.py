"""Shared runtime helpers for jobs: attaching to Ray, run ids, and progress with rate and ETA."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("star")


def ensure_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_dir: str | os.PathLike | None = None,
) -> None:
    """Attach to Ray once per process, with a quiet console (see :mod:`jobs.ray_logs`).

    ``address`` (or ``RAY_ADDRESS``) names a running cluster (``ray://``, ``host:port`` or
    ``auto``); with neither, a local Ray is started in-process (``address="local"``), so a
    laptop needs nothing running; ``num_cpus`` and ``object_store_memory`` (bytes) size that
    local Ray only. Token auth is off for the embedded local cluster unless
    ``RAY_AUTH_MODE`` says otherwise.

    Ray's driver and worker log lines go to files in ``log_dir`` (default: Ray's session log
    directory; a later call with another ``log_dir`` switches to it), and the terminal shows
    star's own lines only, unless verbose (``-v`` or ``STAR_VERBOSE=1``).
    """
    import ray

    from jobs import ray_logs

    if ray.is_initialized():
        if log_dir is not None:
            set_ray_log_dir(log_dir)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    show = ray_logs.verbose()
    backend_level_ours = "RAY_BACKEND_LOG_LEVEL" not in os.environ and not show
    ray_logs.quiet_ray_driver_loggers(show)
    env_vars = {ray_logs.VERBOSE_ENV: "1"} if show else {}
    if backend_level_ours:  # only the driver's core worker is meant to be quiet; workers log as usual
        env_vars["RAY_BACKEND_LOG_LEVEL"] = "info"
    runtime_env = {"worker_process_setup_hook": "jobs.ray_logs.setup_worker_logging", **({"env_vars": env_vars} if env_vars else {})}
    target = address or os.environ.get("RAY_ADDRESS")
    with ray_logs.stderr_to_driver_log(show):
        if target:
            ray.init(address=target, log_to_driver=True, runtime_env=runtime_env)
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                address="local", num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False, log_to_driver=True,
                runtime_env=runtime_env,
            )
    ray_logs.route_worker_output(show)
    set_ray_log_dir(log_dir)
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")
    except Exception:  # Ray Data not installed in a minimal image
        pass


def set_ray_log_dir(log_dir: str | os.PathLike | None = None) -> Path:
    """Send Ray's driver and worker log lines to ``log_dir`` from now on (None: Ray's session
    log directory, else a temporary directory); logs where they go and returns the directory."""
    import tempfile

    from jobs import ray_logs

    session = ray_logs.ray_session_logs_dir()
    target = Path(log_dir) if log_dir is not None else Path(session or Path(tempfile.gettempdir()) / "star-logs" / new_run_id("ray"))
    target = target.resolve()
    if ray_logs.ROUTER.log_dir != target:
        ray_logs.ROUTER.set_dir(target)
        where = f"Ray logs: {target / ray_logs.DRIVER_LOG} (driver), {target / ray_logs.WORKERS_LOG} (workers)"
        log.info("%s%s", where, f"; Ray's own: {session}" if session and Path(session).resolve() != target else "")
    return target


def ray_log_dir() -> Path | None:
    """Where Ray's lines of this process currently go (None before :func:`ensure_ray`)."""
    from jobs import ray_logs

    return ray_logs.ROUTER.log_dir


def new_run_id(prefix: str) -> str:
    """Sortable, unique run id: ``<prefix>-YYYYmmddTHHMMSS-<hex>``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class Progress:
    """Periodic progress lines with counts, rate and ETA (every ``every_s`` seconds and at the end).

    Works the same in a terminal, in `ray job logs` and in Prefect's log view (plain lines, no
    carriage returns). ``unit`` names what ``done`` counts; ``extra`` counters (e.g. segments)
    get their own rate.
    """

    total: int
    what: str = "videos"
    every_s: float = 5.0
    logger: logging.Logger = field(default=log)
    done: int = 0
    failed: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def update(self, done: int = 0, failed: int = 0, **extra: float) -> None:
        self.done += done
        self.failed += failed
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + v
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done + self.failed >= self.total:
            self._last = now
            self.logger.info(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        finished = self.done + self.failed
        rate = finished / elapsed
        remaining = max(self.total - finished, 0)
        eta = remaining / rate if rate > 0 else float("nan")
        parts = [f"{self.what}: {self.done} done, {self.failed} failed, {remaining} remaining of {self.total}", f"{rate:.2f} {self.what}/s"]
        parts += [f"{v / elapsed:.1f} {k}/s" for k, v in self.extra.items()]
        parts.append(f"elapsed {elapsed:.0f} s, ETA {eta:.0f} s" if remaining else f"elapsed {elapsed:.0f} s")
        return " | ".join(parts)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0
