"""The extract job's config, command line and result (no Ray, no services)."""

from __future__ import annotations

import pytest

from jobs.extract import ExtractJobConfig, ExtractRunResult, build_parser, config_from_args, feature_set_of
from star_core.config import load_config
from star_core.video.config import FeatureConfig


def test_inputs_become_a_tuple_and_bad_values_are_rejected():
    assert ExtractJobConfig(inputs="s3://a/").inputs == ("s3://a/",)
    assert ExtractJobConfig(inputs=["a.mp4", "b.mp4"]).inputs == ("a.mp4", "b.mp4")
    with pytest.raises(ValueError, match=r"invalid actor_queue=0, max_retries=-1"):
        ExtractJobConfig(inputs="x", actor_queue=0, max_retries=-1)


def test_a_star_config_supplies_features_and_endpoint():
    star = load_config(None, ["features.flow=farneback", "storage.s3_endpoint_url=http://minio:9000"])
    cfg = ExtractJobConfig(inputs="x", config=star)
    assert cfg.features.flow == "farneback" and cfg.s3_endpoint_url == "http://minio:9000"
    with pytest.raises(ValueError, match="either as `features` or inside `config`"):
        ExtractJobConfig(inputs="x", config=star, features=FeatureConfig(flow="tvl1", crop_size=112))


def test_command_line_maps_onto_the_config():
    args = build_parser().parse_args(["s3://a/", "@l.txt", "--lake", "s3://b/lake", "--set", "features.crop_size=112", "--cpu", "--num-actors", "2", "--limit", "5", "--shard-videos", "4"])
    cfg = config_from_args(args)
    assert cfg.inputs == ("s3://a/", "@l.txt") and cfg.lake_uri == "s3://b/lake"
    assert cfg.features.crop_size == 112 and cfg.use_gpu is False and cfg.num_actors == 2 and cfg.limit == 5 and cfg.shard_videos == 4
    assert config_from_args(build_parser().parse_args(["x"])).use_gpu is None  # auto


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
    result = extract(ExtractJobConfig(inputs=missing, lake_uri=str(tmp_path / "lake"), run_id="r-missing"))
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
        job.extract(ExtractJobConfig(inputs=[str(c) for c in clips], lake_uri=lake, run_id="r-int"))
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in manifests.read_manifests(Lake(lake), "extract").to_pylist()}
    assert rows["v0.mp4"]["status"] == "failed"
    assert [rows[v]["status"] for v in ("v1.mp4", "v2.mp4")] == ["skipped", "skipped"] and "interrupted" in rows["v2.mp4"]["reason"]


def test_flow_option_selects_the_feature_set():
    cfg = config_from_args(build_parser().parse_args(["s3://a/", "--flow", "tvl1-torch", "--gpu"]))
    assert cfg.features.flow == "tvl1-torch" and cfg.use_gpu is True
    assert "tvl1-torch" in feature_set_of(cfg.features) and feature_set_of(cfg.features) != feature_set_of(FeatureConfig())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["s3://a/", "--flow", "raft"])
