"""The stand-in's "world": venues, camera views, action patterns and the feature projection.

Every vector lives in a latent space of ``latent_dim`` dimensions; a video's segment features are
a fixed random non-linear embedding of its latent timeline (see ``video.py``). What makes the
stand-in hard in the ways THUMOS'14 is hard is encoded here:

* **Shared scene context.** Classes of one sport share a venue (CricketBowling/CricketShot on a
  cricket ground; seven athletics events in one stadium; the two court sports), and venues of a
  family (grass fields, indoor courts, water) share part of their look. RGB is dominated by the
  venue, so the video-level label is predictable from context alone, but the venue does not say
  *where* the action is, nor which of the sibling classes it is.
* **Sibling actions.** Action patterns (RGB appearance and flow motion) of related classes share a
  family component: diving (CliffDiving/Diving almost identical), cricket, throws, jumps, swings.
* **Look-alike preparation.** Preparation (run-up, stance) and aftermath patterns of each class
  are partly its own motion, so unlabeled neighbours of an action look like the action.
* **Camera motion and distractors.** Pan/tilt/zoom/shake patterns and generic human motion
  (walking, jogging, clapping, crowd) in the flow stream are class independent.

Weights and probabilities are the knobs of :class:`SynthConfig`; all are fixed defaults documented
in ``docs/benchmark.md`` and were not tuned to any model.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Venue of each THUMOS'14 class (unknown class names get a venue of their own).
VENUE_OF = {
    "BaseballPitch": "baseball_field",
    "BasketballDunk": "basketball_court",
    "Billiards": "billiards_hall",
    "CleanAndJerk": "weightlifting_hall",
    "CliffDiving": "cliff",
    "CricketBowling": "cricket_ground",
    "CricketShot": "cricket_ground",
    "Diving": "pool",
    "FrisbeeCatch": "park",
    "GolfSwing": "golf_course",
    "HammerThrow": "stadium",
    "HighJump": "stadium",
    "JavelinThrow": "stadium",
    "LongJump": "stadium",
    "PoleVault": "stadium",
    "Shotput": "stadium",
    "SoccerPenalty": "soccer_pitch",
    "TennisSwing": "tennis_court",
    "ThrowDiscus": "stadium",
    "VolleyballSpiking": "volleyball_court",
}
# Venue families share a component of their look (grass, lines, water, indoor light).
VENUE_FAMILIES = {
    "grass": ("baseball_field", "cricket_ground", "soccer_pitch", "golf_course", "park", "stadium"),
    "indoor": ("basketball_court", "volleyball_court", "weightlifting_hall", "billiards_hall"),
    "water": ("pool", "cliff"),
    "court": ("basketball_court", "volleyball_court", "tennis_court"),
}
# Action families: (classes, weight of the shared component in each member's pattern).
ACTION_FAMILIES = (
    (("CliffDiving", "Diving"), 0.75),
    (("CricketBowling", "CricketShot"), 0.45),
    (("HammerThrow", "ThrowDiscus"), 0.35),
    (("HammerThrow", "ThrowDiscus", "Shotput", "JavelinThrow"), 0.25),
    (("HighJump", "LongJump", "PoleVault"), 0.4),
    (("GolfSwing", "TennisSwing", "CricketShot", "BaseballPitch"), 0.2),
    (("BasketballDunk", "VolleyballSpiking"), 0.35),
)
# Classes whose athletes run or fly across the frame: cameras pan/tilt to follow them.
TRACKED_CLASSES = frozenset(
    {
        "LongJump",
        "JavelinThrow",
        "PoleVault",
        "HighJump",
        "CliffDiving",
        "Diving",
        "BasketballDunk",
        "SoccerPenalty",
        "FrisbeeCatch",
        "CricketBowling",
    }
)
VIEWS = ("wide", "closeup", "crowd", "studio", "replay")
CAMERA_MOTIONS = ("static", "pan", "tilt", "zoom", "shake")
N_DISTRACTORS = 6  # generic motions: walk, jog, clap, wave, gesture, crowd ripple


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0  # seeds the world and (with the video id) every video
    feat_dim: int = 1024  # per stream (I3D Mixed_5c: 1024)
    latent_dim: int = 128  # latent space the features embed
    substeps: int = 4  # sub-segment time steps averaged into one segment (partial coverage, cuts)
    fps: float = 25.0  # frame rate of the feature grid
    segment_frames: int = 16  # frames per segment (0.64 s)
    # RGB: scene dominates, the action adds an appearance pattern.
    rgb_scene: float = 1.0  # weight of the shot's scene
    rgb_action: float = 0.55  # weight of the action appearance during an instance
    rgb_video_style: float = 0.5  # per-video look (broadcaster, light) shared by all its shots
    # Flow: motion dominates; scene leaks in weakly.
    flow_action: float = 1.0  # weight of the action motion during an instance
    flow_scene: float = 0.25  # scene structure visible in flow
    flow_camera: float = 0.6  # typical camera-motion magnitude
    flow_distractor: float = 0.5  # typical generic-motion magnitude
    distractors_per_min: float = 4.0  # rate of background generic-motion events
    # Instances.
    weak_instance_prob: float = 0.15  # far/occluded instances with a weak pattern
    # Unlabeled look-alikes.
    prep_prob: float = 0.6  # an instance is preceded by preparation (run-up, stance)
    after_prob: float = 0.5  # ... followed by an aftermath (follow-through, celebration)
    prep_strength: float = 0.6  # amplitude of preparation/aftermath relative to the action
    prep_own_share: float = 0.3  # share (of squared norm) of the class's motion in its prep pattern
    replay_prob: float = 0.1  # an unlabeled slow-motion replay of an instance follows in a gap
    ambiguous_strength: float = 0.45  # THUMOS "Ambiguous" spans: weak action (ignored in evaluation)
    # Shots and camera.
    shot_mean_s: float = 7.0  # mean shot length of the background cut process
    cut_near_action_prob: float = 0.35  # a cut shortly before / after an instance (broadcast editing)
    # Noise.
    noise_rgb: float = 0.8  # norm of the latent AR(1) noise, RGB
    noise_flow: float = 0.8  # norm of the latent AR(1) noise, flow
    noise_rho_per_s: float = 0.55  # autocorrelation of the latent noise after one second
    spatial_noise: float = 0.8  # spread of activations over spatial positions (smooths the ReLU; see expected_relu)
    feature_noise: float = 0.1  # multiplicative per-dimension noise on the features
    gain: float = 0.5  # overall feature scale (I3D-like means of a few tenths)


# Named difficulty settings of the stand-in (issue 14 protocol). Fixed on 2026-12-04 from the
# descriptions below, before any model was tuned on them, and never changed to favour a model.
DIFFICULTIES: dict[str, dict[str, float]] = {
    "standard": {},  # the SynthConfig defaults
    # more shared scene context: the action shows less in RGB, the scene more in flow, and more
    # look-alike preparation/aftermath and unlabeled replays around the instances
    "context": {"rgb_action": 0.35, "flow_scene": 0.45, "prep_prob": 0.8, "prep_strength": 0.8, "replay_prob": 0.25},
    # weaker boundaries: more weak (far/occluded) instances, more noise, more cuts next to actions
    "weak": {"weak_instance_prob": 0.35, "noise_rgb": 1.1, "noise_flow": 1.1, "spatial_noise": 1.1, "cut_near_action_prob": 0.6},
}


def difficulty_config(name: str, **fields) -> "SynthConfig":
    """``SynthConfig`` of a named difficulty setting (``fields`` such as seed and feat_dim on top)."""
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown stand-in difficulty {name!r}; one of {sorted(DIFFICULTIES)}")
    return SynthConfig(**{**DIFFICULTIES[name], **fields})


def _named(seed: int, name: str, dim: int) -> np.ndarray:
    """Unit vector determined by (seed, name) only: a class looks the same in every subset of classes."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def _mix(own: np.ndarray, shared: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Unit vector with squared-norm share ``w`` of each shared component and the rest ``own``."""
    total = sum(w for _, w in shared)
    if total >= 1.0:
        raise ValueError(f"shared components take {total:.2f} >= 1 of a pattern")
    v = np.sqrt(1.0 - total) * own + sum(np.sqrt(w) * s for s, w in shared)
    return v / np.linalg.norm(v)


