"""A quiet console over Ray: star's own lines on the terminal, Ray's internals in files.

By default Ray streams every worker's and actor's stdout/stderr to the driver's terminal (Ray
Train's controller, placement-group cleaner, checkpoint and report lines, core_worker.cc notices).
Here, in the driver process:

- every streamed worker line goes to ``<log dir>/ray-workers.log``; only lines in star's log
  format from star's loggers (``... INFO star.train: epoch 3/20 | ...``, star's warnings)
  reach the terminal: re-emitted on the driver's logger of the same name (so they also reach
  Prefect's log view), without Ray's ``(Actor pid=...)`` prefix;
- the driver's Python loggers of Ray (``ray``, ``ray.data``, ``ray.train``) write to
  ``<log dir>/ray-driver.log`` instead of the terminal;
- Ray's C++ core worker in the driver logs only fatal errors to the terminal
  (``RAY_BACKEND_LOG_LEVEL=fatal``, unless already set); Ray's own session directory keeps the rest.

Verbose mode (``-v``: the ``star`` logger at DEBUG, or ``STAR_VERBOSE=1``) prints everything as Ray
would and still writes the files. Worker processes get star's log format through Ray's
``worker_process_setup_hook`` (:func:`setup_worker_logging`), which is what lets the driver tell
star's lines from Ray's.

The streamed-line hook is Ray's driver-side dispatcher (``ray._private.ray_logging``, the one
``log_to_driver`` installs); when a Ray release lacks it, the console falls back to Ray's default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

STAR_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_ENV = "STAR_VERBOSE"
WORKERS_LOG = "ray-workers.log"
DRIVER_LOG = "ray-driver.log"
RAY_DRIVER_LOGGERS = ("ray", "ray.data", "ray.train")
# A line of star's format from star's loggers.
_STAR_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) (?P<name>star(\.[\w.]+)?): (?P<msg>.*)$", re.S
)
_MARK = "_star_console"  # attribute on the handlers installed here (idempotence)


def verbose() -> bool:
    """``-v`` given (the ``star`` logger at DEBUG) or ``STAR_VERBOSE=1``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or logging.getLogger("star").isEnabledFor(logging.DEBUG)


def is_star_line(line: str) -> bool:
    """A worker line the terminal shows by default: star's log format, from star's loggers."""
    return bool(_STAR_LINE.match(line))


def setup_worker_logging() -> None:
    """Ray ``worker_process_setup_hook`` (and safe to call again): star's loggers print in star's format.

    The ``star`` logger gets its own stderr handler (INFO, or DEBUG in verbose mode) and stops
    propagating, so Ray Train's root-logger setup in its workers does not reformat or drop it.
    (star's code reports its warnings through these loggers; Python ``warnings`` from any library
    stay in Ray's files.)
    """
    star = logging.getLogger("star")
    if any(getattr(h, _MARK, False) for h in star.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(STAR_LOG_FORMAT))
    setattr(handler, _MARK, True)
    star.addHandler(handler)
    star.setLevel(logging.DEBUG if os.environ.get(VERBOSE_ENV, "") not in ("", "0") else logging.INFO)
    star.propagate = False


class _Router:
    """The driver-side state: where Ray's lines go (one per process; the log dir can change per job)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log_dir: Path | None = None
        self.workers_fh = None
        self.driver_handler: logging.Handler | None = None
        self.pending: list[logging.LogRecord] = []  # driver records before the directory is known
        self.ray_print = None  # Ray's own console printer (verbose mode)
        self.early_text: list[str] = []  # the driver's fd 2 during ray.init (see stderr_to_driver_log)

    def set_dir(self, log_dir: Path) -> None:
        with self.lock:
            if self.log_dir == log_dir:
                return
            log_dir.mkdir(parents=True, exist_ok=True)
            if self.workers_fh is not None:
                self.workers_fh.close()
            self.workers_fh = open(log_dir / WORKERS_LOG, "a", buffering=1, errors="replace")
            old = self.driver_handler
            self.driver_handler = logging.FileHandler(log_dir / DRIVER_LOG, delay=False)
            self.driver_handler.setFormatter(logging.Formatter(STAR_LOG_FORMAT))
            self.log_dir = log_dir
            for name in RAY_DRIVER_LOGGERS:
                lg = logging.getLogger(name)
                if old is not None and old in lg.handlers:
                    lg.removeHandler(old)
                lg.addHandler(self.driver_handler)
            if old is not None:
                old.close()
            for record in self.pending:
                self.driver_handler.handle(record)
            self.pending.clear()
            if self.early_text:
                with open(log_dir / DRIVER_LOG, "a") as fh:
                    fh.write("".join(self.early_text))
                self.early_text.clear()

    def handle_batch(self, data: dict[str, Any]) -> None:
        """Ray's streamed worker output (one batch: pid, actor/task name, lines, is_err)."""
        who = data.get("actor_name") or data.get("task_name") or "worker"
        prefix = f"({who} pid={data.get('pid')}, ip={data.get('ip')}) "
        lines = data.get("lines") or []
        with self.lock:
            if self.workers_fh is not None:
                self.workers_fh.write("".join(prefix + line + "\n" for line in lines))
        if self.ray_print is not None:  # verbose: Ray's own printing, prefixes and colours included
            self.ray_print(data)
            return
        for line in lines:
            m = _STAR_LINE.match(line)
            if m:  # re-emitted on the driver's logger of the same name: same console, and Prefect's log view
                logging.getLogger(m["name"]).log(logging.getLevelName(m["level"]), "%s", m["msg"])


