"""The THUMOS'14 stand-in: determinism, real intervals, and the difficulty properties it claims."""

from __future__ import annotations

import numpy as np
import pytest

from star_core.io import datasets, feature_store, standin, wtalc_import
from star_core.io.lake import Lake
from star_core.synth import SynthConfig, World, generate_video, n_segments_of


@pytest.fixture(scope="module")
def ann(data_dir):
    return wtalc_import.read_wtalc_annotations(str(data_dir / "thumos14" / "wtalc_Thumos14reduced-Annotations"))


@pytest.fixture(scope="module")
def labels(ann):
    return {v.video_id: v for v in wtalc_import.wtalc_labels(ann)}


STUDY_CLASSES = ("CricketBowling", "CricketShot", "HighJump", "LongJump", "Billiards", "GolfSwing")


@pytest.fixture(scope="module")
def study(ann, labels):
    """Up to 5 validation videos per class of STUDY_CLASSES (plus the cricket co-labelled ones), D = 64."""
    world = World(ann.classes, SynthConfig(feat_dim=64))
    chosen = {}
    for cls in STUDY_CLASSES:
        vids = [v for v in labels.values() if v.split == "train" and cls in v.labels and v.duration_s < 400]
        for v in sorted(vids, key=lambda v: v.video_id)[:5]:
            chosen[v.video_id] = v
    return world, {vid: (v, generate_video(world, v)) for vid, v in chosen.items()}


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_same_seed_same_features_other_seed_differs(ann, labels):
    v = labels["video_validation_0000051"]
    a = generate_video(World(ann.classes, SynthConfig(feat_dim=32, seed=0)), v)
    b = generate_video(World(ann.classes, SynthConfig(feat_dim=32, seed=0)), v)
    c = generate_video(World(ann.classes, SynthConfig(feat_dim=32, seed=1)), v)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.flow, b.flow)
    assert not np.allclose(a.rgb, c.rgb)
    # a class looks the same whatever the class list (small and full scale agree on patterns)
    w_small = World(["Billiards", "HighJump"], SynthConfig(feat_dim=32))
    w_full = World(ann.classes, SynthConfig(feat_dim=32))
    np.testing.assert_allclose(w_small.motion[0], w_full.motion[w_full.class_index["Billiards"]])


def test_shapes_grid_and_statistics(study):
    world, videos = study
    for v, sv in videos.values():
        n = n_segments_of(v.duration_s, 25.0, 16)
        assert n == int(v.duration_s * 25 / 16)
        assert sv.rgb.shape == sv.flow.shape == (n, 64) and sv.rgb.dtype == np.float32
        assert sv.rgb.min() >= 0 and sv.flow.min() >= 0 and np.isfinite(sv.rgb).all()
    rgb = np.concatenate([sv.rgb for _, sv in videos.values()])
    assert 0.05 < rgb.mean() < 1.0  # I3D-like magnitudes (post-ReLU means of a few tenths)
    assert (rgb < 1e-3).mean() < 0.5  # pooled activations: mostly small but rarely exactly zero


def test_action_coverage_follows_real_intervals(study):
    _, videos = study
    partial = []
    for v, sv in videos.values():
        starts = np.arange(sv.rgb.shape[0]) * 0.64
        for c_name in v.labels:
            c = study[0].class_index[c_name]
            inside = np.zeros(len(starts))
            for inst in v.instances:
                if inst.label == c_name:
                    inside = np.maximum(
                        inside, np.clip(np.minimum(starts + 0.64, inst.t_end_s) - np.maximum(starts, inst.t_start_s), 0, None) / 0.64
                    )
            # sub-step resolution (0.16 s): coverage within one sub-step of the exact fraction
            assert np.abs(sv.action[:, c] - inside).max() <= 0.25 + 1e-9
        cov = sv.action.max(1)
        partial.append(((cov > 0) & (cov < 1)).mean())
    assert np.mean(partial) > 0.02  # boundary segments are partially covered


def test_sibling_classes_share_scene_context(study):
    """Background RGB of CricketBowling and CricketShot videos (same ground) is closer than to Billiards'."""
    world, videos = study
    everything = np.concatenate([sv.rgb for _, sv in videos.values()])
    mean = everything.mean(0)
    bg = {}
    for v, sv in videos.values():
        if len(v.labels) == 1:
            bg.setdefault(v.labels[0], []).append(sv.rgb[sv.action.max(1) == 0].mean(0) - mean)
    cls_mean = {c: np.mean(x, axis=0) for c, x in bg.items()}
    assert _cos(cls_mean["HighJump"], cls_mean["LongJump"]) > _cos(cls_mean["HighJump"], cls_mean["Billiards"]) + 0.2
    cricket = [
        sv.rgb[sv.action.max(1) == 0].mean(0) - mean for v, sv in videos.values() if {"CricketBowling", "CricketShot"} & set(v.labels)
    ]
    cricket_mean = np.mean(cricket, axis=0)
    assert _cos(cricket_mean, cls_mean["GolfSwing"]) < _cos(cls_mean["HighJump"], cls_mean["LongJump"])
    # sibling action patterns overlap more than unrelated ones (motion families)
    i = world.class_index
    m = world.motion
    assert m[i["CricketBowling"]] @ m[i["CricketShot"]] > 0.3 > abs(m[i["CricketBowling"]] @ m[i["Billiards"]])
    assert m[i["CliffDiving"]] @ m[i["Diving"]] > 0.6


