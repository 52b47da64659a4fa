"""One stand-in video: a latent timeline over real THUMOS'14 intervals, embedded as I3D-like features.

Time runs on a grid of ``substeps`` sub-segments per 0.64 s segment. Each sub-step gets a latent
vector per stream; features are ``ReLU(z @ P + b)`` averaged over the sub-steps of a segment (the
pooling of post-ReLU activations inside I3D), so a segment that straddles an action boundary or a
shot cut mixes both sides, and every value is non-negative. What the timeline holds:

* shots from a cut process (lognormal lengths, extra cuts shortly before/after actions, as in
  broadcast editing), each with a view (wide, close-up, crowd, studio, replay), a venue look and
  a camera motion (static/pan/tilt/zoom/shake; following athletes of running/flying classes);
* labelled instances (the real intervals): an appearance pattern in RGB and a motion pattern in
  flow, varying per video (athlete, viewpoint) and per instance, with a bell-shaped intensity
  (weaker at the boundaries) and an amplitude (some instances far away or occluded: weak);
  instances sharing an interval (every CliffDiving is also Diving) are one event with a mixed
  pattern;
* unlabeled look-alikes: preparation before and aftermath after instances, slow-motion replays
  in gaps, weak actions inside THUMOS "Ambiguous" spans;
* generic background motion (walk, jog, clap, crowd) in flow;
* temporally correlated (AR(1)) latent noise and multiplicative feature noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from star_core.data import VideoLabels
from star_core.synth.world import CAMERA_MOTIONS, VIEWS, World

_VIEW = {v: i for i, v in enumerate(VIEWS)}
_BACKGROUND_VIEW_P = np.array([0.45, 0.25, 0.15, 0.15, 0.0])  # wide, closeup, crowd, studio, replay
_CAMERA_P_TRACKED = np.array([0.15, 0.45, 0.25, 0.1, 0.05])  # static, pan, tilt, zoom, shake
_CAMERA_P_OTHER = np.array([0.45, 0.25, 0.1, 0.15, 0.05])


@dataclass
class SynthVideo:
    """Features of one stand-in video plus the hidden truth behind them (for tests and diagnostics)."""

    video_id: str
    rgb: np.ndarray  # (N, D) float32, non-negative
    flow: np.ndarray  # (N, D) float32, non-negative
    action: np.ndarray  # (N, C) fraction of each segment inside a labelled instance of class c
    lookalike: np.ndarray  # (N,) fraction inside unlabeled preparation/aftermath
    replay: np.ndarray  # (N,) fraction inside an unlabeled replay
    shot: np.ndarray  # (N,) shot index at the segment centre
    cut: np.ndarray  # (N,) bool: a shot boundary falls inside the segment or at its start
    camera: np.ndarray  # (N,) camera-motion magnitude
    venue: int  # main venue index (World.venues)


def n_segments_of(duration_s: float, fps: float, segment_frames: int) -> int:
    """Number of whole segments in a video (W-TALC grid: floor of frames / 16, at least one)."""
    return max(1, int(np.floor(duration_s * fps / segment_frames + 1e-9)))


def _ar1(rng: np.random.Generator, k: int, dim: int, rho: float, norm: float, block: int = 48) -> np.ndarray:
    """(k, dim) AR(1) noise with per-step correlation ``rho`` and expected vector norm ``norm``."""
    eps = rng.standard_normal((k, dim)).astype(np.float64) * (norm / np.sqrt(dim))
    out = np.empty_like(eps)
    c = np.sqrt(1.0 - rho * rho)
    prev = rng.standard_normal(dim) * (norm / np.sqrt(dim))  # stationary start
    i = np.arange(block, dtype=np.float64)
    up, down = rho ** (-i), rho**i
    for k0 in range(0, k, block):
        e = eps[k0 : k0 + block]
        b = e.shape[0]
        # z_{k0+i} = rho^i [rho z_prev + c Σ_{j<=i} rho^{-j} e_j]  (closed form within the block)
        acc = np.cumsum(up[:b, None] * e, axis=0) * c + rho * prev
        out[k0 : k0 + b] = down[:b, None] * acc
        prev = out[k0 + b - 1]
    return out


def expected_relu(x: np.ndarray, sigma: float) -> np.ndarray:
    """E[ReLU(x + e)], e ~ N(0, sigma^2): a ReLU averaged over many spatial positions (I3D's avg-pool).

    sigma * (u Φ(u) + φ(u)) with u = x / sigma; Φ by the tanh approximation (error < 3e-4).
    Non-negative and ReLU-like: ~x for x >> sigma, ~0 for x << -sigma.
    """
    u = x / sigma
    cdf = 0.5 * (1.0 + np.tanh(0.7978845608 * (u + 0.044715 * u**3)))
    pdf = np.exp(-0.5 * u * u) * 0.3989422804
    return np.maximum(sigma * (u * cdf + pdf), 0.0)


def _overlap(lo: np.ndarray, hi: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(I, K) fraction of each sub-step [lo, hi) covered by each interval [s, e)."""
    inter = np.minimum(hi[None, :], e[:, None]) - np.maximum(lo[None, :], s[:, None])
    return np.clip(inter, 0.0, None) / (hi - lo)[None, :]


def _mixed(vectors: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray:
    """Each row mixed with a random unit vector taking ``share`` of the squared norm, renormalised."""
    noise = rng.standard_normal(vectors.shape)
    noise /= np.linalg.norm(noise, axis=-1, keepdims=True)
    out = np.sqrt(1 - share) * vectors + np.sqrt(share) * noise
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def generate_video(world: World, video: VideoLabels) -> SynthVideo:
    """Features of ``video`` (its real intervals, duration and ambiguous spans) in ``world``."""
    cfg = world.cfg
    if video.duration_s is None or video.duration_s <= 0:
        raise ValueError(f"video {video.video_id!r}: the stand-in needs a positive duration")
    rng = np.random.default_rng([cfg.seed, zlib.crc32(video.video_id.encode())])
    seg_s = cfg.segment_frames / cfg.fps
    N, S, L = n_segments_of(video.duration_s, cfg.fps, cfg.segment_frames), cfg.substeps, cfg.latent_dim
    K, dt = N * S, seg_s / S
    lo = np.arange(K) * dt  # (K,) sub-step starts (s)
    hi, t = lo + dt, lo + dt / 2
    end_s = N * seg_s

    # ---- labelled events: instances grouped by identical interval (CliffDiving == Diving) ----
    groups: dict[tuple[float, float], list[int]] = {}
    for inst in video.instances:
        c = world.class_index.get(inst.label)
        if c is not None and inst.t_end_s > inst.t_start_s:
            groups.setdefault((inst.t_start_s, inst.t_end_s), []).append(c)
    spans = np.array(list(groups), dtype=np.float64).reshape(-1, 2)  # (E, 2)
    members = list(groups.values())
    E = len(members)
    # per-video look of each class (athlete, viewpoint), then per-instance variation
    video_app = _mixed(world.appearance, rng, 0.25)  # (C, L)
    video_mot = _mixed(world.motion, rng, 0.25)
    if E:
        ev_app = _mixed(np.stack([video_app[m].sum(0) for m in members]), rng, 0.35)  # (E, L)
        ev_mot = _mixed(np.stack([video_mot[m].sum(0) for m in members]), rng, 0.35)
        ev_prep = np.stack([world.prep_motion[m].mean(0) for m in members])
    else:
        ev_app = ev_mot = ev_prep = np.zeros((0, L))
    weak = rng.random(E) < cfg.weak_instance_prob
    amp = np.where(weak, rng.uniform(0.25, 0.5, E), rng.uniform(0.7, 1.2, E))
    cover = _overlap(lo, hi, spans[:, 0], spans[:, 1])  # (E, K)
    phase = np.clip((t[None, :] - spans[:, :1]) / np.maximum(spans[:, 1:] - spans[:, :1], 1e-6), 0, 1)
    w_event = cover * amp[:, None] * (0.55 + 0.45 * np.sin(np.pi * phase))  # (E, K)
    labelled = cover.sum(0) > 0  # (K,)
    action = np.zeros((K, len(world.classes)))
    for ev, classes in enumerate(members):
        for c in classes:
            action[:, c] = np.maximum(action[:, c], cover[ev])

    # ---- unlabeled look-alikes ----
    free = ~labelled
    prep_w = np.zeros((E, K))
    for ev, (s, e) in enumerate(spans):
        if rng.random() < cfg.prep_prob:
            d = rng.uniform(0.5, 2.5)
            ramp = np.clip((t - (s - d)) / d, 0, 1)  # builds up towards the action
            prep_w[ev] = _overlap(lo, hi, np.array([s - d]), np.array([s]))[0] * (0.5 + 0.5 * ramp)
        if rng.random() < cfg.after_prob:
            d = rng.uniform(0.5, 3.0)
            ramp = np.clip(1 - (t - e) / d, 0, 1)  # fades out
            prep_w[ev] = np.maximum(prep_w[ev], _overlap(lo, hi, np.array([e]), np.array([e + d]))[0] * (0.5 + 0.5 * ramp))
    prep_w *= free[None, :] * amp[:, None] * cfg.prep_strength
    taken = labelled.copy()
    for a, b in video.ambiguous:
        taken |= (hi > a - 0.5) & (lo < b + 0.5)
    replay_w = np.zeros((E, K))
    replay_spans = []
    for ev, (s, e) in enumerate(spans):
        if rng.random() >= cfg.replay_prob:
            continue
        r0 = e + rng.uniform(2.0, 12.0)
        r1 = r0 + min(8.0, (e - s) * rng.uniform(1.5, 2.5))
        window = (hi > r0 - 0.5) & (lo < r1 + 0.5)
        if r1 >= end_s or taken[window].any():
            continue
        taken |= window
        replay_spans.append((r0, r1))
        replay_w[ev] = _overlap(lo, hi, np.array([r0]), np.array([r1]))[0] * amp[ev] * 0.8
    amb_w = np.zeros((E, K))
    if video.ambiguous and E:
        for a, b in video.ambiguous:
            ev = int(rng.integers(E))  # a weak action of a class of this video
            amb_w[ev] = np.maximum(
                amb_w[ev], _overlap(lo, hi, np.array([a]), np.array([b]))[0] * free * cfg.ambiguous_strength * rng.uniform(0.7, 1.3)
            )

    # ---- shots: cut process, views, venues, camera ----
    mu = np.log(cfg.shot_mean_s) - 0.7**2 / 2
    cuts, x = [], 0.0
    while True:
        x += rng.lognormal(mu, 0.7)
        if x >= end_s:
            break
        cuts.append(x)
    for s, e in spans:
        if rng.random() < cfg.cut_near_action_prob:
            cuts.append(s - rng.uniform(0.0, 2.0))
        if rng.random() < cfg.cut_near_action_prob:
            cuts.append(e + rng.uniform(0.0, 2.0))
    for r0, r1 in replay_spans:
        cuts += [r0, r1]
    merged: list[float] = []
    for c in sorted(v for v in cuts if 0.0 < v < end_s):
        if not merged or c - merged[-1] >= 0.4:
            merged.append(c)
    cut_s = np.array(merged)
    shot_of = np.searchsorted(cut_s, t, side="right")  # (K,)
    n_shots = len(cut_s) + 1
    main_venue = world.video_venue(video.labels, video.counts, rng)
    style = rng.standard_normal(L)
    style /= np.linalg.norm(style)
    in_shot = np.zeros((n_shots, K), dtype=bool)
    in_shot[shot_of, np.arange(K)] = True
    ev_in_shot = (in_shot.astype(np.float64) @ cover.T) > 0  # (n_shots, E)
    rep_in_shot = in_shot @ (replay_w.sum(0) > 0)
    scene = np.zeros((n_shots, L))
    cam_dir = np.zeros((n_shots, L))
    cam_mag = np.zeros(n_shots)
    for j in range(n_shots):
        evs = np.flatnonzero(ev_in_shot[j])
        venue = main_venue
        if rep_in_shot[j]:
            view = _VIEW["replay"]
        elif evs.size:
            view = _VIEW["wide"] if rng.random() < 0.8 else _VIEW["closeup"]
            shot_venues = [int(world.class_venue[c]) for ev in evs for c in members[ev]]
            if main_venue not in shot_venues:
                venue = shot_venues[0]  # a multi-sport video cuts to the other venue
        else:
            view = int(rng.choice(len(VIEWS), p=_BACKGROUND_VIEW_P))
        jitter = rng.standard_normal(L)
        jitter /= np.linalg.norm(jitter)
        scene[j] = (
            cfg.rgb_scene * (world.view_venue_share[view] * world.venue[venue] + world.view_own_weight[view] * world.view[view])
            + cfg.rgb_video_style * style
            + 0.25 * jitter
        )
        tracked = any(world.tracked[c] for ev in evs for c in members[ev])
        p = _CAMERA_P_TRACKED if tracked else _CAMERA_P_OTHER
        if view in (_VIEW["studio"], _VIEW["crowd"]):
            p = np.array([0.8, 0.1, 0.0, 0.05, 0.05])
        motion = int(rng.choice(len(CAMERA_MOTIONS), p=p))
        cam_dir[j] = world.camera[motion] * rng.choice([-1.0, 1.0])  # pan left or right, zoom in or out
        cam_mag[j] = 0.0 if motion == 0 else cfg.flow_camera * rng.uniform(0.5, 1.5)
    rho = cfg.noise_rho_per_s**dt
    cam_jitter = 1.0 + 0.3 * _ar1(rng, K, 1, rho, 1.0)[:, 0]
    camera = cam_mag[shot_of] * cam_jitter  # (K,)

    # ---- generic background motion ----
    distract = np.zeros((K, L))
    n_events = rng.poisson(cfg.distractors_per_min * end_s / 60.0)
    for _ in range(n_events):
        a = rng.uniform(0, end_s)
        w = _overlap(lo, hi, np.array([a]), np.array([a + rng.uniform(1.0, 6.0)]))[0]
        distract += np.outer(w * cfg.flow_distractor * rng.uniform(0.5, 1.5), world.distractor[rng.integers(len(world.distractor))])

    # ---- latent timelines (K, L) ----
    look = prep_w + amb_w  # look-alike weights per event
    z_rgb = scene[shot_of] + cfg.rgb_action * ((w_event + 0.8 * look + replay_w).T @ ev_app)
    z_rgb += _ar1(rng, K, L, rho, cfg.noise_rgb)
    z_flow = cfg.flow_action * ((w_event + amb_w + 0.7 * replay_w).T @ ev_mot) + cfg.flow_action * (prep_w.T @ ev_prep)
    z_flow += 0.3 * cfg.flow_action * replay_w.sum(0)[:, None] * world.slowmo[None, :]
    z_flow += camera[:, None] * cam_dir[shot_of] + distract + cfg.flow_scene * scene[shot_of]
    z_flow += _ar1(rng, K, L, rho, cfg.noise_flow)

    gain = cfg.gain * rng.uniform(0.85, 1.15)  # per-video feature scale

    def embed(z: np.ndarray, proj: np.ndarray, bias: np.ndarray) -> np.ndarray:
        act = expected_relu(z.astype(np.float32) @ proj + bias, cfg.spatial_noise)  # (K, D) post-ReLU, spatially pooled
        seg = act.reshape(N, S, -1).mean(axis=1)  # (N, D) pooled over the segment's sub-steps
        noise = 1.0 + cfg.feature_noise * rng.standard_normal(seg.shape, dtype=np.float32)
        return np.maximum(seg * noise * gain, 0.0).astype(np.float32)

    pool = lambda v: v.reshape(N, S, *v.shape[1:]).mean(axis=1)  # noqa: E731
    seg_shot = shot_of.reshape(N, S)
    return SynthVideo(
        video_id=video.video_id,
        rgb=embed(z_rgb, world.proj_rgb, world.bias_rgb),
        flow=embed(z_flow, world.proj_flow, world.bias_flow),
        action=pool(action),
        lookalike=pool((prep_w.sum(0) > 0).astype(np.float64)),
        replay=pool((replay_w.sum(0) > 0).astype(np.float64)),
        shot=seg_shot[:, S // 2],
        cut=(seg_shot[:, 0] != seg_shot[:, -1]) | np.r_[False, seg_shot[1:, 0] != seg_shot[:-1, -1]],
        camera=pool(camera),
        venue=main_venue,
    )
