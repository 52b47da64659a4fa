"""The demo's synthetic videos: decodable, right length, and the action visible where annotated."""

import av
import numpy as np

from star_core.data import Instance
from star_core.synth_video import DEMO_CLASSES, make_video, random_instances


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_video_has_action_pixels_only_inside_instances(tmp_path):
    inst = [Instance("BallBounce", 1.0, 2.0)]
    video = make_video(tmp_path / "v.mp4", inst, duration_s=3.0, fps=25, size=64, seed=1)
    frames = _frames(video.path)
    assert len(frames) == 75 and video.duration_s == 3.0
    red = np.array(DEMO_CLASSES["BallBounce"][0])

    def red_fraction(f):
        return float((np.abs(f.astype(int) - red).sum(-1) < 60).mean())

    inside = [red_fraction(frames[i]) for i in range(27, 48)]
    outside = [red_fraction(frames[i]) for i in list(range(0, 23)) + list(range(52, 75))]
    assert min(inside) > 0.05
    assert max(outside) < 0.01


def test_random_instances_do_not_overlap_and_fit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        inst = random_instances(rng, 12.0, list(DEMO_CLASSES))
        assert inst
        for a, b in zip(inst, inst[1:]):
            assert a.t_end_s <= b.t_start_s
        assert all(0 <= i.t_start_s < i.t_end_s <= 12.0 for i in inst)