class _Pending(logging.Handler):
    """Holds the driver's Ray records until the log directory is known (``ray.init`` logs first)."""

    def emit(self, record: logging.LogRecord) -> None:
        router = ROUTER
        if router.driver_handler is not None:
            router.driver_handler.handle(record)
        else:
            router.pending.append(record)


ROUTER = _Router()
_PENDING = _Pending()
setattr(_PENDING, _MARK, True)


def quiet_ray_driver_loggers(show: bool) -> None:
    """Before ``ray.init``: Ray's driver loggers write to the (coming) driver log file; off the
    terminal unless ``show``. Also quiets the driver's C++ core worker (fatal only) unless ``show``
    or ``RAY_BACKEND_LOG_LEVEL`` is set."""
    import ray  # noqa: F401  (configures the "ray" logger and its console handler)

    try:
        import ray.data  # noqa: F401  (configures "ray.data" with its own console handler)
    except ImportError:
        pass
    for name in RAY_DRIVER_LOGGERS:
        lg = logging.getLogger(name)
        if not show:
            for h in list(lg.handlers):
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    lg.removeHandler(h)
        if ROUTER.driver_handler is None and _PENDING not in lg.handlers:
            lg.addHandler(_PENDING)
    if not show:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")


@contextlib.contextmanager
def stderr_to_driver_log(show: bool):
    """Around ``ray.init``: the driver's file descriptor 2 goes to the driver log (unless ``show``).

    Ray's C++ core worker writes a start-up notice straight to fd 2 when ``RAY_BACKEND_LOG_LEVEL``
    is set (``logging.cc: Set ray log level ...``); Python's ``sys.stderr`` cannot catch it.
    """
    if show:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            if failed:  # Ray did not start: what it said belongs on the terminal
                sys.stderr.write(text)
            elif text.strip():
                ROUTER.early_text.append(text)


def route_worker_output(show: bool) -> bool:
    """After ``ray.init(log_to_driver=True)``: send streamed worker lines through the router.

    Returns False when this Ray has no driver-side dispatcher (Ray's default printing stays).
    """
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    if not all(hasattr(dispatcher, a) for a in ("add_handler", "remove_handler")):
        return False
    import functools

    ignore_prefix = (
        ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
        if hasattr(ray_worker, "_should_ignore_worker_log_prefix")
        else False
    )
    ROUTER.ray_print = functools.partial(ray_worker.print_to_stdstream, ignore_prefix=ignore_prefix) if show else None
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("star_console")
    dispatcher.add_handler("star_console", ROUTER.handle_batch)
    if not show and hasattr(ray_worker, "print_to_stdstream"):
        # The driver's error listener prints the raylet's messages (e.g. "A worker died ...") through
        # the same printer: into the file too; star's own error names the failure on the terminal.
        ray_worker.print_to_stdstream = lambda data, ignore_prefix=False: ROUTER.handle_batch(data)
    return True


def ray_session_logs_dir() -> str | None:
    """Ray's own log directory of this session (raylet, GCS, every worker's .out/.err), when local."""
    try:
        import ray

        node = ray._private.worker._global_node
        return node.get_logs_dir_path() if node is not None else None
    except Exception:
        return None
