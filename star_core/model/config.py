"""Typed configs of the STAR network and its losses (paper Sec. 3.1 and 3.3).

Every open point of the paper (see docs/model.md, "Open points" and "Pitfalls") is a named field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Field metadata: a training run may be resumed with another value of this field (it decides
# cadence, resources or logging, not the model); star_core.config.resume_fingerprint leaves it out.
RESUME_FREE = {"resume": "free"}

ThresholdSpace = Literal["log", "rank", "logit", "linear"]
Localizer = Literal["attention", "gradcam", "attended_gradcam"]
ProposalScore = Literal["mean", "contrast"]


@dataclass(frozen=True)
class ModelConfig:
    hidden_dim: int = 512  # LSTM hidden size (h_t)
    attn_dim: int = 256  # attention projection size (W_α h, U_α s)
    label_embed_dim: int = 64  # embedding of y_{t-1} fed to the LSTM (Eq. 4)
    dropout: float = 0.2  # drop probability on segment features (paper "0.8", read as keep-prob; open point 8)
    use_coverage: bool = True  # permissive coverage gate, Eq. 6-7 (Table 1 "Coverage")
    use_ram: bool = True  # repetition alignment module, Eq. 8-9 (Table 1 "RAM")
    coverage_gate: Literal["vector", "scalar"] = "vector"  # "vector" | "scalar": shape of Z and W_α in Eq. 6 (open point 3)
    position_norm: Literal["unit", "index"] = "unit"  # "unit": positions i/(N-1) in [0,1] and centroid Σα k / Σα (open point 2)
    # "none" (literal Eq. 1) | "sum" (divide by Σα) | "count" (divide by N) (open point 4)
    assembly_norm: Literal["none", "sum", "count"] = "sum"
    # "frequency" (training-set frequency) | "alphabetical" | "first_occurrence" (open point 1)
    label_order: Literal["frequency", "alphabetical", "first_occurrence"] = "frequency"
    max_steps: int = 4  # decoding steps at inference (plus EOS); training uses the label count + 1
    # centroid used at t=1 (no α_0): "learned" scalar | "neutral" (gate open, COV=1) (open point 2)
    coverage_start: Literal["learned", "neutral"] = "learned"
    coverage_shared_w: bool = False  # True: Eq. 6 reuses W_α h_{t-1} of Eq. 7 literally; False: own projection W_cov
    energy_temperature: float = 1.0  # α = σ(ê / τ); 1 = paper (beyond-paper option, docs/model.md "Pitfalls")
    # "none" (paper: raw features) | "standardize" (per-dim running mean/std of training segments; beyond paper)
    feature_norm: Literal["none", "standardize"] = "none"
    ram_init_scale: float = 0.05  # initial W_r in Eq. 8 (RAM_t = W_r Σσ(ê) + b_r)


@dataclass(frozen=True)
class LossConfig:
    beta_sparsity: float = 1e-4  # β, Eq. 15 (Table 1 "Sparsity"; 0 disables)
    gamma_coverage: float = 1e-4  # γ, Eq. 15 and Eq. 17
    delta_ram: float = 1e-6  # δ, Eq. 15 and Eq. 18; 0 = train without counts
    background_weight: float = 0.0  # background contrast on the complement of α (beyond the paper; 0 = paper's loss)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # passes over the training split (paper preset: 60)
    batch_size: int = 16  # videos per step
    lr: float = 3e-4  # Adam learning rate (paper preset: 1e-4, which under-trains STAR in 60 epochs: docs/benchmark.md)
    weight_decay: float = 5e-4  # Adam weight decay
    sample_segments: int = 400  # uniform sampling per video (STPN protocol); 0 = all segments
    seed: int = 0  # seeds torch, numpy and sampling
    eval_every_epochs: int = field(default=0, metadata=RESUME_FREE)  # evaluate on the test split every K epochs (0 = only at the end)
    grad_clip_norm: float = 10.0  # clip the global grad norm per stream (0 = off)
    sample_jitter: bool = True  # random offset inside each of the uniform bins when sampling segments
    # checkpoint every K epochs (0 = time-based, see next); the last epoch always
    checkpoint_every_epochs: int = field(default=0, metadata=RESUME_FREE)
    checkpoint_min_interval_s: float = field(default=60.0, metadata=RESUME_FREE)  # with K = 0: at most one checkpoint per this many seconds


@dataclass(frozen=True)
class LocalizeConfig:
    localizer: Localizer = "attended_gradcam"  # "attention" | "gradcam" | "attended_gradcam" (Table 2)
    fusion_lambda: float = 0.5  # λ of Eq. 14 (RGB weight)
    test_segments: int = 0  # 0 = run on all segments at test time; >0 = resample to this many (open point 6)
    thresholds: tuple[float, ...] = (0.4, 0.5, 0.6)  # on the normalised score (open point 7; see docs/model.md)
    min_length_segments: int = 2  # shortest proposal kept (1-segment fragments were the main false positives)
    class_score_weight: float = 1.0  # final score = Eq.14 mean × p(class)^weight
    min_class_prob: float = 0.1  # classes decoded with lower fused probability are not localized
    nms_tiou: float = 0.5  # per-class NMS threshold
    max_detections_per_video: int = 200  # after NMS
    # "log" (min-max of log score) | "rank" (percentile) | "logit" | "linear" (min-max) (open point 7)
    threshold_space: ThresholdSpace = "log"
    proposal_score: ProposalScore = "mean"  # "mean" (Eq. 14) | "contrast" (Eq. 14 mean minus mean of the flanks, beyond paper)
    max_steps: int = 0  # decoding steps at detection (0 = the model's max_steps)
    # "max": α / max_i α per stream and step before the λ-fusion | "none": raw α (paper)
    attention_scale: Literal["none", "max"] = "none"
    use_refiner: bool = True  # localize with the self-trained segment head when the model has one (star_core.refine)


@dataclass(frozen=True)
class RefineConfig:
    rounds: int = 1  # self-training rounds after stage 1 (0 = no refinement: localize with STAR itself)
    hidden_dim: int = 128  # channels of the temporal conv layers
    kernel_size: int = 3  # temporal kernel (segments) of each conv layer
    layers: int = 1  # conv layers before the classifier
    dropout: float = 0.5  # drop probability on the input features and hidden channels
    epochs: int = 40  # passes over the training videos per round (more on small sets: see min_steps)
    min_steps: int = 300  # at least this many optimizer steps per round (a 60-video set gets 75 epochs, not 20)
    batch_size: int = 16  # videos per step
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 1e-3  # Adam weight decay
    pseudo_localizer: Localizer = "gradcam"  # stage-1 map that labels the training segments ("attention" | "gradcam" | "attended_gradcam")
    fg_threshold: float = 0.6  # normalised stage-1 score at or above which a segment is foreground of the class
    bg_threshold: float = 0.3  # normalised score below which (for every known class) a segment is background
    threshold_space: ThresholdSpace = "logit"  # how a stage-1 map is normalised per video (see localize.normalise_score)
    relabel_confidence: float = 0.6  # rounds >= 2: a segment takes the head's argmax over {known classes, background} if its share >= this
    mil_weight: float = 1.0  # weight of the video-level top-k MIL loss
    topk_fraction: float = 0.125  # k = ceil(N * fraction) segments pooled per class for the MIL score
    video_score_fusion: float = 0.0  # weight of the stage-1 class probability in the fused video score (0 = head only)
    proposal_thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # on the head's class probability (multi-scale)
    proposal_space: ThresholdSpace = "linear"  # the head's probabilities are calibrated: threshold them as they are
    proposal_score: ProposalScore = "contrast"  # "contrast" (outer-inner) | "mean", as localize.proposal_score
    class_score_weight: float = 0.5  # detection score = interval score × p(class)^weight (localize.class_score_weight for the head)
    nms_tiou: float = 0.4  # per-class NMS of the head's proposals (localize.nms_tiou for the head)
    seed: int = 0  # seeds initialisation and shuffling

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.layers < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"refine: rounds >= 0, layers >= 1 and an odd kernel_size are required, got {self}")
        if not 0.0 <= self.bg_threshold <= self.fg_threshold <= 1.0:
            raise ValueError(f"refine: need 0 <= bg_threshold <= fg_threshold <= 1, got {self.bg_threshold}, {self.fg_threshold}")
        if not 0.0 < self.topk_fraction <= 1.0 or not 0.0 <= self.video_score_fusion <= 1.0:
            raise ValueError("refine: topk_fraction must be in (0, 1] and video_score_fusion in [0, 1]")
