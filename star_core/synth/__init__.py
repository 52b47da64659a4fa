"""THUMOS'14-shaped stand-in features (pure numpy): real videos and intervals, synthetic I3D-like features.

``World`` holds the fixed patterns (venues, actions, camera, projection); ``generate_video`` turns
one video's real annotation into two-stream segment features. Writing the W-TALC layout files is
done by ``star_core.io.standin`` (storage lives in ``star_core.io``).
"""

from star_core.synth.video import SynthVideo, generate_video, n_segments_of
from star_core.synth.world import DIFFICULTIES, SynthConfig, World, difficulty_config

__all__ = ["DIFFICULTIES", "SynthConfig", "difficulty_config", "SynthVideo", "World", "generate_video", "n_segments_of"]
