"""The training job end to end with real components.

Slow tests: an MLflow server (SQLite backend, artifacts on the moto S3 server), the `ray start`
cluster (2 CPUs), 2 Ray Train workers, a lake on moto S3 holding tiny synthetic two-stream
features whose classes carry a distinct signal inside their ground-truth intervals.
Quick tests: tracking URI resolution, sharding, the CLI's config building, and the embedded
default (SQLite inside a local lake) with a model logged, registered and loaded back in a fresh
Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from star_core.config import StarConfig, replace
from star_core.data import Instance, VideoFeatures, VideoLabels

TINY_MODEL = {
    "model.hidden_dim": 32,
    "model.attn_dim": 16,
    "model.label_embed_dim": 8,
    "train.batch_size": 4,
    "train.lr": 1e-2,
    "train.epochs": 6,
}
STEP_S = 16 / 25.0  # one segment: 16 frames at 25 fps


def tiny_config(**changes) -> StarConfig:
    return replace(StarConfig(), **{**TINY_MODEL, **changes})


def make_tiny_dataset(lake_uri: str, n_train: int = 12, n_test: int = 6, n_classes: int = 3, dim: int = 16, seed: int = 0):
    """Write features (2 shards) and a dataset ``tiny`` (train/test splits) to the lake.

    Each class has a random prototype per stream, added to the noise inside its instances; a
    video has one or two classes, one instance each, with counts.
    """
    from star_core.io.lake import Lake
    from star_core.io.datasets import save_dataset
    from star_core.io.feature_store import write_features

    rng = np.random.default_rng(seed)
    classes = tuple(f"action{c}" for c in range(n_classes))
    protos = {s: rng.normal(size=(n_classes, dim)) for s in ("rgb", "flow")}
    feats, labels = [], []
    for v in range(n_train + n_test):
        n = int(rng.integers(30, 50))
        present = [v % n_classes] + ([(v + 1) % n_classes] if v % 2 else [])
        x = {s: rng.normal(scale=0.5, size=(n, dim)).astype(np.float32) for s in protos}
        instances = []
        for k, c in enumerate(present):
            start, length = (3, 25)[k], 8
            for s in protos:
                x[s][start : start + length] += 2.0 * protos[s][c]
            instances.append(Instance(classes[c], start * STEP_S, (start + length) * STEP_S))
        vid = f"vid{v:03d}"
        feats.append(VideoFeatures(vid, x["rgb"], x["flow"], 25.0, 16, n * STEP_S))
        split = "train" if v < n_train else "test"
        labels.append(
            VideoLabels(vid, split, tuple(classes[c] for c in present), tuple(1 for _ in present), tuple(instances), duration_s=n * STEP_S)
        )
    lake = Lake(lake_uri)
    half = len(feats) // 2
    write_features(lake, "tinyfs", feats[:half])
    write_features(lake, "tinyfs", feats[half:])
    save_dataset(lake, "tiny", classes, labels, source={"feature_set": "tinyfs"})
    return lake, classes, feats, labels


def _latest_checkpoint_detector(lake, run_name: str):
    """The in-memory model as trained: the detector of the run's last Ray checkpoint on the lake."""
    import io

    import torch

    from star_core.detector import StarDetector

    ckpts = sorted(
        p
        for p in lake.fs.ls(lake.checkpoints_dir(run_name), detail=False)
        if p.rstrip("/").rsplit("/", 1)[-1].startswith("checkpoint_epoch_")
    )
    state = torch.load(io.BytesIO(lake.fs.cat_file(f"{ckpts[-1]}/trainer.pt")), map_location="cpu", weights_only=True)
    return StarDetector.from_checkpoint(state["detector"]).eval(), ckpts


