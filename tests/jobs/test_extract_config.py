"""The extract job's settings, command line and result (no Ray, no services)."""

from __future__ import annotations

import argparse

import pytest

from jobs.extract import ExtractRunResult, feature_set_of
from star_cli.commands import extract as command
from star_cli.options import load
from star_core.config import ConfigError, StarConfig, load_config, replace
from star_core.video.config import FeatureConfig


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="star extract")
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_bad_extract_settings_are_rejected_naming_them():
    with pytest.raises(ConfigError, match=r"invalid actor_queue=0, max_retries=-1"):
        load_config(None, ["extract.actor_queue=0", "extract.max_retries=-1"])


def test_command_line_maps_onto_the_config():
    args = _parse(
        [
            "s3://a/",
            "@l.txt",
            "--lake",
            "s3://b/lake",
            "--set",
            "features.crop_size=112",
            "--cpu",
            "--actors",
            "2",
            "--limit",
            "5",
            "--shard-videos",
            "4",
            "--ray",
            "--max-retries",
            "1",
            "--prepare-in-flight",
            "3",
            "--prepare-cpus",
            "2",
            "--fail-on-error",
        ]
    )
    cfg = load(args)
    assert args.inputs == ["s3://a/", "@l.txt"] and cfg.storage.lake_uri == "s3://b/lake"
    assert cfg.features.crop_size == 112 and cfg.resources.gpu is False and cfg.resources.actors == 2
    assert (cfg.extract.limit, cfg.extract.shard_videos, cfg.extract.ray, cfg.extract.max_retries) == (5, 4, True, 1)
    assert (cfg.extract.prepare_in_flight, cfg.extract.prepare_cpus, cfg.extract.fail_on_error) == (3, 2.0, True)
    assert load(_parse(["x"])).resources.gpu is None  # auto


def test_the_lake_comes_from_the_config_unless_a_flag_names_one(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("storage:\n  lake_uri: s3://configured/lake\n")
    assert load(_parse(["x", "--config", str(cfg_file)])).storage.lake_uri == "s3://configured/lake"
    assert (
        load(_parse(["x", "--config", str(cfg_file), "--lake", "./star-lake"])).storage.lake_uri == "./star-lake"
    )  # equal to the default, still wins


def test_feature_set_follows_the_extractor_rule():
    a = feature_set_of(FeatureConfig(flow="farneback"))
    from star_core.video.weights import RANDOM_DIGEST

    assert a == FeatureConfig(flow="farneback").feature_set(RANDOM_DIGEST)
    assert a != feature_set_of(FeatureConfig(flow="tvl1"))


def test_result_summary_is_plain():
    r = ExtractRunResult(run_id="r", feature_set="fs", manifest="m", done=2, n_segments=10, elapsed_s=4.0)
    s = r.summary()
    assert s["segments_per_s"] == 2.5 and s["done"] == 2 and s["failures"] == []


def test_missing_inputs_are_failed_inputs_of_the_run(tmp_path):
    """Only missing inputs: the run records them (manifest, failures) and never needs Ray."""
    from jobs.extract import extract
    from star_core.io import manifests
    from star_core.io.lake import Lake

    missing = [str(tmp_path / "gone.mp4"), str(tmp_path / "none" / "*.mp4")]
    result = extract(replace(StarConfig(), **{"storage.lake_uri": str(tmp_path / "lake")}), missing, run_id="r-missing")
    assert (result.done, result.failed, result.skipped) == (0, 2, 0)
    assert [f["input"] for f in result.failures] == missing and all(f["reason"].startswith("MissingInputError") for f in result.failures)
    rows = manifests.read_manifests(Lake(str(tmp_path / "lake")), "extract").to_pylist()
    assert sorted((r["input"], r["status"]) for r in rows) == sorted((m, "failed") for m in missing)


def test_interrupted_ray_run_names_every_unfinished_input(tmp_path, monkeypatch):
    """SIGINT while the Ray job runs: inputs not finished are 'skipped' (interrupted) in the manifest.

    Ray itself is not needed to show the driver's bookkeeping: ``_process`` finishes one video and
    the process then receives a real SIGINT."""
    import os
    import signal

    import jobs.extract as job
    import jobs.runtime as runtime
    from star_core.io import manifests
    from star_core.io.lake import Lake

    clips = []
    for i in range(3):
        clips.append(tmp_path / f"v{i}.mp4")
        clips[-1].write_bytes(b"x")

    def one_then_sigint(run, todo, progress):
        run.record(todo[0], "failed", "CorruptVideoError: test")
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runtime, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(job, "_process", one_then_sigint)
    lake = str(tmp_path / "lake")
    with pytest.raises(KeyboardInterrupt):
        job.extract(replace(StarConfig(), **{"storage.lake_uri": lake}), [str(c) for c in clips], run_id="r-int")
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in manifests.read_manifests(Lake(lake), "extract").to_pylist()}
    assert rows["v0.mp4"]["status"] == "failed"
    assert [rows[v]["status"] for v in ("v1.mp4", "v2.mp4")] == ["skipped", "skipped"] and "interrupted" in rows["v2.mp4"]["reason"]


def test_flow_option_selects_the_feature_set():
    cfg = load(_parse(["s3://a/", "--flow", "tvl1-torch", "--gpu"]))
    assert cfg.features.flow == "tvl1-torch" and cfg.resources.gpu is True
    assert "tvl1-torch" in feature_set_of(cfg.features) and feature_set_of(cfg.features) != feature_set_of(FeatureConfig())
    with pytest.raises(SystemExit):
        _parse(["s3://a/", "--flow", "raft"])