def test_unlabeled_lookalikes_resemble_the_action(study):
    """In flow, unlabeled preparation/aftermath is closer to the video's action than plain background."""
    _, videos = study
    flow_all = np.concatenate([sv.flow for _, sv in videos.values()]).mean(0)
    prep_sim, bg_sim = [], []
    for v, sv in videos.values():
        act = sv.action.max(1)
        prep = (sv.lookalike > 0.5) & (act == 0)
        bg = (sv.lookalike == 0) & (sv.replay == 0) & (act == 0)
        if (act > 0.99).sum() < 3 or prep.sum() < 2 or bg.sum() < 2:
            continue
        x = sv.flow - flow_all
        proto = x[act > 0.99].mean(0)
        sims = x @ proto / (np.linalg.norm(x, axis=1) * np.linalg.norm(proto))
        prep_sim.append(sims[prep].mean())
        bg_sim.append(sims[bg].mean())
    assert len(prep_sim) >= 5
    assert np.mean(prep_sim) > np.mean(bg_sim) + 0.05


def test_cuts_camera_noise_and_stream_roles(study):
    _, videos = study
    jump_cut, jump_else, shot_r2_rgb, act_r2_rgb, act_r2_flow, autocorr, cam_corr = [], [], [], [], [], [], []

    def r2(x, groups):
        res = x.copy()
        for g in np.unique(groups):
            res[groups == g] -= x[groups == g].mean(0)
        return 1 - (res**2).sum() / ((x - x.mean(0)) ** 2).sum()

    for v, sv in videos.values():
        d = np.linalg.norm(np.diff(sv.rgb, axis=0), axis=1)
        jump_cut += list(d[sv.cut[1:]])
        jump_else += list(d[~sv.cut[1:]])
        act = (sv.action.max(1) > 0.5).astype(int)
        shot_r2_rgb.append(r2(sv.rgb, sv.shot))
        act_r2_rgb.append(r2(sv.rgb, act))
        act_r2_flow.append(r2(sv.flow, act))
        x = sv.rgb - sv.rgb.mean(0)
        autocorr.append((x[1:] * x[:-1]).sum(1).mean() / (x * x).sum(1).mean())
        bg = act == 0
        if bg.sum() > 10 and sv.camera[bg].std() > 0:
            dev = np.linalg.norm(sv.flow[bg] - np.median(sv.flow[bg], axis=0), axis=1)
            cam_corr.append(np.corrcoef(sv.camera[bg], dev)[0, 1])
    assert np.mean(jump_cut) > 1.15 * np.mean(jump_else)  # shot cuts: abrupt RGB changes
    assert np.mean(shot_r2_rgb) > 3 * np.mean(act_r2_rgb)  # RGB dominated by the scene of the shot
    assert np.mean(act_r2_flow) > 1.5 * np.mean(act_r2_rgb)  # flow carries the action more than RGB
    assert np.mean(autocorr) > 0.3  # temporally correlated noise
    assert np.mean(cam_corr) > 0.1  # camera motion shows in background flow


def test_small_standin_writes_wtalc_layout_with_real_intervals(ann, tmp_path):
    out = tmp_path / "standin"
    marker = standin.build_standin(str(out), "small", seed=0)
    again = standin.build_standin(str(tmp_path / "again"), "small", seed=0)
    feats = out / standin.FEATURES_FILE
    assert feats.read_bytes() == (tmp_path / "again" / standin.FEATURES_FILE).read_bytes()  # seeded: same bytes
    assert marker["n_videos"] == 12 and marker["feat_dim"] == 64 and again["feature_set"] == marker["feature_set"]
    small = wtalc_import.read_wtalc_annotations(str(out / standin.ANNOTATIONS_DIR))
    assert small.classes == [c for c in ann.classes if c in standin.SMALL_CLASSES]
    assert small.subsets.count("validation") == 8 and small.subsets.count("test") == 4
    real = {vid: i for i, vid in enumerate(ann.video_ids)}
    for k, vid in enumerate(small.video_ids):
        i = real[vid]
        assert small.segments[k] == ann.segments[i] and small.segment_labels[k] == ann.segment_labels[i]
        assert small.durations_s[k] == ann.durations_s[i]
    # same importer as the public files: the marker names the feature set
    lake = Lake(str(tmp_path / "lake"))
    result = wtalc_import.import_wtalc(str(feats), str(out / standin.ANNOTATIONS_DIR), lake, "th14-small")
    assert result.feature_set == marker["feature_set"] and result.splits == {"train": 8, "test": 4}
    assert datasets.dataset_source(lake, "th14-small")["provenance"]["seed"] == 0
    f = next(feature_store.read_features(lake, result.feature_set, [small.video_ids[0]]))
    assert f.n_segments == int(small.durations_s[0] * 25 / 16) and f.feat_dim == 64


def test_full_scale_selects_every_video(ann):
    idx, classes = standin.select_videos(ann, "full")
    assert len(idx) == 412 and len(classes) == 20
    with pytest.raises(ValueError, match="scale"):
        standin.select_videos(ann, "medium")
