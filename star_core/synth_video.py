"""Short synthetic videos with known actions, for the demo and end-to-end tests (PyAV).

Each action class is a large, colourful object with its own motion (so both the RGB and the
flow stream can see it) drawn over a textured, slowly panning background; the ground-truth
intervals are returned with each video, so the pipeline's detections can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from star_core.data import Instance

# class name -> (RGB colour, motion kind)
DEMO_CLASSES: dict[str, tuple[tuple[int, int, int], str]] = {
    "BallBounce": ((230, 40, 40), "bounce"),
    "BarSwing": ((40, 200, 60), "swing"),
    "BoxSpin": ((50, 80, 230), "spin"),
}


@dataclass(frozen=True)
class SyntheticVideo:
    path: Path
    video_id: str
    duration_s: float
    instances: tuple[Instance, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({i.label for i in self.instances}))

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(sum(1 for i in self.instances if i.label == lab) for lab in self.labels)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Smooth random texture (sum of a few low-frequency sinusoids) so flow has something to track.
    yy, xx = np.mgrid[0:size * 2, 0:size * 2].astype(np.float32) / size
    img = np.zeros((size * 2, size * 2, 3), np.float32)
    for c in range(3):
        for _ in range(3):
            fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi)
            img[..., c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return (60 + 90 * img).astype(np.uint8)


def _draw(frame: np.ndarray, label: str, phase_s: float) -> None:
    colour, motion = DEMO_CLASSES[label]
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    if motion == "bounce":  # disc bouncing vertically, 1.2 Hz
        cy = h * (0.25 + 0.5 * abs(np.sin(np.pi * 1.2 * phase_s)))
        mask = (yy - cy) ** 2 + (xx - w * 0.5) ** 2 < (0.18 * w) ** 2
    elif motion == "swing":  # wide bar swinging horizontally, 0.8 Hz
        cx = w * (0.5 + 0.3 * np.sin(2 * np.pi * 0.8 * phase_s))
        mask = (np.abs(xx - cx) < 0.1 * w) & (np.abs(yy - h * 0.5) < 0.4 * h)
    else:  # square rotating about the centre, 0.5 turn/s
        ang = np.pi * phase_s
        u = (xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)
        v = -(xx - w / 2) * np.sin(ang) + (yy - h / 2) * np.cos(ang)
        mask = (np.abs(u) < 0.22 * w) & (np.abs(v) < 0.22 * w)
    frame[mask] = colour


def make_video(
    path: str | Path, instances: list[Instance], duration_s: float, fps: float = 25.0, size: int = 128, seed: int = 0
) -> SyntheticVideo:
    """Write an H.264 (or MPEG-4) video with the given action instances; returns its record."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bg = _background(rng, size)
    pan = rng.uniform(-8, 8, size=2)  # background pan, pixels per second
    n_frames = int(round(duration_s * fps))
    with av.open(str(path), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for f in range(n_frames):
            t_s = f / fps
            oy = int((size / 2 + pan[0] * t_s) % size)
            ox = int((size / 2 + pan[1] * t_s) % size)
            frame = bg[oy:oy + size, ox:ox + size].copy()
            for inst in instances:
                if inst.t_start_s <= t_s < inst.t_end_s:
                    _draw(frame, inst.label, t_s - inst.t_start_s)
            noise = rng.integers(-6, 7, size=frame.shape)
            frame = np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return SyntheticVideo(path, path.stem, n_frames / fps, tuple(instances))


def random_instances(rng: np.random.Generator, duration_s: float, classes: list[str], max_classes: int = 2) -> list[Instance]:
    """1-2 classes per video, 1-3 non-overlapping instances each, 1.5-4 s long, background between."""
    chosen = list(rng.choice(classes, size=int(rng.integers(1, max_classes + 1)), replace=False))
    slots = []
    for label in chosen:
        slots += [label] * int(rng.integers(1, 4))
    rng.shuffle(slots)
    instances, t_s = [], float(rng.uniform(0.5, 1.5))
    for label in slots:
        length_s = float(rng.uniform(1.5, 4.0))
        if t_s + length_s > duration_s - 0.5:
            break
        instances.append(Instance(str(label), round(t_s, 2), round(t_s + length_s, 2)))
        t_s += length_s + float(rng.uniform(1.0, 3.0))
    if not instances:  # always at least one action
        instances.append(Instance(str(chosen[0]), 1.0, min(3.5, duration_s - 0.5)))
    return instances


def make_demo_set(
    out_dir: str | Path, n_videos: int = 16, duration_s: float = 12.0, fps: float = 25.0, size: int = 128, seed: int = 0
) -> list[SyntheticVideo]:
    """``n_videos`` videos with random known actions from :data:`DEMO_CLASSES`."""
    rng = np.random.default_rng(seed)
    classes = list(DEMO_CLASSES)
    videos = []
    for k in range(n_videos):
        inst = random_instances(rng, duration_s, classes)
        videos.append(make_video(Path(out_dir) / f"demo_{k:03d}.mp4", inst, duration_s, fps, size, seed=seed * 1000 + k))
    return videos
