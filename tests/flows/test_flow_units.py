"""Pieces of the flow that run without Prefect's engine: parameters, summaries, the run-flow CLI parsing."""

from __future__ import annotations

import os

import pytest

from flows import report
from flows.params import resolve_lake_uri


def test_resolve_lake_uri_param_env_and_relative(monkeypatch, tmp_path):
    from flows import params

    monkeypatch.delenv("STAR_LAKE_URI", raising=False)
    monkeypatch.setattr(params, "worker_start_dirs", lambda: [str(tmp_path)])
    with pytest.raises(
        ValueError, match=f"STAR_LAKE_URI.*start the worker in the directory holding ./star-lake \\(looked in {tmp_path}\\)"
    ):
        resolve_lake_uri(None)
    (tmp_path / "star-lake").mkdir()  # the quickstart: `star demo` ran where the worker starts
    assert resolve_lake_uri(None) == str(tmp_path / "star-lake")
    monkeypatch.setenv("STAR_LAKE_URI", "s3://star/lake")
    assert resolve_lake_uri(None) == "s3://star/lake"
    assert resolve_lake_uri("s3://other/x") == "s3://other/x"
    monkeypatch.chdir(tmp_path)
    assert resolve_lake_uri("rel-lake") == os.path.join(str(tmp_path), "rel-lake")


def test_worker_start_dir_comes_from_the_inherited_pwd(monkeypatch, tmp_path):
    from flows.params import worker_start_dirs

    monkeypatch.setenv("PWD", str(tmp_path / "where-the-worker-started"))
    monkeypatch.chdir(tmp_path)  # a process worker runs the flow in a temporary directory
    dirs = worker_start_dirs()
    assert dirs[0] == str(tmp_path / "where-the-worker-started") and dirs[-1] == str(tmp_path)


def test_resolve_dataset_only_or_most_recent(tmp_path, caplog):
    from flows.params import resolve_dataset
    from star_core.data import VideoLabels
    from star_core.io.lake import Lake
    from star_core.io.datasets import save_dataset

    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ValueError, match="holds no dataset"):
        resolve_dataset(lake.uri, None)
    videos = [VideoLabels("v1", "train", ("a",), (1,), ())]
    save_dataset(lake, "older", ("a",), videos)
    assert resolve_dataset(lake.uri, None) == ("older", f"the only dataset in {lake.uri}")
    save_dataset(lake, "newer", ("a",), videos)
    name, why = resolve_dataset(lake.uri, None)
    assert name == "newer" and "most recent of 2 datasets" in why and "newer, older" in why
    save_dataset(lake, "older", ("a", "b"), videos)  # a new version makes "older" the most recent
    assert resolve_dataset(lake.uri, None)[0] == "older"
    assert resolve_dataset(lake.uri, "given") == ("given", "the dataset parameter")


def test_resources_and_flow_parameters_become_config_keys(tmp_path):
    from flows.tasks import JobSettings
    from star_core.config import ConfigError

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("resources:\n  workers: 3\n  actors: 2\nstorage:\n  lake_uri: s3://elsewhere/lake\n")
    settings = JobSettings(lake_uri="/the/lake", config_path=str(cfg_file), overrides=("train.lr=0.001",), values={"resources.workers": 2})
    cfg = settings.star_config(**{"train_run.run_name": "r"})
    assert (cfg.resources.workers, cfg.resources.actors, cfg.train.lr, cfg.train_run.run_name) == (2, 2, 0.001, "r")
    assert cfg.storage.lake_uri == "/the/lake"  # the flow's lake wins over the file's
    with pytest.raises(ConfigError, match="invalid workers=0"):
        JobSettings(lake_uri="x", values={"resources.workers": 0}).star_config()
    with pytest.raises(ConfigError, match="did you mean 'workers'"):
        JobSettings(lake_uri="x", values={"resources.wrokers": 2}).star_config()  # typo: unknown keys are rejected


def test_map_table_markdown():
    md = report.map_table_markdown({"0.1": 50.0, "0.3": 30.25, "0.5": 10.0}, 30.0, 20.5)
    head, rule, row = md.splitlines()
    assert head == "| mAP@0.1 | mAP@0.3 | mAP@0.5 | avg 0.1:0.5 | avg 0.1:0.7 |"
    assert row == "| 50.00 | 30.25 | 10.00 | 30.00 | 20.50 |"
    assert rule.count("|") == 6


def test_train_and_detect_markdown_carry_the_numbers():
    train = {
        "mode": "train",
        "dataset": "toy",
        "dataset_version": 2,
        "lake_uri": "s3://star/l",
        "feature_set": "fs",
        "videos": 8,
        "videos_train": 6,
        "videos_test": 2,
        "videos_with_features": 8,
        "extract": {"done": 0, "failed": 1, "failures": [{"input": "s3://v/bad.mp4", "reason": "DecodeError"}]},
        "model": {"name": "star", "version": "3", "alias": "champion", "alias_set": True},
        "map": {"0.1": 12.5},
        "avg_0.1_0.5": 12.5,
        "avg_0.1_0.7": 9.0,
    }
    md = report.train_markdown(train)
    assert "toy v2" in md and "`star` version 3" in md and "`@champion` moved to this version" in md
    assert "| 12.50 | 12.50 | 9.00 |" in md and "s3://v/bad.mp4" in md
    det = {
        "mode": "nightly-detect",
        "model_uri": "models:/star@champion",
        "model_name": "star",
        "model_version": "3",
        "detect": {
            "done": 4,
            "failed": 1,
            "skipped": 7,
            "detections": 19,
            "outputs": ["s3://star/l/detections/model=star-v3/date=2026-11-28"],
        },
    }
    md = report.detect_markdown(det)
    assert "4 videos processed, 1 failed, 7 already done" in md and "detections written: 19" in md and "date=2026-11-28" in md
    assert report.counts_rows(det) == [{"step": "detect", "done": 4, "failed": 1, "skipped": 7}]


def test_run_flow_param_parsing():
    from star_cli.cli import CommandError
    from star_cli.commands.run_flow import parse_params

    got = parse_params(["epochs=5", "lake_uri=s3://star/lake", "resources.workers=2", "resources.gpu=true", 'overrides=["train.lr=0.001"]'])
    assert got == {"epochs": 5, "lake_uri": "s3://star/lake", "resources": {"workers": 2, "gpu": True}, "overrides": ["train.lr=0.001"]}
    with pytest.raises(CommandError, match="KEY=VALUE"):
        parse_params(["epochs"])
    with pytest.raises(CommandError, match="first argument"):
        parse_params(["mode=train"])


def test_run_flow_rejects_unknown_parameter(capsys):
    from star_cli.cli import main

    assert main(["run-flow", "train", "--param", "epoch=3"]) == 2
    assert "unknown flow parameter(s) epoch" in capsys.readouterr().err


def test_job_logs_are_forwarded_to_the_flow_run():
    import logging

    from flows.star_flow import _forward_job_logs

    job_log = logging.getLogger("star")
    old_level, old_handlers = job_log.level, list(job_log.handlers)
    try:
        _forward_job_logs()
        _forward_job_logs()  # idempotent
        api_handlers = logging.getLogger("prefect.extra").handlers
        assert api_handlers, "Prefect's API log handler is configured on import"
        assert [h for h in job_log.handlers if h in api_handlers] == api_handlers
        assert job_log.getEffectiveLevel() == logging.INFO
    finally:
        job_log.setLevel(old_level)
        job_log.handlers[:] = old_handlers