# ----- quick tests --------------------------------------------------------------------------------
def test_tracking_uri_precedence(tmp_path, monkeypatch):
    from jobs.tracking import artifact_location, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake_dir = tmp_path / "lake"
    uri = tracking_uri(str(lake_dir))
    assert uri == f"sqlite:///{lake_dir}/mlflow.db" and lake_dir.is_dir()
    assert artifact_location(str(lake_dir), uri) == (lake_dir / "mlflow-artifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(str(lake_dir)) == "http://mlflow.example:5000"
    assert artifact_location(str(lake_dir), "http://mlflow.example:5000") is None
    assert tracking_uri(str(lake_dir), configured="http://other:5000") == "http://other:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ValueError, match="set MLFLOW_TRACKING_URI"):
        tracking_uri("s3://bucket/lake")


def test_shards_are_equal_and_cover_all_videos():
    from jobs.train_worker import shard_ids

    ids = [f"v{i}" for i in range(7)]
    shards = [shard_ids(ids, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # padded: DDP needs equal step counts
    assert set().union(*shards) == set(ids)
    assert shard_ids(ids, 0, 1) == ids


def test_checkpoint_cadence_every_k_or_by_time_and_always_the_last():
    from jobs.train_checkpoints import CheckpointCadence

    every3 = CheckpointCadence(3, 60.0, total_epochs=7)
    assert [e for e in range(1, 8) if every3.due(e)] == [3, 6, 7]
    now = [0.0]
    timed = CheckpointCadence(0, 60.0, total_epochs=100, clock=lambda: now[0])
    due = []
    for epoch in range(1, 101):
        now[0] += 25.0  # 25 s per epoch: one checkpoint per 3 epochs (>= 60 s), plus the last
        if timed.due(epoch):
            due.append(epoch)
            timed.saved()
    assert due[:3] == [3, 6, 9] and due[-1] == 100 and len(due) == 34
    with pytest.raises(ValueError, match="checkpoint_every_epochs"):
        CheckpointCadence(-1, 60.0, 5)


def test_newest_complete_checkpoint_skips_partial_ones(tmp_path):
    from jobs.train_checkpoints import META_FILE, TRAINER_FILE, checkpoint_dir_name, newest_complete_checkpoint
    from star_core.io.lake import Lake

    lake = Lake(str(tmp_path / "lake"))
    run = Path(lake.checkpoints_dir("r"))
    assert newest_complete_checkpoint(lake, "r") is None

    def write(epoch: int, trainer: bytes, recorded: int | None = None, meta: str | None = None) -> None:
        d = run / checkpoint_dir_name(epoch)
        d.mkdir(parents=True)
        (d / TRAINER_FILE).write_bytes(trainer)
        if meta is None:
            meta = json.dumps({"epoch": epoch, "trainer_bytes": len(trainer) if recorded is None else recorded})
        (d / META_FILE).write_text(meta)

    write(5, b"x" * 10)
    write(7, b"x" * 10)
    assert newest_complete_checkpoint(lake, "r") == (7, str(run / "checkpoint_epoch_00007"))
    write(8, b"x" * 4, recorded=10)  # trainer.pt cut short by a kill during the upload
    write(9, b"x" * 10, meta='{"epoch": 9, "trai')  # meta.json cut short
    (run / "logs").mkdir()
    assert newest_complete_checkpoint(lake, "r")[0] == 7


def test_cli_builds_typed_config(tmp_path):
    import argparse

    from star_cli.commands import train as command
    from star_cli.options import load

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 0.003\nmodel:\n  hidden_dim: 64\n")
    args = parser.parse_args(
        [
            "--lake",
            "/x",
            "--dataset",
            "d",
            "--workers",
            "2",
            "--epochs",
            "7",
            "--config",
            str(cfg_file),
            "--run-name",
            "r1",
            "--no-alias",
            "model.attn_dim=8",
        ]
    )
    cfg = load(args)
    assert (cfg.storage.lake_uri, args.dataset, cfg.resources.workers, cfg.train_run.run_name, cfg.train_run.alias) == (
        "/x",
        "d",
        2,
        "r1",
        None,
    )
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.hidden_dim, cfg.model.attn_dim) == (7, 0.003, 64, 8)
    with pytest.raises(ValueError, match="unknown config key"):
        load(parser.parse_args(["--dataset", "d", "train.lrr=1"]))


def test_cli_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from star_cli.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "--lake", "s3://bucket/lake", "--dataset", "d"]) == 2
    assert "set MLFLOW_TRACKING_URI" in capsys.readouterr().err
    assert main(["train", "--lake", str(tmp_path / "lake"), "--dataset", "nope"]) == 2
    assert "no dataset named 'nope'" in capsys.readouterr().err
    assert main(["train", "--lake", str(tmp_path / "lake"), "--dataset", "d", "--run-name", "bad/name"]) == 2
    assert "invalid run name" in capsys.readouterr().err


