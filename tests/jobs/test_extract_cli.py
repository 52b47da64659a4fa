"""`star extract` single-process path: features rows, manifest with per-video failures, skip on rerun; `--ray` hand-off."""

from __future__ import annotations

import json

import pytest

from star_cli.cli import main
from star_core.io import feature_store, manifests
from star_core.io.lake import Lake
from tests.star_core.video.videos import moving_texture_frames, write_audio, write_index_video, write_video

TINY = ["--flow", "farneback", "--set", "features.resize_short_side=40", "--set", "features.crop_size=32"]


def _videos(tmp_path):
    good_a = write_video(tmp_path / "good_a.mp4", moving_texture_frames(40, 48, 64, 2, 0, seed=1), fps=25)  # 3 segments (padded tail)
    good_b = write_index_video(tmp_path / "good_b.mkv", 50, fps=30)  # 42 frames at 25 fps: 3 segments
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18junk" * 300)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    audio = write_audio(tmp_path / "voice.m4a")
    short = write_index_video(tmp_path / "short.mp4", 10, fps=25)
    full = write_index_video(tmp_path / "full.mp4", 60, fps=30).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(full[: len(full) // 2])
    (tmp_path / "full.mp4").unlink()
    return [good_a, good_b], {"corrupt": corrupt, "empty": empty, "voice": audio, "short": short, "truncated": truncated}


def _run(capsys, *argv) -> tuple[int, dict]:
    rc = main(["extract", *map(str, argv), "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out[out.index("{"):])


def test_extract_batch_goes_on_past_bad_files(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    good, bad = _videos(tmp_path / "in")
    lake_uri = str(tmp_path / "lake")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        rc, summary = _run(capsys, *good, *bad.values(), "--lake", lake_uri, *TINY)
    assert rc == 0
    assert summary["done"] == 2 and summary["failed"] == 5 and summary["skipped"] == 0 and summary["n_segments"] == 6
    reasons = {f["input"].rsplit("/", 1)[-1]: f["reason"] for f in summary["failures"]}
    assert reasons["corrupt.mp4"].startswith("CorruptVideoError")
    assert reasons["empty.avi"].startswith("EmptyVideoError")
    assert reasons["voice.m4a"].startswith("NoVideoStreamError")
    assert reasons["short.mp4"].startswith("TooShortVideoError")
    assert reasons["truncated.mp4"].startswith("TruncatedVideoError")
    assert "farneback" in summary["feature_set"] and summary["weights_digest"] == "random-he"

    lake = Lake(lake_uri)
    feats = {f.video_id: f for f in feature_store.read_features(lake, summary["feature_set"])}
    assert set(feats) == {"good_a", "good_b"}
    assert feats["good_a"].rgb.shape == (3, 1024) and feats["good_a"].fps == 25.0
    assert feats["good_b"].duration_s == pytest.approx(50 / 30, abs=1e-3)
    manifest = manifests.read_manifests(lake, "extract").to_pylist()
    status = {r["input"].rsplit("/", 1)[-1]: r for r in manifest}
    assert status["good_a.mp4"]["status"] == "done" and status["good_a.mp4"]["n_segments"] == 3
    assert status["good_a.mp4"]["output"].endswith(".parquet")
    assert status["short.mp4"]["status"] == "failed" and "fewer than one 16-frame segment" in status["short.mp4"]["reason"]

    # Rerun: the two extracted videos are skipped; only the bad ones are tried again (all fail -> exit 1).
    with pytest.warns(UserWarning):
        rc, again = _run(capsys, *good, *bad.values(), "--lake", lake_uri, *TINY)
    assert rc == 1 and again["done"] == 0 and again["skipped"] == 2 and again["failed"] == 5


def test_extract_all_failed_and_bad_arguments(tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    with pytest.warns(UserWarning):
        rc, summary = _run(capsys, junk, "--lake", str(tmp_path / "lake"), *TINY)
    assert rc == 1 and summary["failed"] == 1 and summary["done"] == 0
    assert main(["extract", str(junk), "--lake", str(tmp_path / "lake"), "--rgb-weights", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    # a missing input is a failed input of the run (recorded with its reason), not an abort
    assert main(["extract", str(tmp_path / "missing.mp4"), "--lake", str(tmp_path / "lake"), *TINY]) == 1
    assert "missing.mp4' does not exist" in capsys.readouterr().out


def test_missing_inputs_are_per_input_failures(tmp_path, capsys):
    good = write_index_video(tmp_path / "clip.mp4", 20, fps=25)
    missing, no_match, no_list = tmp_path / "gone.mp4", tmp_path / "*.webm", f"@{tmp_path / 'nolist.txt'}"
    with pytest.warns(UserWarning):
        rc, summary = _run(capsys, good, missing, no_match, no_list, "--lake", str(tmp_path / "lake"), *TINY)
    assert rc == 0 and summary["done"] == 1 and summary["failed"] == 3
    reasons = {f["input"]: f["reason"] for f in summary["failures"]}
    assert reasons[str(missing)].startswith("MissingInputError: input") and "does not exist" in reasons[str(missing)]
    assert "the glob matches no video files" in reasons[str(no_match)]
    assert reasons[no_list].startswith("MissingInputError: list file")
    manifest = {r["input"]: r for r in manifests.read_manifests(Lake(str(tmp_path / "lake")), "extract").to_pylist()}
    assert manifest[str(missing)]["status"] == "failed" and manifest[str(missing)]["reason"] == reasons[str(missing)]
    assert sum(r["status"] == "done" for r in manifest.values()) == 1


def test_extract_text_summary_names_failures(tmp_path, capsys):
    good = write_index_video(tmp_path / "clip.mp4", 20, fps=25)
    empty = tmp_path / "blank.mp4"
    empty.write_bytes(b"")
    with pytest.warns(UserWarning):
        rc = main(["extract", str(good), str(empty), "--lake", str(tmp_path / "lake"), *TINY])
    out = capsys.readouterr().out
    assert rc == 0
    assert "extracted 1 video(s), 2 segments" in out and "1 failed" in out
    assert "blank.mp4: EmptyVideoError" in out and "manifest:" in out


@pytest.mark.slow
def test_extract_ray_flag_runs_the_distributed_job(tmp_path, capsys, ray_address):
    good = write_index_video(tmp_path / "rayclip.mp4", 20, fps=25)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    rc = main(["extract", str(good), str(bad), "--lake", str(tmp_path / "lake"), "--ray", "--ray-address", ray_address, *TINY, "--json"])
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    assert rc == 0 and summary["done"] == 1 and summary["failed"] == 1
    feats = list(feature_store.read_features(Lake(str(tmp_path / "lake")), summary["feature_set"]))
    assert [f.video_id for f in feats] == ["rayclip"] and feats[0].rgb.shape == (2, 1024)


def test_sigint_is_one_line_and_the_manifest_names_unstarted_videos(tmp_path, capsys, monkeypatch):
    """A real SIGINT to this process after the first video: exit 130, no traceback, every input in the manifest."""
    import os
    import signal

    import star_core.video as video

    clips = [write_index_video(tmp_path / f"c{i}.mp4", 20, fps=25) for i in range(3)]
    real, calls = video.extract_video, []

    def interrupt_second_video(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt here, as on Ctrl-C
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "extract_video", interrupt_second_video)
    lake = str(tmp_path / "lake")
    with pytest.warns(UserWarning):
        rc = main(["extract", *map(str, clips), "--lake", lake, "--run-id", "int1", *TINY])
    captured = capsys.readouterr()
    assert rc == 130 and "star extract: interrupted" in captured.err and "Traceback" not in captured.err
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in manifests.read_manifests(Lake(lake), "extract").to_pylist()}
    assert set(rows) == {"c0.mp4", "c1.mp4", "c2.mp4"}
    assert rows["c0.mp4"]["status"] == "done"
    assert all(rows[c]["status"] == "skipped" and "interrupted" in rows[c]["reason"] for c in ("c1.mp4", "c2.mp4"))
    # a rerun does only what the interrupted run did not finish
    monkeypatch.setattr(video, "extract_video", real)
    with pytest.warns(UserWarning):
        rc, summary = _run(capsys, *clips, "--lake", lake, *TINY)
    assert rc == 0 and (summary["done"], summary["skipped"], summary["failed"]) == (2, 1, 0)
