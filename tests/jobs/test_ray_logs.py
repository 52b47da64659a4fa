"""The quiet console's pieces without a cluster: which worker lines reach the terminal, the files."""

from __future__ import annotations

import logging
import subprocess
import sys

from jobs import ray_logs


def test_star_lines_are_told_from_ray_lines():
    assert ray_logs.is_star_line("2026-12-04 14:56:11,713 INFO star.train: epoch 1/9 | rgb/total 3.43")
    assert ray_logs.is_star_line("2026-12-04 14:56:11,713 WARNING star: something")
    for line in (
        "Checkpoint successfully created at: Checkpoint(filesystem=local, path=/l/checkpoint_epoch_00001)",
        "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable. Continuing to monitor.",
        "[2026-12-04 14:49:47,086 E 6437 6465] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher'",
        "2026-12-04 14:50:07,585\tINFO streaming_executor.py:215 -- Starting execution of Dataset",
        "2026-12-04 14:50:07,585 INFO starlette: not ours",
        "epoch 1/5 | rgb/total 3.2422",  # star's message in Ray's plain format: not told apart, so not shown
    ):
        assert not ray_logs.is_star_line(line), line


def test_router_writes_every_line_and_shows_star_lines_only(tmp_path, caplog):
    router = ray_logs._Router()
    router.pending.append(logging.LogRecord("ray", logging.INFO, __file__, 1, "Started a local Ray instance.", None, None))
    router.early_text.append("[2026-12-04 14:55:35,734 I 1 1] logging.cc:303: Set ray log level\n")
    router.set_dir(tmp_path / "logs")
    lines = [
        "2026-12-04 14:56:11,713 INFO star.train: epoch 1/9 | rgb/total 3.4302",
        "Reporting training result 1: TrainingReport(checkpoint=None)",
    ]
    with caplog.at_level(logging.INFO, logger="star"):
        router.handle_batch({"lines": lines, "pid": 42, "ip": "10.0.0.1", "actor_name": "RayTrainWorker", "is_err": True})
    shown = [(r.name, r.getMessage()) for r in caplog.records]
    assert shown == [("star.train", "epoch 1/9 | rgb/total 3.4302")]
    workers = (tmp_path / "logs" / ray_logs.WORKERS_LOG).read_text()
    assert workers.splitlines() == [f"(RayTrainWorker pid=42, ip=10.0.0.1) {line}" for line in lines]
    driver = (tmp_path / "logs" / ray_logs.DRIVER_LOG).read_text()
    assert "Started a local Ray instance." in driver and "logging.cc:303" in driver
    router.set_dir(tmp_path / "other")  # a later job's directory: new lines go there
    router.handle_batch({"lines": ["later"], "pid": 1, "is_err": False})
    assert (tmp_path / "other" / ray_logs.WORKERS_LOG).read_text() == "(worker pid=1, ip=None) later\n"
    assert "later" not in (tmp_path / "logs" / ray_logs.WORKERS_LOG).read_text()


def test_worker_setup_prints_star_lines_in_star_format():
    code = (
        "import logging, warnings\n"
        "from jobs.ray_logs import setup_worker_logging\n"
        "logging.basicConfig(format='%(message)s')  # what Ray Train does to the root logger: plain messages\n"
        "setup_worker_logging(); setup_worker_logging()\n"
        "logging.getLogger('star.train').info('epoch 2/5')\n"
        "logging.getLogger('star.train').debug('hidden')\n"
        "logging.getLogger('ray.train').warning('not ours')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stderr.splitlines()
    assert out.returncode == 0, out.stderr
    assert len([x for x in lines if x.endswith("INFO star.train: epoch 2/5")]) == 1, lines  # one handler, star's format
    assert not any("hidden" in x for x in lines), lines
    assert "not ours" in lines and not any(ray_logs.is_star_line(x) and "not ours" in x for x in lines)