class World:
    """All fixed vectors and matrices of a stand-in (deterministic in ``cfg.seed`` and ``classes``)."""

    def __init__(self, classes: Sequence[str], cfg: SynthConfig = SynthConfig()) -> None:
        self.cfg = cfg
        self.classes = tuple(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        L, C, seed = cfg.latent_dim, len(self.classes), cfg.seed

        def vec(name: str) -> np.ndarray:
            return _named(seed, name, L)

        # Venues: own look + family looks.
        self.venues = sorted({VENUE_OF.get(c, f"venue:{c}") for c in self.classes})
        self.venue_index = {v: i for i, v in enumerate(self.venues)}
        self.venue = np.stack(
            [
                _mix(vec(f"venue/{v}"), [(vec(f"venue-family/{f}"), 0.3) for f, members in VENUE_FAMILIES.items() if v in members])
                for v in self.venues
            ]
        )
        self.class_venue = np.array([self.venue_index[VENUE_OF.get(c, f"venue:{c}")] for c in self.classes], dtype=np.int64)
        # Views: a view-specific look; "wide" shows the venue fully, a close-up partly, etc.
        self.view = np.stack([vec(f"view/{v}") for v in VIEWS])
        self.view_venue_share = np.array([1.0, 0.45, 0.3, 0.0, 0.7])  # venue weight per view
        self.view_own_weight = np.array([0.3, 0.7, 0.8, 1.0, 0.6])  # view-look weight per view
        # Action patterns with family sharing: appearance (RGB) and motion (flow).
        self.appearance = self._patterns("appearance", vec)
        self.motion = self._patterns("motion", vec)
        # Preparation/aftermath motion: partly the class's own motion, partly its own pattern.
        self.prep_motion = (
            np.stack([_mix(vec(f"prep/{c}"), [(self.motion[i], cfg.prep_own_share)]) for i, c in enumerate(self.classes)])
            if C
            else np.zeros((0, L))
        )
        self.slowmo = vec("slowmo")  # what slow motion adds to a replayed action's flow
        self.camera = np.stack([vec(f"camera/{m}") for m in CAMERA_MOTIONS])
        self.camera[0] = 0.0  # static camera: no global motion
        self.distractor = np.stack([vec(f"distractor/{k}") for k in range(N_DISTRACTORS)])
        self.tracked = np.array([c in TRACKED_CLASSES for c in self.classes], dtype=bool)
        # Fixed random embedding latent -> features, one per stream.
        rng = np.random.default_rng([seed, cfg.feat_dim, L])
        D = cfg.feat_dim
        self.proj_rgb = rng.standard_normal((L, D)).astype(np.float32)
        self.proj_flow = rng.standard_normal((L, D)).astype(np.float32)
        self.bias_rgb = rng.normal(-0.2, 0.4, D).astype(np.float32)
        self.bias_flow = rng.normal(-0.3, 0.4, D).astype(np.float32)

    def _patterns(self, kind: str, vec) -> np.ndarray:
        shared: list[list[tuple[np.ndarray, float]]] = [[] for _ in self.classes]
        for k, (members, weight) in enumerate(ACTION_FAMILIES):
            for name in members:
                if name in self.class_index:
                    shared[self.class_index[name]].append((vec(f"{kind}-family/{k}"), weight))
        if not self.classes:
            return np.zeros((0, self.cfg.latent_dim))
        return np.stack([_mix(vec(f"{kind}/{c}"), shared[i]) for i, c in enumerate(self.classes)])

    def video_venue(self, labels: Sequence[str], counts: Sequence[int] | None, rng: np.random.Generator) -> int:
        """Main venue of a video: CliffDiving videos are at a cliff; else the venue of its most frequent label."""
        known = [(lab, (counts[i] if counts else 1)) for i, lab in enumerate(labels) if lab in self.class_index]
        if not known:
            return int(rng.integers(len(self.venues)))
        if any(lab == "CliffDiving" for lab, _ in known):
            return self.venue_index["cliff"]
        best = max(known, key=lambda x: x[1])[0]
        return int(self.class_venue[self.class_index[best]])