def test_embedded_tracking_logs_registers_and_loads_in_fresh_process(tmp_path, monkeypatch):
    """Local lake, no MLFLOW_TRACKING_URI: SQLite + artifacts inside the lake; load by alias elsewhere."""
    from jobs import tracking
    from star_core.io.feature_store import read_features
    from star_core.train_loop import fit

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake, classes, feats, labels = make_tiny_dataset(str(tmp_path / "lake"), n_train=6, n_test=2)
    pairs = [(f, lab) for f, lab in zip(feats, labels) if lab.split == "train"]
    detector = fit(pairs, classes, tiny_config(**{"train.epochs": 2}))
    uri = tracking.tracking_uri(lake)
    exp = tracking.ensure_experiment(uri, "star", tracking.artifact_location(lake, uri))
    run_id = tracking.start_run(uri, exp, "embedded")
    ref = tracking.log_detector(uri, run_id, detector, "star", tags={tracking.SCORE_TAG: "10.0"})
    assert (ref.name, ref.version, ref.uri) == ("star", "1", "models:/star/1")
    assert tracking.maybe_set_alias(uri, "star", ref.version, "champion", 10.0)
    tracking.end_run(uri, run_id)
    assert (tmp_path / "lake" / "mlflow.db").is_file()
    stored = list((tmp_path / "lake" / "mlflow-artifacts").rglob("star_detector.pt"))
    assert len(stored) == 1, "the model's artifacts live in the lake"

    test_videos = [v for v in read_features(lake, "tinyfs") if v.video_id in {lab.video_id for lab in labels if lab.split == "test"}]
    expected = [
        [(d.video_id, d.label, round(d.t_start_s, 4), round(d.t_end_s, 4), round(d.score, 5)) for d in dets]
        for dets in detector.detect_batch(test_videos)
    ]
    script = textwrap.dedent(
        f"""
        import json
        from jobs.tracking import load_detector
        from star_core.io.lake import Lake
        from star_core.io.feature_store import read_features
        det, ref = load_detector("models:/star@champion", "{uri}")
        videos = [v for v in read_features(Lake("{lake.uri}"), "tinyfs") if v.video_id in {sorted(v.video_id for v in test_videos)!r}]
        out = [
            [(d.video_id, d.label, round(d.t_start_s, 4), round(d.t_end_s, 4), round(d.score, 5)) for d in dets]
            for dets in det.detect_batch(videos)
        ]
        print("RESULT" + json.dumps({{"ref": [ref.name, ref.version, ref.run_id, list(ref.classes)], "dets": out}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert got["ref"] == ["star", "1", run_id, list(classes)]
    assert got["dets"] == json.loads(json.dumps(expected))
    assert not os.environ.get("MLFLOW_TRACKING_URI"), "jobs.tracking must not leak the tracking URI into the environment"


def test_alias_moves_only_to_a_better_model(tmp_path, monkeypatch):
    from jobs import tracking
    from star_core.detector import StarDetector

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri(str(tmp_path / "lake"))
    exp = tracking.ensure_experiment(uri, "alias-test", tracking.artifact_location(str(tmp_path / "lake"), uri))
    det = StarDetector(classes=("a", "b"), feat_dim=4)
    versions = []
    for score in (20.0, 15.0, 20.0, 25.0):
        run_id = tracking.start_run(uri, exp, f"s{score}")
        versions.append(tracking.log_detector(uri, run_id, det, "aliased").version)
        tracking.maybe_set_alias(uri, "aliased", versions[-1], "champion", score)
    assert tracking.alias_holder(uri, "aliased", "champion") == (versions[3], 25.0)
    assert not tracking.maybe_set_alias(uri, "aliased", versions[1], "champion", 24.9)
    assert not tracking.maybe_set_alias(uri, "aliased", versions[2], "champion", None)


# ----- slow: Ray Train + MLflow server + S3 lake --------------------------------------------------
@pytest.fixture
def tiny_s3_dataset(s3_lake_uri):
    return make_tiny_dataset(s3_lake_uri)


@pytest.mark.slow
def test_train_tracks_registers_resumes_and_keeps_champion(tiny_s3_dataset, s3_lake_uri, mlflow_server, ray_address, monkeypatch, tmp_path):
    import mlflow
    from ray.train.v2.api.exceptions import TrainingFailedError

    from jobs import tracking
    from jobs.train import FAIL_AFTER_EPOCH_ENV, train
    from star_core.io.feature_store import read_features

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    lake, classes, feats, labels = tiny_s3_dataset
    name = f"star-{Path(s3_lake_uri).name}"  # own registered model per test run (the server is shared)
    common = {
        "storage.lake_uri": s3_lake_uri,
        "resources.workers": 2,
        "train_run.model_name": name,
        "train_run.experiment": "train-job-test",
        "train.eval_every_epochs": 3,
        "train_run.max_failures": 0,
    }

    def job(cfg, run_name):
        return replace(cfg, **common, **{"train_run.run_name": run_name})

    # 1) a good run: params, per-epoch metrics, plots, model registered and given the alias.
    first = train(job(tiny_config(), "good"), "tiny")
    assert first.epochs_completed == 6 and first.resumed_from_epoch == 0 and first.model_version == "1" and first.alias_set
    client = tracking.client(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["model.hidden_dim"] == "32" and params["loss.delta_ram"] == "1e-06"
    assert params["job.dataset"] == "tiny" and params["resources.workers"] == "2" and params["job.feature_set"] == "tinyfs"
    metrics = run.data.metrics
    for stream in ("rgb", "flow"):
        for term in ("total", "classification", "sparsity", "coverage", "ram"):
            assert f"{stream}/{term}" in metrics
            assert len(client.get_metric_history(first.run_id, f"{stream}/{term}")) == 6
    for thr in ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"):
        assert f"test/map_{thr}" in metrics
    assert [m.step for m in client.get_metric_history(first.run_id, "test/avg_map_0.1_0.7")] == [3, 6]  # every 3 epochs
    assert metrics["test/avg_map_0.1_0.7"] == pytest.approx(first.metrics["test/avg_map_0.1_0.7"])
    assert first.metrics["test/avg_map_0.1_0.7"] > 10.0, "the classes carry a strong signal: the model must localize some"
    history = client.get_metric_history(first.run_id, "rgb/total")
    assert history[-1].value < history[0].value
    plots = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert "plots/loss_curves.png" in plots
    timelines = [a.path for a in client.list_artifacts(first.run_id, "plots/timelines")]
    assert len(timelines) == 3 and all(p.endswith(".png") for p in timelines)
    png = Path(
        mlflow.artifacts.download_artifacts(
            run_id=first.run_id, artifact_path=timelines[0], dst_path=str(tmp_path / "dl"), tracking_uri=mlflow_server
        )
    )
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "config.json" in {a.path for a in client.list_artifacts(first.run_id)}

    # The registered model, loaded by alias, detects exactly like the trained model.
    trained, _ = _latest_checkpoint_detector(lake, "good")
    loaded, ref = tracking.load_detector(f"models:/{name}@champion", mlflow_server)
    assert (ref.name, ref.version, ref.run_id, ref.classes) == (name, "1", first.run_id, classes)
    test_videos = [v for v in read_features(lake, "tinyfs") if v.video_id.startswith("vid01")]
    assert loaded.detect_batch(test_videos) == trained.detect_batch(test_videos)
    pickled = mlflow.pytorch.load_model(f"models:/{name}/1")  # the pickled flavor loads too
    assert pickled.detect_batch(test_videos[:1]) == trained.detect_batch(test_videos[:1])

    # 2) a run killed after epoch 2 of 4 (fault injection, no in-run retries) ...
    weak = tiny_config(**{"train.lr": 1e-6, "train.epochs": 4, "train.checkpoint_every_epochs": 1})
    with pytest.raises(TrainingFailedError), monkeypatch.context() as fault:
        fault.setenv(FAIL_AFTER_EPOCH_ENV, "2")  # test-only hook, read by the driver
        train(job(weak, "weak"), "tiny")
    killed_run_id = json.loads(lake.fs.cat_file(f"{lake.checkpoints_dir('weak')}/star_run.json"))["mlflow_run_id"]
    assert client.get_run(killed_run_id).info.status == "FAILED"
    # ... refuses to resume with a different config ...
    with pytest.raises(ValueError, match=r"different config .*train\.epochs: 4 -> 5"):
        train(job(replace(weak, **{"train.epochs": 5}), "weak"), "tiny")
    # ... resumes from its last checkpoint with the same name and finishes the same 4 epochs.
    second = train(job(weak, "weak"), "tiny")
    assert second.run_id == killed_run_id and second.epochs_completed == 4
    assert second.resumed_from_epoch == 2  # the newest complete checkpoint, even if Ray never registered it
    steps = sorted({m.step for m in client.get_metric_history(second.run_id, "flow/total")})
    assert steps == [1, 2, 3, 4]
    _, ckpts = _latest_checkpoint_detector(lake, "weak")
    assert ckpts[-1].endswith("checkpoint_epoch_00004") and len(ckpts) <= 2  # num_to_keep=2, untracked ones removed

    # 3) its lower test mAP does not take the alias from the first model.
    assert second.model_version == "2" and not second.alias_set
    assert second.metrics["test/avg_map_0.1_0.7"] < first.metrics["test/avg_map_0.1_0.7"]
    assert tracking.alias_holder(mlflow_server, name, "champion")[0] == "1"

    # A finished run name is never resumed (or retrained) silently.
    with pytest.raises(ValueError, match="already finished"):
        train(job(weak, "weak"), "tiny")
